-- Deletes every session of one user. KEYS: index ; ARGV: record key prefix ('<prefix>:{<user>}:s:')
-- The record keys are built here; they share the index's hash tag, so they live in its Cluster slot.
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('DEL', ARGV[1] .. id) == 1 then out[#out + 1] = id end
end
redis.call('DEL', KEYS[1])
return out
