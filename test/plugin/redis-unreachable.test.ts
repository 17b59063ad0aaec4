// An unreachable Redis is named in the log (host:port, or the nodes of a Cluster or a Sentinel group; never a
// password), at start and when a login then fails, in tokengate's words rather than ioredis's; the login is
// answered 503 TOKENGATE_STORE_UNAVAILABLE.
import Fastify, { type FastifyInstance } from 'fastify'
import { Cluster, Redis } from 'ioredis'
import t, { type Test } from 'tap'
import tokengate, { type TokengateOptions } from '../../plugin/index.js'
import { SECRET, verifyCredentials } from '../helpers/app.js'
import { captureLogs, type LogCapture } from '../helpers/logs.js'
import { deletePrefix, freePort, redisUrl, uniquePrefix } from '../helpers/redis.js'

const PASSWORD = 'pw-' + 'q'.repeat(20)

async function appOn (t: Test, redis: TokengateOptions['redis'], keyPrefix = uniquePrefix('unreach')): Promise<{ app: FastifyInstance, logs: LogCapture }> {
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'warn', stream: logs.stream } })
  t.teardown(async () => { await app.close() })
  await app.register(tokengate, { secret: SECRET, redis, keyPrefix, storeTimeoutMs: 200, routes: { verifyCredentials } })
  await app.ready()
  return { app, logs }
}

const msgs = (logs: LogCapture): string => logs.lines().map(l => l.msg).join('\n')

/** tokengate's own error lines (Fastify logs the 503 answer too, in its own line). */
const ours = (logs: LogCapture): Array<Record<string, any>> => logs.lines().filter(l => l.level >= 50 && /^tokengate:/.test(l.msg))

function clean (t: Test, logs: LogCapture): void {
  t.notOk(logs.text().includes(PASSWORD), 'the password is never logged')
  t.notMatch(logs.text(), /Stream isn't writeable|enableOfflineQueue/, "not ioredis's words")
}

t.test('a redis:// URL: its host:port at start and at each failed login; 503', async t => {
  const port = await freePort()
  const { app, logs } = await appOn(t, `redis://:${PASSWORD}@127.0.0.1:${port}`)
  const start = logs.lines().find(l => /not reachable/.test(l.msg))
  t.match(start, { level: 40, msg: new RegExp(`Redis at 127\\.0\\.0\\.1:${port} is not reachable yet`) }, `at start (${start?.msg})`)

  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  t.equal(res.statusCode, 503, 'the login: 503')
  t.equal(res.json().code, 'TOKENGATE_STORE_UNAVAILABLE')
  t.notMatch(res.body, /127\.0\.0\.1|Redis/, 'the client is told nothing of the store')
  const failed = ours(logs)
  t.ok(failed.length > 0, 'the failure is logged')
  t.match(failed.at(-1)?.msg, new RegExp(`Redis at 127\\.0\\.0\\.1:${port} is not reachable`), `in our words (${failed.at(-1)?.msg})`)
  t.match(failed.at(-1)?.msg, /login|issue/, 'saying what failed')
  clean(t, logs)
})

t.test('a Redis instance of the app\'s: its host:port', async t => {
  const port = await freePort()
  const redis = new Redis({ host: '127.0.0.1', port, password: PASSWORD, lazyConnect: true, enableOfflineQueue: false, retryStrategy: () => 100 })
  redis.on('error', () => {})
  redis.connect().catch(() => {})
  t.teardown(() => { redis.disconnect() })
  const { app, logs } = await appOn(t, redis)
  t.match(logs.text(), new RegExp(`Redis at 127\\.0\\.0\\.1:${port} is not reachable yet`))
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  t.equal(res.statusCode, 503)
  t.match(ours(logs).at(-1)?.msg, new RegExp(`Redis at 127\\.0\\.0\\.1:${port} is not reachable`))
  clean(t, logs)
})

t.test('a Cluster and a Sentinel group: their nodes', async t => {
  const [a, b, s1, s2] = [await freePort(), await freePort(), await freePort(), await freePort()]
  const cluster = new Cluster([{ host: '127.0.0.1', port: a }, `redis://:${PASSWORD}@127.0.0.1:${b}`], { lazyConnect: true, enableOfflineQueue: false, clusterRetryStrategy: () => 100 })
  cluster.on('error', () => {})
  cluster.connect().catch(() => {})
  t.teardown(() => { cluster.disconnect() })
  const c = await appOn(t, cluster)
  t.match(msgs(c.logs), new RegExp(`Redis Cluster at 127\\.0\\.0\\.1:${a}, 127\\.0\\.0\\.1:${b} is not reachable yet`), 'the Cluster\'s nodes')
  clean(t, c.logs)

  const sentinel = new Redis({ sentinels: [{ host: '127.0.0.1', port: s1 }, { host: '127.0.0.1', port: s2 }], name: 'mymaster', password: PASSWORD, sentinelPassword: PASSWORD, lazyConnect: true, enableOfflineQueue: false, sentinelRetryStrategy: () => 100 })
  sentinel.on('error', () => {})
  sentinel.connect().catch(() => {})
  t.teardown(() => { sentinel.disconnect() })
  const s = await appOn(t, sentinel)
  t.match(msgs(s.logs), new RegExp(`Redis master "mymaster" of the sentinels at 127\\.0\\.0\\.1:${s1}, 127\\.0\\.0\\.1:${s2} is not reachable yet`), 'the sentinels and the master\'s name')
  clean(t, s.logs)
})

t.test('control: a reachable Redis logs no such warning', async t => {
  const url = await redisUrl()
  const prefix = uniquePrefix('unreach')
  const redis = new Redis(url)
  t.teardown(async () => { await deletePrefix(redis, prefix); redis.disconnect() })
  const { app, logs } = await appOn(t, url, prefix)
  t.notMatch(logs.text(), /not reachable/)
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  t.equal(res.statusCode, 200)
})
