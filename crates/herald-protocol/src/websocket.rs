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

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use sha1::{Digest, Sha1};

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// The first reserved bit: a compressed message's first frame (RFC 7692 §6).
const RSV1: u8 = 0x40;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(sec_websocket_key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(sec_websocket_key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// One complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

/// Why the byte stream is not acceptable; each maps to the close code RFC 6455 assigns.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    #[error("message larger than {limit} bytes")]
    TooBig { limit: usize },
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A compressed message (permessage-deflate) that does not inflate.
    #[error("compressed message is corrupt")]
    BadCompression,
}

impl From<crate::deflate::InflateError> for CodecError {
    fn from(error: crate::deflate::InflateError) -> Self {
        match error {
            crate::deflate::InflateError::TooBig { limit } => CodecError::TooBig { limit },
            crate::deflate::InflateError::Corrupt => CodecError::BadCompression,
        }
    }
}

impl CodecError {
    pub fn close_code(&self) -> u16 {
        match self {
            CodecError::Protocol(_) => 1002,
            CodecError::TooBig { .. } => 1009,
            CodecError::InvalidUtf8 | CodecError::BadCompression => 1007,
        }
    }
}

/// Incremental decoder; one per connection.
#[derive(Debug)]
pub struct Decoder {
    /// Largest message, in bytes (u32: the configuration caps it far below 4 GiB).
    max_message: u32,
    /// How much of the unfinished text frame at the front of the buffer is known to be
    /// valid UTF-8 (it fits in the padding next to `max_message`).
    partial_checked: u32,
    /// A fragmented message still being received; boxed, as almost no client fragments
    /// and every idle connection would pay for the space.
    fragments: Option<Box<Fragments>>,
}

#[derive(Debug)]
struct Fragments {
    opcode: u8,
    /// The message is compressed (RSV1 on its first frame): `data` is DEFLATE, not text,
    /// until the last fragment inflates it.
    compressed: bool,
    data: Vec<u8>,
    /// How much of a text message's `data` is known to be valid UTF-8: each fragment is
    /// checked as it arrives (RFC 6455 §8.1 asks to fail as soon as the text is invalid),
    /// resuming at a code point the previous fragment cut in two.
    checked: usize,
}

impl Fragments {
    fn extend(&mut self, payload: &[u8]) -> Result<(), CodecError> {
        self.data.extend_from_slice(payload);
        if self.opcode != OP_TEXT || self.compressed {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.checked..]) {
            Ok(_) => self.checked = self.data.len(),
            // An incomplete code point at the end is fine until the message ends.
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(_) => return Err(CodecError::InvalidUtf8),
        }
        Ok(())
    }
}

