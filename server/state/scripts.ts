// The Lua scripts that keep ZViz's shared state consistent. Each runs atomically in Redis,
// so hosts racing for the same tenant's slots see one order of events. Each declares in KEYS
// every key it touches (Redis's rule: a Cluster routes a script by them alone), and all of
// them are keys of one tenant (hash-tagged `zviz:{tenant}…`), so it runs on Redis Cluster too.
//
// The hot path is two scripts per invocation, and few commands inside them (INFO
// commandstats counts both): ADMIT (HGETALL + HSET of the tenant hash, and for a deployed
// function an HGET of its latest version) and RELEASE (HSETNX of the tenant hash + XADD per
// audit record). Everything a tenant's admission needs is in
// its one hash `zviz:{tenant}`:
//
//   name status quotas keyId keyHash createdAt updatedAt   the tenant record
//   tat                                                    GCRA theoretical arrival time (rate)
//   l:<lease>  "<expiry ms>|<host id>|<boot id>"           a lease (concurrency)
//   r:<lease>  "<cpu ms>|<released at>"                    its release, CPU not yet folded
//   r:<lease>  "f|<folded at>"                             its release, CPU folded into a bucket
//   c:<bs>:<n> ms                                          CPU charged in bucket n of length bs
//
// A lease is in flight while its l: field has not expired and it has no r: field. RELEASE
// only adds r: with HSETNX, so a second release of a lease (a retry of a release that did
// run) changes nothing and charges nothing. ADMIT, which reads the whole hash anyway, folds
// released CPU into the buckets in the HSET it makes anyway, and once enough fields are stale
// (gone out of the window, or released longer ago than any retry) deletes them in one HDEL.
//
// Every script takes `now` in ms as ARGV[1]: the server's estimate of Redis's clock
// (RedisClock in ./redis.ts: one clock for all hosts, without a TIME command per call).
// Redis numbers in Lua are doubles: ms timestamps (~1.8e12) and bucket indexes are exact.

const CPU_BUCKETS = 20;

/**
 * How long a released or expired lease's fields stay, so a repeated release charges nothing.
 * Longer than a release's retries take to be sent (server/tenancy/quotas.ts: 1 + 2 + 4 + 8 +
 * 16 s, plus up to six 2 s command timeouts: 43 s); what a paused Redis queued runs in one
 * burst when it resumes, so a pause does not stretch it. The tenant hash holds about two
 * fields per invocation of this long, and ADMIT reads them all: the cost of an admission grows
 * with the tenant's invocation rate (docs/TENANTS.md).
 */
export const RELEASED_KEEP_MS = 60_000;
/** At most this many values go to one command from a script (Lua's unpack limit is 8000). */
const CHUNK = 4000;
/** Released charges are folded into buckets once this many wait; stale fields go once this many exist. */
const FOLD_AT = 16;
const SWEEP_AT = 16;

// Reads the tenant hash into `h` (record fields), `leases`, `released` and the CPU window.
const CHUNKED = `
local function chunked(cmd, key, list)
  for i = 1, #list, ${CHUNK} do
    redis.call(cmd, key, unpack(list, i, math.min(i + ${CHUNK} - 1, #list)))
  end
end
`;

const READ = `${CHUNKED}
local now = tonumber(ARGV[1])
local raw = redis.call('HGETALL', KEYS[1])
local function split(v)
  local a, b = string.match(v, '^([^|]*)|(.*)$')
  return a, b
end
local h, leases, released, buckets = {}, {}, {}, {}
for i = 1, #raw, 2 do
  local f, v = raw[i], raw[i + 1]
  local p = string.sub(f, 1, 2)
  if p == 'l:' then leases[string.sub(f, 3)] = v
  elseif p == 'r:' then released[string.sub(f, 3)] = v
  elseif p == 'c:' then buckets[f] = tonumber(v)
  else h[f] = v end
end
local function cpu_window(window_ms)
  local bs = math.max(1, math.ceil(window_ms / ${CPU_BUCKETS}))
  local newest = math.floor(now / bs)
  local oldest = newest - ${CPU_BUCKETS} + 1
  local used, total, stale, unfolded = {}, 0, {}, {}
  local prefix = 'c:' .. bs .. ':'
  for f, ms in pairs(buckets) do
    local b = nil
    if string.sub(f, 1, #prefix) == prefix then b = tonumber(string.sub(f, #prefix + 1)) end
    if b == nil or b < oldest then
      stale[#stale + 1] = f
    else
      used[b] = (used[b] or 0) + ms
      total = total + ms
    end
  end
  for id, v in pairs(released) do
    local cpu, at = split(v)
    if cpu ~= 'f' and cpu ~= nil then
      local b = math.floor(tonumber(at) / bs)
      unfolded[#unfolded + 1] = { id, tonumber(cpu), b }
      if b >= oldest then
        used[b] = (used[b] or 0) + tonumber(cpu)
        total = total + tonumber(cpu)
      end
    end
  end
  return bs, oldest, used, total, stale, unfolded
end
local function in_flight_count()
  local n = 0
  for id, v in pairs(leases) do
    local expiry = tonumber((split(v)))
    if released[id] == nil and expiry ~= nil and expiry > now then n = n + 1 end
  end
  return n
end
`;

