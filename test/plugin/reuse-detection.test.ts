// Refresh-token rotation, the grace window and reuse detection, through POST /auth/refresh,
// checked against what Redis holds afterwards.
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { buildApp, login } from '../helpers/app.js'
import { fakeClock, type Clock } from '../helpers/clock.js'
import { keysUnder, readSession, readSessions, sessionsKey, type StoredSession } from '../helpers/redis.js'
import { hashOf as refreshHash } from '../helpers/tokens.js'

/** Alice's session as Redis holds it (undefined when it is gone). */
async function stored (redis: Redis, prefix: string, sessionId: string): Promise<StoredSession | undefined> {
  return await readSession(redis, prefix, 'u-alice', sessionId)
}

/** The ids of alice's sessions in Redis. */
async function storedIds (redis: Redis, prefix: string): Promise<string[]> {
  return Object.keys(await readSessions(redis, prefix, 'u-alice') ?? {}).sort()
}

async function refresh (app: FastifyInstance, refreshToken: string): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken } })
}

async function me (app: FastifyInstance, accessToken: string): Promise<LightMyRequestResponse> {
  return await app.inject({ url: '/me', headers: { authorization: `Bearer ${accessToken}` } })
}

t.test('rotation: a new refresh token, h moves on and p keeps the old hash', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const pair = await login(app)
  const before = (await stored(redis, prefix, pair.sessionId))!
  t.equal(before.h, refreshHash(pair.refreshToken), 'h is the hash of the login refresh id')
  t.equal(before.p, null, 'no previous hash before the first rotation')

  const res = await refresh(app, pair.refreshToken)
  t.equal(res.statusCode, 200, res.body)
  t.equal(res.headers['cache-control'], 'no-store')
  const next = res.json()
  t.match(next, { tokenType: 'Bearer', sessionId: pair.sessionId })
  t.type(next.refreshToken, 'string')
  t.not(next.refreshToken, pair.refreshToken, 'the refresh token was rotated')
  t.match(next.refreshToken, /^tgr2\./)

  const after = (await stored(redis, prefix, pair.sessionId))!
  t.not(after.h, before.h, 'h changed')
  t.equal(after.h, refreshHash(next.refreshToken), 'h is the hash of the new refresh id')
  t.equal(after.p, before.h, 'p holds the old hash')
  t.ok(after.pt !== null && after.pt > 0, 'pt holds the rotation time')
  const raw = (await redis.getBuffer(sessionsKey(prefix, 'u-alice')))!
  t.notOk(raw.includes(Buffer.from(pair.refreshToken)) || raw.includes(Buffer.from(next.refreshToken)), 'no raw token stored')
  t.same(await storedIds(redis, prefix), [pair.sessionId], 'one session')

  t.equal((await me(app, next.accessToken)).statusCode, 200, 'the new access token works')
})

t.test('a chain of 5 rotations: each one works and moves h on', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const pair = await login(app)
  const seen = new Set<string>([pair.refreshToken])
  let current = pair.refreshToken
  for (let i = 0; i < 5; i++) {
    const res = await refresh(app, current)
    t.equal(res.statusCode, 200, `rotation ${i + 1}: ${res.body}`)
    const next = res.json()
    t.notOk(seen.has(next.refreshToken), `rotation ${i + 1} returns a token never seen before`)
    seen.add(next.refreshToken)
    const rec = await stored(redis, prefix, pair.sessionId)
    t.equal(rec?.h, refreshHash(next.refreshToken), `rotation ${i + 1}: h is the new hash`)
    t.equal(rec?.p, refreshHash(current), `rotation ${i + 1}: p is the presented hash`)
    t.equal((await me(app, next.accessToken)).statusCode, 200, `rotation ${i + 1}: access token works`)
    current = next.refreshToken
  }
  t.same(await storedIds(redis, prefix), [pair.sessionId], 'still one session')
})

async function checkReuseRevokes (t: Test, app: FastifyInstance, redis: Redis, prefix: string, clock: Clock, afterMs: number): Promise<void> {
  const pair = await login(app)
  const other = await login(app) // another session of the same user
  const otherBefore = await stored(redis, prefix, other.sessionId)

  const r1 = await refresh(app, pair.refreshToken)
  t.equal(r1.statusCode, 200, r1.body)
  const latest = r1.json()
  clock.tick(afterMs)

  const reused = await refresh(app, pair.refreshToken)
  t.equal(reused.statusCode, 401, reused.body)
  t.equal(reused.json().code, 'TOKENGATE_REFRESH_REUSED')
  t.match(reused.headers['www-authenticate'], /^Bearer/)
  t.notOk(reused.body.includes(pair.refreshToken), 'the answer does not echo the token')

  t.equal(await stored(redis, prefix, pair.sessionId), undefined, 'the session is gone')
  const revokedScore = await redis.zscore(`${prefix}:revoked`, pair.sessionId)
  t.not(revokedScore, null, '<prefix>:revoked holds the sid')
  t.ok(Number(revokedScore) > Date.now(), 'the revocation entry lasts into the future')

  for (const access of [pair.accessToken, latest.accessToken]) {
    const res = await me(app, access)
    t.equal(res.statusCode, 401, res.body)
    t.equal(res.json().code, 'TOKENGATE_TOKEN_REVOKED', 'access tokens of the session are revoked')
  }
  const res = await refresh(app, latest.refreshToken)
  t.equal(res.statusCode, 401, res.body)
  t.equal(res.json().code, 'TOKENGATE_REFRESH_INVALID', 'the latest refresh token is dead too')

  // The other session of the same user is untouched.
  t.same(await stored(redis, prefix, other.sessionId), otherBefore, 'other session unchanged')
  t.same(await storedIds(redis, prefix), [other.sessionId], 'the other session is the only one left in the user\'s key')
  t.equal(await redis.zscore(`${prefix}:revoked`, other.sessionId), null, 'other session not revoked')
  t.equal((await me(app, other.accessToken)).statusCode, 200, 'other session access token works')
  const o = await refresh(app, other.refreshToken)
  t.equal(o.statusCode, 200, `other session refresh works: ${o.body}`)
}

