"""The Lua scripts of RedisJobStore: every change that touches more than one key runs as one script.

Redis runs a script without interleaving any other command, so a script is the transaction. What a
change makes of a job is decided in Python (domain/transitions.py), on a read of the job and its
version, and written by APPLY only if the version is still the one read. The scripts keep the
indexes (the queue, the leases, the counters) in step with each job's state, in one place:
`reindex`, shared by all of them. Key names are built inside the scripts from the prefix
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
  p:modelq:<model>  ZSET   the same, one per model id (the job's `model` field; none for a job
                           without one), so that a worker serving some models finds its oldest job
  p:leases          ZSET   running job ids by lease expiry (micros): reclaim
  p:done            ZSET   terminal jobs whose data is kept, by completion time (micros): expire
  p:deadlines       ZSET   queued and running jobs with a deadline and no cancel requested, by
                           cancel_at (micros): what a deadline may still cancel (overdue)
  p:outbox          ZSET   webhook delivery keys by due time (micros), claimed ones by claim end
  p:dlv:<key>       HASH   a delivery: job, event, url, created, attempts, rev, token (outbox.py)
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
-- h holds the job's owner, batch, created, price and model fields (model false or '' for a job
-- that has none: one stored before the field existed until its model is indexed, or no model id).
local function reindex(id, old, new, h)
  if old == new then return end
  if old == 'queued' then
    redis.call('ZREM', p .. 'queued', id)
    redis.call('ZREM', p .. 'queued:' .. h.batch, id)
    if h.model and h.model ~= '' then redis.call('ZREM', p .. 'modelq:' .. h.model, id) end
  elseif old == 'running' then
    redis.call('ZREM', p .. 'leases', id)
  end
  if new == 'queued' then
    redis.call('ZADD', p .. 'queued', h.created, id)
    redis.call('ZADD', p .. 'queued:' .. h.batch, h.created, id)
    if h.model and h.model ~= '' then redis.call('ZADD', p .. 'modelq:' .. h.model, h.created, id) end
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
  local v = redis.call('HMGET', k, 'owner', 'batch', 'created', 'price', 'model')
  return {owner = v[1], batch = v[2], created = v[3], price = v[4], model = v[5]}
end

-- The id of the oldest queued job of one of the models (ties by id, as ZRANGE orders them), or nil.
-- An entry whose job is not queued (left by a node that predates p:modelq) is dropped on the way.
local function oldest_of(models)
  local best, best_score
  for _, model in ipairs(models) do
    local key = p .. 'modelq:' .. model
    while true do
      local top = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if #top == 0 then break end
      if redis.call('HGET', jk(top[1]), 'state') == 'queued' then
        local score = tonumber(top[2])
        if not best or score < best_score or (score == best_score and top[1] < best) then
          best, best_score = top[1], score
        end
        break
      end
      redis.call('ZREM', key, top[1])
    end
  end
  return best
end

-- Keeps p:deadlines in step with the job's state and cancel flag (cancel_at never changes).
local function index_deadline(id, k, state)
  local v = redis.call('HMGET', k, 'cancel_at', 'cancel')
  if ACTIVE[state] and v[1] and v[1] ~= '' and v[2] ~= '1' then
    redis.call('ZADD', p .. 'deadlines', v[1], id)
  else
    redis.call('ZREM', p .. 'deadlines', id)
  end
end

-- Queues a webhook delivery, due now; one already pending is marked changed (its rev) instead.
local function queue_delivery(key, job, event, url, now)
  local dk = p .. 'dlv:' .. key
  if redis.call('EXISTS', dk) == 1 then
    redis.call('HINCRBY', dk, 'rev', 1)
    return
  end
  redis.call('HSET', dk, 'job', job, 'event', event, 'url', url, 'created', now, 'attempts', '0', 'rev', '0',
             'token', '')
  redis.call('ZADD', p .. 'outbox', now, key)
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
index_deadline(id, k, state)
return {'ok'}
"""
)

# ARGV: prefix, max_batch, then 'any' (model), or 'only' and the model ids served. Chooses the jobs a
# lease takes, and changes nothing (but stale p:modelq entries): the caller decides what they become
# and writes that with APPLY, which fails if another worker took one meanwhile. Returns HGETALL, ...
PICK = (
    _PRELUDE
    + """
local max_batch = tonumber(ARGV[2])
local first
if ARGV[3] == 'any' then
  first = redis.call('ZRANGE', p .. 'queued', 0, 0)[1]
else
  first = oldest_of({unpack(ARGV, 4)})
end
if not first then return {} end
-- a batch key names the model, so a batch holds only jobs of the first one's model; and the oldest
-- queued job is also the oldest of its batch key, so this range starts with it
local batch = redis.call('HGET', jk(first), 'batch')
local out = {}
for _, id in ipairs(redis.call('ZRANGE', p .. 'queued:' .. batch, 0, max_batch - 1)) do
  out[#out + 1] = redis.call('HGETALL', jk(id))
end
return out
"""
)

