//! One connection's task: reads and decodes frames, hands messages to the [`Session`],
//! writes what its outbox holds, pings a silent client and closes an unresponsive one.
//!
//! This task is the only writer of its socket. It waits for readiness rather than parking a
//! read buffer in a pending read, so an idle connection holds no buffer at all: bytes are
//! read into a stack chunk and kept only while a frame is incomplete. Queued frames are
//! written together with one vectored write when several are pending.
//!
//! Closing follows RFC 6455 §7.1.1: once the server's Close frame is written the write half
//! is shut down, and the task reads on, discarding, until the client's Close or EOF, or the
//! linger ends. Dropping a socket with unread bytes makes the kernel send a reset, which can
//! destroy the Close (and its code) before the client reads it.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use herald_protocol::close::CloseReason;
use herald_protocol::frame;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::budget::{Budget, Rates};
use super::session::Session;
use super::socket::Socket;
use crate::admission::{ConnPermit, DetachedPermit};
use crate::apps::ConnectionSlot;
use crate::metrics::Limit;
use crate::outbox::{CloseRequest, Outbox, FRAME_OVERHEAD};
use crate::shared::Shared;
use crate::wire::text_frame;
use crate::{clock, metrics};
use herald_protocol::websocket::{self as codec, CodecError, Decoder, Message};

/// Frames written with one system call at most.
const MAX_IOVECS: usize = 64;
/// How long a closing connection waits for its last frames to drain and the client's Close.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Bytes of messages decoded in one turn on its worker thread (each counted at its size
/// once inflated, if larger) after which the task gives the others theirs.
const BURST_BYTES: usize = 16 * 1024;
/// Bytes read per wake-up at most: enough for many frames per system call, small enough
/// that a burst ending mid-frame does not leave a big buffer behind for long.
const READ_BURST: usize = 64 * 1024;
/// A read buffer's allocation is kept while it is at most this, or twice what it holds.
const KEEP_READ_BUFFER: usize = 4096;

/// Serves an admitted connection until it closes; `deflate`: it negotiated
/// permessage-deflate.
///
/// Everything the connection keeps is built here, synchronously, and moved into one
/// future: nested futures or a span wrapper would each hold their own copy of it, and a
/// parked connection is mostly this future.
pub(super) fn run<S: Socket>(
    shared: Arc<Shared>,
    slot: ConnectionSlot,
    permit: ConnPermit,
    stream: S,
    pre_read: Bytes,
    deflate: bool,
) -> impl Future<Output = ()> + Send {
    // `pre_read` is a slice of hyper's 8 KB read buffer and keeps all of it alive: copy the
    // few bytes (usually none) and let the buffer go before the connection settles in.
    let read_buf = BytesMut::from(&pre_read[..]);
    drop(pre_read);
    let io = Io {
        stream,
        read_buf,
        decoder: Decoder::new(shared.config.max_message_bytes),
        pending: VecDeque::new(),
        front_partial: false,
        written: 0,
        frames_written: 0,
        stamp: 0,
        budget: Budget::new(clock::now(), rates(&shared)),
        throttled: false,
        waiting: false,
    };
    let session = Session::new(&shared, slot, deflate);
    let held = Held {
        shared,
        permit: permit.detach(),
    };
    serve(held, session, io)
}

/// The server state and the connection's place under the connection caps, given back
/// however the task ends.
struct Held {
    shared: Arc<Shared>,
    permit: DetachedPermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Runs once: `Held` is made once per connection, in `run`.
        self.shared.limiter.release(&mut self.permit);
    }
}

