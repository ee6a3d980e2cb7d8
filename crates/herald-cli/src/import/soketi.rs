//! soketi's apps: its JSON config file, its `SOKETI_*` environment variables and its
//! MySQL/PostgreSQL app table, read the way soketi reads them. soketi merges the file and
//! then the environment into one options object by dotted path (`appManager.array.apps`,
//! `SOKETI_DEFAULT_APP_KEY` → `appManager.array.apps.0.key`); an app's settings are found
//! under any of its names (camelCase in files, snake_case in tables); and what an app
//! leaves out falls back on the server-wide options (`presence.maxMemberSizeInKb`, …).

use serde_json::{json, Map, Value};

use super::mapping::{Note, Peer, PeerApp, Setting};

/// Each setting's names in soketi: a file's camelCase (and PascalCase, which soketi also
/// reads) and a table's snake_case column.
const NAMES: &[(Setting, &[&str])] = &[
    (Setting::Id, &["id", "AppId"]),
    (Setting::Key, &["key", "AppKey"]),
    (Setting::Secret, &["secret", "AppSecret"]),
    (Setting::Enabled, &["enabled", "Enabled"]),
    (
        Setting::MaxConnections,
        &["maxConnections", "MaxConnections", "max_connections"],
    ),
    (
        Setting::ClientMessages,
        &[
            "enableClientMessages",
            "EnableClientMessages",
            "enable_client_messages",
        ],
    ),
    (
        Setting::BackendEventsPerSecond,
        &[
            "maxBackendEventsPerSecond",
            "MaxBackendEventsPerSecond",
            "max_backend_events_per_sec",
        ],
    ),
    (
        Setting::ClientEventsPerSecond,
        &[
            "maxClientEventsPerSecond",
            "MaxClientEventsPerSecond",
            "max_client_events_per_sec",
        ],
    ),
    (
        Setting::ReadRequestsPerSecond,
        &[
            "maxReadRequestsPerSecond",
            "MaxReadRequestsPerSecond",
            "max_read_req_per_sec",
        ],
    ),
    (Setting::Webhooks, &["webhooks", "Webhooks"]),
    (
        Setting::PresenceMembers,
        &[
            "maxPresenceMembersPerChannel",
            "MaxPresenceMembersPerChannel",
            "max_presence_members_per_channel",
        ],
    ),
    (
        Setting::PresenceMemberKb,
        &[
            "maxPresenceMemberSizeInKb",
            "MaxPresenceMemberSizeInKb",
            "max_presence_member_size_in_kb",
        ],
    ),
    (
        Setting::ChannelNameLength,
        &[
            "maxChannelNameLength",
            "MaxChannelNameLength",
            "max_channel_name_length",
        ],
    ),
    (
        Setting::EventChannelsAtOnce,
        &[
            "maxEventChannelsAtOnce",
            "MaxEventChannelsAtOnce",
            "max_event_channels_at_once",
        ],
    ),
    (
        Setting::EventNameLength,
        &[
            "maxEventNameLength",
            "MaxEventNameLength",
            "max_event_name_length",
        ],
    ),
    (
        Setting::EventPayloadKb,
        &[
            "maxEventPayloadInKb",
            "MaxEventPayloadInKb",
            "max_event_payload_in_kb",
        ],
    ),
    (
        Setting::EventBatchSize,
        &[
            "maxEventBatchSize",
            "MaxEventBatchSize",
            "max_event_batch_size",
        ],
    ),
    (
        Setting::UserAuthentication,
        &[
            "enableUserAuthentication",
            "EnableUserAuthentication",
            "enable_user_authentication",
        ],
    ),
];

/// Columns an operator often adds that say nothing about the app.
const BOOKKEEPING: [&str; 2] = ["created_at", "updated_at"];

