//! The node's state task: applies queued state changes to Redis in order and, when the
//! heartbeat task finds the work, removes dead nodes' shares and restates this node's share
//! after Redis comes back.
//!
//! While Redis does not answer, changes are applied to the local hub only (a presence join
//! gets this node's member list) and the node is marked for a resync; the resync compares
//! what Redis holds for this node with the hub and restates every difference, reporting the
//! transitions as a clean join or leave would have. After Redis lost its data (a new epoch)
//! every node restates its share quietly: the members did not really come and go.
//!
//! Restating and reaping go [`RESTATE_BATCH`] counts per pipelined round trip, yielding
//! between batches, so a node with many channels restates in a few hundred round trips
//! rather than one per channel; heartbeats go on meanwhile in their own task.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use herald_protocol::frame;
use redis::{AsyncCommands, Cmd, RedisResult, Script};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::interest::{self, Interest, Key};
use super::link::Subscriber;
use super::ops::{Join, Op, Queued};
use super::queries::cache_entry;
use super::scripts::{self, index_field, split_field};
use super::{link, merge_resync, Cluster};
use crate::adapter::transitions::{self, edge, Refusal};
use crate::apps::App;
use crate::hub::LocalMember;
use crate::ids::ConnId;
use crate::outbox::Outbox;
use crate::wire;

/// Subscriptions (or leaves) of one app counted in one pipelined round trip at most.
const OP_BATCH: usize = 256;
/// Counts restated (resync) or removed (dead node) in one pipelined round trip at most.
const RESTATE_BATCH: usize = 256;

/// What setting a member's count did.
enum MemberSet {
    /// The channel is full and the user is not in it.
    Refused,
    Set {
        before: i64,
        after: i64,
        /// `user, info, user, info, ...` when asked for.
        list: Vec<String>,
    },
}

/// One count of one node to set in Redis as part of a batch: this node's own count, read
/// from the hub or registry as the batch is sent, or zero for a dead node.
enum Restate {
    /// A presence member, with the `user_info` this node holds for it.
    Member {
        app: Arc<App>,
        channel: String,
        user: String,
        info: Option<Box<str>>,
    },
    Channel {
        app: Arc<App>,
        channel: String,
    },
    User {
        app: Arc<App>,
        user: String,
    },
}

/// What Redis lists for one node in one app: the index fields of its presence members,
/// channels and signed-in users.
struct Listed {
    members: Vec<String>,
    channels: Vec<String>,
    users: Vec<String>,
}

impl Listed {
    /// `(channel, user)` of every presence member listed for `app`; malformed fields are
    /// skipped.
    fn members<'a>(&'a self, app: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.members.iter().filter_map(move |field| {
            let [a, channel, user] = split_field::<3>(field)?;
            (a == app).then_some((channel, user))
        })
    }

    fn channels<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        names_of(&self.channels, app)
    }

    fn users<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        names_of(&self.users, app)
    }
}

/// The name in every `app\nname` field that belongs to `app`.
fn names_of<'a>(fields: &'a [String], app: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    fields.iter().filter_map(move |field| {
        let [a, name] = split_field::<2>(field)?;
        (a == app).then_some(name)
    })
}

/// The ops applied in runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Batch {
    Subscribe,
    Leave,
}

impl Batch {
    fn of(op: &Op) -> Option<Batch> {
        match op {
            Op::Subscribe { .. } => Some(Batch::Subscribe),
            Op::Leave { .. } => Some(Batch::Leave),
            _ => None,
        }
    }
}

/// Queued ops by app, taken in turns: one app's flood delays another app's changes by one
/// batch at most, not by the flood's share of the queue. Ops of one app keep their order;
/// ops of different apps touch different keys and hub entries, so their order is free.
#[derive(Default)]
struct Lanes {
    by_app: HashMap<String, VecDeque<Queued>>,
    /// Apps with ops waiting, in turn order.
    turns: VecDeque<String>,
    /// The app whose run was taken last, if it has more: it goes back in line only at the
    /// next turn, behind the apps whose first ops arrived while its run was applied.
    last: Option<String>,
    /// The node is leaving, once every lane is empty.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Lanes {
    fn push(&mut self, queued: Queued) {
        let Some(app) = queued.op.app() else {
            if let Op::Stop(done) = queued.into_op() {
                self.stop = Some(done);
            }
            return;
        };
        match self.by_app.get_mut(app.id()) {
            Some(lane) => lane.push_back(queued),
            None => {
                self.turns.push_back(app.id().to_owned());
                self.by_app
                    .insert(app.id().to_owned(), VecDeque::from([queued]));
            }
        }
    }

    /// The next app's next run: up to [`OP_BATCH`] subscriptions or leaves in a row (a
    /// reconnect storm or a mass disconnect is counted in one pipelined round trip
    /// instead of one each), or one other op.
    fn next_batch(&mut self) -> Option<Vec<Queued>> {
        if let Some(last) = self.last.take() {
            self.turns.push_back(last);
        }
        let app = self.turns.pop_front()?;
        let lane = self.by_app.get_mut(&app)?;
        let first = lane.pop_front()?;
        let kind = Batch::of(&first.op);
        let mut batch = vec![first];
        if kind.is_some() {
            while batch.len() < OP_BATCH && lane.front().is_some_and(|q| Batch::of(&q.op) == kind) {
                batch.extend(lane.pop_front());
            }
        }
        if lane.is_empty() {
            self.by_app.remove(&app);
        } else {
            self.last = Some(app);
        }
        Some(batch)
    }
}

