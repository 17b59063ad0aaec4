-- Shared by every session script (prepended at load time).
--
-- All sessions of one user live in ONE key, KEYS[1] = '<prefix>:{<user>}:s', in one of two forms:
--  * a string, a MessagePack map { [sessionId] = record } (the form tokengate 0.2 wrote), while the user
--    has at most SMALL sessions: one key and one value, the least memory for the usual user;
--  * a hash { [sessionId] = MessagePack record }, once the user has more: every operation on a session
--    reads and writes that session's field alone, so its cost does not grow with the user's sessions.
-- The key expires natively with the latest session it has held (PXAT / PEXPIREAT ... GT).
--
-- A record is an array (times in ms; those after st as offsets from it):
--   [1] h   hash of the current refresh id (22 characters)  [2] p   hash of the previous one, or false
--   [3] pt  when it was rotated, or false                 [4] re  refresh expiry
--   [5] st  session start (ms since the epoch)            [6] lu  last used
--   [7] x   record expiry (re + access TTL + clock tolerance)
--   [8] ip  [9] ua ('' when unknown)  [10] ro roles JSON  [11] cl claims JSON  [12] jkt, or false
--   [13] at authentication time, or false (= st)  [14] acr, or false  [15] amr JSON, or false
--   [16] os the OpenID provider's session id, or false
-- (0.2 records end at [12]: the missing values read as false.)
-- A session is gone once past its record expiry, or when it started before the not-before epoch ARGV[2]
-- (revokeEveryone): every script drops such sessions when it meets them.
--
-- Sessions of the 0.1 layout (a hash '<prefix>:{<user>}:s:<id>' per session, indexed by the sorted set
-- KEYS[2] = '<prefix>:{<user>}:sessions') are moved in by migrate-0.1.lua, whose caller declares their keys:
-- a script that finds KEYS[2] answers { 'legacy' } and is run again after the move.

local K = KEYS[1]
local NOW = tonumber(ARGV[1])
local NB = tonumber(ARGV[2])
-- How many sessions a user keeps in the string form (8; the caller passes it, so tests can try the hash form).
local SMALL = tonumber(ARGV[3])
-- revokeEveryone's epoch, read here when the caller gives its key: the later of it and the caller's wins.
if EVERYONE_KEY then
  local everyone = tonumber(redis.call('GET', EVERYONE_KEY) or '0')
  if everyone ~= nil and everyone > NB then NB = everyone end
end

-- Numbers are formatted by hand: Redis would print large ones in exponent form.
local function int (n) return string.format('%.0f', n) end

local function expires_at (r) return r[5] + r[7] end
local function alive (r) return expires_at(r) > NOW and r[5] >= NB end

local function legacy () return redis.call('EXISTS', KEYS[2]) == 1 end

-- Runs a variadic command over a long list in slices (Lua's unpack has a limit).
local function sliced (cmd, list, step)
  for i = 1, #list, step do
    redis.call(cmd, K, unpack(list, i, math.min(i + step - 1, #list)))
  end
end

-- Pushes the key's expiry out to `at` (never in): GT leaves a later expiry alone and skips a key without
-- one, which only a key just created as a hash can be.
local function extend (at)
  if redis.call('PEXPIREAT', K, int(at), 'GT') == 0 and redis.call('PTTL', K) == -1 then
    redis.call('PEXPIREAT', K, int(at))
  end
end

-- The user's sessions. get/put/del work on one session; each() on all of them (O(sessions)).
local S = { hash = false, map = nil, dirty = false }

local function open ()
  local t = redis.call('TYPE', K)['ok']
  if t == 'hash' then
    S.hash = true
  else
    S.map = {}
    if t == 'string' then S.map = cmsgpack.unpack(redis.call('GET', K)) end
    for sid, r in pairs(S.map) do
      if not alive(r) then S.map[sid] = nil; S.dirty = true end
    end
  end
end

function S.get (sid)
  if not S.hash then return S.map[sid] end
  local raw = redis.call('HGET', K, sid)
  if not raw then return nil end
  local r = cmsgpack.unpack(raw)
  if alive(r) then return r end
  redis.call('HDEL', K, sid)
  return nil
end

function S.put (sid, r)
  if S.hash then
    redis.call('HSET', K, sid, cmsgpack.pack(r))
    extend(expires_at(r))
  else
    S.map[sid] = r
    S.dirty = true
  end
end

function S.del (sid)
  if S.hash then
    redis.call('HDEL', K, sid)
  else
    S.map[sid] = nil
    S.dirty = true
  end
end

-- Every live session: a table { [sid] = record } (dead ones met on the way are deleted).
function S.all ()
  if not S.hash then return S.map end
  local flat = redis.call('HGETALL', K)
  local out, dead = {}, {}
  for i = 1, #flat, 2 do
    local r = cmsgpack.unpack(flat[i + 1])
    if alive(r) then out[flat[i]] = r else dead[#dead + 1] = flat[i] end
  end
  sliced('HDEL', dead, 1000)
  return out
end

-- Drops dead sessions among a few sampled at random (a hash is never read whole on the hot path): each
-- login collects about as many dead sessions as it adds, so they stay a small share of the hash.
function S.sweep (n)
  if not S.hash then return end
  local flat = redis.call('HRANDFIELD', K, n, 'WITHVALUES')
  local dead = {}
  for i = 1, #flat, 2 do
    if not alive(cmsgpack.unpack(flat[i + 1])) then dead[#dead + 1] = flat[i] end
  end
  sliced('HDEL', dead, 1000)
end

-- Writes the map back (string form), expiring with its latest session; an empty map deletes the key.
-- A user past SMALL sessions moves to the hash form.
function S.save ()
  if S.hash or not S.dirty then return end
  local top, n = nil, 0
  for _, r in pairs(S.map) do
    n = n + 1
    local e = expires_at(r)
    if top == nil or e > top then top = e end
  end
  if top == nil then
    redis.call('DEL', K)
  elseif n > SMALL then
    redis.call('DEL', K)
    local args = {}
    for sid, r in pairs(S.map) do
      args[#args + 1] = sid
      args[#args + 1] = cmsgpack.pack(r)
    end
    sliced('HSET', args, 1000)
    redis.call('PEXPIREAT', K, int(top))
    S.hash = true
  else
    redis.call('SET', K, cmsgpack.pack(S.map), 'PXAT', int(top))
  end
  S.dirty = false
end

-- A record as Node reads it: times absolute (integer replies).
local function out (sid, r)
  local at = r[13]
  return {
    sid, r[1], r[2], r[3] and (r[5] + r[3]) or false, r[5] + r[4], r[5], r[5] + r[6], r[5] + r[7], r[8], r[9], r[10], r[11],
    r[12] or false, at and (r[5] + at) or r[5], r[14] or false, r[15] or false, r[16] or false
  }
end

-- Moves a session to its next refresh id: the presented one becomes the previous (for the grace window).
local function advance (r, presented, successor, refresh_ttl, max_age, extra)
  local refresh_expires_at = math.min(NOW + refresh_ttl, r[5] + max_age)
  r[2] = presented
  r[3] = NOW - r[5]
  r[1] = successor
  r[4] = refresh_expires_at - r[5]
  r[7] = refresh_expires_at + extra - r[5]
end
