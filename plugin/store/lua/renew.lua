-- Renewal: a new refresh id for a session whose refresh token expired while its access token lives.
-- KEYS: user sessions, 0.1 index
-- ARGV: now, not-before, small, sessionId, presentedHash, successorHash, parentHash ('' = unknown), refreshTtlMs,
--       maxSessionAgeMs, extraMs, graceMs, jkt (the DPoP key the request proved, '' = none)
-- Returns { 'ok', grace, ahead, record } | { 'missing' } | { 'stale' } | { 'capped' } | { 'key' } | { 'legacy' }
open()
local sid = ARGV[4]
local r = S.get(sid)
if r == nil then
  S.save()
  if legacy() then return { 'legacy' } end
  return { 'missing' }
end
if r[12] and r[12] ~= ARGV[12] then S.save(); return { 'key' } end
if NOW >= r[5] + tonumber(ARGV[9]) then S.save(); return { 'capped' } end
local presented, successor, parent = ARGV[5], ARGV[6], ARGV[7]
local grace, ahead = 0, 0
if r[1] == presented then
  advance(r, presented, successor, tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]))
elseif r[2] == presented and NOW - (r[5] + r[3]) < tonumber(ARGV[11]) and r[1] == successor and r[5] + r[4] > NOW then
  -- Tabs renewing at once get the same (still valid) successor.
  grace = 1
elseif parent ~= '' and r[1] == parent then
  ahead = 1
  advance(r, presented, successor, tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]))
else
  S.save()
  return { 'stale' }
end
r[6] = NOW - r[5]
S.put(sid, r)
S.save()
return { 'ok', grace, ahead, out(sid, r) }
