//! The app store: the seam through which the server finds an app by id (HTTP API) or key
//! (WebSocket), and each app's live state.
//!
//! Lookups are synchronous and answer from memory so the hot path never awaits. The
//! in-memory store, [`MemoryApps`], is also what a reload changes: [`MemoryApps::apply`]
//! takes a new set of app configs and swaps in new lookup maps at once, keeping each app
//! whose id is still there (its hub, users, cache and connections untouched) and giving it
//! the new config. A store that loads apps from elsewhere (a database) refreshes into a
//! `MemoryApps` the same way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use futures_util::future::BoxFuture;
use herald_protocol::close::CloseReason;
use herald_protocol::frame;

use crate::outbox::Outbox;
use crate::webhooks::{WebhookEvent, WebhookKind};
use crate::wire::text_frame;

use crate::cache::EventCache;
use crate::config::{validate_apps, AppConfig, ConfigError, Plans, WebhookSettings};
use crate::console::{AppConsole, Console};
use crate::count_events::CountEvents;
use crate::history::memory::Rings;
use crate::hub::Hub;
use crate::metrics::AppMetrics;
use crate::ratelimit::AppRates;
use crate::users::UserRegistry;
use crate::webhooks::Webhooks;

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
    removed: AtomicBool,
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
    fn update(&self, config: AppConfig, webhooks: &WebhookSettings) -> AppUpdate {
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

/// What a reload changed in an app that it kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppUpdate {
    /// The key: new connections and API calls use the new one; open sockets stay.
    pub key: bool,
    /// The secret: signatures made with the old one are refused from now on.
    pub secret: bool,
    /// Enabled or disabled (a disabled app's sockets are closed with 4003).
    pub enabled: bool,
    /// Any of the limits (`AppLimits`, the plan's included).
    pub limits: bool,
    /// The webhook endpoints or their filters.
    pub webhooks: bool,
    /// Anything else: `terminate_close_code`, `user_authentication_timeout`, `cache_ttl`,
    /// `subscription_count`, the history bounds.
    pub other: bool,
}

impl AppUpdate {
    fn between(old: &AppConfig, new: &AppConfig) -> AppUpdate {
        AppUpdate {
            key: old.key != new.key,
            secret: old.secret != new.secret,
            enabled: old.enabled != new.enabled,
            limits: old.limits != new.limits,
            webhooks: old.webhooks != new.webhooks,
            other: old.terminate_close_code != new.terminate_close_code
                || old.user_authentication_timeout != new.user_authentication_timeout
                || old.cache_ttl != new.cache_ttl
                || old.subscription_count != new.subscription_count
                || old.history != new.history,
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.names().is_empty()
    }

    /// The names of what changed, for logs (never a value).
    pub fn names(&self) -> Vec<&'static str> {
        [
            ("key", self.key),
            ("secret", self.secret),
            ("enabled", self.enabled),
            ("limits", self.limits),
            ("webhooks", self.webhooks),
            ("other settings", self.other),
        ]
        .into_iter()
        .collect::<crate::config::Changed>()
        .0
    }
}

/// What [`MemoryApps::apply`] changed.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct AppChanges {
    /// Apps whose id is new.
    pub added: Vec<Arc<App>>,
    /// Apps whose id is gone; they are marked removed, their connections still open.
    pub removed: Vec<Arc<App>>,
    /// Apps kept whose config changed, and what changed.
    pub updated: Vec<(Arc<App>, AppUpdate)>,
}

impl AppChanges {
    /// Whether the new set of apps is the old one.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.updated.is_empty()
    }
}

