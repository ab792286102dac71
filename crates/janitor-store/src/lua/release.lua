-- Release a slot unconditionally (the run itself finished): ZREM + DEL. Idempotent.
--
-- KEYS[1] agent's slot ZSET          KEYS[2] this slot's metadata HASH
-- ARGV[1] execution id
-- Returns 1 if the member was held, 0 if it was already gone.

local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return removed
