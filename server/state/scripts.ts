// The Lua scripts that keep ZViz's shared state consistent. Each runs atomically in Redis,
// so hosts racing for the same tenant's slots see one order of events. Every script that
// needs a clock takes `now` in ms as ARGV[1]; an empty string means Redis's own TIME, which
// is what production passes (one clock for all hosts), and tests pass fixed values.
//
// Redis numbers in Lua are doubles: ms timestamps (~1.8e12) and bucket indexes are exact.

const NOW = `
local function now_ms()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local now = now_ms()
`;

// The CPU window is kept as CPU_BUCKETS buckets of charged ms in one hash; field `bs` holds
// the bucket length, so a changed window starts a fresh hash instead of misreading old ones.
const CPU_BUCKETS = 20;
const CPU_WINDOW = `
local function cpu_window(key, window_ms)
  local bs = math.max(1, math.ceil(window_ms / ${CPU_BUCKETS}))
  local raw = redis.call('HGETALL', key)
  local used, total = {}, 0
  local newest = math.floor(now / bs)
  local oldest = newest - ${CPU_BUCKETS} + 1
  local stored_bs = nil
  for i = 1, #raw, 2 do
    if raw[i] == 'bs' then stored_bs = tonumber(raw[i + 1]) end
  end
  if stored_bs ~= nil and stored_bs ~= bs then
    redis.call('DEL', key)
    return bs, oldest, used, 0
  end
  for i = 1, #raw, 2 do
    if raw[i] ~= 'bs' then
      local b = tonumber(raw[i])
      if b == nil or b < oldest then
        redis.call('HDEL', key, raw[i])
      else
        local ms = tonumber(raw[i + 1])
        used[b] = ms
        total = total + ms
      end
    end
  end
  return bs, oldest, used, total
end
`;

/**
 * Admits one invocation or says which quota refuses it. Checks concurrency, then rate, then
 * CPU, and changes nothing unless all three pass, so a refused call costs no token.
 *
 * KEYS: leases (zset leaseId → expiry ms), rate (GCRA theoretical arrival time), cpu (hash)
 * ARGV: now, leaseId, leaseTtlMs, concurrency, invocationsPerMinute, cpuBudgetMs, cpuWindowMs
 * Returns { 'ok', 0, inFlight } or { quota, retryAfterMs, used } with quota one of
 * 'concurrency' | 'rate' | 'cpu'.
 */
export const ACQUIRE = `${NOW}${CPU_WINDOW}
local ttl = tonumber(ARGV[3])

-- Concurrency: leases past their expiry belong to hosts that died or lost Redis.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local in_flight = redis.call('ZCARD', KEYS[1])
if in_flight >= tonumber(ARGV[4]) then
  -- A slot frees when some invocation ends; that cannot be known, so ask again soon.
  return { 'concurrency', 1000, in_flight }
end

-- Rate: GCRA, a token bucket of invocationsPerMinute tokens refilled over 60 s.
local period = 60000
local interval = period / tonumber(ARGV[5])
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
-- Half a ms of tolerance: the stored TAT is rounded, and that must not cost a burst its last token.
if allow_at - now > 0.5 then
  return { 'rate', math.ceil(allow_at - now), tonumber(ARGV[5]) }
end

-- CPU: the sum of the window's buckets must be under the budget.
local budget = tonumber(ARGV[6])
local bs, oldest, used, total = cpu_window(KEYS[3], tonumber(ARGV[7]))
if total >= budget then
  -- The call may run again once enough old buckets leave the window.
  local remaining = total
  local retry = tonumber(ARGV[7])
  for b = oldest, oldest + ${CPU_BUCKETS} - 1 do
    remaining = remaining - (used[b] or 0)
    if remaining < budget then
      retry = (b + ${CPU_BUCKETS}) * bs - now
      break
    end
  end
  return { 'cpu', math.max(1, math.ceil(retry)), total }
end

redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('SET', KEYS[2], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
return { 'ok', 0, in_flight + 1 }
`;

