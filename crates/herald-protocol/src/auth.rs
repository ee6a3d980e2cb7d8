//! Channel authorization and user authentication signatures (spec §3.2–3.5): the `auth`
//! token a customer's backend hands to pusher-js and the server checks on `pusher:subscribe`
//! and `pusher:signin`.
//!
//! Both sides work on the exact strings the client sent (`channel_data`, `user_data`):
//! re-serialising that JSON would change its bytes and break the signature.

use crate::hmac_hex::{hmac_sha256_hex, verify_hmac_hex};

/// The string a channel subscription signs: `socket_id:channel`, or
/// `socket_id:channel:channel_data` when there is channel data (presence channels).
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

/// The string a user sign-in signs: `socket_id::user::user_data`.
pub fn user_string_to_sign(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

fn token(key: &str, secret: &str, string_to_sign: &str) -> String {
    format!(
        "{key}:{}",
        hmac_sha256_hex(secret.as_bytes(), string_to_sign.as_bytes())
    )
}

/// The `auth` value that lets `socket_id` subscribe to `channel`: `key:hex_signature`.
/// `channel_data` must be the exact JSON text that is also returned to the client.
pub fn channel_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    token(
        key,
        secret,
        &channel_string_to_sign(socket_id, channel, channel_data),
    )
}

/// The `auth` value that lets `socket_id` sign in as the user in `user_data`:
/// `key:hex_signature`. `user_data` must be the exact JSON text returned to the client.
pub fn user_auth(key: &str, secret: &str, socket_id: &str, user_data: &str) -> String {
    token(key, secret, &user_string_to_sign(socket_id, user_data))
}

/// Why an `auth` value was refused. The messages are Pusher's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A subscription that needs `auth` came without one (or with an empty one).
    #[error("Auth info required to subscribe to {channel}")]
    Missing {
        /// The channel the client tried to subscribe to.
        channel: String,
    },
    /// A sign-in came without `auth` (or with an empty one).
    #[error("Auth info required to sign in")]
    MissingUserAuth,
    /// `auth` is not `key:signature`.
    #[error("Invalid format: auth must have the format key:signature")]
    Format,
    /// The key part is not this app's key.
    #[error("Invalid key in subscription auth data: '{given}'")]
    WrongKey {
        /// The key the client sent.
        given: String,
    },
    /// The signature does not match. The message shows the string the server signed, as
    /// Pusher's does: a differing `channel_data` or socket id is the usual cause.
    #[error(
        "Invalid signature: Expected HMAC SHA256 hex digest of {string_to_sign}, but got {given}"
    )]
    InvalidSignature {
        /// The string the server signed.
        string_to_sign: String,
        /// The signature the client sent.
        given: String,
    },
}

/// Splits `auth` into key and signature and checks both; `missing` is the error for an
/// absent `auth`, which differs between subscriptions and sign-ins.
fn verify(
    key: &str,
    secret: &str,
    auth: &str,
    string_to_sign: String,
    missing: impl FnOnce() -> AuthError,
) -> Result<(), AuthError> {
    if auth.is_empty() {
        return Err(missing());
    }
    let (given_key, signature) = auth.split_once(':').ok_or(AuthError::Format)?;
    // The key is public, so an ordinary comparison leaks nothing.
    if given_key != key {
        return Err(AuthError::WrongKey {
            given: given_key.to_owned(),
        });
    }
    if verify_hmac_hex(secret.as_bytes(), string_to_sign.as_bytes(), signature) {
        Ok(())
    } else {
        Err(AuthError::InvalidSignature {
            string_to_sign,
            given: signature.to_owned(),
        })
    }
}

/// Checks the `auth` of a `pusher:subscribe` to `channel`, over the `channel_data` string
/// exactly as received (presence channels). The signature is compared in constant time.
pub fn verify_channel_auth(
    key: &str,
    secret: &str,
    auth: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> Result<(), AuthError> {
    verify(
        key,
        secret,
        auth,
        channel_string_to_sign(socket_id, channel, channel_data),
        || AuthError::Missing {
            channel: channel.to_owned(),
        },
    )
}

/// Checks the `auth` of a `pusher:signin`, over the `user_data` string exactly as
/// received. The signature is compared in constant time.
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
        user_string_to_sign(socket_id, user_data),
        || AuthError::MissingUserAuth,
    )
}