struct Header {
    fin: bool,
    opcode: u8,
    /// RSV1 on a negotiated permessage-deflate connection.
    compressed: bool,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message: u32::try_from(max_message).unwrap_or(u32::MAX),
            partial_checked: 0,
            fragments: None,
        }
    }

    /// Whether a fragmented message has started and not yet ended.
    pub fn fragments_in_progress(&self) -> bool {
        self.fragments.is_some()
    }

    /// Parses a frame header from the front of `buf`, or `None` if more bytes are needed.
    /// The declared length is checked against the limit before anything is allocated.
    fn header(&self, buf: &[u8], deflate: bool) -> Result<Option<Header>, CodecError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        // RSV1 is permessage-deflate's, and only on a message's first frame (RFC 7692 §6).
        let compressed = b0 & 0x70 == RSV1 && deflate;
        if b0 & 0x70 != 0 && !compressed {
            return Err(CodecError::Protocol(
                "reserved bits set without an extension",
            ));
        }
        if compressed && !matches!(opcode, OP_TEXT | OP_BINARY) {
            return Err(CodecError::Protocol(
                "RSV1 is allowed only on the first frame of a data message",
            ));
        }
        if b1 & 0x80 == 0 {
            return Err(CodecError::Protocol("client frames must be masked"));
        }
        let (len, mut pos) = match b1 & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(CodecError::Protocol("payload length has its top bit set"));
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err(CodecError::Protocol(
                        "control frames must not be fragmented",
                    ));
                }
                if len > 125 {
                    return Err(CodecError::Protocol("control frame payload over 125 bytes"));
                }
            }
            _ => return Err(CodecError::Protocol("unknown opcode")),
        }
        let buffered = self.fragments.as_deref().map_or(0, |f| f.data.len()) as u64;
        if opcode <= OP_BINARY && buffered + len > u64::from(self.max_message) {
            return Err(CodecError::TooBig {
                limit: self.max_message as usize,
            });
        }
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&buf[pos..pos + 4]);
        pos += 4;
        Ok(Some(Header {
            fin,
            opcode,
            compressed,
            mask,
            header_len: pos,
            // Fits: it is at most max_message, or 125 for control frames.
            payload_len: len as usize,
        }))
    }

    /// Takes the next complete message from the front of `buf`, or `Ok(None)` when `buf`
    /// holds only part of one (the partial bytes stay in `buf`).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        self.decode_with(buf, false)
    }

    /// [`Decoder::decode`] on a connection that negotiated permessage-deflate (`deflate`):
    /// messages with RSV1 are inflated ([`crate::deflate::inflate`]) to at most the message
    /// limit. The flag is the caller's, not the decoder's, so the decoder stays 16 bytes.
    pub fn decode_with(
        &mut self,
        buf: &mut BytesMut,
        deflate: bool,
    ) -> Result<Option<Message>, CodecError> {
        loop {
            let Some(h) = self.header(buf, deflate)? else {
                return Ok(None);
            };
            if buf.len() < h.header_len + h.payload_len {
                self.check_partial_text(&h, &buf[h.header_len..])?;
                return Ok(None);
            }
            self.partial_checked = 0;
            buf.advance(h.header_len);
            let mut payload = buf.split_to(h.payload_len).to_vec();
            unmask(&mut payload, h.mask);
            match h.opcode {
                OP_PING => return Ok(Some(Message::Ping(payload))),
                OP_PONG => return Ok(Some(Message::Pong(payload))),
                OP_CLOSE => return close_message(payload).map(Some),
                OP_CONTINUATION => {
                    let Some(fragments) = self.fragments.as_deref_mut() else {
                        return Err(CodecError::Protocol("continuation without a message"));
                    };
                    if h.fin {
                        fragments.data.extend_from_slice(&payload);
                        if let Some(f) = self.fragments.take() {
                            let data = self.inflated(f.data, f.compressed)?;
                            return data_message(f.opcode, data).map(Some);
                        }
                    } else {
                        fragments.extend(&payload)?;
                    }
                }
                opcode => {
                    if self.fragments.is_some() {
                        return Err(CodecError::Protocol(
                            "new message before the fragmented one ended",
                        ));
                    }
                    if h.fin {
                        let data = self.inflated(payload, h.compressed)?;
                        return data_message(opcode, data).map(Some);
                    }
                    let mut fragments = Box::new(Fragments {
                        opcode,
                        compressed: h.compressed,
                        data: Vec::new(),
                        checked: 0,
                    });
                    fragments.extend(&payload)?;
                    self.fragments = Some(fragments);
                }
            }
        }
    }
}

impl Decoder {
    /// A whole message's payload, inflated if it came compressed.
    fn inflated(&self, data: Vec<u8>, compressed: bool) -> Result<Vec<u8>, CodecError> {
        if !compressed {
            return Ok(data);
        }
        Ok(crate::deflate::inflate(&data, self.max_message as usize)?)
    }

    /// Fails as soon as the received part of an unfinished text frame is not UTF-8
    /// (RFC 6455 §8.1), rather than when its last byte arrives. Only bytes not checked
    /// before are looked at, so a frame trickled a byte at a time costs linear time.
    fn check_partial_text(&mut self, h: &Header, received: &[u8]) -> Result<(), CodecError> {
        // Compressed bytes are not text: they are checked once inflated.
        let continued = self
            .fragments
            .as_deref()
            .filter(|f| f.opcode == OP_TEXT && !f.compressed);
        let is_text = match h.opcode {
            OP_TEXT => !h.compressed,
            OP_CONTINUATION => continued.is_some(),
            _ => false,
        };
        let start = self.partial_checked as usize;
        if !is_text || received.len() <= start {
            return Ok(());
        }
        // A code point the previous fragment cut in two is completed by this frame's first
        // bytes; once past them, only this frame's own bytes matter.
        let carried: &[u8] = match continued {
            Some(f) if start == 0 => &f.data[f.checked..],
            _ => &[],
        };
        let mut text = Vec::with_capacity(carried.len() + received.len() - start);
        text.extend_from_slice(carried);
        text.extend(
            received[start..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ h.mask[(start + i) & 3]),
        );
        let valid = match std::str::from_utf8(&text) {
            Ok(_) => text.len(),
            // An incomplete code point at the end may still be completed.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => return Err(CodecError::InvalidUtf8),
        };
        let own = valid.saturating_sub(carried.len());
        self.partial_checked = u32::try_from(start + own).unwrap_or(u32::MAX);
        Ok(())
    }
}