/**
 * Ends a lease and charges its CPU. Charging does not depend on the lease still existing:
 * CPU that was used is owed even when the lease expired meanwhile. It happens once per
 * lease: a release the client gave up on (command timeout) still runs when a paused Redis
 * resumes, and so does the client's retry of it, so each released id is remembered for
 * `keepMs` and a second release of it charges nothing.
 *
 * KEYS: leases, cpu, released (zset leaseId → release time)
 * ARGV: now, leaseId, cpuMs, cpuWindowMs, keepMs
 * Returns 1 when the lease was still held, 0 when it had expired or was released already.
 */
export const RELEASE = `${NOW}${CPU_WINDOW}
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[2])
local held = 0
if expiry and tonumber(expiry) > now then held = 1 end
local keep = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - keep)
if redis.call('ZSCORE', KEYS[3], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[3], now, ARGV[2])
redis.call('PEXPIRE', KEYS[3], keep)
local cpu = math.ceil(tonumber(ARGV[3]))
if cpu > 0 then
  local window = tonumber(ARGV[4])
  local bs = cpu_window(KEYS[2], window)
  redis.call('HSET', KEYS[2], 'bs', bs)
  redis.call('HINCRBY', KEYS[2], tostring(math.floor(now / bs)), cpu)
  redis.call('PEXPIRE', KEYS[2], window + bs)
end
return held
`;

/**
 * Extends a held lease. A lease that already expired is not brought back: its slot may be
 * someone else's by now.
 *
 * KEYS: leases   ARGV: now, leaseId, leaseTtlMs
 * Returns 1 when extended, 0 when the lease is gone.
 */
export const REFRESH = `${NOW}
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not expiry then return 0 end
if tonumber(expiry) <= now then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return 0
end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
`;

/**
 * What a tenant uses now (read-only apart from dropping expired entries).
 *
 * KEYS: leases, cpu   ARGV: now, cpuWindowMs
 * Returns { inFlight, cpuMsInWindow }.
 */
export const USAGE = `${NOW}${CPU_WINDOW}
local in_flight = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local _, _, _, total = cpu_window(KEYS[2], tonumber(ARGV[2]))
return { in_flight, total }
`;

/**
 * Creates a tenant unless the name is taken.
 *
 * KEYS: tenant hash, key index (apikey:<keyId> → name), tenant set
 * ARGV: name, quotas JSON, keyId, keyHash, now ISO
 * Returns 1 when created, 0 when the name exists.
 */
export const TENANT_CREATE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'status', 'active', 'quotas', ARGV[2],
  'keyId', ARGV[3], 'keyHash', ARGV[4], 'createdAt', ARGV[5], 'updatedAt', ARGV[5])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
`;

/**
 * The tenant whose current key has this id, in one round trip whether or not it exists, so
 * the time to answer says nothing about which.
 *
 * KEYS: key index   ARGV: tenant key prefix
 * Returns the tenant hash as a flat list, or an empty list.
 */
export const TENANT_BY_KEY = `
local name = redis.call('GET', KEYS[1])
if not name then return {} end
return redis.call('HGETALL', ARGV[1] .. name)
`;

/**
 * Replaces a tenant's key: the old key's index entry goes in the same step.
 *
 * KEYS: tenant hash, new key index   ARGV: key index prefix, name, keyId, keyHash, now ISO
 * Returns 1, or 0 when there is no such tenant.
 */
export const TENANT_ROTATE = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local old = redis.call('HGET', KEYS[1], 'keyId')
if old then redis.call('DEL', ARGV[1] .. old) end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'keyId', ARGV[3], 'keyHash', ARGV[4], 'updatedAt', ARGV[5])
return 1
`;

/**
 * Sets fields of an existing tenant (quotas or status).
 *
 * KEYS: tenant hash   ARGV: now ISO, field, value[, field, value]
 * Returns 1, or 0 when there is no such tenant.
 */
