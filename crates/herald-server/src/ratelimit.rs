//! Per-app request and message counters for plan limits: fixed windows on atomics, so
//! counting costs a few atomic operations and no request waits on a lock shared with
//! others.
//!
//! A fixed window is approximate at its edges (a burst straddling two windows can pass up
//! to twice the rate for an instant); that is the usual trade for counting without locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A count within the current window.
#[derive(Debug, Default)]
pub struct Window {
    start: AtomicU64,
    used: AtomicU64,
}

impl Window {
    fn roll(&self, window_start: u64) {
        let start = self.start.load(Ordering::Acquire);
        if start != window_start
            && self
                .start
                .compare_exchange(start, window_start, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.used.store(0, Ordering::Release);
        }
    }

    /// Takes `n` from a budget of `limit` for the window starting at `window_start`;
    /// `false` (and nothing taken) when that would exceed it. A limit of 0 is unlimited.
    pub fn try_take(&self, limit: u64, window_start: u64, n: u64) -> bool {
        if limit == 0 {
            return true;
        }
        self.roll(window_start);
        let used = self.used.fetch_add(n, Ordering::AcqRel) + n;
        if used > limit {
            self.used.fetch_sub(n, Ordering::AcqRel);
            false
        } else {
            true
        }
    }

    /// Whether the window starting at `window_start` has used up `limit` (0: unlimited).
    pub fn exhausted(&self, limit: u64, window_start: u64) -> bool {
        if limit == 0 {
            return false;
        }
        self.roll(window_start);
        self.used.load(Ordering::Acquire) >= limit
    }

    /// Adds `n` without checking (for counts known only after the fact, like deliveries).
    pub fn add(&self, n: u64, window_start: u64) {
        self.roll(window_start);
        self.used.fetch_add(n, Ordering::AcqRel);
    }
}

/// An app's counters.
#[derive(Debug, Default)]
pub struct AppRates {
    /// HTTP API publishes (events, batches, terminations) this second.
    pub publishes: Window,
    /// HTTP API reads (channel queries) this second.
    pub reads: Window,
    /// Messages today (UTC): one per event published to a channel, plus one per delivery.
    pub messages: Window,
}

/// The current second and the start of the current UTC day, in Unix seconds.
pub fn now_windows() -> (u64, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (now, now - now % 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_limit_and_roll_over() {
        let w = Window::default();
        assert!(w.try_take(2, 100, 1));
        assert!(w.try_take(2, 100, 1));
        assert!(
            !w.try_take(2, 100, 1),
            "third in the same second is refused"
        );
        assert!(w.try_take(2, 101, 1), "a new second has a new budget");
        assert!(w.try_take(0, 101, 1_000), "0 means unlimited");
        assert!(!w.exhausted(3, 101));
        w.add(5, 101);
        assert!(w.exhausted(3, 101));
        assert!(!w.exhausted(3, 102));
    }
}
