-- Promote due task ids from the scheduled ZSET to the active LIST in a bounded chunk.
--
-- apalis-redis 1.0.0's fetch_next.lua promotes *every* due id with one `unpack`, which
-- fails past Lua's ~8,000-value limit and then fails on every fetch ("backlog wedge").
-- Running this first, in chunks well under that limit, keeps the number of due ids the
-- library ever sees small. Same keys and the same moves the library makes.
--
-- KEYS[1] scheduled ZSET    KEYS[2] active LIST    KEYS[3] signal LIST
-- ARGV[1] chunk size
-- Returns the number of ids promoted.

local now = redis.call('TIME')
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now[1], 'LIMIT', 0, tonumber(ARGV[1]))
if #ids == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], unpack(ids))
redis.call('ZREM', KEYS[1], unpack(ids))
redis.call('DEL', KEYS[3])
redis.call('LPUSH', KEYS[3], 1)
return #ids
