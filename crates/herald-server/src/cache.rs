//! Cache channels (spec §5): the last event triggered through the HTTP API on a `cache-`
//! channel is kept for a while and replayed to each new subscriber.
//!
//! The stored value is the exact frame subscribers already received, so a replay costs a
//! reference-count increment. Client events never populate the cache (as soketi and the
//! Pusher docs have it).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
struct Entry {
    frame: Bytes,
    /// The event's `data` JSON token, for `info=cache` on the channel query.
    data: Box<str>,
    expires: Instant,
}

/// One app's cached events by channel.
#[derive(Debug, Default)]
pub struct EventCache {
    entries: Mutex<HashMap<Box<str>, Entry>>,
}

/// A cached event as the channel query reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The event's `data` JSON token.
    pub data: Box<str>,
    /// Time left before it expires.
    pub ttl: Duration,
}

impl EventCache {
    /// Remembers `frame` as the last event of `channel` for `ttl`.
    pub fn store(&self, channel: &str, frame: Bytes, data: &str, ttl: Duration) {
        let mut entries = self.entries.lock();
        let now = Instant::now();
        // Expired entries are dropped as new ones arrive, so the map cannot grow with
        // channels that stopped being used.
        if entries.len() >= 1024 && entries.len().is_power_of_two() {
            entries.retain(|_, e| e.expires > now);
        }
        entries.insert(
            channel.into(),
            Entry {
                frame,
                data: data.into(),
                expires: now + ttl,
            },
        );
    }

    /// The frame to replay to a new subscriber of `channel`, if one is cached.
    pub fn frame(&self, channel: &str) -> Option<Bytes> {
        let entries = self.entries.lock();
        entries
            .get(channel)
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.frame.clone())
    }

    /// Drops `channel`'s event: a cluster node that stops hearing the channel's events
    /// would otherwise replay a stale one.
    pub fn forget(&self, channel: &str) {
        self.entries.lock().remove(channel);
    }

    /// The channels holding an unexpired event (for the console).
    pub fn channels(&self) -> Vec<String> {
        let now = Instant::now();
        self.entries
            .lock()
            .iter()
            .filter(|(_, e)| e.expires > now)
            .map(|(channel, _)| channel.to_string())
            .collect()
    }

    /// The cached event of `channel` for the channel query.
    pub fn get(&self, channel: &str) -> Option<Cached> {
        let now = Instant::now();
        let entries = self.entries.lock();
        entries
            .get(channel)
            .filter(|e| e.expires > now)
            .map(|e| Cached {
                data: e.data.clone(),
                ttl: e.expires - now,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire() {
        let cache = EventCache::default();
        cache.store(
            "cache-a",
            Bytes::from_static(b"f"),
            "\"d\"",
            Duration::from_secs(10),
        );
        assert_eq!(cache.frame("cache-a"), Some(Bytes::from_static(b"f")));
        assert_eq!(
            cache.get("cache-a").map(|c| c.ttl),
            Some(Duration::from_secs(10))
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(cache.frame("cache-a"), None);
        assert_eq!(cache.get("cache-a"), None);
        assert_eq!(cache.frame("cache-b"), None);
    }
}
