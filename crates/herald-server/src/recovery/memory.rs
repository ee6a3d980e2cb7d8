//! A single node's recovery entries, in memory.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Recoveries, Remembered};

/// The most entries one node keeps. Every connection of an app that recovers can leave one
/// when its network drops, so a node losing its uplink can make as many as it had
/// identified connections; past this, the entries nearest their end make room.
const MAX_ENTRIES: usize = 200_000;

/// Entries by (app, identity), and how many entries name each (app, channel).
#[derive(Default)]
pub struct MemoryRecoveries {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<(Box<str>, Box<str>), (Remembered, Instant)>,
    channels: HashMap<(Box<str>, Box<str>), u32>,
}

impl State {
    fn forget(&mut self, app: &str, entry: &Remembered) {
        for (channel, _) in &entry.channels {
            let key = (Box::from(app), Box::from(channel.as_str()));
            if let Some(n) = self.channels.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.channels.remove(&key);
                }
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let expired: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, (_, gone))| *gone <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            if let Some((entry, _)) = self.entries.remove(&key) {
                self.forget(&key.0, &entry);
            }
        }
    }
}

impl MemoryRecoveries {
    pub(crate) fn remember_at(
        &self,
        app: &str,
        identity: &str,
        entry: Remembered,
        keep: Duration,
        now: Instant,
    ) {
        let mut state = self.state.lock();
        // Sweeping as the map doubles keeps it from holding entries past their time for
        // long, at a walk per doubling.
        let len = state.entries.len();
        if len >= 1024 && len.is_power_of_two() || len >= MAX_ENTRIES {
            state.sweep(now);
        }
        if state.entries.len() >= MAX_ENTRIES {
            let soonest = state
                .entries
                .iter()
                .min_by_key(|(_, (_, gone))| *gone)
                .map(|(key, _)| key.clone());
            if let Some(key) = soonest {
                if let Some((old, _)) = state.entries.remove(&key) {
                    state.forget(&key.0, &old);
                }
            }
        }
        for (channel, _) in &entry.channels {
            *state
                .channels
                .entry((Box::from(app), Box::from(channel.as_str())))
                .or_default() += 1;
        }
        let key = (Box::from(app), Box::from(identity));
        if let Some((old, _)) = state.entries.insert(key, (entry, now + keep)) {
            state.forget(app, &old);
        }
    }

    pub(crate) fn take_at(&self, app: &str, identity: &str, now: Instant) -> Option<Remembered> {
        let mut state = self.state.lock();
        let (entry, gone) = state
            .entries
            .remove(&(Box::from(app), Box::from(identity)))?;
        state.forget(app, &entry);
        (gone > now).then_some(entry)
    }
}

impl Recoveries for MemoryRecoveries {
    fn remember(&self, app: &str, identity: &str, entry: Remembered, keep: Duration) {
        self.remember_at(app, identity, entry, keep, Instant::now());
    }

    fn take(&self, app: &str, identity: &str) -> BoxFuture<'static, Option<Remembered>> {
        let taken = self.take_at(app, identity, Instant::now());
        Box::pin(std::future::ready(taken))
    }

    fn awaited(&self, app: &str, channel: &str) -> bool {
        let state = self.state.lock();
        !state.channels.is_empty()
            && state
                .channels
                .contains_key(&(Box::from(app), Box::from(channel)))
    }

    /// A node that is alone has no other node to tell.
    fn take_over(&self, _: &str, _: &str, _: Option<&str>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(channels: &[(&str, u64)]) -> Remembered {
        Remembered {
            until_ms: 1,
            channels: channels
                .iter()
                .map(|(c, s)| ((*c).to_owned(), *s))
                .collect(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_is_taken_once_within_its_time() {
        let r = MemoryRecoveries::default();
        let now = Instant::now();
        let keep = Duration::from_secs(10);
        r.remember_at("a", "u", entry(&[("c", 3)]), keep, now);
        assert!(r.awaited("a", "c"));
        assert!(!r.awaited("b", "c"));
        assert_eq!(r.take_at("a", "u", now), Some(entry(&[("c", 3)])));
        assert_eq!(r.take_at("a", "u", now), None);
        assert!(!r.awaited("a", "c"));
        r.remember_at("a", "u", entry(&[("c", 3)]), keep, now);
        assert_eq!(r.take_at("a", "u", now + keep), None, "kept no longer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_entry_replaces_the_old_and_its_channels() {
        let r = MemoryRecoveries::default();
        let now = Instant::now();
        let keep = Duration::from_secs(10);
        r.remember_at("a", "u", entry(&[("c", 3)]), keep, now);
        r.remember_at("a", "u", entry(&[("d", 4)]), keep, now);
        assert!(!r.awaited("a", "c"));
        assert!(r.awaited("a", "d"));
        assert_eq!(r.take_at("a", "u", now), Some(entry(&[("d", 4)])));
    }
}
