// The Redis data model (DESIGN.md "Redis data model") as the plugin writes it, with the origin defaults:
// access token 10 minutes, refresh token 1 day, clockTolerance 0.
import { createHash } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import type { Redis } from 'ioredis'
import { buildApp, login } from '../helpers/app.js'
import { keysUnder } from '../helpers/redis.js'

const ACCESS_MS = 10 * 60_000
const DAY_MS = 24 * 3_600_000
const SLACK_MS = 5000

const refreshIdOf = (token: string): string => token.split('.')[3]
const storedHash = (refreshId: string): string => createHash('sha256').update(refreshId).digest('base64url').slice(0, 22)

/** Every key under the prefix with every value it holds, of every type, as one text. */
async function dump (redis: Redis, prefix: string): Promise<{ keys: string[], text: string }> {
  const keys = await keysUnder(redis, prefix)
  const parts: string[] = []
  for (const key of keys) {
    parts.push(key)
    const type = await redis.type(key)
    if (type === 'hash') {
      for (const [f, v] of Object.entries(await redis.hgetall(key))) parts.push(f, v)
    } else if (type === 'zset') {
      parts.push(...await redis.zrange(key, 0, -1, 'WITHSCORES'))
    } else if (type === 'string') {
      parts.push(await redis.get(key) ?? '')
    } else if (type === 'set') {
      parts.push(...await redis.smembers(key))
    } else if (type === 'list') {
      parts.push(...await redis.lrange(key, 0, -1))
    } else if (type !== 'none') {
      parts.push(`<${type}>`)
    }
  }
  return { keys, text: parts.join('\n') }
}

async function assertNoSecrets (t: Test, redis: Redis, prefix: string, secrets: Record<string, string>): Promise<void> {
  const { keys, text } = await dump(redis, prefix)
  t.ok(keys.length > 0, 'there is something to look at')
  for (const [what, value] of Object.entries(secrets)) {
    t.notOk(text.includes(value), `${what} appears nowhere in Redis`)
  }
}

const pexpiretime = async (redis: Redis, key: string): Promise<number> => Number(await redis.call('PEXPIRETIME', key))

function near (t: Test, actual: number, expected: number, tol: number, what: string): void {
  t.ok(Math.abs(actual - expected) <= tol, `${what}: ${actual} within ${tol}ms of ${expected} (off by ${actual - expected})`)
}

t.test('login writes the session hash and the index with native TTLs', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const before = Date.now()
  const res = await app.inject({ method: 'POST', url: '/auth/login', headers: { 'user-agent': 'data-model-test/1.0' }, payload: { username: 'alice', password: 'wonderland' } })
  const after = Date.now()
  t.equal(res.statusCode, 200, res.body)
  const pair = res.json()
  t.match(pair, { tokenType: 'Bearer', expiresIn: 600, refreshExpiresIn: 86400 })

  const record = `${prefix}:{u-alice}:s:${pair.sessionId as string}`
  const index = `${prefix}:{u-alice}:sessions`
  t.same(await keysUnder(redis, prefix), [index, record].sort(), 'exactly the record and the index')
  t.equal(await redis.type(record), 'hash')
  t.equal(await redis.type(index), 'zset')

  const pttl = await redis.pttl(record)
  near(t, pttl, DAY_MS + ACCESS_MS, SLACK_MS, 'record PTTL = 1 day + 10 min')
  const recordExp = await pexpiretime(redis, record)
  t.ok(recordExp > 0, 'record has an absolute expiry')
  t.equal(await pexpiretime(redis, index), recordExp, 'index PEXPIRETIME = the record\'s')
  t.equal(Number(await redis.zscore(index, pair.sessionId)), recordExp, 'index score = the record\'s PEXPIRETIME')
  t.same(await redis.zrange(index, 0, -1), [pair.sessionId], 'index holds the session id only')

  const h = await redis.hgetall(record)
  t.same(Object.keys(h).sort(), ['cl', 'h', 'ip', 'lu', 're', 'ro', 'st', 'ua'], 'fields after login')
  t.equal(h.h, storedHash(refreshIdOf(pair.refreshToken)), 'h = 128-bit SHA-256 of the refresh id (base64url)')
  t.match(h.h, /^[A-Za-z0-9_-]{22}$/)
  const st = Number(h.st)
  t.ok(st >= before && st <= after, 'st = login time (ms)')
  t.equal(Number(h.lu), st, 'lu = st at login')
  t.equal(Number(h.re), st + DAY_MS, 're = start + 1 day')
  t.equal(recordExp, Number(h.re) + ACCESS_MS, 'PEXPIREAT = re + access TTL (+ tolerance 0)')
  t.equal(Number(h.re), parseInt(pair.refreshToken.split('.')[4], 36), 're = the expiry the token carries')
  t.same(JSON.parse(h.ro), ['user'], 'ro = roles JSON')
  t.same(JSON.parse(h.cl), { name: 'Alice' }, 'cl = claims JSON')
  t.equal(h.ip, '127.0.0.1', 'ip')
  t.equal(h.ua, 'data-model-test/1.0', 'ua = the user-agent header')
})

