-- Deletes every session of one user. KEYS: user sessions, 0.1 index ; ARGV: legacy record prefix, now
-- Returns the ids that were live.
local map = load(tonumber(ARGV[2]), ARGV[1])
local gone = {}
for sid in pairs(map) do gone[#gone + 1] = sid end
redis.call('DEL', KEYS[1])
return gone
