//! An app's fields as the config file's `[[apps]]` tables and the app stores hold them:
//! parsed, resolved against the plans and checked, in one place, so a file and a database
//! accept exactly the same apps and name a bad field the same way.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use herald_protocol::webhook::WebhookKind;

use super::{
    AppConfig, AppLimits, DEFAULT_CACHE_TTL, DEFAULT_RECOVERY_WINDOW, DEFAULT_TERMINATE_CLOSE_CODE,
};
use crate::config::error::{check_max, invalid, ConfigError};
use crate::config::told::{describe, is_secret};
use crate::history::limits::{HistoryLimits, DEFAULT_HISTORY_MAX_AGE, DEFAULT_HISTORY_MAX_BYTES};
use crate::redact::redact_url;
use crate::webhooks::reach::{AllowedNetworks, WebhookConfig, WebhookReach};

/// Longest id, key or secret: what the app stores' columns hold.
pub const MAX_CREDENTIAL_BYTES: usize = 255;

/// What the config file says of the apps a database holds: its named plans
/// (`[plans.pro]`), which apps refer to by name, and the networks their webhooks may reach
/// besides public addresses (`webhook_allowed_networks`). A reload of the file (SIGHUP)
/// applies both to the database's apps.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plans {
    named: HashMap<String, RawPlan>,
    webhook_networks: AllowedNetworks,
}

impl Plans {
    /// The file's `[plans]` and `webhook_allowed_networks`.
    pub(crate) fn from_file(named: HashMap<String, RawPlan>, networks: Vec<ipnet::IpNet>) -> Plans {
        Plans {
            named,
            webhook_networks: AllowedNetworks::new(networks),
        }
    }

    /// These plans, and `other`'s under the names these lack (`herald apps import FILE`
    /// takes FILE's plans too); the webhook networks stay these.
    pub fn or_from(&self, other: &Plans) -> Plans {
        let mut named = other.named.clone();
        named.extend(self.named.clone());
        Plans {
            named,
            webhook_networks: self.webhook_networks.clone(),
        }
    }

    /// The plans' names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.named.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// What a database app's webhooks may reach.
    pub(crate) fn tenant_reach(&self) -> WebhookReach {
        WebhookReach::Public(self.webhook_networks.clone())
    }
}

/// `{at}.{name}`, or `name` alone when `at` is empty.
fn at_field(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_owned()
    } else {
        format!("{at}.{name}")
    }
}

/// A named set of limits apps can refer to (`plan = "pro"`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlan {
    publishes_per_second: Option<u64>,
    reads_per_second: Option<u64>,
    messages_per_day: Option<u64>,
    max_connections: Option<usize>,
    client_events_per_second: Option<u32>,
}

/// A webhook as written (no `Debug`: its URL may carry a password).
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    event_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel_prefix: Option<String>,
}

/// An app's keys as the file's `[[apps]]` table (or a store's row) gives them; `None` is
/// "not given", which resolves to the plan's value, then the default. No `Debug`: it holds
/// the secret.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) plan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) publishes_per_second: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reads_per_second: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) messages_per_day: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_subscriptions_per_connection: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_event_data_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_channels_per_trigger: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_events_per_batch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_channel_name_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_events: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_events_per_second: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_presence_members: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_presence_user_id_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_presence_user_info_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) terminate_close_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user_authentication_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cache_ttl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) subscription_count: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) history_max_events: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) history_max_age: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) history_max_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) recovery_window: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) webhooks: Vec<RawWebhook>,
}