export const TENANT_SET = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local args = { 'updatedAt', ARGV[1] }
for i = 2, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(args))
return 1
`;

/**
 * Appends one audit record to the global stream and, with the same id, to its tenant's,
 * each capped near maxLen.
 *
 * KEYS: global stream, tenant stream   ARGV: maxLen, record JSON, '1' when the tenant stream applies
 * Returns the record's stream id.
 */
export const AUDIT_APPEND = `
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'r', ARGV[2])
if ARGV[3] == '1' then
  -- The same id keeps one cursor valid in both streams; it can only fail if the tenant
  -- stream somehow got ahead of the global one, and then the record still gets its own id.
  local ok = pcall(redis.call, 'XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id, 'r', ARGV[2])
  if not ok then redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'r', ARGV[2]) end
end
return id
`;

/**
 * Stores a new version of a function. Version numbers come from a per-tenant counter that
 * survives deletes, so a number names one content forever (caches and warm pools key on
 * it). Keeps the last `keep` versions' code.
 *
 * KEYS: function hash, tenant's name set, tenant's version counters (hash)
 * ARGV: version key prefix, name, meta JSON, version JSON, digest, '1' to skip an unchanged
 *       deploy, keep, max functions per tenant, now ISO
 * Returns { 'created', version, createdAt } or { 'unchanged', latest, createdAt } or
 * { 'too-many', count }.
 */
export const FN_PUT = `
local exists = redis.call('EXISTS', KEYS[1]) == 1
if exists and ARGV[6] == '1' and redis.call('HGET', KEYS[1], 'digest') == ARGV[5] then
  return { 'unchanged', tonumber(redis.call('HGET', KEYS[1], 'latest')), redis.call('HGET', KEYS[1], 'createdAt') }
end
if not exists then
  local n = redis.call('SCARD', KEYS[2])
  if n >= tonumber(ARGV[8]) then return { 'too-many', n } end
  redis.call('HSET', KEYS[1], 'createdAt', ARGV[9])
end
local v = redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
redis.call('SET', ARGV[1] .. v, ARGV[4])
redis.call('HSET', KEYS[1], 'latest', v, 'meta', ARGV[3], 'digest', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[2])
local old = v - tonumber(ARGV[7])
if old >= 1 then redis.call('DEL', ARGV[1] .. old) end
return { 'created', v, redis.call('HGET', KEYS[1], 'createdAt') }
`;

/**
 * Deletes a function and the code of its kept versions. Its version counter stays.
 *
 * KEYS: function hash, tenant's name set   ARGV: version key prefix, name, keep
 * Returns 1, or 0 when there was no such function.
 */
export const FN_DELETE = `
local latest = tonumber(redis.call('HGET', KEYS[1], 'latest'))
redis.call('SREM', KEYS[2], ARGV[2])
if latest == nil then return 0 end
for v = math.max(1, latest - tonumber(ARGV[3]) + 1), latest do redis.call('DEL', ARGV[1] .. v) end
redis.call('DEL', KEYS[1])
return 1
`;

/**
 * At start-up: the async invocations a previous run of this host left 'running' can never
 * end; mark them failed. Entries of the current run (same boot id) are left alone, so
 * this may run while the server already takes work.
 *
 * KEYS: the host's index (hash '<tenant>:<id>' → boot id)
 * ARGV: current boot id, invocation key prefix, failure message (the record keeps its TTL)
 * Returns how many records were marked.
 */
export const INV_RECOVER = `
local entries = redis.call('HGETALL', KEYS[1])
local marked = 0
for i = 1, #entries, 2 do
  if entries[i + 1] ~= ARGV[1] then
    local key = ARGV[2] .. entries[i]
    local raw = redis.call('GET', key)
    if raw then
      local ok, rec = pcall(cjson.decode, raw)
      if ok and type(rec) == 'table' and rec.status == 'running' then
        local failed = cjson.encode({ id = rec.id, status = 'failed', reason = 'host-restart',
          error = { code = 'SANDBOX_UNAVAILABLE', message = ARGV[3] } })
        redis.call('SET', key, failed, 'KEEPTTL')
        marked = marked + 1
      end
    end
    redis.call('HDEL', KEYS[1], entries[i])
  end
end
return marked
`;
