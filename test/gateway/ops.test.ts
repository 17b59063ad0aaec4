// The gateway's operational surface: login rate limits (failed logins per IP + username, all logins
// and refreshes per IP, trustProxy), /healthz and /readyz, /metrics, and what the logs never print.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { Redis } from 'ioredis'
import { buildGateway } from '../../gateway/index.js'
import { hashPassword } from '../../gateway/login.js'
import { startEchoUpstream } from '../helpers/upstream.js'
import { SECRET, until } from '../helpers/app.js'
import { deletePrefix, freePort, keysUnder, redisUrl, startOwnRedis, uniquePrefix } from '../helpers/redis.js'
import { fakeClock } from '../helpers/clock.js'
import { captureLogs } from '../helpers/logs.js'
import { childEnv, spawnDist, tempDir } from '../helpers/spawn.js'

const ALICE_PW = 'alice-pw-Qx7-wonderland'
const BOB_PW = 'bob-pw-Zk3-builder'

const dir = tempDir('ops')

let usersFilePath: string | undefined
async function usersFile (): Promise<string> {
  if (usersFilePath !== undefined) return usersFilePath
  const file = path.join(dir, 'users.json')
  writeFileSync(file, JSON.stringify([
    { sub: 'alice', roles: ['user'], passwordHash: await hashPassword(ALICE_PW) },
    { sub: 'bob', roles: ['user', 'admin'], passwordHash: await hashPassword(BOB_PW) }
  ]))
  usersFilePath = file
  return file
}

/** An upstream that echoes what it received. */
let echoUrl: string | undefined
async function echoUpstream (): Promise<string> {
  if (echoUrl !== undefined) return echoUrl
  const up = await startEchoUpstream()
  t.teardown(up.close)
  echoUrl = up.url
  return echoUrl
}

/** A key prefix on the shared Redis, deleted at the test's teardown; plus a client on it. */
async function sharedPrefix (t: Test): Promise<{ url: string, prefix: string, client: Redis }> {
  const url = await redisUrl()
  const prefix = uniquePrefix('gw-ops')
  const client = new Redis(url)
  t.teardown(async () => {
    await deletePrefix(client, prefix)
    client.disconnect()
  })
  return { url, prefix, client }
}

async function baseConfig (extra: Record<string, unknown> = {}, tokens: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  return {
    tokens: { secret: SECRET, ...tokens },
    login: { usersFile: await usersFile() },
    routes: [{ prefix: '/api', upstream: await echoUpstream() }],
    logLevel: 'silent',
    ...extra
  }
}

/** Builds and listens a gateway; closed at teardown. Returns its base URL. */
async function gateway (t: Test, config: Record<string, unknown>): Promise<string> {
  const app = buildGateway(config, { logger: false })
  t.teardown(async () => { await app.close() })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
}

interface Res { status: number, headers: Headers, body: Record<string, unknown> }