/// Which app a lookup asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppRef<'a> {
    /// By id (HTTP API paths).
    Id(&'a str),
    /// By key (WebSocket paths).
    Key(&'a str),
}

/// Where the server finds apps. The lookups answer from memory; [`AppStore::find`] is
/// the one way to the store behind it, for an app the memory does not hold.
pub trait AppStore: Send + Sync + 'static {
    /// The app with this id (HTTP API paths).
    fn by_id(&self, id: &str) -> Option<Arc<App>>;
    /// The app with this key (WebSocket paths, `auth_key`).
    fn by_key(&self, key: &str) -> Option<Arc<App>>;
    /// Every app (for the cluster's heartbeats and resyncs).
    fn all(&self) -> Vec<Arc<App>>;
    /// Looks up an app the memory does not hold in the store behind it (a database), and
    /// serves it if it is there. The file's apps have nothing behind them.
    fn find<'a>(&'a self, by: AppRef<'a>) -> BoxFuture<'a, Option<Arc<App>>> {
        let _ = by;
        Box::pin(std::future::ready(None))
    }
    /// Why the store cannot serve yet (a database never loaded), in one line.
    fn unavailable(&self) -> Option<&'static str> {
        None
    }
    /// Takes a reloaded config file's plans. Returns whether the store keeps the apps
    /// itself (a database), so that the file's `[[apps]]` are not applied.
    fn reconfigure(&self, plans: &Plans) -> bool {
        let _ = plans;
        false
    }
    /// What the store counts of itself for `/metrics` (a database: its rows that are not
    /// valid apps, how long it has been away); the file's apps have nothing to count.
    fn metric_families(&self) -> Vec<prometheus::proto::MetricFamily> {
        Vec::new()
    }
}

/// The app `by` names: from memory, else from the store behind it.
pub async fn lookup(store: &dyn AppStore, by: AppRef<'_>) -> Option<Arc<App>> {
    let known = match by {
        AppRef::Id(id) => store.by_id(id),
        AppRef::Key(key) => store.by_key(key),
    };
    match known {
        Some(app) => Some(app),
        None => store.find(by).await,
    }
}

/// The apps served, held in memory: lookups read one atomically swapped snapshot of the
/// maps, so a reload never makes a lookup wait and a lookup never sees half a reload.
#[derive(Debug)]
pub struct MemoryApps {
    maps: ArcSwap<AppMaps>,
    /// What every app's webhook dispatcher runs with (server-wide, fixed until restart).
    webhooks: WebhookSettings,
    /// One apply at a time: each starts from the maps the previous one left.
    writer: parking_lot::Mutex<()>,
    /// The node's live console, which every app shows its events on.
    console: Arc<Console>,
}

#[derive(Debug, Default)]
struct AppMaps {
    by_id: HashMap<String, Arc<App>>,
    by_key: HashMap<String, Arc<App>>,
}

impl AppMaps {
    fn insert(&mut self, app: Arc<App>) {
        self.by_key.insert(app.config().key.clone(), app.clone());
        self.by_id.insert(app.id().to_owned(), app);
    }
}

impl MemoryApps {
    /// Builds the store; ids and keys were checked unique by config validation. Starts the
    /// apps' webhook dispatchers, so it must be called inside a tokio runtime when an app
    /// has webhook endpoints.
    pub fn new(apps: impl IntoIterator<Item = AppConfig>, webhooks: &WebhookSettings) -> Self {
        let console = Arc::new(Console::default());
        let mut maps = AppMaps::default();
        for config in apps {
            maps.insert(Arc::new(App::with_console(config, webhooks, &console)));
        }
        MemoryApps {
            maps: ArcSwap::from_pointee(maps),
            webhooks: webhooks.clone(),
            writer: parking_lot::Mutex::new(()),
            console,
        }
    }

    /// Serves exactly `apps` from now on, matching them to the current apps by id: a new id
    /// is a new app, a kept
    /// id keeps its `App` and takes the new config, and a missing id is removed from the
    /// maps and marked removed. The apps are validated first; an invalid set changes
    /// nothing. Closing a removed or disabled app's connections is the caller's part (the
    /// server's [`crate::Reloader`] does it).
    pub fn apply(&self, apps: Vec<AppConfig>) -> Result<AppChanges, ConfigError> {
        validate_apps(&apps)?;
        let _writer = self.writer.lock();
        let old = self.maps.load_full();
        let mut maps = AppMaps::default();
        let mut changes = AppChanges::default();
        for config in apps {
            let app = match old.by_id.get(&config.id) {
                Some(app) => {
                    let change = app.update(config, &self.webhooks);
                    if !change.is_empty() {
                        changes.updated.push((app.clone(), change));
                    }
                    app.clone()
                }
                None => {
                    let app = Arc::new(App::with_console(config, &self.webhooks, &self.console));
                    changes.added.push(app.clone());
                    app
                }
            };
            maps.insert(app);
        }
        changes.removed = old
            .by_id
            .iter()
            .filter(|(id, _)| !maps.by_id.contains_key(*id))
            .map(|(_, app)| app.clone())
            .collect();
        self.maps.store(Arc::new(maps));
        for app in &changes.removed {
            app.removed.store(true, Ordering::SeqCst);
        }
        Ok(changes)
    }

