//! Where each backend starts: the one place that builds the node's [`Adapter`] from its
//! [`AdapterConfig`], and with `config.rs` the only one that names the backends.

use std::io;
use std::sync::Arc;

use super::config::AdapterConfig;
use super::{redis, Adapter};
use crate::apps::AppStore;

/// Starts the node's backend for the apps of `apps`: at once for a single node; a cluster
/// node returns once it has joined (its first heartbeat is recorded and it hears the other
/// nodes), and fails if its cluster does not answer: a node that started without it would
/// silently serve a split view.
pub(crate) async fn start(
    config: &AdapterConfig,
    node_id: u32,
    apps: Arc<dyn AppStore>,
) -> io::Result<Adapter> {
    match config {
        AdapterConfig::Local => Ok(Adapter::local(node_id)),
        AdapterConfig::Redis(config) => Ok(Adapter::of(redis::join(config, node_id, apps).await?)),
    }
}
