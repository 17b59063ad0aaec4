// OAuth endpoints as an attacker tries them (DESIGN §2): an expired access token from a log revokes nothing
// (still 200, RFC 7009); the metadata's issuer and endpoint URLs never come from the Host header, so
// routes.oauth needs `issuer`, checked at registration (the gateway's config too); the metadata carries cache
// headers; the introspection client check compares every configured client in full, whatever the id.
import crypto from 'node:crypto'
import { syncBuiltinESMExports } from 'node:module'
import Fastify from 'fastify'
import t from 'tap'
import tokengate, { type TokengateOptions } from '../../plugin/index.js'
import { ConfigError, parseConfig } from '../../gateway/index.js'
import { buildApp, login, SECRET, verifyCredentials } from '../helpers/app.js'
import { readSession } from '../helpers/redis.js'
import { craftAccessToken } from '../helpers/tokens.js'

const ISSUER = 'https://auth.example'
const RS = { id: 'resource-server', secret: 'rs-secret-0123456789' }
const form = (o: Record<string, string>): string => new URLSearchParams(o).toString()
const formHeaders = { 'content-type': 'application/x-www-form-urlencoded' }

t.test('/revoke with an expired access token changes nothing; a live one revokes (control)', async t => {
  const revoked: Array<[string, string | undefined]> = []
  const { app, redis, prefix } = await buildApp(t, { issuer: ISSUER, routes: { verifyCredentials, oauth: true }, onRevoke: (_u, sid, meta) => { revoked.push([sid, meta.reason]) } })
  const pair = await login(app)
  const expired = craftAccessToken({ sub: 'u-alice', sid: pair.sessionId, roles: ['user'] }, { expiresInSec: -60, iss: ISSUER })
  const res = await app.inject({ method: 'POST', url: '/auth/revoke', headers: formHeaders, payload: form({ token: expired }) })
  t.equal(res.statusCode, 200, 'answered 200 (RFC 7009 §2.2)')
  t.not(await readSession(redis, prefix, 'u-alice', pair.sessionId), undefined, 'the session is still there')
  const me = await app.inject({ url: '/me', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(me.statusCode, 200, 'its access token still works')
  const refreshed = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(refreshed.statusCode, 200, 'and its refresh token')

  // Control: the live access token does revoke.
  const next = refreshed.json()
  const live = await app.inject({ method: 'POST', url: '/auth/revoke', headers: formHeaders, payload: form({ token: next.accessToken }) })
  t.equal(live.statusCode, 200)
  t.equal(await readSession(redis, prefix, 'u-alice', pair.sessionId), undefined, 'a live access token ends its session')
  const after = await app.inject({ url: '/me', headers: { authorization: `Bearer ${next.accessToken}` } })
  t.equal(after.json().code, 'TOKENGATE_TOKEN_REVOKED')
  t.same(revoked, [[pair.sessionId, 'revoke']], 'onRevoke fired once, with reason revoke (and not for the expired token)')
})

t.test('routes.oauth without issuer is refused at registration, naming the option', async t => {
  for (const oauth of [true, { introspectionClients: [RS] }]) {
    const app = Fastify({ logger: false })
    t.teardown(async () => { await app.close() })
    const err = await app.register(tokengate, { secret: SECRET, routes: { verifyCredentials, oauth } } as TokengateOptions).then(() => null, (e: Error) => e)
    t.ok(err instanceof Error, 'register fails')
    t.match(err?.message, /"issuer"/, `the message names issuer (${String(err?.message)})`)
    t.match(err?.message, /routes\.oauth/, 'and routes.oauth')
  }
  const notUrl = Fastify({ logger: false })
  t.teardown(async () => { await notUrl.close() })
  const err = await notUrl.register(tokengate, { secret: SECRET, issuer: 'tokengate', routes: { verifyCredentials, oauth: true } } as TokengateOptions).then(() => null, (e: Error) => e)
  t.match(err?.message, /"issuer".*URL/, `an issuer that is not a URL is refused (${String(err?.message)})`)
  // Control: oauth off needs no issuer; oauth with one registers.
  const off = Fastify({ logger: false })
  t.teardown(async () => { await off.close() })
  await off.register(tokengate, { secret: SECRET, routes: { verifyCredentials } } as TokengateOptions)
  const on = Fastify({ logger: false })
  t.teardown(async () => { await on.close() })
  await on.register(tokengate, { secret: SECRET, issuer: ISSUER, routes: { verifyCredentials, oauth: true } } as TokengateOptions)
  t.pass('oauth with an issuer registers')
})

t.test('the gateway config: oauth needs tokens.issuer', async t => {
  const base = { login: { usersFile: '/nonexistent/users.json' }, tokens: { secret: SECRET } }
  const err = (() => { try { parseConfig({ ...base, oauth: true }); return null } catch (e) { return e as Error } })()
  t.ok(err instanceof ConfigError, 'a ConfigError')
  t.match(err?.message, /^config: tokens\.issuer /, `names tokens.issuer (${String(err?.message)})`)
  t.doesNotThrow(() => parseConfig({ ...base, oauth: true, tokens: { secret: SECRET, issuer: ISSUER } }), 'control: with tokens.issuer it parses')
})

t.test('the metadata ignores the Host header and carries cache headers', async t => {
  const { app } = await buildApp(t, { issuer: ISSUER, routes: { verifyCredentials, oauth: true } })
  const res = await app.inject({ url: '/.well-known/oauth-authorization-server', headers: { host: 'evil.example', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'http' } })
  t.equal(res.statusCode, 200)
  t.notOk(res.body.includes('evil.example'), 'no URL from the request')
  t.match(res.json(), { issuer: ISSUER, token_endpoint: `${ISSUER}/auth/token`, revocation_endpoint: `${ISSUER}/auth/revoke`, introspection_endpoint: `${ISSUER}/auth/introspect` })
  t.match(res.headers['cache-control'], /^public, max-age=\d+$/, `Cache-Control (${String(res.headers['cache-control'])})`)
})

t.test('introspection compares every client in full, whether or not the id exists', async t => {
  const clients = [RS, { id: 'second-client', secret: 'second-secret-0123456789' }, { id: 'third', secret: 'third-secret-0123456789' }]
  const { app } = await buildApp(t, { issuer: ISSUER, routes: { verifyCredentials, oauth: { introspectionClients: clients } } })
  // Counted where it happens: node:crypto's timingSafeEqual (the built-in module's export, synced for ESM importers).
  const original = crypto.timingSafeEqual
  let calls = 0
  crypto.timingSafeEqual = ((a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => { calls++; return original(a, b) }) as typeof original
  syncBuiltinESMExports()
  t.teardown(() => { crypto.timingSafeEqual = original; syncBuiltinESMExports() })
  const attempt = async (id: string, secret: string): Promise<{ status: number, calls: number }> => {
    calls = 0
    const res = await app.inject({ method: 'POST', url: '/auth/introspect', headers: { ...formHeaders, authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}` }, payload: form({ token: 'not-a-token' }) })
    return { status: res.statusCode, calls }
  }
  const unknownId = await attempt('no-such-client', 'whatever-0123456789')
  const wrongSecret = await attempt(RS.id, 'wrong-secret-0123456789')
  const lastClient = await attempt('third', 'wrong-secret-0123456789')
  const right = await attempt(RS.id, RS.secret)
  t.equal(unknownId.status, 401)
  t.equal(wrongSecret.status, 401)
  t.equal(lastClient.status, 401)
  t.equal(right.status, 200, 'control: the right credentials pass')
  t.comment(`constant-time comparisons: unknown id ${unknownId.calls}, known id wrong secret ${wrongSecret.calls}, last client ${lastClient.calls}, right ${right.calls}`)
  t.ok(unknownId.calls >= clients.length * 2, 'an unknown id is compared against every client\'s id and secret')
  t.equal(wrongSecret.calls, unknownId.calls, 'a known id with a wrong secret: the same comparisons')
  t.equal(lastClient.calls, unknownId.calls, 'the last client\'s id: the same comparisons')
  t.equal(right.calls, unknownId.calls, 'the right credentials: the same comparisons')
})
