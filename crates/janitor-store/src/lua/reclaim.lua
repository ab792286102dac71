-- Compare-and-delete a slot: remove the member and its hash only if the score is still the
-- one the caller observed and, when a deadline is given, the deadline has passed by Redis'
-- own clock. A renewal between the caller's read and this call changes the score, so the
-- live slot survives.
--
-- KEYS[1] agent's slot ZSET          KEYS[2] this slot's metadata HASH
-- ARGV[1] execution id               ARGV[2] observed score
-- ARGV[3] deadline (unix seconds), or '' for no deadline check (releasing a leaked slot)
-- Returns { code, current score }: 1 = removed, 0 = already gone, 2 = renewed (score
-- differs), 3 = not yet past the deadline.

local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not current then
  return { 0, '' }
end
if tonumber(current) ~= tonumber(ARGV[2]) then
  return { 2, current }
end
if ARGV[3] ~= '' then
  local now = redis.call('TIME')
  local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
  if t <= tonumber(ARGV[3]) then
    return { 3, current }
  end
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return { 1, current }
