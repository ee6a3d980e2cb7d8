//! Where the server finds apps, and the in-memory store a reload changes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;

use crate::app_config::fields::validate_apps;
use crate::app_config::fields::Plans;
use crate::app_config::AppConfig;
use crate::config::ConfigError;
use crate::console::Console;
use crate::webhooks::WebhookSettings;

use super::app::App;
use super::update::AppUpdate;

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
    /// Takes a reloaded config file: its plans, and its `[[apps]]`, which `serve` makes
    /// the apps the node serves. Here the file is the store, so its apps are served; a
    /// store that keeps its apps elsewhere (a database) takes the plans and leaves `serve`
    /// alone.
    fn reload_file(
        &self,
        plans: &Plans,
        apps: Vec<AppConfig>,
        serve: &mut dyn FnMut(Vec<AppConfig>),
    ) {
        let _ = plans;
        serve(apps);
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
