-- Re-drive one dead task in one atomic step: out of the dead set, attempts and last error
-- reset, due at ARGV[2]. Two pipelines (SREM, then the rest) could be cut apart by a dropped
-- connection and leave the id in no set at all.
--
-- KEYS[1] dead SET   KEYS[2] the task's meta HASH   KEYS[3] scheduled ZSET
-- ARGV[1] task id    ARGV[2] due (unix seconds)
-- Returns 1 when moved, 0 when the id was not dead.

if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], 'attempts', '0', 'status', 'Pending', 'result', '')
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
