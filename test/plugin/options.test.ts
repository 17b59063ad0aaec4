// Options: a bad option fails register with a message naming it; defaults and duration units; the memory store.
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import tokengate, { type TokengateOptions } from '../../plugin/index.js'
import { login, SECRET, verifyCredentials } from '../helpers/app.js'
import { deletePrefix, keysUnder, readSession, redisUrl, sessionsKey, uniquePrefix } from '../helpers/redis.js'
import { b64json } from '../helpers/tokens.js'

const SECRET_32 = 's'.repeat(32)

/** A Fastify app of the test's own with tokengate registered with exactly these options; closed at teardown. */
function appWith (t: Test, options: Record<string, unknown>, app: FastifyInstance = Fastify()): FastifyInstance {
  app.register(tokengate, options as TokengateOptions)
  t.teardown(async () => { await app.close() })
  return app
}

/** register must fail naming `option` (and never echo the secret). */
async function failsNaming (t: Test, options: Record<string, unknown>, option: RegExp): Promise<void> {
  const app = appWith(t, { keyPrefix: uniquePrefix('opts'), ...options })
  const err = await app.ready().then(() => null, (e: unknown) => e as Error)
  t.ok(err instanceof Error, 'register fails')
  t.match(err?.message, option, 'the message names the option')
  if (typeof options.secret === 'string' && options.secret.length > 0) t.notOk(err?.message.includes(options.secret), 'the message does not echo the secret')
}

t.test('register fails, naming the option', async t => {
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['a secret of 31 bytes', { secret: 'x'.repeat(31) }, /option "secret"/],
    ['a secret of 16 characters but 31 bytes (15 of them 2-byte)', { secret: 'é'.repeat(15) + 'x' }, /option "secret"/],
    ['no secret and no keys', {}, /option "secret"/],
    ['both secret and keys', { secret: SECRET_32, keys: [{ kid: 'k1', algorithm: 'EdDSA', privateKey: 'p', publicKey: 'q' }] }, /option "secret"/],
    ["accessTokenTtl 'ten minutes'", { secret: SECRET_32, accessTokenTtl: 'ten minutes' }, /option "accessTokenTtl"/],
    ['refreshTokenTtl -1', { secret: SECRET_32, refreshTokenTtl: -1 }, /option "refreshTokenTtl"/],
    ["transport ['carrier-pigeon']", { secret: SECRET_32, transport: ['carrier-pigeon'] }, /option "transport\b/],
    ["reuseGraceMs 'soon'", { secret: SECRET_32, reuseGraceMs: 'soon' }, /option "reuseGraceMs"/],
    ['an unknown option secrett', { secret: SECRET_32, secrett: SECRET_32 }, /option "secrett"/],
    ["redis 'http://x'", { secret: SECRET_32, redis: 'http://x' }, /option "redis"/],
    ['redis {} (not a client)', { secret: SECRET_32, redis: {} }, /option "redis"/],
    ['a store lacking methods', { secret: SECRET_32, store: { create: async () => {}, rotate: async () => {} } }, /option "store"/],
    ["onIssue 'x'", { secret: SECRET_32, onIssue: 'x' }, /option "onIssue"/],
    ['routes.verifyCredentials 42', { secret: SECRET_32, routes: { verifyCredentials: 42 } }, /option "routes\.verifyCredentials"/],
    ['maxSessionAge smaller than refreshTokenTtl', { secret: SECRET_32, refreshTokenTtl: '1d', maxSessionAge: '1h' }, /option "maxSessionAge"/]
  ]
  for (const [name, options, option] of cases) {
    await t.test(name, async t => { await failsNaming(t, options, option) })
  }
})

