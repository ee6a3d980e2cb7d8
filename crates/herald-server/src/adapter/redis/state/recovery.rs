//! Recovery: a dead node's share removed (reap), this node's share restated after Redis
//! comes back (resync), and withdrawn when the node leaves.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::{AsyncCommands, Cmd, RedisResult};
use tokio::time::Instant;

use super::counts::Restate;
use super::StateTask;
use crate::adapter::redis::scripts::split_field;
use crate::app_config::AppConfig;
use crate::app_config::AppLimits;
use crate::app_config::DEFAULT_TERMINATE_CLOSE_CODE;
use crate::apps::App;
use crate::webhooks::WebhookSettings;

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

    /// Every app this node serves.
    pub(super) fn all_apps(&self) -> Vec<Arc<App>> {
        self.cluster.apps.get().map(|s| s.all()).unwrap_or_default()
    }

    /// The apps `node` may have entries of: those this node serves, and those `node`'s
    /// index lists, each of those this node does not serve as a [`stand_in`].
    async fn apps_of(&mut self, node: u32) -> RedisResult<Vec<Arc<App>>> {
        let indexed: Vec<String> = self
            .conn
            .smembers(self.cluster.keys.node_apps(node))
            .await?;
        let mut apps = self.all_apps();
        let served: HashSet<String> = apps.iter().map(|a| a.id().to_owned()).collect();
        apps.extend(
            indexed
                .iter()
                .filter(|id| !served.contains(*id))
                .map(|id| stand_in(id)),
        );
        Ok(apps)
    }

    /// Adds the apps of `ids` that it does not list yet to this node's index in Redis, so
    /// the node's entries of them are found if it dies.
    pub(super) async fn index<'a>(
        &mut self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> RedisResult<()> {
        let new: Vec<&str> = ids
            .into_iter()
            .filter(|id| !self.indexed.contains(*id))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let key = self.cluster.keys.node_apps(self.cluster.node_id);
        let () = self.conn.sadd(key, &new).await?;
        self.indexed.extend(new.into_iter().map(Box::from));
        Ok(())
    }

    /// [`StateTask::index`] of one app, before an op of it is applied. While Redis does not
    /// answer nothing is written; the resync indexes every app before it restates.
    pub(super) async fn index_app(&mut self, app: &App) {
        if self.healthy() && !self.indexed.contains(app.id()) {
            if let Err(e) = self.index([app.id()]).await {
                self.failed(&e);
            }
        }
    }

    /// Claims the reaps of `dead` (nodes the heartbeat found without a heartbeat for the
    /// node timeout) and of reaps whose claimer died too, then runs every reap this node
    /// holds a claim of, those that failed before included. A reap that fails stays
    /// claimed and is retried at the next housekeeping once Redis answers: a reap only
    /// sets the dead node's counts to zero, so running it again is harmless.
    pub(super) async fn reap_dead(&mut self, mut dead: BTreeSet<u32>) -> RedisResult<()> {
        let node = self.cluster.node_id;
        let timeout = self.cluster.node_timeout.as_millis() as u64;
        let now = Instant::now();
        if now >= self.claims_due {
            let stale: Vec<u32> = self
                .stale_claims
                .key(self.cluster.keys.reaping())
                .arg(timeout)
                .invoke_async(&mut self.conn)
                .await?;
            dead.extend(stale);
            self.claims_due = now + self.cluster.node_timeout;
        }
        let mut claimed = BTreeSet::new();
        for d in dead {
            if d != node && !self.reaping.contains(&d) && self.claim(d, false).await? {
                claimed.insert(d);
            }
        }
        for d in self.reaping.clone() {
            // A retry renews the claim, unless the node came back or another node
            // finished its reap meanwhile.
            if !claimed.contains(&d) && !self.claim(d, true).await? {
                self.reaping.remove(&d);
                continue;
            }
            if let Err(e) = self.reap(d).await {
                tracing::warn!(node = d, error = %e, "Cluster: removing a dead node's state failed; retrying once Redis answers");
                return Err(e);
            }
            self.reaping.remove(&d);
        }
        Ok(())
    }

    /// Claims (or, with `renew`, renews the claim of) the reap of `dead`; `true` if this
    /// node holds it, and will until the reap is done.
    pub(super) async fn claim(&mut self, dead: u32, renew: bool) -> RedisResult<bool> {
        let keys = &self.cluster.keys;
        let held: bool = self
            .reap_claim
            .key(keys.nodes())
            .key(keys.reaping())
            .arg(dead)
            .arg(self.cluster.node_timeout.as_millis() as u64)
            .arg(if renew { "1" } else { "0" })
            .invoke_async(&mut self.conn)
            .await?;
        if held {
            self.reaping.insert(dead);
        }
        Ok(held)
    }

    /// Removes a dead node's share, in every app it had entries of, with the events its
    /// connections' clean disconnects would have produced, then its claim.
    pub(super) async fn reap(&mut self, dead: u32) -> RedisResult<()> {
        let apps = self.apps_of(dead).await?;
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
            apps = apps.len(),
            channels = n_channels,
            members = n_members,
            "Cluster: a node stopped heartbeating; removing its connections"
        );
        self.restate(dead, items, true).await?;
        let cmds = self.forget_node(dead, &apps);
        self.conn.query_each(cmds).await?;
        // Only once every app's entries are gone (on a Redis Cluster they went out one
        // pipeline per slot, side by side): a claim removed first would not be retried.
        let keys = &self.cluster.keys;
        let released = vec![
            (keys.nodes(), Cmd::del(keys.node_apps(dead))),
            (keys.nodes(), Cmd::zrem(keys.reaping(), dead)),
        ];
        self.conn.query_each(released).await.map(|_| ())
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
                keys.journal(id, node),
            ];
            cmds.push((conns.clone(), Cmd::del(&indexes)));
            cmds.push((conns.clone(), Cmd::hdel(&conns, node)));
        }
        cmds
    }

    /// Makes Redis hold exactly this node's local state: every channel, presence member
    /// and signed-in user Redis lists for the node or the hub holds is set to the local
    /// count.
    ///
    /// The apps are those the node serves and those its index lists (an app a reload
    /// removed keeps no sockets here, so its entries go to zero). Redis may have lost the
    /// index with the rest (a new epoch, a failover): it is written again first.
    pub(super) async fn resync(&mut self, loud: bool) -> RedisResult<Vec<Arc<App>>> {
        let node = self.cluster.node_id;
        // Redis may have lost its data since the last heartbeat (a restart the heartbeat
        // has not seen yet): restating loudly into an empty Redis would announce every
        // channel and member again, occupied and added, to the apps' webhooks.
        let loud = loud && {
            let now: Option<String> = self.conn.get(self.cluster.keys.epoch()).await?;
            let known = self.cluster.epoch.lock().clone();
            known.is_none() || now == known
        };
        self.indexed.clear();
        let apps = self.apps_of(node).await?;
        // What calls whose answer was lost changed goes out before the restatement, which
        // may change it back.
        self.replay_journals(&apps).await?;
        self.index(apps.iter().map(|a| a.id())).await?;
        let listed = self.listed(node, &apps).await?;
        for (app, listed) in apps.iter().zip(listed) {
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
        Ok(apps)
    }

    /// Clean shutdown: every connection is closed by now; withdraw what is left.
    pub(super) async fn leave(&mut self) {
        self.cluster.stopping.store(true, Ordering::Relaxed);
        // A heartbeat in flight would list this node again after it left.
        let cluster = self.cluster.clone();
        let _beating = cluster.beating.lock().await;
        let apps = match self.resync(true).await {
            Ok(apps) => apps,
            Err(e) => {
                tracing::warn!(error = %e, "Cluster: could not withdraw this node's state; the others will after node_timeout");
                return;
            }
        };
        let node = self.cluster.node_id;
        let keys = &self.cluster.keys;
        let nodes = keys.nodes();
        let mut cmds = vec![(nodes.clone(), Cmd::zrem(&nodes, node))];
        cmds.extend(self.forget_node(node, &apps));
        cmds.push((nodes, Cmd::del(keys.node_apps(node))));
        if let Err(e) = self.conn.query_each(cmds).await {
            tracing::warn!(error = %e, "Cluster: could not leave cleanly");
        } else {
            tracing::info!("Cluster: left");
        }
    }
}

/// An app this node does not serve, standing in for it while a node's entries of it are
/// set to zero: its id, and no sockets or webhook endpoints here. The `member_removed`
/// frames its transitions call for still reach the nodes that serve it, on the bus; its
/// webhooks and subscription-count events cannot be sent from here, which does not know
/// its endpoints or settings.
fn stand_in(id: &str) -> Arc<App> {
    let config = AppConfig {
        id: id.to_owned(),
        key: String::new(),
        secret: String::new(),
        enabled: false,
        limits: AppLimits::default(),
        terminate_close_code: DEFAULT_TERMINATE_CLOSE_CODE,
        user_authentication_timeout: 0,
        cache_ttl: Duration::ZERO,
        subscription_count: false,
        plan: None,
        history: Default::default(),
        recovery_window: Duration::ZERO,
        webhooks: Vec::new(),
    };
    let settings = WebhookSettings::new(crate::webhooks::WebhookOptions {
        vacated_delay: Duration::ZERO,
        max_in_flight: 0,
        max_queued_bytes: 0,
        // No endpoints: no queue is opened.
        ..Default::default()
    });
    Arc::new(App::new(config, &settings))
}
