-- Rotation, the grace window, catching up with a lost rotation, and reuse detection, atomically.
-- KEYS: user sessions, 0.1 index
-- ARGV: now, not-before, small, sessionId, presentedHash, successorHash, parentHash ('' = unknown), refreshTtlMs,
--       maxSessionAgeMs, extraMs, rotate ('1'|'0'), graceMs, roles ('' = keep), claims ('' = keep),
--       jkt (the DPoP key the request proved, '' = none), reportSuccessor ('1': see below)
-- Returns { 'ok', grace, ahead, record } | { 'missing' } | { 'reused' } | { 'key' } | { 'successor' } | { 'legacy' }
open()
local sid = ARGV[4]
local r = S.get(sid)
if r == nil then
  S.save()
  if legacy() then return { 'legacy' } end
  return { 'missing' }
end
local presented, successor, parent = ARGV[5], ARGV[6], ARGV[7]
local rotate = ARGV[11] == '1'
local kind
if r[1] == presented then
  kind = 'current'
elseif rotate and r[2] == presented and NOW - (r[5] + r[3]) < tonumber(ARGV[12]) and (r[1] == successor or ARGV[16] == '1') then
  if r[1] ~= successor then
    -- The previous token within the grace window, whose successor is not the caller's derivation: a
    -- re-authentication's (reauth.lua). Nothing changes; the caller asks again with that derivation.
    S.save()
    return { 'successor' }
  end
  kind = 'grace'
elseif rotate and parent ~= '' and r[1] == parent then
  -- The presented token is the successor of the current one: a rotation this record never saw (a failover
  -- lost it). Catch up, then rotate as usual; never reuse.
  kind = 'ahead'
else
  -- A live session's refresh id that is neither current nor previous-in-grace: reuse. Kill the session,
  -- whatever key the request proves: a thief's proof must not save a session its victim's reuse gave away.
  S.del(sid)
  S.save()
  return { 'reused' }
end
-- A session bound to a DPoP key refreshes only with a proof by that key; its refresh token alone does nothing.
if r[12] and r[12] ~= ARGV[15] then
  S.save()
  return { 'key' }
end
local grace, ahead = 0, 0
if kind == 'grace' then
  grace = 1
elseif kind == 'ahead' then
  ahead = 1
  advance(r, presented, successor, tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]))
elseif rotate then
  advance(r, presented, successor, tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]))
end
r[6] = NOW - r[5]
if not r[12] and ARGV[15] ~= '' then r[12] = ARGV[15] end
if ARGV[13] ~= '' then r[10] = ARGV[13] end
if ARGV[14] ~= '' then r[11] = ARGV[14] end
S.put(sid, r)
S.save()
return { 'ok', grace, ahead, out(sid, r) }
