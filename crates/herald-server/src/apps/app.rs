//! An app: its configuration and its live state.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use herald_protocol::close::CloseReason;
use herald_protocol::frame;

use crate::outbox::Outbox;
use crate::webhooks::{WebhookEvent, WebhookKind};
use crate::wire::text_frame;

use crate::app_config::AppConfig;
use crate::cache::EventCache;
use crate::console::{AppConsole, Console};
use crate::count_events::CountEvents;
use crate::history::rings::Rings;
use crate::hub::Hub;
use crate::metrics::AppMetrics;
use crate::ratelimit::AppRates;
use crate::users::UserRegistry;
use crate::webhooks::WebhookSettings;
use crate::webhooks::Webhooks;

use super::update::AppUpdate;

/// An app: its configuration and its live channels.
///
/// The configuration is swapped whole by a reload ([`App::config`] reads the current one);
/// everything else is live state that a reload leaves in place, so the app's connections
/// never notice a reload that keeps the app.
#[derive(Debug)]
pub struct App {
    /// Fixed for the app's life: a reload matches apps by id.
    id: Box<str>,
    /// Tells this app from an earlier one of the same id (removed, then added again), and
    /// tags its connections' outboxes so a reload can close them.
    serial: u32,
    config: ArcSwap<AppConfig>,
    /// The app's webhook queue, when it has endpoints; replaced when they change.
    webhooks: ArcSwapOption<Webhooks>,
    /// A reload removed the app: connections that reach it now are closed with 4003.
    pub(super) removed: AtomicBool,
    /// The app's channels and their subscribers on this node.
    pub hub: Hub,
    /// Connections signed in as a user, by user id.
    pub users: UserRegistry,
    /// The last event of each cache channel.
    pub cache: EventCache,
    /// Each channel's last events, on a single node (see [`crate::history`]).
    pub history: Rings,
    /// Counters for the app's rate and quota limits.
    pub rates: AppRates,
    /// Channels whose subscription-count event is being coalesced.
    count_events: CountEvents,
    /// What this node counts of the app, for the admin listener's `/metrics`.
    pub(crate) metrics: Arc<AppMetrics>,
    connections: AtomicUsize,
}

/// Serials start at 1: an outbox tagged 0 belongs to no app.
static NEXT_SERIAL: AtomicU32 = AtomicU32::new(1);

impl App {
    /// A new app with no connections. Starts its webhook dispatcher, so it must be called
    /// inside a tokio runtime when the app has webhook endpoints.
    pub fn new(config: AppConfig, webhooks: &WebhookSettings) -> Self {
        Self::with_console(config, webhooks, &Arc::default())
    }

    /// [`App::new`], showing what happens to it on the node's live console.
    pub(crate) fn with_console(
        config: AppConfig,
        webhooks: &WebhookSettings,
        console: &Arc<Console>,
    ) -> Self {
        let metrics = Arc::new(AppMetrics::with_console(AppConsole::new(
            console, &config.id,
        )));
        App {
            id: config.id.as_str().into(),
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            webhooks: ArcSwapOption::new(Webhooks::start(&config, webhooks, None, &metrics)),
            config: ArcSwap::from_pointee(config),
            removed: AtomicBool::new(false),
            hub: Hub::new(),
            users: UserRegistry::default(),
            cache: EventCache::default(),
            history: Rings::default(),
            rates: AppRates::default(),
            count_events: CountEvents::default(),
            metrics,
            connections: AtomicUsize::new(0),
        }
    }

    /// Counts a new connection unless the app is at `max_connections` with the
    /// `elsewhere` connections other nodes have (as far as this node knows); the returned
    /// guard gives the slot back when dropped, so no exit path can leak it.
    pub fn try_connect(self: &Arc<Self>, elsewhere: usize) -> Option<ConnectionSlot> {
        let max = self.config().limits.max_connections;
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

    /// The app's id, which a reload never changes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The app's current configuration: credentials, limits, webhooks. A cheap load, meant
    /// to be read and dropped; what must outlive an `await` is copied out first.
    pub fn config(&self) -> Guard<Arc<AppConfig>> {
        self.config.load()
    }

    /// The app's current webhook queue, if it has endpoints.
    pub fn webhooks(&self) -> Option<Arc<Webhooks>> {
        self.webhooks.load_full()
    }

    pub(crate) fn serial(&self) -> u32 {
        self.serial
    }

    /// Why a connection of this app must close now: the app was removed or disabled by a
    /// reload. `None` while it is served.
    pub(crate) fn closed(&self) -> Option<(u16, &'static str)> {
        if self.removed.load(Ordering::SeqCst) {
            Some((CloseReason::AppDisabled.code(), "Application removed"))
        } else if !self.config().enabled {
            let r = CloseReason::AppDisabled;
            Some((r.code(), r.message()))
        } else {
            None
        }
    }

    /// Takes a new configuration for the same id and reports what changed. The webhook
    /// dispatcher is replaced when its endpoints or the credentials it signs with changed;
    /// the old one delivers what it already holds, then stops.
    pub(super) fn update(&self, config: AppConfig, webhooks: &WebhookSettings) -> AppUpdate {
        let old = self.config.load_full();
        let change = AppUpdate::between(&old, &config);
        if change.is_empty() {
            return change;
        }
        if change.webhooks || change.key || change.secret {
            let previous = self.webhooks.load_full();
            self.webhooks.store(Webhooks::start(
                &config,
                webhooks,
                previous.as_deref(),
                &self.metrics,
            ));
        }
        if !config.history.on() {
            // Nothing reads or evicts the rings of an app that turned history off.
            self.history.clear();
        }
        self.config.store(Arc::new(config));
        change
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
                self.webhook(WebhookKind::CacheMiss, || WebhookEvent::CacheMiss {
                    channel: channel.into(),
                });
            }
        }
    }

    /// Records a change of a channel's subscription count to `count` (the cluster's, in a
    /// cluster); returns the count to announce now, if the app wants it told to the
    /// subscribers or the webhooks. Coalesced, so that a client toggling a subscription
    /// cannot make every subscriber get a frame per toggle: what is held back comes out of
    /// [`App::due_subscription_counts`].
    pub(crate) fn subscription_count_changed(&self, channel: &str, count: usize) -> Option<usize> {
        let to_webhooks = self
            .webhooks
            .load()
            .as_ref()
            .is_some_and(|w| w.wants(WebhookKind::SubscriptionCount));
        if !self.config().subscription_count && !to_webhooks {
            return None;
        }
        self.count_events
            .changed(channel, count, crate::clock::now())
    }

    /// The subscription counts held back for longer than the interval, to announce now
    /// (the sweeper asks at tick `now`).
    pub(crate) fn due_subscription_counts(&self, now: u32) -> Vec<(Box<str>, usize)> {
        self.count_events.due(now)
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
    }
}

impl App {
    /// Queues a webhook event if some endpoint wants events of its `kind`; `event` is only
    /// built then, so apps without webhooks pay nothing.
    pub fn webhook(&self, kind: WebhookKind, event: impl FnOnce() -> WebhookEvent) {
        if let Some(hooks) = self.webhooks.load().as_ref() {
            if hooks.wants(kind) {
                hooks.emit(event());
            }
        }
    }
}
