-- Moves a user's 0.1 sessions into the user's key and deletes the 0.1 keys.
-- KEYS: user sessions, 0.1 index, then the 0.1 session keys the caller read from the index
-- ARGV: now, not-before, small, the 0.1 session key prefix
-- Returns { 'ok' } | { 'again' } (the index names a session whose key was not declared: read it again)
local declared = {}
for i = 3, #KEYS do declared[KEYS[i]] = true end
local members = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, sid in ipairs(members) do
  if not declared[ARGV[4] .. sid] then return { 'again' } end
end

-- A 0.1 session hash → a record (nil when it is gone or unreadable).
local function from_legacy (key)
  local flat = redis.call('HGETALL', key)
  if not flat[1] then return nil end
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  local function joined (name)
    local v = f[name]
    if v == nil then return nil end
    local n = 1
    while f[name .. '.' .. n] do v = v .. f[name .. '.' .. n]; n = n + 1 end
    return v
  end
  local st = tonumber(f.st)
  local pttl = redis.call('PTTL', key)
  if not st or not f.h or pttl <= 0 then return nil end
  return {
    f.h, f.p or false, f.pt and (tonumber(f.pt) - st) or false,
    tonumber(f.re) - st, st, (tonumber(f.lu) or st) - st, NOW + pttl - st,
    joined('ip') or '', joined('ua') or '', joined('ro') or '[]', joined('cl') or '{}', false
  }
end

open()
for _, sid in ipairs(members) do
  local key = ARGV[4] .. sid
  if S.get(sid) == nil then
    local r = from_legacy(key)
    if r ~= nil and alive(r) then S.put(sid, r) end
  end
  redis.call('DEL', key)
end
redis.call('DEL', KEYS[2])
S.save()
return { 'ok' }
