//! The measurements: fan-out latency (and the big room, one channel), trigger throughput,
//! held connections; presence churn is in `churn.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::http::{data_token, escaped_token, trigger_body, App, Conn};
use crate::payload::{self, PayloadKind};
use crate::proc_stats;
use crate::progress::Progress;
use crate::scan::{find, leading_number};
use crate::window::{self, Counters};
use crate::wsclient::{Client, Kind};

pub use crate::churn::{presence_churn, Churn};

/// When publisher `k` of `publishers` first ticks: `every * k / publishers` after the start.
fn phase(every: Duration, k: usize, publishers: usize) -> Duration {
    every.mul_f64(k as f64 / publishers.max(1) as f64)
}

/// The tick of publisher `k` of `publishers` that share a rate, each every `every`: the
/// first at `start + every * k / publishers`, so that together they publish one event every
/// `every / publishers`. Ticks that all start at once (as `tokio::time::interval` does)
/// publish `publishers` events together: the big room at 20 events/s from four publishers
/// was four events every 200 ms, whose 20,000 deliveries queued behind one another.
pub(crate) fn staggered_tick(
    start: Instant,
    every: Duration,
    k: usize,
    publishers: usize,
) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at((start + phase(every, k, publishers)).into(), every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    tick
}

/// Nanoseconds since `base`; publisher and subscribers share one process and one base, so
/// latency needs no clock synchronisation.
pub(crate) fn nanos_since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

pub(crate) fn percentiles(h: &Histogram<u64>) -> Value {
    let us = |v: u64| (v as f64 / 1000.0 * 10.0).round() / 10.0;
    json!({
        "p50_us": us(h.value_at_quantile(0.50)),
        "p90_us": us(h.value_at_quantile(0.90)),
        "p99_us": us(h.value_at_quantile(0.99)),
        "p999_us": us(h.value_at_quantile(0.999)),
        "max_us": us(h.max()),
    })
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits; creation cannot fail with these bounds, and
    // if it did an empty default keeps the run going.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()))
}

#[allow(clippy::panic)] // Histogram::new(3) only fails for sigfig > 5.
fn unreachable_histogram() -> Histogram<u64> {
    panic!("hdrhistogram refused 3 significant digits")
}

/// Samples the server's memory every 100 ms, keeping the peak (starting from `before`),
/// until the returned task is aborted.
pub(crate) fn peak_rss_sampler(
    pids: &[u32],
    before: Option<proc_stats::Sample>,
) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let peak_rss = Arc::new(AtomicU64::new(before.map_or(0, |s| s.rss_bytes)));
    let sampler = {
        let peak_rss = peak_rss.clone();
        let pids = pids.to_vec();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(s) = proc_stats::sample_all(&pids) {
                    peak_rss.fetch_max(s.rss_bytes, Ordering::Relaxed);
                }
            }
        })
    };
    (peak_rss, sampler)
}

/// Parses the publisher's timestamp out of a delivered frame without parsing the JSON.
fn sent_at(frame: &[u8]) -> Option<u64> {
    let marker = br#"t\":"#;
    leading_number(&frame[find(frame, marker)? + marker.len()..])
}

/// Fan-out parameters.
pub struct Fanout {
    /// Draw a progress bar.
    pub progress: bool,
    /// The kind of channel subscribers join.
    pub kind: Kind,
    /// Where subscribers connect (round-robin); empty: the publishing address.
    pub subscribe_to: Vec<std::net::SocketAddr>,
    /// Where each event is published: channel `c`'s to the `c mod len`-th address; empty:
    /// the app's address.
    pub publish_to: Vec<std::net::SocketAddr>,
    /// Publishing before the measured window opens.
    pub warmup: Duration,
    /// Redis servers whose CPU the window reports.
    pub redis_pids: Vec<u32>,
    /// Publishing tasks, each with one keep-alive connection per publishing address.
    pub publishers: usize,
    pub subscribers: usize,
    pub channels: usize,
    pub rate: u64,
    pub duration: Duration,
    pub payload: usize,
    /// What fills the payload.
    pub payload_kind: PayloadKind,
    /// Extra subscribers that subscribe and then never read: the others' latency and the
    /// server's memory show whether a stalled socket costs anyone else.
    pub stalled: usize,
}

