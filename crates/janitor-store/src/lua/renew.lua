-- Renew (heartbeat) a slot: re-anchor its score to now and re-EXPIRE its hash, but only if
-- the member still exists. A renewal never resurrects a slot that was reclaimed or released.
--
-- KEYS[1] agent's slot ZSET          KEYS[2] this slot's metadata HASH
-- ARGV[1] execution id               ARGV[2] TTL buffer seconds
-- ARGV[3] new timeout seconds, or '' to keep the hash's own
-- Returns { code, score }: code 1 = renewed, 0 = not held.

if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return { 0, '' }
end
local now = redis.call('TIME')
local score = now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
redis.call('ZADD', KEYS[1], 'XX', score, ARGV[1])
local timeout = ARGV[3]
if timeout ~= '' then
  redis.call('HSET', KEYS[2], 'timeout_seconds', timeout)
else
  timeout = redis.call('HGET', KEYS[2], 'timeout_seconds')
end
local secs = tonumber(timeout)
if secs and secs > 0 then
  redis.call('EXPIRE', KEYS[2], math.floor(secs) + tonumber(ARGV[2]))
end
return { 1, score }
