-- Renewal: a new refresh id for a session whose refresh token expired while its access token lives.
-- KEYS: user sessions, 0.1 index
-- ARGV: legacy record prefix, now, sessionId, presentedHash, successorHash, parentHash ('' = unknown),
--       refreshTtlMs, maxSessionAgeMs, extraMs, graceMs, jkt (the DPoP key the request proved, '' = none)
-- Returns { 'ok', grace, ahead, record } | { 'missing' } | { 'stale' } | { 'capped' } | { 'key' }
local now = tonumber(ARGV[2])
local map = load(now, ARGV[1])
local sid = ARGV[3]
local r = map[sid]
if r == nil then return { 'missing' } end
if r[12] and r[12] ~= ARGV[11] then return { 'key' } end
if now >= r[5] + tonumber(ARGV[8]) then return { 'capped' } end
local presented, successor, parent = ARGV[4], ARGV[5], ARGV[6]
local grace, ahead = 0, 0
if r[1] == presented then
  advance(r, presented, successor, now, tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]))
elseif r[2] == presented and now - (r[5] + r[3]) < tonumber(ARGV[10]) and r[1] == successor and r[5] + r[4] > now then
  -- Tabs renewing at once get the same (still valid) successor.
  grace = 1
elseif parent ~= '' and r[1] == parent then
  ahead = 1
  advance(r, presented, successor, now, tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]))
else
  return { 'stale' }
end
r[6] = now - r[5]
save(map)
return { 'ok', grace, ahead, out(sid, r) }
