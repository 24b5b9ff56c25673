#pragma once

// RedisStorage's acquire and store scripts as they were before commit f825417 (issue 14), which
// packed their arguments into one and moved acquire's hit path first. The keys, the values and
// the fence they read and write did not change, so processes built before and after can share a
// store while a fleet is upgraded; test_redis_versions.cpp runs these next to the current code.
// Kept verbatim: do not edit them to follow the current scripts.

namespace test::redis_before_f825417 {

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
tok = decimal(math.max((tonumber(n) or 0) + 1, now_us()))
redis.call('HSET', KEYS[3], 'n', tok, 'o', ARGV[1], 's', 'l')
reserve(KEYS[2], tok, ARGV[4], ARGV[1], ARGV[2])
if s == 'l' then return {1, tok, corrupt, n, o} end
return {1, tok, corrupt}
)lua";

// KEYS: out res fence at. ARGV: owner, token, channel, origin, output_ttl_ms ('0': none), payload,
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
set_output(KEYS[1], KEYS[4], ARGV[6], ARGV[5])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[3], 's', 's')
redis.call('PUBLISH', ARGV[3], ARGV[4])
return {1}
)lua";

}  // namespace test::redis_before_f825417
