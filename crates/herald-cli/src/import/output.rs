//! Where imported apps go: appended to a Herald config file as `[[apps]]` tables (the
//! file kept as written, comments included, and the result loaded as `herald serve` loads
//! it before it replaces the file), or inserted into the app database through the store,
//! checked as `herald apps add` checks an app.

use std::io::Write as _;
use std::path::Path;

use herald_server::config::redact_url;
use herald_server::store::{self, AppRef, StoreError, StoredApp};
use herald_server::Plans;
use herald_server::{AppsUrl, Config, ConfigError};
use serde_json::Value;

use super::mapping::Imported;
use super::Fail;

/// What a dry run shows instead of a secret.
const REDACTED: &str = "<redacted>";

/// The apps as `[[apps]]` tables: credentials first, then the settings, then webhooks;
/// with `hide_secrets` (a preview on a terminal or in a CI log) each secret, and the
/// credentials of each webhook URL, are masked.
pub(super) fn toml_apps(apps: &[Imported], from: &str, hide_secrets: bool) -> Result<String, Fail> {
    let mut out = format!("\n# Imported from {from} by `herald apps import`.\n");
    for app in apps {
        out.push_str("[[apps]]\n");
        let first = ["id", "key", "secret", "enabled"];
        let rest = app
            .fields
            .keys()
            .filter(|k| !first.contains(&k.as_str()) && *k != "webhooks");
        for name in first.iter().copied().chain(rest.map(String::as_str)) {
            if let Some(value) = app.fields.get(name) {
                let value = match name {
                    "secret" if hide_secrets => &Value::from(REDACTED),
                    _ => value,
                };
                out.push_str(&format!("{name} = {}\n", toml_value(value)?));
            }
        }
        for hook in app
            .fields
            .get("webhooks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push_str("[[apps.webhooks]]\n");
            let Some(hook) = hook.as_object() else {
                continue;
            };
            for name in ["url", "event_types", "channel_prefix"] {
                if let Some(value) = hook.get(name) {
                    // A receiver often takes a token in its URL's user or password.
                    let shown = match (name, value.as_str()) {
                        ("url", Some(url)) if hide_secrets => &Value::from(redact_url(url)),
                        _ => value,
                    };
                    out.push_str(&format!("{name} = {}\n", toml_value(shown)?));
                }
            }
        }
    }
    Ok(out)
}

fn toml_value(value: &Value) -> Result<String, Fail> {
    toml::Value::try_from(value)
        .map(|v| v.to_string())
        .map_err(|e| Fail::input(format!("cannot write {value} as TOML: {e}")))
}

/// Appends the apps to the config file at `path` (created if missing), unless the result
/// would not load; with `dry_run`, writes nothing (and with `show`, prints what would be
/// appended, secrets masked).
pub(super) fn to_file(
    path: &Path,
    apps: &[Imported],
    from: &str,
    dry_run: bool,
    show: bool,
) -> Result<(), Fail> {
    let shown = path.display();
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Fail::input(format!("cannot read {shown}: {e}"))),
    };
    let added = toml_apps(apps, from, false)?;
    let mut text = existing.clone().unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&added);
    // Loaded as `herald serve` would (its environment left out): a duplicate id or key,
    // `apps_url` in the file, or a bad value stops the import here, not the server later.
    let no_env = |_: &str| None;
    if let Err(error) = Config::from_toml(&text, &no_env) {
        let problem = match error {
            ConfigError::Invalid { field, problem } => format!("`{field}` {problem}"),
            ConfigError::Parse { message, .. } => message,
            other => other.to_string(),
        };
        return Err(Fail::input(format!(
            "{shown} would not load with these apps: {problem}"
        )));
    }
    if dry_run {
        if show {
            super::out!("{}", toml_apps(apps, from, true)?.trim_start());
        }
        return Ok(());
    }
    write_replacing(path, &text, existing.is_some())
        .map_err(|e| Fail::input(format!("cannot write {shown}: {e}")))
}

/// Writes `text` to a new file beside `path`, then renames it over `path`, so a reader
/// sees the old file or the new one. The file holds secrets: a new one is the owner's
/// only; a replaced one keeps its permissions.
fn write_replacing(path: &Path, text: &str, existed: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".herald-import");
    let temp = path.with_file_name(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    if existed {
        std::fs::set_permissions(&temp, std::fs::metadata(path)?.permissions())?;
    }
    std::fs::rename(&temp, path)
}

/// Inserts the apps into the database at `url` (its tables created or upgraded first):
/// every app is checked, and none may share an id or key with a row, before any is
/// written.
pub(super) async fn to_db(
    url: &AppsUrl,
    plans: &Plans,
    apps: &[Imported],
    dry_run: bool,
) -> Result<(), Fail> {
    let rows = store::open(url)?;
    let mut stored = Vec::with_capacity(apps.len());
    for app in apps {
        let at = format!("app '{}'", app.text("id"));
        let row = StoredApp::from_fields(&at, app.fields.clone(), plans).map_err(|e| match e {
            ConfigError::Invalid { field, problem } => Fail::input(format!("`{field}` {problem}")),
            other => Fail::input(other.to_string()),
        })?;
        stored.push(row);
    }
    if !dry_run {
        rows.migrate().await?;
    }
    for app in &stored {
        for (by, field) in [(AppRef::Id(&app.id), "id"), (AppRef::Key(&app.key), "key")] {
            match rows.find(by).await {
                Ok(Some(_)) => {
                    return Err(Fail::input(format!(
                        "app '{}': an app in the database already has this {field}; nothing was imported",
                        app.id
                    )))
                }
                Ok(None) => {}
                // A database not migrated yet (a dry run) holds no app.
                Err(StoreError::NotMigrated { .. }) if dry_run => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if dry_run {
        return Ok(());
    }
    for (i, app) in stored.iter().enumerate() {
        rows.insert(app).await.map_err(|e| match e {
            StoreError::Duplicate { field } => Fail::input(format!(
                "app '{}': an app in the database already has this {field} (written meanwhile); the {i} app(s) before it were imported",
                app.id
            )),
            other => other.into(),
        })?;
    }
    Ok(())
}
