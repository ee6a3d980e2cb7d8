//! Triggering events: single, multi-channel and batch, to users, and their validation.
//!
//! Bodies are built with their keys in the order the Node library sends them (`name`,
//! `data`, `channels`, `socket_id`, `info`), so requests are byte-identical for the same
//! inputs. Everything is validated before a request is sent.

use std::collections::HashMap;

use herald_protocol::channel::{
    is_valid_socket_id, validate_channel_name, validate_event_name, ChannelKind,
    MAX_CHANNEL_NAME_LEN, SERVER_TO_USER_PREFIX,
};
use herald_protocol::encryption::{encrypt, shared_secret};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::Client;
use crate::error::{invalid, Error, Result};

/// The most channels one trigger may name.
///
/// ```
/// assert_eq!(herald_sdk::MAX_CHANNELS, 100);
/// ```
pub const MAX_CHANNELS: usize = 100;

/// An event's payload.
///
/// Strings are sent verbatim (they need not be JSON); anything else is sent as its JSON
/// text. Both arrive at subscribers as the `data` string.
///
/// ```
/// use herald_sdk::EventData;
/// let text: EventData = "hello".into();
/// let json = EventData::json(&serde_json::json!({"message": "hi"})).unwrap();
/// # let _ = (text, json);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    /// Sent exactly as given.
    Text(String),
    /// Sent as its JSON text.
    Json(Value),
}

impl EventData {
    /// Any serde-serializable value, sent as JSON.
    ///
    /// ```
    /// #[derive(serde::Serialize)]
    /// struct Score { home: u32 }
    /// let data = herald_sdk::EventData::json(&Score { home: 2 }).unwrap();
    /// assert_eq!(data, herald_sdk::EventData::Json(serde_json::json!({"home": 2})));
    /// ```
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<EventData> {
        serde_json::to_value(value)
            .map(EventData::Json)
            .map_err(|e| invalid("data", format!("cannot encode as JSON: {e}")))
    }

    /// The `data` string sent on the wire.
    fn wire(&self) -> String {
        match self {
            EventData::Text(text) => text.clone(),
            EventData::Json(value) => value.to_string(),
        }
    }

    /// What is encrypted for `private-encrypted-` channels: always JSON (a string is
    /// JSON-quoted), as the Node library does, so pusher-js decodes it the same way.
    fn plaintext(&self) -> String {
        match self {
            EventData::Text(text) => Value::String(text.clone()).to_string(),
            EventData::Json(value) => value.to_string(),
        }
    }
}

impl From<&str> for EventData {
    fn from(text: &str) -> Self {
        EventData::Text(text.to_owned())
    }
}

impl From<String> for EventData {
    fn from(text: String) -> Self {
        EventData::Text(text)
    }
}

impl From<Value> for EventData {
    fn from(value: Value) -> Self {
        EventData::Json(value)
    }
}

/// Optional parts of a trigger.
///
/// ```
/// let params = herald_sdk::TriggerParams::default()
///     .socket_id("1234.5678")
///     .info(["subscription_count"]);
/// # let _ = params;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct TriggerParams {
    /// Exclude this connection (the sender's own socket) from delivery.
    pub socket_id: Option<String>,
    /// Attributes to return per channel: `user_count` (presence), `subscription_count`.
    pub info: Vec<String>,
}

impl TriggerParams {
    /// Excludes `socket_id` from delivery.
    ///
    /// ```
    /// let p = herald_sdk::TriggerParams::default().socket_id("1.2");
    /// assert_eq!(p.socket_id.as_deref(), Some("1.2"));
    /// ```
    pub fn socket_id(mut self, socket_id: impl Into<String>) -> Self {
        self.socket_id = Some(socket_id.into());
        self
    }

    /// Asks for channel attributes in the response.
    ///
    /// ```
    /// let p = herald_sdk::TriggerParams::default().info(["user_count", "subscription_count"]);
    /// assert_eq!(p.info.len(), 2);
    /// ```
    pub fn info<I: IntoIterator<Item = S>, S: Into<String>>(mut self, attributes: I) -> Self {
        self.info = attributes.into_iter().map(Into::into).collect();
        self
    }
}

/// Attributes of a channel returned by a trigger with `info`, or by channel queries.
///
/// ```
/// let attrs: herald_sdk::ChannelAttributes = serde_json::from_str(r#"{"subscription_count":3}"#).unwrap();
/// assert_eq!(attrs.subscription_count, Some(3));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ChannelAttributes {
    /// Distinct users (presence channels).
    pub user_count: Option<u64>,
    /// Connections subscribed.
    pub subscription_count: Option<u64>,
}

