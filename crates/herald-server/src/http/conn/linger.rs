//! The lingering close: a connection closed while its client may still be sending a body
//! the server answered without reading (413 from the declared length, 401 or 404 before
//! the body) sends its answer and a FIN, then reads and drops what still comes, for at most
//! `http_linger_timeout` and `http_linger_max_bytes`, before it closes.
//!
//! A socket closed with unread bytes in its receive buffer, or that receives more after
//! closing, is reset by the kernel; a client still writing its body then gets EPIPE or
//! ECONNRESET, and most (Node's `http`, which the official `pusher` library uses) report
//! that instead of the answer that had arrived. Draining lets the client finish writing
//! and read the status; the bounds keep a client that never stops from holding its
//! connection.
//!
//! hyper closes such a connection itself (it does not read a body its handler dropped) by
//! shutting the socket down: [`super::Watched`]'s `poll_shutdown` lingers there when the
//! last request's body was not read to its end ([`BodyRead`] says when it was).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Activity;

/// How long and how much a closing connection drains.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub(super) timeout: Duration,
    pub(super) max_bytes: usize,
}

/// Set while a request's body has not been read to its end.
#[derive(Debug, Default)]
pub(super) struct Unread(AtomicBool);

impl Unread {
    fn set(&self, unread: bool) {
        self.0.store(unread, Ordering::Relaxed);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pin_project_lite::pin_project! {
    /// A request body that marks the connection's body read once it reaches its end.
    pub(super) struct BodyRead {
        #[pin]
        inner: Incoming,
        connection: Option<Arc<Activity>>,
    }
}

impl BodyRead {
    /// `body`, marked unread on its `connection` until it is read to its end; an empty body
    /// is read already.
    pub(super) fn new(body: Incoming, connection: &Arc<Activity>) -> Self {
        let pending = !body.is_end_stream();
        connection.unread.set(pending);
        BodyRead {
            inner: body,
            connection: pending.then(|| connection.clone()),
        }
    }
}

impl Body for BodyRead {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            if let Some(connection) = this.connection.take() {
                connection.unread.set(false);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A closing connection's drain, once it has begun.
pub(super) struct Lingering {
    deadline: Pin<Box<tokio::time::Sleep>>,
    left: usize,
    /// Whether the write half is shut down (the answer flushed, the FIN sent).
    shut: bool,
}

/// Reads dropped per wake-up before yielding to the other tasks.
const READS_PER_TURN: usize = 16;

/// Shuts `stream` down, lingering first if `unread` says a body is still coming: what
/// `poll_shutdown` of the connection's socket does. `lingering` holds the drain between
/// polls.
pub(super) fn poll_shutdown<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    unread: &Unread,
    bounds: Bounds,
    lingering: &mut Option<Box<Lingering>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    if lingering.is_none() {
        if !unread.get() || bounds.timeout.is_zero() || bounds.max_bytes == 0 {
            return Pin::new(stream).poll_shutdown(cx);
        }
        *lingering = Some(Box::new(Lingering {
            deadline: Box::pin(tokio::time::sleep(bounds.timeout)),
            left: bounds.max_bytes,
            shut: false,
        }));
    }
    let Some(linger) = lingering.as_mut() else {
        return Poll::Ready(Ok(()));
    };
    if !linger.shut {
        ready!(Pin::new(&mut *stream).poll_shutdown(cx))?;
        linger.shut = true;
    }
    let mut scratch = [0u8; 8192];
    for _ in 0..READS_PER_TURN {
        if linger.deadline.as_mut().poll(cx).is_ready() || linger.left == 0 {
            return Poll::Ready(Ok(()));
        }
        let room = linger.left.min(scratch.len());
        let mut buf = ReadBuf::new(&mut scratch[..room]);
        match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            // The client finished (EOF) or went away: nothing more will come.
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
            Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
            Poll::Ready(Ok(())) => linger.left -= buf.filled().len(),
            Poll::Pending => return Poll::Pending,
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}
