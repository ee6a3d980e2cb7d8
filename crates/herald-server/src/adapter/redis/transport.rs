//! The bus over the Redis link: one task publishes this node's messages, pipelined (one
//! pipeline per slot on a Redis Cluster, where publishing is SPUBLISH); one task takes what
//! the link's [`Subscriber`] delivers and hands it to local sockets. Which bus channels the
//! node listens to is the state task's choice (`interest.rs`); this module only carries.
//!
//! Both outlive Redis outages. The publisher keeps what it could not send and sends it, in
//! order, once Redis answers; a message counts against `cluster_bus_max_bytes` from when it
//! is queued until it is published, so what the publisher holds is bounded with the queue.
//! The link resubscribes by itself after a reconnect or a failover and reports a [`Gap`]:
//! messages other nodes published meanwhile are not replayed (Redis pub/sub keeps
//! nothing); the gap is logged, counted, and makes the node restate its share, since a
//! failover may have lost its last writes too.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::config::RedisConfig;
use super::interest;
use super::link::{self, Commands, Deliveries, Delivery, Gap, Subscriber, Target};
use super::scripts::Keys;
use super::{merge_resync, Cluster, ClusterError, Throttle};
use crate::adapter::bus::{self, BusMessage};
use crate::ids::SocketId;

/// Messages per pipelined round trip.
const BATCH: usize = 256;
const RETRY: Duration = Duration::from_millis(250);
/// What a queued bus message costs beyond its bytes (its buffers and its queue slot), so
/// many tiny messages are bounded too.
const MESSAGE_OVERHEAD: usize = 64;

/// A message for the other nodes and the bus channel it goes to.
pub(super) struct Outgoing {
    pub(super) channel: String,
    pub(super) payload: Vec<u8>,
}

impl Outgoing {
    /// What it counts against `cluster_bus_max_bytes`.
    pub(super) fn cost(&self) -> usize {
        self.channel.len() + self.payload.len() + MESSAGE_OVERHEAD
    }
}

/// The node's two ends of the bus, and what they count.
pub(super) struct Bus {
    prefix: String,
    /// The channel every node listens to: messages that name no channel.
    control: String,
    commands: Commands,
    subscriber: Subscriber,
    /// Until the listener task takes them.
    deliveries: Mutex<Option<Deliveries>>,
    /// Messages received from the bus (this node's own included), malformed ones too.
    received: AtomicU64,
    /// Gaps the link reported.
    gaps: AtomicU64,
    gap_log: Throttle,
    /// Bus channels the state task holds (see `interest.rs`).
    pub(super) channels: AtomicUsize,
}

impl Bus {
    /// Connects both ends to the configured Redis (one server, a cluster or a sentinel
    /// master).
    pub(super) async fn connect(config: &RedisConfig, keys: &Keys) -> Result<Bus, ClusterError> {
        let target = Target::parse(&config.url).map_err(ClusterError::Url)?;
        let options = link::Options::default();
        let commands = Commands::connect(&target, &options).await?;
        let (subscriber, deliveries) = Subscriber::connect(&target, &options).await?;
        Ok(Bus {
            prefix: config.prefix.clone(),
            control: keys.bus(),
            commands,
            subscriber,
            deliveries: Mutex::new(Some(deliveries)),
            received: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            gap_log: Throttle::default(),
            channels: AtomicUsize::new(0),
        })
    }

    /// The control channel, for messages that name no channel.
    pub(super) fn control(&self) -> &str {
        &self.control
    }

    /// The bus channel of an app's channel.
    pub(super) fn channel_of(&self, app: &str, channel: &str) -> String {
        interest::event_channel(&self.prefix, app, channel)
    }

    /// A handle for subscribing and unsubscribing (the state task's).
    pub(super) fn subscriber(&self) -> Subscriber {
        self.subscriber.clone()
    }

    /// Messages received and gaps reported, for the metrics.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.received.load(Ordering::Relaxed),
            self.gaps.load(Ordering::Relaxed),
        )
    }
}

