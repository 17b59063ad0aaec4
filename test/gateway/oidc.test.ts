// Single sign-on through a real OpenID Provider (panva's oidc-provider, started here on 127.0.0.1 with the
// gateway registered as a client) and its back-channel logout. Two gateway instances share Redis behind one
// public URL: a sign-in started on one is finished on the other, and a sign-out at the provider's own
// end-session page kills the session on both. Every attack has its control beside it: a tampered, replayed
// or foreign state, a wrong nonce, a provider error, open redirects, and logout tokens that are forged,
// replayed, for another audience or issuer, with a nonce, without the event, without sid and sub.
import { randomUUID } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { SignJWT, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose'
import t, { type Test } from 'tap'
import { WebSocket, WebSocketServer } from 'ws'
import { buildGateway } from '../../gateway/index.js'
import { SECRET } from '../helpers/app.js'
import { Jar, go, rolesOf, signInAtProvider, signOutAtProvider, startProvider } from '../helpers/oidc-provider.js'
import { deletePrefix, freePort, keysUnder, readSession, redisUrl, startOwnRedis, uniquePrefix } from '../helpers/redis.js'
import { startEchoUpstream } from '../helpers/upstream.js'

const CLIENT_ID = 'tokengate-gateway'
const CLIENT_SECRET = 'gateway-client-secret-0123456789abcdef'
const EVENT = 'http://schemas.openid.net/event/backchannel-logout'

const url = await redisUrl()
const redis = new Redis(url)
const prefix = uniquePrefix('oidc')
const upstream = await startEchoUpstream()
// A WebSocket echo upstream: a session's sockets close when the provider logs it out.
const wsServer = http.createServer()
const wss = new WebSocketServer({ server: wsServer })
wss.on('connection', ws => { ws.on('message', data => ws.send(data)) })
await new Promise<void>(resolve => wsServer.listen(0, '127.0.0.1', resolve))
const wsUpstream = `http://127.0.0.1:${(wsServer.address() as AddressInfo).port}`
const port = await freePort()
const publicUrl = `http://127.0.0.1:${port}`
// A third gateway, without Redis (state, jti and sid memory in its process), is a client of its own: a public
// one (no secret; PKCE alone binds the code to it).
const memoryPort = await freePort()
const memoryUrl = `http://127.0.0.1:${memoryPort}`
const op = await startProvider([{
  client_id: 'memory-gateway',
  token_endpoint_auth_method: 'none',
  redirect_uris: [`${memoryUrl}/auth/oidc/callback`],
  backchannel_logout_uri: `${memoryUrl}/auth/oidc/backchannel-logout`,
  backchannel_logout_session_required: true,
  grant_types: ['authorization_code'],
  response_types: ['code']
}, {
  client_id: CLIENT_ID,
  client_secret: CLIENT_SECRET,
  redirect_uris: [`${publicUrl}/auth/oidc/callback`],
  post_logout_redirect_uris: [`${publicUrl}/`],
  backchannel_logout_uri: `${publicUrl}/auth/oidc/backchannel-logout`,
  backchannel_logout_session_required: true,
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic'
}])

const config = {
  redis: { url },
  tokens: { secret: SECRET, keyPrefix: prefix, transport: ['header', 'cookie'] },
  login: { oidc: { issuer: op.issuer, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, rolesClaim: 'realm_access.roles', publicUrl } },
  routes: [
    { prefix: '/api', upstream: upstream.url, auth: 'required' },
    { prefix: '/admin', upstream: upstream.url, auth: 'required', roles: ['admin'] },
    { prefix: '/pay', upstream: upstream.url, auth: 'required', acr: ['mfa'] },
    { prefix: '/ws', upstream: wsUpstream, auth: 'required', websocket: true }
  ],
  logLevel: 'silent'
}

async function instance (listenPort: number): Promise<{ app: FastifyInstance, base: string }> {
  const app = buildGateway(config, { logger: false })
  await app.listen({ port: listenPort, host: '127.0.0.1' })
  return { app, base: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` }
}
// A: the public URL's instance (the provider's redirects and back-channel calls reach it); B: a second one.
const A = await instance(port)
const B = await instance(0)
const M = buildGateway({
  ...config,
  redis: undefined,
  login: { oidc: { ...config.login.oidc, clientId: 'memory-gateway', clientSecret: undefined, publicUrl: memoryUrl } }
}, { logger: false })
await M.listen({ port: memoryPort, host: '127.0.0.1' })

t.teardown(async () => {
  await A.app.close()
  await B.app.close()
  await M.close()
  await op.close()
  await upstream.close()
  for (const ws of wss.clients) ws.terminate()
  await new Promise<void>(resolve => wss.close(() => resolve()))
  wsServer.closeAllConnections()
  await new Promise<void>(resolve => wsServer.close(() => resolve()))
  await deletePrefix(redis, prefix)
  redis.disconnect()
})

/** The claims of a JWT, unverified (our own access token from the jar). */
const claimsOf = (jwt: string): Record<string, any> => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'))

/** The gateway session a jar holds: its user and session id (from tg_access). */
function sessionOf (jar: Jar): { sub: string, sid: string } {
  const access = jar.get('tg_access')
  if (access === undefined) throw new Error('no tg_access cookie')
  const c = claimsOf(access.value)
  return { sub: c.sub, sid: c.sid }
}

/** GET /auth/oidc/login on `at`: the 302 to the provider. */
async function start (jar: Jar, returnTo?: string, at = A.base): Promise<URL> {
  const res = await go(jar, `${at}/auth/oidc/login${returnTo !== undefined ? `?returnTo=${encodeURIComponent(returnTo)}` : ''}`)
  if (res.status !== 302) throw new Error(`login answered ${res.status}: ${await res.text()}`)
  return new URL(res.headers.get('location')!)
}

/** The callback (the provider's redirect to the public URL) sent to instance `at`. */
async function finish (jar: Jar, callback: URL, at = A.base): Promise<Response> {
  return await go(jar, `${at}${callback.pathname}${callback.search}`)
}

/** A whole sign-in as `account`: started on `from`, finished on `to`; the callback's answer. */
async function signIn (jar: Jar, account: string, opts: { returnTo?: string, from?: string, to?: string } = {}): Promise<Response> {
  const authorization = await start(jar, opts.returnTo, opts.from)
  const redirectTo = new URL(authorization.searchParams.get('redirect_uri')!).origin
  return await finish(jar, await signInAtProvider(jar, authorization.href, account, redirectTo), opts.to)
}

/** GET <base>/api/hello with the jar's cookies: the status, and who the upstream saw. */
async function api (jar: Jar, base: string, path = '/api/hello'): Promise<{ status: number, user?: string, roles?: string, code?: string }> {
  const res = await go(jar, `${base}${path}`)
  const body = await res.json() as { headers?: Record<string, string>, code?: string }
  return { status: res.status, user: body.headers?.['x-user-id'], roles: body.headers?.['x-user-roles'], code: body.code }
}

/** Resolves when instance `app` learns of a revokeAll of `userId` (its own or the feed's). */
function userRevokedOn (app: FastifyInstance, userId: string): Promise<void> {
  return new Promise(resolve => {
    const off = app.tokengate.onRevokedBefore((id) => { if (id === userId) { off(); resolve() } })
  })
}

/** Resolves when instance `app` learns that session `sid` was revoked (its own revocation or the feed's). */
function revokedOn (app: FastifyInstance, sid: string): Promise<void> {
  return new Promise(resolve => {
    const off = app.tokengate.onSessionRevoked((id) => { if (id === sid) { off(); resolve() } })
  })
}

async function expectOidcFailed (t: Test, res: Response, what: string): Promise<void> {
  t.equal(res.status, 401, `${what}: 401`)
  const body = await res.json() as { code?: string }
  t.equal(body.code, 'TOKENGATE_OIDC_FAILED', `${what}: TOKENGATE_OIDC_FAILED`)
  t.notOk(res.headers.getSetCookie().some(c => /^tg_(access|refresh)=[^;]/.test(c)), `${what}: no session cookie`)
}

t.test('sign in through the provider\'s login and consent pages, finished on a second instance; signed out at the provider, dead on both', async t => {
  const jar = new Jar()
  const loginRes = await go(jar, `${A.base}/auth/oidc/login?returnTo=${encodeURIComponent('/api/hello?x=1')}`)
  t.equal(loginRes.status, 302, 'GET /auth/oidc/login: 302')
  t.equal(loginRes.headers.get('cache-control'), 'no-store', 'not cached')
  const authorization = new URL(loginRes.headers.get('location')!)
  t.equal(`${authorization.origin}${authorization.pathname}`, `${op.issuer}/auth`, 'to the authorization endpoint the discovery document names')
  const p = authorization.searchParams
  t.match(Object.fromEntries(p), {
    client_id: CLIENT_ID,
    response_type: 'code',
    redirect_uri: `${publicUrl}/auth/oidc/callback`,
    scope: 'openid profile email',
    code_challenge_method: 'S256',
    code_challenge: /^[A-Za-z0-9_-]{43}$/,
    state: /^[A-Za-z0-9_-]{22,}$/,
    nonce: /^[A-Za-z0-9_-]{22,}$/
  }, 'authorization code flow with PKCE (S256), state and nonce, the default scopes')
  const flowCookie = loginRes.headers.getSetCookie().find(c => c.startsWith('tg_oidc='))
  t.ok(flowCookie, 'the flow rides in a cookie')
  t.match(flowCookie, /HttpOnly/i, 'HttpOnly')
  t.match(flowCookie, /SameSite=Lax/i, 'SameSite=Lax (the provider sends the browser back with a top-level GET)')
  t.match(flowCookie, /Path=\/auth\/oidc/i, 'Path=/auth/oidc')
  t.match(flowCookie, /Max-Age=600/i, 'ten minutes')
  t.notOk(flowCookie!.includes(p.get('state')!) || flowCookie!.includes(p.get('nonce')!), 'encrypted: neither state nor nonce readable in it')

  const callback = await signInAtProvider(jar, authorization.href, 'alice', publicUrl)
  t.equal(`${callback.origin}${callback.pathname}`, `${publicUrl}/auth/oidc/callback`, 'the provider redirects to the registered callback')
  t.notOk(jar.get('tg_access'), 'no session before the callback')

  const res = await finish(jar, callback, B.base)
  t.equal(res.status, 303, 'the callback, finished by the second instance: 303')
  t.equal(res.headers.get('location'), '/api/hello?x=1', 'to returnTo')
  t.equal(res.headers.get('cache-control'), 'no-store', 'not cached')
  t.equal(await res.text(), '', 'no body: no token in it')
  const set = res.headers.getSetCookie()
  for (const name of ['tg_access', 'tg_refresh', 'tg_csrf']) t.ok(set.some(c => c.startsWith(`${name}=`) && !c.startsWith(`${name}=;`)), `${name} set`)
  t.ok(set.some(c => /^tg_oidc=;/.test(c) || /^tg_oidc=.*Max-Age=0/i.test(c) || /^tg_oidc=.*Expires=Thu, 01 Jan 1970/i.test(c)), 'the flow cookie is cleared')
  const { sub, sid } = sessionOf(jar)
  t.equal(sub, 'alice', 'the session is the ID token\'s sub')

  t.same(await api(jar, A.base), { status: 200, user: 'alice', roles: 'user', code: undefined }, 'instance A: the upstream sees alice, roles from realm_access.roles')
  t.same(await api(jar, B.base), { status: 200, user: 'alice', roles: 'user', code: undefined }, 'instance B too')
  t.equal((await api(jar, A.base, '/admin/x')).status, 403, 'not an admin: 403 on an admin route')

  const stored = await readSession(redis, prefix, 'alice', sid)
  t.ok(stored?.os, 'the session record holds the provider\'s session id')
  t.ok((await keysUnder(redis, `${prefix}:oidc:sid`)).length > 0, 'and the provider-session index has it')

  // A WebSocket of the session, through the second instance.
  const wsUrl = new URL(`${B.base}/ws/chat`)
  const socket = new WebSocket(wsUrl.href.replace(/^http/, 'ws'), { headers: { cookie: jar.header(wsUrl) } })
  const closed = new Promise<{ code: number, reason: string }>(resolve => socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })))
  await new Promise<void>((resolve, reject) => { socket.once('open', () => resolve()); socket.once('error', reject) })
  const echoed = new Promise<string>(resolve => socket.once('message', data => resolve(data.toString())))
  socket.send('hello')
  t.equal(await echoed, 'hello', 'a WebSocket of the session is open through instance B')

  const deadOnA = revokedOn(A.app, sid)
  const deadOnB = revokedOn(B.app, sid)
  const before = op.backchannel.length
  await signOutAtProvider(jar, op.issuer)
  t.match(op.backchannel.slice(before), [{ clientId: CLIENT_ID, sub: 'alice', sid: stored!.os }], 'the provider called the back-channel logout URI, and the gateway answered 200')
  const failed = op.backchannel.slice(before).find(b => b.error !== undefined)
  if (failed !== undefined) throw new Error(`the back-channel logout failed: ${failed.error}`)
  await deadOnA
  await deadOnB
  t.equal((await api(jar, A.base)).status, 401, 'instance A: the session is dead')
  t.equal((await api(jar, B.base)).status, 401, 'instance B: dead too')
  t.same(await closed, { code: 1008, reason: 'session revoked' }, 'and its WebSocket is closed: 1008 session revoked')
  t.equal(await readSession(redis, prefix, 'alice', sid), undefined, 'its record is gone from Redis')
})

t.test('rolesClaim: an admin at the provider is one at the gateway', async t => {
  const jar = new Jar()
  t.equal((await signIn(jar, 'admin-carol')).status, 303, 'signed in')
  t.same(rolesOf('admin-carol'), ['user', 'admin'])
  t.same(await api(jar, A.base, '/admin/x'), { status: 200, user: 'admin-carol', roles: 'user,admin', code: undefined }, 'the admin route admits her')
})

t.test('acr and amr: how the user authenticated at the provider is in the session, and a route\'s acr policy sees it', async t => {
  const mfa = new Jar()
  t.equal((await signIn(mfa, 'mfa-dora')).status, 303, 'signed in with a second factor')
  const withMfa = claimsOf(mfa.get('tg_access')!.value)
  t.equal(withMfa.acr, 'mfa', 'the ID token\'s acr is in the access token')
  t.same(withMfa.amr, ['pwd', 'otp'], 'and its amr')
  t.same(await api(mfa, A.base, '/pay/x'), { status: 200, user: 'mfa-dora', roles: 'user', code: undefined }, 'the acr route admits her')
  // Control: a sign-in without a second factor has neither claim, and the same route asks for a step-up.
  const pwd = new Jar()
  t.equal((await signIn(pwd, 'erin')).status, 303, 'signed in with a password alone')
  const plain = claimsOf(pwd.get('tg_access')!.value)
  t.equal(plain.acr, undefined, 'no acr')
  t.equal(plain.amr, undefined, 'no amr')
  t.equal((await api(pwd, A.base, '/api/x')).status, 200, 'a route without an acr policy admits her')
  const stepUp = await go(pwd, `${A.base}/pay/x`)
  t.equal(stepUp.status, 401, 'the acr route: 401')
  t.equal((await stepUp.json() as { code?: string }).code, 'TOKENGATE_STEP_UP_REQUIRED')
  t.match(stepUp.headers.get('www-authenticate'), /error="insufficient_user_authentication"/)
  t.match(stepUp.headers.get('www-authenticate'), /acr_values="mfa"/)
})

t.test('the state: tampered, replayed, or from another browser → 401 TOKENGATE_OIDC_FAILED; the untouched one works', async t => {
  const jar = new Jar()
  const authorization = await start(jar, '/api/after')
  const callback = await signInAtProvider(jar, authorization.href, 'dave', publicUrl)

  const tampered = new URL(callback)
  tampered.searchParams.set('state', `${callback.searchParams.get('state')!.slice(0, -2)}xx`)
  await expectOidcFailed(t, await finish(jar, tampered), 'a tampered state')
  const noState = new URL(callback)
  noState.searchParams.delete('state')
  await expectOidcFailed(t, await finish(jar, noState), 'no state')
  await expectOidcFailed(t, await finish(new Jar(), callback), 'another browser (no flow cookie: login CSRF)')
  const alien = jar.clone()
  for (const [k, c] of alien.cookies) if (c.name === 'tg_oidc') alien.cookies.set(k, { ...c, value: `${c.value.slice(0, -4)}AAAA` })
  await expectOidcFailed(t, await finish(alien, callback), 'a flow cookie that does not decrypt')

  const replay = jar.clone()
  const res = await finish(jar, callback)
  t.equal(res.status, 303, 'control: the untouched callback signs in')
  t.equal(res.headers.get('location'), '/api/after')
  t.equal(sessionOf(jar).sub, 'dave')

  await expectOidcFailed(t, await finish(replay.clone(), callback), 'the same callback and flow cookie again (replay)')
  await expectOidcFailed(t, await finish(replay.clone(), callback, B.base), 'replayed on the second instance')
})

t.test('a wrong nonce (the authorization request\'s nonce swapped) → 401; the unswapped flow works', async t => {
  const jar = new Jar()
  const authorization = await start(jar)
  authorization.searchParams.set('nonce', 'not-the-nonce-the-gateway-keeps-0123456789')
  const callback = await signInAtProvider(jar, authorization.href, 'erin', publicUrl)
  await expectOidcFailed(t, await finish(jar, callback), 'an ID token with another nonce')
  t.notOk(jar.get('tg_access'), 'no session')

  const control = await signIn(jar, 'erin')
  t.equal(control.status, 303, 'control: the same user, the nonce untouched: signed in')
})

t.test('a provider error (the user cancels at the provider; ?error=access_denied) → 401, no session', async t => {
  const jar = new Jar()
  const authorization = await start(jar)
  const callback = await signInAtProvider(jar, authorization.href, 'frank', publicUrl, { cancel: true })
  t.equal(callback.searchParams.get('error'), 'access_denied', 'the provider answers access_denied')
  const res = await finish(jar, callback)
  t.equal(res.status, 401)
  const body = await res.json() as { code: string, message: string }
  t.equal(body.code, 'TOKENGATE_OIDC_FAILED')
  t.match(body.message, /access_denied/, 'the message names the provider\'s error code')
  t.notOk(jar.get('tg_access'), 'no session')

  const crafted = await start(jar)
  const forged = new URL(`${publicUrl}/auth/oidc/callback`)
  forged.searchParams.set('error', 'access_denied')
  forged.searchParams.set('state', crafted.searchParams.get('state')!)
  await expectOidcFailed(t, await finish(jar, forged), 'a crafted error answer with a live state')
  t.equal((await signIn(jar, 'frank')).status, 303, 'control: a sign-in that goes through')
})

t.test('returnTo: only a path on the gateway\'s origin; open-redirect attempts land on /', async t => {
  const jar = new Jar()
  t.equal((await signIn(jar, 'grace', { returnTo: '/api/x?y=1#z' })).headers.get('location'), '/api/x?y=1#z', 'control: a path is kept')
  for (const evil of ['//evil.example', '/\\evil.example', 'https://evil.example', '/%2F%2Fevil', '/%2f%2fevil.example', '/%5Cevil.example', '/%252F%252Fevil', 'javascript:alert(1)', '/\tevil', 'evil.example', '']) {
    const res = await signIn(jar, 'grace', { returnTo: evil })
    t.equal(res.status, 303, `${JSON.stringify(evil)}: signed in`)
    t.equal(res.headers.get('location'), '/', `${JSON.stringify(evil)}: to /`)
  }
  const none = await signIn(jar, 'grace')
  t.equal(none.headers.get('location'), '/', 'no returnTo: /')
})

/** A logout token as the provider signs them (its key), claims merged over a valid one (undefined drops a claim). */
async function logoutToken (over: Record<string, unknown>, opts: { key?: JWK, header?: Record<string, unknown> } = {}): Promise<string> {
  const claims: Record<string, unknown> = { iss: op.issuer, aud: CLIENT_ID, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 120, jti: randomUUID(), events: { [EVENT]: {} }, ...over }
  for (const k of Object.keys(claims)) if (claims[k] === undefined) delete claims[k]
  const key = opts.key ?? op.signingKey
  return await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: op.signingKey.kid, typ: 'logout+jwt', ...opts.header }).sign(await importJWK(key, 'RS256'))
}

async function backchannel (token: string | undefined, at = A.base, init: { contentType?: string, body?: string } = {}): Promise<{ status: number, body: string, cacheControl: string | null }> {
  const res = await fetch(`${at}/auth/oidc/backchannel-logout`, {
    method: 'POST',
    headers: { 'content-type': init.contentType ?? 'application/x-www-form-urlencoded' },
    body: init.body ?? (token === undefined ? '' : new URLSearchParams({ logout_token: token }).toString())
  })
  return { status: res.status, body: await res.text(), cacheControl: res.headers.get('cache-control') }
}

t.test('back-channel logout tokens: each bad one → 400 {"error":"invalid_request"}, the session lives; the good one kills it', async t => {
  const jar = new Jar()
  t.equal((await signIn(jar, 'heidi')).status, 303, 'signed in')
  const { sid } = sessionOf(jar)
  const providerSid = (await readSession(redis, prefix, 'heidi', sid))!.os!
  const base = { sub: 'heidi', sid: providerSid }
  const { privateKey: otherKey } = await generateKeyPair('RS256', { extractable: true })
  const forgedKey = await exportJWK(otherKey)
  const now = Math.floor(Date.now() / 1000)
  const unsigned = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'logout+jwt' })).toString('base64url')}.${Buffer.from(JSON.stringify({ iss: op.issuer, aud: CLIENT_ID, iat: now, jti: randomUUID(), events: { [EVENT]: {} }, ...base })).toString('base64url')}.`
  const hs256 = await new SignJWT({ iss: op.issuer, aud: CLIENT_ID, iat: now, jti: randomUUID(), events: { [EVENT]: {} }, ...base }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(CLIENT_SECRET))

  const bad: Array<[string, string | undefined, { contentType?: string, body?: string }?]> = [
    ['forged: signed by another key under the provider\'s kid', await logoutToken(base, { key: forgedKey })],
    ['alg none', unsigned],
    ['HS256 with the client secret', hs256],
    ['another audience', await logoutToken({ ...base, aud: 'another-client' })],
    ['another issuer', await logoutToken({ ...base, iss: 'https://evil.example' })],
    ['with a nonce', await logoutToken({ ...base, nonce: 'n-0S6_WzA2Mj' })],
    ['without events', await logoutToken({ ...base, events: undefined })],
    ['events without the back-channel logout event', await logoutToken({ ...base, events: { 'http://schemas.openid.net/event/other': {} } })],
    ['the event as a string, not a JSON object', await logoutToken({ ...base, events: { [EVENT]: 'yes' } })],
    ['without sid and sub', await logoutToken({ sub: undefined, sid: undefined })],
    ['without iat', await logoutToken({ ...base, iat: undefined })],
    ['iat an hour ahead', await logoutToken({ ...base, iat: now + 3600, exp: now + 7200 })],
    ['iat an hour old', await logoutToken({ ...base, iat: now - 3600 })],
    ['expired', await logoutToken({ ...base, iat: now - 300, exp: now - 200 })],
    ['without jti', await logoutToken({ ...base, jti: undefined })],
    ['not a JWT', 'not.a.jwt'],
    ['no logout_token', undefined],
    ['as JSON, not a form', undefined, { contentType: 'application/json', body: JSON.stringify({ logout_token: await logoutToken(base) }) }],
    ['as text', undefined, { contentType: 'text/plain', body: await logoutToken(base) }],
    ['twice in one form', undefined, { body: `logout_token=${await logoutToken(base)}&logout_token=${await logoutToken(base)}` }]
  ]
  for (const [what, token, init] of bad) {
    const res = await backchannel(token, A.base, init)
    t.equal(res.status, 400, `${what}: 400`)
    t.same(JSON.parse(res.body), { error: 'invalid_request' }, `${what}: { "error": "invalid_request" }`)
    t.equal(res.cacheControl, 'no-store', `${what}: no-store`)
  }
  t.equal((await api(jar, A.base)).status, 200, 'after all of them the session lives')

  const good = await logoutToken(base)
  const dead = revokedOn(B.app, sid)
  const res = await backchannel(good)
  t.equal(res.status, 200, 'control: the valid token: 200')
  t.equal(res.body, '', 'no body')
  t.equal(res.cacheControl, 'no-store', 'no-store')
  await dead
  t.equal((await api(jar, A.base)).status, 401, 'the session is dead on A')
  t.equal((await api(jar, B.base)).status, 401, 'and on B')

  const replayed = await backchannel(good)
  t.equal(replayed.status, 400, 'the same token again (same jti): 400')
  t.same(JSON.parse(replayed.body), { error: 'invalid_request' })
  t.equal((await backchannel(good, B.base)).status, 400, 'replayed on the second instance: 400 too (the jti memory is shared)')
})

t.test('a logout token with sid ends that provider session\'s sessions only; one with sub alone ends every session of the user', async t => {
  const one = new Jar()
  const two = new Jar()
  t.equal((await signIn(one, 'ivan')).status, 303)
  t.equal((await signIn(two, 'ivan')).status, 303, 'ivan signed in from a second browser (another provider session)')
  const sidOne = (await readSession(redis, prefix, 'ivan', sessionOf(one).sid))!.os!
  const sidTwo = (await readSession(redis, prefix, 'ivan', sessionOf(two).sid))!.os!
  t.not(sidOne, sidTwo, 'two provider sessions')

  t.equal((await backchannel(await logoutToken({ sid: sidOne }))).status, 200, 'sid alone: 200')
  t.equal((await api(one, A.base)).status, 401, 'the first browser\'s session is dead')
  t.equal((await api(two, A.base)).status, 200, 'the second\'s lives')

  t.equal((await backchannel(await logoutToken({ sub: 'someone-else', sid: sidTwo }))).status, 200, 'sid with another sub: 200')
  t.equal((await api(two, A.base)).status, 200, 'ivan\'s session with that sid is not another user\'s to end')

  const three = new Jar()
  t.equal((await signIn(three, 'ivan')).status, 303)
  const dead = userRevokedOn(B.app, 'ivan')
  t.equal((await backchannel(await logoutToken({ sub: 'ivan' }))).status, 200, 'sub alone: 200')
  await dead
  for (const [name, jar] of [['second', two], ['third', three]] as const) {
    t.equal((await api(jar, A.base)).status, 401, `the ${name} browser's session is dead on A`)
    t.equal((await api(jar, B.base)).status, 401, 'and on B')
  }
})

t.test('without Redis, a public client: the same flow, single-use state, sign-out at the provider and jti memory in the process', async t => {
  const jar = new Jar()
  const authorization = await start(jar, '/api/m', memoryUrl)
  const callback = await signInAtProvider(jar, authorization.href, 'judy', memoryUrl)
  const replay = jar.clone()
  const res = await finish(jar, callback, memoryUrl)
  t.equal(res.status, 303, 'signed in')
  t.equal(res.headers.get('location'), '/api/m')
  t.same(await api(jar, memoryUrl), { status: 200, user: 'judy', roles: 'user', code: undefined }, 'the upstream sees judy')
  await expectOidcFailed(t, await finish(replay, callback, memoryUrl), 'the callback replayed')

  const before = op.backchannel.length
  await signOutAtProvider(jar, op.issuer)
  t.match(op.backchannel.slice(before), [{ clientId: 'memory-gateway', sub: 'judy' }], 'the provider called this gateway')
  t.equal(op.backchannel.slice(before).find(b => b.error !== undefined), undefined, 'which answered 200')
  t.equal((await api(jar, memoryUrl)).status, 401, 'the session is dead')

  const second = new Jar()
  t.equal((await signIn(second, 'judy', { from: memoryUrl, to: memoryUrl })).status, 303, 'signed in again')
  const token = await new SignJWT({ iss: op.issuer, aud: 'memory-gateway', iat: Math.floor(Date.now() / 1000), jti: randomUUID(), events: { [EVENT]: {} }, sub: 'judy' })
    .setProtectedHeader({ alg: 'RS256', kid: op.signingKey.kid }).sign(await importJWK(op.signingKey, 'RS256'))
  t.equal((await backchannel(token, memoryUrl)).status, 200, 'a logout token for judy: 200')
  t.equal((await api(second, memoryUrl)).status, 401, 'her session is dead')
  t.equal((await backchannel(token, memoryUrl)).status, 400, 'the same token again: 400')
})

t.test('sign-ins in several tabs at once each finish; long returnTo paths keep the flow cookie under 4 KB', async t => {
  const jar = new Jar()
  const one = await start(jar, '/one')
  const two = await start(jar, '/two')
  const cbTwo = await signInAtProvider(jar, two.href, 'kate', publicUrl)
  const cbOne = await signInAtProvider(jar, one.href, 'kate', publicUrl)
  t.equal((await finish(jar, cbOne)).headers.get('location'), '/one', 'the first tab\'s sign-in finishes')
  t.equal((await finish(jar, cbTwo)).headers.get('location'), '/two', 'and the second\'s')

  const long = `/${'a'.repeat(1500)}`
  let last: URL | undefined
  for (let i = 0; i < 5; i++) last = await start(jar, `${long}${i}`)
  const cookie = jar.get('tg_oidc')
  t.ok(cookie !== undefined && cookie.value.length <= 3800, `the flow cookie stays within what a browser keeps (${cookie?.value.length} bytes)`)
  const res = await finish(jar, await signInAtProvider(jar, last!.href, 'kate', publicUrl))
  t.equal(res.headers.get('location'), `${long}4`, 'the latest sign-in finishes')
})

t.test('Redis down: a valid logout token is 503, and the same token once Redis is back is 200', async t => {
  const own = await startOwnRedis()
  t.teardown(async () => { await own.stop() })
  const gw = buildGateway({ ...config, redis: { url: own.url }, tokens: { ...config.tokens, storeTimeoutMs: 300 }, login: { oidc: { ...config.login.oidc, clientId: 'redis-down' } } }, { logger: false })
  t.teardown(async () => { await gw.close() })
  await gw.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(gw.server.address() as AddressInfo).port}`
  const token = await new SignJWT({ iss: op.issuer, aud: 'redis-down', iat: Math.floor(Date.now() / 1000), jti: randomUUID(), events: { [EVENT]: {} }, sub: 'nobody' })
    .setProtectedHeader({ alg: 'RS256', kid: op.signingKey.kid }).sign(await importJWK(op.signingKey, 'RS256'))
  t.equal((await backchannel(await logoutToken({ sub: 'nobody', aud: 'redis-down' }), base)).status, 200, 'control: Redis up, 200')
  await own.kill()
  const down = await fetch(`${base}/auth/oidc/backchannel-logout`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ logout_token: token }) })
  t.equal(down.status, 503, 'Redis down: 503')
  t.equal((await down.json() as { code: string }).code, 'TOKENGATE_STORE_UNAVAILABLE')
  await own.start()
  let again = 0
  for (let i = 0; i < 50 && again !== 200; i++) {
    again = (await backchannel(token, base)).status
    if (again !== 200) await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.equal(again, 200, 'the provider sends it again once Redis is back: 200 (the jti was not spent)')
})
