//! The durable webhook queue's workload through three embedded stores.
//!
//! A batch is written before its first attempt, and that write must be on disk (fsync)
//! before the attempt: a crash after it must not lose the batch. The delete after a
//! delivery need not be: a lost delete only sends the batch once more, which the batch id
//! lets the receiver drop. So each store is measured for:
//! - `durable each`: one durable commit per batch, the batches one after another;
//! - `durable x64`: 64 batches per durable commit (a dispatcher that groups what is
//!   waiting);
//! - `delete lazy`: deleting every batch without forcing it to disk.
//!
//! Usage: `webhook-stores DIR [BATCHES]`; DIR must be on the disk the server's `data_dir`
//! would use (the figures are the disk's fsync as much as the store's).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BODY: usize = 400;
const GROUP: usize = 64;

struct Figures {
    store: &'static str,
    durable_each: f64,
    durable_group: f64,
    delete_lazy: f64,
    bytes_on_disk: u64,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: webhook-stores DIR [BATCHES]"));
    let batches: usize = args
        .next()
        .map(|n| n.parse().expect("a number of batches"))
        .unwrap_or(20_000);
    let body = vec![b'x'; BODY];
    let figures = [
        run(&dir.join("redb"), "redb 2", batches, &body, redb_store::open),
        run(&dir.join("fjall"), "fjall 2", batches, &body, fjall_store::open),
        run(&dir.join("sqlite"), "SQLite (WAL, synchronous=FULL)", batches, &body, sqlite_store::open),
    ];
    println!("| store | durable each (batches/s) | durable x{GROUP} (batches/s) | delete, lazy (batches/s) | bytes on disk after |");
    println!("|---|---|---|---|---|");
    for f in figures {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {} |",
            f.store, f.durable_each, f.durable_group, f.delete_lazy, f.bytes_on_disk
        );
    }
}

/// What the measurement asks of a store.
trait Queue {
    /// Writes `items` in one commit, on disk before it returns.
    fn append_durable(&mut self, items: &[(u64, &[u8])]);
    /// Deletes `keys` in one commit, not forced to disk.
    fn delete_lazy(&mut self, keys: &[u64]);
}

fn run(
    dir: &Path,
    store: &'static str,
    batches: usize,
    body: &[u8],
    open: fn(&Path) -> Box<dyn Queue>,
) -> Figures {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("the store's directory");
    let mut queue = open(dir);
    // One durable commit per batch: fewer of them, fsync bounds it.
    let each = batches.min(2_000);
    let start = Instant::now();
    for key in 0..each as u64 {
        queue.append_durable(&[(key, body)]);
    }
    let durable_each = rate(each, start.elapsed());
    let start = Instant::now();
    let keys: Vec<u64> = (each as u64..(each + batches) as u64).collect();
    for group in keys.chunks(GROUP) {
        let items: Vec<(u64, &[u8])> = group.iter().map(|&k| (k, body)).collect();
        queue.append_durable(&items);
    }
    let durable_group = rate(batches, start.elapsed());
    let start = Instant::now();
    let all: Vec<u64> = (0..(each + batches) as u64).collect();
    for group in all.chunks(GROUP) {
        queue.delete_lazy(group);
    }
    let delete_lazy = rate(all.len(), start.elapsed());
    drop(queue);
    Figures {
        store,
        durable_each,
        durable_group,
        delete_lazy,
        bytes_on_disk: du(dir),
    }
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            total += if path.is_dir() {
                du(&path)
            } else {
                entry.metadata().map_or(0, |m| m.len())
            };
        }
    }
    total
}

mod redb_store {
    use std::path::Path;

    use redb::{Database, Durability, TableDefinition};

    const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");

    struct Store(Database);

    pub(super) fn open(dir: &Path) -> Box<dyn super::Queue> {
        Box::new(Store(Database::create(dir.join("queue.redb")).expect("redb")))
    }

    impl super::Queue for Store {
        fn append_durable(&mut self, items: &[(u64, &[u8])]) {
            let mut txn = self.0.begin_write().expect("write");
            txn.set_durability(Durability::Immediate);
            {
                let mut table = txn.open_table(TABLE).expect("table");
                for (key, body) in items {
                    table.insert(key, *body).expect("insert");
                }
            }
            txn.commit().expect("commit");
        }

        fn delete_lazy(&mut self, keys: &[u64]) {
            let mut txn = self.0.begin_write().expect("write");
            txn.set_durability(Durability::Eventual);
            {
                let mut table = txn.open_table(TABLE).expect("table");
                for key in keys {
                    table.remove(key).expect("remove");
                }
            }
            txn.commit().expect("commit");
        }
    }
}

mod fjall_store {
    use std::path::Path;

    use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

    struct Store {
        keyspace: Keyspace,
        batches: PartitionHandle,
    }

    pub(super) fn open(dir: &Path) -> Box<dyn super::Queue> {
        let keyspace = Config::new(dir).open().expect("fjall");
        let batches = keyspace
            .open_partition("batches", PartitionCreateOptions::default())
            .expect("partition");
        Box::new(Store { keyspace, batches })
    }

    impl super::Queue for Store {
        fn append_durable(&mut self, items: &[(u64, &[u8])]) {
            let mut batch = self.keyspace.batch();
            for (key, body) in items {
                batch.insert(&self.batches, key.to_be_bytes(), *body);
            }
            batch.commit().expect("commit");
            self.keyspace
                .persist(PersistMode::SyncAll)
                .expect("persist");
        }

        fn delete_lazy(&mut self, keys: &[u64]) {
            let mut batch = self.keyspace.batch();
            for key in keys {
                batch.remove(&self.batches, key.to_be_bytes());
            }
            batch.commit().expect("commit");
        }
    }
}

mod sqlite_store {
    use std::path::Path;

    use rusqlite::{params, Connection};

    struct Store(Connection);

    pub(super) fn open(dir: &Path) -> Box<dyn super::Queue> {
        let conn = Connection::open(dir.join("queue.sqlite")).expect("sqlite");
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE batches (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
        )
        .expect("schema");
        Box::new(Store(conn))
    }

    impl super::Queue for Store {
        fn append_durable(&mut self, items: &[(u64, &[u8])]) {
            let txn = self.0.transaction().expect("begin");
            {
                let mut insert = txn
                    .prepare_cached("INSERT INTO batches (id, body) VALUES (?1, ?2)")
                    .expect("prepare");
                for (key, body) in items {
                    insert.execute(params![*key as i64, body]).expect("insert");
                }
            }
            txn.commit().expect("commit");
        }

        fn delete_lazy(&mut self, keys: &[u64]) {
            // WAL with synchronous=NORMAL for this commit only: written, not forced.
            self.0
                .execute_batch("PRAGMA synchronous=NORMAL")
                .expect("pragma");
            let txn = self.0.transaction().expect("begin");
            {
                let mut delete = txn
                    .prepare_cached("DELETE FROM batches WHERE id = ?1")
                    .expect("prepare");
                for key in keys {
                    delete.execute(params![*key as i64]).expect("delete");
                }
            }
            txn.commit().expect("commit");
            self.0
                .execute_batch("PRAGMA synchronous=FULL")
                .expect("pragma");
        }
    }
}