/// Publishes queued messages until the queue closes.
pub(super) async fn publisher(cluster: Arc<Cluster>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut commands = cluster.bus.commands.clone();
    let mut batch: Vec<Outgoing> = Vec::with_capacity(BATCH);
    let mut failing = false;
    loop {
        if batch.is_empty() && queue.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let messages: Vec<(&str, &[u8])> = batch
            .iter()
            .map(|m| (m.channel.as_str(), m.payload.as_slice()))
            .collect();
        match commands.publish_all(&messages).await {
            Ok(()) => {
                if failing {
                    tracing::info!("Cluster bus: publishing to Redis again");
                    failing = false;
                }
                cluster.published(batch.iter().map(Outgoing::cost).sum());
                batch.clear();
                cluster.held.store(0, Ordering::Relaxed);
            }
            Err(error) => {
                cluster.held.store(batch.len(), Ordering::Relaxed);
                if !failing {
                    tracing::warn!(%error, pending = batch.len(), "Cluster bus: cannot publish to Redis; holding messages until it returns");
                    failing = true;
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Starts the listener and subscribes to the control channel; returns once Redis has
/// confirmed it (or `wait` passed: the link keeps trying).
pub(super) async fn listen(cluster: Arc<Cluster>, wait: Duration) {
    let Some(mut deliveries) = cluster.bus.deliveries.lock().take() else {
        return;
    };
    let subscriber = cluster.bus.subscriber();
    let listener = cluster.clone();
    tokio::spawn(async move {
        while let Some(delivery) = deliveries.recv().await {
            match delivery {
                Delivery::Message(message) => {
                    listener.bus.received.fetch_add(1, Ordering::Relaxed);
                    listener.receive(&message.payload);
                }
                Delivery::Gap(gap) => listener.bus_gap(gap),
            }
        }
    });
    match tokio::time::timeout(wait, subscriber.subscribe(cluster.bus.control())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "Cluster bus: cannot listen to the control channel")
        }
        Err(_) => tracing::warn!(
            "Cluster bus: Redis has not confirmed the control channel yet; still trying"
        ),
    }
}

impl Cluster {
    /// Messages in a gap are lost: logged (at most once per interval), counted, and the
    /// node's share restated, since what lost the subscription (a failover) may have lost
    /// the node's last writes too.
    fn bus_gap(&self, gap: Gap) {
        let n = self.bus.gaps.fetch_add(1, Ordering::Relaxed) + 1;
        let overflow = matches!(gap, Gap::All);
        if self.bus.gap_log.ready(self.started) {
            match &gap {
                Gap::All => tracing::warn!(gaps = n, "Cluster bus: the listener fell behind and dropped messages from other nodes"),
                Gap::Channels(channels) => tracing::warn!(gaps = n, channels = channels.len(), "Cluster bus: subscriptions were lost and restored; messages published meanwhile are lost"),
            }
        }
        if !overflow {
            let mut signals = self.signals.lock();
            signals.resync = merge_resync(signals.resync, true);
            drop(signals);
            self.wake.notify_one();
        }
    }

    /// Delivers one message from another node to this node's sockets.
    fn receive(&self, payload: &[u8]) {
        // A node's own messages come back to it on the channels it is subscribed to: drop
        // them on their first five bytes, before anything is decoded or copied.
        if bus::origin(payload) == Some(self.node_id) {
            return;
        }
        let Some((_, message)) = bus::decode(payload) else {
            tracing::debug!(
                bytes = payload.len(),
                "Cluster bus: ignored a malformed message"
            );
            return;
        };
        match message {
            BusMessage::Event {
                app,
                channel,
                except,
                frame,
                cache,
            } => {
                let Some(app) = self.app(&app) else { return };
                let except = except
                    .and_then(|s| SocketId::parse(&s))
                    .and_then(|s| s.on_node(self.node_id));
                app.hub.publish(&channel, &frame, except);
                if let Some((data, ttl_ms)) = cache {
                    app.cache
                        .store(&channel, frame, &data, Duration::from_millis(ttl_ms));
                }
            }
            BusMessage::Terminate { app, user, code } => {
                let Some(app) = self.app(&app) else { return };
                app.users.terminate(&user, code);
            }
            BusMessage::Watch { app, user, online } => {
                let Some(app) = self.app(&app) else { return };
                app.users.notify_watchers(&user, online);
            }
        }
    }
}
