//! permessage-deflate (RFC 7692) for the server, as pure code: the negotiation, a message
//! compressed on its own, and a client's message inflated within a bound.
//!
//! The server always answers with `server_no_context_takeover` and
//! `client_no_context_takeover`. Every message is then compressed and inflated with no
//! memory of the ones before it, so:
//! - one compressed frame of an event serves every subscriber that negotiated the extension,
//!   as the plain frame does;
//! - a connection keeps no compressor, inflater or window between messages. The one
//!   compressor and one inflater are per thread, reset for each message.
//!
//! RFC 7692 §7.1.1.1 lets a server add `server_no_context_takeover` to any offer it accepts.
//! §7.1.1.2 lets it add `client_no_context_takeover` as well, which Chromium and Node's `ws`
//! accept (both are in the tests). A client that compresses with context anyway sends data that
//! a fresh inflater cannot read, and gets 1007.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// The tail RFC 7692 §7.2.1 strips from every compressed message (an empty stored block from a
/// sync flush); the receiver puts it back before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The compression level of outgoing messages: measured on 1 KB JSON events, it gives
/// within a few percent of level 6's size for a fraction of its time (BENCHMARKS.md).
const LEVEL: u32 = 3;

/// The answer to accept with, for a `Sec-WebSocket-Extensions` response header.
const AGREED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
/// The same, for an offer that named `server_max_window_bits=15`: an offer with that
/// parameter is accepted by repeating it (§7.1.2.1).
const AGREED_WINDOW: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15";

/// Picks the first `permessage-deflate` offer the server can honour from the client's
/// `Sec-WebSocket-Extensions` header values, and returns the response header's value; `None`
/// leaves the extension out (§5.1 of RFC 7692: an offer with parameters the server does not
/// know or cannot honour is declined, not an error).
///
/// Declined: an unknown or repeated parameter, a value where none belongs, a window size that
/// is not 8–15, and `server_max_window_bits` below 15, since the shared compressed frames are
/// made with the full 32 KiB window.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a [u8]>) -> Option<&'static str> {
    for value in header_values {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for offer in split_outside_quotes(value, ',') {
            if let Some(answer) = accept(offer) {
                return Some(answer);
            }
        }
    }
    None
}

/// The response for one offer (`name; param; param=value`), if the server takes it.
fn accept(offer: &str) -> Option<&'static str> {
    let mut parts = split_outside_quotes(offer, ';');
    let name = parts.next()?.trim();
    if !name.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen = [false; 4];
    let mut window_named = false;
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        let index = match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
        match (index, value) {
            (0 | 1, None) => {}
            (0 | 1, Some(_)) => return None,
            (2, Some(bits)) => {
                if window_bits(bits)? != 15 {
                    return None;
                }
                window_named = true;
            }
            (2, None) => return None,
            // The client's own window: the inflater's 15 bits read any smaller window.
            (_, Some(bits)) => {
                window_bits(bits)?;
            }
            (_, None) => {}
        }
    }
    Some(if window_named { AGREED_WINDOW } else { AGREED })
}

/// A window size parameter: a decimal 8–15 with no leading zero (§7.1.2.1).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// A parameter's value as a token or a quoted string (§7.1: either is allowed); `None` for a
/// quoted string left open or with an escape.
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').filter(|v| !v.contains(['"', '\\'])),
        None => Some(value),
    }
}

/// Splits `text` at `sep` where it is not inside a quoted string.
fn split_outside_quotes(text: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, c) in text.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                c if c == sep && !quoted => {
                    rest = Some(&text[i + 1..]);
                    return Some(&text[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(text)
    })
}

