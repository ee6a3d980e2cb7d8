//! The webhook queue a cluster's nodes share: one Redis stream per app with a consumer
//! group, behind the webhooks' `WebhookQueue` seam.
//!
//! - A batch is added (XADD) and taken by the writing node's consumer (XREADGROUP) in one
//!   script, before its first attempt: it is in Redis, in that node's pending list, and no
//!   stream entry is ever left unread for another node to take.
//! - Delivered, it is acknowledged and deleted (XACK, XDEL); given up, it moves to the
//!   app's dead letters (a sorted set by time and a hash of records), kept
//!   `webhook_dead_letter_ttl`.
//! - Each node renews the lease on the batches it holds (XCLAIM to itself, JUSTID, every
//!   third of `webhook_lease`) and claims those idle longer than the lease (XAUTOCLAIM):
//!   a dead node's batches go out from another node after the lease, with the same id (the
//!   stream id, as a number) and the same signed body.
//! - Order per endpoint and channel across nodes: the app's order hash maps endpoint and
//!   channel to the last batch written there; a new batch records those it follows (its
//!   `a` field), and its delivery waits until none of them is left in the stream.
//! - Bytes per app (pending and dead) are counted in one key; a batch that would pass
//!   `webhook_max_stored_bytes` first removes the oldest dead letters, else it is refused;
//!   both are counted in the app's `evicted` key.
//!
//! - A failed attempt writes the batch's progress (attempts, next attempt, last status and
//!   error) to the app's progress hash, since the stream entry cannot change: the
//!   operators' `list` and `show` read it on every node; finishing the batch removes it.
//!
//! Keys, `{P:app}` the app's hash tag: `:wh` the stream (group `herald`), `:wh:o` the
//! order hash, `:wh:b` the bytes held, `:wh:d` and `:wh:dr` the dead letters, `:wh:ev` the
//! batches dropped for the bound, `:wh:p` the pending batches' progress, `:wh:t` the
//! stream id of each pending batch by its write's token (a write that timed out and was
//! applied after all is found again, not added twice).

mod lua;
mod ops;
mod progress;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{RedisResult, Script};
use tokio::sync::OnceCell;

use self::lua::{APPEND, FINISH, OWN, TICK, WAITING};
use self::progress::Progress;
use super::link::{self, Commands, Target, TlsStore};
use super::scripts::Keys;
use super::RedisConfig;
use crate::webhooks::WebhookSettings;
use crate::webhooks::{
    now_ms, Appended, BatchId, Depth, Filter, OpenShared, Record, SharedQueue, StoreError, Wait,
    WebhookQueue,
};

/// How often a delivery waiting for an earlier batch another node holds asks again.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// The cluster's webhook queue for `config`'s Redis, opened on first use.
pub(crate) fn webhook_queue(config: &RedisConfig) -> SharedQueue {
    SharedQueue::new(Arc::new(Opener {
        config: config.clone(),
        open: parking_lot::Mutex::new(None),
    }))
}

struct Opener {
    config: RedisConfig,
    open: parking_lot::Mutex<Option<Arc<StreamQueue>>>,
}

impl OpenShared for Opener {
    fn open(&self, settings: &WebhookSettings) -> Result<Arc<dyn WebhookQueue>, StoreError> {
        let mut open = self.open.lock();
        if let Some(queue) = &*open {
            let queue: Arc<dyn WebhookQueue> = queue.clone();
            return Ok(queue);
        }
        let queue = Arc::new(StreamQueue::new(&self.config, settings)?);
        *open = Some(queue.clone());
        Ok(queue)
    }
}

/// One node's end of the shared queue.
pub(crate) struct StreamQueue {
    target: Target,
    options: link::Options,
    keys: Keys,
    /// This process's consumer name: a restarted node is a new consumer, and what the old
    /// one held is claimed after the lease like any dead node's.
    consumer: String,
    lease: Duration,
    max_bytes: usize,
    dead_ttl: Duration,
    conn: OnceCell<Commands>,
    /// The earlier batches each batch this node holds must wait for (stream ids).
    after: Mutex<HashMap<BatchId, Vec<String>>>,
    /// Batches claimed from other nodes and not finished: `pending` does not hand them
    /// again.
    claimed: Mutex<HashSet<BatchId>>,
    /// Batches this node wrote and has not finished: never claimed back from itself, even
    /// when a late renewal let them pass the lease.
    mine: Mutex<HashSet<BatchId>>,
    /// Per app: the gauges read at its last tick, and when its lease was last renewed.
    apps: Mutex<HashMap<String, (Depth, Option<Instant>)>>,
}

