// Renewal through the refresh hook (an expired refresh token is reissued while the access token is still
// valid): a valid access token sent with an expired refresh token gets a renewed refresh token in
// `x-refresh-token`, unless the session is revoked, the refresh id is not the current one, the session is
// past maxSessionAge, or renewExpiredRefresh is off.
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { buildApp, login } from '../helpers/app.js'
import { fakeClock } from '../helpers/clock.js'
import type { Redis } from 'ioredis'
import { readSession, sessionsKey, type StoredSession } from '../helpers/redis.js'
import { b64json, hashOf, refreshParts } from '../helpers/tokens.js'

// A stopped clock (test/helpers/clock.ts) moves only when a test says so: a refresh token of 1 s is
// valid until the test moves the clock a second on, however slow the machine.
const SHORT_REFRESH = { accessTokenTtl: '30s', refreshTokenTtl: '1s' }

/** The expiry (ms) a refresh token carries. */
const refreshExpiry = (token: string): number => refreshParts(token).expiresAt

/** Alice's session as Redis holds it. */
async function stored (ta: { redis: Redis, prefix: string }, sessionId: string): Promise<StoredSession | undefined> {
  return await readSession(ta.redis, ta.prefix, 'u-alice', sessionId)
}

/** A protected request carrying both tokens, as a client following the origin scenario does. */
async function both (app: FastifyInstance, accessToken: string, refreshToken: string, url = '/me'): Promise<LightMyRequestResponse> {
  return await app.inject({ url, headers: { authorization: `Bearer ${accessToken}`, 'x-refresh-token': refreshToken } })
}

async function refresh (app: FastifyInstance, refreshToken: string): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken } })
}

t.test('valid access + expired refresh → a renewed refresh token in x-refresh-token', async t => {
  const clock = fakeClock(t)
  const ta = await buildApp(t, SHORT_REFRESH)
  const { app, redis, prefix } = ta
  const pair = await login(app)
  const before = (await stored(ta, pair.sessionId))!
  t.equal(refreshExpiry(pair.refreshToken), clock.now() + 1000, 'the refresh token lives 1 s')
  clock.tick(1000)
  const renewedAt = clock.now()
  const res = await both(app, pair.accessToken, pair.refreshToken)
  t.equal(res.statusCode, 200, res.body)
  t.equal(res.json().userId, 'u-alice')
  const renewed = res.headers['x-refresh-token']
  t.type(renewed, 'string', 'x-refresh-token is sent')
  if (typeof renewed !== 'string') return
  t.not(renewed, pair.refreshToken)
  t.match(renewed, /^tgr2\./)
  t.equal(refreshParts(renewed).parentHash, hashOf(pair.refreshToken), 'the renewed token names the expired one as its parent')
  t.equal(res.headers['cache-control'], 'no-store')
  t.notOk('x-access-token' in res.headers, 'no new access token: the old one is valid')
  t.equal(refreshExpiry(renewed), renewedAt + 1000, 'the renewed token lives 1 s from the renewal')

  const after = (await stored(ta, pair.sessionId))!
  t.not(after.h, before.h, 'h changed')
  t.equal(after.h, hashOf(renewed), 'h is the renewed refresh id')
  t.equal(after.p, before.h, 'p keeps the expired one')
  t.ok(after.re > before.re, 're moved forward')
  t.equal(after.re, renewedAt + 1000, 're = renewal time + refreshTokenTtl')
  t.equal(refreshExpiry(renewed), after.re, 'the token carries the record\'s expiry')
  t.equal(after.st, before.st, 'the session start is kept')
  t.equal(after.x, after.re + 30_000, 'record expiry = re + access TTL')
  const key = sessionsKey(prefix, 'u-alice')
  t.equal(Number(await redis.pexpiretime(key)), after.x, 'the user\'s key expiry follows the new re')

  const next = await refresh(app, renewed)
  t.equal(next.statusCode, 200, `the renewed token works on /auth/refresh: ${next.body}`)
  t.equal(next.json().sessionId, pair.sessionId)
})

t.test('no renewal while the refresh token is still valid', async t => {
  const clock = fakeClock(t)
  const ta = await buildApp(t, SHORT_REFRESH)
  const { app } = ta
  const pair = await login(app)
  const before = await stored(ta, pair.sessionId)
  clock.tick(999) // a millisecond before its expiry
  const res = await both(app, pair.accessToken, pair.refreshToken)
  t.equal(res.statusCode, 200, res.body)
  t.notOk('x-refresh-token' in res.headers)
  t.equal((await stored(ta, pair.sessionId))?.h, before?.h, 'h unchanged')
})

