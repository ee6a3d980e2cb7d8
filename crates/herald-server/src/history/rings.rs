//! Each app's channels' last events in memory, in a ring per channel bounded by count,
//! bytes and age: what a single node's history ([`super::memory::Memory`]) keeps.
//!
//! What a ring holds is the frame subscribers were sent (the same `Bytes`), so keeping an
//! event costs a reference count, and its memory is the frame's, freed when the ring
//! drops it. The event name and data are read back from the frame only when the API asks.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use herald_protocol::history::{HistoryEvent, HistoryPage};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::limits::HistoryLimits;
use super::query::Query;

/// Some of the events a recovering connection missed are no longer kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap;

/// The most channels one app keeps history for. Anyone allowed to publish (a client
/// event too) can name new channels, so the number of rings needs a bound of its own;
/// past it, events on channels without a ring are delivered but not kept.
const MAX_CHANNELS: usize = 100_000;

/// How often a full map may be swept for expired rings: a sweep walks every ring.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One app's rings, by channel.
#[derive(Debug, Default)]
pub struct Rings {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    channels: HashMap<Box<str>, Ring>,
    /// The highest serial the app gave: a new ring starts above it, so a channel whose
    /// ring expired and comes back never reuses a serial a client may hold.
    last_serial: u64,
    last_sweep: Option<Instant>,
}

#[derive(Debug)]
struct Ring {
    /// The channel's last serial: its events' serials follow each other, so a gap in
    /// them is an evicted event.
    last_serial: u64,
    events: VecDeque<Entry>,
    /// The frames' bytes.
    bytes: usize,
    /// When a cluster node last [`Rings::mark`]ed it; `None` on a single node.
    marked: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    serial: u64,
    at: Instant,
    published_at_ms: u64,
    frame: Bytes,
}

impl Ring {
    /// Drops the oldest events until the ring is within `limits` at `now`.
    fn evict(&mut self, limits: &HistoryLimits, now: Instant) {
        while let Some(oldest) = self.events.front() {
            let over = self.events.len() > limits.max_events
                || self.bytes > limits.max_bytes
                || now.duration_since(oldest.at) >= limits.max_age;
            if !over {
                break;
            }
            self.bytes -= oldest.frame.len();
            self.events.pop_front();
        }
    }
}

impl Rings {
    /// Gives the event its serial and keeps `frame` in `channel`'s ring; returns the
    /// serial, or `None` when the app is at its channel bound and the event is not kept.
    pub(crate) fn record(
        &self,
        channel: &str,
        frame: Bytes,
        limits: &HistoryLimits,
        now: Instant,
        published_at_ms: u64,
    ) -> Option<u64> {
        let mut state = self.state.lock();
        if !state.channels.contains_key(channel) && !state.room_for_a_channel(limits, now) {
            return None;
        }
        let above = state.last_serial;
        let ring = state
            .channels
            .entry(channel.into())
            .or_insert_with(|| Ring {
                last_serial: above,
                events: VecDeque::new(),
                bytes: 0,
                marked: None,
            });
        ring.last_serial += 1;
        let serial = ring.last_serial;
        ring.bytes += frame.len();
        ring.events.push_back(Entry {
            serial,
            at: now,
            published_at_ms,
            frame,
        });
        ring.evict(limits, now);
        state.last_serial = state.last_serial.max(serial);
        Some(serial)
    }

    /// Notes that a cluster node delivered `channel`'s event `serial` (given by the
    /// cluster, kept there): the ring keeps no event, only the serial, which recovery
    /// reads as it would a single node's ([`Rings::last_serial`]).
    pub(crate) fn mark(&self, channel: &str, serial: u64, limits: &HistoryLimits, now: Instant) {
        let mut state = self.state.lock();
        if !state.channels.contains_key(channel) && !state.room_for_a_channel(limits, now) {
            return;
        }
        let ring = state
            .channels
            .entry(channel.into())
            .or_insert_with(|| Ring {
                last_serial: 0,
                events: VecDeque::new(),
                bytes: 0,
                marked: None,
            });
        ring.last_serial = ring.last_serial.max(serial);
        ring.marked = Some(now);
    }

    /// The last serial `channel` gave, 0 if it keeps no ring.
    pub(crate) fn last_serial(&self, channel: &str) -> u64 {
        let state = self.state.lock();
        state
            .channels
            .get(channel)
            .map_or(0, |ring| ring.last_serial)
    }

