// A user's own ioredis client as `redis`, of either major: an ioredis 5 or 6 `Redis` or `Cluster` instance
// is accepted by the types (this file compiles under `npm run typecheck`) and works at run time: sessions,
// rotation through another instance, a logout that the other instance hears on its revocation feed, an
// instance started afterwards that learns the revocation from Redis, and the user's client left open when
// the apps close. tokengate's own connections run on ioredis 6; a user's client is never checked with
// `instanceof` against our copy's classes.
import Fastify, { type FastifyInstance } from 'fastify'
import { Cluster as Cluster6, Redis as Redis6 } from 'ioredis'
import { Cluster as Cluster5, Redis as Redis5 } from 'ioredis5'
import t, { type Test } from 'tap'
import tokengate, { type TokengateOptions } from '../../plugin/index.js'
import { SECRET, sleep, verifyCredentials } from '../helpers/app.js'
import { deletePrefix, redisUrl, uniquePrefix } from '../helpers/redis.js'
import { hasRedisTools, startCluster, type OwnCluster } from '../helpers/topologies.js'

type UserClient = Exclude<TokengateOptions['redis'], string | undefined>

/** What a user sees through two instances sharing `make()`'s kind of client. */
async function exercise (t: Test, make: () => UserClient, where: { url: string } | { nodes: OwnCluster['nodes'] }): Promise<void> {
  const prefix = uniquePrefix('majors')
  const clients: UserClient[] = []
  const apps: FastifyInstance[] = []
  t.teardown(async () => {
    for (const app of apps) await app.close()
    for (const c of clients) c.disconnect()
  })
  const instance = async (): Promise<FastifyInstance> => {
    const client = make()
    clients.push(client)
    const app = Fastify({ logger: false })
    apps.push(app)
    await app.register(tokengate, { secret: SECRET, redis: client, keyPrefix: prefix, routes: { verifyCredentials } })
    app.get('/me', { onRequest: app.authenticate }, async (request) => ({ userId: request.auth!.userId }))
    await app.ready()
    // The feed subscribes in the background when the connection is slower than storeTimeoutMs (a Cluster's first).
    for (let i = 0; !app.tokengate.feedUp; i++) { if (i > 500) throw new Error('the revocation feed did not come up'); await sleep(10) }
    return app
  }
  const a = await instance()
  const b = await instance()
  if ('nodes' in where) {
    // On a Cluster a PING would reach another node than the subscriber's: the feed proves itself alive with
    // a channel of its own (docs/deployment.md), which only a client recognised as a Cluster subscribes to.
    const channels: string[] = []
    for (const node of where.nodes) {
      const direct = new Redis6(node.port, node.host)
      channels.push(...await direct.pubsub('CHANNELS', `${prefix}:revocations:alive:*`) as string[])
      direct.disconnect()
    }
    t.equal(channels.length, 2, 'each instance subscribes to a liveness channel of its own: the client is taken for a Cluster')
  }

  const login = await a.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  t.equal(login.statusCode, 200, 'login')
  const refreshed = await b.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: login.json().refreshToken } })
  t.equal(refreshed.statusCode, 200, 'rotation through the other instance')
  const { accessToken } = refreshed.json()
  const me = async (app: FastifyInstance): Promise<{ statusCode: number, code?: string }> => {
    const res = await app.inject({ url: '/me', headers: { authorization: `Bearer ${accessToken}` } })
    return { statusCode: res.statusCode, code: res.json().code }
  }
  t.same(await me(b), { statusCode: 200, code: undefined }, 'the access token works on the other instance (control)')

  const heard = new Promise<string>(resolve => { b.tokengate.onSessionRevoked(sessionId => resolve(sessionId)) })
  t.equal((await a.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${accessToken}` } })).statusCode, 204, 'logout')
  t.equal(await heard, login.json().sessionId, 'the other instance hears the revocation on its feed')
  t.same(await me(b), { statusCode: 401, code: 'TOKENGATE_TOKEN_REVOKED' }, 'and refuses the token')
  const later = await instance()
  t.same(await me(later), { statusCode: 401, code: 'TOKENGATE_TOKEN_REVOKED' }, 'an instance started afterwards learns the revocation from Redis')

  for (const app of apps.splice(0)) await app.close()
  t.same(clients.map(c => c.status), clients.map(() => 'ready'), "closing the apps leaves the user's clients open (they are the user's)")
  for (const c of clients.splice(0)) await c.quit()
  if ('url' in where) {
    const admin = new Redis6(where.url)
    await deletePrefix(admin, prefix)
    admin.disconnect()
  }
}

t.test('a Redis instance of the user', async t => {
  const url = await redisUrl()
  t.test('ioredis 6', async t => { await exercise(t, () => new Redis6(url), { url }) })
  t.test("ioredis 6 with replyMapping: 'resp3' (maps as objects, doubles as numbers)", async t => { await exercise(t, () => new Redis6(url, { replyMapping: 'resp3' }), { url }) })
  t.test('ioredis 6 on RESP2 (protocol: 2)', async t => { await exercise(t, () => new Redis6(url, { protocol: 2 }), { url }) })
  t.test('ioredis 5', async t => { await exercise(t, () => new Redis5(url), { url }) })
})

t.test('a Cluster instance of the user', { skip: hasRedisTools ? false : 'redis-server/redis-cli not on PATH' }, async t => {
  const { nodes } = await startCluster(t)
  t.test('ioredis 6', async t => { await exercise(t, () => new Cluster6(nodes), { nodes }) })
  t.test('ioredis 5', async t => { await exercise(t, () => new Cluster5(nodes), { nodes }) })
})

t.test('the types: either major is a `redis`, something else is not', async t => {
  const url = await redisUrl()
  const accepted: UserClient[] = [
    new Redis6(url, { lazyConnect: true }), new Redis5(url, { lazyConnect: true }),
    new Cluster6([{ host: '127.0.0.1', port: 1 }], { lazyConnect: true }), new Cluster5([{ host: '127.0.0.1', port: 1 }], { lazyConnect: true })
  ]
  for (const c of accepted) c.disconnect()
  // @ts-expect-error a plain object with a status is not an ioredis client
  const refused: UserClient = { status: 'ready' }
  t.equal(accepted.length, 4)
  const app = Fastify()
  t.teardown(async () => { await app.close() })
  app.register(tokengate, { secret: SECRET, redis: refused })
  await t.rejects(async () => await app.ready(), { message: /redis/ }, 'and is refused at run time too, naming the option')
})