pub(super) struct StateTask {
    cluster: Arc<Cluster>,
    conn: link::Commands,
    channel_set: Script,
    member_set: Script,
    user_set: Script,
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
}

impl StateTask {
    pub(super) fn new(cluster: Arc<Cluster>) -> Self {
        StateTask {
            conn: cluster.redis(),
            subscriber: cluster.bus.subscriber(),
            cluster,
            channel_set: scripts::channel_set(),
            member_set: scripts::member_set(),
            user_set: scripts::user_set(),
            pending_resync: None,
            pending_users: HashMap::new(),
            interest: Interest::default(),
            releasing: Vec::new(),
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
            let mut batch: Vec<Op> = batch.into_iter().map(Queued::into_op).collect();
            match batch.first().and_then(Batch::of) {
                Some(Batch::Subscribe) => self.subscribe_batch(batch).await,
                Some(Batch::Leave) => self.leave_batch(batch).await,
                None => {
                    for op in batch.drain(..) {
                        self.apply(op).await;
                    }
                }
            }
        }
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
            // The resync after Redis returns restates every user; dead nodes are reported
            // again by the next heartbeat.
            if !self.pending_users.is_empty() {
                self.pending_users.clear();
                self.needs_resync();
            }
            return;
        }
        if let Some(loud) = self.pending_resync {
            if let Err(e) = self.resync(loud).await {
                return self.failed(&e);
            }
            self.pending_resync = None;
            self.pending_users.clear();
        }
        let node = self.cluster.node_id;
        for dead in signals.dead {
            let claimed: RedisResult<i64> = self.conn.zrem(self.cluster.keys.nodes(), dead).await;
            match claimed {
                // Another survivor claimed it first.
                Ok(0) => {}
                Ok(_) => {
                    if let Err(e) = self.reap(dead).await {
                        tracing::warn!(node = dead, error = %e, "Cluster: removing a dead node's state failed");
                    }
                }
                Err(e) => return self.failed(&e),
            }
        }
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

    async fn apply(&mut self, op: Op) {
        match op {
            op @ Op::Subscribe { .. } => self.subscribe_batch(vec![op]).await,
            Op::Join(join) => self.join(*join).await,
            op @ Op::Leave { .. } => self.leave_batch(vec![op]).await,
            Op::Cache {
                app,
                channel,
                frame,
                data,
                ttl,
            } => {
                if !self.healthy() {
                    return;
                }
                let key = self.cluster.keys.cache(app.id(), &channel);
                let stored = redis::pipe()
                    .del(&key)
                    .ignore()
                    .hset(&key, "frame", frame.as_ref())
                    .ignore()
                    .hset(&key, "data", data.as_ref())
                    .ignore()
                    .pexpire(&key, ttl.as_millis().max(1) as i64)
                    .ignore()
                    .query_async::<()>(&mut self.conn)
                    .await;
                if let Err(e) = stored {
                    self.failed(&e);
                }
            }
            Op::Connections { app } => {
                if !self.healthy() {
                    return;
                }
                self.cluster.counts_connections_of(&app);
                let key = self.cluster.keys.conns(app.id());
                let count = app.connection_count();
                let set: RedisResult<()> = self.conn.hset(key, self.cluster.node_id, count).await;
                if let Err(e) = set {
                    self.failed(&e);
                }
            }
            Op::User { app, user } => {
                if !self.healthy() {
                    self.needs_resync();
                    return;
                }
                let node = self.cluster.node_id;
                let n = app.users.connections(&user).len();
                if let Err(e) = self.sync_user(node, &app, &user, n, true).await {
                    self.failed(&e);
                }
            }
            Op::Watchlist { app, outbox, users } => {
                let online = if self.healthy() {
                    let mut pipe = redis::pipe();
                    let key = self.cluster.keys.users(app.id());
                    for user in &users {
                        pipe.hexists(&key, user.as_ref());
                    }
                    match pipe.query_async::<Vec<bool>>(&mut self.conn).await {
                        Ok(online) => online,
                        Err(e) => {
                            self.failed(&e);
                            users.iter().map(|u| app.users.is_online(u)).collect()
                        }
                    }
                } else {
                    users.iter().map(|u| app.users.is_online(u)).collect()
                };
                let mut online = online.into_iter();
                transitions::answer_watchlist(&outbox, &users, |_| online.next().unwrap_or(false));
            }
            Op::Stop(done) => {
                let _ = done.send(());
            }
        }
    }

    /// Removes a run of connections from their channels: from the hub first, then this
    /// node's counts of each channel and presence member they touched are restated in
    /// Redis together, with `member_removed`, vacated and count events on transitions.
    async fn leave_batch(&mut self, batch: Vec<Op>) {
        let healthy = self.healthy();
        let mut members = Vec::new();
        let mut channels = Vec::new();
        let mut seen: HashSet<(String, Box<str>, Option<Arc<str>>)> = HashSet::new();
        for op in batch {
            let Op::Leave { app, channel, conn } = op else {
                continue;
            };
            let Some(left) = app.hub.leave(&channel, conn) else {
                continue;
            };
            if left.remaining == 0 {
                self.lose_interest(app.id(), &channel);
            }
            if !healthy {
                // Redis is away: this node's view is the best there is, for its own sockets.
                if let Some(user) = &left.member_removed {
                    app.hub
                        .publish(&channel, &wire::member_removed(&channel, user), None);
                }
                self.needs_resync();
                continue;
            }
            // The counts are read from the hub as the batch is sent, after every leave of
            // the run, so one restatement per channel and member is enough.
            if let Some((user, _)) = left.member {
                if seen.insert((app.id().to_owned(), channel.clone(), Some(user.clone()))) {
                    members.push(Restate::Member {
                        app: app.clone(),
                        channel: channel.to_string(),
                        user: user.to_string(),
                        info: None,
                    });
                }
            }
            if seen.insert((app.id().to_owned(), channel.clone(), None)) {
                channels.push(Restate::Channel {
                    app,
                    channel: channel.into(),
                });
            }
        }
        members.append(&mut channels);
        let node = self.cluster.node_id;
        if let Err(e) = self.restate(node, members, true).await {
            self.failed(&e);
        }
    }

