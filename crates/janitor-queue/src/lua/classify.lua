-- Where each task id is, by membership in the library's sets (never by its payload alone: an
-- id whose payload exists but that sits in no set — a re-drive cut off between two steps —
-- would otherwise read as "already queued" forever and its work never be done).
--
-- An id without a payload is in none of the queued places: a push stores the payload in the
-- same step that queues the id, nothing moves an id between the scheduled, active and
-- in-flight places without it, and janitor's purge deletes it only with the id's finished
-- record. So the payload is asked first, and only the finished sets after it: a new id —
-- nearly every id a catch-up pushes — costs three lookups instead of one per queued place
-- and per worker, and the active list (up to the backlog cap) is read only when some id
-- has a payload. (Janitor never runs the library's vacuum, which also deletes the payload
-- of a job waiting for a retry; such an id reads as new, and pushing it again stores its
-- payload again, where before it read as queued and its retry failed for want of it.)
--
-- KEYS[1] scheduled ZSET   KEYS[2] active LIST   KEYS[3] workers ZSET
-- KEYS[4] dead SET         KEYS[5] done SET      KEYS[6] data HASH
-- ARGV[1] in-flight set prefix ("Q:inflight:")   ARGV[2..] task ids
-- Returns one code per id: 0 new, 1 queued (scheduled, active or in flight), 2 dead,
-- 3 finished (done), 4 stranded (stored, in no set).

local active, workers
local function queued(id)
  if redis.call('ZSCORE', KEYS[1], id) then
    return true
  end
  if not active then
    active = {}
    for _, a in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
      active[a] = true
    end
    workers = redis.call('ZRANGE', KEYS[3], 0, -1)
  end
  if active[id] then
    return true
  end
  for _, w in ipairs(workers) do
    if redis.call('SISMEMBER', ARGV[1] .. w, id) == 1 then
      return true
    end
  end
  return false
end

local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local stored = redis.call('HEXISTS', KEYS[6], id) == 1
  local code
  if stored and queued(id) then
    code = 1
  elseif redis.call('SISMEMBER', KEYS[4], id) == 1 then
    code = 2
  elseif redis.call('SISMEMBER', KEYS[5], id) == 1 then
    code = 3
  elseif stored then
    code = 4
  else
    code = 0
  end
  out[#out + 1] = code
end
return out
