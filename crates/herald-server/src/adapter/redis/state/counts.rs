//! This node's counts (and a dead node's) set in Redis through the scripts, one at a time or
//! [`RESTATE_BATCH`] per pipelined round trip, with the events their transitions call for.

use std::collections::HashSet;
use std::sync::Arc;

use redis::{Cmd, RedisResult};

use super::{count, StateTask, RESTATE_BATCH};
use crate::adapter::redis::members::Membership;
use crate::adapter::transitions::{self, edge, Edge};
use crate::apps::App;
use crate::ids::ConnId;

/// What setting a member's count did.
pub(super) enum MemberSet {
    /// The channel is full and the user is not in it.
    Refused,
    Set {
        before: i64,
        after: i64,
        /// The channel's membership version after the call.
        version: u64,
        /// `user, info, user, info, ...` when asked for.
        list: Vec<String>,
    },
}

/// One count of one node to set in Redis as part of a batch: this node's own count, read
/// from the hub or registry as the batch is sent, or zero for a dead node.
pub(super) enum Restate {
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

impl StateTask {
    /// Sets `node`'s subscription count of a channel; reports transitions if `loud`.
    pub(super) async fn sync_channel(
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
        let stamp = self.stamp(app.id());
        let call = self
            .cluster
            .keys
            .channel_set(app.id(), channel, node, n, stamp);
        let counts = call.invoke(&mut self.conn).await?;
        self.confirm();
        Ok(counts)
    }

    /// Occupied and vacated webhooks, and the subscription count event, for a change of a
    /// channel's cluster-wide subscription count.
    pub(super) fn channel_events(&self, app: &App, channel: &str, before: i64, after: i64) {
        let events = transitions::channel_events(channel, count(before), count(after));
        transitions::channel_changed(&*self.cluster, app, channel, events);
    }

    #[allow(clippy::too_many_arguments)] // The script's arguments, named.
    pub(super) async fn set_member(
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
        let stamp = self.stamp(app.id());
        let keys = &self.cluster.keys;
        let call = keys.member_set(app.id(), channel, node, user, n, info, max, list, stamp);
        let reply = call.invoke(&mut self.conn).await?;
        self.confirm();
        member_reply(reply)
    }

    /// A member crossing `edge` in the cluster (at `version`; `None`: on this node alone,
    /// Redis being away): `member_added` or `member_removed` through the channel's roster
    /// here and, with a version, on the bus to the other nodes; then the webhook if
    /// `webhook`. `except` is the joining connection, whose list holds the member already.
    #[allow(clippy::too_many_arguments)] // The change, named.
    pub(super) fn member_edge(
        &self,
        app: &App,
        channel: &str,
        (user, info): (&str, Option<&str>),
        edge: Edge,
        version: Option<u64>,
        except: Option<ConnId>,
        webhook: bool,
    ) {
        let present = match edge {
            Edge::First => true,
            Edge::Last => false,
            Edge::Neither => return,
        };
        let change = Membership {
            user,
            info,
            present,
            version,
        };
        self.cluster.member_changed(app, channel, change, except);
        if webhook {
            transitions::member_webhook(app, channel, user, edge);
        }
    }

