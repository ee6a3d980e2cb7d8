//! End-to-end encrypted channels (`private-encrypted-`, spec §3.4): the per-channel shared
//! secret and the NaCl secretbox payload that pusher-js opens.
//!
//! The server never calls this: it relays ciphertext it cannot read. The SDK encrypts with
//! it and hands out shared secrets in auth responses; tests use it to prove byte-for-byte
//! compatibility with the official libraries. The caller supplies the random nonce, so this
//! crate needs no randomness source. No error here ever carries key material.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Length of the app's encryption master key, in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// Length of a secretbox nonce, in bytes.
const NONCE_LEN: usize = 24;

/// Base64 decoders as lenient as Node's `Buffer.from(s, "base64")`, which the official
/// library uses to read the master key: padding optional, standard or URL-safe alphabet.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Why a master key or an encrypted payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptionError {
    /// The master key is not base64. The key itself is never echoed.
    #[error("Invalid encryption master key: not valid base64")]
    KeyNotBase64,
    /// The master key does not decode to [`MASTER_KEY_LEN`] bytes.
    #[error("Invalid encryption master key: decodes to {0} bytes, expected 32")]
    KeyLength(usize),
    /// The payload's `nonce` or `ciphertext` is not base64, or the nonce is not 24 bytes.
    #[error("Invalid encrypted payload: {0}")]
    Malformed(&'static str),
    /// The payload is not the JSON object `{"nonce": ..., "ciphertext": ...}`.
    #[error(
        "Invalid encrypted payload: expected a JSON object with string fields nonce and ciphertext"
    )]
    NotJson,
    /// The ciphertext failed authentication: wrong shared secret, or tampered data.
    #[error("Encrypted payload could not be decrypted (wrong key or tampered data)")]
    Decrypt,
}

/// Decodes the app's base64 master key (surrounding whitespace ignored, so a key pasted
/// with a trailing newline still works).
pub fn decode_master_key(b64: &str) -> Result<[u8; MASTER_KEY_LEN], EncryptionError> {
    let b64 = b64.trim();
    // The decoder's own error names the offending byte, which could be key material, so it
    // is replaced by a message that names none.
    let bytes = LENIENT_STANDARD
        .decode(b64)
        .or_else(|_| LENIENT_URL_SAFE.decode(b64))
        .map_err(|_| EncryptionError::KeyNotBase64)?;
    <[u8; MASTER_KEY_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| EncryptionError::KeyLength(bytes.len()))
}

/// A channel's shared secret: SHA-256 of the channel name's UTF-8 bytes followed by the
/// master key, as pusher-http-node and pusher-http-php compute it.
pub fn shared_secret(channel: &str, master_key: &[u8; MASTER_KEY_LEN]) -> [u8; 32] {
    let mut sha = Sha256::new();
    sha.update(channel.as_bytes());
    sha.update(master_key);
    sha.finalize().into()
}

/// The `shared_secret` field of an auth response: standard base64 of [`shared_secret`].
pub fn shared_secret_base64(channel: &str, master_key: &[u8; MASTER_KEY_LEN]) -> String {
    STANDARD.encode(shared_secret(channel, master_key))
}

/// An encrypted event payload; its JSON text is the event's `data` string.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EncryptedPayload {
    /// Standard base64 of the 24-byte nonce.
    pub nonce: String,
    /// Standard base64 of the secretbox output (16-byte tag followed by the ciphertext).
    pub ciphertext: String,
}

impl EncryptedPayload {
    /// `{"nonce":"...","ciphertext":"..."}` in that key order, the exact text the official
    /// libraries send as the event's `data`.
    pub fn to_json(&self) -> String {
        // Going through serde_json's string escaping keeps the output valid JSON even if
        // the public fields were set to something other than base64.
        format!(
            "{{\"nonce\":{},\"ciphertext\":{}}}",
            serde_json::Value::from(self.nonce.as_str()),
            serde_json::Value::from(self.ciphertext.as_str())
        )
    }

    /// Reads a payload from an event's `data` string.
    pub fn from_json(data: &str) -> Result<EncryptedPayload, EncryptionError> {
        serde_json::from_str(data).map_err(|_| EncryptionError::NotJson)
    }
}

/// Encrypts `plaintext` with a channel's shared secret under `nonce`, which must be fresh
/// random bytes for every message: reusing a nonce with the same key breaks the cipher.
pub fn encrypt(
    shared_secret: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
) -> EncryptedPayload {
    let cipher = XSalsa20Poly1305::new(shared_secret.into());
    // Sealing only fails for plaintexts beyond the cipher's 256 GiB limit, which no event
    // reaches; an empty box then fails to open rather than panicking here.
    let ciphertext = cipher.encrypt(nonce.into(), plaintext).unwrap_or_default();
    EncryptedPayload {
        nonce: STANDARD.encode(nonce),
        ciphertext: STANDARD.encode(ciphertext),
    }
}

/// Opens a payload with a channel's shared secret, returning the plaintext bytes.
pub fn decrypt(
    shared_secret: &[u8; 32],
    payload: &EncryptedPayload,
) -> Result<Vec<u8>, EncryptionError> {
    let nonce = STANDARD
        .decode(&payload.nonce)
        .map_err(|_| EncryptionError::Malformed("nonce is not base64"))?;
    let nonce = <[u8; NONCE_LEN]>::try_from(nonce.as_slice())
        .map_err(|_| EncryptionError::Malformed("nonce is not 24 bytes"))?;
    let ciphertext = STANDARD
        .decode(&payload.ciphertext)
        .map_err(|_| EncryptionError::Malformed("ciphertext is not base64"))?;
    XSalsa20Poly1305::new(shared_secret.into())
        .decrypt((&nonce).into(), ciphertext.as_slice())
        .map_err(|_| EncryptionError::Decrypt)
}