// A function where no function option is (a misplaced or misspelt callback) is named like any unknown option,
// with where it belongs or what it is likely a typo of, instead of failing deep inside the schema check.
t.test('a misplaced or misspelt callback option is named, with where it belongs', async t => {
  const fn = async (): Promise<null> => null
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['verifyCredentials at the top level', { secret: SECRET_32, verifyCredentials: fn }, /option "verifyCredentials" is not a known option.*routes: \{ verifyCredentials \}/],
    ['routes.verifyCredential (misspelt)', { secret: SECRET_32, routes: { verifyCredential: fn } }, /option "routes\.verifyCredential" is not a known option.*did you mean "routes\.verifyCredentials"/],
    ['onIsue (misspelt)', { secret: SECRET_32, onIsue: fn }, /option "onIsue" is not a known option.*did you mean "onIssue"/],
    ['routes.onIssue (misplaced)', { secret: SECRET_32, routes: { verifyCredentials: fn, onIssue: fn } }, /option "routes\.onIssue" is not a known option.*top level/],
    ['loginBody at the top level', { secret: SECRET_32, loginBody: { type: 'object' } }, /option "loginBody" is not a known option.*routes: \{ loginBody \}/],
    ['a function nested in cookie', { secret: SECRET_32, cookie: { secure: true, sameSite: fn } }, /option "cookie\.sameSite" is not a known option/]
  ]
  for (const [name, options, message] of cases) {
    await t.test(name, async t => {
      const app = appWith(t, { keyPrefix: uniquePrefix('opts'), ...options })
      const err = await app.ready().then(() => null, (e: unknown) => e as Error)
      t.equal(err?.name, 'TokengateOptionError', `an OptionError (${err?.message})`)
      t.match(err?.message, message)
      t.notMatch(err?.message, /clone/i, 'not a failure inside the schema check')
      t.notOk(err?.message.includes(SECRET_32), 'the secret is not echoed')
    })
  }
  // Control: the same callbacks where they belong register.
  const app = appWith(t, { secret: SECRET_32, routes: { verifyCredentials: fn }, onIssue: fn })
  await app.ready()
  t.pass('routes.verifyCredentials and onIssue where they belong')
})

t.test('a duration in a wrong format lists the accepted forms, for every duration option', async t => {
  const forms = /'500ms', '10s', '10m', '1h', '1d' or a number of seconds/
  const cases: Array<[string, Record<string, unknown>]> = [
    ['accessTokenTtl', { accessTokenTtl: '10 minutes' }],
    ['refreshTokenTtl', { refreshTokenTtl: '1 day' }],
    ['clockTolerance', { clockTolerance: '5 sec' }],
    ['maxSessionAge', { maxSessionAge: '30days' }],
    ['dpop.proofMaxAge', { dpop: { proofMaxAge: '1 min' } }],
    ['accessTokenTtl', { accessTokenTtl: -5 }]
  ]
  for (const [option, bad] of cases) {
    await t.test(`${option}: ${JSON.stringify(Object.values(bad)[0])}`, async t => {
      const app = appWith(t, { secret: SECRET_32, keyPrefix: uniquePrefix('opts'), ...bad })
      const err = await app.ready().then(() => null, (e: unknown) => e as Error)
      t.match(err?.message, new RegExp(`option "${option.replace('.', '\\.')}"`), `names the option (${err?.message})`)
      t.match(err?.message, forms, 'lists the accepted forms')
      t.notMatch(err?.message, /Expected union value/)
    })
  }
})

t.test('a secret of exactly 32 bytes is accepted (in ASCII and in 2-byte characters)', async t => {
  for (const secret of [SECRET_32, 'é'.repeat(16)]) {
    t.equal(Buffer.byteLength(secret), 32)
    const app = appWith(t, { secret })
    await app.ready() // throws (failing the test) if register rejects the secret
    const pair = await app.tokengate.issue({ sub: 'u1' })
    t.match(await app.tokengate.verify(pair.accessToken), { userId: 'u1' })
    await app.close()
  }
})

/** An app on the shared Redis under a prefix of the test's own, with login routes; the prefix is deleted at teardown. */
async function redisApp (t: Test, options: Record<string, unknown>): Promise<{ app: FastifyInstance, redis: Redis, prefix: string }> {
  const url = await redisUrl()
  const prefix = uniquePrefix('opts')
  const redis = new Redis(url)
  const app = appWith(t, { secret: SECRET, redis: url, keyPrefix: prefix, routes: { verifyCredentials }, ...options })
  t.teardown(async () => {
    await deletePrefix(redis, prefix)
    redis.disconnect()
  })
  await app.ready()
  return { app, redis, prefix }
}

