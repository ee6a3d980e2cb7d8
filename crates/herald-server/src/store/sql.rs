//! What the PostgreSQL and MySQL stores share: reading rows into [`StoredApp`]s, with the
//! query text of each dialect passed in. Every statement is put together from the stores'
//! constants (`AssertSqlSafe` says so to the driver); values are always bound.

use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Executor, IntoArguments, Pool, Row, Type,
};

use super::StoredApp;

/// One row of the `SELECT` both stores run (`id, key, secret, enabled, plan, settings`).
fn stored<R: Row>(row: &R) -> Result<StoredApp, sqlx::Error>
where
    for<'r> &'r str: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'c> &'c str: ColumnIndex<R>,
{
    Ok(StoredApp::from_row(
        row.try_get("id")?,
        row.try_get("key")?,
        row.try_get("secret")?,
        row.try_get("enabled")?,
        row.try_get("plan")?,
        row.try_get::<&str, _>("settings")?,
    ))
}

/// Every row `sql` selects, with `value` bound to its one parameter if given.
pub(super) async fn fetch<DB>(
    pool: &Pool<DB>,
    sql: &str,
    value: Option<&str>,
) -> Result<Vec<StoredApp>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + Type<DB>,
    for<'r> &'r str: Decode<'r, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB> + Type<DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    let query = sqlx::query::<DB>(AssertSqlSafe(sql));
    let query = match value {
        Some(value) => query.bind(value),
        None => query,
    };
    let rows = query.fetch_all(pool).await?;
    rows.iter().map(stored).collect()
}

/// Where `write` binds the app's id: first (`INSERT … VALUES (id, …)`) or last
/// (`UPDATE … WHERE id = …`).
#[derive(Clone, Copy)]
pub(super) enum IdAt {
    First,
    Last,
}

/// Runs `sql` with the app's fields bound in the order both stores write them: the id (at
/// `id`), then key, secret, enabled, plan and settings.
pub(super) async fn write<DB>(
    pool: &Pool<DB>,
    sql: &str,
    app: &StoredApp,
    id: IdAt,
) -> Result<DB::QueryResult, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + Type<DB>,
    for<'q> bool: sqlx::Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + Type<DB>,
{
    let mut query = sqlx::query::<DB>(AssertSqlSafe(sql));
    if let IdAt::First = id {
        query = query.bind(app.id.as_str());
    }
    query = query
        .bind(app.key.as_str())
        .bind(app.secret.as_str())
        .bind(app.enabled)
        .bind(app.plan.as_deref())
        .bind(app.settings_json());
    if let IdAt::Last = id {
        query = query.bind(app.id.as_str());
    }
    query.execute(pool).await
}
