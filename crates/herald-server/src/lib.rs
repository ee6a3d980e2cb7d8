//! The Herald server: the Pusher Channels HTTP API and WebSocket protocol 7 on one port.
//!
//! [`serve`] takes a bound listener, a validated [`Config`] and a shutdown future, so
//! `herald serve`, the tests and the benchmark all run the same function; a [`Reloader`]
//! applies a new configuration to the running server. The path of an
//! event is: [`http`] authenticates and validates a trigger, encodes one frame per channel,
//! and the app's [`hub::Hub`] pushes that shared frame into each subscriber's
//! [`outbox::Outbox`]; each connection's task in `ws` is the only writer of its socket.
//! See ARCHITECTURE.md.

pub mod adapter;
mod admin;
mod admission;
pub mod app_config;
pub mod apps;
mod backend;
pub mod cache;
mod clock;
pub mod config;
mod console;
mod count_events;
pub mod history;
pub mod http;
pub mod hub;
pub mod ids;
mod metrics;
pub mod outbox;
pub mod ratelimit;
pub mod recovery;
mod redact;
pub mod registry;
pub mod reload;
pub mod settings;
mod shared;
pub mod store;
mod sweeper;
mod tls;
pub mod users;
pub mod webhooks;
mod wire;
mod ws;

use std::future::Future;
use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::admin::settings::{AdminConfig, DEFAULT_ADMIN_PORT};
pub use crate::app_config::fields::Plans;
pub use crate::app_config::{AppConfig, AppLimits};
pub use crate::apps::{App, AppChanges, AppStore, AppUpdate, MemoryApps};
pub use crate::config::ConfigError;
pub use crate::reload::{ReloadError, Reloaded, Reloader};
pub use crate::settings::Config;
use crate::shared::Shared;
pub use crate::store::settings::AppsUrl;
pub use crate::tls::settings::TlsConfig;
pub use crate::webhooks::WebhookSettings;

/// Serves the apps of `config` on `listener` until `shutdown` completes, then closes every
/// WebSocket with 4200 (clients reconnect elsewhere at once), lets HTTP requests in flight
/// finish within `config.shutdown_grace`, leaves the cluster and delivers the webhooks
/// still due within `config.webhook_flush_timeout`, and returns (docs/design/connections-and-shutdown.md,
/// "Shutdown").
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let apps = Arc::new(MemoryApps::new(
        config.apps.clone(),
        &crate::adapter::webhook_settings(&config),
    ));
    serve_with_store(listener, config, apps, shutdown, |_| {}).await
}

/// How long start-up waits for the app database before serving without it (not ready,
/// retrying).
const FIRST_LOAD_WAIT: Duration = Duration::from_secs(5);

/// What a started node gives its caller.
#[derive(Debug, Clone)]
pub struct Started {
    /// Where the admin listener (`/metrics`, `/live`, `/ready`) serves.
    pub admin: std::net::SocketAddr,
    /// The live console's address (`http://127.0.0.1:9601/console`), for the banner.
    pub console: String,
    /// Applies a new configuration to the running node.
    pub reloader: Reloader,
}

/// [`serve`] with a caller-provided app store; `ready` runs once the node has joined its
/// cluster (if any) and is about to accept connections, so a caller announces the address
/// only when an event published to any node will reach this one. It gets the server's
/// [`Reloader`], which applies a new configuration (SIGHUP, in `herald serve`) until the
/// server stops.
pub async fn serve_with_store(
    listener: TcpListener,
    config: Config,
    apps: Arc<MemoryApps>,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(Started),
) -> io::Result<()> {
    let rows = match &config.apps_url {
        Some(url) => Some(store::open(url).map_err(io::Error::other)?),
        None => None,
    };
    serve_apps(listener, config, apps, rows, shutdown, ready).await
}

/// [`serve`] with the apps kept in `rows` (any [`store::AppRows`], such as
/// [`store::MemoryRows`]) instead of the config's `apps_url` or `[[apps]]`.
pub async fn serve_with_rows(
    listener: TcpListener,
    config: Config,
    rows: Arc<dyn store::AppRows>,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(Started),
) -> io::Result<()> {
    let apps = Arc::new(MemoryApps::new(
        Vec::new(),
        &crate::adapter::webhook_settings(&config),
    ));
    serve_apps(listener, config, apps, Some(rows), shutdown, ready).await
}

