//! [`StoredApps`]: the node's apps served from memory and kept in step with a database.
//!
//! One task per node watches the database (PostgreSQL notifications, a MySQL change
//! counter) and, on every change, reads all the rows and applies them as a reloaded file
//! is applied: new apps are served, removed or disabled ones have their sockets closed
//! with 4003, changed ones take their new settings. A row that is not a valid app is
//! skipped and named in the log once. While the database is away the node goes on serving
//! what it last loaded, logs the outage once, and tries again with a growing pause.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::misses::Misses;
use super::{AppRef, AppRows, StoreError, StoredApp};
use crate::app_fields::Plans;
use crate::apps::{App, AppStore, MemoryApps};
use crate::config::AppConfig;
use crate::reload::{ReloadError, Reloaded};

/// Serves a new set of apps, closing the sockets of those removed or disabled.
pub type Apply = Box<dyn Fn(Vec<AppConfig>) -> Result<Reloaded, ReloadError> + Send + Sync>;

/// Every this long the node reads all rows even without a change announced: a safety net
/// for a change the watch could not see (a trigger dropped by hand).
const RESYNC_EVERY: Duration = Duration::from_secs(60);
/// A burst of changes (a script adding many apps) lands in one reload.
const COALESCE: Duration = Duration::from_millis(20);
/// How long a lookup of an app just found in the database waits for the reload that
/// serves it.
const FOUND_WAIT: Duration = Duration::from_secs(2);
/// The pause before trying an unreachable database again grows to this.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// Apps kept in a database and served from memory (see the module docs).
pub struct StoredApps {
    memory: Arc<MemoryApps>,
    rows: Arc<dyn AppRows>,
    plans: ArcSwap<Plans>,
    /// Set by the first load; until then `/ready` answers 503.
    loaded: AtomicBool,
    /// The outage is logged: set when the database goes away, cleared when it is back.
    down: AtomicBool,
    /// Lookups that found an app in the database and wait for it to be served take a
    /// ticket; a reload started after the ticket was taken publishes it here.
    tickets: AtomicU64,
    served: watch::Sender<u64>,
    refresh: Notify,
    misses: Misses,
    /// Rows refused as invalid, with the reason logged, so each is logged once.
    refused: parking_lot::Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for StoredApps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredApps")
            .field("loaded", &self.loaded.load(Ordering::Relaxed))
            .field("down", &self.down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl StoredApps {
    /// Serves `memory`'s apps, kept in step with `rows` once [`StoredApps::run`] runs;
    /// `plans` are the config file's, which rows name.
    pub fn new(rows: Arc<dyn AppRows>, memory: Arc<MemoryApps>, plans: Plans) -> Arc<Self> {
        Arc::new(StoredApps {
            memory,
            rows,
            plans: ArcSwap::from_pointee(plans),
            loaded: AtomicBool::new(false),
            down: AtomicBool::new(false),
            tickets: AtomicU64::new(0),
            served: watch::Sender::new(0),
            refresh: Notify::new(),
            misses: Misses::default(),
            refused: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// The first load, before the node serves (no connection to close yet, so the rows
    /// go straight into memory). Gives up after `within`; the node then starts not ready
    /// and [`StoredApps::run`] keeps trying.
    pub async fn load_first(&self, within: Duration) -> bool {
        let rows = match tokio::time::timeout(within, self.rows.load()).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(error)) => {
                self.went_down(&error);
                return false;
            }
            Err(_) => {
                self.went_down(&StoreError::Unreachable {
                    url: "apps_url".to_owned(),
                    reason: format!("no answer within {} s", within.as_secs()),
                });
                return false;
            }
        };
        let configs = self.configs(rows);
        let count = configs.len();
        match self.memory.apply(configs) {
            Ok(_) => {
                self.loaded.store(true, Ordering::SeqCst);
                tracing::info!(apps = count, "Apps loaded from the database");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "The database's apps were not applied");
                false
            }
        }
    }

    /// Keeps the served apps in step with the database until `stop` is cancelled; `apply`
    /// serves a new set of apps (the server's [`crate::Reloader::apply_apps`]).
    pub async fn run(self: Arc<Self>, apply: Apply, stop: CancellationToken) {
        const FIRST_RETRY: Duration = Duration::from_millis(250);
        let mut retry = FIRST_RETRY;
        loop {
            let began = tokio::time::Instant::now();
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                outcome = self.follow(&apply) => outcome,
            };
            let Err(error) = outcome;
            self.went_down(&error);
            // A watch that held for a while was a new outage, not the same one again.
            if began.elapsed() > 2 * MAX_RETRY {
                retry = FIRST_RETRY;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    /// Watches, loads, then reloads on every change; returns only when the database fails.
    async fn follow(&self, apply: &Apply) -> Result<std::convert::Infallible, StoreError> {
        // Watch first, then load: a change between the two is reported, never missed.
        let mut changes = self.rows.watch().await?;
        self.reload(apply).await?;
        loop {
            tokio::select! {
                changed = changes.next() => changed?,
                () = self.refresh.notified() => {}
                () = tokio::time::sleep(RESYNC_EVERY) => {}
            }
            tokio::time::sleep(COALESCE).await;
            self.reload(apply).await?;
        }
    }

    /// Reads every row and applies them, as a reloaded file is applied.
    async fn reload(&self, apply: &Apply) -> Result<(), StoreError> {
        let covers = self.tickets.load(Ordering::SeqCst);
        let rows = self.rows.load().await?;
        self.came_back();
        let configs = self.configs(rows);
        match apply(configs) {
            Ok(done) => {
                let first = !self.loaded.swap(true, Ordering::SeqCst);
                if first {
                    tracing::info!(
                        apps = self.memory.all().len(),
                        "Apps loaded from the database"
                    );
                } else {
                    log_changes(&done);
                }
            }
            // The node has stopped, or rows that pass one by one clash (the unique
            // indexes make that impossible): logged, the running apps stay.
            Err(error) => tracing::warn!(%error, "The database's apps were not applied"),
        }
        self.served
            .send_modify(|served| *served = (*served).max(covers));
        Ok(())
    }

    /// The rows that are valid apps; each invalid one is skipped and logged once.
    fn configs(&self, rows: Vec<StoredApp>) -> Vec<AppConfig> {
        let plans = self.plans.load();
        let mut refused = self.refused.lock();
        let mut still_refused = HashMap::new();
        let mut configs = Vec::with_capacity(rows.len());
        for row in rows {
            match row.to_config(&format!("app '{}'", row.id), &plans) {
                Ok(config) => configs.push(config),
                Err(error) => {
                    let reason = error.to_string();
                    if refused.get(&row.id) != Some(&reason) {
                        tracing::warn!(app_id = %row.id, %reason, "An app in the database is not valid; it is not served");
                    }
                    still_refused.insert(row.id, reason);
                }
            }
        }
        *refused = still_refused;
        configs
    }

    fn went_down(&self, error: &StoreError) {
        if !self.down.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                %error,
                apps = self.memory.all().len(),
                "App database unavailable: serving the apps last loaded until it is back"
            );
        }
    }

    fn came_back(&self) {
        if self.down.swap(false, Ordering::SeqCst) {
            tracing::info!("App database available again");
        }
    }

    /// Takes the config file's plans (a reload of the file) and reads the rows again.
    pub(crate) fn set_plans(&self, plans: Plans) {
        self.plans.store(Arc::new(plans));
        self.refresh.notify_one();
    }

    async fn find_stored(&self, by: AppRef<'_>) -> Option<Arc<App>> {
        if self.down.load(Ordering::SeqCst) || !self.misses.may_look_up(by) {
            return None;
        }
        let found = tokio::time::timeout(FOUND_WAIT, self.rows.find(by)).await;
        match found {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => {
                self.misses.remember(by);
                return None;
            }
            // The watch task sees the outage too and logs it once.
            Ok(Err(_)) | Err(_) => return None,
        }
        // The row is newer than the memory: have it served, by the one path every change
        // takes, and wait for that.
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut served = self.served.subscribe();
        self.refresh.notify_one();
        let _ = tokio::time::timeout(FOUND_WAIT, served.wait_for(|s| *s >= ticket)).await;
        let app = match by {
            AppRef::Id(id) => self.memory.by_id(id),
            AppRef::Key(key) => self.memory.by_key(key),
        };
        if app.is_none() {
            // Found but not served: an invalid row, logged by the reload.
            self.misses.remember(by);
        }
        app
    }
}

fn log_changes(done: &Reloaded) {
    if done.added.is_empty() && done.removed.is_empty() && done.updated.is_empty() {
        return;
    }
    tracing::info!(
        added = %Reloaded::ids(&done.added),
        removed = %Reloaded::ids(&done.removed),
        updated = %done.updates(),
        closed_connections = done.closed,
        "Apps changed in the database"
    );
}

impl AppStore for StoredApps {
    fn by_id(&self, id: &str) -> Option<Arc<App>> {
        self.memory.by_id(id)
    }

    fn by_key(&self, key: &str) -> Option<Arc<App>> {
        self.memory.by_key(key)
    }

    fn all(&self) -> Vec<Arc<App>> {
        self.memory.all()
    }

    fn find<'a>(&'a self, by: AppRef<'a>) -> BoxFuture<'a, Option<Arc<App>>> {
        self.find_stored(by).boxed()
    }

    fn unavailable(&self) -> Option<&'static str> {
        (!self.loaded.load(Ordering::SeqCst))
            .then_some("the apps have not been loaded from the database yet")
    }

    fn reconfigure(&self, plans: &Plans) -> bool {
        self.set_plans(plans.clone());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::lookup;
    use crate::config::Config;
    use crate::store::MemoryRows;

    fn row(id: &str, key: &str, settings: &str) -> StoredApp {
        StoredApp::from_row(
            id.into(),
            key.into(),
            format!("secret-{id}"),
            true,
            None,
            settings,
        )
    }

    struct Running {
        stored: Arc<StoredApps>,
        memory: Arc<MemoryApps>,
        stop: CancellationToken,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    async fn start(rows: &Arc<MemoryRows>) -> Running {
        let memory = Arc::new(MemoryApps::new(
            Vec::new(),
            &Config::default().webhook_settings(),
        ));
        let stored = StoredApps::new(Arc::new(rows.clone()), memory.clone(), Plans::default());
        stored.load_first(Duration::from_secs(1)).await;
        let target = memory.clone();
        let apply: Apply = Box::new(move |apps| {
            let changes = target.apply(apps)?;
            let ids = |list: &[Arc<App>]| list.iter().map(|a| a.id().to_owned()).collect();
            Ok(Reloaded {
                added: ids(&changes.added),
                removed: ids(&changes.removed),
                ..Reloaded::default()
            })
        });
        let stop = CancellationToken::new();
        tokio::spawn(stored.clone().run(apply, stop.clone()));
        Running {
            stored,
            memory,
            stop,
        }
    }

    async fn eventually(what: &str, within: Duration, check: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !check() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn rows_added_changed_and_removed_are_served_within_a_second() {
        let rows = Arc::new(MemoryRows::default());
        rows.insert(&row("1", "k1", "{}")).await.expect("insert");
        let node = start(&rows).await;
        assert!(node.memory.by_key("k1").is_some(), "loaded before serving");
        assert_eq!(node.stored.unavailable(), None);

        rows.insert(&row("2", "k2", "{}")).await.expect("insert");
        eventually("a new app", Duration::from_secs(1), || {
            node.memory.by_key("k2").is_some()
        })
        .await;
        let mut two = row("2", "k2", r#"{"max_connections":3}"#);
        two.enabled = false;
        rows.update(&two).await.expect("update");
        eventually("a changed app", Duration::from_secs(1), || {
            node.memory
                .by_id("2")
                .is_some_and(|a| !a.config().enabled && a.config().limits.max_connections == 3)
        })
        .await;
        rows.remove("1").await.expect("remove");
        eventually("a removed app", Duration::from_secs(1), || {
            node.memory.by_id("1").is_none()
        })
        .await;
    }

    #[tokio::test]
    async fn an_unknown_key_reaches_the_database_once_and_a_new_row_is_served_on_its_first_lookup()
    {
        let rows = Arc::new(MemoryRows::default());
        let node = start(&rows).await;
        for _ in 0..50 {
            assert!(lookup(&*node.stored, AppRef::Key("nope")).await.is_none());
        }
        assert_eq!(rows.finds(), 1, "the miss is remembered");
        rows.insert(&row("3", "k3", "{}")).await.expect("insert");
        // Before the change is applied: the lookup finds the row and waits for it.
        let found = lookup(&*node.stored, AppRef::Key("k3")).await;
        assert_eq!(found.map(|a| a.id().to_owned()).as_deref(), Some("3"));
    }

    #[tokio::test]
    async fn an_invalid_row_is_skipped_and_the_others_are_served() {
        let rows = Arc::new(MemoryRows::default());
        rows.insert(&row("1", "k1", r#"{"max_events_per_batch":0}"#))
            .await
            .expect("insert");
        rows.insert(&row("2", "k2", r#"{"no_such_setting":1}"#))
            .await
            .expect("insert");
        rows.insert(&row("3", "k3", "{}")).await.expect("insert");
        let node = start(&rows).await;
        assert!(node.memory.by_id("1").is_none() && node.memory.by_id("2").is_none());
        assert!(node.memory.by_id("3").is_some());
        assert_eq!(node.stored.refused.lock().len(), 2);
        rows.update(&row("1", "k1", "{}")).await.expect("fix it");
        eventually("the fixed app", Duration::from_secs(1), || {
            node.memory.by_id("1").is_some()
        })
        .await;
        assert_eq!(node.stored.refused.lock().len(), 1);
    }

    #[tokio::test]
    async fn while_the_database_is_away_the_known_apps_are_served() {
        let rows = Arc::new(MemoryRows::default());
        rows.insert(&row("1", "k1", "{}")).await.expect("insert");
        rows.set_down(true);
        let node = start(&rows).await;
        assert!(
            node.stored.unavailable().is_some(),
            "not ready before the first load"
        );
        rows.set_down(false);
        eventually("the first load", Duration::from_secs(2), || {
            node.stored.unavailable().is_none()
        })
        .await;
        assert!(node.memory.by_key("k1").is_some());

        rows.set_down(true);
        eventually("the outage seen", Duration::from_secs(1), || {
            node.stored.down.load(Ordering::SeqCst)
        })
        .await;
        assert!(node.memory.by_key("k1").is_some(), "still served");
        assert_eq!(node.stored.unavailable(), None, "ready: it has loaded");
        let finds = rows.finds();
        assert!(lookup(&*node.stored, AppRef::Key("other")).await.is_none());
        assert_eq!(rows.finds(), finds, "no lookups while it is away");

        rows.set_down(false);
        rows.insert(&row("2", "k2", "{}")).await.expect("insert");
        eventually("changes after the outage", Duration::from_secs(6), || {
            node.memory.by_key("k2").is_some()
        })
        .await;
        assert!(!node.stored.down.load(Ordering::SeqCst));
    }
}
