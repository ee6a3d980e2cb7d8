//! Soak: a mixed workload held for a long time, sampled every few seconds, to show what a
//! short benchmark cannot: memory or descriptors that creep up, latency that drifts, events
//! lost after an hour. All of it runs at once against one server:
//!
//! - fan-out: subscribers over public channels, fed by HTTP triggers (single events from
//!   half of the publishers, batches from the other half); every event carries its
//!   channel's sequence number and its publish time;
//! - client events: pairs of connections on a private channel, each relaying to its peer;
//! - presence churn: members leaving and joining presence channels (`churn.rs`'s members);
//! - connection churn: connections opened, subscribed to a channel of their own and closed
//!   continuously, so the server creates and frees sockets and channels all the time;
//! - webhooks: a minimal HTTP sink on 127.0.0.1 counts what the server posts, if it was
//!   configured to post there (a server that sends none is not an error).
//!
//! Loss is measured only on the fan-out subscribers, which never churn: a subscriber
//! connected for the whole run must get every event the server accepted. Events are counted
//! by the second they were published in, so an event in flight at a sample is not counted
//! lost; a sample judges the seconds that ended `LAG` before it, the summary all of them.
//!
//! `ctx.rs` holds the counters every task shares, `workloads.rs` the tasks, `sink.rs` the
//! webhook sink; this file sets them up, samples and reports.

mod ctx;
mod sink;
mod workloads;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::churn::{member, Command, Shared};
use crate::http::App;
use crate::modes::{nanos_since, new_histogram, percentiles};
use crate::proc_stats;
use crate::progress::Progress;
use crate::wsclient::Kind;
use ctx::Ctx;
use sink::webhook_sink;
use workloads::{connect_all, connection_churn, fd_count, pair_side, publisher, subscriber};

/// How long after a second ends its events must have arrived before a sample judges them.
const LAG: u64 = 5;

/// How often a long-lived connection shows the server it is alive when the server did not
/// announce an activity timeout: servers close a connection that stays silent past it
/// (Herald's 120 s, soketi's 30 s) plus a ping, so a subscriber pings at half of it.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// The `soak` mode's flags.
#[derive(clap::Args)]
pub struct Args {
    /// Seconds the workload runs.
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    pub sample: u64,
    /// Write the samples to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub samples: Option<PathBuf>,
    /// Fan-out subscribers (never churned: loss is counted on them).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    #[arg(long, default_value_t = 10)]
    pub channels: usize,
    /// Fan-out events per second, all channels together.
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Events per request from the publishers that batch (half of them); 1: none do.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Pairs of connections exchanging client events on a private channel.
    #[arg(long, default_value_t = 10)]
    pub pairs: usize,
    /// Client events per second from each connection of a pair (servers limit it:
    /// Herald's default is 10).
    #[arg(long, default_value_t = 2)]
    pub client_event_rate: u64,
    #[arg(long, default_value_t = 4)]
    pub presence_channels: usize,
    #[arg(long, default_value_t = 25)]
    pub presence_members: usize,
    /// Presence joins plus leaves per second, all channels together.
    #[arg(long, default_value_t = 20)]
    pub presence_churn: u64,
    /// Connections opened and closed per second.
    #[arg(long, default_value_t = 20)]
    pub connection_churn: u64,
    /// Churned connections open at once.
    #[arg(long, default_value_t = 100)]
    pub connection_hold: usize,
    /// Port of the webhook sink on 127.0.0.1 (0: any; printed on stderr and reported).
    #[arg(long, default_value_t = 0)]
    pub webhook_port: u16,
}

/// What the previous sample saw, to report each interval on its own.
#[derive(Default)]
struct Last {
    at: f64,
    cpu: Option<f64>,
    own_cpu: f64,
    deliveries: u64,
    judged_until: usize,
    client_sent: u64,
    client_received: u64,
    joins: u64,
    joins_seen: u64,
    opened: u64,
    webhook_posts: u64,
    webhook_events: u64,
    errors: u64,
}