/// The `SOKETI_` variables soketi reads, by the dotted option each sets (soketi's own
/// table; only those that touch apps are listed, the rest are server settings).
const ENV_OPTIONS: &[(&str, &str)] = &[
    ("APP_MANAGER_DRIVER", "appManager.driver"),
    ("DEFAULT_APP_ID", "appManager.array.apps.0.id"),
    ("DEFAULT_APP_KEY", "appManager.array.apps.0.key"),
    ("DEFAULT_APP_SECRET", "appManager.array.apps.0.secret"),
    (
        "DEFAULT_APP_MAX_CONNS",
        "appManager.array.apps.0.maxConnections",
    ),
    (
        "DEFAULT_APP_ENABLE_CLIENT_MESSAGES",
        "appManager.array.apps.0.enableClientMessages",
    ),
    ("DEFAULT_APP_ENABLED", "appManager.array.apps.0.enabled"),
    (
        "DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC",
        "appManager.array.apps.0.maxBackendEventsPerSecond",
    ),
    (
        "DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC",
        "appManager.array.apps.0.maxClientEventsPerSecond",
    ),
    (
        "DEFAULT_APP_MAX_READ_REQ_PER_SEC",
        "appManager.array.apps.0.maxReadRequestsPerSecond",
    ),
    (
        "DEFAULT_APP_USER_AUTHENTICATION",
        "appManager.array.apps.0.enableUserAuthentication",
    ),
    ("DEFAULT_APP_WEBHOOKS", "appManager.array.apps.0.webhooks"),
    (
        "CHANNEL_LIMITS_MAX_NAME_LENGTH",
        "channelLimits.maxNameLength",
    ),
    ("CHANNEL_CACHE_TTL", "channelLimits.cacheTtl"),
    ("EVENT_MAX_BATCH_SIZE", "eventLimits.maxBatchSize"),
    (
        "EVENT_MAX_CHANNELS_AT_ONCE",
        "eventLimits.maxChannelsAtOnce",
    ),
    ("EVENT_MAX_NAME_LENGTH", "eventLimits.maxNameLength"),
    ("EVENT_MAX_SIZE_IN_KB", "eventLimits.maxPayloadInKb"),
    ("PRESENCE_MAX_MEMBER_SIZE", "presence.maxMemberSizeInKb"),
    ("PRESENCE_MAX_MEMBERS", "presence.maxMembersPerChannel"),
    ("USER_AUTHENTICATION_TIMEOUT", "userAuthenticationTimeout"),
];

/// The server-wide options an app falls back on: (setting, option path, soketi's default).
const SERVER_DEFAULTS: &[(Setting, &str, f64)] = &[
    (
        Setting::PresenceMembers,
        "presence.maxMembersPerChannel",
        100.0,
    ),
    (Setting::PresenceMemberKb, "presence.maxMemberSizeInKb", 2.0),
    (
        Setting::ChannelNameLength,
        "channelLimits.maxNameLength",
        200.0,
    ),
    (
        Setting::EventChannelsAtOnce,
        "eventLimits.maxChannelsAtOnce",
        100.0,
    ),
    (Setting::EventNameLength, "eventLimits.maxNameLength", 200.0),
    (Setting::EventPayloadKb, "eventLimits.maxPayloadInKb", 100.0),
    (Setting::EventBatchSize, "eventLimits.maxBatchSize", 10.0),
    (Setting::CacheTtl, "channelLimits.cacheTtl", 3600.0),
];

/// soketi's `userAuthenticationTimeout` default, in milliseconds.
const USER_AUTH_TIMEOUT_MS: f64 = 30_000.0;

/// soketi's options, as its file and environment set them.
pub(super) struct Options(Value);

/// The public credentials of soketi's built-in app, which Herald does not import.
pub(super) const DEFAULT_SECRET: &str = "app-secret";

impl Options {
    /// soketi's starting point: its built-in app (`app-id`, `app-key`, `app-secret`),
    /// which a file's `appManager.array.apps` replaces and `SOKETI_DEFAULT_APP_*` change.
    pub(super) fn new() -> Options {
        Options(json!({"appManager": {"array": {"apps": [
            {"id": "app-id", "key": "app-key", "secret": DEFAULT_SECRET}
        ]}}}))
    }

    /// Applies a config file: each top-level key is a dotted path (soketi's `dot.set`).
    pub(super) fn apply_file(&mut self, file: Value) -> Result<(), String> {
        let Value::Object(top) = file else {
            return Err("a soketi config file is a JSON object".into());
        };
        for (path, value) in top {
            dot_set(&mut self.0, &path, value);
        }
        Ok(())
    }

    /// Applies `SOKETI_*` variables (values read as JSON when they parse, as soketi does);
    /// returns a note for each that is a server setting, not an app's.
    pub(super) fn apply_env(&mut self, vars: &[(String, String)]) -> Vec<Note> {
        let mut notes = Vec::new();
        for (name, value) in vars {
            let Some(short) = name.strip_prefix("SOKETI_") else {
                continue;
            };
            match ENV_OPTIONS.iter().find(|(n, _)| *n == short) {
                Some((_, path)) => {
                    let value = serde_json::from_str(value)
                        .unwrap_or_else(|_| Value::String(value.clone()));
                    dot_set(&mut self.0, path, value);
                }
                None => notes.push(Note::new(
                    name,
                    "a server setting, not an app's (docs/migrating.md, \"Coming from soketi\", names Herald's)",
                )),
            }
        }
        notes
    }

    fn at(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(&self.0, |v, part| match v {
            Value::Object(map) => map.get(part),
            Value::Array(list) => part.parse::<usize>().ok().and_then(|i| list.get(i)),
            _ => None,
        })
    }

