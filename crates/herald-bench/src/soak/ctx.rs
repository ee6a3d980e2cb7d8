//! The counters every task of the soak shares, and the stamps its events carry.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::scan::{find, leading_number};

/// Counters shared by every task; each sample takes the difference since the last.
pub(super) struct Ctx {
    pub(super) base: Instant,
    /// Fan-out deliveries the server owes, and those received, by the second (since `base`)
    /// the event was published in.
    pub(super) expected: Vec<AtomicU64>,
    pub(super) received: Vec<AtomicU64>,
    pub(super) deliveries: AtomicU64,
    /// A subscriber got an event whose sequence number was not above the last one it got
    /// on its channel: a duplicate or a reordering.
    pub(super) out_of_order: AtomicU64,
    pub(super) events_published: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) client_sent: AtomicU64,
    pub(super) client_received: AtomicU64,
    /// The client-event sequence numbers a side never got, as `channel:from-to` (the first
    /// 20): whether a loss is at the start, in the middle or at the end of a run says what
    /// lost it.
    pub(super) client_gaps: Mutex<Vec<String>>,
    /// Client events each pair side has sent, by side: side `k`'s peer is `k ^ 1`.
    pub(super) pair_sent: Vec<AtomicU64>,
    pub(super) client_latency: Mutex<Histogram<u64>>,
    pub(super) churn_opened: AtomicU64,
    pub(super) churn_closed: AtomicU64,
    pub(super) connect_latency: Mutex<Histogram<u64>>,
    pub(super) webhook_posts: AtomicU64,
    pub(super) webhook_events: Mutex<BTreeMap<String, u64>>,
    /// Refused triggers, dropped long-lived connections, failed connects, error frames,
    /// malformed webhook requests.
    pub(super) errors: AtomicU64,
    pub(super) error_kinds: Mutex<BTreeMap<&'static str, u64>>,
}

impl Ctx {
    pub(super) fn client_gap(&self, channel: &str, from: u64, to: u64) {
        if let Ok(mut gaps) = self.client_gaps.lock() {
            if gaps.len() < 20 {
                gaps.push(format!("{channel}:{from}-{to}"));
            }
        }
    }

    pub(super) fn error(&self, kind: &'static str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut kinds) = self.error_kinds.lock() {
            *kinds.entry(kind).or_default() += 1;
        }
    }

    pub(super) fn second(&self, t: u64) -> usize {
        ((t / 1_000_000_000) as usize).min(self.expected.len() - 1)
    }
}

/// The number after `marker` in `frame`, without parsing the JSON.
fn number_after(frame: &[u8], marker: &[u8]) -> Option<u64> {
    leading_number(&frame[find(frame, marker)? + marker.len()..])
}

/// The publish time and sequence number of a fan-out event or a client event, whether the
/// server relays `data` as a JSON string (quotes escaped) or as an object.
pub(super) fn stamp(frame: &[u8]) -> Option<(u64, u64)> {
    let escaped = (
        number_after(frame, br#"t\":"#),
        number_after(frame, br#"s\":"#),
    );
    match escaped {
        (Some(t), Some(s)) => Some((t, s)),
        _ => Some((
            number_after(frame, br#""t":"#)?,
            number_after(frame, br#""s":"#)?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_time_and_sequence_from_string_or_object_data() {
        let event =
            br#"{"event":"soak","channel":"bench-1","data":"{\"t\":42,\"s\":7,\"p\":\"xx\"}"}"#;
        assert_eq!(stamp(event), Some((42, 7)));
        let client =
            br#"{"event":"client-soak","channel":"private-soak-pair-0","data":{"t":9,"s":3}}"#;
        assert_eq!(stamp(client), Some((9, 3)));
        assert_eq!(stamp(br#"{"event":"pusher:ping","data":{}}"#), None);
    }
}
