//! One task per app: it batches events (up to [`BATCH_SIZE`] or [`BATCH_WINDOW`], Pusher's
//! limits), holds `channel_vacated` back, signs each endpoint's body and starts its
//! delivery in turn.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_protocol::webhook::{webhook_body, webhook_signature, WebhookEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::bounds::Bounds;
use super::deliver::{deliver, Delivery};
use super::holdback::HeldBack;
use super::{order, reach};

/// Events per batch (Pusher's limit).
const BATCH_SIZE: usize = 20;
/// How long a batch may wait for more events (Pusher's window).
const BATCH_WINDOW: Duration = Duration::from_millis(250);

pub(super) struct Dispatcher {
    pub(super) app_id: String,
    pub(super) key: String,
    pub(super) secret: String,
    pub(super) endpoints: Vec<reach::Endpoint>,
    pub(super) vacated_delay: Duration,
    pub(super) bounds: Arc<Bounds>,
    pub(super) order: order::Order,
}

impl Dispatcher {
    pub(super) async fn run(mut self, mut events: mpsc::Receiver<WebhookEvent>) {
        let mut batch: Vec<WebhookEvent> = Vec::new();
        let mut batch_deadline: Option<Instant> = None;
        let mut held = HeldBack::default();
        let now_token = self.bounds.flush.now.clone();
        let last_token = self.bounds.flush.last.clone();
        loop {
            let flushing = now_token.is_cancelled();
            let wake = match (batch_deadline, held.next_due()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let woke = tokio::select! {
                biased;
                () = last_token.cancelled() => Woke::Last,
                // The drain started: no client can come back here, so nothing is held back.
                () = now_token.cancelled(), if !flushing => Woke::Tick,
                event = events.recv() => Woke::Event(event),
                () = sleep_until_some(wake) => Woke::Tick,
            };
            let grew = match woke {
                Woke::Event(Some(event)) => self.take(event, &mut batch, &mut held, flushing),
                Woke::Tick => false,
                // Every sender is gone: the app is gone; send what is left and stop.
                Woke::Event(None) => return self.send_rest(batch, &mut held),
                // The node has left: what is queued and held goes out, and nothing more is
                // taken (a late event is dropped and counted by `emit`).
                Woke::Last => {
                    events.close();
                    while let Some(event) = events.recv().await {
                        self.take(event, &mut batch, &mut held, true);
                    }
                    return self.send_rest(batch, &mut held);
                }
            };
            if grew {
                batch_deadline.get_or_insert_with(|| Instant::now() + BATCH_WINDOW);
            }
            let now = Instant::now();
            let due = if now_token.is_cancelled() {
                held.drain().collect()
            } else {
                held.take_due(now)
            };
            for channel in due {
                batch.push(WebhookEvent::ChannelVacated { channel });
                batch_deadline = Some(now);
            }
            if batch.len() >= BATCH_SIZE || batch_deadline.is_some_and(|d| d <= now) {
                batch_deadline = None;
                self.send_all(std::mem::take(&mut batch));
            }
        }
    }

    /// Takes one event: a `channel_vacated` is held back (unless `flushing`), a
    /// `channel_occupied` within the hold-back cancels it, and the rest join `batch`.
    /// Returns whether the batch grew.
    fn take(
        &self,
        event: WebhookEvent,
        batch: &mut Vec<WebhookEvent>,
        held: &mut HeldBack,
        flushing: bool,
    ) -> bool {
        match event {
            WebhookEvent::ChannelVacated { channel } if !flushing => {
                held.hold(channel, Instant::now() + self.vacated_delay);
                false
            }
            WebhookEvent::ChannelOccupied { channel } if held.release(&channel) => {
                // Vacated and occupied again within the hold-back: neither is reported.
                false
            }
            event => {
                batch.push(event);
                true
            }
        }
    }

    /// Sends `batch` and then every held-back `channel_vacated`: the dispatcher stops.
    fn send_rest(&mut self, mut batch: Vec<WebhookEvent>, held: &mut HeldBack) {
        batch.extend(
            held.drain()
                .map(|channel| WebhookEvent::ChannelVacated { channel }),
        );
        self.send_all(batch);
    }

    /// Sends `events` in batches of at most [`BATCH_SIZE`], in order.
    fn send_all(&mut self, events: Vec<WebhookEvent>) {
        for chunk in events.chunks(BATCH_SIZE) {
            self.send(chunk.to_vec());
        }
    }

    /// Starts delivery of one batch to every endpoint that wants some of it.
    fn send(&mut self, batch: Vec<WebhookEvent>) {
        if batch.is_empty() {
            return;
        }
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for (place, endpoint) in self.endpoints.iter().enumerate() {
            let accepted: Vec<&WebhookEvent> = batch
                .iter()
                .filter(|e| endpoint.config.accepts(e))
                .collect();
            if accepted.is_empty() {
                continue;
            }
            let body = webhook_body(time_ms, &accepted);
            let Some(reserved) = self.bounds.reserve(body.len(), &self.app_id) else {
                continue;
            };
            let turn = self.order.next(place, accepted.iter().map(|e| e.channel()));
            let signature = webhook_signature(&self.secret, body.as_bytes());
            self.bounds.flush.tasks.spawn(deliver(
                Delivery {
                    client: endpoint.client.clone(),
                    url: endpoint.config.url.clone(),
                    host: endpoint.host.clone(),
                    refused: endpoint.refused.clone(),
                    app_id: self.app_id.clone(),
                    key: self.key.clone(),
                    signature,
                    body,
                },
                reserved,
                turn,
            ));
        }
    }
}

/// What woke a dispatcher.
enum Woke {
    /// An event, or `None`: every sender is gone.
    Event(Option<WebhookEvent>),
    /// A deadline (the batch window, a hold-back), or the start of the node's drain.
    Tick,
    /// The node has left its cluster: the last flush.
    Last,
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
