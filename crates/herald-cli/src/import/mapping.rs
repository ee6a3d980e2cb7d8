//! The settings soketi and sockudo give an app (they share them: sockudo took soketi's
//! app model), mapped to Herald's `[[apps]]` keys. A reader names each value it found by
//! the name the operator wrote; this module decides what Herald does with it and says, one
//! line per setting, what it cannot carry over.

use herald_server::app_config::fields::{app_from_fields, Plans};
use herald_server::AppLimits;
use serde_json::{json, Map, Value};

/// A setting both peers have, whatever each calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Setting {
    Id,
    Key,
    Secret,
    Enabled,
    MaxConnections,
    ClientMessages,
    BackendEventsPerSecond,
    ClientEventsPerSecond,
    ReadRequestsPerSecond,
    Webhooks,
    PresenceMembers,
    PresenceMemberKb,
    ChannelNameLength,
    EventChannelsAtOnce,
    EventNameLength,
    EventPayloadKb,
    EventBatchSize,
    UserAuthentication,
    /// Server-wide in both peers; per app in Herald.
    CacheTtl,
}

/// What Herald cannot carry over: the setting as the operator named it, and why.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Note {
    pub(super) setting: String,
    pub(super) why: String,
}

impl Note {
    pub(super) fn new(setting: impl Into<String>, why: impl Into<String>) -> Note {
        Note {
            setting: setting.into(),
            why: why.into(),
        }
    }
}

/// One app as the other server holds it: each known setting under the name it was read
/// by (later values win, as they do in the peer), and the notes its reader already wrote.
#[derive(Default)]
pub(super) struct PeerApp {
    values: Vec<(Setting, String, Value)>,
    pub(super) notes: Vec<Note>,
}

impl PeerApp {
    /// Records `value`, read as `name`; null and empty text count as absent, as in both
    /// peers.
    pub(super) fn set(&mut self, setting: Setting, name: &str, value: Value) {
        if value.is_null() || value.as_str() == Some("") {
            return;
        }
        self.values.retain(|(s, _, _)| *s != setting);
        self.values.push((setting, name.to_owned(), value));
    }

    fn get(&self, setting: Setting) -> Option<(&str, &Value)> {
        self.values
            .iter()
            .find(|(s, _, _)| *s == setting)
            .map(|(_, n, v)| (n.as_str(), v))
    }

    pub(super) fn has(&self, setting: Setting) -> bool {
        self.get(setting).is_some()
    }
}

/// How a peer reads what an app leaves out, and how it writes "no limit".
pub(super) struct Peer {
    /// The peer's name, in messages.
    pub(super) name: &'static str,
    /// sockudo: 0 is "no limit"; soketi: a negative number is, and 0 refuses everything.
    pub(super) zero_is_unlimited: bool,
    /// The server-wide values an app falls back on (the peer's defaults, or what its
    /// config file or environment set), by setting.
    pub(super) defaults: PeerApp,
    /// How long a socket has to sign in when an app enables user authentication.
    pub(super) user_auth_timeout_secs: u64,
}

/// An app ready for Herald: its `[[apps]]` fields, and what did not map.
pub(super) struct Imported {
    pub(super) fields: Map<String, Value>,
    pub(super) notes: Vec<Note>,
}

impl Imported {
    pub(super) fn text(&self, name: &str) -> &str {
        self.fields.get(name).and_then(Value::as_str).unwrap_or("")
    }
}

/// An app's id, key and secret from three variables, each required.
pub(super) fn credentials(env: &super::Env, names: [&str; 3]) -> Result<Map<String, Value>, Bad> {
    let mut fields = Map::new();
    for (name, key) in names.into_iter().zip(["id", "key", "secret"]) {
        let value = env
            .get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{name} is not set"))?;
        fields.insert(key.into(), value.into());
    }
    Ok(fields)
}

/// Bad input: one line, naming the app and the setting.
pub(super) type Bad = String;

/// A number, from a number or from text (both peers accept `"100"`).
fn number(name: &str, value: &Value) -> Result<f64, Bad> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    parsed
        .filter(|n| n.is_finite())
        .ok_or_else(|| format!("`{name}` is not a number: {value}"))
}

/// A flag, from a boolean, 0/1 (SQL columns) or text.
pub(super) fn flag(name: &str, value: &Value) -> Result<bool, Bad> {
    let parsed = match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|n| n != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" => Some(false),
            _ => None,
        },
        _ => None,
    };
    parsed.ok_or_else(|| format!("`{name}` is not true or false: {value}"))
}

