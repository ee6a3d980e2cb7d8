//! What the PostgreSQL and MySQL stores share: reading rows into [`StoredApp`]s, with the
//! query text of each dialect passed in.

use sqlx::{ColumnIndex, Database, Decode, Executor, IntoArguments, Pool, Row, Type};

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
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + Type<DB>,
    for<'r> &'r str: Decode<'r, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB> + Type<DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    let query = sqlx::query::<DB>(sql);
    let query = match value {
        Some(value) => query.bind(value),
        None => query,
    };
    let rows = query.fetch_all(pool).await?;
    rows.iter().map(stored).collect()
}
