// The scenario the project automates, step by step (the tests below are numbered by it):
//   1) login issues an access token and a refresh token;  2) the refresh token's record is kept in Redis;
//   3) the client sends both;  4.1) an expired access token is reissued when the refresh token matches the
//   stored one;  4.2) an expired refresh token is reissued while the access token is still valid;
//   5) logout makes both unusable at once.
// With that scenario's defaults: access token 10 minutes, refresh token 1 day, HS256.
import t from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import type { Redis } from 'ioredis'
import { decode as decodeMsgpack } from '@msgpack/msgpack'
import { buildApp, login, sleep, type TestApp } from '../helpers/app.js'
import { fakeClock } from '../helpers/clock.js'
import { keysUnder, readSession, sessionsKey, type StoredSession } from '../helpers/redis.js'
import { b64json, craftAccessToken, hashOf, refreshParts } from '../helpers/tokens.js'

const ACCESS_TTL_MS = 600_000
const REFRESH_TTL_MS = 86_400_000

/** An expired access token for a real session (what a client holds after 10 minutes). */
const expiredAccess = (sessionId: string, sub = 'u-alice', roles = ['user']): string =>
  craftAccessToken({ sub, sid: sessionId, roles, name: 'Alice' }, { expiresInSec: -30 })

const payloadOf = (jwt: string): Record<string, unknown> => b64json(jwt.split('.')[1])

async function me (app: TestApp['app'], headers: Record<string, string>, url = '/me'): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'GET', url, headers })
}

/** Alice's session as Redis holds it (undefined when it is gone). */
async function stored (ta: Pick<TestApp, 'redis' | 'prefix'>, sessionId: string): Promise<StoredSession | undefined> {
  return await readSession(ta.redis, ta.prefix, 'u-alice', sessionId)
}

const pexpiretime = async (redis: Redis, key: string): Promise<number> => Number(await redis.pexpiretime(key))

t.test('1) login issues both tokens (defaults: 10 min access, 1 day refresh)', async t => {
  const { app } = await buildApp(t)
  const before = Date.now()
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  t.equal(res.statusCode, 200, res.body)
  t.equal(res.headers['cache-control'], 'no-store')
  const body = res.json()
  t.same(Object.keys(body).sort(), ['accessToken', 'expiresIn', 'refreshExpiresIn', 'refreshToken', 'sessionId', 'tokenType'])
  t.equal(body.tokenType, 'Bearer')
  t.equal(body.expiresIn, 600)
  t.equal(body.refreshExpiresIn, 86400)
  t.type(body.sessionId, 'string')
  t.ok(body.sessionId.length > 0)

  // The access token: a JWT at+jwt, HS256, for alice's new session, living 10 minutes.
  const [h, p, s] = body.accessToken.split('.')
  t.ok(s !== undefined && s.length > 0, 'three parts')
  t.match(b64json(h), { alg: 'HS256', typ: 'at+jwt' })
  const claims = b64json(p)
  t.match(claims, { sub: 'u-alice', sid: body.sessionId, roles: ['user'], name: 'Alice' })
  t.equal((claims.exp as number) - (claims.iat as number), 600)

  // The refresh token names the same user and session and expires in a day.
  const r = refreshParts(body.refreshToken)
  t.equal(r.userId, 'u-alice')
  t.equal(r.sessionId, body.sessionId)
  t.ok(r.expiresAt >= before + REFRESH_TTL_MS && r.expiresAt <= Date.now() + REFRESH_TTL_MS, 'refresh expiry is login + 1 day')
  t.not(body.refreshToken, body.accessToken)

  // The access token works.
  const ok = await me(app, { authorization: `Bearer ${body.accessToken}` })
  t.equal(ok.statusCode, 200, ok.body)
  t.same(ok.json(), { userId: 'u-alice', sessionId: body.sessionId, roles: ['user'], claims: { name: 'Alice' } })
})

