//! Every Lua script Tollgate runs on Redis: the window store's decision and usage, and the
//! tenant registry's write, reads and change-log position. One script per operation, so each
//! is one round trip (EVALSHA; the redis crate reloads the script on NOSCRIPT) and atomic:
//! Redis runs a script without interleaving other commands, which is what makes the window
//! exact across any number of control-plane replicas. `MULTI` could not do this: the
//! admit-or-deny choice depends on the count read inside the same transaction.
//!
//! Window scripts' keys (see [`super::key_layout`]): KEYS[1] window ZSET, KEYS[2] denied
//! ZSET, KEYS[3] usage HASH, KEYS[4] month HASH, KEYS[5] the window's count HASH. Time: ARGV
//! `now_ms` empty means "ask Redis" (`TIME`), so replicas with skewed clocks agree; a number
//! is the caller's clock (for Redis-compatible servers that refuse `TIME` in scripts, and for
//! tests).
//!
//! Each window script is [`PRELUDE`] followed by its body.

/// Helpers shared by the scripts.
///
/// Every `redis.call` costs about as much as the command itself (measured: ~0.6 µs each on
/// the benchmark machine, against 0.1–0.3 µs for most of these commands), so the hot path
/// reads nothing it can learn from a write: `HINCRBY` answers the new total, which tells a
/// minute's or a month's first write from the rest and doubles as the unique member sequence.
pub const PRELUDE: &str = r#"
local function clock(arg)
  local now = tonumber(arg)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Deletes every field of hash `key` for which `stale(field)` holds.
local function drop_fields(key, stale)
  local dropped = {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if stale(field) then dropped[#dropped + 1] = field end
  end
  if #dropped > 0 then redis.call('HDEL', key, unpack(dropped)) end
end

-- Per-minute history: fields `a<minute>` and `d<minute>` (admitted and denied units, minute =
-- ms / 60000) of the usage hash, and `r<minute>` (leased units of the minute handed back,
-- which `a` still counts). Adds `n` to `kind` ('a' or 'd') for the minute of `now` and
-- returns the minute's new total: it only ever grows, so `<now>-<total>` names a unique
-- member. On the minute's first write, fields older than the history are dropped and
-- the hash is set to expire an hour after this minute (relative, since `now` may be the
-- caller's clock rather than Redis's).
local function count_minute(now, kind, n)
  local minute = math.floor(now / 60000)
  local total = redis.call('HINCRBY', KEYS[3], kind .. minute, n)
  if total == n then
    local oldest = minute - 59
    drop_fields(KEYS[3], function(field)
      local m = tonumber(string.sub(field, 2))
      return (not m) or m < oldest
    end)
    redis.call('PEXPIRE', KEYS[3], minute * 60000 + 3660000 - now)
  end
  return total
end

-- Denials are members `<ms>-<minute's denied total>-<count>` of the denied ZSET: one per
-- decision or report, however many requests it stands for. Trimmed here, when it grows;
-- readers count from the window's floor.
local function count_denials(now, window, n)
  if n <= 0 then return end
  local total = count_minute(now, 'd', n)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  redis.call('ZADD', KEYS[2], now, now .. '-' .. total .. '-' .. n)
  redis.call('PEXPIRE', KEYS[2], window)
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

-- The month hash's field for `now`'s month: `<yyyymm>`.
local function month_of(now)
  local y, m = civil(now)
  return tostring(y * 100 + m)
end

-- Month-to-date: adds `n` admitted units to `month` and returns its new total. On the month's
-- first admission, earlier months are dropped and the hash is set to expire in 32 days, after
-- the month ends.
local function count_month(month, n)
  local total = redis.call('HINCRBY', KEYS[4], month, n)
  if total == n then
    drop_fields(KEYS[4], function(field) return field ~= month end)
    redis.call('PEXPIRE', KEYS[4], 2764800000)
  end
  return total
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

-- A window member is a block of units with one stamp (its score): `<ms>-<seq>:<units>` for
-- a decision's admissions, `L<ms>-<seq>:<units>` for a lease (`seq`: the block's first unit's
-- number in its minute, see `count_minute`), so a decision writes a member or two however
-- many units it admits or leases. A member without `:<units>` is one unit (so were all the
-- members an older Tollgate wrote).
local function units_of(member)
  return tonumber(string.match(member, ':(%d+)$')) or 1
end

-- The units and the members of the window's members scored from `min` to `max` (Redis score
-- bounds).
local function units_scored(min, max)
  local names = redis.call('ZRANGEBYSCORE', KEYS[1], min, max)
  local units = 0
  for _, member in ipairs(names) do units = units + units_of(member) end
  return units, #names
