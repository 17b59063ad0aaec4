// app.tokengate.onSessionRevoked: every instance hears of every revocation once, its own (with the user id)
// and the other instances' through the feed (without), so long-lived work of a dead session (a websocket, a
// stream) can end. Two instances share a prefix; each scenario revokes on A.
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import tokengate, { type TokengateOptions } from '../../plugin/index.js'
import { login, SECRET, sleep, verifyCredentials } from '../helpers/app.js'
import { captureLogs, type LogCapture } from '../helpers/logs.js'
import { deletePrefix, redisUrl, uniquePrefix } from '../helpers/redis.js'

type Heard = Array<[sessionId: string, userId: string | undefined]>

interface Instance { app: FastifyInstance, logs: LogCapture, heard: Heard }

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

async function until (check: () => boolean, ms = 2000): Promise<boolean> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) return false
    await sleep(10)
  }
  return true
}

/** An instance on the shared Redis, logging into a capture, with a listener recording what it hears. */
async function instance (t: Test, prefix: string, options: Partial<TokengateOptions>): Promise<Instance> {
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'info', stream: logs.stream } })
  await app.register(tokengate, { secret: SECRET, redis: await redisUrl(), keyPrefix: prefix, routes: { verifyCredentials }, ...options } as TokengateOptions)
  app.get('/me', { onRequest: app.authenticate }, async (request) => ({ userId: request.auth!.userId }))
  t.teardown(async () => { await app.close() })
  await app.ready()
  if (!await until(() => app.tokengate.feedUp, 3000)) throw new Error('the revocation feed did not come up')
  const heard: Heard = []
  app.tokengate.onSessionRevoked((sessionId, userId) => { heard.push([sessionId, userId]) })
  return { app, logs, heard }
}

/** Instances A and B sharing a prefix (deleted at teardown), and a way to wait until both heard everything. */
async function twoInstances (t: Test, options: Partial<TokengateOptions> = {}): Promise<{ A: Instance, B: Instance, settle: () => Promise<void>, heard: (i: Instance) => Heard }> {
  const prefix = uniquePrefix('revocation-events')
  const redis = new Redis(await redisUrl())
  t.teardown(async () => {
    await deletePrefix(redis, prefix)
    redis.disconnect()
  })
  const A = await instance(t, prefix, options)
  const B = await instance(t, prefix, options)
  const markers = new Set<string>()
  /** Revokes a marker session on `from` and waits for `to` to hear of it through its feed. */
  const mark = async (from: Instance, to: Instance): Promise<void> => {
    const m = await login(from.app, 'bob')
    markers.add(m.sessionId)
    const out = await from.app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(m.accessToken) })
    if (out.statusCode !== 204) throw new Error(`marker logout failed: ${out.body}`)
    if (!await until(() => to.heard.some(([id]) => id === m.sessionId))) throw new Error('a marker revocation did not arrive within 2 s')
  }
  return {
    A,
    B,
    // Pub/sub keeps the order of messages on each connection: once an instance heard of a marker revoked
    // after the scenario, it has heard whatever the scenario published, duplicates included.
    settle: async () => {
      await mark(B, A)
      await mark(A, B)
    },
    heard: (i) => i.heard.filter(([id]) => !markers.has(id))
  }
}

const sorted = (h: Heard): Heard => [...h].sort((x, y) => x[0].localeCompare(y[0]))

/** A heard of the sessions at once, with the user id; B within 2 s, without; each exactly once. */
async function heardOnce (t: Test, ctx: Awaited<ReturnType<typeof twoInstances>>, sessionIds: string[]): Promise<void> {
  const { A, B, settle, heard } = ctx
  t.same(sorted(heard(A)), sorted(sessionIds.map(id => [id, 'u-alice'])), 'A (which revoked) heard at once, with the user id')
  t.ok(await until(() => sessionIds.every(id => B.heard.some(([h]) => h === id))), 'B heard within 2 s')
  await settle()
  t.same(sorted(heard(A)), sorted(sessionIds.map(id => [id, 'u-alice'])), 'A heard of each exactly once (not again through its own feed)')
  t.same(sorted(heard(B)), sorted(sessionIds.map(id => [id, undefined])), 'B heard of each exactly once, without a user id')
}

t.test('logout on A: the listener fires once on A and once on B', async t => {
  const ctx = await twoInstances(t)
  const s = await login(ctx.A.app)
  const out = await ctx.A.app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(s.accessToken) })
  t.equal(out.statusCode, 204, out.body)
  await heardOnce(t, ctx, [s.sessionId])
})

t.test('logout-all on A: A hears of each session; both hear of one epoch for the user (onRevokedBefore)', async t => {
  const ctx = await twoInstances(t)
  const epochs: Record<'A' | 'B', Array<[string | undefined, number]>> = { A: [], B: [] }
  ctx.A.app.tokengate.onRevokedBefore((userId, before) => { epochs.A.push([userId, before]) })
  ctx.B.app.tokengate.onRevokedBefore((userId, before) => { epochs.B.push([userId, before]) })
  const one = await login(ctx.A.app)
  const two = await login(ctx.B.app)
  const before = Date.now()
  const out = await ctx.A.app.inject({ method: 'POST', url: '/auth/logout-all', headers: bearer(one.accessToken) })
  const after = Date.now()
  t.equal(out.statusCode, 204, out.body)
  t.same(sorted(ctx.heard(ctx.A)), sorted([[one.sessionId, 'u-alice'], [two.sessionId, 'u-alice']]), 'A (which revoked) heard of each session at once, with the user id')
  t.equal(epochs.A.length, 1, 'A heard of the epoch at once')
  t.equal(epochs.A[0]?.[0], 'u-alice')
  t.ok(epochs.A[0][1] >= before && epochs.A[0][1] <= after, 'the epoch is the time of the logout-all')
  t.ok(await until(() => epochs.B.length > 0), 'B heard of the epoch through its feed')
  await ctx.settle()
  t.same(epochs.B, epochs.A, 'B heard of the same epoch, exactly once')
  t.same(ctx.heard(ctx.B), [], 'and of no single session: one entry for the user, whatever the number of sessions')
})