/**
 * Admits one invocation: checks that the key is still the tenant's current one and the
 * tenant active, then concurrency, rate and CPU, and changes nothing unless all pass, so a
 * refused call costs no token. The quotas are the hash's own, so a change applies at once.
 *
 * KEYS: tenant hash   ARGV: now, leaseId, leaseTtlMs, keyId, host id, boot id
 * Returns { 'ok', 0, inFlight } or { refusal, retryAfterMs, used } with refusal one of
 * 'key' (unknown tenant, rotated key, disabled tenant) | 'concurrency' | 'rate' | 'cpu'.
 */
export const ADMIT = `${READ}
if h.name == nil or h.keyId ~= ARGV[4] or h.status ~= 'active' then return { 'key', 0, 0 } end
-- A deployed function prepared from the server's memory of its latest version (ARGV[7];
-- '' for anything else) runs only while that is still the latest (KEYS[2], the function's
-- hash): a redeploy or a delete on any host is seen by the next admission, and nothing has
-- been taken yet when it is refused.
if ARGV[7] ~= '' then
  local latest = redis.call('HGET', KEYS[2], 'latest')
  if latest ~= ARGV[7] then return { 'version', 0, 0, latest } end
end
local ok, q = pcall(cjson.decode, h.quotas or '')
if not ok or type(q) ~= 'table' or tonumber(q.concurrency) == nil or tonumber(q.invocationsPerMinute) == nil
  or tonumber(q.cpuSeconds) == nil or tonumber(q.cpuWindowSeconds) == nil then
  return { 'key', 0, 0 } -- quotas that do not parse: the tenant reads as disabled
end
local ttl = tonumber(ARGV[3])

-- Concurrency: leases past their expiry belong to hosts that died or lost Redis.
local in_flight = in_flight_count()
if in_flight >= tonumber(q.concurrency) then
  -- A slot frees when some invocation ends; that cannot be known, so ask again soon.
  return { 'concurrency', 1000, in_flight }
end

-- Rate: GCRA, a token bucket of invocationsPerMinute tokens refilled over 60 s.
local period = 60000
local interval = period / tonumber(q.invocationsPerMinute)
local tat = tonumber(h.tat or '0') or 0
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
-- Half a ms of tolerance: the stored TAT is rounded, and that must not cost a burst its last token.
if allow_at - now > 0.5 then
  return { 'rate', math.ceil(allow_at - now), tonumber(q.invocationsPerMinute) }
end

-- CPU: the charges in the window must be under the budget.
local budget = math.floor(tonumber(q.cpuSeconds) * 1000 + 0.5)
local window = tonumber(q.cpuWindowSeconds) * 1000
local bs, oldest, used, total, stale, unfolded = cpu_window(window)
if total >= budget then
  -- The call may run again once enough old buckets leave the window.
  local remaining = total
  local retry = window
  for b = oldest, oldest + ${CPU_BUCKETS} - 1 do
    remaining = remaining - (used[b] or 0)
    if remaining < budget then
      retry = (b + ${CPU_BUCKETS}) * bs - now
      break
    end
  end
  return { 'cpu', math.max(1, math.ceil(retry)), total }
end

local set = { 'l:' .. ARGV[2], (now + ttl) .. '|' .. ARGV[5] .. '|' .. ARGV[6], 'tat', string.format('%.3f', new_tat) }
if #unfolded >= ${FOLD_AT} then
  local sums = {}
  for _, u in ipairs(unfolded) do
    local f = 'c:' .. bs .. ':' .. u[3]
    sums[f] = (sums[f] or buckets[f] or 0) + u[2]
    set[#set + 1] = 'r:' .. u[1]
    set[#set + 1] = 'f|' .. now
  end
  for f, ms in pairs(sums) do
    set[#set + 1] = f
    set[#set + 1] = ms
  end
end
chunked('HSET', KEYS[1], set)

-- Stale fields: buckets out of the window, and leases released or expired longer ago than
-- any release is retried. Deleted together once there are enough to be worth a command.
local keep = ${RELEASED_KEEP_MS}
for id, v in pairs(released) do
  local _, at = split(v)
  -- Unfolded charges that old are out of every window (keep > the one-bucket minimum).
  if tonumber(at) == nil or (tonumber(at) + keep < now and (string.sub(v, 1, 2) == 'f|' or tonumber(at) < oldest * bs)) then
    stale[#stale + 1] = 'r:' .. id
    if leases[id] ~= nil then stale[#stale + 1] = 'l:' .. id end
  end
end
for id, v in pairs(leases) do
  local expiry = tonumber((split(v)))
  if released[id] == nil and (expiry == nil or expiry + keep < now) then stale[#stale + 1] = 'l:' .. id end
end
if #stale >= ${SWEEP_AT} then chunked('HDEL', KEYS[1], stale) end
return { 'ok', 0, in_flight + 1 }
`;