impl std::fmt::Debug for StreamQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamQueue")
            .field("target", &self.target.to_string())
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

fn database(error: impl std::fmt::Display) -> StoreError {
    StoreError::Database(error.to_string())
}

/// A stream id (`ms-seq`) as a batch id: the milliseconds shifted past 20 bits of sequence.
fn batch_id(stream_id: &str) -> Option<BatchId> {
    let (ms, seq) = stream_id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    (seq < 1 << 20).then_some(ms << 20 | seq)
}

/// A batch id as the stream id it came from.
fn stream_id(id: BatchId) -> String {
    format!("{}-{}", id >> 20, id & ((1 << 20) - 1))
}

/// An entry read back: stream id, record, the ids it follows (comma-separated).
type Entry = (String, String, String);

/// What an app's tick returns: the batches claimed, the stream's length, the dead letters,
/// the bytes held, the oldest stream id ("" when none).
type Tick = (Vec<Entry>, u64, u64, i64, String);

/// The app's keys.
struct AppKeys {
    stream: String,
    order: String,
    bytes: String,
    dead: String,
    dead_records: String,
    evicted: String,
    /// Each pending batch's attempts so far, by stream id ([`Progress`]).
    progress: String,
    /// The stream id of each batch written with a token, by token (`Record::token`).
    tokens: String,
}

impl AppKeys {
    /// A call of `script` with the keys of a batch's write: stream, order, bytes, dead
    /// letters (by time, then records).
    fn invoke<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut call = script.prepare_invoke();
        call.key(&self.stream)
            .key(&self.order)
            .key(&self.bytes)
            .key(&self.dead)
            .key(&self.dead_records);
        call
    }
}

impl StreamQueue {
    fn new(config: &RedisConfig, settings: &WebhookSettings) -> Result<StreamQueue, StoreError> {
        let target = Target::parse(&config.url).map_err(database)?;
        let options = link::Options {
            tls: TlsStore::open(&config.tls).map_err(database)?,
            sentinel_tls: TlsStore::open(&config.sentinel_tls).map_err(database)?,
            ..link::Options::default()
        };
        Ok(StreamQueue {
            target,
            options,
            keys: Keys::new(&config.prefix),
            consumer: format!("{:016x}", rand::random::<u64>()),
            lease: settings.lease,
            max_bytes: settings.max_stored_bytes,
            dead_ttl: settings.dead_letter_ttl,
            conn: OnceCell::new(),
            after: Mutex::new(HashMap::new()),
            claimed: Mutex::new(HashSet::new()),
            mine: Mutex::new(HashSet::new()),
            apps: Mutex::new(HashMap::new()),
        })
    }

    fn keys(&self, app: &str) -> AppKeys {
        let tag = self.keys.app(app);
        AppKeys {
            stream: tag.key(&["wh"]),
            order: tag.key(&["wh", "o"]),
            bytes: tag.key(&["wh", "b"]),
            dead: tag.key(&["wh", "d"]),
            dead_records: tag.key(&["wh", "dr"]),
            evicted: tag.key(&["wh", "ev"]),
            progress: tag.key(&["wh", "p"]),
            tokens: tag.key(&["wh", "t"]),
        }
    }

    async fn conn(&self) -> Result<Commands, StoreError> {
        self.conn
            .get_or_try_init(|| Commands::connect(&self.target, &self.options))
            .await
            .cloned()
            .map_err(database)
    }

