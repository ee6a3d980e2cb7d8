//! The connections' clock: a process-wide count of 100 ms ticks, the unit of every deadline
//! a connection keeps in its outbox and of the intervals that need no finer time (the
//! subscription-count coalescing, the client-event rate window).
//!
//! A `u32` of ticks fits where a `Duration` or an `Instant` would not (five per outbox), and
//! a read is one monotonic clock call; tick 0 never occurs, so 0 can mean "unset".

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// The length of a tick.
const TICK_MS: u128 = 100;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Ticks since the first call in this process; never 0, which marks an unset deadline.
pub(crate) fn now() -> u32 {
    let base = *BASE.get_or_init(Instant::now);
    (base.elapsed().as_millis() / TICK_MS) as u32 + 1
}

/// Ticks in a second.
pub(crate) const TICKS_PER_SECOND: u32 = (1000 / TICK_MS) as u32;

/// A duration in ticks (at least one).
pub(crate) fn ticks(d: Duration) -> u32 {
    (d.as_millis() / TICK_MS).clamp(1, u128::from(u32::MAX / 2)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_at_least_one_and_now_is_never_zero() {
        assert_eq!(ticks(Duration::ZERO), 1);
        assert_eq!(ticks(Duration::from_millis(250)), 2);
        assert_eq!(ticks(Duration::from_secs(1)), 10);
        assert_eq!(ticks(Duration::MAX), u32::MAX / 2);
        assert_ne!(now(), 0);
    }
}
