//! The opening handshake's key: checked (RFC 6455 §4.2.1) and answered (§4.2.2).

use base64::Engine as _;
use sha1::{Digest, Sha1};

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(sec_websocket_key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(sec_websocket_key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Whether a `Sec-WebSocket-Key` is what §4.2.1 requires: base64 of exactly 16 bytes.
pub fn is_valid_key(sec_websocket_key: &[u8]) -> bool {
    let mut nonce = [0u8; 18];
    base64::engine::general_purpose::STANDARD
        .decode_slice(sec_websocket_key, &mut nonce)
        .is_ok_and(|n| n == 16)
}