    /// Runs `work` to its end on this (blocking) thread.
    fn block<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::runtime::Handle::current().block_on(work)
    }

    /// Records read back from the stream: (stream id, record, the ids it follows).
    fn records(&self, app_id: &str, entries: Vec<Entry>) -> Vec<Record> {
        let mut out = Vec::with_capacity(entries.len());
        for (sid, body, after) in entries {
            let Some(id) = batch_id(&sid) else { continue };
            let Ok(mut record) = Record::decode(body.as_bytes()) else {
                tracing::error!(
                    app_id,
                    id = sid,
                    "Webhook batch in the cluster's queue cannot be decoded: skipped"
                );
                continue;
            };
            record.id = id;
            self.remember(id, &after);
            out.push(record);
        }
        out
    }

    /// Claimed batches take up their attempts where the node that held them left them
    /// (the progress hash): the attempt count, so the backoff goes on doubling, and the
    /// next attempt's time. Without it (an unreadable hash) a batch starts its backoff
    /// again, which only sends it sooner.
    fn resume_progress(&self, key: &str, records: &mut [Record]) {
        if records.is_empty() {
            return;
        }
        let ids: Vec<String> = records.iter().map(|r| stream_id(r.id)).collect();
        let read = self.block(async { ops::hmget(&mut self.conn().await?, key, &ids).await });
        match read {
            Ok(progress) => {
                for (record, progress) in records.iter_mut().zip(progress) {
                    if let Some(progress) = progress.as_deref().and_then(Progress::decode) {
                        progress.apply(record);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "Webhook batches claimed without their progress: their backoff starts again");
            }
        }
    }

    fn remember(&self, id: BatchId, after: &str) {
        if !after.is_empty() {
            self.after
                .lock()
                .insert(id, after.split(',').map(str::to_owned).collect());
        }
    }

    async fn finish(&self, record: &Record, dead: Option<u64>) -> Result<(), StoreError> {
        let keys = self.keys(&record.app_id);
        let mut script = keys.invoke(&FINISH);
        script
            .key(&keys.progress)
            .key(&keys.tokens)
            .arg(stream_id(record.id))
            .arg(&record.url)
            .arg(u8::from(dead.is_some()))
            .arg(dead.unwrap_or(0))
            .arg(if dead.is_some() {
                record.encode()
            } else {
                Vec::new()
            });
        for channel in &record.channels {
            script.arg(channel);
        }
        let _: i64 = script
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(database)?;
        self.after.lock().remove(&record.id);
        self.claimed.lock().remove(&record.id);
        self.mine.lock().remove(&record.id);
        Ok(())
    }
}

impl WebhookQueue for StreamQueue {
    fn durable(&self) -> bool {
        true
    }

    fn append(&self, records: &mut [Record]) -> Result<Vec<Appended>, StoreError> {
        // One script per app, in the order given.
        let mut outcome = vec![Appended::Refused; records.len()];
        let mut start = 0;
        while start < records.len() {
            let app = records[start].app_id.clone();
            let end = records[start..]
                .iter()
                .position(|r| r.app_id != app)
                .map_or(records.len(), |n| start + n);
            let keys = self.keys(&app);
            let mut script = keys.invoke(&APPEND);
            script
                .key(&keys.evicted)
                .key(&keys.tokens)
                .arg(&self.consumer)
                .arg(self.max_bytes)
                .arg(end - start);
            for record in &mut records[start..end] {
                // Set before the first try, and kept by a copy the caller keeps aside
                // when this write fails: a late write and that copy are one batch.
                let token = *record.token.get_or_insert_with(rand::random);
                script
                    .arg(record.encode())
                    .arg(&record.url)
                    .arg(token.to_string())
                    .arg(record.channels.len());
                for channel in &record.channels {
                    script.arg(channel);
                }
            }
            let added: Vec<(String, String)> = self.block(async {
                script
                    .invoke_async(&mut self.conn().await?)
                    .await
                    .map_err(database)
            })?;
            for (n, (sid, after)) in added.into_iter().enumerate() {
                let Some(id) = batch_id(&sid) else { continue };
                records[start + n].id = id;
                self.remember(id, &after);
                self.mine.lock().insert(id);
                outcome[start + n] = Appended::Stored(id);
            }
            start = end;
        }
        Ok(outcome)
    }

    fn pending(
        &self,
        app_id: &str,
        from: BatchId,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let keys = self.keys(app_id);
        let after = if from == 0 {
            "0-0".to_owned()
        } else {
            stream_id(from - 1)
        };
        let entries: Vec<Entry> = self.block(async {
            OWN.key(&keys.stream)
                .arg(&self.consumer)
                .arg(after)
                .arg(limit)
                .invoke_async(&mut self.conn().await?)
                .await
                .map_err(database)
        })?;
        let claimed = self.claimed.lock().clone();
        let mut records = self.records(app_id, entries);
        records.retain(|r| !claimed.contains(&r.id));
        Ok(records)
    }

    fn ack(&self, record: &Record) -> Result<(), StoreError> {
        self.block(self.finish(record, None))
    }

