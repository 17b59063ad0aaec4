-- KEYS: record, index
-- ARGV: sessionId, refreshHash, refreshExpiresAt, createdAt, now, extraMs, ip, userAgent, rolesJson, claimsJson
local now = tonumber(ARGV[5])
local expires_at = tonumber(ARGV[3]) + tonumber(ARGV[6])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'h', ARGV[2], 're', ARGV[3], 'st', ARGV[4], 'lu', ARGV[5], 'ro', ARGV[9], 'cl', ARGV[10])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'ip', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'ua', ARGV[8]) end
redis.call('PEXPIREAT', KEYS[1], int(expires_at))
touch_index(KEYS[2], now, ARGV[1], expires_at)
return 1