/**
 * Ends a lease, charges its CPU and appends its audit records, once: a release the client
 * gave up on (command timeout) still runs when a paused Redis resumes, and so does the
 * client's retry of it; the second finds the r: field and changes nothing. Charging does not
 * depend on the lease still existing: CPU that was used is owed even when the lease expired.
 *
 * KEYS: tenant hash, tenant audit stream   ARGV: now, leaseId, cpuMs, audit maxLen, record JSON…
 * Returns 1 when this call released the lease, 0 when it was released already.
 */
export const RELEASE = `
local now = tonumber(ARGV[1])
if redis.call('HSETNX', KEYS[1], 'r:' .. ARGV[2], math.ceil(tonumber(ARGV[3])) .. '|' .. now) == 0 then return 0 end
for i = 5, #ARGV do redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'r', ARGV[i]) end
return 1
`;

/**
 * Extends a held lease. A lease that already expired is not brought back: its slot may be
 * someone else's by now.
 *
 * KEYS: tenant hash   ARGV: now, leaseId, leaseTtlMs
 * Returns 1 when extended, 0 when the lease is gone.
 */
export const REFRESH = `
local now = tonumber(ARGV[1])
local v = redis.call('HGET', KEYS[1], 'l:' .. ARGV[2])
if not v then return 0 end
local expiry, rest = string.match(v, '^([^|]*)(.*)$')
if tonumber(expiry) == nil or tonumber(expiry) <= now then return 0 end
redis.call('HSET', KEYS[1], 'l:' .. ARGV[2], (now + tonumber(ARGV[3])) .. rest)
return 1
`;

/**
 * What a tenant uses now (read-only).
 *
 * KEYS: tenant hash   ARGV: now, cpuWindowMs
 * Returns { inFlight, cpuMsInWindow }.
 */
export const USAGE = `${READ}
local _, _, _, total = cpu_window(tonumber(ARGV[2]))
return { in_flight_count(), total }
`;

/**
 * At start-up: the leases an earlier run of this host (same host id, another boot id) holds
 * can never be released by it; they go at once instead of at their expiry. Not charged: what
 * they used is unknown.
 *
 * KEYS: tenant hash   ARGV: now, host id, boot id
 * Returns how many leases were freed.
 */
export const SWEEP_HOST = `${CHUNKED}
local raw = redis.call('HGETALL', KEYS[1])
local gone = {}
for i = 1, #raw, 2 do
  if string.sub(raw[i], 1, 2) == 'l:' then
    local _, host, boot = string.match(raw[i + 1], '^([^|]*)|([^|]*)|(.*)$')
    if host == ARGV[2] and boot ~= ARGV[3] then gone[#gone + 1] = raw[i] end
  end
end
if #gone > 0 then chunked('HDEL', KEYS[1], gone) end
return #gone
`;

/**
 * Creates a tenant's record unless the name is taken. The key-id index and the set of
 * names are written after it (other slots): a key works once its index entry exists.
 *
 * KEYS: tenant hash   ARGV: name, quotas JSON, keyId, keyHash, now ISO
 * Returns 1 when created, 0 when the name exists.
 */
