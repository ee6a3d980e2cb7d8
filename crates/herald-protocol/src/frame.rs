//! The JSON messages of Pusher protocol 7 carried in WebSocket text frames.
//!
//! Decoding covers what clients send (`pusher:ping`, `pusher:subscribe`, client events, ...);
//! encoding covers what the server sends. Encoders take already-valid JSON tokens for payloads
//! they pass through (an HTTP trigger's `data` string, a client event's `data`) so that those
//! bytes reach subscribers exactly as they were received and are never re-serialised.
//!
//! Internal events (`pusher_internal:*`, `pusher:connection_established`) carry their `data` as
//! a JSON *string* holding JSON, as the official SDKs other than pusher-js require;
//! `pusher:error` carries an object (what real Pusher sends).

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Why a client message could not be understood. The text is sent back in a `pusher:error`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is not a JSON object with a string `event`.
    #[error("Invalid message: {0}")]
    Malformed(String),
    /// A `pusher:` event this server does not know.
    #[error("Unknown event: '{0}'")]
    UnknownEvent(String),
    /// A field the event needs is absent or null.
    #[error("Invalid message: '{event}' requires '{field}'")]
    MissingField {
        /// The event whose payload is incomplete.
        event: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// An event that is neither `pusher:*` nor `client-*`.
    #[error("Invalid event name: '{0}' (client events must start with 'client-')")]
    NotClientEvent(String),
}

/// A `pusher:subscribe` request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Subscribe {
    /// The channel to join.
    pub channel: String,
    /// `key:signature`, empty or absent for public channels.
    #[serde(default)]
    pub auth: Option<String>,
    /// Presence member data, as the exact JSON text that was signed.
    #[serde(default)]
    pub channel_data: Option<String>,
}

/// A `pusher:signin` request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Signin {
    /// `key:signature` over `socket_id::user::user_data`.
    pub auth: String,
    /// The user object as the exact JSON text that was signed.
    pub user_data: String,
}

#[derive(Deserialize)]
struct ChannelOnly {
    channel: String,
}

/// One decoded client → server message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientMessage<'a> {
    /// `pusher:ping`: answer with a pong.
    Ping,
    /// `pusher:pong`: the answer to the server's ping; it only proves liveness.
    Pong,
    /// `pusher:subscribe`.
    Subscribe(Subscribe),
    /// `pusher:unsubscribe`.
    Unsubscribe {
        /// The channel to leave.
        channel: String,
    },
    /// `pusher:signin`.
    Signin(Signin),
    /// A `client-*` event to relay to the channel's other subscribers.
    ClientEvent {
        /// The event name, starting with `client-`.
        event: Cow<'a, str>,
        /// The channel it is sent on.
        channel: Cow<'a, str>,
        /// The payload's JSON text as received (`null` when absent).
        data: &'a str,
    },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

const NULL: &str = "null";

/// Reads an event payload that may be an object or (as some SDKs send it) a JSON string
/// holding the object.
fn payload<'de, T: Deserialize<'de>>(
    raw: Option<&'de RawValue>,
    event: &'static str,
) -> Result<T, FrameError> {
    let raw = match raw {
        Some(raw) if raw.get() != NULL => raw,
        _ => {
            return Err(FrameError::MissingField {
                event,
                field: "data",
            })
        }
    };
    if raw.get().starts_with('"') {
        let inner: String = serde_json::from_str(raw.get())
            .map_err(|e| FrameError::Malformed(format!("'{event}' data: {e}")))?;
        // The string form is rare (non-JS SDKs); decoding it into owned values keeps the
        // borrowed fast path for the common object form.
        let value: serde_json::Value = serde_json::from_str(&inner)
            .map_err(|e| FrameError::Malformed(format!("'{event}' data: {e}")))?;
        return T::deserialize(value)
            .map_err(|e| FrameError::Malformed(format!("'{event}' data: {e}")));
    }
    serde_json::from_str(raw.get())
        .map_err(|e| FrameError::Malformed(format!("'{event}' data: {e}")))
}

