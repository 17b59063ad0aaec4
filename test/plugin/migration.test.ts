// Sessions written by tokengate 0.1 keep working after the upgrade: a hash per session plus a sorted-set index
// per user, and tgr1 refresh tokens. The first script that touches a user moves all their 0.1 sessions into
// the user's one key and deletes the old keys. The 0.1 keys are written here by hand, as 0.1 wrote them.
import { createHash, createHmac, randomBytes } from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { Redis } from 'ioredis'
import t from 'tap'
import { buildApp, SECRET } from '../helpers/app.js'
import { keysUnder, legacyIndexKey, legacyRecordKey, readSession, readSessions, sessionsKey, userEpoch } from '../helpers/redis.js'
import { craftAccessToken, refreshParts } from '../helpers/tokens.js'

const ACCESS_MS = 600_000
const DAY_MS = 86_400_000
// Longer than 64 bytes: 0.1 kept it as ua + ua.1.
const UA = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'

// The keys 0.1 derived from the secret (plugin/tokens.ts, Tokens.create): unchanged since.
const MAC_KEY = createHmac('sha256', Buffer.from(SECRET, 'utf8')).update('tokengate refresh-token mac v1').digest()
const SUCCESSOR_KEY = createHmac('sha256', Buffer.from(SECRET, 'utf8')).update('tokengate refresh-token successor v1').digest()

const newId = (): string => randomBytes(16).toString('base64url')
/** 0.1's refresh hash: 22 base64url characters of the SHA-256 (132 bits). */
const legacyHash = (refreshId: string): string => createHash('sha256').update(refreshId).digest('base64url').slice(0, 22)
const successorOf = (sessionId: string, refreshId: string): string => createHmac('sha256', SUCCESSOR_KEY).update(`${sessionId}.${refreshId}`).digest('base64url').slice(0, 22)

/** A 0.1 refresh token: tgr1.<b64url user>.<session>.<refresh id>.<expiry base36>.<mac>. */
function tgr1 (userId: string, sessionId: string, refreshId: string, expiresAt: number): string {
  const body = `tgr1.${Buffer.from(userId, 'utf8').toString('base64url')}.${sessionId}.${refreshId}.${expiresAt.toString(36)}`
  return `${body}.${createHmac('sha256', MAC_KEY).update(body).digest('base64url')}`
}

/** Splits a value as 0.1 did: the first 64 bytes in `name`, the rest in name.1, name.2, ... (ASCII here). */
function chunked (name: string, value: string): string[] {
  const out: string[] = []
  for (let i = 0; i * 64 < value.length; i++) out.push(i === 0 ? name : `${name}.${i}`, value.slice(i * 64, (i + 1) * 64))
  return out
}

interface Legacy {
  sessionId: string
  /** The refresh id the client holds (with its tgr1 token). */
  refreshId: string
  refreshToken: string
  startedAt: number
  lastUsedAt: number
  refreshExpiresAt: number
  recordExpiresAt: number
  /** An access token 0.1 minted for the session (same secret, same claims). */
  accessToken: string
}

interface LegacyOptions {
  userId?: string
  ip?: string
  ua?: string
  /** The session was rotated under 0.1 this long ago: the client may still hold the previous token. */
  rotatedMsAgo?: number
}

/** Writes one 0.1 session: its hash (PEXPIREAT the record expiry) and its member in the user's index. */
async function writeLegacy (redis: Redis, prefix: string, o: LegacyOptions = {}): Promise<Legacy & { previousRefreshId?: string, previousRefreshToken?: string }> {
  const userId = o.userId ?? 'u-alice'
  const sessionId = newId()
  const now = Date.now()
  const startedAt = now - 60_000
  const lastUsedAt = now - 30_000
  const refreshExpiresAt = startedAt + DAY_MS
  const recordExpiresAt = refreshExpiresAt + ACCESS_MS
  const previous = o.rotatedMsAgo !== undefined ? newId() : undefined
  const refreshId = previous !== undefined ? successorOf(sessionId, previous) : newId()
  const fields = ['h', legacyHash(refreshId), 're', String(refreshExpiresAt), 'st', String(startedAt), 'lu', String(lastUsedAt),
    'ro', JSON.stringify(['user']), 'cl', JSON.stringify({ name: 'Alice' }), ...chunked('ip', o.ip ?? '203.0.113.9'), ...chunked('ua', o.ua ?? UA)]
  if (previous !== undefined) fields.push('p', legacyHash(previous), 'pt', String(now - o.rotatedMsAgo!))
  const record = legacyRecordKey(prefix, userId, sessionId)
  const index = legacyIndexKey(prefix, userId)
  await redis.hset(record, ...fields)
  await redis.pexpireat(record, recordExpiresAt)
  await redis.zadd(index, recordExpiresAt, sessionId)
  const latest = await redis.zrange(index, -1, '-1', 'WITHSCORES')
  await redis.pexpireat(index, Number(latest[1]))
  return {
    sessionId,
    refreshId,
    refreshToken: tgr1(userId, sessionId, refreshId, refreshExpiresAt),
    ...(previous !== undefined ? { previousRefreshId: previous, previousRefreshToken: tgr1(userId, sessionId, previous, refreshExpiresAt) } : {}),
    startedAt,
    lastUsedAt,
    refreshExpiresAt,
    recordExpiresAt,
    accessToken: craftAccessToken({ sub: userId, sid: sessionId, roles: ['user'], name: 'Alice', auth_time: Math.floor(startedAt / 1000) })
  }
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

async function refresh (app: FastifyInstance, refreshToken: string): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken } })
}

