#pragma once

// The server-side scripts of RedisStorage. Each runs atomically on the primary, so each storage
// operation is one round trip and atomic with respect to every other, in every process.
//
// Per cache key (D = the key's SHA-256 digest, P = the key prefix):
//   P{D}:out    the output: "CSO1" + the encoded bytes (a string; PX output_ttl if set)
//   P{D}:res    the reservation: "<token> <expires_at_ns> <owner>" under PX ttl. Redis expires
//               it: the server's clock is the authority. expires_at_ns is the holder's own view,
//               reported to waiters for their events only.
//   P{D}:at     when the output was written: the server's clock in microseconds since the
//               epoch (a string, under the output's PX), for prune. Outputs written before it
//               existed have none; prune gives them one when it first sees them.
//   P{D}:fence  the fencing record, a hash without expiry: n = the last token issued, o = its
//               owner, s = what became of it: l (live: never released, so if :res is gone it
//               expired), r (released), s (stored); x = "<n> <us>": prune first saw token n
//               expired (and untaken) at server time us. Tokens are max(n + 1, the server's clock
//               in microseconds): they strictly increase per key, also after prune deleted the
//               fence, which it does only once the clock has passed n.
//   channel P{D}:wake:<db>  published to (payload: the publishing storage's origin id) after a
//               store, put, release or erase.
// The braces are a hash tag, so the three keys of one cache key share a cluster slot.
//
// Each script is kRedisPrelude followed by its body (acquire: its hit path, the prelude, the rest).
// Replies are arrays whose first element is a status code (but a hit of acquire: the output
// itself); tokens travel as decimal strings (a Lua number would lose digits past 2^53).

namespace cacheserialize {
namespace detail {

/// The header every stored output starts with; a value without it was not written by this
/// storage (a corrupt or foreign value) and is treated as a miss. kRedisAcquireHit spells it too.
inline constexpr char kRedisOutputMagic[] = "CSO1";

// Shared by every script (prepended to each): reading and writing the reservation and the fence.
inline constexpr const char* kRedisPrelude = R"lua(
-- The server's clock in microseconds since the epoch (exact in a Lua number). A script reads it
-- before its first write: before Redis 7 a script that reads the clock must then replicate its
-- effects rather than itself.
local function now_us()
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- An integral Lua number as a decimal string (tostring would give 1.7e+15).
local function decimal(x)
  return string.format('%.0f', x)
end
-- The reservation stored at `res`: token, expires_ns, owner; nil if there is none.
local function reservation(res)
  local v = redis.call('GET', res)
  if not v then return nil end
  local tok, exp, own = string.match(v, '^(%d+) (%-?%d+) (.*)$')
  if not tok then error({err = 'ERR cacheserialize: malformed reservation'}) end
  return tok, exp, own
end
local function reserve(res, tok, exp, own, px)
  redis.call('SET', res, tok .. ' ' .. exp .. ' ' .. own, 'PX', px)
end
-- The fence: the last token issued, its owner, and what became of it (l, r or s).
local function fence(f)
  local v = redis.call('HMGET', f, 'n', 'o', 's')
  return v[1], v[2], v[3]
end
-- Whether (tok, own) is the last reservation issued and was never ended: when `res` is gone,
-- it expired and nobody has taken the key since.
local function expired_untaken(f, tok, own)
  local n, o, s = fence(f)
  return n == tok and o == own and s == 'l'
end
-- The output and its write time (`at`), under the same PX.
local function set_output(out, at, payload, px)
  local t = decimal(now_us())
  if px == '0' then
    redis.call('SET', out, payload)
    redis.call('SET', at, t)
  else
    redis.call('SET', out, payload, 'PX', px)
    redis.call('SET', at, t, 'PX', px)
  end
end
)lua";

// KEYS: out res fence. ARGV[1]: "<overwrite 0|1><ttl_ms> <expires_ns> <owner>" (one argument:
// each argument costs the server a string and a table slot per call, and a hit needs only the
// first byte).
// -> output (a string: "CSO1" + the bytes) hit | {1, token, corrupt[, prev_token, prev_owner]}
//    acquired | {2, token, expires_ns, owner, pttl_ms, corrupt} held
// The hit comes first, before kRedisPrelude defines its functions, and answers with the stored
// value itself rather than a table: the cheapest script a hit can be (it is most calls).
inline constexpr const char* kRedisAcquireHit = R"lua(
local corrupt = 0
if string.byte(ARGV[1]) == 48 then
  local out = redis.call('GET', KEYS[1])
  if out then
    if string.sub(out, 1, 4) == 'CSO1' then return out end
    corrupt = 1
  end
end
)lua";
inline constexpr const char* kRedisAcquire = R"lua(
local px, expires, owner = string.match(ARGV[1], '^.(%d+) (%-?%d+) (.*)$')
if not px then error({err = 'ERR cacheserialize: malformed acquire arguments'}) end
local tok, exp, own = reservation(KEYS[2])
if tok then
  if own ~= owner then return {2, tok, exp, own, redis.call('PTTL', KEYS[2]), corrupt} end
  reserve(KEYS[2], tok, expires, own, px)
  return {1, tok, corrupt}
