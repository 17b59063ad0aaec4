-- Re-authentication of a live session (a login made with its access token; RFC 9470 step-up): a new
-- authentication time, acr, amr, roles and claims, and a rotated refresh hash whose predecessor counts as the
-- previous one (the grace window), not as reuse. The successor is derived in Node from the current hash
-- (under a server key), so this runs twice: once to read the current hash, once to compare-and-set.
-- KEYS: user sessions, 0.1 index
-- ARGV: now, not-before, small, sessionId, expectedHash ('' = only read the current hash), successorHash,
--       refreshTtlMs, maxSessionAgeMs, extraMs, roles, claims, acr ('' = none), amr JSON ('' = none),
--       jkt (the DPoP key the login proved, '' = none)
-- Returns { 'hash', h } | { 'ok', record } | { 'race' } | { 'missing' } | { 'key' } | { 'capped' } | { 'legacy' }
open()
local sid = ARGV[4]
local r = S.get(sid)
if r == nil then
  S.save()
  if legacy() then return { 'legacy' } end
  return { 'missing' }
end
-- A session bound to a DPoP key is re-authenticated only by a login that proves that key.
if r[12] and r[12] ~= ARGV[14] then S.save(); return { 'key' } end
-- Past its start + maxSessionAge no token of the session may be issued: the login starts a new session.
if NOW >= r[5] + tonumber(ARGV[8]) then S.save(); return { 'capped' } end
local expected = ARGV[5]
if expected == '' then S.save(); return { 'hash', r[1] } end
-- A refresh rotated the session since the hash was read: the successor was derived from another hash.
if r[1] ~= expected then S.save(); return { 'race' } end
local opt = function (v) if v == '' then return false end return v end
advance(r, expected, ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]))
r[6] = NOW - r[5]
r[10] = ARGV[10]
r[11] = ARGV[11]
if not r[12] and ARGV[14] ~= '' then r[12] = ARGV[14] end
r[13] = NOW - r[5]
r[14] = opt(ARGV[12])
r[15] = opt(ARGV[13])
S.put(sid, r)
S.save()
return { 'ok', out(sid, r) }
