//! The node's metrics in the Prometheus text format: the registry's own metrics (HTTP
//! requests, refused connections, the process) and, built at each scrape, every app's
//! series, the app store's and the cluster's.

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{IntCounterVec, Opts, Registry, TextEncoder};

use super::sharded::LATENCY_BOUNDS_US;
use super::{AppMetrics, WebhookOutcome};
use crate::apps::AppStore;
use crate::backend::Backend;
use crate::hub::HubTotals;
use crate::App;

/// The node's registry and the metrics that are not per app.
pub(crate) struct NodeMetrics {
    registry: Registry,
    /// HTTP API requests for app ids the node does not serve.
    pub(crate) http_unknown_app: std::sync::Arc<super::HttpCounts>,
    /// Connections refused before they reached an app, by reason.
    connections_refused: IntCounterVec,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

impl NodeMetrics {
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "herald_connections_refused_total",
                "Connections refused by the node's caps or for an unknown app",
            ),
            &["reason"],
        )
        .expect("static metric options are valid");
        // Fails only for a duplicate name, and it is registered once.
        let _ = registry.register(Box::new(connections_refused.clone()));
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                "herald",
            );
            let _ = registry.register(Box::new(process));
        }
        NodeMetrics {
            registry,
            http_unknown_app: Default::default(),
            connections_refused,
        }
    }

    /// Counts a connection refused for `reason`, one of a fixed set of labels.
    pub(crate) fn connection_refused(&self, reason: &'static str) {
        self.connections_refused.with_label_values(&[reason]).inc();
    }

    /// The text exposition of everything the node counts.
    pub(crate) fn render(&self, store: &dyn AppStore, backend: &dyn Backend) -> String {
        let apps = store.all();
        let mut families = self.registry.gather();
        families.extend(app_families(&apps));
        families.extend(http_family(&apps, &self.http_unknown_app));
        families.extend(store.metric_families());
        families.extend(backend.metric_families());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = String::new();
        // Encoding fails only for families without metrics, which are skipped above.
        let _ = TextEncoder::new().encode_utf8(&families, &mut out);
        out
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

fn counter(labels: Vec<LabelPair>, value: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value as f64);
    let mut m = Metric::from_label(labels);
    m.set_counter(c);
    m
}

fn gauge(labels: Vec<LabelPair>, value: u64) -> Metric {
    gauge_of(labels, value as f64)
}