end

-- Whether the window's members changed since its count was kept (see `keep_count`).
local count_changed = false

-- The window's units and members, as kept in KEYS[5] so a decision need not add up its
-- members. The kept count is trusted only while the window still has the members it was
-- counted with; otherwise (no count yet, it expired, or another writer changed the window)
-- the members are added up again.
local function window_count()
  local card = redis.call('ZCARD', KEYS[1])
  -- An empty window needs no count kept (a stale one does not match the next member).
  if card == 0 then return 0, 0 end
  local kept = redis.call('HMGET', KEYS[5], 'u', 'm')
  local units, members = tonumber(kept[1]), tonumber(kept[2])
  if units and members == card then return units, card end
  count_changed = true
  return units_scored('-inf', '+inf')
end

-- Keeps the window's count for the next script, if it changed. It expires with the window
-- (`expiry_ms`: the expiry this script gave the window, if it did) or, created without one,
-- a while after a window; either way its expiry only bounds its memory: a count that
-- outlives its window no longer matches the window's members, and one that expires before
-- it is counted again.
local function keep_count(units, members, window, expiry_ms)
  if not count_changed then return end
  local created = redis.call('HSET', KEYS[5], 'u', units, 'm', members) > 0
  if created or expiry_ms then
    redis.call('PEXPIRE', KEYS[5], expiry_ms or (window + 120000))
  end
end

-- Drops the members that left the window from it and from its count (`units`, `members`);
-- returns what remains.
local function trim_window(now, window, units, members)
  if units == members then
    -- Single units only (see `stamp_of_rank`): as many units leave as members.
    local left = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
    if left > 0 then count_changed = true end
    return units - left, members - left
  end
  local gone_units, gone = units_scored('-inf', now - window)
  if gone == 0 then return units, members end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  count_changed = true
  return units - gone_units, members - gone
end

-- The stamp of the window's unit of rank `rank` (0: the oldest). In a window of single
-- units (`single`: as many units as members, which only one unit per member gives) that is
-- the member of that rank; else its members are walked in stamp order a page at a time (the
-- rank is below the asking request's cost, unless the tier was lowered below what the window
-- holds).
local function stamp_of_rank(rank, single)
  if single then
    local member = redis.call('ZRANGE', KEYS[1], rank, rank, 'WITHSCORES')
    return tonumber(member[2])
  end
  local seen, start = 0, 0
  while true do
    local page = redis.call('ZRANGE', KEYS[1], start, start + 127, 'WITHSCORES')
    if #page == 0 then return nil end
    for j = 1, #page, 2 do
      seen = seen + units_of(page[j])
      if seen > rank then return tonumber(page[j + 1]) end
    end
    start = start + 128
  end
end

-- Milliseconds until the oldest member leaves the window (after `trim_window`, it is first).
local function oldest_reset(now, window)
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if oldest[2] then return tonumber(oldest[2]) + window - now end
  return 0
end
"#;

