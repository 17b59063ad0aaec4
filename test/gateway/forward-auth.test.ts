// Forward authentication (`forwardAuth: { path = '/auth/verify' }`), asked directly over real sockets as a
// proxy (nginx auth_request, Caddy forward_auth, Traefik ForwardAuth) asks it: any method on the path answers
// for the ORIGINAL method and URI (X-Forwarded-Method/-Uri or X-Original-Method/-URI), with the policy of the
// route whose prefix matches: 200 with the identity headers its upstream would get, 401/403 with the usual
// bodies and WWW-Authenticate, 404 without a route. The refresh hook's new tokens ride on the 200; revocation
// holds at once; CSRF and DPoP are checked against the original request. Attacker tests (forged, ambiguous
// or traversing originals, another host, header injection, caching) each have a control beside them.
import t, { type Test } from 'tap'
import { assertRefused, jktOf, newKey, proof } from '../helpers/dpop.js'
import { GATEWAY_USERS, postJson, rawRequest, startGateway, type RawResponse, type TestGateway } from '../helpers/gateway.js'
import { Redis } from 'ioredis'
import { parseConfig, ConfigError } from '../../gateway/index.js'
import { readSessions, redisUrl } from '../helpers/redis.js'
import { fakeClock } from '../helpers/clock.js'

const ROUTES = [
  { prefix: '/api', auth: 'required' },
  { prefix: '/admin', auth: 'required', roles: ['admin'] },
  { prefix: '/pub', auth: 'public' },
  { prefix: '/maybe', auth: 'optional' }
]

interface Pair { accessToken: string, refreshToken: string, sessionId: string }

async function gateway (t: Test, extra: Record<string, any> = {}): Promise<TestGateway> {
  return await startGateway(t, { forwardAuth: {}, routes: ROUTES, ...extra }, { redis: true })
}

async function login (gw: TestGateway, who: 'alice' | 'bob' = 'alice', headers: Record<string, string> = {}): Promise<Pair> {
  const res = await postJson(gw.base, '/auth/login', { username: who, password: GATEWAY_USERS[who] }, headers)
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body
}

/** Asks the gateway about `method uri`, as nginx does (X-Original-*) unless `pair` says 'forwarded'. */
async function verify (gw: TestGateway, method: string, uri: string, headers: Record<string, string> = {}, o: { pair?: 'original' | 'forwarded', verb?: string, body?: string } = {}): Promise<RawResponse> {
  const h: Record<string, string> = o.pair === 'forwarded' ? { 'x-forwarded-method': method, 'x-forwarded-uri': uri } : { 'x-original-method': method, 'x-original-uri': uri }
  return await rawRequest(gw.port, { method: o.verb ?? 'GET', path: '/auth/verify', headers: { ...h, ...headers }, body: o.body })
}

const bearer = (pair: Pair): Record<string, string> => ({ authorization: `Bearer ${pair.accessToken}` })
const code = (res: RawResponse): string | undefined => { try { return JSON.parse(res.body).code } catch { return undefined } }