t.test('reuse with reuseGraceMs 0: old refresh token → REUSED, session revoked, others untouched', async t => {
  const clock = fakeClock(t)
  const { app, redis, prefix } = await buildApp(t, { reuseGraceMs: 0 })
  await checkReuseRevokes(t, app, redis, prefix, clock, 1)
})

t.test('reuse after a small grace window (200 ms) passed → REUSED, session revoked', async t => {
  const clock = fakeClock(t)
  const { app, redis, prefix } = await buildApp(t, { reuseGraceMs: 200 })
  await checkReuseRevokes(t, app, redis, prefix, clock, 200) // the first millisecond outside the window
})

t.test('inside the grace window the old token still gets the same successor', async t => {
  const { app, redis, prefix } = await buildApp(t, { reuseGraceMs: 5000 })
  const pair = await login(app)
  const a = await refresh(app, pair.refreshToken)
  const b = await refresh(app, pair.refreshToken)
  t.equal(a.statusCode, 200, a.body)
  t.equal(b.statusCode, 200, b.body)
  t.equal(b.json().refreshToken, a.json().refreshToken, 'same successor')
  const rec = await stored(redis, prefix, pair.sessionId)
  t.equal(rec?.h, refreshHash(a.json().refreshToken))
  t.equal(rec?.p, refreshHash(pair.refreshToken))
})

t.test('20 concurrent refreshes of one token: all 200, one successor, one session', async t => {
  const { app, redis, prefix } = await buildApp(t) // default reuseGraceMs 10 s
  const pair = await login(app)
  const responses = await Promise.all(Array.from({ length: 20 }, async () => await refresh(app, pair.refreshToken)))
  for (const [i, r] of responses.entries()) t.equal(r.statusCode, 200, `refresh ${i}: ${r.body}`)
  const bodies = responses.map(r => r.json())
  const tokens = new Set(bodies.map(b => b.refreshToken))
  t.equal(tokens.size, 1, 'every refresh returned the same refresh token')
  const successor = bodies[0].refreshToken as string
  t.not(successor, pair.refreshToken, 'and it is a rotated one')
  t.ok(bodies.every(b => b.sessionId === pair.sessionId), 'same session')

  for (const [i, b] of bodies.entries()) {
    const res = await me(app, b.accessToken)
    t.equal(res.statusCode, 200, `access token ${i} works: ${res.body}`)
    t.equal(res.json().sessionId, pair.sessionId)
  }

  t.same(await storedIds(redis, prefix), [pair.sessionId], 'one session')
  const rec = await stored(redis, prefix, pair.sessionId)
  t.equal(rec?.h, refreshHash(successor), 'h is the successor')
  t.equal(rec?.p, refreshHash(pair.refreshToken), 'p is the presented token')
  t.same(await keysUnder(redis, `${prefix}:{u-alice}`), [sessionsKey(prefix, 'u-alice')], 'one key for the user')
  t.equal(await redis.zscore(`${prefix}:revoked`, pair.sessionId), null, 'nothing revoked')

  const further = await refresh(app, successor)
  t.equal(further.statusCode, 200, `the returned token refreshes again: ${further.body}`)
  t.not(further.json().refreshToken, successor)
  t.same(await storedIds(redis, prefix), [pair.sessionId], 'still one session')
})

t.test('A→B→C, then A inside the grace window → REUSED (only the immediate predecessor has grace)', async t => {
  const { app, redis, prefix } = await buildApp(t) // default reuseGraceMs 10 s
  const pair = await login(app)
  const b = await refresh(app, pair.refreshToken)
  t.equal(b.statusCode, 200, b.body)
  const c = await refresh(app, b.json().refreshToken)
  t.equal(c.statusCode, 200, c.body)
  t.equal((await stored(redis, prefix, pair.sessionId))?.h, refreshHash(c.json().refreshToken))

  const a = await refresh(app, pair.refreshToken)
  t.equal(a.statusCode, 401, a.body)
  t.equal(a.json().code, 'TOKENGATE_REFRESH_REUSED')
  t.equal(await stored(redis, prefix, pair.sessionId), undefined, 'the session is gone')
  t.equal(await redis.exists(sessionsKey(prefix, 'u-alice')), 0, 'and the user\'s key with it')
  t.not(await redis.zscore(`${prefix}:revoked`, pair.sessionId), null, 'the sid is in <prefix>:revoked')
  const res = await me(app, c.json().accessToken)
  t.equal(res.statusCode, 401)
  t.equal(res.json().code, 'TOKENGATE_TOKEN_REVOKED')
  const last = await refresh(app, c.json().refreshToken)
  t.equal(last.statusCode, 401)
  t.equal(last.json().code, 'TOKENGATE_REFRESH_INVALID')
})
