// Origin step 4.2 through the refresh hook: a valid access token sent with an expired refresh token
// gets a renewed refresh token in `x-refresh-token`, unless the session is revoked, the refresh id is not
// the current one, the session is past maxSessionAge, or renewExpiredRefresh is off.
import { createHash } from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { buildApp, login, sleep } from '../helpers/app.js'
import { indexKey, recordKey } from '../helpers/redis.js'
import { b64json } from '../helpers/tokens.js'

const SHORT_REFRESH = { accessTokenTtl: '30s', refreshTokenTtl: '1s' }

function refreshHash (token: string): string {
  return createHash('sha256').update(token.split('.')[3]).digest('base64url').slice(0, 22)
}

/** The expiry (ms) a refresh token carries. */
const refreshExpiry = (token: string): number => parseInt(token.split('.')[4], 36)

/** A protected request carrying both tokens, as a client following the origin scenario does. */
async function both (app: FastifyInstance, accessToken: string, refreshToken: string, url = '/me'): Promise<LightMyRequestResponse> {
  return await app.inject({ url, headers: { authorization: `Bearer ${accessToken}`, 'x-refresh-token': refreshToken } })
}

async function refresh (app: FastifyInstance, refreshToken: string): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken } })
}

t.test('valid access + expired refresh → a renewed refresh token in x-refresh-token', async t => {
  const { app, redis, prefix } = await buildApp(t, SHORT_REFRESH)
  const pair = await login(app)
  const key = recordKey(prefix, 'u-alice', pair.sessionId)
  const before = await redis.hgetall(key)
  await sleep(1200)
  t.ok(refreshExpiry(pair.refreshToken) <= Date.now(), 'the refresh token has expired')

  const startedAt = Date.now()
  const res = await both(app, pair.accessToken, pair.refreshToken)
  t.equal(res.statusCode, 200, res.body)
  t.equal(res.json().userId, 'u-alice')
  const renewed = res.headers['x-refresh-token']
  t.type(renewed, 'string', 'x-refresh-token is sent')
  if (typeof renewed !== 'string') return
  t.not(renewed, pair.refreshToken)
  t.match(renewed, /^tgr1\./)
  t.equal(res.headers['cache-control'], 'no-store')
  t.notOk('x-access-token' in res.headers, 'no new access token: the old one is valid')
  t.ok(refreshExpiry(renewed) > Date.now(), 'the renewed token is not expired')

  const after = await redis.hgetall(key)
  t.not(after.h, before.h, 'h changed')
  t.equal(after.h, refreshHash(renewed), 'h is the renewed refresh id')
  t.equal(after.p, before.h, 'p keeps the expired one')
  t.ok(Number(after.re) > Number(before.re), 're moved forward')
  t.ok(Number(after.re) >= startedAt + 1000 - 50 && Number(after.re) <= Date.now() + 1000, 're = renewal time + refreshTokenTtl')
  t.equal(refreshExpiry(renewed), Number(after.re), 'the token carries the record\'s expiry')
  t.equal(after.st, before.st, 'the session start is kept')
  const pttl = await redis.pttl(key)
  t.ok(pttl > 0 && pttl <= Number(after.re) + 30_000 - Date.now() + 50, `record expiry follows the new re (pttl ${pttl})`)
  const score = await redis.zscore(indexKey(prefix, 'u-alice'), pair.sessionId)
  t.equal(Number(score), Number(after.re) + 30_000, 'index score = re + access TTL')

  const next = await refresh(app, renewed)
  t.equal(next.statusCode, 200, `the renewed token works on /auth/refresh: ${next.body}`)
  t.equal(next.json().sessionId, pair.sessionId)
})

t.test('no renewal while the refresh token is still valid', async t => {
  const { app, redis, prefix } = await buildApp(t, SHORT_REFRESH)
  const pair = await login(app)
  const before = await redis.hgetall(recordKey(prefix, 'u-alice', pair.sessionId))
  const res = await both(app, pair.accessToken, pair.refreshToken)
  t.equal(res.statusCode, 200, res.body)
  t.notOk('x-refresh-token' in res.headers)
  t.equal((await redis.hgetall(recordKey(prefix, 'u-alice', pair.sessionId))).h, before.h)
})

