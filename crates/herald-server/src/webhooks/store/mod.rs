//! The webhook queue: every batch is written here before its first attempt, removed once
//! delivered, moved to the dead letters once its retry period has passed, and read back
//! after a restart.
//!
//! [`WebhookStore`] is the narrow seam to where the records live: one durable write of
//! puts and deletes, a read of one record, a read of all at open. [`Queue`] holds the
//! rules over it (ids, the per-app byte bound, dead letters and their expiry) and an index
//! of every record's small metadata, so bounds and gauges never read the disk. `memory.rs`
//! keeps records in memory (`webhook_store = "memory"`, the unit tests); `disk.rs` is the
//! only module that names the embedded database.

mod disk;
mod fallback;
mod memory;
mod ops;
mod record;
mod seam;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::webhooks::settings::WebhookStoreKind;

pub(crate) use memory::MemoryStore;
pub(crate) use ops::{Filter, State};
pub(crate) use record::Record;
pub(crate) use seam::{OpenShared, Wait, WebhookQueue};
pub use seam::{SharedQueue, WebhookSettings};

/// A batch's id: unique per data directory and across restarts, sent in
/// `X-Herald-Webhook-Id`, and its record's key (so ids order the queue).
pub(crate) type BatchId = u64;

/// Why the queue could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created or opened.
    #[error("data_dir '{path}': {source}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("data_dir '{0}' is in use by another herald process (its lock file is held)")]
    Locked(PathBuf),
    /// The embedded database failed.
    #[error("webhook queue: {0}")]
    Database(String),
    /// A record could not be decoded.
    #[error("webhook queue: a record could not be decoded: {0}")]
    Corrupt(String),
}

/// One durable change.
pub(crate) enum Change {
    Put(BatchId, Vec<u8>),
    Delete(BatchId),
}

/// Whether a write must be on disk when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Made durable (fsync) before returning: a batch written before it is sent.
    Now,
    /// Left to the store's next durable write or its own flush: the removal of a delivered
    /// batch, which a crash can at worst undo (the batch is sent again: at least once).
    Lazy,
}

/// Where the queue's records live.
pub(crate) trait WebhookStore: Send + Sync {
    /// Applies `changes` as one write, durable when this returns if `sync` says so.
    fn write(&self, changes: Vec<Change>, sync: Durability) -> Result<(), StoreError>;
    /// The record of `id`.
    fn get(&self, id: BatchId) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every record, in id order (read once, at open).
    fn all(&self) -> Result<Vec<(BatchId, Vec<u8>)>, StoreError>;
    /// Whether the records outlive the process.
    fn durable(&self) -> bool;
}

/// What the index keeps of one record.
#[derive(Debug, Clone)]
struct Meta {
    app_id: Arc<str>,
    /// The endpoint, for the operators' filter ([`ops`]).
    url: Arc<str>,
    len: usize,
    created_ms: u64,
    /// When the batch became a dead letter; `None` while pending.
    dead_ms: Option<u64>,
}

#[derive(Default)]
struct Index {
    records: BTreeMap<BatchId, Meta>,
    bytes_by_app: HashMap<Arc<str>, usize>,
}

/// What [`Queue::append`] did with one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    Stored(BatchId),
    /// A cluster's queue could not take it: the node keeps it aside and hands it over
    /// once it is there ([`WebhookQueue::take_held`]).
    Held,
    /// The app's byte bound is reached even without its dead letters: refused.
    Refused,
}

/// The queue's size, for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Depth {
    pub(crate) pending: u64,
    pub(crate) oldest_pending_ms: Option<u64>,
    pub(crate) dead: u64,
    pub(crate) bytes: u64,
}

