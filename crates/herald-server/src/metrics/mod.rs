//! What the node counts, and its Prometheus exposition on the admin listener.
//!
//! Each [`App`](crate::App) carries its [`AppMetrics`]; a scrape walks the app store, so a
//! removed app's series go with it and no label lookup sits on a hot path. Gauges that the
//! server's own state already holds (connections, channels, subscriptions, presence members)
//! are read from that state at scrape time rather than kept beside it: they are exact by
//! construction and return to zero when everything closes. Counters bumped once per delivery
//! or per socket read are [`sharded`]; the rest are plain atomics.

mod render;
pub(crate) mod sharded;

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::admission::RateLog;
use crate::ids::SocketId;

use sharded::{ShardedCounter, ShardedHistogram};

pub(crate) use prometheus::proto::MetricType;
pub(crate) use render::{single, store_families, NodeMetrics, StoreReading};
pub(crate) use sharded::clock_us;

/// Close codes counted under their own label; any other code a client chooses is counted
/// as `other`, so a client cannot grow the number of series.
const CLOSE_CODES: [u16; 22] = [
    1000, 1001, 1002, 1005, 1006, 1007, 1008, 1009, 1011, 4001, 4003, 4004, 4005, 4006, 4007, 4008,
    4009, 4100, 4200, 4201, 4301, 0,
];

/// The HTTP API's routes, as Pusher's API reference names the endpoints.
pub(crate) const ROUTES: [&str; 7] = [
    "events",
    "batch_events",
    "channels",
    "channel",
    "channel_users",
    "terminate_connections",
    "other",
];

/// Statuses counted under their own label; the rest are `other`.
const STATUSES: [u16; 12] = [200, 400, 401, 403, 404, 405, 408, 413, 429, 500, 503, 0];

/// HTTP API requests by route and status, on atomics indexed by both: counting one costs an
/// index and an add, no label lookup.
#[derive(Debug, Default)]
pub(crate) struct HttpCounts([[AtomicU64; STATUSES.len()]; ROUTES.len()]);

impl HttpCounts {
    /// Counts a request to route `route` (an index into [`ROUTES`]) answered `status`.
    pub(crate) fn count(&self, route: usize, status: u16) {
        let s = STATUSES
            .iter()
            .position(|&c| c == status)
            .unwrap_or(STATUSES.len() - 1);
        let r = route.min(ROUTES.len() - 1);
        self.0[r][s].fetch_add(1, Ordering::Relaxed);
    }

    /// Every (route, status, count) with a non-zero count.
    pub(crate) fn nonzero(&self) -> impl Iterator<Item = (&'static str, String, u64)> + '_ {
        self.0.iter().enumerate().flat_map(|(r, row)| {
            row.iter().enumerate().filter_map(move |(s, n)| {
                let n = n.load(Ordering::Relaxed);
                let status = match STATUSES[s] {
                    0 => "other".to_owned(),
                    code => code.to_string(),
                };
                (n > 0).then(|| (ROUTES[r], status, n))
            })
        })
    }
}

/// A limit that refused a request, a connection or a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// HTTP API publishes per second (429).
    PublishRate,
    /// HTTP API reads per second (429).
    ReadRate,
    /// Messages per day (429).
    DailyMessages,
    /// The app's open connections (4004).
    Connections,
    /// Channels per connection (`LimitReached`).
    Subscriptions,
    /// Presence members per channel (`LimitReached`).
    PresenceMembers,
    /// Client events per second (4301).
    ClientEvents,
    /// The app's share of the cluster's state queue (`ServerBusy`).
    ClusterQueue,
    /// A connection's frames or bytes per second: the server stopped reading it a while.
    ClientFrames,
}

impl Limit {
    const ALL: [Limit; 9] = [
        Limit::PublishRate,
        Limit::ReadRate,
        Limit::DailyMessages,
        Limit::Connections,
        Limit::Subscriptions,
        Limit::PresenceMembers,
        Limit::ClientEvents,
        Limit::ClusterQueue,
        Limit::ClientFrames,
    ];

