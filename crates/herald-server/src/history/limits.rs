//! How much of each channel's recent events an app keeps.

use std::time::Duration;

/// The bounds of each channel's history: an event is evicted, oldest first, once the
/// channel keeps more than `max_events` events or `max_bytes` bytes of frames, or once it
/// is older than `max_age`. `max_events` 0 (the default) keeps no history at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Events kept per channel; 0 turns history off for the app.
    pub max_events: usize,
    /// How long an event is kept.
    pub max_age: Duration,
    /// Bytes of frames kept per channel.
    pub max_bytes: usize,
}

impl HistoryLimits {
    /// Whether the app keeps history at all.
    pub fn on(&self) -> bool {
        self.max_events > 0
    }
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            max_events: 0,
            max_age: DEFAULT_HISTORY_MAX_AGE,
            max_bytes: DEFAULT_HISTORY_MAX_BYTES,
        }
    }
}

/// Long enough to cover a reconnect after a tunnel or a deploy, short enough that the
/// channels published to once do not stay in memory for long.
pub(crate) const DEFAULT_HISTORY_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// 64 KiB a channel: a hundred events of a few hundred bytes.
pub(crate) const DEFAULT_HISTORY_MAX_BYTES: usize = 64 * 1024;
