//! The Redis implementation of the adapter's traits (`adapter = "redis"`): how a node shares
//! events and state with the other nodes of a cluster through one Redis.
//!
//! - Events (HTTP triggers, client events, member and count events) are delivered to the
//!   local hub at once and sent to the other nodes as ready-made frames
//!   ([`crate::adapter::bus`], `transport.rs`) on a pub/sub channel of their app and
//!   channel, which only the nodes with a subscriber of it listen to (`interest.rs`).
//! - Channel, presence, signed-in-user and connection counts are kept in Redis per node,
//!   changed by atomic scripts (`scripts.rs`) that report cluster-wide transitions, so each
//!   webhook and member event is emitted once for the cluster (`state/`, by the rules of
//!   [`crate::adapter::transitions`]).
//! - The HTTP API's queries and the cluster-wide limits read those counts (`queries.rs`).
//! - Nodes heartbeat from a task of their own (`heartbeat.rs`), so no amount of queued work
//!   delays a heartbeat; the survivors remove a dead node's share (`state/recovery.rs`).
//!
//! State changes go through one queue per node (`ops.rs`), processed by one task in order
//! per app, so a join is always recorded before the leave that follows it, and the WebSocket
//! path never waits for Redis: a subscription is answered by the state task once Redis has
//! counted it. Each app may have only its share of that queue waiting
//! (`cluster_ops_per_app`), and the task takes the apps in turns: one app's flood of
//! subscriptions gets `ServerBusy` answers while the others' go through, and a full share
//! never changes the node's health. `seam.rs` maps the traits onto all of this.

pub(super) mod config;
mod heartbeat;
pub(super) mod history;
mod interest;
pub(crate) mod link;
mod members;
mod ops;
mod outbound;
mod outgoing;
mod publisher;
mod queries;
pub(super) mod recoveries;
mod roster;
mod rotate;
mod scripts;
mod seam;
mod state;
mod stats;
mod submit;
mod transport;
mod webhook_queue;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

pub use self::config::RedisConfig;
use self::ops::{Op, Places, Queued};
use self::scripts::Keys;
pub(crate) use self::webhook_queue::webhook_queue;
use super::bus;
use crate::apps::{App, AppStore};

/// State changes queued on a node, all apps together, before new ones are refused (see
/// [`Cluster::op`] for what a refusal means for each kind).
const OPS_QUEUE: usize = 100_000;
/// Bus messages waiting for the publisher, which holds as many more
/// ([`publisher::MAX_HELD`]) while Redis (or a shard) does not take them; both within
/// `cluster_bus_max_bytes`.
const BUS_QUEUE: usize = 100_000;
/// Users whose refused sign-in changes wait to be restated; beyond it the whole node is.
const PENDING_USERS: usize = 100_000;
/// At most one warning per this interval for a condition a flood repeats.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How long leaving waits for the bus publisher to send what the node's last changes left
/// for the other nodes.
const LEAVE_FLUSH: Duration = Duration::from_secs(3);

