//! The connection task's socket side: reading without a parked buffer, decoding within the
//! frame budget, and writing the outbox's frames (vectored, in bursts).

use super::super::budget::{Budget, Rates};
use super::super::session::Session;
use super::super::socket::Socket;
use super::{discard_until_close, BURST_BYTES};
use crate::clock;
use crate::outbox::{CloseRequest, Outbox, FRAME_OVERHEAD};
use crate::shared::Shared;
use crate::wire::text_frame;
use bytes::{Buf, Bytes, BytesMut};
use herald_protocol::close::CloseReason;
use herald_protocol::frame;
use herald_protocol::websocket::{self as codec, CodecError, Decoder, Message};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

/// Frames written with one system call at most.
const MAX_IOVECS: usize = 64;
/// Bytes read per wake-up at most: enough for many frames per system call, small enough
/// that a burst ending mid-frame does not leave a big buffer behind for long.
pub(super) const READ_BURST: usize = 64 * 1024;
/// A read buffer's allocation is kept while it is at most this, or twice what it holds.
pub(super) const KEEP_READ_BUFFER: usize = 4096;

// `Io::turn` counts up to the burst in 16 bits.
const _: () = assert!(BURST_BYTES < u16::MAX as usize);

/// What the connection task waits for besides its outbox and writability.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Listen {
    /// Nothing more: paused, or the client is done sending.
    Outbox,
    /// The client's next bytes.
    Socket,
    /// The frame budget: what was read waits to be decoded.
    Budget,
}

/// What the connection task was woken by.
pub(super) enum Wake {
    Outbox,
    Writable,
    Readable,
    /// Throttled and not waiting: decode what is held, or start waiting for the budget.
    Decode,
    /// The socket reported an error while waiting for readiness.
    Gone,
}

/// What decoding the client's bytes did to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decoded {
    Open,
    /// The connection's changes waiting in the backend reached their bound: decoding
    /// stopped, and what is left of the bytes read waits with the socket.
    Paused,
    /// The connection's frame budget or its turn is spent: decoding stopped as for
    /// `Paused`, until the budget allows or the task has yielded.
    Throttled,
    /// A bad frame: the error's close frame is queued.
    Closing,
    /// The client's Close: our answer is queued, and the client sends nothing more.
    PeerClosed,
}

impl Decoded {
    /// Applies the outcome to the task's flags; returns whether the task must pause.
    pub(super) fn apply(
        self,
        closing: &mut bool,
        peer_done: &mut bool,
        throttled: &mut bool,
    ) -> bool {
        *throttled = self == Decoded::Throttled;
        match self {
            Decoded::Open | Decoded::Throttled => {}
            Decoded::Paused => return true,
            Decoded::Closing => *closing = true,
            Decoded::PeerClosed => {
                *closing = true;
                *peer_done = true;
            }
        }
        false
    }
}

pub(super) struct Io<S> {
    pub(super) stream: S,
    pub(super) read_buf: BytesMut,
    pub(super) decoder: Decoder,
    /// Frames taken from the outbox and not yet fully written.
    pub(super) pending: VecDeque<Bytes>,
    /// The first pending frame is partly written, so it must be finished before any other.
    pub(super) front_partial: bool,
    /// What the bytes and frames written since the outbox was last told cost against its
    /// bound, so the bound covers unwritten frames. 32 bits, with the two fields below, keep
    /// `Io` as small as it was before the metrics: between two reports the task writes at
    /// most what the outbox holds, and `outbox_max_bytes` is at most 1 GiB.
    pub(super) written: u32,
    /// Frames written in full since the metrics were last told.
    pub(super) frames_written: u32,
    /// When the oldest event not yet written was published (0: none pending), for the
    /// publish-to-write histogram.
    pub(super) stamp: u32,
    /// What the client may still make the server decode and handle this second.
    pub(super) budget: Budget,
    /// The frame budget (or the turn) ran out: what was read and not decoded yet, if
    /// anything, waits for it, and nothing more is read. These two flags and the budget
    /// fit where `Io` had padding and a pointer: the connection future does not grow.
    pub(super) throttled: bool,
    /// Throttled, and on the node's refill list: the sweeper wakes it through the outbox.
    pub(super) waiting: bool,
    /// What the parked task waits for besides its outbox and writability; here rather
    /// than a local so that the parked poll reads it through the one reference it holds
    /// to `Io`.
    pub(super) listen: Listen,
    /// Bytes of messages decoded since this task last parked or yielded (saturating:
    /// only whether it reached [`BURST_BYTES`] matters).
    pub(super) turn: u16,
}

