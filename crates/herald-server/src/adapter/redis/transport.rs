//! The bus over the Redis link: the node's two ends of it ([`Bus`]), and the task that takes
//! what the link's [`Subscriber`] delivers and hands it to local sockets. Publishing is
//! `publisher.rs`'s; which bus channels the node listens to is the state task's choice
//! (`interest.rs`); this module only carries.
//!
//! The listener drops what it already had from a sender ([`Dedup`]: the publisher sends a
//! message again, with its sequence number, when it cannot tell whether Redis took it).
//! The link resubscribes by itself after a reconnect or a failover and reports a [`Gap`]:
//! messages other nodes published meanwhile are not replayed (Redis pub/sub keeps
//! nothing); the gap is logged, counted, and makes the node restate its share, since a
//! failover may have lost its last writes too.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::config::RedisConfig;
use super::interest;
use super::link::{self, Commands, Deliveries, Delivery, Gap, Subscriber, Target};
use super::members::Membership;
use super::scripts::Keys;
use super::{merge_resync, Cluster, ClusterError, Throttle};
use crate::adapter::bus::{self, BusMessage};
use crate::ids::SocketId;

/// Senders and groups a listener remembers the last sequence number of; past it, it
/// forgets them all (a copy sent again just then could get through once).
const DEDUP_ENTRIES: usize = 1 << 20;

/// The node's two ends of the bus, and what they count.
pub(super) struct Bus {
    prefix: String,
    /// The channel every node listens to: messages that name no channel.
    control: String,
    /// The publishing end (`publisher.rs`).
    pub(super) commands: Commands,
    subscriber: Subscriber,
    /// Until the listener task takes them.
    deliveries: Mutex<Option<Deliveries>>,
    /// Messages received from the bus (this node's own included), malformed ones too.
    received: AtomicU64,
    /// Gaps the link reported.
    gaps: AtomicU64,
    /// Copies of messages already received, dropped.
    duplicates: AtomicU64,
    gap_log: Throttle,
    /// Bus channels the state task holds (see `interest.rs`).
    pub(super) channels: AtomicUsize,
}

impl Bus {
    /// Connects both ends to the configured Redis (one server, a cluster or a sentinel
    /// master).
    pub(super) async fn connect(
        config: &RedisConfig,
        keys: &Keys,
        target: &Target,
        options: &link::Options,
    ) -> Result<Bus, ClusterError> {
        let commands = Commands::connect(target, options).await?;
        let (subscriber, deliveries) = Subscriber::connect(target, options).await?;
        Ok(Bus {
            prefix: config.prefix.clone(),
            control: keys.bus(),
            commands,
            subscriber,
            deliveries: Mutex::new(Some(deliveries)),
            received: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
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

    /// Messages received, gaps reported and copies dropped, for the metrics.
    pub(super) fn counts(&self) -> (u64, u64, u64) {
        (
            self.received.load(Ordering::Relaxed),
            self.gaps.load(Ordering::Relaxed),
            self.duplicates.load(Ordering::Relaxed),
        )
    }
}

/// The highest sequence number received from each sender on each group of bus channels
/// (`Commands::group_of`: a cluster's slot; the server). A sender's numbers only grow in
/// each group, and it sends a group's messages in order, so a message numbered at or below
/// the highest is a copy of one received already (sent again after a failed pipeline)
/// or older than one delivered: it is dropped either way.
#[derive(Default)]
pub(super) struct Dedup {
    highest: HashMap<(u32, u16), u64>,
}

impl Dedup {
    /// Whether a message numbered `sequence` from `origin` on `group` is new.
    pub(super) fn fresh(&mut self, origin: u32, group: u16, sequence: u64) -> bool {
        if self.highest.len() >= DEDUP_ENTRIES && !self.highest.contains_key(&(origin, group)) {
            self.highest.clear();
        }
        match self.highest.entry((origin, group)) {
            Entry::Vacant(v) => {
                v.insert(sequence);
                true
            }
            Entry::Occupied(mut o) if sequence > *o.get() => {
                o.insert(sequence);
                true
            }
            Entry::Occupied(_) => false,
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
        let mut dedup = Dedup::default();
        while let Some(delivery) = deliveries.recv().await {
            match delivery {
                Delivery::Message(message) => {
                    listener.bus.received.fetch_add(1, Ordering::Relaxed);
                    listener.receive(&message.channel, &message.payload, &mut dedup);
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
        let mut signals = self.signals.lock();
        // The presence changes in the gap are lost too: the member lists are read again.
        signals.relist = true;
        if !overflow {
            signals.resync = merge_resync(signals.resync, true);
        }
        drop(signals);
        self.wake.notify_one();
    }

    /// Delivers one message from another node to this node's sockets, unless it is a copy
    /// of one delivered already.
    fn receive(&self, channel: &str, payload: &[u8], dedup: &mut Dedup) {
        // A node's own messages come back to it on the channels it is subscribed to: drop
        // them on their first five bytes, before anything is decoded or copied. An event
        // with a serial is the exception: the node delivers it only now (`history.rs`).
        if bus::origin(payload) == Some(self.node_id) && !bus::carries_serial(payload) {
            return;
        }
        let Some((origin, message)) = bus::decode(payload) else {
            tracing::debug!(
                bytes = payload.len(),
                "Cluster bus: ignored a malformed message"
            );
            return;
        };
        if let Some(sequence) = bus::sequence(payload) {
            if !dedup.fresh(origin, self.bus.commands.group_of(channel), sequence) {
                self.bus.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        match message {
            BusMessage::Event {
                app,
                channel,
                except,
                frame,
                cache,
                serial,
            } => {
                let Some(app) = self.app(&app) else { return };
                let except = except
                    .and_then(|s| SocketId::parse(&s))
                    .and_then(|s| s.on_node(self.node_id));
                match serial {
                    // Noted under the channel's lock, as a single node gives its serials,
                    // so recovery reads what every subscriber has been sent.
                    Some(serial) => {
                        let limits = app.config().history;
                        let now = tokio::time::Instant::now();
                        app.hub
                            .publish_serial(&channel, &frame, except, serial, || {
                                app.history.mark(&channel, serial, &limits, now);
                            });
                    }
                    None => {
                        app.hub.publish(&channel, &frame, except);
                    }
                }
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
            BusMessage::Member {
                app,
                channel,
                user,
                info,
                present,
                version,
            } => {
                let Some(app) = self.app(&app) else { return };
                let change = Membership {
                    user: &user,
                    info: info.as_deref(),
                    present,
                    version: Some(version),
                };
                self.member_heard(&app, &channel, change);
            }
            BusMessage::Recovery {
                app,
                identity,
                notice,
            } => {
                let Some(app) = self.app(&app) else { return };
                self.recovery_heard(&app, &identity, notice);
            }
        }
    }
}
