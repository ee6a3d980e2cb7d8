//! The trigger and batch-trigger requests: `POST /apps/{id}/events` and `/batch_events`.
//!
//! Every field is optional on the wire: the server names what is missing in its answer, so
//! these types say what was sent, not what is valid. Validation (names, limits) is the
//! server's, with the rules of [`crate::channel`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::borrow;

/// Arrays in a request body stop being read past this many items: the app's own limits
/// (100 channels, 10 events by default) are checked afterwards with exact counts, and this
/// keeps a 4 MB body of `{},{},…` from becoming a million parsed events first.
pub const MAX_ITEMS: usize = 10_000;

/// A JSON value kept as the exact text it was read from (or is to be written as): an
/// event's `data` reaches subscribers byte for byte, never re-serialised.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson<'a>(#[serde(borrow)] pub &'a RawValue);

impl<'a> RawJson<'a> {
    /// The JSON text.
    pub fn get(&self) -> &'a str {
        self.0.get()
    }
}

/// Equal when the texts are: `"a"` and `"\u0061"` differ, as they do on the wire.
impl PartialEq for RawJson<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// The body of `POST /apps/{id}/events`, and one event of a batch: the same fields, which
/// the server validates alike. The fields are in the one order that gives both of the Node
/// library's key orders: `name, data, channels, …` for a trigger (which has no `channel`)
/// and `channel, name, data, …` for a batch event (which has no `channels`).
///
/// ```
/// use herald_protocol::api::TriggerBody;
/// let body = r#"{"name":"my_event","data":"{\"some\":\"data \"}","channels":["one"]}"#;
/// let parsed: TriggerBody<'_> = serde_json::from_str(body).unwrap();
/// assert_eq!(parsed.name.as_deref(), Some("my_event"));
/// assert_eq!(parsed.data.map(|d| d.get()), Some(r#""{\"some\":\"data \"}""#));
/// assert_eq!(serde_json::to_string(&parsed).unwrap(), body);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TriggerBody<'a> {
    /// One channel, instead of `channels`; a batch event's only way to name its channel.
    #[serde(
        borrow,
        deserialize_with = "borrow::text",
        skip_serializing_if = "Option::is_none"
    )]
    pub channel: Option<Cow<'a, str>>,
    /// The event name.
    #[serde(
        borrow,
        deserialize_with = "borrow::text",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<Cow<'a, str>>,
    /// The payload's JSON token: a string (what Pusher's API takes), or any JSON value,
    /// which the server sends on as its text.
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson<'a>>,
    /// The channels to publish on (the official libraries' form). A batch event has
    /// none: the server refuses it by name.
    #[serde(
        borrow,
        deserialize_with = "borrow::texts",
        skip_serializing_if = "Option::is_none"
    )]
    pub channels: Option<Vec<Cow<'a, str>>>,
    /// The connection to leave out of delivery (`digits.digits`).
    #[serde(
        borrow,
        deserialize_with = "borrow::text",
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_id: Option<Cow<'a, str>>,
    /// Comma-separated attributes to answer with per channel (`user_count`,
    /// `subscription_count`).
    #[serde(
        borrow,
        deserialize_with = "borrow::text",
        skip_serializing_if = "Option::is_none"
    )]
    pub info: Option<Cow<'a, str>>,
}

/// One event of a batch: a [`TriggerBody`] with a `channel`.
pub type BatchItem<'a> = TriggerBody<'a>;

/// The body of `POST /apps/{id}/batch_events`.
///
/// ```
/// use herald_protocol::api::BatchBody;
/// let body = r#"{"batch":[{"channel":"integration","name":"event","data":"test"}]}"#;
/// let parsed: BatchBody<'_> = serde_json::from_str(body).unwrap();
/// let items = parsed.batch.as_deref().unwrap_or_default();
/// assert_eq!(items[0].channel.as_deref(), Some("integration"));
/// assert_eq!(serde_json::to_string(&parsed).unwrap(), body);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct BatchBody<'a> {
    /// The events, published in order.
    #[serde(
        borrow,
        deserialize_with = "borrow::items",
        skip_serializing_if = "Option::is_none"
    )]
    pub batch: Option<Vec<BatchItem<'a>>>,
}