/// Why a cluster node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `redis_url` was not understood.
    #[error("invalid redis_url: {0}")]
    Url(link::TargetError),
    /// Redis (every seed node, every sentinel) did not answer; the link's error names the
    /// target without its passwords.
    #[error(transparent)]
    Link(#[from] link::LinkError),
    /// A TLS file could not be used.
    #[error("TLS to Redis: {0}")]
    Tls(#[from] link::TlsError),
    /// Redis did not answer the node id's claim.
    #[error("cannot claim a node id in Redis: {0}")]
    Claim(redis::RedisError),
    /// Another node holds the configured id and is alive.
    #[error("node_id {id} is held by another live node of this cluster (it heartbeated {age_ms} ms ago): give every node its own node_id, or leave it unset for a random one")]
    NodeIdInUse {
        /// The id.
        id: u32,
        /// Since its holder's last heartbeat.
        age_ms: u64,
    },
    /// Every random id drawn was held by another node (Redis holds stale entries?).
    #[error("no free node id after {0} random draws")]
    NoFreeNodeId(usize),
}

/// Scripts run from request handlers (the state task has its own).
struct RequestScripts {
    rate_take: redis::Script,
    admit: redis::Script,
    count_messages: redis::Script,
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
    /// Read the member lists of the presence channels with subscribers here again: the bus
    /// lost messages, or Redis lost or rewound its data.
    relist: bool,
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

type Receivers = (
    mpsc::UnboundedReceiver<Queued>,
    mpsc::Receiver<publisher::Outgoing>,
);

impl crate::backend::Backend for Cluster {
    /// A node serves new connections whether Redis answers or not: without it, it serves
    /// them as a node of its own. Taking it out of the load balancer would take every node
    /// out together, since a Redis outage (or one Cluster shard failing over) reaches them
    /// all at once; the link's state is `degraded`, and the `herald_cluster_redis_up` gauge.
    fn unavailable(&self) -> Option<&'static str> {
        None
    }

    fn degraded(&self) -> Option<&'static str> {
        (!self.redis_up()).then_some(
            "the cluster's Redis is not answering; this node serves only its own sockets",
        )
    }

    fn metric_families(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.stats().families()
    }

    fn leave(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(self.stop())
    }

    fn reload_files(&self) {
        self.reload_tls();
    }
}

/// Connects to the cluster's Redis and joins: the node's tasks run and its first heartbeat
/// is recorded when this returns.
///
/// The node's cluster tasks (state, heartbeat, bus publisher and listener, and the Redis
/// connections' own) run on a thread of their own ([`cluster_runtime`]), not among the
/// connection tasks, so the operating system shares the cores between them: under a
/// subscription flood that kept both workers busy, the heartbeat fell more than a node
/// timeout behind (the other nodes declared the node dead and removed its members), and
/// the state task's turns came seconds apart.
pub(super) async fn join(
    config: &RedisConfig,
    node_id: Option<u32>,
    apps: Arc<dyn AppStore>,
) -> std::io::Result<Arc<Cluster>> {
    let runtime = cluster_runtime().await?;
    let joining = config.clone();
    let cluster = runtime
        .spawn(async move {
            let cluster = Cluster::connect(&joining, node_id)
                .await
                .map_err(std::io::Error::other)?;
            cluster.start(apps).await;
            Ok::<_, std::io::Error>(cluster)
        })
        .await
        .map_err(std::io::Error::other)??;
    tracing::info!(
        node_id = cluster.node_id,
        redis = %config::shown_url(&config.url),
        "Joined the cluster"
    );
    Ok(cluster)
}

/// A single-threaded runtime on a thread of its own, for the rest of the process's life.
async fn cluster_runtime() -> std::io::Result<tokio::runtime::Handle> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("herald-cluster".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(runtime.handle().clone()));
            runtime.block_on(std::future::pending::<()>());
        })?;
    rx.await.map_err(std::io::Error::other)?
}