# ARGV: prefix, whole ('1': return the jobs' whole requests), now (micros), then per job: id, expected
# version, new state, worker, lease, new request ('' = unchanged), the number of field items, field
# pairs..., the number of webhook deliveries the change queues, and (key, event, url) of each.
# Applies changes the caller decided on the versions it read, all or none: 0 (and no change) if any
# job moved on meanwhile. Else 1, or with whole the jobs' whole requests (p:inp, or p:req where there
# is none: a job without images, or one stored before p:inp existed), in order.
# A job whose data is removed (field `removed` = '1') keeps no inputs.
APPLY = (
    _PRELUDE
    + """
local whole, now = ARGV[2] == '1', ARGV[3]
local jobs = {}
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i + 6])
  local m = tonumber(ARGV[i + 7 + n])
  jobs[#jobs + 1] = {id = ARGV[i], expected = ARGV[i + 1], new = ARGV[i + 2], worker = ARGV[i + 3],
                     lease = ARGV[i + 4], request = ARGV[i + 5], first = i + 7, last = i + 6 + n,
                     deliveries = i + 8 + n, delivered = m}
  i = i + 8 + n + 3 * m
end
for _, j in ipairs(jobs) do
  if redis.call('HGET', jk(j.id), 'v') ~= j.expected then return 0 end
end
local out = {}
for _, j in ipairs(jobs) do
  local id, k = j.id, jk(j.id)
  reindex(id, redis.call('HGET', k, 'state'), j.new, fields_of(k))
  redis.call('HSET', k, 'state', j.new, unpack(ARGV, j.first, j.last))
  if j.new == 'running' then
    redis.call('HSET', k, 'worker', j.worker, 'lease', j.lease)
    redis.call('ZADD', p .. 'leases', j.lease, id)
  else
    redis.call('HDEL', k, 'worker', 'lease')
  end
  index_done(id, k, j.new)
  index_deadline(id, k, j.new)
  for d = 0, j.delivered - 1 do
    local at = j.deliveries + 3 * d
    queue_delivery(ARGV[at], id, ARGV[at + 1], ARGV[at + 2], now)
  end
  if j.request ~= '' then redis.call('SET', p .. 'req:' .. id, j.request) end
  if redis.call('HGET', k, 'removed') == '1' then redis.call('DEL', p .. 'inp:' .. id) end
  -- every write bumps the version, so that no change decided on the old facts can apply
  redis.call('HINCRBY', k, 'v', 1)
  if whole then
    -- GET answers false for a missing key
    out[#out + 1] = redis.call('GET', p .. 'inp:' .. id) or redis.call('GET', p .. 'req:' .. id)
  end
end
if whole then return out end
return 1
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

# ARGV: prefix. The ids of the queued and running jobs stored without a `model` field (by a version
# before p:modelq), whose model INDEX_MODEL must record.
UNINDEXED_MODELS = (
    _PRELUDE
    + """
local out = {}
for _, index in ipairs({'queued', 'leases'}) do
  for _, id in ipairs(redis.call('ZRANGE', p .. index, 0, -1)) do
    if redis.call('HEXISTS', jk(id), 'model') == 0 then out[#out + 1] = id end
  end
end
return out
"""
)

# ARGV: prefix, id, model ('' for none). Records the model of a job stored without it, and puts the job
# in its model's queue if it is queued; nothing if the job has a model field already.
INDEX_MODEL = (
    _PRELUDE
    + """
local id, model = ARGV[2], ARGV[3]
local k = jk(id)
if redis.call('EXISTS', k) == 0 or redis.call('HSETNX', k, 'model', model) == 0 then return 0 end
if model ~= '' and redis.call('HGET', k, 'state') == 'queued' then
  redis.call('ZADD', p .. 'modelq:' .. model, redis.call('HGET', k, 'created'), id)
end
return 1
"""
)

# ARGV: prefix, now, claimed until (micros), token. The delivery due longest, claimed: its HGETALL and
# key, or false if none is due.
CLAIM = (
    _PRELUDE
    + """
local top = redis.call('ZRANGEBYSCORE', p .. 'outbox', '-inf', ARGV[2], 'LIMIT', 0, 1)[1]
if not top then return false end
local dk = p .. 'dlv:' .. top
redis.call('ZADD', p .. 'outbox', ARGV[3], top)
redis.call('HINCRBY', dk, 'attempts', 1)
redis.call('HSET', dk, 'token', ARGV[4])
local out = redis.call('HGETALL', dk)
out[#out + 1] = 'key'
out[#out + 1] = top
return out
"""
)

# ARGV: prefix, key, token, rev as claimed, now. Sent: removed, or due now if queued again since the
# claim. Nothing if the claim was lost.
DONE = (
    _PRELUDE
    + """
local dk = p .. 'dlv:' .. ARGV[2]
local v = redis.call('HMGET', dk, 'token', 'rev')
if v[1] ~= ARGV[3] then return 0 end
if v[2] == ARGV[4] then
  redis.call('DEL', dk)
  redis.call('ZREM', p .. 'outbox', ARGV[2])
else
  redis.call('HSET', dk, 'token', '', 'attempts', '0')
  redis.call('ZADD', p .. 'outbox', ARGV[5], ARGV[2])
end
return 1
"""
)

# ARGV: prefix, key, token, due (micros). Not sent: due again then. Nothing if the claim was lost.
RETRY = (
    _PRELUDE
    + """
local dk = p .. 'dlv:' .. ARGV[2]
if redis.call('HGET', dk, 'token') ~= ARGV[3] then return 0 end
redis.call('HSET', dk, 'token', '')
redis.call('ZADD', p .. 'outbox', ARGV[4], ARGV[2])
return 1
"""
)
