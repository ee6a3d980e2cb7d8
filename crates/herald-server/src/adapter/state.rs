//! The node's state task: applies queued state changes to Redis in order, heartbeats,
//! removes dead nodes' shares, and restates this node's share after Redis comes back.
//!
//! While Redis does not answer, changes are applied to the local hub only (a presence join
//! gets this node's member list) and the node is marked for a resync; the resync compares
//! what Redis holds for this node with the hub and restates every difference, reporting the
//! transitions as a clean join or leave would have. After Redis lost its data (a new epoch)
//! every node restates its share quietly: the members did not really come and go.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_protocol::channel::ChannelKind;
use herald_protocol::frame;
use herald_protocol::presence::Member;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisResult, Script};
use tokio::sync::mpsc;

use super::bus::BusMessage;
use super::scripts::{self, index_field, split_field};
use super::{Cluster, Join, Op};
use crate::apps::App;
use crate::hub::{ConnId, LocalMember};
use crate::outbox::Outbox;
use crate::webhooks::WebhookEvent;
use crate::ws::text_frame;

/// Subscriptions counted in one pipelined round trip at most.
const SUBSCRIBE_BATCH: usize = 256;

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

/// A presence member's connections on this node, and its `user_info`.
type LocalShare = (u32, Option<Box<str>>);

pub(super) struct StateTask {
    cluster: Arc<Cluster>,
    conn: ConnectionManager,
    channel_set: Script,
    member_set: Script,
    user_set: Script,
    heartbeat: Script,
    /// The Redis epoch seen last; `None` before the first heartbeat.
    epoch: Option<String>,
    needs_resync: bool,
}

impl StateTask {
    pub(super) async fn new(cluster: Arc<Cluster>) -> Self {
        let mut task = StateTask {
            conn: cluster.redis(),
            cluster,
            channel_set: scripts::channel_set(),
            member_set: scripts::member_set(),
            user_set: scripts::user_set(),
            heartbeat: scripts::heartbeat(),
            epoch: None,
            needs_resync: false,
        };
        task.heartbeat().await;
        task
    }

    pub(super) async fn run(mut self, mut ops: mpsc::Receiver<Op>) {
        let period = (self.cluster.node_timeout / 3).min(Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Heartbeats first: a flood of changes must not get this node declared dead.
                biased;
                _ = tick.tick() => self.heartbeat().await,
                op = ops.recv() => {
                    let mut next = op;
                    // A reconnect storm queues many subscriptions: count a run of them in
                    // one pipelined round trip instead of one each.
                    while let Some(op @ Op::Subscribe { .. }) = next {
                        let mut batch = vec![op];
                        next = None;
                        while batch.len() < SUBSCRIBE_BATCH {
                            match ops.try_recv() {
                                Ok(op @ Op::Subscribe { .. }) => batch.push(op),
                                Ok(other) => {
                                    next = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.subscribe_batch(batch).await;
                    }
                    match next {
                        None => {
                            if ops.is_closed() && ops.is_empty() {
                                return;
                            }
                        }
                        Some(Op::Stop(done)) => {
                            self.leave().await;
                            let _ = done.send(());
                            return;
                        }
                        Some(op) => self.apply(op).await,
                    }
                }
            }
        }
    }

    fn healthy(&self) -> bool {
        self.cluster.healthy.load(Ordering::Relaxed)
    }

    fn failed(&mut self, error: &redis::RedisError) {
        if self.cluster.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "Cluster: Redis is not answering; serving this node's sockets alone until it returns");
        }
        self.needs_resync = true;
    }

