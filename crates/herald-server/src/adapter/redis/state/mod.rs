//! The node's state task: applies queued state changes to Redis in order and, when the
//! heartbeat task finds the work, removes dead nodes' shares and restates this node's share
//! after Redis comes back.
//!
//! While Redis does not answer, changes are applied to the local hub only (a presence join
//! gets the channel's members as this node last knew them) and the node is marked for a
//! resync; the resync compares what Redis holds for this node with the hub and restates
//! every difference, reporting the transitions as a clean join or leave would have. After Redis lost its data (a new epoch)
//! every node restates its share quietly: the members did not really come and go.
//!
//! Restating and reaping go [`RESTATE_BATCH`] counts per pipelined round trip, yielding
//! between batches, so a node with many channels restates in a few hundred round trips
//! rather than one per channel; heartbeats go on meanwhile in their own task.
//!
//! This file holds the task's loop and what the heartbeat hands it; the rest is by concern:
//! `lanes.rs` (queued ops by app, taken in turns and in runs), `subscribe.rs` (runs of
//! subscriptions, with cache channels' events), `join.rs` (presence joins), `apply.rs`
//! (leaves and the other ops), `listening.rs` (the node's bus subscriptions, by interest),
//! `counts.rs` (this node's counts set in Redis through the scripts, restated in batches),
//! `recovery.rs` (a dead node's reap, the resync after an outage, the clean leave),
//! `relist.rs` (the presence member lists read again for the node's rosters) and
//! `journal.rs` (the changes of calls whose answer was lost, announced when Redis returns).

mod apply;
mod counts;
mod join;
mod journal;
mod lanes;
mod listening;
mod recovery;
mod relist;
mod replay;
mod subscribe;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::FutureExt;
use redis::Script;
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::counts::Restate;
use self::lanes::{Batch, Lanes};
use super::interest::{Interest, Key};
use super::link::Subscriber;
use super::ops::{Op, Queued};
use super::scripts;
use super::{link, merge_resync, Cluster};

/// Subscriptions (or leaves) of one app counted in one pipelined round trip at most.
const OP_BATCH: usize = 256;
/// Counts restated (resync) or removed (dead node) in one pipelined round trip at most.
const RESTATE_BATCH: usize = 256;

pub(super) struct StateTask {
    cluster: Arc<Cluster>,
    conn: link::Commands,
    /// A resync to run once Redis answers: `Some(loud)`.
    pending_resync: Option<bool>,
    /// Users whose refused changes are still to be restated, by app.
    pending_users: HashMap<String, HashSet<Arc<str>>>,
    /// The bus channels this node listens to (interest routing), and the handle that
    /// subscribes them: only this task does, so requests reach the link in order.
    interest: Interest,
    subscriber: Subscriber,
    /// Bus channels to release at once (too many lingered).
    releasing: Vec<Key>,
    /// Dead nodes whose reap this node claimed and has not finished: retried at each
    /// housekeeping until done.
    reaping: BTreeSet<u32>,
    /// When to look next for reaps claimed by a node that died too.
    claims_due: Instant,
    reap_claim: Script,
    stale_claims: Script,
    /// The apps this node's index in Redis lists, as far as this epoch goes: each is added
    /// before the node's first write of it.
    indexed: HashSet<Box<str>>,
    /// The number of the last counting call made, and of the last one whose answer came:
    /// the calls between them are those whose answer was lost (`journal.rs`).
    calls: AtomicU64,
    confirmed: u64,
    /// Apps whose journal may hold entries, and when to empty them next.
    journaled: parking_lot::Mutex<HashSet<Box<str>>>,
    journal_due: Instant,
}

impl StateTask {
    pub(super) fn new(cluster: Arc<Cluster>) -> Self {
        StateTask {
            conn: cluster.redis(),
            subscriber: cluster.bus.subscriber(),
            cluster,
            pending_resync: None,
            pending_users: HashMap::new(),
            interest: Interest::default(),
            releasing: Vec::new(),
            reaping: BTreeSet::new(),
            claims_due: Instant::now(),
            reap_claim: scripts::reap_claim(),
            stale_claims: scripts::stale_claims(),
            indexed: HashSet::new(),
            calls: AtomicU64::new(0),
            confirmed: 0,
            journaled: parking_lot::Mutex::new(HashSet::new()),
            journal_due: Instant::now(),
        }
    }

