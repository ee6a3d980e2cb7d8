//! The command connection: one cloneable handle over a single server, a cluster or a
//! sentinel-monitored master.
//!
//! Each kind keeps the client's own recovery: the single server's `ConnectionManager`
//! reconnects in the background; the cluster connection follows MOVED and ASK redirections
//! and refreshes its slot map after a failover; the sentinel master is rediscovered when its
//! connection fails or it answers READONLY (see `sentinel.rs`). None of them replays a
//! command that may have run: a command that failed on a lost connection returns its error,
//! and the caller decides (Herald's state task restates its share after an outage).
//!
//! The single server's and the cluster's clients keep the TLS certificates they were built
//! with for every reconnection, so after the files are read again [`Commands::renew`]
//! builds new ones; every clone moves to them on its next request. The sentinel master
//! needs none: each discovery connects afresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, ProtocolVersion, RedisFuture, RedisResult, Value};

use super::sentinel::SentinelMaster;
use super::shards::Shards;
use super::slots::slot;
use super::target::{Seeds, Target};
use super::{LinkError, Options};

/// Redirections and retries a cluster request may take, within the response timeout; the
/// client's default (16, from 1.28 s apart) would outlast any caller's patience.
const CLUSTER_RETRIES: u32 = 8;
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 50;
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 500;

/// One group's messages ([`Commands::group_of`]), channel and payload each, in order.
pub(crate) type PublishGroup<'a> = (u16, Vec<(&'a str, &'a [u8])>);

/// A command connection. Clones share the underlying connections; requests from clones are
/// pipelined on them.
#[derive(Clone)]
pub(crate) struct Commands {
    inner: Inner,
    /// The generation of [`Renewal`] `inner` is from.
    seen: u64,
    renewal: Arc<Renewal>,
}

/// Connections built by [`Commands::renew`], for every clone to take.
struct Renewal {
    generation: AtomicU64,
    inner: parking_lot::Mutex<Option<Inner>>,
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    /// The cluster client, and the per-master pipelines beside it (`shards.rs`).
    Cluster(ClusterConnection, Arc<Shards>),
    Sentinel(SentinelMaster),
}

impl Commands {
    /// Connects; fails if Redis (every seed node, every sentinel) does not answer, since a
    /// node that starts without its cluster would serve a split view.
    pub(crate) async fn connect(target: &Target, options: &Options) -> Result<Commands, LinkError> {
        Ok(Commands {
            inner: Self::inner(target, options).await?,
            seen: 0,
            renewal: Arc::new(Renewal {
                generation: AtomicU64::new(0),
                inner: parking_lot::Mutex::new(None),
            }),
        })
    }

    /// Builds new connections with the TLS certificates `options` hold now (read again
    /// since [`Commands::connect`]); every clone uses them from its next request on, and
    /// requests under way finish on the old ones. Nothing changes if they cannot be built.
    pub(crate) async fn renew(&self, target: &Target, options: &Options) -> Result<(), LinkError> {
        if matches!(target, Target::Sentinel(_)) {
            return Ok(());
        }
        let fresh = Self::inner(target, options).await?;
        *self.renewal.inner.lock() = Some(fresh);
        self.renewal.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The connection to use: the renewed one once there is one.
    fn current(&mut self) -> &mut Inner {
        let generation = self.renewal.generation.load(Ordering::Acquire);
        if generation != self.seen {
            if let Some(fresh) = self.renewal.inner.lock().clone() {
                self.inner = fresh;
            }
            self.seen = generation;
        }
        &mut self.inner
    }

    async fn inner(target: &Target, options: &Options) -> Result<Inner, LinkError> {
        let err = LinkError::connect(target);
        let inner = match target {
            Target::Single(info) => {
                let info = options.tls.apply((**info).clone()).map_err(&err)?;
                let client = redis::Client::open(info).map_err(&err)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(options.connect_timeout)
                    .set_response_timeout(options.response_timeout)
                    .set_number_of_retries(1)
                    .set_max_delay(1000);
                Inner::Single(
                    ConnectionManager::new_with_config(client, config)
                        .await
                        .map_err(&err)?,
                )
            }
            Target::Cluster(seeds) => Inner::Cluster(
                cluster_connection(seeds, options, ProtocolVersion::RESP2)
                    .await
                    .map_err(&err)?,
                Arc::new(Shards::new(seeds, options)),
            ),
            Target::Sentinel(seeds) => {
                let master = SentinelMaster::new(seeds, options).map_err(&err)?;
                master.connection().await.map_err(&err)?;
                Inner::Sentinel(master)
            }
        };
        Ok(inner)
    }

    /// Whether this is a Redis Cluster, where pub/sub is sharded and a script's or
    /// pipeline's keys must share a slot.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(..))
    }

