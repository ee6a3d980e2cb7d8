//! The adapter seam: how a node shares events and state with the other nodes of a cluster.
//!
//! A single node (the default) has no adapter: every [`crate::apps::App`] answers from its
//! own hub and the code paths stay as they are, one `Option` check away. With
//! `adapter = "redis"`, each app holds a [`Cluster`] handle and:
//! - events (HTTP triggers, client events, member and count events) are delivered to the
//!   local hub at once and sent to the other nodes over one Redis pub/sub channel as
//!   ready-made frames ([`bus`]);
//! - channel, presence, signed-in-user and connection counts are kept in Redis per node,
//!   changed by atomic scripts (`scripts.rs`) that report cluster-wide transitions, so each
//!   webhook and member event is emitted once for the cluster;
//! - the HTTP API's queries read those counts from Redis;
//! - nodes heartbeat; the survivors remove a dead node's share (`state.rs`).
//!
//! State changes go through one queue per node, processed in order by one task, so a join
//! is always recorded before the leave that follows it, and the WebSocket path never waits
//! for Redis except where the protocol needs the cluster's answer (a presence member list).

pub mod bus;
mod scripts;
mod state;
mod transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use herald_protocol::presence::Member;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tokio::sync::mpsc;

use self::bus::BusMessage;
use self::scripts::Keys;
use crate::apps::{App, AppStore};
use crate::config::ClusterConfig;
use crate::hub::{ChannelCounts, ConnId};
use crate::outbox::Outbox;

/// Queued state changes before new ones are refused (a presence join is then answered
/// with an error; other changes are restated by the next resync).
const OPS_QUEUE: usize = 100_000;
/// Bus messages waiting to be published; while Redis is away they are kept up to this
/// many and published when it returns.
const BUS_QUEUE: usize = 100_000;

/// Why a cluster node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis did not answer.
    #[error("cannot reach Redis at {url}: {source}")]
    Connect {
        /// The configured URL, its password hidden.
        url: String,
        /// The client's error.
        source: redis::RedisError,
    },
}

/// A state change, applied in order by the node's state task.
pub(crate) enum Op {
    /// Subscribe to a non-presence channel: counted in Redis, then confirmed.
    Subscribe {
        app: Arc<App>,
        channel: Box<str>,
        conn: ConnId,
        outbox: Arc<Outbox>,
        /// Replay the cached event (or report a miss) after `subscription_succeeded`.
        cache: bool,
    },
    /// Join a presence channel: the cluster's member list, its limit and `member_added`.
    Join(Box<Join>),
    /// Leave a channel: remove from the hub, then `member_removed` if it was a presence
    /// member's last connection in the cluster, and the new counts.
    Leave {
        app: Arc<App>,
        channel: Box<str>,
        conn: ConnId,
    },
    /// Keep a cache channel's last event in Redis for nodes that did not see it.
    Cache {
        app: Arc<App>,
        channel: Box<str>,
        frame: Bytes,
        data: Box<str>,
        ttl: Duration,
    },
    /// Restate this node's connection count of an app (a connection closed).
    Connections { app: Arc<App> },
    /// Restate this node's signed-in connection count of a user.
    User { app: Arc<App>, user: Arc<str> },
    /// Tell a newly signed-in connection which of its watched users are online.
    Watchlist {
        app: Arc<App>,
        outbox: Arc<Outbox>,
        users: Vec<Arc<str>>,
    },
    /// Drain and leave the cluster (clean shutdown).
    Stop(tokio::sync::oneshot::Sender<()>),
}

/// A presence join waiting for the cluster's answer.
pub(crate) struct Join {
    pub app: Arc<App>,
    pub channel: Box<str>,
    pub conn: ConnId,
    pub socket_id: Box<str>,
    pub outbox: Arc<Outbox>,
    pub member: Member,
    /// Replay the cached event (or report a miss) after `subscription_succeeded`.
    pub cache: bool,
}

/// Scripts run from request handlers (the state task has its own).
struct RequestScripts {
    rate_take: redis::Script,
    admit: redis::Script,
    count_messages: redis::Script,
}

type Receivers = (mpsc::Receiver<Op>, mpsc::Receiver<Vec<u8>>);

