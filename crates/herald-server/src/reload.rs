//! Applying a new configuration to a running server (SIGHUP, `herald reload`).
//!
//! Apps are matched by id. An app kept by a reload keeps its live state (channels,
//! members, signed-in users, cache, connections) and takes its new config at once: the
//! next signature check, subscription, client event or trigger reads it. A new app is
//! served at once (in a cluster, it joins before anyone can reach it); a removed or
//! newly disabled app's sockets are closed with 4003. A connection is never closed by a
//! reload for any other reason.
//!
//! Server-wide settings (address, adapter, timeouts, connection and webhook bounds) keep
//! their start-up values until a restart: a reload that changes one names it in a warning
//! and applies the rest. The admin listener's tokens and allowed hosts, and both
//! listeners' certificates, change at once.

use std::sync::{Arc, Weak};

use crate::app_config::AppConfig;
use crate::apps::{AppChanges, AppUpdate, MemoryApps};
use crate::config::ConfigError;
use crate::settings::Config;
use crate::shared::Shared;

/// A running server's handle for applying a new configuration; cheap to clone. Every
/// method is synchronous and never waits for a connection.
#[derive(Clone)]
pub struct Reloader {
    shared: Weak<Shared>,
    apps: Arc<MemoryApps>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("serving", &(self.shared.strong_count() > 0))
            .finish_non_exhaustive()
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new apps do not validate (the field is named). Shown on one line, for the log.
    #[error("{}", .0.one_line())]
    Invalid(#[from] ConfigError),
    /// The server has shut down.
    #[error("the server is not running")]
    Stopped,
}

/// What a reload did, by app id (never a secret).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reloaded {
    /// Apps now served that were not.
    pub added: Vec<String>,
    /// Apps no longer served.
    pub removed: Vec<String>,
    /// Apps kept whose config changed, and what changed.
    pub updated: Vec<(String, AppUpdate)>,
    /// Server-wide settings the new config changes, which keep their running value until a
    /// restart (TOML keys).
    pub restart_needed: Vec<&'static str>,
    /// Connections closed because their app was removed or disabled.
    pub closed: usize,
}

impl Reloaded {
    pub(crate) fn ids(ids: &[String]) -> String {
        if ids.is_empty() {
            "none".to_owned()
        } else {
            ids.join(", ")
        }
    }

    /// `1 (secret, limits); 7 (webhooks)`.
    pub(crate) fn updates(&self) -> String {
        if self.updated.is_empty() {
            return "none".to_owned();
        }
        let shown: Vec<String> = self
            .updated
            .iter()
            .map(|(id, change)| format!("{id} ({})", change.names().join(", ")))
            .collect();
        shown.join("; ")
    }
}

impl Reloader {
    pub(crate) fn new(shared: &Arc<Shared>, apps: Arc<MemoryApps>) -> Self {
        Reloader {
            shared: Arc::downgrade(shared),
            apps,
        }
    }

    /// The apps the node serves, for tests that look at them after a reload.
    #[cfg(test)]
    pub(crate) fn memory(&self) -> &Arc<MemoryApps> {
        &self.apps
    }

    /// Applies `config` (validated, e.g. by [`Config::load`]): its apps replace the running
    /// ones, and each server-wide setting it changes is named in a warning and left as it
    /// is. Logs one line saying what changed.
    pub fn apply(&self, config: Config) -> Result<Reloaded, ReloadError> {
        let shared = self.shared.upgrade().ok_or(ReloadError::Stopped)?;
        let restart_needed = shared.config.restart_fields(&config);
        // The store decides what the file's apps are to it (the apps, or nothing).
        let mut reloaded = Ok(Reloaded::default());
        shared
            .apps
            .reload_file(&config.plans, config.apps, &mut |apps| {
                reloaded = self.apply_apps_to(&shared, apps);
            });
        let mut reloaded = reloaded?;
        for field in &restart_needed {
            tracing::warn!(
                field,
                "Reload: `{field}` changes only on restart; it keeps its running value"
            );
        }
        // One SIGHUP rereads the certificate too. The files were loaded and checked with the
        // rest of the configuration; one that changed since and fails now leaves the
        // running certificate serving (logged by `Tls::reload`).
        if let (Some(tls), Some(files)) = (&shared.tls, &config.tls) {
            let _ = tls.reload(files);
        }
        // And the backend's own certificates (the files it was started with).
        shared.adapter.backend.reload_files();
        // The admin tokens: the old ones are refused from the next request on.
        shared.admin.reload(&config.admin);
        reloaded.restart_needed = restart_needed;
        tracing::info!(
            added = %Reloaded::ids(&reloaded.added),
            removed = %Reloaded::ids(&reloaded.removed),
            updated = %reloaded.updates(),
            closed_connections = reloaded.closed,
            "Configuration reloaded"
        );
        Ok(reloaded)
    }