/// One node's membership of a cluster.
pub struct Cluster {
    node_id: u32,
    keys: Keys,
    node_timeout: Duration,
    /// Commands to one server, a cluster or the sentinels' master (`link`).
    conn: link::Commands,
    /// The heartbeat task's own connection, so a long pipeline of the state task never
    /// holds a heartbeat back.
    beat_conn: link::Commands,
    /// Unbounded as a channel: [`Cluster::op`] bounds it with `places`.
    ops: mpsc::UnboundedSender<Queued>,
    places: Places,
    /// Ops refused because a share or the queue was full.
    refused: AtomicU64,
    refused_log: Throttle,
    outgoing: mpsc::Sender<publisher::Outgoing>,
    /// The bus's publishing and listening connections.
    bus: transport::Bus,
    /// Where the link connects and how, for renewing connections (`rotate.rs`).
    link: rotate::Link,
    /// What the publisher holds: the byte budget of queued and held messages, and counts.
    out: Arc<publisher::Outbound>,
    /// Other nodes' open connections per app, from their last heartbeats.
    others: Mutex<HashMap<String, usize>>,
    /// Every app this node has written a connection count of. Once one is gone (a reload
    /// removed it and its last connection closed: every change of its connections held it)
    /// the next heartbeat withdraws the count.
    counted: Mutex<HashMap<String, Weak<App>>>,
    /// Whether Redis answered the last call; while not, state changes are applied locally
    /// only and restated when Redis answers again. Only Redis errors clear it; only the
    /// state task sets it again, as it restates.
    healthy: AtomicBool,
    /// Bus messages dropped because the queue was full.
    dropped: AtomicU64,
    dropped_log: Throttle,
    /// Requests Redis did not answer, and their warnings' throttle.
    request_errors: AtomicU64,
    request_log: Throttle,
    started: Instant,
    signals: Mutex<Signals>,
    /// Presence membership as this node tells its subscribers (`members.rs`).
    rosters: members::Rosters,
    /// The channels of the recovery entries kept in the cluster (`recoveries.rs`).
    awaited: crate::recovery::memory::MemoryRecoveries,
    /// The recovery entries being written: a drain's, which its clients take on another
    /// node, are waited for as the node leaves.
    writing: tokio_util::task::TaskTracker,
    /// The Redis epoch the heartbeat saw last (`None` before the first): a resync finding
    /// another one runs quiet, since Redis lost its data before the heartbeat could say so.
    epoch: Mutex<Option<String>>,
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
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to Redis and claims the node's id there (`node_id`, or a random one).
    /// Fails if Redis does not answer (a node that starts without its cluster would silently
    /// serve a split view), or if another live node holds the configured id.
    pub async fn connect(
        config: &RedisConfig,
        node_id: Option<u32>,
    ) -> Result<Arc<Self>, ClusterError> {
        let target = link::Target::parse(&config.url).map_err(ClusterError::Url)?;
        let options = link::Options {
            tls: link::TlsStore::open(&config.tls)?,
            sentinel_tls: link::TlsStore::open(&config.sentinel_tls)?,
            ..link::Options::default()
        };
        rotate::warn_if_unchecked(config);
        let conn = link::Commands::connect(&target, &options).await?;
        let beat_conn = link::Commands::connect(&target, &options).await?;
        let keys = Keys::new(&config.prefix);
        let claimed = heartbeat::claim(
            &mut beat_conn.clone(),
            &keys,
            node_id,
            config.node_timeout,
            crate::ids::random_node_id,
        )
        .await?;
        let node_id = claimed.id;
        let mut signals = Signals::default();
        if claimed.took_over {
            // What the id's last run left in Redis is this node's share now: restated (with
            // the events a clean leave would have sent) once the node runs.
            signals.resync = Some(true);
        }
        let bus = transport::Bus::connect(config, &keys, &target, &options).await?;
        let (ops_tx, ops_rx) = mpsc::unbounded_channel();
        let (bus_tx, bus_rx) = mpsc::channel(BUS_QUEUE);
        Ok(Arc::new(Cluster {
            node_id,
            keys,
            node_timeout: config.node_timeout,
            conn,
            beat_conn,
            ops: ops_tx,
            places: Places::new(OPS_QUEUE, config.ops_per_app),
            refused: AtomicU64::new(0),
            refused_log: Throttle::default(),
            outgoing: bus_tx,
            bus,
            link: rotate::Link::new(target, options),
            out: Arc::new(publisher::Outbound::new(config.bus_max_bytes)),
            others: Mutex::new(HashMap::new()),
            counted: Mutex::new(HashMap::new()),
            healthy: AtomicBool::new(true),
            dropped: AtomicU64::new(0),
            dropped_log: Throttle::default(),
            request_errors: AtomicU64::new(0),
            request_log: Throttle::default(),
            started: Instant::now(),
            signals: Mutex::new(signals),
            rosters: members::Rosters::default(),
            awaited: Default::default(),
            writing: tokio_util::task::TaskTracker::new(),
            epoch: Mutex::new(None),
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
        }))
    }

