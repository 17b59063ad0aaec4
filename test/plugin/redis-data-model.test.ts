// The Redis data model (docs/redis.md) as the plugin writes it, with the defaults:
// access token 10 minutes, refresh token 1 day, clockTolerance 0. All sessions of a user live in ONE
// string key, a MessagePack map { sessionId: record }, expiring natively with the user's latest session.
import { decode as decodeMsgpack } from '@msgpack/msgpack'
import t from 'tap'
import type { Test } from 'tap'
import type { Redis } from 'ioredis'
import { buildApp, login } from '../helpers/app.js'
import { keysUnder, readSession, readSessions, sessionsKey } from '../helpers/redis.js'
import { hashOf, refreshParts } from '../helpers/tokens.js'

const ACCESS_MS = 10 * 60_000
const DAY_MS = 24 * 3_600_000
const SLACK_MS = 5000

/** Every key under the prefix with every value it holds, of every type, as raw bytes. */
async function dump (redis: Redis, prefix: string): Promise<{ keys: string[], bytes: Buffer }> {
  const keys = await keysUnder(redis, prefix)
  const parts: Buffer[] = []
  const text = (...values: string[]): void => { for (const v of values) parts.push(Buffer.from(v + '\n')) }
  for (const key of keys) {
    text(key)
    const type = await redis.type(key)
    if (type === 'string') {
      parts.push((await redis.getBuffer(key)) ?? Buffer.alloc(0))
    } else if (type === 'hash') {
      for (const [f, v] of Object.entries(await redis.hgetall(key))) text(f, v)
    } else if (type === 'zset') {
      text(...await redis.zrange(key, 0, '-1', 'WITHSCORES'))
    } else if (type === 'set') {
      text(...await redis.smembers(key))
    } else if (type === 'list') {
      text(...await redis.lrange(key, 0, -1))
    } else if (type !== 'none') {
      text(`<${type}>`)
    }
  }
  return { keys, bytes: Buffer.concat(parts) }
}

/** Checks that no secret appears in Redis, neither as text nor (for base64url values) as the bytes it encodes. */
async function assertNoSecrets (t: Test, redis: Redis, prefix: string, secrets: Record<string, string>): Promise<void> {
  const { keys, bytes } = await dump(redis, prefix)
  t.ok(keys.length > 0, 'there is something to look at')
  for (const [what, value] of Object.entries(secrets)) {
    t.notOk(bytes.includes(Buffer.from(value)), `${what} appears nowhere in Redis`)
    const raw = Buffer.from(value, 'base64url')
    if (/^[\w-]+$/.test(value) && raw.length >= 8) t.notOk(bytes.includes(raw), `${what} appears nowhere in Redis as raw bytes either`)
  }
}

const pexpiretime = async (redis: Redis, key: string): Promise<number> => Number(await redis.call('PEXPIRETIME', key))

function near (t: Test, actual: number, expected: number, tol: number, what: string): void {
  t.ok(Math.abs(actual - expected) <= tol, `${what}: ${actual} within ${tol}ms of ${expected} (off by ${actual - expected})`)
}

t.test('login writes one key for the user: a MessagePack map of sessions, expiring natively', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const before = Date.now()
  const res = await app.inject({ method: 'POST', url: '/auth/login', headers: { 'user-agent': 'data-model-test/1.0' }, payload: { username: 'alice', password: 'wonderland' } })
  const after = Date.now()
  t.equal(res.statusCode, 200, res.body)
  const pair = res.json()
  t.match(pair, { tokenType: 'Bearer', expiresIn: 600, refreshExpiresIn: 86400 })

  const key = `${prefix}:{u-alice}:s`
  t.equal(sessionsKey(prefix, 'u-alice'), key, 'the key is <prefix>:{<userId>}:s')
  t.same(await keysUnder(redis, prefix), [key], 'exactly one key: the user\'s sessions')
  t.equal(await redis.type(key), 'string')

  // The raw value, as any MessagePack reader sees it: { [sessionId]: [h, p, pt, re, st, lu, x, ip, ua, ro, cl, jkt] }.
  // (Lua strings are MessagePack str: read them as bytes, since h holds binary.)
  const raw = decodeMsgpack((await redis.getBuffer(key))!, { rawStrings: true }) as Record<string, unknown[]>
  t.same(Object.keys(raw), [pair.sessionId], 'the map holds the session, by its id')
  const rec = raw[pair.sessionId]
  t.equal(rec.length, 16, 'a record is an array of 16 values')
  t.ok(rec[0] instanceof Uint8Array && rec[0].length === 22 && Buffer.from(rec[0]).toString() === hashOf(pair.refreshToken), 'h is the 22-character hash of the refresh id')
  t.same([rec[1], rec[2], rec[11]], [false, false, false], 'no previous hash, no rotation time, no key binding after login')
  t.same([rec[12], rec[13], rec[14], rec[15]], [false, false, false, false], 'authenticated at the start; no acr, amr or provider session')

  const s = await readSession(redis, prefix, 'u-alice', pair.sessionId)
  if (s === undefined) return t.fail('the session is stored')
  t.equal(s.h, hashOf(pair.refreshToken), 'h = first 128 bits of the SHA-256 of the refresh id')
  t.ok(s.st >= before && s.st <= after, 'st = login time (ms)')
  t.equal(s.lu, s.st, 'lu = st at login')
  t.equal(s.at, s.st, 'at (authentication time) = st at login')
  t.equal(s.re, s.st + DAY_MS, 're = start + 1 day')
  t.equal(s.re, refreshParts(pair.refreshToken).expiresAt, 're = the expiry the token carries')
  t.equal(s.x, s.re + ACCESS_MS, 'x (record expiry) = re + access TTL (+ tolerance 0)')
  t.same(s.ro, ['user'], 'ro = roles JSON')
  t.same(s.cl, { name: 'Alice' }, 'cl = claims JSON')
  t.equal(s.ip, '127.0.0.1', 'ip')
  t.equal(s.ua, 'data-model-test/1.0', 'ua = the user-agent header')

  t.equal(await pexpiretime(redis, key), s.x, 'the key\'s PEXPIRETIME = the session\'s record expiry')
  near(t, await redis.pttl(key), DAY_MS + ACCESS_MS, SLACK_MS, 'key PTTL = 1 day + 10 min')

  // A second session goes into the same key; the key expires with the later one.
  const second = await login(app)
  t.same(await keysUnder(redis, prefix), [key], 'still one key for two sessions')
  const both = await readSessions(redis, prefix, 'u-alice')
  t.same(Object.keys(both ?? {}).sort(), [pair.sessionId, second.sessionId].sort(), 'both sessions in the map')
  t.equal(await pexpiretime(redis, key), Math.max(...Object.values(both ?? {}).map(r => r.x)), 'PEXPIRETIME = the latest session\'s record expiry')
})

