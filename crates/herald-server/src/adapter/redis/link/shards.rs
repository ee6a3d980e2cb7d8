//! One pipeline per Redis Cluster master, not per slot.
//!
//! A cluster runs a pipeline whose commands name several slots as long as one master serves
//! them all, but the cluster client refuses one (CROSSSLOT before sending), and it would be
//! unsafe through it anyway: when any command of a pipeline is redirected (MOVED after a
//! failover, ASK during a migration), redis-rs 0.32 sends the whole pipeline again to the
//! new node (`cluster_async`'s `choose_response`, for every retry up to its limit), so the
//! commands that had run on the old one would run again there or on the way back. A PUBLISH
//! copy is dropped by receivers; a state script must never run twice.
//!
//! So a group of slots of one master (by the slot map from `CLUSTER SLOTS`, which may be
//! stale) goes as one pipeline on a plain connection to that master, where each command's
//! reply comes back on its own. The commands the master refused before running them (MOVED,
//! ASK, TRYAGAIN, CLUSTERDOWN, NOSCRIPT and the like) are sent again, and they only: the
//! slots a MOVED sent to one node go there together, once, as one pipeline on its own
//! connection (after a failover that is the new master, named by the old one, whatever the
//! cluster client's map still says); the others, and anything refused again, each slot's
//! in a pipeline of its own through the cluster client, which follows the redirection. The
//! map is fetched again before the next round. A slot alone on its master goes through the
//! cluster client as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, ProtocolVersion, RedisError, RedisResult, Value,
};

use super::target::{Node, Seeds};
use super::topology::SlotMap;
use super::Options;

/// The commands of one slot, in order.
pub(super) type SlotCmds = (u16, Vec<Cmd>);

/// A slot some of whose commands its master refused: its place in the group, the
/// commands to send again, the replies so far and where the new ones go ([`Sorted`]).
type Refused = (usize, SlotCmds, Vec<Value>, Vec<Option<usize>>);

/// How many times a slot's refused commands follow a MOVED on a connection of our own
/// before the cluster client takes them.
const MOVES: u8 = 1;

/// The slot map and a connection to each master, shared by a cluster connection's clones.
pub(super) struct Shards {
    seeds: Seeds,
    options: Options,
    /// `None` until fetched, and again after a command was redirected.
    map: parking_lot::Mutex<Option<Arc<SlotMap>>>,
    conns: parking_lot::Mutex<HashMap<String, MultiplexedConnection>>,
    /// Pipelines sent, on either path: what one round costs in round trips.
    pipelines: AtomicU64,
}

impl Shards {
    pub(super) fn new(seeds: &Seeds, options: &Options) -> Shards {
        Shards {
            seeds: seeds.clone(),
            options: options.clone(),
            map: parking_lot::Mutex::new(None),
            conns: parking_lot::Mutex::new(HashMap::new()),
            pipelines: AtomicU64::new(0),
        }
    }

    /// Pipelines sent so far.
    #[cfg(test)]
    pub(super) fn pipelines(&self) -> u64 {
        self.pipelines.load(Ordering::Relaxed)
    }

    /// Runs each slot's commands in order and returns each slot's replies (or its error),
    /// in the order given: at most one pipeline per master, side by side, plus one per
    /// slot whose commands were refused. A command runs at most once, except where the
    /// cluster client itself repeats a single slot's pipeline (as it always did).
    pub(super) async fn run(
        &self,
        cluster: &ClusterConnection,
        slots: Vec<SlotCmds>,
    ) -> Vec<RedisResult<Vec<Value>>> {
        let total = slots.len();
        let map = self.map(cluster).await;
        let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
        let mut alone = Vec::new();
        for (i, (slot, _)) in slots.iter().enumerate() {
            match map.as_ref().and_then(|m| m.master(*slot)) {
                Some(node) => groups.entry(address(node)).or_default().push(i),
                None => alone.push(i),
            }
        }
        let mut slots: Vec<Option<SlotCmds>> = slots.into_iter().map(Some).collect();
        let mut plan: Vec<(Vec<usize>, Option<String>, Vec<SlotCmds>)> = Vec::new();
        for (node, places) in groups {
            let group: Vec<SlotCmds> = places.iter().filter_map(|&i| slots[i].take()).collect();
            let node = (group.len() > 1).then_some(node);
            plan.push((places, node, group));
        }
        for i in alone {
            plan.push((vec![i], None, slots[i].take().into_iter().collect()));
        }
        let sent = plan.into_iter().map(|(places, node, group)| async move {
            (places, self.send(cluster, node, group, MOVES).await)
        });
        let mut out: Vec<Option<RedisResult<Vec<Value>>>> = Vec::new();
        out.resize_with(total, || None);
        for (places, results) in futures_util::future::join_all(sent).await {
            for (i, result) in places.into_iter().zip(results) {
                out[i] = Some(result);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(protocol("a slot without a reply"))))
            .collect()
    }