/// Decodes one client text frame.
///
/// Bad input never panics: it yields a [`FrameError`] whose text says what is wrong.
/// serde_json's recursion limit bounds deeply nested input.
pub fn decode_client_message(text: &str) -> Result<ClientMessage<'_>, FrameError> {
    let envelope: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| FrameError::Malformed(e.to_string()))?;
    match envelope.event.as_ref() {
        "pusher:ping" => Ok(ClientMessage::Ping),
        "pusher:pong" => Ok(ClientMessage::Pong),
        "pusher:subscribe" => Ok(ClientMessage::Subscribe(payload::<Subscribe>(
            envelope.data,
            "pusher:subscribe",
        )?)),
        "pusher:unsubscribe" => {
            let c: ChannelOnly = payload(envelope.data, "pusher:unsubscribe")?;
            Ok(ClientMessage::Unsubscribe { channel: c.channel })
        }
        "pusher:signin" => Ok(ClientMessage::Signin(payload::<Signin>(
            envelope.data,
            "pusher:signin",
        )?)),
        name if name.starts_with("client-") => {
            let channel = envelope.channel.ok_or(FrameError::MissingField {
                event: "client event",
                field: "channel",
            })?;
            Ok(ClientMessage::ClientEvent {
                event: envelope.event,
                channel,
                data: envelope.data.map_or(NULL, RawValue::get),
            })
        }
        name if name.starts_with("pusher:") || name.starts_with("pusher_internal:") => {
            Err(FrameError::UnknownEvent(name.to_owned()))
        }
        name => Err(FrameError::NotClientEvent(name.to_owned())),
    }
}

/// Appends `s` to `out` as a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x00..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    out
}

/// `pusher:connection_established`, the first frame of every accepted connection.
pub fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> String {
    let inner = format!(
        "{{\"socket_id\":{},\"activity_timeout\":{}}}",
        json_str(socket_id),
        activity_timeout_secs
    );
    format!(
        "{{\"event\":\"pusher:connection_established\",\"data\":{}}}",
        json_str(&inner)
    )
}

/// `pusher:error`; `code` is `None` for errors that do not close the connection.
pub fn error(code: Option<u16>, message: &str) -> String {
    let code = code.map_or_else(|| "null".to_owned(), |c| c.to_string());
    format!(
        "{{\"event\":\"pusher:error\",\"data\":{{\"code\":{},\"message\":{}}}}}",
        code,
        json_str(message)
    )
}

/// The answer to `pusher:ping`.
pub const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;
/// The server's liveness probe to a silent client.
pub const PING: &str = r#"{"event":"pusher:ping","data":{}}"#;

/// `pusher_internal:subscription_succeeded`; `data_json` is the JSON text to wrap as a string
/// (`{}` for non-presence channels).
pub fn subscription_succeeded(channel: &str, data_json: &str) -> String {
    format!(
        "{{\"event\":\"pusher_internal:subscription_succeeded\",\"channel\":{},\"data\":{}}}",
        json_str(channel),
        json_str(data_json)
    )
}

/// The presence payload of `subscription_succeeded`: `{"presence":{"ids","hash","count"}}`.
///
/// `members` yields each distinct user id with its `user_info` JSON text (`None` → `null`).
pub fn presence_data<'a>(members: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> String {
    let mut ids = String::from("[");
    let mut hash = String::from("{");
    let mut count = 0usize;
    for (id, info) in members {
        if count > 0 {
            ids.push(',');
            hash.push(',');
        }
        push_json_str(&mut ids, id);
        push_json_str(&mut hash, id);
        hash.push(':');
        hash.push_str(info.unwrap_or(NULL));
        count += 1;
    }
    ids.push(']');
    hash.push('}');
    format!("{{\"presence\":{{\"ids\":{ids},\"hash\":{hash},\"count\":{count}}}}}")
}

