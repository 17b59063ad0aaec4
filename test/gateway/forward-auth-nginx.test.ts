// Forward authentication behind a REAL nginx (auth_request; skipped, saying so, where none is installed),
// configured exactly as the `nginx-forward-auth` block of docs/forward-auth.md says, in front of a real upstream, with the
// gateway as the auth server: 200 (the upstream sees the identity headers), 401, 403, the refresh hook
// renewing through nginx (the client gets the new tokens, headers and cookies), a revoked token refused at
// once, DPoP proofs for nginx's URL, and attackers (a forged original URI, a traversing path, spoofed identity
// headers, tokens planted by the app, /auth/verify from outside), each beside its control.
import http, { type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { jktOf, newKey, proof } from '../helpers/dpop.js'
import { GATEWAY_USERS, rawRequest, startGateway, type RawResponse, type TestGateway } from '../helpers/gateway.js'
import { noNginx, startNginx, type Nginx } from '../helpers/nginx.js'
import { readmeBlock } from '../helpers/readme.js'
import { killChildren } from '../helpers/spawn.js'

t.teardown(killChildren)

interface Seen { method: string, url: string, headers: IncomingHttpHeaders }

/** The app behind nginx: records what reaches it, and tries to plant tokens and caching of its own. */
async function app (t: Test): Promise<{ url: string, seen: Seen[] }> {
  const seen: Seen[] = []
  const server = http.createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers })
      res.writeHead(200, { 'content-type': 'application/json', 'x-access-token': 'planted-by-the-app', 'cache-control': 'public, max-age=600', 'set-cookie': ['tg_refresh=planted-by-the-app; Path=/; HttpOnly', 'tg_access=planted-by-the-app; Path=/'] })
      res.end(JSON.stringify({ ok: true }))
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { server.closeAllConnections(); await new Promise<void>(resolve => server.close(() => resolve())) })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
}

interface Stack { nginx: Nginx, gw: TestGateway, seen: Seen[] }

async function stack (t: Test): Promise<Stack> {
  const upstream = await app(t)
  const gw = await startGateway(t, {
    forwardAuth: {},
    trustProxy: '127.0.0.1',
    tokens: { transport: ['header', 'cookie'], dpop: {} },
    routes: [
      { prefix: '/api', auth: 'required' },
      { prefix: '/admin', auth: 'required', roles: ['admin'] },
      { prefix: '/pub', auth: 'public' }
    ]
  }, { redis: true })
  const block = readmeBlock('nginx-forward-auth')
  for (const needed of ['listen 80;', 'http://127.0.0.1:8080', 'http://127.0.0.1:3000']) if (!block.includes(needed)) throw new Error(`docs/forward-auth.md's nginx block has no ${needed}`)
  const nginx = await startNginx(t, port => block
    .replace('listen 80;', `listen 127.0.0.1:${port};`)
    .replaceAll('http://127.0.0.1:8080', gw.base)
    .replaceAll('http://127.0.0.1:3000', upstream.url))
  return { nginx, gw, seen: upstream.seen }
}

const at = async (s: Stack, path: string, headers: Record<string, string> = {}, method = 'GET', body?: string): Promise<RawResponse> =>
  await rawRequest(s.nginx.port, { method, path, headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }, body })

async function login (s: Stack, who: 'alice' | 'bob', headers: Record<string, string> = {}): Promise<{ res: RawResponse, pair: { accessToken: string, refreshToken: string, sessionId: string } }> {
  const res = await at(s, '/auth/login', headers, 'POST', JSON.stringify({ username: who, password: GATEWAY_USERS[who] }))
  if (res.status !== 200) throw new Error(`login through nginx: ${res.status} ${res.body}`)
  return { res, pair: JSON.parse(res.body) }
}

const cacheControl = (res: RawResponse): string => ([] as string[]).concat(res.headers['cache-control'] ?? []).join(', ')

