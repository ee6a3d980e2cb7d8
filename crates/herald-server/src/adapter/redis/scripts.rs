//! What the cluster keeps in Redis, and the Lua scripts that change it atomically.
//!
//! Every count is stored per node (`node → n`), so a node can restate its own share
//! idempotently (after a Redis outage or restart) and the survivors can remove a dead
//! node's share exactly. Each script reports the cluster-wide total before and after the
//! change, so the node that ran it, and only that node, sees a transition (first
//! subscriber, last connection of a member) and emits its event and webhook: once per
//! cluster. The state task runs the counting scripts by the hundred in pipelines: each
//! pipeline loads a script once (`SCRIPT LOAD`) and names it by its hash in every call
//! (`EVALSHA`), rather than sending its source with each (`EVAL`).
//!
//! Keys, with `P` the configured prefix. Every key one script or pipeline touches carries
//! the same hash tag, so on a Redis Cluster they share one slot (see `link/slots.rs`): an
//! app's keys are tagged `{P:app}`, so apps spread over the shards; the keys every app
//! shares, `{P}`. One server and a sentinel-watched master use the same layout.
//! - `{P}:nodes` sorted set: node id → time of its last heartbeat (Redis clock, ms);
//! - `{P}:epoch`: a random value set once; a changed epoch means Redis lost its data;
//! - `{P:app}:conns` hash: node → open connections of the app;
//! - `{P:app}:chans` set: the app's occupied channels;
//! - `{P:app}:s:{channel}` hash: node → subscriptions to the channel;
//! - `{P:app}:m:{channel}` hash: presence user → connections in the cluster;
//! - `{P:app}:i:{channel}` hash: presence user → its `user_info` JSON ("" for none);
//! - `{P:app}:v:{channel}`: the presence channel's membership version, incremented by every
//!   change of its members (a user's first connection, or its last gone), so each node
//!   can order the changes and the member lists it hears (`roster.rs`); it expires a day
//!   after the channel empties;
//! - `{P:app}:c:{channel}` hash: a cache channel's last event (`frame`, `data`), expiring
//!   with it, for nodes that were not listening when it was published;
//! - `{P:app}:h:{channel}` stream, `{P:app}:hm:{channel}` hash and `{P:app}:hh`: the
//!   channel's history (`history.rs`), when the app keeps history;
//! - `{P:app}:r:{kind}:{window}`: a rate or quota counter, expiring after its window;
//! - `{P:app}:u` hash: signed-in user → connections in the cluster;
//! - `{P:app}:n:{node}:s`, `:m`, `:u`: the node's own entries of the app, so they can be
//!   found when it dies;
//! - `{P}:n:{node}:apps` set: every app the node has written entries of (it adds an app
//!   before its first write of it, once per app and epoch), so whichever node reaps it
//!   finds them all, apps the reaper does not serve included;
//! - `{P}:reaping` sorted set: dead node → when a survivor claimed its reap (Redis clock,
//!   ms). The claimer retries until the reap is done and then removes the entry; a claim
//!   older than the node timeout (its claimer died too) may be taken over.
//!
//! Earlier versions used untagged keys (`P:app:…`, `P:n:node:…`): nodes of both layouts
//! under one prefix would not see each other's state, so they must not share a prefix.

use std::sync::LazyLock;

use redis::{aio::ConnectionLike, Cmd, FromRedisValue, RedisResult, Script};

use super::link::HashTag;

