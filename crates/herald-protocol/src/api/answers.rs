//! What the HTTP API answers: channel attributes after a trigger, channel queries, presence
//! users, and the error body.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Attributes of a channel returned by a trigger with `info`, or by channel queries. An
/// attribute that was not asked for is absent.
///
/// ```
/// let attrs: herald_protocol::api::ChannelAttributes =
///     serde_json::from_str(r#"{"subscription_count":3}"#).unwrap();
/// assert_eq!(attrs.subscription_count, Some(3));
/// assert_eq!(attrs.user_count, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChannelAttributes {
    /// Distinct users (presence channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_count: Option<u64>,
    /// Connections subscribed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_count: Option<u64>,
}

/// The answer to a trigger: `{}`, or attributes per channel when `info` was asked for.
///
/// ```
/// let r: herald_protocol::api::TriggerAnswer =
///     serde_json::from_str(r#"{"channels":{"c":{"subscription_count":1}}}"#).unwrap();
/// assert_eq!(r.channels["c"].subscription_count, Some(1));
/// assert_eq!(serde_json::to_string(&herald_protocol::api::TriggerAnswer::default()).unwrap(), "{}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TriggerAnswer {
    /// Attributes per channel, when `info` was requested.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, ChannelAttributes>,
}

/// The answer to a batch trigger: `{}`, or attributes per event in request order when any
/// event asked for `info` (empty for the events that did not).
///
/// ```
/// let r: herald_protocol::api::BatchAnswer =
///     serde_json::from_str(r#"{"batch":[{},{"user_count":1}]}"#).unwrap();
/// assert_eq!(r.batch[1].user_count, Some(1));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BatchAnswer {
    /// One entry per event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<ChannelAttributes>,
}

/// The answer to `GET /apps/{id}/channels`: the occupied channels with the attributes asked
/// for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChannelsAnswer {
    /// Attributes per occupied channel.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelAttributes>,
}

/// The answer to `GET /apps/{id}/channels/{name}`: one channel's state.
///
/// ```
/// let info: herald_protocol::api::ChannelAnswer =
///     serde_json::from_str(r#"{"occupied":true,"subscription_count":2}"#).unwrap();
/// assert!(info.occupied);
/// assert_eq!(info.cache, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChannelAnswer {
    /// Whether anyone is subscribed.
    #[serde(default)]
    pub occupied: bool,
    /// Distinct users (presence channels, when requested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_count: Option<u64>,
    /// Connections subscribed (when requested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_count: Option<u64>,
    /// The cached event of a cache channel, when requested: `{"data", "ttl"}`, or
    /// `Some(Value::Null)` when nothing is cached (absent when not requested).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache: Option<Value>,
}

/// A field that is present, even as `null`, is `Some`: "asked for, and empty" differs
/// from "not asked for".
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// The answer to `GET /apps/{id}/channels/{name}/users`.
///
/// ```
/// let r: herald_protocol::api::UsersAnswer =
///     serde_json::from_str(r#"{"users":[{"id":"1"}]}"#).unwrap();
/// assert_eq!(r.users[0].id, "1");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsersAnswer {
    /// The users on the presence channel (required: an answer without it is not this one).
    pub users: Vec<UserEntry>,
}

/// One user of [`UsersAnswer`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UserEntry {
    /// The user id.
    pub id: String,
}

impl UserEntry {
    /// The entry of user `id`.
    pub fn new(id: impl Into<String>) -> Self {
        UserEntry { id: id.into() }
    }
}

/// The body of every HTTP API failure: what is wrong, for the person reading a failed
/// request (no official library parses it), and the status again.
///
/// ```
/// let e: herald_protocol::api::ErrorBody<'_> =
///     serde_json::from_str(r#"{"error":"Unknown app","code":404}"#).unwrap();
/// assert_eq!((e.error.as_ref(), e.code), ("Unknown app", 404));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorBody<'a> {
    /// What is wrong.
    #[serde(borrow)]
    pub error: Cow<'a, str>,
    /// The HTTP status.
    pub code: u16,
}

impl<'a> ErrorBody<'a> {
    /// The body of a failure with `status`.
    pub fn new(error: impl Into<Cow<'a, str>>, code: u16) -> Self {
        ErrorBody {
            error: error.into(),
            code,
        }
    }
}
