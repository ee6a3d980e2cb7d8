//! Server configuration: the TOML file, environment variables on top, and the embedded
//! default app, validated into typed values before anything binds a port.
//!
//! Every default lives in this file. A bad value stops start-up with a [`ConfigError`] that
//! names the field, so a typo never silently falls back to a default.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The embedded default app's id (numeric: the official Node and Python libraries put the id
/// in URLs and the Python one insists on digits).
pub const DEFAULT_APP_ID: &str = "1";
/// The embedded default app's key.
pub const DEFAULT_APP_KEY: &str = "app-key";
/// The embedded default app's secret.
pub const DEFAULT_APP_SECRET: &str = "app-secret";

/// A configuration problem, naming the field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file given with `--config`.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file given with `--config`.
        path: String,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: `{field}` {problem}")]
    Invalid {
        /// The offending field, e.g. `apps[0].key` or `HERALD_PORT`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Per-app limits. The defaults are Pusher's documented limits, except the data size, which
/// follows the HTTP API reference Herald implements (100 KB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppLimits {
    /// Simultaneous connections; `0` means unlimited.
    pub max_connections: usize,
    /// Largest `data` of an HTTP-triggered event, in bytes (413 above it).
    pub max_event_data_bytes: usize,
    /// Channels one trigger may name.
    pub max_channels_per_trigger: usize,
    /// Events one batch may hold.
    pub max_events_per_batch: usize,
    /// Longest channel name accepted on subscribe and trigger.
    pub max_channel_name_length: usize,
    /// Whether clients may send `client-` events.
    pub client_events: bool,
    /// Client events each connection may send per second.
    pub client_events_per_second: u32,
    /// Distinct users per presence channel.
    pub max_presence_members: usize,
    /// Longest presence `user_id`, in characters.
    pub max_presence_user_id_length: usize,
    /// Largest presence `user_info`, in bytes of JSON.
    pub max_presence_user_info_bytes: usize,
    /// HTTP API publishes (events, batches, terminations) per second; 0 is unlimited.
    pub publishes_per_second: u64,
    /// HTTP API reads (channel queries) per second; 0 is unlimited.
    pub reads_per_second: u64,
    /// Messages per UTC day (one per event per channel plus one per delivery); 0 is
    /// unlimited. Over it, publishes answer 403.
    pub messages_per_day: u64,
}

impl Default for AppLimits {
    fn default() -> Self {
        AppLimits {
            max_connections: 0,
            max_event_data_bytes: 100 * 1024,
            max_channels_per_trigger: 100,
            max_events_per_batch: 10,
            max_channel_name_length: 200,
            client_events: true,
            client_events_per_second: 10,
            max_presence_members: 100,
            max_presence_user_id_length: 128,
            max_presence_user_info_bytes: 1024,
            publishes_per_second: 0,
            reads_per_second: 0,
            messages_per_day: 0,
        }
    }
}

/// One webhook endpoint of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where events are POSTed (http or https).
    pub url: String,
    /// Event names this endpoint receives; empty means all.
    pub event_types: Vec<String>,
    /// Only events on channels starting with this prefix.
    pub channel_prefix: Option<String>,
}

/// One application: credentials and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConfig {
    /// The id in HTTP API paths.
    pub id: String,
    /// The public key clients connect with.
    pub key: String,
    /// The secret every signature is keyed with.
    pub secret: String,
    /// A disabled app refuses connections (4003) and API calls (403).
    pub enabled: bool,
    /// The app's limits.
    pub limits: AppLimits,
    /// Close code for sockets closed by `terminate_connections`. 4009 (the default) tells
    /// pusher-js not to reconnect; a 42xx code lets it reconnect and sign in again.
    pub terminate_close_code: u16,
    /// Seconds a connection may stay without signing in (or subscribing to a private or
    /// presence channel) before it is closed with 4009; 0 disables the rule.
    pub user_authentication_timeout: u64,
    /// How long a cache channel keeps its last event (Pusher: 30 minutes).
    pub cache_ttl: Duration,
    /// Send `pusher_internal:subscription_count` to subscribers of non-presence channels
    /// when their count changes.
    pub subscription_count: bool,
    /// Webhook endpoints.
    pub webhooks: Vec<WebhookConfig>,
}