    /// Publishes `payload` on `channel` (SPUBLISH on a cluster, where it goes to the
    /// channel's shard only; PUBLISH elsewhere) and returns how many subscribers Redis
    /// handed it to (on a cluster, those of the shard). At most once: nobody listening, or
    /// a subscriber reconnecting, and the message is gone. The adapter publishes in
    /// pipelines (`publish_cmd`); the link's tests one at a time.
    #[cfg(test)]
    pub(crate) async fn publish(&mut self, channel: &str, payload: &[u8]) -> RedisResult<usize> {
        self.publish_cmd(channel, payload).query_async(self).await
    }

    /// The group a channel's messages are published in, in order: its slot on a cluster
    /// (a pipeline must stay in one slot, and a slot lives on one shard), the whole server
    /// elsewhere (0).
    pub(crate) fn group_of(&self, channel: &str) -> u16 {
        if self.is_cluster() {
            slot(channel.as_bytes())
        } else {
            0
        }
    }

    /// Publishes messages of one group ([`Commands::group_of`]), in order, as one pipeline:
    /// one round trip. On an error none, some or all of them may have gone out, and some
    /// may still go out (commands waiting in a server that stopped answering run once it
    /// answers again): a caller that sends them again must let receivers tell the copies
    /// apart.
    pub(crate) async fn publish_group(&mut self, messages: &[(&str, &[u8])]) -> RedisResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (channel, payload) in messages {
            pipe.add_command(self.publish_cmd(channel, payload))
                .ignore();
        }
        pipe.query_async(self).await
    }

    /// Publishes several groups' messages ([`Commands::group_of`]), each group in order,
    /// and returns each group's outcome, in the order given: on a cluster one pipeline
    /// per master serving the groups' slots, not one per slot (`shards.rs`); elsewhere one
    /// group's pipeline after the other. A failed group is as in
    /// [`Commands::publish_group`]; the others are done.
    pub(crate) async fn publish_groups(
        &mut self,
        groups: &[PublishGroup<'_>],
    ) -> Vec<RedisResult<()>> {
        let Inner::Cluster(cluster, shards) = self.current().clone() else {
            let mut out = Vec::with_capacity(groups.len());
            for (_, messages) in groups {
                out.push(self.publish_group(messages).await);
            }
            return out;
        };
        let slots = groups
            .iter()
            .map(|(group, messages)| {
                let cmds = messages
                    .iter()
                    .map(|(channel, payload)| self.publish_cmd(channel, payload))
                    .collect();
                (*group, cmds)
            })
            .collect();
        shards
            .run(&cluster, slots)
            .await
            .into_iter()
            .map(|r| r.map(|_| ()))
            .collect()
    }

    /// Runs commands, each given with a key that names its slot, and returns their replies
    /// in order: one pipeline on one server; on a cluster one pipeline per master serving
    /// their slots (a command redirected is sent again alone with its slot, and nothing
    /// runs twice: `shards.rs`), the masters' pipelines sent side by side. Commands of one
    /// slot keep their order; on an error some commands may have run.
    pub(crate) async fn query_each(&mut self, cmds: Vec<(String, Cmd)>) -> RedisResult<Vec<Value>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let Inner::Cluster(cluster, shards) = self.current().clone() else {
            let mut pipe = redis::pipe();
            for (_, cmd) in cmds {
                pipe.add_command(cmd);
            }
            return pipe.query_async(self).await;
        };
        let total = cmds.len();
        let mut by_slot: HashMap<u16, (Vec<Cmd>, Vec<usize>)> = HashMap::new();
        for (i, (key, cmd)) in cmds.into_iter().enumerate() {
            let (slot_cmds, places) = by_slot.entry(slot(key.as_bytes())).or_default();
            slot_cmds.push(cmd);
            places.push(i);
        }
        let mut slots = Vec::with_capacity(by_slot.len());
        let mut places = Vec::with_capacity(by_slot.len());
        for (slot, (slot_cmds, slot_places)) in by_slot {
            slots.push((slot, slot_cmds));
            places.push(slot_places);
        }
        let mut out = vec![Value::Nil; total];
        for (result, places) in shards.run(&cluster, slots).await.into_iter().zip(places) {
            for (i, reply) in places.into_iter().zip(result?) {
                out[i] = reply;
            }
        }
        Ok(out)
    }

    /// Pipelines this connection's clones sent to the cluster's masters so far (0 off a
    /// cluster): what the rounds cost in round trips.
    #[cfg(test)]
    pub(crate) fn cluster_pipelines(&self) -> u64 {
        match &self.inner {
            Inner::Cluster(_, shards) => shards.pipelines(),
            _ => 0,
        }
    }

    /// Who serves the data now: the run id of the server (one server, the sentinels'
    /// master), or the ids of the masters that hold slots (a cluster), sorted. It changes
    /// when a replica is promoted (or a server restarts), which is when writes
    /// acknowledged just before may have been lost (replication is asynchronous).
    pub(crate) async fn masters(&mut self) -> RedisResult<String> {
        if self.is_cluster() {
            let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(self).await?;
            return Ok(slot_masters(&nodes));
        }
        let info: String = redis::cmd("INFO").arg("server").query_async(self).await?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .unwrap_or("")
            .trim()
            .to_owned())
    }

    pub(crate) fn publish_cmd(&self, channel: &str, payload: &[u8]) -> Cmd {
        let mut cmd = redis::cmd(if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        });
        cmd.arg(channel).arg(payload);
        cmd
    }
}

