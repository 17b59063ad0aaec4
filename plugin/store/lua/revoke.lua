-- Deletes some sessions of one user. KEYS: user sessions, 0.1 index ; ARGV: now, not-before, small, sessionId...
-- Returns { 'ok', { the ids that were live } } | { 'legacy' }
open()
local gone, missed = {}, false
for i = 4, #ARGV do
  if S.get(ARGV[i]) ~= nil then
    S.del(ARGV[i])
    gone[#gone + 1] = ARGV[i]
  else
    missed = true
  end
end
S.save()
if missed and legacy() then return { 'legacy' } end
return { 'ok', gone }
