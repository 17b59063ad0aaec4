-- Origin step 4.2: a new refresh id for a session whose refresh token expired while its access token lives.
-- KEYS: record, index
-- ARGV: presentedHash, successorHash, now, refreshTtlMs, maxSessionAgeMs, extraMs, graceMs, sessionId
local f = redis.call('HMGET', KEYS[1], 'h', 'p', 'pt', 'st', 're')
if not f[1] then return { 'missing' } end
local now = tonumber(ARGV[3])
if now >= tonumber(f[4]) + tonumber(ARGV[5]) then return { 'capped' } end
local grace = 0
if f[1] == ARGV[1] then
  local refresh_expires_at = math.min(now + tonumber(ARGV[4]), tonumber(f[4]) + tonumber(ARGV[5]))
  local expires_at = refresh_expires_at + tonumber(ARGV[6])
  redis.call('HSET', KEYS[1], 'h', ARGV[2], 'p', ARGV[1], 'pt', ARGV[3], 're', int(refresh_expires_at))
  redis.call('PEXPIREAT', KEYS[1], int(expires_at))
  touch_index(KEYS[2], now, ARGV[8], expires_at)
elseif f[2] == ARGV[1] and now - tonumber(f[3]) < tonumber(ARGV[7]) and f[1] == ARGV[2] and tonumber(f[5]) > now then
  -- Tabs renewing at once get the same (still valid) successor.
  grace = 1
else
  return { 'stale' }
end
redis.call('HSET', KEYS[1], 'lu', ARGV[3])
return { 'ok', grace, redis.call('HGETALL', KEYS[1]), redis.call('PTTL', KEYS[1]) }