export const TENANT_CREATE = `
if redis.call('HEXISTS', KEYS[1], 'name') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'status', 'active', 'quotas', ARGV[2],
  'keyId', ARGV[3], 'keyHash', ARGV[4], 'createdAt', ARGV[5], 'updatedAt', ARGV[5])
return 1
`;

/**
 * Replaces a tenant's key. The old key stops working in this step: a lookup checks that the
 * index's key id is still the record's, and ADMIT checks it again.
 *
 * KEYS: tenant hash   ARGV: keyId, keyHash, now ISO
 * Returns the old key id, or nil when there is no such tenant.
 */
export const TENANT_ROTATE = `
if redis.call('HEXISTS', KEYS[1], 'name') == 0 then return false end
local old = redis.call('HGET', KEYS[1], 'keyId') or ''
redis.call('HSET', KEYS[1], 'keyId', ARGV[1], 'keyHash', ARGV[2], 'updatedAt', ARGV[3])
return old
`;

/**
 * Sets fields of an existing tenant (quotas or status).
 *
 * KEYS: tenant hash   ARGV: now ISO, field, value[, field, value]
 * Returns 1, or 0 when there is no such tenant.
 */
export const TENANT_SET = `
if redis.call('HEXISTS', KEYS[1], 'name') == 0 then return 0 end
local args = { 'updatedAt', ARGV[1] }
for i = 2, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(args))
return 1
`;

/**
 * Appends one audit record to one stream, capped near maxLen.
 *
 * KEYS: stream   ARGV: maxLen, record JSON
 * Returns the record's stream id.
 */
export const AUDIT_APPEND = `
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'r', ARGV[2])
`;

/**
 * Stores a new version of a function. Version numbers come from a per-tenant counter that
 * survives deletes, so a number names one content forever (caches and warm pools key on
 * it). Keeps the last `keep` versions' code, as fields of one hash: the script declares the
 * key, whatever number it gives the version.
 *
 * KEYS: function hash, tenant's name set, tenant's version counters (hash), function's versions (hash)
 * ARGV: name, meta JSON, version JSON, digest, '1' to skip an unchanged deploy, keep, max
 *       functions per tenant, now ISO
 * Returns { 'created', version, createdAt } or { 'unchanged', latest, createdAt } or
 * { 'too-many', count }.
 */
export const FN_PUT = `
local exists = redis.call('EXISTS', KEYS[1]) == 1
if exists and ARGV[5] == '1' and redis.call('HGET', KEYS[1], 'digest') == ARGV[4] then
  return { 'unchanged', tonumber(redis.call('HGET', KEYS[1], 'latest')), redis.call('HGET', KEYS[1], 'createdAt') }
end
if not exists then
  local n = redis.call('SCARD', KEYS[2])
  if n >= tonumber(ARGV[7]) then return { 'too-many', n } end
  redis.call('HSET', KEYS[1], 'createdAt', ARGV[8])
end
local v = redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('HSET', KEYS[4], v, ARGV[3])
redis.call('HSET', KEYS[1], 'latest', v, 'meta', ARGV[2], 'digest', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
local old = v - tonumber(ARGV[6])
if old >= 1 then redis.call('HDEL', KEYS[4], old) end
return { 'created', v, redis.call('HGET', KEYS[1], 'createdAt') }
`;

/**
 * Deletes a function and the code of its kept versions. Its version counter stays.
 *
 * KEYS: function hash, tenant's name set, function's versions (hash)   ARGV: name
 * Returns 1, or 0 when there was no such function.
 */
export const FN_DELETE = `
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
return redis.call('DEL', KEYS[1])
`;

/**
 * At start-up: an async invocation a previous run of this host left 'running' can never
 * end; mark it failed (reason host-restart). The record keeps its TTL.
 *
 * KEYS: the invocation   ARGV: failure message
 * Returns 1 when marked, 0 when it was not running (finished, or gone).
 */
export const INV_FAIL = `
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, rec = pcall(cjson.decode, raw)
if not ok or type(rec) ~= 'table' or rec.status ~= 'running' then return 0 end
local failed = cjson.encode({ id = rec.id, status = 'failed', reason = 'host-restart',
  error = { code = 'SANDBOX_FAILED', message = ARGV[1] } })
redis.call('SET', KEYS[1], failed, 'KEEPTTL')
return 1
`;