fn data_message(opcode: u8, data: Vec<u8>) -> Result<Message, CodecError> {
    if opcode == OP_TEXT {
        String::from_utf8(data)
            .map(Message::Text)
            .map_err(|_| CodecError::InvalidUtf8)
    } else {
        Ok(Message::Binary(data))
    }
}

fn close_message(payload: Vec<u8>) -> Result<Message, CodecError> {
    match payload.len() {
        0 => Ok(Message::Close(None)),
        1 => Err(CodecError::Protocol("close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_close_code(code) {
                return Err(CodecError::Protocol("invalid close code"));
            }
            let reason =
                String::from_utf8(payload[2..].to_vec()).map_err(|_| CodecError::InvalidUtf8)?;
            Ok(Message::Close(Some((code, reason))))
        }
    }
}

/// Whether an endpoint may send `code` in a close frame (RFC 6455 §7.4): the codes defined
/// for the wire (1004–1006 and 1015 are reserved for reporting, never sent), the IANA
/// registered 1012–1014, and the 3000–4999 ranges for libraries and applications.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Whether a `Sec-WebSocket-Key` is what §4.2.1 requires: base64 of exactly 16 bytes.
pub fn is_valid_key(sec_websocket_key: &[u8]) -> bool {
    let mut nonce = [0u8; 18];
    base64::engine::general_purpose::STANDARD
        .decode_slice(sec_websocket_key, &mut nonce)
        .is_ok_and(|n| n == 16)
}

/// XORs the payload with the mask, eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(b) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// Writes the header of an unmasked FIN frame with `opcode` and a payload of `len` bytes;
/// returns the header's length.
fn header_into(opcode: u8, len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = 0x80 | opcode;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// The header of a text frame of `len` bytes, for callers that assemble frames themselves.
pub fn text_header(len: usize, out: &mut [u8; 10]) -> usize {
    header_into(OP_TEXT, len, out)
}

fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let mut header = [0u8; 10];
    let n = header_into(opcode, payload.len(), &mut header);
    let mut frame = Vec::with_capacity(n + payload.len());
    frame.extend_from_slice(&header[..n]);
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// A complete text frame, header and payload in one allocation.
pub fn encode_text(payload: &[u8]) -> Bytes {
    encode(OP_TEXT, payload)
}

/// The payload of a frame made by [`encode_text`]; `None` for any other frame.
pub fn text_payload(frame: &[u8]) -> Option<&[u8]> {
    let (&b0, &b1) = (frame.first()?, frame.get(1)?);
    if b0 != 0x80 | OP_TEXT || b1 & 0x80 != 0 {
        return None;
    }
    let header = match b1 {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    frame.get(header..)
}

/// `frame` (one made by [`encode_text`]) compressed as a permessage-deflate message on its
/// own: RSV1 set, the payload DEFLATE with no context ([`crate::deflate::compress_into`]).
/// `None` when `frame` is not a text frame or compressing would not make it smaller.
pub fn compress_text_frame(frame: &[u8]) -> Option<Bytes> {
    thread_local! {
        // Compressed bytes are copied out into a frame of their exact size, so what the
        // subscribers' queues hold is not the worst-case reservation.
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let payload = text_payload(frame)?;
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        scratch.clear();
        if !crate::deflate::compress_into(payload, &mut scratch) {
            return None;
        }
        let mut header = [0u8; 10];
        let n = header_into(OP_TEXT, scratch.len(), &mut header);
        if n + scratch.len() >= frame.len() {
            return None;
        }
        header[0] |= RSV1;
        let mut out = Vec::with_capacity(n + scratch.len());
        out.extend_from_slice(&header[..n]);
        out.extend_from_slice(&scratch);
        // Big inputs leave a big scratch behind; the usual event is a few KiB at most.
        if scratch.capacity() > 256 * 1024 {
            *scratch = Vec::new();
        }
        Some(Bytes::from(out))
    })
}

/// A close frame; the reason is cut at a character boundary to fit the 125-byte limit.
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OP_CLOSE, &payload)
}

