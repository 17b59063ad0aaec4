-- Records revocations for every instance. KEYS: revoked set ; ARGV: channel, now, then sessionId, until pairs.
for i = 3, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'GT', ARGV[i + 1], ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', KEYS[1], top[2]) end
for i = 3, #ARGV, 2 do
  redis.call('PUBLISH', ARGV[1], ARGV[i])
end
return 1
