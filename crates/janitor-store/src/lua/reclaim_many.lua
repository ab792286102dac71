-- reclaim.lua for many slots in one call, each removal recorded in the audit outbox by the
-- same atomic step: a slot is removed only if its score is still the observed one and, when
-- a deadline is given, Redis' clock is past it; then an entry naming the change is added to
-- the outbox stream, so no removal can exist without its record (a crash, an outage of the
-- database, anything after this call only delays the audit row, never loses it).
--
-- KEYS[1] the outbox STREAM; for slot i, KEYS[2i] its agent's ZSET, KEYS[2i+1] its HASH
-- ARGV[1] worker; for slot i, 8 values from ARGV[2 + 8(i-1)]: execution id, observed score,
--   deadline (unix seconds) or '', action, agent, job id, job kind, status before
-- Returns two values per slot: the code (1 removed, 0 already gone, 2 renewed, 3 not yet
-- due) and the outbox entry id ('' when nothing was removed); then Redis' time.

local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local at = now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  local zset, hash = KEYS[2 * i], KEYS[2 * i + 1]
  local b = 2 + 8 * (i - 1)
  local id, observed, deadline = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local current = redis.call('ZSCORE', zset, id)
  local code, entry = 1, ''
  if not current then
    code = 0
  elseif tonumber(current) ~= tonumber(observed) then
    code = 2
  elseif deadline ~= '' and t <= tonumber(deadline) then
    code = 3
  else
    redis.call('ZREM', zset, id)
    redis.call('DEL', hash)
    entry = redis.call('XADD', KEYS[1], '*',
      'action', ARGV[b + 3], 'agent', ARGV[b + 4], 'execution', id, 'score', observed,
      'deadline', deadline, 'job_id', ARGV[b + 5], 'job_kind', ARGV[b + 6],
      'status_before', ARGV[b + 7], 'worker', ARGV[1], 'at', at)
  end
  out[#out + 1] = code
  out[#out + 1] = entry
end
out[#out + 1] = at
return out
