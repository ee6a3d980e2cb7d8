//! A connection's bounded outbound queue.
//!
//! Publishers (the hub, the connection's own session) push complete WebSocket frames as
//! shared [`Bytes`]: a fan-out clones a reference, never the payload. Only the connection's
//! task drains the queue and writes to the socket. The bound counts every byte pushed and not
//! yet accepted by the kernel (taken frames stay counted until the task reports them written),
//! and when a push would exceed it the queue drops its frames and asks the task to close the
//! socket with 4100. A subscriber that stops reading costs at most the bound, and nobody else
//! waits for it.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use parking_lot::Mutex;

/// A close the connection task must perform: `pusher:error` with this code and message,
/// then a close frame with the same code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// The Pusher close code.
    pub code: u16,
    /// The message for the `pusher:error` frame.
    pub message: Cow<'static, str>,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    /// Bytes pushed and not yet written: queued here or taken by the connection task.
    bytes: usize,
    /// Boxed: almost every connection lives and dies without one.
    close: Option<Box<CloseRequest>>,
    /// Something was pushed (or a close requested) since the task last looked.
    signalled: bool,
    /// The close linger ran out: the task must stop without waiting for its writes.
    aborted: bool,
    /// The connection task, parked until `signalled`. A waker in the state the queue's
    /// mutex already guards costs less per connection than a separate notifier.
    waker: Option<Waker>,
}

impl State {
    /// Marks the queue as needing attention and returns the waker to wake once the lock
    /// is released.
    fn signal(&mut self) -> Option<Waker> {
        self.signalled = true;
        self.waker.take()
    }
}

/// The queue; shared between publishers and the connection task.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    max_bytes: usize,
    /// The connection's clock, in [`crate::sweeper`] ticks, so one sweeper task can run the
    /// timeouts of every connection instead of a timer parked in each.
    pub(crate) timers: Timers,
}

/// A connection's deadlines, read by the sweeper and written by the connection task.
/// Each is a tick count; 0 means unset.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// When the client last sent anything.
    pub(crate) last_read: AtomicU32,
    /// When the server pinged and is waiting for any frame.
    pub(crate) ping_sent: AtomicU32,
    /// When an unauthorized connection must be closed (the app's authentication timeout).
    pub(crate) auth_deadline: AtomicU32,
    /// When a closing connection stops waiting for its last frames to drain.
    pub(crate) linger_until: AtomicU32,
}

impl Timers {
    /// Records activity from the client: it is alive, any ping is answered.
    pub(crate) fn touch(&self, now: u32) {
        self.last_read.store(now, Ordering::Relaxed);
        self.ping_sent.store(0, Ordering::Relaxed);
    }
}

impl Outbox {
    /// An empty queue that holds at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            max_bytes,
            timers: Timers::default(),
        }
    }

    /// Queues a frame. Returns `false` when the connection is closing or has just overflowed
    /// (the frame is dropped).
    pub fn push(&self, frame: Bytes) -> bool {
        let mut state = self.state.lock();
        if state.close.is_some() {
            return false;
        }
        if state.bytes + frame.len() > self.max_bytes {
            state.frames = VecDeque::new();
            state.bytes = 0;
            state.close = Some(Box::new(CloseRequest {
                code: herald_protocol::close::CloseReason::OverCapacity.code(),
                message: Cow::Borrowed(herald_protocol::close::CloseReason::OverCapacity.message()),
            }));
            let waker = state.signal();
            drop(state);
            wake(waker);
            return false;
        }
        state.bytes += frame.len();
        state.frames.push_back(frame);
        let waker = state.signal();
        drop(state);
        wake(waker);
        true
    }

    /// Asks the connection task to close with `code`; frames already queued are sent first.
    /// The first request wins.
    pub fn close(&self, code: u16, message: impl Into<Cow<'static, str>>) {
        let mut state = self.state.lock();
        if state.close.is_none() {
            state.close = Some(Box::new(CloseRequest {
                code,
                message: message.into(),
            }));
        }
        let waker = state.signal();
        drop(state);
        wake(waker);
    }

    /// Moves everything queued to the end of `into`, plus any close request. When `into`
    /// is empty (the usual case) the two queues are swapped instead of copied. The frames
    /// still count against the bound until [`Outbox::written`] reports them sent.
    pub fn take(&self, into: &mut VecDeque<Bytes>) -> Option<CloseRequest> {
        let mut state = self.state.lock();
        if into.is_empty() {
            std::mem::swap(&mut state.frames, into);
        } else {
            into.extend(state.frames.drain(..));
        }
        state.close.as_deref().cloned()
    }

    /// Tells the task to stop now: its close linger ran out.
    pub(crate) fn abort(&self) {
        let mut state = self.state.lock();
        state.aborted = true;
        let waker = state.signal();
        drop(state);
        wake(waker);
    }

    /// Whether [`Outbox::abort`] was called.
    pub(crate) fn is_aborted(&self) -> bool {
        self.state.lock().aborted
    }

    /// Gives `n` written bytes back to the bound.
    pub fn written(&self, n: usize) {
        let mut state = self.state.lock();
        state.bytes = state.bytes.saturating_sub(n);
    }

    /// Ready when something was pushed or a close was requested since the last time this
    /// returned ready; otherwise remembers the task's waker.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.lock();
        if state.signalled {
            state.signalled = false;
            return Poll::Ready(());
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_frames_and_requests_4100() {
        let outbox = Outbox::new(10);
        assert!(outbox.push(Bytes::from_static(b"12345")));
        assert!(outbox.push(Bytes::from_static(b"12345")));
        assert!(!outbox.push(Bytes::from_static(b"1")));
        let mut frames = VecDeque::new();
        let close = outbox.take(&mut frames);
        assert!(frames.is_empty());
        assert_eq!(close.map(|c| c.code), Some(4100));
        assert!(
            !outbox.push(Bytes::from_static(b"1")),
            "closed outbox takes nothing"
        );
    }

    #[test]
    fn taken_frames_count_until_written() {
        let outbox = Outbox::new(10);
        assert!(outbox.push(Bytes::from_static(b"a")));
        assert!(outbox.push(Bytes::from_static(b"b")));
        let mut frames = VecDeque::new();
        assert_eq!(outbox.take(&mut frames), None);
        assert_eq!(frames, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        // Taken but unwritten: a stalled socket must not get a fresh budget.
        assert!(outbox.push(Bytes::from_static(b"12345678")));
        outbox.written(2);
        assert!(
            outbox.push(Bytes::from_static(b"12")),
            "written bytes are given back"
        );
        assert!(
            !outbox.push(Bytes::from_static(b"1")),
            "and the bound still holds"
        );
    }
}