fn gauge_of(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_label(labels);
    m.set_gauge(g);
    m
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> Option<MetricFamily> {
    if metrics.is_empty() {
        return None;
    }
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    Some(f)
}

/// One family per metric, with a series per app (and per code, limit or outcome).
fn app_families(apps: &[std::sync::Arc<App>]) -> Vec<MetricFamily> {
    /// What a scrape reads of one app; its hub is walked once for all three hub gauges.
    struct Reading<'a> {
        app: &'a App,
        m: &'a AppMetrics,
        hub: HubTotals,
        queue: crate::webhooks::Depth,
    }
    type Read = fn(&Reading) -> u64;
    let readings: Vec<Reading> = apps
        .iter()
        .map(|app| Reading {
            app,
            m: &app.metrics,
            hub: app.hub.totals(),
            queue: app.webhooks().map(|w| w.depth()).unwrap_or_default(),
        })
        .collect();
    let counters: [(&str, &str, Read); 10] = [
        (
            "herald_connections_opened_total",
            "WebSocket connections admitted to the app",
            |r| {
                r.m.connections_opened
                    .load(std::sync::atomic::Ordering::Relaxed)
            },
        ),
        (
            "herald_ws_messages_received_total",
            "WebSocket messages (data and control) received",
            |r| r.m.messages_received.get(),
        ),
        (
            "herald_ws_bytes_received_total",
            "WebSocket bytes received, framing included",
            |r| r.m.bytes_received.get(),
        ),
        (
            "herald_ws_messages_sent_total",
            "WebSocket messages (data and control) written to sockets",
            |r| r.m.messages_sent.get(),
        ),
        (
            "herald_ws_bytes_sent_total",
            "WebSocket bytes written to sockets, framing included",
            |r| r.m.bytes_sent.get(),
        ),
        (
            "herald_events_published_total",
            "Events published through the HTTP API, one per event and channel",
            |r| {
                r.m.events_published
                    .load(std::sync::atomic::Ordering::Relaxed)
            },
        ),
        (
            "herald_deliveries_total",
            "Event frames queued to subscribers on this node",
            |r| r.app.hub.deliveries(),
        ),
        (
            "herald_client_events_total",
            "Client events accepted and relayed",
            |r| r.m.client_events.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "herald_outbox_overflow_closes_total",
            "Connections closed with 4100 because they did not read fast enough",
            |r| r.m.closed_with(4100),
        ),
        (
            "herald_webhook_drops_total",
            "Webhook events or batches never sent because a queue or bound was full",
            |r| r.m.webhook_count(WebhookOutcome::Drop),
        ),
    ];
    let gauges: [(&str, &str, Read); 8] = [
        ("herald_connections", "WebSocket connections open", |r| {
            r.app.connection_count() as u64
        }),
        (
            "herald_channels",
            "Channels with at least one subscriber on this node",
            |r| r.hub.channels as u64,
        ),
        (
            "herald_subscriptions",
            "Subscriptions held by this node's connections",
            |r| r.hub.subscriptions as u64,
        ),
        (
            "herald_presence_members",
            "Distinct users per presence channel, summed over channels",
            |r| r.hub.members as u64,
        ),
        (
            "herald_webhook_queue_depth",
            "Webhook batches in the queue waiting for delivery (in retry included)",
            |r| r.queue.pending,
        ),
        (
            "herald_webhook_queue_oldest_age_seconds",
            "Age of the oldest webhook batch waiting for delivery, 0 when none",
            |r| {
                r.queue.oldest_pending_ms.map_or(0, |created| {
                    crate::webhooks::now_ms().saturating_sub(created) / 1000
                })
            },
        ),
        (
            "herald_webhook_dead_letters",
            "Webhook batches given up after webhook_retry_period, kept for webhook_dead_letter_ttl",
            |r| r.queue.dead,
        ),
        (
            "herald_webhook_queue_bytes",
            "Bytes of the app's webhook batches in the queue, dead letters included",
            |r| r.queue.bytes,
        ),
    ];
    let mut out = Vec::new();
    let app_label = |r: &Reading| vec![label("app", r.app.id())];
    let kinds = [
        (MetricType::COUNTER, &counters[..]),
        (MetricType::GAUGE, &gauges[..]),
    ];
    for (kind, table) in kinds {
        for &(name, help, read) in table {
            let metrics = readings
                .iter()
                .map(|r| {
                    let (labels, value) = (app_label(r), read(r));
                    match kind {
                        MetricType::GAUGE => gauge(labels, value),
                        _ => counter(labels, value),
                    }
                })
                .collect();
            out.extend(family(name, help, kind, metrics));
        }
    }
    let mut closed = Vec::new();
    let mut refused = Vec::new();
    let mut webhooks = Vec::new();
    let mut statuses = Vec::new();
    let mut latency = Vec::new();
    for app in apps {
        let id = app.id();
        for (code, n) in app.metrics.closed_by_code() {
            closed.push(counter(vec![label("app", id), label("code", &code)], n));
        }
        for (limit, n) in app.metrics.refusals() {
            refused.push(counter(vec![label("app", id), label("limit", limit)], n));
        }
        for (outcome, name) in [
            (WebhookOutcome::Attempt, "attempt"),
            (WebhookOutcome::Success, "success"),
            (WebhookOutcome::Retry, "retry"),
            (WebhookOutcome::Failure, "failure"),
            (WebhookOutcome::Refused, "refused"),
        ] {
            let n = app.metrics.webhook_count(outcome);
            webhooks.push(counter(vec![label("app", id), label("outcome", name)], n));
        }
        for (class, n) in app.metrics.webhook_statuses() {
            statuses.push(counter(vec![label("app", id), label("status", class)], n));
        }
        latency.push(histogram(vec![label("app", id)], &app.metrics));
    }
    out.extend(family(
        "herald_connections_closed_total",
        "WebSocket connections closed, by the close code they ended with (1006: no close handshake)",
        MetricType::COUNTER,
        closed,
    ));
    out.extend(family(
        "herald_limit_refusals_total",
        "Requests, connections and messages refused by a rate limit or quota",
        MetricType::COUNTER,
        refused,
    ));
    out.extend(family(
        "herald_webhook_requests_total",
        "Webhook deliveries by outcome: attempts (first tries and retries), successes, retries scheduled, failures given up, refused for their address",
        MetricType::COUNTER,
        webhooks,
    ));
    out.extend(family(
        "herald_webhook_attempts_total",
        "Webhook attempts by the class of the receiver's answer: 2xx, 3xx, 4xx, 5xx, other, or error when none came",
        MetricType::COUNTER,
        statuses,
    ));
    out.extend(family(
        "herald_publish_to_write_seconds",
        "Time from an event's publish on this node to the socket write that sent it",
        MetricType::HISTOGRAM,
        latency,
    ));
    out
}