thread_local! {
    static COMPRESSOR: RefCell<Compress> =
        RefCell::new(Compress::new(Compression::new(LEVEL), false));
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Compresses `payload` as one message with no context (RFC 7692 §7.2.1), appending the
/// result to `out`: DEFLATE blocks ending in a sync flush, with the flush's 4-byte tail
/// removed. `false` if the compressor failed: `out` is left as it was, and the message must
/// go out uncompressed rather than as a stream no client could inflate.
pub fn compress_into(payload: &[u8], out: &mut Vec<u8>) -> bool {
    COMPRESSOR.with(|cell| {
        let mut compressor = cell.borrow_mut();
        compressor.reset();
        let start = out.len();
        // Incompressible input grows by about 5 bytes per 16 KiB block, plus the flush.
        out.reserve(payload.len() + payload.len() / 1024 + 64);
        let mut taken = 0;
        loop {
            let before = compressor.total_in();
            if compressor
                .compress_vec(&payload[taken..], out, FlushCompress::Sync)
                .is_err()
            {
                out.truncate(start);
                return false;
            }
            taken += (compressor.total_in() - before) as usize;
            if taken == payload.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.len() >= start + 4 && out[out.len() - 4..] == TAIL {
            out.truncate(out.len() - 4);
        }
        true
    })
}

/// Why a client's compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates to more than the limit (a decompression bomb, or just too big).
    #[error("message inflates to more than {limit} bytes")]
    TooBig {
        /// The limit, in bytes.
        limit: usize,
    },
    /// It is not a DEFLATE stream, or needs a context the server does not keep.
    #[error("compressed message is corrupt")]
    Corrupt,
}

/// Inflates one client message (RFC 7692 §7.2.2) to at most `limit` bytes. The work stops as
/// soon as the output passes the limit, so a bomb costs the limit, not its inflated size.
pub fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    INFLATER.with(|cell| {
        let mut inflater = cell.borrow_mut();
        inflater.reset(false);
        let ceiling = limit.saturating_add(1);
        let mut out = Vec::with_capacity(data.len().saturating_mul(4).max(64).min(ceiling));
        for input in [data, &TAIL[..]] {
            let mut taken = 0;
            loop {
                if out.len() == out.capacity() {
                    if out.len() > limit {
                        return Err(InflateError::TooBig { limit });
                    }
                    let room = out.capacity().min(ceiling - out.len());
                    out.reserve_exact(room);
                }
                let (before_in, before_out) = (inflater.total_in(), out.len());
                let status = inflater
                    .decompress_vec(&input[taken..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                taken += (inflater.total_in() - before_in) as usize;
                if out.len() > limit {
                    return Err(InflateError::TooBig { limit });
                }
                match status {
                    // A final block: what follows it (the tail put back) is not read.
                    Status::StreamEnd => return Ok(out),
                    _ if taken == input.len() && out.len() < out.capacity() => break,
                    // Room and input, yet no progress: nothing more will come out.
                    _ if inflater.total_in() == before_in
                        && out.len() == before_out
                        && out.len() < out.capacity() =>
                    {
                        return Err(InflateError::Corrupt);
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offer(values: &[&str]) -> Option<&'static str> {
        negotiate(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn what_browsers_and_node_offer_is_accepted() {
        // Chromium, Firefox and Node's ws all send this.
        assert_eq!(
            offer(&["permessage-deflate; client_max_window_bits"]),
            Some(AGREED)
        );
        assert_eq!(offer(&["permessage-deflate"]), Some(AGREED));
        assert_eq!(
            offer(&["Permessage-Deflate; Server_No_Context_Takeover; client_no_context_takeover"]),
            Some(AGREED)
        );
        assert_eq!(
            offer(&["permessage-deflate; server_max_window_bits=15; client_max_window_bits=10"]),
            Some(AGREED_WINDOW)
        );
        assert_eq!(
            offer(&["permessage-deflate; client_max_window_bits=\"12\""]),
            Some(AGREED)
        );
    }

    #[test]
    fn offers_that_cannot_be_honoured_are_declined_and_the_next_is_taken() {
        for declined in [
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=\"12",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(offer(&[declined]), None, "{declined}");
        }
        assert_eq!(
            offer(&["permessage-deflate; server_max_window_bits=10, permessage-deflate",]),
            Some(AGREED)
        );
        // Several header lines, and a quoted comma inside another extension's parameter.
        assert_eq!(
            offer(&[
                "foo; bar=\"a,b\"",
                "permessage-deflate; client_max_window_bits"
            ]),
            Some(AGREED)
        );
        assert_eq!(offer(&["foo; bar=\"a, permessage-deflate\""]), None);
    }

    fn compress(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(compress_into(payload, &mut out));
        out
    }

    #[test]
    fn a_compressed_message_inflates_back_and_needs_no_context() {
        let json = br#"{"event":"update","channel":"prices","data":"{\"symbol\":\"ACME\",\"bid\":101.25,\"ask\":101.5}"}"#
            .repeat(8);
        let first = compress(&json);
        assert!(first.len() < json.len() / 3, "{} bytes", first.len());
        assert_ne!(&first[first.len() - 4..], TAIL, "the tail is removed");
        // No context: the same input gives the same bytes however many came before.
        assert_eq!(compress(&json), first);
        assert_eq!(inflate(&first, json.len()).as_deref(), Ok(&json[..]));
        assert_eq!(inflate(&compress(b""), 10).as_deref(), Ok(&b""[..]));
    }

    #[test]
    fn a_message_compressed_by_another_implementation_inflates() {
        // "Hello" from RFC 7692 §7.2.3.1, and the same with BFINAL set (§7.2.3.4's variant).
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&hello, 100).as_deref(), Ok(&b"Hello"[..]));
        let final_block = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflate(&final_block, 100).as_deref(), Ok(&b"Hello"[..]));
        // Stored (uncompressed) block: §7.2.3.3.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate(&stored, 100).as_deref(), Ok(&b"Hello"[..]));
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_corrupt() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        let bomb = compress(&zeros);
        assert!(bomb.len() < 20 * 1024, "{} bytes", bomb.len());
        assert_eq!(
            inflate(&bomb, 65536),
            Err(InflateError::TooBig { limit: 65536 })
        );
        // Exactly at the limit is fine.
        assert_eq!(
            inflate(&compress(&zeros[..65536]), 65536).map(|v| v.len()),
            Ok(65536)
        );
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff, 0xff], 1024),
            Err(InflateError::Corrupt)
        );
        // A message compressed with context: its back-references reach into the message
        // before it, which a fresh inflater does not have.
        let text = b"the same words again and again and again, the same words".to_vec();
        let mut context = Compress::new(Compression::new(6), false);
        let (mut first, mut second) = (Vec::with_capacity(256), Vec::with_capacity(256));
        context
            .compress_vec(&text, &mut first, FlushCompress::Sync)
            .expect("first");
        context
            .compress_vec(&text, &mut second, FlushCompress::Sync)
            .expect("second");
        second.truncate(second.len() - 4);
        assert_eq!(inflate(&second, 1024), Err(InflateError::Corrupt));
    }

    proptest! {
        #[test]
        fn anything_round_trips(data in prop::collection::vec(any::<u8>(), 0..5000)) {
            let packed = compress(&data);
            prop_assert_eq!(inflate(&packed, data.len()), Ok(data.clone()));
            if !data.is_empty() {
                prop_assert_eq!(
                    inflate(&packed, data.len() - 1),
                    Err(InflateError::TooBig { limit: data.len() - 1 })
                );
            }
        }

        #[test]
        fn arbitrary_input_never_panics(data in prop::collection::vec(any::<u8>(), 0..2000)) {
            let _ = inflate(&data, 4096);
        }
    }
}