impl AppConfig {
    fn embedded_default() -> Self {
        AppConfig {
            id: DEFAULT_APP_ID.to_owned(),
            key: DEFAULT_APP_KEY.to_owned(),
            secret: DEFAULT_APP_SECRET.to_owned(),
            enabled: true,
            limits: AppLimits::default(),
            terminate_close_code: DEFAULT_TERMINATE_CLOSE_CODE,
            user_authentication_timeout: 0,
            cache_ttl: DEFAULT_CACHE_TTL,
            subscription_count: false,
            webhooks: Vec::new(),
        }
    }
}

/// `terminate_connections` closes with "connection is unauthorized" by default (spec §8).
const DEFAULT_TERMINATE_CLOSE_CODE: u16 = 4009;

/// Pusher documents a 30-minute lifetime for cached events.
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30 * 60);

/// The validated configuration the server runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to bind.
    pub host: String,
    /// Port to bind; `0` picks a free one.
    pub port: u16,
    /// Sent to clients in `connection_established`; also how long the server lets a socket
    /// stay silent before pinging it.
    pub activity_timeout: Duration,
    /// How long the server waits for any frame after its ping before closing with 4201.
    pub pong_timeout: Duration,
    /// How long a client may take to finish a frame or fragmented message once it has
    /// started one, before the server closes with 1008.
    pub partial_message_timeout: Duration,
    /// Largest inbound WebSocket message.
    pub max_message_bytes: usize,
    /// Refuse WebSocket connections without a `protocol` query parameter (4008). Off by
    /// default: every current client sends it, and Pusher itself still infers one.
    pub require_protocol: bool,
    /// Bytes a connection may have queued for sending before it is closed with 4100.
    pub outbox_max_bytes: usize,
    /// How long shutdown waits for sockets and requests to finish.
    pub shutdown_grace: Duration,
    /// How long a `channel_vacated` webhook is held back; a channel occupied again within it
    /// reports neither event, so quick reconnects do not flap.
    pub webhook_vacated_delay: Duration,
    /// Shared state with other nodes through Redis; `None` runs a single in-memory node.
    pub cluster: Option<ClusterConfig>,
    /// The apps served.
    pub apps: Vec<AppConfig>,
}

/// How a node joins a cluster (`adapter = "redis"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The Redis server every node of the cluster uses, e.g. `redis://127.0.0.1:6379/0`.
    pub redis_url: String,
    /// Prefix of every Redis key and channel, so several clusters can share one Redis.
    pub redis_prefix: String,
    /// How long a node may go without a heartbeat before the others remove its
    /// connections' channel and presence state.
    pub node_timeout: Duration,
}

/// The default for [`ClusterConfig::node_timeout`].
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".to_owned(),
            port: 6001,
            activity_timeout: Duration::from_secs(120),
            pong_timeout: Duration::from_secs(30),
            partial_message_timeout: Duration::from_secs(30),
            max_message_bytes: 64 * 1024,
            require_protocol: false,
            outbox_max_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            webhook_vacated_delay: Duration::from_secs(1),
            cluster: None,
            apps: vec![AppConfig::embedded_default()],
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    host: Option<String>,
    port: Option<u16>,
    activity_timeout: Option<u64>,
    pong_timeout: Option<u64>,
    partial_message_timeout: Option<u64>,
    max_message_bytes: Option<usize>,
    require_protocol: Option<bool>,
    outbox_max_bytes: Option<usize>,
    shutdown_grace: Option<u64>,
    webhook_vacated_delay_ms: Option<u64>,
    adapter: Option<String>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    node_timeout: Option<u64>,
    #[serde(default)]
    plans: HashMap<String, RawPlan>,
    #[serde(default)]
    apps: Vec<RawApp>,
}

