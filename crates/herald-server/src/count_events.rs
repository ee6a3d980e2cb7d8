//! Subscription-count events, coalesced: at most one per channel per interval, always
//! ending with the true count.
//!
//! Every subscribe or unsubscribe changes a channel's count, and the event goes to every
//! subscriber of the channel: unthrottled, one client toggling a subscription would turn
//! one frame in into N frames out. So the first change in a quiet channel is sent at once,
//! and later changes within the interval only record the newest count, which the sweeper
//! sends when the interval has passed ([`CountEvents::due`]).

use std::collections::HashMap;

use parking_lot::Mutex;

/// Sweeper ticks between two events of one channel (a tick is 100 ms).
pub(crate) const INTERVAL_TICKS: u32 = 10;

#[derive(Debug)]
struct Entry {
    /// When the channel's last event was sent.
    sent: u32,
    /// The newest count, when it has not been sent yet.
    pending: Option<usize>,
}

/// One app's channels with a recent count event.
#[derive(Debug, Default)]
pub(crate) struct CountEvents {
    channels: Mutex<HashMap<Box<str>, Entry>>,
}

impl CountEvents {
    /// Records a channel's new count at tick `now`; returns it when it should be sent now.
    pub(crate) fn changed(&self, channel: &str, count: usize, now: u32) -> Option<usize> {
        let mut channels = self.channels.lock();
        match channels.get_mut(channel) {
            None => {
                channels.insert(
                    channel.into(),
                    Entry {
                        sent: now,
                        pending: None,
                    },
                );
                Some(count)
            }
            Some(entry) if entry.pending.is_none() && due(entry.sent, now) => {
                entry.sent = now;
                Some(count)
            }
            Some(entry) => {
                entry.pending = Some(count);
                None
            }
        }
    }

    /// The held-back counts whose interval has passed, to send now; forgets channels that
    /// have been quiet for an interval, so the map holds only recently changed channels.
    pub(crate) fn due(&self, now: u32) -> Vec<(Box<str>, usize)> {
        let mut channels = self.channels.lock();
        if channels.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        channels.retain(|channel, entry| {
            if !due(entry.sent, now) {
                return true;
            }
            match entry.pending.take() {
                Some(count) => {
                    entry.sent = now;
                    out.push((channel.clone(), count));
                    true
                }
                None => false,
            }
        });
        out
    }
}

fn due(sent: u32, now: u32) -> bool {
    now.wrapping_sub(sent) >= INTERVAL_TICKS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_gives_one_event_now_and_the_last_count_later() {
        let events = CountEvents::default();
        assert_eq!(events.changed("c", 1, 100), Some(1));
        for (i, count) in [2, 3, 2, 5].into_iter().enumerate() {
            assert_eq!(events.changed("c", count, 101 + i as u32), None);
        }
        assert!(events.due(105).is_empty(), "the interval has not passed");
        assert_eq!(events.due(110), vec![("c".into(), 5)]);
        assert!(events.due(115).is_empty());
        // Quiet for an interval: forgotten, and the next change goes out at once.
        assert!(events.due(120).is_empty());
        assert!(events.channels.lock().is_empty());
        assert_eq!(events.changed("c", 4, 121), Some(4));
        // Another channel is not held back by this one.
        assert_eq!(events.changed("d", 1, 122), Some(1));
    }

    #[test]
    fn a_change_after_a_quiet_interval_is_sent_at_once() {
        let events = CountEvents::default();
        assert_eq!(events.changed("c", 1, 0), Some(1));
        assert_eq!(events.changed("c", 2, 10), Some(2));
        assert_eq!(events.changed("c", 3, 11), None);
        assert_eq!(events.due(20), vec![("c".into(), 3)]);
    }
}
