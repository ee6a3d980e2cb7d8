//! Webhooks (spec §7): channel and presence events posted to the app's endpoints, signed
//! with the app secret, batched, and retried.
//!
//! The hot paths only call [`Webhooks::emit`], a non-blocking push into a bounded queue: a
//! slow or dead receiver can never stall a WebSocket or an HTTP request. When the queue is
//! full the event is dropped, counted and logged. One dispatcher task per app batches
//! events (up to 250 ms or 20 events, Pusher's window), holds `channel_vacated` back
//! briefly so a quick reconnect does not flap occupied/vacated, and hands each batch to a
//! delivery task that retries non-2xx answers and timeouts with exponential backoff for up
//! to five minutes.
//!
//! A receiver that fails makes batches pile up in retry, so what one app may hold is
//! bounded twice: deliveries in flight (`webhook_max_in_flight`) and the bytes of their
//! bodies (`webhook_max_queued_bytes`). A batch over either bound is dropped and counted.
//! Redirects are never followed: a 3xx would re-post the signed body to another host.
//! Batches to one endpoint keep their order per channel ([`order`]), and a clean shutdown
//! delivers what the drain produces within a bound ([`flush`]). A tenant's endpoint (an
//! app from the database) reaches public addresses only ([`reach`]).

mod flush;
mod order;
mod reach;

pub(crate) use flush::ShutdownFlush;
pub use reach::{AllowedNetworks, Refused, WebhookReach};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_protocol::webhook::{
    webhook_signature, HEADER_KEY, HEADER_SIGNATURE, WEBHOOK_CONTENT_TYPE,
};
use serde_json::{json, Value};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::admission::RateLog;
use crate::config::{AppConfig, WebhookConfig, WebhookSettings};
use crate::metrics::{AppMetrics, WebhookOutcome};

/// Events per batch (Pusher's limit).
const BATCH_SIZE: usize = 20;
/// How long a batch may wait for more events (Pusher's window).
const BATCH_WINDOW: Duration = Duration::from_millis(250);
/// How long a failing batch is retried.
const RETRY_FOR: Duration = Duration::from_secs(5 * 60);
/// Timeout of one delivery attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Events waiting for the dispatcher; beyond this they are dropped and counted.
const QUEUE: usize = 10_000;

/// One webhook event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// A channel got its first subscriber.
    ChannelOccupied {
        /// The channel.
        channel: Box<str>,
    },
    /// A channel lost its last subscriber.
    ChannelVacated {
        /// The channel.
        channel: Box<str>,
    },
    /// A user's first connection joined a presence channel.
    MemberAdded {
        /// The channel.
        channel: Box<str>,
        /// The user.
        user_id: Box<str>,
    },
    /// A user's last connection left a presence channel.
    MemberRemoved {
        /// The channel.
        channel: Box<str>,
        /// The user.
        user_id: Box<str>,
    },
    /// A client event was sent.
    ClientEvent {
        /// The channel.
        channel: Box<str>,
        /// The event name.
        event: Box<str>,
        /// The JSON text of the event's data, sent as a string.
        data: Box<str>,
        /// The sender's socket id.
        socket_id: Box<str>,
        /// The sender's presence user id, on presence channels.
        user_id: Option<Box<str>>,
    },
    /// A subscriber joined a cache channel with nothing cached.
    CacheMiss {
        /// The channel.
        channel: Box<str>,
    },
    /// A channel's subscription count changed.
    SubscriptionCount {
        /// The channel.
        channel: Box<str>,
        /// The new count.
        count: usize,
    },
}

