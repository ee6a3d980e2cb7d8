//! What one app is configured with: its credentials, limits, webhooks, history and
//! recovery, as the config file's `[[apps]]` and the app stores give them ([`fields`]).

pub mod fields;
pub mod keys;

use std::time::Duration;

use crate::config::declare::settings;
use crate::config::kinds::Networks;
use crate::history::limits::HistoryLimits;
use crate::redact::REDACTED;
use crate::webhooks::reach::WebhookConfig;

/// The embedded default app's id (numeric: the official Node and Python libraries put the id
/// in URLs and the Python one insists on digits).
pub const DEFAULT_APP_ID: &str = "1";
/// The embedded default app's key.
pub const DEFAULT_APP_KEY: &str = "app-key";
/// The embedded default app's secret.
pub const DEFAULT_APP_SECRET: &str = "app-secret";

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

    pub(crate) fn embedded_default() -> Self {
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

/// Issue 27's window: a tunnel, a laptop lid, a deploy's drain.
pub(crate) const DEFAULT_RECOVERY_WINDOW: Duration = Duration::from_secs(120);

/// `terminate_connections` closes with "connection is unauthorized" by default (spec §8).
pub(crate) const DEFAULT_TERMINATE_CLOSE_CODE: u16 = 4009;

/// Pusher documents a 30-minute lifetime for cached events.
pub(crate) const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30 * 60);

settings! {
    /// What the server's settings say of every app, besides the apps themselves.
    pub struct AppsSettings(RawAppsSettings) in "Apps" {
        /// Networks (`10.0.0.0/8`) or addresses an app from the database may send its
        /// webhooks to, besides public addresses; the config file's own apps reach any.
        webhook_allowed_networks: Networks = Vec::new(), key "webhook_allowed_networks", Reload;
    }
}