t.test('through nginx: 200 with the identity upstream, 401, 403, revocation at once', { skip: noNginx }, async t => {
  const s = await stack(t)
  const { pair } = await login(s, 'alice')
  const before = s.seen.length
  const ok = await at(s, '/api/orders?page=2', { authorization: `Bearer ${pair.accessToken}` })
  t.equal(ok.status, 200, `alice GETs /api/orders through nginx (${ok.body})`)
  const seen = s.seen.at(-1)!
  t.equal(s.seen.length, before + 1, 'the app was reached once')
  t.equal(seen.url, '/api/orders?page=2')
  t.equal(seen.headers['x-user-id'], 'alice', 'the app sees x-user-id')
  t.equal(seen.headers['x-user-roles'], 'user', 'and x-user-roles')
  t.equal(seen.headers['x-session-id'], pair.sessionId, 'and x-session-id')
  t.equal(seen.headers.authorization, undefined, 'but not the token')
  t.equal(ok.headers['x-access-token'], undefined, 'the app\'s planted x-access-token never reaches the client')
  t.notOk([ok.headers['set-cookie']].flat().some(c => typeof c === 'string' && c.includes('planted-by-the-app')), 'nor its planted tg_* cookies')

  const none = await at(s, '/api/orders')
  t.equal(none.status, 401, 'no token: 401 from nginx')
  t.match(String(none.headers['www-authenticate']), /^Bearer/, 'with the gateway\'s WWW-Authenticate')
  const forbidden = await at(s, '/admin/users', { authorization: `Bearer ${pair.accessToken}` })
  t.equal(forbidden.status, 403, 'alice on /admin: 403')
  t.equal(s.seen.length, before + 1, 'neither reached the app')
  const bob = await login(s, 'bob')
  const admin = await at(s, '/admin/users', { authorization: `Bearer ${bob.pair.accessToken}` })
  t.equal(admin.status, 200, 'control: bob, an admin, passes')
  t.equal(s.seen.at(-1)!.headers['x-user-roles'], 'user,admin')

  const out = await at(s, '/auth/logout', { authorization: `Bearer ${pair.accessToken}` }, 'POST')
  t.equal(out.status, 204, 'logout through nginx')
  const revoked = await at(s, '/api/orders', { authorization: `Bearer ${pair.accessToken}` })
  t.equal(revoked.status, 401, 'the next request with the revoked token: 401 at once')
  t.equal(s.seen.length, before + 2, 'and it never reached the app')
})

t.test('through nginx: the refresh hook renews, and the client gets the new tokens (headers and cookies), no-store', { skip: noNginx }, async t => {
  const s = await stack(t)
  const { pair } = await login(s, 'alice')
  const renewed = await at(s, '/api/x', { 'x-refresh-token': pair.refreshToken })
  t.equal(renewed.status, 200, `only the refresh token: 200 through nginx (${renewed.body})`)
  t.equal(s.seen.at(-1)!.headers['x-user-id'], 'alice', 'the app saw alice')
  t.equal(s.seen.at(-1)!.headers['x-refresh-token'], undefined, 'but not her refresh token')
  const access = renewed.headers['x-access-token'] as string
  const refresh = renewed.headers['x-refresh-token'] as string
  t.match(access, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'the client got the new access token')
  t.not(access, 'planted-by-the-app')
  t.match(refresh, /^tgr2\./, 'and the rotated refresh token')
  t.not(refresh, pair.refreshToken)
  t.match(cacheControl(renewed), /no-store/, 'the answer is no-store, whatever the app said')
  t.equal((await at(s, '/api/x', { authorization: `Bearer ${access}` })).status, 200, 'the new access token works through nginx')
  t.equal((await at(s, '/api/x', { 'x-refresh-token': refresh })).status, 200, 'and so does the new refresh token')
  const plain = await at(s, '/api/x', { authorization: `Bearer ${access}` })
  t.equal(plain.headers['x-access-token'], undefined, 'control: nothing renewed, no token header')
  t.notMatch(cacheControl(plain), /no-store/, 'control: and the app\'s own Cache-Control alone')

  // Cookie transport: the browser's cookies, renewed through nginx.
  const byCookie = await login(s, 'bob', { 'x-tokengate-transport': 'cookie' })
  const jar: Record<string, string> = {}
  const take = (res: RawResponse): string[] => {
    const names: string[] = []
    for (const line of ([] as string[]).concat(res.headers['set-cookie'] ?? [])) {
      const [nv] = line.split(';')
      const name = nv.slice(0, nv.indexOf('='))
      jar[name] = nv.slice(nv.indexOf('=') + 1)
      names.push(name)
    }
    return names.sort()
  }
  t.same(take(byCookie.res), ['tg_access', 'tg_csrf', 'tg_refresh'], 'a cookie login through nginx')
  const cookie = (): string => `tg_access=${jar.tg_access}; tg_refresh=${jar.tg_refresh}; tg_csrf=${jar.tg_csrf}`
  t.equal((await at(s, '/api/x', { cookie: cookie() })).status, 200, 'the cookies authenticate through nginx')
  t.equal((await at(s, '/api/x', { cookie: cookie() }, 'POST', '{}')).status, 403, 'a POST without x-csrf-token: 403 (the original method counts)')
  t.equal((await at(s, '/api/x', { cookie: cookie(), 'x-csrf-token': jar.tg_csrf }, 'POST', '{}')).status, 200, 'control: with it, 200')
  const oldRefresh = jar.tg_refresh
  const refreshed = await at(s, '/api/x', { cookie: `tg_refresh=${jar.tg_refresh}; tg_csrf=${jar.tg_csrf}` })
  t.equal(refreshed.status, 200, 'only the refresh cookie: renewed through nginx')
  t.same(take(refreshed), ['tg_access', 'tg_csrf', 'tg_refresh'], 'the client gets the three cookies back')
  t.not(jar.tg_refresh, oldRefresh, 'a rotated refresh cookie')
  const line = ([] as string[]).concat(refreshed.headers['set-cookie'] ?? []).find(l => l.startsWith('tg_access='))!
  t.match(line, /HttpOnly/, 'tg_access is HttpOnly')
  t.match(line, /SameSite=Strict/)
  t.match(cacheControl(refreshed), /no-store/, 'no-store')
  t.equal(s.seen.at(-1)!.headers['x-user-id'], 'bob')
  t.equal((await at(s, '/api/x', { cookie: cookie() })).status, 200, 'the renewed cookies work')
})