/// Checks a set of apps as start-up does (each app's fields, ids and keys unique), naming
/// the field at fault (`apps[2].key`).
pub fn validate_apps(apps: &[AppConfig]) -> Result<(), ConfigError> {
    for (i, app) in apps.iter().enumerate() {
        validate_app(&format!("apps[{i}]"), app)?;
        for (j, other) in apps.iter().enumerate().skip(i + 1) {
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
    }
    Ok(())
}

/// Checks one app's fields, naming a field as `{at}.{name}` (just `name` when `at` is
/// empty): what a store checks each of its rows with, since its own unique indexes keep
/// ids and keys apart.
pub fn validate_app(at: &str, app: &AppConfig) -> Result<(), ConfigError> {
    for (field, value) in [("id", &app.id), ("key", &app.key), ("secret", &app.secret)] {
        if value.is_empty() {
            return Err(invalid(at_field(at, field), "must not be empty"));
        }
        // What the app stores' columns hold (VARCHAR(255)).
        if value.len() > MAX_CREDENTIAL_BYTES {
            return Err(invalid(
                at_field(at, field),
                format!("must be at most {MAX_CREDENTIAL_BYTES} bytes"),
            ));
        }
    }
    if !app
        .id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            at_field(at, "id"),
            "may only contain letters, digits, '-' and '_'",
        ));
    }
    if app.key.contains(['/', '?', '#', ' ']) {
        return Err(invalid(
            at_field(at, "key"),
            "must not contain '/', '?', '#' or spaces",
        ));
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
            return Err(invalid(at_field(at, field), "must be at least 1"));
        }
    }
    if app.cache_ttl.is_zero() {
        return Err(invalid(
            at_field(at, "cache_ttl"),
            "must be at least 1 second",
        ));
    }
    check_max(
        &at_field(at, "cache_ttl"),
        app.cache_ttl,
        Duration::from_secs(7 * 86_400),
    )?;
    check_max(
        &at_field(at, "user_authentication_timeout"),
        Duration::from_secs(app.user_authentication_timeout),
        Duration::from_secs(86_400),
    )?;
    if l.max_subscriptions_per_connection == 0 {
        return Err(invalid(
            at_field(at, "max_subscriptions_per_connection"),
            "must be at least 1",
        ));
    }
    if !(4000..=4999).contains(&app.terminate_close_code) {
        return Err(invalid(
            at_field(at, "terminate_close_code"),
            "must be a Pusher close code between 4000 and 4999",
        ));
    }
    check_history(at, &app.history)?;
    // An hour at most: every identified connection that drops leaves an entry for it.
    check_max(
        &at_field(at, "recovery_window"),
        app.recovery_window,
        Duration::from_secs(3600),
    )?;
    if l.client_events && l.client_events_per_second == 0 {
        return Err(invalid(
            at_field(at, "client_events_per_second"),
            "must be at least 1 when client_events is on",
        ));
    }
    Ok(())
}

/// The most events a channel may keep: a page of the API is at most 1000, and recovery
/// will replay what a client missed, which must stay a short burst.
const MAX_HISTORY_EVENTS: usize = 10_000;

/// The most bytes a channel may keep: with many channels, memory is the real bound.
const MAX_HISTORY_BYTES: usize = 16 * 1024 * 1024;

fn check_history(at: &str, history: &HistoryLimits) -> Result<(), ConfigError> {
    if history.max_events > MAX_HISTORY_EVENTS {
        return Err(invalid(
            at_field(at, "history_max_events"),
            format!("must be at most {MAX_HISTORY_EVENTS}"),
        ));
    }
    if history.max_age.is_zero() {
        return Err(invalid(
            at_field(at, "history_max_age"),
            "must be at least 1 second",
        ));
    }
    check_max(
        &at_field(at, "history_max_age"),
        history.max_age,
        Duration::from_secs(86_400),
    )?;
    if history.max_bytes == 0 || history.max_bytes > MAX_HISTORY_BYTES {
        return Err(invalid(
            at_field(at, "history_max_bytes"),
            format!("must be between 1 and {MAX_HISTORY_BYTES}"),
        ));
    }
    Ok(())
}

fn webhook_from_raw(
    at: &str,
    j: usize,
    raw: RawWebhook,
    reach: &WebhookReach,
) -> Result<WebhookConfig, ConfigError> {
    let field = |name: &str| at_field(at, &format!("webhooks[{j}].{name}"));
    let url = raw
        .url
        .ok_or_else(|| invalid(field("url"), "is required"))?;
    let parsed = url::Url::parse(&url)
        .ok()
        .filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        })
        .ok_or_else(|| {
            invalid(
                field("url"),
                format!(
                    "must be an http:// or https:// URL with a host, not '{}'",
                    redact_url(&url)
                ),
            )
        })?;
    // A host name is checked at each delivery, against what it resolves to then.
    if let Err(refused) = reach.check_url(&parsed) {
        return Err(invalid(
            field("url"),
            format!(
                "reaches {refused}, which an app's webhook from the database may not (the operator allows a network with webhook_allowed_networks)"
            ),
        ));
    }
    if let Some(bad) = raw
        .event_types
        .iter()
        .find(|t| WebhookKind::from_name(t).is_none())
    {
        return Err(invalid(
            field("event_types"),
            format!("has an unknown event '{bad}' ({})", WebhookKind::names()),
        ));
    }
    Ok(WebhookConfig {
        url,
        event_types: raw.event_types,
        channel_prefix: raw.channel_prefix,
        reach: reach.clone(),
    })
}