/// Text, from text or a number (ids are often numbers).
pub(super) fn text(name: &str, value: &Value) -> Result<String, Bad> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(format!("`{name}` is not text: {value}")),
    }
}

/// Herald's value for each key the mapping writes, so an app's file or row holds only
/// what differs from Herald's defaults.
fn herald_default(key: &str) -> Option<Value> {
    let d = AppLimits::default();
    Some(match key {
        "enabled" => json!(true),
        "max_connections" => json!(d.max_connections),
        "client_events" => json!(d.client_events),
        "client_events_per_second" => json!(d.client_events_per_second),
        "publishes_per_second" => json!(d.publishes_per_second),
        "reads_per_second" => json!(d.reads_per_second),
        "max_presence_members" => json!(d.max_presence_members),
        "max_presence_user_info_bytes" => json!(d.max_presence_user_info_bytes),
        "max_channel_name_length" => json!(d.max_channel_name_length),
        "max_channels_per_trigger" => json!(d.max_channels_per_trigger),
        "max_event_data_bytes" => json!(d.max_event_data_bytes),
        "max_events_per_batch" => json!(d.max_events_per_batch),
        "user_authentication_timeout" => json!(0),
        "cache_ttl" => json!(herald_cache_ttl()),
        _ => return None,
    })
}

/// Herald's default `cache_ttl`, in seconds, as an app that leaves it out gets it.
fn herald_cache_ttl() -> u64 {
    let bare = json!({"id": "1", "key": "k", "secret": "s"});
    let fields = bare.as_object().cloned().unwrap_or_default();
    app_from_fields("", fields, &Plans::default()).map_or(0, |app| app.cache_ttl.as_secs())
}

/// Maps one app. `label` names it in errors until its id is known.
pub(super) fn map_app(mut app: PeerApp, peer: &Peer, label: &str) -> Result<Imported, String> {
    for (setting, name, value) in &peer.defaults.values {
        if !app.has(*setting) {
            app.set(*setting, name, value.clone());
        }
    }
    let mut out = Imported {
        fields: Map::new(),
        notes: std::mem::take(&mut app.notes),
    };
    let id = match app.get(Setting::Id) {
        Some((name, value)) => text(name, value).map_err(|e| format!("{label}: {e}"))?,
        None => return Err(format!("{label}: has no id")),
    };
    let at = format!("app '{id}'");
    let client_events = match app.get(Setting::ClientMessages) {
        Some((name, value)) => flag(name, value).map_err(|e| format!("{at}: {e}"))?,
        None => true,
    };
    for (setting, name, value) in &app.values {
        map_one(*setting, name, value, peer, client_events, &mut out)
            .map_err(|e| format!("{at}: {e}"))?;
    }
    for required in ["key", "secret"] {
        if !out.fields.contains_key(required) {
            return Err(format!("{at}: has no {required}"));
        }
    }
    out.fields
        .retain(|key, value| herald_default(key).as_ref() != Some(value));
    Ok(out)
}

fn map_one(
    setting: Setting,
    name: &str,
    value: &Value,
    peer: &Peer,
    client_events: bool,
    out: &mut Imported,
) -> Result<(), Bad> {
    let mut put = |key: &str, v: Value| {
        out.fields.insert(key.to_owned(), v);
    };
    match setting {
        Setting::Id => put("id", text(name, value)?.into()),
        Setting::Key => put("key", text(name, value)?.into()),
        Setting::Secret => put("secret", text(name, value)?.into()),
        Setting::Enabled => put("enabled", flag(name, value)?.into()),
        Setting::ClientMessages => put("client_events", client_events.into()),
        Setting::MaxConnections => rate(name, value, peer, "max_connections", out)?,
        Setting::BackendEventsPerSecond => rate(name, value, peer, "publishes_per_second", out)?,
        Setting::ReadRequestsPerSecond => rate(name, value, peer, "reads_per_second", out)?,
        Setting::ClientEventsPerSecond => {
            let n = number(name, value)?;
            if n >= 1.0 {
                put("client_events_per_second", json!(n.ceil() as u64));
            } else if client_events {
                out.notes.push(Note::new(
                    format!("{name} = {value}"),
                    format!("no limit in {}; Herald always limits client events, to 10 per second per connection unless client_events_per_second says otherwise", peer.name),
                ));
            }
        }
        Setting::PresenceMembers => at_least_one(name, value, 1.0, "max_presence_members", out)?,
        Setting::PresenceMemberKb => {
            at_least_one(name, value, 1024.0, "max_presence_user_info_bytes", out)?
        }
        Setting::ChannelNameLength => {
            at_least_one(name, value, 1.0, "max_channel_name_length", out)?
        }
        Setting::EventChannelsAtOnce => {
            at_least_one(name, value, 1.0, "max_channels_per_trigger", out)?
        }
        Setting::EventPayloadKb => at_least_one(name, value, 1024.0, "max_event_data_bytes", out)?,
        Setting::EventBatchSize => at_least_one(name, value, 1.0, "max_events_per_batch", out)?,
        Setting::CacheTtl => at_least_one(name, value, 1.0, "cache_ttl", out)?,
        Setting::EventNameLength => {
            let n = number(name, value)?;
            if n != herald_protocol::channel::MAX_EVENT_NAME_LEN as f64 {
                out.notes.push(Note::new(
                    format!("{name} = {value}"),
                    "Herald takes event names of up to 200 characters, for every app",
                ));
            }
        }
        Setting::UserAuthentication => {
            if flag(name, value)? {
                put(
                    "user_authentication_timeout",
                    json!(peer.user_auth_timeout_secs.clamp(1, 86_400)),
                );
            }
        }
        Setting::Webhooks => {
            let hooks = webhooks(name, value, &mut out.notes)?;
            if !hooks.is_empty() {
                out.fields.insert("webhooks".into(), Value::Array(hooks));
            }
        }
    }
    Ok(())
}