t.test('issue without meta stores no ip and no ua', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const pair = await app.tokengate.issue({ sub: 'u-carol' })
  const record = `${prefix}:{u-carol}:s:${pair.sessionId}`
  const h = await redis.hgetall(record)
  t.same(Object.keys(h).sort(), ['cl', 'h', 'lu', 're', 'ro', 'st'], 'no ip, no ua')
  t.same(JSON.parse(h.ro), [])
  t.same(JSON.parse(h.cl), {})
  near(t, await redis.pttl(record), DAY_MS + ACCESS_MS, SLACK_MS, 'record PTTL')
})

t.test('no raw token, refresh id or access token in Redis, before and after a refresh', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const pair = await login(app)
  const oldId = refreshIdOf(pair.refreshToken)
  await assertNoSecrets(t, redis, prefix, {
    'the refresh token': pair.refreshToken,
    'the refresh id': oldId,
    'the refresh MAC': pair.refreshToken.split('.')[5],
    'the access token': pair.accessToken,
    'the access token signature': pair.accessToken.split('.')[2]
  })

  const r = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(r.statusCode, 200, r.body)
  const next = r.json()
  t.equal(next.sessionId, pair.sessionId)
  t.not(next.refreshToken, pair.refreshToken, 'rotated')
  const newId = refreshIdOf(next.refreshToken)

  const record = `${prefix}:{u-alice}:s:${pair.sessionId}`
  const h = await redis.hgetall(record)
  t.same(Object.keys(h).sort(), ['cl', 'h', 'ip', 'lu', 'p', 'pt', 're', 'ro', 'st', 'ua'], 'fields after a refresh')
  t.equal(h.h, storedHash(newId), 'h = hash of the new refresh id')
  t.equal(h.p, storedHash(oldId), 'p = hash of the previous refresh id')
  t.ok(Number(h.pt) >= Number(h.st), 'pt = rotation time')
  t.equal(Number(h.lu), Number(h.pt), 'lu = rotation time')
  const recordExp = await pexpiretime(redis, record)
  t.equal(recordExp, Number(h.re) + ACCESS_MS, 'PEXPIREAT = new re + access TTL')
  t.equal(Number(await redis.zscore(`${prefix}:{u-alice}:sessions`, pair.sessionId)), recordExp, 'index score follows')
  t.equal(await pexpiretime(redis, `${prefix}:{u-alice}:sessions`), recordExp, 'index expiry follows')

  await assertNoSecrets(t, redis, prefix, {
    'the old refresh token': pair.refreshToken,
    'the old refresh id': oldId,
    'the new refresh token': next.refreshToken,
    'the new refresh id': newId,
    'the new refresh MAC': next.refreshToken.split('.')[5],
    'the old access token': pair.accessToken,
    'the new access token': next.accessToken,
    'the new access token signature': next.accessToken.split('.')[2]
  })
})

