//! App stores: the apps of a node kept in a database (`apps_url`) instead of the config
//! file, so an app can be added, changed or removed while every node runs.
//!
//! [`AppRows`] is the narrow seam to a database: read every app, find one, write one, and
//! say when something changed. [`StoredApps`] serves lookups from memory (the node's
//! [`crate::MemoryApps`]) and keeps that memory in step with the rows, through the same
//! path a reloaded file takes ([`crate::Reloader::apply_apps`]); no request ever waits for
//! the database, except a lookup of an app the memory does not hold, which is bounded and
//! remembered ([`misses`]). A row that is not a valid app never takes its app offline
//! ([`resolve`]).

pub(crate) mod connect_url;
mod memory;
mod misses;
#[cfg(feature = "databases")]
mod mysql;
#[cfg(feature = "databases")]
mod postgres;
mod resolve;
pub mod settings;
#[cfg(feature = "databases")]
mod sql;
mod synced;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};

pub use self::connect_url::AppsDb;
pub use self::settings::AppsUrl;
use crate::app_config::fields::app_from_fields;
use crate::app_config::fields::Plans;
use crate::app_config::AppConfig;
pub use crate::apps::AppRef;
use crate::config::ConfigError;
use crate::redact::{redact_json, redact_text, REDACTED};

pub use memory::MemoryRows;
pub use synced::{Apply, StoredApps};

/// An app as a store holds it: the credentials and the flag every store has a column for,
/// and every other setting under its config-file key.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredApp {
    /// The id in HTTP API paths.
    pub id: String,
    /// The public key clients connect with.
    pub key: String,
    /// The secret, as given: the protocol signs with it, so it cannot be hashed.
    pub secret: String,
    /// A disabled app refuses connections (4003) and API calls (403).
    pub enabled: bool,
    /// A plan of the config file's `[plans]`, or none.
    pub plan: Option<String>,
    /// Limits, flags and webhooks, by their config-file keys (`max_connections`,
    /// `client_events`, `webhooks`, …).
    pub settings: Map<String, Value>,
}

impl std::fmt::Debug for StoredApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredApp")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("secret", &REDACTED)
            .field("enabled", &self.enabled)
            .field("plan", &self.plan)
            .field(
                "settings",
                &redact_json(&Value::Object(self.settings.clone())),
            )
            .finish()
    }
}

/// The keys a [`StoredApp`] keeps in its own fields rather than in `settings`.
const COLUMNS: [&str; 5] = ["id", "key", "secret", "enabled", "plan"];

impl StoredApp {
    /// Splits an app's fields (as `[[apps]]` gives them) into columns and settings; the
    /// fields are checked as an app first, naming a bad one `{at}.{name}`.
    pub fn from_fields(
        at: &str,
        fields: Map<String, Value>,
        plans: &Plans,
    ) -> Result<StoredApp, ConfigError> {
        let config = app_from_fields(at, fields.clone(), plans)?;
        let plan = fields
            .get("plan")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let settings = fields
            .into_iter()
            .filter(|(name, _)| !COLUMNS.contains(&name.as_str()))
            .collect();
        Ok(StoredApp {
            plan,
            id: config.id,
            key: config.key,
            secret: config.secret,
            enabled: config.enabled,
            settings,
        })
    }

    /// Every field in one object, as [`app_from_fields`] takes it.
    pub fn fields(&self) -> Map<String, Value> {
        let mut fields = self.settings.clone();
        fields.insert("id".into(), self.id.clone().into());
        fields.insert("key".into(), self.key.clone().into());
        fields.insert("secret".into(), self.secret.clone().into());
        fields.insert("enabled".into(), self.enabled.into());
        if let Some(plan) = &self.plan {
            fields.insert("plan".into(), plan.clone().into());
        }
        fields
    }

    /// The app a node serves for this row, resolved against `plans` and checked; a bad
    /// field is named `{at}.{name}`.
    pub fn to_config(&self, at: &str, plans: &Plans) -> Result<AppConfig, ConfigError> {
        app_from_fields(at, self.fields(), plans)
    }

    /// The app a node serves for this row, or why the row is not a valid app under `plans`:
    /// one line naming the field (`` `max_conections` is not an app setting; did you mean
    /// `max_connections`? ``), as the log,
    /// `/metrics` and `herald apps` report it, without the credentials of a URL it quotes.
    pub fn check(&self, plans: &Plans) -> Result<AppConfig, String> {
        self.to_config("", plans).map_err(|error| {
            redact_text(&match error {
                ConfigError::Invalid { field, problem } => format!("`{field}` {problem}"),
                other => other.to_string(),
            })
        })
    }

