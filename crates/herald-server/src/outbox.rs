//! A connection's bounded outbound queue.
//!
//! Publishers (the hub, the connection's own session) push complete WebSocket frames as
//! shared [`Bytes`]: a fan-out clones a reference, never the payload. Only the connection's
//! task drains the queue and writes to the socket. The bound counts every byte pushed and not
//! yet accepted by the kernel (taken frames stay counted until the task reports them written),
//! plus [`FRAME_OVERHEAD`] for each frame, and when a push would exceed it the queue drops its
//! frames and asks the task to close the socket with 4100. A subscriber that stops reading
//! costs about the bound, however small its frames, and nobody else waits for it.
//!
//! The outbox also counts the connection's changes waiting in its backend's queue (a
//! cluster node's state task): at [`MAX_WAITING_OPS`] the connection's task stops reading
//! its socket until the backend has taken half of them, so one client cannot fill a queue
//! others wait in (the kernel's buffers, then TCP, push back on it instead).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use herald_protocol::websocket::compress_text_frame;
use parking_lot::Mutex;

/// What a queued frame costs beyond its bytes, charged against the bound so that it holds
/// for memory and not only for payload: a client that never reads while it sends empty pings
/// queues 2-byte pongs, and a bound on bytes alone would let it hold 20–36 times as much.
/// Each frame takes a `Bytes` slot of 32 bytes in a `VecDeque` that grows by doubling, so up to
/// 64 bytes just after a growth (about 48 on average). Its own allocation, if unshared, is
/// charged as its length: jemalloc's small size classes round up by at most 25% with no
/// header, and a fan-out frame is allocated once for all of its subscribers.
pub(crate) const FRAME_OVERHEAD: usize = 64;

/// Changes of one connection (subscriptions, leaves, sign-ins) that may wait in its
/// backend's queue before its task stops reading its socket; it reads again once half of
/// them are taken. A client subscribing to many channels at once gets them through in
/// runs of this many; a flood waits for its own, and the others' changes wait behind at
/// most this many of its.
pub(crate) const MAX_WAITING_OPS: u16 = 64;

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
    /// When the oldest event frame still queued was published ([`crate::metrics::clock_us`]),
    /// 0 if none is; four bytes that fit in the padding after the flags.
    first_at: u32,
    /// The connection's changes waiting in its backend's queue ([`MAX_WAITING_OPS`]); two
    /// bytes in what was padding.
    ops: u16,
    /// The connection task, parked until `signalled`. A waker in the state the queue's
    /// mutex already guards costs less per connection than a separate notifier.
    waker: Option<Waker>,
}

impl Outbox {
    /// Wakes the connection task with nothing new queued, so it looks again at what it
    /// waits for (its frame budget).
    pub(crate) fn nudge(&self) {
        let waker = self.state.lock().signal();
        wake(waker);
    }
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
    /// At most 1 GiB (the configuration's bound), so 32 bits: with `compress_from` beside
    /// it, the outbox stays 112 bytes.
    max_bytes: u32,
    /// Text frames of at least this many bytes are queued compressed (permessage-deflate);
    /// `u32::MAX` when the connection did not negotiate it.
    compress_from: u32,
    /// The serial of the app the connection belongs to (0: none), so a reload that removes
    /// or disables the app can find its connections in the server's registry. It fits in
    /// the padding after `timers`: the outbox stays 112 bytes.
    pub(crate) app: u32,
    /// The connection's clock, in [`crate::clock`] ticks, so one sweeper task can run the
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
    /// When a closing connection stops waiting for its last frames to drain and for the
    /// client's close.
    pub(crate) linger_until: AtomicU32,
    /// When the frame or fragmented message the client has started must have ended. Set when
    /// it starts and not moved by further bytes, so a client trickling a byte at a time
    /// cannot keep its read buffer (and the connection) forever.
    pub(crate) partial_deadline: AtomicU32,
}

