-- KEYS: record, index
-- ARGV: sessionId, now, refreshExpiresAt, extraMs, then the record's field/value pairs
local now = tonumber(ARGV[2])
local expires_at = tonumber(ARGV[3]) + tonumber(ARGV[4])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('PEXPIREAT', KEYS[1], int(expires_at))
touch_index(KEYS[2], now, ARGV[1], expires_at)
return 1
