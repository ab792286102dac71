-- Acquire a concurrency slot atomically: capacity check, ZADD, HSET, EXPIRE in one step, so
-- concurrent acquirers can never over-admit (the platform's ZCARD-then-ZADD could).
-- Re-acquiring an id that already holds a slot is idempotent and changes nothing.
--
-- KEYS[1] agent's slot ZSET          KEYS[2] this slot's metadata HASH
-- ARGV[1] execution id               ARGV[2] max parallel slots
-- ARGV[3] timeout seconds            ARGV[4] TTL buffer seconds
-- ARGV[5] message preview (<= 100 chars)
-- Returns { code, slot_number, score }: code 1 = acquired, 2 = already held, 0 = full.

local function iso(secs, micros)
  -- Naive ISO-8601 UTC, the format the platform writes into slot hashes
  -- (days-to-civil conversion; Redis' Lua has no os.date).
  local days = math.floor(secs / 86400)
  local rem = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06d', y, m, d,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, micros)
end

local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if held then
  local number = tonumber(redis.call('HGET', KEYS[2], 'slot_number')) or 0
  return { 2, number, held }
end
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[2]) then
  return { 0, count, '' }
end
local now = redis.call('TIME')
local secs, micros = tonumber(now[1]), tonumber(now[2])
local score = now[1] .. '.' .. string.format('%06d', micros)
redis.call('ZADD', KEYS[1], score, ARGV[1])
redis.call('HSET', KEYS[2],
  'started_at', iso(secs, micros),
  'message_preview', ARGV[5],
  'slot_number', count + 1,
  'timeout_seconds', ARGV[3])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[4]))
return { 1, count + 1, score }
