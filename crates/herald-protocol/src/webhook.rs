//! Webhooks on the wire (spec §7): the events, the body, the signature and the headers.
//! `X-Pusher-Signature` is the hex HMAC-SHA256 of the raw body keyed with the app secret,
//! sent next to `X-Pusher-Key` with a content type of exactly `application/json`.
//!
//! The server writes and signs with these types and functions and the SDK reads and
//! verifies with them, so the two cannot drift. The signature covers the raw body bytes,
//! so verify before parsing the JSON.

use serde::{Deserialize, Serialize};

use crate::hmac_hex::{hmac_sha256_hex, verify_hmac_hex};

/// The content type of a webhook request. Exactly this, with no `; charset=...`:
/// pusher-http-node compares it with `===` and rejects anything else.
pub const WEBHOOK_CONTENT_TYPE: &str = "application/json";

/// The header carrying the app key. Spelled this way because pusher-http-php looks it up
/// case-sensitively.
pub const HEADER_KEY: &str = "X-Pusher-Key";

/// The header carrying the body's signature, spelled as pusher-http-php looks it up.
pub const HEADER_SIGNATURE: &str = "X-Pusher-Signature";

/// The `X-Pusher-Signature` of a webhook body: lowercase hex HMAC-SHA256 of the raw bytes.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    hmac_sha256_hex(secret.as_bytes(), body)
}

/// Whether `signature` is the signature of `body` under `secret`, compared in constant time.
pub fn verify_webhook_signature(secret: &str, body: &[u8], signature: &str) -> bool {
    verify_hmac_hex(secret.as_bytes(), body, signature)
}

/// The kinds of webhook event, as endpoints name them in their `event_types` filter.
///
/// Callers that may skip building an event ask for its kind first, so a misspelt name can
/// not silently turn a webhook off: the compiler checks the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookKind {
    /// `channel_occupied`.
    ChannelOccupied,
    /// `channel_vacated`.
    ChannelVacated,
    /// `member_added`.
    MemberAdded,
    /// `member_removed`.
    MemberRemoved,
    /// `client_event`.
    ClientEvent,
    /// `cache_miss`.
    CacheMiss,
    /// `subscription_count`.
    SubscriptionCount,
}

impl WebhookKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [WebhookKind; 7] = [
        WebhookKind::ChannelOccupied,
        WebhookKind::ChannelVacated,
        WebhookKind::MemberAdded,
        WebhookKind::MemberRemoved,
        WebhookKind::ClientEvent,
        WebhookKind::CacheMiss,
        WebhookKind::SubscriptionCount,
    ];

    /// The event's `name` on the wire.
    pub fn name(self) -> &'static str {
        match self {
            WebhookKind::ChannelOccupied => "channel_occupied",
            WebhookKind::ChannelVacated => "channel_vacated",
            WebhookKind::MemberAdded => "member_added",
            WebhookKind::MemberRemoved => "member_removed",
            WebhookKind::ClientEvent => "client_event",
            WebhookKind::CacheMiss => "cache_miss",
            WebhookKind::SubscriptionCount => "subscription_count",
        }
    }

    /// The kind named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<WebhookKind> {
        WebhookKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Every kind's name, comma-separated, for messages that list what is allowed.
    pub fn names() -> String {
        WebhookKind::ALL.map(WebhookKind::name).join(", ")
    }
}

/// One event of a webhook body (spec §7), serialised as Pusher sends it: `name` first,
/// then the fields in the order below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WebhookEvent {
    /// A channel got its first subscriber.
    ChannelOccupied {
        /// The channel.
        channel: String,
    },
    /// A channel lost its last subscriber.
    ChannelVacated {
        /// The channel.
        channel: String,
    },
    /// A user's first connection joined a presence channel.
    MemberAdded {
        /// The channel.
        channel: String,
        /// The user.
        user_id: String,
    },
    /// A user's last connection left a presence channel.
    MemberRemoved {
        /// The channel.
        channel: String,
        /// The user.
        user_id: String,
    },
    /// A client sent a client event.
    ClientEvent {
        /// The channel.
        channel: String,
        /// The event name.
        event: String,
        /// The JSON text of the event's data, sent as a string (a reader may decrypt it on
        /// an encrypted channel).
        data: String,
        /// The sender's socket id (Herald always sends it; other servers may not).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        socket_id: Option<String>,
        /// The sender's user id, on presence channels.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    /// A subscriber joined a cache channel that had nothing cached.
    CacheMiss {
        /// The channel.
        channel: String,
    },
    /// A channel's subscription count changed.
    SubscriptionCount {
        /// The channel.
        channel: String,
        /// The new count.
        subscription_count: u64,
    },
}