impl WebhookEvent {
    /// The `name` field, which is also what endpoints filter on.
    pub fn name(&self) -> &'static str {
        match self {
            WebhookEvent::ChannelOccupied { .. } => "channel_occupied",
            WebhookEvent::ChannelVacated { .. } => "channel_vacated",
            WebhookEvent::MemberAdded { .. } => "member_added",
            WebhookEvent::MemberRemoved { .. } => "member_removed",
            WebhookEvent::ClientEvent { .. } => "client_event",
            WebhookEvent::CacheMiss { .. } => "cache_miss",
            WebhookEvent::SubscriptionCount { .. } => "subscription_count",
        }
    }

    fn channel(&self) -> &str {
        match self {
            WebhookEvent::ChannelOccupied { channel }
            | WebhookEvent::ChannelVacated { channel }
            | WebhookEvent::MemberAdded { channel, .. }
            | WebhookEvent::MemberRemoved { channel, .. }
            | WebhookEvent::ClientEvent { channel, .. }
            | WebhookEvent::CacheMiss { channel }
            | WebhookEvent::SubscriptionCount { channel, .. } => channel,
        }
    }

    fn to_json(&self) -> Value {
        let name = self.name();
        match self {
            WebhookEvent::ChannelOccupied { channel }
            | WebhookEvent::ChannelVacated { channel }
            | WebhookEvent::CacheMiss { channel } => json!({"name": name, "channel": channel}),
            WebhookEvent::MemberAdded { channel, user_id }
            | WebhookEvent::MemberRemoved { channel, user_id } => {
                json!({"name": name, "channel": channel, "user_id": user_id})
            }
            WebhookEvent::ClientEvent {
                channel,
                event,
                data,
                socket_id,
                user_id,
            } => {
                let mut v = json!({"name": name, "channel": channel, "event": event, "data": data, "socket_id": socket_id});
                if let Some(user_id) = user_id {
                    v["user_id"] = json!(user_id);
                }
                v
            }
            WebhookEvent::SubscriptionCount { channel, count } => {
                json!({"name": name, "channel": channel, "subscription_count": count})
            }
        }
    }
}

/// An app's webhook queue; cheap to call from any hot path.
#[derive(Debug)]
pub struct Webhooks {
    queue: mpsc::Sender<WebhookEvent>,
    wanted: Vec<&'static str>,
    dropped: AtomicU64,
    /// Batches dropped for the bounds on deliveries in flight and bytes held.
    batches_dropped: Arc<AtomicU64>,
    /// What the app's deliveries hold, shared with the dispatcher that replaces this one.
    bounds: Arc<Bounds>,
}

impl std::fmt::Debug for Bounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounds")
            .field("max_in_flight", &self.max_in_flight)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
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
        let mut wanted: Vec<&'static str> = Vec::new();
        for hook in &app.webhooks {
            for name in ALL_EVENTS {
                if hook.wants(name) && !wanted.contains(name) {
                    wanted.push(name);
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

    /// Whether any endpoint wants events named `name`; lets callers skip building events
    /// nobody receives.
    pub fn wants(&self, name: &str) -> bool {
        self.wanted.contains(&name)
    }

    /// Queues an event without waiting. A full queue drops it (counted and logged).
    pub fn emit(&self, event: WebhookEvent) {
        if !self.wants(event.name()) {
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

    /// Whether `other` counts its deliveries against the same bounds.
    #[cfg(test)]
    pub(crate) fn shares_bounds_with(&self, other: &Webhooks) -> bool {
        Arc::ptr_eq(&self.bounds, &other.bounds)
    }
}

const ALL_EVENTS: &[&str] = &[
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "subscription_count",
];

/// Whether `name` is a webhook event name Herald can send.
pub fn is_event_name(name: &str) -> bool {
    ALL_EVENTS.contains(&name)
}

impl WebhookConfig {
    fn wants(&self, name: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == name)
    }

    fn accepts(&self, event: &WebhookEvent) -> bool {
        self.wants(event.name())
            && self
                .channel_prefix
                .as_deref()
                .is_none_or(|p| event.channel().starts_with(p))
    }
}

struct Dispatcher {
    app_id: String,
    key: String,
    secret: String,
    endpoints: Vec<reach::Endpoint>,
    vacated_delay: Duration,
    bounds: Arc<Bounds>,
    order: order::Order,
}

/// What one app's deliveries may hold, in flight and in retry.
struct Bounds {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// Bytes of the bodies of deliveries not finished.
    bytes: AtomicUsize,
    max_bytes: usize,
    dropped: Arc<AtomicU64>,
    log: RateLog,
    /// Deliveries refused for their address, logged at a rate.
    refused_log: RateLog,
    metrics: Arc<AppMetrics>,
    /// The app's part of a clean shutdown.
    flush: flush::Flush,
}

impl Bounds {
    /// A place for a delivery of `len` bytes, or `None` (the batch is dropped, counted and
    /// logged at a rate) when the app already holds its maximum.
    fn reserve(self: &Arc<Self>, len: usize, app_id: &str) -> Option<Reserved> {
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
                self.metrics.webhook(WebhookOutcome::Drop, 1);
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(suppressed) = self.log.should_log() {
                    tracing::warn!(
                        app_id,
                        dropped,
                        suppressed,
                        max_in_flight = self.max_in_flight,
                        max_queued_bytes = self.max_bytes,
                        "Webhook batch dropped: the app holds its maximum of deliveries in retry"
                    );
                }
                None
            }
        }
    }
}

/// A delivery's place under the bounds, given back when it ends.
struct Reserved {
    bounds: Arc<Bounds>,
    len: usize,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.bounds.bytes.fetch_sub(self.len, Ordering::AcqRel);
    }
}