/// A named set of limits apps can refer to (`plan = "pro"`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    publishes_per_second: Option<u64>,
    reads_per_second: Option<u64>,
    messages_per_day: Option<u64>,
    max_connections: Option<usize>,
    client_events_per_second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Option<String>,
    #[serde(default)]
    event_types: Vec<String>,
    channel_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    id: Option<String>,
    key: Option<String>,
    secret: Option<String>,
    enabled: Option<bool>,
    plan: Option<String>,
    publishes_per_second: Option<u64>,
    reads_per_second: Option<u64>,
    messages_per_day: Option<u64>,
    max_connections: Option<usize>,
    max_event_data_bytes: Option<usize>,
    max_channels_per_trigger: Option<usize>,
    max_events_per_batch: Option<usize>,
    max_channel_name_length: Option<usize>,
    client_events: Option<bool>,
    client_events_per_second: Option<u32>,
    max_presence_members: Option<usize>,
    max_presence_user_id_length: Option<usize>,
    max_presence_user_info_bytes: Option<usize>,
    terminate_close_code: Option<u16>,
    user_authentication_timeout: Option<u64>,
    cache_ttl: Option<u64>,
    subscription_count: Option<bool>,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
}

impl Config {
    /// Builds the configuration: defaults, then the TOML file if given, then environment
    /// variables (`HERALD_HOST`, `HERALD_PORT`, `HERALD_ACTIVITY_TIMEOUT`,
    /// `HERALD_PONG_TIMEOUT`, and `HERALD_APP_ID`/`_KEY`/`_SECRET` for the single app when the
    /// file defines none). `env` is injected so tests need not touch the process environment.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw = match path {
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: shown.clone(),
                    source,
                })?;
                toml::from_str::<RawConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: shown,
                    message: e.to_string().trim().replace('\n', " "),
                })?
            }
            None => RawConfig::default(),
        };
        Self::from_raw(raw, env)
    }

    /// Parses TOML text; used by tests and by [`Config::load`]'s callers that embed config.
    pub fn from_toml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw = toml::from_str::<RawConfig>(text).map_err(|e| ConfigError::Parse {
            path: "<inline>".to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        Self::from_raw(raw, env)
    }

    fn from_raw(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let d = Config::default();
        let mut config = Config {
            host: raw.host.unwrap_or(d.host),
            port: raw.port.unwrap_or(d.port),
            activity_timeout: raw
                .activity_timeout
                .map_or(d.activity_timeout, Duration::from_secs),
            pong_timeout: raw.pong_timeout.map_or(d.pong_timeout, Duration::from_secs),
            partial_message_timeout: raw
                .partial_message_timeout
                .map_or(d.partial_message_timeout, Duration::from_secs),
            max_message_bytes: raw.max_message_bytes.unwrap_or(d.max_message_bytes),
            require_protocol: raw.require_protocol.unwrap_or(d.require_protocol),
            outbox_max_bytes: raw.outbox_max_bytes.unwrap_or(d.outbox_max_bytes),
            shutdown_grace: raw
                .shutdown_grace
                .map_or(d.shutdown_grace, Duration::from_secs),
            webhook_vacated_delay: raw
                .webhook_vacated_delay_ms
                .map_or(d.webhook_vacated_delay, Duration::from_millis),
            cluster: None,
            apps: Vec::new(),
        };
        let adapter = env("HERALD_ADAPTER").or(raw.adapter);
        let redis_url = env("HERALD_REDIS_URL").or(raw.redis_url);
        config.cluster = match adapter.as_deref().unwrap_or("local") {
            "local" => None,
            "redis" => Some(ClusterConfig {
                redis_url: redis_url.unwrap_or_else(|| "redis://127.0.0.1:6379/0".to_owned()),
                redis_prefix: raw.redis_prefix.unwrap_or_else(|| "herald".to_owned()),
                node_timeout: raw
                    .node_timeout
                    .map_or(DEFAULT_NODE_TIMEOUT, Duration::from_secs),
            }),
            other => {
                return Err(invalid(
                    "adapter",
                    format!("must be \"local\" or \"redis\", not '{other}'"),
                ))
            }
        };
        for (i, app) in raw.apps.into_iter().enumerate() {
            config.apps.push(app_from_raw(i, app, &raw.plans)?);
        }
        let from_file = !config.apps.is_empty();
        if !from_file {
            config.apps.push(AppConfig::embedded_default());
        }

        if let Some(v) = env("HERALD_HOST") {
            config.host = v;
        }
        if let Some(v) = env("HERALD_PORT") {
            config.port = v
                .parse()
                .map_err(|_| invalid("HERALD_PORT", format!("is not a port number: '{v}'")))?;
        }
        for (name, slot) in [
            ("HERALD_ACTIVITY_TIMEOUT", &mut config.activity_timeout),
            ("HERALD_PONG_TIMEOUT", &mut config.pong_timeout),
        ] {
            if let Some(v) = env(name) {
                let secs: u64 = v
                    .parse()
                    .map_err(|_| invalid(name, format!("is not a number of seconds: '{v}'")))?;
                *slot = Duration::from_secs(secs);
            }
        }
        let app_env = [
            env("HERALD_APP_ID"),
            env("HERALD_APP_KEY"),
            env("HERALD_APP_SECRET"),
        ];
        if app_env.iter().any(Option::is_some) {
            if from_file {
                return Err(invalid(
                    "HERALD_APP_ID",
                    "cannot be combined with [[apps]] in the config file",
                ));
            }
            let [id, key, secret] = app_env;
            let app = &mut config.apps[0];
            if let Some(id) = id {
                app.id = id;
            }
            if let Some(key) = key {
                app.key = key;
            }
            if let Some(secret) = secret {
                app.secret = secret;
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.host.is_empty() {
            return Err(invalid("host", "must not be empty"));
        }
        if self.activity_timeout.is_zero() {
            return Err(invalid(
                "activity_timeout",
                "must be at least 1 second (pusher-js rejects 0)",
            ));
        }
        if self.pong_timeout.is_zero() {
            return Err(invalid("pong_timeout", "must be at least 1 second"));
        }
        if !(1..=3600).contains(&self.partial_message_timeout.as_secs()) {
            return Err(invalid(
                "partial_message_timeout",
                "must be from 1 to 3600 seconds",
            ));
        }
        if let Some(cluster) = &self.cluster {
            if !cluster.redis_url.starts_with("redis://")
                && !cluster.redis_url.starts_with("unix://")
            {
                return Err(invalid("redis_url", "must start with redis:// or unix://"));
            }
            if cluster.node_timeout < Duration::from_secs(1) {
                return Err(invalid("node_timeout", "must be at least 1 second"));
            }
            if cluster.redis_prefix.is_empty() {
                return Err(invalid("redis_prefix", "must not be empty"));
            }
        }
        if self.max_message_bytes < 1024 {
            return Err(invalid("max_message_bytes", "must be at least 1024"));
        }
        if self.outbox_max_bytes < self.max_message_bytes {
            return Err(invalid(
                "outbox_max_bytes",
                "must be at least max_message_bytes",
            ));
        }
        for (i, app) in self.apps.iter().enumerate() {
            for (field, value) in [("id", &app.id), ("key", &app.key), ("secret", &app.secret)] {
                if value.is_empty() {
                    return Err(invalid(format!("apps[{i}].{field}"), "must not be empty"));
                }
            }
            if !app
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    format!("apps[{i}].id"),
                    "may only contain letters, digits, '-' and '_'",
                ));
            }
            if app.key.contains(['/', '?', '#', ' ']) {
                return Err(invalid(
                    format!("apps[{i}].key"),
                    "must not contain '/', '?', '#' or spaces",
                ));
            }
            for (j, other) in self.apps.iter().enumerate().skip(i + 1) {
                if other.id == app.id {
                    return Err(invalid(
                        format!("apps[{j}].id"),
                        format!("duplicates apps[{i}].id '{}'", app.id),
                    ));
                }
                if other.key == app.key {
                    return Err(invalid(
                        format!("apps[{j}].key"),
                        format!("duplicates apps[{i}].key"),
                    ));
                }
            }
            let l = &app.limits;
            for (field, value) in [
                ("max_event_data_bytes", l.max_event_data_bytes),
                ("max_channels_per_trigger", l.max_channels_per_trigger),
                ("max_events_per_batch", l.max_events_per_batch),
                ("max_channel_name_length", l.max_channel_name_length),
                ("max_presence_members", l.max_presence_members),
                ("max_presence_user_id_length", l.max_presence_user_id_length),
                (
                    "max_presence_user_info_bytes",
                    l.max_presence_user_info_bytes,
                ),
            ] {
                if value == 0 {
                    return Err(invalid(format!("apps[{i}].{field}"), "must be at least 1"));
                }
            }
            if app.cache_ttl.is_zero() {
                return Err(invalid(
                    format!("apps[{i}].cache_ttl"),
                    "must be at least 1 second",
                ));
            }
            if !(4000..=4999).contains(&app.terminate_close_code) {
                return Err(invalid(
                    format!("apps[{i}].terminate_close_code"),
                    "must be a Pusher close code between 4000 and 4999",
                ));
            }
            if l.client_events && l.client_events_per_second == 0 {
                return Err(invalid(
                    format!("apps[{i}].client_events_per_second"),
                    "must be at least 1 when client_events is on",
                ));
            }
        }
        Ok(())
    }

    /// Whether an app still uses the embedded default credentials, which anyone can read in
    /// this repository.
    pub fn uses_default_credentials(&self) -> bool {
        self.apps
            .iter()
            .any(|a| a.key == DEFAULT_APP_KEY || a.secret == DEFAULT_APP_SECRET)
    }
}

