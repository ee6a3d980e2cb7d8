//! Presence churn: C presence channels of M members each (every member a distinct user,
//! signed by the harness), whose members leave (`pusher:unsubscribe`) and join again
//! (`pusher:subscribe`) on their open connections at J joins+leaves per second in all.
//!
//! Unsubscribing and subscribing again on the same connection was chosen over
//! disconnecting and reconnecting: it is what a client moving between rooms does, and it
//! measures the presence work (member bookkeeping, member_added/removed fan-out) without
//! the TCP and WebSocket handshakes, which the `connections` mode measures on its own.
//!
//! Member 0 of each channel never churns: it is the channel's observer, which times each
//! join from its `pusher:subscribe` send to the `pusher_internal:member_added` it receives
//! (and each leave to its `member_removed`). A join whose member_added never reaches the
//! observer is lost. A channel never holds more than M members (the churner is one of
//! them), so M = 100 fits the server's default `max_presence_members = 100`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::http::App;
use crate::modes::{nanos_since, new_histogram, peak_rss_sampler, percentiles};
use crate::proc_stats;
use crate::progress::Progress;
use crate::scan::{find, leading_number};
use crate::wsclient::{unsubscribe_message, Client, Kind};

/// Presence-churn parameters.
pub struct Churn {
    /// Draw a progress bar.
    pub progress: bool,
    pub channels: usize,
    /// Members per channel, the observer included (at least 2).
    pub members: usize,
    /// Joins plus leaves per second, all channels together.
    pub churn: u64,
    pub duration: Duration,
}

/// What a member's connection is told to do.
pub(crate) enum Command {
    Leave,
    Join,
}

/// What the members' tasks share.
pub(crate) struct Shared {
    pub(crate) base: Instant,
    /// Per member (by global index): when its pending join / leave was sent, in nanoseconds
    /// since `base`; 0 when none is pending.
    pub(crate) join_sent: Vec<AtomicU64>,
    pub(crate) leave_sent: Vec<AtomicU64>,
    /// member_added / member_removed frames received by all members.
    pub(crate) added: AtomicU64,
    pub(crate) removed: AtomicU64,
    /// Joins / leaves whose event reached the channel's observer.
    pub(crate) added_seen: AtomicU64,
    pub(crate) removed_seen: AtomicU64,
    /// Error frames (a refused subscription, say).
    pub(crate) errors: AtomicU64,
}

/// The member index in a member event's `user_id` (`u{index}`), without parsing the JSON.
fn user_index(frame: &[u8]) -> Option<usize> {
    let at = find(frame, b"user_id")?;
    let rest = &frame[at..];
    let start = rest.iter().position(u8::is_ascii_digit)?;
    usize::try_from(leading_number(&rest[start..])?).ok()
}

/// Records, at the observer, the time since the pending send of `index` in `sent`.
fn observe(sent: &[AtomicU64], index: usize, base: Instant, h: &mut Histogram<u64>) -> bool {
    match sent.get(index).map(|t| t.swap(0, Ordering::Relaxed)) {
        Some(t) if t != 0 => {
            let _ = h.record(nanos_since(base).saturating_sub(t).max(1));
            true
        }
        _ => false,
    }
}