/// The response of [`Client::trigger_with`].
///
/// ```
/// let r: herald_sdk::TriggerResponse = serde_json::from_str(r#"{"channels":{"c":{"subscription_count":1}}}"#).unwrap();
/// assert_eq!(r.channels["c"].subscription_count, Some(1));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct TriggerResponse {
    /// Attributes per channel, when `info` was requested.
    #[serde(default)]
    pub channels: HashMap<String, ChannelAttributes>,
}

/// One event of a batch.
///
/// ```
/// let event = herald_sdk::BatchEvent::new("my-channel", "my-event", "hello");
/// # let _ = event;
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct BatchEvent {
    /// The channel.
    pub channel: String,
    /// The event name.
    pub name: String,
    /// The payload.
    pub data: EventData,
    /// Exclude this connection.
    pub socket_id: Option<String>,
    /// Attributes to return for this event's channel.
    pub info: Option<String>,
}

impl BatchEvent {
    /// An event for a batch.
    ///
    /// ```
    /// let e = herald_sdk::BatchEvent::new("c", "e", herald_sdk::EventData::json(&[1, 2]).unwrap());
    /// assert_eq!(e.channel, "c");
    /// ```
    pub fn new(
        channel: impl Into<String>,
        name: impl Into<String>,
        data: impl Into<EventData>,
    ) -> Self {
        BatchEvent {
            channel: channel.into(),
            name: name.into(),
            data: data.into(),
            socket_id: None,
            info: None,
        }
    }
}

/// The response of [`Client::trigger_batch`]: attributes per event, in request order,
/// when any event asked for `info`.
///
/// ```
/// let r: herald_sdk::BatchResponse = serde_json::from_str(r#"{"batch":[{},{"user_count":1}]}"#).unwrap();
/// assert_eq!(r.batch[1].user_count, Some(1));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct BatchResponse {
    /// One entry per event, empty attributes for events without `info`.
    #[serde(default)]
    pub batch: Vec<ChannelAttributes>,
}

#[derive(Serialize)]
struct TriggerBody<'a> {
    name: &'a str,
    data: String,
    channels: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<String>,
}

#[derive(Serialize)]
struct BatchBody<'a> {
    batch: Vec<BatchItem<'a>>,
}

#[derive(Serialize)]
struct BatchItem<'a> {
    channel: &'a str,
    name: &'a str,
    data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a str>,
}

fn check_event_name(name: &str) -> Result<()> {
    validate_event_name(name).map_err(|e| invalid("event", e.to_string()))
}

fn check_socket_id(socket_id: Option<&str>) -> Result<()> {
    match socket_id {
        Some(id) if !is_valid_socket_id(id) => Err(invalid(
            "socket_id",
            format!("'{id}' is not of the form digits.digits"),
        )),
        _ => Ok(()),
    }
}

fn check_channel(channel: &str) -> Result<ChannelKind> {
    validate_channel_name(channel, MAX_CHANNEL_NAME_LEN)
        .map_err(|e| invalid("channels", e.to_string()))
}

impl Client {
    /// Triggers `event` on one or more channels.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_sdk::Client) -> Result<(), herald_sdk::Error> {
    /// client.trigger(&["my-channel"], "my-event", "hello").await?;
    /// client.trigger(&["a", "b"], "update", herald_sdk::EventData::json(&[1, 2, 3])?).await?;
    /// # Ok(()) }
    /// ```
    pub async fn trigger<S: AsRef<str>>(
        &self,
        channels: &[S],
        event: &str,
        data: impl Into<EventData>,
    ) -> Result<()> {
        self.trigger_with(channels, event, data, TriggerParams::default())
            .await
            .map(drop)
    }

    /// Triggers with a `socket_id` to exclude and/or `info` attributes to return.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_sdk::Client) -> Result<(), herald_sdk::Error> {
    /// let params = herald_sdk::TriggerParams::default().info(["subscription_count"]);
    /// let reply = client.trigger_with(&["news"], "headline", "hi", params).await?;
    /// println!("{:?}", reply.channels["news"].subscription_count);
    /// # Ok(()) }
    /// ```
    pub async fn trigger_with<S: AsRef<str>>(
        &self,
        channels: &[S],
        event: &str,
        data: impl Into<EventData>,
        params: TriggerParams,
    ) -> Result<TriggerResponse> {
        let channels: Vec<String> = channels.iter().map(|c| c.as_ref().to_owned()).collect();
        let body = self.trigger_body(&channels, event, &data.into(), &params)?;
        let value = self
            .send(reqwest::Method::POST, "/events", &[], Some(body))
            .await?;
        decode(value)
    }

