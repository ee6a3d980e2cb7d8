//! Client frames in: masked, possibly fragmented or compressed, checked as they arrive.

use bytes::{Buf, BytesMut};

use super::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, RSV1};

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
