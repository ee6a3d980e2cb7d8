//! The node's queue of state changes for Redis: what an op is, and the places that bound
//! the queue, in total and per app, so one app's flood cannot take the others' share.
//! A connection's own ops are counted in its outbox too, until the state task takes them:
//! at [`crate::outbox::MAX_WAITING_OPS`] its task stops reading, so one connection cannot
//! fill its app's share and keep the others' subscriptions waiting behind its flood.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use herald_protocol::presence::Member;
use parking_lot::RwLock;

use crate::apps::App;
use crate::ids::ConnId;
use crate::outbox::Outbox;
use crate::recovery::Recover;

/// Why a state change was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// The app's share of the queue, or the whole queue, is full.
    #[error("the cluster state queue is full")]
    Busy,
    /// The node is leaving the cluster.
    #[error("the node is leaving the cluster")]
    Stopping,
}

/// A state change, applied in order by the node's state task.
pub(crate) enum Op {
    /// Subscribe to a non-presence channel: counted in Redis, then confirmed.
    Subscribe {
        app: Arc<App>,
        channel: Box<str>,
        conn: ConnId,
        outbox: Arc<Outbox>,
        /// Replay the cached event (or report a miss) after `subscription_succeeded`.
        cache: bool,
        /// A connection that recovers: what it replays as it joins.
        recover: Option<Recover>,
    },
    /// Join a presence channel: the cluster's member list, its limit and `member_added`.
    Join(Box<Join>),
    /// Leave a channel: remove from the hub, then `member_removed` if it was a presence
    /// member's last connection in the cluster, and the new counts.
    Leave {
        app: Arc<App>,
        channel: Box<str>,
        conn: ConnId,
    },
    /// Restate this node's connection count of an app (a connection closed).
    Connections { app: Arc<App> },
    /// Restate this node's signed-in connection count of a user.
    User { app: Arc<App>, user: Arc<str> },
    /// Tell a newly signed-in connection which of its watched users are online.
    Watchlist {
        app: Arc<App>,
        outbox: Arc<Outbox>,
        users: Vec<Arc<str>>,
    },
    /// Drain and leave the cluster (clean shutdown).
    Stop(tokio::sync::oneshot::Sender<()>),
}

/// A presence join waiting for the cluster's answer.
pub(crate) struct Join {
    pub app: Arc<App>,
    pub channel: Box<str>,
    pub conn: ConnId,
    pub outbox: Arc<Outbox>,
    pub member: Member,
    /// Replay the cached event (or report a miss) after `subscription_succeeded`.
    pub cache: bool,
    /// A connection that recovers: what it replays as it joins.
    pub recover: Option<Recover>,
}

impl Op {
    pub(super) fn app(&self) -> Option<&Arc<App>> {
        match self {
            Op::Subscribe { app, .. }
            | Op::Leave { app, .. }
            | Op::Connections { app }
            | Op::User { app, .. }
            | Op::Watchlist { app, .. } => Some(app),
            Op::Join(join) => Some(&join.app),
            Op::Stop(_) => None,
        }
    }
}

/// A queued op and the place it holds in the queue, given back when the state task takes it.
pub(crate) struct Queued {
    pub(super) op: Op,
    pub(super) _held: Option<Held>,
}

impl Queued {
    /// The op, giving its place in the queue back.
    pub(super) fn into_op(self) -> Op {
        self.op
    }
}

/// The node's op queue as places: at most `max_total` ops waiting, and at most `max_app`
/// of one app.
pub(super) struct Places {
    total: Arc<AtomicUsize>,
    apps: RwLock<HashMap<String, Arc<AtomicUsize>>>,
    max_total: usize,
    max_app: usize,
}

impl Places {
    pub(super) fn new(max_total: usize, max_app: usize) -> Self {
        Places {
            total: Arc::new(AtomicUsize::new(0)),
            apps: RwLock::new(HashMap::new()),
            max_total,
            max_app: max_app.min(max_total),
        }
    }

    /// A place for an op of `app`, if its share and the queue have one; `always` takes one
    /// regardless, still counted so the app's other ops wait for it.
    pub(super) fn take(&self, app: &str, always: bool) -> Option<Held> {
        let held = Held {
            app: self.app(app),
            total: self.total.clone(),
            conn: None,
        };
        let in_app = held.app.fetch_add(1, Ordering::Relaxed);
        let in_queue = held.total.fetch_add(1, Ordering::Relaxed);
        (always || (in_app < self.max_app && in_queue < self.max_total)).then_some(held)
    }

    fn app(&self, app: &str) -> Arc<AtomicUsize> {
        if let Some(share) = self.apps.read().get(app) {
            return share.clone();
        }
        self.apps.write().entry(app.to_owned()).or_default().clone()
    }

    /// Drops an app's share once no op of it can be waiting (the app is gone).
    pub(super) fn forget(&self, app: &str) {
        self.apps.write().remove(app);
    }

    pub(super) fn waiting(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// One place in the node's queue and in one app's share of it, and of the connection's
/// own count if a connection made the op, given back when dropped.
pub(super) struct Held {
    app: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    conn: Option<Arc<Outbox>>,
}

impl Held {
    /// Counts the op against `outbox`'s connection until it is taken.
    pub(super) fn of_connection(mut self, outbox: &Arc<Outbox>) -> Held {
        outbox.op_queued();
        self.conn = Some(outbox.clone());
        self
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.app.fetch_sub(1, Ordering::Relaxed);
        self.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(outbox) = &self.conn {
            outbox.op_taken();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apps_share_is_bounded_and_given_back_when_taken() {
        let places = Places::new(10, 3);
        let a: Vec<Held> = (0..3).filter_map(|_| places.take("a", false)).collect();
        assert_eq!(a.len(), 3);
        assert!(places.take("a", false).is_none(), "a's share is full");
        // Another app still has its share; a refusal gave its place back.
        let b = places.take("b", false).expect("b's share");
        assert_eq!(places.waiting(), 4);
        // A leave always has a place, and counts against the app's share.
        let leave = places.take("a", true).expect("a leave");
        drop(a);
        let again: Vec<Held> = (0..3).filter_map(|_| places.take("a", false)).collect();
        assert_eq!(again.len(), 2, "the leave still holds one of a's places");
        drop((b, leave, again));
        assert_eq!(places.waiting(), 0);
    }

    #[test]
    fn a_connections_ops_are_counted_until_taken() {
        let places = Places::new(10, 10);
        let outbox = Arc::new(Outbox::new(1024));
        let held: Vec<Held> = (0..3)
            .filter_map(|_| places.take("a", false))
            .map(|h| h.of_connection(&outbox))
            .collect();
        assert_eq!(outbox.ops_waiting(), 3);
        drop(held);
        assert_eq!(outbox.ops_waiting(), 0);
    }

    #[test]
    fn the_whole_queue_is_bounded_across_apps() {
        let places = Places::new(4, 3);
        let held: Vec<Held> = ["a", "a", "b", "c"]
            .iter()
            .filter_map(|app| places.take(app, false))
            .collect();
        assert_eq!(held.len(), 4);
        assert!(places.take("d", false).is_none());
        assert_eq!(places.waiting(), 4);
    }
}