pub async fn fanout(app: &App, pids: &[u32], p: Fanout) -> std::io::Result<Value> {
    let base = Instant::now();
    let mut clients = Vec::with_capacity(p.subscribers);
    for chunk_start in (0..p.subscribers).step_by(200) {
        let mut pending = Vec::new();
        for i in chunk_start..(chunk_start + 200).min(p.subscribers) {
            let app = app.clone();
            let channels = p.channels;
            let kind = p.kind;
            let (node, addr) = match p.subscribe_to.len() {
                0 => (0, app.addr),
                n => (i % n, p.subscribe_to[i % n]),
            };
            pending.push(tokio::spawn(async move {
                let mut c = Client::connect(&app, addr, i).await?;
                let user = format!("u{i}");
                c.subscribe_signed(
                    &kind.channel(i % channels),
                    (kind != Kind::Public).then_some((app.key.as_str(), app.secret.as_str())),
                    (kind == Kind::Presence).then_some(user.as_str()),
                )
                .await?;
                Ok::<_, std::io::Error>((node, c))
            }));
        }
        for task in pending {
            clients.push(task.await.map_err(std::io::Error::other)??);
        }
    }
    let mut stalled = Vec::with_capacity(p.stalled);
    for j in 0..p.stalled {
        let addr = match p.subscribe_to.len() {
            0 => app.addr,
            n => p.subscribe_to[j % n],
        };
        // A small receive window, as a phone on a dead network would leave: the backlog
        // then builds up in the server, against its per-connection bound.
        let mut c = Client::connect_with(app, addr, p.subscribers + j, Some(4096)).await?;
        let user = format!("stalled{j}");
        c.subscribe_signed(
            &p.kind.channel(j % p.channels),
            (p.kind != Kind::Public).then_some((app.key.as_str(), app.secret.as_str())),
            (p.kind == Kind::Presence).then_some(user.as_str()),
        )
        .await?;
        stalled.push(c);
    }
    let delivered = Arc::new(AtomicU64::new(0));
    let counters = Counters::new(p.subscribe_to.len());
    // Each reader keeps its latencies in a plain list behind an (uncontended) lock, merged
    // into one histogram at the end, and is aborted then rather than polling a deadline.
    // The harness shares the cores with the server, so what it spends per frame shows in
    // the server's latency: a histogram per reader (thousands of them, tens of KB each)
    // was 10 % of its CPU in cache misses, and a timeout per read a timer in tokio's
    // wheel per frame.
    let mut readers = Vec::new();
    for (node, mut c) in clients {
        let delivered = delivered.clone();
        let by_node = counters.delivered_by_node.clone();
        let tally = Arc::new(Mutex::new((Vec::<u64>::new(), 0u64)));
        let mine = tally.clone();
        let task = tokio::spawn(async move {
            let wire_before = c.wire_bytes;
            while let Ok(frame) = c.next_frame().await {
                if let Some(t) = sent_at(&frame) {
                    let mut tally = mine.lock().unwrap_or_else(|e| e.into_inner());
                    tally.0.push(nanos_since(base).saturating_sub(t).max(1));
                    tally.1 = c.wire_bytes - wire_before;
                    delivered.fetch_add(1, Ordering::Relaxed);
                    by_node[node].fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        readers.push((task, tally));
    }

    let before = proc_stats::sample_all(pids);
    let own_before = proc_stats::own_cpu_secs();
    // The server's peak memory while publishing.
    let (peak_rss, sampler) = peak_rss_sampler(pids, before);
    let bar = Progress::time(p.progress, "fanout", p.warmup + p.duration);
    let events_total = p.rate * (p.warmup + p.duration).as_secs();
    let publishers = p.publishers.max(1);
    let publish_to = if p.publish_to.is_empty() {
        vec![app.addr]
    } else {
        p.publish_to.clone()
    };
    let sent = counters.sent.clone();
    let started = Instant::now();
    let mut pubs = Vec::new();
    for k in 0..publishers {
        let app = app.clone();
        let (size, payload_kind) = (p.payload, p.payload_kind);
        let sent = sent.clone();
        let channels = p.channels;
        let kind = p.kind;
        let publish_to = publish_to.clone();
        let interval = Duration::from_nanos(1_000_000_000 * publishers as u64 / p.rate.max(1));
        pubs.push(tokio::spawn(async move {
            let mut conns = Vec::with_capacity(publish_to.len());
            for addr in &publish_to {
                conns.push(Conn::open(*addr, &app.dialer).await?);
            }
            let mut tick = staggered_tick(started, interval, k, publishers);
            let mut n = k as u64;
            while n < events_total {
                tick.tick().await;
                let index = n as usize % channels;
                let channel = kind.channel(index);
                let data = payload::data(payload_kind, size, nanos_since(base), n);
                let body = trigger_body("bench", &channel, &escaped_token(&data));
                let conn = &mut conns[index % publish_to.len()];
                if conn.send(&app.signed_post(&body)).await? == 200 {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                n += publishers as u64;
            }
            Ok::<_, std::io::Error>(())
        }));
    }
    tokio::time::sleep_until((started + p.warmup).into()).await;
    let window_start = window::snapshot(pids, &p.redis_pids, &counters);
    for task in pubs {
        task.await.map_err(std::io::Error::other)??;
    }
    let window_end = window::snapshot(pids, &p.redis_pids, &counters);
    let publish_secs = started.elapsed().as_secs_f64();
    bar.finish();
    sampler.abort();
    drop(stalled);
    // Give in-flight deliveries a moment, then stop the readers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut all = new_histogram();
    let mut wire_bytes = 0;
    for (task, tally) in readers {
        task.abort();
        let _ = task.await;
        let tally = tally.lock().unwrap_or_else(|e| e.into_inner());
        for &latency in &tally.0 {
            let _ = all.record(latency);
        }
        wire_bytes += tally.1;
    }
    let after = proc_stats::sample_all(pids);
    let sent = sent.load(Ordering::Relaxed);
    let expected = sent * (p.subscribers / p.channels.max(1)) as u64;
    let delivered = delivered.load(Ordering::Relaxed);
    let server_cpu = before.zip(after).map(|(b, a)| a.cpu_secs - b.cpu_secs);
    Ok(json!({
        "mode": "fanout",
        "channel_kind": format!("{:?}", p.kind).to_lowercase(),
        "nodes": p.subscribe_to.len().max(1),
        "subscribe_to": p.subscribe_to.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "publish_to": publish_to.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "publishers": publishers,
        "warmup_s": p.warmup.as_secs(),
        "subscribers": p.subscribers,
        "channels": p.channels,
        "rate_events_per_s": p.rate,
        "payload_bytes": p.payload,
        "payload_kind": p.payload_kind.name(),
        "events_sent": sent,
        "deliveries_expected": expected,
        "deliveries": delivered,
        "lost": expected.saturating_sub(delivered),
        "wire_bytes_received": wire_bytes,
        "wire_bytes_per_delivery": (delivered > 0).then(|| (wire_bytes as f64 / delivered as f64 * 10.0).round() / 10.0),
        "deliveries_per_s": (delivered as f64 / publish_secs).round(),
        "latency": percentiles(&all),
        "stalled_subscribers": p.stalled,
        "server_rss_before_bytes": before.map(|s| s.rss_bytes),
        "server_rss_peak_bytes": before.map(|_| peak_rss.load(Ordering::Relaxed)),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_delivery": server_cpu.map(|c| (c * 1e6 / delivered.max(1) as f64 * 100.0).round() / 100.0),
        "harness_cpu_s": proc_stats::own_cpu_secs() - own_before,
        "window": window::report(&window_start, &window_end),
    }))
}

/// Trigger-throughput parameters.
pub struct Trigger {
    /// Draw a progress bar.
    pub progress: bool,
    pub concurrency: usize,
    pub duration: Duration,
    /// Publish to this many channels in turn (`bench-trigger-0`, …); 1 publishes to
    /// `bench-trigger` alone. Many channels fill many histories, for their memory.
    pub channels: usize,
}

pub async fn trigger(app: &App, pids: &[u32], p: Trigger) -> std::io::Result<Value> {
    // Signing does not depend on anything but the body and the second, so one signed
    // request is reused: the harness measures the server, not its own HMAC.
    let data = data_token("{}");
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(if p.channels <= 1 {
        vec![app.signed_post(&trigger_body("bench", "bench-trigger", &data))]
    } else {
        (0..p.channels)
            .map(|i| app.signed_post(&trigger_body("bench", &format!("bench-trigger-{i}"), &data)))
            .collect()
    });
    let before = proc_stats::sample_all(pids);
    let own_before = proc_stats::own_cpu_secs();
    let started = Instant::now();
    let bar = Progress::time(p.progress, "trigger", p.duration);
    let mut tasks = Vec::new();
    for task in 0..p.concurrency {
        let requests = requests.clone();
        let addr = app.addr;
        let dialer = app.dialer.clone();
        let duration = p.duration;
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr, &dialer).await?;
            let mut h = new_histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut next = task;
            while started.elapsed() < duration {
                let t = Instant::now();
                let request = &requests[next % requests.len()];
                next += 1;
                match conn.send(request).await? {
                    200 => ok += 1,
                    _ => errors += 1,
                }
                let _ = h.record((t.elapsed().as_nanos() as u64).max(1));
            }
            Ok::<_, std::io::Error>((h, ok, errors))
        }));
    }
    let mut all = new_histogram();
    let (mut ok, mut errors) = (0, 0);
    for task in tasks {
        let (h, o, e) = task.await.map_err(std::io::Error::other)??;
        let _ = all.add(h);
        ok += o;
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    bar.finish();
    let after = proc_stats::sample_all(pids);
    let server_cpu = before.zip(after).map(|(b, a)| a.cpu_secs - b.cpu_secs);
    let rss_growth = before
        .zip(after)
        .map(|(b, a)| a.rss_bytes as i64 - b.rss_bytes as i64);
    Ok(json!({
        "mode": "trigger",
        "concurrency": p.concurrency,
        "channels": p.channels,
        "server_rss_growth_bytes": rss_growth,
        "requests": ok + errors,
        "errors": errors,
        "requests_per_s": ((ok + errors) as f64 / secs).round(),
        "latency": percentiles(&all),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_request": server_cpu.map(|c| (c * 1e6 / (ok + errors).max(1) as f64 * 10.0).round() / 10.0),
        "harness_cpu_s": proc_stats::own_cpu_secs() - own_before,
    }))
}

/// Opens `count` connections (subscribed to one channel each when `subscribe`) and holds
/// them while measuring the server's memory.
pub async fn connections(
    app: &App,
    pids: &[u32],
    count: usize,
    subscribe: bool,
    progress: bool,
) -> std::io::Result<Value> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = proc_stats::sample_all(pids);
    let opened = Arc::new(AtomicU64::new(0));
    let bar = Progress::count(progress, "connections", count as u64, opened.clone());
    let started = Instant::now();
    // A sliding window of connects in flight: one slow handshake must not hold up a batch.
    let mut held = Vec::with_capacity(count);
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..count {
        if in_flight.len() >= 200 {
            if let Some(done) = in_flight.join_next().await {
                held.push(done.map_err(std::io::Error::other)??);
                opened.fetch_add(1, Ordering::Relaxed);
            }
        }
        let app = app.clone();
        in_flight.spawn(async move {
            let mut c = Client::connect(&app, app.addr, i).await?;
            if subscribe {
                c.subscribe(&format!("held-{}", i % 100)).await?;
            }
            c.buf = Vec::new();
            Ok::<_, std::io::Error>(c)
        });
    }
    while let Some(done) = in_flight.join_next().await {
        held.push(done.map_err(std::io::Error::other)??);
        opened.fetch_add(1, Ordering::Relaxed);
    }
    bar.finish();
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = proc_stats::sample_all(pids);
    let per_connection = before
        .zip(after)
        .map(|(b, a)| (a.rss_bytes.saturating_sub(b.rss_bytes)) as f64 / count.max(1) as f64);
    Ok(json!({
        "mode": "connections",
        "connections": count,
        "subscribed": subscribe,
        "connects_per_s": (count as f64 / connect_secs).round(),
        "server_rss_before_bytes": before.map(|s| s.rss_bytes),
        "server_rss_after_bytes": after.map(|s| s.rss_bytes),
        "server_bytes_per_connection": per_connection.map(f64::round),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_sharing_a_rate_publish_in_turn() {
        let every = Duration::from_millis(200);
        let first: Vec<u128> = (0..4).map(|k| phase(every, k, 4).as_millis()).collect();
        assert_eq!(first, [0, 50, 100, 150]);
        assert_eq!(phase(every, 0, 0), Duration::ZERO);
    }

    #[test]
    fn finds_the_timestamp_in_a_delivered_frame() {
        let frame = br#"{"event":"bench","channel":"bench-0","data":"{\"t\":123456,\"p\":\"x\"}"}"#;
        assert_eq!(sent_at(frame), Some(123456));
        assert_eq!(sent_at(b"{}"), None);
    }
}
