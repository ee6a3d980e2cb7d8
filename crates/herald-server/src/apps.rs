//! The app store: the seam through which the server finds an app by id (HTTP API) or key
//! (WebSocket), and each app's live state.
//!
//! Lookups are synchronous and answer from memory so the hot path never awaits; a future
//! database-backed store would refresh into memory rather than query per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use herald_protocol::frame;

use crate::adapter::Cluster;
use crate::outbox::Outbox;
use crate::webhooks::WebhookEvent;
use crate::ws::text_frame;

use crate::cache::EventCache;
use crate::config::{AppConfig, WebhookSettings};
use crate::count_events::CountEvents;
use crate::hub::Hub;
use crate::metrics::AppMetrics;
use crate::ratelimit::AppRates;
use crate::users::UserRegistry;
use crate::webhooks::Webhooks;

/// An app: its configuration and its live channels.
#[derive(Debug)]
pub struct App {
    /// Credentials and limits.
    pub config: AppConfig,
    /// The app's channels and their subscribers on this node.
    pub hub: Hub,
    /// Connections signed in as a user, by user id.
    pub users: UserRegistry,
    /// The last event of each cache channel.
    pub cache: EventCache,
    /// The app's webhook queue, when it has endpoints.
    pub webhooks: Option<Arc<Webhooks>>,
    /// Counters for the app's rate and quota limits.
    pub rates: AppRates,
    /// Channels whose subscription-count event is being coalesced.
    count_events: CountEvents,
    /// What this node counts of the app, for the admin listener's `/metrics`.
    pub(crate) metrics: Arc<AppMetrics>,
    /// The cluster this node shares the app with, when `adapter = "redis"`.
    cluster: OnceLock<Arc<Cluster>>,
    connections: AtomicUsize,
}

impl App {
    /// A new app with no connections. Starts its webhook dispatcher, so it must be called
    /// inside a tokio runtime when the app has webhook endpoints.
    pub fn new(config: AppConfig, webhooks: &WebhookSettings) -> Self {
        let metrics = Arc::new(AppMetrics::default());
        App {
            webhooks: Webhooks::start(&config, webhooks, metrics.clone()),
            config,
            hub: Hub::new(),
            users: UserRegistry::default(),
            cache: EventCache::default(),
            rates: AppRates::default(),
            count_events: CountEvents::default(),
            metrics,
            cluster: OnceLock::new(),
            connections: AtomicUsize::new(0),
        }
    }

    /// Counts a new connection unless the app is at `max_connections`; the returned guard
    /// gives the slot back when dropped, so no exit path can leak it.
    pub fn try_connect(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let max = self.config.limits.max_connections;
        // In a cluster, the other nodes' counts as of their last heartbeat: a first check that
        // needs no Redis. The exact one, over every node's count, is the admission script
        // (ws::connect); this one decides alone while Redis is away.
        let elsewhere = self
            .cluster()
            .map_or(0, |c| c.other_connections(&self.config.id));
        let mut current = self.connections.load(Ordering::Relaxed);
        loop {
            if max != 0 && current + elsewhere >= max {
                return None;
            }
            match self.connections.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(ConnectionSlot(self.clone())),
                Err(now) => current = now,
            }
        }
    }

    /// The cluster the app is shared with, if any.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    pub(crate) fn join_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Sends a new subscriber of a cache channel the cached event, or `cache_miss` (and its
    /// webhook) when there is none.
    pub(crate) fn replay_cache(&self, channel: &str, outbox: &Outbox) {
        match self.cache.frame(channel) {
            Some(frame) => {
                outbox.push(frame);
            }
            None => {
                outbox.push(text_frame(&frame::cache_miss(channel)));
                self.webhook("cache_miss", || WebhookEvent::CacheMiss {
                    channel: channel.into(),
                });
            }
        }
    }

    /// Delivers an event frame to the subscribers of `channel` on this node and, in a
    /// cluster, on every other node; returns how many local subscribers got it.
    pub(crate) fn publish(
        &self,
        channel: &str,
        frame: &Bytes,
        except: Option<crate::hub::ConnId>,
        except_socket: Option<&str>,
    ) -> usize {
        let delivered = self.hub.publish(channel, frame, except);
        if let Some(cluster) = self.cluster() {
            cluster.send_event(&self.config.id, channel, except_socket, frame, None);
        }
        delivered
    }

    /// A channel's subscription count changed to `count` (the cluster's, in a cluster):
    /// tells its subscribers and the webhooks, if the app wants either, coalesced so that a
    /// client toggling a subscription cannot make every subscriber get a frame per toggle.
    pub(crate) fn subscription_count_changed(&self, channel: &str, count: usize) {
        let to_webhooks = self
            .webhooks
            .as_ref()
            .is_some_and(|w| w.wants("subscription_count"));
        if !self.config.subscription_count && !to_webhooks {
            return;
        }
        if let Some(count) = self
            .count_events
            .changed(channel, count, crate::sweeper::now())
        {
            self.send_subscription_count(channel, count);
        }
    }

    /// Sends the subscription counts held back for longer than the interval (the sweeper
    /// calls this).
    pub(crate) fn flush_subscription_counts(&self, now: u32) {
        for (channel, count) in self.count_events.due(now) {
            self.send_subscription_count(&channel, count);
        }
    }

    fn send_subscription_count(&self, channel: &str, count: usize) {
        if self.config.subscription_count && count > 0 {
            let frame = text_frame(&frame::subscription_count(channel, count));
            self.publish(channel, &frame, None, None);
        }
        self.webhook("subscription_count", || WebhookEvent::SubscriptionCount {
            channel: channel.into(),
            count,
        });
    }

    /// Connections currently open to this app on this node.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// One counted connection of an app; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<App>);

