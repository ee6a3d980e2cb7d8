//! What the admin listener asks of the node's backend (the adapter it shares state
//! through): whether the node can serve, and what the backend adds to `/metrics`.

use futures_util::future::BoxFuture;
use prometheus::proto::MetricFamily;

/// What the admin listener and the server's shutdown need of the node's backend.
pub(crate) trait Backend: Send + Sync {
    /// Why the backend cannot serve a new connection right now, in one line; `None` while
    /// it can.
    fn unavailable(&self) -> Option<&'static str>;
    /// What the node serves without, while it still serves (a cluster node whose shared
    /// state does not answer serves its own sockets alone), in one line; `None` when
    /// nothing.
    fn degraded(&self) -> Option<&'static str> {
        None
    }
    /// The backend's own metrics.
    fn metric_families(&self) -> Vec<MetricFamily>;
    /// Reads the backend's files again (its TLS certificates), on a configuration reload:
    /// connections made from now on use them. Logs what it did.
    fn reload_files(&self) {}
    /// Leaves what the node shares, once every connection is closed (clean shutdown).
    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}
