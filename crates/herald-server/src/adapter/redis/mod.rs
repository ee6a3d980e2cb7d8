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
//! - nodes heartbeat from a task of their own (`heartbeat.rs`), so no amount of queued work
//!   delays a heartbeat; the survivors remove a dead node's share (`state.rs`).
//!
//! State changes go through one queue per node, processed by one task in order per app, so
//! a join is always recorded before the leave that follows it, and the WebSocket path never
//! waits for Redis except where the protocol needs the cluster's answer (a presence member
//! list). Each app may have only its share of that queue waiting (`cluster_ops_per_app`),
//! and the task takes the apps in turns: one app's flood of subscriptions gets `ServerBusy`
//! answers while the others' go through, and a full share never changes the node's health.

mod heartbeat;
mod scripts;
mod state;
mod transport;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_protocol::frame;
use herald_protocol::presence::Member;
use parking_lot::{Mutex, RwLock};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tokio::sync::{mpsc, Notify};

use self::scripts::Keys;
use super::bus::{self, BusMessage};
use crate::apps::{App, AppStore};
use crate::config::ClusterConfig;
use crate::hub::ChannelCounts;
use crate::ids::ConnId;
use crate::outbox::Outbox;
use crate::wire::text_frame;

/// State changes queued on a node, all apps together, before new ones are refused (see
/// [`Cluster::op`] for what a refusal means for each kind).
const OPS_QUEUE: usize = 100_000;
/// Bus messages waiting to be published; while Redis is away they are kept, up to this
/// many and up to `cluster_bus_max_bytes`, and published when it returns.
const BUS_QUEUE: usize = 100_000;
/// What a queued bus message costs beyond its bytes (its `Vec` and its queue slot), so many
/// tiny messages are bounded too.
const BUS_MESSAGE_OVERHEAD: usize = 64;
/// Users whose refused sign-in changes wait to be restated; beyond it the whole node is.
const PENDING_USERS: usize = 100_000;
/// At most one warning per this interval for a condition a flood repeats.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

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

/// Why a state change was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// The app's share of the queue, or the whole queue, is full.
    #[error("the cluster state queue is full")]
    Busy,
    /// The node is leaving the cluster.
    #[error("the node is leaving the cluster")]
    Stopping,
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

impl Op {
    pub(super) fn app(&self) -> Option<&Arc<App>> {
        match self {
            Op::Subscribe { app, .. }
            | Op::Leave { app, .. }
            | Op::Cache { app, .. }
            | Op::Connections { app }
            | Op::User { app, .. }
            | Op::Watchlist { app, .. } => Some(app),
            Op::Join(join) => Some(&join.app),
            Op::Stop(_) => None,
        }
    }
}

/// A queued op and the place it holds in the queue, given back when the state task takes it.
pub(crate) struct Queued {
    pub(super) op: Op,
    _held: Option<Held>,
}

impl Queued {
    /// The op, giving its place in the queue back.
    pub(super) fn into_op(self) -> Op {
        self.op
    }
}

/// The node's op queue as places: at most `max_total` ops waiting, and at most `max_app`
/// of one app.
struct Places {
    total: Arc<AtomicUsize>,
    apps: RwLock<HashMap<String, Arc<AtomicUsize>>>,
    max_total: usize,
    max_app: usize,
}

impl Places {
    fn new(max_total: usize, max_app: usize) -> Self {
        Places {
            total: Arc::new(AtomicUsize::new(0)),
            apps: RwLock::new(HashMap::new()),
            max_total,
            max_app: max_app.min(max_total),
        }
    }

    /// A place for an op of `app`, if its share and the queue have one; `always` takes one
    /// regardless, still counted so the app's other ops wait for it.
    fn take(&self, app: &str, always: bool) -> Option<Held> {
        let held = Held {
            app: self.app(app),
            total: self.total.clone(),
        };
        let in_app = held.app.fetch_add(1, Ordering::Relaxed);
        let in_queue = held.total.fetch_add(1, Ordering::Relaxed);
        (always || (in_app < self.max_app && in_queue < self.max_total)).then_some(held)
    }

