//! [`Subscriber`]: pub/sub channels taken and released at runtime, each call answered once
//! Redis has acknowledged it, and kept subscribed across reconnects and failovers.
//!
//! One task owns the subscriber's connections (RESP3, so the client hands every push to
//! the connection's [`Sink`]) and makes what is subscribed converge on what is wanted:
//! - a single server or a sentinel master: one connection, SUBSCRIBE / UNSUBSCRIBE;
//! - a cluster: one connection per master that serves a wanted channel's slot,
//!   SSUBSCRIBE / SUNSUBSCRIBE there (a shard's channels live on that shard only).
//!
//! Each command names one channel. Redis answers a multi-channel (un)subscribe with one
//! push per channel, which the client's multiplexed connection would take as the replies
//! of the requests queued behind it; one channel per command keeps one reply per request.
//! A channel counts as subscribed when its push confirmation arrives, not when the command
//! returns.
//!
//! When a connection closes, stops answering pings, or Redis drops a subscription itself
//! (the slot moved to another shard), the task finds where each channel lives now (the
//! sentinels' master, the cluster's slot map) and subscribes again, retrying with backoff
//! up to once a second while that fails. The caller does nothing; it gets a
//! [`Gap::Channels`] once the channels are active again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{ErrorKind, ProtocolVersion, RedisError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

#[path = "subscriber/nodes.rs"]
mod nodes;

use self::nodes::{switched, Conn, Source};
use super::commands::cluster_connection;
use super::deliveries::{Deliveries, Delivery, Event, Gap, Gaps};
use super::sentinel::SentinelMaster;
use super::target::Target;
use super::{LinkError, Options};

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// The node key of the only connection of a single server or sentinel master.
const ONLY: &str = "";
/// The node key standing for the cluster's slot map in the unreachable set.
const SLOT_MAP: &str = "<slot map>";

/// A handle on the subscriber; clones share it. The subscriber stops when the last handle
/// is dropped.
///
/// Guarantees:
/// - [`Subscriber::subscribe`] returns once Redis has confirmed the subscription, so a
///   message published after it returns is delivered (unless the queue overflows or the
///   connection is lost, both reported as a [`Gap`]).
/// - After [`Subscriber::unsubscribe`] returns, no new message of the channel is queued;
///   some queued before may still be in [`Deliveries`].
/// - Messages published while a subscription is being restored are lost (pub/sub keeps
///   nothing); the [`Gap`] that follows the restoration says which channels, and the caller
///   resyncs whatever it derives from them.
#[derive(Clone)]
pub(crate) struct Subscriber {
    requests: mpsc::UnboundedSender<Request>,
    // What the link's tests observe; the adapter learns of losses from the gaps.
    #[cfg(test)]
    sharded: bool,
    #[cfg(test)]
    degraded: Arc<AtomicBool>,
}

/// Why a subscription was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SubscribeError {
    #[error("the subscriber has stopped")]
    Stopped,
    #[error("unsubscribed before Redis confirmed the subscription")]
    Unsubscribed,
    #[error("Redis refused the subscription: {0}")]
    Refused(String),
}

enum Request {
    Subscribe(String, oneshot::Sender<Result<(), SubscribeError>>),
    Unsubscribe(String, oneshot::Sender<()>),
}

impl Subscriber {
    /// Starts a subscriber on `target`; fails if Redis does not answer. Messages arrive on
    /// the returned [`Deliveries`], which holds `options.capacity` of them.
    pub(crate) async fn connect(
        target: &Target,
        options: &Options,
    ) -> Result<(Subscriber, Deliveries), LinkError> {
        let err = LinkError::connect(target);
        let source = match target {
            Target::Single(info) => {
                let mut info = (**info).clone();
                info.redis.protocol = ProtocolVersion::RESP3;
                Source::Single(Box::new(info))
            }
            Target::Sentinel(seeds) => {
                let master = SentinelMaster::new(seeds, options).map_err(&err)?;
                let switches = master.switches();
                Source::Sentinel(master, switches)
            }
            Target::Cluster(seeds) => Source::Cluster {
                topology: cluster_connection(seeds, options, ProtocolVersion::RESP2)
                    .await
                    .map_err(&err)?,
                seeds: seeds.clone(),
                slots: None,
            },
        };
        let sharded = matches!(source, Source::Cluster { .. });
        let (deliveries, queue, gaps) = Deliveries::new(options.capacity);
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let degraded = Arc::new(AtomicBool::new(false));
        let mut task = Task {
            source,
            options: options.clone(),
            sharded,
            conns: HashMap::new(),
            by_node: HashMap::new(),
            channels: HashMap::new(),
            unreachable: HashSet::new(),
            lost: 0,
            requests,
            events,
            events_tx,
            queue,
            gaps,
            next_conn: 0,
            retry: None,
            backoff: RETRY_FIRST,
            degraded: degraded.clone(),
        };
        // Fail now, as the command connection does, if Redis is not there.
        if sharded {
            task.slot_map().await.map_err(&err)?;
        } else {
            task.connect_node(ONLY.to_owned(), None)
                .await
                .map_err(&err)?;
        }
        tokio::spawn(task.run());
        Ok((
            Subscriber {
                requests: requests_tx,
                #[cfg(test)]
                sharded,
                #[cfg(test)]
                degraded,
            },
            deliveries,
        ))
    }