impl WebhookEvent {
    /// The event's kind.
    pub fn kind(&self) -> WebhookKind {
        match self {
            WebhookEvent::ChannelOccupied { .. } => WebhookKind::ChannelOccupied,
            WebhookEvent::ChannelVacated { .. } => WebhookKind::ChannelVacated,
            WebhookEvent::MemberAdded { .. } => WebhookKind::MemberAdded,
            WebhookEvent::MemberRemoved { .. } => WebhookKind::MemberRemoved,
            WebhookEvent::ClientEvent { .. } => WebhookKind::ClientEvent,
            WebhookEvent::CacheMiss { .. } => WebhookKind::CacheMiss,
            WebhookEvent::SubscriptionCount { .. } => WebhookKind::SubscriptionCount,
        }
    }

    /// The event's `name` on the wire.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The channel the event is about.
    pub fn channel(&self) -> &str {
        match self {
            WebhookEvent::ChannelOccupied { channel }
            | WebhookEvent::ChannelVacated { channel }
            | WebhookEvent::MemberAdded { channel, .. }
            | WebhookEvent::MemberRemoved { channel, .. }
            | WebhookEvent::ClientEvent { channel, .. }
            | WebhookEvent::CacheMiss { channel }
            | WebhookEvent::SubscriptionCount { channel, .. } => channel,
        }
    }
}

/// The body of a webhook request: `{"time_ms":…,"events":[…]}`.
#[derive(Serialize)]
struct Body<'a, E: Serialize> {
    time_ms: u64,
    events: &'a [E],
}

/// The JSON body of a webhook carrying `events`, created at `time_ms` (Unix milliseconds).
/// `events` may be events or references to them.
pub fn webhook_body<E: Serialize>(time_ms: u64, events: &[E]) -> String {
    // Serialising plain strings and integers cannot fail.
    serde_json::to_string(&Body { time_ms, events }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(event: WebhookEvent, text: &str) {
        assert_eq!(serde_json::to_string(&event).unwrap(), text);
        assert_eq!(serde_json::from_str::<WebhookEvent>(text).unwrap(), event);
    }

    #[test]
    fn events_serialise_as_pusher_sends_them_and_read_back() {
        round_trip(
            WebhookEvent::ClientEvent {
                channel: "presence-c".into(),
                event: "client-typing".into(),
                data: r#"{"typing":true}"#.into(),
                socket_id: Some("1.2".into()),
                user_id: Some("10".into()),
            },
            r#"{"name":"client_event","channel":"presence-c","event":"client-typing","data":"{\"typing\":true}","socket_id":"1.2","user_id":"10"}"#,
        );
        round_trip(
            WebhookEvent::ClientEvent {
                channel: "private-c".into(),
                event: "client-x".into(),
                data: "{}".into(),
                socket_id: Some("1.2".into()),
                user_id: None,
            },
            r#"{"name":"client_event","channel":"private-c","event":"client-x","data":"{}","socket_id":"1.2"}"#,
        );
        round_trip(
            WebhookEvent::MemberAdded {
                channel: "presence-a".into(),
                user_id: "1".into(),
            },
            r#"{"name":"member_added","channel":"presence-a","user_id":"1"}"#,
        );
        round_trip(
            WebhookEvent::MemberRemoved {
                channel: "presence-a".into(),
                user_id: "1".into(),
            },
            r#"{"name":"member_removed","channel":"presence-a","user_id":"1"}"#,
        );
        round_trip(
            WebhookEvent::SubscriptionCount {
                channel: "c".into(),
                subscription_count: 2,
            },
            r#"{"name":"subscription_count","channel":"c","subscription_count":2}"#,
        );
        for (event, name) in [
            (
                WebhookEvent::ChannelOccupied {
                    channel: "c".into(),
                },
                "channel_occupied",
            ),
            (
                WebhookEvent::ChannelVacated {
                    channel: "c".into(),
                },
                "channel_vacated",
            ),
            (
                WebhookEvent::CacheMiss {
                    channel: "c".into(),
                },
                "cache_miss",
            ),
        ] {
            assert_eq!(event.name(), name);
            round_trip(event, &format!(r#"{{"name":"{name}","channel":"c"}}"#));
        }
    }

    #[test]
    fn a_body_lists_its_events_after_its_time() {
        let events = [WebhookEvent::ChannelVacated {
            channel: "test_channel".into(),
        }];
        assert_eq!(
            webhook_body(1403175510755, &events),
            r#"{"time_ms":1403175510755,"events":[{"name":"channel_vacated","channel":"test_channel"}]}"#
        );
        let refs: Vec<&WebhookEvent> = events.iter().collect();
        assert_eq!(webhook_body(1, &refs), webhook_body(1, &events));
    }

    #[test]
    fn every_kind_is_named_once_and_found_by_its_name() {
        for kind in WebhookKind::ALL {
            assert_eq!(WebhookKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(WebhookKind::from_name("channel_occupid"), None);
        assert_eq!(
            WebhookKind::names(),
            "channel_occupied, channel_vacated, member_added, member_removed, client_event, cache_miss, subscription_count"
        );
    }
}
