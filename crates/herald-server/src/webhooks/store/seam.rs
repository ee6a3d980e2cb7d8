//! The seam between the dispatcher and the queue it writes to: [`WebhookQueue`], which the
//! node's own [`Queue`] (memory or disk) and the queue a cluster's nodes share (from the
//! node's backend, `adapter/`) implement alike, and [`SharedQueue`], how the backend hands
//! the shared one to every app's dispatcher.
//!
//! A shared queue differs from the node's own in two ways the dispatcher sees, each a
//! method with nothing to do on a single node: batches another node held when it died are
//! [`claimed`](WebhookQueue::claim) after a lease, and a batch may wait for earlier batches
//! on its channels that another node holds ([`WebhookQueue::after_earlier`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{Appended, BatchId, Depth, Filter, Queue, Record, StoreError};
use crate::webhooks::settings::WebhookOptions;

/// Waits, boxed: a trait object's async method.
pub(crate) type Wait<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The rules of a webhook queue, as the dispatcher and the deliveries use them. Every
/// method but [`depth`](WebhookQueue::depth) and
/// [`after_earlier`](WebhookQueue::after_earlier) may block on I/O: call them through
/// `run`, off the runtime's threads.
pub(crate) trait WebhookQueue: Send + Sync + std::fmt::Debug {
    /// Whether batches outlive the process.
    fn durable(&self) -> bool;
    /// Stores `records` (their ids set here) before their first attempt; a batch over its
    /// app's byte bound, after its oldest dead letters are gone, is refused.
    fn append(&self, records: &mut [Record]) -> Result<Vec<Appended>, StoreError>;
    /// The app's batches this node holds with an id of at least `from`, in id order, at
    /// most `limit`.
    fn pending(&self, app_id: &str, from: BatchId, limit: usize)
        -> Result<Vec<Record>, StoreError>;
    /// Removes a delivered batch.
    fn ack(&self, record: &Record) -> Result<(), StoreError>;
    /// Records a failed attempt.
    fn reschedule(&self, record: &Record) -> Result<(), StoreError>;
    /// Makes `record` a dead letter.
    fn dead_letter(&self, record: &mut Record, now_ms: u64) -> Result<(), StoreError>;
    /// Removes the dead letters older than their TTL; returns how many.
    fn expire(&self, now_ms: u64) -> Result<usize, StoreError>;
    /// The app's part of the queue, for the gauges; never blocks.
    fn depth(&self, app_id: &str) -> Depth;
    /// The operators' calls (`ops.rs`): the batches `filter` names with an id above
    /// `after`, in id order, at most `limit`.
    fn list(
        &self,
        filter: &Filter,
        after: Option<BatchId>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;
    /// The batch `id`, pending or dead.
    fn show(&self, id: BatchId) -> Result<Option<Record>, StoreError>;
    /// Makes the dead letters `filter` names (or only `only`) pending again; their ids.
    fn retry(
        &self,
        filter: &Filter,
        only: Option<BatchId>,
        now_ms: u64,
    ) -> Result<Vec<BatchId>, StoreError>;
    /// Removes the batches `filter` names; how many.
    fn purge(&self, filter: &Filter) -> Result<usize, StoreError>;
    /// Batches of the app that a node which stopped renewing its lease held: this node
    /// holds them now and delivers them (at most `limit`, oldest first). None on a queue
    /// no other node writes to.
    fn claim(&self, _app_id: &str, _limit: usize) -> Result<Vec<Record>, StoreError> {
        Ok(Vec::new())
    }
    /// Batches this node kept aside while the cluster's queue could not take them, now
    /// written there under their first id, oldest first, at most `limit`: this node
    /// delivers them, before any batch it wrote after them. None on a single node.
    fn take_held(&self, _app_id: &str, _limit: usize) -> Result<Vec<Record>, StoreError> {
        Ok(Vec::new())
    }
    /// Waits until every earlier batch to `record`'s endpoint with an event on one of its
    /// channels has finished, wherever it is held. A node's own batches already wait for
    /// each other (`order.rs`): only a queue shared by nodes has anything to wait for.
    fn after_earlier<'a>(&'a self, _record: &'a Record) -> Wait<'a> {
        Box::pin(std::future::ready(()))
    }
}

impl dyn WebhookQueue {
    /// Runs `work` on the queue off the runtime's threads.
    pub(crate) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&dyn WebhookQueue) -> T + Send + 'static,
    ) -> Option<T> {
        let queue = self.clone();
        tokio::task::spawn_blocking(move || work(&*queue))
            .await
            .ok()
    }
}

