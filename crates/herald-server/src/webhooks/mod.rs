//! Webhooks (spec §7): channel and presence events posted to the app's endpoints, signed
//! with the app secret, batched, and retried.
//!
//! The hot paths only call [`Webhooks::emit`], a non-blocking push into a bounded queue: a
//! slow or dead receiver can never stall a WebSocket or an HTTP request. When the queue is
//! full the event is dropped, counted and logged. One dispatcher task per app batches
//! events (up to 250 ms or 20 events, Pusher's window), holds `channel_vacated` back
//! briefly so a quick reconnect does not flap occupied/vacated, writes each batch to the
//! webhook queue ([`store`], on disk under `data_dir` by default) and hands it to a
//! delivery task that retries non-2xx answers and timeouts with exponential backoff and
//! jitter for `webhook_retry_period`, then makes it a dead letter. Each batch carries its
//! id in `X-Herald-Webhook-Id`; a batch is removed from the queue only once delivered, so
//! a restart or a crash sends again what was pending (at least once).
//!
//! A receiver that fails makes batches pile up in retry, so what one app holds in memory
//! is bounded twice: deliveries in flight (`webhook_max_in_flight`) and the bytes of their
//! bodies (`webhook_max_queued_bytes`). A batch over either bound waits in the queue; the
//! queue's bytes per app are bounded too (`webhook_max_stored_bytes`): the oldest dead
//! letters go first, then new batches are dropped and counted.
//! Redirects are never followed: a 3xx would re-post the signed body to another host.
//! Batches to one endpoint keep their order per channel ([`order`]), and a clean shutdown
//! delivers what the drain produces within a bound ([`flush`]). A tenant's endpoint (an
//! app from the database) reaches public addresses only ([`reach`]).

mod bounds;
mod deliver;
mod dispatch;
mod flush;
mod holdback;
#[cfg(test)]
pub(crate) mod measure;
mod order;
pub mod reach;
pub mod settings;
mod store;
mod tools;

pub use deliver::HEADER_ID;
pub(crate) use flush::ShutdownFlush;
pub use reach::WebhookConfig;
pub use reach::{AllowedNetworks, Refused, WebhookReach};
pub use settings::{WebhookOptions, WebhookStoreKind};
pub use store::StoreError;
pub(crate) use store::{
    now_ms, Appended, BatchId, Depth, Filter, OpenShared, Record, State, Wait, WebhookQueue,
};
pub use store::{SharedQueue, WebhookSettings};
pub(crate) use tools::{ToolError, Which, MAX_PAGE};

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use herald_protocol::webhook::{WebhookEvent, WebhookKind};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Semaphore};

use crate::admission::RateLog;
use crate::app_config::AppConfig;
use crate::metrics::{AppMetrics, WebhookOutcome};

use bounds::Bounds;
use dispatch::Dispatcher;

/// Timeout of one delivery attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Events waiting for the dispatcher; beyond this they are dropped and counted.
const QUEUE: usize = 10_000;

/// An app's webhook queue; cheap to call from any hot path.
#[derive(Debug)]
pub struct Webhooks {
    queue: mpsc::Sender<WebhookEvent>,
    /// The kinds some endpoint wants, one bit per [`WebhookKind`].
    wanted: Wanted,
    dropped: AtomicU64,
    /// Batches dropped for the bounds on deliveries in flight and bytes held.
    batches_dropped: Arc<AtomicU64>,
    /// What the app's deliveries hold, shared with the dispatcher that replaces this one.
    bounds: Arc<Bounds>,
}