/// Decide a batch of requests of one tenant, in arrival order, exactly as one at a time
/// would: one round trip however many requests (see `window::batches`), and the shared work
/// (trimming, counters, expiries, the oldest member) done once per batch. (With the caller's
/// clock, a replica behind another may find members scored after its `now`; reset and
/// retry-after may then differ from one at a time by at most that skew. Redis `TIME`, the
/// default, has no skew.)
///
/// Leases (see `window::lease`): a request may ask for up to `lease max` requests in all; an
/// admission then counts the extra units at once as one member `L<now>-<first>:<units>` scored
/// at the lease's deadline (`now + lease ttl`), so none leaves the window before a whole
/// window has passed since its real use. A request may also hand back a lease's unused units
/// (the member shrinks by them, or goes), which leave first, and their count with them from
/// the minute and the month they were granted in. A lease's size costs Redis nothing: a
/// member per unit made a hot tenant's lease of thousands of units block Redis, and every
/// other tenant's decisions behind it, for tens of milliseconds.
///
/// ARGV: 1 limit, 2 window ms, 3 now ms or "", 4 monthly limit or "" (none), 5 lease ttl ms,
/// then per request: cost, denials reported by the filter, lease max (≤ 1: none), and a
/// returned lease's granted ms, first sequence, units leased, units returned (all 0: none).
/// Returns, per request: {admitted (0/1), remaining, reset ms, retry-after ms, month remaining
/// (-1: no monthly quota), month reset ms (0 without one), lease extra requests (0: no lease),
/// lease first sequence}, flattened. The lease's stamp is now + ttl and its granted ms is now;
/// `now` ends the reply.
pub const DECIDE: &str = r#"
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = clock(ARGV[3])
local monthly = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local month = month_of(now)
local PER = 7

local used, members = window_count()
-- Returned leases first: their unused units leave the window and the counters. (A lease is
-- handed back once, so its member still has the units it was granted with.)
for i = 6, #ARGV, PER do
  local granted, first = ARGV[i + 3], ARGV[i + 4]
  local granted_ms = tonumber(granted)
  local units, back = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])
  local lease = 'L' .. granted .. '-' .. first .. ':'
  local stamp = back > 0 and redis.call('ZSCORE', KEYS[1], lease .. units)
  if stamp then
    count_changed = true
    local removed = math.min(back, units)
    redis.call('ZREM', KEYS[1], lease .. units)
    used = used - removed
    if removed < units then
      redis.call('ZADD', KEYS[1], stamp, lease .. (units - removed))
    else
      members = members - 1
    end
    -- Counted apart in `r<minute>`, never taken off `a<minute>`: that total names the
    -- window's members, and a total that went back would name a member twice (the second
    -- ZADD only moves it), so the window would lose a block it admitted.
    local minute = math.floor(granted_ms / 60000)
    if redis.call('HEXISTS', KEYS[3], 'a' .. minute) == 1 then
      redis.call('HINCRBY', KEYS[3], 'r' .. minute, removed)
    end
    if month_of(granted_ms) == month and redis.call('HEXISTS', KEYS[4], month) == 1 then
      redis.call('HINCRBY', KEYS[4], month, -removed)
    end
  end
end

used, members = trim_window(now, window, used, members)
local used_before = used
-- Every member one unit (see `stamp_of_rank`), before this call's own.
local single = used == members
local month_used = 0
if monthly then month_used = tonumber(redis.call('HGET', KEYS[4], month)) or 0 end

-- The recent rate (units per ms) that sizes leases, as `window::lease::recent_rate`: the
-- units stamped in the last five seconds over the time since the oldest of them, at least a
-- second and at most five. Read only when a lease is asked for, before this batch's units.
local rate = nil
local function recent_rate()
  if not rate then
    local from = '(' .. (now - 5000)
    local units
    if single then
      units = redis.call('ZCOUNT', KEYS[1], from, '+inf')
    else
      units = units_scored(from, '+inf')
    end
    local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    local span = 1000
    if oldest[2] then span = math.min(5000, math.max(1000, now - tonumber(oldest[2]))) end
    rate = units / span
  end
  return rate
end

