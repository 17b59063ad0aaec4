-- Live sessions of one user. KEYS: user sessions, 0.1 index ; ARGV: legacy record prefix, now
-- (load() writes 0.1 sessions it moved over back at once.)
local map = load(tonumber(ARGV[2]), ARGV[1])
local rows = {}
for sid, r in pairs(map) do rows[#rows + 1] = out(sid, r) end
return rows