/// The rules of the webhook queue over a [`WebhookStore`]. Calls block on the store: call
/// them off the runtime's threads (`run` on a [`WebhookQueue`]).
pub(crate) struct Queue {
    store: Box<dyn WebhookStore>,
    index: Mutex<Index>,
    next_id: AtomicU64,
    max_bytes_per_app: usize,
    dead_letter_ttl: Duration,
    /// Dead letters removed to make room, and batches refused for the bound.
    pub(crate) evicted: AtomicU64,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("durable", &self.store.durable())
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Queue {
    /// A queue over `store`, its index read from every record.
    pub(crate) fn open(
        store: Box<dyn WebhookStore>,
        max_bytes_per_app: usize,
        dead_letter_ttl: Duration,
    ) -> Result<Queue, StoreError> {
        let mut index = Index::default();
        let mut last = 0;
        for (id, bytes) in store.all()? {
            let record = Record::decode(&bytes)?;
            last = last.max(id);
            index.insert(id, record.meta(bytes.len()));
        }
        // Ids start above the clock's millisecond times 4096, so a queue that lost its
        // records (the memory store, a wiped directory) never gives a new batch an id a
        // receiver already saw.
        let first = (last + 1).max(now_ms() << 12);
        Ok(Queue {
            store,
            index: Mutex::new(index),
            next_id: AtomicU64::new(first),
            max_bytes_per_app,
            dead_letter_ttl,
            evicted: AtomicU64::new(0),
        })
    }

    /// Whether batches outlive the process.
    pub(crate) fn durable(&self) -> bool {
        self.store.durable()
    }

    /// Stores `records` in one durable write; a batch that does not fit its app's bound
    /// after removing the app's oldest dead letters is refused.
    pub(crate) fn append(&self, records: &mut [Record]) -> Result<Vec<Appended>, StoreError> {
        let mut index = self.index.lock();
        let mut changes = Vec::with_capacity(records.len());
        let mut outcome = Vec::with_capacity(records.len());
        let mut added = Vec::new();
        for record in records {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            record.id = id;
            let bytes = record.encode();
            let app: Arc<str> = record.app_id.as_str().into();
            let held = index.bytes_by_app.get(&app).copied().unwrap_or(0);
            if held + bytes.len() > self.max_bytes_per_app {
                let need = held + bytes.len() - self.max_bytes_per_app;
                let oldest_dead = index.oldest_dead(&app, need);
                if oldest_dead.iter().map(|(_, len)| len).sum::<usize>() < need {
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                    outcome.push(Appended::Refused);
                    continue;
                }
                for (dead, _) in oldest_dead {
                    index.remove(dead);
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                    changes.push(Change::Delete(dead));
                }
            }
            index.insert(id, record.meta(bytes.len()));
            added.push(id);
            changes.push(Change::Put(id, bytes));
            outcome.push(Appended::Stored(id));
        }
        if let Err(error) = self.store.write(changes, Durability::Now) {
            for id in added {
                index.remove(id);
            }
            return Err(error);
        }
        Ok(outcome)
    }

    /// The app's pending batches with an id of at least `from`, in id order, at most
    /// `limit`.
    pub(crate) fn pending(
        &self,
        app_id: &str,
        from: BatchId,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let ids: Vec<BatchId> = {
            let index = self.index.lock();
            index
                .records
                .range(from..)
                .filter(|(_, m)| m.dead_ms.is_none() && &*m.app_id == app_id)
                .map(|(id, _)| *id)
                .take(limit)
                .collect()
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(bytes) = self.store.get(id)? {
                out.push(Record::decode(&bytes)?);
            }
        }
        Ok(out)
    }

    /// Removes a delivered batch.
    pub(crate) fn ack(&self, id: BatchId) -> Result<(), StoreError> {
        self.index.lock().remove(id);
        self.store.write(vec![Change::Delete(id)], Durability::Lazy)
    }

    /// Records a failed attempt: `record` carries its attempts and next attempt.
    pub(crate) fn reschedule(&self, record: &Record) -> Result<(), StoreError> {
        self.rewrite(record)
    }

    /// Makes `record` a dead letter, kept for `webhook_dead_letter_ttl`.
    pub(crate) fn dead_letter(&self, record: &mut Record, now_ms: u64) -> Result<(), StoreError> {
        record.dead_ms = Some(now_ms);
        self.rewrite(record)
    }

    /// Writes `record` again over its earlier version, its index entry (state, bytes)
    /// with it; a record purged meanwhile (`herald webhooks purge --pending`) stays gone.
    fn rewrite(&self, record: &Record) -> Result<(), StoreError> {
        let bytes = record.encode();
        let mut index = self.index.lock();
        if !index.records.contains_key(&record.id) {
            return Ok(());
        }
        index.remove(record.id);
        index.insert(record.id, record.meta(bytes.len()));
        // Under the index's lock, so a purge cannot come between the check and the write.
        self.store
            .write(vec![Change::Put(record.id, bytes)], Durability::Now)
    }

    /// The app's dead letters, oldest first (for the operators' tools).
    #[cfg(test)]
    pub(crate) fn dead_letters(&self, app_id: &str) -> Result<Vec<Record>, StoreError> {
        let ids: Vec<BatchId> = self
            .index
            .lock()
            .records
            .iter()
            .filter(|(_, m)| m.dead_ms.is_some() && &*m.app_id == app_id)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in ids {
            if let Some(bytes) = self.store.get(id)? {
                out.push(Record::decode(&bytes)?);
            }
        }
        Ok(out)
    }

    /// Removes the dead letters older than the TTL; returns how many.
    pub(crate) fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        let ttl = self.dead_letter_ttl.as_millis() as u64;
        let mut index = self.index.lock();
        let old: Vec<BatchId> = index
            .records
            .iter()
            .filter(|(_, m)| m.dead_ms.is_some_and(|d| d + ttl <= now_ms))
            .map(|(id, _)| *id)
            .collect();
        for id in &old {
            index.remove(*id);
        }
        drop(index);
        if !old.is_empty() {
            self.store.write(
                old.iter().map(|id| Change::Delete(*id)).collect(),
                Durability::Lazy,
            )?;
        }
        Ok(old.len())
    }

