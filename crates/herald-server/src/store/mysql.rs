//! Apps in MySQL or MariaDB: one table, and row triggers that count every change in
//! `herald_apps_revision`, which each node polls (MySQL has no LISTEN).

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

use super::settings::AppsUrl;
use super::sql::IdAt;
use super::{connect_url, store_error, AppRef, AppRows, Changes, StoreError, StoredApp};

/// The schema version this build creates (`herald_apps_schema`).
const SCHEMA_VERSION: u32 = 1;

/// How often a node reads the change counter: a change is seen within this, and a read
/// is one primary-key lookup.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// Steps from one version to the next, statement by statement (MySQL runs DDL outside
/// transactions; each statement is safe to run again). `STEPS[0]` creates version 1.
const STEPS: [&[&str]; 1] = [&[
    // utf8mb4_bin: keys and ids compare byte for byte, as the protocol does (the default
    // collation would take "Key" and "key" for one app).
    "CREATE TABLE IF NOT EXISTS herald_apps (
        id         VARCHAR(255) NOT NULL,
        `key`      VARCHAR(255) NOT NULL,
        secret     VARCHAR(255) NOT NULL,
        enabled    BOOLEAN NOT NULL DEFAULT TRUE,
        plan       VARCHAR(255) NULL,
        settings   LONGTEXT NOT NULL DEFAULT ('{}') CHECK (JSON_VALID(settings)),
        created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
        updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
        PRIMARY KEY (id),
        UNIQUE KEY herald_apps_key (`key`)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS herald_apps_revision (
        id       TINYINT NOT NULL PRIMARY KEY,
        revision BIGINT NOT NULL
    ) ENGINE=InnoDB",
    "INSERT IGNORE INTO herald_apps_revision (id, revision) VALUES (1, 0)",
    "DROP TRIGGER IF EXISTS herald_apps_inserted",
    "CREATE TRIGGER herald_apps_inserted AFTER INSERT ON herald_apps FOR EACH ROW
        UPDATE herald_apps_revision SET revision = revision + 1 WHERE id = 1",
    "DROP TRIGGER IF EXISTS herald_apps_updated",
    "CREATE TRIGGER herald_apps_updated AFTER UPDATE ON herald_apps FOR EACH ROW
        UPDATE herald_apps_revision SET revision = revision + 1 WHERE id = 1",
    "DROP TRIGGER IF EXISTS herald_apps_deleted",
    "CREATE TRIGGER herald_apps_deleted AFTER DELETE ON herald_apps FOR EACH ROW
        UPDATE herald_apps_revision SET revision = revision + 1 WHERE id = 1",
]];

// The columns' binary collation marks them BINARY on the wire, which the driver would take
// for bytes: CONVERT gives them back as text.
const SELECT: &str =
    "SELECT CONVERT(id USING utf8mb4) AS id, CONVERT(`key` USING utf8mb4) AS `key`,
    CONVERT(secret USING utf8mb4) AS secret, enabled, CONVERT(plan USING utf8mb4) AS plan,
    CONVERT(settings USING utf8mb4) AS settings FROM herald_apps";
const REVISION: &str = "SELECT revision FROM herald_apps_revision WHERE id = 1";

pub(crate) struct MySqlRows {
    pool: MySqlPool,
    url: AppsUrl,
}

impl MySqlRows {
    pub(crate) fn open(url: &AppsUrl) -> Result<Self, StoreError> {
        let dsn = connect_url::driver_url(url.expose(), url.db());
        let pool = MySqlPoolOptions::new()
            .max_connections(super::POOL_CONNECTIONS)
            .acquire_timeout(super::ACQUIRE_TIMEOUT)
            .connect_lazy(&dsn)
            .map_err(|e| store_error(url, e))?;
        Ok(MySqlRows {
            pool,
            url: url.clone(),
        })
    }

    fn error(&self, error: sqlx::Error) -> StoreError {
        store_error(&self.url, error)
    }

