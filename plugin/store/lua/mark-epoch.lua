-- Records a "not before" epoch for every instance and tells the feed.
-- A user's: KEYS[1] = '<prefix>:epochs', a sorted set { userId: epoch }; everybody's: KEYS[1] = '<prefix>:epoch',
-- a string. ARGV: channel, now, kind ('user' | 'everyone'), at, until, userId. A later epoch wins.
local at, untl = tonumber(ARGV[4]), tonumber(ARGV[5])
if ARGV[3] == 'everyone' then
  local known = tonumber(redis.call('GET', KEYS[1]) or '0')
  if at > known then redis.call('SET', KEYS[1], ARGV[4], 'PXAT', ARGV[5]) end
  redis.call('PUBLISH', ARGV[1], '~*:' .. ARGV[4])
  return 1
end
redis.call('ZADD', KEYS[1], 'GT', ARGV[4], ARGV[6])
-- An entry is kept for `until - at` (the access TTL): tokens issued before it have all expired by then.
local keep = untl - at
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', tonumber(ARGV[2]) - keep))
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', tonumber(top[2]) + keep)) end
redis.call('PUBLISH', ARGV[1], '~u:' .. ARGV[4] .. ':' .. ARGV[6])
return 1
