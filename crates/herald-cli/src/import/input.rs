//! Where another server's apps are read from: its config file, environment variables
//! (this process's, or a `KEY=VALUE` file such as Laravel's `.env`), or its app table in
//! PostgreSQL or MySQL/MariaDB, each row read as one JSON object by the database itself,
//! so every column type arrives as the peer would see it.

use std::path::Path;
use std::time::Duration;

use herald_server::AppsUrl;
use serde_json::{Map, Value};
use sqlx::Connection;

use super::Fail;

/// Largest config or env file read: far more than any real one.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Most rows read from a table.
const MAX_ROWS: usize = 100_000;

/// How long connecting to the peer's database may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variables, in the order given.
pub(crate) struct Env(Vec<(String, String)>);

impl Env {
    /// This process's environment (variables that are not UTF-8 are skipped).
    pub(super) fn process() -> Env {
        Env(std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect())
    }

    /// A file of `KEY=VALUE` lines (`#` comments, `export `, quotes: a `.env` file).
    pub(super) fn file(path: &Path) -> Result<Env, Fail> {
        let text = read_text(path)?;
        let mut vars = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((name, value)) = line.split_once('=') else {
                return Err(Fail::input(format!(
                    "{}:{}: expected KEY=VALUE",
                    path.display(),
                    n + 1
                )));
            };
            vars.push((name.trim().to_owned(), unquote(value.trim())));
        }
        Ok(Env(vars))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        // The last one wins, as when a shell sources the file.
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub(super) fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// A `.env` value: `"…"` (with `\n`, `\"`, `\\`), `'…'` as written, or bare up to ` #`.
fn unquote(value: &str) -> String {
    let mut chars = value.chars();
    match chars.next() {
        Some(q @ ('"' | '\'')) => {
            let mut out = String::new();
            let mut escaped = false;
            for c in chars {
                match (escaped, c) {
                    (false, '\\') if q == '"' => escaped = true,
                    (false, c) if c == q => return out,
                    (true, 'n') => {
                        out.push('\n');
                        escaped = false;
                    }
                    (_, c) => {
                        out.push(c);
                        escaped = false;
                    }
                }
            }
            out
        }
        _ => value
            .split(" #")
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

fn read_text(path: &Path) -> Result<String, Fail> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| Fail::input(format!("cannot read {shown}: {e}")))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(Fail::input(format!(
            "{shown} is {size} bytes: not a config file"
        )));
    }
    std::fs::read_to_string(path).map_err(|e| Fail::input(format!("cannot read {shown}: {e}")))
}

/// A config file as JSON: JSON, or with `toml_too` TOML when its name ends in `.toml`
/// (sockudo reads both, soketi only JSON).
pub(super) fn config_file(path: &Path, toml_too: bool) -> Result<Value, Fail> {
    let text = read_text(path)?;
    let shown = path.display();
    if toml_too && path.extension().is_some_and(|e| e == "toml") {
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            Fail::input(format!("{shown} is not TOML: {}", one_line(&e.to_string())))
        })?;
        return serde_json::to_value(table).map_err(|e| Fail::input(format!("{shown}: {e}")));
    }
    serde_json::from_str(&text).map_err(|e| Fail::input(format!("{shown} is not JSON: {e}")))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A table name, checked so it can be quoted safely: `name` or `schema.name`.
