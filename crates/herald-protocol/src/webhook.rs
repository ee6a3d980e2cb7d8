//! The webhook signature: `X-Pusher-Signature` is the hex HMAC-SHA256 of the raw body keyed
//! with the app secret, sent with `X-Pusher-Key` and exactly `application/json` (the Node
//! library compares the content type with `===`).

use crate::hmac_hex::{hmac_sha256_hex, verify_hmac_hex};

/// The only content type the official libraries accept on a webhook.
pub const WEBHOOK_CONTENT_TYPE: &str = "application/json";
/// The header carrying the app key, spelled as PHP's case-sensitive lookup needs it.
pub const HEADER_KEY: &str = "X-Pusher-Key";
/// The header carrying the body's signature.
pub const HEADER_SIGNATURE: &str = "X-Pusher-Signature";

/// The signature of a webhook body.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    hmac_sha256_hex(secret.as_bytes(), body)
}

/// Whether `signature` signs `body` with `secret`, compared in constant time.
pub fn verify_webhook_signature(secret: &str, body: &[u8], signature: &str) -> bool {
    verify_hmac_hex(secret.as_bytes(), body, signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_vectors() {
        let body = br#"{"time_ms":1403175510755,"events":[{"channel":"test_channel","name":"channel_vacated"}]}"#;
        let sig = "c17257e92037cd7de407ebc1ed174ceb7b2e518db127f44411b9ffc4f5b28cc5";
        assert_eq!(webhook_signature("tofu", body), sig);
        assert!(verify_webhook_signature("tofu", body, sig));
        assert!(!verify_webhook_signature("tofu", b"{}", sig));
        assert!(!verify_webhook_signature("tofu", body, "not hex"));
    }
}