t.test('GET /auth/sessions lists a 0.1 session, which then lives in the new key only', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const legacy = await writeLegacy(redis, prefix)
  t.same(await keysUnder(redis, prefix), [legacyIndexKey(prefix, 'u-alice'), legacyRecordKey(prefix, 'u-alice', legacy.sessionId)].sort(), 'the 0.1 keys, as 0.1 left them')
  t.ok('ua.1' in await redis.hgetall(legacyRecordKey(prefix, 'u-alice', legacy.sessionId)), 'with the user agent split as 0.1 split it')

  const res = await app.inject({ url: '/auth/sessions', headers: bearer(legacy.accessToken) })
  t.equal(res.statusCode, 200, res.body)
  t.same(res.json(), [{
    id: legacy.sessionId,
    createdAt: new Date(legacy.startedAt).toISOString(),
    lastUsedAt: new Date(legacy.lastUsedAt).toISOString(),
    expiresAt: new Date(legacy.refreshExpiresAt).toISOString(),
    ip: '203.0.113.9',
    userAgent: UA,
    current: true
  }], 'the session is listed with its times, ip and whole user agent')

  t.same(await keysUnder(redis, prefix), [sessionsKey(prefix, 'u-alice')], 'the 0.1 keys are gone; the user\'s new key holds the session')
  const s = await readSession(redis, prefix, 'u-alice', legacy.sessionId)
  if (s === undefined) return t.fail('the session is in the new key')
  t.equal(s.h, legacyHash(legacy.refreshId), 'h is the 0.1 hash, as it was')
  t.equal(s.p, null, 'no previous hash')
  t.match(s, { st: legacy.startedAt, lu: legacy.lastUsedAt, re: legacy.refreshExpiresAt, ip: '203.0.113.9', ua: UA, ro: ['user'], cl: { name: 'Alice' } }, 'every field moved over')
  t.ok(Math.abs(s.x - legacy.recordExpiresAt) < 1000, `the record expiry is the 0.1 record's (off by ${s.x - legacy.recordExpiresAt} ms)`)
  t.equal(Number(await redis.pexpiretime(sessionsKey(prefix, 'u-alice'))), s.x, 'and the new key expires with it')
})

t.test('a tgr1 refresh token rotates into a tgr2 one; inside the grace window it gets the same successor', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const legacy = await writeLegacy(redis, prefix)

  const r = await refresh(app, legacy.refreshToken)
  t.equal(r.statusCode, 200, r.body)
  const next = r.json()
  t.equal(next.sessionId, legacy.sessionId, 'the same session')
  t.match(next.refreshToken, /^tgr2\./, 'a tgr2 refresh token')
  t.equal(refreshParts(next.refreshToken).parentHash, legacyHash(legacy.refreshId), 'naming the tgr1 token as its parent')
  t.equal(refreshParts(next.refreshToken).refreshId, successorOf(legacy.sessionId, legacy.refreshId), 'its id is the successor 0.1 would have derived')
  const me = await app.inject({ url: '/me', headers: bearer(next.accessToken) })
  t.equal(me.statusCode, 200, me.body)
  t.same(me.json(), { userId: 'u-alice', sessionId: legacy.sessionId, roles: ['user'], claims: { name: 'Alice' } }, 'the new access token carries the 0.1 roles and claims')
  t.same(await keysUnder(redis, prefix), [sessionsKey(prefix, 'u-alice')], 'the 0.1 keys are gone')
  t.match(await readSession(redis, prefix, 'u-alice', legacy.sessionId), { h: legacyHash(refreshParts(next.refreshToken).refreshId), p: legacyHash(legacy.refreshId) }, 'the session rotated')

  const again = await refresh(app, legacy.refreshToken)
  t.equal(again.statusCode, 200, again.body)
  t.equal(again.json().refreshToken, next.refreshToken, 'the tgr1 token inside the grace window gets the same successor')

  const onward = await refresh(app, next.refreshToken)
  t.equal(onward.statusCode, 200, `the tgr2 token rotates in turn: ${onward.body}`)
})