    /// The request body of a trigger, validated (exposed for tests of byte equality).
    pub(crate) fn trigger_body(
        &self,
        channels: &[String],
        event: &str,
        data: &EventData,
        params: &TriggerParams,
    ) -> Result<String> {
        check_event_name(event)?;
        if channels.is_empty() {
            return Err(invalid("channels", "at least one channel is required"));
        }
        if channels.len() > MAX_CHANNELS {
            return Err(invalid(
                "channels",
                format!(
                    "at most {MAX_CHANNELS} channels per trigger, got {}",
                    channels.len()
                ),
            ));
        }
        let mut encrypted = false;
        for channel in channels {
            if channel.starts_with(SERVER_TO_USER_PREFIX) {
                continue;
            }
            encrypted |= check_channel(channel)? == ChannelKind::PrivateEncrypted;
        }
        if encrypted && channels.len() > 1 {
            return Err(invalid(
                "channels",
                "an event to an encrypted channel must go to that channel alone",
            ));
        }
        check_socket_id(params.socket_id.as_deref())?;
        let data = if encrypted {
            self.encrypt_for(&channels[0], data)?
        } else {
            data.wire()
        };
        let body = TriggerBody {
            name: event,
            data,
            channels,
            socket_id: params.socket_id.as_deref(),
            info: (!params.info.is_empty()).then(|| params.info.join(",")),
        };
        serde_json::to_string(&body).map_err(|e| invalid("data", e.to_string()))
    }

    fn encrypt_for(&self, channel: &str, data: &EventData) -> Result<String> {
        let master = self.inner.master_key.as_ref().ok_or_else(|| {
            Error::Encryption(
                "set an encryption master key before triggering on encrypted channels".into(),
            )
        })?;
        let nonce: [u8; 24] = rand::random();
        let payload = encrypt(
            &shared_secret(channel, master),
            &nonce,
            data.plaintext().as_bytes(),
        );
        Ok(payload.to_json())
    }

    /// Triggers several events in one request (at most the client's max batch size, 10 by
    /// default). Each event is validated first; the events are not modified.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_sdk::Client) -> Result<(), herald_sdk::Error> {
    /// use herald_sdk::BatchEvent;
    /// client.trigger_batch(&[
    ///     BatchEvent::new("chat", "message", "a"),
    ///     BatchEvent::new("chat", "message", "b"),
    /// ]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn trigger_batch(&self, events: &[BatchEvent]) -> Result<BatchResponse> {
        let body = self.batch_body(events)?;
        let value = self
            .send(reqwest::Method::POST, "/batch_events", &[], Some(body))
            .await?;
        decode(value)
    }

    pub(crate) fn batch_body(&self, events: &[BatchEvent]) -> Result<String> {
        if events.is_empty() {
            return Err(invalid("batch", "at least one event is required"));
        }
        if events.len() > self.inner.max_batch {
            return Err(invalid(
                "batch",
                format!(
                    "at most {} events per batch, got {}",
                    self.inner.max_batch,
                    events.len()
                ),
            ));
        }
        let mut items = Vec::with_capacity(events.len());
        for event in events {
            check_event_name(&event.name)?;
            let kind = if event.channel.starts_with(SERVER_TO_USER_PREFIX) {
                ChannelKind::ServerToUser
            } else {
                check_channel(&event.channel)?
            };
            check_socket_id(event.socket_id.as_deref())?;
            let data = if kind == ChannelKind::PrivateEncrypted {
                self.encrypt_for(&event.channel, &event.data)?
            } else {
                event.data.wire()
            };
            items.push(BatchItem {
                channel: &event.channel,
                name: &event.name,
                data,
                socket_id: event.socket_id.as_deref(),
                info: event.info.as_deref(),
            });
        }
        // A struct, not json!(): a serde_json Map would sort the item keys, and the Node
        // library's order (channel, name, data) is what makes bodies byte-identical.
        serde_json::to_string(&BatchBody { batch: items })
            .map_err(|e| invalid("batch", e.to_string()))
    }

    /// Sends `event` to every connection signed in as `user_id`.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_sdk::Client) -> Result<(), herald_sdk::Error> {
    /// client.send_to_user("user-42", "notification", "You have mail").await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_user(
        &self,
        user_id: &str,
        event: &str,
        data: impl Into<EventData>,
    ) -> Result<()> {
        check_user_id(user_id)?;
        let channel = [format!("{SERVER_TO_USER_PREFIX}{user_id}")];
        self.trigger(&channel, event, data).await
    }

    /// Closes every connection signed in as `user_id`.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_sdk::Client) -> Result<(), herald_sdk::Error> {
    /// client.terminate_user_connections("user-42").await?;
    /// # Ok(()) }
    /// ```
    pub async fn terminate_user_connections(&self, user_id: &str) -> Result<()> {
        check_user_id(user_id)?;
        let path = format!("/users/{}/terminate_connections", encode_segment(user_id));
        self.send(reqwest::Method::POST, &path, &[], Some("{}".to_owned()))
            .await
            .map(drop)
    }
}

