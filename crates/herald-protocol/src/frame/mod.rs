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
//!
//! One module holds what clients send (decoded by the server, encoded by the bench), the
//! other what the server sends.

mod client;
mod server;

pub use client::{decode_client_message, ClientMessage, Signin, Subscribe, Unsubscribe};
pub use server::*;

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

/// The JSON text of an absent payload.
const NULL: &str = "null";

#[cfg(test)]
mod tests;
