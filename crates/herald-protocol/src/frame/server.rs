//! Server → client messages. Encoders take already-valid JSON tokens for payloads they pass
//! through, and write the rest by hand: these run once per delivered event.

use std::fmt::Write as _;

use super::NULL;

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