fn check_user_id(user_id: &str) -> Result<()> {
    if user_id.is_empty() {
        return Err(invalid("user_id", "must not be empty"));
    }
    Ok(())
}

/// Percent-encodes a path segment (user ids may hold any character).
pub(crate) fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~' | b'=' | b'@' | b',' | b';')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn decode<T: serde::de::DeserializeOwned + Default>(value: Value) -> Result<T> {
    // Every answer of the API is an object; serde would otherwise accept a sequence for a
    // struct and hide a broken server behind defaults.
    match value.as_object() {
        Some(map) if map.is_empty() => return Ok(T::default()),
        Some(_) => {}
        None => {
            return Err(Error::Decode {
                url: String::new(),
                reason: format!("expected a JSON object, got {value}"),
            })
        }
    }
    serde_json::from_value(value).map_err(|e| Error::Decode {
        url: String::new(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::signing::body_md5_hex;

    fn client() -> Client {
        Client::builder("1", "key", "secret")
            .host("h")
            .encryption_master_key_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
            .build()
            .expect("valid")
    }

    #[test]
    fn trigger_body_matches_the_node_library_byte_for_byte() {
        // The Node library's own vector: body md5 e95168baf497b2e54b2c6cadd41a6a3f.
        let body = client()
            .trigger_body(
                &["one".to_owned()],
                "my_event",
                &EventData::Text(r#"{"some":"data "}"#.into()),
                &TriggerParams::default(),
            )
            .expect("valid");
        assert_eq!(
            body,
            r#"{"name":"my_event","data":"{\"some\":\"data \"}","channels":["one"]}"#
        );
        assert_eq!(
            body_md5_hex(body.as_bytes()),
            "e95168baf497b2e54b2c6cadd41a6a3f"
        );
    }

    #[test]
    fn batch_body_matches_the_node_library() {
        let body = client()
            .batch_body(&[
                BatchEvent::new("integration", "event", "test"),
                BatchEvent::new("integration2", "event2", "test2"),
            ])
            .expect("valid");
        assert_eq!(
            body_md5_hex(body.as_bytes()),
            "fd5ab5fd40237f27555c4d2564470fdd"
        );
    }

    #[test]
    fn validation_fails_before_sending() {
        let c = client();
        let too_many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
        let long_event = "e".repeat(201);
        let cases: Vec<(Vec<String>, &str, TriggerParams, &str)> = vec![
            (too_many, "e", TriggerParams::default(), "channels"),
            (vec![], "e", TriggerParams::default(), "channels"),
            (
                vec!["bad name".into()],
                "e",
                TriggerParams::default(),
                "channels",
            ),
            (
                vec!["c".into()],
                &long_event,
                TriggerParams::default(),
                "event",
            ),
            (
                vec!["c".into()],
                "e",
                TriggerParams::default().socket_id("x"),
                "socket_id",
            ),
            (
                vec!["private-encrypted-a".into(), "b".into()],
                "e",
                TriggerParams::default(),
                "channels",
            ),
        ];
        for (channels, event, params, field) in cases {
            match c.trigger_body(&channels, event, &"d".into(), &params) {
                Err(Error::Validation { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected a {field} validation error, got {other:?}"),
            }
        }
        let batch: Vec<BatchEvent> = (0..11).map(|_| BatchEvent::new("c", "e", "d")).collect();
        assert!(matches!(
            c.batch_body(&batch),
            Err(Error::Validation { field: "batch", .. })
        ));
    }

    #[test]
    fn encrypted_data_is_a_secretbox_payload_pusher_js_can_open() {
        let c = client();
        let body = c
            .trigger_body(
                &["private-encrypted-x".to_owned()],
                "e",
                &EventData::json(&serde_json::json!({"a": 1})).expect("json"),
                &TriggerParams::default(),
            )
            .expect("valid");
        let v: Value = serde_json::from_str(&body).expect("json body");
        let payload: herald_protocol::encryption::EncryptedPayload =
            serde_json::from_str(v["data"].as_str().expect("string data")).expect("payload");
        let key = herald_protocol::encryption::decode_master_key(
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .expect("key");
        let plain = herald_protocol::encryption::decrypt(
            &shared_secret("private-encrypted-x", &key),
            &payload,
        )
        .expect("decrypts");
        assert_eq!(plain, br#"{"a":1}"#);
        let no_key = Client::builder("1", "k", "s").build().expect("valid");
        assert!(matches!(
            no_key.trigger_body(
                &["private-encrypted-x".to_owned()],
                "e",
                &"d".into(),
                &TriggerParams::default()
            ),
            Err(Error::Encryption(_))
        ));
    }
}