fn table_parts(table: &str) -> Result<Vec<&str>, Fail> {
    let parts: Vec<&str> = table.split('.').collect();
    let good = |p: &&str| {
        !p.is_empty()
            && p.len() <= 64
            && !p.starts_with(|c: char| c.is_ascii_digit())
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if parts.len() > 2 || !parts.iter().all(good) {
        return Err(Fail::input(format!(
            "--table '{table}': expected a table name (letters, digits, '_'), or schema.table"
        )));
    }
    Ok(parts)
}

/// Every row of `table` in the database `url` names, each as a JSON object by column.
pub(super) async fn table(url: &str, table: &str) -> Result<Vec<Map<String, Value>>, Fail> {
    let url = AppsUrl::parse(url).map_err(|_| {
        Fail::input(format!(
            "--db must be a postgres:// or mysql:// URL, not '{}'",
            herald_server::config::redact_url(url)
        ))
    })?;
    let parts = table_parts(table)?;
    let shown = url.redacted();
    let unreachable = |e: &dyn std::fmt::Display| {
        Fail::unreachable(format!("cannot read the database at {shown}: {e}"))
    };
    let rows: Vec<String> = match url.db() {
        herald_server::store::AppsDb::Postgres => {
            let mut conn =
                tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect(url.expose()))
                    .await
                    .map_err(|_| unreachable(&"no answer in 10 s"))?
                    .map_err(|e| unreachable(&e))?;
            let quoted: Vec<String> = parts.iter().map(|p| format!("\"{p}\"")).collect();
            let sql = select(
                "row_to_json(t)::text",
                &format!("{} AS t", quoted.join(".")),
            );
            // The table's parts are checked identifiers and the column names are escaped.
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut conn)
                .await
                .map_err(|e| query_error(e, table, &shown))?
        }
        herald_server::store::AppsDb::MySql => {
            let dsn = match url.expose().strip_prefix("mariadb://") {
                Some(rest) => format!("mysql://{rest}"),
                None => url.expose().to_owned(),
            };
            let mut conn =
                tokio::time::timeout(CONNECT_TIMEOUT, sqlx::MySqlConnection::connect(&dsn))
                    .await
                    .map_err(|_| unreachable(&"no answer in 10 s"))?
                    .map_err(|e| unreachable(&e))?;
            let (schema, name) = match parts.as_slice() {
                [schema, name] => (Some(*schema), *name),
                _ => (None, parts[0]),
            };
            let columns: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
            )
            .bind(schema)
            .bind(name)
            .fetch_all(&mut conn)
            .await
            .map_err(|e| query_error(e, table, &shown))?;
            if columns.is_empty() {
                return Err(no_table(table, &shown));
            }
            let pairs: Vec<String> = columns
                .iter()
                .map(|c| {
                    format!(
                        "'{}', `{}`",
                        c.replace('\\', "\\\\").replace('\'', "''"),
                        c.replace('`', "``")
                    )
                })
                .collect();
            let quoted: Vec<String> = parts.iter().map(|p| format!("`{p}`")).collect();
            let row = format!("CAST(JSON_OBJECT({}) AS CHAR)", pairs.join(", "));
            let sql = select(&row, &quoted.join("."));
            // The table's parts are checked identifiers and the column names are escaped.
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut conn)
                .await
                .map_err(|e| query_error(e, table, &shown))?
        }
    };
    if rows.len() > MAX_ROWS {
        return Err(Fail::input(format!(
            "the table {table} has more than {MAX_ROWS} rows: not an app table"
        )));
    }
    rows.iter()
        .map(|row| match serde_json::from_str(row) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(Fail::input(format!(
                "a row of {table} did not read as JSON"
            ))),
        })
        .collect()
}

/// Each row of `from` as `expr`, one more than the most read (to tell there are more).
fn select(expr: &str, from: &str) -> String {
    format!("SELECT {expr} FROM {from} LIMIT {}", MAX_ROWS + 1)
}

fn no_table(table: &str, shown: &str) -> Fail {
    Fail::input(format!(
        "the database at {shown} has no table '{table}' (name it with --table)"
    ))
}

fn query_error(error: sqlx::Error, table: &str, shown: &str) -> Fail {
    if let sqlx::Error::Database(db) = &error {
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        if matches!(code.as_str(), "42P01" | "3F000" | "42S02") {
            return no_table(table, shown);
        }
        return Fail::input(format!(
            "the database at {shown} refused to read {table}: {}",
            db.message()
        ));
    }
    Fail::unreachable(format!("cannot read the database at {shown}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_values_read_as_a_shell_would() {
        assert_eq!(unquote("\"a b\" # c"), "a b");
        assert_eq!(unquote("'x\\ny'"), "x\\ny");
        assert_eq!(unquote("\"x\\ny\""), "x\ny");
        assert_eq!(unquote("plain # comment"), "plain");
        assert_eq!(unquote("a#b"), "a#b");
    }

    #[test]
    fn only_plain_table_names_are_quoted() {
        assert!(table_parts("apps").is_ok());
        assert!(table_parts("public.apps").is_ok());
        for bad in ["", "a;b", "a\"b", "a.b.c", "1apps", "a b", "a`b"] {
            assert!(table_parts(bad).is_err(), "{bad}");
        }
    }
}