    fn label(self) -> &'static str {
        match self {
            Limit::PublishRate => "publish_rate",
            Limit::ReadRate => "read_rate",
            Limit::DailyMessages => "daily_messages",
            Limit::Connections => "connections",
            Limit::Subscriptions => "subscriptions_per_connection",
            Limit::PresenceMembers => "presence_members",
            Limit::ClientEvents => "client_event_rate",
            Limit::ClusterQueue => "cluster_queue",
            Limit::ClientFrames => "client_frame_rate",
        }
    }
}

/// How often each app's refusals over one limit are logged at most.
const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);

/// An app's [`RateLog`] per limit.
struct RefusalLogs([RateLog; Limit::ALL.len()]);

impl Default for RefusalLogs {
    fn default() -> Self {
        RefusalLogs(std::array::from_fn(|_| RateLog::new(REFUSAL_LOG_PERIOD)))
    }
}

impl std::fmt::Debug for RefusalLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefusalLogs")
    }
}

/// What happened to a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebhookOutcome {
    /// A request was sent (first tries and retries).
    Attempt,
    /// The receiver answered 2xx.
    Success,
    /// A failed attempt that will be tried again.
    Retry,
    /// Given up: retries ran out, or the receiver redirected or refused for good.
    Failure,
    /// Never sent: a queue or a bound on the app's deliveries was full.
    Drop,
    /// Never sent: the endpoint's address is one an app's webhook from the database may
    /// not reach.
    Refused,
}

/// The classes of a webhook attempt's answer: `2xx` to `5xx` by the HTTP status (`1xx`
/// and anything odd counted as `other`), `error` when no answer came (connection refused
/// or reset, a timeout).
pub(crate) const WEBHOOK_STATUS_CLASSES: [&str; 6] = ["2xx", "3xx", "4xx", "5xx", "other", "error"];

/// The class of an attempt's HTTP status (`None`: no answer), an index into
/// [`WEBHOOK_STATUS_CLASSES`].
fn status_class(status: Option<u16>) -> usize {
    match status {
        None => 5,
        Some(s @ 200..=599) => usize::from(s / 100 - 2),
        Some(_) => 4,
    }
}

/// One app's counters on this node.
#[derive(Debug, Default)]
pub struct AppMetrics {
    pub(crate) connections_opened: AtomicU64,
    closed: [AtomicU64; CLOSE_CODES.len()],
    pub(crate) messages_received: ShardedCounter,
    pub(crate) bytes_received: ShardedCounter,
    pub(crate) messages_sent: ShardedCounter,
    pub(crate) bytes_sent: ShardedCounter,
    /// Events published through the HTTP API, one per event and channel.
    pub(crate) events_published: AtomicU64,
    pub(crate) client_events: AtomicU64,
    pub(crate) http: HttpCounts,
    webhooks: [AtomicU64; 6],
    webhook_statuses: [AtomicU64; WEBHOOK_STATUS_CLASSES.len()],
    refusals: [AtomicU64; Limit::ALL.len()],
    /// One info line per limit per [`REFUSAL_LOG_PERIOD`] at most.
    refusal_logs: RefusalLogs,
    /// From an event's publish on this node (or its arrival from another) to the socket
    /// write that sent its last byte.
    pub(crate) publish_to_write: ShardedHistogram,
    /// The node's live console, which the counted events are also shown on.
    pub(crate) console: crate::console::AppConsole,
}

impl AppMetrics {
    /// Counters that also show their events on `console`.
    pub(crate) fn with_console(console: crate::console::AppConsole) -> Self {
        AppMetrics {
            console,
            ..AppMetrics::default()
        }
    }

