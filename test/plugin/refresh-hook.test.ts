// More refresh-hook cases: the non-rotating mode (rotateRefreshTokens: false), the hook staying out of tokengate's own routes,
// per-route roles, refreshClaims, and the audit hooks.
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import tokengate, { type AuditMeta, type TokengateOptions } from '../../plugin/index.js'
import { buildApp, login, SECRET, sleep, verifyCredentials } from '../helpers/app.js'
import { deletePrefix, keysUnder, readSession, redisUrl, uniquePrefix, type StoredSession } from '../helpers/redis.js'
import { b64json, craftAccessToken, hashOf, refreshParts } from '../helpers/tokens.js'

const expiredAccess = (sessionId: string, sub = 'u-alice', roles = ['user']): string =>
  craftAccessToken({ sub, sid: sessionId, roles }, { expiresInSec: -30 })
const payloadOf = (jwt: string): Record<string, unknown> => b64json(jwt.split('.')[1])

async function get (app: FastifyInstance, url: string, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'GET', url, headers })
}

async function refreshBody (app: FastifyInstance, refreshToken: string): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken } })
}

/** Like buildApp, with extra routes declared before the app is ready. */
async function buildAppWithRoutes (t: Test, options: Partial<TokengateOptions>, routes: (app: FastifyInstance) => void): Promise<{ app: FastifyInstance, redis: Redis, prefix: string }> {
  const url = await redisUrl()
  const prefix = uniquePrefix('hook-routes')
  const redis = new Redis(url)
  const app = Fastify({ logger: false })
  await app.register(tokengate, { secret: SECRET, redis: url, keyPrefix: prefix, routes: { verifyCredentials }, ...options } as TokengateOptions)
  app.get('/me', { onRequest: app.authenticate }, async (request) => ({ userId: request.auth!.userId, sessionId: request.auth!.sessionId, roles: request.auth!.roles, claims: request.auth!.claims }))
  routes(app)
  t.teardown(async () => {
    await app.close()
    await deletePrefix(redis, prefix)
    redis.disconnect()
  })
  await app.ready()
  return { app, redis, prefix }
}

