//! `hold`: one harness process of a many-process run (bench/million.sh). It opens N
//! connections, subscribes every one to one shared big channel (and some to small ones),
//! says so on stdout, then holds them and counts what arrives, reporting on request.
//!
//! Several processes are needed because a process here may hold at most 20,000 descriptors,
//! so they cannot share one clock base: events carry their publish time as Unix
//! nanoseconds (`{"t":…,"n":…}`, see `publish.rs`) and arrivals are stamped the same way,
//! which on one machine is one clock.
//!
//! Control is over stdin, one command a line: `report` prints what arrived since the last
//! report (one JSON line) and starts counting afresh; `quit` or end of input ends the run.
//!
//! A held connection costs little in the harness: its task waits for readability with no
//! buffer of its own and reads into a stack chunk, keeping bytes only while a frame is
//! incomplete; 20,000 of them per process must not be what runs the machine out of memory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;

use crate::http::App;
use crate::proc_stats;
use crate::scan::{find, frame_bounds, leading_number};
use crate::stream::Stream;
use crate::wsclient::Client;

/// Connects a process keeps in flight at once.
const IN_FLIGHT: usize = 100;
/// Tries per connection before it is counted as failed.
const TRIES: u32 = 5;

/// Parameters of one holding process.
#[derive(clap::Args)]
pub struct Args {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Spread the connections round-robin over these addresses (default: `--addr`).
    #[arg(long, value_delimiter = ',')]
    subscribe_to: Vec<SocketAddr>,
    /// The channel every connection subscribes to.
    #[arg(long, default_value = "million")]
    channel: String,
    /// Small channels (`small-0`, `small-1`, …) that some connections also subscribe to.
    #[arg(long, default_value_t = 0)]
    small_channels: usize,
    /// Every this-many-th connection also subscribes to a small channel, in turn.
    #[arg(long, default_value_t = 100)]
    small_every: usize,
    /// This process's first connection number: it picks the loopback source address
    /// (127.a.b.1, 50,000 of them), so processes spread over different ones and no source
    /// runs out of ephemeral ports.
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// A channel only this process's first connection subscribes to (so only its node
    /// listens for it: what an event costs Redis when one node is interested).
    #[arg(long)]
    own_channel: Option<String>,
}

/// What arrived since the last report.
#[derive(Default)]
struct Tally {
    /// Per big-channel event (its `n`): deliveries, and the first and last arrival (Unix ns).
    big: BTreeMap<u64, Arrivals>,
    /// Latency of each small-channel delivery, in microseconds.
    small_us: Vec<u64>,
    /// Frames that were neither (pings, other events).
    other: u64,
}

#[derive(Default, Clone, Copy)]
struct Arrivals {
    count: u64,
    sent_ns: u64,
    first_ns: u64,
    last_ns: u64,
}

struct Shared {
    big: String,
    tally: Mutex<Tally>,
    /// Held connections the server or the network closed.
    closed: AtomicU64,
    /// Their ends by close code, 0 for a connection that ended without a Close frame (a
    /// reset, an EOF): what tells a ping timeout (4201) from a drain (4200) or the network.
    ends: Mutex<std::collections::BTreeMap<u16, u64>>,
}

