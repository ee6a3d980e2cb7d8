//! Server configuration: the TOML file, environment variables on top, and the embedded
//! default app, validated into typed values before anything binds a port.
//!
//! Every default lives in this file. A bad value stops start-up with a [`ConfigError`] that
//! names the field, so a typo never silently falls back to a default.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::adapter::config::AdapterConfig;
use crate::adapter::config::{AdapterKeys, TlsKeys};
pub use crate::app_fields::{app_from_fields, validate_app, validate_apps, Plans};
use crate::app_fields::{app_from_fields_reaching, app_from_raw, raw_to_fields, RawApp, RawPlan};
use crate::config_errors::{bad_env, parse_toml, PORT_NUMBER, WHOLE_NUMBER};
pub use crate::redact::redact_url;
use crate::redact::REDACTED;
pub use crate::webhooks::{AllowedNetworks, SharedQueue, WebhookReach};

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
    /// The file is not valid TOML or has unknown keys or wrong types. Shown on several
    /// lines: where, the line itself with a caret under the fault, then what is wrong.
    #[error("invalid config file {path}{}", shown_parse(.location, .snippet, .message))]
    Parse {
        /// The file given with `--config`.
        path: String,
        /// `, line L, column C`, or empty when the parser gave no place.
        location: String,
        /// The line at fault and a caret under the fault, each line ending in `\n`.
        snippet: String,
        /// What is wrong, on one line: the key and what its value must be, or the nearest
        /// known key to a misspelt one.
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
    /// A TLS certificate or key file cannot be served.
    #[error("invalid config: `{field}` file {path}: {problem}")]
    Tls {
        /// `tls_cert` or `tls_key`.
        field: &'static str,
        /// The file at fault.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ConfigError {
    /// The error on one line, for a log: a parse error without the line it shows.
    pub fn one_line(&self) -> String {
        match self {
            ConfigError::Parse {
                path,
                location,
                message,
                ..
            } => format!("invalid config file {path}{location}: {message}"),
            other => other.to_string(),
        }
    }
}

/// The rest of a [`ConfigError::Parse`]: on one line when there is no place to show.
fn shown_parse(location: &str, snippet: &str, message: &str) -> String {
    if location.is_empty() {
        format!(": {message}")
    } else {
        format!("{location}:\n{snippet}{message}")
    }
}

pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Per-app limits. The defaults are Pusher's documented limits, except the data size, which
/// follows the HTTP API reference Herald implements (100 KB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppLimits {
    /// Simultaneous connections; `0` means unlimited.
    pub max_connections: usize,
    /// Channels one connection may be subscribed to at once.
    pub max_subscriptions_per_connection: usize,
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
            max_subscriptions_per_connection: DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION,
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

/// Pusher documents no per-connection channel limit; a thousand is far more than any
/// real client holds, and bounds what one unauthenticated socket can make the server keep.
const DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 1000;

/// One webhook endpoint of an app. `Debug` shows the URL without its credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where events are POSTed (http or https).
    pub url: String,
    /// Event names this endpoint receives; empty means all.
    pub event_types: Vec<String>,
    /// Only events on channels starting with this prefix.
    pub channel_prefix: Option<String>,
    /// Which addresses it may be delivered to: any for the config file's apps, public ones
    /// (and `webhook_allowed_networks`) for an app from the database.
    pub reach: WebhookReach,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redact_url(&self.url))
            .field("event_types", &self.event_types)
            .field("channel_prefix", &self.channel_prefix)
            .field("reach", &self.reach)
            .finish()
    }
}

/// One application: credentials and limits. `Debug` shows everything but the secret (and
/// the webhook URLs' credentials).
#[derive(Clone, PartialEq, Eq)]
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
    /// How much of each channel's recent events the node keeps for the history API.
    pub history: HistoryLimits,
    /// How long what a connection ended uncleanly was subscribed to is remembered for its
    /// identity's next connection; zero turns recovery off. Recovery also needs history.
    pub recovery_window: Duration,
    /// Webhook endpoints.
    pub webhooks: Vec<WebhookConfig>,
    /// The plan (`[plans.NAME]`) its limits start from, if any: what a refusal names.
    pub plan: Option<String>,
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("secret", &REDACTED)
            .field("enabled", &self.enabled)
            .field("limits", &self.limits)
            .field("terminate_close_code", &self.terminate_close_code)
            .field(
                "user_authentication_timeout",
                &self.user_authentication_timeout,
            )
            .field("cache_ttl", &self.cache_ttl)
            .field("subscription_count", &self.subscription_count)
            .field("history", &self.history)
            .field("recovery_window", &self.recovery_window)
            .field("webhooks", &self.webhooks)
            .field("plan", &self.plan)
            .finish()
    }
}

impl AppConfig {
    /// Whether connections of this app are tracked for recovery: a window, and history to
    /// replay from.
    pub fn recovers(&self) -> bool {
        self.history.on() && !self.recovery_window.is_zero()
    }

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
            history: HistoryLimits::default(),
            recovery_window: DEFAULT_RECOVERY_WINDOW,
            webhooks: Vec::new(),
            plan: None,
        }
    }

    /// Who sets the app's limits, for a refusal's message: "this app" or "this app's plan
    /// 'pro'", so that an app with no plan is not told of one.
    pub fn limits_holder(&self) -> String {
        match &self.plan {
            Some(plan) => format!("this app's plan '{plan}'"),
            None => "this app".to_owned(),
        }
    }
}

/// The bounds of each channel's history: an event is evicted, oldest first, once the
/// channel keeps more than `max_events` events or `max_bytes` bytes of frames, or once it
/// is older than `max_age`. `max_events` 0 (the default) keeps no history at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Events kept per channel; 0 turns history off for the app.
    pub max_events: usize,
    /// How long an event is kept.
    pub max_age: Duration,
    /// Bytes of frames kept per channel.
    pub max_bytes: usize,
}

impl HistoryLimits {
    /// Whether the app keeps history at all.
    pub fn on(&self) -> bool {
        self.max_events > 0
    }
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            max_events: 0,
            max_age: DEFAULT_HISTORY_MAX_AGE,
            max_bytes: DEFAULT_HISTORY_MAX_BYTES,
        }
    }
}

/// Issue 27's window: a tunnel, a laptop lid, a deploy's drain.
pub(crate) const DEFAULT_RECOVERY_WINDOW: Duration = Duration::from_secs(120);

/// Long enough to cover a reconnect after a tunnel or a deploy, short enough that the
/// channels published to once do not stay in memory for long.
pub(crate) const DEFAULT_HISTORY_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// 64 KiB a channel: a hundred events of a few hundred bytes.
pub(crate) const DEFAULT_HISTORY_MAX_BYTES: usize = 64 * 1024;

/// `terminate_connections` closes with "connection is unauthorized" by default (spec §8).
pub(crate) const DEFAULT_TERMINATE_CLOSE_CODE: u16 = 4009;