t.test('200 with the identity headers, 401 and 403 with the usual bodies and WWW-Authenticate, 404 without a route', async t => {
  const gw = await gateway(t)
  const alice = await login(gw)
  for (const pair of ['original', 'forwarded'] as const) {
    const ok = await verify(gw, 'GET', '/api/orders?page=2', bearer(alice), { pair })
    t.equal(ok.status, 200, `${pair}: alice may GET /api/orders (${ok.body})`)
    t.equal(ok.headers['x-user-id'], 'alice', `${pair}: x-user-id`)
    t.equal(ok.headers['x-user-roles'], 'user', `${pair}: x-user-roles`)
    t.equal(ok.headers['x-session-id'], alice.sessionId, `${pair}: x-session-id`)
    t.equal(ok.headers['x-user-jkt'], undefined, `${pair}: no x-user-jkt for a Bearer token`)
    t.equal(ok.headers['x-tokengate-assertion'], undefined, `${pair}: no assertion on a route without one`)
    t.equal(ok.headers['cache-control'], 'no-store', `${pair}: the 200 is no-store`)
    t.equal(ok.body, '', `${pair}: with an empty body`)

    const missing = await verify(gw, 'GET', '/api/orders', {}, { pair })
    t.equal(missing.status, 401, `${pair}: no token: 401`)
    t.equal(code(missing), 'TOKENGATE_TOKEN_MISSING')
    t.equal(missing.headers['www-authenticate'], 'Bearer', `${pair}: with the Bearer challenge`)
    t.equal(missing.headers['x-user-id'], undefined)
    t.equal(missing.headers['cache-control'], 'no-store', `${pair}: the 401 is no-store`)

    const bad = await verify(gw, 'GET', '/api/orders', { authorization: `Bearer ${alice.accessToken}x` }, { pair })
    t.equal(bad.status, 401)
    t.equal(code(bad), 'TOKENGATE_TOKEN_INVALID')
    t.equal(bad.headers['www-authenticate'], 'Bearer error="invalid_token"')

    const forbidden = await verify(gw, 'DELETE', '/admin/users/7', bearer(alice), { pair })
    t.equal(forbidden.status, 403, `${pair}: alice lacks the admin role`)
    t.equal(code(forbidden), 'TOKENGATE_FORBIDDEN')
    t.equal(forbidden.headers['x-user-id'], undefined, 'a 403 carries no identity')

    const none = await verify(gw, 'GET', '/nowhere/x', bearer(alice), { pair })
    t.equal(none.status, 404, `${pair}: no route's prefix matches: 404`)
    t.equal(code(none), 'FST_ERR_NOT_FOUND')
    t.equal(JSON.parse(none.body).message, 'Route GET:/nowhere/x not found')
  }
  const bob = await login(gw, 'bob')
  const admin = await verify(gw, 'DELETE', '/admin/users/7', bearer(bob))
  t.equal(admin.status, 200, 'control: bob, an admin, may')
  t.equal(admin.headers['x-user-roles'], 'user,admin')
})

t.test('any method on the path, with any body, answers for the original request', async t => {
  const gw = await gateway(t)
  const alice = await login(gw)
  for (const verb of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
    const body = verb === 'GET' || verb === 'HEAD' ? undefined : '{"not":"read"}'
    const headers = body === undefined ? bearer(alice) : { ...bearer(alice), 'content-type': verb === 'POST' ? 'application/json' : 'application/x-unknown', 'content-length': String(body.length) }
    const ok = await verify(gw, 'GET', '/api/x', headers, { verb, body })
    t.equal(ok.status, 200, `${verb} /auth/verify: 200 (${ok.body})`)
    t.equal(ok.headers['x-user-id'], 'alice', `${verb} /auth/verify: the identity`)
    const no = await verify(gw, 'GET', '/admin/x', headers, { verb, body })
    t.equal(no.status, 403, `${verb} /auth/verify: the original request's policy (403 for /admin)`)
  }
})

t.test('public and optional routes, as their proxied routes behave', async t => {
  const gw = await gateway(t)
  const alice = await login(gw)
  const pub = await verify(gw, 'POST', '/pub/form', bearer(alice))
  t.equal(pub.status, 200, 'a public route: 200')
  t.equal(pub.headers['x-user-id'], undefined, 'and no identity (a public route forwards none)')
  const pubBad = await verify(gw, 'GET', '/pub/x', { authorization: 'Bearer nonsense' })
  t.equal(pubBad.status, 200, 'a public route with a bad token: 200')
  const maybe = await verify(gw, 'GET', '/maybe/x', bearer(alice))
  t.equal(maybe.status, 200)
  t.equal(maybe.headers['x-user-id'], 'alice', 'an optional route with a token: the identity')
  const anon = await verify(gw, 'GET', '/maybe/x')
  t.equal(anon.status, 200, 'an optional route without one: 200')
  t.equal(anon.headers['x-user-id'], undefined, 'anonymous')
})

t.test('the refresh hook renews through forward authentication: the 200 carries the new tokens, no-store', async t => {
  const gw = await gateway(t)
  const alice = await login(gw)
  const res = await verify(gw, 'GET', '/api/orders', { 'x-refresh-token': alice.refreshToken })
  t.equal(res.status, 200, `only the refresh token: the refresh hook lets it pass (${res.body})`)
  const access = res.headers['x-access-token'] as string
  const refresh = res.headers['x-refresh-token'] as string
  t.match(access, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'a new access token for the proxy to hand back')
  t.match(refresh, /^tgr2\./, 'and the rotated refresh token')
  t.not(refresh, alice.refreshToken)
  t.equal(res.headers['cache-control'], 'no-store', 'the answer with tokens is no-store')
  t.equal(res.headers['x-user-id'], 'alice')
  t.equal(res.headers['x-session-id'], alice.sessionId, 'the same session')
  const next = await verify(gw, 'GET', '/api/orders', { authorization: `Bearer ${access}` })
  t.equal(next.status, 200, 'the new access token works')
  t.equal(next.headers['x-access-token'], undefined, 'a valid access token gets no new one')
})

