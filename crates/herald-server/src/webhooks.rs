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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_protocol::webhook::{
    webhook_signature, HEADER_KEY, HEADER_SIGNATURE, WEBHOOK_CONTENT_TYPE,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{AppConfig, WebhookConfig};

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
}

impl Webhooks {
    /// Starts the dispatcher for `app`, or returns `None` when it has no endpoints.
    /// Must run inside a tokio runtime.
    pub fn start(app: &AppConfig, vacated_delay: Duration) -> Option<Arc<Webhooks>> {
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
        let client = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build() {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, app_id = %app.id, "Cannot build the webhook HTTP client; webhooks are off");
                return None;
            }
        };
        let dispatcher = Dispatcher {
            app_id: app.id.clone(),
            key: app.key.clone(),
            secret: app.secret.clone(),
            endpoints: app.webhooks.clone(),
            client,
            vacated_delay,
        };
        tokio::spawn(dispatcher.run(events));
        Some(Arc::new(Webhooks {
            queue,
            wanted,
            dropped: AtomicU64::new(0),
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
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Log the first drop and then every thousandth, not every event of a flood.
            if dropped == 1 || dropped % 1000 == 0 {
                tracing::warn!(dropped, %error, "Webhook queue full: events dropped");
            }
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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
    endpoints: Vec<WebhookConfig>,
    client: reqwest::Client,
    vacated_delay: Duration,
}

impl Dispatcher {
    async fn run(self, mut events: mpsc::Receiver<WebhookEvent>) {
        let mut batch: Vec<WebhookEvent> = Vec::new();
        let mut batch_deadline: Option<Instant> = None;
        // Vacated channels waiting out the hold-back, by channel.
        let mut held: HashMap<Box<str>, Instant> = HashMap::new();
        loop {
            let next_held = held.values().min().copied();
            let wake = match (batch_deadline, next_held) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let received = match wake {
                Some(at) => tokio::select! {
                    event = events.recv() => Some(event),
                    () = tokio::time::sleep_until(at) => None,
                },
                None => Some(events.recv().await),
            };
            match received {
                // Every sender is gone: the app is gone; send what is left and stop.
                Some(None) => {
                    batch.extend(
                        held.drain()
                            .map(|(channel, _)| WebhookEvent::ChannelVacated { channel }),
                    );
                    self.send(std::mem::take(&mut batch));
                    return;
                }
                Some(Some(WebhookEvent::ChannelVacated { channel })) => {
                    held.insert(channel, Instant::now() + self.vacated_delay);
                }
                Some(Some(WebhookEvent::ChannelOccupied { channel }))
                    if held.remove(&channel).is_some() =>
                {
                    // Vacated and occupied again within the hold-back: neither is reported.
                }
                Some(Some(event)) => {
                    batch.push(event);
                    batch_deadline.get_or_insert_with(|| Instant::now() + BATCH_WINDOW);
                }
                None => {}
            }
            let now = Instant::now();
            let due: Vec<Box<str>> = held
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(c, _)| c.clone())
                .collect();
            for channel in due {
                held.remove(&channel);
                batch.push(WebhookEvent::ChannelVacated { channel });
                batch_deadline.get_or_insert(now);
            }
            if batch.len() >= BATCH_SIZE || batch_deadline.is_some_and(|d| d <= now) {
                let ready = std::mem::take(&mut batch);
                batch_deadline = None;
                for chunk in ready.chunks(BATCH_SIZE) {
                    self.send(chunk.to_vec());
                }
            }
        }
    }

    /// Starts delivery of one batch to every endpoint that wants some of it.
    fn send(&self, batch: Vec<WebhookEvent>) {
        if batch.is_empty() {
            return;
        }
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for endpoint in &self.endpoints {
            let events: Vec<Value> = batch
                .iter()
                .filter(|e| endpoint.accepts(e))
                .map(WebhookEvent::to_json)
                .collect();
            if events.is_empty() {
                continue;
            }
            let body = json!({"time_ms": time_ms, "events": events}).to_string();
            let signature = webhook_signature(&self.secret, body.as_bytes());
            tokio::spawn(deliver(
                self.client.clone(),
                endpoint.url.clone(),
                self.app_id.clone(),
                self.key.clone(),
                signature,
                body,
            ));
        }
    }
}

/// Posts one signed body, retrying with exponential backoff until a 2xx answer or until
/// [`RETRY_FOR`] has passed.
async fn deliver(
    client: reqwest::Client,
    url: String,
    app_id: String,
    key: String,
    signature: String,
    body: String,
) {
    let started = Instant::now();
    let mut backoff = Duration::from_secs(1);
    let mut attempt = 1u32;
    loop {
        let result = client
            .post(&url)
            .header("Content-Type", WEBHOOK_CONTENT_TYPE)
            .header(HEADER_KEY, &key)
            .header(HEADER_SIGNATURE, &signature)
            .body(body.clone())
            .send()
            .await;
        let problem = match result {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => format!("status {}", response.status()),
            Err(error) => error.to_string(),
        };
        if started.elapsed() + backoff > RETRY_FOR {
            tracing::warn!(
                app_id,
                url,
                attempt,
                problem,
                "Webhook dropped after retrying for 5 minutes"
            );
            return;
        }
        tracing::debug!(app_id, url, attempt, problem, retry_in = ?backoff, "Webhook delivery failed");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
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
    fn endpoints_filter_by_type_and_prefix() {
        let hook = WebhookConfig {
            url: "http://x".into(),
            event_types: vec!["channel_occupied".into()],
            channel_prefix: Some("private-".into()),
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