async function post (base: string, url: string, body: unknown, headers: Record<string, string> = {}): Promise<Res> {
  const res = await fetch(`${base}${url}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  const text = await res.text()
  return { status: res.status, headers: res.headers, body: text === '' ? {} : JSON.parse(text) }
}

async function get (base: string, url: string, headers: Record<string, string> = {}): Promise<Res & { text: string }> {
  const res = await fetch(`${base}${url}`, { headers })
  const text = await res.text()
  let body: Record<string, unknown> = {}
  try { body = JSON.parse(text) } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, body, text }
}

const loginAs = async (base: string, username: string, password: string, headers: Record<string, string> = {}): Promise<Res> =>
  await post(base, '/auth/login', { username, password }, headers)

/** A 429 TOKENGATE_RATE_LIMITED; Retry-After a positive integer of seconds, or exactly `retryAfter`. */
function assertRateLimited (t: Test, r: Res, what: string, retryAfter?: number): void {
  t.equal(r.status, 429, `${what}: 429 (got ${r.status} ${String(r.body.code ?? '')})`)
  t.equal(r.body.code, 'TOKENGATE_RATE_LIMITED', `${what}: TOKENGATE_RATE_LIMITED`)
  const retry = r.headers.get('retry-after')
  if (retryAfter !== undefined) t.equal(retry, String(retryAfter), `${what}: Retry-After ${retryAfter}`)
  else t.match(retry, /^[1-9]\d*$/, `${what}: Retry-After is a positive integer of seconds (${String(retry)})`)
}

t.test('rate limiting', async t => {
  async function failedLoginScenario (t: Test, base: string): Promise<void> {
    for (let i = 1; i <= 3; i++) {
      const r = await loginAs(base, 'alice', `wrong-${i}`)
      t.equal(r.status, 401, `bad password ${i}: 401`)
      t.equal(r.body.code, 'TOKENGATE_BAD_CREDENTIALS')
    }
    assertRateLimited(t, await loginAs(base, 'alice', ALICE_PW), '4th attempt with the right password')
    const bob = await loginAs(base, 'bob', BOB_PW)
    t.equal(bob.status, 200, 'bob still logs in from the same IP')
    t.type(bob.body.accessToken, 'string')
  }

  t.test('failed logins per IP + username, counted in Redis under the keyPrefix', async t => {
    const { url, prefix, client } = await sharedPrefix(t)
    const base = await gateway(t, await baseConfig({ redis: { url }, rateLimit: { failedLogins: { max: 3, window: '1m' } } }, { keyPrefix: prefix }))
    await failedLoginScenario(t, base)
    const keys = (await keysUnder(client, prefix)).filter(k => k.startsWith(`${prefix}:rl:fail:`))
    t.equal(keys.length, 1, `one failed-login counter under ${prefix}:rl:fail:* (${keys.join(', ')})`)
    if (keys.length > 0) {
      const ttl = await client.pttl(keys[0])
      t.ok(ttl > 0 && ttl <= 60_000, `the counter has a TTL within the window (${ttl} ms)`)
      t.equal(await client.get(keys[0]), '3', 'the counter holds 3 failures')
    }
  })

  t.test('failed logins without Redis (memory store), until the window has passed', async t => {
    const clock = fakeClock(t)
    const base = await gateway(t, await baseConfig({ rateLimit: { failedLogins: { max: 3, window: '1m' } } }))
    await failedLoginScenario(t, base)
    // The window starts at the first failure (the clock stands still: all three came at its start).
    clock.tick(59_999)
    assertRateLimited(t, await loginAs(base, 'alice', ALICE_PW), 'a millisecond before the window ends', 1)
    clock.tick(1)
    t.equal((await loginAs(base, 'alice', ALICE_PW)).status, 200, 'once the window has passed, alice logs in')
  })

  // The per-IP windows are aligned to the clock (every instance counts the same window): these tests stop
  // the clock at the start of one (test/helpers/clock.ts), so no window ends mid-test unless they move it.
  t.test('per IP: the 6th login in the window is refused, until the next window', async t => {
    const clock = fakeClock(t)
    const { url, prefix } = await sharedPrefix(t)
    const base = await gateway(t, await baseConfig({ redis: { url }, rateLimit: { requests: { max: 5, window: '1m' } } }, { keyPrefix: prefix }))
    for (let i = 1; i <= 5; i++) t.equal((await loginAs(base, i % 2 === 0 ? 'bob' : 'alice', i % 2 === 0 ? BOB_PW : ALICE_PW)).status, 200, `login ${i}: 200`)
    assertRateLimited(t, await loginAs(base, 'bob', BOB_PW), '6th login, at the start of the window', 60)
    t.equal((await get(base, '/healthz')).status, 200, 'other routes are not limited')
    clock.tick(59_999)
    assertRateLimited(t, await loginAs(base, 'bob', BOB_PW), 'a millisecond before the window ends', 1)
    clock.tick(1)
    t.equal((await loginAs(base, 'bob', BOB_PW)).status, 200, 'the next window admits again')
  })

  t.test('per IP: one counter per client IP, <prefix>:rl:ip:<ip>, expiring with its window', async t => {
    const clock = fakeClock(t)
    const { url, prefix, client } = await sharedPrefix(t)
    const base = await gateway(t, await baseConfig({ redis: { url }, rateLimit: { requests: { max: 5, window: '1m' } } }, { keyPrefix: prefix }))
    t.equal((await loginAs(base, 'alice', ALICE_PW)).status, 200)
    t.equal((await post(base, '/auth/refresh', { refreshToken: 'bogus' })).status, 401)
    const key = `${prefix}:rl:ip:127.0.0.1`
    // Counted in the gateway, and shared through Redis within a sync (a quarter of a second).
    await until('the counter reaches Redis', 5000, async () => await client.hget(key, 'n') === '2')
    const keys = await keysUnder(client, prefix)
    t.same(keys.filter(k => k.includes(':rl:ip:')), [key], `the per-IP key names the IP (${keys.join(', ')})`)
    t.same(keys.filter(k => k.includes('undefined')), [], 'no key says undefined')
    t.equal(await client.hget(key, 'n'), '2', 'login and refresh counted once each')
    t.equal(Number(await client.pexpiretime(key)), clock.now() + 60_000, 'expires at the end of its window')
  })

  t.test('per IP, two gateways on one Redis: the limit is shared (within a sync)', async t => {
    fakeClock(t)
    const { url, prefix, client } = await sharedPrefix(t)
    const config = await baseConfig({ redis: { url }, rateLimit: { requests: { max: 6, window: '1m' } } }, { keyPrefix: prefix })
    const a = await gateway(t, config)
    const b = await gateway(t, config)
    const key = `${prefix}:rl:ip:127.0.0.1`
    for (let i = 1; i <= 5; i++) t.equal((await post(b, '/auth/refresh', { refreshToken: `bogus-b${i}` })).status, 401, `B ${i}: 401`)
    await until('B pushed its counts', 5000, async () => await client.hget(key, 'n') === '5')
    // A has counted nothing yet: its first request passes, and its sync learns the total of both.
    t.equal((await post(a, '/auth/refresh', { refreshToken: 'bogus-a1' })).status, 401, 'A 1: 401')
    // (Redis answered A's sync before this poll's read, and A, in this process, handles its answer first.)
    await until('A pushed its count and learned the total', 5000, async () => await client.hget(key, 'n') === '6')
    assertRateLimited(t, await post(a, '/auth/refresh', { refreshToken: 'bogus-a2' }), 'A refuses its 2nd (of a limit of 6): only B\'s counts explain it')
  })

  t.test('per IP: the 6th refresh in the window is refused (memory store)', async t => {
    const clock = fakeClock(t)
    const base = await gateway(t, await baseConfig({ rateLimit: { requests: { max: 5, window: '1m' } } }))
    for (let i = 1; i <= 5; i++) t.equal((await post(base, '/auth/refresh', { refreshToken: `bogus-${i}` })).status, 401, `refresh ${i}: 401`)
    assertRateLimited(t, await post(base, '/auth/refresh', { refreshToken: 'bogus-6' }), '6th refresh', 60)
    clock.tick(60_000)
    t.equal((await post(base, '/auth/refresh', { refreshToken: 'bogus-7' })).status, 401, 'the next window admits again')
  })

  // rateLimit.requests counts all logins and refreshes per client IP (default 100 per minute): one counter for both.
  t.test('per IP: logins and refreshes share one counter', async t => {
    fakeClock(t)
    const { url, prefix } = await sharedPrefix(t)
    const base = await gateway(t, await baseConfig({ redis: { url }, rateLimit: { requests: { max: 5, window: '1m' } } }, { keyPrefix: prefix }))
    const first = await loginAs(base, 'alice', ALICE_PW)
    t.equal(first.status, 200, 'request 1 (login): 200')
    let refreshToken = first.body.refreshToken as string
    for (let i = 2; i <= 3; i++) {
      const r = await post(base, '/auth/refresh', { refreshToken })
      t.equal(r.status, 200, `request ${i} (refresh): 200`)
      refreshToken = r.body.refreshToken as string
    }
    t.equal((await loginAs(base, 'bob', BOB_PW)).status, 200, 'request 4 (login): 200')
    t.equal((await post(base, '/auth/refresh', { refreshToken: 'not-a-token' })).status, 401, 'request 5 (bad refresh): 401')
    assertRateLimited(t, await post(base, '/auth/refresh', { refreshToken }), '6th request (a refresh after 2 logins and 3 refreshes)')
  })

  t.test('per IP, memory store: logins and refreshes share one counter', async t => {
    fakeClock(t)
    const base = await gateway(t, await baseConfig({ rateLimit: { requests: { max: 5, window: '1m' } } }))
    for (let i = 1; i <= 5; i++) t.equal((await post(base, '/auth/refresh', { refreshToken: `bogus-${i}` })).status, 401, `request ${i} (refresh): 401`)
    assertRateLimited(t, await loginAs(base, 'alice', ALICE_PW), '6th request (a login after 5 refreshes)')
  })

  t.test('trustProxy: false ignores X-Forwarded-For', async t => {
    fakeClock(t)
    const { url, prefix } = await sharedPrefix(t)
    const base = await gateway(t, await baseConfig({ redis: { url }, trustProxy: false, rateLimit: { requests: { max: 5, window: '1m' } } }, { keyPrefix: prefix }))
    for (let i = 1; i <= 5; i++) {
      const r = await post(base, '/auth/refresh', { refreshToken: 'bogus' }, { 'x-forwarded-for': `10.0.0.${i}` })
      t.equal(r.status, 401, `request ${i} from XFF 10.0.0.${i}: 401`)
    }
    assertRateLimited(t, await post(base, '/auth/refresh', { refreshToken: 'bogus' }, { 'x-forwarded-for': '10.0.0.6' }), 'a 6th XFF value shares the one counter')
  })

  t.test('trustProxy: true lets X-Forwarded-For name the client', async t => {
    fakeClock(t)
    const { url, prefix } = await sharedPrefix(t)
    const base = await gateway(t, await baseConfig({ redis: { url }, trustProxy: true, rateLimit: { requests: { max: 5, window: '1m' } } }, { keyPrefix: prefix }))
    for (let i = 1; i <= 5; i++) {
      const r = await post(base, '/auth/refresh', { refreshToken: 'bogus' }, { 'x-forwarded-for': '10.0.0.1' })
      t.equal(r.status, 401, `request ${i} from 10.0.0.1: 401`)
    }
    assertRateLimited(t, await post(base, '/auth/refresh', { refreshToken: 'bogus' }, { 'x-forwarded-for': '10.0.0.1' }), '6th from 10.0.0.1')
    const other = await post(base, '/auth/refresh', { refreshToken: 'bogus' }, { 'x-forwarded-for': '10.0.0.2' })
    t.equal(other.status, 401, `10.0.0.2 has its own counter (${JSON.stringify(other.body)})`)
    const login = await loginAs(base, 'alice', ALICE_PW, { 'x-forwarded-for': '10.0.0.3' })
    t.equal(login.status, 200, '10.0.0.3 logs in')
  })
  t.end()
})

t.test('health and readiness', async t => {
  t.test('/healthz and /readyz follow a Redis of the test\'s own', async t => {
    const own = await startOwnRedis()
    t.teardown(async () => { await own.stop() })
    const base = await gateway(t, await baseConfig({ redis: { url: own.url } }))

    const h = await get(base, '/healthz')
    t.equal(h.status, 200, '/healthz 200')
    const up = await get(base, '/readyz')
    t.equal(up.status, 200, `/readyz 200 while Redis is up (${up.text})`)

    await own.kill()
    let down: Awaited<ReturnType<typeof get>> | undefined
    await until('/readyz 503 after Redis died', 10_000, async () => { down = await get(base, '/readyz'); return down.status === 503 })
    t.equal(down?.status, 503, '/readyz 503 while Redis is down')
    t.match(down?.text, /unavailable/, `the body says unavailable (${String(down?.text)})`)
    t.equal((await get(base, '/healthz')).status, 200, '/healthz still 200: the process is alive')

    await own.start()
    let back: Awaited<ReturnType<typeof get>> | undefined
    await until('/readyz 200 after Redis came back', 15_000, async () => { back = await get(base, '/readyz'); return back.status === 200 })
    t.equal(back?.status, 200, '/readyz 200 again')
  })

  t.test('/readyz without Redis', async t => {
    const base = await gateway(t, await baseConfig())
    t.equal((await get(base, '/readyz')).status, 200)
    t.equal((await get(base, '/healthz')).status, 200)
  })
  t.end()
})

/** The value of one Prometheus sample, or undefined when absent. */
function sample (text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line)
    if (m === null || m[1] !== name) continue
    const have: Record<string, string> = {}
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have[k] = v
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3])
  }
  return undefined
}

t.test('/metrics', async t => {
  const { url, prefix } = await sharedPrefix(t)
  const base = await gateway(t, await baseConfig({ redis: { url } }, { keyPrefix: prefix, reuseGraceMs: 0 }))

  const ok = await loginAs(base, 'alice', ALICE_PW)
  t.equal(ok.status, 200, 'login')
  t.equal((await loginAs(base, 'alice', 'wrong')).status, 401, 'failed login')
  const auth = { authorization: `Bearer ${String(ok.body.accessToken)}` }
  t.equal((await get(base, '/api/orders/12345', auth)).status, 200, 'proxied request')
  const missing = await get(base, '/api/orders/67890')
  t.equal(missing.status, 401, '401 without a token')
  t.equal(missing.body.code, 'TOKENGATE_TOKEN_MISSING')
  t.equal((await post(base, '/auth/logout', {}, auth)).status, 204, 'logout')

  // Reuse: refresh once, then present the first refresh token again.
  const bob = await loginAs(base, 'bob', BOB_PW)
  const r0 = bob.body.refreshToken as string
  t.equal((await post(base, '/auth/refresh', { refreshToken: r0 })).status, 200, 'refresh')
  const reused = await post(base, '/auth/refresh', { refreshToken: r0 })
  t.equal(reused.status, 401, 'reused refresh token refused')
  t.equal(reused.body.code, 'TOKENGATE_REFRESH_REUSED')

  const res = await fetch(`${base}/metrics`)
  t.equal(res.status, 200)
  const type = res.headers.get('content-type') ?? ''
  t.match(type, /^text\/plain/, 'text/plain')
  t.match(type, /version=0\.0\.4/, 'version=0.0.4')
  const text = await res.text()

  t.equal(sample(text, 'tokengate_logins_total', { result: 'success' }), 2, 'logins success: alice + bob')
  t.equal(sample(text, 'tokengate_logins_total', { result: 'failure' }), 1, 'logins failure 1')
  t.equal(sample(text, 'tokengate_http_requests_total', { route: '/api/*', method: 'GET', status: '200' }), 1, 'proxied request counted under route="/api/*" status 200')
  t.equal(sample(text, 'tokengate_http_requests_total', { route: '/api/*', method: 'GET', status: '401' }), 1, 'the 401 counted under route="/api/*" status 401')
  t.notMatch(text, /12345|67890/, 'no raw URL ids in labels')
  t.equal(sample(text, 'tokengate_http_requests_total', { route: '/auth/login', method: 'POST', status: '401' }), 1, 'failed login counted by route and status')
  t.ok((text.match(/^tokengate_http_request_duration_seconds_bucket\{/gm) ?? []).length > 0, 'latency histogram buckets')
  t.ok(sample(text, 'tokengate_http_request_duration_seconds_bucket', { route: '/api/*', le: '+Inf' }) !== undefined, 'a latency bucket for route="/api/*"')
  t.equal(sample(text, 'tokengate_revocations_total', { reason: 'logout' }), 1, 'revocations reason=logout 1')
  t.ok((sample(text, 'tokengate_auth_failures_total', { code: 'TOKENGATE_TOKEN_MISSING' }) ?? 0) >= 1, 'auth failure TOKENGATE_TOKEN_MISSING counted')
  t.equal(sample(text, 'tokengate_reuse_detections_total'), 1, 'reuse detections 1')
  t.equal(sample(text, 'tokengate_refreshes_total', { result: 'success' }), 1, 'refreshes success 1')
  t.notMatch(text, /tokengate_process_process_/, 'one tokengate_ prefix on process metrics')
  t.ok(sample(text, 'tokengate_process_cpu_user_seconds_total') !== undefined, 'tokengate_process_cpu_user_seconds_total')
  t.ok(sample(text, 'tokengate_nodejs_eventloop_lag_seconds') !== undefined, 'tokengate_nodejs_eventloop_lag_seconds')
})

t.test('/metrics: upstream failures (502, 504) are counted apart from auth failures', async t => {
  const dead = await freePort()
  const slow = await startEchoUpstream({ delayMs: 1000 })
  t.teardown(slow.close)
  const base = await gateway(t, await baseConfig({
    routes: [
      { prefix: '/api', upstream: await echoUpstream() },
      { prefix: '/dead', upstream: `http://127.0.0.1:${dead}`, auth: 'public' },
      { prefix: '/slow', upstream: slow.url, auth: 'public', timeout: '200ms' }
    ]
  }))
  t.equal((await get(base, '/dead/x')).status, 502)
  t.equal((await get(base, '/slow/x')).status, 504)
  t.equal((await get(base, '/api/x')).status, 401)
  const text = await (await fetch(`${base}/metrics`)).text()
  t.equal(sample(text, 'tokengate_upstream_failures_total', { code: 'TOKENGATE_UPSTREAM_UNAVAILABLE' }), 1, '502 counted as an upstream failure')
  t.equal(sample(text, 'tokengate_upstream_failures_total', { code: 'TOKENGATE_UPSTREAM_TIMEOUT' }), 1, '504 counted as an upstream failure')
  t.equal(sample(text, 'tokengate_auth_failures_total', { code: 'TOKENGATE_UPSTREAM_UNAVAILABLE' }), undefined, '502 is not an auth failure')
  t.equal(sample(text, 'tokengate_auth_failures_total', { code: 'TOKENGATE_UPSTREAM_TIMEOUT' }), undefined, '504 is not an auth failure')
  t.equal(sample(text, 'tokengate_auth_failures_total', { code: 'TOKENGATE_TOKEN_MISSING' }), 1, 'the 401 is')
})