/// The slot's app: a connection holds its app through its slot, one pointer for both.
impl std::ops::Deref for ConnectionSlot {
    type Target = Arc<App>;

    fn deref(&self) -> &Arc<App> {
        &self.0
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        // A limited app's cluster count must free the slot now, not at the next heartbeat.
        if let Some(cluster) = self.0.cluster() {
            if self.0.config.limits.max_connections != 0 {
                let _ = cluster.op(crate::adapter::Op::Connections {
                    app: self.0.clone(),
                });
            }
        }
    }
}

/// Where the server finds apps.
pub trait AppStore: Send + Sync + 'static {
    /// The app with this id (HTTP API paths).
    fn by_id(&self, id: &str) -> Option<Arc<App>>;
    /// The app with this key (WebSocket paths, `auth_key`).
    fn by_key(&self, key: &str) -> Option<Arc<App>>;
    /// Every app (for the cluster's heartbeats and resyncs).
    fn all(&self) -> Vec<Arc<App>>;
}

/// Apps fixed at start-up, from the configuration.
#[derive(Debug, Default)]
pub struct StaticApps {
    by_id: HashMap<String, Arc<App>>,
    by_key: HashMap<String, Arc<App>>,
}

impl StaticApps {
    /// Builds the store; ids and keys were checked unique by config validation.
    pub fn new(apps: impl IntoIterator<Item = AppConfig>, webhooks: &WebhookSettings) -> Self {
        let mut store = StaticApps::default();
        for config in apps {
            let app = Arc::new(App::new(config, webhooks));
            store.by_id.insert(app.config.id.clone(), app.clone());
            store.by_key.insert(app.config.key.clone(), app);
        }
        store
    }
}

impl AppStore for StaticApps {
    fn by_id(&self, id: &str) -> Option<Arc<App>> {
        self.by_id.get(id).cloned()
    }

    fn by_key(&self, key: &str) -> Option<Arc<App>> {
        self.by_key.get(key).cloned()
    }

    fn all(&self) -> Vec<Arc<App>> {
        self.by_id.values().cloned().collect()
    }
}

impl App {
    /// Queues a webhook event if some endpoint wants events named `name`; `event` is only
    /// built then, so apps without webhooks pay nothing.
    pub fn webhook(&self, name: &str, event: impl FnOnce() -> crate::webhooks::WebhookEvent) {
        if let Some(hooks) = &self.webhooks {
            if hooks.wants(name) {
                hooks.emit(event());
            }
        }
    }
}
