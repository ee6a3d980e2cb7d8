//! Records on disk in fjall (an LSM key-value store with a write-ahead journal) under
//! `data_dir`; the only module that names it. Each write is one journal batch, made durable
//! with an fsync (`PersistMode::SyncAll`) before it returns unless it is lazy (a delivered
//! batch's removal, made durable by the next write); writes committed while an fsync runs
//! share the next one (group commit). The figures behind the choice are in BENCHMARKS.md
//! ("Webhook stores"). A lock file keeps a second process out.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

use super::{BatchId, Change, Durability, StoreError, WebhookStore};

pub(crate) struct DiskStore {
    keyspace: Keyspace,
    batches: PartitionHandle,
    /// Durable writes committed to the journal so far, numbered from 1.
    committed: AtomicU64,
    /// The last committed write an fsync has covered. Held across the fsync: writers that
    /// commit meanwhile wait for it, and the first of them makes every one of them durable
    /// with one more fsync (group commit); a lone write pays one fsync and waits for none.
    synced: Mutex<u64>,
    /// Held for the process's life: the directory's lock.
    _lock: File,
}

/// fjall's memory bounds. Its defaults are a database's (a 16 MiB memtable per partition,
/// 64 MiB of write buffers, a 32 MiB block cache), and in the soak (BENCHMARKS.md,
/// 2026-12-08) the memtable alone grew the server's RSS from 21 to 38 MB in ten minutes
/// of webhooks before its first flush. The queue's working set is its pending batches,
/// deleted once delivered; a batch read back by id (to send or show it) is mostly still in
/// the memtable, so a small cache does.
const MEMTABLE_BYTES: u32 = 4 << 20;
/// All memtables together: also bounds a data directory whose partition was created with
/// fjall's default memtable size (a partition keeps the options it was created with).
const WRITE_BUFFER_BYTES: u64 = 8 << 20;
const CACHE_BYTES: u64 = 4 << 20;

fn database(error: impl std::fmt::Display) -> StoreError {
    StoreError::Database(error.to_string())
}

impl DiskStore {
    pub(crate) fn open(dir: &Path) -> Result<DiskStore, StoreError> {
        let io = |source| StoreError::Open {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("herald.lock"))
            .map_err(io)?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(StoreError::Locked(dir.to_owned())),
            Err(error) => return Err(io(error.into())),
        }
        let keyspace = Config::new(dir.join("webhooks"))
            .max_write_buffer_size(WRITE_BUFFER_BYTES)
            .cache_size(CACHE_BYTES)
            .open()
            .map_err(database)?;
        let batches = keyspace
            .open_partition(
                "batches",
                PartitionCreateOptions::default().max_memtable_size(MEMTABLE_BYTES),
            )
            .map_err(database)?;
        Ok(DiskStore {
            keyspace,
            batches,
            committed: AtomicU64::new(0),
            synced: Mutex::new(0),
            _lock: lock,
        })
    }
}

impl WebhookStore for DiskStore {
    fn write(&self, changes: Vec<Change>, sync: Durability) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut batch = self.keyspace.batch();
        for change in changes {
            match change {
                Change::Put(id, bytes) => batch.insert(&self.batches, id.to_be_bytes(), bytes),
                Change::Delete(id) => batch.remove(&self.batches, id.to_be_bytes()),
            }
        }
        batch.commit().map_err(database)?;
        if sync == Durability::Lazy {
            return Ok(());
        }
        // Numbered once in the journal: an fsync begun after this covers it.
        let mine = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock();
        if *synced >= mine {
            return Ok(());
        }
        let covers = self.committed.load(Ordering::SeqCst);
        self.keyspace
            .persist(PersistMode::SyncAll)
            .map_err(database)?;
        *synced = covers;
        Ok(())
    }

    fn get(&self, id: BatchId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .batches
            .get(id.to_be_bytes())
            .map_err(database)?
            .map(|v| v.to_vec()))
    }

    fn all(&self) -> Result<Vec<(BatchId, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.batches.iter() {
            let (key, value) = item.map_err(database)?;
            let key: [u8; 8] = key
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("a key is not 8 bytes".into()))?;
            out.push((BatchId::from_be_bytes(key), value.to_vec()));
        }
        Ok(out)
    }

    fn durable(&self) -> bool {
        true
    }
}
