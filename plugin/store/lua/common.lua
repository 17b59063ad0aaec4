-- Shared by every session script (prepended at load time).
--
-- All sessions of one user live in ONE string key, KEYS[1] = '<prefix>:{<user>}:s': a MessagePack map
-- { [sessionId] = record }, expiring natively with its latest session (PXAT). A record is an array:
--   [1] h   hash of the current refresh id (22 characters)  [2] p   hash of the previous one, or false
--   [3] pt  when it was rotated, ms after st, or false    [4] re  refresh expiry, ms after st
--   [5] st  session start (ms since the epoch)            [6] lu  last used, ms after st
--   [7] x   record expiry, ms after st (re + access TTL + clock tolerance)
--   [8] ip  [9] ua ('' when unknown)  [10] ro roles JSON  [11] cl claims JSON  [12] jkt, or false
-- A session past its record expiry is gone: every script drops it, and the key expires with the last.
--
-- Sessions written by the 0.1 layout (a hash '<prefix>:{<user>}:s:<id>' per session and a sorted set
-- KEYS[2] = '<prefix>:{<user>}:sessions') are moved into the new key by whichever script touches the
-- user first; the keys share the user's hash tag, so they live in the same Cluster slot.

-- Numbers are formatted by hand: Redis would print large ones in exponent form.
local function int (n) return string.format('%.0f', n) end

local function expires_at (r) return r[5] + r[7] end

-- A 0.1 session hash → a record (nil when it is gone or unreadable).
local function from_legacy (key, now)
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
    tonumber(f.re) - st, st, (tonumber(f.lu) or st) - st, now + pttl - st,
    joined('ip') or '', joined('ua') or '', joined('ro') or '[]', joined('cl') or '{}', false
  }
end

-- Writes the map back, expiring with its latest session; an empty map deletes the key.
local function save (map)
  local top = nil
  for _, r in pairs(map) do
    local e = expires_at(r)
    if top == nil or e > top then top = e end
  end
  if top == nil then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], cmsgpack.pack(map), 'PXAT', int(top))
  end
end

-- The user's live sessions, with any 0.1 sessions moved in (and their old keys deleted).
local function load (now, legacy_prefix)
  local raw = redis.call('GET', KEYS[1])
  local map = {}
  if raw then map = cmsgpack.unpack(raw) end
  local migrated = redis.call('EXISTS', KEYS[2]) == 1
  if migrated then
    for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
      local key = legacy_prefix .. sid
      if map[sid] == nil then map[sid] = from_legacy(key, now) end
      redis.call('DEL', key)
    end
    redis.call('DEL', KEYS[2])
  end
  for sid, r in pairs(map) do
    if expires_at(r) <= now then map[sid] = nil end
  end
  -- Written now: the old keys are gone, and a script may return without saving (missing, stale, nothing revoked).
  if migrated then save(map) end
  return map
end

-- A record as Node reads it: times absolute (integer replies).
local function out (sid, r)
  return { sid, r[1], r[2], r[3] and (r[5] + r[3]) or false, r[5] + r[4], r[5], r[5] + r[6], r[5] + r[7], r[8], r[9], r[10], r[11], r[12] or false }
end

-- Moves a session to its next refresh id: the presented one becomes the previous (for the grace window).
local function advance (r, presented, successor, now, refresh_ttl, max_age, extra)
  local refresh_expires_at = math.min(now + refresh_ttl, r[5] + max_age)
  r[2] = presented
  r[3] = now - r[5]
  r[1] = successor
  r[4] = refresh_expires_at - r[5]
  r[7] = refresh_expires_at + extra - r[5]
end