impl<S: Socket> Io<S> {
    /// What wakes the parked connection task: its outbox, writability while frames wait,
    /// the budget's turn, or the client's bytes ([`Io::listen`]). Parking ends the turn.
    pub(super) fn poll_wake(&mut self, cx: &mut Context<'_>, outbox: &Outbox) -> Poll<Wake> {
        if outbox.poll_ready(cx).is_ready() {
            return Poll::Ready(Wake::Outbox);
        }
        if (!self.pending.is_empty() || self.stream.has_unsent())
            && self.stream.poll_write_ready(cx).is_ready()
        {
            return Poll::Ready(Wake::Writable);
        }
        if self.listen == Listen::Budget {
            return Poll::Ready(Wake::Decode);
        }
        if self.listen == Listen::Socket {
            if let Poll::Ready(ready) = self.stream.poll_read_ready(cx) {
                return Poll::Ready(if ready.is_ok() {
                    Wake::Readable
                } else {
                    Wake::Gone
                });
            }
        }
        self.turn = 0;
        Poll::Pending
    }

    /// Reads what the socket has without blocking. The stack chunk keeps an idle
    /// connection free of heap buffers; only unconsumed bytes are copied to `read_buf`.
    pub(super) fn read(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let mut total = 0;
        loop {
            match self.stream.try_read(&mut chunk) {
                Ok(0) if total == 0 => return Ok(0),
                Ok(0) => return Ok(total),
                Ok(n) => {
                    self.read_buf.extend_from_slice(&chunk[..n]);
                    total += n;
                    if n < chunk.len() || total >= READ_BURST {
                        return Ok(total);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && total > 0 => return Ok(total),
                Err(e) => return Err(e),
            }
        }
    }

    /// Decodes and handles the complete messages in `read_buf` while the frame budget and
    /// the turn ([`Io::turn`]) last, and starts or clears the deadline of an unfinished one.
    pub(super) fn decode_all(&mut self, shared: &Shared, session: &mut Session) -> Decoded {
        crate::metrics::handling(session.socket_id(), || self.decode_all_now(shared, session))
    }

    /// [`Io::decode_all`]'s work, inside the socket's handling scope.
    pub(super) fn decode_all_now(&mut self, shared: &Shared, session: &mut Session) -> Decoded {
        let before = self.read_buf.len();
        let was_fragmented = self.decoder.fragments_in_progress();
        let mut message_ended = false;
        let mut messages = 0u64;
        let deflate = session.outbox().deflate();
        let (now, rates) = (clock::now(), rates(shared));
        let decoded = loop {
            if self.turn as usize >= BURST_BYTES || !self.budget.allows(now, rates) {
                break Decoded::Throttled;
            }
            let unread = self.read_buf.len();
            let next = self.decoder.decode_with(&mut self.read_buf, deflate);
            if let Ok(Some(message)) = &next {
                messages += 1;
                // What the message cost to read and inflate: its size on the wire or
                // inflated, whichever is more.
                let cost = (unread - self.read_buf.len()).max(payload_len(message));
                self.budget.spend(cost, rates);
                self.turn = self
                    .turn
                    .saturating_add(u16::try_from(cost).unwrap_or(u16::MAX));
            }
            match next {
                Ok(None) => break Decoded::Open,
                Ok(Some(Message::Text(text))) => {
                    message_ended = true;
                    session.handle_text(shared, &text);
                    if session.outbox().ops_full() {
                        break Decoded::Paused;
                    }
                }
                Ok(Some(Message::Binary(_))) => {
                    message_ended = true;
                    session.send_error(
                        None,
                        "Binary frames are not supported: send JSON text frames",
                    );
                }
                Ok(Some(Message::Ping(payload))) => {
                    session.outbox().push(codec::encode_pong(&payload));
                }
                Ok(Some(Message::Pong(_))) => {}
                Ok(Some(Message::Close(close))) => {
                    // Answers already queued (a pong, a reply) go first, nothing after.
                    let code = close.map(|(code, _)| code);
                    session
                        .outbox()
                        .seal(code.unwrap_or(1000), &mut self.pending);
                    // The client's code is echoed (§5.5.1); a Close without one gets none.
                    self.pending.push_back(match code {
                        Some(code) => codec::encode_close(code, ""),
                        None => codec::encode_empty_close(),
                    });
                    break Decoded::PeerClosed;
                }
                Err(error) => {
                    session.outbox().seal(error.close_code(), &mut self.pending);
                    if let CodecError::TooBig { limit } = error {
                        let message = format!("Message too large: the limit is {limit} bytes");
                        self.pending
                            .push_back(text_frame(&frame::error(None, &message)));
                    }
                    tracing::debug!(socket_id = %session.socket_id(), %error, "Bad WebSocket frame");
                    self.pending
                        .push_back(codec::encode_close(error.close_code(), ""));
                    break Decoded::Closing;
                }
            }
        };
        session.metrics().messages_received.add(messages);
        let deadline = &session.outbox().timers.partial_deadline;
        if matches!(decoded, Decoded::Paused | Decoded::Throttled) {
            // The rest waits for the server, not for the client: no deadline for it.
            deadline.store(0, Ordering::Relaxed);
        } else if decoded != Decoded::Open {
            // What follows a Close or a bad frame is not read as frames.
            self.read_buf.clear();
            deadline.store(0, Ordering::Relaxed);
        } else if self.decoder.fragments_in_progress() || !self.read_buf.is_empty() {
            // The unfinished part is new if a fragmented message began, or a frame was
            // consumed before a partial one; otherwise its deadline stands.
            let new = if self.decoder.fragments_in_progress() {
                !was_fragmented || message_ended
            } else {
                self.read_buf.len() < before
            };
            if new || deadline.load(Ordering::Relaxed) == 0 {
                let timeout = clock::ticks(shared.config.server.partial_message_timeout);
                deadline.store(clock::now() + timeout, Ordering::Relaxed);
            }
        } else {
            deadline.store(0, Ordering::Relaxed);
        }
        let consumed = before - self.read_buf.len();
        right_size(&mut self.read_buf, consumed);
        decoded
    }

    /// While closing: drops what the client sends until its Close; returns whether it came.
    pub(super) fn discard_until_close(&mut self) -> bool {
        let before = self.read_buf.len();
        let closed = discard_until_close(&mut self.decoder, &mut self.read_buf);
        let consumed = before - self.read_buf.len();
        right_size(&mut self.read_buf, consumed);
        closed
    }

    /// Moves the outbox's frames to `pending`; a close request queues the closing frames
    /// and starts the linger deadline. Once closing, the outbox refuses frames (it holds a
    /// close request, or the task sealed it), so nothing taken here can follow the Close.
    pub(super) fn take_outbox(&mut self, outbox: &Outbox, closing: &mut bool) {
        if let Some(close) = outbox.take_stamped(&mut self.pending, &mut self.stamp) {
            if !*closing {
                if close.code == CloseReason::OverCapacity.code() {
                    // The client is not reading: what it has not started to receive is dropped.
                    self.discard_unsent();
                }
                self.queue_close(close);
                *closing = true;
            }
        }
    }

    /// Drops pending frames the client has not started to receive.
    pub(super) fn discard_unsent(&mut self) {
        let keep = usize::from(self.front_partial);
        self.pending.truncate(keep);
    }

    pub(super) fn queue_close(&mut self, close: CloseRequest) {
        // `pusher:error` carries Pusher's 4000–4999 codes; a WebSocket-level close (1008 for
        // an unfinished message) is the close frame alone, as for a bad frame.
        if close.code >= 4000 {
            self.pending
                .push_back(text_frame(&frame::error(Some(close.code), &close.message)));
        }
        self.pending
            .push_back(codec::encode_close(close.code, &close.message));
    }

    /// Writes as much of `pending` as the socket takes without blocking.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() && self.stream.has_unsent() {
            match self.stream.try_flush() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
        while !self.pending.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n = 0;
            for (slot, frame) in slices.iter_mut().zip(self.pending.iter()) {
                *slot = IoSlice::new(frame);
                n += 1;
            }
            let written = match self.stream.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            self.written = self.written.saturating_add(written as u32);
            let mut left = written;
            while left > 0 {
                let Some(front) = self.pending.front_mut() else {
                    break;
                };
                if front.len() <= left {
                    left -= front.len();
                    self.pending.pop_front();
                    self.front_partial = false;
                    self.written = self.written.saturating_add(FRAME_OVERHEAD as u32);
                    self.frames_written += 1;
                } else {
                    front.advance(left);
                    self.front_partial = true;
                    left = 0;
                }
            }
        }
        // Drained: give the queue's buffer back so an idle connection holds none. The next
        // burst allocates a small one again, once per burst, not per frame.
        if self.pending.capacity() > 0 {
            self.pending = VecDeque::new();
        }
        Ok(())
    }
}

/// The connection's frame budget, as configured.
pub(super) fn rates(shared: &Shared) -> Rates {
    Rates {
        frames: shared.config.server.client_frames_per_second,
        bytes: shared.config.server.client_bytes_per_second,
    }
}

/// A decoded message's payload: what it inflated to if it came compressed.
pub(super) fn payload_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data.len(),
        Message::Close(close) => close.as_ref().map_or(0, |(_, reason)| reason.len()),
    }
}

/// Frees an emptied read buffer, and copies a partial frame out of an allocation much larger
/// than it, so a burst that ends mid-frame does not keep the whole burst's memory for as
/// long as the client takes to finish the frame. `capacity()` counts only what lies past
/// the consumed front, so the allocation is at least that plus `consumed`.
pub(super) fn right_size(buf: &mut BytesMut, consumed: usize) {
    if buf.is_empty() {
        if buf.capacity() > 0 {
            *buf = BytesMut::new();
        }
        return;
    }
    let held = buf.capacity() + consumed;
    if held > KEEP_READ_BUFFER && held > 2 * buf.len() {
        *buf = BytesMut::from(&buf[..]);
    }
}
