-- Shared by every session script (prepended at load time).
-- Numbers are formatted by hand: Redis would print large ones in exponent form.
local function int (n) return string.format('%.0f', n) end

-- Keeps a user's index sorted set trimmed and expiring with its latest member.
local function touch_index (index, now, sid, expires_at)
  if sid then redis.call('ZADD', index, int(expires_at), sid) end
  redis.call('ZREMRANGEBYSCORE', index, '-inf', int(now))
  local top = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
  if top[2] then
    redis.call('PEXPIREAT', index, top[2])
  else
    redis.call('DEL', index)
  end
end