    async fn join(&mut self, join: Join) {
        let Join {
            app,
            channel,
            conn,
            socket,
            outbox,
            member,
            cache,
        } = join;
        let already = app.hub.is_subscribed(&channel, conn);
        let local = app.hub.member_connections(&channel, &member.user_id) + u32::from(!already);
        let max = app.config().limits.max_presence_members;
        let info = member.user_info.as_deref().unwrap_or("");
        let node = self.cluster.node_id;
        let fresh = self.want_bus([(app.id().into(), channel.clone())]);
        let bus = subscribe_bus(
            self.subscriber.clone(),
            self.bus_names(&fresh),
            self.bus_wait(),
        );
        let answer = if self.healthy() {
            // The member count and the bus subscription in one round trip's time.
            let (set, ()) = tokio::join!(
                self.set_member(
                    node,
                    &app,
                    &channel,
                    &member.user_id,
                    local,
                    info,
                    max,
                    true,
                ),
                bus
            );
            match set {
                Ok(answer) => Some(answer),
                Err(e) => {
                    self.failed(&e);
                    None
                }
            }
        } else {
            bus.await;
            None
        };
        match answer {
            Some(MemberSet::Refused) => {
                transitions::refuse(&app, &outbox, &channel, Refusal::PresenceFull { max });
                if app.hub.counts(&channel).subscription_count == 0 {
                    self.lose_interest(app.id(), &channel);
                }
                return;
            }
            Some(MemberSet::Set {
                before,
                after,
                list,
            }) => {
                let data = frame::presence_data(list.chunks(2).filter_map(|p| match p {
                    [id, info] => {
                        Some((id.as_str(), Some(info.as_str()).filter(|i| !i.is_empty())))
                    }
                    _ => None,
                }));
                app.hub
                    .join_presence_listed(&channel, conn, &outbox, &member, &data);
                transitions::member_changed(
                    &*self.cluster,
                    &app,
                    &channel,
                    (&member.user_id, member.user_info.as_deref()),
                    edge(count(before), count(after)),
                    Some(socket),
                );
                let n = app.hub.counts(&channel).subscription_count;
                if let Err(e) = self.sync_channel(node, &app, &channel, n, true).await {
                    self.failed(&e);
                }
            }
            None => {
                // Redis is away: this node's members are the best answer there is.
                let mut members = app.hub.local_members(&channel);
                let new_here = !members.iter().any(|m| *m.user_id == *member.user_id);
                if new_here && max > 0 && members.len() >= max {
                    transitions::refuse(&app, &outbox, &channel, Refusal::PresenceFull { max });
                    if app.hub.counts(&channel).subscription_count == 0 {
                        self.lose_interest(app.id(), &channel);
                    }
                    return;
                }
                if new_here {
                    members.push(LocalMember {
                        user_id: member.user_id.as_str().into(),
                        user_info: member.user_info.as_deref().map(Into::into),
                        connections: 1,
                    });
                }
                let data = frame::presence_data(
                    members
                        .iter()
                        .map(|m| (m.user_id.as_ref(), m.user_info.as_deref())),
                );
                app.hub
                    .join_presence_listed(&channel, conn, &outbox, &member, &data);
                if new_here {
                    let added =
                        wire::member_added(&channel, &member.user_id, member.user_info.as_deref());
                    app.hub.publish(&channel, &added, Some(conn));
                }
                self.needs_resync();
            }
        }
        if cache {
            if !fresh.is_empty() {
                // Not heard since its last subscriber here left: take Redis's.
                app.cache.forget(&channel);
            }
            self.fill_cache(&app, &channel).await;
            app.replay_cache(&channel, &outbox);
        }
    }

    /// Takes a cache channel's event from Redis when this node missed it.
    async fn fill_cache(&mut self, app: &App, channel: &str) {
        if self.healthy() {
            if let Err(e) = self.cluster.fill_cache(app, channel).await {
                self.failed(&e);
            }
        }
    }

