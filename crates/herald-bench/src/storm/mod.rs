//! Reconnect storm (issue 17): N clients, each signed in (`pusher:signin`) as one of U users
//! and subscribed to one of C public channels, are closed by the server all at once, and
//! the run times how long until every one is back: connected, signed in and subscribed.
//!
//! The storm is the signed HTTP API's `terminate_connections` for every user at once
//! (`--via terminate`): every Pusher server has it, which is why the clients sign in. Herald
//! closes them with its `terminate_close_code` (4200 for these runs: pusher-js reconnects
//! at once). sockudo and soketi close with 4009, after which pusher-js would stay away; the
//! harness reconnects on any close all the same, so the servers are compared on the same
//! storm, and reports the codes it saw. `--via drain` SIGTERMs a cluster node instead, and
//! its clients reconnect to another node (`--reconnect-to`).
//!
//! A publisher sends events carrying a sequence number and their publish time to every
//! channel at a modest rate before, during and after the storm. An event published after a
//! client was back must reach it, or it is lost: the publish time is taken before the
//! request is sent, so the server handled it after the client had both confirmations.//!
//! `client.rs` is one client's life over the run, `publish.rs` the publishers and the
//! storm's trigger; this file sets them up and reports.

mod client;
mod publish;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use crate::http::App;
use crate::modes::{nanos_since, new_histogram, peak_rss_sampler, percentiles};
use crate::proc_stats;
use crate::progress::Progress;
use client::client;
use publish::{fd_count, publisher, terminate_all, unix_ms};

/// How the server is made to close every client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// `POST /apps/{id}/users/{user}/terminate_connections` for every user at once.
    Terminate,
    /// SIGTERM to `--drain-pid` (a node of a cluster); the clients reconnect to
    /// `--reconnect-to`.
    Drain,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Terminate => "terminate",
            Via::Drain => "drain",
        }
    }
}

/// The `storm` mode's flags.
#[derive(clap::Args)]
pub struct Args {
    /// Clients held, each signed in and subscribed to one channel.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Public channels; client i subscribes to channel i % C.
    #[arg(long, default_value_t = 50)]
    pub channels: usize,
    /// Users the clients sign in as (client i is user i % U); one terminate request each.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Events per second, all channels together, from the end of the setup to the end of
    /// the settle. A client back waits for its channel's next event, and a channel's events
    /// are C / rate seconds apart, so `first_event_delay` is mostly that wait (half the
    /// spacing on average); `first_event_latency`, that event's publish to receipt, is the
    /// server's part.
    #[arg(long, default_value_t = 50)]
    pub rate: u64,
    /// Seconds the clients are held, events flowing, before the storm.
    #[arg(long, default_value_t = 3)]
    pub hold: u64,
    /// Seconds events keep flowing once every client is back.
    #[arg(long, default_value_t = 5)]
    pub settle: u64,
    /// Seconds the storm may take before the run stops waiting for clients not back.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    #[arg(long, value_enum, default_value = "terminate")]
    pub via: Via,
    /// Where the clients connect first (default `--addr`, where events and terminate
    /// requests go).
    #[arg(long)]
    pub connect_to: Option<SocketAddr>,
    /// Where they reconnect after a close (default: where they connected first).
    #[arg(long)]
    pub reconnect_to: Option<SocketAddr>,
    /// With `--via drain`: the process to SIGTERM, the node the clients are on. Leave it out
    /// of `--pid`, whose processes must outlive the run to be measured.
    #[arg(long, required_if_eq("via", "drain"))]
    pub drain_pid: Option<u32>,
    /// Put before the channel and user names, so harness processes sharing a cluster do not
    /// receive or terminate each other's.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Start the storm at this wall-clock time (milliseconds since the Unix epoch) instead of
    /// `--hold` seconds after the setup, so that harness processes storm together.
    #[arg(long)]
    pub storm_at_unix_ms: Option<u64>,
}