    /// Sets `node`'s signed-in connection count of a user, telling watchers everywhere when
    /// the user comes online or goes offline.
    pub(super) async fn sync_user(
        &mut self,
        node: u32,
        app: &App,
        user: &str,
        n: usize,
        loud: bool,
    ) -> RedisResult<()> {
        let call = self.cluster.keys.user_set(app.id(), node, user, n);
        let (before, after): (i64, i64) = call.invoke(&mut self.conn).await?;
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
    pub(super) async fn restate(
        &mut self,
        node: u32,
        items: Vec<Restate>,
        loud: bool,
    ) -> RedisResult<()> {
        let local = node == self.cluster.node_id;
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let batch: Vec<Restate> = items.by_ref().take(RESTATE_BATCH).collect();
            let keys = &self.cluster.keys;
            // Items of several apps (a dead node's, pending users) go one pipeline per
            // app's slot on a cluster: each script's keys are its app's. Each script goes
            // once per app before its calls, which name it by its hash.
            let mut cmds: Vec<(String, Cmd)> = Vec::with_capacity(batch.len() + 3);
            let mut loaded = HashSet::new();
            let mut places = Vec::with_capacity(batch.len());
            for item in &batch {
                let (id, call) = match item {
                    Restate::Member {
                        app,
                        channel,
                        user,
                        info,
                    } => {
                        let n = if local {
                            app.hub.member_connections(channel, user)
                        } else {
                            0
                        };
                        let info = info.as_deref().unwrap_or("");
                        let stamp = self.stamp(app.id());
                        let call = keys.member_set(
                            app.id(),
                            channel,
                            node,
                            user,
                            n,
                            info,
                            0,
                            false,
                            stamp,
                        );
                        (app.id(), call)
                    }
                    Restate::Channel { app, channel } => {
                        let n = if local {
                            app.hub.counts(channel).subscription_count
                        } else {
                            0
                        };
                        let stamp = self.stamp(app.id());
                        (
                            app.id(),
                            keys.channel_set(app.id(), channel, node, n, stamp),
                        )
                    }
                    Restate::User { app, user } => {
                        let n = if local {
                            app.users.connections(user).len()
                        } else {
                            0
                        };
                        (app.id(), keys.user_set(app.id(), node, user, n))
                    }
                };
                if loaded.insert((id, call.counter())) {
                    cmds.push((keys.users(id), call.counter().load()));
                }
                places.push(cmds.len());
                cmds.push((keys.users(id), call.evalsha()));
            }
            let mut replies: Vec<redis::Value> = self.conn.query_each(cmds).await?;
            self.confirm();
            let replies: Vec<redis::Value> = places
                .into_iter()
                .map(|at| {
                    let reply = replies.get_mut(at)?;
                    Some(std::mem::replace(reply, redis::Value::Nil))
                })
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::TypeError,
                        "unexpected pipeline reply",
                    ))
                })?;
            for (item, reply) in batch.iter().zip(replies) {
                match item {
                    Restate::Member {
                        app,
                        channel,
                        user,
                        info,
                    } => {
                        let set = member_reply(redis::from_redis_value(&reply)?)?;
                        if let MemberSet::Set {
                            before,
                            after,
                            version,
                            ..
                        } = set
                        {
                            // Quiet (Redis lost its data): the other nodes' views are set
                            // right, but no webhook says anyone came or went.
                            self.member_edge(
                                app,
                                channel,
                                (user, info.as_deref()),
                                edge(count(before), count(after)),
                                Some(version),
                                None,
                                loud,
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
}

/// The member script's reply: refused, or the totals before and after, the membership
/// version and the list.
fn member_reply(reply: Vec<String>) -> RedisResult<MemberSet> {
    let number = |i: usize| reply.get(i).and_then(|s| s.parse::<i64>().ok());
    match (number(0), number(1), number(2)) {
        (Some(-1), _, _) => Ok(MemberSet::Refused),
        (Some(before), Some(after), Some(version)) => Ok(MemberSet::Set {
            before,
            after,
            version: u64::try_from(version).unwrap_or(0),
            list: reply.get(3..).map(<[String]>::to_vec).unwrap_or_default(),
        }),
        _ => Err(redis::RedisError::from((
            redis::ErrorKind::TypeError,
            "unexpected member_set reply",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_scripts_reply_is_a_refusal_or_the_counts_and_list() {
        let reply = |parts: &[&str]| member_reply(parts.iter().map(|p| p.to_string()).collect());
        assert!(matches!(reply(&["-1"]), Ok(MemberSet::Refused)));
        match reply(&["0", "1", "7", "ann", "{}"]) {
            Ok(MemberSet::Set {
                before: 0,
                after: 1,
                version: 7,
                list,
            }) => assert_eq!(list, ["ann", "{}"]),
            _ => panic!("a set member"),
        }
        assert!(matches!(
            reply(&["2", "1", "3"]),
            Ok(MemberSet::Set { before: 2, after: 1, version: 3, ref list }) if list.is_empty()
        ));
        for bad in [&[][..], &["x"], &["1"], &["1", "y"], &["1", "2"]] {
            assert!(reply(bad).is_err(), "{bad:?}");
        }
        assert_eq!((count(-1), count(0), count(7)), (0, 0, 7));
    }
}
