//! sockudo's apps: its config file (JSON, or TOML), its `SOCKUDO_DEFAULT_APP_*`
//! environment variables and its MySQL/PostgreSQL app table, read the way sockudo reads
//! them. An app is either flat (soketi's snake_case settings) or carries a `policy`
//! (`limits`, `features`, `channels`, `webhooks`, …), which wins when present, in a file
//! and in a row alike. What an app leaves out falls back on the server-wide sections
//! (`presence`, `channel_limits`, `event_limits`).

use serde_json::{json, Map, Value};

use super::mapping::{flag, Note, Peer, PeerApp, Setting};

/// Each setting's name in sockudo (flat, and inside `policy.limits`/`policy.features`).
const NAMES: &[(Setting, &str)] = &[
    (Setting::Id, "id"),
    (Setting::Key, "key"),
    (Setting::Secret, "secret"),
    (Setting::Enabled, "enabled"),
    (Setting::MaxConnections, "max_connections"),
    (Setting::ClientMessages, "enable_client_messages"),
    (
        Setting::BackendEventsPerSecond,
        "max_backend_events_per_second",
    ),
    (
        Setting::ClientEventsPerSecond,
        "max_client_events_per_second",
    ),
    (
        Setting::ReadRequestsPerSecond,
        "max_read_requests_per_second",
    ),
    (Setting::Webhooks, "webhooks"),
    (Setting::PresenceMembers, "max_presence_members_per_channel"),
    (Setting::PresenceMemberKb, "max_presence_member_size_in_kb"),
    (Setting::ChannelNameLength, "max_channel_name_length"),
    (Setting::EventChannelsAtOnce, "max_event_channels_at_once"),
    (Setting::EventNameLength, "max_event_name_length"),
    (Setting::EventPayloadKb, "max_event_payload_in_kb"),
    (Setting::EventBatchSize, "max_event_batch_size"),
    (Setting::UserAuthentication, "enable_user_authentication"),
];

/// What sockudo has and Herald does not, and why (set to anything but null, false or
/// an empty list, each is named).
const UNMAPPED: &[(&str, &str)] = &[
    (
        "allowed_origins",
        "Herald does not check a WebSocket's Origin; put the check in a proxy",
    ),
    ("annotations_enabled", "Herald has no annotations"),
    (
        "channel_delta_compression",
        "Herald has no delta compression (it compresses with permessage-deflate)",
    ),
    ("channel_namespaces", "Herald has no channel namespaces"),
    ("idempotency", "Herald has no idempotency keys"),
    ("connection_recovery", "Herald has no connection recovery"),
    ("history", "Herald keeps no history"),
    ("presence_history", "Herald keeps no history"),
    ("decay_seconds", "Herald counts client events per second"),
    (
        "terminate_on_limit",
        "Herald keeps a socket open over the client event limit (pusher:error 4301)",
    ),
    (
        "message_rate_limit",
        "Herald limits client events, not every message",
    ),
];

/// Watchlist events need no switch in Herald: a user's sign-in data asks for them.
const SAID_BY_HERALD: [&str; 1] = ["enable_watchlist_events"];

/// Columns of sockudo's table that say nothing about the app.
const BOOKKEEPING: [&str; 2] = ["created_at", "updated_at"];

/// Server-wide values an app falls back on: (setting, path, sockudo's default).
const SERVER_DEFAULTS: &[(Setting, &[&str], f64)] = &[
    (
        Setting::PresenceMembers,
        &["presence", "max_members_per_channel"],
        100.0,
    ),
    (
        Setting::PresenceMemberKb,
        &["presence", "max_member_size_in_kb"],
        2.0,
    ),
    (
        Setting::ChannelNameLength,
        &["channel_limits", "max_name_length"],
        200.0,
    ),
    (
        Setting::EventChannelsAtOnce,
        &["event_limits", "max_channels_at_once"],
        100.0,
    ),
    (
        Setting::EventNameLength,
        &["event_limits", "max_name_length"],
        200.0,
    ),
    (
        Setting::EventPayloadKb,
        &["event_limits", "max_payload_in_kb"],
        100.0,
    ),
    (
        Setting::EventBatchSize,
        &["event_limits", "max_batch_size"],
        10.0,
    ),
    (Setting::CacheTtl, &["channel_limits", "cache_ttl"], 3600.0),
];

/// sockudo's `user_authentication_timeout` default, in seconds.
const USER_AUTH_TIMEOUT_SECS: u64 = 3600;