/// One member's connection: counts member events, times them at the observer, and leaves
/// or joins on command until its command channel closes. Returns the observer's join and
/// leave latencies (empty for the others).
pub(crate) async fn member(
    mut c: Client,
    app: App,
    index: usize,
    channel: String,
    observer: bool,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) -> (Histogram<u64>, Histogram<u64>) {
    let (mut joins, mut leaves) = (new_histogram(), new_histogram());
    let user = format!("u{index}");
    let base = shared.base;
    loop {
        tokio::select! {
            frame = c.next_frame() => {
                let Ok(frame) = frame else { break };
                if find(&frame, b"member_added").is_some() {
                    shared.added.fetch_add(1, Ordering::Relaxed);
                    if observer
                        && user_index(&frame)
                            .is_some_and(|i| observe(&shared.join_sent, i, base, &mut joins))
                    {
                        shared.added_seen.fetch_add(1, Ordering::Relaxed);
                    }
                } else if find(&frame, b"member_removed").is_some() {
                    shared.removed.fetch_add(1, Ordering::Relaxed);
                    if observer
                        && user_index(&frame)
                            .is_some_and(|i| observe(&shared.leave_sent, i, base, &mut leaves))
                    {
                        shared.removed_seen.fetch_add(1, Ordering::Relaxed);
                    }
                } else if find(&frame, b"pusher:ping").is_some() {
                    // Members that never churn (the observer) would otherwise be closed
                    // by the server's activity timeout in runs longer than two minutes.
                    let pong = r#"{"event":"pusher:pong","data":{}}"#;
                    if c.send_text(pong).await.is_err() {
                        break;
                    }
                } else if find(&frame, b"error").is_some() {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            command = commands.recv() => {
                let (message, sent) = match command {
                    None => break,
                    Some(Command::Leave) => (unsubscribe_message(&channel), &shared.leave_sent),
                    Some(Command::Join) => (
                        c.subscribe_message(
                            &channel,
                            Some((app.key.as_str(), app.secret.as_str())),
                            Some(&user),
                        ),
                        &shared.join_sent,
                    ),
                };
                sent[index].store(nanos_since(base).max(1), Ordering::Relaxed);
                if c.send_text(&message).await.is_err() {
                    break;
                }
            }
        }
    }
    (joins, leaves)
}

pub async fn presence_churn(app: &App, pids: &[u32], p: Churn) -> std::io::Result<Value> {
    let total = p.channels * p.members;
    let shared = Arc::new(Shared {
        base: Instant::now(),
        join_sent: (0..total).map(|_| AtomicU64::new(0)).collect(),
        leave_sent: (0..total).map(|_| AtomicU64::new(0)).collect(),
        added: AtomicU64::new(0),
        removed: AtomicU64::new(0),
        added_seen: AtomicU64::new(0),
        removed_seen: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    // Member i is member i % M of channel i / M.
    let mut clients = Vec::with_capacity(total);
    for chunk_start in (0..total).step_by(200) {
        let mut pending = Vec::new();
        for i in chunk_start..(chunk_start + 200).min(total) {
            let app = app.clone();
            let channel = Kind::Presence.channel(i / p.members);
            pending.push(tokio::spawn(async move {
                let mut c = Client::connect(&app, app.addr, i).await?;
                let credentials = Some((app.key.as_str(), app.secret.as_str()));
                c.subscribe_signed(&channel, credentials, Some(&format!("u{i}")))
                    .await?;
                Ok::<_, std::io::Error>(c)
            }));
        }
        for task in pending {
            clients.push(task.await.map_err(std::io::Error::other)??);
        }
    }
    let mut senders = Vec::with_capacity(total);
    let mut tasks = Vec::with_capacity(total);
    for (i, c) in clients.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        let channel = Kind::Presence.channel(i / p.members);
        let observer = i % p.members == 0;
        tasks.push(tokio::spawn(member(
            c,
            app.clone(),
            i,
            channel,
            observer,
            shared.clone(),
            rx,
        )));
    }
    // Let the members read the member_added frames of the setup before counting: one per
    // pair of members of a channel, C·M(M−1)/2 in all. A fixed second was not enough on a
    // loaded machine or a slower server, and the setup's backlog then counted as churn
    // deliveries and delayed the first joins' events.
    let setup = (p.channels * p.members * (p.members - 1) / 2) as u64;
    let waited = Instant::now();
    while shared.added.load(Ordering::Relaxed) < setup && waited.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (added_before, removed_before) = (
        shared.added.load(Ordering::Relaxed),
        shared.removed.load(Ordering::Relaxed),
    );
    let errors_before = shared.errors.load(Ordering::Relaxed);

    let before = proc_stats::sample_all(pids);
    let own_before = proc_stats::own_cpu_secs();
    let (peak_rss, sampler) = peak_rss_sampler(pids, before);
    let bar = Progress::time(p.progress, "presence-churn", p.duration);
    let started = Instant::now();
    // Tick n goes to channel n % C; that channel's ticks alternate a leave and the join
    // back of the same member, cycling over members 1..M (0 is the observer).
    let changes = p.churn * p.duration.as_secs();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / p.churn.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut joins, mut leaves) = (0u64, 0u64);
    for n in 0..changes as usize {
        tick.tick().await;
        let channel = n % p.channels;
        let round = n / p.channels;
        let index = channel * p.members + 1 + (round / 2) % (p.members - 1);
        let command = if round % 2 == 0 {
            leaves += 1;
            Command::Leave
        } else {
            joins += 1;
            Command::Join
        };
        let _ = senders[index].send(command);
    }
    let churn_secs = started.elapsed().as_secs_f64();
    bar.finish();
    // Give in-flight member events a moment, then stop the members.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = proc_stats::sample_all(pids);
    sampler.abort();
    let added = shared.added.load(Ordering::Relaxed) - added_before;
    let removed = shared.removed.load(Ordering::Relaxed) - removed_before;
    drop(senders);
    let (mut join_latency, mut leave_latency) = (new_histogram(), new_histogram());
    for task in tasks {
        let (j, l) = task.await.map_err(std::io::Error::other)?;
        let _ = join_latency.add(j);
        let _ = leave_latency.add(l);
    }
    let added_seen = shared.added_seen.load(Ordering::Relaxed);
    let removed_seen = shared.removed_seen.load(Ordering::Relaxed);
    let server_cpu = before.zip(after).map(|(b, a)| a.cpu_secs - b.cpu_secs);
    let deliveries = added + removed;
    let round2 = |v: f64| (v * 100.0).round() / 100.0;
    Ok(json!({
        "mode": "presence-churn",
        "channels": p.channels,
        "members": p.members,
        "churn_per_s": p.churn,
        "joins": joins,
        "leaves": leaves,
        "member_added_deliveries": added,
        "member_removed_deliveries": removed,
        "deliveries": deliveries,
        "deliveries_per_s": (deliveries as f64 / churn_secs).round(),
        "lost": joins.saturating_sub(added_seen),
        "lost_removed": leaves.saturating_sub(removed_seen),
        "errors": shared.errors.load(Ordering::Relaxed) - errors_before,
        "latency": percentiles(&join_latency),
        "leave_latency": percentiles(&leave_latency),
        "server_rss_before_bytes": before.map(|s| s.rss_bytes),
        "server_rss_peak_bytes": before.map(|_| peak_rss.load(Ordering::Relaxed)),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_join_or_leave": server_cpu.map(|c| round2(c * 1e6 / (joins + leaves).max(1) as f64)),
        "server_cpu_us_per_delivery": server_cpu.map(|c| round2(c * 1e6 / deliveries.max(1) as f64)),
        "harness_cpu_s": proc_stats::own_cpu_secs() - own_before,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_member_index_in_member_events() {
        let added = br#"{"event":"pusher_internal:member_added","channel":"presence-bench-3","data":"{\"user_id\":\"u305\",\"user_info\":null}"}"#;
        assert_eq!(user_index(added), Some(305));
        let removed = br#"{"event":"pusher_internal:member_removed","channel":"presence-bench-3","data":{"user_id":"u7"}}"#;
        assert_eq!(user_index(removed), Some(7));
        assert_eq!(user_index(b"{}"), None);
    }
}