impl WebhookQueue for Queue {
    fn durable(&self) -> bool {
        Queue::durable(self)
    }
    fn append(&self, records: &mut [Record]) -> Result<Vec<Appended>, StoreError> {
        Queue::append(self, records)
    }
    fn pending(
        &self,
        app_id: &str,
        from: BatchId,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        Queue::pending(self, app_id, from, limit)
    }
    fn ack(&self, record: &Record) -> Result<(), StoreError> {
        Queue::ack(self, record.id)
    }
    fn reschedule(&self, record: &Record) -> Result<(), StoreError> {
        Queue::reschedule(self, record)
    }
    fn dead_letter(&self, record: &mut Record, now_ms: u64) -> Result<(), StoreError> {
        Queue::dead_letter(self, record, now_ms)
    }
    fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        Queue::expire(self, now_ms)
    }
    fn depth(&self, app_id: &str) -> Depth {
        Queue::depth(self, app_id)
    }
    fn list(
        &self,
        filter: &Filter,
        after: Option<BatchId>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        Queue::list(self, filter, after, limit)
    }
    fn show(&self, id: BatchId) -> Result<Option<Record>, StoreError> {
        Queue::show(self, id)
    }
    fn retry(
        &self,
        filter: &Filter,
        only: Option<BatchId>,
        now_ms: u64,
    ) -> Result<Vec<BatchId>, StoreError> {
        Queue::retry(self, filter, only, now_ms)
    }
    fn purge(&self, filter: &Filter) -> Result<usize, StoreError> {
        Queue::purge(self, filter)
    }
}

/// What every app's dispatcher runs with: the webhook settings, and the queue the
/// cluster's nodes share when the node's backend has one (it takes the place of the disk,
/// `webhook_store = "disk"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The settings (`webhook_*`, `data_dir`).
    pub options: WebhookOptions,
    /// The cluster's queue, if any.
    pub shared: SharedQueue,
}

impl WebhookSettings {
    /// `options`, with no shared queue: a single node's.
    pub fn new(options: WebhookOptions) -> Self {
        WebhookSettings {
            options,
            shared: SharedQueue::default(),
        }
    }
}

impl std::ops::Deref for WebhookSettings {
    type Target = WebhookOptions;
    fn deref(&self) -> &WebhookOptions {
        &self.options
    }
}

/// Opens the queue a cluster's nodes share; the backend's.
pub(crate) trait OpenShared: Send + Sync {
    /// The node's shared queue, opened once however often this is called.
    fn open(&self, settings: &WebhookSettings) -> Result<Arc<dyn WebhookQueue>, StoreError>;
}

/// The queue a cluster's nodes share, as the node's backend offers it; none for a single
/// node. Carried in [`WebhookSettings`], so every app's dispatcher opens the same one.
#[derive(Clone, Default)]
pub struct SharedQueue(Option<Arc<dyn OpenShared>>);

impl SharedQueue {
    /// The backend's shared queue, opened by `opener` on first use.
    pub(crate) fn new(opener: Arc<dyn OpenShared>) -> SharedQueue {
        SharedQueue(Some(opener))
    }

    /// The shared queue, or `None` when the node has none.
    pub(super) fn open(
        &self,
        settings: &WebhookSettings,
    ) -> Option<Result<Arc<dyn WebhookQueue>, StoreError>> {
        self.0.as_ref().map(|opener| opener.open(settings))
    }
}

impl std::fmt::Debug for SharedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Shared" } else { "None" })
    }
}

/// Two settings compare equal when both have a shared queue or neither does: the backend's
/// settings are compared with the backend's.
impl PartialEq for SharedQueue {
    fn eq(&self, other: &SharedQueue) -> bool {
        self.0.is_some() == other.0.is_some()
    }
}

impl Eq for SharedQueue {}
