//! The node's heartbeat task: records this node as alive, publishes its connection counts
//! and reads the other nodes', and tells the state task what the heartbeat found (dead
//! nodes, a lost Redis, this node declared dead). And before the first heartbeat, the claim
//! of the node's id ([`claim`]): two nodes under one id would merge their shares, and one's
//! clean leave would remove the other's.
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
use tokio::time::Instant;

use super::scripts::Keys;
use super::{link, merge_resync, scripts, Cluster, ClusterError};

/// Random ids drawn before giving up: each is taken only if a live node holds it.
const CLAIM_DRAWS: usize = 16;
/// How often a configured id held by another node is asked for again.
const CLAIM_POLL: Duration = Duration::from_millis(250);

/// Takes a node id in the cluster's node list, atomically: free (not listed), or, if
/// `ARGV[3]` is 1, listed with a heartbeat older than the timeout (its holder died and was
/// not reaped yet). KEYS: nodes. ARGV: node, timeout (ms), take over a dead holder (1/0).
/// Returns {1 taken, 2 taken over, 0 held; the holder's last heartbeat (ms); its age}.
const CLAIM: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = redis.call('ZSCORE', KEYS[1], ARGV[1])
if last then
  local age = now - tonumber(last)
  if age < tonumber(ARGV[2]) or ARGV[3] ~= '1' then
    return {0, last, age}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  return {2, last, age}
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
return {1, '0', 0}
";

/// A node id claimed in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Claimed {
    pub(super) id: u32,
    /// Its last holder stopped heartbeating without leaving; its share is this node's now,
    /// to be restated.
    pub(super) took_over: bool,
}

/// Claims the node's id: the configured one (`wanted`), or one of `draw`. A drawn id that
/// any node lists is drawn again. A configured id listed with a recent heartbeat is this
/// node's own last run (crashed, not yet timed out) or another live node: its heartbeat is
/// watched until it either moves (alive: start-up stops, naming the id) or grows older than
/// `node_timeout` (dead: taken over, and its share restated).
pub(super) async fn claim(
    conn: &mut link::Commands,
    keys: &Keys,
    wanted: Option<u32>,
    node_timeout: Duration,
    mut draw: impl FnMut() -> u32,
) -> Result<Claimed, ClusterError> {
    let script = Script::new(CLAIM);
    let timeout = node_timeout.as_millis() as u64;
    // {taken (1), taken over (2) or held (0); the holder's last heartbeat; its age}
    let mut ask = async |id: u32, take_over: bool| -> Result<(u8, String, i64), ClusterError> {
        script
            .key(keys.nodes())
            .arg(id)
            .arg(timeout)
            .arg(u8::from(take_over))
            .invoke_async(&mut *conn)
            .await
            .map_err(ClusterError::Claim)
    };
    let Some(id) = wanted else {
        for _ in 0..CLAIM_DRAWS {
            let id = draw();
            let (status, _, age) = ask(id, false).await?;
            if status == 1 {
                return Ok(Claimed {
                    id,
                    took_over: false,
                });
            }
            tracing::info!(
                node_id = id,
                age_ms = age,
                "Cluster: the random node id drawn is held by another node; drawing another"
            );
        }
        return Err(ClusterError::NoFreeNodeId(CLAIM_DRAWS));
    };
    let deadline = Instant::now() + node_timeout + Duration::from_secs(2);
    let mut seen: Option<String> = None;
    loop {
        let (status, last, age) = ask(id, true).await?;
        match status {
            1 => {
                return Ok(Claimed {
                    id,
                    took_over: false,
                })
            }
            2 => {
                tracing::warn!(
                    node_id = id,
                    age_ms = age,
                    "Cluster: node_id was held by a node that stopped heartbeating without leaving; taking it over and restating its share"
                );
                return Ok(Claimed {
                    id,
                    took_over: true,
                });
            }
            _ => {}
        }
        match &seen {
            Some(before) if *before != last => {
                return Err(ClusterError::NodeIdInUse {
                    id,
                    age_ms: age.max(0) as u64,
                })
            }
            Some(_) => {}
            None => {
                tracing::info!(
                    node_id = id,
                    age_ms = age,
                    "Cluster: node_id is held by a node that heartbeated recently; waiting to see whether it is alive (up to node_timeout)"
                );
                seen = Some(last);
            }
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::NodeIdInUse {
                id,
                age_ms: age.max(0) as u64,
            });
        }
        tokio::time::sleep(CLAIM_POLL).await;
    }
}

pub(super) struct Heartbeat {
    cluster: Arc<Cluster>,
    conn: link::Commands,
    script: Script,
    /// The Redis epoch seen last; `None` before the first heartbeat.
    epoch: Option<String>,
    /// Who served the data at the last heartbeat (`link::Commands::masters`).
    masters: Option<String>,
    /// Heartbeats left that ask for the presence member lists to be read again, after Redis
    /// lost or rewound its data: the other nodes restate their shares within a beat or two.
    relist_beats: u8,
    /// When Redis last answered a heartbeat.
    last_ok: Option<Instant>,
    /// Until then, nodes the heartbeat finds dead are not reaped: see [`Heartbeat::beat`].
    grace_until: Option<Instant>,
}

