-- Confirm the lease is still ours (same holder and token) and extend it; or release it.
-- KEYS[1] lease key
-- ARGV[1] holder|token   ARGV[2] ttl in milliseconds, or 0 to release
-- Returns 1 when the lease was ours, 0 otherwise (it expired and someone else took it).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
