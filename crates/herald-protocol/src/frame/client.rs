//! Client → server messages: one type per message, decoded by the server and encoded by
//! clients (the bench writes its frames with these).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{FrameError, NULL};

/// A `pusher:subscribe` request.
///
/// ```
/// use herald_protocol::frame::{decode_client_message, ClientMessage, Subscribe};
/// let sub = Subscribe::new("private-a", Some("key:signature".into()), None);
/// let text = sub.to_frame();
/// assert_eq!(decode_client_message(&text), Ok(ClientMessage::Subscribe(sub)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Subscribe {
    /// The channel to join.
    pub channel: String,
    /// `key:signature`, empty or absent for public channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// Presence member data, as the exact JSON text that was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_data: Option<String>,
}

impl Subscribe {
    /// A subscription to `channel`, with its auth and presence data when it needs them.
    pub fn new(
        channel: impl Into<String>,
        auth: Option<String>,
        channel_data: Option<String>,
    ) -> Self {
        Subscribe {
            channel: channel.into(),
            auth,
            channel_data,
        }
    }

    /// The text frame a client sends.
    pub fn to_frame(&self) -> String {
        to_frame("pusher:subscribe", self)
    }
}

/// A `pusher:signin` request.
///
/// ```
/// use herald_protocol::frame::{decode_client_message, ClientMessage, Signin};
/// let signin = Signin::new("key:signature", r#"{"id":"1"}"#);
/// assert_eq!(decode_client_message(&signin.to_frame()), Ok(ClientMessage::Signin(signin)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Signin {
    /// `key:signature` over `socket_id::user::user_data`.
    pub auth: String,
    /// The user object as the exact JSON text that was signed.
    pub user_data: String,
}

impl Signin {
    /// A sign-in with its signature and the signed user data.
    pub fn new(auth: impl Into<String>, user_data: impl Into<String>) -> Self {
        Signin {
            auth: auth.into(),
            user_data: user_data.into(),
        }
    }

    /// The text frame a client sends.
    pub fn to_frame(&self) -> String {
        to_frame("pusher:signin", self)
    }
}

/// A `pusher:unsubscribe` request.
///
/// ```
/// use herald_protocol::frame::{decode_client_message, ClientMessage, Unsubscribe};
/// let text = Unsubscribe::new("a").to_frame();
/// assert_eq!(decode_client_message(&text), Ok(ClientMessage::Unsubscribe { channel: "a".into() }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Unsubscribe {
    /// The channel to leave.
    pub channel: String,
}

impl Unsubscribe {
    /// Leaving `channel`.
    pub fn new(channel: impl Into<String>) -> Self {
        Unsubscribe {
            channel: channel.into(),
        }
    }

    /// The text frame a client sends.
    pub fn to_frame(&self) -> String {
        to_frame("pusher:unsubscribe", self)
    }
}

/// `{"event":…,"data":{…}}`, the object form pusher-js sends.
fn to_frame<T: Serialize>(event: &'static str, data: &T) -> String {
    #[derive(Serialize)]
    struct Frame<'a, T> {
        event: &'static str,
        data: &'a T,
    }
    // Plain structs of strings: serialising them cannot fail.
    serde_json::to_string(&Frame { event, data }).unwrap_or_default()
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
    // serde borrows a bare `Cow<str>` but copies one inside an `Option`.
    #[serde(default, borrow, deserialize_with = "crate::api::borrow::text")]
    channel: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

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
            let c: Unsubscribe = payload(envelope.data, "pusher:unsubscribe")?;
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