/// An app from its keys, resolved against `plans`; its webhooks may reach `reach`.
pub(crate) fn app_from_raw(
    at: &str,
    raw: RawApp,
    plans: &Plans,
    reach: &WebhookReach,
) -> Result<AppConfig, ConfigError> {
    // Limits resolve as: built-in defaults, then the app's plan, then the app's own keys.
    let no_plan = RawPlan::default();
    let plan = match raw.plan.as_deref() {
        Some(name) => plans.named.get(name).ok_or_else(|| {
            let known = plans.names();
            invalid(
                at_field(at, "plan"),
                if known.is_empty() {
                    format!("names an unknown plan '{name}' (the config file defines no [plans])")
                } else {
                    format!(
                        "names an unknown plan '{name}' (defined: {})",
                        known.join(", ")
                    )
                },
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
        .map(|(j, w)| webhook_from_raw(at, j, w, reach))
        .collect::<Result<Vec<_>, _>>()?;
    let required = |v: Option<String>, field: &str| {
        v.ok_or_else(|| invalid(at_field(at, field), "is required"))
    };
    Ok(AppConfig {
        plan: raw.plan,
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
        history: HistoryLimits {
            max_events: raw.history_max_events.unwrap_or(0),
            max_age: raw
                .history_max_age
                .map_or(DEFAULT_HISTORY_MAX_AGE, Duration::from_secs),
            max_bytes: raw.history_max_bytes.unwrap_or(DEFAULT_HISTORY_MAX_BYTES),
        },
        recovery_window: raw
            .recovery_window
            .map_or(DEFAULT_RECOVERY_WINDOW, Duration::from_secs),
        webhooks,
        limits: AppLimits {
            max_connections: raw.max_connections.unwrap_or(d.max_connections),
            max_subscriptions_per_connection: raw
                .max_subscriptions_per_connection
                .unwrap_or(d.max_subscriptions_per_connection),
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

/// Builds an app from its fields as a JSON object in the file's key names (`id`, `key`,
/// `secret`, `enabled`, `plan`, limits, flags, `webhooks`) and checks it, naming a bad
/// field `{at}.{name}`: an app of the database (a tenant's), whose webhooks may reach
/// public addresses and the networks `plans` allows.
pub fn app_from_fields(
    at: &str,
    fields: serde_json::Map<String, serde_json::Value>,
    plans: &Plans,
) -> Result<AppConfig, ConfigError> {
    app_from_fields_reaching(at, fields, plans, &plans.tenant_reach())
}

/// [`app_from_fields`], for webhooks that may reach `reach`.
pub(crate) fn app_from_fields_reaching(
    at: &str,
    fields: serde_json::Map<String, serde_json::Value>,
    plans: &Plans,
    reach: &WebhookReach,
) -> Result<AppConfig, ConfigError> {
    let fields = serde_json::Value::Object(fields);
    let raw: RawApp = serde_path_to_error::deserialize(&fields).map_err(|error| {
        let path = error.path().to_string();
        let key = if path == "." {
            at.to_owned()
        } else {
            at_field(at, &path)
        };
        // The words the config file uses; a secret's value is never quoted back.
        let (field, problem) = describe(
            &key,
            &error.into_inner().to_string(),
            is_secret(&key),
            "an app setting",
        );
        invalid(if field.is_empty() { "app" } else { &field }, problem)
    })?;
    let app = app_from_raw(at, raw, plans, reach)?;
    validate_app(at, &app)?;
    Ok(app)
}

/// An app's fields as a JSON object, as [`app_from_fields`] takes them.
pub(crate) fn raw_to_fields(raw: &RawApp) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(raw) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(webhook: &str) -> serde_json::Map<String, serde_json::Value> {
        let value = serde_json::json!({
            "id": "1", "key": "k", "secret": "s", "webhooks": [{"url": webhook}],
        });
        match value {
            serde_json::Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn allowing(networks: &[&str]) -> Plans {
        let networks = networks.iter().map(|n| (*n).to_owned()).collect();
        Plans::from_file(
            HashMap::new(),
            crate::config::error::parse_networks("webhook_allowed_networks", networks)
                .expect("valid networks"),
        )
    }

    #[test]
    fn a_tenants_webhook_address_must_be_public_unless_allowed() {
        for (url, kind) in [
            ("http://169.254.169.254/latest", "link-local"),
            ("http://10.0.0.5:6379/", "private"),
            ("http://[::1]:9/h", "loopback"),
            ("http://[fd00::1]/h", "unique-local"),
            ("http://100.64.1.1/h", "shared (CGNAT)"),
            ("http://0.0.0.0:80/", "unspecified"),
        ] {
            let error = app_from_fields("", app(url), &Plans::default())
                .expect_err(url)
                .to_string();
            assert!(
                error.contains("`webhooks[0].url`") && error.contains(kind),
                "{url}: {error}"
            );
            assert!(
                error.contains("webhook_allowed_networks"),
                "says how to allow it: {error}"
            );
            assert!(!error.contains('\n'), "one line: {error}");
        }
        let plans = allowing(&["10.0.0.0/8", "169.254.169.254"]);
        for url in ["http://10.0.0.5:6379/", "http://169.254.169.254/latest"] {
            let config = app_from_fields("", app(url), &plans).expect(url);
            assert_eq!(config.webhooks[0].reach, plans.tenant_reach());
        }
        assert!(app_from_fields("", app("http://169.254.169.253/"), &plans).is_err());
        // A name waits for its delivery.
        assert!(app_from_fields("", app("https://hooks.example.com/h"), &Plans::default()).is_ok());
    }
}
