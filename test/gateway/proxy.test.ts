// The gateway's proxy over real sockets: upstream failures as 502/504 in Fastify's error shape, paths
// (rewritePrefix), what the upstream receives (identity, tokens, cookies, bodies, query strings), what
// comes back, cookie transport with CSRF through the proxy, and the identity-service login provider.
import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import net from 'node:net'
import path from 'node:path'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { buildGateway, hashPassword } from '../../gateway/index.js'
import { SECRET } from '../helpers/app.js'
import { deletePrefix, freePort, redisUrl, uniquePrefix } from '../helpers/redis.js'
import { removeTempDir, tempDir } from '../helpers/spawn.js'

interface Received { method: string, url: string, headers: IncomingHttpHeaders, body: Buffer }
interface Upstream { port: number, origin: string, received: Received[] }
type Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void
interface Pair { accessToken: string, refreshToken: string, sessionId: string }

const ALICE = { username: 'u-alice', password: 'wonderland' }
const aliceHash = await hashPassword(ALICE.password)

/** What the default upstream answers: what it received, as JSON. */
function echo (req: IncomingMessage, res: ServerResponse, body: Buffer): void {
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: body.toString('utf8') }))
}

/** A node:http upstream on 127.0.0.1:0 recording every request; closed at teardown. */
async function startUpstream (t: Test, handler: Handler = echo): Promise<Upstream> {
  const received: Received[] = []
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body })
      handler(req, res, body)
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>(resolve => server.close(() => resolve()))
  })
  return { port, origin: `http://127.0.0.1:${port}`, received }
}

/** A users file with alice in a temp dir, removed at teardown. */
function usersFile (t: Test): string {
  const dir = tempDir('proxy')
  t.teardown(() => removeTempDir(dir))
  const file = path.join(dir, 'users.json')
  writeFileSync(file, JSON.stringify([{ sub: ALICE.username, roles: ['user'], passwordHash: aliceHash }]))
  return file
}

interface Gateway { app: FastifyInstance, base: string, prefix: string }

/** A gateway on the shared Redis under its own key prefix, listening on 127.0.0.1:0; closed and cleaned at teardown. */
async function startGateway (t: Test, config: { routes?: unknown[], tokens?: Record<string, unknown>, login?: Record<string, unknown> }): Promise<Gateway> {
  const url = await redisUrl()
  const prefix = uniquePrefix('gw-proxy')
  const app = buildGateway({
    redis: { url },
    tokens: { secret: SECRET, keyPrefix: prefix, ...config.tokens },
    login: config.login ?? { usersFile: usersFile(t) },
    routes: config.routes ?? [],
    logLevel: 'silent'
  }, { logger: false })
  t.teardown(async () => {
    await app.close()
    const redis = new Redis(url)
    await deletePrefix(redis, prefix)
    redis.disconnect()
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as net.AddressInfo).port
  return { app, base: `http://127.0.0.1:${port}`, prefix }
}

async function login (base: string, body: Record<string, unknown> = ALICE): Promise<Pair> {
  const res = await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${await res.text()}`)
  return await res.json() as Pair
}

const jwtPayload = (token: string): Record<string, unknown> => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'))

/** Checks Fastify's error shape: exactly { statusCode, code, error, message }, and returns it. */
async function errorBody (t: Test, res: Response, status: number, code: string): Promise<Record<string, unknown>> {
  const text = await res.text()
  t.equal(res.status, status, `status ${status} (body ${text})`)
  let body: Record<string, unknown> = {}
  try { body = JSON.parse(text) } catch { t.fail(`not JSON: ${text}`) }
  t.same(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'], 'Fastify error shape, nothing more')
  t.equal(body.statusCode, status)
  t.equal(body.code, code)
  t.type(body.message, 'string')
  t.notOk('stack' in body, 'no stack')
  return body
}

t.test('an upstream that is not listening: 502 TOKENGATE_UPSTREAM_UNAVAILABLE, no stack, no upstream address', async t => {
  const port = await freePort()
  const { base } = await startGateway(t, { routes: [{ prefix: '/down', upstream: `http://127.0.0.1:${port}`, auth: 'public' }] })
  const res = await fetch(`${base}/down/x`)
  const body = await errorBody(t, res, 502, 'TOKENGATE_UPSTREAM_UNAVAILABLE')
  t.equal(body.error, 'Bad Gateway')
  const text = JSON.stringify(body)
  t.notMatch(text, String(port), 'the upstream port is not in the body')
  t.notMatch(text, '127.0.0.1', 'the upstream host is not in the body')
  t.notMatch(text, /ECONNREFUSED|UND_ERR|at .*\.js/, 'no internal error code or stack frame')
  t.match(res.headers.get('x-request-id'), /.+/, 'the error still carries x-request-id')
})