impl Dispatcher {
    async fn run(mut self, mut events: mpsc::Receiver<WebhookEvent>) {
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
            let events: Vec<Value> = accepted.iter().map(|e| e.to_json()).collect();
            let body = json!({"time_ms": time_ms, "events": events}).to_string();
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

/// One signed body and where it goes.
struct Delivery {
    client: reqwest::Client,
    url: String,
    /// The URL's host, for a refusal's log line.
    host: String,
    /// Set when the URL's address may not be reached: nothing is sent.
    refused: Option<Refused>,
    app_id: String,
    key: String,
    signature: String,
    body: String,
}

/// Why a delivery attempt did not get an answer.
enum Failed {
    /// The endpoint's address may not be reached: nothing was sent.
    Refused(Refused),
    /// The request failed (connection, timeout).
    Error(reqwest::Error),
}

/// Vacated channels waiting out the hold-back. Every deadline is "now plus the same
/// delay", so the queue is in deadline order and each event costs O(1), however many
/// channels a client vacates: a scan per event would make a flood quadratic.
#[derive(Default)]
struct HeldBack {
    /// Channel and deadline, oldest first; an entry whose channel no longer maps to the
    /// same deadline in `by_channel` was released or held again, and is skipped.
    queue: std::collections::VecDeque<(Box<str>, Instant)>,
    by_channel: HashMap<Box<str>, Instant>,
}

impl HeldBack {
    fn hold(&mut self, channel: Box<str>, until: Instant) {
        self.by_channel.insert(channel.clone(), until);
        self.queue.push_back((channel, until));
    }

    /// Whether `channel` was held back (it no longer is).
    fn release(&mut self, channel: &str) -> bool {
        self.by_channel.remove(channel).is_some()
    }

    fn is_live(&self, channel: &str, until: Instant) -> bool {
        self.by_channel.get(channel) == Some(&until)
    }

    fn next_due(&mut self) -> Option<Instant> {
        while let Some((channel, until)) = self.queue.front() {
            if self.is_live(channel, *until) {
                return Some(*until);
            }
            self.queue.pop_front();
        }
        None
    }

    fn take_due(&mut self, now: Instant) -> Vec<Box<str>> {
        let mut due = Vec::new();
        while let Some(until) = self.next_due() {
            if until > now {
                break;
            }
            if let Some((channel, _)) = self.queue.pop_front() {
                self.by_channel.remove(&channel);
                due.push(channel);
            }
        }
        due
    }

    fn drain(&mut self) -> impl Iterator<Item = Box<str>> + '_ {
        self.queue.clear();
        self.by_channel.drain().map(|(channel, _)| channel)
    }
}

/// The event names of a webhook body, for the console.
fn event_names(body: &[u8]) -> Vec<String> {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    parsed["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Posts one signed body once its turn has come, retrying with exponential backoff until a
/// 2xx answer or until [`RETRY_FOR`] has passed; a redirect is not followed, and not
/// retried either. While the node shuts down, backoffs are short (see [`flush`]).
async fn deliver(delivery: Delivery, reserved: Reserved, mut turn: order::Turn) {
    turn.wait().await;
    let metrics = &reserved.bounds.metrics;
    let flush = &reserved.bounds.flush;
    let Delivery {
        client,
        url,
        host,
        refused,
        app_id,
        key,
        signature,
        body,
    } = delivery;
    let shown_url = crate::config::redact_url(&url);
    let url = url.as_str();
    let started = Instant::now();
    let mut backoff = flush.first_backoff();
    let mut attempt = 1u32;
    loop {
        let result = match &refused {
            Some(refused) => Err(Failed::Refused(refused.clone())),
            None => client
                .post(url)
                .header("Content-Type", WEBHOOK_CONTENT_TYPE)
                .header(HEADER_KEY, &key)
                .header(HEADER_SIGNATURE, &signature)
                .body(body.clone())
                .send()
                .await
                .map_err(|error| match reach::refusal(&error) {
                    Some(refused) => Failed::Refused(refused.clone()),
                    None => Failed::Error(error),
                }),
        };
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        let shown = |outcome: &'static str| {
            metrics.console.emit("webhook", |row| {
                row.insert("url".into(), shown_url.as_str().into());
                row.insert("status".into(), status.into());
                row.insert("attempt".into(), attempt.into());
                row.insert("events".into(), event_names(body.as_bytes()).into());
                row.insert("outcome".into(), outcome.into());
            });
        };
        let result = match result {
            // Nothing was sent, and no retry would be let through.
            Err(Failed::Refused(refused)) => {
                reserved.bounds.refused(&app_id, &host, &refused);
                shown("refused");
                return;
            }
            Err(Failed::Error(error)) => Err(error),
            Ok(response) => Ok(response),
        };
        metrics.webhook(WebhookOutcome::Attempt, 1);
        let problem = match result {
            Ok(response) if response.status().is_success() => {
                metrics.webhook(WebhookOutcome::Success, 1);
                shown("delivered");
                return;
            }
            Ok(response) if response.status().is_redirection() => {
                metrics.webhook(WebhookOutcome::Failure, 1);
                shown("failed");
                tracing::warn!(
                    app_id,
                    url = %shown_url,
                    status = %response.status(),
                    "Webhook endpoint answered a redirect; redirects are not followed, so this batch is dropped: configure the final URL"
                );
                return;
            }
            Ok(response) => format!("status {}", response.status()),
            // reqwest's error names the URL, which may carry a password.
            Err(error) => error.without_url().to_string(),
        };
        if started.elapsed() + backoff > RETRY_FOR {
            metrics.webhook(WebhookOutcome::Failure, 1);
            shown("failed");
            tracing::warn!(
                app_id,
                url = %shown_url,
                attempt,
                problem,
                "Webhook dropped after retrying for 5 minutes"
            );
            return;
        }
        metrics.webhook(WebhookOutcome::Retry, 1);
        shown("retry");
        tracing::debug!(app_id, url = %shown_url, attempt, problem, retry_in = ?backoff, "Webhook delivery failed");
        backoff = flush.wait_out(backoff).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_as_pusher_sends_them() {
        let e = WebhookEvent::ClientEvent {
            channel: "presence-c".into(),
            event: "client-typing".into(),
            data: r#"{"typing":true}"#.into(),
            socket_id: "1.2".into(),
            user_id: Some("10".into()),
        };
        assert_eq!(
            e.to_json(),
            json!({"name":"client_event","channel":"presence-c","event":"client-typing","data":"{\"typing\":true}","socket_id":"1.2","user_id":"10"})
        );
        assert_eq!(
            WebhookEvent::MemberAdded {
                channel: "presence-a".into(),
                user_id: "1".into()
            }
            .to_json(),
            json!({"name":"member_added","channel":"presence-a","user_id":"1"})
        );
        assert_eq!(
            WebhookEvent::SubscriptionCount {
                channel: "c".into(),
                count: 2
            }
            .to_json(),
            json!({"name":"subscription_count","channel":"c","subscription_count":2})
        );
    }

    #[test]
    fn held_back_channels_come_due_in_order_and_release_once() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut held = HeldBack::default();
        held.hold("a".into(), at(10));
        held.hold("b".into(), at(20));
        held.hold("a".into(), at(30)); // vacated again later: the later deadline counts
        assert!(held.release("b"));
        assert!(!held.release("b"));
        assert_eq!(held.next_due(), Some(at(30)));
        assert!(held.take_due(at(29)).is_empty());
        assert_eq!(held.take_due(at(30)), vec![Box::<str>::from("a")]);
        assert_eq!(held.next_due(), None);
        assert!(held.queue.is_empty() && held.by_channel.is_empty());
    }

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
