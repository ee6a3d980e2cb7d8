//! `publish`: triggers events over the HTTP API at a fixed rate, each carrying its publish
//! time as Unix nanoseconds and a sequence number (`{"t":…,"n":…}`), for `hold` processes
//! (other processes, so no shared clock base) to time. With `--redis-pid` it reports
//! Redis's CPU per event over the loop, and Redis's CPU while idle just before it, over
//! as long, so the cluster's background work (heartbeats) can be told apart.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{data_token, trigger_body, App, Conn};
use crate::proc_stats;

#[derive(clap::Args)]
pub struct Args {
    /// Channels to publish to, in turn.
    #[arg(long, value_delimiter = ',', default_value = "million")]
    channels: Vec<String>,
    /// Events to publish.
    #[arg(long, default_value_t = 1)]
    events: u64,
    /// Events per second (0.1: one every ten seconds).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// The first event's sequence number (`n`).
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// The Redis server behind the cluster, whose CPU over the loop is reported.
    #[arg(long)]
    redis_pid: Option<u32>,
    /// Seconds of idle Redis CPU to measure before publishing (with `--redis-pid`).
    #[arg(long, default_value_t = 0)]
    idle: u64,
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub async fn publish(app: &App, args: Args) -> std::io::Result<Value> {
    let redis_cpu = || {
        args.redis_pid
            .and_then(proc_stats::sample)
            .map(|s| s.cpu_secs)
    };
    let idle = match (args.idle, redis_cpu()) {
        (0, _) | (_, None) => None,
        (secs, Some(before)) => {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            redis_cpu().map(|after| (after - before) / secs as f64)
        }
    };
    let mut conn = Conn::open(app.addr, &app.dialer).await?;
    let before = redis_cpu();
    let started = Instant::now();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut sent = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    for i in 0..args.events {
        let at = started + interval * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let channel = &args.channels[i as usize % args.channels.len().max(1)];
        let (t, n) = (unix_nanos(), args.first + i);
        let data = data_token(&format!(r#"{{"t":{t},"n":{n}}}"#));
        let request = app.signed_post(&trigger_body("bench", channel, &data));
        match conn.send(&request).await {
            Ok(200) => ok += 1,
            _ => failed += 1,
        }
        if args.events <= 10 {
            sent.push(json!({"n": n, "sent_ns": t, "channel": channel}));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let redis = before.zip(redis_cpu()).map(|(b, a)| a - b);
    let idle_share = idle.map_or(0.0, |per_sec| per_sec * secs);
    Ok(json!({
        "mode": "publish", "published": ok, "failed": failed, "secs": secs,
        "events_per_s": (ok as f64 / secs).round(), "sent": sent,
        "redis_cpu_secs": redis,
        "redis_idle_cpu_per_s": idle,
        "redis_cpu_us_per_event": redis.map(|r| ((r - idle_share).max(0.0) * 1e6 / ok.max(1) as f64 * 10.0).round() / 10.0),
    }))
}
