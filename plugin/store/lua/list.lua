-- Live sessions of one user. KEYS: index ; ARGV: record key prefix, now
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')) do
  local key = ARGV[1] .. id
  local fields = redis.call('HGETALL', key)
  if fields[1] then out[#out + 1] = { id, fields, redis.call('PTTL', key) } end
end
return out
