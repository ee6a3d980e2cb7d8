//! One connection's task: reads and decodes frames, hands messages to the [`Session`],
//! writes what its outbox holds, pings a silent client and closes an unresponsive one.
//!
//! This task is the only writer of its socket. It waits for readiness rather than parking a
//! read buffer in a pending read, so an idle connection holds no buffer at all: bytes are
//! read into a stack chunk and kept only while a frame is incomplete. Queued frames are
//! written together with one vectored write when several are pending.

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
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::session::Session;
use super::text_frame;
use crate::admission::{ConnPermit, DetachedPermit};
use crate::apps::ConnectionSlot;
use crate::outbox::{CloseRequest, Outbox};
use crate::{sweeper, Shared};
use herald_protocol::websocket::{self as codec, CodecError, Decoder, Message};

/// Frames written with one system call at most.
const MAX_IOVECS: usize = 64;
/// How long a closing connection waits for its last frames to drain.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Serves an admitted connection until it closes.
///
/// Everything the connection keeps is built here, synchronously, and moved into one
/// future: nested futures or a span wrapper would each hold their own copy of it, and a
/// parked connection is mostly this future.
pub(super) fn run(
    shared: Arc<Shared>,
    slot: ConnectionSlot,
    permit: ConnPermit,
    stream: TcpStream,
    pre_read: Bytes,
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
    };
    let session = Session::new(&shared, slot);
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
fn serve(held: Held, mut session: Session, mut io: Io) -> impl Future<Output = ()> + Send {
    async move {
        tracing::debug!(
            socket_id = %session.socket_id(),
            app_id = session.app_id(),
            "Connection opened"
        );
        let outbox = session.outbox().clone();
        outbox.push(text_frame(&frame::connection_established(
            &session.socket_id(),
            held.shared.config.activity_timeout.as_secs(),
        )));
        outbox.timers.touch(sweeper::now());
        let mut closing = false;

        // Bytes that arrived with the upgrade request are handled before waiting on the socket.
        if !io.read_buf.is_empty() && io.decode_all(&mut session).is_err() {
            closing = true;
        }

        loop {
            if closing && outbox.timers.linger_until.load(Ordering::Relaxed) == 0 {
                let until = sweeper::now() + sweeper::ticks(CLOSE_LINGER);
                outbox.timers.linger_until.store(until, Ordering::Relaxed);
            }
            let flushed = io.flush();
            if io.written > 0 {
                outbox.written(std::mem::take(&mut io.written));
            }
            if let Err(error) = flushed {
                tracing::debug!(socket_id = %session.socket_id(), %error, "Write failed");
                break;
            }
            if closing && io.pending.is_empty() {
                break;
            }
            // One hand-written poll instead of `select!`: readiness wakers live in tokio's I/O
            // registration and the outbox, so the parked task holds no per-branch futures.
            let wake = std::future::poll_fn(|cx| {
                if outbox.poll_ready(cx).is_ready() {
                    return Poll::Ready(Wake::Outbox);
                }
                if !io.pending.is_empty() && io.stream.poll_write_ready(cx).is_ready() {
                    return Poll::Ready(Wake::Writable);
                }
                if !closing {
                    if let Poll::Ready(ready) = io.stream.poll_read_ready(cx) {
                        return Poll::Ready(if ready.is_ok() {
                            Wake::Readable
                        } else {
                            Wake::Gone
                        });
                    }
                }
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Outbox => {
                    // Only a closing connection has a linger for the sweeper to end; asking
                    // only then keeps a lock off every delivery's wake-up.
                    if closing && outbox.is_aborted() {
                        break;
                    }
                    io.take_outbox(&outbox, &mut closing);
                }
                Wake::Writable => {}
                Wake::Gone => break,
                Wake::Readable => match io.read() {
                    Ok(0) => break,
                    Ok(_) => {
                        outbox.timers.touch(sweeper::now());
                        if io.decode_all(&mut session).is_err() {
                            closing = true;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => {
                        tracing::debug!(socket_id = %session.socket_id(), %error, "Read failed");
                        break;
                    }
                },
            }
        }
        session.close(&held.shared);
        let _ = io.stream.shutdown().await;
        tracing::debug!(socket_id = %session.socket_id(), "Connection closed");
    }
}

/// Refuses a connection: `pusher:error` with the reason's code, then a close frame with it.
pub(super) async fn refuse(mut stream: TcpStream, reason: CloseReason) {
    let mut out = Vec::new();
    out.extend_from_slice(&text_frame(&frame::error(
        Some(reason.code()),
        reason.message(),
    )));
    out.extend_from_slice(&codec::encode_close(reason.code(), reason.message()));
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// What woke the connection task.
enum Wake {
    Outbox,
    Writable,
    Readable,
    /// The socket reported an error while waiting for readiness.
    Gone,
}

struct Io {
    stream: TcpStream,
    read_buf: BytesMut,
    decoder: Decoder,
    /// Frames taken from the outbox and not yet fully written.
    pending: VecDeque<Bytes>,
    /// The first pending frame is partly written, so it must be finished before any other.
    front_partial: bool,
    /// Bytes written since the outbox was last told, so its bound covers unwritten frames.
    written: usize,
}

impl Io {
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
                    if n < chunk.len() || total >= 256 * 1024 {
                        return Ok(total);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && total > 0 => return Ok(total),
                Err(e) => return Err(e),
            }
        }
    }

    /// Decodes and handles every complete message in `read_buf`. Returns `Err` when the
    /// connection must close (a close frame has been queued).
    fn decode_all(&mut self, session: &mut Session) -> Result<(), ()> {
        let result = loop {
            match self.decoder.decode(&mut self.read_buf) {
                Ok(None) => break Ok(()),
                Ok(Some(Message::Text(text))) => session.handle_text(&text),
                Ok(Some(Message::Binary(_))) => session.send_error(
                    None,
                    "Binary frames are not supported: send JSON text frames",
                ),
                Ok(Some(Message::Ping(payload))) => {
                    session.outbox().push(codec::encode_pong(&payload));
                }
                Ok(Some(Message::Pong(_))) => {}
                Ok(Some(Message::Close(close))) => {
                    let code = close.map_or(1000, |(code, _)| code);
                    let code = if is_valid_close_code(code) {
                        code
                    } else {
                        1000
                    };
                    self.pending.push_back(codec::encode_close(code, ""));
                    break Err(());
                }
                Err(error) => {
                    if let CodecError::TooBig { limit } = error {
                        let message = format!("Message too large: the limit is {limit} bytes");
                        self.pending
                            .push_back(text_frame(&frame::error(None, &message)));
                    }
                    tracing::debug!(socket_id = %session.socket_id(), %error, "Bad WebSocket frame");
                    self.pending
                        .push_back(codec::encode_close(error.close_code(), ""));
                    break Err(());
                }
            }
        };
        if self.read_buf.is_empty() && self.read_buf.capacity() > 0 {
            // Release the buffer so an idle connection holds none.
            self.read_buf = BytesMut::new();
        }
        result
    }

    /// Moves the outbox's frames to `pending`; a close request queues the closing frames
    /// and starts the linger deadline.
    fn take_outbox(&mut self, outbox: &Outbox, closing: &mut bool) {
        if let Some(close) = outbox.take(&mut self.pending) {
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
        self.pending
            .push_back(text_frame(&frame::error(Some(close.code), &close.message)));
        self.pending
            .push_back(codec::encode_close(close.code, &close.message));
    }

    /// Writes as much of `pending` as the socket takes without blocking.
    fn flush(&mut self) -> io::Result<()> {
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
            self.written += written;
            let mut left = written;
            while left > 0 {
                let Some(front) = self.pending.front_mut() else {
                    break;
                };
                if front.len() <= left {
                    left -= front.len();
                    self.pending.pop_front();
                    self.front_partial = false;
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

fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::AppStore;

    /// Prints what an idle connection's future and the pieces it holds cost, for the memory
    /// work (run with `--nocapture`); asserts only that the future stays within its budget.
    #[tokio::test]
    async fn the_connection_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        let config = crate::Config::default();
        let apps: Arc<dyn AppStore> = Arc::new(crate::StaticApps::new(
            config.apps.clone(),
            &config.webhook_settings(),
        ));
        let app = apps.by_key("app-key").expect("default app");
        let slot = app.try_connect().expect("slot");
        let limiter = crate::admission::ConnLimiter::new(&config.net, 10);
        let permit = limiter
            .admit(std::net::Ipv4Addr::LOCALHOST.into())
            .unwrap_or_else(|_| panic!("a permit"));
        let shared = Arc::new(Shared {
            config,
            apps,
            node_id: 1,
            next_conn: std::sync::atomic::AtomicU64::new(1),
            shutdown: tokio_util::sync::CancellationToken::new(),
            connections: parking_lot::Mutex::new(std::collections::HashMap::new()),
            tracker: tokio_util::task::TaskTracker::new(),
            limiter,
        });
        let future = run(shared, slot, permit, stream, Bytes::new());
        let size = std::mem::size_of_val(&future);
        println!(
            "connection future {size} B; Session {} B; Io {} B; Sleep {} B; Decoder {} B",
            std::mem::size_of::<Session>(),
            std::mem::size_of::<Io>(),
            std::mem::size_of::<tokio::time::Sleep>(),
            std::mem::size_of::<Decoder>(),
        );
        println!(
            "Outbox {} B; ConnPermit {} B; ConnectionSlot {} B",
            std::mem::size_of::<Outbox>(),
            std::mem::size_of::<ConnPermit>(),
            std::mem::size_of::<ConnectionSlot>()
        );
        assert!(size <= 300, "the connection future grew to {size} B");
    }
}