t.test('2) the refresh token\'s record is stored in Redis', async t => {
  const ta = await buildApp(t)
  const { app, redis, prefix } = ta
  const pair = await login(app)
  const key = sessionsKey(prefix, 'u-alice')
  t.equal(await redis.type(key), 'string', 'the user\'s sessions key exists')
  const rec = await stored(ta, pair.sessionId)
  if (rec === undefined) return t.fail('the session is stored')
  t.equal(rec.h, hashOf(pair.refreshToken), 'h is the hash of the refresh id')
  t.equal(rec.h.length, 22, '128 bits, base64url')
  t.notOk(pair.refreshToken.includes(rec.h), 'the store does not keep the token itself')
  const raw = (await redis.getBuffer(key))!
  const refreshId = refreshParts(pair.refreshToken).refreshId
  t.notOk(raw.includes(Buffer.from(refreshId)) || raw.includes(Buffer.from(refreshId, 'base64url')), 'no raw refresh id stored')
  t.same(Object.keys(decodeMsgpack(raw) as object), [pair.sessionId], 'the key holds this session only')
  t.equal(rec.re, refreshParts(pair.refreshToken).expiresAt, 're = the refresh token\'s expiry')
  t.ok(rec.st <= rec.re - REFRESH_TTL_MS + 5 && rec.st >= rec.re - REFRESH_TTL_MS - 5, 'st = session start')
  t.same(rec.ro, ['user'])
  t.same(rec.cl, { name: 'Alice' })
  // Native expiry: refresh expiry + access TTL (clock tolerance 0).
  t.equal(rec.x, rec.re + ACCESS_TTL_MS, 'record expiry = refresh expiry + access TTL')
  t.equal(await pexpiretime(redis, key), rec.re + ACCESS_TTL_MS, 'the key expires natively with it')
  t.same(await keysUnder(redis, prefix), [key], 'nothing else stored')
})

t.test('3) the client sends both tokens: 200, no new tokens', async t => {
  const ta = await buildApp(t)
  const { app } = ta
  const pair = await login(app)
  const before = await stored(ta, pair.sessionId)
  const res = await me(app, { authorization: `Bearer ${pair.accessToken}`, 'x-refresh-token': pair.refreshToken })
  t.equal(res.statusCode, 200, res.body)
  t.same(res.json(), { userId: 'u-alice', sessionId: pair.sessionId, roles: ['user'], claims: { name: 'Alice' } })
  t.equal(res.headers['x-access-token'], undefined)
  t.equal(res.headers['x-refresh-token'], undefined)
  t.equal(res.headers['set-cookie'], undefined)
  t.notOk(res.body.includes(pair.accessToken) || res.body.includes(pair.refreshToken), 'no token echoed')
  t.same(await stored(ta, pair.sessionId), before, 'the record is untouched')
})