/// `pusher_internal:member_added` for the other subscribers of a presence channel.
pub fn member_added(channel: &str, user_id: &str, user_info: Option<&str>) -> String {
    let mut inner = String::from("{\"user_id\":");
    push_json_str(&mut inner, user_id);
    if let Some(info) = user_info {
        inner.push_str(",\"user_info\":");
        inner.push_str(info);
    }
    inner.push('}');
    format!(
        "{{\"event\":\"pusher_internal:member_added\",\"channel\":{},\"data\":{}}}",
        json_str(channel),
        json_str(&inner)
    )
}

/// `pusher_internal:member_removed`.
pub fn member_removed(channel: &str, user_id: &str) -> String {
    let inner = format!("{{\"user_id\":{}}}", json_str(user_id));
    format!(
        "{{\"event\":\"pusher_internal:member_removed\",\"channel\":{},\"data\":{}}}",
        json_str(channel),
        json_str(&inner)
    )
}

/// `pusher:subscription_error` on `channel`, the form pusher-js routes to the channel's
/// `pusher:subscription_error` handler (and Laravel Echo to `.error()`).
pub fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> String {
    format!(
        "{{\"event\":\"pusher:subscription_error\",\"channel\":{},\"data\":{{\"type\":{},\"error\":{},\"status\":{}}}}}",
        json_str(channel),
        json_str(kind),
        json_str(error),
        status
    )
}

/// `pusher:signin_success`: `data` is an object whose `user_data` is the signed JSON text,
/// the form soketi and sockudo send and pusher-js reads.
pub fn signin_success(user_data: &str) -> String {
    format!(
        "{{\"event\":\"pusher:signin_success\",\"data\":{{\"user_data\":{}}}}}",
        json_str(user_data)
    )
}

/// `pusher_internal:watchlist_events` with one entry per non-empty list, in the form
/// pusher-js's watchlist facade reads (spec §3.6).
pub fn watchlist_events<'a>(
    online: impl IntoIterator<Item = &'a str>,
    offline: impl IntoIterator<Item = &'a str>,
) -> String {
    let mut inner = String::from("{\"events\":[");
    let mut first = true;
    for (name, ids) in [
        ("online", online.into_iter().collect::<Vec<_>>()),
        ("offline", offline.into_iter().collect()),
    ] {
        if ids.is_empty() {
            continue;
        }
        if !first {
            inner.push(',');
        }
        first = false;
        inner.push_str("{\"name\":\"");
        inner.push_str(name);
        inner.push_str("\",\"user_ids\":[");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                inner.push(',');
            }
            push_json_str(&mut inner, id);
        }
        inner.push_str("]}");
    }
    inner.push_str("]}");
    format!(
        "{{\"event\":\"pusher_internal:watchlist_events\",\"data\":{}}}",
        json_str(&inner)
    )
}

/// `pusher:cache_miss` on a cache channel that has nothing cached.
pub fn cache_miss(channel: &str) -> String {
    format!(
        "{{\"event\":\"pusher:cache_miss\",\"channel\":{}}}",
        json_str(channel)
    )
}

/// `pusher_internal:subscription_count`, which pusher-js stores and re-emits as
/// `pusher:subscription_count`.
pub fn subscription_count(channel: &str, count: usize) -> String {
    let inner = format!("{{\"subscription_count\":{count}}}");
    format!(
        "{{\"event\":\"pusher_internal:subscription_count\",\"channel\":{},\"data\":{}}}",
        json_str(channel),
        json_str(&inner)
    )
}

