//! The operators' calls on the queue (`herald webhooks list | show | retry | purge`):
//! a bounded page of batches by app, endpoint and state, one batch whole, dead letters
//! made pending again, and batches removed. A cluster's queue answers the same calls.

use super::{BatchId, Change, Durability, Queue, Record, StoreError};

/// Where a batch is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    /// Waiting for delivery, in retry included.
    Pending,
    /// Given up, kept for `webhook_dead_letter_ttl`.
    Dead,
}

/// Which batches a call is about: one app's, of one endpoint (its URL exactly) or all,
/// in one state or both.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub(crate) app_id: String,
    pub(crate) endpoint: Option<String>,
    pub(crate) state: Option<State>,
}

impl Filter {
    fn matches(&self, meta: &super::Meta) -> bool {
        *meta.app_id == *self.app_id
            && self.endpoint.as_deref().is_none_or(|e| *meta.url == *e)
            && self.state.is_none_or(|s| s == state_of(meta.dead_ms))
    }
}

fn state_of(dead_ms: Option<u64>) -> State {
    match dead_ms {
        Some(_) => State::Dead,
        None => State::Pending,
    }
}

impl Filter {
    /// The dead letters of what this names.
    pub(crate) fn dead(&self) -> Filter {
        Filter {
            state: Some(State::Dead),
            ..self.clone()
        }
    }
}

impl Record {
    /// A dead letter made pending again as of `now_ms`: a new retry period from then,
    /// attempts counted from zero.
    pub(crate) fn revive(&mut self, now_ms: u64) {
        self.dead_ms = None;
        self.attempts = 0;
        self.next_attempt_ms = 0;
        self.created_ms = now_ms;
    }

    /// Whether the batch is pending or a dead letter.
    pub(crate) fn state(&self) -> State {
        state_of(self.dead_ms)
    }
}

impl Queue {
    /// The batches `filter` names with an id above `after`, in id order, at most `limit`.
    pub(crate) fn list(
        &self,
        filter: &Filter,
        after: Option<BatchId>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let from = after.map_or(0, |a| a.saturating_add(1));
        let ids: Vec<BatchId> = self
            .index
            .lock()
            .records
            .range(from..)
            .filter(|(_, m)| filter.matches(m))
            .map(|(id, _)| *id)
            .take(limit)
            .collect();
        self.read(ids)
    }

    /// The batch `id`, pending or dead.
    pub(crate) fn show(&self, id: BatchId) -> Result<Option<Record>, StoreError> {
        if !self.index.lock().records.contains_key(&id) {
            return Ok(None);
        }
        self.store.get(id)?.map(|b| Record::decode(&b)).transpose()
    }

    /// Makes the dead letters `filter` names (its state is ignored) pending again, as of
    /// `now_ms`: a new retry period from now, attempts counted from zero, the same id.
    /// `only` narrows it to one batch. Returns the ids made pending, in id order; the
    /// caller hands them to their app's deliveries.
    pub(crate) fn retry(
        &self,
        filter: &Filter,
        only: Option<BatchId>,
        now_ms: u64,
    ) -> Result<Vec<BatchId>, StoreError> {
        let dead = filter.dead();
        let mut index = self.index.lock();
        let ids: Vec<BatchId> = match only {
            Some(id) => index
                .records
                .get(&id)
                .filter(|m| dead.matches(m))
                .map(|_| vec![id])
                .unwrap_or_default(),
            None => index
                .records
                .iter()
                .filter(|(_, m)| dead.matches(m))
                .map(|(id, _)| *id)
                .collect(),
        };
        let mut changes = Vec::with_capacity(ids.len());
        let mut metas = Vec::with_capacity(ids.len());
        for id in &ids {
            let Some(bytes) = self.store.get(*id)? else {
                continue;
            };
            let mut record = Record::decode(&bytes)?;
            record.revive(now_ms);
            let bytes = record.encode();
            metas.push((*id, record.meta(bytes.len())));
            changes.push(Change::Put(*id, bytes));
        }
        self.store.write(changes, Durability::Now)?;
        let retried = metas.iter().map(|(id, _)| *id).collect();
        for (id, meta) in metas {
            index.remove(id);
            index.insert(id, meta);
        }
        Ok(retried)
    }

    /// Removes the batches `filter` names: dead letters, and pending batches only when
    /// its state says so or names none (a delivery in flight then ends without a trace:
    /// its acknowledgement or new attempt finds nothing to write). Returns how many.
    pub(crate) fn purge(&self, filter: &Filter) -> Result<usize, StoreError> {
        let mut index = self.index.lock();
        let ids: Vec<BatchId> = index
            .records
            .iter()
            .filter(|(_, m)| filter.matches(m))
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        self.store.write(
            ids.iter().map(|id| Change::Delete(*id)).collect(),
            Durability::Now,
        )?;
        for id in &ids {
            index.remove(*id);
        }
        Ok(ids.len())
    }

    fn read(&self, ids: Vec<BatchId>) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(bytes) = self.store.get(id)? {
                out.push(Record::decode(&bytes)?);
            }
        }
        Ok(out)
    }
}