    fn app(&self, app: &str) -> Arc<AtomicUsize> {
        if let Some(share) = self.apps.read().get(app) {
            return share.clone();
        }
        self.apps.write().entry(app.to_owned()).or_default().clone()
    }

    /// Drops an app's share once no op of it can be waiting (the app is gone).
    fn forget(&self, app: &str) {
        self.apps.write().remove(app);
    }

    fn waiting(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// One place in the node's queue and in one app's share of it, given back when dropped.
struct Held {
    app: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.app.fetch_sub(1, Ordering::Relaxed);
        self.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bytes taken by queued messages, given back once they are sent.
struct ByteBudget {
    used: AtomicUsize,
    max: usize,
}

impl ByteBudget {
    /// Takes `n` bytes if they fit. Concurrent takers may be refused while another's
    /// bytes are briefly counted, but what is taken never exceeds `max`.
    fn take(&self, n: usize) -> bool {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) <= self.max {
            return true;
        }
        self.used.fetch_sub(n, Ordering::Relaxed);
        false
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// Work the heartbeat task found for the state task.
#[derive(Default)]
struct Signals {
    /// Redis answered a heartbeat while the node was marked unhealthy.
    recovered: bool,
    /// Restate this node's share: `Some(loud)`, loud unless Redis lost its data.
    resync: Option<bool>,
    /// Nodes whose heartbeats stopped, to be claimed and removed.
    dead: BTreeSet<u32>,
    /// Users whose count change was refused, by app, to be restated.
    users: HashMap<String, HashSet<Arc<str>>>,
    pending_users: usize,
}

/// Merges a resync request into a pending one: quiet wins, since after Redis lost its data
/// nobody really came or went.
fn merge_resync(pending: Option<bool>, loud: bool) -> Option<bool> {
    Some(pending.map_or(loud, |was| was && loud))
}

/// Lets a repeated warning through at most once per [`LOG_INTERVAL`].
#[derive(Default)]
struct Throttle {
    /// Milliseconds since the cluster started at which the next warning may go out.
    next: AtomicU64,
}

impl Throttle {
    fn ready(&self, started: Instant) -> bool {
        let now = started.elapsed().as_millis() as u64;
        let next = self.next.load(Ordering::Relaxed);
        now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now + LOG_INTERVAL.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

type Receivers = (mpsc::UnboundedReceiver<Queued>, mpsc::Receiver<Vec<u8>>);

/// A snapshot of the cluster membership's queues and health, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClusterStats {
    /// Bytes of bus messages queued or held by the publisher.
    pub(crate) bus_bytes: usize,
    /// Bus messages waiting in the queue.
    pub(crate) bus_queued: usize,
    /// Bus messages the publisher holds while Redis does not answer.
    pub(crate) bus_held: usize,
    /// Bus messages dropped for a full queue.
    pub(crate) bus_dropped: u64,
    /// State changes waiting for Redis.
    pub(crate) ops_queued: usize,
    /// State changes refused for a full share.
    pub(crate) ops_refused: u64,
    /// Whether Redis answered the last call.
    pub(crate) healthy: bool,
}

impl crate::backend::Backend for Cluster {
    fn unavailable(&self) -> Option<&'static str> {
        (!self.healthy.load(Ordering::Relaxed)).then_some(
            "the cluster's Redis is not answering; this node serves only its own sockets",
        )
    }

    fn metric_families(&self) -> Vec<prometheus::proto::MetricFamily> {
        crate::metrics::cluster_families(&self.stats())
    }
}

/// One node's membership of a cluster.
pub struct Cluster {
    node_id: u32,
    keys: Keys,
    node_timeout: Duration,
    conn: ConnectionManager,
    /// The heartbeat task's own connection, so a long pipeline of the state task never
    /// holds a heartbeat back.
    beat_conn: ConnectionManager,
    /// Unbounded as a channel: [`Cluster::op`] bounds it with `places`.
    ops: mpsc::UnboundedSender<Queued>,
    places: Places,
    /// Ops refused because a share or the queue was full.
    refused: AtomicU64,
    refused_log: Throttle,
    outgoing: mpsc::Sender<Vec<u8>>,
    /// Bytes of bus messages queued or held by the publisher, with their overhead.
    bus_bytes: ByteBudget,
    /// Other nodes' open connections per app, from their last heartbeats.
    others: Mutex<HashMap<String, usize>>,
    /// Apps a reload removed from this node whose last connection has closed: the next
    /// heartbeat withdraws this node's connection count of each.
    forgotten: Mutex<Vec<String>>,
    /// Whether Redis answered the last call; while not, state changes are applied locally
    /// only and restated when Redis answers again. Only Redis errors clear it; only the
    /// state task sets it again, as it restates.
    healthy: AtomicBool,
    /// Bus messages dropped because the queue was full.
    dropped: AtomicU64,
    dropped_log: Throttle,
    /// Messages the publisher holds, unsent, while Redis does not answer.
    held: AtomicUsize,
    started: Instant,
    signals: Mutex<Signals>,
    /// Wakes the state task when the heartbeat task has left it work (or just beat).
    wake: Notify,
    /// Set when the node leaves; the heartbeat task stops.
    stopping: AtomicBool,
    /// Held through each heartbeat, so leaving waits for one in flight.
    beating: tokio::sync::Mutex<()>,
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
        let conn = ConnectionManager::new_with_config(client.clone(), manager_config.clone())
            .await
            .map_err(err)?;
        let beat_conn = ConnectionManager::new_with_config(client.clone(), manager_config)
            .await
            .map_err(err)?;
        let (ops_tx, ops_rx) = mpsc::unbounded_channel();
        let (bus_tx, bus_rx) = mpsc::channel(BUS_QUEUE);
        Ok(Arc::new(Cluster {
            node_id,
            keys: Keys::new(&config.redis_prefix),
            node_timeout: config.node_timeout,
            conn,
            beat_conn,
            ops: ops_tx,
            places: Places::new(OPS_QUEUE, config.ops_per_app),
            refused: AtomicU64::new(0),
            refused_log: Throttle::default(),
            outgoing: bus_tx,
            bus_bytes: ByteBudget {
                used: AtomicUsize::new(0),
                max: config.bus_max_bytes,
            },
            others: Mutex::new(HashMap::new()),
            forgotten: Mutex::new(Vec::new()),
            healthy: AtomicBool::new(true),
            dropped: AtomicU64::new(0),
            dropped_log: Throttle::default(),
            held: AtomicUsize::new(0),
            started: Instant::now(),
            signals: Mutex::new(Signals::default()),
            wake: Notify::new(),
            stopping: AtomicBool::new(false),
            beating: tokio::sync::Mutex::new(()),
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
        let mut beat = heartbeat::Heartbeat::new(self.clone());
        beat.beat().await;
        tokio::spawn(beat.run());
        tokio::spawn(state::StateTask::new(self.clone()).run(ops));
        // Events published before this node listens would be lost to it.
        let _ = tokio::time::timeout(Duration::from_secs(5), subscribed).await;
    }

    /// Drains the state queue, withdraws this node's share of the cluster state and leaves.
    pub(crate) async fn stop(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stop = Queued {
            op: Op::Stop(tx),
            _held: None,
        };
        if self.ops.send(stop).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
    }

    fn app(&self, id: &str) -> Option<Arc<App>> {
        self.apps.get()?.by_id(id)
    }

    /// An app this node no longer serves is gone: every change of its connections was
    /// applied (each held the app), so only its connection count is left to withdraw.
    pub(crate) fn forget_app(&self, id: &str) {
        self.forgotten.lock().push(id.to_owned());
    }

    /// Queues a state change, unless its app's share of the queue (or the queue) is full.
    ///
    /// What a refusal means, by kind:
    /// - `Subscribe`, `Join`: nothing was recorded; the caller answers `ServerBusy`.
    /// - `Leave`: never refused for a full queue. It only releases what an admitted op
    ///   added, so leaves are bounded by the subscriptions that exist, and refusing one
    ///   could let a still-queued subscribe of the same connection land after it. If the
    ///   node is leaving, the connection is removed from the hub here.
    /// - `Connections`: dropped; the next heartbeat (at most a second away) restates the
    ///   app's connection count.
    /// - `User`: the user is restated by the state task at the next heartbeat.
    /// - `Watchlist`: answered from this node's registry, as while Redis is away.
    /// - `Cache`: dropped; the nodes that heard the event on the bus still have it.
    ///
    /// A refusal never changes the node's health: Redis is fine, the node is just busy.
    pub(crate) fn op(&self, op: Op) -> Result<(), Refused> {
        let Some(app) = op.app() else {
            return self.push(op, None);
        };
        let always = matches!(op, Op::Leave { .. });
        match self.places.take(app.id(), always) {
            Some(held) => self.push(op, Some(held)),
            None => {
                self.refuse(op, Refused::Busy);
                Err(Refused::Busy)
            }
        }
    }

    fn push(&self, op: Op, held: Option<Held>) -> Result<(), Refused> {
        self.ops.send(Queued { op, _held: held }).map_err(|e| {
            self.refuse(e.0.op, Refused::Stopping);
            Refused::Stopping
        })
    }

    /// Does what stands in for a refused op (see [`Cluster::op`]).
    fn refuse(&self, op: Op, why: Refused) {
        let app_id = op.app().map(|a| a.id().to_owned());
        match op {
            Op::Leave { app, channel, conn } => {
                app.hub.leave(&channel, conn, true);
            }
            Op::User { app, user } => self.restate_user_later(app.id(), user),
            Op::Watchlist { app, outbox, users } => {
                let (on, off): (Vec<&Arc<str>>, Vec<&Arc<str>>) =
                    users.iter().partition(|u| app.users.is_online(u));
                outbox.push(text_frame(&frame::watchlist_events(
                    on.iter().map(|u| u.as_ref()),
                    off.iter().map(|u| u.as_ref()),
                )));
            }
            Op::Subscribe { .. }
            | Op::Join(_)
            | Op::Cache { .. }
            | Op::Connections { .. }
            | Op::Stop(_) => {}
        }
        if why == Refused::Busy {
            let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if self.refused_log.ready(self.started) {
                tracing::warn!(
                    app = app_id.as_deref().unwrap_or(""),
                    refused = n,
                    queued = self.places.waiting(),
                    "Cluster state queue: an app's share is full; refusing its changes (ServerBusy)"
                );
            }
        }
    }

    /// Records a user whose count change was refused, for the state task to restate.
    fn restate_user_later(&self, app: &str, user: Arc<str>) {
        let mut signals = self.signals.lock();
        if signals.pending_users >= PENDING_USERS {
            signals.resync = merge_resync(signals.resync, true);
            return;
        }
        if signals
            .users
            .entry(app.to_owned())
            .or_default()
            .insert(user)
        {
            signals.pending_users += 1;
        }
    }

    /// Marks Redis as not answering; the next heartbeat that gets an answer restates.
    fn redis_failed(&self, error: &redis::RedisError) {
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "Cluster: Redis is not answering; serving this node's sockets alone until it returns");
        }
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

    /// Queues an encoded message for the publisher, within the byte budget; counts and logs
    /// what a full queue drops.
    fn enqueue(&self, encoded: Vec<u8>) {
        let cost = bus_cost(&encoded);
        if self.bus_bytes.take(cost) {
            if self.outgoing.try_send(encoded).is_ok() {
                return;
            }
            self.bus_bytes.give(cost);
        }
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if self.dropped_log.ready(self.started) {
            tracing::warn!(
                dropped = n,
                queued_bytes = self.bus_bytes.used(),
                max_bytes = self.bus_bytes.max,
                "Cluster bus queue full: messages to other nodes dropped"
            );
        }
    }

    /// What the node's metrics show of its membership.
    pub(crate) fn stats(&self) -> ClusterStats {
        ClusterStats {
            bus_bytes: self.bus_bytes.used(),
            bus_queued: self.outgoing.max_capacity() - self.outgoing.capacity(),
            bus_held: self.held.load(Ordering::Relaxed),
            bus_dropped: self.dropped.load(Ordering::Relaxed),
            ops_queued: self.places.waiting(),
            ops_refused: self.refused.load(Ordering::Relaxed),
            healthy: self.healthy.load(Ordering::Relaxed),
        }
    }

    /// Gives back the budget of messages the publisher has sent.
    fn published(&self, bytes: usize) {
        self.bus_bytes.give(bytes);
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
        Ok(cache_entry(frame, data, ttl))
    }

    /// Fills this node's cache of `channel` from Redis if it has nothing; `true` if it
    /// now has an event.
    pub(crate) async fn fill_cache(&self, app: &App, channel: &str) -> redis::RedisResult<bool> {
        if app.cache.frame(channel).is_some() {
            return Ok(true);
        }
        Ok(match self.cached(app.id(), channel).await? {
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

/// A cache channel's event from the fields Redis returned for it, if it is still alive.
fn cache_entry(
    frame: Option<Vec<u8>>,
    data: Option<String>,
    ttl_ms: i64,
) -> Option<(Bytes, String, Duration)> {
    match (frame, data) {
        (Some(frame), Some(data)) if ttl_ms > 0 => Some((
            Bytes::from(frame),
            data,
            Duration::from_millis(ttl_ms.unsigned_abs()),
        )),
        _ => None,
    }
}

/// What a bus message counts against `cluster_bus_max_bytes`.
fn bus_cost(message: &[u8]) -> usize {
    message.len() + BUS_MESSAGE_OVERHEAD
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apps_share_is_bounded_and_given_back_when_taken() {
        let places = Places::new(10, 3);
        let a: Vec<Held> = (0..3).filter_map(|_| places.take("a", false)).collect();
        assert_eq!(a.len(), 3);
        assert!(places.take("a", false).is_none(), "a's share is full");
        // Another app still has its share; a refusal gave its place back.
        let b = places.take("b", false).expect("b's share");
        assert_eq!(places.waiting(), 4);
        // A leave always has a place, and counts against the app's share.
        let leave = places.take("a", true).expect("a leave");
        drop(a);
        let again: Vec<Held> = (0..3).filter_map(|_| places.take("a", false)).collect();
        assert_eq!(again.len(), 2, "the leave still holds one of a's places");
        drop((b, leave, again));
        assert_eq!(places.waiting(), 0);
    }

    #[test]
    fn the_whole_queue_is_bounded_across_apps() {
        let places = Places::new(4, 3);
        let held: Vec<Held> = ["a", "a", "b", "c"]
            .iter()
            .filter_map(|app| places.take(app, false))
            .collect();
        assert_eq!(held.len(), 4);
        assert!(places.take("d", false).is_none());
        assert_eq!(places.waiting(), 4);
    }

    #[test]
    fn the_bus_budget_counts_bytes_until_they_are_sent() {
        let budget = ByteBudget {
            used: AtomicUsize::new(0),
            max: 1000,
        };
        assert!(budget.take(600));
        assert!(!budget.take(600), "over the budget");
        assert!(budget.take(400));
        assert!(!budget.take(1));
        budget.give(600);
        assert!(budget.take(500));
        assert_eq!(budget.used(), 900);
        assert!(!budget.take(usize::MAX), "no overflow");
        assert_eq!(budget.used(), 900);
    }

    #[test]
    fn a_quiet_resync_request_wins() {
        assert_eq!(merge_resync(None, true), Some(true));
        assert_eq!(merge_resync(Some(true), false), Some(false));
        assert_eq!(merge_resync(Some(false), true), Some(false));
    }

    #[test]
    fn a_throttled_warning_goes_out_once_per_interval() {
        let throttle = Throttle::default();
        let started = Instant::now();
        assert!(throttle.ready(started));
        assert!(!throttle.ready(started));
    }
}