    async fn apply(&mut self, op: Op) {
        match op {
            op @ Op::Subscribe { .. } => self.subscribe_batch(vec![op]).await,
            Op::Join(join) => self.join(*join).await,
            Op::Leave { app, channel, conn } => {
                let Some(left) = app.hub.leave(&channel, conn, false) else {
                    return;
                };
                if !self.healthy() {
                    if let Some(user) = &left.member_removed {
                        let removed = text_frame(&frame::member_removed(&channel, user));
                        app.hub.publish(&channel, &removed, None);
                    }
                    self.needs_resync = true;
                    return;
                }
                let node = self.cluster.node_id;
                let result = async {
                    if let Some((user, n)) = &left.member {
                        self.sync_member(node, &app, &channel, user, *n, None, true)
                            .await?;
                    }
                    let n = app.hub.counts(&channel).subscription_count;
                    self.sync_channel(node, &app, &channel, n, true).await
                }
                .await;
                if let Err(e) = result {
                    self.failed(&e);
                }
            }
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
                let key = self.cluster.keys.cache(&app.config.id, &channel);
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
                let key = self.cluster.keys.conns(&app.config.id);
                let count = app.connection_count();
                let set: RedisResult<()> = self.conn.hset(key, self.cluster.node_id, count).await;
                if let Err(e) = set {
                    self.failed(&e);
                }
            }
            Op::User { app, user } => {
                if !self.healthy() {
                    self.needs_resync = true;
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
                    let key = self.cluster.keys.users(&app.config.id);
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
                let (on, off): (Vec<_>, Vec<_>) =
                    users.iter().zip(online).partition(|(_, online)| *online);
                outbox.push(text_frame(&frame::watchlist_events(
                    on.iter().map(|(u, _)| u.as_ref()),
                    off.iter().map(|(u, _)| u.as_ref()),
                )));
            }
            Op::Stop(done) => {
                let _ = done.send(());
            }
        }
    }