    /// The size of the app's part of the queue now.
    pub(crate) fn depth(&self, app_id: &str) -> Depth {
        let index = self.index.lock();
        let mut depth = Depth::default();
        for meta in index.records.values().filter(|m| &*m.app_id == app_id) {
            depth.bytes += meta.len as u64;
            if meta.dead_ms.is_some() {
                depth.dead += 1;
            } else {
                depth.pending += 1;
                depth.oldest_pending_ms = Some(
                    depth
                        .oldest_pending_ms
                        .map_or(meta.created_ms, |o| o.min(meta.created_ms)),
                );
            }
        }
        depth
    }
}

impl Index {
    fn insert(&mut self, id: BatchId, meta: Meta) {
        *self.bytes_by_app.entry(meta.app_id.clone()).or_default() += meta.len;
        self.records.insert(id, meta);
    }

    fn remove(&mut self, id: BatchId) {
        if let Some(meta) = self.records.remove(&id) {
            if let Some(held) = self.bytes_by_app.get_mut(&meta.app_id) {
                *held = held.saturating_sub(meta.len);
            }
        }
    }

    /// The app's oldest dead letters whose bytes add up to `need`, or all of them.
    fn oldest_dead(&self, app: &str, need: usize) -> Vec<(BatchId, usize)> {
        let mut dead: Vec<(u64, BatchId, usize)> = self
            .records
            .iter()
            .filter_map(|(id, m)| {
                m.dead_ms
                    .filter(|_| &*m.app_id == app)
                    .map(|d| (d, *id, m.len))
            })
            .collect();
        dead.sort_unstable();
        let mut freed = 0;
        dead.into_iter()
            .take_while(|(_, _, len)| {
                let more = freed < need;
                freed += len;
                more
            })
            .map(|(_, id, len)| (id, len))
            .collect()
    }
}

/// The node's open disk queues by directory: one process opens a directory once, and every
/// app's dispatcher (a reload's included) shares it.
static OPEN: StdMutex<Vec<(PathBuf, Arc<Queue>)>> = StdMutex::new(Vec::new());

/// The queue `settings` name: for the disk, the cluster's shared queue when the node's
/// backend has one (with the queue of `data_dir` beside it for what the cluster's cannot
/// take), else the one open queue of `data_dir`; for memory, a new one.
pub(crate) fn open(settings: &WebhookSettings) -> Result<Arc<dyn WebhookQueue>, StoreError> {
    if settings.store == WebhookStoreKind::Disk {
        if let Some(shared) = settings.shared.open(settings) {
            // What the cluster's queue cannot take is kept in the node's own, on disk.
            let local = open_local(settings)?;
            return Ok(Arc::new(fallback::WithFallback::new(shared?, local)));
        }
    }
    open_local(settings)
}

/// The node's own queue: the one open queue of `data_dir` (opened and locked on first
/// use), or a new one in memory.
fn open_local(settings: &WebhookSettings) -> Result<Arc<dyn WebhookQueue>, StoreError> {
    let store: Box<dyn WebhookStore> = match settings.store {
        WebhookStoreKind::Memory => Box::new(MemoryStore::default()),
        WebhookStoreKind::Disk => {
            let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, queue)) = open.iter().find(|(dir, _)| *dir == settings.data_dir) {
                let queue: Arc<dyn WebhookQueue> = queue.clone();
                return Ok(queue);
            }
            let queue = Arc::new(Queue::open(
                Box::new(disk::DiskStore::open(&settings.data_dir)?),
                settings.max_stored_bytes,
                settings.dead_letter_ttl,
            )?);
            open.push((settings.data_dir.clone(), queue.clone()));
            return Ok(queue);
        }
    };
    Ok(Arc::new(Queue::open(
        store,
        settings.max_stored_bytes,
        settings.dead_letter_ttl,
    )?))
}
