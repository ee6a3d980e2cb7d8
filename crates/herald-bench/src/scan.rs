//! Reading server frames cheaply: a frame's bounds, its payload (inflated if compressed),
//! and numbers found in it without parsing its JSON.

/// The most a compressed frame may inflate to; far above any benchmark event.
const MAX_INFLATED: usize = 16 * 1024 * 1024;
/// Takes the first complete server frame off `buf` and returns its payload; one with RSV1 (a
/// compressed message, on a connection that negotiated permessage-deflate) is inflated.
pub fn take_frame(buf: &mut Vec<u8>, deflate: bool) -> std::io::Result<Option<Vec<u8>>> {
    let Some((start, len)) = frame_bounds(buf) else {
        return Ok(None);
    };
    let payload = &buf[start..start + len];
    let payload = match buf[0] & 0x40 {
        0 => payload.to_vec(),
        _ if deflate => herald_protocol::deflate::inflate(payload, MAX_INFLATED)
            .map_err(|e| std::io::Error::other(format!("compressed frame: {e}")))?,
        _ => {
            return Err(std::io::Error::other(
                "RSV1 set on a connection without permessage-deflate",
            ))
        }
    };
    buf.drain(..start + len);
    Ok(Some(payload))
}

/// Where a complete server frame's payload starts and how long it is, if `buf` holds one.
pub fn frame_bounds(buf: &[u8]) -> Option<(usize, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (start, len) = match buf[1] & 0x7f {
        126 => (4, u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(buf.get(2..10)?);
            (10, u64::from_be_bytes(b) as usize)
        }
        n => (2, n as usize),
    };
    (buf.len() >= start + len).then_some((start, len))
}

/// The first position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The decimal number at the start of `bytes`.
pub(crate) fn leading_number(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&bytes[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame as Herald sends it, compressed or not.
    fn server_frame(text: &str, compressed: bool) -> Vec<u8> {
        let plain = herald_protocol::websocket::encode_text(text.as_bytes());
        if compressed {
            herald_protocol::websocket::compress_text_frame(&plain)
                .map(|f| f.to_vec())
                .unwrap_or_else(|| panic!("{text} does not compress"))
        } else {
            plain.to_vec()
        }
    }

    #[test]
    fn compressed_frames_are_inflated_before_they_are_scanned() {
        let event = format!(
            r#"{{"event":"bench","channel":"bench-0","data":"{{\"t\":42,\"p\":\"{}\"}}"}}"#,
            "x".repeat(600)
        );
        let mut buf = server_frame(&event, true);
        assert_eq!(buf[0], 0xC1, "FIN, RSV1, text");
        assert!(buf.len() < event.len() / 4);
        // Then a small frame that stays uncompressed, and half of the next compressed one.
        buf.extend(server_frame(
            r#"{"event":"pusher:pong","data":"{}"}"#,
            false,
        ));
        let next = server_frame(&event, true);
        buf.extend(&next[..next.len() / 2]);

        assert_eq!(
            take_frame(&mut buf, true).unwrap().unwrap(),
            event.as_bytes()
        );
        assert_eq!(
            take_frame(&mut buf, true).unwrap().unwrap(),
            br#"{"event":"pusher:pong","data":"{}"}"#
        );
        assert_eq!(take_frame(&mut buf, true).unwrap(), None);
        buf.extend(&next[next.len() / 2..]);
        assert_eq!(
            take_frame(&mut buf, true).unwrap().unwrap(),
            event.as_bytes()
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn rsv1_without_the_extension_or_corrupt_data_is_an_error() {
        let event = format!(r#"{{"data":"{}"}}"#, "y".repeat(400));
        let mut buf = server_frame(&event, true);
        assert!(take_frame(&mut buf.clone(), false).is_err());
        let last = buf.len() - 1;
        buf[2..last].fill(0xff);
        assert!(take_frame(&mut buf, true).is_err());
    }
}