/// A close frame with no status code: the answer to a client's Close that carried none.
pub fn encode_empty_close() -> Bytes {
    encode(OP_CLOSE, &[])
}

/// A pong frame answering a ping with `payload`.
pub fn encode_pong(payload: &[u8]) -> Bytes {
    encode(OP_PONG, payload)
}

/// A ping frame. The server pings with the protocol's JSON `pusher:ping` (spec §1.5);
/// this is for clients such as the benchmark harness.
pub fn encode_ping(payload: &[u8]) -> Bytes {
    encode(OP_PING, payload)
}

/// A text message as a permessage-deflate client sends it: compressed with no context,
/// RSV1 set, masked with `mask`. For tests, fuzz targets and the benchmark harness.
pub fn encode_masked_compressed(text: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut compressed = Vec::new();
    crate::deflate::compress_into(text, &mut compressed);
    let mut frame = encode_masked(true, OP_TEXT, &compressed, mask);
    frame[0] |= RSV1;
    frame
}

/// A frame as a client sends it: masked with `mask`, any opcode, FIN or not. The server
/// never sends these; tests, fuzz targets and the benchmark harness speak as clients.
pub fn encode_masked(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut header = [0u8; 10];
    let n = header_into(opcode, payload.len(), &mut header);
    let mut out = Vec::with_capacity(n + 4 + payload.len());
    out.extend_from_slice(&header[..n]);
    if !fin {
        out[0] &= 0x7F;
    }
    out[1] |= 0x80;
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use super::encode_masked as client_frame;

    #[test]
    fn invalid_utf8_fails_before_its_frame_is_complete() {
        // 0xff can never appear in UTF-8: fail with the first bytes, not the last.
        let mut payload = b"ok".to_vec();
        payload.push(0xff);
        payload.extend(vec![b'a'; 1000]);
        let frame = client_frame(true, OP_TEXT, &payload, MASK);
        let mut d = Decoder::new(4096);
        let mut buf = BytesMut::from(&frame[..20]);
        assert_eq!(d.decode(&mut buf), Err(CodecError::InvalidUtf8));

        // A valid code point split across reads, and across fragments, is fine.
        let text = "é€😀".repeat(50);
        let frame = client_frame(true, OP_TEXT, text.as_bytes(), MASK);
        let mut d = Decoder::new(4096);
        let mut buf = BytesMut::new();
        let mut got = None;
        for byte in &frame {
            buf.extend_from_slice(&[*byte]);
            if let Some(m) = d.decode(&mut buf).expect("valid") {
                got = Some(m);
            }
        }
        assert_eq!(got, Some(Message::Text(text)));
        let euro = "€".as_bytes();
        let mut bytes = client_frame(false, OP_TEXT, &euro[..1], MASK);
        let second = client_frame(true, OP_CONTINUATION, &euro[1..], MASK);
        bytes.extend_from_slice(&second[..second.len() - 1]);
        let mut d = Decoder::new(4096);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            d.decode(&mut buf),
            Ok(None),
            "a split code point is not an error"
        );
        buf.extend_from_slice(&second[second.len() - 1..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(Message::Text("€".into()))));

        // The carried half of a code point followed by an invalid byte fails at once.
        let mut bytes = client_frame(false, OP_TEXT, &euro[..1], MASK);
        let bad = client_frame(true, OP_CONTINUATION, &[b'x'; 200], MASK);
        bytes.extend_from_slice(&bad[..10]);
        let mut d = Decoder::new(4096);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(d.decode(&mut buf), Err(CodecError::InvalidUtf8));
    }

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn decode_all(bytes: &[u8], max: usize) -> Vec<Result<Message, CodecError>> {
        decode_all_with(bytes, max, false)
    }

    fn decode_all_with(
        bytes: &[u8],
        max: usize,
        deflate: bool,
    ) -> Vec<Result<Message, CodecError>> {
        let mut d = Decoder::new(max);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match d.decode_with(&mut buf, deflate) {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    #[test]
    fn accept_key_matches_rfc_6455() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn decodes_text_fed_byte_by_byte() {
        let frame = client_frame(true, OP_TEXT, b"Hello", MASK);
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::new();
        for (i, b) in frame.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = d.decode(&mut buf).expect("valid");
            if i + 1 < frame.len() {
                assert_eq!(got, None);
            } else {
                assert_eq!(got, Some(Message::Text("Hello".into())));
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn decodes_fragments_with_an_interleaved_ping() {
        let mut bytes = client_frame(false, OP_TEXT, b"Hel", MASK);
        bytes.extend(client_frame(true, OP_PING, b"p", MASK));
        bytes.extend(client_frame(true, OP_CONTINUATION, b"lo", MASK));
        assert_eq!(
            decode_all(&bytes, 1024),
            [
                Ok(Message::Ping(b"p".to_vec())),
                Ok(Message::Text("Hello".into()))
            ]
        );
    }

    #[test]
    fn decodes_16_and_64_bit_lengths_and_several_frames_per_buffer() {
        let a = "a".repeat(300);
        let b = "b".repeat(70_000);
        let mut bytes = client_frame(true, OP_TEXT, a.as_bytes(), MASK);
        bytes.extend(client_frame(true, OP_TEXT, b.as_bytes(), MASK));
        assert_eq!(
            decode_all(&bytes, 100_000),
            [Ok(Message::Text(a)), Ok(Message::Text(b))]
        );
    }

    #[test]
    fn rejects_bad_frames() {
        let mut unmasked = client_frame(true, OP_TEXT, b"x", MASK);
        unmasked[1] &= 0x7F;
        let mut rsv = client_frame(true, OP_TEXT, b"x", MASK);
        rsv[0] |= 0x40;
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (unmasked, 1002),
            (rsv, 1002),
            (client_frame(true, 0x3, b"x", MASK), 1002),
            (client_frame(true, OP_PING, &[0; 126], MASK), 1002),
            (client_frame(false, OP_PING, b"", MASK), 1002),
            (client_frame(true, OP_CONTINUATION, b"x", MASK), 1002),
            (client_frame(true, OP_TEXT, &[0xff, 0xfe], MASK), 1007),
            (client_frame(true, OP_CLOSE, &[3], MASK), 1002),
        ];
        for (bytes, code) in cases {
            let out = decode_all(&bytes, 1024);
            match out.last() {
                Some(Err(e)) => assert_eq!(e.close_code(), code, "{bytes:?}"),
                other => panic!("expected an error for {bytes:?}, got {other:?}"),
            }
        }
        let mut two_starts = client_frame(false, OP_TEXT, b"a", MASK);
        two_starts.extend(client_frame(true, OP_TEXT, b"b", MASK));
        assert!(matches!(
            decode_all(&two_starts, 1024).last(),
            Some(Err(CodecError::Protocol(_)))
        ));
    }

    #[test]
    fn oversized_length_fails_from_the_header_alone() {
        // A header claiming 2^40 bytes and no payload at all: no allocation, immediate error.
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        header.extend_from_slice(&MASK);
        assert_eq!(
            decode_all(&header, 1024),
            [Err(CodecError::TooBig { limit: 1024 })]
        );
        let mut fragmented = client_frame(false, OP_TEXT, &[b'a'; 600], MASK);
        fragmented.extend(client_frame(true, OP_CONTINUATION, &[b'a'; 600], MASK));
        assert_eq!(
            decode_all(&fragmented, 1024).last(),
            Some(&Err(CodecError::TooBig { limit: 1024 }))
        );
    }

    #[test]
    fn close_frames() {
        assert_eq!(
            decode_all(&client_frame(true, OP_CLOSE, b"", MASK), 1024),
            [Ok(Message::Close(None))]
        );
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        assert_eq!(
            decode_all(&client_frame(true, OP_CLOSE, &payload, MASK), 1024),
            [Ok(Message::Close(Some((1000, "bye".into()))))]
        );
        let close = encode_close(4200, &"é".repeat(100));
        assert!(close.len() <= 127);
        assert_eq!(close[0], 0x88);
    }

    fn close_with(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        client_frame(true, OP_CLOSE, &payload, MASK)
    }

    #[test]
    fn close_codes_outside_the_sendable_ranges_are_protocol_errors() {
        let invalid = [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ];
        let valid = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ];
        for code in invalid {
            assert_eq!(
                decode_all(&close_with(code, b""), 1024),
                [Err(CodecError::Protocol("invalid close code"))],
                "{code}"
            );
        }
        assert_eq!(
            CodecError::Protocol("invalid close code").close_code(),
            1002
        );
        for code in valid {
            assert_eq!(
                decode_all(&close_with(code, b"why"), 1024),
                [Ok(Message::Close(Some((code, "why".into()))))],
                "{code}"
            );
        }
        // Every code, not just the listed ones: the ranges are exact.
        for code in 0..=u16::MAX {
            let ok = decode_all(&close_with(code, b""), 1024)
                .first()
                .is_some_and(Result::is_ok);
            let expected = (1000..=1003).contains(&code)
                || (1007..=1014).contains(&code)
                || (3000..=4999).contains(&code);
            assert_eq!(ok, expected, "{code}");
        }
        // A valid code with a reason that is not UTF-8 is 1007.
        assert_eq!(
            decode_all(&close_with(1000, &[0xce, 0xba, 0xff]), 1024),
            [Err(CodecError::InvalidUtf8)]
        );
    }

    /// Decodes `frames` one at a time, as if each arrived in its own read, and returns what
    /// the decoder said after each.
    fn decode_each(frames: &[Vec<u8>]) -> Vec<Result<Option<Message>, CodecError>> {
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::new();
        frames
            .iter()
            .map(|frame| {
                buf.extend_from_slice(frame);
                d.decode(&mut buf)
            })
            .collect()
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_carries_it() {
        // "κόσμε" then an invalid byte, in a first fragment whose message never ends.
        let text = "κόσμε".as_bytes();
        let mut bad = text.to_vec();
        bad.push(0xff);
        assert_eq!(
            decode_each(&[client_frame(false, OP_TEXT, &bad, MASK)]),
            [Err(CodecError::InvalidUtf8)]
        );
        // Valid first fragment; the second one is bad; the third never comes.
        assert_eq!(
            decode_each(&[
                client_frame(false, OP_TEXT, text, MASK),
                client_frame(false, OP_CONTINUATION, &[0xed, 0xa0, 0x80], MASK),
            ]),
            [Ok(None), Err(CodecError::InvalidUtf8)]
        );
        // A code point cut across three fragments is valid.
        let emoji = "😀".as_bytes();
        assert_eq!(
            decode_each(&[
                client_frame(false, OP_TEXT, &emoji[..1], MASK),
                client_frame(false, OP_CONTINUATION, &emoji[1..3], MASK),
                client_frame(true, OP_CONTINUATION, &emoji[3..], MASK),
            ]),
            [Ok(None), Ok(None), Ok(Some(Message::Text("😀".into())))]
        );
        // A cut code point whose continuation turns out invalid fails when it arrives.
        assert_eq!(
            decode_each(&[
                client_frame(false, OP_TEXT, &emoji[..2], MASK),
                client_frame(false, OP_CONTINUATION, b"a", MASK),
            ]),
            [Ok(None), Err(CodecError::InvalidUtf8)]
        );
        // A message that ends inside a code point is invalid.
        assert_eq!(
            decode_each(&[
                client_frame(false, OP_TEXT, b"ok", MASK),
                client_frame(true, OP_CONTINUATION, &emoji[..3], MASK),
            ]),
            [Ok(None), Err(CodecError::InvalidUtf8)]
        );
        // Binary messages are not text: any bytes go.
        assert_eq!(
            decode_each(&[
                client_frame(false, OP_BINARY, &[0xff], MASK),
                client_frame(true, OP_CONTINUATION, &[0xfe], MASK),
            ]),
            [Ok(None), Ok(Some(Message::Binary(vec![0xff, 0xfe])))]
        );
    }

    #[test]
    fn fragmentation_rules() {
        let cont = |fin, p: &[u8]| client_frame(fin, OP_CONTINUATION, p, MASK);
        // Empty fragments are fine, and so are control frames between fragments.
        assert_eq!(
            decode_each(&[
                client_frame(false, OP_TEXT, b"", MASK),
                client_frame(true, OP_PONG, b"", MASK),
                cont(false, b""),
                cont(true, b"x"),
            ]),
            [
                Ok(None),
                Ok(Some(Message::Pong(vec![]))),
                Ok(None),
                Ok(Some(Message::Text("x".into())))
            ]
        );
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::from(&client_frame(false, OP_TEXT, b"a", MASK)[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(d.fragments_in_progress());
        buf.extend_from_slice(&cont(true, b"b"));
        assert_eq!(d.decode(&mut buf), Ok(Some(Message::Text("ab".into()))));
        assert!(!d.fragments_in_progress());
        // A new binary start inside a text message, and a continuation after the end.
        for frames in [
            vec![
                client_frame(false, OP_TEXT, b"a", MASK),
                client_frame(false, OP_BINARY, b"b", MASK),
            ],
            vec![client_frame(true, OP_TEXT, b"a", MASK), cont(true, b"b")],
        ] {
            let out = decode_each(&frames);
            assert!(
                matches!(out.last(), Some(Err(CodecError::Protocol(_)))),
                "{out:?}"
            );
        }
    }

    fn decode_deflate(bytes: &[u8], max: usize) -> Vec<Result<Message, CodecError>> {
        decode_all_with(bytes, max, true)
    }

    #[test]
    fn compressed_messages_inflate_on_a_deflate_connection_only() {
        let text = r#"{"event":"pusher:subscribe","data":{"channel":"prices"}}"#.repeat(4);
        let frame = encode_masked_compressed(text.as_bytes(), MASK);
        assert_eq!(frame[0], 0xC1, "FIN, RSV1, text");
        assert!(frame.len() < text.len());
        assert_eq!(
            decode_deflate(&frame, 4096),
            [Ok(Message::Text(text.clone()))]
        );
        // Without the extension, RSV1 is a protocol error (1002).
        assert_eq!(
            decode_all(&frame, 4096),
            [Err(CodecError::Protocol(
                "reserved bits set without an extension"
            ))]
        );
        // Plain frames still work on a deflate connection, and RSV2/RSV3 never do.
        let plain = client_frame(true, OP_TEXT, b"plain", MASK);
        assert_eq!(
            decode_deflate(&plain, 4096),
            [Ok(Message::Text("plain".into()))]
        );
        let mut rsv2 = plain.clone();
        rsv2[0] |= 0x20;
        assert_eq!(
            decode_deflate(&rsv2, 4096)[0]
                .as_ref()
                .map_err(CodecError::close_code),
            Err(1002)
        );
    }

    #[test]
    fn rsv1_only_on_the_first_frame_of_a_data_message() {
        let mut ping = client_frame(true, OP_PING, b"p", MASK);
        ping[0] |= RSV1;
        let mut bytes = client_frame(false, OP_TEXT, b"a", MASK);
        let mut cont = client_frame(true, OP_CONTINUATION, b"b", MASK);
        cont[0] |= RSV1;
        bytes.extend(cont);
        for bad in [ping, bytes] {
            let out = decode_deflate(&bad, 1024);
            assert!(
                matches!(out.last(), Some(Err(CodecError::Protocol(_)))),
                "{out:?}"
            );
        }
    }

    #[test]
    fn a_fragmented_compressed_message_inflates_at_its_end() {
        let text = "κόσμε, ".repeat(100);
        let mut compressed = Vec::new();
        crate::deflate::compress_into(text.as_bytes(), &mut compressed);
        let (a, b) = compressed.split_at(compressed.len() / 2);
        let mut bytes = client_frame(false, OP_TEXT, a, MASK);
        bytes[0] |= RSV1;
        bytes.extend(client_frame(true, OP_PING, b"", MASK));
        bytes.extend(client_frame(true, OP_CONTINUATION, b, MASK));
        assert_eq!(
            decode_deflate(&bytes, 4096),
            [Ok(Message::Ping(vec![])), Ok(Message::Text(text))]
        );
    }

    #[test]
    fn bombs_are_too_big_corrupt_data_is_1007() {
        // 1 MiB of spaces compresses to about a kilobyte: under the wire limit, far over
        // the message limit once inflated.
        let bomb = encode_masked_compressed(&vec![b' '; 1 << 20], MASK);
        assert!(bomb.len() < 4096, "{}", bomb.len());
        let out = decode_deflate(&bomb, 65536);
        assert_eq!(out, [Err(CodecError::TooBig { limit: 65536 })]);
        assert_eq!(CodecError::TooBig { limit: 1 }.close_code(), 1009);

        let mut corrupt = client_frame(true, OP_TEXT, &[0xff; 16], MASK);
        corrupt[0] |= RSV1;
        let out = decode_deflate(&corrupt, 4096);
        assert_eq!(out, [Err(CodecError::BadCompression)]);
        assert_eq!(CodecError::BadCompression.close_code(), 1007);

        // Text that inflates to bytes that are not UTF-8 is 1007 as well.
        let not_text = encode_masked_compressed(&[0xff, 0xfe, 0xfd], MASK);
        assert_eq!(
            decode_deflate(&not_text, 4096),
            [Err(CodecError::InvalidUtf8)]
        );
    }

    #[test]
    fn server_frames_compress_to_rsv1_frames_that_inflate_back() {
        let json =
            r#"{"event":"tick","channel":"prices","data":"{\"bid\":1.25,\"ask\":1.5}"}"#.repeat(10);
        let plain = encode_text(json.as_bytes());
        assert_eq!(text_payload(&plain), Some(json.as_bytes()));
        let packed = compress_text_frame(&plain).expect("smaller");
        assert_eq!(packed[0], 0xC1);
        assert!(packed.len() < plain.len() / 2);
        let body = text_payload(&{
            let mut unset = packed.to_vec();
            unset[0] &= !RSV1;
            unset
        })
        .map(<[u8]>::to_vec)
        .expect("a text frame once RSV1 is cleared");
        let inflated = crate::deflate::inflate(&body, json.len()).expect("inflates");
        assert_eq!(inflated, json.as_bytes());
        // Too small to gain anything, and frames that are not text, stay as they are.
        assert_eq!(compress_text_frame(&encode_text(b"{}")), None);
        assert_eq!(compress_text_frame(&encode_pong(b"p")), None);
        assert_eq!(compress_text_frame(&packed), None);
        for len in [125, 126, 70_000] {
            let big = encode_text(&vec![b'a'; len]);
            assert_eq!(text_payload(&big).map(<[u8]>::len), Some(len));
        }
    }

    #[test]
    fn handshake_keys_must_be_16_bytes_of_base64() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in [
            &b""[..],
            b"x",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZQ==AAAA",
            b"dGhlIHNhbXBsZSBub25j",
            b"dGhlIHNhbXBsZSBub25jZSE=",
            b"!!!!!!!!!!!!!!!!!!!!!!==",
        ] {
            assert!(!is_valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn encoded_sizes_at_length_boundaries() {
        for (len, header) in [(125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let frame = encode_text(&vec![b'x'; len]);
            assert_eq!(frame.len(), len + header, "len {len}");
            let mut h = [0u8; 10];
            assert_eq!(text_header(len, &mut h), header);
            assert_eq!(&frame[..header], &h[..header]);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_in_any_chunking_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            chunk in 1usize..40,
        ) {
            let mut d = Decoder::new(256);
            let mut buf = BytesMut::new();
            for piece in bytes.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Ok(Some(_)) = d.decode(&mut buf) {}
            }
        }

        #[test]
        fn masked_text_round_trips(text in ".{0,400}", mask in any::<[u8; 4]>(), chunk in 1usize..64) {
            let frame = client_frame(true, OP_TEXT, text.as_bytes(), mask);
            let mut d = Decoder::new(4096);
            let mut buf = BytesMut::new();
            let mut got = None;
            for piece in frame.chunks(chunk) {
                buf.extend_from_slice(piece);
                if let Some(m) = d.decode(&mut buf).expect("valid frame") {
                    got = Some(m);
                }
            }
            prop_assert_eq!(got, Some(Message::Text(text)));
        }
    }
}
