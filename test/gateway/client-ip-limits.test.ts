// The per-IP limit as an attacker meets it (DESIGN §2). trustProxy takes Fastify's forms (true, a hop count,
// addresses/CIDRs as a list or a comma string); with `trustProxy: 1` a client that writes its own
// X-Forwarded-For entries in front of the one its proxy appends keeps the proxy's: rotating fake entries still
// ends in 429. And every refresh counts: the refresh hook's refreshes on any route count against the per-IP
// limit exactly as POST /auth/refresh does; past the limit no refresh happens.
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { ConfigError, parseConfig } from '../../gateway/index.js'
import { SECRET } from '../helpers/app.js'
import { GATEWAY_USERS, postJson, rawRequest, startGateway } from '../helpers/gateway.js'
import { readSession, redisUrl } from '../helpers/redis.js'
import { startEchoUpstream } from '../helpers/upstream.js'
import { craftAccessToken, hashOf } from '../helpers/tokens.js'

function assertLimited (t: Test, r: { status: number, body: any, headers: Headers | Record<string, unknown> }, what: string): void {
  t.equal(r.status, 429, `${what}: 429 (got ${r.status})`)
  t.equal(r.body.code, 'TOKENGATE_RATE_LIMITED', `${what}: TOKENGATE_RATE_LIMITED`)
  const retry = r.headers instanceof Headers ? r.headers.get('retry-after') : r.headers['retry-after']
  t.match(retry, /^[1-9]\d*$/, `${what}: Retry-After (${String(retry)})`)
}

t.test('trustProxy takes Fastify\'s forms; anything else names the field', async t => {
  const base = { login: { usersFile: '/nonexistent/users.json' }, tokens: { secret: SECRET } }
  for (const value of [true, false, 0, 1, 2, '127.0.0.1', '10.0.0.0/8, 127.0.0.1', ['127.0.0.1', '::1/128', '10.0.0.0/255.0.0.0'], 'loopback', ['loopback', 'uniquelocal']]) {
    t.same(parseConfig({ ...base, trustProxy: value }).trustProxy, value, `${JSON.stringify(value)} is accepted as it is`)
  }
  t.equal(parseConfig({ ...base, trustProxy: '2' }, { env: {} }).trustProxy, 2, 'a hop count from an environment variable (a string) is a number')
  const spaced = parseConfig({ ...base, trustProxy: [' 127.0.0.1', '10.0.0.0/8 '] }).trustProxy
  t.same(spaced, ['127.0.0.1', '10.0.0.0/8'], 'a list\'s entries lose the spaces around them')
  const app = Fastify({ trustProxy: spaced as string[] })
  await app.ready()
  await app.close()
  t.pass('and Fastify takes the list (it refuses " 127.0.0.1")')
  for (const [value, field] of [['not-an-address', 'trustProxy'], [['127.0.0.1', '10.0.0.0/33'], 'trustProxy[1]'], [-1, 'trustProxy'], [1.5, 'trustProxy'], [{}, 'trustProxy']] as const) {
    const err = (() => { try { parseConfig({ ...base, trustProxy: value }); return null } catch (e) { return e as Error } })()
    t.ok(err instanceof ConfigError, `${JSON.stringify(value)}: refused`)
    t.match(err?.message, new RegExp(`^config: ${field.replace(/[[\]]/g, '\\$&')} `), `${JSON.stringify(value)}: names ${field} (${String(err?.message)})`)
  }
})

