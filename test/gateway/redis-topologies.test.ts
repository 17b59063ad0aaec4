// The gateway on each Redis it can run on, configured without a line of code: a single server ({ url },
// with a password), a Redis Cluster ({ cluster }) and a Sentinel-managed master ({ sentinels, name }).
// On each: login, proxied requests, refresh, a logout seen by another instance through the revocation
// feed, and the rate limits, all against real servers of the test's own.
import { spawn } from 'node:child_process'
import type { AddressInfo } from 'node:net'
import { Cluster, Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { buildGateway } from '../../gateway/index.js'
import { parseConfig } from '../../gateway/config.js'
import { GATEWAY_USERS, usersFile } from '../helpers/gateway.js'
import { SECRET, sleep } from '../helpers/app.js'
import { freePort, uniquePrefix } from '../helpers/redis.js'
import { track } from '../helpers/spawn.js'
import { hasRedisTools, startCluster, startSentinelGroup } from '../helpers/topologies.js'
import { startEchoUpstream } from '../helpers/upstream.js'

const skip = hasRedisTools ? false : 'redis-server / redis-cli are not on PATH'

interface Gw { base: string, feedUp: () => boolean }

async function gateways (t: Test, redis: Record<string, unknown>): Promise<{ a: Gw, b: Gw, prefix: string }> {
  const up = await startEchoUpstream()
  t.teardown(up.close)
  const prefix = uniquePrefix('topo')
  const config = {
    redis,
    tokens: { secret: SECRET, keyPrefix: prefix },
    login: { usersFile: await usersFile(t) },
    routes: [{ prefix: '/api', upstream: up.url }],
    rateLimit: { failedLogins: { max: 3, window: '1m' } },
    logLevel: 'silent'
  }
  const start = async (): Promise<Gw> => {
    const app = buildGateway(config, { logger: false })
    t.teardown(async () => { await app.close() })
    await app.listen({ port: 0, host: '127.0.0.1' })
    return { base: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, feedUp: () => app.tokengate.feedUp }
  }
  return { a: await start(), b: await start(), prefix }
}

async function post (base: string, url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number, body: any, headers: Headers }> {
  const res = await fetch(`${base}${url}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), signal: AbortSignal.timeout(10_000) })
  const text = await res.text()
  return { status: res.status, body: text === '' ? {} : JSON.parse(text), headers: res.headers }
}

async function until (limitMs: number, check: () => Promise<boolean> | boolean): Promise<boolean> {
  const deadline = Date.now() + limitMs
  while (!await check()) {
    if (Date.now() > deadline) return false
    await sleep(25)
  }
  return true
}

/** Everything a user and an operator rely on, on whatever Redis `inspect` reaches. */
async function exercise (t: Test, redis: Record<string, unknown>, inspect: Redis | Cluster): Promise<void> {
  const { a, b, prefix } = await gateways(t, redis)
  t.ok(await until(10_000, () => a.feedUp() && b.feedUp()), 'both revocation feeds up')
  t.equal((await fetch(`${a.base}/readyz`)).status, 200, '/readyz')

  const login = await post(a.base, '/auth/login', { username: 'alice', password: GATEWAY_USERS.alice })
  t.equal(login.status, 200, `login on A (${login.status})`)
  const bearer = { authorization: `Bearer ${String(login.body.accessToken)}` }
  const proxied = await fetch(`${b.base}/api/orders`, { headers: bearer })
  t.equal(proxied.status, 200, 'a proxied request on B')
  t.equal(((await proxied.json()) as { headers: Record<string, string> }).headers['x-user-id'], 'alice', 'with the identity')
  t.ok(await inspect.exists(`${prefix}:{alice}:s`), 'the session is in Redis')

  const refreshed = await post(b.base, '/auth/refresh', { refreshToken: login.body.refreshToken })
  t.equal(refreshed.status, 200, 'refresh on B (the rotation script in the user\'s slot)')
  const hooked = await fetch(`${a.base}/api/orders`, { headers: { 'x-refresh-token': refreshed.body.refreshToken } })
  t.equal(hooked.status, 200, 'the refresh hook through the proxy on A')
  t.type(hooked.headers.get('x-access-token'), 'string')

  const out = await post(a.base, '/auth/logout', {}, { authorization: `Bearer ${String(refreshed.body.accessToken)}` })
  t.equal(out.status, 204, 'logout on A')
  t.ok(await until(3000, async () => (await fetch(`${b.base}/api/orders`, { headers: { authorization: `Bearer ${String(refreshed.body.accessToken)}` }, signal: AbortSignal.timeout(10_000) })).status === 401),
    'B refuses the logged-out token (the revocation feed)')
  t.ok(b.feedUp(), 'through its feed')

  for (let i = 1; i <= 3; i++) t.equal((await post(a.base, '/auth/login', { username: 'bob', password: `wrong-${i}` })).status, 401, `bad password ${i}`)
  const limited = await post(b.base, '/auth/login', { username: 'bob', password: GATEWAY_USERS.bob })
  t.equal(limited.status, 429, 'failed logins are counted in Redis: B refuses the 4th')
  t.equal(limited.body.code, 'TOKENGATE_RATE_LIMITED')
  t.ok(await until(3000, async () => Number(await inspect.hget(`${prefix}:rl:ip:127.0.0.1`, 'n')) >= 5), 'the per-IP counter is shared in Redis')
}

t.test('single server with a password, in the URL or as a field', { skip }, async t => {
  const port = await freePort()
  const server = track(spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--requirepass', 'hunter2-redis'], { stdio: 'ignore' }))
  t.teardown(() => { server.kill('SIGKILL') })
  const inspect = new Redis({ port, password: 'hunter2-redis', maxRetriesPerRequest: 1, retryStrategy: (n: number) => Math.min(n * 50, 500) })
  inspect.on('error', () => {})
  t.teardown(() => inspect.disconnect())
  t.ok(await until(10_000, async () => await inspect.ping().then(() => true, () => false)), 'redis-server with requirepass is up')
  await t.test('password in the URL', async t => { await exercise(t, { url: `redis://:hunter2-redis@127.0.0.1:${port}` }, inspect) })
  await t.test('password as a field', async t => { await exercise(t, { url: `redis://127.0.0.1:${port}`, password: 'hunter2-redis' }, inspect) })
  await t.test('a wrong password: not ready, and the gateway answers 503, not a crash', async t => {
    const { a } = await gateways(t, { url: `redis://:wrong@127.0.0.1:${port}` })
    t.equal((await fetch(`${a.base}/readyz`)).status, 503)
    const login = await post(a.base, '/auth/login', { username: 'alice', password: GATEWAY_USERS.alice })
    t.equal(login.status, 503)
    t.equal(login.body.code, 'TOKENGATE_STORE_UNAVAILABLE')
  })
})

t.test('Redis Cluster: { cluster: [urls] }', { skip }, async t => {
  const cluster = await startCluster(t)
  const inspect = new Cluster(cluster.nodes)
  t.teardown(() => inspect.disconnect())
  await exercise(t, { cluster: cluster.urls }, inspect)
})

t.test('Sentinel: { sentinels: [host:port], name }', { skip }, async t => {
  const group = await startSentinelGroup(t)
  await exercise(t, { sentinels: group.sentinels, name: group.name }, group.master())
})

t.test('config: exactly one of url, cluster or sentinels, with what each needs', async t => {
  const base = { tokens: { secret: SECRET }, login: { usersFile: 'u.json' } }
  const bad: Array<[string, unknown, string]> = [
    ['url and cluster', { url: 'redis://a:1', cluster: ['redis://b:2'] }, 'redis'],
    ['none of them', { password: 'x' }, 'redis'],
    ['sentinels without name', { sentinels: ['127.0.0.1:26379'] }, 'redis.name'],
    ['a sentinel that is not host:port', { sentinels: ['localhost'], name: 'm' }, 'redis.sentinels[0]'],
    ['name without sentinels', { url: 'redis://a:1', name: 'm' }, 'redis.name'],
    ['a cluster node that is not a redis URL', { cluster: ['http://a:1'] }, 'redis.cluster[0]'],
    ['an empty cluster', { cluster: [] }, 'redis.cluster'],
    ['an unknown field', { url: 'redis://a:1', db: 2 }, 'redis.db']
  ]
  for (const [name, redis, field] of bad) t.throws(() => parseConfig({ ...base, redis }), { name: 'ConfigError', field }, `${name}: ${field}`)
  t.doesNotThrow(() => parseConfig({ ...base, redis: { sentinels: ['127.0.0.1:26379', '[::1]:26380'], name: 'mymaster', password: 'p', sentinelPassword: 's', tls: true } }))
  t.doesNotThrow(() => parseConfig({ ...base, redis: { cluster: ['rediss://:pw@10.0.0.1:7000', 'rediss://10.0.0.2:7000'] } }))
})
