// Redis Cluster: a three-node cluster of the test's own on loopback. Every key of one user shares a
// slot (hash tag), so the session scripts run in one slot; tg:revoked lives in its own slot; pub/sub
// revocations reach an instance subscribed through another node.
import { spawn, spawnSync } from 'node:child_process'
import Fastify, { type FastifyInstance } from 'fastify'
import { Cluster } from 'ioredis'
import t, { type Test } from 'tap'
import tokengate from '../../plugin/index.js'
import { SECRET, sleep, verifyCredentials } from '../helpers/app.js'
import { freePort, readSessions, sessionsKey, uniquePrefix } from '../helpers/redis.js'
import { removeTempDir, tempDir, track } from '../helpers/spawn.js'

const hasTools = spawnSync('redis-cli', ['--version'], { stdio: 'ignore' }).status === 0 &&
  spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0

async function startCluster (t: Test): Promise<{ nodes: Array<{ host: string, port: number }> }> {
  const dir = tempDir('cluster')
  const ports = [await freePort(), await freePort(), await freePort()]
  const procs = ports.map(port => track(spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
    '--cluster-config-file', `nodes-${port}.conf`, '--save', '', '--appendonly', 'no', '--dir', dir
  ], { stdio: 'ignore' })))
  t.teardown(() => { for (const p of procs) p.kill('SIGKILL'); removeTempDir(dir) })
  for (const port of ports) {
    for (let i = 0; spawnSync('redis-cli', ['-p', String(port), 'ping']).stdout?.toString().trim() !== 'PONG'; i++) {
      if (i > 100) throw new Error(`cluster node ${port} did not start`)
      await sleep(50)
    }
  }
  const made = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map(p => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'])
  if (made.status !== 0) throw new Error(`redis-cli --cluster create failed: ${made.stderr?.toString()}`)
  for (let i = 0; !/cluster_state:ok/.test(spawnSync('redis-cli', ['-p', String(ports[0]), 'cluster', 'info']).stdout?.toString() ?? ''); i++) {
    if (i > 200) throw new Error('cluster did not become ok')
    await sleep(50)
  }
  return { nodes: ports.map(port => ({ host: '127.0.0.1', port })) }
}

t.test('the plugin on a Redis Cluster: sessions, rotation, logout seen by another instance, logout-all', { skip: hasTools ? false : 'redis-server/redis-cli not on PATH' }, async t => {
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
