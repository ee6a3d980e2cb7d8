//! End-to-end encrypted channels (`private-encrypted-`, spec §3.4): the per-channel shared
//! secret and the NaCl secretbox payload format pusher-js decrypts.
//!
//! The server never calls this: it passes ciphertext through. The SDK encrypts with it, and
//! tests use it to prove byte compatibility with pusher-js. The caller supplies the nonce so
//! this crate needs no randomness source.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Length of the master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// Why a key or payload was refused. Key material never appears in these messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptionError {
    /// The master key is not valid base64.
    #[error("encryption master key must be valid base64")]
    KeyNotBase64,
    /// The master key does not decode to 32 bytes.
    #[error("encryption master key must decode to 32 bytes, got {0}")]
    KeyLength(usize),
    /// The payload's nonce or ciphertext is not valid base64, or the nonce is not 24 bytes.
    #[error("encrypted payload is malformed: {0}")]
    Malformed(&'static str),
    /// Authentication failed: wrong key or tampered ciphertext.
    #[error("encrypted payload could not be decrypted (wrong key or tampered data)")]
    Decrypt,
}

/// Decodes a base64 master key.
pub fn decode_master_key(b64: &str) -> Result<[u8; MASTER_KEY_LEN], EncryptionError> {
    let bytes = STANDARD
        .decode(b64.trim())
        .map_err(|_| EncryptionError::KeyNotBase64)?;
    <[u8; MASTER_KEY_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| EncryptionError::KeyLength(bytes.len()))
}

/// SHA-256 of the channel name's bytes followed by the master key.
pub fn shared_secret(channel: &str, master_key: &[u8; MASTER_KEY_LEN]) -> [u8; 32] {
    let mut sha = Sha256::new();
    sha.update(channel.as_bytes());
    sha.update(master_key);
    sha.finalize().into()
}

/// The `shared_secret` field of an auth response: base64 of [`shared_secret`].
pub fn shared_secret_base64(channel: &str, master_key: &[u8; MASTER_KEY_LEN]) -> String {
    STANDARD.encode(shared_secret(channel, master_key))
}

/// An encrypted event payload as it travels in `data`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EncryptedPayload {
    /// Base64 of the 24-byte nonce.
    pub nonce: String,
    /// Base64 of the secretbox output (ciphertext and 16-byte tag).
    pub ciphertext: String,
}

impl EncryptedPayload {
    /// `{"nonce":"...","ciphertext":"..."}`, the string sent as the event's `data`.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"nonce\":\"{}\",\"ciphertext\":\"{}\"}}",
            self.nonce, self.ciphertext
        )
    }
}

/// Encrypts `plaintext` with a channel's shared secret.
pub fn encrypt(shared_secret: &[u8; 32], nonce: &[u8; 24], plaintext: &[u8]) -> EncryptedPayload {
    let cipher = XSalsa20Poly1305::new(shared_secret.into());
    // Encryption with a valid key and nonce cannot fail; an empty box would fail to decrypt
    // rather than panic here.
    let ciphertext = cipher.encrypt(nonce.into(), plaintext).unwrap_or_default();
    EncryptedPayload {
        nonce: STANDARD.encode(nonce),
        ciphertext: STANDARD.encode(ciphertext),
    }
}

/// Decrypts a payload with a channel's shared secret.
pub fn decrypt(
    shared_secret: &[u8; 32],
    payload: &EncryptedPayload,
) -> Result<Vec<u8>, EncryptionError> {
    let nonce = STANDARD
        .decode(&payload.nonce)
        .map_err(|_| EncryptionError::Malformed("nonce is not base64"))?;
    let nonce = <[u8; 24]>::try_from(nonce.as_slice())
        .map_err(|_| EncryptionError::Malformed("nonce is not 24 bytes"))?;
    let ciphertext = STANDARD
        .decode(&payload.ciphertext)
        .map_err(|_| EncryptionError::Malformed("ciphertext is not base64"))?;
    XSalsa20Poly1305::new(shared_secret.into())
        .decrypt((&nonce).into(), ciphertext.as_slice())
        .map_err(|_| EncryptionError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq<const N: usize>() -> [u8; N] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn protocol_reference_vectors() {
        let master = seq::<32>();
        assert_eq!(
            decode_master_key("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            Ok(master)
        );
        assert_eq!(
            shared_secret_base64("private-encrypted-foobar", &master),
            "g3Au6SZ+UCU+IMfFsFva0rq+Gi4tzSHR6WCcWZbS9sY="
        );
        let secret = shared_secret("private-encrypted-foobar", &master);
        let payload = encrypt(&secret, &seq::<24>(), br#"{"message":"hello"}"#);
        assert_eq!(
            payload.to_json(),
            r#"{"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYX","ciphertext":"cUvi6VQlRGyKCRRclUJdHUsGJzgoj596PYEg0Ekt7UbHsAQ="}"#
        );
        assert_eq!(
            decrypt(&secret, &payload).as_deref(),
            Ok(&br#"{"message":"hello"}"#[..])
        );
    }

    #[test]
    fn node_library_shared_secret_vector() {
        let key =
            decode_master_key("zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=").expect("valid key");
        assert_eq!(
            shared_secret_base64("private-encrypted-bla", &key),
            "nlr49ISQHz91yS3cy/yWmW8wFMNeTnNL5tNHnbPJcLQ="
        );
    }

    #[test]
    fn bad_keys_and_payloads() {
        assert_eq!(decode_master_key("!!"), Err(EncryptionError::KeyNotBase64));
        assert_eq!(
            decode_master_key("AAAA"),
            Err(EncryptionError::KeyLength(3))
        );
        let secret = [7u8; 32];
        let mut payload = encrypt(&secret, &[1; 24], b"x");
        assert_eq!(decrypt(&[8u8; 32], &payload), Err(EncryptionError::Decrypt));
        payload.nonce = "AAAA".into();
        assert!(matches!(
            decrypt(&secret, &payload),
            Err(EncryptionError::Malformed(_))
        ));
    }
}
