-- Where each task id is, by membership in the library's sets (never by its payload alone: an
-- id whose payload exists but that sits in no set — a re-drive cut off between two steps —
-- would otherwise read as "already queued" forever and its work never be done).
--
-- KEYS[1] scheduled ZSET   KEYS[2] active LIST   KEYS[3] workers ZSET
-- KEYS[4] dead SET         KEYS[5] done SET      KEYS[6] data HASH
-- ARGV[1] in-flight set prefix ("Q:inflight:")   ARGV[2..] task ids
-- Returns one code per id: 0 new, 1 queued (scheduled, active or in flight), 2 dead,
-- 3 finished (done), 4 stranded (stored, in no set).

local active = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  active[id] = true
end
local workers = redis.call('ZRANGE', KEYS[3], 0, -1)
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local code
  if redis.call('ZSCORE', KEYS[1], id) or active[id] then
    code = 1
  else
    for _, w in ipairs(workers) do
      if redis.call('SISMEMBER', ARGV[1] .. w, id) == 1 then
        code = 1
        break
      end
    end
  end
  if not code then
    if redis.call('SISMEMBER', KEYS[4], id) == 1 then
      code = 2
    elseif redis.call('SISMEMBER', KEYS[5], id) == 1 then
      code = 3
    elseif redis.call('HEXISTS', KEYS[6], id) == 1 then
      code = 4
    else
      code = 0
    end
  end
  out[#out + 1] = code
end
return out