async fn serve_apps(
    listener: TcpListener,
    config: Config,
    apps: Arc<MemoryApps>,
    rows: Option<Arc<dyn store::AppRows>>,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(Started),
) -> io::Result<()> {
    // Bound first: a taken admin port stops start-up before the node joins a cluster.
    let admin_listener = admin::bind(&config.admin)?;
    let admin_addr = admin_listener.local_addr()?;
    // Apps kept in a database: `apps` starts empty and the rows fill it.
    let stored = match rows {
        Some(rows) => {
            let stored = store::StoredApps::new(rows, apps.clone(), config.plans.clone());
            if let Some(url) = &config.apps_url {
                tracing::info!(apps_url = %url.redacted(), "Loading apps from the database");
            }
            stored.load_first(FIRST_LOAD_WAIT).await;
            Some(stored)
        }
        None => None,
    };
    let store: Arc<dyn AppStore> = match &stored {
        Some(stored) => stored.clone(),
        None => apps.clone(),
    };
    let grace = config.server.shutdown_grace;
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(tls::Tls::new(files).map_err(io::Error::other)?)),
        None => None,
    };
    let admin_plane = admin::Plane::new(&config.admin).map_err(io::Error::other)?;
    let (adapter, node_id) =
        adapter::start(&config.adapter, config.process.node_id, store.clone()).await?;
    let max_open = match config.net.max_open_connections {
        0 => admission::default_max_open_connections(),
        n => n,
    };
    let limiter = admission::ConnLimiter::new(&config.net, max_open);
    tracing::info!(
        max_open_connections = max_open,
        max_connections_per_ip = config.net.max_connections_per_ip,
        "Connection caps"
    );
    let shared = Arc::new(Shared {
        config,
        apps: store,
        node_id,
        next_conn: AtomicU64::new(1),
        shutdown: CancellationToken::new(),
        connections: Default::default(),
        refills: Default::default(),
        silent: Default::default(),
        tracker: TaskTracker::new(),
        limiter: limiter.clone(),
        metrics: metrics::NodeMetrics::new(),
        adapter,
        tls,
        console: apps.console().clone(),
        admin: admin_plane,
    });
    shared.console.set_node_id(node_id);
    let router = http::router(shared.clone());
    tokio::spawn(sweeper::run(Arc::downgrade(&shared)));
    let stop_admin = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        shared.clone(),
        stop_admin.clone(),
    ));
    tracing::info!(
        admin = %admin_addr,
        tls = shared.config.admin.tls.is_some(),
        "Admin endpoints (/metrics, /live, /ready, /console) listening"
    );
    if shared.config.admin.tls.is_none() && !config::is_loopback_host(&shared.config.admin.host) {
        tracing::warn!(
            admin_host = %shared.config.admin.host,
            "The admin listener is reachable off this machine without TLS: its tokens cross the network in cleartext (set admin_tls_cert and admin_tls_key)"
        );
    }
    let reloader = Reloader::new(&shared, apps);
    if let Some(stored) = stored {
        let applier = reloader.clone();
        let apply: store::Apply = Box::new(move |apps| applier.apply_apps(apps));
        tokio::spawn(stored.run(apply, shared.shutdown.clone()));
    }
    ready(Started {
        admin: admin_addr,
        console: admin::console_url(admin_addr, shared.config.admin.tls.is_some()),
        reloader,
    });
    let counts = http::conn::ApiCounts {
        apps: shared.apps.clone(),
        unknown_app: shared.metrics.http_unknown_app.clone(),
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning; the loop must survive.
                    tracing::warn!(%error, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let permit = match limiter.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                shared.metrics.connection_refused(refusal.label());
                tracing::debug!(%peer, reason = refusal.label(), "Connection refused");
                // One write into the empty socket buffer, then close: a flood of refused
                // connections costs no task and no timer. A TLS client could not read the
                // canned answer, and a handshake is what a flood must not cost: it is
                // just closed.
                if shared.tls.is_none() {
                    let _ = stream.try_write(refusal.response());
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let setup = http::conn::Setup {
            router: router.clone(),
            counts: counts.clone(),
            limits: shared.config.net.clone(),
            shutdown: shared.shutdown.clone(),
            drain: grace,
        };
        match &shared.tls {
            None => shared
                .tracker
                .spawn(http::conn::serve(stream, peer, permit, setup)),
            Some(tls) => shared.tracker.spawn(http::conn::serve_tls(
                stream,
                peer,
                permit,
                setup,
                tls.acceptor().clone(),
            )),
        };
    }
    drop(listener);
    shut_down(&shared, stop_admin, admin_task).await;
    Ok(())
}

/// The shutdown sequence; every step is bounded, so the whole ends within
/// `shutdown_grace` + `webhook_flush_timeout` + [`admin::STOP_WITHIN`].
async fn shut_down(
    shared: &Arc<Shared>,
    stop_admin: CancellationToken,
    admin_task: tokio::task::JoinHandle<()>,
) {
    tracing::info!("Shutting down: closing connections with 4200");
    shared.shutdown.cancel();
    // Before the sockets close: the `channel_vacated` their closing produces is not held.
    let webhooks = webhooks::ShutdownFlush::begin(&shared.apps.all());
    shared.close_all_connections();
    shared.tracker.close();
    let grace = shared.config.server.shutdown_grace;
    if tokio::time::timeout(grace, shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("Shutdown grace period ended with connections still open");
    }
    // Leaving may produce webhooks (the cluster's last member of a channel), so it comes
    // before the flush; both share its deadline.
    let flush_by = tokio::time::Instant::now() + shared.config.server.webhook_flush_timeout;
    if tokio::time::timeout_at(flush_by, shared.adapter.backend.leave())
        .await
        .is_err()
    {
        tracing::warn!("Leaving the cluster did not finish within webhook_flush_timeout");
    }
    webhooks.finish(flush_by).await;
    // The console showed the drain and the flush; its streams end now, or the admin
    // connections serving them would not.
    shared.console.close();
    stop_admin.cancel();
    if tokio::time::timeout(admin::STOP_WITHIN, admin_task)
        .await
        .is_err()
    {
        tracing::warn!("The admin listener did not stop in time");
    }
}