    /// Starts the node's tasks (state, heartbeat, bus publisher and subscriber) for the
    /// apps of `store`; returns once the node's first heartbeat is recorded.
    pub(crate) async fn start(self: &Arc<Self>, store: Arc<dyn AppStore>) {
        let _ = self.apps.set(store);
        let Some((ops, outgoing)) = self.receivers.lock().take() else {
            return;
        };
        // Messages to this node before it listens would be lost to it.
        transport::listen(self.clone(), Duration::from_secs(5)).await;
        tokio::spawn(publisher::run(
            self.bus.commands.clone(),
            outgoing,
            self.out.clone(),
        ));
        let mut beat = heartbeat::Heartbeat::new(self.clone());
        beat.beat().await;
        tokio::spawn(beat.run());
        tokio::spawn(state::StateTask::new(self.clone()).run(ops));
    }

    /// Drains the state queue, withdraws this node's share of the cluster state and leaves;
    /// then publishes what that left for the other nodes (the `member_removed` of the
    /// drain's last leaves), within [`LEAVE_FLUSH`].
    pub(crate) async fn stop(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stop = Queued {
            op: Op::Stop(tx),
            _held: None,
        };
        if self.ops.send(stop).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
        // The entries the drain's closes left, before their notices are flushed.
        self.writing.close();
        let _ = tokio::time::timeout(LEAVE_FLUSH, self.writing.wait()).await;
        if !self.out.flushed(LEAVE_FLUSH).await {
            tracing::warn!(
                held = self.out.held.load(Ordering::Relaxed),
                "Cluster bus: leaving with messages for other nodes unpublished"
            );
        }
    }

    fn app(&self, id: &str) -> Option<Arc<App>> {
        self.apps.get()?.by_id(id)
    }

    /// The node's id, as claimed in Redis.
    pub(crate) fn node_id(&self) -> u32 {
        self.node_id
    }

    /// Records that this node writes `app`'s connection count, so it is withdrawn once the
    /// app is gone.
    fn counts_connections_of(&self, app: &Arc<App>) {
        let mut counted = self.counted.lock();
        match counted.get(app.id()) {
            Some(known) if known.as_ptr() == Arc::as_ptr(app) => {}
            _ => {
                counted.insert(app.id().to_owned(), Arc::downgrade(app));
            }
        }
    }

    /// The apps whose connection counts this node wrote and which are gone now (and not
    /// served again under the same id), taken out of the record.
    fn take_forgotten(&self) -> Vec<String> {
        let mut counted = self.counted.lock();
        let gone: Vec<String> = counted
            .iter()
            .filter(|(id, app)| app.strong_count() == 0 && self.app(id).is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            counted.remove(id);
        }
        gone
    }

    /// Puts back apps whose withdrawal failed, for the next heartbeat.
    fn forget_later(&self, ids: Vec<String>) {
        let mut counted = self.counted.lock();
        for id in ids {
            counted.entry(id).or_default();
        }
    }

    /// Whether Redis answered the node's last calls (the node's health).
    fn redis_up(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Logs a request that Redis did not answer (`what`: what it asked and what stood in),
    /// at most once per [`LOG_INTERVAL`], with how many did so far: while Redis is away,
    /// every request would otherwise log a line.
    fn request_failed(&self, what: &'static str, error: &redis::RedisError) {
        let n = self.request_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if self.request_log.ready(self.started) {
            tracing::warn!(%error, asked = what, requests = n, "Cluster: Redis did not answer a request; decided on this node");
        }
    }

    /// Marks Redis as not answering; the next heartbeat that gets an answer restates.
    fn redis_failed(&self, error: &redis::RedisError) {
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "Cluster: Redis is not answering; serving this node's sockets alone until it returns");
        }
    }

    /// Open connections of `app` on the other nodes, as of their last heartbeats.
    pub(crate) fn other_connections(&self, app: &str) -> usize {
        self.others.lock().get(app).copied().unwrap_or(0)
    }

    fn redis(&self) -> link::Commands {
        self.conn.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