t.test('revoked session: the access token is refused and nothing is renewed', async t => {
  const { app, redis, prefix } = await buildApp(t, SHORT_REFRESH)
  const pair = await login(app)
  await sleep(1200)
  t.equal(await app.tokengate.revokeSession('u-alice', pair.sessionId), true)

  const res = await both(app, pair.accessToken, pair.refreshToken)
  t.equal(res.statusCode, 401, res.body)
  t.equal(res.json().code, 'TOKENGATE_TOKEN_REVOKED')
  t.notOk('x-refresh-token' in res.headers, 'no renewal header')

  const anon = await both(app, pair.accessToken, pair.refreshToken, '/anon')
  t.equal(anon.statusCode, 200, anon.body)
  t.same(anon.json(), { userId: null })
  t.notOk('x-refresh-token' in anon.headers, 'no renewal header on an anonymous route either')

  t.equal(await redis.exists(recordKey(prefix, 'u-alice', pair.sessionId)), 0, 'no session record came back')
  t.equal(await redis.zscore(indexKey(prefix, 'u-alice'), pair.sessionId), null)
})

async function notCurrent (t: import('tap').Test, options: Record<string, unknown>): Promise<void> {
  const { app, redis, prefix } = await buildApp(t, { ...SHORT_REFRESH, ...options })
  const r1 = await login(app)
  const rotated = await refresh(app, r1.refreshToken)
  t.equal(rotated.statusCode, 200, rotated.body)
  const r2 = rotated.json()
  const key = recordKey(prefix, 'u-alice', r1.sessionId)
  const before = await redis.hgetall(key)
  t.equal(before.h, refreshHash(r2.refreshToken), 'R2 is current')
  await sleep(1200)
  t.ok(refreshExpiry(r1.refreshToken) <= Date.now(), 'R1 has expired')

  const res = await both(app, r2.accessToken, r1.refreshToken)
  t.equal(res.statusCode, 200, `the valid access token still authenticates: ${res.body}`)
  t.equal(res.json().userId, 'u-alice')
  t.notOk('x-refresh-token' in res.headers, `no renewal for a refresh id that is not the current one (got ${String(res.headers['x-refresh-token'])})`)
  const after = await redis.hgetall(key)
  t.equal(after.h, before.h, 'h unchanged')
  t.equal(after.re, before.re, 're unchanged')
}

t.test('not the current refresh id (rotated, grace window over) → no renewal', async t => {
  await notCurrent(t, { reuseGraceMs: 200 })
})

t.test('not the current refresh id, inside the default 10 s grace window → no renewal', async t => {
  // DESIGN.md: renewal only when "the presented refresh id is the session's current one".
  await notCurrent(t, {})
})

t.test('past maxSessionAge: no renewal, and /auth/refresh says REFRESH_EXPIRED', async t => {
  const { app, redis, prefix } = await buildApp(t, { clockTolerance: '30s', maxSessionAge: '2s', refreshTokenTtl: '1s', accessTokenTtl: '30s' })
  const pair = await login(app)
  t.ok(pair.expiresIn <= 2, `access expiresIn capped by maxSessionAge (got ${pair.expiresIn})`)
  const claims = b64json(pair.accessToken.split('.')[1])
  t.ok((claims.exp as number) <= (claims.auth_time as number) + 2, 'exp ≤ auth_time + maxSessionAge')
  const key = recordKey(prefix, 'u-alice', pair.sessionId)
  const before = await redis.hgetall(key)

  await sleep(2300)
  t.ok((claims.exp as number) * 1000 < Date.now(), 'the access token is past its capped exp (inside the tolerance)')
  const res = await both(app, pair.accessToken, pair.refreshToken)
  t.equal(res.statusCode, 200, `still accepted within clockTolerance: ${res.body}`)
  t.notOk('x-refresh-token' in res.headers, 'no renewal past maxSessionAge')
  const after = await redis.hgetall(key)
  t.equal(after.h, before.h, 'h unchanged')
  t.equal(after.re, before.re, 're unchanged')

  const r = await refresh(app, pair.refreshToken)
  t.equal(r.statusCode, 401, r.body)
  t.equal(r.json().code, 'TOKENGATE_REFRESH_EXPIRED')
})

t.test('renewExpiredRefresh: false → no renewal', async t => {
  const { app, redis, prefix } = await buildApp(t, { ...SHORT_REFRESH, renewExpiredRefresh: false })
  const pair = await login(app)
  const key = recordKey(prefix, 'u-alice', pair.sessionId)
  const before = await redis.hgetall(key)
  await sleep(1200)
  const res = await both(app, pair.accessToken, pair.refreshToken)
  t.equal(res.statusCode, 200, res.body)
  t.notOk('x-refresh-token' in res.headers, 'no renewal header')
  const after = await redis.hgetall(key)
  t.equal(after.h, before.h, 'h unchanged')
  t.equal(after.re, before.re, 're unchanged')
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