/// Builds key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    shared: HashTag,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            shared: HashTag::shared(prefix),
        }
    }

    /// The tag of every key of `app`.
    pub fn app(&self, app: &str) -> HashTag {
        HashTag::app(&self.prefix, app)
    }

    pub fn bus(&self) -> String {
        format!("{}:bus", self.prefix)
    }

    pub fn nodes(&self) -> String {
        self.shared.key(&["nodes"])
    }

    pub fn epoch(&self) -> String {
        self.shared.key(&["epoch"])
    }

    pub fn conns(&self, app: &str) -> String {
        self.app(app).key(&["conns"])
    }

    pub fn chans(&self, app: &str) -> String {
        self.app(app).key(&["chans"])
    }

    pub fn subs(&self, app: &str, channel: &str) -> String {
        self.app(app).key(&["s", channel])
    }

    pub fn members(&self, app: &str, channel: &str) -> String {
        self.app(app).key(&["m", channel])
    }

    pub fn infos(&self, app: &str, channel: &str) -> String {
        self.app(app).key(&["i", channel])
    }

    /// The membership and occupation changes the scripts made for node `node`'s calls:
    /// what a call whose answer was lost (a timeout; the call ran when Redis came back)
    /// still has to announce.
    pub fn journal(&self, app: &str, node: u32) -> String {
        self.app(app).key(&["n", &node.to_string(), "j"])
    }

    pub fn member_version(&self, app: &str, channel: &str) -> String {
        self.app(app).key(&["v", channel])
    }

    pub fn cache(&self, app: &str, channel: &str) -> String {
        self.app(app).key(&["c", channel])
    }

    /// A channel's history stream (`history.rs`).
    pub fn history(&self, app: &str, channel: &str) -> String {
        self.app(app).key(&["h", channel])
    }

    /// A channel's history counters: its last serial, bytes kept, senders' marks.
    pub fn history_meta(&self, app: &str, channel: &str) -> String {
        self.app(app).key(&["hm", channel])
    }

    /// What a connection of `identity` left for recovery (`recoveries.rs`).
    pub fn recovery(&self, app: &str, identity: &str) -> String {
        self.app(app).key(&["rc", identity])
    }

    /// The highest serial the app gave.
    pub fn history_high(&self, app: &str) -> String {
        self.app(app).key(&["hh"])
    }

    pub fn rate(&self, app: &str, kind: &str, window: u64) -> String {
        self.app(app).key(&["r", kind, &window.to_string()])
    }

    pub fn users(&self, app: &str) -> String {
        self.app(app).key(&["u"])
    }

    pub fn node_subs(&self, app: &str, node: u32) -> String {
        self.app(app).key(&["n", &node.to_string(), "s"])
    }

    pub fn node_members(&self, app: &str, node: u32) -> String {
        self.app(app).key(&["n", &node.to_string(), "m"])
    }

    pub fn node_users(&self, app: &str, node: u32) -> String {
        self.app(app).key(&["n", &node.to_string(), "u"])
    }

    /// A call of [`CHANNEL_SET`]: `node` has `n` subscriptions to `channel`. `stamp` is
    /// the calling node and the call's number, for its journal.
    pub fn channel_set(&self, app: &str, channel: &str, node: u32, n: usize, stamp: Stamp) -> Call {
        Call {
            counter: Counter::Channel,
            keys: vec![
                self.subs(app, channel),
                self.chans(app),
                self.node_subs(app, node),
                self.journal(app, stamp.by),
            ],
            args: vec![
                node.to_string(),
                channel.to_owned(),
                n.to_string(),
                index_field(&[app, channel]),
                stamp.seq.to_string(),
            ],
        }
    }

    /// A call of [`MEMBER_SET`]: `node` has `n` connections of `user` in `channel`, which
    /// takes at most `max` members (0: no check); with `list`, the reply lists them.
    /// `stamp` is the calling node and the call's number, for its journal.
    #[allow(clippy::too_many_arguments)] // The script's arguments, named.
    pub fn member_set(
        &self,
        app: &str,
        channel: &str,
        node: u32,
        user: &str,
        n: u32,
        info: &str,
        max: usize,
        list: bool,
        stamp: Stamp,
    ) -> Call {
        Call {
            counter: Counter::Member,
            keys: vec![
                self.members(app, channel),
                self.infos(app, channel),
                self.node_members(app, node),
                self.member_version(app, channel),
                self.journal(app, stamp.by),
            ],
            args: vec![
                user.to_owned(),
                n.to_string(),
                index_field(&[app, channel, user]),
                info.to_owned(),
                max.to_string(),
                if list { "1" } else { "0" }.to_owned(),
                stamp.seq.to_string(),
                channel.to_owned(),
            ],
        }
    }

    /// A call of [`USER_SET`]: `node` has `n` connections signed in as `user`.
    pub fn user_set(&self, app: &str, node: u32, user: &str, n: usize) -> Call {
        Call {
            counter: Counter::User,
            keys: vec![self.users(app), self.node_users(app, node)],
            args: vec![user.to_owned(), n.to_string(), index_field(&[app, user])],
        }
    }

    pub fn node_apps(&self, node: u32) -> String {
        self.shared.key(&["n", &node.to_string(), "apps"])
    }

    pub fn reaping(&self) -> String {
        self.shared.key(&["reaping"])
    }
}

/// Who makes a counting call and its number: its changes are journaled under the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub by: u32,
    pub seq: u64,
}

/// Index entries name what they count with newline-separated parts: app ids and channel
/// names cannot contain a newline, and the user id, which can, comes last.
pub fn index_field(parts: &[&str]) -> String {
    parts.join("\n")
}

/// Splits an index field into its `N` parts.
pub fn split_field<const N: usize>(field: &str) -> Option<[&str; N]> {
    let parts: Vec<&str> = field.splitn(N, '\n').collect();
    parts.try_into().ok()
}