    /// Subscribes a run of connections to non-presence channels: counts them in Redis with
    /// one pipeline (the scripts run one after another, so each sees the one before), then
    /// confirms each in order with the events its count change calls for.
    async fn subscribe_batch(&mut self, batch: Vec<Op>) {
        struct Item {
            app: Arc<App>,
            channel: Box<str>,
            conn: ConnId,
            outbox: Arc<Outbox>,
            cache: bool,
            /// This node's count with the subscription, if it is a new one.
            count: Option<usize>,
            change: Option<(i64, i64)>,
        }
        let mut added: HashMap<(String, Box<str>), usize> = HashMap::new();
        let mut seen: HashSet<(ConnId, String, Box<str>)> = HashSet::new();
        let mut items = Vec::with_capacity(batch.len());
        for op in batch {
            let Op::Subscribe {
                app,
                channel,
                conn,
                outbox,
                cache,
            } = op
            else {
                continue;
            };
            let key = (app.id().to_owned(), channel.clone());
            let repeated = !seen.insert((conn, key.0.clone(), key.1.clone()));
            let count = if repeated || app.hub.is_subscribed(&channel, conn) {
                None
            } else {
                let extra = added.entry(key).or_insert(0);
                *extra += 1;
                Some(app.hub.counts(&channel).subscription_count + *extra)
            };
            items.push(Item {
                app,
                channel,
                conn,
                outbox,
                cache,
                count,
                change: None,
            });
        }
        let counted = items.iter().any(|i| i.count.is_some());
        // Channels new to this node need their bus subscription confirmed before their
        // first subscriber is: asked for together, during the counts' round trip.
        let fresh = self.want_bus(
            items
                .iter()
                .filter(|i| i.count.is_some())
                .map(|i| (i.app.id().into(), i.channel.clone())),
        );
        let bus = subscribe_bus(
            self.subscriber.clone(),
            self.bus_names(&fresh),
            self.bus_wait(),
        );
        let fresh: HashSet<Key> = fresh.into_iter().collect();
        if !self.healthy() {
            if counted {
                self.needs_resync();
            }
            bus.await;
        } else {
            let node = self.cluster.node_id;
            let keys = &self.cluster.keys;
            let mut pipe = redis::pipe();
            for item in &items {
                let Some(n) = item.count else { continue };
                let id = item.app.id();
                pipe.cmd("EVAL")
                    .arg(scripts::CHANNEL_SET)
                    .arg(3)
                    .arg(keys.subs(id, &item.channel))
                    .arg(keys.chans(id))
                    .arg(keys.node_subs(id, node))
                    .arg(node)
                    .arg(item.channel.as_ref())
                    .arg(n)
                    .arg(index_field(&[id, &item.channel]));
            }
            let conn = &mut self.conn;
            let counts = async {
                if counted {
                    Some(pipe.query_async::<Vec<redis::Value>>(conn).await)
                } else {
                    None
                }
            };
            let (counts, ()) = tokio::join!(counts, bus);
            match counts {
                Some(Ok(replies)) => {
                    let mut replies = replies.into_iter();
                    for item in items.iter_mut().filter(|i| i.count.is_some()) {
                        item.change = replies
                            .next()
                            .and_then(|v| redis::from_redis_value::<(i64, i64)>(&v).ok());
                    }
                }
                Some(Err(e)) => self.failed(&e),
                None => {}
            }
        }
        // Cache channels this node has no current event for are asked for in one round
        // trip (a flood of `cache-` subscriptions must not cost one each), after the bus
        // subscriptions are confirmed: a later event reaches this node on the bus. A
        // channel new to this node did not hear the events since its last subscriber
        // left, so its own copy is not current.
        let mut fills: Vec<(Arc<App>, Box<str>)> = Vec::new();
        if self.healthy() {
            let mut wanted = HashSet::new();
            for item in items.iter().filter(|i| i.cache) {
                let key: Key = (item.app.id().into(), item.channel.clone());
                let current =
                    !fresh.contains(&key) && item.app.cache.frame(&item.channel).is_some();
                if !current && wanted.insert(key) {
                    fills.push((item.app.clone(), item.channel.clone()));
                }
            }
        }
        if !fills.is_empty() {
            let keys = &self.cluster.keys;
            let mut pipe = redis::pipe();
            for (app, channel) in &fills {
                let key = keys.cache(app.id(), channel);
                pipe.hget(&key, "frame").hget(&key, "data").pttl(&key);
            }
            match pipe.query_async::<Vec<redis::Value>>(&mut self.conn).await {
                Ok(replies) => {
                    let mut replies = replies.into_iter();
                    for (app, channel) in &fills {
                        let (Some(frame), Some(data), Some(ttl)) =
                            (replies.next(), replies.next(), replies.next())
                        else {
                            break;
                        };
                        let parsed = (
                            redis::from_redis_value::<Option<Vec<u8>>>(&frame),
                            redis::from_redis_value::<Option<String>>(&data),
                            redis::from_redis_value::<i64>(&ttl),
                        );
                        if let (Ok(frame), Ok(data), Ok(ttl)) = parsed {
                            match cache_entry(frame, data, ttl) {
                                Some((frame, data, ttl)) => {
                                    app.cache.store(channel, frame, &data, ttl)
                                }
                                None => app.cache.forget(channel),
                            }
                        }
                    }
                }
                Err(e) => self.failed(&e),
            }
        }
        for item in items {
            item.app
                .hub
                .subscribe(&item.channel, item.conn, &item.outbox);
            if item.cache {
                item.app.replay_cache(&item.channel, &item.outbox);
            }
            if let Some((before, after)) = item.change {
                self.channel_events(&item.app, &item.channel, before, after);
            }
        }
    }

    /// Marks the channels of `keys` wanted; returns those new to this node (it held no
    /// bus subscription of them).
    fn want_bus(&mut self, keys: impl IntoIterator<Item = Key>) -> Vec<Key> {
        let fresh: Vec<Key> = keys.into_iter().filter(|k| self.interest.want(k)).collect();
        self.cluster
            .bus
            .channels
            .store(self.interest.len(), Ordering::Relaxed);
        fresh
    }

    fn bus_names(&self, keys: &[Key]) -> Vec<String> {
        keys.iter()
            .map(|(app, channel)| self.cluster.bus.channel_of(app, channel))
            .collect()
    }

    /// How long to wait for Redis to confirm bus subscriptions: not at all while it is
    /// known not to answer (the link subscribes once it does).
    fn bus_wait(&self) -> Duration {
        if self.healthy() {
            interest::SUBSCRIBE_WAIT
        } else {
            Duration::ZERO
        }
    }

