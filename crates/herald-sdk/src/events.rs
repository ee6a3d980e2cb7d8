//! Triggering events, single, multi-channel and batch, and their validation.
//!
//! Bodies are [`herald_protocol::api`]'s types, the ones the server parses, with their keys
//! in the order the Node library sends them, so requests are byte-identical for the same
//! inputs. Everything is validated before a request is sent.

use std::borrow::Cow;

use herald_protocol::api::{BatchBody, BatchItem, RawJson, TriggerBody};
use herald_protocol::channel::{
    is_valid_socket_id, validate_channel_name, validate_event_name, ChannelKind,
    MAX_CHANNEL_NAME_LEN, SERVER_TO_USER_PREFIX,
};
use herald_protocol::encryption::{encrypt, shared_secret};
use serde_json::value::{to_raw_value, RawValue};

pub use herald_protocol::api::{
    BatchAnswer as BatchResponse, ChannelAttributes, TriggerAnswer as TriggerResponse,
};

use crate::client::{decode, Client};
use crate::data::EventData;
use crate::error::{invalid, Error, Result};

/// The most channels one trigger may name.
///
/// ```
/// assert_eq!(herald_sdk::MAX_CHANNELS, 100);
/// ```
pub const MAX_CHANNELS: usize = 100;

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
        let body = self.trigger_body(channels, event, &data.into(), &params)?;
        let value = self
            .send(reqwest::Method::POST, "/events", &[], Some(body))
            .await?;
        decode(value)
    }

    /// The request body of a trigger, validated (exposed for tests of byte equality).
    pub(crate) fn trigger_body<S: AsRef<str>>(
        &self,
        channels: &[S],
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
        let mut encrypted = None;
        for channel in channels.iter().map(AsRef::as_ref) {
            if channel.starts_with(SERVER_TO_USER_PREFIX) {
                continue;
            }
            if check_channel(channel)? == ChannelKind::PrivateEncrypted {
                encrypted = Some(channel);
            }
        }
        if encrypted.is_some() && channels.len() > 1 {
            return Err(invalid(
                "channels",
                "an event to an encrypted channel must go to that channel alone",
            ));
        }
        check_socket_id(params.socket_id.as_deref())?;
        let data = match encrypted {
            Some(channel) => self.encrypt_for(channel, data)?,
            None => data.wire()?,
        };
        let mut body = TriggerBody::default();
        body.name = Some(Cow::Borrowed(event));
        body.data = Some(RawJson(&data));
        body.channels = Some(channels.iter().map(|c| Cow::Borrowed(c.as_ref())).collect());
        body.socket_id = params.socket_id.as_deref().map(Cow::Borrowed);
        body.info = (!params.info.is_empty()).then(|| Cow::Owned(params.info.join(",")));
        serde_json::to_string(&body).map_err(|e| invalid("data", e.to_string()))
    }

    /// The `data` token of an event to an encrypted channel: its secretbox payload's JSON
    /// text, as a string.
    fn encrypt_for(&self, channel: &str, data: &EventData) -> Result<Box<RawValue>> {
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
        to_raw_value(&payload.to_json()).map_err(|e| invalid("data", e.to_string()))
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
        // The tokens first: the items borrow them.
        let mut tokens = Vec::with_capacity(events.len());
        for event in events {
            check_event_name(&event.name)?;
            let kind = if event.channel.starts_with(SERVER_TO_USER_PREFIX) {
                ChannelKind::ServerToUser
            } else {
                check_channel(&event.channel)?
            };
            check_socket_id(event.socket_id.as_deref())?;
            tokens.push(if kind == ChannelKind::PrivateEncrypted {
                self.encrypt_for(&event.channel, &event.data)?
            } else {
                event.data.wire()?
            });
        }
        let items = events
            .iter()
            .zip(&tokens)
            .map(|(event, data)| {
                let mut item = BatchItem::default();
                item.channel = Some(Cow::Borrowed(event.channel.as_str()));
                item.name = Some(Cow::Borrowed(event.name.as_str()));
                item.data = Some(RawJson(data));
                item.socket_id = event.socket_id.as_deref().map(Cow::Borrowed);
                item.info = event.info.as_deref().map(Cow::Borrowed);
                item
            })
            .collect();
        let mut body = BatchBody::default();
        body.batch = Some(items);
        serde_json::to_string(&body).map_err(|e| invalid("batch", e.to_string()))
    }
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
                &["one"],
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
        let v: serde_json::Value = serde_json::from_str(&body).expect("json body");
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