    /// The apps of `appManager.array.apps`.
    pub(super) fn apps(&self) -> Result<Vec<PeerApp>, String> {
        let driver = self.at("appManager.driver").and_then(Value::as_str);
        if let Some(driver) = driver.filter(|d| *d != "array") {
            return Err(format!(
                "this soketi keeps its apps in {driver} (`appManager.driver`), not in the file: {}",
                super::mapping::table_hint(driver)
            ));
        }
        let Some(apps) = self.at("appManager.array.apps") else {
            return Err("no apps: soketi's `appManager.array.apps` is not set".into());
        };
        let Value::Array(apps) = apps else {
            return Err("`appManager.array.apps` is not a list".into());
        };
        apps.iter()
            .enumerate()
            .map(|(i, app)| match app {
                Value::Object(app) => Ok(read_app(app, true)),
                _ => Err(format!("`appManager.array.apps.{i}` is not an object")),
            })
            .collect()
    }

    /// How soketi fills in what an app leaves out, under these options.
    pub(super) fn peer(&self) -> Peer {
        let mut defaults = PeerApp::default();
        for (setting, path, default) in SERVER_DEFAULTS {
            let value = self.at(path).cloned().unwrap_or_else(|| json!(default));
            defaults.set(*setting, path, value);
        }
        let timeout_ms = self
            .at("userAuthenticationTimeout")
            .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
            .unwrap_or(USER_AUTH_TIMEOUT_MS);
        peer_with(defaults, timeout_ms)
    }
}

/// soketi's defaults alone: what a table's rows fall back on.
pub(super) fn table_peer() -> Peer {
    Options(Value::Null).peer()
}

fn peer_with(mut defaults: PeerApp, timeout_ms: f64) -> Peer {
    // An app object's own defaults in soketi (its App class).
    for (setting, value) in [
        (Setting::MaxConnections, json!(-1)),
        (Setting::ClientMessages, json!(false)),
        (Setting::Enabled, json!(true)),
        (Setting::BackendEventsPerSecond, json!(-1)),
        (Setting::ClientEventsPerSecond, json!(-1)),
        (Setting::ReadRequestsPerSecond, json!(-1)),
    ] {
        defaults.set(setting, "soketi's default", value);
    }
    Peer {
        name: "soketi",
        zero_is_unlimited: false,
        defaults,
        user_auth_timeout_secs: (timeout_ms / 1000.0).ceil().max(1.0) as u64,
    }
}

/// One app object (a file's) or row (a table's); `file` says which, for notes.
pub(super) fn read_app(app: &Map<String, Value>, file: bool) -> PeerApp {
    let mut peer_app = PeerApp::default();
    for (name, value) in app {
        match NAMES
            .iter()
            .find(|(_, names)| names.contains(&name.as_str()))
        {
            Some((setting, _)) => peer_app.set(*setting, name, value.clone()),
            None if BOOKKEEPING.contains(&name.as_str()) || value.is_null() => {}
            None => peer_app.notes.push(Note::new(
                name,
                if file {
                    "not an app setting soketi reads"
                } else {
                    "a column soketi does not read"
                },
            )),
        }
    }
    peer_app
}

/// soketi's `dot.set`: creates objects on the way, and reads a numeric part as a list
/// index when the value there is a list (or nothing yet, under `apps`).
fn dot_set(target: &mut Value, path: &str, value: Value) {
    let mut here = target;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let next_is_index = parts.get(i + 1).is_some_and(|p| p.parse::<usize>().is_ok());
        let index = part.parse::<usize>().ok().filter(|_| here.is_array());
        if here.is_null() {
            *here = Value::Object(Map::new());
        }
        let slot = match (here, index) {
            (Value::Array(list), Some(index)) => {
                // A bounded index: soketi's variables only ever name apps.0.
                if index > 64 {
                    return;
                }
                while list.len() <= index {
                    list.push(Value::Object(Map::new()));
                }
                &mut list[index]
            }
            (Value::Object(map), _) => map.entry(part.to_string()).or_insert(Value::Null),
            _ => return,
        };
        if last {
            *slot = value;
            return;
        }
        if slot.is_null() && next_is_index {
            *slot = Value::Array(Vec::new());
        }
        here = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_and_nested_options_meet() {
        let mut options = Options::new();
        options
            .apply_file(json!({
                "appManager.array.apps": [{"id": "1", "key": "k", "secret": "s"}],
                "presence": {"maxMembersPerChannel": 50},
            }))
            .expect("an object");
        let notes = options.apply_env(&[
            ("SOKETI_DEFAULT_APP_KEY".into(), "k2".into()),
            ("SOKETI_PORT".into(), "6001".into()),
            ("HOME".into(), "/root".into()),
        ]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].setting, "SOKETI_PORT");
        assert_eq!(
            options.at("appManager.array.apps.0.key"),
            Some(&json!("k2"))
        );
        assert_eq!(options.at("appManager.array.apps.0.id"), Some(&json!("1")));
        assert_eq!(
            options.at("presence.maxMembersPerChannel"),
            Some(&json!(50))
        );
        let mut env_only = Options::new();
        env_only.apply_env(&[("SOKETI_DEFAULT_APP_MAX_CONNS".into(), "10".into())]);
        assert_eq!(
            env_only.at("appManager.array.apps.0.maxConnections"),
            Some(&json!(10))
        );
    }
}