t.test('issue without meta stores no ip and no ua', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const pair = await app.tokengate.issue({ sub: 'u-carol' })
  const s = await readSession(redis, prefix, 'u-carol', pair.sessionId)
  t.equal(s?.ip, '', 'no ip')
  t.equal(s?.ua, '', 'no ua')
  t.same(s?.ro, [])
  t.same(s?.cl, {})
  near(t, await redis.pttl(sessionsKey(prefix, 'u-carol')), DAY_MS + ACCESS_MS, SLACK_MS, 'key PTTL')
})

t.test('no raw token, refresh id or access token in Redis, before and after a refresh', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const pair = await login(app)
  const oldId = refreshParts(pair.refreshToken).refreshId
  await assertNoSecrets(t, redis, prefix, {
    'the refresh token': pair.refreshToken,
    'the refresh id': oldId,
    'the refresh MAC': pair.refreshToken.split('.').at(-1)!,
    'the access token': pair.accessToken,
    'the access token signature': pair.accessToken.split('.')[2]
  })

  const r = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(r.statusCode, 200, r.body)
  const next = r.json()
  t.equal(next.sessionId, pair.sessionId)
  t.not(next.refreshToken, pair.refreshToken, 'rotated')
  const newId = refreshParts(next.refreshToken).refreshId

  const s = await readSession(redis, prefix, 'u-alice', pair.sessionId)
  if (s === undefined) return t.fail('the session is stored')
  t.equal(s.h, hashOf(next.refreshToken), 'h = hash of the new refresh id')
  t.equal(s.p, hashOf(pair.refreshToken), 'p = hash of the previous refresh id')
  t.ok(s.pt !== null && s.pt >= s.st, 'pt = rotation time')
  t.equal(s.lu, s.pt, 'lu = rotation time')
  t.equal(s.x, s.re + ACCESS_MS, 'x = new re + access TTL')
  t.equal(await pexpiretime(redis, sessionsKey(prefix, 'u-alice')), s.x, 'the key\'s expiry follows')

  await assertNoSecrets(t, redis, prefix, {
    'the old refresh token': pair.refreshToken,
    'the old refresh id': oldId,
    'the new refresh token': next.refreshToken,
    'the new refresh id': newId,
    'the new refresh MAC': next.refreshToken.split('.').at(-1)!,
    'the old access token': pair.accessToken,
    'the new access token': next.accessToken,
    'the new access token signature': next.accessToken.split('.')[2]
  })
})