/// The connection's life, as an `async move` block rather than an `async fn`: rustc stores
/// an async fn's arguments twice (as arguments and as body locals, rust-lang/rust#62958),
/// and this future is most of what an idle connection costs. Its timeouts live in the
/// outbox as tick counts, run by [`crate::sweeper`], so no timer is parked here.
#[allow(clippy::manual_async_fn)] // Deliberate: see above; an async fn would be larger.
fn serve<S: Socket>(
    held: Held,
    mut session: Session,
    mut io: Io<S>,
) -> impl Future<Output = ()> + Send {
    async move {
        tracing::debug!(
            socket_id = %session.socket_id(),
            app_id = session.app_id(),
            "Connection opened"
        );
        session
            .outbox()
            .push(text_frame(&frame::connection_established(
                &session.socket_id().to_string(),
                held.shared.config.activity_timeout.as_secs(),
            )));
        session.outbox().timers.touch(clock::now());
        // Our Close frame is queued; nothing may follow it.
        let mut closing = false;
        // The client sent its Close or ended its side: there is nothing more to read.
        let mut peer_done = false;
        // Our Close is written and the write half shut down.
        let mut shut = false;

        // The connection has its bound of changes waiting in the backend's queue: it reads
        // no more (and decodes nothing more of what it read) until the backend has taken
        // half, which wakes it through the outbox.
        let mut paused = false;

        // Bytes of messages decoded since this task last parked or yielded.
        let mut turn_bytes = 0u32;

        // Bytes that arrived with the upgrade request are handled before waiting on the socket.
        if !io.read_buf.is_empty() {
            session
                .metrics()
                .bytes_received
                .add(io.read_buf.len() as u64);
            paused = io
                .decode_all(&held.shared, &mut session, &mut turn_bytes)
                .apply(&mut closing, &mut peer_done, &mut io.throttled);
        }

        loop {
            if closing && session.outbox().timers.linger_until.load(Ordering::Relaxed) == 0 {
                let until = clock::now() + clock::ticks(CLOSE_LINGER);
                session
                    .outbox()
                    .timers
                    .linger_until
                    .store(until, Ordering::Relaxed);
                session.leave_all(&held.shared);
            }
            let flushed = io.flush();
            if io.written > 0 {
                let written = std::mem::take(&mut io.written) as usize;
                session.outbox().written(written);
                let frames = std::mem::take(&mut io.frames_written);
                let metrics = session.metrics();
                metrics.messages_sent.add(u64::from(frames));
                metrics
                    .bytes_sent
                    .add((written - frames as usize * FRAME_OVERHEAD) as u64);
            }
            if io.stamp != 0 && io.pending.is_empty() {
                let took = metrics::clock_us().wrapping_sub(io.stamp);
                session.metrics().publish_to_write.observe_us(took);
                io.stamp = 0;
            }
            if let Err(error) = flushed {
                tracing::debug!(socket_id = %session.socket_id(), %error, "Write failed");
                break;
            }
            if closing && !shut && io.pending.is_empty() {
                match io.stream.try_shutdown() {
                    Ok(()) => shut = true,
                    // TLS records still to send: retried once the socket is writable.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            if shut && peer_done {
                break;
            }
            // A paused connection reads again once closing: what it reads then is discarded.
            // One variable, not two flags: the parked future holds a reference to each
            // variable the poll below reads.
            let listen = if io.throttled && !io.waiting && !paused && !closing {
                Listen::Budget
            } else if !peer_done && ((!paused && !io.throttled) || closing) {
                Listen::Socket
            } else {
                Listen::Outbox
            };
            // One hand-written poll instead of `select!`: readiness wakers live in tokio's I/O
            // registration and the outbox, so the parked task holds no per-branch futures.
            let wake = std::future::poll_fn(|cx| {
                if session.outbox().poll_ready(cx).is_ready() {
                    return Poll::Ready(Wake::Outbox);
                }
                if (!io.pending.is_empty() || io.stream.has_unsent())
                    && io.stream.poll_write_ready(cx).is_ready()
                {
                    return Poll::Ready(Wake::Writable);
                }
                if listen == Listen::Budget {
                    return Poll::Ready(Wake::Decode);
                }
                if listen == Listen::Socket {
                    if let Poll::Ready(ready) = io.stream.poll_read_ready(cx) {
                        return Poll::Ready(if ready.is_ok() {
                            Wake::Readable
                        } else {
                            Wake::Gone
                        });
                    }
                }
                // The task parks: its turn ends here.
                turn_bytes = 0;
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Outbox => {
                    // Only a closing connection has a linger for the sweeper to end; asking
                    // only then keeps a lock off every delivery's wake-up.
                    if closing && session.outbox().is_aborted() {
                        break;
                    }
                    io.take_outbox(session.outbox(), &mut closing);
                    if !closing {
                        session.after_outbox(&held.shared);
                    }
                    // The sweeper's wake-up once the budget refilled (or a delivery's after it).
                    if io.waiting && io.budget.allows(clock::now(), rates(&held.shared)) {
                        io.waiting = false;
                    }
                    if paused && !closing && !session.outbox().ops_full() {
                        // What was read and not decoded yet goes first.
                        paused = io
                            .decode_all(&held.shared, &mut session, &mut turn_bytes)
                            .apply(&mut closing, &mut peer_done, &mut io.throttled);
                    }
                }
                Wake::Decode => {
                    let now = clock::now();
                    let wait = io.budget.wait(now, rates(&held.shared));
                    if wait > 0 {
                        crate::metrics::handling(session.socket_id(), || {
                            session
                                .metrics()
                                .refused(Limit::ClientFrames, session.app_id(), None);
                        });
                        io.waiting = true;
                        let outbox = Arc::downgrade(session.outbox());
                        held.shared.refills.wait(now + wait, outbox);
                    } else {
                        paused = io
                            .decode_all(&held.shared, &mut session, &mut turn_bytes)
                            .apply(&mut closing, &mut peer_done, &mut io.throttled);
                    }
                }
                Wake::Writable => {}
                Wake::Gone => break,
                Wake::Readable => match io.read().inspect(|&n| {
                    session.metrics().bytes_received.add(n as u64);
                }) {
                    // Before our Close the client just left; after it, EOF is its answer.
                    Ok(0) if !closing => break,
                    Ok(0) => peer_done = true,
                    Ok(_) if closing => peer_done = io.discard_until_close(),
                    Ok(_) => {
                        session.outbox().timers.touch(clock::now());
                        paused = io
                            .decode_all(&held.shared, &mut session, &mut turn_bytes)
                            .apply(&mut closing, &mut peer_done, &mut io.throttled);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => {
                        tracing::debug!(socket_id = %session.socket_id(), %error, "Read failed");
                        break;
                    }
                },
            }
            // A client that keeps its socket full would otherwise keep this worker thread
            // for a whole coop budget of reads (up to 128 × 64 KiB of frames): give the other
            // tasks their turn once a turn has decoded that much, in one read or in many
            // small ones (a flood of small subscribe frames, read a few KiB at a time, would
            // otherwise hold a worker for a whole budget each turn), counting what compressed
            // messages inflate to: a 64 KiB read of them can hold a thousand times more.
            if closing {
                io.throttled = false;
            }
            if turn_bytes as usize >= BURST_BYTES {
                turn_bytes = 0;
                tokio::task::yield_now().await;
            }
        }
        session.close(&held.shared);
        drop(io);
        let code = session.outbox().close_code();
        session.metrics().connection_closed(code);
        session.metrics().console.emit("connection_closed", |row| {
            row.insert("socket_id".into(), session.socket_id().to_string().into());
            row.insert("code".into(), code.unwrap_or(1006).into());
        });
        tracing::debug!(
            socket_id = %session.socket_id(),
            app_id = session.app_id(),
            code = code.unwrap_or(1006),
            "Connection closed"
        );
        session.release(&held.shared);
    }
}

/// Refuses a connection: `pusher:error` with the reason's code, then a close frame with it,
/// then the same lingering close as a served connection's. Refusals are rare, so this takes
/// the stream as hyper left it (TCP, or tokio-rustls's stream over TLS) and simply awaits.
pub(super) async fn refuse<S>(mut stream: S, reason: CloseReason)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    out.extend_from_slice(&text_frame(&frame::error(
        Some(reason.code()),
        reason.message(),
    )));
    out.extend_from_slice(&codec::encode_close(reason.code(), reason.message()));
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        if stream.write_all(&out).await.is_err() || stream.shutdown().await.is_err() {
            return;
        }
        // A refused client sends little: the decoder needs room for control frames only,
        // and past a bigger frame the bytes are just dropped until EOF.
        let mut decoder = Decoder::new(1024);
        let mut buf = BytesMut::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if discard_until_close(&mut decoder, &mut buf) {
                        return;
                    }
                }
            }
        }
    })
    .await;
}