/// An application event on `channel`. `data_json` is a complete JSON value (usually a string
/// literal) inserted verbatim; `user_id` is added for client events on presence channels.
pub fn event(event: &str, channel: &str, data_json: &str, user_id: Option<&str>) -> String {
    let mut out = String::with_capacity(event.len() + channel.len() + data_json.len() + 40);
    out.push_str("{\"event\":");
    push_json_str(&mut out, event);
    out.push_str(",\"channel\":");
    push_json_str(&mut out, channel);
    out.push_str(",\"data\":");
    out.push_str(data_json);
    if let Some(user_id) = user_id {
        out.push_str(",\"user_id\":");
        push_json_str(&mut out, user_id);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).expect("encoder output is JSON")
    }

    #[test]
    fn decodes_pusher_js_subscribe_forms() {
        let m = decode_client_message(
            r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"my-channel"}}"#,
        );
        assert_eq!(
            m,
            Ok(ClientMessage::Subscribe(Subscribe {
                channel: "my-channel".into(),
                auth: Some(String::new()),
                channel_data: None
            }))
        );
        let m = decode_client_message(
            r#"{"event":"pusher:subscribe","data":{"auth":"k:s","channel_data":"{\"user_id\":\"10\"}","channel":"presence-x"}}"#,
        );
        let Ok(ClientMessage::Subscribe(s)) = m else {
            panic!("expected subscribe, got {m:?}")
        };
        assert_eq!(s.channel_data.as_deref(), Some(r#"{"user_id":"10"}"#));
    }

    #[test]
    fn decodes_string_encoded_data() {
        let m =
            decode_client_message(r#"{"event":"pusher:subscribe","data":"{\"channel\":\"a\"}"}"#);
        assert!(matches!(m, Ok(ClientMessage::Subscribe(s)) if s.channel == "a"));
    }

    #[test]
    fn client_event_keeps_raw_data() {
        let text = r#"{"event":"client-typing","channel":"private-c","data":{"typing": true}}"#;
        match decode_client_message(text) {
            Ok(ClientMessage::ClientEvent {
                event,
                channel,
                data,
            }) => {
                assert_eq!(event, "client-typing");
                assert_eq!(channel, "private-c");
                assert_eq!(data, r#"{"typing": true}"#);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_frames_with_messages() {
        for (text, needle) in [
            ("not json", "Invalid message"),
            ("[1,2]", "Invalid message"),
            (r#"{"event":5}"#, "Invalid message"),
            (r#"{"event":"pusher:subscribe"}"#, "requires 'data'"),
            (
                r#"{"event":"pusher:subscribe","data":{"channel":5}}"#,
                "Invalid message",
            ),
            (r#"{"event":"pusher:foo"}"#, "Unknown event"),
            (r#"{"event":"hello","channel":"x"}"#, "client-"),
            (r#"{"event":"client-x"}"#, "requires 'channel'"),
        ] {
            let err = decode_client_message(text).expect_err(text);
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
        let deep = "[".repeat(10_000);
        assert!(decode_client_message(&deep).is_err());
    }

    #[test]
    fn encoders_produce_the_wire_forms() {
        let v = parse(&connection_established("1.2", 120));
        assert_eq!(v["event"], "pusher:connection_established");
        assert_eq!(
            parse(v["data"].as_str().expect("string data")),
            json!({"socket_id":"1.2","activity_timeout":120})
        );
        assert_eq!(
            parse(&error(Some(4001), "nope")),
            json!({"event":"pusher:error","data":{"code":4001,"message":"nope"}})
        );
        assert_eq!(parse(&error(None, "x"))["data"]["code"], Value::Null);
        let p = presence_data([("10", Some(r#"{"name":"A"}"#)), ("11", None)]);
        assert_eq!(
            parse(&p),
            json!({"presence":{"ids":["10","11"],"hash":{"10":{"name":"A"},"11":null},"count":2}})
        );
        let e = parse(&event("ev", "ch\"", r#""{\"a\":1}""#, Some("u")));
        assert_eq!(
            e,
            json!({"event":"ev","channel":"ch\"","data":"{\"a\":1}","user_id":"u"})
        );
        let m = parse(&member_added("presence-a", "7", None));
        assert_eq!(
            parse(m["data"].as_str().expect("str")),
            json!({"user_id":"7"})
        );
        assert_eq!(
            parse(&subscription_error("c", "AuthError", "bad", 401))["data"]["status"],
            401
        );
    }

    #[test]
    fn signin_and_watchlist_frames() {
        let v = parse(&signin_success(r#"{"id":"1"}"#));
        assert_eq!(
            v,
            json!({"event":"pusher:signin_success","data":{"user_data":"{\"id\":\"1\"}"}})
        );
        let w = parse(&watchlist_events(["2"], ["3", "4"]));
        assert_eq!(w["event"], "pusher_internal:watchlist_events");
        assert_eq!(
            parse(w["data"].as_str().expect("string data")),
            json!({"events":[{"name":"online","user_ids":["2"]},{"name":"offline","user_ids":["3","4"]}]})
        );
        let empty = parse(&watchlist_events([], ["9"]));
        assert_eq!(
            parse(empty["data"].as_str().expect("string data")),
            json!({"events":[{"name":"offline","user_ids":["9"]}]})
        );
    }

    #[test]
    fn cache_and_count_frames() {
        assert_eq!(
            parse(&cache_miss("cache-x")),
            json!({"event":"pusher:cache_miss","channel":"cache-x"})
        );
        let v = parse(&subscription_count("c", 3));
        assert_eq!(v["event"], "pusher_internal:subscription_count");
        assert_eq!(
            parse(v["data"].as_str().expect("string")),
            json!({"subscription_count":3})
        );
    }

    #[test]
    fn json_str_escapes_controls() {
        assert_eq!(json_str("a\u{1}\"\\\n"), r#""a\u0001\"\\\n""#);
        let s = "héllo \u{1f600}";
        assert_eq!(
            serde_json::from_str::<String>(&json_str(s)).ok().as_deref(),
            Some(s)
        );
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                ".{0,12}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("event".to_owned()),
                            Just("channel".to_owned()),
                            Just("data".to_owned()),
                            Just("auth".to_owned()),
                            Just("channel_data".to_owned()),
                            ".{0,6}"
                        ],
                        inner,
                        0..5
                    )
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn decoding_arbitrary_text_never_panics(text in ".{0,200}") {
                let _ = decode_client_message(&text);
            }

            #[test]
            fn decoding_arbitrary_json_never_panics(value in json_value(), event in prop_oneof![
                Just("pusher:subscribe"), Just("pusher:unsubscribe"), Just("pusher:signin"),
                Just("pusher:ping"), Just("client-x"), Just("other")
            ]) {
                let mut envelope = serde_json::Map::new();
                envelope.insert("event".into(), event.into());
                envelope.insert("data".into(), value.clone());
                envelope.insert("channel".into(), value);
                let text = serde_json::Value::Object(envelope).to_string();
                let _ = decode_client_message(&text);
            }

            #[test]
            fn subscribe_round_trips(channel in "[A-Za-z0-9_=@,.;-]{1,50}", auth in ".{0,40}") {
                let text = serde_json::json!({
                    "event": "pusher:subscribe",
                    "data": {"channel": channel, "auth": auth}
                }).to_string();
                let decoded = decode_client_message(&text);
                prop_assert_eq!(decoded, Ok(ClientMessage::Subscribe(Subscribe {
                    channel: channel.clone(), auth: Some(auth.clone()), channel_data: None
                })));
            }

            #[test]
            fn event_encoding_is_valid_json(name in ".{0,30}", channel in ".{0,30}", data in ".{0,60}") {
                let token = json_str(&data);
                let out = event(&name, &channel, &token, Some(&name));
                let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
                prop_assert_eq!(v["event"].as_str(), Some(name.as_str()));
                prop_assert_eq!(v["channel"].as_str(), Some(channel.as_str()));
                prop_assert_eq!(v["data"].as_str(), Some(data.as_str()));
            }
        }
    }
}