/// The apps of a config file (`app_manager.array.apps`), and how it fills in the rest.
pub(super) fn from_file(config: &Value) -> Result<(Vec<PeerApp>, Peer), String> {
    let at = |path: &[&str]| path.iter().try_fold(config, |v, p| v.get(p));
    if let Some(driver) = at(&["app_manager", "driver"])
        .and_then(Value::as_str)
        .filter(|d| *d != "memory")
    {
        return Err(format!(
            "this sockudo keeps its apps in {driver} (`app_manager.driver`), not in the file: {}",
            super::mapping::table_hint(driver)
        ));
    }
    let apps = match at(&["app_manager", "array", "apps"]) {
        Some(Value::Array(apps)) => apps,
        Some(_) => return Err("`app_manager.array.apps` is not a list".into()),
        None => return Err("no apps: sockudo's `app_manager.array.apps` is not set".into()),
    };
    let apps = apps
        .iter()
        .enumerate()
        .map(|(i, app)| match app {
            Value::Object(app) => read_app(app, "app_manager.array.apps", i),
            _ => Err(format!("`app_manager.array.apps[{i}]` is not an object")),
        })
        .collect::<Result<_, _>>()?;
    let mut defaults = PeerApp::default();
    for (setting, path, default) in SERVER_DEFAULTS {
        let value = at(path).cloned().unwrap_or_else(|| json!(default));
        defaults.set(*setting, &path.join("."), value);
    }
    let timeout = at(&["user_authentication_timeout"])
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
        .unwrap_or(USER_AUTH_TIMEOUT_SECS);
    Ok((apps, peer(defaults, timeout)))
}

/// How sockudo fills in a row of its table (the server-wide defaults alone).
pub(super) fn table_peer() -> Peer {
    let mut defaults = PeerApp::default();
    for (setting, path, default) in SERVER_DEFAULTS {
        defaults.set(*setting, &path.join("."), json!(default));
    }
    peer(defaults, USER_AUTH_TIMEOUT_SECS)
}

fn peer(mut defaults: PeerApp, timeout: u64) -> Peer {
    // A sockudo app's own defaults (its serde defaults): disabled unless it says enabled.
    for (setting, value) in [
        (Setting::Enabled, json!(false)),
        (Setting::MaxConnections, json!(0)),
        (Setting::ClientMessages, json!(false)),
        (Setting::ClientEventsPerSecond, json!(0)),
    ] {
        defaults.set(setting, "sockudo's default", value);
    }
    Peer {
        name: "sockudo",
        zero_is_unlimited: true,
        defaults,
        user_auth_timeout_secs: timeout,
    }
}

/// One app (a file's, or a row of the table): flat, or with a `policy` that wins.
pub(super) fn read_app(app: &Map<String, Value>, list: &str, i: usize) -> Result<PeerApp, String> {
    let mut out = PeerApp::default();
    let policy = match app.get("policy") {
        Some(Value::String(text)) => Some(
            serde_json::from_str::<Value>(text)
                .map_err(|_| format!("`{list}[{i}].policy` is not JSON"))?,
        ),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.clone()),
    };
    match policy {
        Some(Value::Object(policy)) => {
            for (name, value) in app {
                if ["id", "key", "secret", "enabled"].contains(&name.as_str()) {
                    read_one(&mut out, name, name, value);
                }
            }
            for (section, value) in &policy {
                match (section.as_str(), value) {
                    ("limits" | "features" | "channels", Value::Object(inner)) => {
                        for (name, value) in inner {
                            read_one(&mut out, name, &format!("policy.{section}.{name}"), value);
                        }
                    }
                    _ => read_one(&mut out, section, &format!("policy.{section}"), value),
                }
            }
        }
        Some(_) => return Err(format!("`{list}[{i}].policy` is not an object")),
        None => {
            for (name, value) in app {
                if !BOOKKEEPING.contains(&name.as_str()) && name != "policy" {
                    read_one(&mut out, name, name, value);
                }
            }
        }
    }
    Ok(out)
}

/// One setting, found as `name`, shown as `shown`.
fn read_one(out: &mut PeerApp, name: &str, shown: &str, value: &Value) {
    if let Some((setting, _)) = NAMES.iter().find(|(_, n)| *n == name) {
        out.set(*setting, shown, value.clone());
        return;
    }
    let unset = match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Array(list) => list.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::String(text) => text.is_empty() || text == "null" || text == "[]" || text == "{}",
        Value::Number(_) => false,
    };
    if unset || SAID_BY_HERALD.contains(&name) {
        return;
    }
    // A value that only says "allow every origin" is what Herald does anyway.
    if name == "allowed_origins" && is_every_origin(value) {
        return;
    }
    let why = UNMAPPED
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("not a sockudo app setting Herald knows", |(_, why)| why);
    out.notes.push(Note::new(shown, why));
}

fn is_every_origin(value: &Value) -> bool {
    let parsed;
    let value = match value {
        // SOCKUDO_DEFAULT_APP_ALLOWED_ORIGINS is a comma-separated list.
        Value::String(text) if !text.trim_start().starts_with('[') => {
            return text.split(',').all(|o| o.trim() == "*");
        }
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
            &parsed
        }
        other => other,
    };
    value
        .as_array()
        .is_some_and(|list| list.iter().all(|o| o == "*"))
}

