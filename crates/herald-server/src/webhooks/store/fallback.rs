//! A cluster's queue with the node's own queue beside it, for the batches the cluster's
//! queue cannot take (its backend down or too slow to answer): they are kept in the node's
//! queue (on disk under `data_dir`, bounded per app like any queue) and moved into the
//! cluster's queue, in the order they were written and under the id they were given
//! (`Record::sent_as`), once it answers again.
//!
//! Order per endpoint and channel: while an app has batches kept aside, its new batches
//! are kept aside too, behind them, so none overtakes a batch written before it. Moving
//! and writing take one lock, so a batch written while earlier ones move waits for them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Appended, BatchId, Depth, Filter, Record, StoreError, WebhookQueue};
use crate::admission::RateLog;

/// The cluster's queue, and the node's own for what it cannot take.
pub(crate) struct WithFallback {
    shared: Arc<dyn WebhookQueue>,
    local: Arc<dyn WebhookQueue>,
    /// Held while batches are written or moved: a batch written while the kept ones move
    /// goes in after them.
    moving: Mutex<()>,
    /// Batches moved into the cluster's queue and handed to this node's deliveries by
    /// [`WebhookQueue::take_held`]; `pending` leaves them out until they finish.
    moved: Mutex<HashSet<BatchId>>,
    /// While the cluster's queue fails: when to try it again, and the wait after that.
    /// Each try may take the link's whole timeout, and the dispatcher waits for it, so
    /// tries are spaced out (doubling up to [`MAX_PROBE`]) rather than made every tick.
    away: Mutex<Option<(Instant, Duration)>>,
    log: RateLog,
}

/// The first wait before trying the cluster's queue again after it failed.
const FIRST_PROBE: Duration = Duration::from_secs(1);
/// The longest wait between two tries of a cluster's queue that fails.
const MAX_PROBE: Duration = Duration::from_secs(8);

impl std::fmt::Debug for WithFallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithFallback")
            .field("shared", &self.shared)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl WithFallback {
    pub(crate) fn new(shared: Arc<dyn WebhookQueue>, local: Arc<dyn WebhookQueue>) -> Self {
        WithFallback {
            shared,
            local,
            moving: Mutex::new(()),
            moved: Mutex::new(HashSet::new()),
            away: Mutex::new(None),
            log: RateLog::new(Duration::from_secs(10)),
        }
    }

    /// Whether the app has batches kept aside.
    fn holds(&self, app_id: &str) -> bool {
        self.local.depth(app_id).pending > 0
    }

    /// Whether the cluster's queue failed lately and is not to be tried yet.
    fn away(&self) -> bool {
        self.away
            .lock()
            .is_some_and(|(again, _)| Instant::now() < again)
    }

    /// Notes how a call to the cluster's queue went.
    fn answered<T>(&self, result: &Result<T, StoreError>) {
        let mut away = self.away.lock();
        *away = match (result, *away) {
            (Ok(_), _) => None,
            (Err(_), None) => Some((Instant::now() + FIRST_PROBE, FIRST_PROBE * 2)),
            (Err(_), Some((_, wait))) => Some((Instant::now() + wait, (wait * 2).min(MAX_PROBE))),
        };
    }

    fn finished(&self, record: &Record) {
        self.moved.lock().remove(&record.id);
    }
}

impl WebhookQueue for WithFallback {
    fn durable(&self) -> bool {
        self.shared.durable() && self.local.durable()
    }

    fn append(&self, records: &mut [Record]) -> Result<Vec<Appended>, StoreError> {
        let _moving = self.moving.lock();
        for record in records.iter_mut() {
            // Before the first try, kept with the copy kept aside: whichever write of the
            // batch reaches the cluster's queue first is the only one there.
            record.token.get_or_insert_with(rand::random);
        }
        // A dispatcher writes one app's batches: each app's kept batches are counted once.
        let mut apps: Vec<&str> = records.iter().map(|r| &*r.app_id).collect();
        apps.sort_unstable();
        apps.dedup();
        if !self.away() && !apps.iter().any(|app| self.holds(app)) {
            let written = self.shared.append(records);
            self.answered(&written);
            match written {
                Ok(outcome) => return Ok(outcome),
                Err(error) => {
                    if let Some(suppressed) = self.log.should_log() {
                        tracing::warn!(%error, suppressed, "The cluster's webhook queue cannot take batches: they are kept in the node's own queue until it answers");
                    }
                }
            }
        }
        for record in records.iter_mut() {
            record.id = 0;
        }
        let outcome = self.local.append(records)?;
        Ok(outcome
            .into_iter()
            .map(|a| match a {
                Appended::Stored(_) => Appended::Held,
                other => other,
            })
            .collect())
    }

