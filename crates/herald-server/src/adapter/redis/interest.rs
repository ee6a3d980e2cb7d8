//! Interest routing: which bus channels this node listens to.
//!
//! Each (app, channel) has a bus channel of its own, `P:e:<app>:<channel>`, with no hash
//! tag, so a Redis Cluster spreads the channels over its slots and shards (sharded pub/sub).
//! A node listens to a channel's bus channel only while it has a subscriber of the channel,
//! so a node receives, decodes and pays for the events its clients want and no others, and
//! Redis copies an event to the nodes that want it only: its cost per event does not grow
//! with nodes that do not. Control messages that name no channel (a user's termination,
//! watchlist changes) go to one channel every node listens to, `P:bus`: they are rare (an
//! API call, a user's online transition), and per-user channels would cost a subscription
//! per signed-in and per watched user, churning with every sign-in.
//!
//! Why per channel rather than per hash shard of channels: a shard carries the events of
//! every channel in it, so with 1,000 channels on one node and shards of, say, 64, nearly
//! every node would hold nearly every shard and decode most of the traffic again.
//! Per-channel subscriptions cost one (un)subscribe round trip at a channel's first and
//! last local subscriber, which the state task takes for a whole batch at once.
//!
//! The guarantee: a channel's bus subscription is confirmed by Redis before its first
//! local subscriber is answered (`subscription_succeeded`, a presence join's member list),
//! so every event published after the answer reaches the node. The state task asks for the
//! bus subscriptions of a batch together with the batch's Redis counts, so a storm of first
//! subscribers costs one round trip, not one each. Redis not answering within
//! [`SUBSCRIBE_WAIT`] (or down already) is the only exception: the subscriber is answered
//! anyway, the link subscribes when Redis answers, and events published in between are
//! lost, as every event is while Redis is away.
//!
//! When the last local subscriber leaves, the subscription lingers for [`LINGER`], so a
//! channel that empties and fills again (a page reload) costs no round trips; at most
//! [`MAX_LINGERING`] channels linger, the oldest released first beyond that. The state task
//! owns all of this and sends every subscribe and unsubscribe in order, so an unsubscribe
//! cannot overtake a later subscribe of the same channel.
//!
//! Bounds: the channels held are those with local subscribers (bounded by the connection
//! and per-connection channel limits) and at most [`MAX_LINGERING`] more; the requests in
//! flight are one state-task batch's (256 subscriptions at most); and the subscriptions
//! waiting for the state task are ops in its bounded queue, where an app over its share is
//! answered `ServerBusy`.
//!
//! This module is plain data: the state task asks it what to subscribe and release.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// How long a channel's bus subscription outlives its last local subscriber.
pub(super) const LINGER: Duration = Duration::from_secs(2);
/// Channels lingering at most; beyond it the oldest is released at once.
pub(super) const MAX_LINGERING: usize = 10_000;
/// How long the state task waits for Redis to confirm a batch's bus subscriptions.
pub(super) const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// The bus channel of an app's channel.
pub(super) fn event_channel(prefix: &str, app: &str, channel: &str) -> String {
    format!("{prefix}:e:{app}:{channel}")
}

/// An app's channel.
pub(super) type Key = (Box<str>, Box<str>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// The channel has local subscribers.
    Wanted,
    /// It has none since; released at this instant unless wanted again.
    Lingering(Instant),
}

/// The bus channels this node holds, as (app, channel) keys.
#[derive(Debug)]
pub(super) struct Interest {
    held: HashMap<Key, Hold>,
    /// Release order; an entry whose key is wanted again, or lingers with another deadline,
    /// is stale and skipped.
    lingering: VecDeque<(Instant, Key)>,
    /// Keys in the `Lingering` state.
    lingering_now: usize,
    linger: Duration,
    max_lingering: usize,
}

impl Default for Interest {
    fn default() -> Self {
        Interest::new(LINGER, MAX_LINGERING)
    }
}

impl Interest {
    pub(super) fn new(linger: Duration, max_lingering: usize) -> Self {
        Interest {
            held: HashMap::new(),
            lingering: VecDeque::new(),
            lingering_now: 0,
            linger,
            max_lingering,
        }
    }

    /// A local subscriber of `key` is about to be confirmed: `true` if the node must
    /// subscribe to its bus channel first (it holds none, not even a lingering one).
    pub(super) fn want(&mut self, key: &Key) -> bool {
        match self.held.get_mut(key) {
            Some(hold @ Hold::Lingering(_)) => {
                *hold = Hold::Wanted;
                self.lingering_now -= 1;
                false
            }
            Some(Hold::Wanted) => false,
            None => {
                self.held.insert(key.clone(), Hold::Wanted);
                true
            }
        }
    }

