// A Redis stall (CLIENT PAUSE, DEBUG SLEEP: everything held, nothing reset) looks, from one instance, just
// like a silent partition. The rule: an instance serves authenticated requests from memory while its
// revocation feed proved itself alive within revocationStalenessMs (3.5 s by default), so a 3 s stall costs
// them nothing, while login and refresh, which need Redis, answer 503 within storeTimeoutMs. (Past the bound
// it fails closed: test/plugin/feed-liveness.test.ts.) Each test stalls a redis-server of its own.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import tokengate, { type TokengateOptions } from '../../plugin/index.js'
import { SECRET, sleep, verifyCredentials } from '../helpers/app.js'
import { startOwnRedis, uniquePrefix } from '../helpers/redis.js'

const STALLS: Array<[string, (admin: Redis) => Promise<unknown>]> = [
  ['CLIENT PAUSE 3000 ALL', async (admin) => await admin.call('CLIENT', 'PAUSE', '3000', 'ALL')],
  ['DEBUG SLEEP 3', async (admin) => await admin.call('DEBUG', 'SLEEP', '3')]
]

async function build (t: Test, url: string): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  t.teardown(async () => { await app.close() })
  await app.register(tokengate, { secret: SECRET, redis: url, keyPrefix: uniquePrefix('stall'), routes: { verifyCredentials } } as TokengateOptions)
  app.get('/me', { onRequest: app.authenticate }, async (request) => ({ userId: request.auth!.userId }))
  await app.ready()
  return app
}

for (const [name, stall] of STALLS) {
  t.test(`${name}: authenticated requests are answered from memory throughout; login and refresh answer 503 before it ends`, async t => {
    const own = await startOwnRedis(['--enable-debug-command', 'yes'])
    t.teardown(async () => { await own.stop() })
    const app = await build(t, own.url)
    const deadline = Date.now() + 5000
    while (!app.tokengate.feedUp && Date.now() < deadline) await sleep(10)
    t.ok(app.tokengate.feedUp, 'the feed is up')
    const pair = (await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })).json()
    const other = (await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })).json()
    // A token the instance has never seen verified before the stall, too.
    const unseen = pair.accessToken

    const admin = own.client()
    const probe = own.client()
    const stalled = stall(admin).catch(() => {})
    await sleep(50) // the stall has begun (a DEBUG SLEEP answers only at its end)
    const state = { over: false }
    // Redis answers nothing until the stall is over: a PING from another client tells when it is.
    const ended = probe.ping().then(() => { state.over = true })

    const login = app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
      .then(res => ({ res, during: !state.over }))
    const refresh = app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: other.refreshToken } })
      .then(res => ({ res, during: !state.over }))

    const statuses = new Map<number, number>()
    let feedDown = 0
    let n = 0
    while (!state.over) {
      const res = await app.inject({ url: '/me', headers: { authorization: `Bearer ${n === 0 ? unseen : pair.accessToken}` } })
      if (!state.over) {
        statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
        if (!app.tokengate.feedUp) feedDown++
        n++
      }
      await sleep(10)
    }
    await ended
    await stalled
    t.comment(`${n} authenticated requests during the stall: ${JSON.stringify(Object.fromEntries(statuses))}`)
    t.same([...statuses.keys()], [200], 'every authenticated request during the stall: 200')
    t.ok(n >= 20, `answered without waiting for Redis (${n} requests during the stall, one every 10 ms)`)
    t.equal(feedDown, 0, 'the feed counted as up throughout')

    const l = await login
    t.equal(l.res.statusCode, 503, `login: 503 (${l.res.body})`)
    t.equal(l.res.json().code, 'TOKENGATE_STORE_UNAVAILABLE')
    t.ok(l.during, 'answered before the stall ended')
    const r = await refresh
    t.equal(r.res.statusCode, 503, `refresh: 503 (${r.res.body})`)
    t.ok(r.during, 'answered before the stall ended')

    // Control: after the stall everything works again, Redis included.
    const after = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: other.refreshToken } })
    t.equal(after.statusCode, 200, `a refresh after the stall works${after.statusCode === 200 ? '' : ` (${after.body})`}`)
    t.equal(app.tokengate.feedUp, true, 'the feed is up')
  })
}
