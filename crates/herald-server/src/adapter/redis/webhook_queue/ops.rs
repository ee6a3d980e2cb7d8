//! The operators' calls (`herald webhooks list | show | retry | purge`) on the cluster's
//! queue: pending batches read from the app's stream, dead letters from its dead-letter
//! keys. A retried dead letter is written again as a new entry (a stream cannot take back
//! an old id): the operators see it under a new id, receivers under its first one
//! (`Record::sent_as`).

use std::collections::{BTreeMap, HashMap};

use super::lua::PURGE_DEAD;
use super::{batch_id, database, stream_id, Progress, StreamQueue};
use crate::webhooks::{BatchId, Filter, Record, State, StoreError, WebhookQueue};

impl StreamQueue {
    /// The app's pending batches and dead letters by id (every one: the byte bound keeps
    /// them few).
    async fn all(&self, app_id: &str) -> Result<BTreeMap<BatchId, Record>, StoreError> {
        let keys = self.keys(app_id);
        let mut conn = self.conn().await?;
        let pending: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(&keys.stream)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .map_err(database)?;
        let dead: Vec<String> = redis::cmd("ZRANGE")
            .arg(&keys.dead)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(database)?;
        let ids: Vec<&str> = pending.iter().map(|(sid, _)| sid.as_str()).collect();
        let progress = hmget(&mut conn, &keys.progress, &ids).await?;
        let mut progress: HashMap<String, Progress> = ids
            .iter()
            .zip(progress)
            .filter_map(|(sid, p)| Some(((*sid).to_owned(), Progress::decode(&p?)?)))
            .collect();
        let bodies = hmget(&mut conn, &keys.dead_records, &dead).await?;
        let mut all = BTreeMap::new();
        let entries = pending.into_iter().filter_map(|(sid, fields)| {
            let body = fields.chunks(2).find(|f| f[0] == "r").map(|f| f[1].clone());
            Some((sid, body?))
        });
        let dead = dead
            .into_iter()
            .zip(bodies)
            .filter_map(|(sid, b)| Some((sid, b?)));
        for (sid, body) in entries.chain(dead) {
            let (Some(id), Ok(mut record)) = (batch_id(&sid), Record::decode(body.as_bytes()))
            else {
                continue;
            };
            record.id = id;
            if let Some(progress) = progress.remove(&sid) {
                progress.apply(&mut record);
            }
            all.insert(id, record);
        }
        Ok(all)
    }

    pub(super) fn list_batches(
        &self,
        filter: &Filter,
        after: Option<BatchId>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let all = self.block(self.all(&filter.app_id))?;
        let from = after.map_or(0, |a| a.saturating_add(1));
        Ok(all
            .range(from..)
            .map(|(_, r)| r)
            .filter(|r| matches(filter, r))
            .take(limit)
            .cloned()
            .collect())
    }

    pub(super) fn show_batch(&self, id: BatchId) -> Result<Option<Record>, StoreError> {
        // The id names no app: the apps this node delivers for are looked in.
        let apps: Vec<String> = self.apps.lock().keys().cloned().collect();
        for app in apps {
            if let Some(record) = self.block(self.all(&app))?.remove(&id) {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    pub(super) fn retry_dead(
        &self,
        filter: &Filter,
        only: Option<BatchId>,
        now_ms: u64,
    ) -> Result<Vec<BatchId>, StoreError> {
        let dead = filter.dead();
        let mut records: Vec<Record> = self
            .block(self.all(&filter.app_id))?
            .into_values()
            .filter(|r| matches(&dead, r) && only.is_none_or(|id| id == r.id))
            .collect();
        let old: Vec<BatchId> = records.iter().map(|r| r.id).collect();
        for record in &mut records {
            record.sent_as.get_or_insert(record.id);
            record.revive(now_ms);
        }
        // Written again first: a failure between the two leaves a copy, never a loss.
        let written = self.append(&mut records)?;
        self.remove_dead(&filter.app_id, &old)?;
        Ok(written
            .into_iter()
            .filter_map(|a| match a {
                crate::webhooks::Appended::Stored(id) => Some(id),
                crate::webhooks::Appended::Held | crate::webhooks::Appended::Refused => None,
            })
            .collect())
    }

    pub(super) fn purge_batches(&self, filter: &Filter) -> Result<usize, StoreError> {
        let named: Vec<Record> = self
            .block(self.all(&filter.app_id))?
            .into_values()
            .filter(|r| matches(filter, r))
            .collect();
        let (dead, pending): (Vec<Record>, Vec<Record>) =
            named.into_iter().partition(|r| r.state() == State::Dead);
        let count = dead.len() + pending.len();
        self.remove_dead(
            &filter.app_id,
            &dead.iter().map(|r| r.id).collect::<Vec<_>>(),
        )?;
        for record in &pending {
            // As if delivered: a delivery in flight finds nothing left to finish.
            self.block(self.finish(record, None))?;
        }
        Ok(count)
    }

    fn remove_dead(&self, app_id: &str, ids: &[BatchId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys = self.keys(app_id);
        self.block(async {
            let mut script = PURGE_DEAD.prepare_invoke();
            script
                .key(&keys.dead)
                .key(&keys.dead_records)
                .key(&keys.bytes);
            for id in ids {
                script.arg(stream_id(*id));
            }
            let _: i64 = script
                .invoke_async(&mut self.conn().await?)
                .await
                .map_err(database)?;
            Ok(())
        })
    }
}

/// `fields` of the hash at `key`, in their order (none asked, none read).
pub(super) async fn hmget(
    conn: &mut super::Commands,
    key: &str,
    fields: &[impl redis::ToRedisArgs + Sync],
) -> Result<Vec<Option<String>>, StoreError> {
    if fields.is_empty() {
        return Ok(Vec::new());
    }
    redis::cmd("HMGET")
        .arg(key)
        .arg(fields)
        .query_async(conn)
        .await
        .map_err(database)
}

fn matches(filter: &Filter, record: &Record) -> bool {
    record.app_id == filter.app_id
        && filter.endpoint.as_deref().is_none_or(|e| record.url == e)
        && filter.state.is_none_or(|s| s == record.state())
}