    /// One group: through `node`'s own connection when given, else each slot's pipeline
    /// through the cluster client. Refused commands follow a MOVED `moves` more times.
    fn send<'a>(
        &'a self,
        cluster: &'a ClusterConnection,
        node: Option<String>,
        group: Vec<SlotCmds>,
        moves: u8,
    ) -> futures_util::future::BoxFuture<'a, Vec<RedisResult<Vec<Value>>>> {
        Box::pin(self.send_inner(cluster, node, group, moves))
    }

    async fn send_inner(
        &self,
        cluster: &ClusterConnection,
        node: Option<String>,
        group: Vec<SlotCmds>,
        moves: u8,
    ) -> Vec<RedisResult<Vec<Value>>> {
        let Some(node) = node else {
            return self.each_slot(cluster, group).await;
        };
        let mut conn = match self.conn(&node).await {
            Ok(conn) => conn,
            Err(error) => {
                // Nothing was sent: the cluster client finds the slots' new master.
                tracing::debug!(%error, node, "Redis Cluster: no connection to a master");
                self.forget(&node);
                return self.each_slot(cluster, group).await;
            }
        };
        let mut pipe = redis::pipe();
        let mut lens = Vec::with_capacity(group.len());
        let slots: Vec<u16> = group.iter().map(|(slot, _)| *slot).collect();
        for (_, cmds) in group {
            lens.push(cmds.len());
            for cmd in cmds {
                pipe.add_command(cmd);
            }
        }
        self.pipelines.fetch_add(1, Ordering::Relaxed);
        let replies = match conn.req_packed_commands(&pipe, 0, pipe.len()).await {
            Ok(replies) if replies.len() == pipe.len() => replies,
            Ok(_) => {
                self.forget(&node);
                return slots
                    .iter()
                    .map(|_| Err(protocol("short pipeline reply")))
                    .collect();
            }
            Err(error) => {
                // Some may have run: the caller decides, as with any failed pipeline.
                self.forget(&node);
                return slots.iter().map(|_| Err(copy(&error))).collect();
            }
        };
        let cmds: Vec<&Cmd> = pipe.cmd_iter().collect();
        let mut replies = replies.into_iter();
        let mut at = 0;
        let mut results: Vec<Option<RedisResult<Vec<Value>>>> = Vec::new();
        let mut again: Vec<(Option<String>, Refused)> = Vec::new();
        for (i, (&slot, &len)) in slots.iter().zip(&lens).enumerate() {
            let mine: Vec<Value> = replies.by_ref().take(len).collect();
            let own = &cmds[at..at + len];
            at += len;
            match sort(own, mine) {
                Sorted::Done(result) => results.push(Some(result)),
                Sorted::Again {
                    replies,
                    resend,
                    places,
                    moved,
                } => {
                    results.push(None);
                    let moved = moved.filter(|to| *to != node && moves > 0);
                    again.push((moved, (i, (slot, resend), replies, places)));
                }
            }
        }
        if !again.is_empty() {
            *self.map.lock() = None;
            let mut by_node: HashMap<Option<String>, Vec<Refused>> = HashMap::new();
            for (moved, refused) in again {
                by_node.entry(moved).or_default().push(refused);
            }
            let retried =
                futures_util::future::join_all(by_node.into_iter().map(|(to, refused)| async {
                    let (rest, group): (Vec<_>, Vec<SlotCmds>) = refused
                        .into_iter()
                        .map(|(i, slot_cmds, replies, places)| ((i, replies, places), slot_cmds))
                        .unzip();
                    let results = self.send(cluster, to, group, moves.saturating_sub(1)).await;
                    rest.into_iter()
                        .zip(results)
                        .map(|((i, mut replies, places), retried)| {
                            let result = retried.map(|values| {
                                for (value, place) in values.into_iter().zip(places) {
                                    if let Some(place) = place {
                                        replies[place] = value;
                                    }
                                }
                                replies
                            });
                            (i, result)
                        })
                        .collect::<Vec<_>>()
                }))
                .await;
            for (i, result) in retried.into_iter().flatten() {
                results[i] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(protocol("a slot without a reply"))))
            .collect()
    }

    /// Each slot's commands as a pipeline through the cluster client, side by side.
    async fn each_slot(
        &self,
        cluster: &ClusterConnection,
        group: Vec<SlotCmds>,
    ) -> Vec<RedisResult<Vec<Value>>> {
        futures_util::future::join_all(group.into_iter().map(|(_, cmds)| {
            let mut cluster = cluster.clone();
            async move {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                self.pipelines.fetch_add(1, Ordering::Relaxed);
                pipe.query_async::<Vec<Value>>(&mut cluster).await
            }
        }))
        .await
    }

    /// The slot map, fetched if unknown; `None` if the cluster does not give one now (each
    /// slot then goes alone).
    async fn map(&self, cluster: &ClusterConnection) -> Option<Arc<SlotMap>> {
        if let Some(map) = self.map.lock().clone() {
            return Some(map);
        }
        match SlotMap::fetch(&mut cluster.clone()).await {
            Ok(map) => {
                let map = Arc::new(map);
                *self.map.lock() = Some(map.clone());
                Some(map)
            }
            Err(error) => {
                tracing::debug!(%error, "Redis Cluster: no slot map");
                None
            }
        }
    }

    /// The connection to the master at `node`, connecting if there is none.
    async fn conn(&self, node: &str) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.conns.lock().get(node) {
            return Ok(conn.clone());
        }
        let (host, port) = node
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
            .ok_or_else(|| protocol("a master without a port"))?;
        let info =
            Node { host, port }.info(self.seeds.tls, &self.seeds.auth, 0, ProtocolVersion::RESP2);
        // The certificates read last: a rotation reaches every new connection.
        let info = self.options.tls.apply(info)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.options.connect_timeout)
            .set_response_timeout(self.options.response_timeout);
        let conn = redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.conns.lock().insert(node.to_owned(), conn.clone());
        Ok(conn)
    }

    /// Drops `node`'s connection and the map after a failure: both are found again.
    fn forget(&self, node: &str) {
        self.conns.lock().remove(node);
        *self.map.lock() = None;
    }
}

