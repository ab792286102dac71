-- Retention for the done or dead set: deletes a finished job (set member, payload, meta)
-- once it finished at or before the cutoff. Never touches an id that is scheduled again (recycled
-- or re-driven) or no longer in the set, and keeps ids without a finish time.
--
-- KEYS[1] the done or dead SET   KEYS[2] data HASH   KEYS[3] scheduled ZSET
-- ARGV[1] cutoff (unix seconds)  ARGV[2] meta key prefix ("Q:meta:")  ARGV[3..] ids
-- Returns {purged, kept_recent, kept_scheduled, kept_undated}.

local purged, recent, scheduled, undated = 0, 0, 0, 0
local cutoff = tonumber(ARGV[1])
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('SISMEMBER', KEYS[1], id) == 1 then
    if redis.call('ZSCORE', KEYS[3], id) then
      scheduled = scheduled + 1
    else
      local finished = tonumber(redis.call('HGET', ARGV[2] .. id, 'done_at'))
      if not finished then
        undated = undated + 1
      elseif finished > cutoff then
        recent = recent + 1
      else
        redis.call('SREM', KEYS[1], id)
        redis.call('HDEL', KEYS[2], id)
        redis.call('DEL', ARGV[2] .. id)
        purged = purged + 1
      end
    end
  end
end
return {purged, recent, scheduled, undated}
