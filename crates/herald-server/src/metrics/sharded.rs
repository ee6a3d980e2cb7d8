//! Counters and a histogram that every worker thread updates without sharing a cache line.
//!
//! Bytes and messages are counted on each socket read and write, and publish-to-write
//! latency on each write: once per delivery. A single atomic per app would be written by
//! every worker thread for every delivery, and the cache line bouncing between cores would
//! cost more than the count. Each thread instead adds into its own slot, and a scrape sums
//! the slots, so the totals stay exact.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Slots per counter: worker threads beyond this share slots, which stays correct (the adds
/// are atomic) and only costs some contention.
const SHARDS: usize = 8;

fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// 128 bytes: x86 prefetches cache lines in pairs, so 64-byte slots still interfere.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Slot(AtomicU64);

/// A monotonic count, summed over per-thread slots.
#[derive(Debug, Default)]
pub(crate) struct ShardedCounter {
    slots: [Slot; SHARDS],
}

impl ShardedCounter {
    pub(crate) fn add(&self, n: u64) {
        self.slots[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// Upper bounds of the latency buckets, in microseconds (100 µs to 1 s; slower lands in
/// `+Inf`).
pub(crate) const LATENCY_BOUNDS_US: [u32; 13] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// One thread's share of a histogram: the bucket counts (not cumulative), the count and
/// the sum in microseconds, in one 128-byte slot.
#[repr(align(128))]
#[derive(Debug, Default)]
struct HistogramSlot {
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// A latency histogram over [`LATENCY_BOUNDS_US`], summed over per-thread slots.
#[derive(Debug, Default)]
pub(crate) struct ShardedHistogram {
    slots: [HistogramSlot; SHARDS],
}

/// What a scrape reads of a histogram.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct HistogramSnapshot {
    /// Cumulative counts per bound of [`LATENCY_BOUNDS_US`].
    pub(crate) cumulative: [u64; LATENCY_BOUNDS_US.len()],
    pub(crate) count: u64,
    pub(crate) sum_us: u64,
}

impl ShardedHistogram {
    pub(crate) fn observe_us(&self, us: u32) {
        let slot = &self.slots[shard()];
        if let Some(i) = LATENCY_BOUNDS_US.iter().position(|&b| us <= b) {
            slot.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        slot.count.fetch_add(1, Ordering::Relaxed);
        slot.sum_us.fetch_add(u64::from(us), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut out = HistogramSnapshot::default();
        // The count is read first, so a scrape racing an observation can see a bucket
        // ahead of the count but never a `+Inf` bucket (the count) below a finite one.
        for slot in &self.slots {
            out.count += slot.count.load(Ordering::Relaxed);
            out.sum_us += slot.sum_us.load(Ordering::Relaxed);
        }
        let mut running = 0;
        for (i, cumulative) in out.cumulative.iter_mut().enumerate() {
            running += self
                .slots
                .iter()
                .map(|s| s.buckets[i].load(Ordering::Relaxed))
                .sum::<u64>();
            *cumulative = running;
        }
        if let Some(&last) = out.cumulative.last() {
            out.count = out.count.max(last);
        }
        out
    }
}

/// Microseconds on a process-wide monotonic clock, as a non-zero `u32` (0 means "no
/// stamp"). It wraps after 71 minutes, so differences are taken with `wrapping_sub`; a
/// frame queued longer than that is long closed for its full outbox.
pub(crate) fn clock_us() -> u32 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = BASE.get_or_init(Instant::now);
    (base.elapsed().as_micros() as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_sums_every_thread() {
        let counter = std::sync::Arc::new(ShardedCounter::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let c = counter.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.add(3)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(counter.get(), 36_000);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = ShardedHistogram::default();
        h.observe_us(50);
        h.observe_us(100);
        h.observe_us(101);
        h.observe_us(2_000_000);
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.sum_us, 2_000_251);
        assert_eq!(s.cumulative[0], 2, "≤100 µs");
        assert_eq!(s.cumulative[1], 3, "≤250 µs");
        assert_eq!(*s.cumulative.last().unwrap(), 3, "2 s is only in +Inf");
    }

    #[test]
    fn slots_do_not_share_cache_lines() {
        assert_eq!(std::mem::size_of::<HistogramSlot>(), 128);
        assert_eq!(std::mem::size_of::<Slot>(), 128);
    }
}