/// Pusher documents a 30-minute lifetime for cached events.
pub(crate) const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30 * 60);

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
    /// Frames (data and control, of any kind) one WebSocket connection may have read and
    /// handled per second; past it the server stops reading that socket until its budget
    /// refills.
    pub client_frames_per_second: u32,
    /// Bytes of messages one WebSocket connection may have read and handled per second,
    /// each compressed message counted at its inflated size; past it, as above.
    pub client_bytes_per_second: u32,
    /// Refuse WebSocket connections without a `protocol` query parameter (4008). Off by
    /// default: every current client sends it, and Pusher itself still infers one.
    pub require_protocol: bool,
    /// Bytes a connection may have queued for sending before it is closed with 4100.
    pub outbox_max_bytes: usize,
    /// Accept permessage-deflate offers (RFC 7692), each message compressed on its own.
    pub compression: bool,
    /// Frames smaller than this go out uncompressed even on a compressed connection: below
    /// it, DEFLATE saves a few bytes for the cost of a compression run.
    pub compression_min_bytes: usize,
    /// How long shutdown waits for sockets and requests to finish.
    pub shutdown_grace: Duration,
    /// How long shutdown waits, once the connections are drained, for leaving the cluster
    /// and for the webhooks still to be delivered; what is left then is dropped and counted.
    pub webhook_flush_timeout: Duration,
    /// How long a `channel_vacated` webhook is held back; a channel occupied again within it
    /// reports neither event, so quick reconnects do not flap.
    pub webhook_vacated_delay: Duration,
    /// What the node shares events and state through (`adapter`): nothing (a single
    /// in-memory node), or a cluster's backend.
    pub adapter: AdapterConfig,
    /// The node's id in socket ids and in its cluster (`node_id`, `HERALD_NODE_ID`); `None`
    /// draws a random one at start. A cluster node refuses to start with an id another
    /// live node holds.
    pub node_id: Option<u32>,
    /// What clients may hold open: timeouts and connection caps.
    pub net: NetLimits,
    /// The admin listener: metrics and health checks, away from the public port.
    pub admin: AdminConfig,
    /// How the `herald` binary writes its logs.
    pub log_format: LogFormat,
    /// Webhook deliveries in flight for one app; batches beyond are dropped and counted.
    pub webhook_max_in_flight: usize,
    /// Bytes of webhook bodies one app may hold for delivery and retry.
    pub webhook_max_queued_bytes: usize,
    /// Where the webhook queue lives: on disk under `data_dir` (the default), or in memory
    /// (lost at a restart).
    pub webhook_store: WebhookStoreKind,
    /// The node's data directory (`data_dir`, `HERALD_DATA_DIR`): the durable webhook
    /// queue, locked by one process at a time.
    pub data_dir: PathBuf,
    /// How long a failing webhook batch is retried before it becomes a dead letter.
    pub webhook_retry_period: Duration,
    /// How long a dead letter is kept.
    pub webhook_dead_letter_ttl: Duration,
    /// Bytes of webhook batches one app may keep in the queue, dead letters included.
    pub webhook_max_stored_bytes: usize,
    /// In a cluster, how long a node's batch may go untouched before another node claims
    /// it (a dead node's batches are sent by the others after this).
    pub webhook_lease: Duration,
    /// Where `herald serve` writes its process id (for `herald reload`), removed at a
    /// clean shutdown.
    pub pid_file: Option<PathBuf>,
    /// The apps served; empty when they live in a database (`apps_url`).
    pub apps: Vec<AppConfig>,
    /// The database the apps live in (`postgres://…`, `mysql://…`); `None` serves the
    /// file's `[[apps]]`.
    pub apps_url: Option<AppsUrl>,
    /// The file's named plans, which a database's apps refer to by name too.
    pub plans: Plans,
    /// Serve `https://` and `wss://` only, with this certificate; `None` serves plain
    /// HTTP and WebSocket.
    pub tls: Option<TlsConfig>,
}

/// The files the public port serves TLS with (`tls_cert`, `tls_key`). Only the paths are
/// kept here: the key itself is loaded by the server, so no `Debug` of the configuration can
/// show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of the certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Where the apps live when not in the file: a PostgreSQL or MySQL/MariaDB URL. `Debug`
/// hides its password.
#[derive(Clone, PartialEq, Eq)]
pub struct AppsUrl(String);

/// The kind of database an [`AppsUrl`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppsDb {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `mysql://` or `mariadb://`.
    MySql,
}

impl AppsUrl {
    /// Checks the scheme (`postgres://`, `postgresql://`, `mysql://` or `mariadb://`) and the
    /// TLS parameters of the query (`sslmode`, `sslrootcert`, …; `ssl-mode`, `ssl-ca`, …).
    pub fn parse(url: &str) -> Result<AppsUrl, ConfigError> {
        let url = url.trim();
        let scheme = url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("postgres" | "postgresql" | "mysql" | "mariadb") => {
                let parsed = AppsUrl(url.to_owned());
                // TLS to the database: its query's parameters (store/connect_url.rs).
                crate::store::connect_url::check(url, parsed.db())
                    .map_err(|problem| invalid("apps_url", problem))?;
                Ok(parsed)
            }
            _ => Err(invalid(
                "apps_url",
                format!(
                    "must be a postgres:// or mysql:// URL, not '{}'",
                    redact_url(url)
                ),
            )),
        }
    }

    /// Which database it names.
    pub fn db(&self) -> AppsDb {
        if self.0.starts_with("postgres") {
            AppsDb::Postgres
        } else {
            AppsDb::MySql
        }
    }

    /// The URL itself, password and all: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password hidden, for logs and messages. Unlike the cluster's URL
    /// ([`redact_url`]), a database URL's `user@` is only a user name, shown as it is.
    pub fn redacted(&self) -> String {
        let authority = self.0.split_once("://").map_or("", |(_, rest)| {
            rest.split(['/', '?', '#']).next().unwrap_or("")
        });
        let shown = match authority.rsplit_once('@') {
            Some((userinfo, _)) if !userinfo.contains(':') => self.0.clone(),
            _ => redact_url(&self.0),
        };
        crate::store::connect_url::hide_query_password(shown)
    }
}

impl std::fmt::Debug for AppsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The `[[apps]]` of a config file as each app's fields (see [`app_from_fields`]), each
/// checked first against the file's own `[plans]`, which come with them: what `herald apps
/// import` copies into a database.
pub fn apps_in_file(
    path: &Path,
) -> Result<(Plans, Vec<serde_json::Map<String, serde_json::Value>>), ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let raw = parse_toml::<RawConfig>(&shown, &text)?;
    // Checked as the file serves them; the database's own rules (the running config's
    // plans and webhook networks) are applied when they are written.
    let plans = Plans::from_file(raw.plans, raw.webhook_allowed_networks)?;
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

/// Where the webhook queue lives (`webhook_store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookStoreKind {
    /// On disk under `data_dir`: batches outlive the process.
    Disk,
    /// In memory: a restart loses what is not delivered.
    Memory,
}

/// How webhooks are delivered: the `channel_vacated` hold-back, and the bounds on what
/// one app's deliveries may hold while receivers are slow or failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// See [`Config::webhook_vacated_delay`].
    pub vacated_delay: Duration,
    /// See [`Config::webhook_max_in_flight`].
    pub max_in_flight: usize,
    /// See [`Config::webhook_max_queued_bytes`].
    pub max_queued_bytes: usize,
    /// See [`Config::webhook_store`].
    pub store: WebhookStoreKind,
    /// See [`Config::data_dir`].
    pub data_dir: PathBuf,
    /// See [`Config::webhook_retry_period`].
    pub retry_period: Duration,
    /// See [`Config::webhook_dead_letter_ttl`].
    pub dead_letter_ttl: Duration,
    /// See [`Config::webhook_max_stored_bytes`].
    pub max_stored_bytes: usize,
    /// See [`Config::webhook_lease`].
    pub lease: Duration,
    /// The queue the cluster's nodes share, when the node's backend has one; it takes the
    /// place of the disk (`webhook_store = "disk"`).
    pub shared: SharedQueue,
}

