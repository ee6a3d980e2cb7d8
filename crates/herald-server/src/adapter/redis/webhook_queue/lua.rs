//! The queue's Lua scripts: each changes one app's keys (one hash tag) atomically.

use std::sync::LazyLock;

use redis::Script;

/// KEYS: stream, order, bytes, dead, dead records, evicted, tokens. ARGV: consumer, the
/// byte bound, the number of records, then per record its body, endpoint, token ("" for
/// none), number of channels and channels. Returns per record its stream id ("" when
/// refused) and the ids it follows, comma-separated. A record whose token names an entry
/// still in the stream is that entry (a write that timed out and was applied after all):
/// its id is returned and nothing is added.
pub(super) static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local s, o, b, dz, dh, ev, t = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
redis.pcall('XGROUP', 'CREATE', s, 'herald', '0', 'MKSTREAM')
local max = tonumber(ARGV[2])
local held = tonumber(redis.call('GET', b) or '0')
local out, i, added = {}, 4, 0
for r = 1, tonumber(ARGV[3]) do
  local body, url, token, nc = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local first = i + 4
  i = first + nc
  local len = #body
  local known = nil
  if token ~= '' then
    local prev = redis.call('HGET', t, token)
    if prev then
      local e = redis.call('XRANGE', s, prev, prev)
      if #e > 0 then
        local a = ''
        for f = 1, #e[1][2], 2 do
          if e[1][2][f] == 'a' then a = e[1][2][f + 1] end
        end
        known = {prev, a}
      end
    end
  end
  if known then
    out[r] = known
    len = -1
  end
  while len >= 0 and held + len > max do
    local oldest = redis.call('ZRANGE', dz, 0, 0)
    if #oldest == 0 then break end
    local dead = redis.call('HGET', dh, oldest[1])
    if dead then held = held - #dead end
    redis.call('ZREM', dz, oldest[1])
    redis.call('HDEL', dh, oldest[1])
    redis.call('INCR', ev)
  end
  if len < 0 then
    -- Already in the stream.
  elseif held + len > max then
    redis.call('INCR', ev)
    out[r] = {'', ''}
  else
    local after, seen = {}, {}
    for c = first, first + nc - 1 do
      local prev = redis.call('HGET', o, url .. '\n' .. ARGV[c])
      if prev and not seen[prev] then
        seen[prev] = true
        after[#after + 1] = prev
      end
    end
    local csv = table.concat(after, ',')
    local id
    if token ~= '' then
      id = redis.call('XADD', s, '*', 'r', body, 'a', csv, 't', token)
      redis.call('HSET', t, token, id)
    else
      id = redis.call('XADD', s, '*', 'r', body, 'a', csv)
    end
    for c = first, first + nc - 1 do
      redis.call('HSET', o, url .. '\n' .. ARGV[c], id)
    end
    held = held + len
    added = added + 1
    out[r] = {id, csv}
  end
end
redis.call('SET', b, held)
if added > 0 then
  redis.call('XREADGROUP', 'GROUP', 'herald', ARGV[1], 'STREAMS', s, '>')
end
return out
",
    )
});

/// KEYS: stream, order, bytes, dead, dead records, progress, tokens. ARGV: stream id, endpoint, 1 for a
/// dead letter, its time, its record, then the channels. Returns 1 if the batch was still
/// in the stream (a second node finishing it changes nothing).
pub(super) static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local s, o, b, dz, dh, p, t = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local id, url = ARGV[1], ARGV[2]
local e = redis.call('XRANGE', s, id, id)
redis.call('XACK', s, 'herald', id)
redis.call('HDEL', p, id)
if #e == 0 then return 0 end
local fields, len = e[1][2], 0
for f = 1, #fields, 2 do
  if fields[f] == 'r' then len = #fields[f + 1] end
  if fields[f] == 't' and redis.call('HGET', t, fields[f + 1]) == id then
    redis.call('HDEL', t, fields[f + 1])
  end
end
redis.call('XDEL', s, id)
redis.call('DECRBY', b, len)
if ARGV[3] == '1' then
  redis.call('ZADD', dz, ARGV[4], id)
  redis.call('HSET', dh, id, ARGV[5])
  redis.call('INCRBY', b, #ARGV[5])
end
for c = 6, #ARGV do
  local f = url .. '\n' .. ARGV[c]
  if redis.call('HGET', o, f) == id then redis.call('HDEL', o, f) end
end
return 1
",
    )
});