impl Heartbeat {
    pub(super) fn new(cluster: Arc<Cluster>) -> Self {
        Heartbeat {
            conn: cluster.beat_conn.clone(),
            cluster,
            script: scripts::heartbeat(),
            epoch: None,
            masters: None,
            relist_beats: 0,
            last_ok: None,
            grace_until: None,
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
        match self.exchange().await {
            Err(error) => self.cluster.redis_failed(&error),
            Ok(()) => self.last_ok = Some(Instant::now()),
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
        // Redis had not answered this node for half a node timeout or more (its heartbeats
        // failed, or this one waited that long). If it answered nobody (paused, restarted,
        // partitioned from every node), every other node's heartbeat is as old as this
        // one's, and reaping them now would remove live members with `member_removed` and
        // webhooks: the dead nodes found now and for a node timeout are not reaped, and
        // live ones beat again meanwhile. A node that really died is reaped after that.
        let answered = Instant::now();
        if self
            .last_ok
            .is_some_and(|last| answered - last >= cluster.node_timeout / 2)
        {
            self.grace_until = Some(answered + cluster.node_timeout);
        }
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
        *cluster.epoch.lock() = Some(epoch.clone());
        // The first heartbeat follows the id's claim, which listed the node: unlisted now, it
        // was reaped in between (a survivor took the claimed entry for its dead holder's).
        let resync = if first {
            (added == "1").then_some(true)
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
        if epoch_changed || failed_over {
            // The membership versions count from zero again, or from a replica's last.
            cluster.rosters.rebase();
            self.relist_beats = 3;
        }
        let mut signals = cluster.signals.lock();
        if self.relist_beats > 0 {
            self.relist_beats -= 1;
            signals.relist = true;
        }
        signals.recovered |= !was_healthy;
        if let Some(loud) = resync {
            signals.resync = merge_resync(signals.resync, loud);
        }
        let grace = self.grace_until.is_some_and(|until| Instant::now() < until);
        if grace && !dead.is_empty() {
            tracing::debug!(
                nodes = dead.len(),
                "Cluster: nodes look dead right after this node's own Redis outage; waiting a node timeout before removing them"
            );
        } else {
            signals.dead.extend(
                dead.iter()
                    .filter_map(|d| d.parse::<u32>().ok())
                    .filter(|d| *d != node),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use redis_fixture::RedisServer;

    use super::*;

    async fn commands(server: &RedisServer) -> link::Commands {
        let target = link::Target::parse(&server.url()).expect("the fixture's URL");
        link::Commands::connect(&target, &link::Options::default())
            .await
            .expect("connect")
    }

    /// Records a heartbeat of `node` now, as a running node does.
    async fn beat(conn: &mut link::Commands, keys: &Keys, node: u32) {
        let _: Vec<String> = scripts::heartbeat()
            .key(keys.nodes())
            .key(keys.epoch())
            .arg(node)
            .arg("epoch")
            .arg(60_000)
            .invoke_async(conn)
            .await
            .expect("a heartbeat");
    }

    #[tokio::test]
    async fn a_random_id_another_node_holds_is_drawn_again() {
        let server = RedisServer::start();
        let mut conn = commands(&server).await;
        let keys = Keys::new("herald");
        let timeout = Duration::from_secs(30);
        let first = claim(&mut conn, &keys, None, timeout, || 42).await;
        assert_eq!(
            first.ok(),
            Some(Claimed {
                id: 42,
                took_over: false
            })
        );
        let mut draws = [42, 42, 43].into_iter();
        let second = claim(&mut conn, &keys, None, timeout, || {
            draws.next().unwrap_or(0)
        })
        .await;
        assert_eq!(
            second.ok(),
            Some(Claimed {
                id: 43,
                took_over: false
            })
        );
        let never = claim(&mut conn, &keys, None, timeout, || 42).await;
        assert!(
            matches!(never, Err(ClusterError::NoFreeNodeId(_))),
            "{never:?}"
        );
    }

    #[tokio::test]
    async fn a_configured_id_a_live_node_holds_stops_the_start_and_a_dead_ones_is_taken_over() {
        let server = RedisServer::start();
        let mut conn = commands(&server).await;
        let keys = Keys::new("herald");
        let timeout = Duration::from_secs(2);
        let never = || panic!("a configured id is not drawn");
        let free = claim(&mut conn, &keys, Some(7), timeout, never).await;
        assert_eq!(
            free.ok(),
            Some(Claimed {
                id: 7,
                took_over: false
            })
        );

        // Node 7 is alive: it beats every 200 ms.
        let mut beating = conn.clone();
        let beats_keys = keys.clone();
        let beats = tokio::spawn(async move {
            loop {
                beat(&mut beating, &beats_keys, 7).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let asked = Instant::now();
        let refused = claim(&mut conn, &keys, Some(7), timeout, never).await;
        assert!(
            matches!(refused, Err(ClusterError::NodeIdInUse { id: 7, .. })),
            "{refused:?}"
        );
        assert!(
            asked.elapsed() < timeout,
            "refused once its heartbeat moved, not after the node timeout: {:?}",
            asked.elapsed()
        );
        let text = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("node_id 7"), "{text}");

        // Node 7 died: once its heartbeat is older than the timeout, its id is taken over.
        beats.abort();
        let taken = claim(&mut conn, &keys, Some(7), timeout, never).await;
        assert_eq!(
            taken.ok(),
            Some(Claimed {
                id: 7,
                took_over: true
            })
        );
    }
}
