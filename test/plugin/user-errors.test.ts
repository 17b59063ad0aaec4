// A user callback's error stays the user's: when verifyCredentials, refreshClaims or a store passed in
// throws, the error is logged with its stack and answered as Fastify answers a handler's error (its own
// statusCode, else 500), never relabelled as another tokengate code. In the refresh hook it is kept for
// `authenticate`, like every other failure; anonymous routes proceed. Nothing is consumed on the way.
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import tokengate, { MemoryStore, type TokengateOptions } from '../../plugin/index.js'
import { SECRET, verifyCredentials } from '../helpers/app.js'
import { captureLogs, type LogCapture } from '../helpers/logs.js'
import { deletePrefix, readSession, redisUrl, uniquePrefix } from '../helpers/redis.js'
import { craftAccessToken, hashOf } from '../helpers/tokens.js'

class UserError extends Error {
  constructor (message: string, readonly statusCode?: number) {
    super(message)
    this.name = 'UserError'
  }
}

async function build (t: Test, options: Partial<TokengateOptions>): Promise<{ app: FastifyInstance, logs: LogCapture, redis: Redis, prefix: string }> {
  const url = await redisUrl()
  const prefix = uniquePrefix('user-errors')
  const redis = new Redis(url)
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'info', stream: logs.stream } })
  await app.register(tokengate, { secret: SECRET, ...(options.store === undefined ? { redis: url } : {}), keyPrefix: prefix, routes: { verifyCredentials }, ...options } as TokengateOptions)
  app.get('/me', { onRequest: app.authenticate }, async (request) => ({ userId: request.auth!.userId }))
  app.get('/anon', async (request) => ({ userId: request.auth?.userId ?? null }))
  t.teardown(async () => {
    await app.close()
    await deletePrefix(redis, prefix)
    redis.disconnect()
  })
  await app.ready()
  return { app, logs, redis, prefix }
}

const expiredAccess = (sid: string): string => craftAccessToken({ sub: 'u-alice', sid, roles: ['user'] }, { expiresInSec: -30 })

function loggedWithStack (t: Test, logs: LogCapture, message: string): void {
  const line = logs.lines().find(l => l.err?.message === message)
  t.ok(line !== undefined, `"${message}" is logged`)
  t.match(line?.err?.stack, /UserError: .*\n\s+at /, 'with its stack')
  t.ok(line !== undefined && line.level >= 40, `at warn level or above (${line?.level})`)
}

for (const [label, statusCode, expected] of [['without a statusCode', undefined, 500], ['with statusCode 409', 409, 409]] as const) {
  t.test(`refreshClaims throws ${label}: ${expected} from /auth/refresh and from the hook, the refresh token unspent`, async t => {
    const message = `refreshClaims exploded (${label})`
    const { app, logs, redis, prefix } = await build(t, { refreshClaims: async () => { throw new UserError(message, statusCode) } })
    const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
    const pair = login.json()

    const route = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
    t.equal(route.statusCode, expected, `/auth/refresh: ${route.body}`)
    t.not(route.json().code, 'TOKENGATE_STORE_UNAVAILABLE', 'not relabelled as a store failure')
    t.notMatch(route.body, /at .*\.ts|\n/, 'no stack in the body')

    const hooked = await app.inject({ url: '/me', headers: { authorization: `Bearer ${expiredAccess(pair.sessionId)}`, 'x-refresh-token': pair.refreshToken } })
    t.equal(hooked.statusCode, expected, `hook + authenticate: ${hooked.body}`)
    t.not(hooked.json().code, 'TOKENGATE_STORE_UNAVAILABLE', 'not relabelled as a store failure')
    t.equal(hooked.headers['x-access-token'], undefined, 'no new token')

    const anon = await app.inject({ url: '/anon', headers: { authorization: `Bearer ${expiredAccess(pair.sessionId)}`, 'x-refresh-token': pair.refreshToken } })
    t.equal(anon.statusCode, 200, 'an anonymous route proceeds anonymously')
    t.same(anon.json(), { userId: null })

    loggedWithStack(t, logs, message)
    t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, hashOf(pair.refreshToken), 'the session still holds the same refresh token (nothing rotated)')
  })
}

t.test('verifyCredentials throws: its statusCode (or 500), logged with its stack, no session created', async t => {
  let status: number | undefined = 418
  const { app, logs, redis, prefix } = await build(t, { routes: { verifyCredentials: async () => { throw new UserError('directory is down', status) } } })
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  t.equal(res.statusCode, 418, res.body)
  status = undefined
  const res500 = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  t.equal(res500.statusCode, 500, res500.body)
  t.not(res500.json().code, 'TOKENGATE_STORE_UNAVAILABLE')
  loggedWithStack(t, logs, 'directory is down')
  t.same(await redis.keys(`${prefix}:*`), [], 'no session was written')
})

t.test('a store passed in that throws: its statusCode (or 500), logged with its stack, never 503 STORE_UNAVAILABLE', async t => {
  const store = new MemoryStore()
  let fail: UserError | undefined
  for (const method of ['create', 'rotate', 'isRevoked'] as const) {
    const original = store[method].bind(store) as (...args: unknown[]) => Promise<unknown>
    ;(store as unknown as Record<string, unknown>)[method] = async (...args: unknown[]) => {
      if (fail !== undefined) throw fail
      return await original(...args)
    }
  }
  const { app, logs } = await build(t, { store })
  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  t.equal(login.statusCode, 200)
  const pair = login.json()

  fail = new UserError('my store is sulking', 507)
  const refresh = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(refresh.statusCode, 507, refresh.body)
  const hooked = await app.inject({ url: '/me', headers: { authorization: `Bearer ${expiredAccess(pair.sessionId)}`, 'x-refresh-token': pair.refreshToken } })
  t.equal(hooked.statusCode, 507, hooked.body)
  fail = new UserError('my store is sulking without a status')
  const again = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  t.equal(again.statusCode, 500, again.body)
  t.not(again.json().code, 'TOKENGATE_STORE_UNAVAILABLE')
  loggedWithStack(t, logs, 'my store is sulking')

  fail = undefined
  const ok = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(ok.statusCode, 200, 'the same refresh token still works once the store does')
})
