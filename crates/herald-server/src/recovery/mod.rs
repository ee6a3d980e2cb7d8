//! The recovery seam: what a connection with an identity was subscribed to when it ended
//! uncleanly, and the last serial per channel its client is known to have processed, kept
//! for the app's `recovery_window` so that the identity's next connection gets what it
//! missed (the rules are in `ws/recovery.rs`; the missed events come from the history).
//!
//! The seam is data only: remember an entry for a while, take it back once. A single node
//! keeps entries in memory ([`memory::MemoryRecoveries`]); a cluster shares them through
//! its own implementation, so that a client coming back on another node is recovered too.

pub mod memory;

use std::time::Duration;

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
    /// Takes (and forgets) what `identity` of `app` left, if it is still kept.
    fn take(&self, app: &str, identity: &str) -> Option<Remembered>;
    /// Whether some kept entry of `app` names `channel`: a hint, cheap to ask on every
    /// subscribe, that a connection with no identity yet should wait for one before it
    /// gets the channel's live events. A wrong "yes" costs that connection a short wait.
    fn awaited(&self, app: &str, channel: &str) -> bool;
}
