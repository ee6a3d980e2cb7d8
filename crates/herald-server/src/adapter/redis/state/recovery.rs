//! Recovery: a dead node's share removed (reap), this node's share restated after Redis
//! comes back (resync), and withdrawn when the node leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis::{Cmd, RedisResult};

use super::counts::Restate;
use super::StateTask;
use crate::adapter::redis::scripts::split_field;
use crate::apps::App;

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

impl StateTask {
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
    pub(super) async fn reap(&mut self, dead: u32) -> RedisResult<()> {
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
    pub(super) async fn resync(&mut self, loud: bool) -> RedisResult<()> {
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
    pub(super) async fn leave(&mut self) {
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
