// Redis going away and coming back: tokengate answers 503 TOKENGATE_STORE_UNAVAILABLE quickly (never
// hangs), fails closed on authenticated requests while its revocation feed is down, and recovers by itself.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance, type InjectOptions, type LightMyRequestResponse } from 'fastify'
import tokengate, { type TokengateOptions } from '../../plugin/index.js'
import { SECRET, sleep, verifyCredentials } from '../helpers/app.js'
import { readSession, sessionsKey, startOwnRedis, type OwnRedis, uniquePrefix } from '../helpers/redis.js'

const HANG_MS = 3000 // "did not hang" bound for one request while Redis is down

/** Rejects when `p` takes longer than `ms`, so a hang fails the test instead of timing it out. */
async function within<T> (ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what} hung for ${ms} ms`)), ms) })
  try {
    return await Promise.race([p, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Runs a request, returning the response and how long it took. */
async function timed (app: FastifyInstance, opts: InjectOptions, what: string): Promise<{ res: LightMyRequestResponse, ms: number }> {
  const start = Date.now()
  const res = await within(10_000, what, app.inject(opts))
  return { res, ms: Date.now() - start }
}

async function until (what: string, limitMs: number, check: () => Promise<boolean> | boolean): Promise<number> {
  const start = Date.now()
  while (!await check()) {
    if (Date.now() - start > limitMs) throw new Error(`${what}: not within ${limitMs} ms`)
    await sleep(25)
  }
  return Date.now() - start
}

async function ownRedis (t: Test): Promise<OwnRedis> {
  const own = await startOwnRedis()
  t.teardown(async () => { await own.stop() })
  return own
}

/** Fastify + tokengate on the test's own Redis, with the same probe routes as buildApp. */
async function build (t: Test, url: string, prefix: string): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  t.teardown(async () => { await app.close() })
  await app.register(tokengate, { secret: SECRET, redis: url, keyPrefix: prefix, routes: { verifyCredentials } } as TokengateOptions)
  app.get('/me', { onRequest: app.authenticate }, async (request) => ({ userId: request.auth!.userId, sessionId: request.auth!.sessionId }))
  await app.ready()
  return app
}

const alice = { username: 'alice', password: 'wonderland' }
const bearer = (token: string): { authorization: string } => ({ authorization: `Bearer ${token}` })

function assertUnavailable (t: Test, what: string, r: { res: LightMyRequestResponse, ms: number }): void {
  t.equal(r.res.statusCode, 503, `${what}: 503 (${r.res.body})`)
  t.equal(r.res.json().code, 'TOKENGATE_STORE_UNAVAILABLE', `${what}: TOKENGATE_STORE_UNAVAILABLE`)
  t.ok(r.ms < HANG_MS, `${what} answered in ${r.ms} ms (< ${HANG_MS})`)
  t.notMatch(r.res.body, /stack|Redis|ECONNREFUSED|at .*\.ts/, `${what}: no internals in the body`)
}

/** A full login → /me → refresh → /me → logout → revoked cycle, checked in Redis too. */
async function fullCycle (t: Test, app: FastifyInstance, own: OwnRedis, prefix: string): Promise<void> {
  const redis = own.client()
  const l = await app.inject({ method: 'POST', url: '/auth/login', payload: alice })
  t.equal(l.statusCode, 200, l.statusCode === 200 ? 'login' : l.body)
  const pair = l.json()
  const key = sessionsKey(prefix, 'u-alice')
  t.ok(await readSession(redis, prefix, 'u-alice', pair.sessionId), 'session written to the restarted Redis')
  t.ok(await redis.pttl(key) > 0, 'the user\'s key expires natively')
  t.equal((await app.inject({ url: '/me', headers: bearer(pair.accessToken) })).statusCode, 200)

  await sleep(2)
  const r = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(r.statusCode, 200, r.body)
  const next = r.json()
  t.not(next.refreshToken, pair.refreshToken, 'rotated')
  t.equal((await app.inject({ url: '/me', headers: bearer(next.accessToken) })).statusCode, 200)

  const out = await app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(next.accessToken) })
  t.equal(out.statusCode, 204, out.body)
  const after = await app.inject({ url: '/me', headers: bearer(next.accessToken) })
  t.equal(after.statusCode, 401)
  t.equal(after.json().code, 'TOKENGATE_TOKEN_REVOKED')
  const again = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: next.refreshToken } })
  t.equal(again.statusCode, 401)
  t.equal(again.json().code, 'TOKENGATE_REFRESH_INVALID')
  // (The recovery loop logged alice in too: her key stays, with those sessions.)
  t.equal(await readSession(redis, prefix, 'u-alice', pair.sessionId), undefined, 'session deleted')
  t.not(await redis.zscore(`${prefix}:revoked`, pair.sessionId), null, 'recorded in <prefix>:revoked')
}

t.test('Redis killed: 503 quickly, fail closed, then recovery when it restarts (empty)', async t => {
  const own = await ownRedis(t)
  const prefix = uniquePrefix('outage')
  const app = await build(t, own.url, prefix)
  await until('feed up', 3000, () => app.tokengate.feedUp)

  const l = await app.inject({ method: 'POST', url: '/auth/login', payload: alice })
  t.equal(l.statusCode, 200, l.statusCode === 200 ? 'login' : l.body)
  const pair = l.json()
  t.ok(await readSession(own.client(), prefix, 'u-alice', pair.sessionId), 'session stored')
  t.equal((await app.inject({ url: '/me', headers: bearer(pair.accessToken) })).statusCode, 200)

  await own.kill()

  assertUnavailable(t, 'POST /auth/login', await timed(app, { method: 'POST', url: '/auth/login', payload: alice }, 'login'))
  assertUnavailable(t, 'POST /auth/refresh', await timed(app, { method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } }, 'refresh'))
  assertUnavailable(t, 'POST /auth/logout', await timed(app, { method: 'POST', url: '/auth/logout', headers: bearer(pair.accessToken) }, 'logout'))

  const down = await until('feed down', 5000, () => !app.tokengate.feedUp)
  t.comment(`feed reported down ${down} ms after the logout attempt`)
  t.equal(app.tokengate.feedUp, false)
  const me = await timed(app, { url: '/me', headers: bearer(pair.accessToken) }, 'GET /me')
  assertUnavailable(t, 'GET /me with a valid access token (feed and Redis down)', me)
  t.equal(me.res.headers['www-authenticate'], undefined, 'a 503 is not a 401 challenge')

  await own.start()
  const back = await until('login works again and the feed is back', 10_000, async () => {
    const res = await app.inject({ method: 'POST', url: '/auth/login', payload: alice })
    return res.statusCode === 200 && app.tokengate.feedUp
  })
  t.comment(`recovered ${back} ms after redis-server restarted`)
  t.equal(app.tokengate.feedUp, true, 'feed back up')
  await fullCycle(t, app, own, prefix)
})

t.test('Redis down from the start: registration does not hang, 503, then recovery', async t => {
  const own = await ownRedis(t)
  await own.kill()
  const prefix = uniquePrefix('coldstart')

  const start = Date.now()
  const app = await within(10_000, 'registration', build(t, own.url, prefix))
  const took = Date.now() - start
  t.ok(took < 5000, `registered and ready in ${took} ms with Redis down (< 5000)`)
  t.equal(app.tokengate.feedUp, false, 'feed down')

  assertUnavailable(t, 'POST /auth/login', await timed(app, { method: 'POST', url: '/auth/login', payload: alice }, 'login'))
  const noToken = await app.inject({ url: '/me' })
  t.equal(noToken.statusCode, 401, 'no token is still a plain 401')
  t.equal(noToken.json().code, 'TOKENGATE_TOKEN_MISSING')

  await own.start()
  const back = await until('login works and the feed is up', 10_000, async () => {
    const res = await app.inject({ method: 'POST', url: '/auth/login', payload: alice })
    return res.statusCode === 200 && app.tokengate.feedUp
  })
  t.comment(`recovered ${back} ms after redis-server started`)
  await fullCycle(t, app, own, prefix)
})