t.test('rotateRefreshTokens: false: the refresh token is kept and reusable', async t => {
  const { app, redis, prefix } = await buildApp(t, { rotateRefreshTokens: false })
  const pair = await login(app)
  const h0 = (await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h
  t.equal(h0, hashOf(pair.refreshToken))

  const r = await refreshBody(app, pair.refreshToken)
  t.equal(r.statusCode, 200, r.body)
  t.equal(r.json().refreshToken, pair.refreshToken, 'POST /auth/refresh returns the same refresh token')
  t.not(r.json().accessToken, pair.accessToken, 'a new access token')
  t.equal(r.json().sessionId, pair.sessionId)

  const hooked = await get(app, '/me', { authorization: `Bearer ${expiredAccess(pair.sessionId)}`, 'x-refresh-token': pair.refreshToken })
  t.equal(hooked.statusCode, 200, hooked.body)
  t.match(hooked.json(), { userId: 'u-alice', sessionId: pair.sessionId })
  t.equal(hooked.headers['cache-control'], 'no-store')
  const access = hooked.headers['x-access-token']
  t.type(access, 'string')
  t.equal(hooked.headers['x-refresh-token'], undefined, 'no x-refresh-token: the token did not change')
  if (typeof access === 'string') {
    t.match(payloadOf(access), { sub: 'u-alice', sid: pair.sessionId })
    const ok = await get(app, '/me', { authorization: `Bearer ${access}` })
    t.equal(ok.statusCode, 200, ok.body)
  }

  // Many uses, by body and by the hook (missing access token), all work and never move h.
  for (let i = 0; i < 5; i++) {
    const b = await refreshBody(app, pair.refreshToken)
    t.equal(b.statusCode, 200, b.body)
    t.equal(b.json().refreshToken, pair.refreshToken)
    const h = await get(app, '/me', { 'x-refresh-token': pair.refreshToken })
    t.equal(h.statusCode, 200, h.body)
    t.type(h.headers['x-access-token'], 'string')
    t.equal(h.headers['x-refresh-token'], undefined)
    await sleep(5)
  }
  const rec = await readSession(redis, prefix, 'u-alice', pair.sessionId)
  t.equal(rec?.h, h0, 'h unchanged')
  t.equal(rec?.p, null, 'no previous hash: nothing rotated')
  t.equal(rec?.re, refreshParts(pair.refreshToken).expiresAt, 'refresh expiry unchanged')
  t.ok(rec !== undefined && rec.lu > rec.st, 'last used moved on')
})

t.test('the hook leaves POST /auth/login to the route', async t => {
  const { app, redis, prefix } = await buildApp(t, { reuseGraceMs: 0 })
  const first = await login(app)
  const before = await readSession(redis, prefix, 'u-alice', first.sessionId)
  const res = await app.inject({
    method: 'POST',
    url: '/auth/login',
    headers: { authorization: `Bearer ${expiredAccess(first.sessionId)}`, 'x-refresh-token': first.refreshToken },
    payload: { username: 'alice', password: 'wonderland' }
  })
  t.equal(res.statusCode, 200, res.body)
  t.not(res.json().sessionId, first.sessionId, 'a new session')
  t.equal(res.headers['x-access-token'], undefined, 'no refresh by the hook')
  t.equal(res.headers['x-refresh-token'], undefined)
  t.same(await readSession(redis, prefix, 'u-alice', first.sessionId), before, 'the first session is untouched')
  // Its refresh token still rotates normally (it was not rotated behind its back; grace is 0).
  await sleep(5)
  const r = await refreshBody(app, first.refreshToken)
  t.equal(r.statusCode, 200, r.body)
})

t.test('x-refresh-token sent to POST /auth/refresh rotates exactly once', async t => {
  const { app, redis, prefix } = await buildApp(t, { reuseGraceMs: 0 })
  const cases: Array<[string, (p: { accessToken: string, sessionId: string }) => Record<string, string>]> = [
    ['refresh token alone', () => ({})],
    ['with an expired access token', (p) => ({ authorization: `Bearer ${expiredAccess(p.sessionId)}` })],
    ['with a valid access token', (p) => ({ authorization: `Bearer ${p.accessToken}` })]
  ]
  for (const [name, extra] of cases) {
    const pair = await login(app)
    const session = async (): Promise<StoredSession | undefined> => await readSession(redis, prefix, 'u-alice', pair.sessionId)
    const h0 = (await session())?.h
    await sleep(5)
    const res = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { ...extra(pair), 'x-refresh-token': pair.refreshToken } })
    t.equal(res.statusCode, 200, `${name}: ${res.body}`)
    t.equal(res.headers['x-access-token'], undefined, `${name}: the hook issued nothing`)
    t.equal(res.headers['x-refresh-token'], undefined, `${name}: the hook issued nothing`)
    t.equal(res.headers['cache-control'], 'no-store')
    const next = res.json().refreshToken as string
    t.not(next, pair.refreshToken)
    const rec = await session()
    t.equal(rec?.h, hashOf(next), `${name}: h is the returned token's`)
    t.equal(rec?.p, h0, `${name}: p is the presented token's (one rotation)`)
    // With no grace, a second rotation of the same token would have been reuse; the returned token works.
    await sleep(5)
    const again = await refreshBody(app, next)
    t.equal(again.statusCode, 200, `${name}: ${again.body}`)
    t.match(await session(), { h: hashOf(again.json().refreshToken), p: hashOf(next) }, `${name}: the returned token rotated in turn`)
  }
})