t.test('forwardAuth.refresh: false: no renewal there (for a proxy that cannot hand tokens back)', async t => {
  const gw = await gateway(t, { forwardAuth: { refresh: false } })
  const alice = await login(gw)
  const redis = new Redis(await redisUrl())
  t.teardown(() => { redis.disconnect() })
  const stored = async (): Promise<string | undefined> => (await readSessions(redis, gw.prefix, 'alice'))?.[alice.sessionId]?.h
  const before = await stored()
  t.type(before, 'string', 'the session is stored')
  const only = await verify(gw, 'GET', '/api/x', { 'x-refresh-token': alice.refreshToken })
  t.equal(only.status, 401, 'only the refresh token: 401, nothing renewed')
  t.equal(code(only), 'TOKENGATE_TOKEN_MISSING')
  t.equal(only.headers['x-access-token'], undefined)
  const both = await verify(gw, 'GET', '/api/x', { ...bearer(alice), 'x-refresh-token': alice.refreshToken })
  t.equal(both.status, 200, 'control: the access token still authenticates')
  t.equal(both.headers['x-refresh-token'], undefined)
  t.equal(await stored(), before, 'the session\'s refresh token was not rotated behind the client\'s back')
  const renewing = await gateway(t)
  const bob = await login(renewing, 'bob')
  const bobBefore = (await readSessions(redis, renewing.prefix, 'bob'))?.[bob.sessionId]?.h
  t.equal((await verify(renewing, 'GET', '/api/x', { 'x-refresh-token': bob.refreshToken })).status, 200, 'control: by default it renews')
  t.not((await readSessions(redis, renewing.prefix, 'bob'))?.[bob.sessionId]?.h, bobBefore, 'control: and the stored refresh token moved')
})