    async fn join(&mut self, join: Join) {
        let Join {
            app,
            channel,
            conn,
            socket_id,
            outbox,
            member,
            cache,
        } = join;
        let already = app.hub.is_subscribed(&channel, conn);
        let local = app.hub.member_connections(&channel, &member.user_id) + u32::from(!already);
        let max = app.config.limits.max_presence_members;
        let info = member.user_info.as_deref().unwrap_or("");
        let node = self.cluster.node_id;
        let answer = if self.healthy() {
            match self
                .set_member(
                    node,
                    &app,
                    &channel,
                    &member.user_id,
                    local,
                    info,
                    max,
                    true,
                )
                .await
            {
                Ok(answer) => Some(answer),
                Err(e) => {
                    self.failed(&e);
                    None
                }
            }
        } else {
            None
        };
        match answer {
            Some(MemberSet::Refused) => {
                outbox.push(presence_full(&channel, max));
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
                if before == 0 && after > 0 {
                    let added = member_added(&channel, &member);
                    app.publish(&channel, &added, Some(conn), Some(&socket_id));
                    app.webhook("member_added", || WebhookEvent::MemberAdded {
                        channel: channel.clone(),
                        user_id: member.user_id.as_str().into(),
                    });
                }
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
                    outbox.push(presence_full(&channel, max));
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
                    let added = member_added(&channel, &member);
                    app.hub.publish(&channel, &added, Some(conn));
                }
                self.needs_resync = true;
            }
        }
        if cache {
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
            let key = (app.config.id.clone(), channel.clone());
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
        if items.iter().any(|i| i.count.is_some()) {
            if self.healthy() {
                let node = self.cluster.node_id;
                let keys = &self.cluster.keys;
                let mut pipe = redis::pipe();
                for item in &items {
                    let Some(n) = item.count else { continue };
                    let id = &item.app.config.id;
                    pipe.cmd("EVAL")
                        .arg(scripts::CHANNEL_SET)
                        .arg(3)
                        .arg(keys.subs(id, &item.channel))
                        .arg(keys.chans(id))
                        .arg(keys.node_subs(node))
                        .arg(node)
                        .arg(item.channel.as_ref())
                        .arg(n)
                        .arg(index_field(&[id, &item.channel]));
                }
                match pipe.query_async::<Vec<(i64, i64)>>(&mut self.conn).await {
                    Ok(changes) => {
                        let mut changes = changes.into_iter();
                        for item in items.iter_mut().filter(|i| i.count.is_some()) {
                            item.change = changes.next();
                        }
                    }
                    Err(e) => self.failed(&e),
                }
            } else {
                self.needs_resync = true;
            }
        }
        for item in items {
            if item.cache {
                self.fill_cache(&item.app, &item.channel).await;
            }
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
        let id = &app.config.id;
        self.channel_set
            .key(keys.subs(id, channel))
            .key(keys.chans(id))
            .key(keys.node_subs(node))
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
        let kind = ChannelKind::of(channel);
        if before == after || kind == ChannelKind::ServerToUser {
            return;
        }
        if before == 0 {
            app.webhook("channel_occupied", || WebhookEvent::ChannelOccupied {
                channel: channel.into(),
            });
        } else if after == 0 {
            app.webhook("channel_vacated", || WebhookEvent::ChannelVacated {
                channel: channel.into(),
            });
        }
        if !kind.is_presence() {
            app.subscription_count_changed(channel, after.max(0) as usize);
        }
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
        let id = &app.config.id;
        let reply: Vec<String> = self
            .member_set
            .key(keys.members(id, channel))
            .key(keys.infos(id, channel))
            .key(keys.node_members(node))
            .arg(user)
            .arg(n)
            .arg(index_field(&[id, channel, user]))
            .arg(info)
            .arg(max)
            .arg(if list { "1" } else { "0" })
            .invoke_async(&mut self.conn)
            .await?;
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

    /// Sets `node`'s connection count of a presence member, emitting `member_added` or
    /// `member_removed` (frames to the whole cluster, and webhooks) on a transition.
    #[allow(clippy::too_many_arguments)] // The script's arguments, named.
    async fn sync_member(
        &mut self,
        node: u32,
        app: &App,
        channel: &str,
        user: &str,
        n: u32,
        info: Option<&str>,
        loud: bool,
    ) -> RedisResult<()> {
        let MemberSet::Set { before, after, .. } = self
            .set_member(node, app, channel, user, n, info.unwrap_or(""), 0, false)
            .await?
        else {
            return Ok(());
        };
        if !loud {
            return Ok(());
        }
        if before == 0 && after > 0 {
            let added = text_frame(&frame::member_added(channel, user, info));
            app.publish(channel, &added, None, None);
            app.webhook("member_added", || WebhookEvent::MemberAdded {
                channel: channel.into(),
                user_id: user.into(),
            });
        } else if before > 0 && after == 0 {
            let removed = text_frame(&frame::member_removed(channel, user));
            app.publish(channel, &removed, None, None);
            app.webhook("member_removed", || WebhookEvent::MemberRemoved {
                channel: channel.into(),
                user_id: user.into(),
            });
        }
        Ok(())
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
        let id = &app.config.id;
        let (before, after): (i64, i64) = self
            .user_set
            .key(keys.users(id))
            .key(keys.node_users(node))
            .arg(user)
            .arg(n)
            .arg(index_field(&[id, user]))
            .invoke_async(&mut self.conn)
            .await?;
        if loud && (before == 0) != (after == 0) {
            let online = after > 0;
            app.users.notify_watchers(user, online);
            self.cluster.send(&BusMessage::Watch {
                app: id.clone(),
                user: user.to_owned(),
                online,
            });
        }
        Ok(())
    }

    async fn heartbeat(&mut self) {
        let Some(store) = self.cluster.apps.get().cloned() else {
            return;
        };
        let node = self.cluster.node_id;
        let apps = store.all();
        let mut pipe = redis::pipe();
        for app in &apps {
            let key = self.cluster.keys.conns(&app.config.id);
            pipe.hset(&key, node, app.connection_count()).ignore();
            pipe.hgetall(&key);
        }
        let counts: RedisResult<Vec<HashMap<u32, usize>>> = if apps.is_empty() {
            Ok(Vec::new())
        } else {
            pipe.query_async(&mut self.conn).await
        };
        let counts = match counts {
            Ok(counts) => counts,
            Err(e) => return self.failed(&e),
        };
        {
            let mut others = self.cluster.others.lock();
            for (app, per_node) in apps.iter().zip(counts) {
                let sum = per_node
                    .iter()
                    .filter(|(n, _)| **n != node)
                    .map(|(_, c)| c)
                    .sum();
                others.insert(app.config.id.clone(), sum);
            }
        }
        let fresh_epoch = format!("{:016x}", rand::random::<u64>());
        let reply: RedisResult<Vec<String>> = self
            .heartbeat
            .key(self.cluster.keys.nodes())
            .key(self.cluster.keys.epoch())
            .arg(node)
            .arg(&fresh_epoch)
            .arg(self.cluster.node_timeout.as_millis() as u64)
            .invoke_async(&mut self.conn)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => return self.failed(&e),
        };
        let [epoch, added, dead @ ..] = reply.as_slice() else {
            return;
        };
        let was_healthy = self.cluster.healthy.swap(true, Ordering::Relaxed);
        if !was_healthy {
            tracing::info!("Cluster: Redis answers again");
        }
        let first = self.epoch.is_none();
        let epoch_changed = self.epoch.as_deref().is_some_and(|e| e != epoch);
        self.epoch = Some(epoch.clone());
        let resync = if first {
            None
        } else if epoch_changed {
            tracing::warn!("Cluster: Redis lost the cluster's state; restating this node's share");
            Some(false)
        } else if added == "1" {
            tracing::warn!("Cluster: this node had been declared dead; restating its share");
            Some(true)
        } else if self.needs_resync || !was_healthy {
            Some(true)
        } else {
            None
        };
        if let Some(loud) = resync {
            if let Err(e) = self.resync(loud).await {
                return self.failed(&e);
            }
            self.needs_resync = false;
        }
        for dead in dead {
            let Ok(dead) = dead.parse::<u32>() else {
                continue;
            };
            if dead == node {
                continue;
            }
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
    }

    /// Removes a dead node's share with the events its connections' clean disconnects
    /// would have produced.
    async fn reap(&mut self, dead: u32) -> RedisResult<()> {
        let keys = self.cluster.keys.clone();
        let members: Vec<String> = self.conn.hkeys(keys.node_members(dead)).await?;
        let channels: Vec<String> = self.conn.smembers(keys.node_subs(dead)).await?;
        let users: Vec<String> = self.conn.hkeys(keys.node_users(dead)).await?;
        tracing::warn!(
            node = dead,
            channels = channels.len(),
            members = members.len(),
            "Cluster: a node stopped heartbeating; removing its connections"
        );
        for field in &members {
            let Some([app, channel, user]) = split_field::<3>(field) else {
                continue;
            };
            if let Some(app) = self.cluster.app(app) {
                self.sync_member(dead, &app, channel, user, 0, None, true)
                    .await?;
            }
        }
        for field in &channels {
            let Some([app, channel]) = split_field::<2>(field) else {
                continue;
            };
            if let Some(app) = self.cluster.app(app) {
                self.sync_channel(dead, &app, channel, 0, true).await?;
            }
        }
        for field in &users {
            let Some([app, user]) = split_field::<2>(field) else {
                continue;
            };
            if let Some(app) = self.cluster.app(app) {
                self.sync_user(dead, &app, user, 0, true).await?;
            }
        }
        let mut pipe = redis::pipe();
        self.forget_node(&mut pipe, dead);
        pipe.query_async::<()>(&mut self.conn).await
    }

    /// Adds to `pipe` the removal of `node`'s indexes and connection counts.
    fn forget_node(&self, pipe: &mut redis::Pipeline, node: u32) {
        let keys = &self.cluster.keys;
        pipe.del(&[
            keys.node_members(node),
            keys.node_subs(node),
            keys.node_users(node),
        ])
        .ignore();
        if let Some(store) = self.cluster.apps.get() {
            for app in store.all() {
                pipe.hdel(keys.conns(&app.config.id), node).ignore();
            }
        }
    }

    /// Makes Redis hold exactly this node's local state: every channel, presence member
    /// and signed-in user Redis lists for the node or the hub holds is set to the local
    /// count.
    async fn resync(&mut self, loud: bool) -> RedisResult<()> {
        let Some(store) = self.cluster.apps.get().cloned() else {
            return Ok(());
        };
        let node = self.cluster.node_id;
        let keys = self.cluster.keys.clone();
        let listed_members: Vec<String> = self.conn.hkeys(keys.node_members(node)).await?;
        let listed_channels: Vec<String> = self.conn.smembers(keys.node_subs(node)).await?;
        let listed_users: Vec<String> = self.conn.hkeys(keys.node_users(node)).await?;
        for app in store.all() {
            let id = app.config.id.as_str();
            let mut channels: BTreeSet<String> = app
                .hub
                .all_channels()
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            // (channel, user) → (count here, info)
            let mut members: BTreeMap<(String, String), LocalShare> = BTreeMap::new();
            for field in &listed_members {
                if let Some([a, channel, user]) = split_field::<3>(field) {
                    if a == id {
                        channels.insert(channel.to_owned());
                        members.insert((channel.to_owned(), user.to_owned()), (0, None));
                    }
                }
            }
            for field in &listed_channels {
                if let Some([a, channel]) = split_field::<2>(field) {
                    if a == id {
                        channels.insert(channel.to_owned());
                    }
                }
            }
            for channel in &channels {
                for m in app.hub.local_members(channel) {
                    members.insert(
                        (channel.clone(), m.user_id.to_string()),
                        (m.connections, m.user_info),
                    );
                }
            }
            for ((channel, user), (n, info)) in &members {
                self.sync_member(node, &app, channel, user, *n, info.as_deref(), loud)
                    .await?;
            }
            for channel in &channels {
                let n = app.hub.counts(channel).subscription_count;
                self.sync_channel(node, &app, channel, n, loud).await?;
            }
            let mut users: BTreeSet<String> = app.users.user_ids().into_iter().collect();
            for field in &listed_users {
                if let Some([a, user]) = split_field::<2>(field) {
                    if a == id {
                        users.insert(user.to_owned());
                    }
                }
            }
            for user in &users {
                let n = app.users.connections(user).len();
                self.sync_user(node, &app, user, n, loud).await?;
            }
        }
        Ok(())
    }

    /// Clean shutdown: every connection is closed by now; withdraw what is left.
    async fn leave(&mut self) {
        if let Err(e) = self.resync(true).await {
            tracing::warn!(error = %e, "Cluster: could not withdraw this node's state; the others will after node_timeout");
            return;
        }
        let node = self.cluster.node_id;
        let mut pipe = redis::pipe();
        pipe.zrem(self.cluster.keys.nodes(), node).ignore();
        self.forget_node(&mut pipe, node);
        if let Err(e) = pipe.query_async::<()>(&mut self.conn).await {
            tracing::warn!(error = %e, "Cluster: could not leave cleanly");
        } else {
            tracing::info!("Cluster: left");
        }
    }
}

fn presence_full(channel: &str, max: usize) -> Bytes {
    text_frame(&frame::subscription_error(
        channel,
        "LimitReached",
        &format!("The presence channel already has the maximum of {max} members"),
        4100,
    ))
}

fn member_added(channel: &str, member: &Member) -> Bytes {
    text_frame(&frame::member_added(
        channel,
        &member.user_id,
        member.user_info.as_deref(),
    ))
}
