//! A cluster's channel history, kept in Redis, so the history API answers the same on
//! every node and each event's serial increases per channel across the cluster.
//!
//! Per channel of an app that keeps history (all keys under the app's hash tag):
//! - `{P:app}:h:{channel}`: a stream of the channel's last events, each with the id
//!   `<serial>-0` and the fields `f` (the frame subscribers were sent, the ciphertext of an
//!   encrypted channel as it was sent), `t` (Redis's clock when it was kept, ms) and `q`
//!   (the sending node and its bus sequence number, so a call sent again is recognised);
//! - `{P:app}:hm:{channel}` hash: `n` the channel's last serial, `b` the bytes of the
//!   frames kept, `o<node>` the last bus sequence number appended from that node;
//! - `{P:app}:hh`: the highest serial the app gave, so a channel whose keys expired starts
//!   above every serial a client may hold.
//!
//! The stream and its hash expire `history_max_age` after the channel's last event, so a
//! channel published to once costs nothing for long.
//!
//! How an event is kept: the publishing node does not deliver it at once; its bus message
//! (with a place for the serial, [`bus::SERIAL_AT`]) goes through the bus publisher as a
//! call of [`APPEND`] in the same pipeline as the other messages, in order. The script
//! gives the serial, appends the event, evicts by count, bytes and age, writes the serial
//! into the message and publishes it, all atomically: one round trip per pipeline, and
//! Redis publishes the events of a channel in the order of their serials. Every node,
//! the publishing one included, delivers the event when the bus brings it, so every
//! subscriber in the cluster gets a channel's events in serial order with the same serials.
//! On a Redis Cluster a script cannot publish on a bus channel of another slot, so the
//! publisher runs the appends first and publishes what they return (two round trips).
//!
//! The HTTP API answers a trigger once Redis has given its events their serials (within
//! [`KEPT_WAIT`]), so an event published through one node is in the history every node
//! reads once the answer is in, and events published one after the other get increasing
//! serials whichever nodes they went through.
//!
//! While the node knows Redis is away, an event is delivered at once on the node and sent
//! on as a plain event: it gets no serial and is not kept.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use herald_protocol::history::HistoryPage;
use redis::{Cmd, RedisResult, Script, Value};
use tokio::sync::oneshot;

use super::link::Commands;
use super::outgoing::{Append, Outgoing};
use super::Cluster;
use crate::adapter::bus;
use crate::apps::App;
use crate::history::limits::HistoryLimits;
use crate::history::{rings, History, HistoryError, Query};
use crate::ids::SocketId;

/// How long a trigger waits for Redis to give its event a serial before it answers anyway
/// (the event stays queued for the bus, which sends it when Redis answers).
pub(super) const KEPT_WAIT: Duration = Duration::from_secs(2);

/// Evicts a channel's oldest events until it is within its bounds; shared by both scripts.
/// The serials in a stream follow each other (events go only from the oldest end), so the
/// count bound is a serial; the bytes bound needs each evicted frame's length, read from
/// the oldest end; the age, each event's time.
const EVICT: &str = r"
local function evict(stream, meta, newest, max_events, max_bytes, oldest_ms)
  local keep_from = newest - max_events + 1
  local bytes = tonumber(redis.call('HGET', meta, 'b') or '0')
  local cut = nil
  local start = '-'
  local chunk = 2
  while true do
    local batch = redis.call('XRANGE', stream, start, '+', 'COUNT', chunk)
    if #batch == 0 then break end
    local kept = false
    for _, e in ipairs(batch) do
      local serial = tonumber(string.match(e[1], '^(%d+)'))
      local f = e[2]
      if serial < keep_from or bytes > max_bytes or tonumber(f[4]) <= oldest_ms then
        bytes = bytes - #f[2]
        cut = serial
      else
        kept = true
        break
      end
    end
    if kept then break end
    start = '(' .. batch[#batch][1]
    chunk = 16
  end
  if cut then
    redis.call('XTRIM', stream, 'MINID', (cut + 1) .. '-0')
    redis.call('HSET', meta, 'b', bytes)
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

/// Gives an event its serial and keeps it.
/// KEYS: stream, meta hash, the app's high mark.
/// ARGV: bus channel ('' to return the message instead of publishing it), the bus message,
/// max events, max bytes, max age (ms), node, bus sequence number, the frame's first byte
/// in the message (1-based) and its length.
/// Returns {1, serial, message} for a new event; {0, serial, message} for a copy of a call
/// that ran already (its serial, if the event is still kept; 0 otherwise); the message is
/// '' when the script published it.
const APPEND_BODY: &str = r"
local stream, meta, high = KEYS[1], KEYS[2], KEYS[3]
local max_events, max_bytes, max_age = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local mark = 'o' .. ARGV[6]
local sender = ARGV[6] .. ':' .. ARGV[7]
local function with_serial(serial)
  local s, bytes = serial, {}
  for i = 8, 1, -1 do
    bytes[i] = string.char(s % 256)
    s = math.floor(s / 256)
  end
  return string.sub(ARGV[2], 1, 13) .. table.concat(bytes) .. string.sub(ARGV[2], 22)
end
if tonumber(ARGV[7]) <= tonumber(redis.call('HGET', meta, mark) or '-1') then
  for _, e in ipairs(redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 256)) do
    if e[2][6] == sender then
      local serial = tonumber(string.match(e[1], '^(%d+)'))
      return {0, serial, with_serial(serial)}
    end
  end
  return {0, 0, ''}
