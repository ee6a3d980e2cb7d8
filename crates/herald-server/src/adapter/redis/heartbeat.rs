//! The node's heartbeat task: records this node as alive, publishes its connection counts
//! and reads the other nodes', and tells the state task what the heartbeat found (dead
//! nodes, a lost Redis, this node declared dead).
//!
//! It has its own task and its own Redis connection so nothing the state task does (a
//! flood of subscriptions, a long resync, a big pipeline) can hold a heartbeat back: a
//! late heartbeat gets a live node reaped by the others, with `member_removed` and
//! `channel_vacated` for every app it serves. The work a heartbeat finds is the state
//! task's, because it emits events and must not interleave with the ops it applies.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, RedisResult, Script};

use super::{link, merge_resync, scripts, Cluster};

pub(super) struct Heartbeat {
    cluster: Arc<Cluster>,
    conn: link::Commands,
    script: Script,
    /// The Redis epoch seen last; `None` before the first heartbeat.
    epoch: Option<String>,
    /// Who served the data at the last heartbeat (`link::Commands::masters`).
    masters: Option<String>,
}

impl Heartbeat {
    pub(super) fn new(cluster: Arc<Cluster>) -> Self {
        Heartbeat {
            conn: cluster.beat_conn.clone(),
            cluster,
            script: scripts::heartbeat(),
            epoch: None,
            masters: None,
        }
    }

    /// Beats every third of the node timeout (at most a second) until the node leaves.
    pub(super) async fn run(mut self) {
        let period = (self.cluster.node_timeout / 3).min(Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and the node beat once as it started.
        tick.tick().await;
        while !self.cluster.stopping.load(Ordering::Relaxed) {
            tick.tick().await;
            self.beat().await;
        }
    }

    /// One heartbeat; then wakes the state task, which also restates what it has pending.
    pub(super) async fn beat(&mut self) {
        let cluster = self.cluster.clone();
        let _beating = cluster.beating.lock().await;
        // Leaving withdrew this node: a heartbeat now would list it again.
        if self.cluster.stopping.load(Ordering::Relaxed) {
            return;
        }
        if let Err(error) = self.exchange().await {
            self.cluster.redis_failed(&error);
        }
        self.cluster.wake.notify_one();
    }

    async fn exchange(&mut self) -> RedisResult<()> {
        let cluster = &self.cluster;
        let node = cluster.node_id;
        let apps = cluster.apps.get().map(|s| s.all()).unwrap_or_default();
        for app in &apps {
            cluster.counts_connections_of(app);
        }
        // An id served again (a reload added it back) keeps the count the new app writes.
        let forgotten = cluster.take_forgotten();
        if !apps.is_empty() || !forgotten.is_empty() {
            // Each app's keys share its slot; the link sends them as one pipeline on one
            // server and one per app's slot on a cluster.
            let mut cmds = Vec::with_capacity(apps.len() * 2 + forgotten.len());
            for app in &apps {
                let key = cluster.keys.conns(app.id());
                cmds.push((key.clone(), Cmd::hset(&key, node, app.connection_count())));
                cmds.push((key.clone(), Cmd::hgetall(&key)));
            }
            for id in &forgotten {
                let key = cluster.keys.conns(id);
                cmds.push((key.clone(), Cmd::hdel(&key, node)));
            }
            let replies = match self.conn.query_each(cmds).await {
                Ok(replies) => replies,
                Err(error) => {
                    cluster.forget_later(forgotten);
                    return Err(error);
                }
            };
            let counts: Vec<HashMap<u32, usize>> = replies
                .iter()
                .skip(1)
                .step_by(2)
                .take(apps.len())
                .map(redis::from_redis_value)
                .collect::<RedisResult<_>>()?;
            let mut others = cluster.others.lock();
            for id in &forgotten {
                others.remove(id);
                cluster.places.forget(id);
            }
            for (app, per_node) in apps.iter().zip(counts) {
                let sum = per_node
                    .iter()
                    .filter(|(n, _)| **n != node)
                    .map(|(_, c)| c)
                    .sum();
                others.insert(app.id().to_owned(), sum);
            }
        }
        let fresh_epoch = format!("{:016x}", rand::random::<u64>());
        let reply: Vec<String> = self
            .script
            .key(cluster.keys.nodes())
            .key(cluster.keys.epoch())
            .arg(node)
            .arg(&fresh_epoch)
            .arg(cluster.node_timeout.as_millis() as u64)
            .invoke_async(&mut self.conn)
            .await?;
        let [epoch, added, dead @ ..] = reply.as_slice() else {
            return Ok(());
        };
        // A promoted replica may lack writes its master acknowledged just before it died
        // (replication is asynchronous): restate this node's share on the new master. One
        // cheap command a beat; a command error during the failover restates too, but a
        // client that retried through it would hide the error.
        let masters = self.conn.masters().await?;
        let failed_over = self.masters.as_ref().is_some_and(|m| *m != masters);
        self.masters = Some(masters);
        // The state task marks the node healthy again itself, as it starts the resync:
        // until then its changes stay local, and the resync restates them.
        let was_healthy = cluster.healthy.load(Ordering::Relaxed);
        let first = self.epoch.is_none();
        let epoch_changed = self.epoch.as_deref().is_some_and(|e| e != epoch);
        self.epoch = Some(epoch.clone());
        let resync = if first {
            None
        } else if epoch_changed {
            tracing::warn!("Cluster: Redis lost the cluster's state; restating this node's share");
            Some(false)
        } else if failed_over {
            tracing::warn!(
                "Cluster: a Redis replica took over from its master; restating this node's share"
            );
            Some(true)
        } else if added == "1" {
            tracing::warn!("Cluster: this node had been declared dead; restating its share");
            Some(true)
        } else if !was_healthy {
            Some(true)
        } else {
            None
        };
        let mut signals = cluster.signals.lock();
        signals.recovered |= !was_healthy;
        if let Some(loud) = resync {
            signals.resync = merge_resync(signals.resync, loud);
        }
        signals.dead.extend(
            dead.iter()
                .filter_map(|d| d.parse::<u32>().ok())
                .filter(|d| *d != node),
        );
        Ok(())
    }
}