    pub(super) async fn run(mut self, mut ops: mpsc::UnboundedReceiver<Queued>) {
        let mut lanes = Lanes::default();
        loop {
            // Everything already queued goes to its app's lane, so each app's changes wait
            // only behind its own. What the lanes hold is bounded by the queue's places,
            // which the ops keep until they are applied.
            while let Ok(queued) = ops.try_recv() {
                lanes.push(queued);
            }
            // The heartbeat task's findings first: under a flood of changes a dead node
            // must still be removed and a resync still run.
            if self.cluster.wake.notified().now_or_never().is_some() {
                self.housekeeping().await;
            }
            if !self.releasing.is_empty()
                || self
                    .interest
                    .next_deadline()
                    .is_some_and(|at| at <= Instant::now())
            {
                self.release_bus().await;
            }
            let Some(batch) = lanes.next_batch() else {
                if let Some(done) = lanes.stop.take() {
                    self.leave().await;
                    let _ = done.send(());
                    return;
                }
                tokio::select! {
                    biased;
                    () = self.cluster.wake.notified() => self.housekeeping().await,
                    () = sleep_until(self.interest.next_deadline()) => self.release_bus().await,
                    queued = ops.recv() => match queued {
                        Some(queued) => lanes.push(queued),
                        None => return,
                    },
                }
                continue;
            };
            self.apply_batch(batch.into_iter().map(Queued::into_op).collect())
                .await;
        }
    }

    /// Applies one run of one app's ops (see [`Lanes::next_batch`]), the app added to this
    /// node's index in Redis first.
    async fn apply_batch(&mut self, batch: Vec<Op>) {
        if let Some(app) = batch.first().and_then(Op::app).cloned() {
            self.index_app(&app).await;
        }
        let (restating, mut batch): (Vec<Op>, Vec<Op>) =
            batch.into_iter().partition(lanes::restates);
        match batch.first().and_then(Batch::of) {
            Some(Batch::Subscribe) => self.subscribe_batch(batch).await,
            Some(Batch::Leave) => self.leave_batch(batch).await,
            None => {
                for op in batch.drain(..) {
                    self.apply(op).await;
                }
            }
        }
        self.restate_run(restating).await;
    }

    /// What the heartbeat task found, and what this task left pending: a resync, dead
    /// nodes to remove, users to restate.
    async fn housekeeping(&mut self) {
        let signals = std::mem::take(&mut *self.cluster.signals.lock());
        if signals.recovered && !self.cluster.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!("Cluster: Redis answers again");
            self.needs_resync();
        }
        if let Some(loud) = signals.resync {
            self.pending_resync = merge_resync(self.pending_resync, loud);
        }
        for (app, users) in signals.users {
            self.pending_users.entry(app).or_default().extend(users);
        }
        if !self.healthy() {
            // A list read is due once Redis answers.
            self.cluster.signals.lock().relist |= signals.relist;
            // The resync after Redis returns restates every user; dead nodes are reported
            // again by the next heartbeat.
            if !self.pending_users.is_empty() {
                self.pending_users.clear();
                self.needs_resync();
            }
            return;
        }
        let mut relist = signals.relist;
        if let Some(loud) = self.pending_resync {
            if let Err(e) = self.resync(loud).await {
                self.cluster.signals.lock().relist |= relist;
                return self.failed(&e);
            }
            self.pending_resync = None;
            self.pending_users.clear();
            // What this node missed while Redis was away, of the other nodes' members.
            relist = true;
        }
        if relist {
            if let Err(e) = self.relist().await {
                self.cluster.signals.lock().relist = true;
                return self.failed(&e);
            }
        }
        if let Err(e) = self.empty_journals().await {
            return self.failed(&e);
        }
        // The heartbeat writes the connection counts of every app served, those a reload
        // added since the last beat included.
        let served = self.all_apps();
        if let Err(e) = self.index(served.iter().map(|a| a.id())).await {
            return self.failed(&e);
        }
        if let Err(e) = self.reap_dead(signals.dead).await {
            return self.failed(&e);
        }
        let node = self.cluster.node_id;
        if !self.pending_users.is_empty() {
            let pending = std::mem::take(&mut self.pending_users);
            let items: Vec<Restate> = pending
                .into_iter()
                .filter_map(|(app, users)| Some((self.cluster.app(&app)?, users)))
                .flat_map(|(app, users)| {
                    users.into_iter().map(move |user| Restate::User {
                        app: app.clone(),
                        user: user.to_string(),
                    })
                })
                .collect();
            if let Err(e) = self.restate(node, items, true).await {
                self.failed(&e);
            }
        }
    }

    fn healthy(&self) -> bool {
        self.cluster.healthy.load(Ordering::Relaxed)
    }

    fn failed(&mut self, error: &redis::RedisError) {
        self.cluster.redis_failed(error);
        self.needs_resync();
    }

    /// Something was applied to this node alone: restate once Redis answers.
    fn needs_resync(&mut self) {
        self.pending_resync = merge_resync(self.pending_resync, true);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A count as Redis returned it: the scripts sum absolute counts, so it is never below zero.
fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}