t.test('an upstream slower than the route timeout: 504 TOKENGATE_UPSTREAM_TIMEOUT, and the gateway keeps serving', async t => {
  const up = await startUpstream(t, (req, res, body) => {
    if (req.url === '/slow/late') setTimeout(() => { if (!res.destroyed) echo(req, res, body) }, 2000)
    else echo(req, res, body)
  })
  const { base } = await startGateway(t, { routes: [{ prefix: '/slow', upstream: up.origin, auth: 'public', timeout: '300ms' }] })
  const res = await fetch(`${base}/slow/late`)
  const body = await errorBody(t, res, 504, 'TOKENGATE_UPSTREAM_TIMEOUT')
  t.equal(body.error, 'Gateway Timeout')
  t.equal(up.received.length, 1, 'the upstream got the request')

  const next = await fetch(`${base}/slow/now`)
  t.equal(next.status, 200, 'the next request is served')
  t.match(await next.json(), { url: '/slow/now' })
})

t.test('an upstream that resets the connection: 502 TOKENGATE_UPSTREAM_UNAVAILABLE', async t => {
  let hits = 0
  const server = net.createServer(socket => {
    socket.once('data', () => { hits++; socket.resetAndDestroy() })
    socket.on('error', () => {})
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => await new Promise<void>(resolve => server.close(() => resolve())))
  const port = (server.address() as net.AddressInfo).port
  const { base } = await startGateway(t, { routes: [{ prefix: '/reset', upstream: `http://127.0.0.1:${port}`, auth: 'public' }] })
  const res = await fetch(`${base}/reset/x`)
  const body = await errorBody(t, res, 502, 'TOKENGATE_UPSTREAM_UNAVAILABLE')
  t.notMatch(JSON.stringify(body), String(port))
  t.ok(hits >= 1, 'the upstream was reached and reset the connection')
  const post = await fetch(`${base}/reset/y`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' })
  await errorBody(t, post, 502, 'TOKENGATE_UPSTREAM_UNAVAILABLE')
})

t.test('rewritePrefix maps the prefix; without it the path reaches the upstream unchanged', async t => {
  const up = await startUpstream(t)
  const { base } = await startGateway(t, {
    routes: [
      { prefix: '/v1', upstream: up.origin, rewritePrefix: '/internal', auth: 'public' },
      { prefix: '/v2', upstream: up.origin, auth: 'public' }
    ]
  })
  const a = await fetch(`${base}/v1/a`)
  t.equal(a.status, 200)
  t.equal(up.received.at(-1)?.url, '/internal/a', '/v1/a → /internal/a')
  const q = await fetch(`${base}/v1/a/b?x=1&y=two`)
  t.equal(q.status, 200)
  t.equal(up.received.at(-1)?.url, '/internal/a/b?x=1&y=two', 'deeper path and query string kept')
  const b = await fetch(`${base}/v2/a`)
  t.equal(b.status, 200)
  t.equal(up.received.at(-1)?.url, '/v2/a', 'no rewritePrefix: /v2/a → /v2/a')
})

t.test('forwardToken: Authorization, x-refresh-token and token cookies forwarded only when set; other cookies always kept', async t => {
  const up = await startUpstream(t)
  const { base } = await startGateway(t, {
    routes: [
      { prefix: '/fwd', upstream: up.origin, auth: 'required', forwardToken: true },
      { prefix: '/plain', upstream: up.origin, auth: 'required' }
    ]
  })
  const pair = await login(base)
  const tokenCookies = `tg_access=${pair.accessToken}; tg_refresh=${pair.refreshToken}; tg_csrf=c5rf`
  const headers = {
    authorization: `Bearer ${pair.accessToken}`,
    'x-refresh-token': pair.refreshToken,
    'x-csrf-token': 'c5rf',
    cookie: `${tokenCookies}; theme=dark`,
    'x-user-id': 'evil',
    'x-user-roles': 'admin',
    'x-user-email': 'evil@example.com',
    'x-session-id': 'not-mine'
  }

  const fwd = await fetch(`${base}/fwd/x`, { headers })
  t.equal(fwd.status, 200)
  let seen = up.received.at(-1)!.headers
  t.equal(seen.authorization, `Bearer ${pair.accessToken}`, 'forwardToken: Authorization forwarded')
  t.equal(seen['x-refresh-token'], pair.refreshToken, 'forwardToken: x-refresh-token forwarded')
  t.equal(seen.cookie, `${tokenCookies}; theme=dark`, 'forwardToken: the token cookies forwarded')
  t.equal(seen['x-user-id'], ALICE.username, 'verified x-user-id, not the client\'s')
  t.equal(seen['x-user-roles'], 'user')
  t.equal(seen['x-session-id'], pair.sessionId)
  t.equal(seen['x-user-email'], undefined, 'client-sent x-user-* removed')

  const plain = await fetch(`${base}/plain/x`, { headers })
  t.equal(plain.status, 200)
  seen = up.received.at(-1)!.headers
  t.equal(seen.authorization, undefined, 'Authorization dropped')
  t.equal(seen['x-refresh-token'], undefined, 'x-refresh-token dropped')
  t.equal(seen['x-csrf-token'], undefined, 'x-csrf-token dropped')
  t.equal(seen.cookie, 'theme=dark', 'token cookies dropped, theme=dark kept')
  t.equal(seen['x-user-id'], ALICE.username)
  t.equal(seen['x-session-id'], pair.sessionId)
  t.equal(seen['x-user-email'], undefined)

  // Only token cookies: no Cookie header at all.
  const only = await fetch(`${base}/plain/y`, { headers: { authorization: `Bearer ${pair.accessToken}`, cookie: tokenCookies } })
  t.equal(only.status, 200)
  t.equal(up.received.at(-1)!.headers.cookie, undefined, 'nothing left of the Cookie header')
  t.notMatch(JSON.stringify(up.received.filter(r => r.url.startsWith('/plain')).map(r => r.headers)), pair.accessToken, 'the access token never reached a non-forwardToken upstream')
})

t.test('bodies and query strings reach the upstream unchanged; status, headers and bodies come back', async t => {
  const up = await startUpstream(t, (req, res, body) => {
    if (req.url?.startsWith('/svc/created') === true) {
      res.writeHead(201, { 'content-type': 'application/json', 'x-custom': 'made-it', location: '/svc/items/9' })
      res.end(JSON.stringify({ id: 9, got: body.toString('utf8') }))
    } else if (req.url === '/svc/missing') {
      res.writeHead(404, { 'content-type': 'application/json', 'x-from': 'upstream' })
      res.end('{"upstream":"not here"}')
    } else if (req.url === '/svc/bytes') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      res.end(body)
    } else echo(req, res, body)
  })
  const { base } = await startGateway(t, { routes: [{ prefix: '/svc', upstream: up.origin, auth: 'public' }] })

  const json = '{"name":"widget","tags":["a","b"],"n":1.5,"nested":{"ü":"ß"}}'
  const post = await fetch(`${base}/svc/echo?q=1&r=a%20b&r=c`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'client-req.1' }, body: json })
  t.equal(post.status, 200)
  t.equal(post.headers.get('x-request-id'), 'client-req.1', 'the client\'s request id is echoed')
  let r = up.received.at(-1)!
  t.equal(r.method, 'POST')
  t.equal(r.url, '/svc/echo?q=1&r=a%20b&r=c', 'path and query string unchanged')
  t.equal(r.body.toString('utf8'), json, 'JSON body byte for byte')
  t.equal(r.headers['content-type'], 'application/json')
  t.equal(r.headers['x-request-id'], 'client-req.1', 'the upstream gets the client\'s request id')

  const bytes = randomBytes(256 * 1024)
  const put = await fetch(`${base}/svc/bytes`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: bytes })
  t.equal(put.status, 200)
  r = up.received.at(-1)!
  t.equal(r.method, 'PUT')
  t.equal(r.headers['content-type'], 'application/octet-stream')
  t.ok(r.body.equals(bytes), 'binary body byte for byte to the upstream')
  t.ok(Buffer.from(await put.arrayBuffer()).equals(bytes), 'binary body byte for byte back')

  const created = await fetch(`${base}/svc/created?x=1`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' })
  t.equal(created.status, 201)
  t.equal(created.headers.get('x-custom'), 'made-it')
  t.equal(created.headers.get('location'), '/svc/items/9')
  t.same(await created.json(), { id: 9, got: 'hello' })

  const missing = await fetch(`${base}/svc/missing`, { headers: { 'x-request-id': 'bad id with spaces' } })
  t.equal(missing.status, 404, 'the upstream\'s 404 stays a 404')
  t.equal(missing.headers.get('x-from'), 'upstream')
  t.same(await missing.json(), { upstream: 'not here' }, 'the upstream\'s body, not a tokengate error')
  const rid = up.received.at(-1)!.headers['x-request-id']
  t.match(rid, /^[0-9a-f-]{36}$/, 'a malformed client request id is replaced by a UUID')
  t.equal(missing.headers.get('x-request-id'), rid, 'and that id is echoed')
})

