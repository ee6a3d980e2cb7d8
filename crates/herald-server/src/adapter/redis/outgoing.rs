//! A message queued for the other nodes, as the bus publisher (`publisher.rs`) sends it:
//! its bus channel, its bytes and, for an event its channel keeps, the history append that
//! goes with it (`history.rs` writes the call). Data only, so both of those modules can
//! name it without naming each other back.

use crate::history::limits::HistoryLimits;

/// What a queued bus message costs beyond its bytes (its buffers and its queue slot), so
/// many tiny messages are bounded too.
const MESSAGE_OVERHEAD: usize = 64;

/// A message for the other nodes and the bus channel it goes to.
pub(super) struct Outgoing {
    pub(super) channel: String,
    pub(super) payload: Vec<u8>,
    /// An event also appended to its channel's history, in the same pipeline.
    pub(super) append: Option<Box<Append>>,
    /// Dropped once Redis has taken the message (or it is dropped unsent): what a caller
    /// waiting for the event's place in its channel's order awaits.
    pub(super) confirmed: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Outgoing {
    /// What it counts against `cluster_bus_max_bytes`.
    pub(super) fn cost(&self) -> usize {
        self.channel.len() + self.payload.len() + MESSAGE_OVERHEAD
    }
}

/// A bus message that is also appended to its channel's history (see `history.rs`).
pub(super) struct Append {
    /// The stream, its hash and the app's high mark.
    pub(super) keys: [String; 3],
    pub(super) limits: HistoryLimits,
    pub(super) node: u32,
    /// Where the frame sits in the message.
    pub(super) frame: std::ops::Range<usize>,
}
