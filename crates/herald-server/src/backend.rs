//! The seam between the node and what it shares state through: nothing for a single node,
//! Redis for a cluster ([`crate::adapter::Cluster`]). The admin listener asks it whether the
//! node can serve and what it has to report.

use prometheus::proto::MetricFamily;

/// What the admin listener needs of the node's backend.
pub(crate) trait Backend: Send + Sync {
    /// Why the backend cannot serve right now, in one line; `None` while it can.
    fn unavailable(&self) -> Option<&'static str>;
    /// The backend's own metrics.
    fn metric_families(&self) -> Vec<MetricFamily>;
}

/// A single node: its state is all in memory, so it is always available.
pub(crate) struct Standalone;

impl Backend for Standalone {
    fn unavailable(&self) -> Option<&'static str> {
        None
    }

    fn metric_families(&self) -> Vec<MetricFamily> {
        Vec::new()
    }
}