    async fn migrate_now(&self) -> Result<u32, StoreError> {
        // A named lock held by this connection, so two nodes migrating at once take turns.
        let mut conn = self.pool.acquire().await.map_err(|e| self.error(e))?;
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK('herald_apps_migrate', 30)")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.error(e))?;
        if locked != Some(1) {
            return Err(StoreError::Query(
                "another migration holds the lock 'herald_apps_migrate'".to_owned(),
            ));
        }
        let result = async {
            sqlx::query("CREATE TABLE IF NOT EXISTS herald_apps_schema (version INT NOT NULL)")
                .execute(&mut *conn)
                .await?;
            let version: Option<i32> =
                sqlx::query_scalar("SELECT MAX(version) FROM herald_apps_schema")
                    .fetch_one(&mut *conn)
                    .await?;
            let from = version.unwrap_or(0).max(0) as u32;
            if from > SCHEMA_VERSION {
                return Ok(Err(StoreError::Query(format!(
                    "the tables are at schema version {from}, newer than this Herald's {SCHEMA_VERSION}"
                ))));
            }
            for step in &STEPS[from as usize..] {
                for statement in *step {
                    sqlx::query(*statement).execute(&mut *conn).await?;
                }
            }
            sqlx::query("DELETE FROM herald_apps_schema")
                .execute(&mut *conn)
                .await?;
            sqlx::query("INSERT INTO herald_apps_schema (version) VALUES (?)")
                .bind(SCHEMA_VERSION)
                .execute(&mut *conn)
                .await?;
            Ok::<_, sqlx::Error>(Ok(SCHEMA_VERSION))
        }
        .await;
        let _ = sqlx::query("SELECT RELEASE_LOCK('herald_apps_migrate')")
            .execute(&mut *conn)
            .await;
        result.map_err(|e| self.error(e))?
    }

    async fn revision(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar(REVISION)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.error(e))
    }
}

impl AppRows for MySqlRows {
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
                AppRef::Id(id) => (format!("{SELECT} WHERE id = ?"), id),
                AppRef::Key(key) => (format!("{SELECT} WHERE `key` = ?"), key),
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
            let sql = "INSERT INTO herald_apps (id, `key`, secret, enabled, plan, settings)
                       VALUES (?, ?, ?, ?, ?, ?)";
            super::sql::write(&self.pool, sql, app, IdAt::First)
                .await
                .map_err(|e| self.error(e))?;
            Ok(())
        }
        .boxed()
    }

    fn update<'a>(&'a self, app: &'a StoredApp) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            // Found rows, not changed rows, so an update to the same values is no NotFound.
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM herald_apps WHERE id = ?")
                .bind(&app.id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.error(e))?;
            if exists.is_none() {
                return Err(StoreError::NotFound(app.id.clone()));
            }
            let sql =
                "UPDATE herald_apps SET `key` = ?, secret = ?, enabled = ?, plan = ?, settings = ?
                       WHERE id = ?";
            super::sql::write(&self.pool, sql, app, IdAt::Last)
                .await
                .map_err(|e| self.error(e))?;
            Ok(())
        }
        .boxed()
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let done = sqlx::query("DELETE FROM herald_apps WHERE id = ?")
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
            let seen = self.revision().await?;
            Ok(Box::new(Poll {
                rows: MySqlRows {
                    pool: self.pool.clone(),
                    url: self.url.clone(),
                },
                seen,
            }) as Box<dyn Changes>)
        }
        .boxed()
    }
}

struct Poll {
    rows: MySqlRows,
    seen: i64,
}

impl Changes for Poll {
    fn next(&mut self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            loop {
                tokio::time::sleep(POLL_EVERY).await;
                let now = self.rows.revision().await?;
                if now != self.seen {
                    self.seen = now;
                    return Ok(());
                }
            }
        }
        .boxed()
    }
}
