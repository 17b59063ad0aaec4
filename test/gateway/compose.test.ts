// docker-compose.yml cannot run here (no Docker engine): it is checked by reading, and the very config
// and commands it runs are run without Docker: the bin on docker/gateway.config.json, the two example
// upstreams as `demo.js --upstream-only`, a Redis of the test's own in place of the redis service.
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import t from 'tap'
import { SECRET } from '../helpers/app.js'
import { freePort, readSession, startOwnRedis } from '../helpers/redis.js'
import { ROOT, childEnv, killChildren, spawnDist } from '../helpers/spawn.js'

const compose = await readFile(path.join(ROOT, 'docker-compose.yml'), 'utf8')
const configText = await readFile(path.join(ROOT, 'docker', 'gateway.config.json'), 'utf8')

/** The lines of one top-level service block of the compose file. */
function service (name: string): string {
  const m = new RegExp(`^  ${name}:\\n((?:    .*\\n|\\s*\\n)*)`, 'm').exec(compose)
  if (m === null) throw new Error(`no service ${name} in docker-compose.yml`)
  return m[1]
}

t.test('docker-compose.yml, read: every variable the config needs is set, and the upstream URLs match the services', async t => {
  const gateway = service('gateway')
  const required = [...configText.matchAll(/\$\{([A-Z_]+)\}/g)].map(m => m[1])
  t.same([...new Set(required)].sort(), ['CMS_URL', 'ORDERS_URL', 'REDIS_URL', 'TOKENGATE_SECRET', 'USERS_FILE'], 'the config needs these variables')
  for (const name of required) t.match(gateway, new RegExp(`^      ${name}: `, 'm'), `gateway.environment sets ${name}`)
  t.match(gateway, /REDIS_URL: redis:\/\/redis:6379/, 'Redis is the redis service')
  t.match(gateway, /ORDERS_URL: http:\/\/orders:3002/)
  t.match(gateway, /CMS_URL: http:\/\/cms:3003/)
  const usersFile = /USERS_FILE: (\S+)/.exec(gateway)?.[1]
  t.match(gateway, new RegExp(`- \\./examples/users\\.json:${usersFile ?? 'none'}:ro`), 'the users file is mounted (read-only) where USERS_FILE points')
  t.match(service('orders'), /"--port", "3002"/, 'orders listens where ORDERS_URL points')
  t.match(service('cms'), /"--port", "3003"/, 'cms listens where CMS_URL points')
  t.match(service('redis'), /--appendonly", "yes"/, 'Redis keeps an append-only file')
  t.match(service('redis'), /healthcheck:/, 'Redis has a healthcheck')
  t.match(gateway, /condition: service_healthy/, 'the gateway waits for a healthy Redis')
  t.match(gateway, /"8080:8080"/, 'the gateway is published on 8080')
  t.equal((compose.match(/^ {4}build: /gm) ?? []).length, 1, 'one service builds the image')
  const image = /^ {4}image: (\S+)/m.exec(gateway)?.[1]
  t.equal(image, 'tokengate:local', 'and names it')
  for (const name of ['orders', 'cms']) t.match(service(name), /^ {4}image: tokengate:local$/m, `${name} runs the same image`)

  const dockerfile = await readFile(path.join(ROOT, 'Dockerfile'), 'utf8')
  t.match(dockerfile, /CMD \["--config", "docker\/gateway.config.json"\]/, 'the image runs this config')
  t.notMatch(dockerfile, /examples|users\.json|gateway\.config\.json /, 'the image ships no users file (no demo user in production)')
  t.match(dockerfile, /^FROM node:24/m, 'built on Node 24')
})

t.test('the compose config and commands, run without Docker', async t => {
  const redis = await startOwnRedis()
  t.teardown(async () => { killChildren(); await redis.stop() })
  const ports = { gateway: await freePort(), orders: await freePort(), cms: await freePort() }
  const upstream = async (name: string, port: number): Promise<void> => {
    await spawnDist('gateway/demo.js', ['--upstream-only', '--name', name, '--host', '127.0.0.1', '--port', String(port)], childEnv({}), /listening on/)
  }
  await Promise.all([upstream('orders', ports.orders), upstream('cms', ports.cms)])
  await spawnDist('gateway/server.js', ['--config', 'docker/gateway.config.json'], childEnv({
    TOKENGATE_SECRET: SECRET,
    REDIS_URL: redis.url,
    ORDERS_URL: `http://127.0.0.1:${ports.orders}`,
    CMS_URL: `http://127.0.0.1:${ports.cms}`,
    USERS_FILE: path.join(ROOT, 'examples', 'users.json'),
    LISTEN_HOST: '127.0.0.1',
    PORT: String(ports.gateway)
  }), /Server listening/)
  const base = `http://127.0.0.1:${ports.gateway}`

  t.equal((await fetch(`${base}/readyz`)).status, 200, 'ready, with Redis')
  const login = await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'demo', password: 'demo-password' }) })
  t.equal(login.status, 200, 'the demo user from examples/users.json logs in')
  const { accessToken, sessionId } = await login.json() as { accessToken: string, sessionId: string }
  t.ok(await readSession(redis.client(), 'tg', 'demo', sessionId), 'the session is in Redis under the default prefix')

  const orders = await fetch(`${base}/api/orders/7`, { headers: { authorization: `Bearer ${accessToken}` } })
  t.equal(orders.status, 200)
  t.match(await orders.json(), { service: 'orders', path: '/api/orders/7', user: 'demo', roles: 'user', sawAuthorization: false })
  t.equal((await fetch(`${base}/api/orders/7`)).status, 401, 'orders requires a token')
  const cms = await fetch(`${base}/public/page`)
  t.equal(cms.status, 200)
  t.match(await cms.json(), { service: 'cms', path: '/public/page', user: null })
})