end
local n, o, s = fence(KEYS[3])
tok = decimal(math.max((tonumber(n) or 0) + 1, now_us()))
redis.call('HSET', KEYS[3], 'n', tok, 'o', owner, 's', 'l')
reserve(KEYS[2], tok, expires, owner, px)
if s == 'l' then return {1, tok, corrupt, n, o} end
return {1, tok, corrupt}
)lua";

// KEYS: res fence. ARGV: owner, token, ttl_ms, expires_ns.
// -> {1} extended | {0[, token, expires_ns, owner]} lost (with the current holder, if any)
// A reservation that expired with nobody taking the key since is re-created: no one else can
// have held the key in between.
inline constexpr const char* kRedisExtend = R"lua(
local tok, exp, own = reservation(KEYS[1])
if tok and (tok ~= ARGV[2] or own ~= ARGV[1]) then return {0, tok, exp, own} end
if not tok and not expired_untaken(KEYS[2], ARGV[2], ARGV[1]) then return {0} end
reserve(KEYS[1], ARGV[2], ARGV[4], ARGV[1], ARGV[3])
return {1}
)lua";

// KEYS: res fence. ARGV: owner, token, channel, origin.
// -> 1 released | 0 not held | 2 held by another owner (or token)
// Releasing a reservation that already expired (nobody took it since) reports "not held" but
// marks it released, so that the next acquisition is not reported as a takeover.
inline constexpr const char* kRedisRelease = R"lua(
local tok, exp, own = reservation(KEYS[1])
if not tok then
  if expired_untaken(KEYS[2], ARGV[2], ARGV[1]) then
    redis.call('HSET', KEYS[2], 's', 'r')
    redis.call('PUBLISH', ARGV[3], ARGV[4])
  end
  return 0
end
if tok ~= ARGV[2] or own ~= ARGV[1] then return 2 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 's', 'r')
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
)lua";

// KEYS: out res fence at. ARGV: "<retry><output_ttl_ms> <token> <db> <origin> <owner>", payload.
// retry is '1' if this is the operation's second attempt, after its connection broke, else '0';
// output_ttl_ms '0' is none; the channel is the keys' base (KEYS[1] without ":out") + ":wake:<db>".
// Packed into one argument, as acquire's: a miss runs this script on every call.
// -> {1} stored | {0[, token, expires_ns, owner]} rejected (with the current holder, if any)
// Fencing: only the current reservation, or the caller's own that expired with nobody taking
// the key since, may store. A reservation that already stored is no longer current: a second
// store by it is rejected and writes nothing. Only the retry of a store whose reply was lost
// with its connection (the fence names this reservation, stored, and the output there is this
// very payload: the first attempt wrote it) reports stored, without writing again.
inline constexpr const char* kRedisStore = R"lua(
local retry, ttl, token, db, origin, owner =
  string.match(ARGV[1], '^(.)(%d+) (%d+) (%d+) (%S+) (.*)$')