/// Bounds on the connections clients hold and how long a request may take. Every bound is
/// listed, with its default and what a client gets, in the README's "Limits and
/// protection".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetLimits {
    /// How long a client may take to send a request's headers: from the connection's
    /// start for the first request, from the first byte for the next ones.
    pub header_timeout: Duration,
    /// How long reading a request's body may take.
    pub body_timeout: Duration,
    /// How long a kept-alive HTTP connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Largest HTTP request body (413 above it).
    pub max_body_bytes: usize,
    /// How long a connection closed while its client still sends a body it was answered
    /// without (413, 401, 404) keeps reading and dropping that body, so the client reads
    /// the answer instead of a reset; zero closes at once.
    pub linger_timeout: Duration,
    /// Bytes such a connection reads and drops at most.
    pub linger_max_bytes: usize,
    /// Open connections (HTTP and WebSocket together); `0` derives it from the open-file
    /// limit at start-up, leaving headroom for the cluster's backend, webhooks and the logs.
    pub max_open_connections: usize,
    /// Open connections from one client address; `0` means no limit. Off by default:
    /// behind a load balancer or a carrier NAT every client shares one address.
    pub max_connections_per_ip: usize,
    /// The bits of an IPv6 address that name one client under `max_connections_per_ip`
    /// (`max_connections_per_ip_v6_prefix`): a client usually holds a whole /64. IPv4
    /// addresses (IPv4-mapped ones included) are counted whole.
    pub per_ip_v6_prefix: u8,
    /// Peers whose `X-Forwarded-For` header names the client address (the address the
    /// per-address cap counts); empty: the TCP peer is always the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_body_bytes: 4 * 1024 * 1024,
            linger_timeout: Duration::from_secs(5),
            linger_max_bytes: 64 * 1024 * 1024,
            max_open_connections: 0,
            max_connections_per_ip: 0,
            per_ip_v6_prefix: 64,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The admin listener (`/metrics`, `/live`, `/ready`, the console), on its own address so
/// the public port never serves them. `Debug` hides the tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address to bind; loopback by default.
    pub host: String,
    /// Port to bind. `None`: [`DEFAULT_ADMIN_PORT`], or a free port (with a warning) when it
    /// is taken, so two nodes started on one machine without a config both run. `Some(0)`
    /// picks a free port; any other explicit port must be free or start-up stops.
    pub port: Option<u16>,
    /// The admin token (`admin_token`): opens the console, its writes and `/metrics`;
    /// required off loopback. A reload replaces it.
    pub token: Option<String>,
    /// The metrics token (`metrics_token`): opens `/metrics` only, so a scraper's secret
    /// cannot publish. A reload replaces it.
    pub metrics_token: Option<String>,
    /// Host names the listener answers to besides the loopback names and `admin_host`
    /// (`admin_allowed_hosts`): a request naming any other `Host` is refused (DNS
    /// rebinding), unless it carries a token in its `Authorization` header.
    pub allowed_hosts: Vec<String>,
    /// Serve HTTPS only, with this certificate (`admin_tls_cert`, `admin_tls_key`).
    pub tls: Option<TlsConfig>,
}

/// The admin port soketi and sockudo use for their metrics, so scrape configs carry over.
pub const DEFAULT_ADMIN_PORT: u16 = 9601;

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            host: "127.0.0.1".to_owned(),
            port: None,
            token: None,
            metrics_token: None,
            allowed_hosts: Vec::new(),
            tls: None,
        }
    }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<redacted>"),
            )
            .field("allowed_hosts", &self.allowed_hosts)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Log output of the `herald` binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (tracing's JSON formatter).
    Json,
}

/// A listener's TLS files from its two keys (`keys`), both or neither.
fn tls_files(
    keys: (&'static str, &'static str),
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<TlsConfig>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsConfig { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(keys.1, format!("is required with {}", keys.0))),
        (None, Some(_)) => Err(invalid(keys.0, format!("is required with {}", keys.1))),
    }
}

/// Whether `host` (an address or `localhost`) only accepts connections from this machine.
pub fn is_loopback_host(host: &str) -> bool {
    host.parse::<std::net::IpAddr>()
        .map_or(host == "localhost", |ip| ip.is_loopback())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".to_owned(),
            port: 6001,
            activity_timeout: Duration::from_secs(120),
            pong_timeout: Duration::from_secs(30),
            partial_message_timeout: Duration::from_secs(30),
            max_message_bytes: 64 * 1024,
            client_frames_per_second: 200,
            client_bytes_per_second: 1024 * 1024,
            require_protocol: false,
            outbox_max_bytes: 1024 * 1024,
            compression: true,
            compression_min_bytes: 256,
            shutdown_grace: Duration::from_secs(10),
            webhook_flush_timeout: Duration::from_secs(5),
            webhook_vacated_delay: Duration::from_secs(1),
            adapter: AdapterConfig::Local,
            node_id: None,
            net: NetLimits::default(),
            admin: AdminConfig::default(),
            log_format: LogFormat::Text,
            webhook_max_in_flight: 64,
            webhook_max_queued_bytes: 8 * 1024 * 1024,
            // Unit tests build many configs in one process and in the crate's directory:
            // they keep the queue in memory, and the binary's default is the disk.
            webhook_store: if cfg!(test) {
                WebhookStoreKind::Memory
            } else {
                WebhookStoreKind::Disk
            },
            data_dir: PathBuf::from("./herald-data"),
            webhook_retry_period: Duration::from_secs(24 * 3600),
            webhook_dead_letter_ttl: Duration::from_secs(7 * 24 * 3600),
            webhook_max_stored_bytes: 256 * 1024 * 1024,
            webhook_lease: Duration::from_secs(30),
            pid_file: None,
            apps: vec![AppConfig::embedded_default()],
            apps_url: None,
            plans: Plans::default(),
            tls: None,
        }
    }
}

