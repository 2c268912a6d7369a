//! The Lua scripts of the Redis window store. One script per operation, so each is one round
//! trip (EVALSHA; the redis crate reloads the script on NOSCRIPT) and atomic: Redis runs a
//! script without interleaving other commands, which is what makes the window exact across
//! any number of control-plane replicas. `MULTI` could not do this: the admit-or-deny choice
//! depends on the count read inside the same transaction.
//!
//! Keys (see `redis_keys`): KEYS[1] window ZSET, KEYS[2] denied ZSET, KEYS[3] usage HASH,
//! KEYS[4] month HASH. Time: ARGV `now_ms` empty means "ask Redis" (`TIME`), so replicas with
//! skewed clocks agree; a number is the caller's clock (for Redis-compatible servers that
//! refuse `TIME` in scripts, and for tests).
//!
//! Each script is [`PRELUDE`] followed by its body.

/// Helpers shared by the scripts.
pub const PRELUDE: &str = r#"
local function clock(arg)
  local now = tonumber(arg)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Members must be unique: a timestamp alone would collapse concurrent requests into one
-- member. The sequence lives in the usage hash, which outlives the window.
local function next_seq(n)
  return redis.call('HINCRBY', KEYS[3], 'seq', n)
end

-- Per-minute history: a ring of 60 slots, each stamped with the minute it counts. The hash
-- expires 61 minutes after the start of the latest minute written, so it outlives every
-- request by an hour; setting that once per minute rather than per decision saves a command
-- on the hot path.
local function count_minute(now, admitted, denied)
  local minute = math.floor(now / 60000)
  local slot = minute % 60
  if redis.call('HGET', KEYS[3], 'm' .. slot) ~= tostring(minute) then
    redis.call('HSET', KEYS[3], 'm' .. slot, minute, 'a' .. slot, 0, 'd' .. slot, 0)
    -- Relative, since `now` may be the caller's clock rather than Redis's.
    redis.call('PEXPIRE', KEYS[3], minute * 60000 + 3660000 - now)
  end
  if admitted > 0 then redis.call('HINCRBY', KEYS[3], 'a' .. slot, admitted) end
  if denied > 0 then redis.call('HINCRBY', KEYS[3], 'd' .. slot, denied) end
end

-- Denials are members `<ms>-<seq>-<count>` of the denied ZSET: one per decision or report,
-- however many requests it stands for.
local function count_denials(now, window, n)
  if n <= 0 then return end
  redis.call('ZADD', KEYS[2], now, now .. '-' .. next_seq(1) .. '-' .. n)
  redis.call('PEXPIRE', KEYS[2], window)
  count_minute(now, 0, n)
end

local function denied_since(floor)
  local total = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], floor, '+inf')) do
    total = total + tonumber(string.match(member, '(%d+)$'))
  end
  return total
end

-- The UTC year and month of `now`, from days since the epoch (Howard Hinnant's
-- civil_from_days), the same arithmetic as `window::month_of`.
local function civil(now)
  local z = math.floor(now / 86400000) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  return yoe + era * 400 + (m <= 2 and 1 or 0), m
end

local function month_of(now)
  local y, m = civil(now)
  return tostring(y * 100 + m)
end

-- Milliseconds until the next month starts (days_from_civil), as `window::ms_until_next_month`.
local function until_next_month(now)
  local y, m = civil(now)
  if m == 12 then y, m = y + 1, 1 else m = m + 1 end
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5)
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return (era * 146097 + doe - 719468) * 86400000 - now
end

local function oldest_reset(now, window)
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - window), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if oldest[2] then return tonumber(oldest[2]) + window - now end
  return 0
end
"#;

/// Decide one request.
///
/// ARGV: 1 limit, 2 window ms, 3 cost, 4 now ms or "", 5 denials reported by the filter,
/// 6 monthly limit or "" (none).
/// Returns: {admitted (0/1), remaining, reset ms, retry-after ms, month remaining (-1: no
/// monthly quota), month reset ms}.
pub const DECIDE: &str = r#"
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = clock(ARGV[4])
local cutoff = now - window
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
count_denials(now, window, tonumber(ARGV[5]) or 0)
local used = redis.call('ZCARD', KEYS[1])
local monthly = tonumber(ARGV[6])
local month = month_of(now)
local stored = redis.call('HMGET', KEYS[4], 'month', 'admitted')
local month_used = 0
if stored[1] == month then month_used = tonumber(stored[2]) end
local fits_window = used + cost <= limit
local fits_month = (not monthly) or (month_used + cost <= monthly)

local admitted, retry = 0, 0
if fits_window and fits_month then
  local last = next_seq(cost)
  local batch = {}
  for i = 1, cost do
    batch[#batch + 1] = now
    batch[#batch + 1] = now .. '-' .. (last - cost + i)
    if #batch >= 1000 or i == cost then
      redis.call('ZADD', KEYS[1], unpack(batch))
      batch = {}
    end
  end
  redis.call('PEXPIRE', KEYS[1], window)
  used = used + cost
  admitted = 1
  count_minute(now, cost, 0)
  -- The month hash expires 32 days after its month's first admission, which is after the
  -- month ends; set once per month, not per decision.
  if stored[1] ~= month then
    redis.call('HSET', KEYS[4], 'month', month, 'admitted', 0)
    redis.call('PEXPIRE', KEYS[4], 2764800000)
  end
  month_used = redis.call('HINCRBY', KEYS[4], 'admitted', cost)
else
  count_denials(now, window, 1)
  if not fits_window then
    if cost > limit then
      retry = window
    else
      -- The unit whose departure frees enough room: rank (used + cost - limit - 1).
      local rank = used + cost - limit - 1
      local freeing = redis.call('ZRANGE', KEYS[1], rank, rank, 'WITHSCORES')
      retry = tonumber(freeing[2]) + window - now
    end
  end
  if not fits_month then retry = math.max(retry, until_next_month(now)) end
end

local remaining = limit - used
if remaining < 0 then remaining = 0 end
local month_remaining = -1
if monthly then month_remaining = math.max(0, monthly - month_used) end
return {admitted, remaining, oldest_reset(now, window), retry, month_remaining, until_next_month(now)}
"#;

/// Read a tenant's window and counters, after counting denials the filter reports.
///
/// ARGV: 1 window ms, 2 now ms or "", 3 denials reported by the filter.
/// Returns: {used, denied, reset ms, month-to-date, current minute, then admitted and denied
/// for each of the last 60 minutes, oldest first}.
pub const USAGE: &str = r#"
local window = tonumber(ARGV[1])
local now = clock(ARGV[2])
count_denials(now, window, tonumber(ARGV[3]) or 0)
local floor = '(' .. (now - window)
local used = redis.call('ZCOUNT', KEYS[1], floor, '+inf')
local denied = denied_since(floor)

local month = redis.call('HMGET', KEYS[4], 'month', 'admitted')
local month_to_date = 0
if month[1] == month_of(now) then month_to_date = tonumber(month[2]) end

local minute = math.floor(now / 60000)
local result = {used, denied, oldest_reset(now, window), month_to_date, minute}
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