/// One node's membership of a cluster.
pub struct Cluster {
    node_id: u32,
    keys: Keys,
    node_timeout: Duration,
    conn: ConnectionManager,
    ops: mpsc::Sender<Op>,
    outgoing: mpsc::Sender<Vec<u8>>,
    /// Other nodes' open connections per app, from their last heartbeats.
    others: Mutex<HashMap<String, usize>>,
    /// Whether the last Redis call succeeded; while not, state changes are applied locally
    /// only and restated when Redis answers again.
    healthy: AtomicBool,
    /// Bus messages dropped because the queue was full.
    dropped: AtomicU64,
    apps: OnceLock<Arc<dyn AppStore>>,
    scripts: RequestScripts,
    /// The queues' receiving ends, until [`Cluster::start`] hands them to the tasks.
    receivers: Mutex<Option<Receivers>>,
    client: redis::Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to Redis. Fails if Redis does not answer: a node that starts without its
    /// cluster would silently serve a split view.
    pub async fn connect(config: &ClusterConfig, node_id: u32) -> Result<Arc<Self>, ClusterError> {
        let err = |source| ClusterError::Connect {
            url: crate::config::redact_url(&config.redis_url),
            source,
        };
        let client = redis::Client::open(config.redis_url.as_str()).map_err(err)?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(1)
            .set_max_delay(1000);
        let conn = ConnectionManager::new_with_config(client.clone(), manager_config)
            .await
            .map_err(err)?;
        let (ops_tx, ops_rx) = mpsc::channel(OPS_QUEUE);
        let (bus_tx, bus_rx) = mpsc::channel(BUS_QUEUE);
        Ok(Arc::new(Cluster {
            node_id,
            keys: Keys::new(&config.redis_prefix),
            node_timeout: config.node_timeout,
            conn,
            ops: ops_tx,
            outgoing: bus_tx,
            others: Mutex::new(HashMap::new()),
            healthy: AtomicBool::new(true),
            dropped: AtomicU64::new(0),
            apps: OnceLock::new(),
            scripts: RequestScripts {
                rate_take: scripts::rate_take(),
                admit: scripts::admit(),
                count_messages: scripts::count_messages(),
            },
            receivers: Mutex::new(Some((ops_rx, bus_rx))),
            client,
        }))
    }

    /// Starts the node's tasks (state, heartbeat, bus publisher and subscriber) for the
    /// apps of `store`; returns once the node's first heartbeat is recorded.
    pub(crate) async fn start(self: &Arc<Self>, store: Arc<dyn AppStore>) {
        let _ = self.apps.set(store);
        let Some((ops, outgoing)) = self.receivers.lock().take() else {
            return;
        };
        let subscribed = transport::spawn_subscriber(self.clone());
        tokio::spawn(transport::publisher(self.clone(), outgoing));
        let task = state::StateTask::new(self.clone()).await;
        tokio::spawn(task.run(ops));
        // Events published before this node listens would be lost to it.
        let _ = tokio::time::timeout(Duration::from_secs(5), subscribed).await;
    }

