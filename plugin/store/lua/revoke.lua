-- Deletes some sessions of one user. KEYS: user sessions, 0.1 index ; ARGV: legacy record prefix, now, sessionId...
-- Returns the ids that were live.
local map = load(tonumber(ARGV[2]), ARGV[1])
local gone = {}
for i = 3, #ARGV do
  if map[ARGV[i]] ~= nil then
    map[ARGV[i]] = nil
    gone[#gone + 1] = ARGV[i]
  end
end
if #gone > 0 then save(map) end
return gone
