//! Which backend a node shares state through, as the configuration chose it: with
//! `start.rs`, the only place that names every backend, so the rest of the server names
//! none. It sits with the configuration, below the apps and the adapter's traits.

pub use super::redis::config::RedisConfig;
use crate::config::{invalid, ConfigError};

/// The adapter's keys as the file and the environment gave them (`adapter`, `redis_url` or
/// `HERALD_REDIS_URL`, `redis_prefix`, `node_timeout`, `cluster_ops_per_app`,
/// `cluster_bus_max_bytes`), before they are checked. No `Debug`: the URL may hold a password.
#[derive(Default, Clone, PartialEq, Eq)]
pub(crate) struct AdapterKeys {
    /// `adapter`: `local` (the default) or `redis`.
    pub(crate) adapter: Option<String>,
    /// Where the cluster's shared state is.
    pub(crate) url: Option<String>,
    /// The prefix of every key and channel there.
    pub(crate) prefix: Option<String>,
    /// Seconds without a heartbeat before a node is taken for dead.
    pub(crate) node_timeout: Option<u64>,
    /// State changes one app may have waiting on this node.
    pub(crate) ops_per_app: Option<usize>,
    /// Bytes of messages for other nodes this node may hold.
    pub(crate) bus_max_bytes: Option<usize>,
    /// `redis_tls_*`: TLS to the data nodes.
    pub(crate) tls: TlsKeys,
    /// `redis_sentinel_tls_*`: TLS to the sentinels; each key unset takes the data nodes'.
    pub(crate) sentinel_tls: TlsKeys,
}

/// One side's TLS keys (`…_ca_file`, `…_cert_file`, `…_key_file`,
/// `…_insecure_skip_name_check`), as given.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TlsKeys {
    pub(crate) ca_file: Option<std::path::PathBuf>,
    pub(crate) cert_file: Option<std::path::PathBuf>,
    pub(crate) key_file: Option<std::path::PathBuf>,
    pub(crate) skip_name_check: Option<bool>,
}

/// What the node shares events and state through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AdapterConfig {
    /// Nothing: a single node, all in memory.
    #[default]
    Local,
    /// A cluster of nodes sharing one Redis.
    Redis(RedisConfig),
}

impl AdapterConfig {
    /// The backend `keys.adapter` names, with its settings; the other backend's keys are
    /// ignored, as they always were.
    pub(crate) fn from_keys(keys: AdapterKeys) -> Result<Self, ConfigError> {
        match keys.adapter.as_deref().unwrap_or("local") {
            "local" => Ok(AdapterConfig::Local),
            "redis" => Ok(AdapterConfig::Redis(RedisConfig::from_keys(keys))),
            other => Err(invalid(
                "adapter",
                format!("must be \"local\" or \"redis\", not '{other}'"),
            )),
        }
    }

    /// The webhook queue the backend's nodes share: none for a single node, whose queue is
    /// its own (`webhook_store`).
    pub(crate) fn webhook_queue(&self) -> crate::webhooks::SharedQueue {
        match self {
            AdapterConfig::Local => crate::webhooks::SharedQueue::default(),
            AdapterConfig::Redis(redis) => super::redis::webhook_queue(redis),
        }
    }

    /// Checks the chosen backend's settings, naming the offending key.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self {
            AdapterConfig::Local => Ok(()),
            AdapterConfig::Redis(redis) => redis.validate(),
        }
    }

    /// The keys that differ between `self` (running) and `new`; `adapter` when the backend
    /// itself differs.
    pub(crate) fn restart_fields(&self, new: &AdapterConfig) -> Vec<&'static str> {
        match (self, new) {
            (AdapterConfig::Local, AdapterConfig::Local) => Vec::new(),
            (AdapterConfig::Redis(old), AdapterConfig::Redis(new)) => old.restart_fields(new),
            _ => vec!["adapter"],
        }
    }
}
