//! The measured window of a fan-out run: what each node, the Redis servers and the harness
//! spent in CPU, and what each node delivered, between two instants while publishing.
//!
//! A cluster's costs are per node (the nodes without subscribers are the point of issue 14's
//! measurement), so the window keeps one figure per process instead of the sum the rest of
//! the report gives. It opens after `--warmup`, once connections, Redis subscriptions and
//! caches have settled, and closes when the last event is published (in-flight deliveries
//! are then about a latency's worth of events, far below one percent of a window).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::proc_stats;

/// The counters a window reads: events accepted by the server, and deliveries per
/// subscribing address (in `--subscribe-to` order).
#[derive(Clone)]
pub struct Counters {
    pub sent: Arc<AtomicU64>,
    pub delivered_by_node: Arc<Vec<AtomicU64>>,
}

impl Counters {
    pub fn new(nodes: usize) -> Counters {
        Counters {
            sent: Arc::new(AtomicU64::new(0)),
            delivered_by_node: Arc::new((0..nodes.max(1)).map(|_| AtomicU64::new(0)).collect()),
        }
    }
}

/// Everything a window needs at one of its two ends.
pub struct Snapshot {
    at: Instant,
    /// CPU seconds of each `--pid`, in order; `None` for one that could not be read.
    nodes: Vec<Option<f64>>,
    /// CPU seconds of the Redis servers, summed; `None` if none is given or one is unreadable.
    redis: Option<f64>,
    harness: f64,
    sent: u64,
    delivered: Vec<u64>,
}

/// Reads the processes and counters now.
pub fn snapshot(pids: &[u32], redis_pids: &[u32], counters: &Counters) -> Snapshot {
    Snapshot {
        at: Instant::now(),
        nodes: pids
            .iter()
            .map(|&pid| proc_stats::sample(pid).map(|s| s.cpu_secs))
            .collect(),
        redis: proc_stats::sample_all(redis_pids).map(|s| s.cpu_secs),
        harness: proc_stats::own_cpu_secs(),
        sent: counters.sent.load(Ordering::Relaxed),
        delivered: counters
            .delivered_by_node
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect(),
    }
}

/// The report's `window` object, from its two ends.
pub fn report(start: &Snapshot, end: &Snapshot) -> Value {
    let seconds = end.at.duration_since(start.at).as_secs_f64();
    let events = end.sent.saturating_sub(start.sent);
    let by_node: Vec<u64> = end
        .delivered
        .iter()
        .zip(&start.delivered)
        .map(|(e, s)| e.saturating_sub(*s))
        .collect();
    let deliveries: u64 = by_node.iter().sum();
    let cpu_by_pid: Vec<Option<f64>> = end
        .nodes
        .iter()
        .zip(&start.nodes)
        .map(|(e, s)| Some(round(e.as_ref()? - s.as_ref()?, 3)))
        .collect();
    let server_cpu = cpu_by_pid
        .iter()
        .try_fold(0.0, |sum, c| Some(sum + c.as_ref()?))
        .filter(|_| !cpu_by_pid.is_empty());
    let redis_cpu = start.redis.zip(end.redis).map(|(s, e)| e - s);
    let per = |cpu: Option<f64>, n: u64| cpu.map(|c| round(c * 1e6 / n.max(1) as f64, 2));
    json!({
        "seconds": round(seconds, 2),
        "events_sent": events,
        "events_per_s": (events as f64 / seconds.max(1e-9)).round(),
        "deliveries": deliveries,
        "deliveries_by_node": by_node,
        "server_cpu_s_by_pid": cpu_by_pid,
        "server_cpu_s": server_cpu.map(|c| round(c, 3)),
        "server_cpu_us_per_delivery": per(server_cpu, deliveries),
        "redis_cpu_s": redis_cpu.map(|c| round(c, 3)),
        "redis_cpu_us_per_event": per(redis_cpu, events),
        "harness_cpu_s": round(end.harness - start.harness, 3),
    })
}

fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(
        start: &Snapshot,
        nodes: Vec<Option<f64>>,
        redis: Option<f64>,
        sent: u64,
        delivered: Vec<u64>,
    ) -> Snapshot {
        Snapshot {
            at: start.at + std::time::Duration::from_secs(10),
            nodes,
            redis,
            harness: start.harness + 1.5,
            sent,
            delivered,
        }
    }

    fn start() -> Snapshot {
        Snapshot {
            at: Instant::now(),
            nodes: vec![Some(1.0), Some(2.0), Some(3.0)],
            redis: Some(0.5),
            harness: 4.0,
            sent: 1_000,
            delivered: vec![100, 0],
        }
    }

    #[test]
    fn a_window_keeps_each_node_and_divides_by_its_own_counts() {
        let s = start();
        let e = end(
            &s,
            vec![Some(3.0), Some(2.5), Some(3.25)],
            Some(1.0),
            51_000,
            vec![40_100, 10_000],
        );
        let r = report(&s, &e);
        assert_eq!(r["seconds"], 10.0);
        assert_eq!(r["events_sent"], 50_000);
        assert_eq!(r["events_per_s"], 5_000.0);
        assert_eq!(r["deliveries"], 50_000);
        assert_eq!(r["deliveries_by_node"], json!([40_000, 10_000]));
        assert_eq!(r["server_cpu_s_by_pid"], json!([2.0, 0.5, 0.25]));
        assert_eq!(r["server_cpu_s"], 2.75);
        assert_eq!(r["server_cpu_us_per_delivery"], 55.0);
        assert_eq!(r["redis_cpu_s"], 0.5);
        // Redis's cost is per event published, whatever the deliveries.
        assert_eq!(r["redis_cpu_us_per_event"], 10.0);
        assert_eq!(r["harness_cpu_s"], 1.5);
    }

    #[test]
    fn a_process_that_cannot_be_read_leaves_its_figures_null() {
        let s = start();
        let e = end(
            &s,
            vec![Some(3.0), None, Some(4.0)],
            None,
            2_000,
            vec![100, 0],
        );
        let r = report(&s, &e);
        assert_eq!(r["server_cpu_s_by_pid"], json!([2.0, null, 1.0]));
        assert_eq!(r["server_cpu_s"], Value::Null);
        assert_eq!(r["redis_cpu_s"], Value::Null);
        assert_eq!(r["redis_cpu_us_per_event"], Value::Null);
        // Nothing delivered is no division by zero.
        assert_eq!(r["deliveries"], 0);
        assert_eq!(r["server_cpu_us_per_delivery"], Value::Null);
    }
}