    /// `settings` as JSON text, the way the stores keep it.
    #[cfg_attr(not(feature = "databases"), allow(dead_code))]
    pub(crate) fn settings_json(&self) -> String {
        Value::Object(self.settings.clone()).to_string()
    }

    /// A row as a store read it: `settings` is JSON text.
    #[cfg_attr(not(feature = "databases"), allow(dead_code))]
    pub(crate) fn from_row(
        id: String,
        key: String,
        secret: String,
        enabled: bool,
        plan: Option<String>,
        settings: &str,
    ) -> StoredApp {
        // A settings value that is not a JSON object is kept as an unknown setting, so the
        // app is refused (and named in the log) instead of served with defaults.
        let settings = match serde_json::from_str::<Value>(settings) {
            Ok(Value::Object(map)) => map,
            Ok(other) => Map::from_iter([("settings".to_owned(), other)]),
            Err(_) => Map::from_iter([("settings".to_owned(), Value::String(settings.into()))]),
        };
        StoredApp {
            id,
            key,
            secret,
            enabled,
            plan,
            settings,
        }
    }
}

#[cfg(test)]
impl StoredApp {
    /// A row as the unit tests write it: enabled, no plan, the secret `s{id}`.
    pub(crate) fn test_row(id: &str, key: &str, settings: &str) -> StoredApp {
        StoredApp::from_row(
            id.into(),
            key.into(),
            format!("s{id}"),
            true,
            None,
            settings,
        )
    }
}

/// What went wrong with an app store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached (refused, timed out, closed).
    #[error("the app database at {url} cannot be reached: {reason}")]
    Unreachable {
        /// The URL, password hidden.
        url: String,
        /// The driver's reason.
        reason: String,
    },
    /// The tables do not exist or are older than this Herald.
    #[error(
        "the app database at {url} has no Herald tables (or older ones): run `herald apps migrate`"
    )]
    NotMigrated {
        /// The URL, password hidden.
        url: String,
    },
    /// Another app already has this id or key.
    #[error("an app with this {field} already exists")]
    Duplicate {
        /// `id` or `key`.
        field: &'static str,
    },
    /// No app has this id.
    #[error("there is no app with id '{0}'")]
    NotFound(String),
    /// The database refused the statement for another reason.
    #[error("the app database refused the request: {0}")]
    Query(String),
}

impl StoreError {
    /// Whether this is the database being away (as opposed to a refused request).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StoreError::Unreachable { .. })
    }
}