    /// The node's live console.
    pub(crate) fn console(&self) -> &Arc<Console> {
        &self.console
    }
}

impl AppStore for MemoryApps {
    fn by_id(&self, id: &str) -> Option<Arc<App>> {
        self.maps.load().by_id.get(id).cloned()
    }

    fn by_key(&self, key: &str) -> Option<Arc<App>> {
        self.maps.load().by_key.get(key).cloned()
    }

    fn all(&self) -> Vec<Arc<App>> {
        self.maps.load().by_id.values().cloned().collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn apps(toml: &str) -> Vec<AppConfig> {
        Config::from_toml(toml, &|_| None).expect("valid").apps
    }

    fn settings() -> WebhookSettings {
        Config::default().webhook_settings()
    }

    const ONE_TWO: &str = "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\n\
                           [[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\n";

    #[test]
    fn a_kept_app_keeps_its_state_and_takes_its_new_config() {
        let store = MemoryApps::new(apps(ONE_TWO), &settings());
        let one = store.by_id("1").expect("app 1");
        let outbox = Arc::new(Outbox::new(1 << 16));
        one.hub.subscribe("news", 7, &outbox);
        let changes = store
            .apply(apps(
                "[[apps]]\nid = \"1\"\nkey = \"k1-new\"\nsecret = \"s1-new\"\nmax_connections = 3\n\
                 [[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\n",
            ))
            .expect("valid");
        assert!(changes.added.is_empty() && changes.removed.is_empty());
        let [(updated, change)] = changes.updated.as_slice() else {
            panic!("one app updated: {changes:?}");
        };
        assert!(Arc::ptr_eq(updated, &one));
        assert_eq!(change.names(), ["key", "secret", "limits"]);
        let now = store.by_key("k1-new").expect("found by its new key");
        assert!(Arc::ptr_eq(&now, &one), "the same App, not a copy");
        assert!(store.by_key("k1").is_none(), "the old key is gone");
        assert_eq!(one.config().secret, "s1-new");
        assert_eq!(one.config().limits.max_connections, 3);
        assert_eq!(one.hub.counts("news").subscription_count, 1, "state kept");
        assert_eq!(one.closed(), None);
        assert!(Arc::ptr_eq(
            &store.by_id("2").expect("app 2"),
            &changes_free_app(&store, "2")
        ));
    }

    fn changes_free_app(store: &MemoryApps, id: &str) -> Arc<App> {
        store
            .all()
            .into_iter()
            .find(|a| a.id() == id)
            .expect("listed")
    }

    #[test]
    fn apps_are_added_and_removed_and_a_removed_app_says_why_it_closes() {
        let store = MemoryApps::new(apps(ONE_TWO), &settings());
        let two = store.by_id("2").expect("app 2");
        let changes = store
            .apply(apps(
                "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\n\
                 [[apps]]\nid = \"3\"\nkey = \"k3\"\nsecret = \"s3\"\n",
            ))
            .expect("valid");
        let ids = |list: &[Arc<App>]| list.iter().map(|a| a.id().to_owned()).collect::<Vec<_>>();
        assert_eq!(ids(&changes.added), ["3"]);
        assert_eq!(ids(&changes.removed), ["2"]);
        assert!(changes.updated.is_empty(), "app 1 is unchanged");
        assert!(store.by_id("2").is_none() && store.by_key("k2").is_none());
        assert_eq!(
            two.closed(),
            Some((CloseReason::AppDisabled.code(), "Application removed"))
        );
        let three = store.by_key("k3").expect("app 3 by key");
        assert_ne!(three.serial(), two.serial());
        assert_eq!(store.all().len(), 2);

        // The same id added back is a new app: the removed one's connections stay closed.
        store.apply(apps(ONE_TWO)).expect("valid");
        let two_again = store.by_id("2").expect("app 2 again");
        assert!(!Arc::ptr_eq(&two_again, &two));
        assert_eq!(two_again.closed(), None);
        assert!(two.closed().is_some());
    }

    #[tokio::test]
    async fn a_removed_app_goes_with_its_last_connection_and_takes_its_webhooks() {
        let hooked = "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\n\
                      [[apps.webhooks]]\nurl = \"http://127.0.0.1:9/a\"\n";
        let store = MemoryApps::new(apps(hooked), &settings());
        let slot = store
            .by_key("k1")
            .expect("app 1")
            .try_connect(0)
            .expect("a slot");
        let app = Arc::downgrade(&slot);
        let hooks = Arc::downgrade(&slot.webhooks().expect("a queue"));
        let changes = store
            .apply(apps(
                "[[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\n",
            ))
            .expect("valid");
        assert_eq!(changes.removed.len(), 1);
        drop(changes);
        assert!(app.upgrade().is_some(), "its connection still holds it");
        drop(slot);
        assert!(app.upgrade().is_none(), "gone with its last connection");
        assert!(
            hooks.upgrade().is_none(),
            "and its webhook queue, so the dispatcher ends"
        );
    }

    #[test]
    fn disabling_an_app_keeps_it_and_closes_its_connections() {
        let store = MemoryApps::new(apps(ONE_TWO), &settings());
        let changes = store
            .apply(apps(
                "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\nenabled = false\n\
                 [[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\n",
            ))
            .expect("valid");
        assert_eq!(changes.updated.len(), 1);
        assert!(changes.updated[0].1.enabled);
        let one = store.by_id("1").expect("still served (HTTP answers 403)");
        assert_eq!(one.closed(), Some((4003, "Application disabled")));
    }

    #[test]
    fn an_invalid_set_changes_nothing_and_names_the_field() {
        let store = MemoryApps::new(apps(ONE_TWO), &settings());
        let mut bad = apps(ONE_TWO);
        bad[1].key = "k1".to_owned();
        bad[0].secret = "changed".to_owned();
        let error = store.apply(bad).expect_err("duplicate key").to_string();
        assert!(error.contains("apps[1].key"), "{error}");
        let one = store.by_id("1").expect("app 1");
        assert_eq!(one.config().secret, "s1", "nothing applied");
        assert!(store.by_key("k2").is_some());
    }

    #[tokio::test]
    async fn changed_endpoints_or_credentials_replace_the_webhook_queue_and_nothing_else_does() {
        let hooked = "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\n\
                      [[apps.webhooks]]\nurl = \"http://127.0.0.1:9/a\"\n";
        let store = MemoryApps::new(apps(hooked), &settings());
        let one = store.by_id("1").expect("app 1");
        let first = one.webhooks().expect("a queue");
        store
            .apply(apps(&hooked.replace("s1\"", "s1\"\nmax_connections = 5")))
            .expect("valid");
        assert!(Arc::ptr_eq(&one.webhooks().expect("queue"), &first));
        store
            .apply(apps(&hooked.replace("/a", "/b")))
            .expect("valid");
        let second = one.webhooks().expect("a new queue");
        assert!(!Arc::ptr_eq(&second, &first));
        assert!(second.shares_bounds_with(&first), "one bound per app");
        store
            .apply(apps(&hooked.replace("/a", "/b").replace("s1", "s2")))
            .expect("valid");
        assert!(!Arc::ptr_eq(&one.webhooks().expect("queue"), &second));
        store
            .apply(apps(
                "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s2\"\n",
            ))
            .expect("valid");
        assert!(one.webhooks().is_none(), "no endpoints, no queue");
    }
}
