//! Records in memory: the queue's rules without durability (`webhook_store = "memory"`,
//! and the unit tests of those rules).

use std::collections::BTreeMap;

use parking_lot::Mutex;

use super::{BatchId, Change, Durability, StoreError, WebhookStore};

#[derive(Default)]
pub(crate) struct MemoryStore {
    records: Mutex<BTreeMap<BatchId, Vec<u8>>>,
}

impl WebhookStore for MemoryStore {
    fn write(&self, changes: Vec<Change>, _: Durability) -> Result<(), StoreError> {
        let mut records = self.records.lock();
        for change in changes {
            match change {
                Change::Put(id, bytes) => {
                    records.insert(id, bytes);
                }
                Change::Delete(id) => {
                    records.remove(&id);
                }
            }
        }
        Ok(())
    }

    fn get(&self, id: BatchId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.records.lock().get(&id).cloned())
    }

    fn all(&self) -> Result<Vec<(BatchId, Vec<u8>)>, StoreError> {
        Ok(self
            .records
            .lock()
            .iter()
            .map(|(id, bytes)| (*id, bytes.clone()))
            .collect())
    }

    fn durable(&self) -> bool {
        false
    }
}