/// Tells its owner that the apps may have changed.
pub trait Changes: Send {
    /// Resolves when a change may have happened since the last call (or since the watch
    /// began); an error means the watch is lost and changes may have been missed.
    fn next(&mut self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// What Herald needs of a database that holds apps. Every method may fail with
/// [`StoreError::Unreachable`]; none is ever awaited by a request for a known app.
pub trait AppRows: Send + Sync + 'static {
    /// Creates or upgrades the tables (and the triggers that count or announce changes);
    /// returns the schema version now in place.
    fn migrate(&self) -> BoxFuture<'_, Result<u32, StoreError>>;
    /// Every app, ordered by id.
    fn load(&self) -> BoxFuture<'_, Result<Vec<StoredApp>, StoreError>>;
    /// One app by id or key.
    fn find<'a>(&'a self, by: AppRef<'a>) -> BoxFuture<'a, Result<Option<StoredApp>, StoreError>>;
    /// Adds an app; [`StoreError::Duplicate`] if its id or key is taken.
    fn insert<'a>(&'a self, app: &'a StoredApp) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Replaces the app with this id; [`StoreError::NotFound`] if there is none.
    fn update<'a>(&'a self, app: &'a StoredApp) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Removes the app with this id; [`StoreError::NotFound`] if there is none.
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Starts watching for changes. A change made after this returns is reported by the
    /// watch; a caller that loads after starting the watch misses nothing.
    fn watch(&self) -> BoxFuture<'_, Result<Box<dyn Changes>, StoreError>>;
}

/// Opens the database `url` names, inside a tokio runtime. Connecting is lazy: this fails
/// only on a malformed URL, and the first query reports a database that is away.
#[cfg(feature = "databases")]
pub fn open(url: &AppsUrl) -> Result<Arc<dyn AppRows>, StoreError> {
    use crate::store::connect_url::AppsDb;
    Ok(match url.db() {
        AppsDb::Postgres => Arc::new(postgres::PostgresRows::open(url)?),
        AppsDb::MySql => Arc::new(mysql::MySqlRows::open(url)?),
    })
}

/// Without the `databases` feature there is no database to open.
#[cfg(not(feature = "databases"))]
pub fn open(url: &AppsUrl) -> Result<Arc<dyn AppRows>, StoreError> {
    let _ = url.db();
    Err(StoreError::Query(
        "this build of Herald has no database support (feature `databases`)".to_owned(),
    ))
}

/// The connection settings both databases share: few connections (lookups are rare, the
/// watch has its own) and short waits, so an outage is reported instead of queued.
#[cfg(feature = "databases")]
pub(crate) const POOL_CONNECTIONS: u32 = 4;
#[cfg(feature = "databases")]
pub(crate) const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Maps a driver error, telling a database that is away from one that said no.
#[cfg(feature = "databases")]
pub(crate) fn store_error(url: &AppsUrl, error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => {
            let mut reason = error.to_string();
            if reason.contains("peer certificate") {
                reason.push_str(
                    " (the certificate must be signed by the CA the URL names, sslrootcert or \
                     ssl-ca, and hold the URL's host unless the mode is verify-ca / VERIFY_CA)",
                );
            }
            StoreError::Unreachable {
                url: url.redacted(),
                reason,
            }
        }
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // PostgreSQL 42P01 / MySQL 1146: no such table; 42703 / 1054: no such column.
            if matches!(code.as_str(), "42P01" | "42703" | "42S02" | "42S22") {
                return StoreError::NotMigrated {
                    url: url.redacted(),
                };
            }
            if db.is_unique_violation() {
                let text = format!("{} {}", db.constraint().unwrap_or(""), db.message());
                let field = if text.contains("pkey") || text.contains("PRIMARY") {
                    "id"
                } else {
                    "key"
                };
                return StoreError::Duplicate { field };
            }
            // Connection-level refusals (bad password, unknown database) are the
            // database being unusable, as an operator sees it.
            if code.starts_with("28")
                || code == "3D000"
                || db.message().starts_with("Unknown database")
            {
                let mut reason = db.message().to_owned();
                if code.starts_with("28") && connect_url::disables_tls(url.expose(), url.db()) {
                    // MariaDB answers a plain connection it requires TLS of as a bad login.
                    reason.push_str(" (the URL turns TLS off: does the server require it?)");
                }
                return StoreError::Unreachable {
                    url: url.redacted(),
                    reason,
                };
            }
            StoreError::Query(db.message().to_owned())
        }
        other => StoreError::Query(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).expect("an object")
    }

    #[test]
    fn an_app_splits_into_columns_and_settings_and_back() {
        let app = StoredApp::from_fields(
            "",
            fields(
                r#"{"id":"7","key":"k","secret":"s","enabled":false,"max_connections":5,
                      "webhooks":[{"url":"https://example.com/h"}]}"#,
            ),
            &Plans::default(),
        )
        .expect("valid");
        assert_eq!((app.id.as_str(), app.enabled), ("7", false));
        assert_eq!(
            app.settings.keys().collect::<Vec<_>>(),
            ["max_connections", "webhooks"]
        );
        let config = app.to_config("", &Plans::default()).expect("valid");
        assert_eq!(config.limits.max_connections, 5);
        assert_eq!(config.webhooks.len(), 1);
        assert!(!format!("{app:?}").contains("\"s\""), "no secret in Debug");
    }

    #[test]
    fn a_bad_setting_is_named() {
        let error = StoredApp::from_fields(
            "",
            fields(r#"{"id":"7","key":"k","secret":"s","max_conections":5}"#),
            &Plans::default(),
        )
        .expect_err("unknown setting")
        .to_string();
        assert!(
            error.contains(
                "`max_conections` is not an app setting; did you mean `max_connections`?"
            ),
            "{error}"
        );
        let error = StoredApp::from_fields(
            "",
            fields(r#"{"id":"7","key":"k","secret":"s","max_events_per_batch":0}"#),
            &Plans::default(),
        )
        .expect_err("bad limit")
        .to_string();
        assert!(error.contains("`max_events_per_batch`"), "{error}");
        let row = StoredApp::from_row(
            "7".into(),
            "k".into(),
            "s".into(),
            true,
            None,
            r#"{"client_events":true,"max_connections":"five"}"#,
        );
        let reason = row.check(&Plans::default()).expect_err("a wrong type");
        assert!(
            reason == "`max_connections` must be a whole number ≥ 0, not \"five\"",
            "{reason}"
        );
        let row = StoredApp::from_row("7".into(), "k".into(), "s".into(), true, None, "[1]");
        let error = row
            .to_config("app '7'", &Plans::default())
            .expect_err("settings not an object")
            .to_string();
        assert!(error.contains("app '7'.settings"), "{error}");
    }
}