impl Timers {
    /// Records activity from the client: it is alive, any ping is answered.
    pub(crate) fn touch(&self, now: u32) {
        self.last_read.store(now, Ordering::Relaxed);
        self.ping_sent.store(0, Ordering::Relaxed);
    }
}

impl Outbox {
    /// An empty queue that holds at most `max_bytes` (capped at 4 GiB).
    pub fn new(max_bytes: usize) -> Self {
        Outbox::for_app(max_bytes, 0, None)
    }

    /// An empty queue of a connection that negotiated permessage-deflate: text frames of
    /// `compress_from` bytes or more are queued compressed.
    pub fn new_compressed(max_bytes: usize, compress_from: usize) -> Self {
        Outbox::for_app(max_bytes, 0, Some(compress_from))
    }

    /// An empty queue of a connection of the app with serial `app`; `compress_from` is the
    /// size from which text frames are compressed, for a connection that negotiated
    /// permessage-deflate.
    pub(crate) fn for_app(max_bytes: usize, app: u32, compress_from: Option<usize>) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
            compress_from: compress_from
                .map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX - 1)),
            app,
            timers: Timers::default(),
        }
    }

    /// Whether the connection negotiated permessage-deflate: its client may send
    /// compressed messages, and its text frames from the threshold on go out compressed.
    pub(crate) fn deflate(&self) -> bool {
        self.compress_from != u32::MAX
    }

    fn compresses(&self, frame: &[u8]) -> bool {
        frame.len() >= self.compress_from as usize
    }

    /// Queues a frame, compressed first if it is a text frame the connection takes
    /// compressed. Returns `false` when the connection is closing or has just overflowed
    /// (the frame is dropped).
    pub fn push(&self, frame: Bytes) -> bool {
        let frame = match self.compresses(&frame) {
            true => compress_text_frame(&frame).unwrap_or(frame),
            false => frame,
        };
        self.push_stamped(frame, 0)
    }

    /// Queues a frame meant for many connections ([`Fanout`]): the plain one, or the one
    /// compressed form all compressed connections share. Not stamped, unlike
    /// [`Outbox::push_event`].
    pub fn push_shared(&self, frame: &Fanout) -> bool {
        self.push_stamped(frame.for_outbox(self), 0)
    }

    /// Queues an event frame published at `at` ([`crate::metrics::clock_us`]), so its
    /// connection can measure the time to its write.
    pub fn push_event(&self, frame: &Fanout, at: u32) -> bool {
        self.push_stamped(frame.for_outbox(self), at)
    }

    fn push_stamped(&self, frame: Bytes, at: u32) -> bool {
        let mut state = self.state.lock();
        if state.close.is_some() {
            return false;
        }
        let cost = frame.len() + FRAME_OVERHEAD;
        if state.bytes + cost > self.max_bytes as usize {
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
        state.bytes += cost;
        state.frames.push_back(frame);
        if state.first_at == 0 {
            state.first_at = at;
        }
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
        self.take_stamped(into, &mut 0)
    }

    /// [`Outbox::take`], and `stamp` gets the publish time of the oldest event taken
    /// unless it already holds an older one.
    pub(crate) fn take_stamped(
        &self,
        into: &mut VecDeque<Bytes>,
        stamp: &mut u32,
    ) -> Option<CloseRequest> {
        let mut state = self.state.lock();
        if *stamp == 0 {
            *stamp = state.first_at;
        }
        state.first_at = 0;
        if into.is_empty() {
            std::mem::swap(&mut state.frames, into);
        } else {
            into.extend(state.frames.drain(..));
        }
        state.close.as_deref().cloned()
    }

    /// Moves everything queued to the end of `into` and closes the queue to further frames,
    /// for a close the task frames itself (its answer to the client's Close, or a protocol
    /// error): what was queued before goes out before the close frame, nothing after it.
    pub(crate) fn seal(&self, code: u16, into: &mut VecDeque<Bytes>) {
        let mut state = self.state.lock();
        into.extend(state.frames.drain(..));
        if state.close.is_none() {
            state.close = Some(Box::new(CloseRequest {
                code,
                message: Cow::Borrowed(""),
            }));
        }
    }

    /// Counts a change of this connection queued for its backend (see [`MAX_WAITING_OPS`]).
    pub(crate) fn op_queued(&self) {
        let mut state = self.state.lock();
        state.ops = state.ops.saturating_add(1);
    }

    /// Counts a queued change as taken by the backend; wakes the task when the count falls
    /// to half the bound, so a task that stopped reading reads again.
    pub(crate) fn op_taken(&self) {
        let mut state = self.state.lock();
        state.ops = state.ops.saturating_sub(1);
        if state.ops != MAX_WAITING_OPS / 2 {
            return;
        }
        let waker = state.signal();
        drop(state);
        wake(waker);
    }

    /// The connection's changes waiting in its backend's queue.
    pub(crate) fn ops_waiting(&self) -> u16 {
        self.state.lock().ops
    }

    /// Whether the connection has [`MAX_WAITING_OPS`] changes waiting: its task reads no
    /// more until [`Outbox::op_taken`] wakes it.
    pub(crate) fn ops_full(&self) -> bool {
        self.ops_waiting() >= MAX_WAITING_OPS
    }

    /// Tells the task to stop now: its close linger ran out.
    pub(crate) fn abort(&self) {
        let mut state = self.state.lock();
        state.aborted = true;
        let waker = state.signal();
        drop(state);
        wake(waker);
    }

    /// The code of the close the connection performs or performed, if any.
    pub(crate) fn close_code(&self) -> Option<u16> {
        self.state.lock().close.as_ref().map(|c| c.code)
    }

    /// Whether [`Outbox::abort`] was called.
    pub(crate) fn is_aborted(&self) -> bool {
        self.state.lock().aborted
    }

    /// Gives back to the bound `n` written bytes, with [`FRAME_OVERHEAD`] for each frame
    /// written in full.
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

/// A frame pushed to many outboxes (an event to a channel's subscribers, a member joining):
/// the plain frame, and its compressed form, made at most once, when the first outbox of a
/// connection that takes it compressed asks, then shared by `Bytes` reference like the
/// plain one. Lives for one fan-out, on the publisher's stack, or as long as a presence
/// channel's member list stays the same (the hub keeps its `subscription_succeeded`).
#[derive(Debug)]
pub struct Fanout {
    plain: Bytes,
    compressed: OnceLock<Option<Bytes>>,
}

impl Fanout {
    /// A fan-out of `plain`, a frame made by [`crate::wire::text_frame`] or any other.
    pub fn new(plain: Bytes) -> Self {
        Fanout {
            plain,
            compressed: OnceLock::new(),
        }
    }

    /// The uncompressed frame.
    pub fn plain(&self) -> &Bytes {
        &self.plain
    }

    fn for_outbox(&self, outbox: &Outbox) -> Bytes {
        if !outbox.compresses(&self.plain) {
            return self.plain.clone();
        }
        match self
            .compressed
            .get_or_init(|| compress_text_frame(&self.plain))
        {
            Some(compressed) => compressed.clone(),
            None => self.plain.clone(),
        }
    }
}

impl From<Bytes> for Fanout {
    fn from(plain: Bytes) -> Self {
        Fanout::new(plain)
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// What a test's connection was sent: the frames queued since it was last read, as JSON
/// (server frames are unmasked text frames, with a 2-byte header, or 4 past 125 bytes).
#[cfg(test)]
impl Outbox {
    pub(crate) fn sent(&self) -> Vec<serde_json::Value> {
        let mut frames = VecDeque::new();
        self.take(&mut frames);
        frames
            .iter()
            .map(|f| {
                let skip = if f[1] & 0x7f == 126 { 4 } else { 2 };
                serde_json::from_slice(&f[skip..]).expect("a JSON text frame")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame whose cost against the bound is `cost` bytes.
    fn frame(cost: usize) -> Bytes {
        Bytes::from(vec![b'x'; cost - FRAME_OVERHEAD])
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_app_tag_costs_no_memory() {
        // 112 bytes plus the Arc's two counts: jemalloc's 128-byte class, with no waste.
        assert!(std::mem::size_of::<Outbox>() <= 112);
    }

    #[test]
    fn a_full_count_of_waiting_ops_wakes_the_task_at_half() {
        let outbox = Outbox::new(1024);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(outbox.poll_ready(&mut cx).is_pending());
        for _ in 0..MAX_WAITING_OPS {
            outbox.op_queued();
        }
        assert!(outbox.ops_full());
        // Nothing to read yet: the task stays parked until half are taken.
        for _ in 0..MAX_WAITING_OPS / 2 - 1 {
            outbox.op_taken();
        }
        assert!(outbox.poll_ready(&mut cx).is_pending());
        assert!(!outbox.ops_full());
        outbox.op_taken();
        assert!(outbox.poll_ready(&mut cx).is_ready(), "woken at half");
        assert_eq!(outbox.ops_waiting(), MAX_WAITING_OPS / 2);
    }

    #[test]
    fn overflow_drops_frames_and_requests_4100() {
        let outbox = Outbox::new(200);
        assert!(outbox.push(frame(100)));
        assert!(outbox.push(frame(100)));
        assert!(!outbox.push(Bytes::new()));
        let mut frames = VecDeque::new();
        let close = outbox.take(&mut frames);
        assert!(frames.is_empty());
        assert_eq!(close.map(|c| c.code), Some(4100));
        assert!(!outbox.push(Bytes::new()), "closed outbox takes nothing");
    }

    #[test]
    fn taken_frames_count_until_written() {
        let outbox = Outbox::new(300);
        assert!(outbox.push(frame(100)));
        assert!(outbox.push(frame(100)));
        let mut frames = VecDeque::new();
        assert_eq!(outbox.take(&mut frames), None);
        assert_eq!(frames.len(), 2);
        // Taken but unwritten: a stalled socket must not get a fresh budget.
        assert!(outbox.push(frame(100)));
        assert!(!outbox.push(Bytes::new()), "the bound still holds");
        let outbox = Outbox::new(300);
        for _ in 0..3 {
            assert!(outbox.push(frame(100)));
        }
        outbox.written(100);
        assert!(outbox.push(frame(100)), "written bytes are given back");
    }

    #[test]
    fn every_frame_is_charged_its_overhead() {
        // The overhead covers a VecDeque slot, doubled for the queue's growth.
        assert!(2 * std::mem::size_of::<Bytes>() <= FRAME_OVERHEAD);
        let outbox = Outbox::new(1024 * 1024);
        let mut pongs = 0;
        while outbox.push(Bytes::from_static(&[0x8a, 0x00])) {
            pongs += 1;
        }
        assert_eq!(pongs, 1024 * 1024 / (2 + FRAME_OVERHEAD));
    }

    #[test]
    fn sealing_keeps_what_was_queued_and_refuses_the_rest() {
        let outbox = Outbox::new(1 << 16);
        assert!(outbox.push(Bytes::from_static(b"pong")));
        let mut frames = VecDeque::from([Bytes::from_static(b"earlier")]);
        outbox.seal(1002, &mut frames);
        assert_eq!(
            frames,
            [Bytes::from_static(b"earlier"), Bytes::from_static(b"pong")]
        );
        assert!(
            !outbox.push(Bytes::from_static(b"event")),
            "nothing after the close"
        );
        assert_eq!(outbox.take(&mut frames).map(|c| c.code), Some(1002));
        assert_eq!(frames.len(), 2);
        // A close requested earlier (an overflow, say) is the one that stands.
        let outbox = Outbox::new(1 << 16);
        outbox.close(4100, "over");
        outbox.seal(1000, &mut VecDeque::new());
        assert_eq!(
            outbox.take(&mut VecDeque::new()).map(|c| c.code),
            Some(4100)
        );
    }
}
