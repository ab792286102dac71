-- Take the sweep lease if nobody holds it, and mint the next fencing token.
-- KEYS[1] lease key   KEYS[2] fence counter
-- ARGV[1] holder      ARGV[2] ttl in milliseconds
-- Returns the fencing token, or 0 when someone else holds the lease.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
  return token
end
return 0