/// A limit where the peer has a way to say "no limit" and Herald's is 0.
fn rate(name: &str, value: &Value, peer: &Peer, key: &str, out: &mut Imported) -> Result<(), Bad> {
    let n = number(name, value)?;
    if n >= 1.0 {
        out.fields.insert(key.into(), json!(n.ceil() as u64));
    } else if n < 0.0 || peer.zero_is_unlimited {
        out.fields.insert(key.into(), json!(0));
    } else {
        out.notes.push(Note::new(
            format!("{name} = {value}"),
            format!(
                "{} refuses everything at 0, Herald's 0 is no limit: disable the app or set `{key}`",
                peer.name
            ),
        ));
    }
    Ok(())
}

/// A limit Herald needs at least 1 of; `scale` turns the peer's unit (KB) into Herald's.
fn at_least_one(
    name: &str,
    value: &Value,
    scale: f64,
    key: &str,
    out: &mut Imported,
) -> Result<(), Bad> {
    let n = (number(name, value)? * scale).round();
    if n >= 1.0 {
        out.fields.insert(key.into(), json!(n as u64));
    } else {
        out.notes.push(Note::new(
            format!("{name} = {value}"),
            format!("Herald's `{key}` must be at least 1"),
        ));
    }
    Ok(())
}

/// The peers' webhooks (a list, or a JSON text of one in a SQL column), as Herald's.
fn webhooks(name: &str, value: &Value, notes: &mut Vec<Note>) -> Result<Vec<Value>, Bad> {
    let parsed;
    let list = match value {
        Value::Array(list) => list,
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text)
                .map_err(|_| format!("`{name}` is not JSON: {text}"))?;
            match &parsed {
                Value::Array(list) => list,
                _ => return Err(format!("`{name}` is not a list")),
            }
        }
        _ => return Err(format!("`{name}` is not a list")),
    };
    let mut hooks = Vec::new();
    for (i, hook) in list.iter().enumerate() {
        let at = format!("{name}[{i}]");
        let Some(hook) = hook.as_object() else {
            return Err(format!("`{at}` is not an object"));
        };
        if let Some(mapped) = webhook(&at, hook, notes)? {
            hooks.push(mapped);
        }
    }
    Ok(hooks)
}

