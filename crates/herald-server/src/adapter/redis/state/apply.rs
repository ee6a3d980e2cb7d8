//! Applying the ops that are not subscriptions or presence joins: runs of leaves, cache
//! channels' events, connection and signed-in user counts, watchlists.

use std::collections::HashSet;
use std::sync::Arc;

use redis::{AsyncCommands, RedisResult};

use super::counts::Restate;
use super::StateTask;
use crate::adapter::redis::members::Membership;
use crate::adapter::redis::ops::Op;
use crate::adapter::transitions;

impl StateTask {
    pub(super) async fn apply(&mut self, op: Op) {
        match op {
            op @ Op::Subscribe { .. } => self.subscribe_batch(vec![op]).await,
            Op::Join(join) => self.join(*join).await,
            op @ Op::Leave { .. } => self.leave_batch(vec![op]).await,
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

    /// A run's count restatements ([`super::lanes::restates`]), after its subscriptions
    /// or leaves: each app's connections and each user's count once, the users' in
    /// pipelined round trips of [`super::RESTATE_BATCH`] rather than one each.
    pub(super) async fn restate_run(&mut self, ops: Vec<Op>) {
        if ops.len() <= 1 {
            for op in ops {
                self.apply(op).await;
            }
            return;
        }
        let mut apps = HashSet::new();
        let mut users = HashSet::new();
        let mut connections = Vec::new();
        let mut items = Vec::new();
        for op in ops {
            match op {
                Op::Connections { app } => {
                    if apps.insert(app.id().to_owned()) {
                        connections.push(Op::Connections { app });
                    }
                }
                Op::User { app, user } => {
                    if users.insert((app.id().to_owned(), user.clone())) {
                        items.push(Restate::User {
                            app,
                            user: user.to_string(),
                        });
                    }
                }
                op => self.apply(op).await,
            }
        }
        for op in connections {
            self.apply(op).await;
        }
        if items.is_empty() {
            return;
        }
        if !self.healthy() {
            self.needs_resync();
            return;
        }
        let node = self.cluster.node_id;
        if let Err(e) = self.restate(node, items, true).await {
            self.failed(&e);
        }
    }

    /// Removes a run of connections from their channels: from the hub first, then this
    /// node's counts of each channel and presence member they touched are restated in
    /// Redis together, with `member_removed`, vacated and count events on transitions.
    pub(super) async fn leave_batch(&mut self, batch: Vec<Op>) {
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
            if !healthy {
                // Redis is away: this node's view is the best there is, for its own sockets
                // (the resync and the next member list read set it right).
                if let Some(user) = &left.member_removed {
                    let change = Membership {
                        user,
                        info: None,
                        present: false,
                        version: None,
                    };
                    self.cluster.member_changed(&app, &channel, change, None);
                }
                self.needs_resync();
            }
            if left.remaining == 0 {
                self.lose_interest(app.id(), &channel);
                self.cluster.rosters.forget(app.id(), &channel);
            }
            if !healthy {
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
}