/// Connection attempts in flight while the clients first connect: the setup is not what
/// is measured, and an unbounded one would be a storm of its own.
const SETUP_IN_FLIGHT: usize = 200;
/// The longest the first connections may take, all of them, and the first of them (a
/// server that refuses every one, say for a feature it has off, fails the run soon).
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
const FIRST_TIMEOUT: Duration = Duration::from_secs(10);
/// An attempt to be back that takes longer counts as refused and is retried, so a server
/// that accepts a connection and never answers cannot stall the run.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time left after the last publish for the deliveries in flight.
const DRAIN: Duration = Duration::from_secs(1);
/// Publishing connections; one would fall behind while the server is busy with the storm.
const PUBLISHERS: u64 = 4;

/// Why an attempt to be back failed: a reason (the key of `refused_by`) and the detail.
type Refusal = (&'static str, String);

/// Counts the clients' tasks share.
struct Shared {
    base: Instant,
    /// When the storm began, in nanoseconds since `base`; `u64::MAX` before.
    storm_at: AtomicU64,
    /// Clients through their first connection.
    ready: Arc<AtomicU64>,
    /// Clients back after the storm closed them.
    back: Arc<AtomicU64>,
    /// Failed attempts to come back, and failed first connections.
    refused: AtomicU64,
    setup_refused: AtomicU64,
    tally: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    /// Close codes seen, as text: `1006` is a connection that ended without a Close frame,
    /// `1005` a Close without a code.
    close_codes: BTreeMap<String, u64>,
    refused_by: BTreeMap<&'static str, u64>,
    first_refusal: Option<String>,
    first_setup_refusal: Option<String>,
}

impl Shared {
    fn tally(&self, f: impl FnOnce(&mut Tally)) {
        if let Ok(mut tally) = self.tally.lock() {
            f(&mut tally);
        }
    }

    /// Counts a failed attempt: at the setup, or to come back.
    fn refuse(&self, setup: bool, reason: &'static str, detail: String) {
        if setup {
            self.setup_refused.fetch_add(1, Ordering::Relaxed);
            self.tally(|t| {
                t.first_setup_refusal.get_or_insert(detail);
            });
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            self.tally(|t| {
                *t.refused_by.entry(reason).or_default() += 1;
                t.first_refusal
                    .get_or_insert_with(|| format!("{reason}: {detail}"));
            });
        }
    }

    fn storm_started(&self) -> bool {
        self.storm_at.load(Ordering::Relaxed) != u64::MAX
    }
}

/// Who client i is and where it connects.
struct Names {
    connect_to: SocketAddr,
    reconnect_to: SocketAddr,
    channels: usize,
    users: usize,
    prefix: String,
}

impl Names {
    fn channel(&self, c: usize) -> String {
        format!("{}storm-{c}", self.prefix)
    }

    fn user(&self, u: usize) -> String {
        format!("{}u{u}", self.prefix)
    }
}

/// What one client saw over the run; times in nanoseconds since `base`.
#[derive(Default)]
struct Outcome {
    channel: usize,
    /// The storm's close: the first close seen once the storm began.
    closed_at: Option<u64>,
    /// Back (signed in and subscribed) for the first time after that close.
    back_at: Option<u64>,
    /// Closes seen before the storm began, which nothing in the run should cause.
    closed_before_storm: u64,
    /// The start of the connection the client ended the run on (when it was confirmed).
    session_at: u64,
    /// Whether the client ended the run connected; one still coming back is left out of
    /// the losses (it is counted in `not_resubscribed`).
    live: bool,
    /// Sequence numbers received on that connection.
    session: Vec<u64>,
    /// Publish and receipt time of that connection's first event.
    first: Option<(u64, u64)>,
    /// Publish-to-receipt time of every event, over the whole run.
    latencies: Vec<u64>,
}

/// One published event.
#[derive(Clone, Copy, Debug)]
struct Published {
    n: u64,
    channel: usize,
    /// Taken before the request was sent.
    at: u64,
    /// Whether the server accepted it (200).
    ok: bool,
}

/// Events lost by clients: for each, the accepted events published on its channel after
/// its last connection was confirmed that it did not receive on that connection. Returns
/// (expected, lost, duplicates).
fn losses(outcomes: &[Outcome], events: &[Published], channels: usize) -> (u64, u64, u64) {
    // Per channel, the publish times and numbers of its accepted events, by time.
    let mut by_channel: Vec<Vec<(u64, u64)>> = vec![Vec::new(); channels];
    for e in events.iter().filter(|e| e.ok) {
        if let Some(list) = by_channel.get_mut(e.channel) {
            list.push((e.at, e.n));
        }
    }
    for list in &mut by_channel {
        list.sort_unstable();
    }
    let (mut expected, mut lost, mut duplicates) = (0, 0, 0);
    for o in outcomes.iter().filter(|o| o.live) {
        let mut got = o.session.clone();
        got.sort_unstable();
        let before = got.len();
        got.dedup();
        duplicates += (before - got.len()) as u64;
        let Some(list) = by_channel.get(o.channel) else {
            continue;
        };
        let from = list.partition_point(|(at, _)| *at <= o.session_at);
        for (_, n) in &list[from..] {
            expected += 1;
            if got.binary_search(n).is_err() {
                lost += 1;
            }
        }
    }
    (expected, lost, duplicates)
}

pub async fn storm(app: &App, pids: &[u32], progress: bool, a: Args) -> std::io::Result<Value> {
    let connect_to = a.connect_to.unwrap_or(app.addr);
    let names = Arc::new(Names {
        connect_to,
        reconnect_to: a.reconnect_to.unwrap_or(connect_to),
        channels: a.channels.max(1),
        users: a.users.max(1),
        prefix: a.prefix.clone(),
    });
    let shared = Arc::new(Shared {
        base: Instant::now(),
        storm_at: AtomicU64::new(u64::MAX),
        ready: Arc::default(),
        back: Arc::default(),
        refused: AtomicU64::new(0),
        setup_refused: AtomicU64::new(0),
        tally: Mutex::default(),
    });
    let base = shared.base;
    let n = a.clients as u64;
    let (stop_clients, stopped) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(SETUP_IN_FLIGHT));
    let setup_started = Instant::now();
    let bar = Progress::count(progress, "connect", n, shared.ready.clone());
    let mut clients = Vec::with_capacity(a.clients);
    for i in 0..a.clients {
        clients.push(tokio::spawn(client(
            i,
            app.clone(),
            names.clone(),
            shared.clone(),
            gate.clone(),
            stopped.clone(),
        )));
    }
    while shared.ready.load(Ordering::Relaxed) < n {
        let ready = shared.ready.load(Ordering::Relaxed);
        let elapsed = setup_started.elapsed();
        if elapsed > SETUP_TIMEOUT || (ready == 0 && elapsed > FIRST_TIMEOUT) {
            bar.finish();
            let _ = stop_clients.send(true);
            let first = shared
                .tally
                .lock()
                .ok()
                .and_then(|t| t.first_setup_refusal.clone());
            return Err(std::io::Error::other(format!(
                "{ready} of {n} clients connected within {elapsed:.0?} (first error: {})",
                first.as_deref().unwrap_or("none")
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bar.finish();
    let setup_secs = setup_started.elapsed().as_secs_f64();

    let (stop_publishing, publishing) = watch::channel(false);
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|k| {
            tokio::spawn(publisher(
                k,
                app.clone(),
                names.clone(),
                a.rate,
                base,
                publishing.clone(),
            ))
        })
        .collect();
    let hold = match a.storm_at_unix_ms {
        Some(at) => Duration::from_millis(at.saturating_sub(unix_ms())),
        None => Duration::from_secs(a.hold),
    };
    tokio::time::sleep(hold).await;

    let fds_before = fd_count(pids);
    let before = proc_stats::sample_all(pids);
    let own_before = proc_stats::own_cpu_secs();
    let (peak_rss, sampler) = peak_rss_sampler(pids, before);
    let storm_at = nanos_since(base);
    let storm_unix_ms = unix_ms();
    shared.storm_at.store(storm_at, Ordering::Relaxed);
    let trigger = {
        let (app, names, via, pid) = (app.clone(), names.clone(), a.via, a.drain_pid);
        tokio::spawn(async move {
            let result = match (via, pid) {
                (Via::Terminate, _) => terminate_all(&app, &names).await,
                (Via::Drain, Some(pid)) => {
                    match std::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status()
                    {
                        Ok(status) if status.success() => (0, None),
                        Ok(status) => (1, Some(format!("kill -TERM {pid}: {status}"))),
                        Err(e) => (1, Some(format!("kill -TERM {pid}: {e}"))),
                    }
                }
                (Via::Drain, None) => (1, Some("--via drain needs --drain-pid".to_owned())),
            };
            (result, nanos_since(base))
        })
    };
    let bar = Progress::count(progress, "storm", n, shared.back.clone());
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    while shared.back.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bar.finish();
    let storm_end = nanos_since(base);
    let during = proc_stats::sample_all(pids);
    let own_during = proc_stats::own_cpu_secs();
    let ((trigger_errors, trigger_error), trigger_done) =
        trigger.await.map_err(std::io::Error::other)?;

    tokio::time::sleep(Duration::from_secs(a.settle)).await;
    let _ = stop_publishing.send(true);
    let mut events = Vec::new();
    for p in publishers {
        events.extend(p.await.map_err(std::io::Error::other)??);
    }
    tokio::time::sleep(DRAIN).await;
    sampler.abort();
    let after = proc_stats::sample_all(pids);
    let fds_after = fd_count(pids);
    let _ = stop_clients.send(true);
    let mut outcomes = Vec::with_capacity(a.clients);
    for c in clients {
        outcomes.push(c.await.map_err(std::io::Error::other)?);
    }

    let (mut reconnect, mut first_delay, mut first_latency, mut latency) = (
        new_histogram(),
        new_histogram(),
        new_histogram(),
        new_histogram(),
    );
    let (mut last_closed, mut last_back) = (None::<u64>, None::<u64>);
    let (mut closed, mut back, mut closed_before_storm, mut deliveries) = (0u64, 0u64, 0, 0);
    for o in &outcomes {
        closed_before_storm += o.closed_before_storm;
        deliveries += o.latencies.len() as u64;
        for l in &o.latencies {
            let _ = latency.record((*l).max(1));
        }
        let Some(closed_at) = o.closed_at else {
            continue;
        };
        closed += 1;
        last_closed = last_closed.max(Some(closed_at - storm_at));
        let Some(back_at) = o.back_at else {
            continue;
        };
        back += 1;
        last_back = last_back.max(Some(back_at - storm_at));
        let _ = reconnect.record((back_at - closed_at).max(1));
        if let Some((at, received)) = o.first.filter(|_| o.session_at >= back_at) {
            let _ = first_delay.record(received.saturating_sub(o.session_at).max(1));
            let _ = first_latency.record(received.saturating_sub(at).max(1));
        }
    }
    let (expected, lost, duplicates) = losses(&outcomes, &events, names.channels);
    let tally = shared
        .tally
        .lock()
        .map_err(|_| std::io::Error::other("poisoned"))?;
    let ms = |ns: u64| (ns as f64 / 1e5).round() / 10.0;
    let server_cpu = before
        .zip(during)
        .map(|(b, d)| ((d.cpu_secs - b.cpu_secs) * 100.0).round() / 100.0);
    let mut report = json!({
        "mode": "storm",
        "via": a.via.name(),
        "storm_clients": a.clients,
        "channels": names.channels,
        "users": names.users,
        "rate_events_per_s": a.rate,
        "setup_connects_per_s": (n as f64 / setup_secs).round(),
        "storm_started_unix_ms": storm_unix_ms,
        "setup_refused": shared.setup_refused.load(Ordering::Relaxed),
        "trigger_errors": trigger_errors,
        "trigger_error": trigger_error,
        "trigger_ms": ms(trigger_done - storm_at),
        "close_codes": tally.close_codes,
        "closed": closed,
        "closed_before_storm": closed_before_storm,
        "all_closed_ms": (closed == n).then(|| last_closed.map(ms)),
        "resubscribed": back,
        "not_resubscribed": n - back,
        "all_resubscribed_ms": (back == n).then(|| last_back.map(ms)),
        "last_resubscribed_ms": last_back.map(ms),
        "reconnect": percentiles(&reconnect),
        "refused": shared.refused.load(Ordering::Relaxed),
        "refused_by": tally.refused_by,
        "first_refusal": tally.first_refusal,
    });
    // Two halves: one json! of every field passes serde_json's macro recursion limit.
    let more = json!({
        "events_sent": events.iter().filter(|e| e.ok).count(),
        "publish_errors": events.iter().filter(|e| !e.ok).count(),
        "deliveries": deliveries,
        "expected_after_resubscribe": expected,
        "lost_after_resubscribe": lost,
        "duplicates": duplicates,
        "first_event_delay": percentiles(&first_delay),
        "first_event_latency": percentiles(&first_latency),
        "latency": percentiles(&latency),
        "storm_window_ms": ms(storm_end - storm_at),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_reconnection": server_cpu.map(|c| (c * 1e6 / back.max(1) as f64 * 10.0).round() / 10.0),
        "harness_cpu_s": ((own_during - own_before) * 100.0).round() / 100.0,
        "server_rss_before_bytes": before.map(|s| s.rss_bytes),
        "server_rss_peak_bytes": before.map(|_| peak_rss.load(Ordering::Relaxed)),
        "server_rss_after_bytes": after.map(|s| s.rss_bytes),
        "server_fds_before": fds_before,
        "server_fds_after": fds_after,
    });
    if let (Some(report), Value::Object(more)) = (report.as_object_mut(), more) {
        report.extend(more);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::client::{backoff, close_code, event, signin_message};
    use super::*;

    #[test]
    fn reads_the_sequence_and_publish_time_of_an_event() {
        let frame = br#"{"event":"storm","channel":"storm-3","data":"{\"t\":123456,\"n\":42}"}"#;
        assert_eq!(event(frame), Some((123456, 42)));
        assert_eq!(event(br#"{"event":"pusher:signin_success"}"#), None);
    }

    #[test]
    fn reads_close_codes() {
        assert_eq!(close_code(&[0x10, 0x68, b'x']), "4200");
        assert_eq!(close_code(&[0x0f, 0xa9]), "4009");
        assert_eq!(close_code(&[]), "1005");
    }

    #[test]
    fn the_signin_message_carries_user_data_as_a_string() {
        let message = signin_message("key:sig", r#"{"id":"u7"}"#);
        let parsed: Value = serde_json::from_str(&message).unwrap_or_default();
        assert_eq!(parsed["event"], "pusher:signin");
        assert_eq!(parsed["data"]["auth"], "key:sig");
        assert_eq!(parsed["data"]["user_data"], r#"{"id":"u7"}"#);
    }

    #[test]
    fn events_due_after_a_client_is_back_and_not_received_are_lost() {
        let e = |n, channel, at, ok| Published { n, channel, at, ok };
        let events = [
            e(0, 0, 10, true),
            e(1, 1, 20, true),
            e(2, 0, 30, true),
            e(3, 1, 40, false),
            e(4, 0, 50, true),
        ];
        let client = |channel, session_at, session: &[u64]| Outcome {
            channel,
            session_at,
            live: true,
            session: session.to_vec(),
            ..Outcome::default()
        };
        let outcomes = [
            // Back at 25 on channel 0: 2 and 4 are due; 4 never came.
            client(0, 25, &[2]),
            // Back at 5: 0, 2 and 4 due, all received, 2 twice.
            client(0, 5, &[0, 2, 2, 4]),
            // Channel 1 after 20: only 3, which the server refused.
            client(1, 20, &[]),
            // Still coming back at the end: nothing is due.
            Outcome {
                live: false,
                ..client(0, 0, &[])
            },
        ];
        assert_eq!(losses(&outcomes, &events, 2), (5, 1, 1));
    }

    #[test]
    fn backoff_grows_to_a_second() {
        assert_eq!(backoff(1, 0), Duration::from_millis(50));
        assert_eq!(backoff(2, 0), Duration::from_millis(100));
        assert_eq!(backoff(9, 7), Duration::from_millis(1007));
    }
}
