// Redis Cluster: a three-node cluster of the test's own on loopback. Every key of one user shares a
// slot (hash tag), so the session scripts run in one slot; tg:revoked lives in its own slot; pub/sub
// revocations reach an instance subscribed through another node.
import Fastify, { type FastifyInstance } from 'fastify'
import { Cluster } from 'ioredis'
import t from 'tap'
import tokengate from '../../plugin/index.js'
import { SECRET, sleep, verifyCredentials } from '../helpers/app.js'
import { readSessions, sessionsKey, uniquePrefix } from '../helpers/redis.js'
import { hasRedisTools, startCluster } from '../helpers/topologies.js'

t.test('the plugin on a Redis Cluster: sessions, rotation, logout seen by another instance, logout-all', { skip: hasRedisTools ? false : 'redis-server/redis-cli not on PATH' }, async t => {
  const { nodes } = await startCluster(t)
  const prefix = uniquePrefix('cluster')
  const clusters: Cluster[] = []
  const apps: FastifyInstance[] = []
  t.teardown(async () => {
    for (const app of apps) await app.close()
    for (const c of clusters) c.disconnect()
  })
  const instance = async (): Promise<FastifyInstance> => {
    const cluster = new Cluster(nodes, { redisOptions: { commandTimeout: 1000 } })
    clusters.push(cluster)
    const app = Fastify({ logger: false })
    apps.push(app)
    await app.register(tokengate, { secret: SECRET, redis: cluster, keyPrefix: prefix, routes: { verifyCredentials } })
    app.get('/me', { onRequest: app.authenticate }, async (request) => ({ userId: request.auth!.userId }))
    await app.ready()
    for (let i = 0; !app.tokengate.feedUp; i++) { if (i > 200) throw new Error('feed not up'); await sleep(10) }
    return app
  }
  const a = await instance()
  const b = await instance()
  const admin = clusters[0]

  const loginRes = await a.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  t.equal(loginRes.statusCode, 200, loginRes.body)
  const pair = loginRes.json()
  t.same(Object.keys(await readSessions(admin, prefix, 'u-alice') ?? {}), [pair.sessionId], 'the session is stored in the user\'s key')
  t.ok(await admin.pttl(sessionsKey(prefix, 'u-alice')) > 0, 'which expires natively')

  const refreshed = await b.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(refreshed.statusCode, 200, 'rotation (a Lua script in the user\'s slot) works through another instance')
  const next = refreshed.json()
  const second = await a.tokengate.issue({ sub: 'u-alice', roles: ['user'] })
  t.equal((await b.tokengate.listSessions('u-alice')).length, 2, 'two sessions listed')
  t.same(Object.keys(await readSessions(admin, prefix, 'u-alice') ?? {}).sort(), [pair.sessionId, second.sessionId].sort(), 'both in the one key of the user')

  t.equal((await b.inject({ url: '/me', headers: { authorization: `Bearer ${next.accessToken}` } })).statusCode, 200)
  const out = await a.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${next.accessToken}` } })
  t.equal(out.statusCode, 204)
  let code: string | undefined
  for (let i = 0; i < 200; i++) {
    const res = await b.inject({ url: '/me', headers: { authorization: `Bearer ${next.accessToken}` } })
    if (res.statusCode === 401) { code = res.json().code; break }
    await sleep(10)
  }
  t.equal(code, 'TOKENGATE_TOKEN_REVOKED', 'the other instance refuses the logged-out token (pub/sub across nodes)')
  t.not(await admin.zscore(`${prefix}:revoked`, pair.sessionId), null, 'the revocation is recorded in tg:revoked')

  t.equal(await b.tokengate.revokeAll('u-alice'), 1, 'logout-all revokes the remaining session')
  t.equal(await admin.exists(sessionsKey(prefix, 'u-alice')), 0, 'and the user\'s key is gone')
})