/// The file's keys as written: no `Debug`, as it holds every secret in the clear.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    host: Option<String>,
    port: Option<u16>,
    activity_timeout: Option<u64>,
    pong_timeout: Option<u64>,
    partial_message_timeout: Option<u64>,
    max_message_bytes: Option<usize>,
    client_frames_per_second: Option<u32>,
    client_bytes_per_second: Option<u32>,
    require_protocol: Option<bool>,
    outbox_max_bytes: Option<usize>,
    compression: Option<bool>,
    compression_min_bytes: Option<usize>,
    shutdown_grace: Option<u64>,
    webhook_flush_timeout: Option<u64>,
    webhook_vacated_delay_ms: Option<u64>,
    adapter: Option<String>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    node_timeout: Option<u64>,
    node_id: Option<u32>,
    http_header_timeout: Option<u64>,
    http_body_timeout: Option<u64>,
    http_idle_timeout: Option<u64>,
    max_request_body_bytes: Option<usize>,
    http_linger_timeout: Option<u64>,
    http_linger_max_bytes: Option<usize>,
    max_open_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_connections_per_ip_v6_prefix: Option<u8>,
    trusted_proxies: Option<Vec<String>>,
    webhook_allowed_networks: Option<Vec<String>>,
    admin_host: Option<String>,
    admin_port: Option<u16>,
    admin_token: Option<String>,
    metrics_token: Option<String>,
    admin_allowed_hosts: Option<Vec<String>>,
    admin_tls_cert: Option<PathBuf>,
    admin_tls_key: Option<PathBuf>,
    log_format: Option<String>,
    webhook_max_in_flight: Option<usize>,
    webhook_max_queued_bytes: Option<usize>,
    webhook_store: Option<String>,
    data_dir: Option<PathBuf>,
    webhook_retry_period: Option<u64>,
    webhook_dead_letter_ttl: Option<u64>,
    webhook_max_stored_bytes: Option<usize>,
    webhook_lease: Option<u64>,
    cluster_ops_per_app: Option<usize>,
    cluster_bus_max_bytes: Option<usize>,
    // TLS to the cluster's backend, checked with the adapter's other keys: one block, the
    // data nodes' keys, then the sentinels'.
    redis_tls_ca_file: Option<PathBuf>,
    redis_tls_cert_file: Option<PathBuf>,
    redis_tls_key_file: Option<PathBuf>,
    redis_tls_insecure_skip_name_check: Option<bool>,
    redis_sentinel_tls_ca_file: Option<PathBuf>,
    redis_sentinel_tls_cert_file: Option<PathBuf>,
    redis_sentinel_tls_key_file: Option<PathBuf>,
    redis_sentinel_tls_insecure_skip_name_check: Option<bool>,
    pid_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    apps_url: Option<String>,
    #[serde(default)]
    plans: HashMap<String, RawPlan>,
    #[serde(default)]
    apps: Vec<RawApp>,
}