t.test('4.1) access expired, refresh valid: proceeds as the same user and session with new tokens', async t => {
  const ta = await buildApp(t)
  const { app, redis, prefix } = ta
  const pair = await login(app)
  const hBefore = (await stored(ta, pair.sessionId))?.h
  const expired = expiredAccess(pair.sessionId)

  // The expired access token alone is told apart from an invalid one.
  const alone = await me(app, { authorization: `Bearer ${expired}` })
  t.equal(alone.statusCode, 401)
  t.equal(alone.json().code, 'TOKENGATE_TOKEN_EXPIRED')

  const res = await me(app, { authorization: `Bearer ${expired}`, 'x-refresh-token': pair.refreshToken })
  t.equal(res.statusCode, 200, res.body)
  t.same(res.json(), { userId: 'u-alice', sessionId: pair.sessionId, roles: ['user'], claims: { name: 'Alice' } })
  t.equal(res.headers['cache-control'], 'no-store')
  const newAccess = res.headers['x-access-token']
  const newRefresh = res.headers['x-refresh-token']
  t.type(newAccess, 'string')
  t.type(newRefresh, 'string')
  if (typeof newAccess !== 'string' || typeof newRefresh !== 'string') return
  t.notOk(res.body.includes(newAccess) || res.body.includes(newRefresh), 'tokens travel in headers, not the body')

  // The new access token: same user and session, 10 minutes, and it works.
  const claims = payloadOf(newAccess)
  t.match(claims, { sub: 'u-alice', sid: pair.sessionId, roles: ['user'], name: 'Alice' })
  t.equal((claims.exp as number) - (claims.iat as number), 600)
  const again = await me(app, { authorization: `Bearer ${newAccess}` })
  t.equal(again.statusCode, 200, again.body)
  t.same(again.json(), { userId: 'u-alice', sessionId: pair.sessionId, roles: ['user'], claims: { name: 'Alice' } })

  // The rotated refresh token: same session, a new id; Redis moved h on and kept the old one as p.
  t.not(newRefresh, pair.refreshToken)
  const np = refreshParts(newRefresh)
  t.equal(np.sessionId, pair.sessionId)
  t.equal(np.userId, 'u-alice')
  t.not(np.refreshId, refreshParts(pair.refreshToken).refreshId)
  const rec = await stored(ta, pair.sessionId)
  t.not(rec?.h, hBefore, 'h changed')
  t.equal(rec?.h, hashOf(newRefresh))
  t.equal(rec?.p, hBefore, 'p holds the previous hash')
  t.ok(Math.abs((rec?.pt ?? 0) - Date.now()) < 5000, 'pt is the rotation time')
  t.equal(rec?.re, np.expiresAt)
  t.equal(await pexpiretime(redis, sessionsKey(prefix, 'u-alice')), np.expiresAt + ACCESS_TTL_MS)

  // The old refresh token now only works inside the grace window: it yields the same successor.
  const grace = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(grace.statusCode, 200, grace.body)
  t.equal(grace.json().refreshToken, newRefresh, 'same successor inside the grace window')
  t.equal((await stored(ta, pair.sessionId))?.h, hashOf(newRefresh), 'no second rotation')

  // The successor itself refreshes normally.
  const next = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: newRefresh } })
  t.equal(next.statusCode, 200, next.body)
  t.not(next.json().refreshToken, newRefresh)
  t.equal((await stored(ta, pair.sessionId))?.h, hashOf(next.json().refreshToken))
})

t.test('4.1) the old refresh token outside a (short) grace window is reuse', async t => {
  const clock = fakeClock(t)
  const ta = await buildApp(t, { reuseGraceMs: 200 })
  const { app } = ta
  const pair = await login(app)
  const res = await me(app, { authorization: `Bearer ${expiredAccess(pair.sessionId)}`, 'x-refresh-token': pair.refreshToken })
  t.equal(res.statusCode, 200, res.body)
  const successor = res.headers['x-refresh-token']
  t.type(successor, 'string')
  clock.tick(199)
  const inside = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(inside.statusCode, 200, `199 ms after the rotation: inside the window (${inside.body})`)
  t.equal(inside.json().refreshToken, successor, 'the same successor')
  clock.tick(1)
  const late = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(late.statusCode, 401, late.body)
  t.equal(late.json().code, 'TOKENGATE_REFRESH_REUSED')
  t.equal(await stored(ta, pair.sessionId), undefined, 'session revoked')
})

