// A Redis failover can lose a rotation the store had acknowledged: the client holds the successor (B) while
// the session still names its parent (A). Simulated on a real Redis by putting the user's key back as it was
// before the refresh. A token exactly one rotation ahead is accepted and the session catches up; anything
// further is still reuse.
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import tokengate, { type TokengateOptions } from '../../plugin/index.js'
import { SECRET, verifyCredentials } from '../helpers/app.js'
import { fakeClock } from '../helpers/clock.js'
import { captureLogs, type LogCapture } from '../helpers/logs.js'
import { deletePrefix, readSession, redisUrl, sessionsKey, uniquePrefix } from '../helpers/redis.js'
import { hashOf, refreshParts } from '../helpers/tokens.js'

const GRACE_MS = 200

interface Ctx { app: FastifyInstance, redis: Redis, prefix: string, logs: LogCapture }

/** An app that logs at info into a capture, with a short grace window; cleaned at teardown. */
async function build (t: Test): Promise<Ctx> {
  const url = await redisUrl()
  const prefix = uniquePrefix('lost-rotation')
  const redis = new Redis(url)
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'info', stream: logs.stream } })
  await app.register(tokengate, { secret: SECRET, redis: url, keyPrefix: prefix, reuseGraceMs: GRACE_MS, routes: { verifyCredentials } } as TokengateOptions)
  app.get('/me', { onRequest: app.authenticate }, async (request) => ({ userId: request.auth!.userId, sessionId: request.auth!.sessionId }))
  t.teardown(async () => {
    await app.close()
    await deletePrefix(redis, prefix)
    redis.disconnect()
  })
  await app.ready()
  return { app, redis, prefix, logs }
}

async function refresh (app: FastifyInstance, refreshToken: string): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken } })
}

/** The user's key, raw, with its absolute expiry: what a replica that missed the writes since would hold. */
async function snapshot (ctx: Ctx): Promise<{ value: Buffer, pxat: number }> {
  const key = sessionsKey(ctx.prefix, 'u-alice')
  return { value: (await ctx.redis.getBuffer(key))!, pxat: Number(await ctx.redis.pexpiretime(key)) }
}

async function restore (t: Test, ctx: Ctx, s: { value: Buffer, pxat: number }): Promise<void> {
  t.equal(await ctx.redis.set(sessionsKey(ctx.prefix, 'u-alice'), s.value, 'PXAT', s.pxat), 'OK', 'the user\'s key is put back as it was')
}

t.test('a token one rotation ahead of its session (a lost rotation) is accepted, and the session catches up', async t => {
  // A stopped clock: "inside the grace window" holds however slow the machine, until the test moves it.
  const clock = fakeClock(t)
  const ctx = await build(t)
  const { app, redis, prefix, logs } = ctx
  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  t.equal(login.statusCode, 200, login.body)
  const a = login.json()
  const beforeRefresh = await snapshot(ctx)

  const r1 = await refresh(app, a.refreshToken)
  t.equal(r1.statusCode, 200, r1.body)
  const b = r1.json()
  t.equal(refreshParts(b.refreshToken).parentHash, hashOf(a.refreshToken), 'B names A as its parent')

  // The failover: the store forgets A → B.
  await restore(t, ctx, beforeRefresh)
  t.equal((await readSession(redis, prefix, 'u-alice', a.sessionId))?.h, hashOf(a.refreshToken), 'the session names A again')

  const r2 = await refresh(app, b.refreshToken)
  t.equal(r2.statusCode, 200, `B is accepted, not taken for reuse: ${r2.body}`)
  const c = r2.json()
  t.equal(c.sessionId, a.sessionId, 'the same session')
  const s = await readSession(redis, prefix, 'u-alice', a.sessionId)
  t.equal(s?.h, hashOf(c.refreshToken), 'h is now the hash of B\'s successor')
  t.equal(s?.p, hashOf(b.refreshToken), 'p the hash of B')
  t.equal((await app.inject({ url: '/me', headers: { authorization: `Bearer ${c.accessToken as string}` } })).statusCode, 200, 'the new access token works')
  const line = logs.lines().find(l => typeof l.msg === 'string' && l.msg.includes('one rotation ahead'))
  t.ok(line !== undefined, 'the catch-up is logged')
  t.equal(line?.level, 30, 'at info level')
  t.equal(line?.sessionId, a.sessionId, 'naming the session')
  t.notOk(logs.text().includes(b.refreshToken) || logs.text().includes(refreshParts(b.refreshToken).refreshId), 'and no token')

  // After catching up, B inside the grace window is an ordinary grace refresh.
  const again = await refresh(app, b.refreshToken)
  t.equal(again.statusCode, 200, again.body)
  t.equal(again.json().refreshToken, c.refreshToken, 'B again gets the same successor')

  // A, outside the grace window, is still reuse: catching up never revives an older token.
  clock.tick(GRACE_MS)
  const old = await refresh(app, a.refreshToken)
  t.equal(old.statusCode, 401, old.body)
  t.equal(old.json().code, 'TOKENGATE_REFRESH_REUSED', 'A is reuse')
  t.equal(await readSession(redis, prefix, 'u-alice', a.sessionId), undefined, 'the session is revoked')
  t.not(await redis.zscore(`${prefix}:revoked`, a.sessionId), null, 'and recorded in <prefix>:revoked')
  const me = await app.inject({ url: '/me', headers: { authorization: `Bearer ${c.accessToken as string}` } })
  t.equal(me.json().code, 'TOKENGATE_TOKEN_REVOKED', 'its access tokens die')
})

t.test('two lost rotations are reuse: only a token exactly one rotation ahead is accepted', async t => {
  const ctx = await build(t)
  const { app, redis, prefix } = ctx
  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  t.equal(login.statusCode, 200, login.body)
  const a = login.json()
  const beforeBoth = await snapshot(ctx)
  const b = (await refresh(app, a.refreshToken)).json()
  const r = await refresh(app, b.refreshToken)
  t.equal(r.statusCode, 200, r.body)
  const c = r.json()
  t.equal(refreshParts(c.refreshToken).parentHash, hashOf(b.refreshToken), 'C names B as its parent')

  // The store forgets A → B and B → C: C is two rotations ahead of A.
  await restore(t, ctx, beforeBoth)
  const res = await refresh(app, c.refreshToken)
  t.equal(res.statusCode, 401, res.body)
  t.equal(res.json().code, 'TOKENGATE_REFRESH_REUSED', 'C is taken for reuse')
  t.equal(await readSession(redis, prefix, 'u-alice', a.sessionId), undefined, 'the session is revoked')
  t.equal(await redis.exists(sessionsKey(prefix, 'u-alice')), 0, 'nothing of it is left')
})
