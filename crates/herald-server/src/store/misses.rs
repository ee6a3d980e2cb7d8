//! Lookups of apps the memory does not hold: each id or key that the database did not
//! have is remembered for a while, and the node sends the database a bounded number of
//! such lookups per second, so a flood of unknown keys costs the database nothing more.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::AppRef;
use crate::app_config::fields::MAX_CREDENTIAL_BYTES;

/// How long a miss is remembered: an app added meanwhile is in memory within a second
/// anyway (the change reaches every node), so this only bounds repeated lookups.
const REMEMBER: Duration = Duration::from_secs(10);
/// Misses remembered at most; past it, the expired ones go, then all of them.
const MAX_REMEMBERED: usize = 10_000;
/// Lookups one node sends the database per second at most.
const LOOKUPS_PER_SECOND: u32 = 20;

#[derive(Debug)]
pub(crate) struct Misses {
    remembered: parking_lot::Mutex<HashMap<(bool, Box<str>), Instant>>,
    window: parking_lot::Mutex<(Instant, u32)>,
}

impl Default for Misses {
    fn default() -> Self {
        Misses {
            remembered: parking_lot::Mutex::new(HashMap::new()),
            window: parking_lot::Mutex::new((Instant::now(), 0)),
        }
    }
}

fn slot(by: AppRef<'_>) -> (bool, &str) {
    match by {
        AppRef::Id(id) => (false, id),
        AppRef::Key(key) => (true, key),
    }
}

impl Misses {
    /// Whether `by` may be looked up in the database now: it could exist, it did not miss
    /// recently, and the node's lookups this second are within the budget (which it takes
    /// one of).
    pub(crate) fn may_look_up(&self, by: AppRef<'_>) -> bool {
        let (is_key, value) = slot(by);
        if value.is_empty() || value.len() > MAX_CREDENTIAL_BYTES {
            return false;
        }
        let now = Instant::now();
        if let Some(until) = self.remembered.lock().get(&(is_key, value.into())) {
            if *until > now {
                return false;
            }
        }
        let mut window = self.window.lock();
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        if window.1 >= LOOKUPS_PER_SECOND {
            return false;
        }
        window.1 += 1;
        true
    }

    /// The database has no app for `by`.
    pub(crate) fn remember(&self, by: AppRef<'_>) {
        let (is_key, value) = slot(by);
        let now = Instant::now();
        let mut remembered = self.remembered.lock();
        if remembered.len() >= MAX_REMEMBERED {
            remembered.retain(|_, until| *until > now);
            if remembered.len() >= MAX_REMEMBERED {
                remembered.clear();
            }
        }
        remembered.insert((is_key, value.into()), now + REMEMBER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miss_is_remembered_and_lookups_are_budgeted() {
        let misses = Misses::default();
        assert!(misses.may_look_up(AppRef::Key("a")));
        misses.remember(AppRef::Key("a"));
        assert!(!misses.may_look_up(AppRef::Key("a")), "remembered");
        assert!(misses.may_look_up(AppRef::Id("a")), "ids and keys apart");
        assert!(!misses.may_look_up(AppRef::Key("")));
        assert!(!misses.may_look_up(AppRef::Key(&"k".repeat(256))));
        let allowed = (0..100)
            .filter(|i| misses.may_look_up(AppRef::Key(&format!("flood-{i}"))))
            .count();
        assert_eq!(
            allowed,
            LOOKUPS_PER_SECOND as usize - 2,
            "the rest of this second's budget"
        );
    }

    #[test]
    fn the_remembered_misses_are_bounded() {
        let misses = Misses::default();
        for i in 0..MAX_REMEMBERED + 5 {
            misses.remember(AppRef::Key(&i.to_string()));
        }
        assert!(misses.remembered.lock().len() <= MAX_REMEMBERED);
    }
}
