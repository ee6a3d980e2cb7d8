//! The soak's tasks: fan-out subscribers and publishers, client-event pairs, connection
//! churn, and how their connections are made and closed.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::ctx::{stamp, Ctx};
use super::KEEPALIVE;
use crate::http::{batch_body, data_token, trigger_body, App, Conn};
use crate::modes::nanos_since;
use crate::scan::find;
use crate::wsclient::{Client, Kind};

const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;
const PING: &str = r#"{"event":"pusher:ping","data":{}}"#;

/// A fan-out subscriber: times and counts every event until `stop` turns true.
pub(super) async fn subscriber(
    mut c: Client,
    ctx: Arc<Ctx>,
    hist: Arc<Mutex<Histogram<u64>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_seq: Option<u64> = None;
    let every = c.activity_timeout.map_or(KEEPALIVE, |secs| {
        Duration::from_secs((secs / 2).clamp(1, 60))
    });
    let mut keepalive = tokio::time::interval(every);
    keepalive.tick().await;
    loop {
        tokio::select! {
            frame = c.next_frame() => {
                let Ok(frame) = frame else {
                    if !*stop.borrow() {
                        ctx.error("subscriber_dropped");
                    }
                    return;
                };
                if let Some((t, seq)) = stamp(&frame) {
                    let now = nanos_since(ctx.base);
                    if let Ok(mut h) = hist.lock() {
                        let _ = h.record(now.saturating_sub(t).max(1));
                    }
                    ctx.deliveries.fetch_add(1, Ordering::Relaxed);
                    ctx.received[ctx.second(t)].fetch_add(1, Ordering::Relaxed);
                    if last_seq.is_some_and(|last| seq <= last) {
                        ctx.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    last_seq = Some(last_seq.map_or(seq, |last| last.max(seq)));
                } else if find(&frame, b"pusher:ping").is_some() {
                    let _ = c.send_text(PONG).await;
                } else if find(&frame, b"pusher:error").is_some() {
                    ctx.error("error_frame");
                }
            }
            _ = keepalive.tick() => {
                let _ = c.send_text(PING).await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// A fan-out publisher: owns `channels` (so each channel's events leave in order) and
/// publishes `rate` events per second over them, `batch` to a request.
#[allow(clippy::too_many_arguments)]
pub(super) async fn publisher(
    app: App,
    ctx: Arc<Ctx>,
    channels: Vec<usize>,
    subscribers_of: Arc<Vec<u64>>,
    rate: f64,
    batch: usize,
    payload: usize,
    until: Instant,
) {
    if channels.is_empty() || rate <= 0.0 {
        return;
    }
    let path = match batch {
        1 => format!("/apps/{}/events", app.id),
        _ => format!("/apps/{}/batch_events", app.id),
    };
    let mut conn = None;
    let mut seqs = vec![0u64; channels.len()];
    let mut next = 0usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(batch as f64 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let padding = "x".repeat(payload.saturating_sub(32));
    while Instant::now() < until {
        tick.tick().await;
        let t = nanos_since(ctx.base);
        let mut events = Vec::with_capacity(batch);
        for _ in 0..batch {
            let at = next % channels.len();
            next += 1;
            let channel = Kind::Public.channel(channels[at]);
            let data = format!(r#"{{"t":{t},"s":{},"p":"{padding}"}}"#, seqs[at]);
            seqs[at] += 1;
            events.push((channels[at], channel, data_token(&data)));
        }
        let body = match &events[..] {
            [(_, channel, data)] => trigger_body("soak", channel, data),
            _ => batch_body(
                "soak",
                events
                    .iter()
                    .map(|(_, channel, data)| (channel.as_str(), &**data)),
            ),
        };
        if conn.is_none() {
            match Conn::open(app.addr, &app.dialer).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    ctx.error("publisher_connect");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        ctx.requests.fetch_add(1, Ordering::Relaxed);
        match c.send(&app.signed_post_to(&path, &body)).await {
            Ok(200) => {
                ctx.events_published
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                // Only accepted events are owed: a refused trigger is an error, not a loss.
                for (channel, _, _) in &events {
                    ctx.expected[ctx.second(t)]
                        .fetch_add(subscribers_of[*channel], Ordering::Relaxed);
                }
            }
            Ok(_) => ctx.error("trigger_refused"),
            Err(_) => {
                ctx.error("trigger_failed");
                conn = None;
            }
        }
    }
}

/// One side of a client-event pair: sends `rate` client events per second on `channel`
/// until `until`, and times those its peer sends until `stop`.
pub(super) async fn pair_side(
    mut c: Client,
    side: usize,
    channel: String,
    rate: u64,
    until: Instant,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) {
    let mut send = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    send.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    // The peer's next sequence number.
    let mut expected = 0u64;
    loop {
        tokio::select! {
            frame = c.next_frame() => {
                let Ok(frame) = frame else {
                    if !*stop.borrow() {
                        ctx.error("pair_dropped");
                    }
                    return;
                };
                if find(&frame, b"client-soak").is_some() {
                    if let Some((t, s)) = stamp(&frame) {
                        if s != expected {
                            ctx.client_gap(&channel, expected, s);
                        }
                        expected = s + 1;
                        ctx.client_received.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut h) = ctx.client_latency.lock() {
                            let _ = h.record(nanos_since(ctx.base).saturating_sub(t).max(1));
                        }
                    }
                } else if find(&frame, b"pusher:ping").is_some() {
                    let _ = c.send_text(PONG).await;
                } else if find(&frame, b"pusher:error").is_some() {
                    ctx.error("error_frame");
                }
            }
            // Sending ends with the run, so that the lag before `stop` lets the last events
            // arrive: one sent just before `stop` would count as lost.
            _ = send.tick(), if rate > 0 && Instant::now() < until => {
                let t = nanos_since(ctx.base);
                let event = format!(
                    r#"{{"event":"client-soak","channel":"{channel}","data":{{"t":{t},"s":{seq}}}}}"#
                );
                seq += 1;
                if c.send_text(&event).await.is_ok() {
                    ctx.client_sent.fetch_add(1, Ordering::Relaxed);
                    ctx.pair_sent[side].store(seq, Ordering::Relaxed);
                }
            }
            _ = stop.changed() => {
                let sent = ctx.pair_sent[side ^ 1].load(Ordering::Relaxed);
                if sent > expected {
                    ctx.client_gap(&channel, expected, sent);
                }
                return;
            }
        }
    }
}

/// Opens `rate` connections per second, each subscribed to a channel of its own, and closes
/// the oldest so that `hold` stay open.
pub(super) async fn connection_churn(
    app: App,
    ctx: Arc<Ctx>,
    rate: u64,
    hold: usize,
    first_index: usize,
    until: Instant,
) {
    if rate == 0 {
        return;
    }
    let mut open: VecDeque<Client> = VecDeque::with_capacity(hold + 1);
    let mut connecting = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0usize;
    while Instant::now() < until {
        tokio::select! {
            _ = tick.tick() => {
                // A server that stops answering connects must not pile up tasks.
                if connecting.len() >= 200 {
                    ctx.error("connect_backlog");
                    continue;
                }
                let app = app.clone();
                let channel = format!("soak-churn-{n}");
                // Spread over the loopback source addresses, away from the long-lived ones.
                let index = first_index + n % 10_000;
                n += 1;
                connecting.spawn(async move {
                    let started = Instant::now();
                    let mut c = Client::connect(&app, app.addr, index).await?;
                    c.subscribe(&channel).await?;
                    Ok::<_, std::io::Error>((c, started.elapsed()))
                });
            }
            Some(done) = connecting.join_next() => match done {
                Ok(Ok((c, took))) => {
                    ctx.churn_opened.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut h) = ctx.connect_latency.lock() {
                        let _ = h.record((took.as_nanos() as u64).max(1));
                    }
                    open.push_back(c);
                    while open.len() > hold {
                        if let Some(old) = open.pop_front() {
                            close(old).await;
                            ctx.churn_closed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                _ => ctx.error("churn_connect"),
            },
        }
    }
    connecting.abort_all();
    for c in open {
        close(c).await;
        ctx.churn_closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Closes as a browser leaving the page does: a close frame, then the socket.
async fn close(mut c: Client) {
    let frame = herald_protocol::websocket::encode_masked(
        true,
        0x8,
        &1000u16.to_be_bytes(),
        [0x12, 0x34, 0x56, 0x78],
    );
    let _ = c.stream.write_all(&frame).await;
    let _ = c.stream.flush().await;
}

/// Open file descriptors of the server's processes (entries of /proc/PID/fd).
pub(super) fn fd_count(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold(0, |sum, pid| {
        let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        Some(sum + dir.count() as u64)
    })
}

/// Connects `count` clients (200 at a time), each set up by `setup`.
pub(super) async fn connect_all<F, Fut>(
    app: &App,
    count: usize,
    first_index: usize,
    setup: F,
) -> std::io::Result<Vec<Client>>
where
    F: Fn(Client, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<Client>> + Send,
{
    let mut clients = Vec::with_capacity(count);
    for chunk_start in (0..count).step_by(200) {
        let mut pending = Vec::new();
        for i in chunk_start..(chunk_start + 200).min(count) {
            let app = app.clone();
            let setup = setup.clone();
            pending.push(tokio::spawn(async move {
                let c = Client::connect(&app, app.addr, first_index + i).await?;
                setup(c, i).await
            }));
        }
        for task in pending {
            clients.push(task.await.map_err(std::io::Error::other)??);
        }
    }
    Ok(clients)
}
