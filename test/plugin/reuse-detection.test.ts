// Refresh-token rotation, the grace window and reuse detection, through POST /auth/refresh,
// checked against what Redis holds afterwards.
import { createHash } from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { buildApp, login, sleep } from '../helpers/app.js'
import { indexKey, recordKey } from '../helpers/redis.js'

/** The store's hash of a refresh token's id (field 3 of `tgr1.<user>.<sid>.<rid>.<exp>.<mac>`). */
function refreshHash (token: string): string {
  const rid = token.split('.')[3]
  return createHash('sha256').update(rid).digest('base64url').slice(0, 22)
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
  const key = recordKey(prefix, 'u-alice', pair.sessionId)
  const before = await redis.hgetall(key)
  t.equal(before.h, refreshHash(pair.refreshToken), 'h is the hash of the login refresh id')
  t.notOk('p' in before, 'no previous hash before the first rotation')

  const res = await refresh(app, pair.refreshToken)
  t.equal(res.statusCode, 200, res.body)
  t.equal(res.headers['cache-control'], 'no-store')
  const next = res.json()
  t.match(next, { tokenType: 'Bearer', sessionId: pair.sessionId })
  t.type(next.refreshToken, 'string')
  t.not(next.refreshToken, pair.refreshToken, 'the refresh token was rotated')
  t.match(next.refreshToken, /^tgr1\./)

  const after = await redis.hgetall(key)
  t.not(after.h, before.h, 'h changed')
  t.equal(after.h, refreshHash(next.refreshToken), 'h is the hash of the new refresh id')
  t.equal(after.p, before.h, 'p holds the old hash')
  t.ok(Number(after.pt) > 0, 'pt holds the rotation time')
  t.notOk(Object.values(after).some(v => v.includes(pair.refreshToken) || v.includes(next.refreshToken)), 'no raw token stored')
  t.equal(await redis.zcard(indexKey(prefix, 'u-alice')), 1)

  t.equal((await me(app, next.accessToken)).statusCode, 200, 'the new access token works')
})

t.test('a chain of 5 rotations: each one works and moves h on', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const pair = await login(app)
  const key = recordKey(prefix, 'u-alice', pair.sessionId)
  const seen = new Set<string>([pair.refreshToken])
  let current = pair.refreshToken
  for (let i = 0; i < 5; i++) {
    const res = await refresh(app, current)
    t.equal(res.statusCode, 200, `rotation ${i + 1}: ${res.body}`)
    const next = res.json()
    t.notOk(seen.has(next.refreshToken), `rotation ${i + 1} returns a token never seen before`)
    seen.add(next.refreshToken)
    const rec = await redis.hgetall(key)
    t.equal(rec.h, refreshHash(next.refreshToken), `rotation ${i + 1}: h is the new hash`)
    t.equal(rec.p, refreshHash(current), `rotation ${i + 1}: p is the presented hash`)
    t.equal((await me(app, next.accessToken)).statusCode, 200, `rotation ${i + 1}: access token works`)
    current = next.refreshToken
  }
  t.equal(await redis.zcard(indexKey(prefix, 'u-alice')), 1, 'still one session')
})

async function checkReuseRevokes (t: Test, app: FastifyInstance, redis: Redis, prefix: string, sleepMs: number): Promise<void> {
  const pair = await login(app)
  const other = await login(app) // another session of the same user
  const key = recordKey(prefix, 'u-alice', pair.sessionId)
  const otherKey = recordKey(prefix, 'u-alice', other.sessionId)
  const otherBefore = await redis.hgetall(otherKey)

  const r1 = await refresh(app, pair.refreshToken)
  t.equal(r1.statusCode, 200, r1.body)
  const latest = r1.json()
  await sleep(sleepMs)

  const reused = await refresh(app, pair.refreshToken)
  t.equal(reused.statusCode, 401, reused.body)
  t.equal(reused.json().code, 'TOKENGATE_REFRESH_REUSED')
  t.match(reused.headers['www-authenticate'], /^Bearer/)
  t.notOk(reused.body.includes(pair.refreshToken), 'the answer does not echo the token')

  t.equal(await redis.exists(key), 0, 'the session hash is gone')
  t.equal(await redis.zscore(indexKey(prefix, 'u-alice'), pair.sessionId), null, 'the index entry is gone')
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
  t.same(await redis.hgetall(otherKey), otherBefore, 'other session hash unchanged')
  t.not(await redis.zscore(indexKey(prefix, 'u-alice'), other.sessionId), null, 'other session still indexed')
  t.equal(await redis.zscore(`${prefix}:revoked`, other.sessionId), null, 'other session not revoked')
  t.equal((await me(app, other.accessToken)).statusCode, 200, 'other session access token works')
  const o = await refresh(app, other.refreshToken)
  t.equal(o.statusCode, 200, `other session refresh works: ${o.body}`)
}