t.test('a user id with {, } and % is percent-encoded in its hash tag', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const sub = 'we{ir}d%id'
  const encoded = 'we%7Bir%7Dd%25id'
  const key = `${prefix}:{${encoded}}:s`
  const pair = await app.tokengate.issue({ sub, roles: ['user'] })
  t.same(await keysUnder(redis, prefix), [key], 'one key, under the encoded tag')
  near(t, await redis.pttl(key), DAY_MS + ACCESS_MS, SLACK_MS, 'key PTTL')
  t.equal(await pexpiretime(redis, key), (await readSession(redis, prefix, encoded, pair.sessionId))?.x, 'expires with its session')

  const me = await app.inject({ url: '/me', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(me.statusCode, 200, me.body)
  t.equal(me.json().userId, sub, 'the access token names the raw user id')

  const r = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(r.statusCode, 200, r.body)
  const next = r.json()
  t.equal((await readSession(redis, prefix, encoded, pair.sessionId))?.h, hashOf(next.refreshToken), 'the refresh rotated the session under the encoded tag')
  const me2 = await app.inject({ url: '/me', headers: { authorization: `Bearer ${next.accessToken as string}` } })
  t.equal(me2.statusCode, 200, me2.body)
  t.equal(me2.json().userId, sub)
  const listed = await app.tokengate.listSessions(sub)
  t.same(listed.map(s => s.id), [pair.sessionId], 'listSessions finds it')

  // a second session, then revokeAll
  const second = await app.tokengate.issue({ sub })
  t.same(Object.keys(await readSessions(redis, prefix, encoded) ?? {}).sort(), [pair.sessionId, second.sessionId].sort(), 'both sessions in the one key')
  t.equal(await app.tokengate.revokeAll(sub), 2, 'revokeAll counts both sessions')
  t.equal(await redis.exists(key), 0, 'the user\'s key is gone')
  t.same((await keysUnder(redis, prefix)).filter(k => k.includes('{')), [], 'no session key left')
  t.same(await redis.zrange(`${prefix}:revoked`, 0, '-1'), [], 'no entry per session in the revoked set')
  t.same(await redis.zrange(`${prefix}:epochs`, 0, '-1'), [sub], 'one epoch entry for the user, by its raw id')

  const me3 = await app.inject({ url: '/me', headers: { authorization: `Bearer ${next.accessToken as string}` } })
  t.equal(me3.statusCode, 401)
  t.equal(me3.json().code, 'TOKENGATE_TOKEN_REVOKED')
  const r2 = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: next.refreshToken } })
  t.equal(r2.statusCode, 401)
  t.equal(r2.json().code, 'TOKENGATE_REFRESH_INVALID')
})

t.test('a user id that looks like another user\'s encoded id does not share its key', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const a = await app.tokengate.issue({ sub: 'x{y' })
  const b = await app.tokengate.issue({ sub: 'x%7By' })
  t.same(Object.keys(await readSessions(redis, prefix, 'x%7By') ?? {}), [a.sessionId], 'x{y is under {x%7By}')
  t.same(Object.keys(await readSessions(redis, prefix, 'x%257By') ?? {}), [b.sessionId], 'x%7By is under {x%257By}')
  t.equal(await app.tokengate.revokeAll('x{y'), 1, 'revokeAll of one touches only its own session')
  t.same(Object.keys(await readSessions(redis, prefix, 'x%257By') ?? {}), [b.sessionId], 'the other user keeps theirs')
})

t.test('logout removes the session from the map, deletes the key with the last one, and records the revocation', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const pair = await login(app)
  const keep = await login(app)
  const key = sessionsKey(prefix, 'u-alice')
  t.ok(await readSession(redis, prefix, 'u-alice', pair.sessionId), 'the session is stored')

  const before = Date.now()
  const out = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${pair.accessToken}` } })
  const after = Date.now()
  t.equal(out.statusCode, 204, out.body)
  const left = await readSessions(redis, prefix, 'u-alice')
  t.same(Object.keys(left ?? {}), [keep.sessionId], 'the map holds the other session only')
  t.equal(await pexpiretime(redis, key), left?.[keep.sessionId]?.x, 'the key expires with the remaining session')

  const revokedKey = `${prefix}:revoked`
  t.equal(await redis.type(revokedKey), 'zset')
  const score = Number(await redis.zscore(revokedKey, pair.sessionId))
  t.ok(score >= before + ACCESS_MS && score <= after + ACCESS_MS, `revoked score = logout time + 10 min (${score - before - ACCESS_MS}ms after the earliest)`)
  const pttl = await redis.pttl(revokedKey)
  near(t, pttl, ACCESS_MS, SLACK_MS, 'the revoked set has a TTL of about 10 min')
  t.equal(await pexpiretime(redis, revokedKey), score, 'the revoked set expires with its last member')
  t.equal(await redis.zscore(revokedKey, keep.sessionId), null, 'the other session is not revoked')

  // the second session's logout removes the last session: the key goes too
  const out2 = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${keep.accessToken}` } })
  t.equal(out2.statusCode, 204, out2.body)
  t.equal(await redis.exists(key), 0, 'the user\'s key is deleted with the last session')
  t.same(await keysUnder(redis, prefix), [revokedKey], 'only the revoked set remains')
  t.equal(await redis.zcard(revokedKey), 2)

  const me = await app.inject({ url: '/me', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(me.statusCode, 401)
  t.equal(me.json().code, 'TOKENGATE_TOKEN_REVOKED')
  const r = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(r.statusCode, 401)
  t.equal(r.json().code, 'TOKENGATE_REFRESH_INVALID')
})
