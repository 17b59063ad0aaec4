-- Deletes some sessions of one user. KEYS: index, record... ; ARGV: now, sessionId... (same order as the records)
local out = {}
for i = 2, #KEYS do
  if redis.call('DEL', KEYS[i]) == 1 then out[#out + 1] = ARGV[i] end
  redis.call('ZREM', KEYS[1], ARGV[i])
end
touch_index(KEYS[1], tonumber(ARGV[1]), nil, nil)
return out
