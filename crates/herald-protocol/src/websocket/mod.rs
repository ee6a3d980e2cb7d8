//! RFC 6455 framing for the server side, as pure code: decoding masked client frames and
//! encoding unmasked server frames.
//!
//! The server frames sockets itself rather than through a WebSocket crate's stream type
//! because those keep a read buffer of 4–128 KB per connection for as long as it is open,
//! which alone is many times the memory budget of an idle Herald connection. This decoder
//! owns no I/O buffer: the connection passes in whatever bytes it has, and the decoder
//! consumes complete frames from the front. Only an unfinished fragmented message is kept.
//! It lives here, with no I/O, so the fuzz targets and the benchmark harness use the very
//! code the server runs.
//!
//! `handshake.rs` answers the opening handshake, `decode.rs` reads client frames and
//! `encode.rs` writes frames (the server's, and a client's for tests and the harness).

mod decode;
mod encode;
mod handshake;
#[cfg(test)]
mod tests;

pub use decode::{is_valid_close_code, CodecError, Decoder, Message};
pub use encode::{
    compress_text_frame, encode_close, encode_empty_close, encode_masked, encode_masked_compressed,
    encode_ping, encode_pong, encode_text, text_header, text_payload,
};
pub use handshake::{accept_key, is_valid_key};

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// The first reserved bit: a compressed message's first frame (RFC 7692 §6).
const RSV1: u8 = 0x40;