t.test('revoked session: the access token is refused and nothing is renewed', async t => {
  const clock = fakeClock(t)
  const { app, redis, prefix } = await buildApp(t, SHORT_REFRESH)
  const pair = await login(app)
  clock.tick(1000)
  t.equal(await app.tokengate.revokeSession('u-alice', pair.sessionId), true)

  const res = await both(app, pair.accessToken, pair.refreshToken)
  t.equal(res.statusCode, 401, res.body)
  t.equal(res.json().code, 'TOKENGATE_TOKEN_REVOKED')
  t.notOk('x-refresh-token' in res.headers, 'no renewal header')

  const anon = await both(app, pair.accessToken, pair.refreshToken, '/anon')
  t.equal(anon.statusCode, 200, anon.body)
  t.same(anon.json(), { userId: null })
  t.notOk('x-refresh-token' in anon.headers, 'no renewal header on an anonymous route either')

  t.equal(await readSession(redis, prefix, 'u-alice', pair.sessionId), undefined, 'no session record came back')
  t.equal(await redis.exists(sessionsKey(prefix, 'u-alice')), 0, 'nor the user\'s key')
})

async function notCurrent (t: import('tap').Test, options: Record<string, unknown>): Promise<void> {
  const clock = fakeClock(t)
  const ta = await buildApp(t, { ...SHORT_REFRESH, ...options })
  const { app } = ta
  const r1 = await login(app)
  const rotated = await refresh(app, r1.refreshToken)
  t.equal(rotated.statusCode, 200, rotated.body)
  const r2 = rotated.json()
  const before = await stored(ta, r1.sessionId)
  t.equal(before?.h, hashOf(r2.refreshToken), 'R2 is current')
  clock.tick(1000)
  t.equal(refreshExpiry(r1.refreshToken), clock.now(), 'R1 has expired')

  const res = await both(app, r2.accessToken, r1.refreshToken)
  t.equal(res.statusCode, 200, `the valid access token still authenticates: ${res.body}`)
  t.equal(res.json().userId, 'u-alice')
  t.notOk('x-refresh-token' in res.headers, `no renewal for a refresh id that is not the current one (got ${String(res.headers['x-refresh-token'])})`)
  const after = await stored(ta, r1.sessionId)
  t.equal(after?.h, before?.h, 'h unchanged')
  t.equal(after?.re, before?.re, 're unchanged')
}

t.test('not the current refresh id (rotated, grace window over) → no renewal', async t => {
  await notCurrent(t, { reuseGraceMs: 200 })
})

t.test('not the current refresh id, inside the default 10 s grace window → no renewal', async t => {
  // A renewal happens only when the presented refresh id is the session's current one.
  await notCurrent(t, {})
})

t.test('past maxSessionAge: no renewal, and /auth/refresh says REFRESH_EXPIRED', async t => {
  const clock = fakeClock(t)
  const ta = await buildApp(t, { clockTolerance: '30s', maxSessionAge: '2s', refreshTokenTtl: '1s', accessTokenTtl: '30s' })
  const { app } = ta
  const pair = await login(app)
  t.equal(pair.expiresIn, 2, 'access expiresIn capped by maxSessionAge')
  const claims = b64json(pair.accessToken.split('.')[1])
  t.equal(claims.exp, (claims.auth_time as number) + 2, 'exp = auth_time + maxSessionAge')
  const before = await stored(ta, pair.sessionId)

  clock.tick(2001)
  t.ok((claims.exp as number) * 1000 < clock.now(), 'the access token is past its capped exp (inside the tolerance)')
  const res = await both(app, pair.accessToken, pair.refreshToken)
  t.equal(res.statusCode, 200, `still accepted within clockTolerance: ${res.body}`)
  t.notOk('x-refresh-token' in res.headers, 'no renewal past maxSessionAge')
  const after = await stored(ta, pair.sessionId)
  t.equal(after?.h, before?.h, 'h unchanged')
  t.equal(after?.re, before?.re, 're unchanged')

  const r = await refresh(app, pair.refreshToken)
  t.equal(r.statusCode, 401, r.body)
  t.equal(r.json().code, 'TOKENGATE_REFRESH_EXPIRED')
})

t.test('renewExpiredRefresh: false → no renewal', async t => {
  const clock = fakeClock(t)
  const ta = await buildApp(t, { ...SHORT_REFRESH, renewExpiredRefresh: false })
  const { app } = ta
  const pair = await login(app)
  const before = await stored(ta, pair.sessionId)
  clock.tick(1000)
  const res = await both(app, pair.accessToken, pair.refreshToken)
  t.equal(res.statusCode, 200, res.body)
  t.notOk('x-refresh-token' in res.headers, 'no renewal header')
  const after = await stored(ta, pair.sessionId)
  t.equal(after?.h, before?.h, 'h unchanged')
  t.equal(after?.re, before?.re, 're unchanged')
  const r = await refresh(app, pair.refreshToken)
  t.equal(r.statusCode, 401)
  t.equal(r.json().code, 'TOKENGATE_REFRESH_EXPIRED')
})

t.test('a fresh login with maxSessionAge 2s gets expiresIn ≤ 2', async t => {
  const { app } = await buildApp(t, { maxSessionAge: '2s', refreshTokenTtl: '1s', accessTokenTtl: '10m' })
  const pair = await login(app)
  t.ok(pair.expiresIn <= 2 && pair.expiresIn >= 1, `expiresIn ${pair.expiresIn}`)
  const claims = b64json(pair.accessToken.split('.')[1])
  t.ok((claims.exp as number) - (claims.iat as number) <= 2, 'the JWT exp is capped too')
  t.ok((claims.exp as number) <= (claims.auth_time as number) + 2)
})
