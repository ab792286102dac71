-- reclaim.lua for many slots in one call: each slot is removed only if its score is still
-- the observed one and, when a deadline is given, Redis' clock is past it.
--
-- KEYS: for slot i, KEYS[2i-1] its agent's ZSET and KEYS[2i] its metadata HASH
-- ARGV: for slot i, ARGV[3i-2] execution id, ARGV[3i-1] observed score,
--       ARGV[3i] deadline (unix seconds) or '' for none
-- Returns one code per slot: 1 removed, 0 already gone, 2 renewed, 3 not yet due.

local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local out = {}
for i = 1, #KEYS / 2 do
  local zset, hash = KEYS[2 * i - 1], KEYS[2 * i]
  local id, observed, deadline = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local current = redis.call('ZSCORE', zset, id)
  if not current then
    out[i] = 0
  elseif tonumber(current) ~= tonumber(observed) then
    out[i] = 2
  elseif deadline ~= '' and t <= tonumber(deadline) then
    out[i] = 3
  else
    redis.call('ZREM', zset, id)
    redis.call('DEL', hash)
    out[i] = 1
  end
end
return out