-- Per request: admitted, units in the window after it, retry, month used after it, lease.
local outcomes = {}
local admitted_units, leased_units, denied = 0, 0, 0
local retry_of_rank = {}
for i = 6, #ARGV, PER do
  local cost, reported, lease_max = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  denied = denied + reported
  local fits_window = used + cost <= limit
  local fits_month = (not monthly) or (month_used + cost <= monthly)
  local admitted, retry, extra = 0, 0, 0
  if fits_window and fits_month then
    admitted = 1
    used = used + cost
    month_used = month_used + cost
    admitted_units = admitted_units + cost
    if lease_max > 1 and ttl > 0 then
      local room = limit - used
      if monthly then room = math.min(room, monthly - month_used) end
      extra = math.floor(recent_rate() * ttl / cost)
      extra = math.min(extra, lease_max - 1, math.floor(room / 4 / cost))
      if extra < 0 then extra = 0 end
      used = used + extra * cost
      month_used = month_used + extra * cost
      leased_units = leased_units + extra * cost
    end
  else
    denied = denied + 1
    if not fits_window then
      -- The unit whose departure frees enough room: rank (used + cost - limit - 1). A unit
      -- admitted earlier in this batch is not added yet; it would rank after every older one
      -- and leave a whole window from now (and a leased one a lease later).
      local rank = used + cost - limit - 1
      if cost > limit or rank >= used_before then
        retry = window
        if leased_units > 0 then retry = window + ttl end
      else
        if not retry_of_rank[rank] then
          -- (No such unit only if the count ran ahead of the window: retry a window on.)
          retry_of_rank[rank] = (stamp_of_rank(rank, single) or now) + window - now
        end
        retry = retry_of_rank[rank]
      end
    end
    if not fits_month then retry = math.max(retry, until_next_month(now)) end
  end
  outcomes[#outcomes + 1] = {admitted, used, retry, month_used, extra, cost}
end

local all_units = admitted_units + leased_units
local window_expiry = nil
if all_units > 0 then
  local last = count_minute(now, 'a', all_units)
  -- Sequence numbers: the batch's own admissions first, then each lease's block in order; a
  -- block's member is named by its first.
  local seq = last - all_units
  local added = {}
  if admitted_units > 0 then
    -- A single unit needs no count: most members, when decisions come one at a time.
    local name = now .. '-' .. (seq + 1)
    if admitted_units > 1 then name = name .. ':' .. admitted_units end
    added[#added + 1] = now
    added[#added + 1] = name
    seq = seq + admitted_units
  end
  for _, o in ipairs(outcomes) do
    if o[5] > 0 then
      o[7] = seq + 1
      added[#added + 1] = now + ttl
      added[#added + 1] = 'L' .. now .. '-' .. (seq + 1) .. ':' .. o[5] * o[6]
      seq = seq + o[5] * o[6]
    end
  end
  redis.call('ZADD', KEYS[1], unpack(added))
  members = members + #added / 2
  count_changed = true
  -- The window must outlive its newest member by the window. Set on the minute's first
  -- admission to reach a window past the minute's end, it does for every admission of the
  -- minute; and whenever the key is new (trimming deletes an emptied ZSET), so a key never
  -- lacks an expiry. A lease stamped past the minute's end needs longer.
  local minute_end = (math.floor(now / 60000) + 1) * 60000
  if last == all_units or used_before == 0 then
    window_expiry = minute_end - now + window
  end
  if leased_units > 0 and now + ttl > minute_end then
    window_expiry = ttl + window
  end
  if window_expiry then redis.call('PEXPIRE', KEYS[1], window_expiry) end
  -- Kept right after the window changed: Redis does not undo a failed script's writes.
  keep_count(used, members, window, window_expiry)
  count_month(month, all_units)
else
  keep_count(used, members, window, nil)
end
-- The filter's reported denials and this batch's, as one record.
count_denials(now, window, denied)

-- The oldest member is the same for every request that leaves the window non-empty: an old
-- one, or (in a window that was empty) one of this batch, a whole window from now. A denial
-- may already have read it (rank 0).
local reset = 0
if used_before == 0 then
  if used > 0 then reset = window end
else
  reset = retry_of_rank[0] or oldest_reset(now, window)
end
local month_reset = 0
if monthly then month_reset = until_next_month(now) end
local reply = {}
for _, o in ipairs(outcomes) do
  local admitted, used_after, retry, month_after = o[1], o[2], o[3], o[4]
  local month_remaining = -1
  if monthly then month_remaining = math.max(0, monthly - month_after) end
  reply[#reply + 1] = admitted
  reply[#reply + 1] = math.max(0, limit - used_after)
  reply[#reply + 1] = used_after > 0 and reset or 0
  reply[#reply + 1] = retry
  reply[#reply + 1] = month_remaining
  reply[#reply + 1] = month_reset
  reply[#reply + 1] = o[5]
  reply[#reply + 1] = o[7] or 0
end
reply[#reply + 1] = now
return reply
"#;

/// Read a tenant's window and counters, after counting denials the filter reports.
///
/// ARGV: 1 window ms, 2 now ms or "", 3 denials reported by the filter.
/// Returns: {used, denied, reset ms, month-to-date, current minute, leased (units stamped
/// after now: leases still running), then admitted and denied for each of the last 60
/// minutes, oldest first}.
pub const USAGE: &str = r#"
local window = tonumber(ARGV[1])
local now = clock(ARGV[2])
count_denials(now, window, tonumber(ARGV[3]) or 0)
local used, members = window_count()
used, members = trim_window(now, window, used, members)
keep_count(used, members, window, nil)
local denied = denied_since('(' .. (now - window))
local month_to_date = tonumber(redis.call('HGET', KEYS[4], month_of(now))) or 0

local minute = math.floor(now / 60000)
local leased = units_scored('(' .. now, '+inf')
local result = {used, denied, oldest_reset(now, window), month_to_date, minute, leased}
local fields = {}
for m = minute - 59, minute do
  fields[#fields + 1] = 'a' .. m
  fields[#fields + 1] = 'r' .. m
  fields[#fields + 1] = 'd' .. m
end
local counts = redis.call('HMGET', KEYS[3], unpack(fields))
for i = 1, #fields, 3 do
  local admitted = (tonumber(counts[i]) or 0) - (tonumber(counts[i + 1]) or 0)
  result[#result + 1] = math.max(admitted, 0)
  result[#result + 1] = tonumber(counts[i + 2]) or 0
end
return result
"#;

/// The tenant registry's write: stores a tenant record only if the stored one is still the
/// one read (absent: empty), keeps every index in step with it, bumps the registry's version
/// and appends the change to the change log, in one atomic step: two replicas changing one
/// tenant never overwrite each other, and no replica can see a record without its indexes, or
/// a version without its change.
///
/// KEYS: see `key_layout::REGISTRY_WRITE_KEYS` (1 records, 2 key hashes, 3 Stripe ids, 4 ids,
/// 5 tier counts, 6 linked, 7 needs-sync, 8 version, 9 change log, 10 key filter).
/// ARGV: 1 tenant id, 2 record read ('' none), 3 new record, 4 tier before ('' none), 5 tier
/// after, 6 linked (0/1), 7 needs sync (0/1), 8 change-log length, then five lists, each its
/// length followed by its items: key hashes removed, key hashes added, Stripe ids removed,
/// Stripe ids added, key-filter bit offsets to set.
/// Returns the new registry version, or 0 when another writer came first.
pub const REGISTRY_WRITE: &str = r"
local id = ARGV[1]
if (redis.call('HGET', KEYS[1], id) or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], id, ARGV[3])
local at = 9
local function list()
  local n, items = tonumber(ARGV[at]), {}
  for j = 1, n do items[j] = ARGV[at + j] end
  at = at + n + 1
  return items
end
local keys_removed, keys_added = list(), list()
local stripe_removed, stripe_added = list(), list()
local bits = list()
-- An index entry is dropped only if it still names this tenant.
for _, k in ipairs(keys_removed) do
  if redis.call('HGET', KEYS[2], k) == id then redis.call('HDEL', KEYS[2], k) end
end
for _, k in ipairs(keys_added) do redis.call('HSET', KEYS[2], k, id) end
for _, s in ipairs(stripe_removed) do
  if redis.call('HGET', KEYS[3], s) == id then redis.call('HDEL', KEYS[3], s) end
end
for _, s in ipairs(stripe_added) do redis.call('HSET', KEYS[3], s, id) end
if ARGV[2] == '' then redis.call('ZADD', KEYS[4], 0, id) end
if ARGV[4] ~= ARGV[5] then
  if ARGV[4] ~= '' and redis.call('HINCRBY', KEYS[5], ARGV[4], -1) <= 0 then
    redis.call('HDEL', KEYS[5], ARGV[4])
  end
  redis.call('HINCRBY', KEYS[5], ARGV[5], 1)
end
if ARGV[6] == '1' then redis.call('SADD', KEYS[6], id) else redis.call('SREM', KEYS[6], id) end
if ARGV[7] == '1' then redis.call('SADD', KEYS[7], id) else redis.call('SREM', KEYS[7], id) end
for _, b in ipairs(bits) do redis.call('SETBIT', KEYS[10], b, 1) end
local version = redis.call('INCR', KEYS[8])
redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[8], '*',
  'v', version, 'id', id, 'r', ARGV[3], 'tb', ARGV[4])
return version
";

/// The tenant a key hash belongs to, in one round trip (a replica's cache miss).
///
/// KEYS[1] key hashes, KEYS[2] records, KEYS[3] version. ARGV[1] the key hash.
/// Returns {version, record} or {version} when no tenant has the key: the version the answer
/// is as of, so a replica never caches an answer older than a change it already applied.
pub const REGISTRY_BY_KEY: &str = r"
local version = redis.call('GET', KEYS[3]) or '0'
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return {version} end
return {version, redis.call('HGET', KEYS[2], id)}
";

/// Records by id, with the version they are as of.
///
/// KEYS[1] records, KEYS[2] version. ARGV: tenant ids (at most a thousand).
/// Returns {version, record or nil per id}.
pub const REGISTRY_READ: &str = r"
local reply = {redis.call('GET', KEYS[2]) or '0'}
if #ARGV > 0 then
  local records = redis.call('HMGET', KEYS[1], unpack(ARGV))
  for i = 1, #ARGV do reply[i + 1] = records[i] end
end
return reply
";

/// One page of tenants in id order, after a cursor (the last id of the page before).
///
/// KEYS[1] ids, KEYS[2] records. ARGV: 1 the cursor ('' from the start), 2 page size.
/// Returns {id, record, id, record, ...}.
pub const REGISTRY_PAGE: &str = r"
local from = '-'
if ARGV[1] ~= '' then from = '(' .. ARGV[1] end
local ids = redis.call('ZRANGEBYLEX', KEYS[1], from, '+', 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then return {} end
local records = redis.call('HMGET', KEYS[2], unpack(ids))
local reply = {}
for i, id in ipairs(ids) do
  reply[#reply + 1] = id
  reply[#reply + 1] = records[i]
end
return reply
";

/// Where the change log stands, for a replica attaching to it: the registry's version, the
/// id of the log's last entry (the change of that version) and the tier counts, as of one
/// instant.
///
/// KEYS[1] version, KEYS[2] change log, KEYS[3] tier counts.
/// Returns {version, last entry id ('0-0': none), tier, count, tier, count, ...}.
pub const REGISTRY_POSITION: &str = r"
local version = redis.call('GET', KEYS[1]) or '0'
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local reply = {version, '0-0'}
if last[1] then reply[2] = last[1][1] end
for _, field in ipairs(redis.call('HGETALL', KEYS[3])) do reply[#reply + 1] = field end
return reply
";
