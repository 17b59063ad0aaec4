// The gateway as a user runs it: the built bin in a child process, a config file on disk, the
// shared Redis, a real echo upstream, real HTTP. Also `npm start`'s demo and its printed curl steps.
import { spawnSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import http, { type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { Redis } from 'ioredis'
import t from 'tap'
import { hashPassword } from '../../gateway/login.js'
import { SECRET, until } from '../helpers/app.js'
import { deletePrefix, freePort, readSession, redisUrl, uniquePrefix } from '../helpers/redis.js'
import { childEnv, killChildren, spawnDist, tempDir, type Proc } from '../helpers/spawn.js'
import { craftAccessToken } from '../helpers/tokens.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

// ---- helpers ----------------------------------------------------------------------------------------

interface Seen { method: string, url: string, headers: IncomingHttpHeaders }

/** An upstream on loopback that answers with what it received; paths with /slow answer when released. */
async function startUpstream (): Promise<{ port: number, seen: Seen[], slowArrived: () => Promise<void>, releaseSlow: () => void, close: () => Promise<void> }> {
  const seen: Seen[] = []
  let onSlow: (() => void) | undefined
  const held: Array<() => void> = []
  const server = http.createServer((req, res) => {
    const rec: Seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers }
    seen.push(rec)
    req.resume()
    const send = (body: unknown): void => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify(body))
    }
    if (rec.url.includes('/slow')) {
      held.push(() => send({ ...rec, pad: 'x'.repeat(200_000) }))
      onSlow?.()
      return
    }
    send(rec)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    slowArrived: async () => await new Promise<void>(resolve => { onSlow = resolve }),
    releaseSlow: () => { for (const answer of held.splice(0)) answer() },
    close: async () => {
      for (const answer of held.splice(0)) answer()
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}

async function startGatewayBin (configFile: string, env: NodeJS.ProcessEnv): Promise<Proc & { port: number }> {
  const p = await spawnDist('gateway/server.js', ['--config', configFile], env, /Server listening at http:\/\/127\.0\.0\.1:(\d+)/)
  return { ...p, port: Number(p.match[1]) }
}

interface Res { status: number, headers: Headers, text: string, json: () => any }

async function call (port: number, urlPath: string, opts: { method?: string, headers?: Record<string, string>, body?: unknown } = {}): Promise<Res> {
  const headers: Record<string, string> = { ...opts.headers }
  if (opts.body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(`http://127.0.0.1:${port}${urlPath}`, {
    method: opts.method ?? 'GET',
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    signal: AbortSignal.timeout(15_000)
  })
  const text = await res.text()
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) }
}

interface Pair { accessToken: string, refreshToken: string, tokenType: string, expiresIn: number, refreshExpiresIn: number, sessionId: string }

async function login (port: number, username: string, password: string): Promise<Pair> {
  const res = await call(port, '/auth/login', { method: 'POST', body: { username, password } })
  if (res.status !== 200) throw new Error(`login ${username}: ${res.status} ${res.text}`)
  return res.json()
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

// ---- setup: one upstream, two gateways (main, SIGTERM), both from the bin ------------------------------

t.teardown(killChildren)

const rUrl = await redisUrl()
const redis = new Redis(rUrl)
const upstream = await startUpstream()
const dir = tempDir('bin')
const prefixes = { main: uniquePrefix('gw-bin'), term: uniquePrefix('gw-bin-term') }
t.teardown(async () => {
  for (const p of Object.values(prefixes)) await deletePrefix(redis, p)
  redis.disconnect()
  await upstream.close()
})

await writeFile(path.join(dir, 'users.json'), JSON.stringify([
  { sub: 'alice', roles: ['user'], passwordHash: await hashPassword('pw') },
  { sub: 'bob', roles: ['user', 'admin'], passwordHash: await hashPassword('pw2') }
]))

const up = `http://127.0.0.1:${upstream.port}`
async function writeConfig (name: string, prefix: string, tokens: Record<string, unknown> = {}): Promise<string> {
  const file = path.join(dir, name)
  await writeFile(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: await freePort() },
    redis: { url: rUrl },
    // eslint-disable-next-line no-template-curly-in-string
    tokens: { secret: '${TOKENGATE_SECRET}', keyPrefix: prefix, ...tokens },
    login: { usersFile: 'users.json' },
    routes: [
      { prefix: '/api', upstream: up, auth: 'required' },
      { prefix: '/admin', upstream: up, auth: 'required', roles: ['admin'] },
      { prefix: '/opt', upstream: up, auth: 'optional' },
      { prefix: '/pub', upstream: up, auth: 'public' }
    ],
    logLevel: 'info'
  }, null, 2))
  return file
}

