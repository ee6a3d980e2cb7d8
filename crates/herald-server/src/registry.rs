//! The registry of a node's open connections: each one's outbox, so that the sweeper can
//! run their timeouts and shutdown or a reload can close them.
//!
//! It is sharded by connection id. One lock over the whole map was held for the sweeper's
//! full pass every period (review D11): a pass over 20,000 connections kept every connect
//! and disconnect of the node waiting behind it, and the wait grows with the node's
//! connections. Sharded, a pass holds one shard at a time, and a connect waits at most for
//! one shard's share of the pass. Connection ids are given in order, so consecutive
//! connections fall in consecutive shards and the shards stay even.
//!
//! A shard is a set of outboxes keyed by their address, not a map from connection id: an
//! entry is one pointer (8 bytes and a control byte in the table), where an id and a
//! pointer took 16 and a control byte. Every idle connection pays for its entry, about
//! twice its size once the table's load factor and growth by doubling are counted: 15 B
//! instead of 28 B at 10,000 connections (BENCHMARKS.md, "Memory per idle connection").

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::ids::ConnId;
use crate::outbox::Outbox;

/// Shards of the registry: enough that one holds a small share of a node's connections, few
/// enough that their empty sets cost nothing worth counting (64 × 48 bytes).
const SHARDS: usize = 64;

/// A registered outbox, weak so a closed connection's is freed at once, and compared by
/// address: the connection that registered it is the one that removes it, with the same
/// `Arc`.
struct Entry(Weak<Outbox>);

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        Weak::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Entry {}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_ptr().hash(state);
    }
}

/// One shard: its connections' outboxes.
type Shard = Mutex<HashSet<Entry>>;

/// Every open connection's outbox.
pub struct Registry {
    shards: Box<[Shard]>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Registry {
    fn shard(&self, conn: ConnId) -> &Shard {
        &self.shards[(conn % SHARDS as u64) as usize]
    }

    /// Registers connection `conn`'s outbox (weakly: the connection task owns it).
    pub fn insert(&self, conn: ConnId, outbox: &Arc<Outbox>) {
        self.shard(conn)
            .lock()
            .insert(Entry(Arc::downgrade(outbox)));
    }

    /// Forgets connection `conn`, whose outbox is `outbox`, when its task ends.
    pub fn remove(&self, conn: ConnId, outbox: &Arc<Outbox>) {
        self.shard(conn)
            .lock()
            .remove(&Entry(Arc::downgrade(outbox)));
    }

    /// Runs `each` on every open connection's outbox, one shard locked at a time: `each`
    /// must not touch the registry.
    pub fn for_each(&self, mut each: impl FnMut(&Arc<Outbox>)) {
        for shard in &*self.shards {
            for outbox in shard.lock().iter().filter_map(|entry| entry.0.upgrade()) {
                each(&outbox);
            }
        }
    }

    /// The open connections' outboxes that `keep` selects, collected so that nothing is
    /// done to them while a shard is locked.
    pub fn collect(&self, keep: impl Fn(&Outbox) -> bool) -> Vec<Arc<Outbox>> {
        let mut out = Vec::new();
        self.for_each(|outbox| {
            if keep(outbox) {
                out.push(outbox.clone());
            }
        });
        out
    }

    /// How many connections are registered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_is_found_once_and_a_removed_one_is_gone() {
        let registry = Registry::default();
        let outboxes: Vec<Arc<Outbox>> = (0..200).map(|_| Arc::new(Outbox::new(1 << 10))).collect();
        for (conn, outbox) in outboxes.iter().enumerate() {
            registry.insert(conn as ConnId, outbox);
        }
        assert_eq!(registry.len(), 200);
        let mut seen = 0;
        registry.for_each(|_| seen += 1);
        assert_eq!(seen, 200);
        for conn in (0..200).step_by(2) {
            registry.remove(conn as ConnId, &outboxes[conn]);
        }
        assert_eq!(registry.len(), 100);
        let kept = registry.collect(|outbox| std::ptr::eq(outbox, &*outboxes[1]));
        assert_eq!(kept.len(), 1);
        assert!(Arc::ptr_eq(&kept[0], &outboxes[1]));
    }

    #[test]
    fn a_dropped_outbox_is_skipped() {
        let registry = Registry::default();
        let kept = Arc::new(Outbox::new(1 << 10));
        registry.insert(1, &kept);
        registry.insert(2, &Arc::new(Outbox::new(1 << 10)));
        assert_eq!(registry.collect(|_| true).len(), 1);
    }

    /// An entry is one pointer: the registry's share of an idle connection (see the
    /// module's documentation).
    #[test]
    fn an_entry_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Entry>(), 8);
    }
}