t.test('4.1 failure) expired access + invalid refresh: 401 TOKENGATE_REFRESH_INVALID, anonymous routes proceed', async t => {
  const ta = await buildApp(t)
  const { app } = ta
  const pair = await login(app)
  const before = await stored(ta, pair.sessionId)
  const expired = expiredAccess(pair.sessionId)
  // A tampered MAC, a garbage string, and an access token offered as a refresh token.
  // (The MAC's first character is flipped: its last one partly holds padding bits a decoder may ignore.)
  const macAt = pair.refreshToken.lastIndexOf('.') + 1
  const flipped = pair.refreshToken[macAt] === 'A' ? 'B' : 'A'
  const tampered = pair.refreshToken.slice(0, macAt) + flipped + pair.refreshToken.slice(macAt + 1)
  const invalids = [tampered, 'not-a-refresh-token', pair.accessToken]
  for (const bad of invalids) {
    const res = await me(app, { authorization: `Bearer ${expired}`, 'x-refresh-token': bad })
    t.equal(res.statusCode, 401, res.body)
    t.equal(res.json().code, 'TOKENGATE_REFRESH_INVALID')
    t.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"')
    t.equal(res.headers['x-access-token'], undefined)
    t.equal(res.headers['x-refresh-token'], undefined)
    const anon = await me(app, { authorization: `Bearer ${expired}`, 'x-refresh-token': bad }, '/anon')
    t.equal(anon.statusCode, 200, anon.body)
    t.same(anon.json(), { userId: null })
    t.equal(anon.headers['x-access-token'], undefined)
  }
  t.same(await stored(ta, pair.sessionId), before, 'the session is untouched')
})

t.test('4.1 failure) expired access + expired refresh: 401 TOKENGATE_REFRESH_EXPIRED', async t => {
  const clock = fakeClock(t)
  const ta = await buildApp(t, { refreshTokenTtl: '1s' })
  const { app } = ta
  const pair = await login(app)
  t.equal(pair.refreshExpiresIn, 1)
  clock.tick(1000)
  const before = await stored(ta, pair.sessionId)
  t.ok(before !== undefined, 'record still there (it lives refresh expiry + access TTL)')
  const expired = expiredAccess(pair.sessionId)
  const res = await me(app, { authorization: `Bearer ${expired}`, 'x-refresh-token': pair.refreshToken })
  t.equal(res.statusCode, 401, res.body)
  t.equal(res.json().code, 'TOKENGATE_REFRESH_EXPIRED')
  t.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"')
  t.equal(res.headers['x-access-token'], undefined)
  t.equal(res.headers['x-refresh-token'], undefined)
  const anon = await me(app, { authorization: `Bearer ${expired}`, 'x-refresh-token': pair.refreshToken }, '/anon')
  t.equal(anon.statusCode, 200, anon.body)
  t.same(anon.json(), { userId: null })
  const direct = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(direct.statusCode, 401)
  t.equal(direct.json().code, 'TOKENGATE_REFRESH_EXPIRED')
  t.same(await stored(ta, pair.sessionId), before, 'no renewal while the access token is expired')
})

t.test('4.1 failure) expired access + reused refresh: 401 TOKENGATE_REFRESH_REUSED, session gone', async t => {
  const ta = await buildApp(t, { reuseGraceMs: 0 })
  const { app, redis, prefix } = ta
  const pair = await login(app)
  const rotated = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(rotated.statusCode, 200, rotated.body)
  const successor = rotated.json().refreshToken as string
  t.equal((await stored(ta, pair.sessionId))?.h, hashOf(successor))
  await sleep(10)

  const res = await me(app, { authorization: `Bearer ${expiredAccess(pair.sessionId)}`, 'x-refresh-token': pair.refreshToken })
  t.equal(res.statusCode, 401, res.body)
  t.equal(res.json().code, 'TOKENGATE_REFRESH_REUSED')
  t.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"')
  t.equal(res.headers['x-access-token'], undefined)
  t.equal(await stored(ta, pair.sessionId), undefined, 'session record deleted')
  t.equal(await redis.exists(sessionsKey(prefix, 'u-alice')), 0, 'and the user\'s key, which held only that session')
  t.not(await redis.zscore(`${prefix}:revoked`, pair.sessionId), null, 'listed as revoked')
  // Every token of the session is dead: the successor and the (still unexpired) access token.
  const succ = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: successor } })
  t.equal(succ.statusCode, 401)
  t.equal(succ.json().code, 'TOKENGATE_REFRESH_INVALID')
  const acc = await me(app, { authorization: `Bearer ${rotated.json().accessToken as string}` })
  t.equal(acc.statusCode, 401)
  t.equal(acc.json().code, 'TOKENGATE_TOKEN_REVOKED')

  // On an anonymous route the reuse is detected too, and the request proceeds anonymously.
  const p2 = await login(app)
  const r2 = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: p2.refreshToken } })
  t.equal(r2.statusCode, 200, r2.body)
  await sleep(10)
  const anon = await me(app, { authorization: `Bearer ${expiredAccess(p2.sessionId)}`, 'x-refresh-token': p2.refreshToken }, '/anon')
  t.equal(anon.statusCode, 200, anon.body)
  t.same(anon.json(), { userId: null })
  t.equal(anon.headers['x-access-token'], undefined)
  t.equal(await stored(ta, p2.sessionId), undefined, 'second session revoked by the reuse')
  t.same(await keysUnder(redis, prefix), [`${prefix}:revoked`], 'only the revocation list is left')
})

