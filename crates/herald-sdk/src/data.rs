//! An event's payload, and the `data` token it is sent as.

use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::Value;

use crate::error::{invalid, Result};

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

    /// The `data` token sent on the wire: a JSON string holding the text, or the value's
    /// JSON text, written straight into the token.
    pub(crate) fn wire(&self) -> Result<Box<RawValue>> {
        let token = match self {
            EventData::Text(text) => to_raw_value(text),
            EventData::Json(value) => to_raw_value(&AsText(value)),
        };
        token.map_err(|e| invalid("data", e.to_string()))
    }

    /// What is encrypted for `private-encrypted-` channels: always JSON (a string is
    /// JSON-quoted), as the Node library does, so pusher-js decodes it the same way.
    pub(crate) fn plaintext(&self) -> String {
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

/// A value serialised as the string of its JSON text, without the text as a `String` first.
struct AsText<'a>(&'a Value);

impl Serialize for AsText<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}
