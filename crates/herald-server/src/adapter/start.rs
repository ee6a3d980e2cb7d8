//! Where each backend starts: the one place that builds the node's [`Adapter`] from its
//! [`AdapterConfig`], and with `config.rs` the only one that names the backends.

use std::io;
use std::sync::Arc;

use super::config::AdapterConfig;
use super::{redis, Adapter};
use crate::apps::AppStore;
use crate::ids::random_node_id;
use crate::settings::Config;
use crate::webhooks::{SharedQueue, WebhookSettings};

/// Starts the node's backend for the apps of `apps`, as node `node_id` (the configured id;
/// `None` draws one), and returns it with the node's id: at once for a single node; a
/// cluster node returns once it has claimed its id and joined (its first heartbeat is
/// recorded and it hears the other nodes), and fails if its cluster does not answer (a node
/// that started without it would silently serve a split view) or another live node holds
/// the configured id.
pub(crate) async fn start(
    config: &AdapterConfig,
    node_id: Option<u32>,
    apps: Arc<dyn AppStore>,
) -> io::Result<(Adapter, u32)> {
    match config {
        AdapterConfig::Local => {
            let id = node_id.unwrap_or_else(random_node_id);
            Ok((Adapter::local(id), id))
        }
        AdapterConfig::Redis(config) => {
            let cluster = redis::join(config, node_id, apps).await?;
            let id = cluster.node_id();
            let history = Arc::new(redis::history::Kept(cluster.clone()));
            let recoveries = Arc::new(redis::recoveries::Shared(cluster.clone()));
            Ok((Adapter::of(cluster, history, recoveries), id))
        }
    }
}

/// The webhook settings every app's dispatcher runs with: the configuration's, and the
/// queue the backend's nodes share (none for a single node, whose queue is its own,
/// `webhook_store`).
pub fn webhook_settings(config: &Config) -> WebhookSettings {
    WebhookSettings {
        options: config.webhooks.clone(),
        shared: match &config.adapter {
            AdapterConfig::Local => SharedQueue::default(),
            AdapterConfig::Redis(redis) => redis::webhook_queue(redis),
        },
    }
}