end
local serial = redis.call('HINCRBY', meta, 'n', 1)
local highest = tonumber(redis.call('GET', high) or '0')
if serial == 1 and highest > 0 then
  serial = highest + 1
  redis.call('HSET', meta, 'n', serial)
end
if serial > highest then redis.call('SET', high, serial) end
local at = tonumber(ARGV[8])
local frame = string.sub(ARGV[2], at, at + tonumber(ARGV[9]) - 1)
local now = now_ms()
redis.call('HINCRBY', meta, 'b', #frame)
redis.call('HSET', meta, mark, ARGV[7])
redis.call('XADD', stream, serial .. '-0', 'f', frame, 't', now, 'q', sender)
evict(stream, meta, serial, max_events, max_bytes, now - max_age)
redis.call('PEXPIRE', stream, max_age)
redis.call('PEXPIRE', meta, max_age)
local message = with_serial(serial)
if ARGV[1] ~= '' then
  redis.call('PUBLISH', ARGV[1], message)
  return {1, serial, ''}
end
return {1, serial, message}
";

/// A page of a channel's history, evicting first what the bounds (perhaps lowered by a
/// reload) or the age no longer allow.
/// KEYS: stream, meta hash. ARGV: max events, max bytes, max age (ms), limit, before ('' for
/// none), after ('' for none).
/// Returns {oldest serial, newest serial, serial, time, frame, serial, time, frame, …}, all
/// as strings, oldest first.
const PAGE_BODY: &str = r"
local stream, meta = KEYS[1], KEYS[2]
local newest = tonumber(redis.call('HGET', meta, 'n') or '0')
if newest == 0 then return {'0', '0'} end
evict(stream, meta, newest, tonumber(ARGV[1]), tonumber(ARGV[2]), now_ms() - tonumber(ARGV[3]))
local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if #first == 0 then return {'0', '0'} end
local out = {string.match(first[1][1], '^(%d+)'), tostring(newest)}
local limit = tonumber(ARGV[4])
local entries
if ARGV[6] ~= '' then
  local stop = '+'
  if ARGV[5] ~= '' then stop = '(' .. ARGV[5] .. '-0' end
  entries = redis.call('XRANGE', stream, '(' .. ARGV[6] .. '-0', stop, 'COUNT', limit)
else
  local top = '+'
  if ARGV[5] ~= '' then top = '(' .. ARGV[5] .. '-0' end
  local newest_first = redis.call('XREVRANGE', stream, top, '-', 'COUNT', limit)
  entries = {}
  for i = #newest_first, 1, -1 do entries[#entries + 1] = newest_first[i] end
end
for _, e in ipairs(entries) do
  out[#out + 1] = string.match(e[1], '^(%d+)')
  out[#out + 1] = e[2][4]
  out[#out + 1] = e[2][2]
end
return out
";

static APPEND_SOURCE: LazyLock<String> = LazyLock::new(|| format!("{EVICT}{APPEND_BODY}"));
static APPEND: LazyLock<Script> = LazyLock::new(|| Script::new(&APPEND_SOURCE));
static PAGE: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{EVICT}{PAGE_BODY}")));

/// A stream entry as `XRANGE` gives it: its id and its fields and values, in turn.
type StreamEntry = (String, Vec<Vec<u8>>);

impl Append {
    /// The call as a pipeline's `EVALSHA` ([`load`] must come before it), publishing on
    /// `publish_on` or, with `None`, returning the message with its serial.
    fn evalsha(&self, message: &Outgoing, publish_on: Option<&str>) -> Cmd {
        let sequence = bus::sequence(&message.payload).unwrap_or(0);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(APPEND.get_hash())
            .arg(3)
            .arg(&self.keys[..])
            .arg(publish_on.unwrap_or(""))
            .arg(&message.payload[..])
            .arg(self.limits.max_events)
            .arg(self.limits.max_bytes)
            .arg(self.limits.max_age.as_millis().max(1) as u64)
            .arg(self.node)
            .arg(sequence)
            .arg(self.frame.start + 1)
            .arg(self.frame.len());
        cmd
    }
}

/// Whether the servers are known to hold [`APPEND`]: until a pipeline with it succeeds,
/// and again after any failed one (a restarted server or a promoted replica has no
/// scripts), each pipeline loads it first. Loading it in every pipeline cost Redis a hash
/// of its source per pipeline, most of a small pipeline's cost.
static LOADED: AtomicBool = AtomicBool::new(false);

/// `SCRIPT LOAD` of [`APPEND`], before the calls that name it by its hash.
fn load() -> Cmd {
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("LOAD").arg(APPEND_SOURCE.as_str());
    cmd
}

/// Sends a pipeline's messages of which some are appended to a history, in order. On an
/// error the publisher sends them again: a call that ran already is recognised by its
/// sequence number and keeps its serial.
pub(super) async fn send(commands: &mut Commands, batch: &mut [Outgoing]) -> RedisResult<()> {
    let result = send_once(commands, batch, !LOADED.load(Ordering::Relaxed)).await;
    LOADED.store(result.is_ok(), Ordering::Relaxed);
    result
}

async fn send_once(
    commands: &mut Commands,
    batch: &mut [Outgoing],
    load_first: bool,
) -> RedisResult<()> {
    if !commands.is_cluster() {
        let mut pipe = redis::pipe();
        if load_first {
            pipe.add_command(load()).ignore();
        }
        for message in batch.iter() {
            let cmd = match &message.append {
                Some(append) => append.evalsha(message, Some(&message.channel)),
                None => commands.publish_cmd(&message.channel, &message.payload),
            };
            pipe.add_command(cmd).ignore();
        }
        return pipe.query_async(commands).await;
    }
    // A Redis Cluster: the appends first, each in its app's slot, then every message in
    // order on the bus channels' slot. What an append returns replaces the message, so a
    // resend after a failed publish does not append again.
    let mut calls = Vec::new();
    let mut loaded = std::collections::HashSet::new();
    let mut places = Vec::new();
    for (i, message) in batch.iter().enumerate() {
        if let Some(append) = &message.append {
            let key = append.keys[0].clone();
            // A key's slot, reckoned as a channel's.
            if load_first && loaded.insert(commands.group_of(&key)) {
                calls.push((key.clone(), load()));
            }
            calls.push((key, append.evalsha(message, None)));
            places.push((i, calls.len() - 1));
        }
    }
    let replies = commands.query_each(calls).await?;
    for (i, reply) in places {
        let (_, _, message): (i64, u64, Vec<u8>) = redis::from_redis_value(&replies[reply])?;
        let outgoing = &mut batch[i];
        outgoing.append = None;
        if message.is_empty() {
            // A copy of an append whose event is no longer kept: it went out the first time.
            outgoing.channel.clear();
        } else {
            outgoing.payload = message;
        }
    }
    let messages: Vec<(&str, &[u8])> = batch
        .iter()
        .filter(|m| !m.channel.is_empty())
        .map(|m| (m.channel.as_str(), m.payload.as_slice()))
        .collect();
    commands.publish_group(&messages).await
}

impl Cluster {
    /// Sends an event of an app that keeps history: appended in Redis, then delivered by
    /// every node, this one included, from the bus (with `cache`, a cache channel's event
    /// and its lifetime, kept by every node as it delivers it). What it returns is told
    /// once Redis has given the event its serial (or the bus dropped it). `None` when the
    /// node knows Redis is away: the caller delivers it as a plain event.
    pub(super) fn send_kept(
        &self,
        app: &App,
        channel: &str,
        except: Option<SocketId>,
        frame: &Bytes,
        cache: Option<(&str, Duration)>,
        limits: HistoryLimits,
    ) -> Option<oneshot::Receiver<()>> {
        if !self.redis_up() {
            return None;
        }
        let (payload, at) = bus::encode_event(
            self.node_id,
            app.id(),
            channel,
            except.map(|s| s.to_string()).as_deref(),
            frame,
            cache.map(|(data, ttl)| (data, ttl.as_millis() as u64)),
            true,
        );
        let (confirmed, told) = oneshot::channel();
        self.enqueue(Outgoing {
            channel: self.bus.channel_of(app.id(), channel),
            payload,
            append: Some(Box::new(Append {
                keys: [
                    self.keys.history(app.id(), channel),
                    self.keys.history_meta(app.id(), channel),
                    self.keys.history_high(app.id()),
                ],
                limits,
                node: self.node_id,
                frame: at,
            })),
            confirmed: Some(confirmed),
        });
        Some(told)
    }

    /// The channel's last serial and the frames of its events after `after` (at most
    /// `limit`, oldest first, with their serials), for a recovering subscription
    /// (`state/replay.rs`).
    pub(super) async fn frames_after(
        &self,
        app: &App,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> RedisResult<(u64, Vec<(u64, Bytes)>)> {
        let mut pipe = redis::pipe();
        pipe.hget(self.keys.history_meta(app.id(), channel), "n");
        pipe.cmd("XRANGE")
            .arg(self.keys.history(app.id(), channel))
            .arg(format!("({after}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1));
        let (newest, entries): (Option<u64>, Vec<StreamEntry>) =
            pipe.query_async(&mut self.redis()).await?;
        let mut frames = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let serial = id.split('-').next().and_then(|s| s.parse().ok());
            // The fields are `f`, the frame, then the others.
            if let (Some(serial), Some(frame)) = (serial, fields.get(1)) {
                frames.push((serial, Bytes::copy_from_slice(frame)));
            }
        }
        Ok((newest.unwrap_or(0), frames))
    }

    /// The part of a channel's history that `query` asks for.
    async fn history_page(
        &self,
        app: &App,
        channel: &str,
        limits: HistoryLimits,
        query: Query,
    ) -> RedisResult<HistoryPage> {
        let empty = HistoryPage {
            events: Vec::new(),
            oldest_serial: 0,
            newest_serial: 0,
        };
        if query.before == Some(0) {
            return Ok(empty);
        }
        let serial = |s: Option<u64>| s.map_or(String::new(), |s| s.to_string());
        let mut invocation = PAGE.prepare_invoke();
        invocation
            .key(self.keys.history(app.id(), channel))
            .key(self.keys.history_meta(app.id(), channel))
            .arg(limits.max_events)
            .arg(limits.max_bytes)
            .arg(limits.max_age.as_millis().max(1) as u64)
            .arg(query.limit)
            .arg(serial(query.before))
            .arg(serial(query.after));
        let reply: Vec<Value> = invocation.invoke_async(&mut self.redis()).await?;
        let text = |v: &Value| -> RedisResult<u64> {
            let s: String = redis::from_redis_value(v)?;
            Ok(s.parse().unwrap_or(0))
        };
        let (Some(oldest), Some(newest)) = (reply.first(), reply.get(1)) else {
            return Ok(empty);
        };
        let mut page = HistoryPage {
            events: Vec::new(),
            oldest_serial: text(oldest)?,
            newest_serial: text(newest)?,
        };
        for entry in reply[2..].chunks_exact(3) {
            let frame: Vec<u8> = redis::from_redis_value(&entry[2])?;
            if let Some(event) = rings::read_back(text(&entry[0])?, text(&entry[1])?, &frame) {
                page.events.push(event);
            }
        }
        Ok(page)
    }
}

/// The history of a cluster node: Redis's (see the module's text).
pub(crate) struct Kept(pub(crate) Arc<Cluster>);

impl History for Kept {
    /// Nothing to do here: the broker appends the event as it publishes it
    /// ([`Cluster::send_kept`]), so the serial is given where the event is ordered.
    fn record(&self, _app: &App, _channel: &str, _frame: &Bytes) {}

    fn page<'a>(
        &'a self,
        app: &'a App,
        channel: &'a str,
        query: Query,
    ) -> BoxFuture<'a, Result<HistoryPage, HistoryError>> {
        Box::pin(async move {
            let limits = app.config().history;
            if !limits.on() {
                return Err(HistoryError::Off);
            }
            self.0
                .history_page(app, channel, limits, query)
                .await
                .map_err(|error| {
                    self.0
                        .request_failed("a channel's history; answered 503", &error);
                    HistoryError::Unavailable(error.to_string())
                })
        })
    }
}