pub async fn soak(app: &App, pids: &[u32], progress: bool, p: Args) -> std::io::Result<Value> {
    let duration = Duration::from_secs(p.seconds);
    let sample_every = Duration::from_secs(p.sample.max(1));
    let base = Instant::now();
    let channels = p.channels.max(1);
    let members = p.presence_members.max(2);
    let batch = p.batch.clamp(1, 10);

    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], p.webhook_port))).await?;
    let sink_addr = listener.local_addr()?;
    eprintln!("soak: webhook sink on http://{sink_addr}/ (point the server's webhooks here)");

    // Long-lived connections take loopback source indices 0.., the churned ones the block
    // after them.
    let fanout = connect_all(app, p.subscribers, 0, move |mut c, i| async move {
        c.subscribe(&Kind::Public.channel(i % channels)).await?;
        Ok(c)
    })
    .await?;
    let credentials = (app.key.clone(), app.secret.clone());
    let pair_clients = connect_all(app, p.pairs * 2, p.subscribers, move |mut c, i| {
        let (key, secret) = credentials.clone();
        async move {
            c.subscribe_signed(
                &format!("private-soak-pair-{}", i / 2),
                Some((&key, &secret)),
                None,
            )
            .await?;
            Ok(c)
        }
    })
    .await?;
    let presence_total = p.presence_channels * members;
    let credentials = (app.key.clone(), app.secret.clone());
    let presence_clients = connect_all(
        app,
        presence_total,
        p.subscribers + p.pairs * 2,
        move |mut c, i| {
            let (key, secret) = credentials.clone();
            async move {
                let channel = format!("presence-soak-{}", i / members);
                c.subscribe_signed(&channel, Some((&key, &secret)), Some(&format!("u{i}")))
                    .await?;
                Ok(c)
            }
        },
    )
    .await?;
    let churn_index = p.subscribers + p.pairs * 2 + presence_total;

    // Seconds (since `base`) the buckets must cover: set-up so far, the run, the drain.
    let seconds = base.elapsed().as_secs() as usize + duration.as_secs() as usize + 120;
    let ctx = Arc::new(Ctx {
        base,
        expected: (0..seconds).map(|_| AtomicU64::new(0)).collect(),
        received: (0..seconds).map(|_| AtomicU64::new(0)).collect(),
        deliveries: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
        events_published: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        client_sent: AtomicU64::new(0),
        client_received: AtomicU64::new(0),
        client_gaps: Mutex::new(Vec::new()),
        pair_sent: (0..p.pairs * 2).map(|_| AtomicU64::new(0)).collect(),
        client_latency: Mutex::new(new_histogram()),
        churn_opened: AtomicU64::new(0),
        churn_closed: AtomicU64::new(0),
        connect_latency: Mutex::new(new_histogram()),
        webhook_posts: AtomicU64::new(0),
        webhook_events: Mutex::new(BTreeMap::new()),
        errors: AtomicU64::new(0),
        error_kinds: Mutex::new(BTreeMap::new()),
    });
    let sink = tokio::spawn(webhook_sink(listener, ctx.clone()));
    let (stop_tx, stop) = watch::channel(false);

    let mut subscribers_of = vec![0u64; channels];
    for i in 0..p.subscribers {
        subscribers_of[i % channels] += 1;
    }
    let subscribers_of = Arc::new(subscribers_of);
    let mut histograms = Vec::with_capacity(fanout.len());
    let mut tasks = Vec::new();
    for c in fanout {
        let h = Arc::new(Mutex::new(new_histogram()));
        histograms.push(h.clone());
        tasks.push(tokio::spawn(subscriber(c, ctx.clone(), h, stop.clone())));
    }
    let shared = Arc::new(Shared {
        base,
        join_sent: (0..presence_total).map(|_| AtomicU64::new(0)).collect(),
        leave_sent: (0..presence_total).map(|_| AtomicU64::new(0)).collect(),
        added: AtomicU64::new(0),
        removed: AtomicU64::new(0),
        added_seen: AtomicU64::new(0),
        removed_seen: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let mut senders = Vec::with_capacity(presence_total);
    let mut presence_tasks = Vec::with_capacity(presence_total);
    for (i, c) in presence_clients.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        presence_tasks.push(tokio::spawn(member(
            c,
            app.clone(),
            i,
            format!("presence-soak-{}", i / members),
            i % members == 0,
            shared.clone(),
            rx,
        )));
    }
    // Let the set-up's member_added frames arrive before anything is counted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let presence_errors_before = shared.errors.load(Ordering::Relaxed);

    let started = Instant::now();
    let until = started + duration;
    for (i, c) in pair_clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(pair_side(
            c,
            i,
            format!("private-soak-pair-{}", i / 2),
            p.client_event_rate,
            until,
            ctx.clone(),
            stop.clone(),
        )));
    }
    let publishers = 4.min(channels);
    let mut work = Vec::new();
    for k in 0..publishers {
        let owned: Vec<usize> = (k..channels).step_by(publishers).collect();
        let rate = p.rate as f64 * owned.len() as f64 / channels as f64;
        // Odd publishers batch, so both endpoints run all the time.
        let batch = if k % 2 == 1 { batch } else { 1 };
        work.push(tokio::spawn(publisher(
            app.clone(),
            ctx.clone(),
            owned,
            subscribers_of.clone(),
            rate,
            batch,
            p.payload,
            until,
        )));
    }
    work.push(tokio::spawn(connection_churn(
        app.clone(),
        ctx.clone(),
        p.connection_churn,
        p.connection_hold,
        churn_index,
        until,
    )));
    let joins = Arc::new(AtomicU64::new(0));
    let driver = {
        let joins = joins.clone();
        let (churn, presence_channels) = (p.presence_churn, p.presence_channels);
        tokio::spawn(async move {
            if churn == 0 || presence_channels == 0 {
                return senders;
            }
            // As in `presence-churn`: tick n goes to channel n % C, whose ticks alternate a
            // member's leave and its join back, cycling over members 1..M.
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / churn as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0usize;
            // End after a whole round of leaves and joins back, so every member is in its
            // channel when the run stops.
            while Instant::now() < until || n % (2 * presence_channels) != 0 {
                tick.tick().await;
                let channel = n % presence_channels;
                let round = n / presence_channels;
                let index = channel * members + 1 + (round / 2) % (members - 1);
                let command = if round % 2 == 0 {
                    Command::Leave
                } else {
                    joins.fetch_add(1, Ordering::Relaxed);
                    Command::Join
                };
                let _ = senders[index].send(command);
                n += 1;
            }
            senders
        })
    };

    let mut out = match &p.samples {
        Some(path) => Some(std::fs::File::create(path)?),
        None => None,
    };
    let bar = Progress::time(progress, "soak", duration);
    let first = proc_stats::sample_all(pids);
    let mut last = Last {
        cpu: first.map(|s| s.cpu_secs),
        own_cpu: proc_stats::own_cpu_secs(),
        judged_until: ctx.second(nanos_since(base)),
        ..Last::default()
    };
    let mut interval = new_histogram();
    let mut whole = new_histogram();
    let mut samples: Vec<Value> = Vec::new();
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + sample_every, sample_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lost_total_in_samples = 0u64;
    while Instant::now() + Duration::from_millis(100) < until {
        tick.tick().await;
        let elapsed = started.elapsed().as_secs_f64();
        let stats = proc_stats::sample_all(pids);
        let fds = fd_count(pids);
        let own_cpu = proc_stats::own_cpu_secs();
        for h in &histograms {
            if let Ok(mut h) = h.lock() {
                let _ = interval.add(&*h);
                h.reset();
            }
        }
        let _ = whole.add(&interval);
        let judge_to = ctx.second(nanos_since(base)).saturating_sub(LAG as usize);
        let (mut expected, mut received) = (0u64, 0u64);
        for s in last.judged_until..judge_to.max(last.judged_until) {
            expected += ctx.expected[s].load(Ordering::Relaxed);
            received += ctx.received[s].load(Ordering::Relaxed);
        }
        last.judged_until = judge_to.max(last.judged_until);
        let lost = expected.saturating_sub(received);
        lost_total_in_samples += lost;
        let deliveries = ctx.deliveries.load(Ordering::Relaxed);
        let client_sent = ctx.client_sent.load(Ordering::Relaxed);
        let client_received = ctx.client_received.load(Ordering::Relaxed);
        let joins_now = joins.load(Ordering::Relaxed);
        let joins_seen = shared.added_seen.load(Ordering::Relaxed);
        let opened = ctx.churn_opened.load(Ordering::Relaxed);
        let posts = ctx.webhook_posts.load(Ordering::Relaxed);
        let hook_events: u64 = ctx
            .webhook_events
            .lock()
            .map(|m| m.values().sum())
            .unwrap_or(0);
        let errors = ctx.errors.load(Ordering::Relaxed) + shared.errors.load(Ordering::Relaxed)
            - presence_errors_before;
        let span = (elapsed - last.at).max(0.001);
        let cpu = stats.map(|s| s.cpu_secs).zip(last.cpu).map(|(a, b)| a - b);
        let ms = |v: u64| (v as f64 / 1e6 * 100.0).round() / 100.0;
        let sample = json!({
            "elapsed_s": (elapsed * 10.0).round() / 10.0,
            "rss_bytes": stats.map(|s| s.rss_bytes),
            "fds": fds,
            "server_cpu_s": cpu.map(|c| (c * 100.0).round() / 100.0),
            "server_cpu_pct": cpu.map(|c| (c / span * 1000.0).round() / 10.0),
            "harness_cpu_pct": ((own_cpu - last.own_cpu) / span * 1000.0).round() / 10.0,
            "deliveries": deliveries - last.deliveries,
            "deliveries_per_s": ((deliveries - last.deliveries) as f64 / span).round(),
            "expected": expected,
            "lost": lost,
            "p50_ms": ms(interval.value_at_quantile(0.5)),
            "p99_ms": ms(interval.value_at_quantile(0.99)),
            "max_ms": ms(interval.max()),
            "client_events_sent": client_sent - last.client_sent,
            "client_events_received": client_received - last.client_received,
            "presence_joins": joins_now - last.joins,
            "presence_joins_seen": joins_seen - last.joins_seen,
            "connections_churned": opened - last.opened,
            "webhook_posts": posts - last.webhook_posts,
            "webhook_events": hook_events - last.webhook_events,
            "errors": errors - last.errors,
        });
        interval.reset();
        last = Last {
            at: elapsed,
            cpu: stats.map(|s| s.cpu_secs),
            own_cpu,
            deliveries,
            judged_until: last.judged_until,
            client_sent,
            client_received,
            joins: joins_now,
            joins_seen,
            opened,
            webhook_posts: posts,
            webhook_events: hook_events,
            errors,
        };
        let line = sample.to_string();
        match out.as_mut() {
            Some(file) => {
                writeln!(file, "{line}")?;
                file.flush()?;
            }
            None => println!("{line}"),
        }
        samples.push(sample);
    }
    bar.finish();
    for task in work {
        let _ = task.await;
    }
    let senders = driver.await.map_err(std::io::Error::other)?;
    // In-flight deliveries and member events, then stop everything.
    tokio::time::sleep(Duration::from_secs(LAG)).await;
    let after = proc_stats::sample_all(pids);
    let fds_after = fd_count(pids);
    let _ = stop_tx.send(true);
    drop(senders);
    for task in tasks {
        let _ = task.await;
    }
    let mut join_latency = new_histogram();
    for task in presence_tasks {
        if let Ok((j, _)) = task.await {
            let _ = join_latency.add(j);
        }
    }
    sink.abort();
    for h in &histograms {
        if let Ok(h) = h.lock() {
            let _ = whole.add(&*h);
        }
    }

    let expected: u64 = ctx.expected.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    let received: u64 = ctx.received.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    let deliveries = ctx.deliveries.load(Ordering::Relaxed);
    let at = |key: &str, i: usize| samples.get(i).map(|s| s[key].clone());
    let rss_at = |secs: f64| {
        samples
            .iter()
            .find(|s| s["elapsed_s"].as_f64().is_some_and(|e| e >= secs - 1.0))
            .map(|s| s["rss_bytes"].clone())
    };
    let n = samples.len();
    let rss_5min = (duration.as_secs() >= 300)
        .then(|| rss_at(300.0))
        .flatten()
        .and_then(|v| v.as_u64());
    let rss_end = n
        .checked_sub(1)
        .and_then(|i| at("rss_bytes", i))
        .and_then(|v| v.as_u64());
    let growth = rss_5min
        .zip(rss_end)
        .map(|(a, b)| ((b as f64 - a as f64) / a.max(1) as f64 * 1000.0).round() / 10.0);
    let p99s: Vec<f64> = samples
        .iter()
        .filter_map(|s| s["p99_ms"].as_f64())
        .collect();
    let server_cpu = first.zip(after).map(|(b, a)| a.cpu_secs - b.cpu_secs);
    let client_sent = ctx.client_sent.load(Ordering::Relaxed);
    let client_received = ctx.client_received.load(Ordering::Relaxed);
    let joins = joins.load(Ordering::Relaxed);
    let joins_seen = shared.added_seen.load(Ordering::Relaxed);
    let errors = ctx.errors.load(Ordering::Relaxed) + shared.errors.load(Ordering::Relaxed)
        - presence_errors_before;
    let mut error_kinds = ctx
        .error_kinds
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let presence_errors = shared.errors.load(Ordering::Relaxed) - presence_errors_before;
    if presence_errors > 0 {
        error_kinds.insert("presence_error_frame", presence_errors);
    }
    let webhook_events = ctx
        .webhook_events
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let secs = duration.as_secs_f64().max(0.001);
    let mut report = json!({
        "mode": "soak",
        "seconds": duration.as_secs(),
        "sample_s": sample_every.as_secs_f64(),
        "samples": n,
        "subscribers": p.subscribers,
        "channels": channels,
        "rate_events_per_s": p.rate,
        "payload_bytes": p.payload,
        "batch": batch,
        "pairs": p.pairs,
        "client_event_rate": p.client_event_rate,
        "presence_channels": p.presence_channels,
        "presence_members": members,
        "presence_churn_per_s": p.presence_churn,
        "connection_churn_per_s": p.connection_churn,
        "connection_hold": p.connection_hold,
        "webhook_sink": format!("http://{sink_addr}/"),
    });
    let results = json!({
        "trigger_requests": ctx.requests.load(Ordering::Relaxed),
        "events_sent": ctx.events_published.load(Ordering::Relaxed),
        "deliveries_expected": expected,
        "deliveries": deliveries,
        "deliveries_per_s": (deliveries as f64 / secs).round(),
        "lost": expected.saturating_sub(received),
        "lost_in_samples": lost_total_in_samples,
        "out_of_order": ctx.out_of_order.load(Ordering::Relaxed),
        "latency": percentiles(&whole),
        "p99_ms_min": p99s.iter().copied().reduce(f64::min),
        "p99_ms_max": p99s.iter().copied().reduce(f64::max),
        "client_events_sent": client_sent,
        "client_events_received": client_received,
        "client_events_lost": client_sent.saturating_sub(client_received),
        "client_event_gaps": ctx.client_gaps.lock().map(|g| g.clone()).unwrap_or_default(),
        "client_event_latency": ctx.client_latency.lock().map(|h| percentiles(&h)).ok(),
        "presence_joins": joins,
        "presence_joins_lost": joins.saturating_sub(joins_seen),
        "presence_join_latency": percentiles(&join_latency),
        "connections_churned": ctx.churn_opened.load(Ordering::Relaxed),
        "connections_closed": ctx.churn_closed.load(Ordering::Relaxed),
        "connect_latency": ctx.connect_latency.lock().map(|h| percentiles(&h)).ok(),
        "webhook_posts": ctx.webhook_posts.load(Ordering::Relaxed),
        "webhook_events": webhook_events,
        "errors": errors,
        "error_kinds": error_kinds,
        "server_rss_first_bytes": at("rss_bytes", 0),
        "server_rss_5min_bytes": rss_5min,
        "server_rss_end_bytes": rss_end,
        "server_rss_growth_since_5min_pct": growth,
        "server_rss_after_bytes": after.map(|s| s.rss_bytes),
        "server_fds_first": at("fds", 0),
        "server_fds_last": n.checked_sub(1).and_then(|i| at("fds", i)),
        "server_fds_max": samples.iter().filter_map(|s| s["fds"].as_u64()).max(),
        "server_fds_after": fds_after,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_delivery": server_cpu.map(|c| (c * 1e6 / deliveries.max(1) as f64 * 100.0).round() / 100.0),
        "harness_cpu_s": proc_stats::own_cpu_secs(),
    });
    if let (Some(report), Value::Object(results)) = (report.as_object_mut(), results) {
        report.extend(results);
    }
    Ok(report)
}