t.test('cookie transport through the proxy: identity reaches the upstream, token cookies do not, CSRF guards unsafe methods', async t => {
  const up = await startUpstream(t)
  const { base } = await startGateway(t, {
    tokens: { transport: ['cookie'] },
    routes: [{ prefix: '/api', upstream: up.origin, auth: 'required' }]
  })
  const res = await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ALICE) })
  t.equal(res.status, 200)
  const pair = await res.json() as Pair
  const jar: Record<string, string> = {}
  for (const line of res.headers.getSetCookie()) {
    const [nv] = line.split(';')
    jar[nv.slice(0, nv.indexOf('='))] = nv.slice(nv.indexOf('=') + 1)
  }
  t.same(Object.keys(jar).sort(), ['tg_access', 'tg_csrf', 'tg_refresh'], 'login sets the three cookies')
  const cookie = `tg_access=${jar.tg_access}; tg_refresh=${jar.tg_refresh}; tg_csrf=${jar.tg_csrf}; theme=dark`

  const get = await fetch(`${base}/api/me`, { headers: { cookie } })
  t.equal(get.status, 200)
  let seen = up.received.at(-1)!
  t.equal(seen.url, '/api/me')
  t.equal(seen.headers['x-user-id'], ALICE.username)
  t.equal(seen.headers['x-session-id'], pair.sessionId)
  t.equal(seen.headers.cookie, 'theme=dark', 'no tg_* cookie reaches the upstream')

  const before = up.received.length
  const noCsrf = await fetch(`${base}/api/orders`, { method: 'POST', headers: { cookie, 'content-type': 'application/json' }, body: '{"a":1}' })
  await errorBody(t, noCsrf, 403, 'TOKENGATE_CSRF')
  const wrongCsrf = await fetch(`${base}/api/orders`, { method: 'POST', headers: { cookie, 'content-type': 'application/json', 'x-csrf-token': 'nope' }, body: '{"a":1}' })
  await errorBody(t, wrongCsrf, 403, 'TOKENGATE_CSRF')
  t.equal(up.received.length, before, 'the upstream was not called')

  const withCsrf = await fetch(`${base}/api/orders`, { method: 'POST', headers: { cookie, 'content-type': 'application/json', 'x-csrf-token': jar.tg_csrf }, body: '{"a":1}' })
  t.equal(withCsrf.status, 200, 'with the matching x-csrf-token the POST goes through')
  seen = up.received.at(-1)!
  t.equal(seen.method, 'POST')
  t.equal(seen.body.toString('utf8'), '{"a":1}')
  t.equal(seen.headers['x-user-id'], ALICE.username)
  t.equal(seen.headers['x-csrf-token'], undefined, 'x-csrf-token not forwarded')
  t.equal(seen.headers.cookie, 'theme=dark')

  const anon = await fetch(`${base}/api/me`, { headers: { cookie: 'theme=dark' } })
  await errorBody(t, anon, 401, 'TOKENGATE_TOKEN_MISSING')
})

