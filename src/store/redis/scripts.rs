//! The Lua scripts behind every write to a session hash (see [`codec`](super::codec) for its
//! fields). Each one checks that the session exists and changes it in the same atomic step, so
//! no write brings back a session that a logout deleted between a check and a write.
//!
//! Scripts are sent by SHA (`EVALSHA`) and loaded on first use on each server.

use std::sync::LazyLock;

use redis::Script;

/// Creates a session unless its key exists. `KEYS[1]` the session, `KEYS[2]` (optional) the
/// user's index; `ARGV`: the record's first piece, deadline, TTL ms, index member, index TTL
/// ms, data size, then name/value pairs of fields: the record's other pieces and the data.
/// Returns 1 if created, 0 if the key was taken.
pub(super) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'e', ARGV[2], 'z', ARGV[6], unpack(ARGV, 7))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if KEYS[2] then
  redis.call('HSET', KEYS[2], ARGV[4], '')
  redis.call('PEXPIRE', KEYS[2], ARGV[5], 'NX')
  redis.call('PEXPIRE', KEYS[2], ARGV[5], 'GT')
end
return 1
",
    )
});

/// Moves a session's idle deadline. `KEYS[1]`; `ARGV`: deadline, TTL ms. Returns 0 when there
/// is no session. Only `e` and the TTL change, so a concurrent data write or live update is
/// never reverted.
pub(super) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HEXISTS', KEYS[1], 'r') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
",
    )
});

/// Applies data changes. `KEYS[1]`; `ARGV[1]` the size limit, `ARGV[2]` what each entry counts
/// beyond its name and value, then the changes: `i name json`, `r name` or `c`. Replies `{-1}`
/// when there is no session or it is moving, `{-2, size}` when the data would grow past the
/// limit, else `{1, size, previous...}` with the value each change replaced (nil for none, and
/// for a clear).
pub(super) static WRITE_DATA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
if redis.call('HEXISTS', k, 'r') == 0 or redis.call('HEXISTS', k, 'm') == 1 then return {-1} end
local overhead = tonumber(ARGV[2])
local recorded = redis.call('HGET', k, 'z')
local before = 0
if recorded and string.match(recorded, '^%d+$') and #recorded <= 15 then
  before = tonumber(recorded)
elseif recorded then
  -- A size that is not a plain count (written by hand): count the data anew.
  local all = redis.call('HGETALL', k)
  for j = 1, #all, 2 do
    if string.sub(all[j], 1, 2) == 'd:' then
      before = before + #all[j] - 2 + #all[j + 1] + overhead
    end
  end
end
local size = before
local pending = {}
local cleared = false
local previous = {}
local function value_of(field)
  local p = pending[field]
  if p ~= nil then return p end
  if cleared then return false end
  return redis.call('HGET', k, field)
end
local i = 3
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'c' then
    pending = {}
    cleared = true
    size = 0
    previous[#previous + 1] = false
    i = i + 1
  else
    local name = ARGV[i + 1]
    local field = 'd:' .. name
    local old = value_of(field)
    if old then size = size - #name - #old - overhead end
    previous[#previous + 1] = old
    if op == 'i' then
      pending[field] = ARGV[i + 2]
      size = size + #name + #ARGV[i + 2] + overhead
      i = i + 3
    else
      pending[field] = false
      i = i + 2
    end
  end
end
if size > tonumber(ARGV[1]) and size > before then return {-2, size} end
if cleared then
  for _, f in ipairs(redis.call('HKEYS', k)) do
    if string.sub(f, 1, 2) == 'd:' and pending[f] == nil then redis.call('HDEL', k, f) end
  end
end
for f, v in pairs(pending) do
  if v then redis.call('HSET', k, f, v) else redis.call('HDEL', k, f) end
end
redis.call('HSET', k, 'z', size)
local reply = {1, size}
for n = 1, #previous do reply[n + 2] = previous[n] end
return reply
",
    )
});

/// Replaces the profile and roles. `KEYS[1]`; `ARGV[1]` the `u` field. Returns 0 when there is
/// no session, 1 when updated, or the key text it is moving to, which must be updated instead
/// (the mark is looked for first: a marked key has no record left).
pub(super) static UPDATE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local moving = redis.call('HGET', KEYS[1], 'm')
if moving then return moving end
if redis.call('HEXISTS', KEYS[1], 'r') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'u', ARGV[1])
return 1
",
    )
});

/// Moves a session to a new key. `KEYS[1]` old, `KEYS[2]` new (same hash tag), `KEYS[3]`
/// (optional) the user's index; `ARGV`: the record's first piece, deadline, TTL ms, `1` to
/// carry the live-updated profile, index member (the new key's text), index TTL ms, the old
/// key's index member, the grace TTL ms of a marked old key, then the record's other pieces
/// as name/value pairs.
///
/// With the index (one server), the whole move happens here: the copy is indexed and the old
/// key deleted and unindexed in the same step, so a rotation cut off at any point leaves the old
/// token either working or gone. Without it (a cluster, where the index lives in another slot),
/// the old key is marked as moving to the new one and loses its record: from then on lookups
/// find no session there (as under a deleted key, without asking for the mark) and no write
/// lands on it; a listing reads it as the copy, so that a revocation racing the move finds it,
/// and a live update follows the mark. It expires within the grace TTL should the rest of the
/// rotation never come. Returns 0 when the old session is gone or already moving,
/// -1 when the new key is taken, 1 when moved.
pub(super) static MOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local old, new = KEYS[1], KEYS[2]
if redis.call('HEXISTS', old, 'r') == 0 or redis.call('HEXISTS', old, 'm') == 1 then return 0 end
if redis.call('EXISTS', new) == 1 then return -1 end
local fields = redis.call('HGETALL', old)
for i = 1, #fields, 2 do
  local f = fields[i]
  if f == 'z' or string.sub(f, 1, 2) == 'd:' or (f == 'u' and ARGV[4] == '1') then
    redis.call('HSET', new, f, fields[i + 1])
  end
end
redis.call('HSET', new, 'r', ARGV[1], 'e', ARGV[2])
if #ARGV > 8 then redis.call('HSET', new, unpack(ARGV, 9)) end
redis.call('PEXPIRE', new, ARGV[3])
if KEYS[3] then
  redis.call('HSET', KEYS[3], ARGV[5], '')
  redis.call('PEXPIRE', KEYS[3], ARGV[6], 'NX')
  redis.call('PEXPIRE', KEYS[3], ARGV[6], 'GT')
  redis.call('DEL', old)
  redis.call('HDEL', KEYS[3], ARGV[7])
else
  redis.call('HDEL', old, 'r', 'r1', 'r2', 'r3')
  redis.call('HSET', old, 'm', ARGV[5])
  local ttl = redis.call('PTTL', old)
  if ttl < 0 or ttl > tonumber(ARGV[8]) then redis.call('PEXPIRE', old, ARGV[8]) end
end
return 1
",
    )
});
