//! The webhooks' part of a clean shutdown: the events the drain itself produces
//! (`member_removed`, `channel_vacated`) and the batches still in retry are delivered
//! before the process exits, within `webhook_flush_timeout`.
//!
//! Two steps, on every app's dispatcher and deliveries at once ([`ShutdownFlush`]):
//! - when the drain starts, `channel_vacated` is no longer held back (those already held go
//!   out at once: no client can come back to this node), and a delivery waiting out a
//!   backoff tries again now, then with short backoffs;
//! - once the node has drained and left its cluster, each dispatcher sends what it holds
//!   and stops, and shutdown waits for the deliveries up to the flush deadline. The
//!   batches still undelivered then are dropped, counted and logged once.
//!
//! Nothing is kept across a crash: this is a flush, not a durable queue.

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
/// The longest backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
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
    /// The backoff after a delivery's first failure.
    pub(super) fn first_backoff(&self) -> Duration {
        if self.now.is_cancelled() {
            FLUSH_BACKOFF
        } else {
            BACKOFF
        }
    }

    /// Waits out `backoff`, or until the drain starts if that comes first; returns the
    /// next backoff (doubled, or restarted short once the node shuts down).
    pub(super) async fn wait_out(&self, backoff: Duration) -> Duration {
        let shutting_down = self.now.is_cancelled();
        tokio::select! {
            () = tokio::time::sleep(backoff) => (backoff * 2).min(MAX_BACKOFF),
            () = self.now.cancelled(), if !shutting_down => FLUSH_BACKOFF,
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
    /// and this waits for the deliveries until `deadline`. Those left are dropped (their
    /// tasks end with the runtime), counted in `herald_webhook_drops_total` and logged in
    /// one line; returns how many.
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
        let mut dropped = 0;
        for hooks in &self.hooks {
            let bounds = &hooks.bounds;
            let left = bounds.max_in_flight - bounds.in_flight.available_permits();
            bounds.metrics.webhook(WebhookOutcome::Drop, left as u64);
            dropped += left;
        }
        tracing::warn!(
            batches_dropped = dropped,
            "Webhook flush timed out (webhook_flush_timeout): the batches not delivered by then are dropped"
        );
        dropped
    }
}
