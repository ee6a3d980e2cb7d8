//! The adapter seam: how a node shares events and state with the other nodes of a cluster.
//! Every handler goes through three narrow traits and none looks behind them:
//!
//! - [`Broker`]: frames to the subscribers and signed-in users of every node;
//! - [`Presence`]: who is subscribed and signed in, with the transitions (first subscriber,
//!   last member, a user online) that fire events and webhooks once for the whole cluster,
//!   and the HTTP API's questions about that state;
//! - [`Limits`]: the plan limits counted across nodes (connections, request rates, the daily
//!   message quota).
//!
//! A single node runs [`local::Local`], which calls the hub directly, in the caller's task.
//! A cluster node runs its backend's implementation, in a directory of its own; [`start`]
//! is the one place that chooses, and with [`config`] the only one that names the backends.
//! What any of them does when a count crosses zero is written once, in [`transitions`].
//! The seam lives in [`crate::shared::Shared`], not in each app, so an
//! app knows nothing of the backend and a connection holds no pointer to it.

pub mod bus;
pub mod config;
mod local;
mod redis;
mod start;
pub(crate) mod transitions;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use herald_protocol::presence::Member;

pub use self::config::AdapterConfig;
use self::local::Local;
pub(crate) use self::start::start;
pub use self::start::webhook_settings;
use crate::app_config::AppLimits;
use crate::apps::{App, ConnectionSlot};
use crate::backend::Backend;
use crate::history::memory::Memory;
use crate::history::History;
use crate::hub::ChannelCounts;
use crate::ids::{ConnId, SocketId};
use crate::outbox::Outbox;
use crate::ratelimit::{AppRates, Window};
use crate::recovery::memory::MemoryRecoveries;
use crate::recovery::{Recover, Recoveries};

/// The node's backend as the server sees it: one object behind the three traits, and the
/// admin listener's view of it ([`Backend`]).
#[derive(Clone)]
pub(crate) struct Adapter {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) presence: Arc<dyn Presence>,
    pub(crate) limits: Arc<dyn Limits>,
    pub(crate) backend: Arc<dyn Backend>,
    /// Where channel events are kept for the history API.
    pub(crate) history: Arc<dyn History>,
    /// What connections that ended uncleanly leave for their next one.
    pub(crate) recoveries: Arc<dyn Recoveries>,
}

impl Adapter {
    fn of<T: Broker + Presence + Limits + Backend + 'static>(
        node: Arc<T>,
        history: Arc<dyn History>,
        recoveries: Arc<dyn Recoveries>,
    ) -> Adapter {
        Adapter {
            broker: node.clone(),
            presence: node.clone(),
            limits: node.clone(),
            backend: node,
            history,
            recoveries,
        }
    }

    /// A single node's: its state is its hubs and registries, its history and recovery
    /// entries in memory.
    pub(crate) fn local(node_id: u32) -> Adapter {
        Adapter::of(
            Arc::new(Local::new(node_id)),
            Arc::new(Memory),
            Arc::new(MemoryRecoveries::default()),
        )
    }
}

/// Why the backend could not answer a question of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AdapterError {
    /// The cluster's shared state did not answer; the text says why.
    #[error("{0}")]
    Unavailable(String),
}

/// An answer the backend may have to fetch (the HTTP API's queries).
pub(crate) type Answer<'a, T> = BoxFuture<'a, Result<T, AdapterError>>;

