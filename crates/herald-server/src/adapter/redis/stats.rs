//! What `/metrics` shows of a node's cluster membership: the bus's and the state queue's
//! gauges and counters, and whether Redis answers, read from the node's atomics at scrape.

use std::sync::atomic::Ordering;

use super::Cluster;

/// A snapshot of the cluster membership's queues and health, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClusterStats {
    /// Bytes of bus messages queued or held by the publisher.
    pub(crate) bus_bytes: usize,
    /// Bus messages waiting in the queue.
    pub(crate) bus_queued: usize,
    /// Bus messages the publisher holds: taken from the queue, not yet confirmed by Redis.
    pub(crate) bus_held: usize,
    /// Bus messages dropped for a full queue.
    pub(crate) bus_dropped: u64,
    /// Bus messages sent again because their pipeline failed.
    pub(crate) bus_resent: u64,
    /// Copies of bus messages this node had received already, dropped.
    pub(crate) bus_duplicates: u64,
    /// Bus messages received (those of channels this node has subscribers of, and the
    /// control channel's).
    pub(crate) bus_received: u64,
    /// Gaps in what the bus delivered (lost subscriptions, a listener that fell behind).
    pub(crate) bus_gaps: u64,
    /// Bus channels this node listens to, besides the control channel.
    pub(crate) bus_channels: usize,
    /// State changes waiting for Redis.
    pub(crate) ops_queued: usize,
    /// State changes refused for a full share.
    pub(crate) ops_refused: u64,
    /// Whether Redis answered the last call.
    pub(crate) healthy: bool,
}

impl ClusterStats {
    /// The membership's gauges and counters, as `/metrics` shows them.
    pub(super) fn families(&self) -> Vec<prometheus::proto::MetricFamily> {
        use crate::metrics::{single, MetricType};
        let g = |name, help, v: usize| single(name, help, MetricType::GAUGE, v as u64);
        let c = |name, help, v: u64| single(name, help, MetricType::COUNTER, v);
        [
            g(
                "herald_cluster_bus_queue_bytes",
                "Bytes of messages for other nodes queued or held by the publisher",
                self.bus_bytes,
            ),
            g(
                "herald_cluster_bus_queue_messages",
                "Messages for other nodes waiting in the bus queue",
                self.bus_queued,
            ),
            g(
                "herald_cluster_bus_held_messages",
                "Messages the publisher has taken and Redis has not confirmed yet (held while Redis or a shard does not answer)",
                self.bus_held,
            ),
            c(
                "herald_cluster_bus_resent_total",
                "Messages for other nodes sent to Redis again because their pipeline failed; the receivers drop copies",
                self.bus_resent,
            ),
            c(
                "herald_cluster_bus_duplicates_total",
                "Copies of messages from other nodes this node had already received, dropped",
                self.bus_duplicates,
            ),
            c(
                "herald_cluster_bus_dropped_total",
                "Messages for other nodes dropped because the bus queue was full",
                self.bus_dropped,
            ),
            c(
                "herald_cluster_bus_received_total",
                "Messages this node received from the bus",
                self.bus_received,
            ),
            c(
                "herald_cluster_bus_gaps_total",
                "Times the bus lost messages for this node (a lost subscription, a listener behind)",
                self.bus_gaps,
            ),
            g(
                "herald_cluster_bus_channels",
                "Bus channels this node listens to: those of the channels it has subscribers of",
                self.bus_channels,
            ),
            g(
                "herald_cluster_ops_queued",
                "State changes waiting for Redis",
                self.ops_queued,
            ),
            c(
                "herald_cluster_ops_refused_total",
                "State changes refused because an app's share of the queue was full",
                self.ops_refused,
            ),
            g(
                "herald_cluster_redis_up",
                "1 while Redis answers this node, 0 while it does not",
                usize::from(self.healthy),
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl Cluster {
    /// What the node's metrics show of its membership.
    pub(crate) fn stats(&self) -> ClusterStats {
        let (bus_received, bus_gaps, bus_duplicates) = self.bus.counts();
        ClusterStats {
            bus_bytes: self.out.budget.used(),
            bus_queued: self.outgoing.max_capacity() - self.outgoing.capacity(),
            bus_held: self.out.held.load(Ordering::Relaxed),
            bus_dropped: self.dropped.load(Ordering::Relaxed),
            bus_resent: self.out.resent.load(Ordering::Relaxed),
            bus_duplicates,
            bus_received,
            bus_gaps,
            bus_channels: self.bus.channels.load(Ordering::Relaxed),
            ops_queued: self.places.waiting(),
            ops_refused: self.refused.load(Ordering::Relaxed),
            healthy: self.healthy.load(Ordering::Relaxed),
        }
    }
}