/// The ids of the masters in a `CLUSTER NODES` reply that serve slots, sorted and joined.
fn slot_masters(nodes: &str) -> String {
    let mut ids: Vec<&str> = nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let serving = fields.len() > 8
                && fields[2].split(',').any(|f| f == "master")
                && !fields[2].split(',').any(|f| f == "fail");
            serving.then_some(fields[0])
        })
        .collect();
    ids.sort_unstable();
    ids.join(",")
}

/// A cluster connection over `seeds` speaking `protocol`, with bounded retries.
pub(super) async fn cluster_connection(
    seeds: &Seeds,
    options: &Options,
    protocol: ProtocolVersion,
) -> RedisResult<ClusterConnection> {
    let nodes = seeds
        .nodes
        .iter()
        .map(|n| n.info(seeds.tls, &seeds.auth, 0, protocol));
    let mut builder = ClusterClientBuilder::new(nodes);
    if seeds.tls {
        // The cluster client applies these to every node it finds, not only the seeds.
        builder = builder
            .certs(options.tls.certificates())
            .danger_accept_invalid_hostnames(options.tls.files().skip_name_check);
    }
    builder
        .connection_timeout(options.connect_timeout)
        .response_timeout(options.response_timeout)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
        .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS)
        .build()?
        .get_async_connection()
        .await
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self.current() {
            Inner::Single(conn) => conn.req_packed_command(cmd),
            Inner::Cluster(conn, _) => conn.req_packed_command(cmd),
            Inner::Sentinel(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self.current() {
            Inner::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Inner::Cluster(conn, _) => conn.req_packed_commands(cmd, offset, count),
            Inner::Sentinel(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(conn) => conn.get_db(),
            Inner::Cluster(conn, _) => conn.get_db(),
            Inner::Sentinel(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod unit {
    use super::slot_masters;

    #[test]
    fn the_masters_are_those_serving_slots_and_not_failed() {
        let nodes = "\
b2 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
c3 127.0.0.1:7002@17002 master,fail - 0 1 3 connected
d4 127.0.0.1:7003@17003 slave a1 0 1 1 connected
e5 127.0.0.1:7004@17004 master - 0 1 5 connected 10923-16383
";
        assert_eq!(slot_masters(nodes), "a1,b2,e5");
        let promoted = nodes.replace("slave a1", "master -").replace(
            "d4 127.0.0.1:7003@17003 master - 0 1 1 connected",
            "d4 127.0.0.1:7003@17003 master - 0 1 1 connected 0-5460",
        );
        assert_eq!(
            slot_masters(&promoted.replace(
                "myself,master - 0 0 1 connected 0-5460",
                "myself,master,fail - 0 0 1 connected"
            )),
            "b2,d4,e5"
        );
    }
}
