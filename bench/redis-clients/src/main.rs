//! Herald's Redis traffic through `redis` 0.32 (with the features Herald builds) and through
//! `fred` 10 (rustls on ring), against redis-server processes the bench starts itself.
//!
//! - publish: each event as Herald sends it: the HTTP handler's `count_messages` script
//!   (EVALSHA, its two keys in one slot), then the bus message, which one publisher task
//!   sends in pipelines of up to 256 PUBLISH (SPUBLISH on a cluster), one pipeline per slot
//!   side by side;
//! - delivery: a subscriber on many channels (SUBSCRIBE, or SSUBSCRIBE on each channel's
//!   shard) receiving messages from a load process, each message turned into Herald's
//!   (channel, payload) pair and queued into a bounded channel, as `link/deliveries.rs`
//!   does;
//! - resubscription: the server is killed and started again on its port; how long until
//!   every channel is subscribed again, with nothing done by the caller.
//!
//! Client CPU is getrusage(RUSAGE_SELF) of this process (the load process is another one);
//! server CPU is INFO cpu's used_cpu_user + used_cpu_sys summed over the servers.
//!
//! Usage: `redis-clients [RUNS] [EVENTS] [single|cluster]` (defaults 5, 50000, both);
//! `BENCH_PART=script` or `bus` sends only that half of each event on the publish path,
//! `BENCH_FRED_NO_PIPELINE=1` has fred send each batch's messages as concurrent commands
//! instead of a pipeline, `BENCH_NO_RESUB=1` skips the resubscription test, `BENCH_STATS=1` prints each server's INFO commandstats after each measured run.

mod fred_side;
mod redis_side;
mod servers;

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use servers::Server;

/// Payload of one event's bus message, about Herald's frame for a small event.
const PAYLOAD: usize = 200;
/// Messages per publish pipeline (Herald's `publisher::BATCH`).
const BATCH: usize = 256;
/// Concurrent HTTP handlers running the counting script.
const HANDLERS: usize = 32;
/// Channels the subscriber holds, and the publish path spreads events over.
const CHANNELS: usize = 1000;
/// Herald's `Options::capacity`.
const QUEUE: usize = 65_536;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Topology {
    Single,
    Cluster,
}

/// What a delivery becomes in Herald (`link::Message`).
pub struct Message {
    pub channel: String,
    pub payload: Bytes,
}

pub const COUNT_MESSAGES: &str = r"
local n = #KEYS - 1
for i = 2, #KEYS do
  for _, v in ipairs(redis.call('HVALS', KEYS[i])) do n = n + tonumber(v) end
end
local used = redis.call('INCRBY', KEYS[1], n)
if used == n then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return used
";

pub fn bus_channel(i: usize) -> String {
    format!("herald:bus:app-1:presence-room-{}", i % CHANNELS)
}

/// The script's keys: the day's message counter and the channel's subscription hash, one
/// hash tag so they share a slot.
pub fn script_keys(i: usize) -> Vec<String> {
    vec![
        "herald:{app-1}:rate:messages:20429".to_owned(),
        format!("herald:{{app-1}}:subs:presence-room-{}", i % CHANNELS),
    ]
}

pub fn payload(i: usize) -> Bytes {
    let mut p = format!("{{\"event\":\"e\",\"channel\":\"presence-room-{i}\",\"data\":\"");
    while p.len() < PAYLOAD - 2 {
        p.push('x');
    }
    p.push_str("\"}");
    Bytes::from(p)
}

pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    crc16::State::<crc16::XMODEM>::calculate(hashed) % 16384
}

/// The bus messages `n` events leave for the publisher, grouped by slot (one group on a
/// single server), each group in pipelines of at most [`BATCH`].
pub fn groups(batch: Vec<(String, Bytes)>, topology: Topology) -> Vec<Vec<(String, Bytes)>> {
    if topology == Topology::Single {
        return vec![batch];
    }
    let mut by_slot: std::collections::HashMap<u16, Vec<(String, Bytes)>> = Default::default();
    for m in batch {
        by_slot.entry(slot(&m.0)).or_default().push(m);
    }
    by_slot.into_values().collect()
}

