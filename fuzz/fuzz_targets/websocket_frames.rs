//! RFC 6455 client frames through the server's decoder, fed in arbitrary pieces.
//!
//! Input layout: bytes 0-1 = `max_message` (little endian, low 15 bits; the top bit set means
//! the connection negotiated permessage-deflate, so RSV1 messages are inflated), bytes 2-5 =
//! chunk sizes (each `byte + 1`, used in turn), the rest = the byte stream a client sends.
//!
//! Besides "never panics" it checks what the connection loop relies on: the decoder only
//! ever consumes whole frames (a partial frame stays in the buffer for the next read),
//! `Ok(None)` means no complete frame is left, messages respect the size limits (inflated
//! ones too: a bomb must stop at the limit), and the result does not depend on how TCP
//! happened to split the stream.
#![no_main]

use bytes::BytesMut;
use herald_protocol::websocket::{Decoder, Message};
use libfuzzer_sys::fuzz_target;

/// The length (header + payload) of the frame at the front of `buf`, read independently of
/// the decoder, or `None` if the header itself is incomplete.
fn frame_len(buf: &[u8]) -> Option<u64> {
    if buf.len() < 2 {
        return None;
    }
    let masked = buf[1] & 0x80 != 0;
    let mask = if masked { 4 } else { 0 };
    match buf[1] & 0x7F {
        126 => {
            let b = buf.get(2..4)?;
            Some(4 + mask + u64::from(u16::from_be_bytes([b[0], b[1]])))
        }
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            Some((10 + mask).saturating_add(u64::from_be_bytes(b)))
        }
        n => Some(2 + mask + u64::from(n)),
    }
}

/// Frame boundaries (offsets into `stream`) as far as complete frames go.
fn boundaries(stream: &[u8]) -> Vec<usize> {
    let mut out = vec![0];
    let mut pos = 0usize;
    while let Some(len) = frame_len(&stream[pos..]) {
        match usize::try_from(len) {
            Ok(len) if len <= stream.len() - pos => {
                pos += len;
                out.push(pos);
            }
            _ => break,
        }
    }
    out
}

/// What one way of feeding produced: the messages, whether it ended in an error, and how
/// many bytes were left unconsumed at the end (meaningful only without an error).
struct Run {
    messages: Vec<Message>,
    failed: bool,
    left: usize,
}

fn check_message(m: &Message, max_message: usize) {
    match m {
        // A String is valid UTF-8 by construction; re-checking guards against any unchecked
        // conversion creeping into the decoder.
        Message::Text(s) => {
            assert!(std::str::from_utf8(s.as_bytes()).is_ok());
            assert!(s.len() <= max_message, "text over the limit");
        }
        Message::Binary(b) => assert!(b.len() <= max_message, "binary over the limit"),
        Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125, "control payload > 125"),
        Message::Close(Some((_, reason))) => assert!(reason.len() <= 123, "close reason > 123"),
        Message::Close(None) => {}
    }
}

/// Feeds `stream` in pieces of the given sizes (cycled), decoding after each piece until
/// `Ok(None)` or the first error, which ends the connection.
fn run(stream: &[u8], chunks: &[usize], max_message: usize, deflate: bool, bounds: &[usize]) -> Run {
    let mut decoder = Decoder::new(max_message);
    let mut buf = BytesMut::new();
    let mut fed = 0usize;
    let mut messages = Vec::new();
    for &size in chunks.iter().cycle() {
        let end = (fed + size).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            match decoder.decode_with(&mut buf, deflate) {
                Ok(Some(m)) => {
                    check_message(&m, max_message);
                    messages.push(m);
                }
                Ok(None) => break,
                Err(_) => {
                    return Run {
                        messages,
                        failed: true,
                        left: 0,
                    }
                }
            }
            // Consumed bytes must end exactly on a frame boundary.
            let consumed = fed - buf.len();
            assert!(
                bounds.binary_search(&consumed).is_ok(),
                "consumed {consumed} bytes: not a whole number of frames"
            );
        }
        let consumed = fed - buf.len();
        assert!(
            bounds.binary_search(&consumed).is_ok(),
            "consumed {consumed} bytes: not a whole number of frames"
        );
        // Ok(None) with a complete frame still buffered would stall the connection.
        if let Some(len) = frame_len(&buf) {
            assert!(len > buf.len() as u64, "Ok(None) with a whole frame buffered");
        }
        if fed == stream.len() {
            break;
        }
    }
    Run {
        messages,
        failed: false,
        left: buf.len(),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let raw = u16::from_le_bytes([data[0], data[1]]);
    let deflate = raw & 0x8000 != 0;
    let max_message = usize::from(raw & 0x7fff);
    let chunks: Vec<usize> = data[2..6].iter().map(|&b| usize::from(b) + 1).collect();
    let stream = &data[6..];
    let bounds = boundaries(stream);

    let whole = run(stream, &[stream.len().max(1)], max_message, deflate, &bounds);
    let pieces = run(stream, &chunks, max_message, deflate, &bounds);

    // The same bytes must mean the same messages however they were split. When the stream
    // is bad, a decoder may notice sooner in one feeding than the other (e.g. incremental
    // UTF-8 checks on a partial frame), so on error only the messages before it and the
    // fact of failing are compared, not the error value.
    assert_eq!(whole.messages, pieces.messages, "chunking changed the messages");
    assert_eq!(whole.failed, pieces.failed, "chunking changed whether it failed");
    if !whole.failed {
        assert_eq!(whole.left, pieces.left, "chunking changed what was consumed");
    }
});