t.test('metrics: { listen } moves /metrics off the public port; metrics: false turns it off', async t => {
  const port = await freePort()
  const base = await gateway(t, await baseConfig({ metrics: { listen: { host: '127.0.0.1', port } } }))
  const pub = await get(base, '/metrics')
  t.equal(pub.status, 404, '/metrics is not on the public port')
  t.equal(pub.body.code, 'FST_ERR_NOT_FOUND')
  const own = await fetch(`http://127.0.0.1:${port}/metrics`)
  t.equal(own.status, 200, '/metrics on its own port')
  t.match(await own.text(), /tokengate_http_requests_total/)
  t.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404, 'nothing else there')

  const off = await gateway(t, await baseConfig({ metrics: false }))
  t.equal((await get(off, '/metrics')).status, 404, 'metrics: false serves no /metrics')
})

t.test('logs never print tokens, passwords or the secret, and carry the request id', async t => {
  const { url, prefix } = await sharedPrefix(t)
  const secret = randomBytes(64).toString('hex')
  const port = await freePort()
  const config = {
    listen: { host: '127.0.0.1', port },
    redis: { url },
    tokens: { secret, keyPrefix: prefix },
    login: { usersFile: await usersFile() },
    routes: [{ prefix: '/api', upstream: await echoUpstream() }],
    logLevel: 'trace'
  }
  const file = path.join(dir, 'logs.config.json')
  writeFileSync(file, JSON.stringify(config))

  const proc = await spawnDist('gateway/server.js', ['--config', file], childEnv(), /Server listening/)
  const child = proc.child
  const exited = proc.exited.then(e => e.code)
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const base = `http://127.0.0.1:${port}`

  const login = await loginAs(base, 'alice', ALICE_PW, { 'x-request-id': 'req-login-1' })
  t.equal(login.status, 200, 'login')
  const access = login.body.accessToken as string
  const refresh = login.body.refreshToken as string
  const proxied = await get(base, '/api/things/1', {
    authorization: `Bearer ${access}`,
    'x-refresh-token': refresh,
    cookie: `tg_access=${access}; tg_refresh=${refresh}; theme=dark`,
    'x-request-id': 'req-proxy-2'
  })
  t.equal(proxied.status, 200, 'proxied request')
  const refreshed = await post(base, '/auth/refresh', { refreshToken: refresh }, { 'x-request-id': 'req-refresh-3' })
  t.equal(refreshed.status, 200, 'refresh')
  const access2 = refreshed.body.accessToken as string
  const refresh2 = refreshed.body.refreshToken as string
  const logout = await post(base, '/auth/logout', {}, { authorization: `Bearer ${access2}`, 'x-request-id': 'req-logout-4' })
  t.equal(logout.status, 204, 'logout')

  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  const code = await exited
  clearTimeout(timer)
  const out = proc.stdout()
  const err = proc.stderr()
  t.equal(code, 0, `the bin exits 0 on SIGTERM (stderr: ${err})`)

  const all = out + err
  t.ok(out.length > 0, 'the bin logged something')
  const secrets: Array<[string, string]> = [
    ['the access token', access], ['the refreshed access token', access2],
    ['the refresh token', refresh], ['the rotated refresh token', refresh2],
    ['the access token signature', access.split('.')[2]], ['the refresh token MAC', refresh.slice(refresh.lastIndexOf('.') + 1)],
    ['the password', ALICE_PW], ['the secret', secret]
  ]
  for (const [what, value] of secrets) t.notOk(all.includes(value), `the logs do not contain ${what}`)

  const lines = out.split('\n').filter(l => l.trim() !== '').map(l => { try { return JSON.parse(l) as Record<string, unknown> } catch { return { raw: l } } })
  for (const id of ['req-login-1', 'req-proxy-2', 'req-refresh-3', 'req-logout-4']) {
    t.ok(lines.some(l => l.reqId === id), `log lines carry reqId ${id}`)
  }
})