impl Shared {
    fn ended(&self, code: u16) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        *self
            .ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    fn ends(&self) -> Value {
        let ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        ends.iter()
            .map(|(code, n)| (code.to_string(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Opens, subscribes and holds the connections; answers `report` on stdin until `quit`.
pub async fn hold(app: &App, args: Args) -> std::io::Result<Value> {
    let targets = match args.subscribe_to.is_empty() {
        true => vec![app.addr],
        false => args.subscribe_to.clone(),
    };
    let shared = Arc::new(Shared {
        big: args.channel.clone(),
        tally: Mutex::new(Tally::default()),
        closed: AtomicU64::new(0),
        ends: Mutex::new(Default::default()),
    });
    let started = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    let (mut held, mut failed) = (0u64, 0u64);
    for i in 0..args.count {
        if in_flight.len() >= IN_FLIGHT {
            match in_flight.join_next().await {
                Some(Ok(true)) => held += 1,
                _ => failed += 1,
            }
        }
        let app = app.clone();
        let shared = shared.clone();
        let target = targets[i % targets.len()];
        let small = (args.small_channels > 0 && i % args.small_every.max(1) == 0).then(|| {
            format!(
                "small-{}",
                (i / args.small_every.max(1)) % args.small_channels
            )
        });
        let source = args.first + i;
        in_flight.spawn(async move {
            for attempt in 0..TRIES {
                match open(&app, target, source, &shared.big, small.as_deref()).await {
                    Ok((tcp, pending)) => {
                        tokio::spawn(read_loop(tcp, pending, shared));
                        return true;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200 << attempt)).await,
                }
            }
            false
        });
    }
    while let Some(done) = in_flight.join_next().await {
        match done {
            Ok(true) => held += 1,
            _ => failed += 1,
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let rss = proc_stats::sample(std::process::id()).map(|s| s.rss_bytes);
    println!(
        "{}",
        json!({
            "mode": "hold", "phase": "subscribed", "connections": held, "failed": failed,
            "connect_secs": connect_secs, "connects_per_s": (held as f64 / connect_secs).round(),
            "harness_rss_bytes": rss,
        })
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match line.trim() {
            "report" => println!("{}", report(&shared, held)),
            "quit" => break,
            _ => {}
        }
    }
    Ok(json!({
        "mode": "hold", "phase": "done", "connections": held,
        "closed": shared.closed.load(Ordering::Relaxed), "close_codes": shared.ends(),
    }))
}

/// What arrived since the last report, and starts counting afresh.
fn report(shared: &Shared, held: u64) -> Value {
    let tally = std::mem::take(&mut *shared.tally.lock().unwrap_or_else(|e| e.into_inner()));
    let big: Vec<Value> = tally
        .big
        .iter()
        .map(|(n, a)| {
            json!({"n": n, "count": a.count, "sent_ns": a.sent_ns,
                   "first_ns": a.first_ns, "last_ns": a.last_ns})
        })
        .collect();
    json!({
        "mode": "hold", "phase": "report", "connections": held,
        "closed": shared.closed.load(Ordering::Relaxed), "close_codes": shared.ends(),
        "big": big, "small_latency_us": tally.small_us, "other_frames": tally.other,
        "harness_rss_bytes": proc_stats::sample(std::process::id()).map(|s| s.rss_bytes),
    })
}

/// Connects, subscribes, and hands back the bare TCP stream with any bytes already read.
async fn open(
    app: &App,
    target: SocketAddr,
    source: usize,
    big: &str,
    small: Option<&str>,
) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut client = Client::connect(app, target, source).await?;
    client.subscribe(big).await?;
    if let Some(small) = small {
        client.subscribe(small).await?;
    }
    let pending = match client.buf.is_empty() {
        true => Vec::new(),
        false => std::mem::take(&mut client.buf),
    };
    match client.stream {
        Stream::Plain(tcp) => Ok((tcp, pending)),
        Stream::Tls(_) => Err(std::io::Error::other("hold does not take --tls")),
    }
}

/// Reads one held connection until it closes, counting its events.
async fn read_loop(tcp: TcpStream, mut pending: Vec<u8>, shared: Arc<Shared>) {
    loop {
        while let Some((start, len)) = frame_bounds(&pending) {
            let opcode = pending[0] & 0x0f;
            match opcode {
                // A WebSocket ping: answer with a masked pong carrying its payload.
                0x9 => {
                    let pong = herald_protocol::websocket::encode_masked(
                        true,
                        0xA,
                        &pending[start..start + len],
                        [1, 2, 3, 4],
                    );
                    let _ = tcp.try_write(&pong);
                }
                0x8 => {
                    let payload = &pending[start..start + len];
                    let code = match payload {
                        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
                        _ => 1005,
                    };
                    shared.ended(code);
                    return;
                }
                _ => arrived(&shared, &tcp, &pending[start..start + len]),
            }
            pending.drain(..start + len);
        }
        if pending.is_empty() && pending.capacity() > 0 {
            pending = Vec::new();
        }
        if tcp.readable().await.is_err() {
            break;
        }
        match read_some(&tcp, &mut pending) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    shared.ended(0);
}

/// One read into a stack chunk (never held across an await, so no held connection keeps a
/// buffer), appended to `pending`.
fn read_some(tcp: &TcpStream, pending: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16384];
    let n = tcp.try_read(&mut chunk)?;
    pending.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Counts one text frame: a big-channel event by its `n`, a small one by its latency.
fn arrived(shared: &Shared, tcp: &TcpStream, frame: &[u8]) {
    let now = unix_nanos();
    if find(frame, b"\"pusher:ping\"").is_some() {
        let pong = herald_protocol::websocket::encode_masked(
            true,
            0x1,
            br#"{"event":"pusher:pong","data":{}}"#,
            [1, 2, 3, 4],
        );
        let _ = tcp.try_write(&pong);
    }
    let number = |marker: &[u8]| {
        find(frame, marker).and_then(|at| leading_number(&frame[at + marker.len()..]))
    };
    let channel = find(frame, br#""channel":""#).map(|at| {
        let rest = &frame[at + 11..];
        &rest[..rest.iter().position(|b| *b == b'"').unwrap_or(rest.len())]
    });
    let mut tally = shared.tally.lock().unwrap_or_else(|e| e.into_inner());
    match (channel, number(br#"t\":"#)) {
        (Some(c), Some(sent)) if c == shared.big.as_bytes() => {
            let n = number(br#"n\":"#).unwrap_or(0);
            let a = tally.big.entry(n).or_default();
            if a.count == 0 {
                a.first_ns = now;
                a.sent_ns = sent;
            }
            a.count += 1;
            a.last_ns = a.last_ns.max(now);
        }
        (Some(c), Some(sent)) if c.starts_with(b"small-") => {
            tally.small_us.push(now.saturating_sub(sent) / 1000);
        }
        _ => tally.other += 1,
    }
}
