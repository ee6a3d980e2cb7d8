//! The configuration the server runs with: every subsystem's declared settings (see
//! `config/declare.rs`) read from the TOML file, the `HERALD_*` variables on top, and the
//! apps, validated into typed values before anything binds a port.
//!
//! Each default lives with its declaration. A bad value stops start-up with a
//! [`ConfigError`] that names the field, so a typo never silently falls back to a default.

mod raw;
pub mod server;
#[cfg(test)]
mod tests;

use std::path::Path;

use self::raw::RawConfig;
pub use self::server::{LogFormat, ProcessSettings, ServerSettings};
use crate::adapter::config::AdapterConfig;
use crate::admin::settings::AdminConfig;
use crate::admission::settings::NetLimits;
use crate::app_config::fields::{
    app_from_fields_reaching, app_from_raw, raw_to_fields, validate_apps, Plans,
};
use crate::app_config::{
    AppConfig, AppsSettings, DEFAULT_APP_ID, DEFAULT_APP_KEY, DEFAULT_APP_SECRET,
};
use crate::config::declare::{Changed, Section};
use crate::config::error::invalid;
use crate::config::told::parse_toml;
use crate::config::ConfigError;
use crate::store::settings::{AppsUrl, StoreSettings};
use crate::tls::settings::{TlsConfig, TlsSettings};
use crate::webhooks::reach::WebhookReach;
use crate::webhooks::settings::WebhookOptions;

/// The validated configuration the server runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the server listens, what a WebSocket connection may do, how it shuts down.
    pub server: ServerSettings,
    /// Serve `https://` and `wss://` only, with this certificate (`tls_cert`, `tls_key`);
    /// `None` serves plain HTTP and WebSocket.
    pub tls: Option<TlsConfig>,
    /// What clients may hold open: timeouts and connection caps.
    pub net: NetLimits,
    /// How webhooks are delivered and where their queue lives.
    pub webhooks: WebhookOptions,
    /// The process: logs, pid file, node id.
    pub process: ProcessSettings,
    /// The admin listener: metrics and health checks, away from the public port.
    pub admin: AdminConfig,
    /// What the node shares events and state through (`adapter`): nothing (a single
    /// in-memory node), or a cluster's backend.
    pub adapter: AdapterConfig,
    /// The database the apps live in (`apps_url`); `None` serves the file's `[[apps]]`.
    pub apps_url: Option<AppsUrl>,
    /// The file's named plans, which a database's apps refer to by name too.
    pub plans: Plans,
    /// The apps served; empty when they live in a database (`apps_url`).
    pub apps: Vec<AppConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerSettings::default(),
            tls: None,
            net: NetLimits::default(),
            webhooks: WebhookOptions::default(),
            process: ProcessSettings::default(),
            admin: AdminConfig::default(),
            adapter: AdapterConfig::Local,
            apps_url: None,
            plans: Plans::default(),
            apps: vec![AppConfig::embedded_default()],
        }
    }
}

/// Every section of settings, in the order the reference lists them and a reload names
/// what it cannot apply.
pub fn sections() -> Vec<Section> {
    vec![
        ServerSettings::section(),
        TlsSettings::section(),
        NetLimits::section(),
        WebhookOptions::section(),
        ProcessSettings::section(),
        AdminConfig::section(),
        StoreSettings::section(),
        AppsSettings::section(),
    ]
    .into_iter()
    .chain(AdapterConfig::sections())
    .chain(crate::app_config::keys::sections())
    .collect()
}

/// What the reference says above the sections.
const PREAMBLE: &str = "\
Every server setting: its key in the TOML file (`herald serve --config FILE`), the \
environment variable that overrides it, its default, and whether a reload (SIGHUP, \
`herald reload`) applies it or it keeps its running value until a restart; then the keys \
of an app (`[[apps]]`, or an app store's row), a plan and a webhook, which a reload \
always applies.

Without `[[apps]]` in the file (and without `apps_url`), the server serves one app whose \
credentials `HERALD_APP_ID`, `HERALD_APP_KEY` and `HERALD_APP_SECRET` set (by default \
`1`, `app-key` and `app-secret`).

This page is generated from the settings' declarations: \
`HERALD_BLESS=1 cargo test -p herald-server --test tidy config_reference` writes it anew.";

/// docs/config-reference.md as the declarations give it.
pub fn reference() -> String {
    crate::config::reference::render(PREAMBLE, &sections())
}

/// The `[[apps]]` of a config file as each app's fields (see
/// [`crate::app_config::fields::app_from_fields`]), each checked first against the file's
/// own `[plans]`, which come with them: what `herald apps import` copies into a database.
pub fn apps_in_file(
    path: &Path,
) -> Result<(Plans, Vec<serde_json::Map<String, serde_json::Value>>), ConfigError> {
    let raw = read(path)?;
    // Checked as the file serves them; the database's own rules (the running config's
    // plans and webhook networks) are applied when they are written.
    let networks = AppsSettings::from_raw(raw.apps_settings)?.webhook_allowed_networks;
    let plans = Plans::from_file(raw.plans, networks);
    let fields: Vec<_> = raw.apps.iter().map(raw_to_fields).collect();
    let mut apps = Vec::with_capacity(fields.len());
    for (i, app) in fields.iter().enumerate() {
        apps.push(app_from_fields_reaching(
            &format!("apps[{i}]"),
            app.clone(),
            &plans,
            &WebhookReach::Anywhere,
        )?);
    }
    validate_apps(&apps)?;
    Ok((plans, fields))
}

fn read(path: &Path) -> Result<RawConfig, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_toml::<RawConfig>(&shown, &text)
}

