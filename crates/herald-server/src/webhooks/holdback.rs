//! The hold-back of `channel_vacated`: a channel vacated and occupied again within
//! `webhook_vacated_delay` (a page reload) reports neither event.

use std::collections::{HashMap, VecDeque};

use tokio::time::Instant;

/// Vacated channels waiting out the hold-back. Every deadline is "now plus the same
/// delay", so the queue is in deadline order and each event costs O(1), however many
/// channels a client vacates: a scan per event would make a flood quadratic.
#[derive(Default)]
pub(super) struct HeldBack {
    /// Channel and deadline, oldest first; an entry whose channel no longer maps to the
    /// same deadline in `by_channel` was released or held again, and is skipped.
    queue: VecDeque<(String, Instant)>,
    by_channel: HashMap<String, Instant>,
}

impl HeldBack {
    pub(super) fn hold(&mut self, channel: String, until: Instant) {
        self.by_channel.insert(channel.clone(), until);
        self.queue.push_back((channel, until));
    }

    /// Whether `channel` was held back (it no longer is).
    pub(super) fn release(&mut self, channel: &str) -> bool {
        self.by_channel.remove(channel).is_some()
    }

    fn is_live(&self, channel: &str, until: Instant) -> bool {
        self.by_channel.get(channel) == Some(&until)
    }

    pub(super) fn next_due(&mut self) -> Option<Instant> {
        while let Some((channel, until)) = self.queue.front() {
            if self.is_live(channel, *until) {
                return Some(*until);
            }
            self.queue.pop_front();
        }
        None
    }

    pub(super) fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        while let Some(until) = self.next_due() {
            if until > now {
                break;
            }
            if let Some((channel, _)) = self.queue.pop_front() {
                self.by_channel.remove(&channel);
                due.push(channel);
            }
        }
        due
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = String> + '_ {
        self.queue.clear();
        self.by_channel.drain().map(|(channel, _)| channel)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn held_back_channels_come_due_in_order_and_release_once() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut held = HeldBack::default();
        held.hold("a".into(), at(10));
        held.hold("b".into(), at(20));
        held.hold("a".into(), at(30)); // vacated again later: the later deadline counts
        assert!(held.release("b"));
        assert!(!held.release("b"));
        assert_eq!(held.next_due(), Some(at(30)));
        assert!(held.take_due(at(29)).is_empty());
        assert_eq!(held.take_due(at(30)), vec!["a".to_string()]);
        assert_eq!(held.next_due(), None);
        assert!(held.queue.is_empty() && held.by_channel.is_empty());
    }
}