    /// Subscribes to `channel` and returns once Redis has confirmed it (at once if it is
    /// already). While Redis is unreachable this waits for it; dropping the future does not
    /// withdraw the request: the channel stays wanted until [`Subscriber::unsubscribe`].
    pub(crate) async fn subscribe(&self, channel: &str) -> Result<(), SubscribeError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Subscribe(channel.to_owned(), tx))
            .map_err(|_| SubscribeError::Stopped)?;
        rx.await.unwrap_or(Err(SubscribeError::Stopped))
    }

    /// Unsubscribes from `channel` and returns once Redis has confirmed it (or the channel's
    /// connection is gone, which ends its subscriptions too), or a later subscribe wanted it
    /// again. Subscriptions are a set, not counted: one call ends any number of subscribes.
    pub(crate) async fn unsubscribe(&self, channel: &str) -> Result<(), SubscribeError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Unsubscribe(channel.to_owned(), tx))
            .map_err(|_| SubscribeError::Stopped)?;
        rx.await.map_err(|_| SubscribeError::Stopped)
    }

    /// Whether pub/sub is sharded (a cluster): publish with SPUBLISH
    /// ([`super::Commands::publish`] does).
    #[cfg(test)]
    pub(crate) fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// Whether some subscription was lost and is not restored yet.
    #[cfg(test)]
    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Channel {
    wanted: bool,
    state: State,
    /// Was active and lost its subscription: report a gap once it is active again.
    lost: bool,
    subscribers: Vec<oneshot::Sender<Result<(), SubscribeError>>>,
    unsubscribers: Vec<oneshot::Sender<()>>,
}

/// Where a channel's subscription stands, and on which connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Idle,
    Subscribing(u64),
    Active(u64),
    Unsubscribing(u64),
}

impl State {
    fn conn(self) -> Option<u64> {
        match self {
            State::Idle => None,
            State::Subscribing(c) | State::Active(c) | State::Unsubscribing(c) => Some(c),
        }
    }
}

struct Task {
    source: Source,
    options: Options,
    sharded: bool,
    conns: HashMap<u64, Conn>,
    by_node: HashMap<String, u64>,
    channels: HashMap<String, Channel>,
    /// Nodes that failed to connect since the last full pass; retried by the next one.
    unreachable: HashSet<String>,
    /// Channels with `lost` set.
    lost: usize,
    requests: mpsc::UnboundedReceiver<Request>,
    events: mpsc::UnboundedReceiver<Event>,
    events_tx: mpsc::UnboundedSender<Event>,
    queue: mpsc::Sender<Delivery>,
    gaps: Arc<Gaps>,
    next_conn: u64,
    retry: Option<Instant>,
    backoff: Duration,
    degraded: Arc<AtomicBool>,
}

enum Wake {
    Request(Request),
    Event(Event),
    Ping,
    Retry,
    Switched,
    Stop,
}