/// A Lua function adding stream entries (`[id, [field, value, …]]`) to `out` as (id,
/// record, ids it follows); an entry deleted while pending (no fields) is left out.
const ADD_ENTRIES: &str = r"
local function add_entries(entries, out)
  for _, e in ipairs(entries) do
    if e[2] then
      local r, a = '', ''
      for f = 1, #e[2], 2 do
        if e[2][f] == 'r' then r = e[2][f + 1] elseif e[2][f] == 'a' then a = e[2][f + 1] end
      end
      out[#out + 1] = {e[1], r, a}
    end
  end
end
";

/// KEYS: stream. ARGV: consumer, the id to read after, a count. The consumer's own
/// batches: (id, body, ids it follows).
pub(super) static OWN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ADD_ENTRIES}{}",
        r"
redis.pcall('XGROUP', 'CREATE', KEYS[1], 'herald', '0', 'MKSTREAM')
local got = redis.call('XREADGROUP', 'GROUP', 'herald', ARGV[1], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], ARGV[2])
local out = {}
if not got then return out end
add_entries(got[1][2], out)
return out
"
    ))
});

/// KEYS: stream. ARGV: stream ids. How many of them are still in the stream.
pub(super) static WAITING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for _, id in ipairs(ARGV) do
  if #redis.call('XRANGE', KEYS[1], id, id) > 0 then n = n + 1 end
end
return n
",
    )
});

/// An app's tick on one node. KEYS: stream, dead, dead records, bytes. ARGV: consumer,
/// the lease (ms), how many to claim, 1 to renew the consumer's lease, the dead letters'
/// cutoff (ms). Renews (and forgets the consumers idle ten leases with nothing pending),
/// expires, claims the batches idle past the lease, and returns them
/// with the gauges: (claimed, stream length, dead letters, bytes, oldest stream id).
pub(super) static TICK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ADD_ENTRIES}{}",
        r"
local s, dz, dh, b = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local me, count = ARGV[1], tonumber(ARGV[3])
redis.pcall('XGROUP', 'CREATE', s, 'herald', '0', 'MKSTREAM')
if ARGV[4] == '1' then
  local start = '-'
  while true do
    local p = redis.call('XPENDING', s, 'herald', start, '+', 500, me)
    if #p == 0 then break end
    local ids = {}
    for _, e in ipairs(p) do ids[#ids + 1] = e[1] end
    local last = ids[#ids]
    ids[#ids + 1] = 'JUSTID'
    redis.call('XCLAIM', s, 'herald', me, 0, unpack(ids))
    if #p < 500 then break end
    start = '(' .. last
  end
  -- Consumers of processes gone long ago, holding nothing (a node's next read makes its
  -- consumer again).
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', s, 'herald')) do
    local f = {}
    for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
    if f['name'] ~= me and f['pending'] == 0 and f['idle'] > 10 * tonumber(ARGV[2]) then
      redis.call('XGROUP', 'DELCONSUMER', s, 'herald', f['name'])
    end
  end
end
local old = redis.call('ZRANGEBYSCORE', dz, '-inf', ARGV[5], 'LIMIT', 0, 1000)
for _, id in ipairs(old) do
  local r = redis.call('HGET', dh, id)
  if r then redis.call('DECRBY', b, #r) end
  redis.call('HDEL', dh, id)
  redis.call('ZREM', dz, id)
end
local out, cursor = {}, '0-0'
repeat
  local got = redis.call('XAUTOCLAIM', s, 'herald', me, ARGV[2], cursor, 'COUNT', count - #out)
  cursor = got[1]
  add_entries(got[2], out)
until cursor == '0-0' or #out >= count
local first = redis.call('XRANGE', s, '-', '+', 'COUNT', 1)
local oldest = ''
if #first > 0 then oldest = first[1][1] end
return {out, redis.call('XLEN', s), redis.call('ZCARD', dz), tonumber(redis.call('GET', b) or '0'), oldest}
"
    ))
});

/// KEYS: dead, dead records, bytes. ARGV: stream ids. Removes those dead letters; how many
/// there were.
pub(super) static PURGE_DEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for _, id in ipairs(ARGV) do
  local r = redis.call('HGET', KEYS[2], id)
  if r then
    redis.call('DECRBY', KEYS[3], #r)
    n = n + 1
  end
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
end
return n
",
    )
});
