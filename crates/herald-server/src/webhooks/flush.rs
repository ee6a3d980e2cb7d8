//! The webhooks' part of a clean shutdown: the events the drain itself produces
//! (`member_removed`, `channel_vacated`) and the batches still in retry are delivered
//! before the process exits, within `webhook_flush_timeout`.
//!
//! Two steps, on every app's dispatcher and deliveries at once ([`ShutdownFlush`]):
//! - when the drain starts, `channel_vacated` is no longer held back (those already held go
//!   out at once: no client can come back to this node), and a delivery waiting out a
//!   backoff tries again now, then with short backoffs;
//! - once the node has drained and left its cluster, each dispatcher writes what it holds
//!   to the queue and stops, and shutdown waits for the deliveries up to the flush
//!   deadline. The batches still undelivered then stay in the queue on disk, for the next
//!   start (counted and logged once); with `webhook_store = "memory"` they are dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Webhooks;
use crate::metrics::WebhookOutcome;
use crate::App;

/// The first backoff of a failed delivery.
const BACKOFF: Duration = Duration::from_secs(1);
/// The longest backoff: a receiver back after a long outage waits at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// The first backoff of a delivery that fails while the node shuts down.
const FLUSH_BACKOFF: Duration = Duration::from_millis(250);

/// One app's flush state, shared by its dispatchers (a reload's replacement included) and
/// their deliveries.
#[derive(Default)]
pub(super) struct Flush {
    /// Cancelled when the drain starts: nothing is held back or waits out a long backoff.
    pub(super) now: CancellationToken,
    /// Cancelled once the node has left: dispatchers send what they hold and stop.
    pub(super) last: CancellationToken,
    /// The dispatchers and deliveries, which shutdown waits for.
    pub(super) tasks: TaskTracker,
}

impl Flush {
    /// The backoff after a delivery's `attempt`th failure: doubling from [`BACKOFF`] up to
    /// [`MAX_BACKOFF`], scaled by `jitter`; short once the node shuts down.
    pub(super) fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        if self.now.is_cancelled() {
            return FLUSH_BACKOFF;
        }
        let doubled = BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(16));
        doubled.min(MAX_BACKOFF).mul_f64(jitter)
    }

    /// Waits out `backoff`, or until the drain starts if that comes first.
    pub(super) async fn wait_out(&self, backoff: Duration) {
        let shutting_down = self.now.is_cancelled();
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = self.now.cancelled(), if !shutting_down => {}
        }
    }
}

/// Every app's webhooks through the node's shutdown.
pub(crate) struct ShutdownFlush {
    hooks: Vec<Arc<Webhooks>>,
}

impl ShutdownFlush {
    /// At the start of the drain: releases every held-back `channel_vacated` and stops
    /// holding them, and cuts the backoff of deliveries in retry.
    pub(crate) fn begin(apps: &[Arc<App>]) -> ShutdownFlush {
        let hooks: Vec<Arc<Webhooks>> = apps.iter().filter_map(|app| app.webhooks()).collect();
        for hooks in &hooks {
            hooks.bounds.flush.now.cancel();
        }
        ShutdownFlush { hooks }
    }

    /// Once the node has drained and left: every dispatcher sends what it holds and stops,
    /// and this waits for the deliveries until `deadline`. Those left stay in a durable
    /// queue for the next start, or (in memory) are dropped, counted in
    /// `herald_webhook_drops_total`; logged in one line. Returns how many were dropped.
    pub(crate) async fn finish(self, deadline: Instant) -> usize {
        for hooks in &self.hooks {
            let flush = &hooks.bounds.flush;
            flush.last.cancel();
            flush.tasks.close();
        }
        let all = futures_util::future::join_all(
            self.hooks
                .iter()
                .map(|hooks| hooks.bounds.flush.tasks.wait()),
        );
        if tokio::time::timeout_at(deadline, all).await.is_ok() {
            if !self.hooks.is_empty() {
                tracing::info!("Webhooks flushed");
            }
            return 0;
        }
        let (mut dropped, mut kept) = (0, 0);
        for hooks in &self.hooks {
            let bounds = &hooks.bounds;
            let left = bounds.max_in_flight - bounds.in_flight.available_permits();
            if bounds.queue.durable() {
                kept += left;
            } else {
                bounds.metrics.webhook(WebhookOutcome::Drop, left as u64);
                dropped += left;
            }
        }
        if kept > 0 {
            tracing::warn!(
                batches_kept = kept,
                "Webhook flush timed out (webhook_flush_timeout): the batches not delivered by then stay in the queue, for the next start (in a cluster, for another node after webhook_lease)"
            );
        }
        if dropped > 0 || kept == 0 {
            tracing::warn!(
                batches_dropped = dropped,
                "Webhook flush timed out (webhook_flush_timeout): the batches not delivered by then are dropped"
            );
        }
        dropped
    }
}
