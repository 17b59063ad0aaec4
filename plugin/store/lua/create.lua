-- KEYS: user sessions, 0.1 index
-- ARGV: legacy record prefix, now, sessionId, refreshHash, refreshExpiresAt, extraMs, ip, ua, roles, claims,
--       maxSessions (0 = unlimited), createdAt, jkt ('' = not bound)
-- Returns the ids of sessions evicted by maxSessions (least recently used first).
local now = tonumber(ARGV[2])
local map = load(now, ARGV[1])
local st = tonumber(ARGV[12])
local re = tonumber(ARGV[5])
map[ARGV[3]] = { ARGV[4], false, false, re - st, st, now - st, re + tonumber(ARGV[6]) - st, ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[13] ~= '' and ARGV[13] or false }
local evicted = {}
local max = tonumber(ARGV[11])
if max > 0 then
  local n = 0
  for _ in pairs(map) do n = n + 1 end
  while n > max do
    local lru, at = nil, nil
    for sid, r in pairs(map) do
      if sid ~= ARGV[3] and (at == nil or r[5] + r[6] < at) then lru, at = sid, r[5] + r[6] end
    end
    map[lru] = nil
    evicted[#evicted + 1] = lru
    n = n - 1
  end
end
save(map)
return evicted
