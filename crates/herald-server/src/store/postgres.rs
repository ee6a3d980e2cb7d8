//! Apps in PostgreSQL: one table, and a statement trigger that announces every change with
//! `NOTIFY herald_apps`, which each node LISTENs to.

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use super::settings::AppsUrl;
use super::sql::IdAt;
use super::{connect_url, store_error, AppRef, AppRows, Changes, StoreError, StoredApp};

/// The schema version this build creates (`herald_apps_schema`).
const SCHEMA_VERSION: u32 = 1;

/// The channel the trigger notifies.
const CHANNEL: &str = "herald_apps";

/// Steps from one version to the next; `STEPS[0]` creates version 1. Run in one
/// transaction, under an advisory lock so two nodes migrating at once take turns.
const STEPS: [&str; 1] = [r#"
CREATE TABLE IF NOT EXISTS herald_apps (
    id         text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 255),
    key        text NOT NULL UNIQUE CHECK (length(key) BETWEEN 1 AND 255),
    secret     text NOT NULL CHECK (length(secret) BETWEEN 1 AND 255),
    enabled    boolean NOT NULL DEFAULT true,
    plan       text,
    settings   jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION herald_apps_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('herald_apps', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS herald_apps_changed ON herald_apps;
CREATE TRIGGER herald_apps_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON herald_apps
    FOR EACH STATEMENT EXECUTE FUNCTION herald_apps_changed();
"#];

const SELECT: &str =
    "SELECT id, key, secret, enabled, plan, settings::text AS settings FROM herald_apps";

pub(crate) struct PostgresRows {
    pool: PgPool,
    /// What the pool connects with, for the watch's own connection.
    options: PgConnectOptions,
    url: AppsUrl,
}

impl PostgresRows {
    pub(crate) fn open(url: &AppsUrl) -> Result<Self, StoreError> {
        let options: PgConnectOptions = connect_url::driver_url(url.expose(), url.db())
            .parse()
            .map_err(|e| store_error(url, e))?;
        let pool = PgPoolOptions::new()
            .max_connections(super::POOL_CONNECTIONS)
            .acquire_timeout(super::ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        Ok(PostgresRows {
            pool,
            options,
            url: url.clone(),
        })
    }

    fn error(&self, error: sqlx::Error) -> StoreError {
        store_error(&self.url, error)
    }

    async fn migrate_now(&self) -> Result<u32, StoreError> {
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS herald_apps_schema (version integer NOT NULL)")
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        let version: Option<i32> =
            sqlx::query_scalar("SELECT max(version) FROM herald_apps_schema")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.error(e))?;
        let from = version.unwrap_or(0).max(0) as u32;
        if from > SCHEMA_VERSION {
            return Err(StoreError::Query(format!(
                "the tables are at schema version {from}, newer than this Herald's {SCHEMA_VERSION}"
            )));
        }
        // One script, which PostgreSQL runs as one transaction: the steps still to run
        // (each safe to run twice, should another node migrate at once; the advisory lock
        // makes them take turns), then the version they reach.
        let script = format!(
            "SELECT pg_advisory_xact_lock(72700012);\n{}\nDELETE FROM herald_apps_schema;\nINSERT INTO herald_apps_schema VALUES ({SCHEMA_VERSION});",
            STEPS[from as usize..].concat()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(script))
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(SCHEMA_VERSION)
    }
}

impl AppRows for PostgresRows {
    fn migrate(&self) -> BoxFuture<'_, Result<u32, StoreError>> {
        self.migrate_now().boxed()
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<StoredApp>, StoreError>> {
        async move {
            super::sql::fetch(&self.pool, &format!("{SELECT} ORDER BY id"), None)
                .await
                .map_err(|e| self.error(e))
        }
        .boxed()
    }

    fn find<'a>(&'a self, by: AppRef<'a>) -> BoxFuture<'a, Result<Option<StoredApp>, StoreError>> {
        async move {
            let (sql, value) = match by {
                AppRef::Id(id) => (format!("{SELECT} WHERE id = $1"), id),
                AppRef::Key(key) => (format!("{SELECT} WHERE key = $1"), key),
            };
            let found = super::sql::fetch(&self.pool, &sql, Some(value))
                .await
                .map_err(|e| self.error(e))?;
            Ok(found.into_iter().next())
        }
        .boxed()
    }

    fn insert<'a>(&'a self, app: &'a StoredApp) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let sql = "INSERT INTO herald_apps (id, key, secret, enabled, plan, settings)
                       VALUES ($1, $2, $3, $4, $5, $6::jsonb)";
            super::sql::write(&self.pool, sql, app, IdAt::First)
                .await
                .map_err(|e| self.error(e))?;
            Ok(())
        }
        .boxed()
    }

    fn update<'a>(&'a self, app: &'a StoredApp) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let sql = "UPDATE herald_apps SET key = $1, secret = $2, enabled = $3, plan = $4,
                              settings = $5::jsonb, updated_at = now()
                       WHERE id = $6";
            let done = super::sql::write(&self.pool, sql, app, IdAt::Last)
                .await
                .map_err(|e| self.error(e))?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(app.id.clone()));
            }
            Ok(())
        }
        .boxed()
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let done = sqlx::query("DELETE FROM herald_apps WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(|e| self.error(e))?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(id.to_owned()));
            }
            Ok(())
        }
        .boxed()
    }

    fn watch(&self) -> BoxFuture<'_, Result<Box<dyn Changes>, StoreError>> {
        async move {
            // Its own connection, outside the pool: it is held for as long as the watch. Its
            // one-connection pool has the short wait of the others (`PgListener::connect`
            // would retry a refused connection for 30 s, backing off up to 6 s): a watch
            // started while the database is away fails within seconds, and one started
            // just before it comes back connects within a fraction of a second.
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(super::ACQUIRE_TIMEOUT)
                .max_lifetime(None)
                .idle_timeout(None)
                .connect_lazy_with(self.options.clone());
            let mut listener = PgListener::connect_with(&pool)
                .await
                .map_err(|e| self.error(e))?;
            listener.ignore_pool_close_event(true);
            // A lost connection ends the watch (the caller reloads everything on the next
            // one) instead of reconnecting silently past the changes it missed.
            listener.eager_reconnect(false);
            listener.listen(CHANNEL).await.map_err(|e| self.error(e))?;
            Ok(Box::new(Notifications {
                listener,
                url: self.url.clone(),
            }) as Box<dyn Changes>)
        }
        .boxed()
    }
}

struct Notifications {
    listener: PgListener,
    url: AppsUrl,
}

impl Changes for Notifications {
    fn next(&mut self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            match self.listener.try_recv().await {
                Ok(Some(_)) => {
                    // One reload answers every change already announced.
                    while self.listener.next_buffered().is_some() {}
                    Ok(())
                }
                Ok(None) => Err(StoreError::Unreachable {
                    url: self.url.redacted(),
                    reason: "the connection listening for changes was lost".to_owned(),
                }),
                Err(e) => Err(store_error(&self.url, e)),
            }
        }
        .boxed()
    }
}
