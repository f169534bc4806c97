"""The Lua scripts of RedisJobStore: every change that touches more than one key runs as one script.

Redis runs a script without interleaving any other command, so a script is the transaction. The
scripts keep the indexes (the queue, the leases, the counters) in step with each job's state, in
one place: `reindex`, shared by all of them. Key names are built inside the scripts from the prefix
(ARGV[1]), because some depend on a job's own fields (its owner, its batch key); that is fine on one
Redis server, and on a cluster it needs a prefix with a hash tag ('{ks}') so that every key lands
in one slot.

Layout, for prefix p:
  p:job:<id>        HASH   the job: `job` (its JSON as enqueued, see codec.py) and its live fields
  p:req:<id>        STRING the request JSON without its input images: what reads return (a record
                           from before p:inp existed has them here, and no p:inp)
  p:inp:<id>        STRING the whole request JSON, only for a job with input images: read by LEASE
                           alone, deleted when the job's data is removed
  p:ev:<id>         LIST   event JSON; an event's seq is its position (1, 2, ...)
  p:owner:<owner>   ZSET   all the owner's job ids by created time (micros): list_jobs
  p:queued          ZSET   queued job ids by created time; ties sort by id, as (created_at, id) does
  p:queued:<batch>  ZSET   the same, one per batch key, so that a batch is one ZRANGE
  p:leases          ZSET   running job ids by lease expiry (micros): reclaim
  p:done            ZSET   terminal jobs whose data is kept, by completion time (micros): expire
  p:counts          HASH   state -> number of jobs
  p:active          HASH   owner -> queued + running jobs (admission's max_active)
  p:spent           HASH   owner -> prices of queued, running and succeeded jobs (admission's budget)
"""

from __future__ import annotations

_PRELUDE = """
local p = ARGV[1]
local function jk(id) return p .. 'job:' .. id end
local ACTIVE = {queued = true, running = true}
local CHARGED = {queued = true, running = true, succeeded = true}
local TERMINAL = {succeeded = true, failed = true, canceled = true}

local function negated(number)
  if string.sub(number, 1, 1) == '-' then return string.sub(number, 2) end
  return '-' .. number
end

-- Moves a job's index entries and counters from state `old` ('' for a new job) to state `new`.
-- h holds the job's owner, batch, created and price fields.
local function reindex(id, old, new, h)
  if old == new then return end
  if old == 'queued' then
    redis.call('ZREM', p .. 'queued', id)
    redis.call('ZREM', p .. 'queued:' .. h.batch, id)
  elseif old == 'running' then
    redis.call('ZREM', p .. 'leases', id)
  end
  if new == 'queued' then
    redis.call('ZADD', p .. 'queued', h.created, id)
    redis.call('ZADD', p .. 'queued:' .. h.batch, h.created, id)
  end
  if old ~= '' then redis.call('HINCRBY', p .. 'counts', old, -1) end
  redis.call('HINCRBY', p .. 'counts', new, 1)
  local was, now = ACTIVE[old] and 1 or 0, ACTIVE[new] and 1 or 0
  if was ~= now then
    -- drop owners at zero, so that the hash holds only owners with work in flight
    if redis.call('HINCRBY', p .. 'active', h.owner, now - was) == 0 then
      redis.call('HDEL', p .. 'active', h.owner)
    end
  end
  was, now = CHARGED[old] and 1 or 0, CHARGED[new] and 1 or 0
  if was ~= now and tonumber(h.price) ~= 0 then
    redis.call('HINCRBYFLOAT', p .. 'spent', h.owner, now > was and h.price or negated(h.price))
  end
end

local function fields_of(k)
  local v = redis.call('HMGET', k, 'owner', 'batch', 'created', 'price')
  return {owner = v[1], batch = v[2], created = v[3], price = v[4]}
end

-- Keeps p:done in step with the job's state, completion time and data_removed flag.
local function index_done(id, k, state)
  local v = redis.call('HMGET', k, 'completed', 'removed')
  if TERMINAL[state] and v[1] ~= '' and v[2] ~= '1' then
    redis.call('ZADD', p .. 'done', v[1], id)
  else
    redis.call('ZREM', p .. 'done', id)
  end
end
"""

# ARGV: prefix, id, state, request JSON without images, whole request JSON ('' = no images), budget,
# max_active, max_queued ('' = no limit), field pairs...
# Returns {'ok'}, {'exists'}, or the refusal: {'overloaded'}, {'rate_limited'}, {'insufficient_credits', spent}.
ENQUEUE = (
    _PRELUDE
    + """
local id, state, request, inputs = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local budget, max_active, max_queued = ARGV[6], ARGV[7], ARGV[8]
local k = jk(id)
if redis.call('EXISTS', k) == 1 then return {'exists'} end
local fields = {}
for i = 9, #ARGV, 2 do fields[ARGV[i]] = ARGV[i + 1] end
if max_queued ~= '' then
  local queued = tonumber(redis.call('HGET', p .. 'counts', 'queued') or '0')
  if queued >= tonumber(max_queued) then return {'overloaded'} end
end
if max_active ~= '' then
  local active = tonumber(redis.call('HGET', p .. 'active', fields.owner) or '0')
  if active >= tonumber(max_active) then return {'rate_limited'} end
end
if budget ~= '' then
  local spent = redis.call('HGET', p .. 'spent', fields.owner) or '0'
  if tonumber(fields.price) > tonumber(budget) - tonumber(spent) + 1e-9 then
    return {'insufficient_credits', spent}
  end
end
redis.call('HSET', k, 'v', '1', unpack(ARGV, 9))
redis.call('SET', p .. 'req:' .. id, request)
if inputs ~= '' then redis.call('SET', p .. 'inp:' .. id, inputs) end
redis.call('ZADD', p .. 'owner:' .. fields.owner, fields.created, id)
reindex(id, '', state, fields)
index_done(id, k, state)
return {'ok'}
"""
)