const env = childEnv({ TOKENGATE_SECRET: SECRET })
// `npm start` as a new user runs it: no TOKENGATE_SECRET, no REDIS_URL; PORT and DEMO_UPSTREAM_PORT set.
const hasCurl = spawnSync('curl', ['--version'], { stdio: 'ignore' }).status === 0
const demoPorts = { port: await freePort(), upstream: await freePort() }
const demoStart = hasCurl
  ? spawnDist('gateway/demo.js', [], childEnv({ PORT: String(demoPorts.port), DEMO_UPSTREAM_PORT: String(demoPorts.upstream), TOKENGATE_SECRET: undefined }), /Ctrl-C stops it\./)
    .then(p => ({ p }), (err: Error) => ({ err }))
  : undefined
const [main, term] = await Promise.all([
  startGatewayBin(await writeConfig('main.json', prefixes.main), env),
  startGatewayBin(await writeConfig('term.json', prefixes.term), env)
])

const SPOOF = { 'x-user-id': 'mallory', 'x-user-roles': 'admin,root', 'x-session-id': 'forged-session', 'x-user-anything': 'zzz' }

// ---- tests ---------------------------------------------------------------------------------------------

t.test('login: 200 with a TokenPair (session in the shared Redis under the prefix), bad password 401', async t => {
  const res = await call(main.port, '/auth/login', { method: 'POST', body: { username: 'alice', password: 'pw' } })
  t.equal(res.status, 200, res.text)
  const pair = res.json() as Pair
  t.type(pair.accessToken, 'string')
  t.type(pair.refreshToken, 'string')
  t.equal(pair.tokenType, 'Bearer')
  t.type(pair.expiresIn, 'number')
  t.type(pair.refreshExpiresIn, 'number')
  t.type(pair.sessionId, 'string')
  t.ok(await readSession(redis, prefixes.main, 'alice', pair.sessionId), 'the session is stored in the shared Redis under tokens.keyPrefix')

  const bad = await call(main.port, '/auth/login', { method: 'POST', body: { username: 'alice', password: 'nope' } })
  t.equal(bad.status, 401)
  t.equal(bad.json().code, 'TOKENGATE_BAD_CREDENTIALS')
  t.notMatch(bad.text, /accessToken/)
  const unknown = await call(main.port, '/auth/login', { method: 'POST', body: { username: 'carol', password: 'pw' } })
  t.equal(unknown.status, 401)
  t.equal(unknown.json().code, 'TOKENGATE_BAD_CREDENTIALS')
})

t.test('/api (required): 401 without a token, upstream not called', async t => {
  const before = upstream.seen.length
  const res = await call(main.port, '/api/orders/7', { headers: SPOOF })
  t.equal(res.status, 401)
  t.equal(res.json().code, 'TOKENGATE_TOKEN_MISSING')
  t.equal(upstream.seen.length, before, 'the upstream never saw the request')
})

t.test('/api with a token: identity headers, path unchanged, tokens and spoofed headers gone', async t => {
  const pair = await login(main.port, 'alice', 'pw')
  const res = await call(main.port, '/api/orders/7?x=1', {
    headers: { ...bearer(pair.accessToken), 'x-refresh-token': pair.refreshToken, ...SPOOF }
  })
  t.equal(res.status, 200, res.text)
  const got = res.json() as Seen
  t.equal(got.method, 'GET')
  t.equal(got.url, '/api/orders/7?x=1', 'the path and query arrive unchanged')
  t.equal(got.headers['x-user-id'], 'alice')
  t.equal(got.headers['x-user-roles'], 'user')
  t.equal(got.headers['x-session-id'], pair.sessionId)
  t.match(got.headers['x-request-id'], UUID)
  t.equal(res.headers.get('x-request-id'), got.headers['x-request-id'], 'the request id is echoed on the response')
  t.notOk('authorization' in got.headers, 'no authorization header upstream')
  t.notOk('x-refresh-token' in got.headers, 'no x-refresh-token upstream')
  t.notOk('x-user-anything' in got.headers, 'client-sent x-user-* removed')
  t.notMatch(JSON.stringify(got.headers), /mallory|forged-session|root/, 'no spoofed value reaches the upstream')

  const post = await call(main.port, '/api/orders', { method: 'POST', headers: bearer(pair.accessToken), body: { item: 1 } })
  t.equal(post.status, 200)
  t.equal(post.json().method, 'POST')
  t.equal(post.json().url, '/api/orders')
})