impl Config {
    /// Builds the configuration: defaults, then the TOML file if given, then environment
    /// variables (`HERALD_HOST`, `HERALD_PORT`, `HERALD_ACTIVITY_TIMEOUT`,
    /// `HERALD_PONG_TIMEOUT`, `HERALD_TLS_CERT`/`_KEY`, and `HERALD_APP_ID`/`_KEY`/`_SECRET`
    /// for the single app when the file defines none). TLS files are read and checked here. `env` is injected so tests need not touch the process environment.
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
                parse_toml::<RawConfig>(&shown, &text)?
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
        let raw = parse_toml::<RawConfig>("<inline>", text)?;
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
            client_frames_per_second: raw
                .client_frames_per_second
                .unwrap_or(d.client_frames_per_second),
            client_bytes_per_second: raw
                .client_bytes_per_second
                .unwrap_or(d.client_bytes_per_second),
            require_protocol: raw.require_protocol.unwrap_or(d.require_protocol),
            outbox_max_bytes: raw.outbox_max_bytes.unwrap_or(d.outbox_max_bytes),
            compression: match env("HERALD_COMPRESSION") {
                Some(v) => parse_bool("HERALD_COMPRESSION", &v)?,
                None => raw.compression.unwrap_or(d.compression),
            },
            compression_min_bytes: raw.compression_min_bytes.unwrap_or(d.compression_min_bytes),
            shutdown_grace: raw
                .shutdown_grace
                .map_or(d.shutdown_grace, Duration::from_secs),
            webhook_flush_timeout: raw
                .webhook_flush_timeout
                .map_or(d.webhook_flush_timeout, Duration::from_secs),
            webhook_vacated_delay: raw
                .webhook_vacated_delay_ms
                .map_or(d.webhook_vacated_delay, Duration::from_millis),
            adapter: AdapterConfig::Local,
            node_id: match env("HERALD_NODE_ID") {
                Some(v) => Some(v.trim().parse().map_err(|_| {
                    bad_env("HERALD_NODE_ID", "a whole number from 1 to 4294967295", &v)
                })?),
                None => raw.node_id,
            },
            net: NetLimits {
                header_timeout: raw
                    .http_header_timeout
                    .map_or(d.net.header_timeout, Duration::from_secs),
                body_timeout: raw
                    .http_body_timeout
                    .map_or(d.net.body_timeout, Duration::from_secs),
                idle_timeout: raw
                    .http_idle_timeout
                    .map_or(d.net.idle_timeout, Duration::from_secs),
                max_body_bytes: raw.max_request_body_bytes.unwrap_or(d.net.max_body_bytes),
                linger_timeout: raw
                    .http_linger_timeout
                    .map_or(d.net.linger_timeout, Duration::from_secs),
                linger_max_bytes: raw.http_linger_max_bytes.unwrap_or(d.net.linger_max_bytes),
                max_open_connections: raw
                    .max_open_connections
                    .unwrap_or(d.net.max_open_connections),
                max_connections_per_ip: raw
                    .max_connections_per_ip
                    .unwrap_or(d.net.max_connections_per_ip),
                per_ip_v6_prefix: raw
                    .max_connections_per_ip_v6_prefix
                    .unwrap_or(d.net.per_ip_v6_prefix),
                trusted_proxies: parse_networks(
                    "trusted_proxies",
                    raw.trusted_proxies.unwrap_or_default(),
                )?,
            },
            admin: AdminConfig {
                host: env("HERALD_ADMIN_HOST")
                    .or(raw.admin_host)
                    .unwrap_or(d.admin.host),
                port: match env("HERALD_ADMIN_PORT") {
                    Some(v) => Some(
                        v.trim()
                            .parse()
                            .map_err(|_| bad_env("HERALD_ADMIN_PORT", PORT_NUMBER, &v))?,
                    ),
                    None => raw.admin_port,
                },
                token: env("HERALD_ADMIN_TOKEN").or(raw.admin_token),
                metrics_token: env("HERALD_METRICS_TOKEN").or(raw.metrics_token),
                allowed_hosts: raw.admin_allowed_hosts.unwrap_or_default(),
                tls: tls_files(
                    ("admin_tls_cert", "admin_tls_key"),
                    env("HERALD_ADMIN_TLS_CERT")
                        .map(PathBuf::from)
                        .or(raw.admin_tls_cert),
                    env("HERALD_ADMIN_TLS_KEY")
                        .map(PathBuf::from)
                        .or(raw.admin_tls_key),
                )?,
            },
            log_format: match env("HERALD_LOG_FORMAT")
                .or(raw.log_format)
                .as_deref()
                .unwrap_or("text")
            {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(invalid(
                        "log_format",
                        format!("must be \"text\" or \"json\", not '{other}'"),
                    ))
                }
            },
            webhook_max_in_flight: raw.webhook_max_in_flight.unwrap_or(d.webhook_max_in_flight),
            webhook_max_queued_bytes: raw
                .webhook_max_queued_bytes
                .unwrap_or(d.webhook_max_queued_bytes),
            webhook_store: match env("HERALD_WEBHOOK_STORE").or(raw.webhook_store).as_deref() {
                None => d.webhook_store,
                Some("disk") => WebhookStoreKind::Disk,
                Some("memory") => WebhookStoreKind::Memory,
                Some(other) => {
                    return Err(invalid(
                        "webhook_store",
                        format!("must be \"disk\" or \"memory\", not '{other}'"),
                    ))
                }
            },
            data_dir: env("HERALD_DATA_DIR")
                .map(PathBuf::from)
                .or(raw.data_dir)
                .unwrap_or(d.data_dir),
            webhook_retry_period: raw
                .webhook_retry_period
                .map_or(d.webhook_retry_period, Duration::from_secs),
            webhook_dead_letter_ttl: raw
                .webhook_dead_letter_ttl
                .map_or(d.webhook_dead_letter_ttl, Duration::from_secs),
            webhook_max_stored_bytes: raw
                .webhook_max_stored_bytes
                .unwrap_or(d.webhook_max_stored_bytes),
            webhook_lease: raw
                .webhook_lease
                .map_or(d.webhook_lease, Duration::from_secs),
            pid_file: raw.pid_file,
            apps: Vec::new(),
            apps_url: None,
            plans: Plans::from_file(raw.plans, raw.webhook_allowed_networks)?,
            tls: None,
        };
        config.adapter = AdapterConfig::from_keys(AdapterKeys {
            adapter: env("HERALD_ADAPTER").or(raw.adapter),
            url: env("HERALD_REDIS_URL").or(raw.redis_url),
            prefix: raw.redis_prefix,
            node_timeout: raw.node_timeout,
            ops_per_app: raw.cluster_ops_per_app,
            bus_max_bytes: raw.cluster_bus_max_bytes,
            tls: TlsKeys {
                ca_file: raw.redis_tls_ca_file,
                cert_file: raw.redis_tls_cert_file,
                key_file: raw.redis_tls_key_file,
                skip_name_check: raw.redis_tls_insecure_skip_name_check,
            },
            sentinel_tls: TlsKeys {
                ca_file: raw.redis_sentinel_tls_ca_file,
                cert_file: raw.redis_sentinel_tls_cert_file,
                key_file: raw.redis_sentinel_tls_key_file,
                skip_name_check: raw.redis_sentinel_tls_insecure_skip_name_check,
            },
        })?;
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
        config.apps_url = env("HERALD_APPS_URL")
            .or(raw.apps_url)
            .map(|url| AppsUrl::parse(&url))
            .transpose()?;
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

        if let Some(v) = env("HERALD_HOST") {
            config.host = v;
        }
        if let Some(v) = env("HERALD_PORT") {
            config.port = v
                .trim()
                .parse()
                .map_err(|_| bad_env("HERALD_PORT", PORT_NUMBER, &v))?;
        }
        for (name, slot) in [
            ("HERALD_ACTIVITY_TIMEOUT", &mut config.activity_timeout),
            ("HERALD_PONG_TIMEOUT", &mut config.pong_timeout),
        ] {
            if let Some(v) = env(name) {
                let secs: u64 = v
                    .trim()
                    .parse()
                    .map_err(|_| bad_env(name, &format!("{WHOLE_NUMBER} (seconds)"), &v))?;
                *slot = Duration::from_secs(secs);
            }
        }
        config.tls = tls_files(
            ("tls_cert", "tls_key"),
            env("HERALD_TLS_CERT").map(PathBuf::from).or(raw.tls_cert),
            env("HERALD_TLS_KEY").map(PathBuf::from).or(raw.tls_key),
        )?;
        let app_env = [
            env("HERALD_APP_ID"),
            env("HERALD_APP_KEY"),
            env("HERALD_APP_SECRET"),
        ];
        if app_env.iter().any(Option::is_some) {
            if config.apps_url.is_some() {
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
        if self.node_id == Some(0) {
            return Err(invalid("node_id", "must be at least 1"));
        }
        if self.admin.host.is_empty() {
            return Err(invalid("admin_host", "must not be empty"));
        }
        for (field, token) in [
            ("admin_token", &self.admin.token),
            ("metrics_token", &self.admin.metrics_token),
        ] {
            let Some(token) = token else { continue };
            if token.len() < 16 {
                return Err(invalid(field, "must be at least 16 characters"));
            }
            // It travels in a header and in the console's cookie.
            if !token
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b";,\"\\".contains(&b))
            {
                return Err(invalid(
                    field,
                    "must be printable ASCII without spaces, quotes, commas, semicolons or backslashes",
                ));
            }
        }
        if self.admin.token.is_some() && self.admin.token == self.admin.metrics_token {
            return Err(invalid(
                "metrics_token",
                "must differ from admin_token: it opens /metrics only",
            ));
        }
        if let Some(bad) = self
            .admin
            .allowed_hosts
            .iter()
            .find(|h| h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == '/'))
        {
            return Err(invalid(
                "admin_allowed_hosts",
                format!("holds '{bad}', which is not a host name (write `console.example.com`, no scheme or path)"),
            ));
        }
        match &self.admin.token {
            None if !is_loopback_host(&self.admin.host) => {
                return Err(invalid(
                    "admin_token",
                    format!(
                        "is required when admin_host is not a loopback address ('{}'): /metrics would be open to anyone who can reach it",
                        self.admin.host
                    ),
                ));
            }
            _ => {}
        }
        if let Some(tls) = &self.tls {
            // Loaded once here so that `herald serve` stops before binding, naming the file.
            crate::tls::load(tls, crate::tls::PUBLIC_KEYS)?;
        }
        if let Some(tls) = &self.admin.tls {
            crate::tls::load(tls, crate::tls::ADMIN_KEYS)?;
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
        // Upper bounds keep every deadline far from the overflow of tick counts and
        // `Instant` arithmetic, and catch a value given in the wrong unit.
        let hour = Duration::from_secs(3600);
        for (field, value, max) in [
            ("activity_timeout", self.activity_timeout, hour),
            ("pong_timeout", self.pong_timeout, hour),
            ("shutdown_grace", self.shutdown_grace, hour),
            ("webhook_flush_timeout", self.webhook_flush_timeout, hour),
            ("webhook_vacated_delay_ms", self.webhook_vacated_delay, hour),
            ("http_header_timeout", self.net.header_timeout, hour),
            ("http_body_timeout", self.net.body_timeout, hour),
            ("http_idle_timeout", self.net.idle_timeout, hour),
            ("http_linger_timeout", self.net.linger_timeout, hour),
        ] {
            check_max(field, value, max)?;
        }
        for (field, value) in [
            // Leaving the cluster shares this bound: zero would skip it.
            ("webhook_flush_timeout", self.webhook_flush_timeout),
            ("http_header_timeout", self.net.header_timeout),
            ("http_body_timeout", self.net.body_timeout),
            ("http_idle_timeout", self.net.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must be at least 1 second"));
            }
        }
        if !(1..=128).contains(&self.net.per_ip_v6_prefix) {
            return Err(invalid(
                "max_connections_per_ip_v6_prefix",
                "must be from 1 to 128 (bits of an IPv6 address)",
            ));
        }
        if self.net.max_body_bytes < 1024 {
            return Err(invalid("max_request_body_bytes", "must be at least 1024"));
        }
        if self.webhook_max_in_flight == 0 {
            return Err(invalid("webhook_max_in_flight", "must be at least 1"));
        }
        let year = Duration::from_secs(366 * 24 * 3600);
        for (field, value) in [
            ("webhook_retry_period", self.webhook_retry_period),
            ("webhook_dead_letter_ttl", self.webhook_dead_letter_ttl),
            ("webhook_lease", self.webhook_lease),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must be at least 1 second"));
            }
            check_max(field, value, year)?;
        }
        // A node renews its lease every second at the least: a shorter lease would let the
        // others claim the batches of a live node.
        if self.webhook_lease < Duration::from_secs(2) {
            return Err(invalid("webhook_lease", "must be at least 2 seconds"));
        }
        if self.webhook_max_stored_bytes < 64 * 1024 {
            return Err(invalid(
                "webhook_max_stored_bytes",
                "must be at least 65536 (one batch of events)",
            ));
        }
        if self.webhook_max_queued_bytes < 64 * 1024 {
            return Err(invalid(
                "webhook_max_queued_bytes",
                "must be at least 65536 (one batch of events)",
            ));
        }
        if !(1..=3600).contains(&self.partial_message_timeout.as_secs()) {
            return Err(invalid(
                "partial_message_timeout",
                "must be from 1 to 3600 seconds",
            ));
        }
        self.adapter.validate()?;
        if self.max_message_bytes < 1024 {
            return Err(invalid("max_message_bytes", "must be at least 1024"));
        }
        if !(1..=10_000_000).contains(&self.client_frames_per_second) {
            return Err(invalid(
                "client_frames_per_second",
                "must be from 1 to 10000000",
            ));
        }
        if !(1024..=1 << 30).contains(&self.client_bytes_per_second) {
            return Err(invalid(
                "client_bytes_per_second",
                "must be from 1024 to 1073741824 (1 GiB)",
            ));
        }
        // A connection's task counts what it writes between two reports in 32 bits.
        if self.outbox_max_bytes > 1 << 30 {
            return Err(invalid(
                "outbox_max_bytes",
                "must be at most 1073741824 (1 GiB)",
            ));
        }
        if self.outbox_max_bytes < self.max_message_bytes {
            return Err(invalid(
                "outbox_max_bytes",
                "must be at least max_message_bytes",
            ));
        }
        if self
            .pid_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid("pid_file", "must not be empty"));
        }
        validate_apps(&self.apps)
    }

    /// The server-wide settings that differ between `self` (running) and `new`, by their
    /// TOML keys: none of them can change without a restart, so a reload keeps them and
    /// names them. Apps (and the plans they resolve) are not among them.
    pub fn restart_fields(&self, new: &Config) -> Vec<&'static str> {
        // Each key and the path of its value in both configs.
        macro_rules! differing {
            ($old:expr, $new:expr; $($key:literal => $($path:ident).+),+ $(,)?) => {
                [$(($key, $old.$($path).+ != $new.$($path).+)),+]
            };
        }
        let mut changed = differing!(self, new;
            "host" => host, "port" => port, "activity_timeout" => activity_timeout,
            "pong_timeout" => pong_timeout, "partial_message_timeout" => partial_message_timeout,
            "max_message_bytes" => max_message_bytes, "require_protocol" => require_protocol,
            "client_frames_per_second" => client_frames_per_second,
            "client_bytes_per_second" => client_bytes_per_second,
            "outbox_max_bytes" => outbox_max_bytes, "shutdown_grace" => shutdown_grace,
            "webhook_flush_timeout" => webhook_flush_timeout,
            "compression" => compression, "compression_min_bytes" => compression_min_bytes,
            "webhook_vacated_delay_ms" => webhook_vacated_delay,
            "http_header_timeout" => net.header_timeout, "http_body_timeout" => net.body_timeout,
            "http_idle_timeout" => net.idle_timeout,
            "max_request_body_bytes" => net.max_body_bytes,
            "http_linger_timeout" => net.linger_timeout,
            "http_linger_max_bytes" => net.linger_max_bytes,
            "max_open_connections" => net.max_open_connections,
            "max_connections_per_ip" => net.max_connections_per_ip,
            "max_connections_per_ip_v6_prefix" => net.per_ip_v6_prefix,
            "trusted_proxies" => net.trusted_proxies,
            "webhook_max_in_flight" => webhook_max_in_flight,
            "webhook_max_queued_bytes" => webhook_max_queued_bytes, "pid_file" => pid_file,
            "webhook_store" => webhook_store, "data_dir" => data_dir,
            "webhook_retry_period" => webhook_retry_period,
            "webhook_dead_letter_ttl" => webhook_dead_letter_ttl,
            "webhook_max_stored_bytes" => webhook_max_stored_bytes,
            "webhook_lease" => webhook_lease,
            "admin_host" => admin.host, "admin_port" => admin.port,
            "log_format" => log_format, "node_id" => node_id,
        )
        .to_vec();
        // The tokens and `admin_allowed_hosts` change at once (`admin::Plane::reload`), and
        // so do the certificates; serving TLS or not needs a restart.
        if self.tls.is_some() != new.tls.is_some() {
            changed.push(("tls_cert", true));
        }
        if self.admin.tls.is_some() != new.admin.tls.is_some() {
            changed.push(("admin_tls_cert", true));
        }
        if self.apps_url != new.apps_url {
            changed.push(("apps_url", true));
        }
        changed.extend(
            self.adapter
                .restart_fields(&new.adapter)
                .into_iter()
                .map(|key| (key, true)),
        );
        changed.into_iter().collect::<Changed>().0
    }

    /// The webhook settings every app's dispatcher runs with.
    pub fn webhook_settings(&self) -> WebhookSettings {
        WebhookSettings {
            vacated_delay: self.webhook_vacated_delay,
            max_in_flight: self.webhook_max_in_flight,
            max_queued_bytes: self.webhook_max_queued_bytes,
            store: self.webhook_store,
            data_dir: self.data_dir.clone(),
            retry_period: self.webhook_retry_period,
            dead_letter_ttl: self.webhook_dead_letter_ttl,
            max_stored_bytes: self.webhook_max_stored_bytes,
            lease: self.webhook_lease,
            shared: self.adapter.webhook_queue(),
        }
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

/// The names whose flag is set, in order: what a reload reports as changed.
pub(crate) struct Changed(pub(crate) Vec<&'static str>);

impl FromIterator<(&'static str, bool)> for Changed {
    fn from_iter<I: IntoIterator<Item = (&'static str, bool)>>(pairs: I) -> Self {
        Changed(
            pairs
                .into_iter()
                .filter_map(|(name, set)| set.then_some(name))
                .collect(),
        )
    }
}

/// A boolean from the environment: `true`/`false`, or `1`/`0`.
fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(invalid(
            name,
            format!("must be true or false, not '{value}'"),
        )),
    }
}

