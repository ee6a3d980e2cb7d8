//! The webhook signature and headers (spec §7): `X-Pusher-Signature` is the hex
//! HMAC-SHA256 of the raw body keyed with the app secret, sent next to `X-Pusher-Key` with
//! a content type of exactly `application/json`.
//!
//! The server signs with these functions and the SDK verifies with them, so the two cannot
//! drift. The signature covers the raw body bytes, so verify before parsing the JSON.

use crate::hmac_hex::{hmac_sha256_hex, verify_hmac_hex};

/// The content type of a webhook request. Exactly this, with no `; charset=...`:
/// pusher-http-node compares it with `===` and rejects anything else.
pub const WEBHOOK_CONTENT_TYPE: &str = "application/json";

/// The header carrying the app key. Spelled this way because pusher-http-php looks it up
/// case-sensitively.
pub const HEADER_KEY: &str = "X-Pusher-Key";

/// The header carrying the body's signature, spelled as pusher-http-php looks it up.
pub const HEADER_SIGNATURE: &str = "X-Pusher-Signature";

/// The `X-Pusher-Signature` of a webhook body: lowercase hex HMAC-SHA256 of the raw bytes.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    hmac_sha256_hex(secret.as_bytes(), body)
}

/// Whether `signature` is the signature of `body` under `secret`, compared in constant time.
pub fn verify_webhook_signature(secret: &str, body: &[u8], signature: &str) -> bool {
    verify_hmac_hex(secret.as_bytes(), body, signature)
}