t.test('a session rotated under 0.1 keeps its grace window: the previous tgr1 token gets the current one\'s successor', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const legacy = await writeLegacy(redis, prefix, { rotatedMsAgo: 1000 })
  const r = await refresh(app, legacy.previousRefreshToken!)
  t.equal(r.statusCode, 200, `the previous token, 1 s after the 0.1 rotation: ${r.body}`)
  t.equal(refreshParts(r.json().refreshToken).refreshId, legacy.refreshId, 'answered with the current refresh id, as a grace refresh')
  const s = await readSession(redis, prefix, 'u-alice', legacy.sessionId)
  t.equal(s?.h, legacyHash(legacy.refreshId), 'nothing rotated')
  t.equal(s?.p, legacyHash(legacy.previousRefreshId!), 'the previous hash moved over')
  const current = await refresh(app, legacy.refreshToken)
  t.equal(current.statusCode, 200, `the current tgr1 token rotates: ${current.body}`)
})

t.test('logout-all of a user with two 0.1 sessions: everything of theirs is gone', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const alice = await writeLegacy(redis, prefix)
  const one = await writeLegacy(redis, prefix, { userId: 'u-bob' })
  const two = await writeLegacy(redis, prefix, { userId: 'u-bob', ua: 'curl/8.5.0', ip: '2001:db8::7' })
  t.equal((await keysUnder(redis, `${prefix}:{u-bob}`)).length, 3, 'two session hashes and the index of bob')

  const out = await app.inject({ method: 'POST', url: '/auth/logout-all', headers: bearer(one.accessToken) })
  t.equal(out.statusCode, 204, out.body)
  t.same(await keysUnder(redis, `${prefix}:{u-bob}`), [], 'no key of bob is left, old or new')
  t.not(await userEpoch(redis, prefix, 'u-bob'), null, 'one epoch entry for bob instead')
  for (const s of [one, two]) {
    t.equal(await redis.zscore(`${prefix}:revoked`, s.sessionId), null, 'logout-all writes no entry per session')
    t.equal((await app.inject({ url: '/me', headers: bearer(s.accessToken) })).json().code, 'TOKENGATE_TOKEN_REVOKED', 'its access token is refused')
    t.equal((await refresh(app, s.refreshToken)).json().code, 'TOKENGATE_REFRESH_INVALID', 'its tgr1 refresh token is refused')
  }
  t.same(await keysUnder(redis, `${prefix}:{u-alice}`), [legacyIndexKey(prefix, 'u-alice'), legacyRecordKey(prefix, 'u-alice', alice.sessionId)].sort(), 'another user\'s 0.1 keys are untouched')
})

t.test('an access token minted by 0.1 keeps working across the migration, until the session is revoked', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const legacy = await writeLegacy(redis, prefix)
  const other = await writeLegacy(redis, prefix)
  t.equal((await app.inject({ url: '/me', headers: bearer(legacy.accessToken) })).statusCode, 200, 'before the migration')
  t.equal((await app.inject({ url: '/auth/sessions', headers: bearer(other.accessToken) })).statusCode, 200, 'a request that migrates the user')
  t.same(Object.keys(await readSessions(redis, prefix, 'u-alice') ?? {}).sort(), [legacy.sessionId, other.sessionId].sort(), 'both sessions moved')
  t.equal((await app.inject({ url: '/me', headers: bearer(legacy.accessToken) })).statusCode, 200, 'after the migration')

  const del = await app.inject({ method: 'DELETE', url: `/auth/sessions/${legacy.sessionId}`, headers: bearer(other.accessToken) })
  t.equal(del.statusCode, 204, del.body)
  const me = await app.inject({ url: '/me', headers: bearer(legacy.accessToken) })
  t.equal(me.statusCode, 401)
  t.equal(me.json().code, 'TOKENGATE_TOKEN_REVOKED', 'refused once revoked')
  t.equal((await app.inject({ url: '/me', headers: bearer(other.accessToken) })).statusCode, 200, 'the other migrated session still works')
})

t.test('a request about a session that is not stored does not lose the user\'s 0.1 sessions', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const a = await writeLegacy(redis, prefix)
  const b = await writeLegacy(redis, prefix)
  // A correctly signed tgr1 token of a session that expired or was revoked under 0.1: the store answers "missing".
  const gone = tgr1('u-alice', newId(), newId(), Date.now() + DAY_MS)
  const r = await refresh(app, gone)
  t.equal(r.statusCode, 401, r.body)
  t.equal(r.json().code, 'TOKENGATE_REFRESH_INVALID')
  const unknown = await app.inject({ method: 'DELETE', url: '/auth/sessions/no-such-session', headers: bearer(a.accessToken) })
  t.equal(unknown.statusCode, 404, unknown.body)

  t.same(Object.keys(await readSessions(redis, prefix, 'u-alice') ?? {}).sort(), [a.sessionId, b.sessionId].sort(), 'both 0.1 sessions are in the new key')
  t.same(await keysUnder(redis, prefix), [sessionsKey(prefix, 'u-alice')], 'and the old keys are gone')
  for (const s of [a, b]) t.equal((await refresh(app, s.refreshToken)).statusCode, 200, 'each still refreshes')
})