fn http_family(apps: &[std::sync::Arc<App>], unknown: &super::HttpCounts) -> Option<MetricFamily> {
    let per_app = apps
        .iter()
        .map(|a| (a.id(), &a.metrics.http))
        .chain(std::iter::once(("", unknown)));
    let mut metrics = Vec::new();
    for (app, counts) in per_app {
        for (route, status, n) in counts.nonzero() {
            let labels = vec![
                label("app", app),
                label("route", route),
                label("status", &status),
            ];
            metrics.push(counter(labels, n));
        }
    }
    family(
        "herald_http_requests_total",
        "HTTP API requests by app (empty: an id this node does not serve), route and status",
        MetricType::COUNTER,
        metrics,
    )
}

fn histogram(labels: Vec<LabelPair>, metrics: &AppMetrics) -> Metric {
    let snapshot = metrics.publish_to_write.snapshot();
    let mut h = Histogram::default();
    h.set_sample_count(snapshot.count);
    h.set_sample_sum(snapshot.sum_us as f64 / 1e6);
    h.set_bucket(
        LATENCY_BOUNDS_US
            .iter()
            .zip(snapshot.cumulative)
            .map(|(&bound, n)| {
                let mut b = Bucket::default();
                b.set_upper_bound(f64::from(bound) / 1e6);
                b.set_cumulative_count(n);
                b
            })
            .collect(),
    );
    let mut m = Metric::from_label(labels);
    m.set_histogram(h);
    m
}

/// A family of one series without labels: a backend's gauge or counter.
pub(crate) fn single(name: &str, help: &str, kind: MetricType, value: u64) -> Option<MetricFamily> {
    let metric = if kind == MetricType::COUNTER {
        counter(vec![], value)
    } else {
        gauge(vec![], value)
    };
    family(name, help, kind, vec![metric])
}

/// What an app store kept in a database reports of itself at a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StoreReading {
    /// Rows that are not valid apps now and whose last valid version is served.
    pub(crate) invalid_kept: u64,
    /// Rows that are not valid apps now and were never valid: not served.
    pub(crate) invalid_not_served: u64,
    /// Distinct bad states of rows seen since the node started (each logged once).
    pub(crate) invalid_seen: u64,
    /// Whether the node follows its database now.
    pub(crate) up: bool,
    /// While the database is away, how long since the apps served were last known to be
    /// its own (the last load, or the moment the watch failed); zero while it is followed.
    pub(crate) stale: std::time::Duration,
}

/// The app store's families: its invalid rows and its database's reachability.
pub(crate) fn store_families(r: &StoreReading) -> Vec<MetricFamily> {
    let invalid = [
        ("last_good", r.invalid_kept),
        ("not_served", r.invalid_not_served),
    ]
    .into_iter()
    .map(|(state, n)| gauge(vec![label("state", state)], n))
    .collect();
    let mut out = Vec::new();
    out.extend(family(
        "herald_apps_invalid",
        "App database rows that are not valid apps now: last_good, their app's last valid version is served; not_served, never valid",
        MetricType::GAUGE,
        invalid,
    ));
    out.extend(single(
        "herald_apps_invalid_states_total",
        "Distinct bad states of app database rows seen since start, each logged once",
        MetricType::COUNTER,
        r.invalid_seen,
    ));
    out.extend(single(
        "herald_apps_db_up",
        "1 while the node follows its app database, 0 while it cannot reach it",
        MetricType::GAUGE,
        u64::from(r.up),
    ));
    out.extend(family(
        "herald_apps_stale_seconds",
        "While the app database cannot be reached, seconds since the apps served were last known to be its own (0 while it is followed)",
        MetricType::GAUGE,
        vec![gauge_of(vec![], r.stale.as_secs_f64())],
    ));
    out
}