/// The variables sockudo builds its default app from, and its defaults for them.
const ENV_LIMITS: &[(&str, Setting)] = &[
    ("MAX_CONNECTIONS", Setting::MaxConnections),
    (
        "MAX_BACKEND_EVENTS_PER_SECOND",
        Setting::BackendEventsPerSecond,
    ),
    (
        "MAX_CLIENT_EVENTS_PER_SECOND",
        Setting::ClientEventsPerSecond,
    ),
    (
        "MAX_READ_REQUESTS_PER_SECOND",
        Setting::ReadRequestsPerSecond,
    ),
    ("MAX_PRESENCE_MEMBERS_PER_CHANNEL", Setting::PresenceMembers),
    ("MAX_PRESENCE_MEMBER_SIZE_IN_KB", Setting::PresenceMemberKb),
    ("MAX_CHANNEL_NAME_LENGTH", Setting::ChannelNameLength),
    ("MAX_EVENT_CHANNELS_AT_ONCE", Setting::EventChannelsAtOnce),
    ("MAX_EVENT_NAME_LENGTH", Setting::EventNameLength),
    ("MAX_EVENT_PAYLOAD_IN_KB", Setting::EventPayloadKb),
    ("MAX_EVENT_BATCH_SIZE", Setting::EventBatchSize),
];

/// The app sockudo builds from `SOCKUDO_DEFAULT_APP_*` (it needs the id, key and secret
/// together; each limit it leaves out is 100 there).
pub(super) fn from_env(vars: &[(String, String)]) -> Result<(Vec<PeerApp>, Peer), String> {
    let get = |name: &str| {
        vars.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let mut app = PeerApp::default();
    for (part, setting) in [
        ("ID", Setting::Id),
        ("KEY", Setting::Key),
        ("SECRET", Setting::Secret),
    ] {
        let name = format!("SOCKUDO_DEFAULT_APP_{part}");
        let value = get(&name).ok_or_else(|| {
            format!("{name} is not set: sockudo builds its default app from SOCKUDO_DEFAULT_APP_ID, _KEY and _SECRET together")
        })?;
        app.set(setting, &name, value.into());
    }
    let enabled = match get("SOCKUDO_DEFAULT_APP_ENABLED") {
        Some(v) => flag("SOCKUDO_DEFAULT_APP_ENABLED", &v.into())?,
        None => true,
    };
    if !enabled {
        return Err("SOCKUDO_DEFAULT_APP_ENABLED is false: sockudo builds no default app".into());
    }
    app.set(Setting::Enabled, "SOCKUDO_DEFAULT_APP_ENABLED", true.into());
    for (part, setting) in ENV_LIMITS {
        let name = format!("SOCKUDO_DEFAULT_APP_{part}");
        app.set(*setting, &name, get(&name).map_or(json!(100), Value::from));
    }
    let client = get("SOCKUDO_DEFAULT_APP_ENABLE_CLIENT_MESSAGES")
        .map(|v| ("SOCKUDO_DEFAULT_APP_ENABLE_CLIENT_MESSAGES", v))
        .or_else(|| {
            get("SOCKUDO_ENABLE_CLIENT_MESSAGES").map(|v| ("SOCKUDO_ENABLE_CLIENT_MESSAGES", v))
        });
    if let Some((name, v)) = client {
        app.set(Setting::ClientMessages, name, v.into());
    }
    if let Some(v) = get("SOCKUDO_DEFAULT_APP_ENABLE_USER_AUTHENTICATION") {
        app.set(
            Setting::UserAuthentication,
            "SOCKUDO_DEFAULT_APP_ENABLE_USER_AUTHENTICATION",
            v.into(),
        );
    }
    for (name, value) in vars {
        let Some(part) = name.strip_prefix("SOCKUDO_DEFAULT_APP_") else {
            continue;
        };
        let known = [
            "ID",
            "KEY",
            "SECRET",
            "ENABLED",
            "ENABLE_CLIENT_MESSAGES",
            "ENABLE_USER_AUTHENTICATION",
            "ENABLE_WATCHLIST_EVENTS",
        ]
        .contains(&part)
            || ENV_LIMITS.iter().any(|(p, _)| *p == part);
        if !known {
            read_one(
                &mut app,
                &part.to_ascii_lowercase(),
                name,
                &Value::from(value.as_str()),
            );
        }
    }
    let timeout = get("USER_AUTHENTICATION_TIMEOUT")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(USER_AUTH_TIMEOUT_SECS);
    Ok((vec![app], peer(table_peer().defaults, timeout)))
}
