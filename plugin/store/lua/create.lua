-- Starts a session. KEYS: user sessions, 0.1 index
-- ARGV: now, not-before, small, sessionId, refreshHash, refreshExpiresAt, extraMs, ip, ua, roles, claims,
--       maxSessions (0 = unlimited), createdAt, jkt ('' = not bound), authTime, acr (''), amr (''), os ('')
-- Returns { 'ok', { ids of sessions evicted by maxSessions, least recently used first } } | { 'legacy' }
if legacy() then return { 'legacy' } end
open()
local sid = ARGV[4]
local st = tonumber(ARGV[13])
local re = tonumber(ARGV[6])
local at = tonumber(ARGV[15])
local opt = function (v) if v == '' then return false end return v end
S.put(sid, {
  ARGV[5], false, false, re - st, st, NOW - st, re + tonumber(ARGV[7]) - st, ARGV[8], ARGV[9], ARGV[10], ARGV[11],
  opt(ARGV[14]), at ~= st and (at - st) or false, opt(ARGV[16]), opt(ARGV[17]), opt(ARGV[18])
})
local evicted = {}
local max = tonumber(ARGV[12])
if S.hash then
  if max > 0 and redis.call('HLEN', K) > max then
    -- Over the cap: the least recently used sessions go (a capped user has at most max + 1 to look at).
    local all = S.all()
    local n = 0
    for _ in pairs(all) do n = n + 1 end
    while n > max do
      local lru, when = nil, nil
      for id, r in pairs(all) do
        if id ~= sid and (when == nil or r[5] + r[6] < when) then lru, when = id, r[5] + r[6] end
      end
      all[lru] = nil
      S.del(lru)
      evicted[#evicted + 1] = lru
      n = n - 1
    end
  else
    S.sweep(8)
  end
else
  if max > 0 then
    local n = 0
    for _ in pairs(S.map) do n = n + 1 end
    while n > max do
      local lru, when = nil, nil
      for id, r in pairs(S.map) do
        if id ~= sid and (when == nil or r[5] + r[6] < when) then lru, when = id, r[5] + r[6] end
      end
      S.del(lru)
      evicted[#evicted + 1] = lru
      n = n - 1
    end
  end
  S.save()
end
return { 'ok', evicted }