# ARGV: prefix, worker, max_batch, now, lease expiry (micros). Returns HGETALL, whole request, HGETALL, ...
LEASE = (
    _PRELUDE
    + """
local worker, max_batch, now, expires = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local first = redis.call('ZRANGE', p .. 'queued', 0, 0)
if #first == 0 then return {} end
local batch = redis.call('HGET', jk(first[1]), 'batch')
-- the oldest queued job is also the oldest of its batch key, so this range starts with it
local ids = redis.call('ZRANGE', p .. 'queued:' .. batch, 0, max_batch - 1)
local out = {}
for _, id in ipairs(ids) do
  local k = jk(id)
  reindex(id, 'queued', 'running', fields_of(k))
  redis.call('ZADD', p .. 'leases', expires, id)
  if redis.call('HGET', k, 'started') == '' then redis.call('HSET', k, 'started', now) end
  redis.call('HINCRBY', k, 'attempts', 1)
  redis.call('HINCRBY', k, 'v', 1)
  redis.call('HSET', k, 'state', 'running', 'worker', worker, 'lease', expires)
  out[#out + 1] = redis.call('HGETALL', k)
  -- GET answers false for a missing key: a job without images, or one stored before p:inp existed
  out[#out + 1] = redis.call('GET', p .. 'inp:' .. id) or redis.call('GET', p .. 'req:' .. id)
end
return out
"""
)

# ARGV: prefix, id, expected version, new state, worker, lease, new request ('' = unchanged), field pairs...
# Applies a change the caller computed from version `expected`; 0 (and no change) if the job moved on.
# A job whose data is removed (field `removed` = '1') keeps no inputs.
APPLY = (
    _PRELUDE
    + """
local id, expected, new, worker, lease, request = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local k = jk(id)
local cur = redis.call('HMGET', k, 'v', 'state')
if cur[1] ~= expected then return 0 end
reindex(id, cur[2], new, fields_of(k))
redis.call('HSET', k, 'state', new, unpack(ARGV, 8))
if new == 'running' then
  redis.call('HSET', k, 'worker', worker, 'lease', lease)
  redis.call('ZADD', p .. 'leases', lease, id)
else
  redis.call('HDEL', k, 'worker', 'lease')
end
index_done(id, k, new)
if request ~= '' then redis.call('SET', p .. 'req:' .. id, request) end
if redis.call('HGET', k, 'removed') == '1' then redis.call('DEL', p .. 'inp:' .. id) end
redis.call('HINCRBY', k, 'v', 1)
return 1
"""
)

# ARGV: prefix, worker, lease expiry, ids... Returns {held ids, ids whose cancel was requested}.
HEARTBEAT = (
    _PRELUDE
    + """
local worker, expires = ARGV[2], ARGV[3]
local held, cancel = {}, {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local k = jk(id)
  local v = redis.call('HMGET', k, 'state', 'worker', 'cancel')
  if v[1] == 'running' and v[2] == worker then
    redis.call('HSET', k, 'lease', expires)
    redis.call('ZADD', p .. 'leases', expires, id)
    -- a new version, so that a reclaim decided on the old lease cannot apply
    redis.call('HINCRBY', k, 'v', 1)
    held[#held + 1] = id
    if v[3] == '1' then cancel[#cancel + 1] = id end
  end
end
return {held, cancel}
"""
)

# ARGV: prefix, owner, limit, cursor ('' = the first page). The ids of the page and one more; nil for
# a cursor that is not among the owner's jobs.
LIST = (
    _PRELUDE
    + """
local key, limit, cursor = p .. 'owner:' .. ARGV[2], tonumber(ARGV[3]), ARGV[4]
local start = 0
if cursor ~= '' then
  local rank = redis.call('ZREVRANK', key, cursor)
  if not rank then return false end
  start = rank + 1
end
return redis.call('ZREVRANGE', key, start, start + limit)
"""
)

# ARGV: prefix, id, event JSON... Events of a job that does not exist are dropped.
ADD_EVENTS = (
    _PRELUDE
    + """
if redis.call('EXISTS', jk(ARGV[2])) == 0 then return 0 end
return redis.call('RPUSH', p .. 'ev:' .. ARGV[2], unpack(ARGV, 3))
"""
)