t.test('login with an identity service', async t => {
  interface Call { headers: IncomingHttpHeaders, body: unknown, url: string, method: string }
  const calls: Call[] = []
  const idp = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      let body: unknown
      try { body = JSON.parse(Buffer.concat(chunks).toString('utf8')) } catch { body = Buffer.concat(chunks).toString('utf8') }
      calls.push({ headers: req.headers, body, url: req.url ?? '', method: req.method ?? '' })
      const who = (body as { username?: string }).username
      const send = (status: number, json: unknown): void => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(json)) }
      if (who === 'ext') send(200, { sub: 'u-ext', roles: ['user', 'ops'], claims: { tenant: 'acme', plan: 'gold' } })
      else if (who === 'comma') send(200, { sub: 'u-comma', roles: ['user', 'team-x,admin'] })
      else if (who === 'no401') send(401, { error: 'bad password' })
      else if (who === 'no403') send(403, { error: 'locked' })
      else if (who === 'no404') send(404, { error: 'no such user' })
      else if (who === 'boom') send(500, { error: 'internal' })
      else if (who === 'hang') { /* never answers */ } else send(400, { error: 'unexpected' })
    })
  })
  await new Promise<void>(resolve => idp.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    idp.closeAllConnections()
    await new Promise<void>(resolve => idp.close(() => resolve()))
  })
  const idpPort = (idp.address() as net.AddressInfo).port
  const up = await startUpstream(t)
  const { base } = await startGateway(t, {
    login: { upstream: `http://127.0.0.1:${idpPort}/verify?v=1`, timeout: '300ms' },
    routes: [{ prefix: '/api', upstream: up.origin, auth: 'required' }]
  })
  const loginAs = async (body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<Response> =>
    await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })

  await t.test('2xx {sub, roles, claims} logs in; the identity service gets the login body as JSON and an x-request-id', async t => {
    const body = { username: 'ext', password: 'pw', otp: '123456', remember: true }
    const res = await loginAs(body, { 'x-request-id': 'login-req-1' })
    t.equal(res.status, 200)
    const pair = await res.json() as Pair
    const claims = jwtPayload(pair.accessToken)
    t.equal(claims.sub, 'u-ext')
    t.same(claims.roles, ['user', 'ops'])
    t.equal(claims.tenant, 'acme', 'the service\'s claims are in the access token')
    t.equal(claims.plan, 'gold')
    const call = calls.at(-1)!
    t.equal(call.method, 'POST')
    t.equal(call.url, '/verify?v=1')
    t.same(call.body, body, 'the client\'s login body, unchanged')
    t.match(call.headers['content-type'], /^application\/json/)
    t.equal(call.headers['x-request-id'], 'login-req-1', 'the request id reaches the identity service')

    const api = await fetch(`${base}/api/x`, { headers: { authorization: `Bearer ${pair.accessToken}` } })
    t.equal(api.status, 200)
    t.equal(up.received.at(-1)!.headers['x-user-id'], 'u-ext')
    t.equal(up.received.at(-1)!.headers['x-user-roles'], 'user,ops')

    await loginAs({ username: 'ext', password: 'pw' })
    t.match(calls.at(-1)!.headers['x-request-id'], /^[A-Za-z0-9._-]{1,128}$/, 'an x-request-id even when the client sent none')
  })

  await t.test('a role with a comma from the identity service is left out: it would read as two in x-user-roles', async t => {
    const res = await loginAs({ username: 'comma', password: 'pw' })
    t.equal(res.status, 200)
    const pair = await res.json() as Pair
    t.same(jwtPayload(pair.accessToken).roles, ['user'], 'the plain role is kept (control), the one with a comma is not')
    const api = await fetch(`${base}/api/x`, { headers: { authorization: `Bearer ${pair.accessToken}` } })
    t.equal(api.status, 200)
    t.equal(up.received.at(-1)!.headers['x-user-id'], 'u-comma')
    t.equal(up.received.at(-1)!.headers['x-user-roles'], 'user', 'no "admin" smuggled in through a comma')
  })

  for (const who of ['no401', 'no403', 'no404']) {
    await t.test(`${who.slice(2)} from the identity service → 401 TOKENGATE_BAD_CREDENTIALS`, async t => {
      const res = await loginAs({ username: who, password: 'pw' })
      await errorBody(t, res, 401, 'TOKENGATE_BAD_CREDENTIALS')
      t.equal((calls.at(-1)?.body as { username?: string } | undefined)?.username, who, 'the service was asked')
    })
  }

  await t.test('500 from the identity service → 502 TOKENGATE_UPSTREAM_UNAVAILABLE', async t => {
    const res = await loginAs({ username: 'boom', password: 'pw' })
    const body = await errorBody(t, res, 502, 'TOKENGATE_UPSTREAM_UNAVAILABLE')
    t.notMatch(JSON.stringify(body), String(idpPort))
  })

  await t.test('an identity service that never answers → 504 TOKENGATE_UPSTREAM_TIMEOUT', async t => {
    const started = Date.now()
    const res = await loginAs({ username: 'hang', password: 'pw' })
    await errorBody(t, res, 504, 'TOKENGATE_UPSTREAM_TIMEOUT')
    t.ok(Date.now() - started < 5000, 'did not hang')
    const again = await loginAs({ username: 'ext', password: 'pw' })
    t.equal(again.status, 200, 'logins still work afterwards')
  })

  await t.test('an identity service that is not listening → 502 TOKENGATE_UPSTREAM_UNAVAILABLE', async t => {
    const port = await freePort()
    const gw = await startGateway(t, { login: { upstream: `http://127.0.0.1:${port}/verify`, timeout: '2s' } })
    const res = await fetch(`${gw.base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'x', password: 'y' }) })
    const body = await errorBody(t, res, 502, 'TOKENGATE_UPSTREAM_UNAVAILABLE')
    t.notMatch(JSON.stringify(body), String(port))
  })
})