fn webhook_from_raw(i: usize, j: usize, raw: RawWebhook) -> Result<WebhookConfig, ConfigError> {
    let field = |name: &str| format!("apps[{i}].webhooks[{j}].{name}");
    let url = raw
        .url
        .ok_or_else(|| invalid(field("url"), "is required"))?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid(
            field("url"),
            format!("must be an http:// or https:// URL, not '{url}'"),
        ));
    }
    if let Some(bad) = raw
        .event_types
        .iter()
        .find(|t| !crate::webhooks::is_event_name(t))
    {
        return Err(invalid(
            field("event_types"),
            format!("has an unknown event '{bad}' (channel_occupied, channel_vacated, member_added, member_removed, client_event, cache_miss, subscription_count)"),
        ));
    }
    Ok(WebhookConfig {
        url,
        event_types: raw.event_types,
        channel_prefix: raw.channel_prefix,
    })
}

fn app_from_raw(
    i: usize,
    raw: RawApp,
    plans: &HashMap<String, RawPlan>,
) -> Result<AppConfig, ConfigError> {
    // Limits resolve as: built-in defaults, then the app's plan, then the app's own keys.
    let no_plan = RawPlan::default();
    let plan = match raw.plan.as_deref() {
        Some(name) => plans.get(name).ok_or_else(|| {
            let mut known: Vec<&str> = plans.keys().map(String::as_str).collect();
            known.sort_unstable();
            invalid(
                format!("apps[{i}].plan"),
                format!(
                    "names an unknown plan '{name}' (defined: {})",
                    known.join(", ")
                ),
            )
        })?,
        None => &no_plan,
    };
    let base = AppLimits::default();
    let d = AppLimits {
        publishes_per_second: plan
            .publishes_per_second
            .unwrap_or(base.publishes_per_second),
        reads_per_second: plan.reads_per_second.unwrap_or(base.reads_per_second),
        messages_per_day: plan.messages_per_day.unwrap_or(base.messages_per_day),
        max_connections: plan.max_connections.unwrap_or(base.max_connections),
        client_events_per_second: plan
            .client_events_per_second
            .unwrap_or(base.client_events_per_second),
        ..base
    };
    let webhooks = raw
        .webhooks
        .into_iter()
        .enumerate()
        .map(|(j, w)| webhook_from_raw(i, j, w))
        .collect::<Result<Vec<_>, _>>()?;
    let required = |v: Option<String>, field: &str| {
        v.ok_or_else(|| invalid(format!("apps[{i}].{field}"), "is required"))
    };
    Ok(AppConfig {
        id: required(raw.id, "id")?,
        key: required(raw.key, "key")?,
        secret: required(raw.secret, "secret")?,
        enabled: raw.enabled.unwrap_or(true),
        terminate_close_code: raw
            .terminate_close_code
            .unwrap_or(DEFAULT_TERMINATE_CLOSE_CODE),
        user_authentication_timeout: raw.user_authentication_timeout.unwrap_or(0),
        cache_ttl: raw.cache_ttl.map_or(DEFAULT_CACHE_TTL, Duration::from_secs),
        subscription_count: raw.subscription_count.unwrap_or(false),
        webhooks,
        limits: AppLimits {
            max_connections: raw.max_connections.unwrap_or(d.max_connections),
            max_event_data_bytes: raw.max_event_data_bytes.unwrap_or(d.max_event_data_bytes),
            max_channels_per_trigger: raw
                .max_channels_per_trigger
                .unwrap_or(d.max_channels_per_trigger),
            max_events_per_batch: raw.max_events_per_batch.unwrap_or(d.max_events_per_batch),
            max_channel_name_length: raw
                .max_channel_name_length
                .unwrap_or(d.max_channel_name_length),
            client_events: raw.client_events.unwrap_or(d.client_events),
            client_events_per_second: raw
                .client_events_per_second
                .unwrap_or(d.client_events_per_second),
            max_presence_members: raw.max_presence_members.unwrap_or(d.max_presence_members),
            max_presence_user_id_length: raw
                .max_presence_user_id_length
                .unwrap_or(d.max_presence_user_id_length),
            max_presence_user_info_bytes: raw
                .max_presence_user_info_bytes
                .unwrap_or(d.max_presence_user_info_bytes),
            publishes_per_second: raw.publishes_per_second.unwrap_or(d.publishes_per_second),
            reads_per_second: raw.reads_per_second.unwrap_or(d.reads_per_second),
            messages_per_day: raw.messages_per_day.unwrap_or(d.messages_per_day),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_redis_adapter_is_chosen_in_the_file_or_the_environment() {
        let c = Config::from_toml(
            "adapter = \"redis\"\nredis_url = \"redis://10.0.0.5:6380/2\"\nnode_timeout = 5\n",
            &no_env,
        )
        .expect("valid");
        let cluster = c.cluster.expect("a cluster");
        assert_eq!(cluster.redis_url, "redis://10.0.0.5:6380/2");
        assert_eq!(cluster.redis_prefix, "herald");
        assert_eq!(cluster.node_timeout, Duration::from_secs(5));

        let env = |k: &str| (k == "HERALD_ADAPTER").then(|| "redis".to_owned());
        let c = Config::from_toml("", &env).expect("valid");
        assert_eq!(
            c.cluster.map(|c| (c.redis_url, c.node_timeout)),
            Some(("redis://127.0.0.1:6379/0".to_owned(), DEFAULT_NODE_TIMEOUT))
        );

        for (toml, field) in [
            ("adapter = \"nats\"", "adapter"),
            ("adapter = \"redis\"\nredis_url = \"http://x\"", "redis_url"),
            ("adapter = \"redis\"\nnode_timeout = 0", "node_timeout"),
        ] {
            let error = Config::from_toml(toml, &no_env)
                .expect_err(toml)
                .to_string();
            assert!(error.contains(field), "{toml}: {error}");
        }
        assert_eq!(Config::from_toml("", &no_env).expect("valid").cluster, None);
    }

    #[test]
    fn partial_message_timeout_is_read_in_seconds() {
        assert_eq!(
            Config::default().partial_message_timeout,
            Duration::from_secs(30)
        );
        let c = Config::from_toml("partial_message_timeout = 1", &no_env).expect("valid");
        assert_eq!(c.partial_message_timeout, Duration::from_secs(1));
        let c = Config::from_toml("partial_message_timeout = 3600", &no_env).expect("valid");
        assert_eq!(c.partial_message_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn empty_config_is_the_embedded_default() {
        let c = Config::from_toml("", &no_env).expect("valid");
        assert_eq!(c, Config::default());
        assert!(c.uses_default_credentials());
    }

    #[test]
    fn file_apps_replace_the_default_and_keep_limit_defaults() {
        let c = Config::from_toml(
            "port = 7000\n[[apps]]\nid = \"9\"\nkey = \"k\"\nsecret = \"s\"\nclient_events = false\n",
            &no_env,
        )
        .expect("valid");
        assert_eq!(c.port, 7000);
        assert_eq!(c.apps.len(), 1);
        assert_eq!(c.apps[0].id, "9");
        assert!(!c.apps[0].limits.client_events);
        assert_eq!(c.apps[0].limits.max_channels_per_trigger, 100);
        assert!(!c.uses_default_credentials());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("bogus = 1", "bogus"),
            ("port = \"x\"", "port"),
            ("[[apps]]\nid = \"1\"\nkey = \"k\"", "apps[0].secret"),
            (
                "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nmax_events_per_batch = 0",
                "apps[0].max_events_per_batch",
            ),
            (
                "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[[apps]]\nid = \"1\"\nkey = \"k2\"\nsecret = \"s\"",
                "apps[1].id",
            ),
            ("activity_timeout = 0", "activity_timeout"),
            ("partial_message_timeout = 0", "partial_message_timeout"),
            ("partial_message_timeout = 3601", "partial_message_timeout"),
            (
                "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[[apps.webhooks]]\nurl = \"ftp://x\"",
                "apps[0].webhooks[0].url",
            ),
            (
                "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[[apps.webhooks]]\nurl = \"http://x\"\nevent_types = [\"channel_occupid\"]",
                "apps[0].webhooks[0].event_types",
            ),
        ];
        for (text, field) in cases {
            let err = Config::from_toml(text, &no_env)
                .expect_err(text)
                .to_string();
            assert!(err.contains(field), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn apps_take_limits_from_their_plan_and_override_them() {
        let c = Config::from_toml(
            "[plans.free]\npublishes_per_second = 5\nmax_connections = 100\nmessages_per_day = 1000\n\
             [[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nplan = \"free\"\nmax_connections = 7\n",
            &no_env,
        )
        .expect("valid");
        let l = &c.apps[0].limits;
        assert_eq!(l.publishes_per_second, 5, "from the plan");
        assert_eq!(l.messages_per_day, 1000, "from the plan");
        assert_eq!(l.max_connections, 7, "the app's own value wins");
        assert_eq!(l.reads_per_second, 0, "unset everywhere: unlimited");
        let err = Config::from_toml(
            "[plans.free]\n[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nplan = \"gold\"\n",
            &no_env,
        )
        .expect_err("unknown plan")
        .to_string();
        assert!(
            err.contains("apps[0].plan") && err.contains("free"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = |k: &str| match k {
            "HERALD_PORT" => Some("7001".to_owned()),
            "HERALD_APP_KEY" => Some("k2".to_owned()),
            _ => None,
        };
        let c = Config::from_toml("port = 7000", &env).expect("valid");
        assert_eq!(c.port, 7001);
        assert_eq!(c.apps[0].key, "k2");
        let bad = |k: &str| (k == "HERALD_PORT").then(|| "port".to_owned());
        let err = Config::from_toml("", &bad)
            .expect_err("bad port")
            .to_string();
        assert!(err.contains("HERALD_PORT"), "{err}");
    }
}