    /// `channel`'s events after serial `after`, oldest first, for a connection that
    /// recovers; [`Gap`] if some of them are no longer kept.
    pub(crate) fn since(
        &self,
        channel: &str,
        after: u64,
        limits: &HistoryLimits,
        now: Instant,
    ) -> Result<Vec<Bytes>, Gap> {
        let mut state = self.state.lock();
        // No ring: nothing was published since the app started keeping history, or the
        // channel's ring was swept once all its events expired, which a client still
        // recovering its window would have seen few of.
        let Some(ring) = state.channels.get_mut(channel) else {
            return Ok(Vec::new());
        };
        ring.evict(limits, now);
        if ring.last_serial <= after {
            return Ok(Vec::new());
        }
        match ring.events.front() {
            Some(oldest) if oldest.serial <= after + 1 => Ok(ring
                .events
                .iter()
                .filter(|e| e.serial > after)
                .map(|e| e.frame.clone())
                .collect()),
            _ => Err(Gap),
        }
    }

    /// Drops every ring (the app turned history off), keeping the serials' high mark so
    /// that turning it on again never gives a serial twice.
    pub(crate) fn clear(&self) {
        let mut state = self.state.lock();
        state.channels = HashMap::new();
    }

    /// `channel`'s events that `query` selects, oldest first.
    pub(crate) fn page(
        &self,
        channel: &str,
        query: Query,
        limits: &HistoryLimits,
        now: Instant,
    ) -> HistoryPage {
        let (oldest_serial, newest_serial, picked) = {
            let mut state = self.state.lock();
            let Some(ring) = state.channels.get_mut(channel) else {
                return HistoryPage {
                    events: Vec::new(),
                    oldest_serial: 0,
                    newest_serial: 0,
                };
            };
            // A reload may have lowered the bounds since the last event.
            ring.evict(limits, now);
            let serial = |e: Option<&Entry>| e.map_or(0, |e| e.serial);
            let matching = ring.events.iter().filter(|e| {
                query.before.is_none_or(|b| e.serial < b)
                    && query.after.is_none_or(|a| e.serial > a)
            });
            let picked: Vec<(u64, u64, Bytes)> = if query.after.is_some() {
                matching
                    .take(query.limit)
                    .map(|e| (e.serial, e.published_at_ms, e.frame.clone()))
                    .collect()
            } else {
                let mut newest: Vec<_> = matching
                    .rev()
                    .take(query.limit)
                    .map(|e| (e.serial, e.published_at_ms, e.frame.clone()))
                    .collect();
                newest.reverse();
                newest
            };
            (
                serial(ring.events.front()),
                serial(ring.events.back()),
                picked,
            )
        };
        // Read back outside the lock: publishers of the app wait on it.
        let events = picked
            .into_iter()
            .filter_map(|(serial, published_at_ms, frame)| {
                read_back(serial, published_at_ms, &frame)
            })
            .collect();
        HistoryPage {
            events,
            oldest_serial,
            newest_serial,
        }
    }
}

impl State {
    /// Whether a new channel may get a ring: below the bound, or once a sweep of the
    /// rings whose events all expired made room.
    fn room_for_a_channel(&mut self, limits: &HistoryLimits, now: Instant) -> bool {
        let len = self.channels.len();
        // Sweeping as the map doubles keeps channels published to once from piling up;
        // at the bound, a sweep at most every second keeps a full map from costing a
        // walk per event.
        let due = (len >= 1024 && len.is_power_of_two())
            || (len >= MAX_CHANNELS
                && self
                    .last_sweep
                    .is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY));
        if due {
            self.last_sweep = Some(now);
            self.channels.retain(|_, ring| {
                ring.evict(limits, now);
                !ring.events.is_empty()
                    || ring
                        .marked
                        .is_some_and(|at| now.duration_since(at) < limits.max_age)
            });
        }
        self.channels.len() < MAX_CHANNELS
    }
}

/// A kept event as the history API shows it, read back from the frame it was sent as.
pub(crate) fn read_back(serial: u64, published_at_ms: u64, frame: &[u8]) -> Option<HistoryEvent> {
    let payload = herald_protocol::websocket::text_payload(frame)?;
    let sent: Sent = serde_json::from_slice(payload).ok()?;
    Some(HistoryEvent {
        serial,
        event: sent.event,
        data: sent.data,
        user_id: sent.user_id,
        published_at_ms,
    })
}

/// The fields of a sent event frame that the history API shows.
#[derive(Deserialize)]
struct Sent {
    event: String,
    data: Value,
    #[serde(default)]
    user_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::text_frame;
    use herald_protocol::frame;

    fn limits(max_events: usize, max_bytes: usize, max_age_secs: u64) -> HistoryLimits {
        HistoryLimits {
            max_events,
            max_age: Duration::from_secs(max_age_secs),
            max_bytes,
        }
    }

    fn event(channel: &str, n: usize) -> Bytes {
        text_frame(&frame::event("e", channel, &format!("\"{n}\""), None))
    }

    fn all(limit: usize) -> Query {
        Query {
            limit,
            before: None,
            after: None,
        }
    }

