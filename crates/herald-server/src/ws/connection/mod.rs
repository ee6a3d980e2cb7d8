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
use std::io::{self};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use herald_protocol::close::CloseReason;
use herald_protocol::frame;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::budget::Budget;
use super::session::Session;
use super::socket::Socket;
use crate::admission::{ConnPermit, DetachedPermit};
use crate::apps::ConnectionSlot;
use crate::metrics::Limit;
use crate::outbox::FRAME_OVERHEAD;
use crate::shared::Shared;
use crate::wire::text_frame;
use crate::{clock, metrics};
use herald_protocol::websocket::{self as codec, Decoder, Message};
use socket_io::{rates, Io, Listen, Wake};

/// How long a closing connection waits for its last frames to drain and the client's Close.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Bytes of messages decoded in one turn on its worker thread (each counted at its size
/// once inflated, if larger) after which the task gives the others theirs.
const BURST_BYTES: usize = 16 * 1024;

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
        decoder: Decoder::new(shared.config.server.max_message_bytes),
        pending: VecDeque::new(),
        front_partial: false,
        written: 0,
        frames_written: 0,
        stamp: 0,
        budget: Budget::new(clock::now(), rates(&shared)),
        throttled: false,
        waiting: false,
        listen: Listen::Socket,
        turn: 0,
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
                held.shared.config.server.activity_timeout.as_secs(),
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

        // Bytes that arrived with the upgrade request are handled before waiting on the socket.
        if !io.read_buf.is_empty() {
            session
                .metrics()
                .bytes_received
                .add(io.read_buf.len() as u64);
            paused = io.decode_all(&held.shared, &mut session).apply(
                &mut closing,
                &mut peer_done,
                &mut io.throttled,
            );
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
            io.listen = if io.throttled && !io.waiting && !paused && !closing {
                Listen::Budget
            } else if !peer_done && ((!paused && !io.throttled) || closing) {
                Listen::Socket
            } else {
                Listen::Outbox
            };
            // One hand-written poll instead of `select!`: readiness wakers live in tokio's I/O
            // registration and the outbox, so the parked task holds no per-branch futures.
            // The closure holds two references and nothing else (it is part of the parked
            // future): what the poll reads is in `io`, and a closure naming `io.pending`,
            // `io.stream` and each local it reads would hold a reference to each.
            let wake = std::future::poll_fn({
                let io = &mut io;
                let outbox = session.outbox();
                move |cx| io.poll_wake(cx, outbox)
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
                        paused = io.decode_all(&held.shared, &mut session).apply(
                            &mut closing,
                            &mut peer_done,
                            &mut io.throttled,
                        );
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
                        paused = io.decode_all(&held.shared, &mut session).apply(
                            &mut closing,
                            &mut peer_done,
                            &mut io.throttled,
                        );
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
                        paused = io.decode_all(&held.shared, &mut session).apply(
                            &mut closing,
                            &mut peer_done,
                            &mut io.throttled,
                        );
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
            if io.turn as usize >= BURST_BYTES {
                io.turn = 0;
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

mod socket_io;
#[cfg(test)]
mod tests;