    /// Counts a closed connection under the close code it ended with (`None`: the socket
    /// ended without a close handshake, counted as 1006).
    pub(crate) fn connection_closed(&self, code: Option<u16>) {
        let code = code.unwrap_or(1006);
        let i = CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(CLOSE_CODES.len() - 1);
        self.closed[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed with `code`, one of [`CLOSE_CODES`].
    fn closed_with(&self, code: u16) -> u64 {
        CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .map_or(0, |i| self.closed[i].load(Ordering::Relaxed))
    }

    /// Counts a refusal of app `app_id` over `limit`, and logs it at info (at most once
    /// per limit per [`REFUSAL_LOG_PERIOD`], with how many were held back): an operator
    /// sees a client hitting a limit without a line per refused request. `client` is the
    /// client's address where the refusal knows it.
    pub(crate) fn refused(&self, limit: Limit, app_id: &str, client: Option<IpAddr>) {
        let i = Limit::ALL.iter().position(|&l| l == limit).unwrap_or(0);
        self.refusals[i].fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.refusal_logs.0[i].should_log() {
            // Inside an open socket the address is not kept (a connection's state is kept
            // small); its socket id is, and the app's auth endpoint saw it with the address.
            let socket = HANDLING.with(Cell::get);
            let client = client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
            match socket {
                Some(socket_id) => tracing::info!(
                    app_id,
                    limit = limit.label(),
                    %socket_id,
                    refused_since_last_log = held_back,
                    "Refused: over the app's limit"
                ),
                None => tracing::info!(
                    app_id,
                    limit = limit.label(),
                    %client,
                    refused_since_last_log = held_back,
                    "Refused: over the app's limit"
                ),
            }
        }
        self.console.emit("refused", |row| {
            row.insert("limit".into(), limit.label().into());
        });
    }

    pub(crate) fn webhook(&self, outcome: WebhookOutcome, n: u64) {
        self.webhooks[outcome as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn webhook_count(&self, outcome: WebhookOutcome) -> u64 {
        self.webhooks[outcome as usize].load(Ordering::Relaxed)
    }

    /// Counts one webhook attempt by the class of its answer's status (`None`: none came).
    pub(crate) fn webhook_status(&self, status: Option<u16>) {
        self.webhook_statuses[status_class(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// Webhook attempts by the class of their answer, with [`WEBHOOK_STATUS_CLASSES`].
    pub(crate) fn webhook_statuses(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        WEBHOOK_STATUS_CLASSES
            .iter()
            .zip(&self.webhook_statuses)
            .map(|(class, n)| (*class, n.load(Ordering::Relaxed)))
    }

    fn closed_by_code(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        CLOSE_CODES.iter().zip(&self.closed).map(|(&code, n)| {
            let label = if code == 0 {
                "other".to_owned()
            } else {
                code.to_string()
            };
            (label, n.load(Ordering::Relaxed))
        })
    }

    pub(crate) fn refusals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Limit::ALL
            .iter()
            .zip(&self.refusals)
            .map(|(l, n)| (l.label(), n.load(Ordering::Relaxed)))
    }
}

thread_local! {
    /// The socket whose messages this thread is handling, if any: a refusal made while
    /// handling them names it.
    static HANDLING: Cell<Option<SocketId>> = const { Cell::new(None) };
}

/// Runs `f` as the handling of `socket`'s messages: refusals made in it are logged with
/// the socket's id. `f` runs to its end without yielding, so no other socket's work can
/// see the id.
pub(crate) fn handling<R>(socket: SocketId, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            HANDLING.with(|h| h.set(None));
        }
    }
    HANDLING.with(|h| h.set(Some(socket)));
    let _reset = Reset;
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_close_codes_share_one_label() {
        let m = AppMetrics::default();
        m.connection_closed(Some(4100));
        m.connection_closed(None);
        m.connection_closed(Some(3999));
        m.connection_closed(Some(4444));
        let by: std::collections::HashMap<_, _> = m.closed_by_code().collect();
        assert_eq!(by["4100"], 1);
        assert_eq!(by["1006"], 1);
        assert_eq!(by["other"], 2);
        assert_eq!(by.len(), CLOSE_CODES.len());
    }
}