fn address(node: &Node) -> String {
    format!("{}:{}", node.host, node.port)
}

/// What a slot's replies from its master's pipeline say.
enum Sorted {
    /// Every command ran (or the slot failed as a pipeline fails: its first error).
    Done(RedisResult<Vec<Value>>),
    /// Some were refused before running: `resend` goes again through the cluster client,
    /// its replies going to `places` of `replies` (`None`: a script load repeated before
    /// them, its reply dropped).
    Again {
        replies: Vec<Value>,
        resend: Vec<Cmd>,
        places: Vec<Option<usize>>,
        /// The node every refusal named with a MOVED, if they all did and named one.
        moved: Option<String>,
    },
}

/// Sorts one slot's replies: run, refused, or failed.
fn sort(cmds: &[&Cmd], replies: Vec<Value>) -> Sorted {
    let mut refused = Vec::new();
    let mut failed = None;
    // `Some(None)`: refusals that were not all a MOVED to one node.
    let mut moved: Option<Option<String>> = None;
    for (i, reply) in replies.iter().enumerate() {
        if let Value::ServerError(error) = reply {
            let error = RedisError::from(error.clone());
            if not_run(&error) {
                let to = (error.kind() == ErrorKind::Moved)
                    .then(|| error.redirect_node().map(|(addr, _)| addr.to_owned()))
                    .flatten();
                moved = match moved {
                    None => Some(to),
                    Some(before) => Some(before.filter(|b| Some(b) == to.as_ref())),
                };
                refused.push(i);
            } else if failed.is_none() {
                failed = Some(error);
            }
        }
    }
    if let Some(error) = failed {
        return Sorted::Done(Err(error));
    }
    let Some(&first) = refused.first() else {
        return Sorted::Done(Ok(replies));
    };
    // Order within a slot: a command that ran after a refused one would now run before
    // it. A redirection moves the whole slot, so this is a migration's ASK on some keys
    // or a failover between two commands; the slot fails as a pipeline would.
    if (first..replies.len()).any(|i| !refused.contains(&i) && !is_script_load(cmds[i])) {
        return Sorted::Done(Err(RedisError::from((
            ErrorKind::TryAgain,
            "a slot moved in the middle of a pipeline",
        ))));
    }
    let mut resend = Vec::new();
    let mut places = Vec::new();
    // The new master may lack the scripts the refused calls name: their loads go first.
    for cmd in cmds.iter().filter(|c| is_script_load(c)) {
        resend.push((*cmd).clone());
        places.push(None);
    }
    for i in refused {
        resend.push(cmds[i].clone());
        places.push(Some(i));
    }
    Sorted::Again {
        replies,
        resend,
        places,
        moved: moved.flatten(),
    }
}

/// Errors Redis answers before running a command.
fn not_run(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Moved
            | ErrorKind::Ask
            | ErrorKind::TryAgain
            | ErrorKind::ClusterDown
            | ErrorKind::CrossSlot
            | ErrorKind::MasterDown
            | ErrorKind::ReadOnly
            | ErrorKind::BusyLoadingError
            | ErrorKind::NoScriptError
    )
}

fn is_script_load(cmd: &Cmd) -> bool {
    let mut args = cmd.args_iter();
    let name = |a: Option<redis::Arg<&[u8]>>| match a {
        Some(redis::Arg::Simple(bytes)) => bytes.to_ascii_uppercase(),
        _ => Vec::new(),
    };
    name(args.next()) == b"SCRIPT" && name(args.next()) == b"LOAD"
}

fn copy(error: &RedisError) -> RedisError {
    RedisError::from((
        error.kind(),
        "pipeline to a master failed",
        error.to_string(),
    ))
}

fn protocol(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::ParseError, what))
}
