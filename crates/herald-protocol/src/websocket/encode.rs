//! Frames out: the server's unmasked frames, compressed once for every subscriber, and a
//! client's masked frames for tests, fuzz targets and the benchmark harness.

use bytes::Bytes;

use super::{OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RSV1};

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