impl Webhooks {
    /// Starts the dispatcher for `app`, or returns `None` when it has no endpoints.
    /// Must run inside a tokio runtime. A dispatcher that replaces `previous` (a reload
    /// changed the endpoints or the credentials) shares its bounds, so the deliveries the
    /// old one still retries count against the same maximum.
    pub fn start(
        app: &AppConfig,
        settings: &WebhookSettings,
        previous: Option<&Webhooks>,
        metrics: &Arc<AppMetrics>,
    ) -> Option<Arc<Webhooks>> {
        if app.webhooks.is_empty() {
            return None;
        }
        let (queue, events) = mpsc::channel(QUEUE);
        let mut wanted = Wanted::default();
        for hook in &app.webhooks {
            for kind in WebhookKind::ALL {
                if hook.wants(kind) {
                    wanted.add(kind);
                }
            }
        }
        let endpoints = match reach::endpoints(&app.webhooks, || {
            reqwest::Client::builder()
                .timeout(ATTEMPT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
        }) {
            Ok(endpoints) => endpoints,
            Err(error) => {
                tracing::error!(%error, app_id = %app.id, "Cannot build the webhook HTTP client; webhooks are off");
                return None;
            }
        };
        let bounds = match previous {
            Some(previous) => previous.bounds.clone(),
            None => Arc::new(Bounds {
                in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
                max_in_flight: settings.max_in_flight,
                bytes: AtomicUsize::new(0),
                max_bytes: settings.max_queued_bytes,
                dropped: Arc::new(AtomicU64::new(0)),
                log: RateLog::new(Duration::from_secs(10)),
                refused_log: RateLog::new(Duration::from_secs(10)),
                metrics: metrics.clone(),
                flush: flush::Flush::default(),
                queue: match store::open(settings) {
                    Ok(queue) => queue,
                    Err(error) => {
                        tracing::error!(%error, app_id = %app.id, "Cannot open the webhook queue; webhooks are off");
                        return None;
                    }
                },
                retry_period: settings.retry_period,
                app_id: app.id.clone(),
                // The queue may hold the app's batches from before a restart.
                waiting_from: parking_lot::Mutex::new(Some(0)),
                freed: tokio::sync::Notify::new(),
                retried: Default::default(),
                retry: tokio::sync::Notify::new(),
            }),
        };
        let dispatcher = Dispatcher {
            app_id: app.id.clone(),
            key: app.key.clone(),
            secret: app.secret.clone(),
            endpoints,
            vacated_delay: settings.vacated_delay,
            bounds: bounds.clone(),
            order: order::Order::default(),
            claimed: std::collections::VecDeque::new(),
            moved: std::collections::VecDeque::new(),
        };
        bounds.flush.tasks.spawn(dispatcher.run(events));
        Some(Arc::new(Webhooks {
            queue,
            wanted,
            dropped: AtomicU64::new(previous.map_or(0, Webhooks::dropped)),
            batches_dropped: bounds.dropped.clone(),
            bounds,
        }))
    }

    /// Whether any endpoint wants events of this kind; lets callers skip building events
    /// nobody receives.
    pub fn wants(&self, kind: WebhookKind) -> bool {
        self.wanted.has(kind)
    }

    /// Queues an event without waiting. A full queue drops it (counted and logged).
    pub fn emit(&self, event: WebhookEvent) {
        if !self.wants(event.kind()) {
            return;
        }
        if let Err(error) = self.queue.try_send(event) {
            self.bounds.metrics.webhook(WebhookOutcome::Drop, 1);
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Log the first drop and then every thousandth, not every event of a flood.
            if dropped == 1 || dropped % 1000 == 0 {
                match error {
                    TrySendError::Full(_) => {
                        tracing::warn!(dropped, "Webhook queue full: events dropped");
                    }
                    TrySendError::Closed(_) => {
                        tracing::warn!(dropped, "Webhook event after the shutdown's flush: dropped")
                    }
                }
            }
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Batches dropped because the app held its maximum of deliveries or bytes.
    pub fn batches_dropped(&self) -> u64 {
        self.batches_dropped.load(Ordering::Relaxed)
    }

    /// The webhook queue's size, for the gauges.
    pub(crate) fn depth(&self) -> store::Depth {
        self.bounds.queue.depth(&self.bounds.app_id)
    }

    /// Whether `other` counts its deliveries against the same bounds.
    #[cfg(test)]
    pub(crate) fn shares_bounds_with(&self, other: &Webhooks) -> bool {
        Arc::ptr_eq(&self.bounds, &other.bounds)
    }
}

/// Opens (and locks) the webhook queue `settings` name, so `herald serve` fails at start,
/// naming `data_dir`, when it cannot; the apps' dispatchers then share the open queue.
pub fn open_queue(settings: &WebhookSettings) -> Result<(), StoreError> {
    store::open(settings).map(drop)
}

/// A set of [`WebhookKind`]s.
#[derive(Debug, Default, Clone, Copy)]
struct Wanted(u8);

impl Wanted {
    fn bit(kind: WebhookKind) -> u8 {
        // Seven kinds: a bit each fits in a byte.
        1 << kind as u8
    }

    fn add(&mut self, kind: WebhookKind) {
        self.0 |= Wanted::bit(kind);
    }

    fn has(self, kind: WebhookKind) -> bool {
        self.0 & Wanted::bit(kind) != 0
    }
}

impl WebhookConfig {
    fn wants(&self, kind: WebhookKind) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == kind.name())
    }

    fn accepts(&self, event: &WebhookEvent) -> bool {
        self.wants(event.kind())
            && self
                .channel_prefix
                .as_deref()
                .is_none_or(|p| event.channel().starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_filter_by_type_and_prefix() {
        let hook = WebhookConfig {
            url: "http://x".into(),
            event_types: vec!["channel_occupied".into()],
            channel_prefix: Some("private-".into()),
            reach: WebhookReach::Anywhere,
        };
        assert!(hook.accepts(&WebhookEvent::ChannelOccupied {
            channel: "private-a".into()
        }));
        assert!(!hook.accepts(&WebhookEvent::ChannelOccupied {
            channel: "public".into()
        }));
        assert!(!hook.accepts(&WebhookEvent::ChannelVacated {
            channel: "private-a".into()
        }));
    }
}
