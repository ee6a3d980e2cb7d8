//! The recovery seam: what a connection with an identity was subscribed to when it ended
//! uncleanly (or went silent), and the last serial per channel its client is known to have
//! processed, kept for the app's `recovery_window` so that the identity's next connection
//! gets what it missed (the rules are in `ws/recovery.rs`; the missed events come from the
//! history).
//!
//! The seam is data only: remember an entry for a while, take it back once. A single node
//! keeps entries in memory ([`memory::MemoryRecoveries`]); a cluster keeps them in its
//! backend (the adapter's `recoveries.rs`), so that a client coming back on another node
//! is recovered too. Taking may need a round trip, so it is a future; the other calls
//! never wait.
//!
//! This module also holds what a recovering subscription asks its backend to do as it
//! joins ([`Recover`]) and the single node's way of doing it ([`join`]).

pub mod memory;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use herald_protocol::frame;

use crate::apps::App;
use crate::outbox::Outbox;
use crate::wire::text_frame;

/// What one identity's connection left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    /// When the recovery window ends, in Unix milliseconds. The entry is kept past it (for
    /// `keep`), so a client that comes back late is told it came too late.
    pub until_ms: u64,
    /// Each channel the connection was on, with the last serial its client confirmed.
    pub channels: Vec<(String, u64)>,
}

/// Where a node keeps [`Remembered`] entries, by app id and identity.
pub trait Recoveries: Send + Sync {
    /// Keeps `entry` for `identity` of `app` for `keep`, replacing any earlier one.
    fn remember(&self, app: &str, identity: &str, entry: Remembered, keep: Duration);
    /// Takes (and forgets, for every node) what `identity` of `app` left, if it is still
    /// kept. Two takes of one entry never both get it.
    fn take(&self, app: &str, identity: &str) -> BoxFuture<'static, Option<Remembered>>;
    /// Whether some kept entry of `app` names `channel`: a hint, cheap to ask on every
    /// subscribe, that a connection with no identity yet should wait for one before it
    /// gets the channel's live events. A wrong "yes" costs that connection a short wait.
    fn awaited(&self, app: &str, channel: &str) -> bool;
    /// `identity` of `app` has a new connection here: other nodes close its silent
    /// connections (its signed-in ones, and with `presence` its member connections on that
    /// channel), as this node does its own (`ws/recovery.rs`). Nothing for a node that is
    /// alone.
    fn take_over(&self, app: &str, identity: &str, presence: Option<&str>);
}

/// What a new subscription does about recovery, as it joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Nothing to recover.
    Fresh,
    /// Replay the events after this serial.
    Replay(u64),
    /// Tell the client the gap cannot be filled, and why.
    Failed(&'static str),
}

/// A recovering subscription, for its backend: the plan, and where the backend writes
/// the serial through which the connection was queued the channel's events as it joined
/// (every event after it reaches the connection live).
#[derive(Clone)]
pub(crate) struct Recover {
    pub(crate) plan: Plan,
    pub(crate) joined: Arc<AtomicU64>,
}

/// [`Recover::joined`] before the backend wrote it.
pub(crate) const NOT_JOINED: u64 = u64::MAX;

impl Recover {
    pub(crate) fn new(plan: Plan) -> Recover {
        Recover {
            plan,
            joined: Arc::new(AtomicU64::new(NOT_JOINED)),
        }
    }

    /// Records the serial the subscription joined through.
    pub(crate) fn joined(&self, through: u64) {
        self.joined.store(through, Ordering::Release);
    }
}

/// The event a channel gets when what its client missed cannot be replayed.
pub(crate) const FAILED_EVENT: &str = "herald:recovery_failed";

/// `herald:recovery_failed` on `channel`, its data the reason as JSON.
pub(crate) fn failed_frame(channel: &str, reason: &str) -> Bytes {
    let data = frame::json_str(&format!("{{\"reason\":\"{reason}\"}}"));
    text_frame(&frame::event(FAILED_EVENT, channel, &data, None))
}

/// A single node's join: queues the plan's frames from the app's rings (under the
/// channel's lock, so no live event comes between) and records the serial it joined
/// through.
pub(crate) fn join(app: &App, channel: &str, recover: &Recover, outbox: &Outbox) {
    let last = app.history.last_serial(channel);
    match recover.plan {
        Plan::Fresh => {}
        Plan::Failed(reason) => {
            outbox.push(failed_frame(channel, reason));
        }
        Plan::Replay(after) => {
            let limits = app.config().history;
            match app
                .history
                .since(channel, after, &limits, tokio::time::Instant::now())
            {
                Ok(frames) => {
                    for frame in frames {
                        outbox.push(frame);
                    }
                }
                Err(_) => {
                    outbox.push(failed_frame(channel, "history_gap"));
                }
            }
        }
    }
    recover.joined(last);
}