impl Config {
    /// Builds the configuration: defaults, then the TOML file if given, then environment
    /// variables (each setting's, docs/config-reference.md, and `HERALD_APP_ID`/`_KEY`/
    /// `_SECRET` for the single app when the file defines none). TLS files are read and
    /// checked here. `env` is injected so tests need not touch the process environment.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw = match path {
            Some(path) => read(path)?,
            None => RawConfig::default(),
        };
        Self::from_raw(raw, env)
    }

    /// Parses TOML text; used by tests and by [`Config::load`]'s callers that embed config.
    pub fn from_toml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw = parse_toml::<RawConfig>("<inline>", text)?;
        Self::from_raw(raw, env)
    }

    fn from_raw(
        mut raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        raw.overlay(env)?;
        let networks = AppsSettings::from_raw(raw.apps_settings)?.webhook_allowed_networks;
        let mut admin = AdminConfig::from_raw(raw.admin)?;
        admin.resolve()?;
        let mut config = Config {
            server: ServerSettings::from_raw(raw.server)?,
            tls: TlsSettings::from_raw(raw.tls)?.files()?,
            net: NetLimits::from_raw(raw.net)?,
            webhooks: WebhookOptions::from_raw(raw.webhooks)?,
            process: ProcessSettings::from_raw(raw.process)?,
            admin,
            adapter: AdapterConfig::from_raw(raw.adapter)?,
            apps_url: StoreSettings::from_raw(raw.store)?.apps_url,
            plans: Plans::from_file(raw.plans, networks),
            apps: Vec::new(),
        };
        for (i, app) in raw.apps.into_iter().enumerate() {
            // The file's apps are the operator's: their webhooks reach any address.
            config.apps.push(app_from_raw(
                &format!("apps[{i}]"),
                app,
                &config.plans,
                &WebhookReach::Anywhere,
            )?);
        }
        let from_file = !config.apps.is_empty();
        if config.apps_url.is_some() {
            if from_file {
                return Err(invalid(
                    "apps_url",
                    "cannot be combined with [[apps]] in the config file: the apps live in the database (copy them there with `herald apps import FILE`)",
                ));
            }
        } else if !from_file {
            config.apps.push(AppConfig::embedded_default());
        }
        config.single_app_from(env, from_file)?;
        config.validate()?;
        Ok(config)
    }

    /// `HERALD_APP_ID`, `HERALD_APP_KEY` and `HERALD_APP_SECRET`: the single app's
    /// credentials, when the file defines no app.
    fn single_app_from(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
        from_file: bool,
    ) -> Result<(), ConfigError> {
        let app_env = [
            env("HERALD_APP_ID"),
            env("HERALD_APP_KEY"),
            env("HERALD_APP_SECRET"),
        ];
        if app_env.iter().all(Option::is_none) {
            return Ok(());
        }
        if self.apps_url.is_some() {
            return Err(invalid(
                "HERALD_APP_ID",
                "cannot be combined with apps_url: the apps live in the database",
            ));
        }
        if from_file {
            return Err(invalid(
                "HERALD_APP_ID",
                "cannot be combined with [[apps]] in the config file",
            ));
        }
        let [id, key, secret] = app_env;
        let app = &mut self.apps[0];
        if let Some(id) = id {
            app.id = id;
        }
        if let Some(key) = key {
            app.key = key;
        }
        if let Some(secret) = secret {
            app.secret = secret;
        }
        Ok(())
    }

    /// Each section's declared bounds, then what ties settings together.
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.check()?;
        self.process.check()?;
        self.admin.validate()?;
        if let Some(tls) = &self.tls {
            // Loaded once here so that `herald serve` stops before binding, naming the file.
            crate::tls::load(tls, crate::tls::PUBLIC_KEYS)?;
        }
        self.net.check()?;
        self.webhooks.check()?;
        self.adapter.validate()?;
        if self.server.outbox_max_bytes < self.server.max_message_bytes {
            return Err(invalid(
                "outbox_max_bytes",
                "must be at least max_message_bytes",
            ));
        }
        validate_apps(&self.apps)
    }

    /// The server-wide settings that differ between `self` (running) and `new`, by their
    /// TOML keys: those declared `Restart`, which a reload keeps and names. Apps (and the
    /// plans they resolve) are not among them.
    pub fn restart_fields(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = self.server.changed(&new.server);
        changed.extend(self.net.changed(&new.net));
        changed.extend(self.webhooks.changed(&new.webhooks));
        changed.extend(self.process.changed(&new.process));
        changed.extend(self.admin.changed(&new.admin));
        // The certificates change at once; serving TLS or not needs a restart.
        changed.push(("tls_cert", self.tls.is_some() != new.tls.is_some()));
        changed.push((
            "admin_tls_cert",
            self.admin.tls.is_some() != new.admin.tls.is_some(),
        ));
        changed.push(("apps_url", self.apps_url != new.apps_url));
        changed.extend(self.adapter.changed(&new.adapter));
        changed.into_iter().collect::<Changed>().0
    }

    /// Whether the only app is the embedded default one, credentials and all: the one case
    /// where printing a ready `PUSHER_URL` with its secret gives nothing away.
    pub fn is_embedded_default(&self) -> bool {
        matches!(self.apps.as_slice(), [app] if app.id == DEFAULT_APP_ID
            && app.key == DEFAULT_APP_KEY
            && app.secret == DEFAULT_APP_SECRET)
    }

    /// Whether an app still uses the embedded default credentials, which anyone can read in
    /// this repository.
    pub fn uses_default_credentials(&self) -> bool {
        self.apps
            .iter()
            .any(|a| a.key == DEFAULT_APP_KEY || a.secret == DEFAULT_APP_SECRET)
    }
}
