//! Channel authorization and user authentication signatures (spec §3.2–3.5).
//!
//! Verification always runs over the exact strings the client sent (`channel_data`,
//! `user_data`): re-serialising them would change bytes and break signatures.

use crate::hmac_hex::{hmac_sha256_hex, verify_hmac_hex};

/// `socket_id:channel` or `socket_id:channel:channel_data`.
pub fn channel_string_to_sign(
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// `socket_id::user::user_data`.
pub fn user_string_to_sign(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// The `auth` value for a channel subscription: `key:hex_signature`.
pub fn channel_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    let string = channel_string_to_sign(socket_id, channel, channel_data);
    format!(
        "{key}:{}",
        hmac_sha256_hex(secret.as_bytes(), string.as_bytes())
    )
}

/// The `auth` value for user sign-in: `key:hex_signature`.
pub fn user_auth(key: &str, secret: &str, socket_id: &str, user_data: &str) -> String {
    let string = user_string_to_sign(socket_id, user_data);
    format!(
        "{key}:{}",
        hmac_sha256_hex(secret.as_bytes(), string.as_bytes())
    )
}

/// Why an `auth` value was refused; the messages are Pusher's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `auth` was given.
    #[error("Auth info required to subscribe to {channel}")]
    Missing {
        /// The channel (or `user sign-in`).
        channel: String,
    },
    /// `auth` is not `key:signature`.
    #[error("Invalid format: auth must have the format key:signature")]
    Format,
    /// The key part is not this app's key.
    #[error("Invalid key in subscription auth data: '{given}'")]
    WrongKey {
        /// The key given.
        given: String,
    },
    /// The signature does not match.
    #[error(
        "Invalid signature: Expected HMAC SHA256 hex digest of {string_to_sign}, but got {given}"
    )]
    InvalidSignature {
        /// What the server signed.
        string_to_sign: String,
        /// The signature given.
        given: String,
    },
}

fn verify(
    key: &str,
    secret: &str,
    auth: &str,
    what: &str,
    string: String,
) -> Result<(), AuthError> {
    if auth.is_empty() {
        return Err(AuthError::Missing {
            channel: what.to_owned(),
        });
    }
    let (given_key, signature) = auth.split_once(':').ok_or(AuthError::Format)?;
    if given_key != key {
        return Err(AuthError::WrongKey {
            given: given_key.to_owned(),
        });
    }
    if verify_hmac_hex(secret.as_bytes(), string.as_bytes(), signature) {
        Ok(())
    } else {
        Err(AuthError::InvalidSignature {
            string_to_sign: string,
            given: signature.to_owned(),
        })
    }
}

/// Checks a subscription's `auth` for `channel` (with `channel_data` on presence channels).
pub fn verify_channel_auth(
    key: &str,
    secret: &str,
    auth: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> Result<(), AuthError> {
    let string = channel_string_to_sign(socket_id, channel, channel_data);
    verify(key, secret, auth, channel, string)
}

/// Checks a `pusher:signin`'s `auth` over `user_data`.
pub fn verify_user_auth(
    key: &str,
    secret: &str,
    auth: &str,
    socket_id: &str,
    user_data: &str,
) -> Result<(), AuthError> {
    verify(
        key,
        secret,
        auth,
        "user sign-in",
        user_string_to_sign(socket_id, user_data),
    )
}
