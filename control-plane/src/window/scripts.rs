//! The Lua scripts of the Redis window store. One script per operation, so each is one round
//! trip (EVALSHA; the redis crate reloads the script on NOSCRIPT) and atomic: Redis runs a
//! script without interleaving other commands, which is what makes the window exact across
//! any number of control-plane replicas. `MULTI` could not do this: the admit-or-deny choice
//! depends on the count read inside the same transaction.
//!
//! Time: ARGV `now_ms` empty means "ask Redis" (`TIME`), so replicas with skewed clocks agree;
//! a number is the caller's clock (for Redis-compatible servers that refuse `TIME` in scripts,
//! and for tests).

/// Decide one request.
///
/// KEYS: 1 window ZSET, 2 denied ZSET, 3 usage HASH, 4 month HASH (see `redis_keys`).
/// ARGV: 1 limit, 2 window ms, 3 cost, 4 now ms or "".
/// Returns: {admitted (0/1), remaining, reset ms, retry-after ms}.
pub const DECIDE: &str = r#"
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local cutoff = now - window
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
local used = redis.call('ZCARD', KEYS[1])

-- Members must be unique: a timestamp alone would collapse concurrent requests into one
-- member and over-admit. The sequence lives in the usage hash, which outlives the window.
local admitted, retry = 0, 0
if used + cost <= limit then
  local last = redis.call('HINCRBY', KEYS[3], 'seq', cost)
  local batch = {}
  for i = 1, cost do
    batch[#batch + 1] = now
    batch[#batch + 1] = now .. '-' .. (last - cost + i)
    if #batch >= 1000 or i == cost then
      redis.call('ZADD', KEYS[1], unpack(batch))
      batch = {}
    end
  end
  used = used + cost
  admitted = 1
else
  local seq = redis.call('HINCRBY', KEYS[3], 'seq', 1)
  redis.call('ZADD', KEYS[2], now, now .. '-' .. seq)
  if cost > limit then
    retry = window
  else
    -- The unit whose departure frees enough room: rank (used + cost - limit - 1).
    local rank = used + cost - limit - 1
    local freeing = redis.call('ZRANGE', KEYS[1], rank, rank, 'WITHSCORES')
    retry = tonumber(freeing[2]) + window - now
  end
end

local reset = 0
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
if used > 0 then redis.call('PEXPIRE', KEYS[1], window) end
redis.call('PEXPIRE', KEYS[2], window)

-- Per-minute history: a ring of 60 slots, each stamped with the minute it counts.
local minute = math.floor(now / 60000)
local slot = minute % 60
if redis.call('HGET', KEYS[3], 'm' .. slot) ~= tostring(minute) then
  redis.call('HSET', KEYS[3], 'm' .. slot, minute, 'a' .. slot, 0, 'd' .. slot, 0)
end
if admitted == 1 then
  redis.call('HINCRBY', KEYS[3], 'a' .. slot, cost)
else
  redis.call('HINCRBY', KEYS[3], 'd' .. slot, 1)
end
redis.call('PEXPIRE', KEYS[3], 3660000)

-- Month to date (UTC), from days since the epoch (Howard Hinnant's civil_from_days).
if admitted == 1 then
  local z = math.floor(now / 86400000) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  local month = tostring(y * 100 + m)
  if redis.call('HGET', KEYS[4], 'month') ~= month then
    redis.call('HSET', KEYS[4], 'month', month, 'admitted', 0)
  end
  redis.call('HINCRBY', KEYS[4], 'admitted', cost)
  redis.call('PEXPIRE', KEYS[4], 2764800000)
end

local remaining = limit - used
if remaining < 0 then remaining = 0 end
return {admitted, remaining, reset, retry}
"#;

/// Read a tenant's window and counters without changing them.
///
/// KEYS: 1 window ZSET, 2 denied ZSET, 3 usage HASH, 4 month HASH.
/// ARGV: 1 window ms, 2 now ms or "".
/// Returns: {used, denied, reset ms, month-to-date, current minute, then admitted and denied
/// for each of the last 60 minutes, oldest first}.
pub const USAGE: &str = r#"
local window = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local floor = '(' .. (now - window)
local used = redis.call('ZCOUNT', KEYS[1], floor, '+inf')
local denied = redis.call('ZCOUNT', KEYS[2], floor, '+inf')
local reset = 0
local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], floor, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if oldest[2] then reset = tonumber(oldest[2]) + window - now end

-- Same month arithmetic as DECIDE.
local z = math.floor(now / 86400000) + 719468
local era = math.floor(z / 146097)
local doe = z - era * 146097
local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
local mp = math.floor((5 * doy + 2) / 153)
local m = mp < 10 and mp + 3 or mp - 9
local y = yoe + era * 400 + (m <= 2 and 1 or 0)
local month = redis.call('HMGET', KEYS[4], 'month', 'admitted')
local month_to_date = 0
if month[1] == tostring(y * 100 + m) then month_to_date = tonumber(month[2]) end

local minute = math.floor(now / 60000)
local result = {used, denied, reset, month_to_date, minute}
local fields = {}
for i = 59, 0, -1 do
  local slot = (minute - i) % 60
  fields[#fields + 1] = 'm' .. slot
  fields[#fields + 1] = 'a' .. slot
  fields[#fields + 1] = 'd' .. slot
end
local ring = redis.call('HMGET', KEYS[3], unpack(fields))
for i = 0, 59 do
  local stamp, a, d = ring[3 * i + 1], ring[3 * i + 2], ring[3 * i + 3]
  if stamp == tostring(minute - 59 + i) then
    result[#result + 1] = tonumber(a)
    result[#result + 1] = tonumber(d)
  else
    result[#result + 1] = 0
    result[#result + 1] = 0
  end
end
return result
"#;