    /// A channel's last local subscriber left: its bus subscription lingers.
    fn lose_interest(&mut self, app: &str, channel: &str) {
        let over = self
            .interest
            .release(&(app.into(), channel.into()), Instant::now());
        self.releasing.extend(over);
    }

    /// Unsubscribes the bus channels whose linger ended, and those over the bound, at once
    /// (one round trip's wait for all), and forgets the cached events of those channels:
    /// this node hears their next events no more, so its copy would go stale.
    async fn release_bus(&mut self) {
        let mut keys = std::mem::take(&mut self.releasing);
        keys.extend(self.interest.expired(Instant::now()));
        self.cluster
            .bus
            .channels
            .store(self.interest.len(), Ordering::Relaxed);
        if keys.is_empty() {
            return;
        }
        let names = self.bus_names(&keys);
        let subscriber = self.subscriber.clone();
        let all = futures_util::future::join_all(names.iter().map(|n| subscriber.unsubscribe(n)));
        let mut all = std::pin::pin!(all);
        if tokio::time::timeout(self.bus_wait(), all.as_mut())
            .await
            .is_err()
        {
            tracing::debug!(
                channels = names.len(),
                "Cluster bus: unsubscribes not confirmed yet"
            );
        }
        for (app, channel) in keys {
            if let Some(app) = self.cluster.app(&app) {
                app.cache.forget(&channel);
            }
        }
    }

    /// Sets `node`'s subscription count of a channel; reports transitions if `loud`.
    async fn sync_channel(
        &mut self,
        node: u32,
        app: &App,
        channel: &str,
        n: usize,
        loud: bool,
    ) -> RedisResult<()> {
        let (before, after) = self.set_channel(node, app, channel, n).await?;
        if loud {
            self.channel_events(app, channel, before, after);
        }
        Ok(())
    }

    /// Sets `node`'s subscription count of a channel; returns the cluster's total before
    /// and after.
    async fn set_channel(
        &mut self,
        node: u32,
        app: &App,
        channel: &str,
        n: usize,
    ) -> RedisResult<(i64, i64)> {
        let keys = &self.cluster.keys;
        let id = app.id();
        self.channel_set
            .key(keys.subs(id, channel))
            .key(keys.chans(id))
            .key(keys.node_subs(id, node))
            .arg(node)
            .arg(channel)
            .arg(n)
            .arg(index_field(&[id, channel]))
            .invoke_async(&mut self.conn)
            .await
    }

    /// Occupied and vacated webhooks, and the subscription count event, for a change of a
    /// channel's cluster-wide subscription count.
    fn channel_events(&self, app: &App, channel: &str, before: i64, after: i64) {
        let events = transitions::channel_events(channel, count(before), count(after));
        transitions::channel_changed(&*self.cluster, app, channel, events);
    }

    #[allow(clippy::too_many_arguments)] // The script's arguments, named.
    async fn set_member(
        &mut self,
        node: u32,
        app: &App,
        channel: &str,
        user: &str,
        n: u32,
        info: &str,
        max: usize,
        list: bool,
    ) -> RedisResult<MemberSet> {
        let keys = &self.cluster.keys;
        let id = app.id();
        let reply: Vec<String> = self
            .member_set
            .key(keys.members(id, channel))
            .key(keys.infos(id, channel))
            .key(keys.node_members(id, node))
            .arg(user)
            .arg(n)
            .arg(index_field(&[id, channel, user]))
            .arg(info)
            .arg(max)
            .arg(if list { "1" } else { "0" })
            .invoke_async(&mut self.conn)
            .await?;
        member_reply(reply)
    }

    /// Sets `node`'s signed-in connection count of a user, telling watchers everywhere when
    /// the user comes online or goes offline.
    async fn sync_user(
        &mut self,
        node: u32,
        app: &App,
        user: &str,
        n: usize,
        loud: bool,
    ) -> RedisResult<()> {
        let keys = &self.cluster.keys;
        let id = app.id();
        let (before, after): (i64, i64) = self
            .user_set
            .key(keys.users(id))
            .key(keys.node_users(id, node))
            .arg(user)
            .arg(n)
            .arg(index_field(&[id, user]))
            .invoke_async(&mut self.conn)
            .await?;
        if loud {
            self.user_events(app, user, before, after);
        }
        Ok(())
    }

    /// Tells watchers everywhere that a user came online or went offline, if it did.
    fn user_events(&self, app: &App, user: &str, before: i64, after: i64) {
        let edge = edge(count(before), count(after));
        transitions::user_changed(&*self.cluster, app, user, edge);
    }

