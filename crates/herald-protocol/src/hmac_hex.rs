//! HMAC-SHA256 as lowercase hex, and its constant-time check: the one primitive behind
//! every Pusher signature (HTTP API requests, channel and user auth, webhooks).
//!
//! Kept in one place so that signing and verifying cannot disagree about the encoding, and
//! so that no caller is tempted to compare signatures with `==`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The raw HMAC-SHA256 of `message` keyed with `secret`.
fn mac(secret: &[u8], message: &[u8]) -> Option<[u8; 32]> {
    // HMAC accepts keys of any length, so this never fails in practice; returning None
    // instead of unwrapping keeps the crate free of panics even if that ever changed.
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(message);
    Some(mac.finalize().into_bytes().into())
}

/// Lowercase hex HMAC-SHA256 of `message` keyed with `secret`, the form every Pusher
/// signature takes on the wire.
pub fn hmac_sha256_hex(secret: &[u8], message: &[u8]) -> String {
    mac(secret, message).map(hex::encode).unwrap_or_default()
}

/// Whether `given` is the hex HMAC-SHA256 of `message` keyed with `secret`.
///
/// The digests are compared in constant time so that response timing reveals nothing about
/// how much of a forged signature was right. Hex case is ignored: it carries no meaning.
pub fn verify_hmac_hex(secret: &[u8], message: &[u8], given: &str) -> bool {
    let Some(expected) = mac(secret, message) else {
        return false;
    };
    // The length of a valid digest is public, so rejecting other lengths early leaks nothing.
    match hex::decode(given) {
        Ok(given) if given.len() == expected.len() => expected.ct_eq(&given).into(),
        _ => false,
    }
}