impl Task {
    async fn run(mut self) {
        let mut keepalive = tokio::time::interval(self.options.keepalive);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retry = self.retry;
            let wake = tokio::select! {
                request = self.requests.recv() => request.map_or(Wake::Stop, Wake::Request),
                Some(event) = self.events.recv() => Wake::Event(event),
                _ = keepalive.tick() => Wake::Ping,
                _ = sleep_until(retry), if retry.is_some() => Wake::Retry,
                () = switched(&mut self.source) => Wake::Switched,
            };
            match wake {
                Wake::Stop => return,
                Wake::Request(request) => self.request(request).await,
                Wake::Event(event) => self.event(event).await,
                Wake::Ping => self.ping(),
                Wake::Retry => {
                    self.retry = None;
                    self.converge_all().await;
                }
                Wake::Switched => {
                    tracing::info!("Redis subscriber: following the new master");
                    let conns: Vec<u64> = self.conns.keys().copied().collect();
                    for conn in conns {
                        self.drop_conn(conn);
                    }
                    self.converge_all().await;
                }
            }
            self.degraded.store(self.lost > 0, Ordering::Relaxed);
        }
    }

    async fn request(&mut self, request: Request) {
        match request {
            Request::Subscribe(name, reply) => {
                let channel = self.channels.entry(name.clone()).or_default();
                channel.wanted = true;
                for waiter in channel.unsubscribers.drain(..) {
                    let _ = waiter.send(());
                }
                if let State::Active(_) = channel.state {
                    let _ = reply.send(Ok(()));
                    return;
                }
                channel.subscribers.push(reply);
                self.converge(&name).await;
            }
            Request::Unsubscribe(name, reply) => {
                let Some(channel) = self.channels.get_mut(&name) else {
                    let _ = reply.send(());
                    return;
                };
                channel.wanted = false;
                for waiter in channel.subscribers.drain(..) {
                    let _ = waiter.send(Err(SubscribeError::Unsubscribed));
                }
                channel.unsubscribers.push(reply);
                self.converge(&name).await;
            }
        }
    }

    async fn event(&mut self, event: Event) {
        match event {
            Event::Subscribed {
                conn,
                channel: name,
            } => {
                let Some(channel) = self.channels.get_mut(&name) else {
                    return;
                };
                if channel.state != State::Subscribing(conn) {
                    return;
                }
                channel.state = State::Active(conn);
                if channel.wanted {
                    for waiter in channel.subscribers.drain(..) {
                        let _ = waiter.send(Ok(()));
                    }
                    if channel.lost {
                        channel.lost = false;
                        self.lost -= 1;
                        self.gaps.add(Gap::Channels(vec![name]));
                    }
                } else {
                    self.converge(&name).await;
                }
            }
            Event::Unsubscribed {
                conn,
                channel: name,
            } => {
                let Some(channel) = self.channels.get_mut(&name) else {
                    return;
                };
                match channel.state {
                    State::Unsubscribing(c) if c == conn => {
                        channel.state = State::Idle;
                        self.converge(&name).await;
                    }
                    State::Active(c) if c == conn => {
                        tracing::info!(channel = %name, "Redis subscriber: Redis dropped a subscription (its slot moved); subscribing again");
                        channel.state = State::Idle;
                        self.mark_lost(&name);
                        self.forget_slots();
                        self.converge(&name).await;
                    }
                    _ => {}
                }
            }
            Event::Lost { conn } => {
                if self.conns.contains_key(&conn) {
                    tracing::warn!("Redis subscriber: lost a connection; subscribing again");
                    self.drop_conn(conn);
                    self.converge_all().await;
                }
            }
            Event::Failed {
                conn,
                channel: name,
                error,
            } => {
                let Some(channel) = self.channels.get_mut(&name) else {
                    return;
                };
                match channel.state {
                    State::Subscribing(c) if c == conn => {
                        channel.state = State::Idle;
                        if transient(&error) {
                            self.forget_slots();
                            self.schedule_retry();
                        } else {
                            channel.wanted = false;
                            for waiter in channel.subscribers.drain(..) {
                                let _ =
                                    waiter.send(Err(SubscribeError::Refused(error.to_string())));
                            }
                            self.converge(&name).await;
                        }
                    }
                    // Whether Redis still holds it is unknown: start that connection over.
                    State::Unsubscribing(c) if c == conn => {
                        self.drop_conn(conn);
                        self.converge_all().await;
                    }
                    _ => {}
                }
            }
        }
    }

    /// Moves one channel a step towards what is wanted.
    async fn converge(&mut self, name: &str) {
        let Some(channel) = self.channels.get(name) else {
            return;
        };
        match (channel.wanted, channel.state) {
            (true, State::Idle) => match self.conn_for(name).await {
                Some(conn) => {
                    self.send(conn, name, true);
                    if let Some(channel) = self.channels.get_mut(name) {
                        channel.state = State::Subscribing(conn);
                    }
                }
                None => self.schedule_retry(),
            },
            (false, State::Active(conn)) => {
                self.send(conn, name, false);
                if let Some(channel) = self.channels.get_mut(name) {
                    channel.state = State::Unsubscribing(conn);
                }
            }
            (false, State::Idle) => {
                if let Some(channel) = self.channels.remove(name) {
                    if channel.lost {
                        self.lost -= 1;
                    }
                    for waiter in channel.unsubscribers {
                        let _ = waiter.send(());
                    }
                }
            }
            // Waiting for Redis's confirmation; the channel moves on from there.
            _ => {}
        }
    }

    /// One pass over every channel, after a loss or when a retry is due. It starts from a
    /// fresh slot map (a node it cannot reach may have failed over) and tries each
    /// unreachable node once, however many channels live there.
    async fn converge_all(&mut self) {
        self.unreachable.clear();
        self.forget_slots();
        let names: Vec<String> = self.channels.keys().cloned().collect();
        for name in names {
            self.converge(&name).await;
        }
        if self.unreachable.is_empty() {
            self.backoff = RETRY_FIRST;
        }
    }

    fn mark_lost(&mut self, name: &str) {
        if let Some(channel) = self.channels.get_mut(name) {
            if channel.wanted && !channel.lost {
                channel.lost = true;
                self.lost += 1;
            }
        }
    }

    fn schedule_retry(&mut self) {
        if self.retry.is_none() {
            self.retry = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(RETRY_MAX);
        }
    }
}

/// Whether a failed (un)subscribe may succeed later (elsewhere, or once the cluster
/// settles) rather than being refused for good (ACLs, a bad name).
fn transient(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_unrecoverable_error()
        || error.is_cluster_error()
        || matches!(
            error.kind(),
            ErrorKind::Moved
                | ErrorKind::Ask
                | ErrorKind::TryAgain
                | ErrorKind::ClusterDown
                | ErrorKind::MasterDown
                | ErrorKind::BusyLoadingError
                | ErrorKind::ReadOnly
        )
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
