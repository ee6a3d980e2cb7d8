//! HMAC-SHA256 as lowercase hex and its constant-time check: the one primitive behind
//! every Pusher signature (HTTP requests, channel and user auth, webhooks).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Lowercase hex HMAC-SHA256 of `message` keyed with `secret`.
pub fn hmac_sha256_hex(secret: &[u8], message: &[u8]) -> String {
    // HMAC takes keys of any length, so this never fails; the fallback keeps it panic-free.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(message);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Whether `given` is the hex HMAC of `message`, compared in constant time (hex case
/// ignored).
pub fn verify_hmac_hex(secret: &[u8], message: &[u8], given: &str) -> bool {
    let expected = hmac_sha256_hex(secret, message);
    let given = given.to_ascii_lowercase();
    !expected.is_empty()
        && expected.len() == given.len()
        && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}