t.test('a user id with {, } and % is percent-encoded in its hash tag', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const sub = 'we{ir}d%id'
  const tag = `${prefix}:{we%7Bir%7Dd%25id}`
  const pair = await app.tokengate.issue({ sub, roles: ['user'] })
  const record = `${tag}:s:${pair.sessionId}`
  const index = `${tag}:sessions`
  t.same(await keysUnder(redis, prefix), [index, record].sort(), 'keys under the encoded tag only')
  near(t, await redis.pttl(record), DAY_MS + ACCESS_MS, SLACK_MS, 'record PTTL')
  t.equal(Number(await redis.zscore(index, pair.sessionId)), await pexpiretime(redis, record))

  const me = await app.inject({ url: '/me', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(me.statusCode, 200, me.body)
  t.equal(me.json().userId, sub, 'the access token names the raw user id')

  const r = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(r.statusCode, 200, r.body)
  const next = r.json()
  t.equal((await redis.hgetall(record)).h, storedHash(refreshIdOf(next.refreshToken)), 'the refresh rotated the encoded record')
  const me2 = await app.inject({ url: '/me', headers: { authorization: `Bearer ${next.accessToken as string}` } })
  t.equal(me2.statusCode, 200, me2.body)
  t.equal(me2.json().userId, sub)
  const listed = await app.tokengate.listSessions(sub)
  t.same(listed.map(s => s.id), [pair.sessionId], 'listSessions finds it')

  // a second session, then revokeAll
  const second = await app.tokengate.issue({ sub })
  t.equal(await redis.exists(`${tag}:s:${second.sessionId}`), 1)
  t.equal(await app.tokengate.revokeAll(sub), 2, 'revokeAll counts both sessions')
  t.equal(await redis.exists(record, `${tag}:s:${second.sessionId}`, index), 0, 'records and index gone')
  t.same((await keysUnder(redis, prefix)).filter(k => k.includes('{')), [], 'no session key left')
  const revoked = await redis.zrange(`${prefix}:revoked`, 0, -1)
  t.same([...revoked].sort(), [pair.sessionId, second.sessionId].sort(), 'both sessions in the revoked set')

  const me3 = await app.inject({ url: '/me', headers: { authorization: `Bearer ${next.accessToken as string}` } })
  t.equal(me3.statusCode, 401)
  t.equal(me3.json().code, 'TOKENGATE_TOKEN_REVOKED')
  const r2 = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: next.refreshToken } })
  t.equal(r2.statusCode, 401)
  t.equal(r2.json().code, 'TOKENGATE_REFRESH_INVALID')
})

t.test('a user id that looks like another user\'s encoded id does not share its keys', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const a = await app.tokengate.issue({ sub: 'x{y' })
  const b = await app.tokengate.issue({ sub: 'x%7By' })
  t.equal(await redis.exists(`${prefix}:{x%7By}:s:${a.sessionId}`), 1)
  t.equal(await redis.exists(`${prefix}:{x%257By}:s:${b.sessionId}`), 1)
  t.equal(await app.tokengate.revokeAll('x{y'), 1, 'revokeAll of one touches only its own session')
  t.equal(await redis.exists(`${prefix}:{x%257By}:s:${b.sessionId}`), 1, 'the other user keeps theirs')
})

t.test('logout deletes the session keys and records the revocation', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const pair = await login(app)
  const keep = await login(app)
  const record = `${prefix}:{u-alice}:s:${pair.sessionId}`
  const index = `${prefix}:{u-alice}:sessions`
  t.equal(await redis.exists(record), 1)

  const before = Date.now()
  const out = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${pair.accessToken}` } })
  const after = Date.now()
  t.equal(out.statusCode, 204, out.body)
  t.equal(await redis.exists(record), 0, 'session hash gone')
  t.equal(await redis.zscore(index, pair.sessionId), null, 'removed from the index')
  t.same(await redis.zrange(index, 0, -1), [keep.sessionId], 'the other session stays in the index')
  t.equal(await pexpiretime(redis, index), await pexpiretime(redis, `${prefix}:{u-alice}:s:${keep.sessionId}`), 'index expiry = the remaining session\'s')

  const revokedKey = `${prefix}:revoked`
  t.equal(await redis.type(revokedKey), 'zset')
  const score = Number(await redis.zscore(revokedKey, pair.sessionId))
  t.ok(score >= before + ACCESS_MS && score <= after + ACCESS_MS, `revoked score = logout time + 10 min (${score - before - ACCESS_MS}ms after the earliest)`)
  const pttl = await redis.pttl(revokedKey)
  near(t, pttl, ACCESS_MS, SLACK_MS, 'the revoked set has a TTL of about 10 min')
  t.equal(await pexpiretime(redis, revokedKey), score, 'the revoked set expires with its last member')
  t.equal(await redis.zscore(revokedKey, keep.sessionId), null, 'the other session is not revoked')

  // the second session's logout removes the last session: the index goes too
  const out2 = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${keep.accessToken}` } })
  t.equal(out2.statusCode, 204, out2.body)
  t.same(await keysUnder(redis, prefix), [revokedKey], 'only the revoked set remains')
  t.equal(await redis.zcard(revokedKey), 2)

  const me = await app.inject({ url: '/me', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(me.statusCode, 401)
  t.equal(me.json().code, 'TOKENGATE_TOKEN_REVOKED')
  const r = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(r.statusCode, 401)
  t.equal(r.json().code, 'TOKENGATE_REFRESH_INVALID')
})