    fn serials(page: &HistoryPage) -> Vec<u64> {
        page.events.iter().map(|e| e.serial).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn serials_increase_per_channel_and_the_oldest_go_first() {
        let rings = Rings::default();
        let l = limits(3, 1 << 20, 60);
        let now = Instant::now();
        for n in 0..5 {
            rings.record("a", event("a", n), &l, now, 7);
            rings.record("b", event("b", n), &l, now, 7);
        }
        let a = rings.page("a", all(100), &l, now);
        assert_eq!(serials(&a), [3, 4, 5]);
        assert_eq!((a.oldest_serial, a.newest_serial), (3, 5));
        assert_eq!(a.events[0].data, Value::String("2".into()));
        assert_eq!(a.events[0].event, "e");
        assert_eq!(a.events[0].published_at_ms, 7);
        // A new channel starts above every serial the app gave.
        assert_eq!(serials(&rings.page("b", all(100), &l, now)), [4, 5, 6]);
        let none = rings.page("c", all(100), &l, now);
        assert!(none.events.is_empty());
        assert_eq!((none.oldest_serial, none.newest_serial), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn pages_take_the_newest_unless_asked_for_what_follows() {
        let rings = Rings::default();
        let l = limits(100, 1 << 20, 60);
        let now = Instant::now();
        for n in 0..10 {
            rings.record("a", event("a", n), &l, now, 0);
        }
        let q = |limit, before, after| Query {
            limit,
            before,
            after,
        };
        assert_eq!(
            serials(&rings.page("a", q(3, None, None), &l, now)),
            [8, 9, 10]
        );
        assert_eq!(
            serials(&rings.page("a", q(3, Some(8), None), &l, now)),
            [5, 6, 7]
        );
        assert_eq!(
            serials(&rings.page("a", q(3, None, Some(2)), &l, now)),
            [3, 4, 5]
        );
        assert_eq!(
            serials(&rings.page("a", q(9, Some(6), Some(3)), &l, now)),
            [4, 5]
        );
        assert!(rings
            .page("a", q(3, None, Some(10)), &l, now)
            .events
            .is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_and_age_evict_the_oldest() {
        let rings = Rings::default();
        let one = event("a", 0).len();
        let l = limits(100, 2 * one, 10);
        let start = Instant::now();
        for n in 0..4 {
            rings.record("a", event("a", n), &l, start, 0);
        }
        assert_eq!(serials(&rings.page("a", all(100), &l, start)), [3, 4]);
        let later = start + Duration::from_secs(6);
        rings.record("a", event("a", 5), &l, later, 0);
        assert_eq!(serials(&rings.page("a", all(100), &l, later)), [4, 5]);
        let expired = start + Duration::from_secs(10);
        assert_eq!(serials(&rings.page("a", all(100), &l, expired)), [5]);
        // An event larger than the byte bound is not kept at all.
        let small = limits(100, one - 1, 10);
        rings.record("b", event("b", 0), &small, start, 0);
        assert!(rings.page("b", all(100), &small, start).events.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_number_of_channels_is_bounded_and_expired_rings_make_room() {
        let rings = Rings::default();
        let l = limits(1, 1 << 20, 10);
        let start = Instant::now();
        for n in 0..MAX_CHANNELS {
            assert!(rings
                .record(&n.to_string(), event("x", 0), &l, start, 0)
                .is_some());
        }
        assert_eq!(rings.record("over", event("x", 0), &l, start, 0), None);
        assert!(rings.record("0", event("x", 0), &l, start, 0).is_some());
        let later = start + Duration::from_secs(11);
        let serial = rings.record("over", event("x", 0), &l, later, 0);
        assert_eq!(rings.state.lock().channels.len(), 1);
        // The channel "0" had serial 2; a ring made after its ring was swept goes above.
        assert!(rings.record("0", event("x", 0), &l, later, 0) > serial);
        assert!(serial > Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn cleared_rings_free_their_events_and_serials_go_on() {
        let rings = Rings::default();
        let l = limits(10, 1 << 20, 10);
        let now = Instant::now();
        rings.record("a", event("a", 0), &l, now, 0);
        rings.record("a", event("a", 1), &l, now, 0);
        rings.clear();
        assert!(rings.page("a", all(10), &l, now).events.is_empty());
        assert_eq!(rings.record("a", event("a", 2), &l, now, 0), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_kept_frame_is_the_one_sent() {
        let rings = Rings::default();
        let l = limits(10, 1 << 20, 10);
        let frame = event("a", 1);
        rings.record("a", frame.clone(), &l, Instant::now(), 0);
        let kept = rings.state.lock().channels["a"].events[0].frame.clone();
        // Same allocation: the ring shares the subscribers' bytes.
        assert_eq!(kept.as_ptr(), frame.as_ptr());
    }
}