    /// Sets `node`'s counts of `items`, [`RESTATE_BATCH`] per round trip, reporting the
    /// transitions if `loud`. This node's counts are read from the hub and the registry as
    /// each batch is built; a dead node's are zero.
    async fn restate(&mut self, node: u32, items: Vec<Restate>, loud: bool) -> RedisResult<()> {
        let local = node == self.cluster.node_id;
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let batch: Vec<Restate> = items.by_ref().take(RESTATE_BATCH).collect();
            let keys = &self.cluster.keys;
            // Items of several apps (a dead node's, pending users) go one pipeline per
            // app's slot on a cluster: each script's keys are its app's.
            let mut cmds: Vec<(String, Cmd)> = Vec::with_capacity(batch.len());
            for item in &batch {
                let mut eval = redis::cmd("EVAL");
                let id = match item {
                    Restate::Member {
                        app,
                        channel,
                        user,
                        info,
                    } => {
                        let id = app.id();
                        let n = if local {
                            app.hub.member_connections(channel, user)
                        } else {
                            0
                        };
                        eval.arg(scripts::MEMBER_SET)
                            .arg(3)
                            .arg(keys.members(id, channel))
                            .arg(keys.infos(id, channel))
                            .arg(keys.node_members(id, node))
                            .arg(user.as_str())
                            .arg(n)
                            .arg(index_field(&[id, channel, user]))
                            .arg(info.as_deref().unwrap_or(""))
                            .arg(0)
                            .arg("0");
                        id
                    }
                    Restate::Channel { app, channel } => {
                        let id = app.id();
                        let n = if local {
                            app.hub.counts(channel).subscription_count
                        } else {
                            0
                        };
                        eval.arg(scripts::CHANNEL_SET)
                            .arg(3)
                            .arg(keys.subs(id, channel))
                            .arg(keys.chans(id))
                            .arg(keys.node_subs(id, node))
                            .arg(node)
                            .arg(channel.as_str())
                            .arg(n)
                            .arg(index_field(&[id, channel]));
                        id
                    }
                    Restate::User { app, user } => {
                        let id = app.id();
                        let n = if local {
                            app.users.connections(user).len()
                        } else {
                            0
                        };
                        eval.arg(scripts::USER_SET)
                            .arg(2)
                            .arg(keys.users(id))
                            .arg(keys.node_users(id, node))
                            .arg(user.as_str())
                            .arg(n)
                            .arg(index_field(&[id, user]));
                        id
                    }
                };
                cmds.push((keys.users(id), eval));
            }
            let replies: Vec<redis::Value> = self.conn.query_each(cmds).await?;
            if replies.len() != batch.len() {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::TypeError,
                    "unexpected pipeline reply",
                )));
            }
            for (item, reply) in batch.iter().zip(replies) {
                match item {
                    Restate::Member {
                        app,
                        channel,
                        user,
                        info,
                    } => {
                        let set = member_reply(redis::from_redis_value(&reply)?)?;
                        if let (true, MemberSet::Set { before, after, .. }) = (loud, set) {
                            transitions::member_changed(
                                &*self.cluster,
                                app,
                                channel,
                                (user, info.as_deref()),
                                edge(count(before), count(after)),
                                None,
                            );
                        }
                    }
                    Restate::Channel { app, channel } => {
                        let (before, after): (i64, i64) = redis::from_redis_value(&reply)?;
                        if loud {
                            self.channel_events(app, channel, before, after);
                        }
                    }
                    Restate::User { app, user } => {
                        let (before, after): (i64, i64) = redis::from_redis_value(&reply)?;
                        if loud {
                            self.user_events(app, user, before, after);
                        }
                    }
                }
            }
            // Let the node's other tasks (its sockets among them) run between batches.
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// What Redis lists for `node` in each of `apps`: its presence members, channels and
    /// signed-in users there (one round trip; one per app's slot on a cluster).
    async fn listed(&mut self, node: u32, apps: &[Arc<App>]) -> RedisResult<Vec<Listed>> {
        let keys = &self.cluster.keys;
        let mut cmds = Vec::with_capacity(apps.len() * 3);
        for app in apps {
            let id = app.id();
            let members = keys.node_members(id, node);
            cmds.push((members.clone(), Cmd::hkeys(&members)));
            cmds.push((members, Cmd::smembers(keys.node_subs(id, node))));
            cmds.push((keys.users(id), Cmd::hkeys(keys.node_users(id, node))));
        }
        let replies = self.conn.query_each(cmds).await?;
        replies
            .chunks(3)
            .map(|three| match three {
                [m, c, u] => Ok(Listed {
                    members: redis::from_redis_value(m)?,
                    channels: redis::from_redis_value(c)?,
                    users: redis::from_redis_value(u)?,
                }),
                _ => Err(redis::RedisError::from((
                    redis::ErrorKind::TypeError,
                    "unexpected pipeline reply",
                ))),
            })
            .collect()
    }

    /// Every app this node serves. A dead node's entries of an app it does not serve are
    /// left: they have no sockets here to tell, and a node that serves the app reaps them.
    fn all_apps(&self) -> Vec<Arc<App>> {
        self.cluster.apps.get().map(|s| s.all()).unwrap_or_default()
    }

    /// Removes a dead node's share with the events its connections' clean disconnects
    /// would have produced.
    async fn reap(&mut self, dead: u32) -> RedisResult<()> {
        let apps = self.all_apps();
        let listed = self.listed(dead, &apps).await?;
        let mut items = Vec::new();
        let (mut n_channels, mut n_members) = (0, 0);
        for (app, listed) in apps.iter().zip(&listed) {
            n_channels += listed.channels.len();
            n_members += listed.members.len();
            let id = app.id();
            items.extend(listed.members(id).map(|(channel, user)| Restate::Member {
                app: app.clone(),
                channel: channel.to_owned(),
                user: user.to_owned(),
                info: None,
            }));
            items.extend(listed.channels(id).map(|channel| Restate::Channel {
                app: app.clone(),
                channel: channel.to_owned(),
            }));
            items.extend(listed.users(id).map(|user| Restate::User {
                app: app.clone(),
                user: user.to_owned(),
            }));
        }
        tracing::warn!(
            node = dead,
            channels = n_channels,
            members = n_members,
            "Cluster: a node stopped heartbeating; removing its connections"
        );
        self.restate(dead, items, true).await?;
        let cmds = self.forget_node(dead, &apps);
        self.conn.query_each(cmds).await.map(|_| ())
    }

    /// The removal of `node`'s indexes and connection counts in `apps`.
    fn forget_node(&self, node: u32, apps: &[Arc<App>]) -> Vec<(String, Cmd)> {
        let keys = &self.cluster.keys;
        let mut cmds = Vec::with_capacity(apps.len() * 2);
        for app in apps {
            let id = app.id();
            let conns = keys.conns(id);
            let indexes = [
                keys.node_members(id, node),
                keys.node_subs(id, node),
                keys.node_users(id, node),
            ];
            cmds.push((conns.clone(), Cmd::del(&indexes)));
            cmds.push((conns.clone(), Cmd::hdel(&conns, node)));
        }
        cmds
    }

    /// Makes Redis hold exactly this node's local state: every channel, presence member
    /// and signed-in user Redis lists for the node or the hub holds is set to the local
    /// count.
    async fn resync(&mut self, loud: bool) -> RedisResult<()> {
        let Some(store) = self.cluster.apps.get().cloned() else {
            return Ok(());
        };
        let node = self.cluster.node_id;
        let apps = store.all();
        let listed = self.listed(node, &apps).await?;
        for (app, listed) in apps.into_iter().zip(listed) {
            let id = app.id();
            let mut channels: BTreeSet<String> = app
                .hub
                .all_channels()
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            // (channel, user) → the info this node holds (none if only Redis lists it)
            let mut members: BTreeMap<(String, String), Option<Box<str>>> = BTreeMap::new();
            for (channel, user) in listed.members(id) {
                channels.insert(channel.to_owned());
                members.insert((channel.to_owned(), user.to_owned()), None);
            }
            channels.extend(listed.channels(id).map(str::to_owned));
            for channel in &channels {
                for m in app.hub.local_members(channel) {
                    members.insert((channel.clone(), m.user_id.to_string()), m.user_info);
                }
            }
            let mut users: BTreeSet<String> = app.users.user_ids().into_iter().collect();
            users.extend(listed.users(id).map(str::to_owned));
            let mut items = Vec::with_capacity(members.len() + channels.len() + users.len());
            items.extend(
                members
                    .into_iter()
                    .map(|((channel, user), info)| Restate::Member {
                        app: app.clone(),
                        channel,
                        user,
                        info,
                    }),
            );
            items.extend(channels.into_iter().map(|channel| Restate::Channel {
                app: app.clone(),
                channel,
            }));
            items.extend(users.into_iter().map(|user| Restate::User {
                app: app.clone(),
                user,
            }));
            self.restate(node, items, loud).await?;
        }
        Ok(())
    }

    /// Clean shutdown: every connection is closed by now; withdraw what is left.
    async fn leave(&mut self) {
        self.cluster.stopping.store(true, Ordering::Relaxed);
        // A heartbeat in flight would list this node again after it left.
        let cluster = self.cluster.clone();
        let _beating = cluster.beating.lock().await;
        if let Err(e) = self.resync(true).await {
            tracing::warn!(error = %e, "Cluster: could not withdraw this node's state; the others will after node_timeout");
            return;
        }
        let node = self.cluster.node_id;
        let nodes = self.cluster.keys.nodes();
        let mut cmds = vec![(nodes.clone(), Cmd::zrem(&nodes, node))];
        cmds.extend(self.forget_node(node, &self.all_apps()));
        if let Err(e) = self.conn.query_each(cmds).await {
            tracing::warn!(error = %e, "Cluster: could not leave cleanly");
        } else {
            tracing::info!("Cluster: left");
        }
    }
}