/// Frames to every node's connections. At most once, in order per publisher; the local
/// hub's share is delivered before the call returns (on a cache channel, before its
/// [`Published`] is ready).
pub(crate) trait Broker: Send + Sync {
    /// Delivers `frame` to the subscribers of `channel` on every node, except the connection
    /// `except`; returns how many on this node got it.
    fn publish(&self, app: &App, channel: &str, frame: &Bytes, except: Option<SocketId>) -> usize;
    /// [`Broker::publish`] for a caller that answers someone (the HTTP API): ready once
    /// the event has its place in its channel's order, so events published one after the
    /// other, through any nodes, are kept in that order (a cluster keeping history waits
    /// for the serial, within a bound).
    fn publish_ordered(
        &self,
        app: &Arc<App>,
        channel: &str,
        frame: &Bytes,
        except: Option<SocketId>,
    ) -> Published<'_> {
        Published::Now(self.publish(app, channel, frame, except))
    }
    /// [`Broker::publish`] of an event on a cache channel, which every node also keeps as
    /// the channel's last event (`data`, its JSON token) for the app's `cache_ttl`. Once
    /// the answer is ready, every later subscriber, on any node, is replayed this event or
    /// a newer one (a cluster stores it first, within a bound).
    fn publish_cached(
        &self,
        app: &Arc<App>,
        channel: &str,
        frame: &Bytes,
        data: &str,
        except: Option<SocketId>,
    ) -> Published<'_>;
    /// Closes every connection signed in as `user`, on every node, with `code`; returns how
    /// many were on this node.
    fn terminate_user(&self, app: &App, user: &str, code: u16) -> usize;
    /// Tells the watchers of `user` on every node that it came online or went offline.
    fn watchers(&self, app: &App, user: &str, online: bool);
}

/// An event published on a cache channel: how many of this node's subscribers got it, now
/// or once the backend has stored it for later subscribers.
pub(crate) enum Published<'a> {
    /// Delivered and kept already (a single node: no waiting at all).
    Now(usize),
    /// Delivered once the cluster has stored the event (or given up within its bound);
    /// dropped before it is ready, it delivers at once.
    Later(BoxFuture<'a, usize>),
}

impl Published<'_> {
    /// How many of this node's subscribers got the event, once they have.
    pub(crate) async fn delivered(self) -> usize {
        match self {
            Published::Now(delivered) => delivered,
            Published::Later(delivered) => delivered.await,
        }
    }
}

/// A subscription the session has checked (channel name, signature, the connection's
/// limits) and hands to the backend.
pub(crate) struct Subscription<'a> {
    pub(crate) channel: &'a str,
    pub(crate) socket: SocketId,
    pub(crate) outbox: &'a Arc<Outbox>,
    /// The presence member it joins as; `None` on other channels.
    pub(crate) member: Option<Member>,
    /// Replay the cached event (or report a miss) after `subscription_succeeded`.
    pub(crate) cache: bool,
    /// Recovery's part in the join, for a connection that recovers: right after
    /// `subscription_succeeded`, before any event published after the join, the events
    /// its plan replays (or the failure event); then the serial it joined through.
    pub(crate) recover: Option<&'a Recover>,
}

/// The last event of a cache channel, as the HTTP API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cached {
    /// The event's `data`, its JSON token.
    pub(crate) data: Box<str>,
    /// How long it is kept still.
    pub(crate) ttl: Duration,
}