    /// `key`'s last local subscriber left at `now`: its subscription lingers. Returns the
    /// keys to release at once because too many linger.
    pub(super) fn release(&mut self, key: &Key, now: Instant) -> Vec<Key> {
        let Some(hold) = self.held.get_mut(key) else {
            return Vec::new();
        };
        if *hold != Hold::Wanted {
            return Vec::new();
        }
        let until = now + self.linger;
        *hold = Hold::Lingering(until);
        self.lingering_now += 1;
        self.lingering.push_back((until, key.clone()));
        let mut over = Vec::new();
        while self.lingering_now > self.max_lingering {
            match self.pop_lingering() {
                Some(key) => over.push(key),
                None => break,
            }
        }
        over
    }

    /// The keys whose linger ended by `now`, no longer held.
    pub(super) fn expired(&mut self, now: Instant) -> Vec<Key> {
        let mut due = Vec::new();
        while self.lingering.front().is_some_and(|(at, _)| *at <= now) {
            if let Some(key) = self.pop_lingering() {
                due.push(key);
            }
        }
        due
    }

    /// When the next linger may end.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.lingering.front().map(|(at, _)| *at)
    }

    /// Bus channels held, lingering ones included.
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether the node holds `key`'s bus channel (wanted or lingering).
    #[cfg(test)]
    pub(super) fn holds(&self, key: &Key) -> bool {
        self.held.contains_key(key)
    }

    /// Takes the oldest queued linger: the key if it still lingers with that deadline.
    fn pop_lingering(&mut self) -> Option<Key> {
        while let Some((at, key)) = self.lingering.pop_front() {
            if self.held.get(&key) == Some(&Hold::Lingering(at)) {
                self.held.remove(&key);
                self.lingering_now -= 1;
                return Some(key);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(channel: &str) -> Key {
        ("1".into(), channel.into())
    }

    #[test]
    fn only_the_first_subscriber_subscribes_and_the_last_releases_after_the_linger() {
        let mut interest = Interest::new(Duration::from_secs(2), 100);
        let t0 = Instant::now();
        assert!(interest.want(&key("a")), "first local subscriber");
        assert!(!interest.want(&key("a")), "already held");
        assert_eq!(interest.len(), 1);
        assert!(interest.release(&key("a"), t0).is_empty());
        assert!(interest.holds(&key("a")), "lingering");
        assert_eq!(interest.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert!(interest.expired(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(interest.expired(t0 + Duration::from_secs(2)), [key("a")]);
        assert!(!interest.holds(&key("a")));
        assert_eq!(interest.len(), 0);
        assert!(
            interest.want(&key("a")),
            "subscribes again after the release"
        );
    }

    #[test]
    fn a_channel_that_fills_again_while_lingering_keeps_its_subscription() {
        let mut interest = Interest::new(Duration::from_secs(2), 100);
        let t0 = Instant::now();
        interest.want(&key("a"));
        interest.release(&key("a"), t0);
        assert!(!interest.want(&key("a")), "still subscribed: no round trip");
        assert!(
            interest.expired(t0 + Duration::from_secs(5)).is_empty(),
            "the stale linger does not release a wanted channel"
        );
        // Released again later: only the new deadline counts.
        interest.release(&key("a"), t0 + Duration::from_secs(10));
        assert!(interest.expired(t0 + Duration::from_secs(11)).is_empty());
        assert_eq!(interest.expired(t0 + Duration::from_secs(12)), [key("a")]);
        assert_eq!(interest.next_deadline(), None);
    }

    #[test]
    fn releasing_what_is_not_wanted_does_nothing() {
        let mut interest = Interest::new(Duration::from_secs(2), 100);
        let t0 = Instant::now();
        assert!(interest.release(&key("never"), t0).is_empty());
        interest.want(&key("a"));
        interest.release(&key("a"), t0);
        interest.release(&key("a"), t0 + Duration::from_secs(1));
        assert_eq!(
            interest.expired(t0 + Duration::from_secs(2)),
            [key("a")],
            "a second release does not extend the linger"
        );
        assert!(interest.expired(t0 + Duration::from_secs(9)).is_empty());
    }

    #[test]
    fn lingering_is_bounded_oldest_first() {
        let mut interest = Interest::new(Duration::from_secs(2), 2);
        let t0 = Instant::now();
        for c in ["a", "b", "c", "d"] {
            interest.want(&key(c));
        }
        assert!(interest.release(&key("a"), t0).is_empty());
        assert!(interest.release(&key("b"), t0).is_empty());
        // Re-wanted "a" no longer counts against the bound.
        interest.want(&key("a"));
        assert!(interest.release(&key("c"), t0).is_empty());
        assert_eq!(interest.release(&key("d"), t0), [key("b")]);
        assert_eq!(interest.len(), 3);
        let mut rest = interest.expired(t0 + Duration::from_secs(2));
        rest.sort();
        assert_eq!(rest, [key("c"), key("d")]);
        assert!(interest.holds(&key("a")));
    }

    #[test]
    fn bus_channels_carry_no_hash_tag() {
        let name = event_channel("herald", "1", "private-chat");
        assert_eq!(name, "herald:e:1:private-chat");
        assert!(!name.contains('{'));
    }
}