fn webhook(
    at: &str,
    hook: &Map<String, Value>,
    notes: &mut Vec<Note>,
) -> Result<Option<Value>, Bad> {
    let Some(url) = hook.get("url").filter(|u| !u.is_null()) else {
        notes.push(Note::new(
            at,
            "an AWS Lambda function: Herald posts webhooks to http(s) URLs only; not imported",
        ));
        return Ok(None);
    };
    let url = text(&format!("{at}.url"), url)?;
    let mut mapped = Map::from_iter([("url".to_owned(), Value::String(url))]);
    let mut events = Vec::new();
    for event in hook
        .get("event_types")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match event.as_str() {
            Some(e) if herald_server::webhooks::WebhookKind::from_name(e).is_some() => {
                events.push(Value::from(e))
            }
            _ => notes.push(Note::new(
                format!("{at}.event_types: {event}"),
                "not an event Herald sends",
            )),
        }
    }
    if events.is_empty() {
        // An empty list is "every event" to Herald, "none" to the peers.
        notes.push(Note::new(
            at,
            "lists no event Herald sends, so it would get none: not imported",
        ));
        return Ok(None);
    }
    mapped.insert("event_types".into(), Value::Array(events));
    for (key, value) in hook {
        match key.as_str() {
            "url" | "event_types" => {}
            "filter" => {
                for (kind, v) in value.as_object().into_iter().flatten() {
                    if v.is_null() {
                        continue;
                    }
                    if matches!(kind.as_str(), "channel_name_starts_with" | "channel_prefix") {
                        let prefix = text(&format!("{at}.filter.{kind}"), v)?;
                        mapped.insert("channel_prefix".into(), prefix.into());
                    } else {
                        notes.push(Note::new(
                            format!("{at}.filter.{kind}"),
                            "Herald filters webhooks by channel prefix only: this endpoint gets these events for every channel",
                        ));
                    }
                }
            }
            "headers" if value.as_object().is_some_and(|h| !h.is_empty()) => notes.push(
                Note::new(
                    format!("{at}.headers"),
                    "Herald sends no custom headers (receivers check X-Pusher-Key and X-Pusher-Signature)",
                ),
            ),
            "retry" | "request_timeout_ms" if !value.is_null() => notes.push(Note::new(
                format!("{at}.{key}"),
                "Herald retries every webhook with backoff for 5 minutes, for every app",
            )),
            _ if value.is_null() || value.as_object().is_some_and(Map::is_empty) => {}
            _ => notes.push(Note::new(format!("{at}.{key}"), "no Herald equivalent")),
        }
    }
    Ok(Some(Value::Object(mapped)))
}

/// What to do when the file says the apps live elsewhere.
pub(super) fn table_hint(driver: &str) -> &'static str {
    if matches!(driver, "mysql" | "postgres" | "postgresql" | "pg") {
        "import its table with --db URL --table NAME"
    } else {
        "Herald reads its MySQL or PostgreSQL table (--db URL), or apps listed in the file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(zero_is_unlimited: bool) -> Peer {
        Peer {
            name: "peer",
            zero_is_unlimited,
            defaults: PeerApp::default(),
            user_auth_timeout_secs: 30,
        }
    }

    fn app(settings: &[(Setting, Value)]) -> PeerApp {
        let mut app = PeerApp::default();
        app.set(Setting::Id, "id", json!(7));
        app.set(Setting::Key, "key", json!("k"));
        app.set(Setting::Secret, "secret", json!("s"));
        for (setting, value) in settings {
            app.set(*setting, &format!("{setting:?}"), value.clone());
        }
        app
    }

    #[test]
    fn zero_is_no_limit_only_where_the_peer_says_so() {
        let zero = app(&[(Setting::MaxConnections, json!("0"))]);
        let sockudo = map_app(zero, &peer(true), "x").expect("valid");
        assert_eq!(sockudo.fields["id"], "7");
        assert!(
            !sockudo.fields.contains_key("max_connections"),
            "0 is the default"
        );
        assert!(sockudo.notes.is_empty());
        let zero = app(&[(Setting::MaxConnections, json!(0))]);
        let soketi = map_app(zero, &peer(false), "x").expect("valid");
        assert_eq!(soketi.notes.len(), 1);
        assert!(
            soketi.notes[0].why.contains("refuses everything"),
            "{:?}",
            soketi.notes
        );
        let bad = app(&[(Setting::MaxConnections, json!([1]))]);
        let error = map_app(bad, &peer(false), "x").err().expect("not a number");
        assert_eq!(error, "app '7': `MaxConnections` is not a number: [1]");
    }

    #[test]
    fn a_webhook_with_no_event_herald_sends_is_not_imported() {
        let hooks = json!([
            {"url": "https://h.example/a", "event_types": []},
            {"url": "https://h.example/b", "event_types": ["ai_run_started", "member_added"]},
        ]);
        let mapped = map_app(app(&[(Setting::Webhooks, hooks)]), &peer(false), "x").expect("valid");
        assert_eq!(
            mapped.fields["webhooks"],
            json!([{"url": "https://h.example/b", "event_types": ["member_added"]}])
        );
        let settings: Vec<&str> = mapped.notes.iter().map(|n| n.setting.as_str()).collect();
        assert_eq!(
            settings,
            ["Webhooks[0]", "Webhooks[1].event_types: \"ai_run_started\""]
        );
    }
}
