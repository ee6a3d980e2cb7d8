//! The state every request and connection handler shares: the configuration, the app
//! store, the registry of open connections and what the node reports.
//!
//! Built once by `serve` and handed to the HTTP router, the WebSocket tasks, the sweeper
//! and the admin listener as an `Arc`; nothing here runs on its own.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::adapter::Adapter;
use crate::admin::plane::Plane;
use crate::apps::{App, AppStore};
use crate::ids::ConnId;
use crate::outbox::Outbox;
use crate::registry::Registry;
use crate::settings::Config;
use crate::ws::budget::Refills;
use crate::{admission, console, metrics, tls};

/// State every request and connection handler shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) apps: Arc<dyn AppStore>,
    /// The first half of this node's socket ids, so a socket id names its node.
    pub(crate) node_id: u32,
    pub(crate) next_conn: AtomicU64,
    /// Cancelled when the server starts shutting down.
    pub(crate) shutdown: CancellationToken,
    /// Every open WebSocket's outbox, so shutdown can close them all. A registry costs an
    /// entry per connection; a cancellation future parked in every connection task would
    /// cost several times more.
    pub(crate) connections: Registry,
    /// The connections waiting for their frame budget, which the sweeper wakes.
    pub(crate) refills: Refills,
    /// Connections with a ping unanswered for 2 s or more at the last sweep: while there
    /// are none, a subscription waiting for its identity need not look for its client's
    /// old, silent connection among the channel's subscribers.
    pub(crate) silent: std::sync::atomic::AtomicU32,
    /// Every connection task, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// The caps on open connections, which every socket's permit counts against.
    pub(crate) limiter: Arc<admission::ConnLimiter>,
    /// The node's registry and the metrics that are not per app.
    pub(crate) metrics: metrics::NodeMetrics,
    /// What the node shares events and state through, with the other nodes of its cluster
    /// or with nobody: every handler's way to publish, to subscribe and to count limits.
    pub(crate) adapter: Adapter,
    /// The public port's TLS (`tls_cert`, `tls_key`); `None` serves plain HTTP. Only the
    /// accept loop and reloads look at it.
    pub(crate) tls: Option<Arc<tls::Tls>>,
    /// The live console's feed (`/console` on the admin listener).
    pub(crate) console: Arc<console::Console>,
    /// Who may use the admin listener, and its TLS; a reload swaps the tokens.
    pub(crate) admin: Plane,
}

impl Shared {
    /// Registers a connection's outbox for shutdown; a connection that registers after
    /// shutdown began is told to close at once.
    pub(crate) fn register_connection(&self, conn: ConnId, outbox: &Arc<Outbox>) {
        self.connections.insert(conn, outbox);
        if self.shutdown.is_cancelled() {
            close_for_shutdown(outbox);
        }
    }

    pub(crate) fn unregister_connection(&self, conn: ConnId, outbox: &Arc<Outbox>) {
        self.connections.remove(conn, outbox);
    }

    pub(crate) fn close_all_connections(&self) {
        for outbox in self.connections.collect(|_| true) {
            close_for_shutdown(&outbox);
        }
    }

    /// Closes every connection of `app` with the code [`App::closed`] gives (4003: a reload
    /// removed or disabled it); returns how many. A connection that registers after this
    /// scan closes itself (`Session::new`).
    pub(crate) fn close_app_connections(&self, app: &App) -> usize {
        let Some((code, message)) = app.closed() else {
            return 0;
        };
        let serial = app.serial();
        let outboxes = self.connections.collect(|outbox| outbox.app == serial);
        for outbox in &outboxes {
            outbox.close(code, message);
        }
        outboxes.len()
    }
}

fn close_for_shutdown(outbox: &Outbox) {
    let r = herald_protocol::close::CloseReason::Reconnect;
    outbox.close(r.code(), r.message());
}

#[cfg(test)]
impl Shared {
    /// A single node's state over `config`'s apps, as `serve` builds it, for unit tests of
    /// what runs on it (sessions, connection tasks).
    pub(crate) fn for_tests(config: Config) -> Arc<Shared> {
        let apps: Arc<dyn AppStore> = Arc::new(crate::MemoryApps::new(
            config.apps.clone(),
            &crate::adapter::webhook_settings(&config),
        ));
        let limiter = admission::ConnLimiter::new(&config.net, 10);
        let admin = Plane::new(&config.admin).expect("admin TLS files");
        Arc::new(Shared {
            config,
            apps,
            node_id: 1,
            next_conn: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            connections: Default::default(),
            refills: Default::default(),
            silent: Default::default(),
            tracker: TaskTracker::new(),
            limiter,
            metrics: metrics::NodeMetrics::new(),
            adapter: Adapter::local(1),
            tls: None,
            console: Arc::default(),
            admin,
        })
    }
}