t.test('cookie transport: renewed cookies on the 200, and CSRF by the original method', async t => {
  const gw = await gateway(t, { tokens: { transport: ['cookie'], cookie: { secure: false } } })
  const res = await fetch(`${gw.base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: GATEWAY_USERS.alice }) })
  const jar: Record<string, string> = {}
  for (const line of res.headers.getSetCookie()) { const [nv] = line.split(';'); jar[nv.slice(0, nv.indexOf('='))] = nv.slice(nv.indexOf('=') + 1) }
  const cookie = `tg_access=${jar.tg_access}; tg_refresh=${jar.tg_refresh}; tg_csrf=${jar.tg_csrf}`

  const get = await verify(gw, 'GET', '/api/x', { cookie })
  t.equal(get.status, 200, 'an original GET by cookie: no CSRF header needed')
  const post = await verify(gw, 'POST', '/api/x', { cookie })
  t.equal(post.status, 403, 'an original POST by cookie without x-csrf-token: 403, though this request is a GET')
  t.equal(code(post), 'TOKENGATE_CSRF')
  const wrong = await verify(gw, 'POST', '/api/x', { cookie, 'x-csrf-token': 'forged' })
  t.equal(code(wrong), 'TOKENGATE_CSRF', 'a wrong x-csrf-token: 403')
  for (const method of ['PUT', 'PATCH', 'DELETE', 'PROPPATCH', 'MKCOL', 'LOCK']) {
    t.equal(code(await verify(gw, method, '/api/x', { cookie })), 'TOKENGATE_CSRF', `an original ${method} by cookie without x-csrf-token: 403`)
  }
  for (const method of ['HEAD', 'OPTIONS']) t.equal((await verify(gw, method, '/api/x', { cookie })).status, 200, `control: an original ${method} needs none`)
  const withCsrf = await verify(gw, 'POST', '/api/x', { cookie, 'x-csrf-token': jar.tg_csrf })
  t.equal(withCsrf.status, 200, 'control: with the session\'s x-csrf-token it passes')
  const postVerb = await verify(gw, 'GET', '/api/x', { cookie }, { verb: 'POST', body: '' })
  t.equal(postVerb.status, 200, 'control: the method of this request does not count, the original GET does')

  const renewed = await verify(gw, 'GET', '/api/x', { cookie: `tg_refresh=${jar.tg_refresh}; tg_csrf=${jar.tg_csrf}` })
  t.equal(renewed.status, 200, `only the refresh cookie: renewed (${renewed.body})`)
  const set = ([] as string[]).concat(renewed.headers['set-cookie'] ?? [])
  t.same(set.map(l => l.slice(0, l.indexOf('='))).sort(), ['tg_access', 'tg_csrf', 'tg_refresh'], 'the 200 sets the three cookies for the proxy to hand back')
  t.ok(set.find(l => l.startsWith('tg_access='))!.includes('HttpOnly'), 'tg_access is HttpOnly')
  t.equal(renewed.headers['cache-control'], 'no-store')
  t.equal(renewed.headers['x-access-token'], undefined, 'no token in a header with cookie transport')
})

t.test('revocation holds at once', async t => {
  const gw = await gateway(t)
  const alice = await login(gw)
  t.equal((await verify(gw, 'GET', '/api/x', bearer(alice))).status, 200, 'control: before the logout')
  const out = await rawRequest(gw.port, { method: 'POST', path: '/auth/logout', headers: bearer(alice) })
  t.equal(out.status, 204)
  const after = await verify(gw, 'GET', '/api/x', bearer(alice))
  t.equal(after.status, 401, 'the next check after the logout: 401')
  t.equal(code(after), 'TOKENGATE_TOKEN_REVOKED')
  t.equal(after.headers['x-user-id'], undefined)
  const refreshed = await verify(gw, 'GET', '/api/x', { 'x-refresh-token': alice.refreshToken })
  t.equal(refreshed.status, 401, 'nor does the refresh token renew anything')
  t.equal(refreshed.headers['x-access-token'], undefined)

  const bob = await login(gw, 'bob')
  t.equal((await verify(gw, 'GET', '/api/x', bearer(bob))).status, 200, 'control: bob, before revokeAll')
  await gw.app.tokengate.revokeAll('bob')
  t.equal(code(await verify(gw, 'GET', '/api/x', bearer(bob))), 'TOKENGATE_TOKEN_REVOKED', 'revokeAll: refused at once')
})

t.test('DPoP: the proof is checked against the original method and URL', async t => {
  const gw = await gateway(t, { tokens: { dpop: {} }, trustProxy: true })
  const key = await newKey('ES256')
  const loginProof = await proof(key, 'POST', `${gw.base}/auth/login`)
  const pair = await login(gw, 'alice', { dpop: loginProof })
  const site = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'app.example' }
  const dpopAuth = { authorization: `DPoP ${pair.accessToken}` }

  const good = await proof(key, 'PUT', 'https://app.example/api/items/1', { accessToken: pair.accessToken })
  const ok = await verify(gw, 'PUT', '/api/items/1?x=1', { ...site, ...dpopAuth, dpop: good }, { pair: 'forwarded' })
  t.equal(ok.status, 200, `a proof for PUT https://app.example/api/items/1: 200 (${ok.body})`)
  t.equal(ok.headers['x-user-jkt'], await jktOf(key), 'with x-user-jkt')

  const selfProof = await proof(key, 'GET', `${gw.base}/auth/verify`, { accessToken: pair.accessToken })
  assertRefused(t, await asRefusal(verify(gw, 'PUT', '/api/items/1', { ...dpopAuth, dpop: selfProof }, { pair: 'forwarded' })), 'a proof for this request (GET /auth/verify), not the original', { secrets: [selfProof, pair.accessToken] })
  const otherMethod = await proof(key, 'GET', 'https://app.example/api/items/1', { accessToken: pair.accessToken })
  assertRefused(t, await asRefusal(verify(gw, 'PUT', '/api/items/1', { ...site, ...dpopAuth, dpop: otherMethod }, { pair: 'forwarded' })), 'a proof for GET when the original is PUT', { secrets: [otherMethod] })
  const otherHost = await proof(key, 'PUT', 'https://evil.example/api/items/1', { accessToken: pair.accessToken })
  assertRefused(t, await asRefusal(verify(gw, 'PUT', '/api/items/1', { ...site, ...dpopAuth, dpop: otherHost }, { pair: 'forwarded' })), 'a proof for another host', { secrets: [otherHost] })
  const otherPath = await proof(key, 'PUT', 'https://app.example/api/items/2', { accessToken: pair.accessToken })
  assertRefused(t, await asRefusal(verify(gw, 'PUT', '/api/items/1', { ...site, ...dpopAuth, dpop: otherPath }, { pair: 'forwarded' })), 'a proof for another path', { secrets: [otherPath] })
  assertRefused(t, await asRefusal(verify(gw, 'PUT', '/api/items/1?x=1', { ...site, ...dpopAuth, dpop: good }, { pair: 'forwarded' })), 'the accepted proof again (a replay)', { secrets: [good] })
  assertRefused(t, await asRefusal(verify(gw, 'GET', '/api/x', { ...site, authorization: `Bearer ${pair.accessToken}` })), 'the bound token as Bearer', { secrets: [pair.accessToken] })

  // The refresh hook with a bound session: only the refresh token and a proof for the original request.
  const refreshProof = await proof(key, 'GET', 'https://app.example/api/x')
  const renewed = await verify(gw, 'GET', '/api/x', { ...site, 'x-refresh-token': pair.refreshToken, dpop: refreshProof })
  t.equal(renewed.status, 200, `a bound session renews with a proof for the original request (${renewed.body})`)
  t.match(renewed.headers['x-access-token'], /^[\w-]+\.[\w-]+\.[\w-]+$/)
})

async function asRefusal (res: Promise<RawResponse>): Promise<{ statusCode: number, headers: Record<string, unknown>, body: string }> {
  const r = await res
  return { statusCode: r.status, headers: r.headers, body: r.body }
}

t.test('attacker: the original request cannot be forged into another route\'s policy', async t => {
  const gw = await gateway(t)
  const alice = await login(gw)
  const control = await verify(gw, 'GET', '/admin/x', bearer(alice))
  t.equal(control.status, 403, 'control: alice is refused /admin')
  t.equal((await verify(gw, 'GET', '/pub/x', bearer(alice))).status, 200, 'control: and allowed /pub')

  // A proxy that sets only its own pair passes the client's header of the other pair on.
  const mixed = await rawRequest(gw.port, { path: '/auth/verify', headers: { ...bearer(alice), 'x-original-method': 'GET', 'x-original-uri': '/admin/x', 'x-forwarded-uri': '/pub/x', 'x-forwarded-method': 'GET' } })
  t.equal(mixed.status, 400, 'both pairs (the client added X-Forwarded-Uri: /pub/x): 400, never /pub\'s policy')
  t.equal(code(mixed), 'TOKENGATE_BAD_REQUEST')
  t.equal(mixed.headers['cache-control'], 'no-store', 'a 400 is no-store too')
  const half = await rawRequest(gw.port, { path: '/auth/verify', headers: { ...bearer(alice), 'x-original-method': 'GET', 'x-original-uri': '/admin/x', 'x-forwarded-uri': '/pub/x' } })
  t.equal(half.status, 400, 'one header of the other pair: 400 too')
  for (const [name, headers] of [
    ['no original at all', {}],
    ['a method without a URI', { 'x-original-method': 'GET' }],
    ['a URI without a method', { 'x-original-uri': '/pub/x' }],
    ['a lower-case method', { 'x-original-method': 'get', 'x-original-uri': '/pub/x' }],
    ['two methods', { 'x-original-method': 'GET, POST', 'x-original-uri': '/pub/x' }],
    ['a made-up method', { 'x-original-method': 'GETX', 'x-original-uri': '/pub/x' }]
  ] as Array<[string, Record<string, string>]>) {
    const res = await rawRequest(gw.port, { path: '/auth/verify', headers: { ...bearer(alice), ...headers } })
    t.equal(res.status, 400, `${name}: 400`)
    t.equal(code(res), 'TOKENGATE_BAD_REQUEST', `${name}: TOKENGATE_BAD_REQUEST`)
    t.equal(res.headers['x-user-id'], undefined)
  }

  for (const uri of [
    '/pub/../admin/x', '/pub/%2e%2e/admin/x', '/pub/.%2E/admin/x', '/pub/..%2fadmin/x', '/pub/%2fadmin', '/pub\\..\\admin/x',
    '/pub/./x', '/pub//x', '//admin/x', '//evil.example/pub/x', 'http://evil.example/pub/x', 'https://app.example/admin/x', 'pub/x',
    '/pub/x#frag', '/pub/%00/x', '/pub/%0d%0aX-Evil:%201', '/pub/%zz', '/pub/\u00e9'
  ]) {
    const res = await rawRequest(gw.port, { path: '/auth/verify', headers: { ...bearer(alice), 'x-original-method': 'GET', 'x-original-uri': uri } }).catch((err: Error) => ({ status: -1, headers: {}, body: err.message }) as unknown as RawResponse)
    t.not(res.status, 200, `${JSON.stringify(uri)}: never 200 (${res.status})`)
    if (res.status > 0) t.equal(res.status, 400, `${JSON.stringify(uri)}: 400 (${res.body})`)
    t.equal(res.headers['x-evil'], undefined)
  }

  const encoded = await verify(gw, 'GET', '/%61dmin/x', bearer(alice))
  t.equal(encoded.status, 403, '/%61dmin/x is /admin/x: its policy (403)')
  const boundary = await verify(gw, 'GET', '/adminx/y', bearer(alice))
  t.equal(boundary.status, 404, '/adminx is not under /admin (404 here: no other route)')
  const query = await verify(gw, 'GET', '/admin/x?next=/pub/x', bearer(alice))
  t.equal(query.status, 403, 'a query naming another route changes nothing')
})

t.test('attacker: a request carrying a header named like an identity header is refused (400), whatever its spelling', async t => {
  const gw = await gateway(t)
  const alice = await login(gw)
  // Control: the same requests without such a header pass.
  t.equal((await verify(gw, 'GET', '/api/x', bearer(alice))).status, 200, 'control: alice on /api: 200')
  t.equal((await verify(gw, 'GET', '/pub/x')).status, 200, 'control: anyone on /pub: 200')
  t.equal((await verify(gw, 'GET', '/pub/x', { 'x-request-id': 'r-1', 'x-userid': 'not one of ours', 'x-harmless': '1' })).status, 200, 'control: other headers pass')
  for (const name of ['x-user-id', 'X-User-Email', 'x_user_id', 'X_User_Roles', 'x-session-id', 'x_session_id', 'x-tokengate-assertion', 'X-Tokengate-Whatever']) {
    for (const [path, headers] of [['/api/x', bearer(alice)], ['/pub/x', {}]] as Array<[string, Record<string, string>]>) {
      const res = await verify(gw, 'GET', path, { ...headers, [name]: 'admin' })
      t.equal(res.status, 400, `${name} on ${path}: 400 (the proxy would pass it on to the app)`)
      t.equal(code(res), 'TOKENGATE_BAD_REQUEST')
      t.equal(res.headers['x-user-id'], undefined, 'and no identity')
      t.notMatch(res.body, /admin/, 'the value is not echoed')
    }
  }
})

t.test('attacker: the 200 is never cacheable, and an identity no header can carry is refused', async t => {
  const gw = await gateway(t)
  const eve = await gw.app.tokengate.issue({ sub: 'eve\r\nx-evil: 1', roles: ['user'] })
  const res = await verify(gw, 'GET', '/api/x', { authorization: `Bearer ${eve.accessToken}` })
  t.not(res.status, 200, `a user id with a line break is not echoed (${res.status})`)
  t.equal(res.headers['x-evil'], undefined, 'no injected header')
  t.equal(res.headers['x-user-id'], undefined)
  const plain = await gw.app.tokengate.issue({ sub: 'eve', roles: ['user'] })
  const ok = await verify(gw, 'GET', '/api/x', { authorization: `Bearer ${plain.accessToken}` })
  t.equal(ok.status, 200, 'control: a plain user id passes')
  t.equal(ok.headers['x-user-id'], 'eve')
  t.equal(ok.headers['cache-control'], 'no-store')
  for (const uri of ['/pub/x', '/maybe/x', '/nowhere']) {
    const r = await verify(gw, 'GET', uri)
    t.equal(r.headers['cache-control'], 'no-store', `${uri}: no-store (${r.status})`)
  }
})

t.test('routes without an upstream serve forward authentication only; without forwardAuth the path is not served', async t => {
  const gw = await startGateway(t, { forwardAuth: { path: '/_check' }, routes: [{ prefix: '/api' }] })
  const alice = await login(gw)
  const proxied = await rawRequest(gw.port, { path: '/api/x', headers: bearer(alice) })
  t.equal(proxied.status, 404, 'a route without an upstream registers no proxy')
  const ok = await rawRequest(gw.port, { path: '/_check', headers: { ...bearer(alice), 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/api/x' } })
  t.equal(ok.status, 200, 'forwardAuth.path sets the path')
  t.equal(ok.headers['x-user-id'], 'alice')
  t.equal((await rawRequest(gw.port, { path: '/auth/verify', headers: { ...bearer(alice), 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/api/x' } })).status, 404, 'not on the default path then')

  const off = await startGateway(t, { routes: [] })
  const res = await rawRequest(off.port, { path: '/auth/verify', headers: { 'x-original-method': 'GET', 'x-original-uri': '/x' } })
  t.equal(res.status, 404, 'without forwardAuth: 404')
})

t.test('config: what forward authentication refuses, naming the field', async t => {
  const base = { tokens: { secret: 'x'.repeat(64) }, login: { upstream: 'http://127.0.0.1:9/login' } }
  const refused = (config: Record<string, unknown>, field: string, says?: RegExp): void => {
    const err = (() => { try { parseConfig({ ...base, ...config }); return undefined } catch (e) { return e as Error } })()
    t.ok(err instanceof ConfigError, `${field}: a ConfigError (${err?.message})`)
    t.equal((err as ConfigError | undefined)?.field, field, `names ${field}`)
    if (says !== undefined) t.match(err?.message, says)
  }
  refused({ routes: [{ prefix: '/api' }] }, 'routes[0].upstream', /forwardAuth/)
  refused({ forwardAuth: {}, routes: [{ prefix: '/api', websocket: true }] }, 'routes[0].websocket')
  refused({ forwardAuth: { path: '/auth/login' } }, 'forwardAuth.path')
  refused({ forwardAuth: { path: '/api/verify' }, routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9' }] }, 'forwardAuth.path', /routes\[0\]\.prefix/)
  refused({ forwardAuth: { path: 'verify' } }, 'forwardAuth.path')
  refused({ forwardAuth: { path: '/auth/:check' } }, 'forwardAuth.path')
  refused({ forwardAuth: { path: '/auth/*' } }, 'forwardAuth.path')
  refused({ forwardAuth: { path: '/v', extra: 1 } }, 'forwardAuth.extra')
  const ok = parseConfig({ ...base, forwardAuth: {}, routes: [{ prefix: '/api' }] })
  t.equal(ok.forwardAuth?.path, '/auth/verify', 'control: the default path')
})

t.test('step-up: a route\'s maxAge and acr hold through forward authentication as on its proxied route', async t => {
  const clock = fakeClock(t)
  const gw = await gateway(t, { routes: [...ROUTES, { prefix: '/fresh', auth: 'required', maxAge: '1s' }, { prefix: '/mfa', auth: 'required', acr: ['mfa'] }] })
  const alice = await login(gw)
  const fresh = await verify(gw, 'POST', '/fresh/transfer', bearer(alice))
  t.equal(fresh.status, 200, 'control: a login just now is fresh enough')
  // A login of more than a second ago: stale (the users file's logins carry no acr).
  clock.tick(2100)
  const stale = await verify(gw, 'POST', '/fresh/transfer', bearer(alice))
  t.equal(stale.status, 401, 'a stale authentication: 401')
  t.equal(code(stale), 'TOKENGATE_STEP_UP_REQUIRED')
  t.match(stale.headers['www-authenticate'], /^Bearer error="insufficient_user_authentication", error_description="[^"]+", max_age=1$/)
  t.equal(stale.headers['x-user-id'], undefined, 'and no identity')
  const mfa = await verify(gw, 'GET', '/mfa/x', bearer(alice))
  t.equal(mfa.status, 401, 'no acr: 401')
  t.match(mfa.headers['www-authenticate'], /acr_values="mfa"/)
  t.equal((await verify(gw, 'GET', '/api/x', bearer(alice))).status, 200, 'control: a route without step-up')
})
