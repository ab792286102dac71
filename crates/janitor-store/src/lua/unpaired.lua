-- The members of the slot ZSETs whose slots were not all paired with open runs by the
-- sweep's row pass, so the slot pass reads only those ZSETs: a ZSET holding exactly as many
-- members as the row pass paired in it is skipped whole.
--
-- KEYS[1]: HASH of ZSET key -> slots paired in it; KEYS[2..]: slot ZSETs
-- Returns a flat array: for each member of a ZSET that needs a look, the index of its ZSET
-- in KEYS (2-based), the member and its score (as Redis formats it).

local out = {}
for i = 2, #KEYS do
  local paired = tonumber(redis.call('HGET', KEYS[1], KEYS[i]) or '0')
  if redis.call('ZCARD', KEYS[i]) ~= paired then
    local members = redis.call('ZRANGE', KEYS[i], 0, -1, 'WITHSCORES')
    for j = 1, #members, 2 do
      out[#out + 1] = i
      out[#out + 1] = members[j]
      out[#out + 1] = members[j + 1]
    end
  end
end
return out
