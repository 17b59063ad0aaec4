// The gateway when its Redis stalls (CLIENT PAUSE: everything held, nothing reset). Authenticated requests are
// answered from memory; a login, which needs the session store, answers 503 after one store timeout (1 s by
// default), not after the failed-login counters' command timeout first and the store's after it. The stall
// here lasts 2 s: a login that waited for both timeouts (2 s and more) would be answered only once it ended.
// A failed login answers 401 during the stall too. The test stalls a redis-server of its own.
import t from 'tap'
import type { Redis } from 'ioredis'
import { sleep } from '../helpers/app.js'
import { GATEWAY_USERS, startGateway } from '../helpers/gateway.js'
import { startOwnRedis } from '../helpers/redis.js'

const login = async (base: string, password: string): Promise<Response> =>
  await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password }) })

t.test('a 2 s stall: a login answers 503 (and a wrong password 401) before it ends; authenticated requests 200', async t => {
  const own = await startOwnRedis()
  t.teardown(async () => { await own.stop() })
  const { app, base } = await startGateway(t, { redis: { url: own.url }, forwardAuth: {}, routes: [{ prefix: '/api', auth: 'required' }] })
  const deadline = Date.now() + 5000
  while (!app.tokengate.feedUp && Date.now() < deadline) await sleep(10)
  t.ok(app.tokengate.feedUp, 'the feed is up')
  // Control: before the stall a login works, and a wrong password is counted in Redis.
  const before = await login(base, GATEWAY_USERS.alice)
  t.equal(before.status, 200, 'a login before the stall: 200')
  const { accessToken } = await before.json() as { accessToken: string }
  t.equal((await login(base, 'wrong')).status, 401, 'a wrong password before the stall: 401')
  const admin: Redis = own.client()
  t.ok((await admin.keys('*:rl:fail:*')).length > 0, 'the failure was counted in Redis')

  const probe = own.client()
  await admin.call('CLIENT', 'PAUSE', '2000', 'ALL')
  const state = { over: false }
  const ended = probe.ping().then(() => { state.over = true })
  const during = login(base, GATEWAY_USERS.alice).then(async res => ({ status: res.status, body: await res.json() as { code?: string }, during: !state.over }))
  const wrong = login(base, 'wrong').then(res => ({ status: res.status, during: !state.over }))
  const verify = await fetch(`${base}/auth/verify`, { headers: { authorization: `Bearer ${accessToken}`, 'x-original-method': 'GET', 'x-original-uri': '/api/x' } })
  t.equal(verify.status, 200, 'an authenticated request during the stall: 200')

  const l = await during
  t.equal(l.status, 503, 'the login: 503')
  t.equal(l.body.code, 'TOKENGATE_STORE_UNAVAILABLE')
  t.ok(l.during, 'answered before the 2 s stall ended')
  const w = await wrong
  t.equal(w.status, 401, 'the wrong password: 401')
  t.ok(w.during, 'answered before the stall ended')
  await ended

  // Control: after the stall, logins work again.
  t.equal((await login(base, GATEWAY_USERS.alice)).status, 200, 'a login after the stall: 200')
})
