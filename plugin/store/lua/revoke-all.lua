-- Deletes every session of one user. KEYS: user sessions, 0.1 index ; ARGV: now, not-before, small
-- Returns { 'ok', ids, exact }: in the string form the ids of the live sessions (exact = 1); in the hash form
-- every field (exact = 0: sessions that died but were not yet swept are among them; the caller, which read
-- the sessions just before, tells them apart). | { 'legacy' }
if legacy() then return { 'legacy' } end
open()
if S.hash then
  local ids = redis.call('HKEYS', K)
  redis.call('DEL', K)
  return { 'ok', ids, 0 }
end
local gone = {}
for sid in pairs(S.map) do gone[#gone + 1] = sid end
redis.call('DEL', K)
return { 'ok', gone, 1 }