if not retry then error({err = 'ERR cacheserialize: malformed store arguments'}) end
local tok, exp, own = reservation(KEYS[2])
if tok then
  if tok ~= token or own ~= owner then return {0, tok, exp, own} end
else
  local n, o, s = fence(KEYS[3])
  if n ~= token or o ~= owner or (s ~= 'l' and s ~= 's') then return {0} end
  if s == 's' then
    if retry == '1' and redis.call('GET', KEYS[1]) == ARGV[2] then return {1} end
    return {0}
  end
end
set_output(KEYS[1], KEYS[4], ARGV[2], ttl)
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[3], 's', 's')
redis.call('PUBLISH', string.sub(KEYS[1], 1, -5) .. ':wake:' .. db, origin)
return {1}
)lua";

// KEYS: out at. ARGV: channel, origin, output_ttl_ms ('0': none), payload. -> 1
inline constexpr const char* kRedisPut = R"lua(
set_output(KEYS[1], KEYS[2], ARGV[4], ARGV[3])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
)lua";

// KEYS: out at. ARGV: channel, origin. -> 1 erased | 0 nothing stored
inline constexpr const char* kRedisErase = R"lua(
redis.call('DEL', KEYS[2])
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
)lua";

// KEYS: out res fence at, for each of a batch of cache keys. ARGV: older_than_us.
// -> {outputs deleted, fences deleted}
// One batch of prune, by the server's clock. For each cache key:
// - an output written at least older_than_us ago is deleted, with its write time; an output
//   without a write time gets one now (its age counts from the first prune that sees it); a
//   write time without an output (expired or erased meanwhile) is deleted;
// - if no reservation is live (:res is gone), the fence is deleted once the clock has passed its
//   last token (so the next token, from the clock, is higher) and it is stale: released or
//   stored with its last token issued at least older_than_us ago, or expired untaken and seen
//   so by prune at least older_than_us ago (marked `x` the first time), so that a holder whose
//   reservation expired only just can still resume it. A live reservation is never touched.
inline constexpr const char* kRedisPrune = R"lua(
local now = now_us()
local cutoff = now - tonumber(ARGV[1])
local outputs, fences = 0, 0
for i = 1, #KEYS, 4 do
  local out, res, f, at = KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]
  local t = redis.call('GET', at)
  if redis.call('EXISTS', out) == 1 then
    if not t then
      local px = redis.call('PTTL', out)
      if px > 0 then
        redis.call('SET', at, decimal(now), 'PX', px)
      else
        redis.call('SET', at, decimal(now))
      end
    elseif (tonumber(t) or now) <= cutoff then
      redis.call('DEL', out, at)
      outputs = outputs + 1
    end
  elseif t then
    redis.call('DEL', at)
  end
  if redis.call('EXISTS', res) == 0 then
    local n, o, s = fence(f)
    local tok = tonumber(n)
    if tok and tok < now then
      local stale
      if s == 'l' then
        local x = redis.call('HGET', f, 'x')
        local xn, xt
        if x then xn, xt = string.match(x, '^(%d+) (%d+)$') end
        if xn == n then
          stale = tonumber(xt) <= cutoff
        else
          redis.call('HSET', f, 'x', n .. ' ' .. decimal(now))
          stale = now <= cutoff
        end
      else
        stale = tok <= cutoff
      end
      if stale then
        redis.call('DEL', f)
        fences = fences + 1
      end
    end
  end
end
return {outputs, fences}
)lua";

}  // namespace detail
}  // namespace cacheserialize