t.test('through nginx: DPoP proofs for nginx\'s URL', { skip: noNginx }, async t => {
  const s = await stack(t)
  const key = await newKey('ES256')
  const { pair } = await login(s, 'alice', { dpop: await proof(key, 'POST', `${s.nginx.base}/auth/login`) })
  const good = await proof(key, 'DELETE', `${s.nginx.base}/api/items/1`, { accessToken: pair.accessToken })
  const ok = await at(s, '/api/items/1', { authorization: `DPoP ${pair.accessToken}`, dpop: good }, 'DELETE')
  t.equal(ok.status, 200, `a proof for DELETE ${s.nginx.base}/api/items/1 (${ok.body})`)
  t.equal(s.seen.at(-1)!.headers['x-user-jkt'], await jktOf(key), 'the app sees x-user-jkt')
  t.equal(s.seen.at(-1)!.headers.dpop, undefined, 'not the proof')
  const before = s.seen.length
  const gatewayUrl = await proof(key, 'DELETE', `${s.gw.base}/api/items/1`, { accessToken: pair.accessToken })
  const refused = await at(s, '/api/items/1', { authorization: `DPoP ${pair.accessToken}`, dpop: gatewayUrl }, 'DELETE')
  t.equal(refused.status, 401, 'a proof for the gateway\'s own URL: 401')
  t.match(String(refused.headers['www-authenticate']), /^DPoP error="invalid_dpop_proof"/, 'with the DPoP challenge')
  const replay = await at(s, '/api/items/1', { authorization: `DPoP ${pair.accessToken}`, dpop: good }, 'DELETE')
  t.equal(replay.status, 401, 'the accepted proof replayed: 401')
  t.equal(s.seen.length, before, 'neither reached the app')
})

t.test('through nginx, attackers: a forged original, a traversing path, spoofed identity, /auth/verify from outside', { skip: noNginx }, async t => {
  const s = await stack(t)
  const { pair } = await login(s, 'alice')
  const alice = { authorization: `Bearer ${pair.accessToken}` }
  t.equal((await at(s, '/admin/x', alice)).status, 403, 'control: alice is refused /admin/x')
  t.equal((await at(s, '/pub/x', alice)).status, 200, 'control: and allowed /pub/x')
  const before = s.seen.length

  const forged = await at(s, '/admin/x', { ...alice, 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/pub/x', 'x-original-uri': '/pub/x', 'x-original-method': 'GET' })
  t.equal(forged.status, 403, 'a client\'s own X-Forwarded-Uri / X-Original-URI naming /pub/x: still /admin/x\'s policy')
  for (const path of ['/pub/../admin/x', '/pub/%2e%2e/admin/x', '/pub//../admin/x']) {
    const res = await at(s, path, alice)
    t.equal(res.status, 500, `${path}: never passes (the gateway's 400 is nginx's 500)`)
  }
  t.equal(s.seen.length, before, 'none of them reached the app')

  const fromOutside = await at(s, '/auth/verify', { ...alice, 'x-original-method': 'GET', 'x-original-uri': '/api/x' })
  t.equal(fromOutside.status, 404, '/auth/verify is not served to the outside')
  t.equal(fromOutside.headers['x-user-id'], undefined)

  // Control: an underscored name (nginx drops those) and other headers pass, and reach the app as sent.
  const plain = await at(s, '/pub/x', { x_user_id: 'admin', 'x-harmless': 'kept' })
  t.equal(plain.status, 200, 'control: x_user_id (dropped by nginx) and x-harmless: 200')
  const h = s.seen.at(-1)!.headers
  t.equal(h.x_user_id, undefined, 'x_user_id does not reach the app (nginx drops underscored names)')
  t.equal(h['x-harmless'], 'kept', 'other headers arrive')
  const seen = s.seen.length
  for (const [path, headers] of [
    ['/pub/x', { 'x-user-id': 'admin' }],
    ['/pub/x', { 'x-user-roles': 'admin' }],
    ['/pub/x', { 'x-tokengate-assertion': 'forged' }],
    ['/pub/x', { 'x-user-email': 'admin@example.com' }],
    ['/api/x', { ...alice, 'x-user-id': 'admin' }],
    ['/api/x', { ...alice, 'x-user-email': 'admin@example.com' }]
  ] as Array<[string, Record<string, string>]>) {
    const res = await at(s, path, headers)
    t.equal(res.status, 500, `${Object.keys(headers).at(-1)!} on ${path}: refused (the gateway's 400 is nginx's 500)`)
  }
  t.equal(s.seen.length, seen, 'a client-sent identity header never reaches the app, even one nginx does not set')
})