/** Checks the pair's lifetimes, the access token's exp - iat, and the session record's native expiry. */
async function checkLifetimes (t: Test, options: Record<string, unknown>, accessSec: number, refreshSec: number): Promise<void> {
  const { app, redis, prefix } = await redisApp(t, options)
  const pair = await login(app)
  t.equal(pair.expiresIn, accessSec, 'expiresIn')
  t.equal(pair.refreshExpiresIn, refreshSec, 'refreshExpiresIn')
  const claims = b64json(pair.accessToken.split('.')[1])
  t.equal((claims.exp as number) - (claims.iat as number), accessSec, 'exp - iat of the access token')
  const pttl = await redis.pttl(sessionsKey(prefix, 'u-alice'))
  const want = (refreshSec + accessSec) * 1000
  t.ok(pttl > want - 10_000 && pttl <= want, `the session's key expires in refresh + access TTL (${pttl} ms, want ≈ ${want})`)
  const s = await readSession(redis, prefix, 'u-alice', pair.sessionId)
  t.equal(s?.x, (s?.re ?? 0) + accessSec * 1000, 'the session\'s record expiry = refresh expiry + access TTL')
  t.match(await app.tokengate.verify(pair.accessToken), { userId: 'u-alice' })
}

t.test('defaults: access 10 minutes, refresh 1 day', async t => {
  await checkLifetimes(t, {}, 600, 86400)
})

t.test('a number means seconds', async t => {
  await t.test('accessTokenTtl: 90 → expiresIn 90', async t => {
    await checkLifetimes(t, { accessTokenTtl: 90 }, 90, 86400)
  })
  await t.test('refreshTokenTtl: 120 → refreshExpiresIn 120', async t => {
    await checkLifetimes(t, { refreshTokenTtl: 120 }, 600, 120)
  })
})

t.test("'1h' means 3600 seconds", async t => {
  await t.test('accessTokenTtl', async t => {
    await checkLifetimes(t, { accessTokenTtl: '1h' }, 3600, 86400)
  })
  await t.test('refreshTokenTtl', async t => {
    await checkLifetimes(t, { refreshTokenTtl: '1h' }, 600, 3600)
  })
})

t.test('without redis: the in-memory store works end to end and says it serves one process', async t => {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk: Buffer, _enc, cb) { lines.push(chunk.toString()); cb() }
  })
  const prefix = uniquePrefix('mem')
  const app = appWith(t, { secret: SECRET, keyPrefix: prefix, routes: { verifyCredentials } }, Fastify({ logger: { level: 'warn', stream } }))
  await app.after() // app.authenticate exists once tokengate has loaded
  t.equal(typeof app.authenticate, 'function')
  app.get('/me', { onRequest: app.authenticate }, async (request) => ({ userId: request.auth!.userId, sessionId: request.auth!.sessionId }))
  await app.ready()

  const logged = lines.map(l => JSON.parse(l) as { level: number, msg: string })
  const warning = logged.find(l => /in-memory/i.test(l.msg))
  t.ok(warning, 'a warning about the in-memory store was logged')
  t.equal(warning?.level, 40, 'at warn level')
  t.match(warning?.msg, /(one|single) process/i, 'it says the store serves one process')

  const pair = await login(app)
  t.match(pair, { tokenType: 'Bearer', expiresIn: 600, refreshExpiresIn: 86400 })
  const auth = { authorization: `Bearer ${pair.accessToken}` }
  const me = await app.inject({ url: '/me', headers: auth })
  t.equal(me.statusCode, 200, me.body)
  t.same(me.json(), { userId: 'u-alice', sessionId: pair.sessionId })

  const refreshed = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(refreshed.statusCode, 200, refreshed.body)
  const next = refreshed.json()
  t.equal(next.sessionId, pair.sessionId)
  t.not(next.refreshToken, pair.refreshToken, 'rotated')
  const meNext = await app.inject({ url: '/me', headers: { authorization: `Bearer ${next.accessToken}` } })
  t.equal(meNext.statusCode, 200, meNext.body)
  t.equal((await app.tokengate.listSessions('u-alice')).length, 1)

  const out = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${next.accessToken}` } })
  t.equal(out.statusCode, 204, out.body)
  for (const token of [pair.accessToken, next.accessToken]) {
    const res = await app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })
    t.equal(res.statusCode, 401, res.body)
    t.equal(res.json().code, 'TOKENGATE_TOKEN_REVOKED')
    t.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"')
  }
  const again = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: next.refreshToken } })
  t.equal(again.statusCode, 401, again.body)
  t.equal(again.json().code, 'TOKENGATE_REFRESH_INVALID')
  t.same(await app.tokengate.listSessions('u-alice'), [], 'no session left')

  const redis = new Redis(await redisUrl())
  t.teardown(() => { redis.disconnect() })
  t.same(await keysUnder(redis, prefix), [], 'nothing was written to Redis')
})
