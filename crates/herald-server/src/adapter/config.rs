//! Which backend a node shares state through, as the configuration chose it: with
//! `start.rs`, the only place that names every backend, so the rest of the server names
//! none. It sits with the configuration, below the apps and the adapter's traits.

use super::redis::config::RawRedisConfig;
pub use super::redis::config::RedisConfig;
use crate::config::declare::{settings, Section};
use crate::config::error::ConfigError;
use crate::config::kinds::{Choice, Choices};

/// The backend `adapter` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    /// A single node, all in memory.
    Local,
    /// A cluster of nodes sharing one Redis.
    Redis,
}

impl Choices for AdapterKind {
    const NAMES: &'static [(&'static str, Self)] =
        &[("local", AdapterKind::Local), ("redis", AdapterKind::Redis)];
}

settings! {
    /// What the node shares events and state through.
    pub struct AdapterSettings(RawAdapterSettings) in "Cluster" {
        /// What the node shares events and state through: `local` (a single in-memory
        /// node) or `redis` (a cluster's nodes sharing one Redis).
        adapter: Choice<AdapterKind> = AdapterKind::Local, key "adapter" env "HERALD_ADAPTER", Restart;
    }
}

/// The keys of the adapter and of every backend, as given.
#[derive(Default)]
pub struct RawAdapter {
    adapter: RawAdapterSettings,
    redis: RawRedisConfig,
}

impl RawAdapter {
    /// Every key, the adapter's then each backend's.
    pub(crate) fn keys() -> Vec<&'static str> {
        let mut keys = RawAdapterSettings::keys();
        keys.extend(RawRedisConfig::keys());
        keys
    }

    /// Reads the value of `key` from `map` if it is one of these keys.
    pub(crate) fn take<'de, A: serde::de::MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        Ok(self.adapter.take(key, map)? || self.redis.take(key, map)?)
    }

    /// The environment's values over the file's.
    pub(crate) fn overlay(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        self.adapter.overlay(env)?;
        self.redis.overlay(env)
    }
}

/// What the node shares events and state through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AdapterConfig {
    /// Nothing: a single node, all in memory.
    #[default]
    Local,
    /// A cluster of nodes sharing one Redis.
    Redis(Box<RedisConfig>),
}

impl AdapterConfig {
    /// The backend `adapter` names, with its settings; the other backend's keys are
    /// ignored, as they always were.
    pub(crate) fn from_raw(raw: RawAdapter) -> Result<Self, ConfigError> {
        let mut redis = RedisConfig::from_raw(raw.redis)?;
        Ok(match AdapterSettings::from_raw(raw.adapter)?.adapter {
            AdapterKind::Local => AdapterConfig::Local,
            AdapterKind::Redis => {
                redis.resolve();
                AdapterConfig::Redis(Box::new(redis))
            }
        })
    }

    /// The declarations of the adapter's keys and of each backend's, for the reference.
    pub fn sections() -> Vec<Section> {
        vec![AdapterSettings::section(), RedisConfig::section()]
    }

    fn settings(&self) -> AdapterSettings {
        AdapterSettings {
            adapter: match self {
                AdapterConfig::Local => AdapterKind::Local,
                AdapterConfig::Redis(_) => AdapterKind::Redis,
            },
        }
    }

    /// Checks the chosen backend's settings, naming the offending key.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self {
            AdapterConfig::Local => Ok(()),
            AdapterConfig::Redis(redis) => redis.validate(),
        }
    }

    /// Each key a reload cannot apply and whether `new` changes it: `adapter` when the
    /// backend itself differs, the backend's own keys when it does not.
    pub(crate) fn changed(&self, new: &AdapterConfig) -> Vec<(&'static str, bool)> {
        let mut changed = self.settings().changed(&new.settings());
        if let (AdapterConfig::Redis(old), AdapterConfig::Redis(new)) = (self, new) {
            changed.extend(old.restart_changes(new));
        }
        changed
    }
}
