//! [`StoredApps`]: the node's apps served from memory and kept in step with a database.
//!
//! One task per node watches the database (PostgreSQL notifications, a MySQL change
//! counter) and, on every change, reads all the rows and applies them as a reloaded file
//! is applied: new apps are served, removed or disabled ones have their sockets closed
//! with 4003, changed ones take their new settings. A row that is not a valid app never
//! takes its app offline: the node keeps serving the app's last valid version
//! ([`super::resolve`]). While the database is away the node goes on serving what it last
//! loaded, logs the outage once, counts how long it has lasted, and tries again with a
//! growing pause.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::misses::Misses;
use super::resolve::{resolve, InvalidRows};
use super::{AppRef, AppRows, StoreError, StoredApp};
use crate::app_config::fields::Plans;
use crate::app_config::AppConfig;
use crate::apps::{App, AppStore, MemoryApps};
use crate::metrics::StoreReading;
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
    /// The last moment the served apps were known to be the database's: a load, or a
    /// watch that held until then. While the database is away, the apps served may be
    /// this far behind it.
    in_step: parking_lot::Mutex<Instant>,
    /// Lookups that found an app in the database and wait for it to be served take a
    /// ticket; a reload started after the ticket was taken publishes it here.
    tickets: AtomicU64,
    served: watch::Sender<u64>,
    refresh: Notify,
    misses: Misses,
    /// The rows that are not valid apps now, each bad state logged once.
    invalid: InvalidRows,
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
            in_step: parking_lot::Mutex::new(Instant::now()),
            tickets: AtomicU64::new(0),
            served: watch::Sender::new(0),
            refresh: Notify::new(),
            misses: Misses::default(),
            invalid: InvalidRows::default(),
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
        self.in_step_now();
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
            let took = began.elapsed();
            // A watch that held for a while was a new outage, not the same one again.
            if took > 2 * MAX_RETRY {
                retry = FIRST_RETRY;
            }
            // A try that waited for the database has paused already (the connection wait
            // retries a refused connection, at most 0.6 s apart, for 3 s): the next one
            // starts at once, so a database that comes back is seen within a second. A
            // try refused at once (a bad password) waits the growing pause.
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(retry.saturating_sub(took)) => {}
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
                changed = changes.next() => if let Err(error) = changed {
                    // Nothing was missed while the watch held.
                    self.in_step_now();
                    return Err(error);
                },
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
        self.in_step_now();
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

    /// The apps to serve for `rows`: each valid row, and for each invalid one the last
    /// valid version served (see [`super::resolve`]); the invalid rows are recorded.
    fn configs(&self, rows: Vec<StoredApp>) -> Vec<AppConfig> {
        let resolved = resolve(rows, &self.plans.load(), |id| {
            self.memory
                .by_id(id)
                .map(|app| AppConfig::clone(&app.config()))
        });
        self.invalid.record(&resolved);
        resolved.configs
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

    /// What `/metrics` shows of the store now.
    fn reading(&self) -> StoreReading {
        let (invalid_kept, invalid_not_served) = self.invalid.counts();
        StoreReading {
            invalid_kept,
            invalid_not_served,
            invalid_seen: self.invalid.seen(),
            up: !self.down.load(Ordering::SeqCst),
            stale: if self.down.load(Ordering::SeqCst) {
                self.in_step.lock().elapsed()
            } else {
                Duration::ZERO
            },
        }
    }

    fn in_step_now(&self) {
        *self.in_step.lock() = Instant::now();
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

    fn reload_file(
        &self,
        plans: &Plans,
        _apps: Vec<AppConfig>,
        _serve: &mut dyn FnMut(Vec<AppConfig>),
    ) {
        // The rows are the apps: the file gives them its plans only (an app whose plan is
        // gone keeps its last valid limits: `store::resolve`).
        self.set_plans(plans.clone());
    }

    fn metric_families(&self) -> Vec<prometheus::proto::MetricFamily> {
        crate::metrics::store_families(&self.reading())
    }
}

#[cfg(test)]
#[path = "synced/tests.rs"]
mod tests;