    /// Serves exactly `apps` from now on, as [`Reloader::apply`] does with a whole config:
    /// the operation for a store that loads apps from elsewhere and refreshes them. Logs
    /// nothing; an invalid set changes nothing.
    pub fn apply_apps(&self, apps: Vec<AppConfig>) -> Result<Reloaded, ReloadError> {
        let shared = self.shared.upgrade().ok_or(ReloadError::Stopped)?;
        self.apply_apps_to(&shared, apps)
    }

    fn apply_apps_to(
        &self,
        shared: &Shared,
        apps: Vec<AppConfig>,
    ) -> Result<Reloaded, ReloadError> {
        let AppChanges {
            added,
            removed,
            updated,
        } = self.apps.apply(apps)?;
        let mut closed = 0;
        for app in &removed {
            closed += shared.close_app_connections(app);
        }
        for (app, change) in &updated {
            if change.enabled {
                closed += shared.close_app_connections(app);
            }
        }
        Ok(Reloaded {
            added: added.iter().map(|a| a.id().to_owned()).collect(),
            removed: removed.iter().map(|a| a.id().to_owned()).collect(),
            updated: updated
                .iter()
                .map(|(a, change)| (a.id().to_owned(), *change))
                .collect(),
            restart_needed: Vec::new(),
            closed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::from_toml(toml, &|_| None).expect("valid")
    }

    #[tokio::test]
    async fn a_running_server_takes_new_apps_and_reports_what_needs_a_restart() {
        let start = config("[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\n");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let apps = Arc::new(MemoryApps::new(
            start.apps.clone(),
            &crate::adapter::webhook_settings(&start),
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, reloader) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(crate::serve_with_store(
            listener,
            start,
            apps.clone(),
            async {
                let _ = stopped.await;
            },
            move |reloader| {
                let _ = ready.send(reloader);
            },
        ));
        let reloader: Reloader = reloader.await.expect("ready").reloader;
        let reloaded = reloader
            .apply(config(
                "port = 7001\n[[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\n\
                 [[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1b\"\n",
            ))
            .expect("applied");
        assert_eq!(reloaded.added, ["2"]);
        assert!(reloaded.removed.is_empty());
        assert_eq!(reloaded.updated.len(), 1);
        assert_eq!(reloaded.updated[0].0, "1");
        assert_eq!(reloaded.restart_needed, ["port"]);
        use crate::apps::AppStore;
        assert!(apps.by_key("k2").is_some());

        let mut bad = config("").apps;
        bad[0].secret.clear();
        let error = reloader.apply_apps(bad).expect_err("an empty secret");
        assert!(error.to_string().contains("apps[0].secret"), "{error}");
        assert!(apps.by_key("k2").is_some(), "nothing changed");
        let _ = stop.send(());
        server.await.expect("task").expect("served");
        assert!(matches!(
            reloader.apply(config("")),
            Err(ReloadError::Stopped)
        ));
    }

    #[tokio::test]
    async fn a_reload_keeps_the_apps_of_a_database_and_takes_the_files_plans() {
        use crate::apps::AppStore;
        use crate::store::{AppRows, MemoryRows, StoredApp};
        let rows = Arc::new(MemoryRows::default());
        let mut app = StoredApp::from_row("1".into(), "k1".into(), "s1".into(), true, None, "{}");
        app.plan = Some("pro".into());
        rows.insert(&app).await.expect("insert");
        let start = config("[plans.pro]\nmax_connections = 5\n");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, started) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(crate::serve_with_rows(
            listener,
            start,
            Arc::new(rows.clone()),
            async {
                let _ = stopped.await;
            },
            move |started| {
                let _ = ready.send(started);
            },
        ));
        let reloader: Reloader = started.await.expect("ready").reloader;
        let memory = reloader.apps.clone();
        let limit = || memory.by_id("1").map(|a| a.config().limits.max_connections);
        assert_eq!(limit(), Some(5), "the plan of the file");
        // The reloaded file has no [[apps]]: the database's app stays, with the new plan.
        let reloaded = reloader
            .apply(config("[plans.pro]\nmax_connections = 7\n"))
            .expect("applied");
        assert!(reloaded.removed.is_empty());
        for _ in 0..100 {
            if limit() == Some(7) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(limit(), Some(7), "the reloaded plan");
        let _ = stop.send(());
        server.await.expect("task").expect("served");
    }
}