/// Decodes the client's frames only to find its Close, dropping everything else; returns
/// whether it came. Past a bad frame the boundaries are lost, so the bytes are dropped.
fn discard_until_close(decoder: &mut Decoder, buf: &mut BytesMut) -> bool {
    loop {
        match decoder.decode(buf) {
            Ok(Some(Message::Close(_))) => return true,
            Ok(Some(_)) => {}
            Ok(None) => return false,
            Err(_) => {
                buf.clear();
                return false;
            }
        }
    }
}

/// What the connection task waits for besides its outbox and writability.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listen {
    /// Nothing more: paused, or the client is done sending.
    Outbox,
    /// The client's next bytes.
    Socket,
    /// The frame budget: what was read waits to be decoded.
    Budget,
}

/// What the connection task was woken by.
enum Wake {
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
enum Decoded {
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
    fn apply(self, closing: &mut bool, peer_done: &mut bool, throttled: &mut bool) -> bool {
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

struct Io<S> {
    stream: S,
    read_buf: BytesMut,
    decoder: Decoder,
    /// Frames taken from the outbox and not yet fully written.
    pending: VecDeque<Bytes>,
    /// The first pending frame is partly written, so it must be finished before any other.
    front_partial: bool,
    /// What the bytes and frames written since the outbox was last told cost against its
    /// bound, so the bound covers unwritten frames. 32 bits, with the two fields below, keep
    /// `Io` as small as it was before the metrics: between two reports the task writes at
    /// most what the outbox holds, and `outbox_max_bytes` is at most 1 GiB.
    written: u32,
    /// Frames written in full since the metrics were last told.
    frames_written: u32,
    /// When the oldest event not yet written was published (0: none pending), for the
    /// publish-to-write histogram.
    stamp: u32,
    /// What the client may still make the server decode and handle this second.
    budget: Budget,
    /// The frame budget (or the turn) ran out: what was read and not decoded yet, if
    /// anything, waits for it, and nothing more is read. These two flags and the budget
    /// fit where `Io` had padding and a pointer: the connection future does not grow.
    throttled: bool,
    /// Throttled, and on the node's refill list: the sweeper wakes it through the outbox.
    waiting: bool,
}

impl<S: Socket> Io<S> {
    /// Reads what the socket has without blocking. The stack chunk keeps an idle
    /// connection free of heap buffers; only unconsumed bytes are copied to `read_buf`.
    fn read(&mut self) -> io::Result<usize> {
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
    /// the turn (`turn`: bytes decoded in it so far) last, and starts or clears the
    /// deadline of an unfinished one.
    fn decode_all(&mut self, shared: &Shared, session: &mut Session, turn: &mut u32) -> Decoded {
        crate::metrics::handling(session.socket_id(), || {
            self.decode_all_now(shared, session, turn)
        })
    }

    /// [`Io::decode_all`]'s work, inside the socket's handling scope.
    fn decode_all_now(
        &mut self,
        shared: &Shared,
        session: &mut Session,
        turn: &mut u32,
    ) -> Decoded {
        let before = self.read_buf.len();
        let was_fragmented = self.decoder.fragments_in_progress();
        let mut message_ended = false;
        let mut messages = 0u64;
        let deflate = session.outbox().deflate();
        let (now, rates) = (clock::now(), rates(shared));
        let decoded = loop {
            if *turn as usize >= BURST_BYTES || !self.budget.allows(now, rates) {
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
                *turn = turn.saturating_add(u32::try_from(cost).unwrap_or(u32::MAX));
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
                let timeout = clock::ticks(shared.config.partial_message_timeout);
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
    fn discard_until_close(&mut self) -> bool {
        let before = self.read_buf.len();
        let closed = discard_until_close(&mut self.decoder, &mut self.read_buf);
        let consumed = before - self.read_buf.len();
        right_size(&mut self.read_buf, consumed);
        closed
    }

    /// Moves the outbox's frames to `pending`; a close request queues the closing frames
    /// and starts the linger deadline. Once closing, the outbox refuses frames (it holds a
    /// close request, or the task sealed it), so nothing taken here can follow the Close.
    fn take_outbox(&mut self, outbox: &Outbox, closing: &mut bool) {
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
    fn discard_unsent(&mut self) {
        let keep = usize::from(self.front_partial);
        self.pending.truncate(keep);
    }

    fn queue_close(&mut self, close: CloseRequest) {
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
    fn flush(&mut self) -> io::Result<()> {
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
fn rates(shared: &Shared) -> Rates {
    Rates {
        frames: shared.config.client_frames_per_second,
        bytes: shared.config.client_bytes_per_second,
    }
}

/// A decoded message's payload: what it inflated to if it came compressed.
fn payload_len(message: &Message) -> usize {
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
fn right_size(buf: &mut BytesMut, consumed: usize) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_frame_left_by_a_big_burst_gets_a_buffer_of_its_own() {
        let burst = || {
            let mut buf = BytesMut::with_capacity(READ_BURST);
            buf.extend_from_slice(&vec![0u8; READ_BURST]);
            buf.advance(READ_BURST - 2);
            buf
        };
        // Left alone, the burst's allocation stays behind the two bytes left.
        assert!(burst().try_reclaim(READ_BURST / 2));
        let mut buf = burst();
        right_size(&mut buf, READ_BURST - 2);
        assert_eq!(&buf[..], [0, 0]);
        assert!(buf.capacity() < KEEP_READ_BUFFER);
        assert!(
            !buf.try_reclaim(KEEP_READ_BUFFER),
            "the big allocation is gone"
        );

        // A frame still growing keeps its buffer: copying it on every read would be quadratic.
        let mut growing = BytesMut::new();
        for _ in 0..64 {
            growing.extend_from_slice(&[1u8; 1000]);
            let at = growing.as_ptr();
            right_size(&mut growing, 0);
            assert_eq!(growing.as_ptr(), at);
        }
        let mut empty = BytesMut::with_capacity(100);
        right_size(&mut empty, 0);
        assert_eq!(empty.capacity(), 0, "an empty buffer is freed");
    }

    #[test]
    fn closing_discards_until_the_clients_close() {
        let masked = |b0: u8, payload: &[u8]| {
            let mut f = vec![b0, 0x80 | payload.len() as u8, 0, 0, 0, 0];
            f.extend_from_slice(payload);
            f
        };
        let mut decoder = Decoder::new(1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&masked(0x81, b"late data"));
        buf.extend_from_slice(&masked(0x89, b""));
        assert!(!discard_until_close(&mut decoder, &mut buf));
        assert!(buf.is_empty());
        buf.extend_from_slice(&masked(0x88, &[0x03, 0xe8]));
        assert!(discard_until_close(&mut decoder, &mut buf));
        // Garbage is dropped, not kept.
        let mut buf = BytesMut::from(&[0xff_u8; 100][..]);
        assert!(!discard_until_close(&mut decoder, &mut buf));
        assert!(buf.is_empty());
    }

    /// Prints what an idle connection's future and the pieces it holds cost, for the memory
    /// work (run with `--nocapture`); asserts only that the future stays within its budget.
    #[tokio::test]
    async fn the_connection_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        let shared = Shared::for_tests(crate::Config::default());
        let app = shared.apps.by_key("app-key").expect("default app");
        let slot = app.try_connect(0).expect("slot");
        let permit = shared
            .limiter
            .admit(std::net::Ipv4Addr::LOCALHOST.into())
            .unwrap_or_else(|_| panic!("a permit"));
        let future = run(shared, slot, permit, stream, Bytes::new(), true);
        let size = std::mem::size_of_val(&future);
        println!(
            "connection future {size} B; Session {} B; Io {} B; Sleep {} B; Decoder {} B",
            std::mem::size_of::<Session>(),
            std::mem::size_of::<Io<tokio::net::TcpStream>>(),
            std::mem::size_of::<tokio::time::Sleep>(),
            std::mem::size_of::<Decoder>(),
        );
        println!(
            "over TLS: Io {} B, and rustls's session (boxed) {} B",
            std::mem::size_of::<Io<super::super::socket::TlsSocket>>(),
            std::mem::size_of::<rustls::ServerConnection>(),
        );
        println!(
            "Outbox {} B; ConnPermit {} B; ConnectionSlot {} B",
            std::mem::size_of::<Outbox>(),
            std::mem::size_of::<ConnPermit>(),
            std::mem::size_of::<ConnectionSlot>()
        );
        println!(
            "a recovering connection's tracker {} B (boxed, with the signed-in user's box)",
            std::mem::size_of::<super::super::recovery::Tracker>(),
        );
        assert!(size <= 300, "the connection future grew to {size} B");
    }
}