t.test('4.2) access valid, refresh expired: a new refresh token is issued', async t => {
  const clock = fakeClock(t)
  const ta = await buildApp(t, { accessTokenTtl: '30s', refreshTokenTtl: '1s' })
  const { app, redis, prefix } = ta
  const pair = await login(app)
  t.equal(pair.expiresIn, 30)
  t.equal(pair.refreshExpiresIn, 1)
  clock.tick(1000)
  const hBefore = (await stored(ta, pair.sessionId))?.h
  t.equal(hBefore, hashOf(pair.refreshToken))

  const res = await me(app, { authorization: `Bearer ${pair.accessToken}`, 'x-refresh-token': pair.refreshToken })
  t.equal(res.statusCode, 200, res.body)
  t.same(res.json(), { userId: 'u-alice', sessionId: pair.sessionId, roles: ['user'], claims: { name: 'Alice' } })
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(res.headers['x-access-token'], undefined, 'the access token is still valid: none issued')
  const renewed = res.headers['x-refresh-token']
  t.type(renewed, 'string')
  if (typeof renewed !== 'string') return
  t.not(renewed, pair.refreshToken)
  const rp = refreshParts(renewed)
  t.equal(rp.sessionId, pair.sessionId)
  t.equal(rp.expiresAt, clock.now() + 1000, 'the renewed token lives 1 s from now')
  const rec = await stored(ta, pair.sessionId)
  t.equal(rec?.h, hashOf(renewed), 'Redis holds the renewed id')
  t.equal(rec?.p, hBefore)
  t.equal(rec?.re, rp.expiresAt)
  t.equal(await pexpiretime(redis, sessionsKey(prefix, 'u-alice')), rp.expiresAt + 30_000)

  // The renewed token works with POST /auth/refresh (a millisecond before it expires in turn).
  clock.tick(999)
  const r = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: renewed } })
  t.equal(r.statusCode, 200, r.body)
  t.equal(r.json().sessionId, pair.sessionId)
  t.equal((await stored(ta, pair.sessionId))?.h, hashOf(r.json().refreshToken))
  // The expired one stays expired.
  const old = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(old.statusCode, 401)
  t.equal(old.json().code, 'TOKENGATE_REFRESH_EXPIRED')
})