t.test('revokeEveryone on A: both instances hear of one epoch for everybody', async t => {
  const ctx = await twoInstances(t)
  const heardB: Array<[string | undefined, number]> = []
  ctx.B.app.tokengate.onRevokedBefore((userId, before) => { heardB.push([userId, before]) })
  const before = Date.now()
  await ctx.A.app.tokengate.revokeEveryone()
  t.ok(await until(() => heardB.length > 0), 'B heard of it')
  t.equal(heardB[0][0], undefined, 'no user: everybody')
  t.ok(heardB[0][1] >= before && heardB[0][1] <= Date.now(), 'the epoch is the time of the call')
})

t.test('DELETE /auth/sessions/:id on A: once for the deleted session, on both instances', async t => {
  const ctx = await twoInstances(t)
  const keep = await login(ctx.A.app)
  const drop = await login(ctx.A.app)
  const del = await ctx.A.app.inject({ method: 'DELETE', url: `/auth/sessions/${drop.sessionId}`, headers: bearer(keep.accessToken) })
  t.equal(del.statusCode, 204, del.body)
  await heardOnce(t, ctx, [drop.sessionId])
})

t.test('reuse detected on A: once for the reused session, on both instances', async t => {
  const ctx = await twoInstances(t, { reuseGraceMs: 0 })
  const s = await login(ctx.A.app)
  await sleep(5) // a rotation in the same millisecond would still be inside a 0 ms window
  const r = await ctx.A.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: s.refreshToken } })
  t.equal(r.statusCode, 200, r.body)
  await sleep(5)
  const reused = await ctx.A.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: s.refreshToken } })
  t.equal(reused.json().code, 'TOKENGATE_REFRESH_REUSED')
  await heardOnce(t, ctx, [s.sessionId])
})

t.test('maxSessionsPerUser eviction on A: once for the evicted session, on both instances', async t => {
  const ctx = await twoInstances(t, { maxSessionsPerUser: 1 })
  const first = await login(ctx.A.app)
  await sleep(5)
  await login(ctx.A.app)
  await heardOnce(t, ctx, [first.sessionId])
})

t.test('the function onSessionRevoked returns unsubscribes the listener', async t => {
  const ctx = await twoInstances(t)
  const extraA: string[] = []
  const extraB: string[] = []
  const offA = ctx.A.app.tokengate.onSessionRevoked(id => { extraA.push(id) })
  const offB = ctx.B.app.tokengate.onSessionRevoked(id => { extraB.push(id) })
  const first = await login(ctx.A.app)
  await ctx.A.app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(first.accessToken) })
  await ctx.settle()
  t.ok(extraA.includes(first.sessionId) && extraB.includes(first.sessionId), 'subscribed: both instances call the listener')

  offA()
  offB()
  offA() // a second call is harmless
  const before = [extraA.length, extraB.length]
  const second = await login(ctx.A.app)
  await ctx.A.app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(second.accessToken) })
  await ctx.settle()
  t.same([extraA.length, extraB.length], before, 'unsubscribed: neither instance calls it any more')
  t.ok(ctx.heard(ctx.A).some(([id]) => id === second.sessionId) && ctx.heard(ctx.B).some(([id]) => id === second.sessionId), 'other listeners still hear')
})

t.test('a listener that throws is logged and breaks nothing: the logout answers 204, the revocation holds', async t => {
  const ctx = await twoInstances(t)
  const boom = (): never => { throw new Error('listener exploded') }
  ctx.A.app.tokengate.onSessionRevoked(boom)
  ctx.B.app.tokengate.onSessionRevoked(boom)
  const after: string[] = []
  ctx.A.app.tokengate.onSessionRevoked(id => { after.push(id) }) // registered after the throwing one

  const s = await login(ctx.A.app)
  const out = await ctx.A.app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(s.accessToken) })
  t.equal(out.statusCode, 204, out.body)
  t.same(after, [s.sessionId], 'a listener after the throwing one still hears')
  t.ok(await until(() => ctx.B.heard.some(([id]) => id === s.sessionId)), 'B heard through its feed despite its own throwing listener')
  for (const [name, i] of [['A', ctx.A], ['B', ctx.B]] as const) {
    const line = i.logs.lines().find(l => l.err?.message === 'listener exploded')
    t.ok(line !== undefined, `${name} logged the listener's error`)
    t.equal(line?.level, 50, 'at error level')
    t.match(line?.msg, /onSessionRevoked listener failed/)
    t.match(line?.err?.stack, /Error: listener exploded\n\s+at /, 'with its stack')
    const me = await i.app.inject({ url: '/me', headers: bearer(s.accessToken) })
    t.equal(me.json().code, 'TOKENGATE_TOKEN_REVOKED', `${name} refuses the revoked session's access token`)
  }
  t.ok(ctx.B.app.tokengate.feedUp, 'B\'s feed is still up')
  // The feed keeps working: a later revocation on A still reaches B.
  await ctx.settle()
})