/// Who is subscribed and signed in. The transitions of these counts across the cluster (a
/// channel's first subscriber and last, a member's first connection and last, a user's)
/// fire their events and webhooks exactly once, on one node ([`transitions`]).
///
/// The WebSocket methods never wait: the connection's answer (`subscription_succeeded` with
/// the member list, the cached event, a `subscription_error`, `watchlist_events`) goes to
/// its outbox now, or once the cluster has counted the change.
pub(crate) trait Presence: Send + Sync {
    /// Subscribes a connection, answering it. `false` if refused at once (the client has
    /// its `subscription_error`); a refusal that needs the cluster's count comes later,
    /// to the outbox, and the subscription is then simply not there.
    fn subscribe(&self, app: &Arc<App>, sub: Subscription<'_>) -> bool;
    /// Removes a connection from a channel (an unsubscribe, or the connection closing);
    /// `outbox` is the connection's, which a backend that queues the change counts it in.
    fn unsubscribe(&self, app: &Arc<App>, channel: &str, conn: ConnId, outbox: &Arc<Outbox>);
    /// A connection signed in as `user` (already in the app's registry; `first_here`: the
    /// user's first connection on this node). A non-empty `watchlist` gets its
    /// `watchlist_events` answer on `outbox`.
    fn signed_in(
        &self,
        app: &Arc<App>,
        user: &Arc<str>,
        first_here: bool,
        outbox: &Arc<Outbox>,
        watchlist: &[Arc<str>],
    );
    /// A connection signed out of `user` (already out of the registry; `last_here`: it was
    /// the user's last connection on this node).
    fn signed_out(&self, app: &Arc<App>, user: &Arc<str>, last_here: bool);
    /// Every occupied channel whose name starts with `prefix`, with its counts, by name.
    fn channels<'a>(
        &'a self,
        app: &'a App,
        prefix: &'a str,
    ) -> Answer<'a, Vec<(String, ChannelCounts)>>;
    /// One channel's counts (zero when unoccupied).
    fn counts<'a>(&'a self, app: &'a App, channel: &'a str) -> Answer<'a, ChannelCounts>;
    /// A presence channel's distinct users.
    fn users<'a>(&'a self, app: &'a App, channel: &'a str) -> Answer<'a, Vec<String>>;
    /// A cache channel's last event, if one is kept.
    fn cached<'a>(&'a self, app: &'a App, channel: &'a str) -> Answer<'a, Option<Cached>>;
}

/// A per-second rate of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rate {
    /// POST requests (`publishes_per_second`).
    Publishes,
    /// GET requests (`reads_per_second`).
    Reads,
}

impl Rate {
    /// The app's limit for this rate; 0 means none.
    pub(crate) fn limit(self, limits: &AppLimits) -> u64 {
        match self {
            Rate::Publishes => limits.publishes_per_second,
            Rate::Reads => limits.reads_per_second,
        }
    }

    /// What the rate counts, as its counter and the refusal name it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Rate::Publishes => "publishes",
            Rate::Reads => "reads",
        }
    }

    /// This node's counter of the rate.
    pub(crate) fn window(self, rates: &AppRates) -> &Window {
        match self {
            Rate::Publishes => &rates.publishes,
            Rate::Reads => &rates.reads,
        }
    }
}

/// The plan limits that count across nodes. None of them fails: while the backend is away
/// each decides on what this node knows.
pub(crate) trait Limits: Send + Sync {
    /// A slot for a new connection of `app`, if the app stays within `max_connections` as
    /// far as this node knows without asking (its own count, and other nodes' as of their
    /// last heartbeats). Asked before the WebSocket upgrade.
    fn admit(&self, app: &Arc<App>) -> Option<ConnectionSlot>;
    /// What stands between an admitted slot and the connection being served, when the
    /// backend must be asked (the cluster's exact count): a future that says whether the
    /// slot stays. `None` when nothing is left to ask. Asked after the upgrade.
    fn confirm<'a>(&'a self, slot: &'a ConnectionSlot) -> Option<BoxFuture<'a, bool>>;
    /// Gives a connection's slot back (the connection closed, or was refused).
    fn release(&self, slot: ConnectionSlot);
    /// Takes one request from the app's budget for `rate` in the current second; `false`
    /// when it is spent. Only asked when the app has a limit.
    fn take<'a>(&'a self, app: &'a App, rate: Rate) -> BoxFuture<'a, bool>;
    /// Whether the app has used its daily message quota (`messages_per_day`, not 0).
    fn quota_exhausted<'a>(&'a self, app: &'a App) -> BoxFuture<'a, bool>;
    /// Counts an HTTP publish against the daily quota: `delivered_here`, the messages it
    /// made on this node (one per channel plus one per local subscriber), and in a cluster
    /// every node's subscribers of `channels`.
    fn count_messages<'a>(
        &'a self,
        app: &'a App,
        delivered_here: u64,
        channels: &'a [&'a str],
    ) -> BoxFuture<'a, ()>;
}