t.test('access log: at info, exactly one line per request (method, route, status, time, request id), none at warn', async t => {
  const logs = captureLogs()
  const app = buildGateway(await baseConfig({ routes: [{ prefix: '/api', upstream: await echoUpstream() }, { prefix: '/pub', upstream: await echoUpstream(), auth: 'public' }] }),
    { logger: { level: 'info', stream: logs.stream } })
  t.teardown(async () => { await app.close() })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const sent: Array<[string, string, number, string]> = []
  const send = async (what: string, id: string, status: number, route: string, call: Promise<Res>): Promise<Res> => {
    const r = await call
    t.equal(r.status, status, `${what}: ${status}`)
    sent.push([id, what, status, route])
    return r
  }
  const ok = await send('login', 'acc-1', 200, '/auth/login', loginAs(base, 'alice', ALICE_PW, { 'x-request-id': 'acc-1' }))
  await send('bad login', 'acc-2', 401, '/auth/login', loginAs(base, 'alice', 'nope', { 'x-request-id': 'acc-2' }))
  await send('proxied', 'acc-3', 200, '/api/*', get(base, '/api/x', { authorization: `Bearer ${String(ok.body.accessToken)}`, 'x-request-id': 'acc-3' }))
  await send('proxied 401', 'acc-4', 401, '/api/*', get(base, '/api/x', { 'x-request-id': 'acc-4' }))
  await send('public', 'acc-5', 200, '/pub/*', get(base, '/pub/y', { 'x-request-id': 'acc-5' }))
  await send('not found', 'acc-6', 404, 'unmatched', get(base, '/nowhere', { 'x-request-id': 'acc-6' }))
  // The access log is written once a response has gone out: wait for the lines, not for a time.
  await until('every request is access-logged', 5000, async () => sent.every(([id]) => logs.lines().some(l => l.reqId === id)))
  const lines = logs.lines().filter(l => typeof l.reqId === 'string' && l.reqId.startsWith('acc-'))
  for (const [id, what, status, route] of sent) {
    const mine = lines.filter(l => l.reqId === id)
    t.equal(mine.length, 1, `${what}: one line (got ${mine.map(l => l.msg).join(', ')})`)
    t.match(mine[0], { msg: 'request', route, status, level: 30 }, `${what}: route ${route}, status ${status}`)
    t.type(mine[0]?.ms, 'number', `${what}: the time it took`)
    t.type(mine[0]?.method, 'string')
  }
  t.same(logs.lines().filter(l => /incoming request|request completed/.test(String(l.msg))), [], "none of Fastify's two lines per request")
  // Health probes and scrapes (the load balancer's, Prometheus') are not access-logged.
  t.equal((await get(base, '/healthz', { 'x-request-id': 'acc-probe' })).status, 200)
  // A request sent after the probe is logged after it: once its line is there, the probe's would be too.
  t.equal((await get(base, '/nowhere', { 'x-request-id': 'acc-after-probe' })).status, 404)
  await until('the request after the probe is logged', 5000, async () => logs.lines().some(l => l.reqId === 'acc-after-probe'))
  t.same(logs.lines().filter(l => l.reqId === 'acc-probe'), [], '/healthz writes no line')

  const quiet = captureLogs()
  const warnApp = buildGateway(await baseConfig(), { logger: { level: 'warn', stream: quiet.stream } })
  t.teardown(async () => { await warnApp.close() })
  await warnApp.listen({ port: 0, host: '127.0.0.1' })
  const wbase = `http://127.0.0.1:${(warnApp.server.address() as AddressInfo).port}`
  await loginAs(wbase, 'alice', ALICE_PW)
  await get(wbase, '/api/x')
  t.same(quiet.lines().filter(l => l.reqId !== undefined), [], 'at warn nothing is logged for requests that went as expected')
})