    fn take_held(&self, app_id: &str, limit: usize) -> Result<Vec<Record>, StoreError> {
        let _moving = self.moving.lock();
        if self.away() || !self.holds(app_id) {
            return Ok(Vec::new());
        }
        let kept = self.local.pending(app_id, 0, limit)?;
        let mut records = kept.clone();
        for record in &mut records {
            // Receivers know it by the id it was kept under.
            record.sent_as = Some(record.header_id());
        }
        let written = self.shared.append(&mut records);
        self.answered(&written);
        let outcome = match written {
            Ok(outcome) => outcome,
            Err(error) => {
                if let Some(suppressed) = self.log.should_log() {
                    tracing::warn!(%error, suppressed, "The cluster's webhook queue still cannot take the batches kept in the node's own queue");
                }
                return Ok(Vec::new());
            }
        };
        // In the cluster's queue now (or refused by its bound, and counted there): a
        // crash before these removals are on disk moves them again, under the same id.
        for record in &kept {
            self.local.ack(record)?;
        }
        let mut moved = self.moved.lock();
        let records: Vec<Record> = records
            .into_iter()
            .zip(outcome)
            .filter_map(|(record, appended)| match appended {
                Appended::Stored(id) => {
                    moved.insert(id);
                    Some(record)
                }
                Appended::Held | Appended::Refused => None,
            })
            .collect();
        if !records.is_empty() {
            tracing::info!(
                app_id,
                batches = records.len(),
                "Webhook batches kept in the node's own queue moved to the cluster's queue"
            );
        }
        Ok(records)
    }

    fn pending(
        &self,
        app_id: &str,
        from: BatchId,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let mut records = self.shared.pending(app_id, from, limit)?;
        let moved = self.moved.lock();
        records.retain(|r| !moved.contains(&r.id));
        Ok(records)
    }

    fn ack(&self, record: &Record) -> Result<(), StoreError> {
        self.shared.ack(record)?;
        self.finished(record);
        Ok(())
    }

    fn reschedule(&self, record: &Record) -> Result<(), StoreError> {
        self.shared.reschedule(record)
    }

    fn dead_letter(&self, record: &mut Record, now_ms: u64) -> Result<(), StoreError> {
        self.shared.dead_letter(record, now_ms)?;
        self.finished(record);
        Ok(())
    }

    fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        self.shared.expire(now_ms)
    }

    fn depth(&self, app_id: &str) -> Depth {
        let (shared, kept) = (self.shared.depth(app_id), self.local.depth(app_id));
        Depth {
            pending: shared.pending + kept.pending,
            oldest_pending_ms: match (shared.oldest_pending_ms, kept.oldest_pending_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            dead: shared.dead,
            bytes: shared.bytes + kept.bytes,
        }
    }

    fn list(
        &self,
        filter: &Filter,
        after: Option<BatchId>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.shared.list(filter, after, limit)
    }

    fn show(&self, id: BatchId) -> Result<Option<Record>, StoreError> {
        self.shared.show(id)
    }

    fn retry(
        &self,
        filter: &Filter,
        only: Option<BatchId>,
        now_ms: u64,
    ) -> Result<Vec<BatchId>, StoreError> {
        self.shared.retry(filter, only, now_ms)
    }

    fn purge(&self, filter: &Filter) -> Result<usize, StoreError> {
        self.shared.purge(filter)
    }

    fn claim(&self, app_id: &str, limit: usize) -> Result<Vec<Record>, StoreError> {
        if self.away() {
            return Ok(Vec::new());
        }
        let claimed = self.shared.claim(app_id, limit);
        self.answered(&claimed);
        claimed
    }

    fn after_earlier<'a>(&'a self, record: &'a Record) -> super::Wait<'a> {
        self.shared.after_earlier(record)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::super::{MemoryStore, Queue};
    use super::*;

    /// A shared queue that fails every call while `down`.
    #[derive(Debug)]
    struct Flaky {
        queue: Queue,
        down: AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> Result<(), StoreError> {
            if self.down.load(Ordering::Relaxed) {
                return Err(StoreError::Database("down".into()));
            }
            Ok(())
        }
    }

    impl WebhookQueue for Flaky {
        fn durable(&self) -> bool {
            true
        }
        fn append(&self, records: &mut [Record]) -> Result<Vec<Appended>, StoreError> {
            self.check()?;
            self.queue.append(records)
        }
        fn pending(&self, app: &str, from: BatchId, n: usize) -> Result<Vec<Record>, StoreError> {
            self.check()?;
            self.queue.pending(app, from, n)
        }
        fn ack(&self, record: &Record) -> Result<(), StoreError> {
            self.check()?;
            self.queue.ack(record.id)
        }
        fn reschedule(&self, record: &Record) -> Result<(), StoreError> {
            self.queue.reschedule(record)
        }
        fn dead_letter(&self, record: &mut Record, now_ms: u64) -> Result<(), StoreError> {
            self.queue.dead_letter(record, now_ms)
        }
        fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
            self.queue.expire(now_ms)
        }
        fn depth(&self, app_id: &str) -> Depth {
            self.queue.depth(app_id)
        }
        fn list(
            &self,
            f: &Filter,
            a: Option<BatchId>,
            n: usize,
        ) -> Result<Vec<Record>, StoreError> {
            self.queue.list(f, a, n)
        }
        fn show(&self, id: BatchId) -> Result<Option<Record>, StoreError> {
            self.queue.show(id)
        }
        fn retry(
            &self,
            f: &Filter,
            o: Option<BatchId>,
            t: u64,
        ) -> Result<Vec<BatchId>, StoreError> {
            self.queue.retry(f, o, t)
        }
        fn purge(&self, f: &Filter) -> Result<usize, StoreError> {
            self.queue.purge(f)
        }
    }

    fn record(channel: &str) -> Record {
        Record {
            channels: vec![channel.into()],
            ..super::super::tests::record("app", 40)
        }
    }

    fn queues(local_bytes: usize) -> (Arc<Flaky>, WithFallback) {
        let shared = Arc::new(Flaky {
            queue: Queue::open(Box::new(MemoryStore::default()), 1 << 20, Duration::MAX)
                .expect("open"),
            down: AtomicBool::new(false),
        });
        let local = Queue::open(Box::new(MemoryStore::default()), local_bytes, Duration::MAX)
            .expect("open");
        let queue = WithFallback::new(shared.clone(), Arc::new(local));
        (shared, queue)
    }

    #[test]
    fn batches_the_shared_queue_cannot_take_are_kept_and_moved_in_order_with_their_ids() {
        let (shared, queue) = queues(1 << 20);
        let first = queue.append(&mut [record("a")]).expect("append");
        assert!(matches!(first[..], [Appended::Stored(_)]));

        shared.down.store(true, Ordering::Relaxed);
        let mut kept = [record("a"), record("b")];
        let outcome = queue.append(&mut kept).expect("kept aside");
        assert_eq!(outcome, [Appended::Held, Appended::Held]);
        let kept_ids: Vec<BatchId> = kept.iter().map(|r| r.id).collect();
        assert_eq!(queue.depth("app").pending, 3, "the gauges count them");
        assert!(queue.take_held("app", 10).expect("still down").is_empty());

        // Up again (and due for a try): a batch written before the kept ones move goes in
        // behind them.
        shared.down.store(false, Ordering::Relaxed);
        *queue.away.lock() = None;
        let mut later = [record("a")];
        assert_eq!(queue.append(&mut later).expect("append"), [Appended::Held]);
        let moved = queue.take_held("app", 10).expect("moved");
        let header_ids: Vec<BatchId> = moved.iter().map(Record::header_id).collect();
        assert_eq!(header_ids, [kept_ids[0], kept_ids[1], later[0].id]);
        assert!(moved.windows(2).all(|w| w[0].id < w[1].id), "in order");
        assert!(queue.take_held("app", 10).expect("empty").is_empty());

        // Moved, they are handed by `take_held` only, never again by `pending`.
        let pending = queue.pending("app", 0, 10).expect("pending");
        assert_eq!(pending.len(), 1, "only the first, written directly");
        assert_eq!(queue.depth("app").pending, 4);
        for record in &moved {
            queue.ack(record).expect("ack");
        }
        // Nothing kept: batches go straight to the shared queue again.
        let direct = queue.append(&mut [record("c")]).expect("append");
        assert!(matches!(direct[..], [Appended::Stored(_)]));
    }

    #[test]
    fn the_fallback_is_bounded_per_app() {
        let (shared, queue) = queues(600);
        shared.down.store(true, Ordering::Relaxed);
        let mut outcome = Vec::new();
        for _ in 0..10 {
            outcome.extend(queue.append(&mut [record("a")]).expect("append"));
        }
        let held = outcome.iter().filter(|a| **a == Appended::Held).count();
        assert!(held > 0 && held < 10, "{outcome:?}");
        assert!(outcome[held..].iter().all(|a| *a == Appended::Refused));
    }
}