t.test('x-request-id: a well-formed client id is kept, a malformed one replaced', async t => {
  const pair = await login(main.port, 'alice', 'pw')
  const kept = await call(main.port, '/api/r', { headers: { ...bearer(pair.accessToken), 'x-request-id': 'abc-123' } })
  t.equal(kept.status, 200)
  t.equal(kept.json().headers['x-request-id'], 'abc-123')
  t.equal(kept.headers.get('x-request-id'), 'abc-123')
  for (const bad of ['bad id!', 'a'.repeat(200)]) {
    const res = await call(main.port, '/api/r', { headers: { ...bearer(pair.accessToken), 'x-request-id': bad } })
    t.equal(res.status, 200)
    const id = res.json().headers['x-request-id']
    t.not(id, bad, `${bad.slice(0, 12)}… is not forwarded`)
    t.match(id, UUID, 'a fresh id instead')
    t.equal(res.headers.get('x-request-id'), id)
  }
  // public routes get a request id too
  const pub = await call(main.port, '/pub/r', { headers: { 'x-request-id': 'abc-123' } })
  t.equal(pub.json().headers['x-request-id'], 'abc-123')
})

t.test('/admin (roles [admin]): alice 403, bob 200', async t => {
  const alice = await login(main.port, 'alice', 'pw')
  const bob = await login(main.port, 'bob', 'pw2')
  const before = upstream.seen.length
  const denied = await call(main.port, '/admin/users', { headers: bearer(alice.accessToken) })
  t.equal(denied.status, 403)
  t.equal(denied.json().code, 'TOKENGATE_FORBIDDEN')
  t.equal(upstream.seen.length, before, 'the upstream never saw the forbidden request')
  const none = await call(main.port, '/admin/users')
  t.equal(none.status, 401)
  t.equal(none.json().code, 'TOKENGATE_TOKEN_MISSING')
  const ok = await call(main.port, '/admin/users', { headers: bearer(bob.accessToken) })
  t.equal(ok.status, 200, ok.text)
  t.equal(ok.json().url, '/admin/users')
  t.equal(ok.json().headers['x-user-id'], 'bob')
  t.equal(ok.json().headers['x-user-roles'], 'user,admin')
})

t.test('/opt (optional): anonymous passes without identity, a token adds it', async t => {
  const anon = await call(main.port, '/opt/feed', { headers: SPOOF })
  t.equal(anon.status, 200, anon.text)
  const a = anon.json() as Seen
  t.equal(a.url, '/opt/feed')
  t.notOk('x-user-id' in a.headers, 'no x-user-id (the spoofed one is removed)')
  t.notOk('x-user-roles' in a.headers)
  t.notOk('x-session-id' in a.headers)
  t.notOk('x-user-anything' in a.headers)
  t.match(a.headers['x-request-id'], UUID)

  const pair = await login(main.port, 'alice', 'pw')
  const authed = await call(main.port, '/opt/feed', { headers: { ...bearer(pair.accessToken), ...SPOOF } })
  t.equal(authed.status, 200)
  const b = authed.json() as Seen
  t.equal(b.headers['x-user-id'], 'alice')
  t.equal(b.headers['x-user-roles'], 'user')
  t.equal(b.headers['x-session-id'], pair.sessionId)
  t.notOk('authorization' in b.headers)
})

t.test('/pub (public) with a token: 200 and no identity headers at all', async t => {
  const pair = await login(main.port, 'alice', 'pw')
  const res = await call(main.port, '/pub/page', { headers: { ...bearer(pair.accessToken), 'x-refresh-token': pair.refreshToken, ...SPOOF } })
  t.equal(res.status, 200, res.text)
  const got = res.json() as Seen
  t.equal(got.url, '/pub/page')
  for (const h of ['x-user-id', 'x-user-roles', 'x-session-id', 'x-user-anything', 'authorization', 'x-refresh-token']) {
    t.notOk(h in got.headers, `no ${h} upstream`)
  }
  t.match(got.headers['x-request-id'], UUID)
})