    /// Drains the state queue, withdraws this node's share of the cluster state and leaves.
    pub(crate) async fn stop(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.ops.send(Op::Stop(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
    }

    fn app(&self, id: &str) -> Option<Arc<App>> {
        self.apps.get()?.by_id(id)
    }

    /// Queues a state change. Returns it back if the queue is full, and marks the node
    /// for a resync so what was not queued is restated.
    pub(crate) fn op(&self, op: Op) -> Result<(), Op> {
        self.ops.try_send(op).map_err(|e| {
            self.healthy.store(false, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(op) | mpsc::error::TrySendError::Closed(op) => op,
            }
        })
    }

    /// Sends a message to the other nodes.
    pub(crate) fn send(&self, message: &BusMessage) {
        self.enqueue(bus::encode(self.node_id, message));
    }

    /// Sends an event frame to the other nodes' subscribers of `channel`.
    pub(crate) fn send_event(
        &self,
        app: &str,
        channel: &str,
        except: Option<&str>,
        frame: &Bytes,
        cache: Option<(&str, Duration)>,
    ) {
        self.enqueue(bus::encode_event(
            self.node_id,
            app,
            channel,
            except,
            frame,
            cache.map(|(data, ttl)| (data, ttl.as_millis() as u64)),
        ));
    }

    /// Queues an encoded message for the publisher; counts and logs what a full queue drops.
    fn enqueue(&self, encoded: Vec<u8>) {
        if self.outgoing.try_send(encoded).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "Cluster bus queue full: messages to other nodes dropped"
                );
            }
        }
    }

    /// The connection a socket id names, if it lives on this node.
    pub(crate) fn local_conn(&self, socket_id: &str) -> Option<ConnId> {
        local_conn(self.node_id, socket_id)
    }

    /// Open connections of `app` on the other nodes, as of their last heartbeats.
    pub(crate) fn other_connections(&self, app: &str) -> usize {
        self.others.lock().get(app).copied().unwrap_or(0)
    }

    fn redis(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Every occupied channel of `app` whose name starts with `prefix`, with cluster counts.
    pub(crate) async fn channels(
        &self,
        app: &str,
        prefix: &str,
    ) -> redis::RedisResult<Vec<(String, ChannelCounts)>> {
        let mut conn = self.redis();
        let mut names: Vec<String> = conn.smembers(self.keys.chans(app)).await?;
        names.retain(|n| n.starts_with(prefix) && !n.starts_with('#'));
        names.sort();
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.hvals(self.keys.subs(app, name));
            pipe.hlen(self.keys.members(app, name));
        }
        let replies: Vec<redis::Value> = if names.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await?
        };
        let mut out = Vec::with_capacity(names.len());
        for (name, pair) in names.into_iter().zip(replies.chunks(2)) {
            let counts = counts_from(pair)?;
            if counts.subscription_count > 0 {
                out.push((name, counts));
            }
        }
        Ok(out)
    }

    /// Cluster counts of one channel.
    pub(crate) async fn counts(
        &self,
        app: &str,
        channel: &str,
    ) -> redis::RedisResult<ChannelCounts> {
        let mut conn = self.redis();
        let replies: Vec<redis::Value> = redis::pipe()
            .hvals(self.keys.subs(app, channel))
            .hlen(self.keys.members(app, channel))
            .query_async(&mut conn)
            .await?;
        counts_from(&replies)
    }

    /// Takes `n` from the cluster's budget of `limit` (0: only count) for `kind` in the
    /// window starting at `window` and lasting `secs`.
    pub(crate) async fn take(
        &self,
        app: &str,
        kind: &str,
        (window, secs): (u64, u64),
        limit: u64,
        n: u64,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.redis();
        self.scripts
            .rate_take
            .key(self.keys.rate(app, kind, window))
            .arg(limit)
            .arg(n)
            .arg(secs + 1)
            .invoke_async(&mut conn)
            .await
    }

    /// Counts the messages of events published to `channels` against the daily quota: one
    /// per channel plus one per subscriber in the cluster.
    pub(crate) async fn count_messages(
        &self,
        app: &str,
        channels: &[&str],
        day: u64,
    ) -> redis::RedisResult<()> {
        let mut conn = self.redis();
        let mut invocation = self
            .scripts
            .count_messages
            .key(self.keys.rate(app, "messages", day));
        for channel in channels {
            invocation.key(self.keys.subs(app, channel));
        }
        invocation
            .arg(86_401)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
    }

    /// How much of `kind` the cluster used in the window starting at `window`.
    pub(crate) async fn used(&self, app: &str, kind: &str, window: u64) -> redis::RedisResult<u64> {
        let mut conn = self.redis();
        let used: Option<u64> = conn.get(self.keys.rate(app, kind, window)).await?;
        Ok(used.unwrap_or(0))
    }

    /// Whether the app's connections across the cluster, with this node's `mine` (the new
    /// one included), stay within `max`.
    pub(crate) async fn admit(
        &self,
        app: &str,
        mine: usize,
        max: usize,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.redis();
        self.scripts
            .admit
            .key(self.keys.conns(app))
            .arg(self.node_id)
            .arg(mine)
            .arg(max)
            .invoke_async(&mut conn)
            .await
    }

    /// A cache channel's last event as Redis holds it: frame, `data` token, time left.
    pub(crate) async fn cached(
        &self,
        app: &str,
        channel: &str,
    ) -> redis::RedisResult<Option<(Bytes, String, Duration)>> {
        let mut conn = self.redis();
        let key = self.keys.cache(app, channel);
        let (frame, data, ttl): (Option<Vec<u8>>, Option<String>, i64) = redis::pipe()
            .hget(&key, "frame")
            .hget(&key, "data")
            .pttl(&key)
            .query_async(&mut conn)
            .await?;
        Ok(match (frame, data) {
            (Some(frame), Some(data)) if ttl > 0 => {
                Some((Bytes::from(frame), data, Duration::from_millis(ttl as u64)))
            }
            _ => None,
        })
    }

    /// Fills this node's cache of `channel` from Redis if it has nothing; `true` if it
    /// now has an event.
    pub(crate) async fn fill_cache(&self, app: &App, channel: &str) -> redis::RedisResult<bool> {
        if app.cache.frame(channel).is_some() {
            return Ok(true);
        }
        Ok(match self.cached(&app.config.id, channel).await? {
            Some((frame, data, ttl)) => {
                app.cache.store(channel, frame, &data, ttl);
                true
            }
            None => false,
        })
    }

    /// Presence users of a channel across the cluster, sorted.
    pub(crate) async fn users(&self, app: &str, channel: &str) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.redis();
        let mut users: Vec<String> = conn.hkeys(self.keys.members(app, channel)).await?;
        users.sort();
        Ok(users)
    }
}

fn counts_from(pair: &[redis::Value]) -> redis::RedisResult<ChannelCounts> {
    let [subs, members] = pair else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::TypeError,
            "unexpected pipeline reply",
        )));
    };
    let subs: Vec<i64> = redis::from_redis_value(subs)?;
    let members: i64 = redis::from_redis_value(members)?;
    Ok(ChannelCounts {
        subscription_count: subs.iter().sum::<i64>().max(0) as usize,
        user_count: members.max(0) as usize,
    })
}

/// The connection a socket id names, if it lives on node `node_id`.
pub(crate) fn local_conn(node_id: u32, socket_id: &str) -> Option<ConnId> {
    let (node, conn) = socket_id.split_once('.')?;
    (node.parse::<u32>().ok()? == node_id)
        .then(|| conn.parse().ok())
        .flatten()
}