t.test('trustProxy: 1: fake X-Forwarded-For entries in front do not change the IP the limit sees', async t => {
  const gw = await startGateway(t, { trustProxy: 1, rateLimit: { requests: { max: 3, window: '1m' } } })
  // The client writes "6.6.6.<n>"; its proxy (played here) appends the address it saw, 203.0.113.7.
  const attempt = async (fake: string, real: string): Promise<{ status: number, body: any, headers: Headers }> =>
    await postJson(gw.base, '/auth/refresh', { refreshToken: 'bogus' }, { 'x-forwarded-for': `${fake}, ${real}` })
  for (let i = 1; i <= 3; i++) t.equal((await attempt(`6.6.6.${i}`, '203.0.113.7')).status, 401, `attempt ${i} (fake 6.6.6.${i}): counted, 401`)
  assertLimited(t, await attempt('6.6.6.4', '203.0.113.7'), 'a 4th fake entry')
  assertLimited(t, await attempt('6.6.6.5, 7.7.7.7', '203.0.113.7'), 'two fake entries')
  // Control: another client behind the same proxy has its own count.
  t.equal((await attempt('6.6.6.6', '198.51.100.9')).status, 401, 'control: another real client is not limited')
})

t.test('the refresh hook\'s refreshes count against the per-IP limit; past it, no refresh happens', async t => {
  const upstream = await startEchoUpstream()
  t.teardown(upstream.close)
  const gw = await startGateway(t, {
    rateLimit: { requests: { max: 4, window: '1m' } },
    routes: [{ prefix: '/api', upstream: upstream.url, auth: 'required' }, { prefix: '/open', upstream: upstream.url, auth: 'optional' }]
  }, { redis: true })
  const redis = new Redis(await redisUrl())
  t.teardown(() => redis.disconnect())
  const login = await postJson(gw.base, '/auth/login', { username: 'alice', password: GATEWAY_USERS.alice }) // 1
  t.equal(login.status, 200)
  let refresh = login.body.refreshToken as string
  const sid = login.body.sessionId as string
  const expired = craftAccessToken({ sub: 'alice', sid, roles: ['user'] }, { expiresInSec: -30 })
  const viaHook = async (path: string): Promise<Awaited<ReturnType<typeof rawRequest>>> => {
    const res = await rawRequest(gw.port, { path, headers: { authorization: `Bearer ${expired}`, 'x-refresh-token': refresh } })
    if (typeof res.headers['x-refresh-token'] === 'string') refresh = res.headers['x-refresh-token']
    return res
  }
  t.equal((await viaHook('/api/a')).status, 200, 'refresh 2, by the hook on a required route: 200')
  t.equal((await viaHook('/open/a')).status, 200, 'refresh 3, by the hook on an optional route: 200')
  const route = await postJson(gw.base, '/auth/refresh', { refreshToken: refresh }) // 4: the same counter
  t.equal(route.status, 200, 'refresh 4, POST /auth/refresh: 200')
  refresh = route.body.refreshToken
  const h = (await readSession(redis, gw.prefix, 'alice', sid))?.h
  t.equal(h, hashOf(refresh), 'Redis holds the current token')

  // Past the limit: a required route answers as POST /auth/refresh would, 429 with Retry-After, and nothing rotates.
  const limited = await viaHook('/api/b')
  assertLimited(t, { status: limited.status, body: JSON.parse(limited.body), headers: limited.headers as Record<string, unknown> }, 'a hook refresh past the limit on a required route')
  t.equal(limited.headers['x-refresh-token'], undefined, 'no token issued')
  // An optional route proceeds anonymously (the upstream gets no identity), and nothing rotates either.
  const anon = await viaHook('/open/b')
  t.equal(anon.status, 200, 'an optional route proceeds')
  t.equal(JSON.parse(anon.body).headers['x-user-id'], undefined, 'anonymously')
  t.equal(anon.headers['x-refresh-token'], undefined, 'no token issued')
  t.equal((await readSession(redis, gw.prefix, 'alice', sid))?.h, h, 'the session did not rotate past the limit')
  assertLimited(t, await postJson(gw.base, '/auth/refresh', { refreshToken: refresh }), 'and POST /auth/refresh shares the count')
  // Control: a valid access token needs no refresh and is not limited.
  const fresh = await rawRequest(gw.port, { path: '/api/c', headers: { authorization: `Bearer ${login.body.accessToken as string}` } })
  t.equal(fresh.status, 200, 'control: an authenticated request that needs no refresh passes')
})