/// The scripts that set one node's count of something, which the state task runs by the
/// hundred in pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// [`CHANNEL_SET`].
    Channel,
    /// [`MEMBER_SET`].
    Member,
    /// [`USER_SET`].
    User,
}

static CHANNEL_SET_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CHANNEL_SET));
static MEMBER_SET_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(MEMBER_SET));
static USER_SET_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(USER_SET));

impl Counter {
    fn script(self) -> &'static Script {
        match self {
            Counter::Channel => &CHANNEL_SET_SCRIPT,
            Counter::Member => &MEMBER_SET_SCRIPT,
            Counter::User => &USER_SET_SCRIPT,
        }
    }

    /// `SCRIPT LOAD` of the script: once in a pipeline, before the calls that name it by
    /// its hash, so they find it on whichever server holds their slot now (a promoted
    /// replica or a restarted server has no scripts) without its source in every call.
    pub fn load(self) -> Cmd {
        let source = match self {
            Counter::Channel => CHANNEL_SET,
            Counter::Member => MEMBER_SET,
            Counter::User => USER_SET,
        };
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(source);
        cmd
    }
}

/// One call of a [`Counter`] script: its keys and arguments.
#[derive(Debug, Clone)]
pub struct Call {
    counter: Counter,
    keys: Vec<String>,
    args: Vec<String>,
}

impl Call {
    /// The script the call runs.
    pub fn counter(&self) -> Counter {
        self.counter
    }

    /// The call as a pipeline's `EVALSHA`: [`Counter::load`] must come before it in the
    /// pipeline.
    pub fn evalsha(&self) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.counter.script().get_hash())
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }

    /// Runs the call alone: `EVALSHA`, and the script loaded first if the server lacks it.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        conn: &mut (impl ConnectionLike + Send),
    ) -> RedisResult<T> {
        let mut invocation = self.counter.script().prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        for arg in &self.args {
            invocation.arg(arg);
        }
        invocation.invoke_async(conn).await
    }
}

/// Sets this node's subscription count of a channel; the channel's occupation changing
/// is journaled under the caller.
/// KEYS: subs hash, app's channel set, node's channel index, caller's journal.
/// ARGV: node, channel, count, index field, call number. Returns {total before, total after}.
pub const CHANNEL_SET: &str = r"
local before = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do before = before + tonumber(v) end
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local n = tonumber(ARGV[3])
if n > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], n)
  redis.call('SADD', KEYS[3], ARGV[4])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[4])
end
local after = before - old + n
if after > 0 then redis.call('SADD', KEYS[2], ARGV[2]) else redis.call('SREM', KEYS[2], ARGV[2]) end
if (before == 0) ~= (after == 0) then
  redis.call('RPUSH', KEYS[4], cjson.encode({s = ARGV[5], k = 'c', p = after > 0, c = ARGV[2]}))
end
return {before, after}
";

/// Sets this node's connection count for one presence member of a channel, refusing a new
/// user when the channel is full. A change of membership (the user's first connection in
/// the cluster, or its last gone) increments the channel's version.
/// The change is journaled under the caller too.
/// KEYS: members hash, infos hash, node's member index, membership version, caller's
/// journal.
/// ARGV: user, count, index field, user_info ("" for none), max members (0: no limit),
/// "1" to return the member list, call number, channel.
/// Returns {-1} when refused, else {total before, total after, version, user, info, user,
/// info, ...} with the version after the call and the member list only if asked for,
/// every item a string.
pub const MEMBER_SET: &str = r"
local old = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
local n = tonumber(ARGV[2])
local total = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local max = tonumber(ARGV[5])
if total == 0 and n > old and max > 0 and redis.call('HLEN', KEYS[1]) >= max then
  return {'-1'}
end
local after = total - old + n
if after < 0 then after = 0 end
if after > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], after)
  if total == 0 then redis.call('HSET', KEYS[2], ARGV[1], ARGV[4]) end
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
if n > 0 then redis.call('HSET', KEYS[3], ARGV[3], n) else redis.call('HDEL', KEYS[3], ARGV[3]) end
local version
if (total == 0) ~= (after == 0) then
  version = redis.call('INCR', KEYS[4])
  redis.call('RPUSH', KEYS[5], cjson.encode({s = ARGV[7], k = 'm', p = after > 0, v = version,
    c = ARGV[8], u = ARGV[1], i = ARGV[4]}))
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('PERSIST', KEYS[4])
  else
    redis.call('PEXPIRE', KEYS[4], 86400000)
  end
else
  version = tonumber(redis.call('GET', KEYS[4]) or '0')