t.test('reuse with reuseGraceMs 0: old refresh token → REUSED, session revoked, others untouched', async t => {
  const { app, redis, prefix } = await buildApp(t, { reuseGraceMs: 0 })
  // A few ms so the reuse cannot fall in the same millisecond as the rotation.
  await checkReuseRevokes(t, app, redis, prefix, 5)
})

t.test('reuse after a small grace window (200 ms) passed → REUSED, session revoked', async t => {
  const { app, redis, prefix } = await buildApp(t, { reuseGraceMs: 200 })
  await checkReuseRevokes(t, app, redis, prefix, 350)
})

t.test('inside the grace window the old token still gets the same successor', async t => {
  const { app, redis, prefix } = await buildApp(t, { reuseGraceMs: 5000 })
  const pair = await login(app)
  const a = await refresh(app, pair.refreshToken)
  const b = await refresh(app, pair.refreshToken)
  t.equal(a.statusCode, 200, a.body)
  t.equal(b.statusCode, 200, b.body)
  t.equal(b.json().refreshToken, a.json().refreshToken, 'same successor')
  const rec = await redis.hgetall(recordKey(prefix, 'u-alice', pair.sessionId))
  t.equal(rec.h, refreshHash(a.json().refreshToken))
  t.equal(rec.p, refreshHash(pair.refreshToken))
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

  const index = indexKey(prefix, 'u-alice')
  t.equal(await redis.zcard(index), 1, 'one index member')
  const rec = await redis.hgetall(recordKey(prefix, 'u-alice', pair.sessionId))
  t.equal(rec.h, refreshHash(successor), 'h is the successor')
  t.equal(rec.p, refreshHash(pair.refreshToken), 'p is the presented token')
  const keys = await redis.keys(`${prefix}:{u-alice}:s:*`)
  t.same(keys, [recordKey(prefix, 'u-alice', pair.sessionId)], 'one session hash')
  t.equal(await redis.zscore(`${prefix}:revoked`, pair.sessionId), null, 'nothing revoked')

  const further = await refresh(app, successor)
  t.equal(further.statusCode, 200, `the returned token refreshes again: ${further.body}`)
  t.not(further.json().refreshToken, successor)
  t.equal(await redis.zcard(index), 1, 'still one session')
})

t.test('A→B→C, then A inside the grace window → REUSED (only the immediate predecessor has grace)', async t => {
  const { app, redis, prefix } = await buildApp(t) // default reuseGraceMs 10 s
  const pair = await login(app)
  const b = await refresh(app, pair.refreshToken)
  t.equal(b.statusCode, 200, b.body)
  const c = await refresh(app, b.json().refreshToken)
  t.equal(c.statusCode, 200, c.body)
  const key = recordKey(prefix, 'u-alice', pair.sessionId)
  t.equal((await redis.hgetall(key)).h, refreshHash(c.json().refreshToken))

  const a = await refresh(app, pair.refreshToken)
  t.equal(a.statusCode, 401, a.body)
  t.equal(a.json().code, 'TOKENGATE_REFRESH_REUSED')
  t.equal(await redis.exists(key), 0, 'the session hash is gone')
  t.equal(await redis.zscore(indexKey(prefix, 'u-alice'), pair.sessionId), null, 'the index entry is gone')
  t.not(await redis.zscore(`${prefix}:revoked`, pair.sessionId), null, 'the sid is in <prefix>:revoked')
  const res = await me(app, c.json().accessToken)
  t.equal(res.statusCode, 401)
  t.equal(res.json().code, 'TOKENGATE_TOKEN_REVOKED')
  const last = await refresh(app, c.json().refreshToken)
  t.equal(last.statusCode, 401)
  t.equal(last.json().code, 'TOKENGATE_REFRESH_INVALID')
})
