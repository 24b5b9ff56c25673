#pragma once

// The server-side scripts of RedisStorage. Each runs atomically on the primary, so each storage
// operation is one round trip and atomic with respect to every other, in every process.
//
// Per cache key (D = the key's SHA-256 digest, P = the key prefix):
//   P{D}:out    the output: "CSO1" + the encoded bytes (a string; PX output_ttl if set)
//   P{D}:res    the reservation: "<token> <expires_at_ns> <owner>" under PX ttl. Redis expires
//               it: the server's clock is the authority. expires_at_ns is the holder's own view,
//               reported to waiters for their events only.
//   P{D}:fence  the fencing record, a hash that never expires: n = the last token issued (tokens
//               strictly increase per key for the store's life), o = its owner, s = what became
//               of it: l (live: never released, so if :res is gone it expired), r (released),
//               s (stored).
//   channel P{D}:wake:<db>  published to (payload: the publishing storage's origin id) after a
//               store, put, release or erase.
// The braces are a hash tag, so the three keys of one cache key share a cluster slot.
//
// Each script is kRedisPrelude followed by its body. Replies are arrays whose first element is a
// status code; tokens travel as decimal strings
// (a Lua number would lose digits past 2^53).

namespace cacheserialize {
namespace detail {

/// The header every stored output starts with; a value without it was not written by this
/// storage (a corrupt or foreign value) and is treated as a miss.
inline constexpr char kRedisOutputMagic[] = "CSO1";

// Shared by every script (prepended to each): reading and writing the reservation and the fence.
inline constexpr const char* kRedisPrelude = R"lua(
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
local function set_output(out, payload, px)
  if px == '0' then
    redis.call('SET', out, payload)
  else
    redis.call('SET', out, payload, 'PX', px)
  end
end
)lua";

// KEYS: out res fence. ARGV: owner, ttl_ms, overwrite ('0'/'1'), expires_ns, magic.
// -> {0, output} hit | {1, token, corrupt[, prev_token, prev_owner]} acquired
//    | {2, token, expires_ns, owner, pttl_ms, corrupt} held
inline constexpr const char* kRedisAcquire = R"lua(
local corrupt = 0
if ARGV[3] == '0' then
  local out = redis.call('GET', KEYS[1])
  if out then
    if string.sub(out, 1, #ARGV[5]) == ARGV[5] then return {0, out} end
    corrupt = 1
  end
end
local tok, exp, own = reservation(KEYS[2])
if tok then
  if own ~= ARGV[1] then return {2, tok, exp, own, redis.call('PTTL', KEYS[2]), corrupt} end
  reserve(KEYS[2], tok, ARGV[4], own, ARGV[2])
  return {1, tok, corrupt}
end
local n, o, s = fence(KEYS[3])
redis.call('HINCRBY', KEYS[3], 'n', 1)
tok = redis.call('HGET', KEYS[3], 'n')
redis.call('HSET', KEYS[3], 'o', ARGV[1], 's', 'l')
reserve(KEYS[2], tok, ARGV[4], ARGV[1], ARGV[2])
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

// KEYS: out res fence. ARGV: owner, token, channel, origin, output_ttl_ms ('0': none), payload,
// retry ('1': this is the operation's second attempt, after its connection broke; else '0').
// -> {1} stored | {0[, token, expires_ns, owner]} rejected (with the current holder, if any)
// Fencing: only the current reservation, or the caller's own that expired with nobody taking
// the key since, may store. A reservation that already stored is no longer current: a second
// store by it is rejected and writes nothing. Only the retry of a store whose reply was lost
// with its connection (the fence names this reservation, stored, and the output there is this
// very payload: the first attempt wrote it) reports stored, without writing again.
inline constexpr const char* kRedisStore = R"lua(
local tok, exp, own = reservation(KEYS[2])
if tok then
  if tok ~= ARGV[2] or own ~= ARGV[1] then return {0, tok, exp, own} end
else
  local n, o, s = fence(KEYS[3])
  if n ~= ARGV[2] or o ~= ARGV[1] or (s ~= 'l' and s ~= 's') then return {0} end
  if s == 's' then
    if ARGV[7] == '1' and redis.call('GET', KEYS[1]) == ARGV[6] then return {1} end
    return {0}
  end
end
set_output(KEYS[1], ARGV[6], ARGV[5])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[3], 's', 's')
redis.call('PUBLISH', ARGV[3], ARGV[4])
return {1}
)lua";

// KEYS: out. ARGV: channel, origin, output_ttl_ms ('0': none), payload. -> 1
inline constexpr const char* kRedisPut = R"lua(
set_output(KEYS[1], ARGV[4], ARGV[3])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
)lua";

// KEYS: out. ARGV: channel, origin. -> 1 erased | 0 nothing stored
inline constexpr const char* kRedisErase = R"lua(
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
)lua";

}  // namespace detail
}  // namespace cacheserialize
