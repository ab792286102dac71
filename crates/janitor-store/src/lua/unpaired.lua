-- The members of the slot ZSETs whose slots were not all paired with open runs by the
-- sweep's row pass, so the slot pass reads only those ZSETs: a ZSET holding exactly as many
-- members as the row pass paired in it is skipped whole. A census key that is no longer a
-- slot ZSET (deleted with its last slot, or now of another type) leaves the census.
--
-- KEYS[1]: HASH of ZSET key -> slots paired in it; KEYS[2]: the census SET; KEYS[3..]: slot
-- ZSETs from the census.
-- Returns a flat array: for each member of a ZSET that needs a look, the index of its ZSET
-- in KEYS (3-based), the member and its score (as Redis formats it).

local out = {}
for i = 3, #KEYS do
  local count = redis.pcall('ZCARD', KEYS[i])
  if type(count) ~= 'number' or count == 0 then
    redis.call('SREM', KEYS[2], KEYS[i])
  elseif count ~= tonumber(redis.call('HGET', KEYS[1], KEYS[i]) or '0') then
    local members = redis.call('ZRANGE', KEYS[i], 0, -1, 'WITHSCORES')
    for j = 1, #members, 2 do
      out[#out + 1] = i
      out[#out + 1] = members[j]
      out[#out + 1] = members[j + 1]
    end
  end
end
return out