/// The delivered-message sink both clients feed, as Herald's push handler does: a bounded
/// queue, never waited on; a consumer counts.
pub fn sink(expect: usize) -> (mpsc::Sender<Message>, tokio::sync::oneshot::Receiver<usize>) {
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut n = 0;
        let mut bytes = 0usize;
        while let Some(m) = rx.recv().await {
            n += 1;
            bytes += m.payload.len() + m.channel.len();
            if n == expect {
                break;
            }
        }
        std::hint::black_box(bytes);
        let _ = done_tx.send(n);
    });
    (tx, done_rx)
}

/// Which half of an event the publish path sends: both unless `BENCH_PART` is `script`
/// (the EVALSHA only) or `bus` (the bus message only), to tell their costs apart.
#[derive(Clone, Copy)]
pub struct Part {
    pub script: bool,
    pub bus: bool,
}

impl Part {
    pub fn from_env() -> Part {
        match std::env::var("BENCH_PART").as_deref() {
            Ok("script") => Part {
                script: true,
                bus: false,
            },
            Ok("bus") => Part {
                script: false,
                bus: true,
            },
            _ => Part {
                script: true,
                bus: true,
            },
        }
    }
}

pub fn rusage() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// One measured run: µs of client CPU and of server CPU per item, and items per second.
#[derive(Clone, Copy, Default)]
pub struct Figures {
    pub client_us: f64,
    pub server_us: f64,
    pub rate: f64,
    pub lost: usize,
}

pub struct Meter {
    client: f64,
    server: f64,
    start: Instant,
}

impl Meter {
    pub fn start(servers: &[Server]) -> Meter {
        Meter {
            server: servers::cpu(servers),
            client: rusage(),
            start: Instant::now(),
        }
    }

