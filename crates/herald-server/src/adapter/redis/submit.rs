//! Putting a state change on the node's queue (`ops.rs`), within its app's share, and what
//! stands in for one the queue refuses.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::ops::{Held, Op, Queued, Refused};
use super::{merge_resync, Cluster, PENDING_USERS};
use crate::adapter::transitions;
use crate::outbox::Outbox;

impl Cluster {
    /// Queues a state change, unless its app's share of the queue (or the queue) is full.
    ///
    /// What a refusal means, by kind:
    /// - `Subscribe`, `Join`: nothing was recorded; the caller answers `ServerBusy`.
    /// - `Leave`: never refused for a full queue. It only releases what an admitted op
    ///   added, so leaves are bounded by the subscriptions that exist, and refusing one
    ///   could let a still-queued subscribe of the same connection land after it. If the
    ///   node is leaving, the connection is removed from the hub here.
    /// - `Connections`: dropped; the next heartbeat (at most a second away) restates the
    ///   app's connection count.
    /// - `User`: the user is restated by the state task at the next heartbeat.
    /// - `Watchlist`: answered from this node's registry, as while Redis is away.
    ///
    /// A refusal never changes the node's health: Redis is fine, the node is just busy.
    pub(crate) fn op(&self, op: Op) -> Result<(), Refused> {
        self.op_of(op, None)
    }

    /// [`Cluster::op`] of an op a connection made: it counts against the connection
    /// (`outbox`) until the state task takes it, and at
    /// [`crate::outbox::MAX_WAITING_OPS`] the connection stops reading its socket.
    pub(crate) fn op_of(&self, op: Op, outbox: Option<&Arc<Outbox>>) -> Result<(), Refused> {
        let Some(app) = op.app() else {
            return self.push(op, None);
        };
        let always = matches!(op, Op::Leave { .. });
        match self.places.take(app.id(), always) {
            Some(held) => {
                let held = match outbox {
                    Some(outbox) => held.of_connection(outbox),
                    None => held,
                };
                self.push(op, Some(held))
            }
            None => {
                self.refuse(op, Refused::Busy);
                Err(Refused::Busy)
            }
        }
    }

    pub(super) fn push(&self, op: Op, held: Option<Held>) -> Result<(), Refused> {
        self.ops.send(Queued { op, _held: held }).map_err(|e| {
            self.refuse(e.0.op, Refused::Stopping);
            Refused::Stopping
        })
    }

    /// Does what stands in for a refused op (see [`Cluster::op`]).
    pub(super) fn refuse(&self, op: Op, why: Refused) {
        let app_id = op.app().map(|a| a.id().to_owned());
        match op {
            Op::Leave { app, channel, conn } => {
                app.hub.unsubscribe(&channel, conn);
            }
            Op::User { app, user } => self.restate_user_later(app.id(), user),
            Op::Watchlist { app, outbox, users } => {
                transitions::answer_watchlist(&outbox, &users, |u| app.users.is_online(u));
            }
            Op::Subscribe { .. } | Op::Join(_) | Op::Connections { .. } | Op::Stop(_) => {}
        }
        if why == Refused::Busy {
            let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if self.refused_log.ready(self.started) {
                tracing::warn!(
                    app = app_id.as_deref().unwrap_or(""),
                    refused = n,
                    queued = self.places.waiting(),
                    "Cluster state queue: an app's share is full; refusing its changes (ServerBusy)"
                );
            }
        }
    }

    /// Records a user whose count change was refused, for the state task to restate.
    pub(super) fn restate_user_later(&self, app: &str, user: Arc<str>) {
        let mut signals = self.signals.lock();
        if signals.pending_users >= PENDING_USERS {
            signals.resync = merge_resync(signals.resync, true);
            return;
        }
        if signals
            .users
            .entry(app.to_owned())
            .or_default()
            .insert(user)
        {
            signals.pending_users += 1;
        }
    }
}
