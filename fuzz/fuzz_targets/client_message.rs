//! Client text frames through `decode_client_message`, the first thing the server does with
//! every message a socket sends.
//!
//! The input is the frame's text (the WebSocket layer only hands over valid UTF-8). Beyond
//! "never panics", each decoded message is re-encoded in both payload forms SDKs use (an
//! object, or a JSON string holding one) and must decode to the same value, and a client
//! event's `data` must be the sender's exact JSON text, since it is relayed unparsed.
#![no_main]

use herald_protocol::frame::{decode_client_message, json_str, ClientMessage, FrameError};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// Decodes `text` and asserts it yields `expected`.
fn assert_decodes_to(text: &str, expected: &ClientMessage<'_>) {
    match decode_client_message(text) {
        Ok(m) => assert_eq!(&m, expected, "re-encoded as {text}"),
        Err(e) => panic!("re-encoded {expected:?} as {text} but it failed: {e}"),
    }
}

/// Re-encodes `data` under `event` as an object and as a string-wrapped object.
fn check_both_forms(event: &str, data: Value, expected: &ClientMessage<'_>) {
    let object = json!({ "event": event, "data": data }).to_string();
    assert_decodes_to(&object, expected);
    let string = json!({ "event": event, "data": data.to_string() }).to_string();
    assert_decodes_to(&string, expected);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    // json_str must produce a JSON string literal that reads back as the same text: every
    // server frame embeds channel names, user ids and messages through it.
    let literal = json_str(text);
    assert_eq!(
        serde_json::from_str::<String>(&literal).ok().as_deref(),
        Some(text),
        "json_str did not round-trip"
    );

    let decoded = decode_client_message(text);
    match &decoded {
        Ok(ClientMessage::Ping) | Ok(ClientMessage::Pong) => {}
        Ok(m @ ClientMessage::Subscribe(s)) => check_both_forms(
            "pusher:subscribe",
            json!({ "channel": s.channel, "auth": s.auth, "channel_data": s.channel_data }),
            m,
        ),
        Ok(m @ ClientMessage::Unsubscribe { channel }) => {
            check_both_forms("pusher:unsubscribe", json!({ "channel": channel }), m)
        }
        Ok(m @ ClientMessage::Signin(s)) => check_both_forms(
            "pusher:signin",
            json!({ "auth": s.auth, "user_data": s.user_data }),
            m,
        ),
        Ok(ClientMessage::ClientEvent {
            event,
            channel,
            data,
        }) => {
            let data: &str = data;
            assert!(event.starts_with("client-"), "client event {event:?}");
            // `data` is relayed verbatim, so it must be one complete JSON value and, unless
            // absent (`null`), a slice of the very text received, not a re-serialisation.
            assert!(serde_json::from_str::<&RawValue>(data).is_ok(), "data {data:?}");
            let range = text.as_bytes().as_ptr_range();
            assert!(
                data == "null" || range.contains(&data.as_ptr()),
                "data is not the received text"
            );
            let again = format!(
                "{{\"event\":{},\"channel\":{},\"data\":{}}}",
                json_str(event),
                json_str(channel),
                data
            );
            match decode_client_message(&again) {
                Ok(ClientMessage::ClientEvent {
                    event: e2,
                    channel: c2,
                    data: d2,
                }) => assert_eq!((&e2, &c2, d2), (event, channel, data)),
                other => panic!("client event re-encoded as {again} gave {other:?}"),
            }
        }
        Ok(other) => panic!("unexpected message kind {other:?}"),
        Err(e) => {
            // The text goes back to the client in a pusher:error; it must say something.
            assert!(!e.to_string().is_empty());
            if let FrameError::NotClientEvent(name) = e {
                assert!(!name.starts_with("client-") && !name.starts_with("pusher:"));
            }
        }
    }
});
