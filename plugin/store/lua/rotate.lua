-- Rotation, the grace window and reuse detection, atomically.
-- KEYS: record, index
-- ARGV: presentedHash, successorHash, now, refreshTtlMs, maxSessionAgeMs, extraMs, rotate ('1'|'0'), graceMs,
--       sessionId, then field/value pairs replacing roles and claims (none = keep them)
local f = redis.call('HMGET', KEYS[1], 'h', 'p', 'pt', 'st')
if not f[1] then return { 'missing' } end
local now = tonumber(ARGV[3])
local grace = 0
if f[1] == ARGV[1] then
  if ARGV[7] == '1' then
    local refresh_expires_at = math.min(now + tonumber(ARGV[4]), tonumber(f[4]) + tonumber(ARGV[5]))
    local expires_at = refresh_expires_at + tonumber(ARGV[6])
    redis.call('HSET', KEYS[1], 'h', ARGV[2], 'p', ARGV[1], 'pt', ARGV[3], 're', int(refresh_expires_at))
    redis.call('PEXPIREAT', KEYS[1], int(expires_at))
    touch_index(KEYS[2], now, ARGV[9], expires_at)
  end
elseif ARGV[7] == '1' and f[2] == ARGV[1] and now - tonumber(f[3]) < tonumber(ARGV[8]) and f[1] == ARGV[2] then
  grace = 1
else
  -- A live session's refresh id that is neither current nor previous-in-grace: reuse. Kill the session.
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[9])
  touch_index(KEYS[2], now, nil, nil)
  return { 'reused' }
end
redis.call('HSET', KEYS[1], 'lu', ARGV[3])
if #ARGV > 9 then
  -- New roles and/or claims: drop the replaced values' continuation fields ('ro.1', 'cl.1', ...) first.
  local replaced = {}
  for i = 10, #ARGV, 2 do replaced[string.match(ARGV[i], '^[^.]+')] = true end
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    local base, n = string.match(field, '^([^.]+)%.(%d+)$')
    if n and replaced[base] then redis.call('HDEL', KEYS[1], field) end
  end
  redis.call('HSET', KEYS[1], unpack(ARGV, 10))
end
return { 'ok', grace, redis.call('HGETALL', KEYS[1]), redis.call('PTTL', KEYS[1]) }
