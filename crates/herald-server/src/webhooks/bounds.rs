//! What one app's deliveries may hold in memory, in flight and in retry: a batch over
//! either bound stays in the queue, not in memory, and is handed to a delivery once there
//! is room again, so a dead receiver costs a bounded amount of memory.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::admission::RateLog;
use crate::metrics::{AppMetrics, WebhookOutcome};

use super::flush;
use super::store::{BatchId, WebhookQueue};

/// What one app's deliveries may hold, in flight and in retry.
pub(super) struct Bounds {
    pub(super) in_flight: Arc<Semaphore>,
    pub(super) max_in_flight: usize,
    /// Bytes of the bodies of deliveries not finished.
    pub(super) bytes: AtomicUsize,
    pub(super) max_bytes: usize,
    pub(super) dropped: Arc<AtomicU64>,
    pub(super) log: RateLog,
    /// Deliveries refused for their address, logged at a rate.
    pub(super) refused_log: RateLog,
    pub(super) metrics: Arc<AppMetrics>,
    /// The app's part of a clean shutdown.
    pub(super) flush: flush::Flush,
    /// Where the app's batches are kept until delivered.
    pub(super) queue: Arc<dyn WebhookQueue>,
    /// The app's id, its batches' key in the queue.
    pub(super) app_id: String,
    /// How long a failing batch is retried.
    pub(super) retry_period: std::time::Duration,
    /// The first batch of the app in the queue not yet handed to a delivery, when some
    /// are (after a start, or once memory's bounds were reached): later batches wait in the
    /// queue behind it, so the order holds.
    pub(super) waiting_from: parking_lot::Mutex<Option<BatchId>>,
    /// Signalled when a delivery ends, so a batch waiting in the queue is handed over at
    /// once rather than at the next tick.
    pub(super) freed: tokio::sync::Notify,
    /// Dead letters an operator made pending again (`herald webhooks retry`), to hand to
    /// deliveries at once: they are older than the batches `waiting_from` pages through.
    pub(super) retried: parking_lot::Mutex<std::collections::BTreeSet<BatchId>>,
    /// Signalled when `retried` gets ids.
    pub(super) retry: tokio::sync::Notify,
}

impl Bounds {
    /// A place for a delivery of `len` bytes, or `None` when the app already holds its
    /// maximum (the batch waits in the queue; logged at a rate).
    pub(super) fn reserve(self: &Arc<Self>, len: usize, app_id: &str) -> Option<Reserved> {
        let permit = self.in_flight.clone().try_acquire_owned().ok();
        let fits = permit.is_some()
            && self
                .bytes
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |held| {
                    (held + len <= self.max_bytes).then_some(held + len)
                })
                .is_ok();
        match permit {
            Some(permit) if fits => Some(Reserved {
                bounds: self.clone(),
                len,
                _permit: permit,
            }),
            _ => {
                if let Some(suppressed) = self.log.should_log() {
                    tracing::warn!(
                        app_id,
                        suppressed,
                        max_in_flight = self.max_in_flight,
                        max_queued_bytes = self.max_bytes,
                        "Webhook batches wait in the queue: the app holds its maximum of deliveries in memory"
                    );
                }
                None
            }
        }
    }
}

/// A delivery's place under the bounds, given back when it ends.
pub(super) struct Reserved {
    pub(super) bounds: Arc<Bounds>,
    pub(super) len: usize,
    pub(super) _permit: OwnedSemaphorePermit,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.bounds.bytes.fetch_sub(self.len, Ordering::AcqRel);
        self.bounds.freed.notify_one();
    }
}

impl Bounds {
    /// Counts batches dropped (refused by the queue's bound, or lost to a store error).
    pub(super) fn dropped(&self, batches: u64) {
        self.metrics.webhook(WebhookOutcome::Drop, batches);
        self.dropped.fetch_add(batches, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Bounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounds")
            .field("max_in_flight", &self.max_in_flight)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}