end
local r = {tostring(total), tostring(after), tostring(version)}
if ARGV[6] == '1' then
  for _, v in ipairs(redis.call('HGETALL', KEYS[2])) do r[#r + 1] = v end
end
return r
";

/// A presence channel's members and the membership version they are at, read together.
/// KEYS: infos hash, membership version. Returns {version, user, info, user, info, ...}.
pub const MEMBER_LIST: &str = r"
local r = {tostring(redis.call('GET', KEYS[2]) or '0')}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do r[#r + 1] = v end
return r
";

/// Sets this node's signed-in connection count of a user.
/// KEYS: users hash, node's user index. ARGV: user, count, index field.
/// Returns {total before, total after}.
pub const USER_SET: &str = r"
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0')
local n = tonumber(ARGV[2])
local total = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local after = total - old + n
if after < 0 then after = 0 end
if after > 0 then redis.call('HSET', KEYS[1], ARGV[1], after) else redis.call('HDEL', KEYS[1], ARGV[1]) end
if n > 0 then redis.call('HSET', KEYS[2], ARGV[3], n) else redis.call('HDEL', KEYS[2], ARGV[3]) end
return {total, after}
";

/// Takes `n` from a window's budget, or just counts when the limit is 0.
/// KEYS: the counter. ARGV: limit, n, lifetime of the counter (s). Returns 1 if taken.
pub fn rate_take() -> Script {
    Script::new(
        r"
local n = tonumber(ARGV[2])
local used = redis.call('INCRBY', KEYS[1], n)
if used == n then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
local limit = tonumber(ARGV[1])
if limit > 0 and used > limit then
  redis.call('DECRBY', KEYS[1], n)
  return 0
end
return 1
",
    )
}

/// Counts published messages the way Pusher does: one per event and channel, plus one per
/// subscriber it reaches anywhere in the cluster.
/// KEYS: the counter, then the subscription hash of each channel published to (repeated if
/// published to twice). ARGV: lifetime of the counter (s).
pub fn count_messages() -> Script {
    Script::new(
        r"
local n = #KEYS - 1
for i = 2, #KEYS do
  for _, v in ipairs(redis.call('HVALS', KEYS[i])) do n = n + tonumber(v) end
end
local used = redis.call('INCRBY', KEYS[1], n)
if used == n then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return used
",
    )
}

/// Admits a connection if the app's connections across the cluster stay within its limit.
/// KEYS: the app's connection counts. ARGV: node, this node's count with the new
/// connection, limit. Returns 1 if admitted.
pub fn admit() -> Script {
    Script::new(
        r"
local mine = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], mine)
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
if total > tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], mine - 1)
  return 0
end
return 1
",
    )
}

/// Records a heartbeat and finds nodes whose last one is older than the timeout.
/// KEYS: nodes, epoch. ARGV: node, a fresh epoch to set if none exists, timeout (ms).
/// Returns {epoch, 1 if the node was not listed (new, or removed as dead), dead nodes...}.
pub fn heartbeat() -> Script {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[2]
  redis.call('SET', KEYS[2], epoch)
end
local added = redis.call('ZADD', KEYS[1], now, ARGV[1])
local r = {epoch, tostring(added)}
for _, v in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))) do
  r[#r + 1] = v
end
return r
",
    )
}

/// Claims a dead node's reap, or renews the claim of a reap to retry.
/// KEYS: nodes, reaping. ARGV: dead node, node timeout (ms), "1" to renew a claim held.
/// Returns 1 if the caller holds the claim now: the node's last heartbeat is older than the
/// timeout and the caller took it out of the nodes (a first claim), or its claim is being
/// renewed, or another's claim is older than the timeout. A node heartbeating again is
/// alive: its claim is dropped and 0 returned.
pub fn reap_claim() -> Script {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = now - tonumber(ARGV[2])
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if beat and tonumber(beat) > stale then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
if beat then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  return 1
end
local claimed = redis.call('ZSCORE', KEYS[2], ARGV[1])
if claimed and (ARGV[3] == '1' or tonumber(claimed) <= stale) then
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  return 1
end
return 0
",
    )
}

/// The reaps whose claim is older than the timeout: their claimer died or is stuck.
/// KEYS: reaping. ARGV: node timeout (ms). Returns the node ids.
pub fn stale_claims() -> Script {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_fields_keep_newlines_in_the_last_part() {
        let field = index_field(&["app", "presence-a", "user\nwith newline"]);
        assert_eq!(
            split_field::<3>(&field),
            Some(["app", "presence-a", "user\nwith newline"])
        );
        assert_eq!(split_field::<2>("no-newline"), None);
    }
}