t.test('per-route roles: config.auth', async t => {
  const { app } = await buildAppWithRoutes(t, {}, (app) => {
    app.get('/admin', { config: { auth: { roles: ['admin'] } } }, async (request) => ({ userId: request.auth!.userId }))
    app.get('/members', { config: { auth: true } }, async (request) => ({ userId: request.auth!.userId }))
    app.get('/open', { config: { auth: false } }, async (request) => ({ userId: request.auth?.userId ?? null }))
  })
  const alice = await login(app, 'alice')
  const bob = await login(app, 'bob')

  const a = await get(app, '/admin', { authorization: `Bearer ${alice.accessToken}` })
  t.equal(a.statusCode, 403, a.body)
  t.equal(a.json().code, 'TOKENGATE_FORBIDDEN')
  t.equal(a.headers['www-authenticate'], undefined, '403 carries no challenge')
  const b = await get(app, '/admin', { authorization: `Bearer ${bob.accessToken}` })
  t.equal(b.statusCode, 200, b.body)
  t.same(b.json(), { userId: 'u-bob' })
  const n = await get(app, '/admin')
  t.equal(n.statusCode, 401, n.body)
  t.equal(n.json().code, 'TOKENGATE_TOKEN_MISSING')
  t.equal(n.headers['www-authenticate'], 'Bearer')
  const bad = await get(app, '/admin', { authorization: 'Bearer nonsense' })
  t.equal(bad.statusCode, 401)
  t.equal(bad.json().code, 'TOKENGATE_TOKEN_INVALID')
  t.equal(bad.headers['www-authenticate'], 'Bearer error="invalid_token"')

  const m1 = await get(app, '/members', { authorization: `Bearer ${alice.accessToken}` })
  t.equal(m1.statusCode, 200, m1.body)
  const m2 = await get(app, '/members')
  t.equal(m2.statusCode, 401)
  t.equal(m2.json().code, 'TOKENGATE_TOKEN_MISSING')
  const o = await get(app, '/open')
  t.equal(o.statusCode, 200)
  t.same(o.json(), { userId: null })

  // The refresh hook runs before the route's check: bob refreshed passes, alice refreshed is still forbidden.
  const br = await get(app, '/admin', { authorization: `Bearer ${expiredAccess(bob.sessionId, 'u-bob', ['user', 'admin'])}`, 'x-refresh-token': bob.refreshToken })
  t.equal(br.statusCode, 200, br.body)
  t.type(br.headers['x-access-token'], 'string')
  const ar = await get(app, '/admin', { authorization: `Bearer ${expiredAccess(alice.sessionId)}`, 'x-refresh-token': alice.refreshToken })
  t.equal(ar.statusCode, 403, ar.body)
  t.equal(ar.json().code, 'TOKENGATE_FORBIDDEN')
})

t.test('refreshClaims: the refreshed access token carries the new roles and claims', async t => {
  const calls: Array<[string, string]> = []
  const { app, redis, prefix } = await buildApp(t, {
    refreshClaims: async (userId, sessionId) => {
      calls.push([userId, sessionId])
      return userId === 'u-alice' ? { roles: ['user', 'editor'], claims: { name: 'Alice II', sub: 'hijack' } } : null
    }
  })
  const pair = await login(app)
  t.same(calls, [], 'not called at login')
  t.match(payloadOf(pair.accessToken), { roles: ['user'], name: 'Alice' })

  const res = await get(app, '/me', { authorization: `Bearer ${expiredAccess(pair.sessionId)}`, 'x-refresh-token': pair.refreshToken })
  t.equal(res.statusCode, 200, res.body)
  t.same(res.json(), { userId: 'u-alice', sessionId: pair.sessionId, roles: ['user', 'editor'], claims: { name: 'Alice II' } })
  t.same(calls, [['u-alice', pair.sessionId]])
  const access = res.headers['x-access-token']
  t.type(access, 'string')
  if (typeof access === 'string') {
    const claims = payloadOf(access)
    t.same(claims.roles, ['user', 'editor'])
    t.equal(claims.name, 'Alice II')
    t.equal(claims.sub, 'u-alice', 'a reserved claim cannot be overridden')
  }
  const rec = await readSession(redis, prefix, 'u-alice', pair.sessionId)
  t.same(rec?.ro, ['user', 'editor'], 'the session keeps the new roles')
  t.same(rec?.cl, { name: 'Alice II' }, 'and the new claims, without the reserved one')

  // By the route too; bob (null → keep) keeps his.
  const r = await refreshBody(app, res.headers['x-refresh-token'] as string)
  t.equal(r.statusCode, 200, r.body)
  t.same(payloadOf(r.json().accessToken).roles, ['user', 'editor'])
  const bob = await login(app, 'bob')
  const rb = await refreshBody(app, bob.refreshToken)
  t.equal(rb.statusCode, 200, rb.body)
  t.same(payloadOf(rb.json().accessToken).roles, ['user', 'admin'])
  t.same((await readSession(redis, prefix, 'u-bob', bob.sessionId))?.ro, ['user', 'admin'], 'bob keeps his roles')
})