    fn reschedule(&self, record: &Record) -> Result<(), StoreError> {
        // A stream entry cannot change: its progress goes beside it, for the operators
        // and for the node that claims the batch, which resumes its backoff from it.
        let progress = Progress::of(record).encode();
        let key = self.keys(&record.app_id).progress;
        self.block(async {
            redis::cmd("HSET")
                .arg(&key)
                .arg(stream_id(record.id))
                .arg(progress)
                .query_async::<()>(&mut self.conn().await?)
                .await
                .map_err(database)
        })
    }

    fn dead_letter(&self, record: &mut Record, now_ms: u64) -> Result<(), StoreError> {
        record.dead_ms = Some(now_ms);
        let record = record.clone();
        self.block(self.finish(&record, Some(now_ms)))
    }

    fn expire(&self, _now_ms: u64) -> Result<usize, StoreError> {
        // Each app's tick (`claim`) expires its own.
        Ok(0)
    }

    fn depth(&self, app_id: &str) -> Depth {
        self.apps
            .lock()
            .get(app_id)
            .map(|(depth, _)| *depth)
            .unwrap_or_default()
    }

    fn list(
        &self,
        filter: &Filter,
        after: Option<BatchId>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.list_batches(filter, after, limit)
    }

    fn show(&self, id: BatchId) -> Result<Option<Record>, StoreError> {
        self.show_batch(id)
    }

    fn retry(
        &self,
        filter: &Filter,
        only: Option<BatchId>,
        now_ms: u64,
    ) -> Result<Vec<BatchId>, StoreError> {
        self.retry_dead(filter, only, now_ms)
    }

    fn purge(&self, filter: &Filter) -> Result<usize, StoreError> {
        self.purge_batches(filter)
    }

    fn claim(&self, app_id: &str, limit: usize) -> Result<Vec<Record>, StoreError> {
        let keys = self.keys(app_id);
        let now = Instant::now();
        let renew = self
            .apps
            .lock()
            .get(app_id)
            .and_then(|(_, renewed)| *renewed)
            .is_none_or(|at| now.duration_since(at) >= self.lease / 3);
        let cutoff = now_ms().saturating_sub(self.dead_ttl.as_millis() as u64);
        let (entries, pending, dead, bytes, oldest): Tick = self.block(async {
            TICK.key(&keys.stream)
                .key(&keys.dead)
                .key(&keys.dead_records)
                .key(&keys.bytes)
                .arg(&self.consumer)
                .arg(self.lease.as_millis() as u64)
                .arg(limit)
                .arg(u8::from(renew))
                .arg(cutoff)
                .invoke_async(&mut self.conn().await?)
                .await
                .map_err(database)
        })?;
        {
            let mut apps = self.apps.lock();
            let entry = apps.entry(app_id.to_owned()).or_default();
            entry.0 = Depth {
                pending,
                oldest_pending_ms: batch_id(&oldest).map(|id| id >> 20),
                dead,
                bytes: bytes.max(0) as u64,
            };
            if renew {
                entry.1 = Some(now);
            }
        }
        let mut records = self.records(app_id, entries);
        {
            let mine = self.mine.lock();
            let claimed = self.claimed.lock();
            records.retain(|r| !mine.contains(&r.id) && !claimed.contains(&r.id));
        }
        self.resume_progress(&keys.progress, &mut records);
        if !records.is_empty() {
            tracing::info!(
                app_id,
                batches = records.len(),
                "Webhook batches of a node that stopped renewing its lease claimed: this node sends them"
            );
        }
        self.claimed.lock().extend(records.iter().map(|r| r.id));
        Ok(records)
    }

    fn after_earlier<'a>(&'a self, record: &'a Record) -> Wait<'a> {
        Box::pin(async move {
            let Some(after) = self.after.lock().get(&record.id).cloned() else {
                return;
            };
            let stream = self.keys(&record.app_id).stream;
            loop {
                let waiting: RedisResult<u64> = match self.conn().await {
                    Ok(mut conn) => {
                        let mut script = WAITING.prepare_invoke();
                        script.key(&stream);
                        for id in &after {
                            script.arg(id);
                        }
                        script.invoke_async(&mut conn).await
                    }
                    Err(_) => Ok(1),
                };
                if waiting.is_ok_and(|n| n == 0) {
                    return;
                }
                tokio::time::sleep(WAIT_POLL).await;
            }
        })
    }
}