/// The member script's reply: refused, or the totals before and after and the list.
fn member_reply(reply: Vec<String>) -> RedisResult<MemberSet> {
    let number = |i: usize| reply.get(i).and_then(|s| s.parse::<i64>().ok());
    match (number(0), number(1)) {
        (Some(-1), _) => Ok(MemberSet::Refused),
        (Some(before), Some(after)) => Ok(MemberSet::Set {
            before,
            after,
            list: reply.get(2..).map(<[String]>::to_vec).unwrap_or_default(),
        }),
        _ => Err(redis::RedisError::from((
            redis::ErrorKind::TypeError,
            "unexpected member_set reply",
        ))),
    }
}

/// Subscribes the bus channels `names` and waits up to `wait` for Redis to confirm them
/// all. Every request is sent before this first yields, so requests reach the link in the
/// state task's order even when it does not wait (`wait` zero: Redis is away) or times out;
/// the link keeps them wanted and subscribes once Redis answers.
async fn subscribe_bus(subscriber: Subscriber, names: Vec<String>, wait: Duration) {
    if names.is_empty() {
        return;
    }
    let all = futures_util::future::join_all(names.iter().map(|n| subscriber.subscribe(n)));
    let mut all = std::pin::pin!(all);
    let results = if wait.is_zero() {
        all.as_mut().now_or_never()
    } else {
        tokio::time::timeout(wait, all.as_mut()).await.ok()
    };
    match results {
        Some(results) => {
            if let Some(error) = results.into_iter().find_map(Result::err) {
                tracing::warn!(%error, "Cluster bus: a channel's subscription failed; its events from other nodes are lost");
            }
        }
        None if wait.is_zero() => {}
        None => tracing::warn!(
            channels = names.len(),
            "Cluster bus: Redis did not confirm new subscriptions in time; answering the subscribers anyway"
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn app(id: &str) -> Arc<App> {
        let mut config = Config::default().apps.remove(0);
        config.id = id.to_owned();
        Arc::new(App::new(
            config,
            &crate::Config::default().webhook_settings(),
        ))
    }

    fn subscribe(app: &Arc<App>, conn: ConnId) -> Queued {
        Queued {
            op: Op::Subscribe {
                app: app.clone(),
                channel: format!("c{conn}").into(),
                conn,
                outbox: Arc::new(Outbox::new(1024)),
                cache: false,
            },
            _held: None,
        }
    }

    fn conns(batch: &[Queued]) -> Vec<ConnId> {
        batch
            .iter()
            .map(|q| match &q.op {
                Op::Subscribe { conn, .. } | Op::Leave { conn, .. } => *conn,
                _ => 0,
            })
            .collect()
    }

    /// Lanes holding 600 subscriptions of `a`: three runs.
    fn lanes_of(a: &Arc<App>) -> Lanes {
        let mut lanes = Lanes::default();
        for conn in 0..600 {
            lanes.push(subscribe(a, conn));
        }
        lanes
    }

    #[test]
    fn apps_take_turns_and_keep_their_own_order() {
        let (a, b) = (app("a"), app("b"));
        let mut lanes = lanes_of(&a);
        lanes.push(subscribe(&b, 1000));
        lanes.push(Queued {
            op: Op::Leave {
                app: b.clone(),
                channel: "c1000".into(),
                conn: 1000,
            },
            _held: None,
        });
        let first = lanes.next_batch().expect("a's first run");
        assert_eq!(conns(&first), (0..256).collect::<Vec<_>>());
        // b waits for one of a's runs, not for all of them; its leave is a run of its own.
        assert_eq!(conns(&lanes.next_batch().expect("b")), [1000]);
        assert_eq!(
            conns(&lanes.next_batch().expect("a's second run")),
            (256..512).collect::<Vec<_>>()
        );
        let leave = lanes.next_batch().expect("b's leave");
        assert!(matches!(leave[0].op, Op::Leave { .. }));
        assert_eq!(conns(&lanes.next_batch().expect("a's rest")).len(), 88);
        assert!(lanes.next_batch().is_none());
        assert!(lanes.by_app.is_empty());
    }

    #[test]
    fn an_app_that_arrives_during_a_run_goes_before_that_apps_next_run() {
        let (a, b) = (app("a"), app("b"));
        let mut lanes = lanes_of(&a);
        assert_eq!(
            conns(&lanes.next_batch().expect("a's first run")).len(),
            256
        );
        // b's first op arrives while a's run is applied, with a's next run still queued.
        lanes.push(subscribe(&b, 1000));
        assert_eq!(conns(&lanes.next_batch().expect("b")), [1000]);
        assert_eq!(
            conns(&lanes.next_batch().expect("a's second run")).len(),
            256
        );
        assert_eq!(conns(&lanes.next_batch().expect("a's rest")).len(), 88);
        assert!(lanes.next_batch().is_none());
    }

    fn leave(app: &Arc<App>, conn: ConnId) -> Queued {
        Queued {
            op: Op::Leave {
                app: app.clone(),
                channel: format!("c{conn}").into(),
                conn,
            },
            _held: None,
        }
    }

    fn kinds(batch: &[Queued]) -> Vec<&'static str> {
        batch
            .iter()
            .map(|q| match q.op {
                Op::Subscribe { .. } => "subscribe",
                Op::Leave { .. } => "leave",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn a_run_is_one_kind_of_op_in_order() {
        let a = app("a");
        let mut lanes = Lanes::default();
        for queued in [
            subscribe(&a, 1),
            subscribe(&a, 2),
            leave(&a, 1),
            leave(&a, 2),
        ] {
            lanes.push(queued);
        }
        lanes.push(Queued {
            op: Op::Connections { app: a.clone() },
            _held: None,
        });
        lanes.push(Queued {
            op: Op::Connections { app: a.clone() },
            _held: None,
        });
        lanes.push(subscribe(&a, 3));
        let mut runs = Vec::new();
        while let Some(batch) = lanes.next_batch() {
            runs.push((kinds(&batch), conns(&batch)));
        }
        assert_eq!(
            runs,
            [
                (vec!["subscribe", "subscribe"], vec![1, 2]),
                (vec!["leave", "leave"], vec![1, 2]),
                // Other ops are applied one at a time.
                (vec!["other"], vec![0]),
                (vec!["other"], vec![0]),
                (vec!["subscribe"], vec![3]),
            ]
        );
    }

    #[test]
    fn the_member_scripts_reply_is_a_refusal_or_the_counts_and_list() {
        let reply = |parts: &[&str]| member_reply(parts.iter().map(|p| p.to_string()).collect());
        assert!(matches!(reply(&["-1"]), Ok(MemberSet::Refused)));
        match reply(&["0", "1", "ann", "{}"]) {
            Ok(MemberSet::Set {
                before: 0,
                after: 1,
                list,
            }) => assert_eq!(list, ["ann", "{}"]),
            _ => panic!("a set member"),
        }
        assert!(matches!(
            reply(&["2", "1"]),
            Ok(MemberSet::Set { before: 2, after: 1, ref list }) if list.is_empty()
        ));
        for bad in [&[][..], &["x"], &["1"], &["1", "y"]] {
            assert!(reply(bad).is_err(), "{bad:?}");
        }
        assert_eq!((count(-1), count(0), count(7)), (0, 0, 7));
    }

    #[test]
    fn stop_waits_for_every_lane() {
        let a = app("a");
        let mut lanes = Lanes::default();
        let (done, _) = tokio::sync::oneshot::channel();
        lanes.push(Queued {
            op: Op::Stop(done),
            _held: None,
        });
        lanes.push(subscribe(&a, 1));
        assert!(lanes.stop.is_some());
        assert_eq!(conns(&lanes.next_batch().expect("a")), [1]);
        assert!(lanes.next_batch().is_none());
    }
}
