//! The admin listener: `/metrics` (Prometheus text format), `/live` and `/ready`, on their
//! own address (`admin_host`, `admin_port`) so the public port never exposes them.
//!
//! `/live` answers 200 while the process runs. `/ready` means "this node can serve a new
//! connection": 503 with a one-line reason while the node drains after a shutdown signal, or
//! before its app database's first load; 200 otherwise, with a second line saying what the
//! node serves without when it is degraded (a cluster node whose shared state does not
//! answer serves its own sockets alone). An outage of the shared state, or one of its
//! shards failing over, reaches every node at once, so it must not take them all out of
//! the load balancer together; the backend's gauge shows it. The public `/up` answers as
//! `/ready`.
//! The root `/` lists these endpoints (JSON), open like the probes: it names paths only.
//! The webhook queue's API is [`queue`]'s. `/metrics`, the queue and the console are guarded by [`guard`] (tokens, `Host`, same-origin writes);
//! the probes are not, since they say no more than the public `/up`. Every answer carries
//! the hardening headers of [`guard::harden`]. The listener's connections hold [`slots`],
//! where idle ones give way to new ones, so a probe always gets an answer. With
//! `admin_tls_cert` and `admin_tls_key` it serves HTTPS only, through the public port's
//! TLS code.

mod guard;
pub(crate) mod plane;
mod queue;
pub mod settings;
mod slots;

pub(crate) use guard::Need;
pub(crate) use plane::Plane;
pub(crate) use slots::{Busy, BusyGuard};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::settings::{AdminConfig, DEFAULT_ADMIN_PORT};
use crate::shared::Shared;

/// Connections the admin listener holds at once: scrapers, probes and console tabs. Idle
/// ones give way to new ones ([`slots`]).
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// How long the admin connections may take to finish once the listener stops: a probe or
/// a scrape in flight. The console's streams end when the node closes its console.
pub(crate) const STOP_WITHIN: Duration = Duration::from_secs(1);

/// Binds the admin address. The default port falls back to a free one (with a warning) so
/// that several nodes on one machine start without a config; a configured port must be free.
pub(crate) fn bind(config: &AdminConfig) -> io::Result<TcpListener> {
    let port = config.port.unwrap_or(DEFAULT_ADMIN_PORT);
    let listener = match std::net::TcpListener::bind((config.host.as_str(), port)) {
        Ok(listener) => listener,
        Err(error) if config.port.is_none() && error.kind() == io::ErrorKind::AddrInUse => {
            let listener = std::net::TcpListener::bind((config.host.as_str(), 0))?;
            tracing::warn!(
                default_port = DEFAULT_ADMIN_PORT,
                port = listener.local_addr()?.port(),
                "The default admin port is taken (another node?): serving the admin endpoints on a free port instead; set admin_port to choose one"
            );
            listener
        }
        Err(error) => {
            return Err(io::Error::new(
                error.kind(),
                format!(
                    "cannot listen on the admin address {}:{port}: {error}",
                    config.host
                ),
            ))
        }
    };
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Why the node should get no traffic now, if it should not.
pub(crate) fn unready(shared: &Shared) -> Option<&'static str> {
    if shared.shutdown.is_cancelled() {
        return Some("draining: the node is shutting down");
    }
    shared
        .apps
        .unavailable()
        .or_else(|| shared.adapter.backend.unavailable())
}