t.test('5) logout makes both tokens unusable at once', async t => {
  const ta = await buildApp(t)
  const { app, redis, prefix } = ta
  const pair = await login(app)
  const other = await login(app, 'bob')
  t.ok(await stored(ta, pair.sessionId), 'the session is stored')

  const out = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(out.statusCode, 204, out.body)
  t.equal(out.body, '')

  const acc = await me(app, { authorization: `Bearer ${pair.accessToken}` })
  t.equal(acc.statusCode, 401, acc.body)
  t.equal(acc.json().code, 'TOKENGATE_TOKEN_REVOKED')
  t.equal(acc.headers['www-authenticate'], 'Bearer error="invalid_token"')

  const ref = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(ref.statusCode, 401, ref.body)
  t.equal(ref.json().code, 'TOKENGATE_REFRESH_INVALID')

  // Both together through the hook: still refused, nothing issued.
  const both = await me(app, { authorization: `Bearer ${pair.accessToken}`, 'x-refresh-token': pair.refreshToken })
  t.equal(both.statusCode, 401)
  t.equal(both.json().code, 'TOKENGATE_TOKEN_REVOKED')
  t.equal(both.headers['x-access-token'], undefined)
  t.equal(both.headers['x-refresh-token'], undefined)
  // And with an expired access token the refresh token alone cannot bring the session back.
  const viaHook = await me(app, { authorization: `Bearer ${expiredAccess(pair.sessionId)}`, 'x-refresh-token': pair.refreshToken })
  t.equal(viaHook.statusCode, 401)
  t.equal(viaHook.json().code, 'TOKENGATE_REFRESH_INVALID')
  t.equal(viaHook.headers['x-access-token'], undefined)

  t.equal(await stored(ta, pair.sessionId), undefined, 'session record gone')
  t.equal(await redis.exists(sessionsKey(prefix, 'u-alice')), 0, 'alice\'s key gone (it had one session)')
  const score = Number(await redis.zscore(`${prefix}:revoked`, pair.sessionId))
  t.ok(score > Date.now() + ACCESS_TTL_MS - 10_000 && score <= Date.now() + ACCESS_TTL_MS, 'revoked for the access TTL')
  // Bob is not affected.
  const bob = await me(app, { authorization: `Bearer ${other.accessToken}` })
  t.equal(bob.statusCode, 200, bob.body)
  t.ok(await readSession(redis, prefix, 'u-bob', other.sessionId), 'bob\'s session is still stored')
})

t.test('no tokens: 401 TOKENGATE_TOKEN_MISSING with WWW-Authenticate: Bearer', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const res = await me(app, {})
  t.equal(res.statusCode, 401, res.body)
  t.equal(res.json().code, 'TOKENGATE_TOKEN_MISSING')
  t.equal(res.headers['www-authenticate'], 'Bearer')
  t.match(res.json(), { statusCode: 401, error: 'Unauthorized' })
  const anon = await me(app, {}, '/anon')
  t.equal(anon.statusCode, 200)
  t.same(anon.json(), { userId: null })
  t.same(await keysUnder(redis, prefix), [], 'nothing stored')
})

t.test('missing access token + valid refresh token: handled as expired (refreshed)', async t => {
  const ta = await buildApp(t)
  const { app } = ta
  const pair = await login(app)
  const hBefore = (await stored(ta, pair.sessionId))?.h
  const res = await me(app, { 'x-refresh-token': pair.refreshToken })
  t.equal(res.statusCode, 200, res.body)
  t.same(res.json(), { userId: 'u-alice', sessionId: pair.sessionId, roles: ['user'], claims: { name: 'Alice' } })
  t.equal(res.headers['cache-control'], 'no-store')
  const newAccess = res.headers['x-access-token']
  const newRefresh = res.headers['x-refresh-token']
  t.type(newAccess, 'string')
  t.type(newRefresh, 'string')
  if (typeof newAccess !== 'string' || typeof newRefresh !== 'string') return
  t.match(payloadOf(newAccess), { sub: 'u-alice', sid: pair.sessionId })
  const again = await me(app, { authorization: `Bearer ${newAccess}` })
  t.equal(again.statusCode, 200, again.body)
  const rec = await stored(ta, pair.sessionId)
  t.not(rec?.h, hBefore)
  t.equal(rec?.h, hashOf(newRefresh))
  t.equal(rec?.p, hBefore)
})