t.test('refresh hook through the proxy: expired access + x-refresh-token → 200 with new tokens', async t => {
  const pair = await login(main.port, 'alice', 'pw')
  const fresh = await call(main.port, '/api/a', { headers: bearer(pair.accessToken) })
  t.equal(fresh.status, 200, 'the access token works while fresh')
  // What the client holds once its access token's exp has passed: a token of this session that expired
  // 30 s ago, signed with the gateway's secret. (Waiting out a real TTL in a child process costs seconds
  // and races the clock; expiry itself is tested on a stopped clock in test/plugin.)
  const stale = craftAccessToken({ sub: 'alice', sid: pair.sessionId, roles: ['user'] }, { expiresInSec: -30 })

  const before = upstream.seen.length
  const expired = await call(main.port, '/api/a', { headers: bearer(stale) })
  t.equal(expired.status, 401)
  t.equal(expired.json().code, 'TOKENGATE_TOKEN_EXPIRED', 'the access token has expired')
  t.equal(upstream.seen.length, before)

  const res = await call(main.port, '/api/orders/9?y=2', { headers: { ...bearer(stale), 'x-refresh-token': pair.refreshToken } })
  t.equal(res.status, 200, res.text)
  const got = res.json() as Seen
  t.equal(got.url, '/api/orders/9?y=2', 'the answer comes from the upstream')
  t.equal(got.headers['x-user-id'], 'alice')
  t.equal(got.headers['x-session-id'], pair.sessionId)
  t.notOk('authorization' in got.headers)
  t.notOk('x-refresh-token' in got.headers)
  const newAccess = res.headers.get('x-access-token')
  const newRefresh = res.headers.get('x-refresh-token')
  t.ok(newAccess !== null && newAccess !== stale && newAccess !== pair.accessToken, 'a new access token on the response')
  t.ok(newRefresh !== null && newRefresh !== pair.refreshToken, 'a rotated refresh token on the response')

  const again = await call(main.port, '/api/b', { headers: bearer(newAccess ?? '') })
  t.equal(again.status, 200, 'the new access token works')
  t.equal(again.json().headers['x-user-id'], 'alice')
})

t.test('logout: 204, then the same access token is revoked on /api', async t => {
  const pair = await login(main.port, 'alice', 'pw')
  t.equal((await call(main.port, '/api/x', { headers: bearer(pair.accessToken) })).status, 200)
  const out = await call(main.port, '/auth/logout', { method: 'POST', headers: bearer(pair.accessToken) })
  t.equal(out.status, 204)
  const before = upstream.seen.length
  const after = await call(main.port, '/api/x', { headers: bearer(pair.accessToken) })
  t.equal(after.status, 401)
  t.equal(after.json().code, 'TOKENGATE_TOKEN_REVOKED')
  t.equal(upstream.seen.length, before, 'the upstream never saw it')
  // a second session of the same user is unaffected
  const other = await login(main.port, 'alice', 'pw')
  t.equal((await call(main.port, '/api/x', { headers: bearer(other.accessToken) })).status, 200)
})

t.test('SIGTERM drains an in-flight request and exits 0', async t => {
  // A keep-alive client, as a load balancer or a Node service with an agent holds its connections.
  const agent = new http.Agent({ keepAlive: true })
  t.teardown(() => agent.destroy())
  const arrived = upstream.slowArrived()
  const pending = new Promise<{ status: number, body: string }>((resolve, reject) => {
    http.get(`http://127.0.0.1:${term.port}/pub/slow`, { agent }, res => {
      let body = ''
      res.setEncoding('utf8').on('data', (d: string) => { body += d }).on('end', () => resolve({ status: res.statusCode ?? 0, body })).on('error', reject)
    }).on('error', reject)
  })
  await arrived
  term.child.kill('SIGTERM')
  // The upstream answers once the gateway says it is draining: the answer must cross a stopping gateway.
  await until('the gateway is draining', 10_000, () => /draining in-flight requests/.test(term.stdout()))
  upstream.releaseSlow()
  const res = await pending
  t.equal(res.status, 200, 'the in-flight request still gets its answer')
  const body = JSON.parse(res.body) as Seen & { pad: string }
  t.equal(body.url, '/pub/slow')
  t.equal(body.pad.length, 200_000, 'the full body')
  // (An unref'd timer: a pending one would keep this file's process alive for 15 s after its last test.)
  const exit = await Promise.race([term.exited, new Promise<'hung'>(resolve => { setTimeout(resolve, 15_000, 'hung').unref() })])
  t.not(exit, 'hung', 'the process exits within 15 s')
  if (exit !== 'hung') {
    t.equal(exit.code, 0, `exit code 0 (stderr: ${term.stderr().trim()})`)
    t.equal(exit.signal, null)
  }
})