/// Serves the admin endpoints until `stop` is cancelled (after the node has drained, so the
/// probes answer 503 through the drain), then gives its connections [`STOP_WITHIN`] to
/// finish.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let slots = slots::Slots::new(MAX_ADMIN_CONNECTIONS);
    // The slots are the cap; the limiter only makes the permits a connection carries, with
    // no per-address count (a prober may share its address with anything) and room for
    // evicted connections still closing: in a burst the accept loop can outrun their tasks,
    // and a probe refused for that would be the reset the slots exist to prevent.
    let mut net = shared.config.net.clone();
    net.max_connections_per_ip = 0;
    let limiter = crate::admission::ConnLimiter::new(&net, 16 * MAX_ADMIN_CONNECTIONS);
    let acceptor = shared.admin.tls.as_ref().map(|tls| tls.acceptor().clone());
    // The admin routes are not the API's: its requests are counted nowhere it shows.
    let counts = crate::http::conn::ApiCounts {
        apps: Arc::new(crate::apps::MemoryApps::new(
            Vec::new(),
            &crate::adapter::webhook_settings(&shared.config),
        )),
        unknown_app: Default::default(),
    };
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .route("/live", get(|| async { "OK" }))
        .route("/ready", get(ready))
        .merge(crate::console::router())
        .merge(queue::router())
        .layer(axum::middleware::from_fn(slots::mark_busy))
        .layer(axum::middleware::map_response(guard::harden))
        .with_state(shared);
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "Admin accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Some(slot) = slots.admit() else {
            let _ = stream.try_write(slots::FULL);
            continue;
        };
        let Ok(permit) = limiter.admit(peer.ip()) else {
            let _ = stream.try_write(slots::FULL);
            continue;
        };
        let setup = crate::http::conn::Setup {
            // The connection's requests learn its busy mark (and the live log holds it).
            router: router.clone().layer(Extension(slot.busy.clone())),
            counts: counts.clone(),
            limits: net.clone(),
            shutdown: stop.clone(),
            drain: STOP_WITHIN,
        };
        let acceptor = acceptor.clone();
        tracker.spawn(async move {
            let served = async {
                match acceptor {
                    Some(acceptor) => {
                        crate::http::conn::serve_tls(stream, peer, permit, setup, acceptor).await
                    }
                    None => crate::http::conn::serve(stream, peer, permit, setup).await,
                }
            };
            tokio::select! {
                () = served => {}
                () = slot.evicted.cancelled() => {
                    tracing::debug!(%peer, "Idle admin connection closed: a new one took its slot");
                }
            }
        });
    }
    tracker.close();
    // Each connection cuts itself at STOP_WITHIN; this bound only backs that up.
    let _ = tokio::time::timeout(STOP_WITHIN, tracker.wait()).await;
}

/// The console's address on the admin listener bound at `bound`: a wildcard bind is
/// opened on loopback, a name the console answers to.
pub(crate) fn console_url(bound: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = match bound.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    format!("{scheme}://{host}:{}/console", bound.port())
}

/// What the admin listener serves, for someone who opens its root: the paths and what each
/// needs. It says nothing of the node, so like the probes it is open and answers any `Host`.
async fn index() -> Response {
    let endpoints = serde_json::json!({
        "service": "herald admin",
        "endpoints": {
            "/live": "200 while the process runs",
            "/ready": "200 when this node can serve a new connection, 503 and why when not",
            "/metrics": "Prometheus text format (Authorization: Bearer <metrics_token or admin_token> when one is set)",
            "/console": "the live console (?token=<admin_token> when one is set)",
            "/api/webhooks/{app}": "the app's webhook queue: list (GET), {id} (GET), {id}/retry, retry, purge (POST, with X-Herald-Console); the admin token when one is set",
        },
    });
    axum::Json(endpoints).into_response()
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    readiness(&shared)
}

/// `/ready`'s answer (and the public `/up`'s): 503 and why the node should get no new
/// connections, or 200 `OK`, and a second line if the node is degraded.
pub(crate) fn readiness(shared: &Shared) -> Response {
    match (unready(shared), shared.adapter.backend.degraded()) {
        (Some(reason), _) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response()
        }
        (None, Some(degraded)) => format!("OK\ndegraded: {degraded}\n").into_response(),
        (None, None) => "OK".into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(denied) = shared.admin.guard.authorize(&headers, Need::Metrics) {
        return denied.into_response();
    }
    let body = shared
        .metrics
        .render(shared.apps.as_ref(), shared.adapter.backend.as_ref());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