    pub fn stop(self, servers: &[Server], items: usize, lost: usize) -> Figures {
        let took = self.start.elapsed();
        if std::env::var_os("BENCH_STATS").is_some() {
            for s in servers {
                let stats: String = redis::cmd("INFO")
                    .arg("commandstats")
                    .query(&mut s.conn().expect("a connection"))
                    .expect("INFO commandstats");
                let clients: String = redis::cmd("INFO")
                    .arg("stats")
                    .query(&mut s.conn().expect("a connection"))
                    .expect("INFO stats");
                eprintln!(
                    "{}:\n{stats}{}",
                    s.port,
                    clients
                        .lines()
                        .filter(|l| l.starts_with("total_net_input")
                            || l.starts_with("total_reads")
                            || l.starts_with("total_writes"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                let () = redis::cmd("CONFIG")
                    .arg("RESETSTAT")
                    .query(&mut s.conn().expect("a connection"))
                    .expect("CONFIG RESETSTAT");
            }
        }
        let client = rusage() - self.client;
        let server = servers::cpu(servers) - self.server;
        Figures {
            client_us: client * 1e6 / items as f64,
            server_us: server * 1e6 / items as f64,
            rate: items as f64 / took.as_secs_f64(),
            lost,
        }
    }
}

/// The load process: publishes `n` bus messages round-robin over the channels.
fn load(args: &[String]) {
    let topology = if args[0] == "cluster" {
        Topology::Cluster
    } else {
        Topology::Single
    };
    let url = args[1].clone();
    let n: usize = args[2].parse().expect("a count");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(redis_side::load(topology, &url, n));
}

/// Spawns the load process for `n` messages to the servers.
pub fn spawn_load(topology: Topology, url: &str, n: usize) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("this binary"))
        .arg("load")
        .arg(if topology == Topology::Cluster {
            "cluster"
        } else {
            "single"
        })
        .arg(url)
        .arg(n.to_string())
        .spawn()
        .expect("the load process")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn medians(runs: &[Figures]) -> Figures {
    Figures {
        client_us: median(runs.iter().map(|f| f.client_us).collect()),
        server_us: median(runs.iter().map(|f| f.server_us).collect()),
        rate: median(runs.iter().map(|f| f.rate).collect()),
        lost: runs.iter().map(|f| f.lost).max().unwrap_or(0),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("load") {
        return load(&args[1..]);
    }
    let runs: usize = args.first().map_or(5, |a| a.parse().expect("RUNS"));
    let events: usize = args.get(1).map_or(50_000, |a| a.parse().expect("EVENTS"));
    let topologies: Vec<Topology> = match args.get(2).map(String::as_str) {
        Some("single") => vec![Topology::Single],
        Some("cluster") => vec![Topology::Cluster],
        _ => vec![Topology::Single, Topology::Cluster],
    };
    let root = std::env::temp_dir().join(format!("redis-clients-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("a scratch directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");

    println!("runs {runs}, events {events}, payload {PAYLOAD} B, {CHANNELS} channels, medians");
    for topology in topologies {
        let servers = match topology {
            Topology::Single => vec![Server::start(&root, false)],
            Topology::Cluster => servers::cluster(&root),
        };
        let urls: Vec<String> = servers.iter().map(Server::url).collect();
        let mut figures: [[Vec<Figures>; 2]; 2] = Default::default();
        for run in 0..runs {
            // Alternate which client goes first, so warm-up and drift fall on both.
            for k in 0..2 {
                let client = (k + run) % 2;
                let publish = runtime.block_on(async {
                    if client == 0 {
                        redis_side::publish(topology, &urls, &servers, events).await
                    } else {
                        fred_side::publish(topology, &urls, &servers, events).await
                    }
                });
                let deliver = runtime.block_on(async {
                    if client == 0 {
                        redis_side::deliver(topology, &urls, &servers, events).await
                    } else {
                        fred_side::deliver(topology, &urls, &servers, events).await
                    }
                });
                figures[client][0].push(publish);
                figures[client][1].push(deliver);
            }
        }
        println!("\n{topology:?}");
        println!("| client | path | client CPU µs/item (min–max) | redis-server CPU µs/item (min–max) | items/s | lost (max) |");
        println!("|---|---|---|---|---|---|");
        for (client, name) in [(0, "redis 0.32"), (1, "fred 10.1")] {
            for (path, what) in [(0, "publish (per event)"), (1, "delivery (per message)")] {
                let m = medians(&figures[client][path]);
                let runs = &figures[client][path];
                let spread = |f: fn(&Figures) -> f64| {
                    let v: Vec<f64> = runs.iter().map(f).collect();
                    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
                    let hi = v.iter().cloned().fold(0.0, f64::max);
                    format!("{lo:.2}–{hi:.2}")
                };
                println!(
                    "| {name} | {what} | {:.2} ({}) | {:.2} ({}) | {:.0} | {} |",
                    m.client_us,
                    spread(|f| f.client_us),
                    m.server_us,
                    spread(|f| f.server_us),
                    m.rate,
                    m.lost
                );
            }
        }
        if std::env::var_os("BENCH_NO_RESUB").is_some() {
            continue;
        }
        let mut servers = servers;
        let variants: &[Resub] = match topology {
            Topology::Single => &[Resub::Fred, Resub::RedisManager, Resub::RedisMultiplexed],
            Topology::Cluster => &[Resub::Fred, Resub::RedisCluster],
        };
        println!(
            "\nResubscription after one server is killed and started again ({topology:?}, {CHANNELS} channels):"
        );
        println!("| client | restored | median, from the server's first PING | each run (ms) |");
        println!("|---|---|---|---|");
        for &variant in variants {
            let mut restored = Vec::new();
            for _ in 0..runs {
                if let Some(took) = runtime.block_on(resubscribe(variant, topology, &mut servers)) {
                    restored.push(took.as_secs_f64() * 1e3);
                }
            }
            let med = if restored.is_empty() {
                format!("not within {:?}", resub_wait())
            } else {
                format!("{:.0} ms", median(restored.clone()))
            };
            println!(
                "| {} | {}/{runs} | {med} | {restored:.0?} |",
                variant.name(),
                restored.len()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[derive(Clone, Copy, Debug)]
enum Resub {
    Fred,
    RedisManager,
    RedisMultiplexed,
    RedisCluster,
}

impl Resub {
    fn name(self) -> &'static str {
        match self {
            Resub::Fred => "fred SubscriberClient + manage_subscriptions",
            Resub::RedisManager => "redis ConnectionManager, RESP3, automatic resubscription",
            Resub::RedisMultiplexed => "redis MultiplexedConnection, RESP3 (what link/ builds on)",
            Resub::RedisCluster => "redis ClusterConnection, RESP3 push sender",
        }
    }
}

/// Subscribes to every channel, kills one server (the second of a cluster) and starts it
/// again on its port, and measures the time from its first answered PING until every
/// channel is subscribed again and a message published to a channel of that server is
/// delivered. `None`: not within `BENCH_RESUB_WAIT`.
async fn resubscribe(
    variant: Resub,
    topology: Topology,
    servers: &mut [Server],
) -> Option<Duration> {
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let victim = if topology == Topology::Cluster { 1 } else { 0 };
    let probe = match topology {
        Topology::Single => bus_channel(7),
        Topology::Cluster => {
            let owners = redis_side::slot_owners(servers);
            (0..CHANNELS)
                .map(bus_channel)
                .find(|c| owners[slot(c) as usize] == servers[victim].port)
                .expect("a channel on the victim")
        }
    };
    let mut fred = None;
    let guard: Box<dyn std::any::Any + Send> = match variant {
        Resub::Fred => {
            fred = Some(fred_side::subscriber(topology, &urls, tx).await);
            Box::new(())
        }
        Resub::RedisManager => Box::new(redis_side::manager_subscriber(&urls[0], tx).await),
        Resub::RedisMultiplexed => Box::new(redis_side::multiplexed_subscriber(&urls[0], tx).await),
        Resub::RedisCluster => Box::new(redis_side::cluster_subscriber(&urls, tx).await),
    };
    assert_eq!(
        active(topology, servers),
        CHANNELS,
        "{variant:?} subscribed before the restart"
    );
    servers[victim].kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    servers[victim].restart();
    let ready = Instant::now();
    let deadline = ready + resub_wait();
    let result = loop {
        if active(topology, servers) == CHANNELS {
            let mut conn = servers[victim].conn().expect("a connection");
            let verb = if topology == Topology::Cluster {
                "SPUBLISH"
            } else {
                "PUBLISH"
            };
            let _: usize = redis::cmd(verb)
                .arg(&probe)
                .arg("probe")
                .query(&mut conn)
                .expect("the probe");
            let got = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(m) = rx.recv().await {
                    if m.channel == probe {
                        return true;
                    }
                }
                false
            })
            .await;
            break matches!(got, Ok(true)).then(|| ready.elapsed());
        }
        if Instant::now() > deadline {
            eprintln!(
                "{variant:?}: {} of {CHANNELS} channels subscribed again after {:?}",
                active(topology, servers),
                resub_wait()
            );
            break None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    drop(guard);
    if let Some(fred) = fred {
        // A fred client runs on after its handle is dropped; QUIT ends it.
        fred_side::quit(fred).await;
    }
    // Until the servers have seen the subscribers go.
    let settle = Instant::now() + Duration::from_secs(5);
    while active(topology, servers) != 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    result
}

/// How long a resubscription may take: `BENCH_RESUB_WAIT` seconds, 10 by default.
fn resub_wait() -> Duration {
    Duration::from_secs(
        std::env::var("BENCH_RESUB_WAIT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    )
}

/// Channels subscribed, over all the servers.
fn active(topology: Topology, servers: &[Server]) -> usize {
    let sub = if topology == Topology::Cluster {
        "SHARDCHANNELS"
    } else {
        "CHANNELS"
    };
    servers
        .iter()
        .map(|s| {
            s.conn().ok().map_or(0, |mut conn| {
                redis::cmd("PUBSUB")
                    .arg(sub)
                    .query::<Vec<String>>(&mut conn)
                    .map_or(0, |c| c.len())
            })
        })
        .sum()
}