t.test('npm start: the demo and its printed curl steps', { skip: demoStart === undefined ? 'curl is not on PATH' : false }, async t => {
  if (demoStart === undefined) return
  const started = await demoStart
  if ('err' in started) throw started.err
  const demo = started.p
  t.teardown(() => { if (demo.child.exitCode === null && demo.child.signalCode === null) demo.child.kill('SIGKILL') })
  const [port, upPort] = [demoPorts.port, demoPorts.upstream]
  t.match(demo.stdout(), `127.0.0.1:${port}`, 'the gateway on PORT')
  t.match(demo.stdout(), `127.0.0.1:${upPort}`, 'the demo upstream on DEMO_UPSTREAM_PORT')
  t.match(demo.stderr(), /TOKENGATE_SECRET is not set/, 'says it made up a secret')

  // The printed steps, pasted into one shell as a new user would: every command line, in order.
  const steps = demo.stdout().split('\n').filter(l => /^ {2}(curl |[A-Z]+=)/.test(l)).map(l => l.trim())
  t.equal(steps.length, 9, `nine command lines printed (${steps.length})`)
  const script = steps.map((line, i) => `printf '\\n@@%s\\n' ${i}\n${line}`).join('\n')
  const shellEnv = { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}` }
  const ran = spawnSync('bash', ['-c', script], { env: shellEnv, encoding: 'utf8', timeout: 30_000 })
  t.equal(ran.status, 0, `the steps run (${ran.stderr})`)
  const out = new Map<number, string>()
  for (const part of ran.stdout.split('\n@@').slice(1)) {
    const nl = part.indexOf('\n')
    out.set(Number(part.slice(0, nl)), part.slice(nl + 1).trim())
  }
  const at = (pattern: RegExp): string => out.get(steps.findIndex(l => pattern.test(l))) ?? ''
  const json = (text: string): any => { try { return JSON.parse(text) } catch { return { unparsed: text } } }

  t.match(steps[0], /^PAIR=\$\(curl .*\/auth\/login/, 'first: log in and keep the pair')
  t.equal(out.get(0), '', 'the assignments print nothing')
  const withToken = json(out.get(steps.findIndex(l => l.includes('/api/hello') && l.includes('Bearer $ACCESS'))) ?? '')
  t.match(withToken, { service: 'demo', user: 'demo', roles: 'user', path: '/api/hello', sawAuthorization: false }, 'the protected call: the upstream saw the demo user, not the token')
  const noToken = json(out.get(steps.findIndex(l => /\/api\/hello$/.test(l))) ?? '')
  t.match(noToken, { statusCode: 401, code: 'TOKENGATE_TOKEN_MISSING' }, 'without a token: 401')

  const hooked = at(/x-refresh-token: \$REFRESH/)
  t.match(hooked, /^HTTP\/1\.1 200 /, 'the refresh hook: only the refresh token, and the request goes through')
  t.match(hooked, /^x-access-token: [\w-]+\.[\w-]+\.[\w-]+\r?$/m, 'with a new access token in x-access-token')
  t.match(hooked, /^x-refresh-token: tgr2\./m, 'and the rotated refresh token in x-refresh-token')
  t.match(json(hooked.slice(hooked.indexOf('{'))), { user: 'demo' }, 'the upstream saw the demo user')

  t.match(json(at(/\/public\/hello/)), { path: '/public/hello', user: null }, 'the public route: no identity')
  t.equal(at(/\/auth\/logout/), '204', 'logout: 204')
  t.match(json(out.get(steps.length - 1) ?? ''), { statusCode: 401, code: 'TOKENGATE_TOKEN_REVOKED' }, 'after logout the access token is refused')
})