/// Parses a list of addresses (`10.0.0.5`) or networks (`10.0.0.0/8`), the key `field`
/// (`trusted_proxies`, `webhook_allowed_networks`).
pub(crate) fn parse_networks(
    field: &str,
    raw: Vec<String>,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, text)| {
            let text = text.trim();
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    invalid(
                        format!("{field}[{i}]"),
                        format!("is not an IP address or network (like 10.0.0.0/8): '{text}'"),
                    )
                })
        })
        .collect()
}

/// Refuses a duration over `max`, naming the field and the limit.
pub(crate) fn check_max(field: &str, value: Duration, max: Duration) -> Result<(), ConfigError> {
    if value > max {
        return Err(invalid(
            field,
            format!("must be at most {} seconds", max.as_secs()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_node_id_is_set_in_the_file_or_the_environment_and_needs_a_restart() {
        let d = Config::default();
        assert_eq!(d.node_id, None, "random by default");
        let c = Config::from_toml("node_id = 7", &no_env).expect("valid");
        assert_eq!(c.node_id, Some(7));
        assert_eq!(d.restart_fields(&c), ["node_id"]);
        let env = |k: &str| (k == "HERALD_NODE_ID").then(|| "4294967295".to_owned());
        let c = Config::from_toml("node_id = 7", &env).expect("valid");
        assert_eq!(c.node_id, Some(u32::MAX), "the environment wins");
        let zero = Config::from_toml("node_id = 0", &no_env).expect_err("0 is no id");
        assert!(zero.to_string().contains("node_id"), "{zero}");
        let bad = |k: &str| (k == "HERALD_NODE_ID").then(|| "node-7".to_owned());
        let err = Config::from_toml("", &bad).expect_err("not a number");
        assert!(err.to_string().contains("HERALD_NODE_ID"), "{err}");
    }

    #[test]
    fn compression_is_on_by_default_and_can_be_turned_off() {
        let d = Config::default();
        assert!(d.compression);
        assert_eq!(d.compression_min_bytes, 256);
        let c = Config::from_toml("compression = false\ncompression_min_bytes = 1024", &no_env)
            .expect("valid");
        assert!(!c.compression);
        assert_eq!(c.compression_min_bytes, 1024);
        assert_eq!(
            d.restart_fields(&c),
            ["compression", "compression_min_bytes"]
        );
        for (value, on) in [("false", false), ("0", false), ("TRUE", true), ("1", true)] {
            let env = |k: &str| (k == "HERALD_COMPRESSION").then(|| value.to_owned());
            let c = Config::from_toml("compression = true", &env).expect(value);
            assert_eq!(c.compression, on, "{value}");
        }
        let env = |k: &str| (k == "HERALD_COMPRESSION").then(|| "maybe".to_owned());
        let error = Config::from_toml("", &env).expect_err("not a boolean");
        assert!(error.to_string().contains("HERALD_COMPRESSION"), "{error}");
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
    fn webhook_flush_timeout_is_read_in_seconds_and_needs_a_restart() {
        let d = Config::default();
        assert_eq!(d.webhook_flush_timeout, Duration::from_secs(5));
        let c = Config::from_toml("webhook_flush_timeout = 1", &no_env).expect("valid");
        assert_eq!(c.webhook_flush_timeout, Duration::from_secs(1));
        assert_eq!(d.restart_fields(&c), ["webhook_flush_timeout"]);
        for bad in ["webhook_flush_timeout = 0", "webhook_flush_timeout = 3601"] {
            let error = Config::from_toml(bad, &no_env).expect_err(bad).to_string();
            assert!(error.contains("webhook_flush_timeout"), "{error}");
        }
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
            ("client_frames_per_second = 0", "client_frames_per_second"),
            ("client_bytes_per_second = 1023", "client_bytes_per_second"),
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
    fn a_parse_error_shows_its_line_and_caret_and_the_key_meant() {
        let err = Config::from_toml("port = 6001\nactivty_timeout = 5\n", &no_env)
            .expect_err("misspelt")
            .to_string();
        assert_eq!(
            err,
            "invalid config file <inline>, line 2, column 1:\n \
             2 | activty_timeout = 5\n   | ^^^^^^^^^^^^^^^\n\
             `activty_timeout` is not a setting; did you mean `activity_timeout`?"
        );
        let err = Config::from_toml("[plans.pro]\nmessages_per_day = -5\n", &no_env)
            .expect_err("negative")
            .to_string();
        assert!(
            err.ends_with("`plans.pro.messages_per_day` must be a whole number ≥ 0, not -5"),
            "{err}"
        );
        // A URL's password in the line at fault stays hidden.
        let err = Config::from_toml("trusted_proxies = [\"postgres://u:hunter2@h\", 5]", &no_env)
            .expect_err("unknown key")
            .to_string();
        assert!(
            !err.contains("hunter2") && err.contains("`trusted_proxies[1]` must be a string"),
            "{err}"
        );
    }

    #[test]
    fn an_apps_fields_name_the_field_in_the_files_words() {
        let fields = |value: serde_json::Value| match value {
            serde_json::Value::Object(map) => map,
            _ => unreachable!(),
        };
        let base = serde_json::json!({"id": "1", "key": "k", "secret": "s"});
        for (name, value, said) in [
            (
                "max_connections",
                serde_json::json!(-5),
                "`max_connections` must be a whole number ≥ 0, not -5",
            ),
            (
                "publishes_per_secnd",
                serde_json::json!(2),
                "`publishes_per_secnd` is not an app setting; did you mean `publishes_per_second`?",
            ),
            (
                "secret",
                serde_json::json!(12345),
                "`secret` must be a string in quotes",
            ),
        ] {
            let mut app = fields(base.clone());
            app.insert(name.to_owned(), value);
            let err = app_from_fields("", app, &Plans::default())
                .expect_err(name)
                .to_string();
            assert_eq!(err, format!("invalid config: {said}"));
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
    fn debug_output_and_errors_hide_secrets() {
        let c = Config::from_toml(
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s3cr3t-value\"\n\
             [[apps.webhooks]]\nurl = \"https://hook:h00k-pw@h.example/x\"\n",
            &no_env,
        )
        .expect("valid");
        let shown = format!("{c:?}");
        assert!(shown.contains("\"k\""), "{shown}");
        assert!(
            shown.contains("https://hook:<redacted>@h.example/x"),
            "{shown}"
        );
        for secret in ["s3cr3t-value", "h00k-pw"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        // A URL an error quotes: a webhook's that is refused, a line the parser shows.
        for text in [
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[[apps.webhooks]]\nurl = \"ftp://u:h00k-pw@h\"",
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nwebhooks = \"https://u:h00k-pw@h\"",
            "apps_url = \"postgres://u:h00k-pw@h/x\"\nbogus = 1",
        ] {
            let error = Config::from_toml(text, &no_env).expect_err(text);
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("h00k-pw"), "{shown}");
        }
    }

    #[test]
    fn the_linger_of_an_early_answer_is_bounded_in_time_and_bytes() {
        let d = Config::default();
        assert_eq!(d.net.linger_timeout, Duration::from_secs(5));
        assert_eq!(d.net.linger_max_bytes, 64 * 1024 * 1024);
        let c = Config::from_toml(
            "http_linger_timeout = 0\nhttp_linger_max_bytes = 1024",
            &no_env,
        )
        .expect("valid");
        assert_eq!(c.net.linger_timeout, Duration::ZERO, "0: no drain");
        assert_eq!(c.net.linger_max_bytes, 1024);
        assert_eq!(
            d.restart_fields(&c),
            ["http_linger_timeout", "http_linger_max_bytes"]
        );
        let error = Config::from_toml("http_linger_timeout = 3601", &no_env)
            .expect_err("over an hour")
            .to_string();
        assert!(error.contains("http_linger_timeout"), "{error}");
    }

    #[test]
    fn durations_have_a_sane_maximum() {
        for (toml, field) in [
            ("activity_timeout = 100000", "activity_timeout"),
            ("http_header_timeout = 0", "http_header_timeout"),
            ("http_idle_timeout = 99999999", "http_idle_timeout"),
            (
                "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\ncache_ttl = 9223372036854775807",
                "apps[0].cache_ttl",
            ),
            (
                "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nuser_authentication_timeout = 9223372036854775807",
                "apps[0].user_authentication_timeout",
            ),
            ("trusted_proxies = [\"10.0.0.0/33\"]", "trusted_proxies[0]"),
        ] {
            let error = Config::from_toml(toml, &no_env)
                .expect_err(toml)
                .to_string();
            assert!(error.contains(field), "{toml}: {error}");
        }
        let c = Config::from_toml(
            "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nmax_connections_per_ip = 50\n\
             max_connections_per_ip_v6_prefix = 56",
            &no_env,
        )
        .expect("valid");
        assert_eq!(c.net.trusted_proxies.len(), 2);
        assert_eq!(c.net.max_connections_per_ip, 50);
        assert_eq!(c.net.per_ip_v6_prefix, 56);
        assert_eq!(
            Config::default().restart_fields(&c),
            [
                "max_connections_per_ip",
                "max_connections_per_ip_v6_prefix",
                "trusted_proxies"
            ]
        );
        for bad in ["0", "129"] {
            let text = format!("max_connections_per_ip_v6_prefix = {bad}");
            let error = Config::from_toml(&text, &no_env)
                .expect_err(&text)
                .to_string();
            assert!(
                error.contains("max_connections_per_ip_v6_prefix"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_reload_names_each_server_setting_it_changes_and_never_the_apps() {
        let app = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
        let running = Config::from_toml(&format!("port = 7000\n{app}"), &no_env).expect("valid");
        let same = Config::from_toml(
            &format!(
                "port = 7000\n{}max_connections = 3\n",
                app.replace("\"s\"", "\"s2\"")
            ),
            &no_env,
        )
        .expect("valid");
        assert!(running.restart_fields(&same).is_empty(), "apps reload");
        let new = Config::from_toml(
            &format!("port = 7001\nhttp_idle_timeout = 5\npid_file = \"/run/herald.pid\"\n{app}"),
            &no_env,
        )
        .expect("valid");
        assert_eq!(
            running.restart_fields(&new),
            ["port", "http_idle_timeout", "pid_file"]
        );
        let error = Config::from_toml("pid_file = \"\"", &no_env)
            .expect_err("empty")
            .to_string();
        assert!(error.contains("pid_file"), "{error}");
    }

    #[test]
    fn admin_tokens_hosts_and_tls_files_are_checked_and_the_tokens_reload() {
        for (toml, field) in [
            ("metrics_token = \"short\"\n", "metrics_token"),
            ("admin_token = \"has space 0123456789\"\n", "admin_token"),
            ("admin_token = \"semi;colon-0123456789\"\n", "admin_token"),
            (
                "admin_token = \"same-token-0123456789\"\nmetrics_token = \"same-token-0123456789\"\n",
                "metrics_token",
            ),
            ("admin_allowed_hosts = [\"https://x.example\"]\n", "admin_allowed_hosts"),
            ("admin_allowed_hosts = [\"\"]\n", "admin_allowed_hosts"),
            ("admin_tls_cert = \"/x.pem\"\n", "admin_tls_key"),
            ("admin_tls_key = \"/x.pem\"\n", "admin_tls_cert"),
        ] {
            let error = Config::from_toml(toml, &no_env).expect_err(toml).to_string();
            assert!(error.contains(field), "{toml}: {error}");
        }
        let env =
            |k: &str| (k == "HERALD_METRICS_TOKEN").then(|| "env-metrics-0123456789".to_owned());
        let c =
            Config::from_toml("admin_token = \"admin-token-0123456789\"\n", &env).expect("valid");
        assert_eq!(
            c.admin.metrics_token.as_deref(),
            Some("env-metrics-0123456789")
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("env-metrics") && !shown.contains("admin-token-0"),
            "{shown}"
        );
        // The tokens and hosts change with a reload; serving TLS or not needs a restart.
        let rotated = Config::from_toml(
            "admin_token = \"other-token-0123456789\"\nmetrics_token = \"other-metrics-0123456789\"\n\
             admin_allowed_hosts = [\"x.example\"]\n",
            &no_env,
        )
        .expect("valid");
        assert!(c.restart_fields(&rotated).is_empty());
    }

    #[test]
    fn tls_takes_both_files_from_the_file_or_the_environment() {
        use crate::tls::tests::{issue, temp_dir, write};
        let dir = temp_dir("config");
        let (_, cert, key) = issue("config");
        let cert = write(&dir, "cert.pem", &cert);
        let key = write(&dir, "key.pem", &key);
        let lines = format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        );
        let c = Config::from_toml(&lines, &no_env).expect("valid");
        assert_eq!(
            c.tls,
            Some(TlsConfig {
                cert: cert.clone(),
                key: key.clone()
            })
        );
        assert_eq!(Config::from_toml("", &no_env).expect("valid").tls, None);
        let env = |k: &str| match k {
            "HERALD_TLS_CERT" => Some(cert.display().to_string()),
            "HERALD_TLS_KEY" => Some(key.display().to_string()),
            _ => None,
        };
        let c = Config::from_toml("", &env).expect("valid");
        assert_eq!(c.tls.map(|t| t.key), Some(key.clone()));
        // The environment wins, and its file is checked too.
        let missing = dir.join("missing.pem");
        let env = |k: &str| (k == "HERALD_TLS_KEY").then(|| missing.display().to_string());
        let error = Config::from_toml(&lines, &env).expect_err("missing key");
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );
        for (text, field) in [
            (format!("tls_cert = \"{}\"", cert.display()), "tls_key"),
            (format!("tls_key = \"{}\"", key.display()), "tls_cert"),
        ] {
            let error = Config::from_toml(&text, &no_env)
                .expect_err(field)
                .to_string();
            assert!(error.contains(field), "{text}: {error}");
        }
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

    #[test]
    fn apps_url_takes_the_apps_out_of_the_file() {
        let c = Config::from_toml(
            "apps_url = \"postgres://herald:pw@db:5432/herald\"\n[plans.pro]\nmax_connections = 9\n",
            &no_env,
        )
        .expect("valid");
        let url = c.apps_url.as_ref().expect("an apps_url");
        assert_eq!(url.db(), AppsDb::Postgres);
        assert!(c.apps.is_empty(), "no embedded default app");
        assert!(!c.uses_default_credentials());
        assert_eq!(c.plans.names(), ["pro"]);
        assert!(
            !format!("{c:?}").contains("pw"),
            "the password stays out of Debug"
        );
        assert_eq!(
            url.redacted(),
            "postgres://herald:<redacted>@db:5432/herald"
        );
        let no_password = AppsUrl::parse("mysql://root@127.0.0.1/h").expect("valid");
        assert_eq!(no_password.redacted(), "mysql://root@127.0.0.1/h");

        let env =
            |k: &str| (k == "HERALD_APPS_URL").then(|| "mariadb://root@127.0.0.1/h".to_owned());
        let c = Config::from_toml("", &env).expect("valid");
        assert_eq!(
            c.apps_url.expect("from the environment").db(),
            AppsDb::MySql
        );

        let err = Config::from_toml(
            "apps_url = \"mysql://root@127.0.0.1/h\"\n[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n",
            &no_env,
        )
        .expect_err("both")
        .to_string();
        assert!(
            err.contains("apps_url") && err.contains("herald apps import"),
            "{err}"
        );
        let err = Config::from_toml("apps_url = \"sqlite://x\"\n", &no_env)
            .expect_err("no such store")
            .to_string();
        assert!(err.contains("`apps_url`"), "{err}");
        let running = Config::from_toml("apps_url = \"mysql://a@h/x\"\n", &no_env).expect("valid");
        let moved = Config::from_toml("apps_url = \"mysql://a@h/y\"\n", &no_env).expect("valid");
        assert_eq!(running.restart_fields(&moved), ["apps_url"]);
    }
}
