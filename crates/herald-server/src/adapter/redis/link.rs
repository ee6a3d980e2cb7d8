//! The connection layer under the Redis adapter: one server, a Redis Cluster or a
//! Sentinel-monitored master behind the same two handles.
//!
//! - [`Target`]: `redis_url` parsed (`redis://`, `redis+cluster://`, `redis+sentinel://`;
//!   the syntax is in `target.rs`).
//! - [`Commands`]: a cloneable command connection implementing
//!   `redis::aio::ConnectionLike`, so scripts (`Script::invoke_async`), pipelines and plain
//!   commands run on it unchanged. It follows the cluster's slots and the sentinels' master.
//!   Also the publishing side of pub/sub ([`Commands::publish`]).
//! - [`Subscriber`] and [`Deliveries`]: channels subscribed and unsubscribed at runtime,
//!   each call returning once Redis has acknowledged it, messages delivered through a bounded
//!   queue, and every subscription restored by the link itself after a reconnect or a
//!   failover, with a [`Gap`] telling the caller what it may have missed.
//! - [`HashTag`] and [`slot`]: key names that keep each script's keys in one cluster slot.
//!
//! On a cluster, pub/sub is sharded (SPUBLISH / SSUBSCRIBE, Redis 7): a channel lives on the
//! shard that owns its slot, so bus traffic spreads over the shards instead of being copied
//! to every node. Elsewhere it is plain PUBLISH / SUBSCRIBE.
//!
//! This module names no Herald type: it is the Redis side only, and the adapter decides what
//! the channels and keys are.

#[path = "link/commands.rs"]
mod commands;
#[path = "link/deliveries.rs"]
mod deliveries;
#[path = "link/sentinel.rs"]
mod sentinel;
#[path = "link/shards.rs"]
mod shards;
#[path = "link/slots.rs"]
mod slots;
#[path = "link/subscriber.rs"]
mod subscriber;
#[path = "link/target.rs"]
mod target;
#[cfg(test)]
#[path = "link/tests.rs"]
mod tests;
#[path = "link/tls.rs"]
mod tls;
#[path = "link/topology.rs"]
mod topology;

use std::time::Duration;

pub(crate) use self::commands::{Commands, PublishGroup};
#[cfg(test)]
pub(crate) use self::deliveries::Message;
pub(crate) use self::deliveries::{Deliveries, Delivery, Gap};
#[cfg(test)]
pub(crate) use self::slots::slot;
pub(crate) use self::slots::HashTag;
pub(crate) use self::subscriber::Subscriber;
pub(crate) use self::target::{Target, TargetError};
pub(crate) use self::tls::{TlsError, TlsFiles, TlsStore};

/// Timeouts and bounds of a link's connections.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Connecting to one server (or sentinel), handshake included.
    pub connect_timeout: Duration,
    /// One command's answer; on a cluster, the whole request, redirections and retries
    /// included.
    pub response_timeout: Duration,
    /// How often a subscriber pings each of its connections: pub/sub connections are
    /// otherwise silent, and a server that stopped answering would go unnoticed.
    pub keepalive: Duration,
    /// Messages a [`Deliveries`] queue holds before further ones are dropped (and a
    /// [`Gap::All`] reported).
    pub capacity: usize,
    /// The certificates of TLS connections to the data nodes (one server, a cluster's
    /// nodes, the sentinels' master and replicas).
    pub tls: TlsStore,
    /// The certificates of TLS connections to the sentinels.
    pub sentinel_tls: TlsStore,
}

impl Default for Options {
    /// Today's single-server settings: 1 s to connect, 2 s per answer.
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
            keepalive: Duration::from_secs(1),
            capacity: 65_536,
            tls: TlsStore::default(),
            sentinel_tls: TlsStore::default(),
        }
    }
}

/// Why a link could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// Redis (or every seed node, or every sentinel) did not answer.
    #[error("cannot reach Redis at {target}: {source}")]
    Connect {
        /// The target, its passwords hidden.
        target: String,
        source: redis::RedisError,
    },
}

impl LinkError {
    fn connect(target: &Target) -> impl Fn(redis::RedisError) -> LinkError + '_ {
        move |source| LinkError::Connect {
            target: target.to_string(),
            source,
        }
    }
}