t.test('audit hooks are called with (userId, sessionId, meta)', async t => {
  const calls: Array<[string, string, string, AuditMeta]> = []
  const hook = (name: string) => (userId: string, sessionId: string, meta: AuditMeta): void => { calls.push([name, userId, sessionId, meta]) }
  const { app, redis, prefix } = await buildApp(t, {
    reuseGraceMs: 0,
    onIssue: hook('issue'),
    onRefresh: hook('refresh'),
    onRevoke: hook('revoke'),
    onReuseDetected: hook('reuse')
  })
  const pair = await login(app)
  t.equal(calls.length, 1)
  t.match(calls[0], ['issue', 'u-alice', pair.sessionId, { ip: '127.0.0.1', userAgent: 'lightMyRequest' }])

  calls.length = 0
  const res = await get(app, '/me', { authorization: `Bearer ${expiredAccess(pair.sessionId)}`, 'x-refresh-token': pair.refreshToken, 'user-agent': 'tab-1' })
  t.equal(res.statusCode, 200, res.body)
  t.equal(calls.length, 1)
  t.match(calls[0], ['refresh', 'u-alice', pair.sessionId, { ip: '127.0.0.1', userAgent: 'tab-1' }])

  calls.length = 0
  const r = await refreshBody(app, res.headers['x-refresh-token'] as string)
  t.equal(r.statusCode, 200, r.body)
  t.same(calls.map(c => c[0]), ['refresh'])

  calls.length = 0
  const out = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${r.json().accessToken as string}` } })
  t.equal(out.statusCode, 204, out.body)
  t.equal(calls.length, 1)
  t.match(calls[0], ['revoke', 'u-alice', pair.sessionId, { reason: 'logout' }])

  // Reuse: onReuseDetected and onRevoke, both with reason 'reuse'.
  const p2 = await login(app, 'bob')
  await sleep(5)
  t.equal((await refreshBody(app, p2.refreshToken)).statusCode, 200)
  await sleep(5)
  calls.length = 0
  const reused = await refreshBody(app, p2.refreshToken)
  t.equal(reused.statusCode, 401)
  t.equal(reused.json().code, 'TOKENGATE_REFRESH_REUSED')
  t.same(calls.map(c => c[0]).sort(), ['reuse', 'revoke'])
  for (const c of calls) t.match(c, [String, 'u-bob', p2.sessionId, { reason: 'reuse' }])
  t.equal(await readSession(redis, prefix, 'u-bob', p2.sessionId), undefined, 'the reused session is gone')
})

t.test('throwing audit hooks do not break requests', async t => {
  let n = 0
  const boom = (): never => { n++; throw new Error('audit down') }
  const reject = async (): Promise<void> => { n++; throw new Error('audit down') }
  const { app, redis, prefix } = await buildApp(t, { reuseGraceMs: 0, onIssue: boom, onRefresh: reject, onRevoke: boom, onReuseDetected: reject })
  const pair = await login(app)
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, hashOf(pair.refreshToken), 'session stored')
  const res = await get(app, '/me', { authorization: `Bearer ${expiredAccess(pair.sessionId)}`, 'x-refresh-token': pair.refreshToken })
  t.equal(res.statusCode, 200, res.body)
  t.type(res.headers['x-access-token'], 'string')
  const next = res.headers['x-refresh-token'] as string
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, hashOf(next), 'rotated')
  const r = await refreshBody(app, next)
  t.equal(r.statusCode, 200, r.body)
  const out = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${r.json().accessToken as string}` } })
  t.equal(out.statusCode, 204, out.body)
  t.equal(await readSession(redis, prefix, 'u-alice', pair.sessionId), undefined, 'session gone')
  const p2 = await login(app)
  await sleep(5)
  t.equal((await refreshBody(app, p2.refreshToken)).statusCode, 200)
  await sleep(5)
  const reused = await refreshBody(app, p2.refreshToken)
  t.equal(reused.statusCode, 401, reused.body)
  t.equal(reused.json().code, 'TOKENGATE_REFRESH_REUSED')
  t.equal(await readSession(redis, prefix, 'u-alice', p2.sessionId), undefined, 'the reused session is gone')
  t.equal(n, 8, 'every hook was called: issue ×2, refresh ×3, revoke ×2, reuse ×1')
  t.same(await keysUnder(redis, prefix), [`${prefix}:revoked`])
})
