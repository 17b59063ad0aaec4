// Revocation across instances: two (or three) apps on one Redis and one key prefix. A revocation holds at
// once on the instance that made it, within the pub/sub delay on the others, and on instances started later.
import t, { type Test } from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { Redis } from 'ioredis'
import { buildApp, login, sleep } from '../helpers/app.js'
import { readSession, readSessions, sessionsKey, userEpoch } from '../helpers/redis.js'

const ACCESS_WINDOW_MS = 600_000 // default access TTL (10m) + default clock tolerance (0)
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

const me = async (app: FastifyInstance, token: string): Promise<LightMyRequestResponse> =>
  await app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })

const bearer = (token: string): { authorization: string } => ({ authorization: `Bearer ${token}` })

/** Polls `app` every 5 ms for at most 2 s until the token is refused; returns the delay, or -1. */
async function untilRejected (app: FastifyInstance, token: string, limitMs = 2000): Promise<{ delay: number, res: LightMyRequestResponse }> {
  const start = Date.now()
  let res = await me(app, token)
  while (res.statusCode === 200 && Date.now() - start < limitMs) {
    await sleep(5)
    res = await me(app, token)
  }
  return { delay: res.statusCode === 200 ? -1 : Date.now() - start, res }
}

async function untilFeedUp (app: FastifyInstance, limitMs = 3000): Promise<boolean> {
  const deadline = Date.now() + limitMs
  while (!app.tokengate.feedUp && Date.now() < deadline) await sleep(10)
  return app.tokengate.feedUp
}

/** Asserts the `<prefix>:revoked` zset holds `sid`, scored about revocation time + access TTL. */
async function assertRevokedEntry (t: Test, redis: Redis, prefix: string, sid: string, before: number, after: number): Promise<void> {
  const score = await redis.zscore(`${prefix}:revoked`, sid)
  t.not(score, null, `${sid} is in ${prefix}:revoked`)
  t.ok(Number(score) >= before + ACCESS_WINDOW_MS && Number(score) <= after + ACCESS_WINDOW_MS,
    `revoked score ${score} is revocation time + access TTL (between ${before + ACCESS_WINDOW_MS} and ${after + ACCESS_WINDOW_MS})`)
  const pttl = await redis.pttl(`${prefix}:revoked`)
  t.ok(pttl > 0 && pttl <= ACCESS_WINDOW_MS + 1000, `${prefix}:revoked expires with its last member (pttl ${pttl})`)
}

async function twoInstances (t: Test, options = {}): Promise<{ a: FastifyInstance, b: FastifyInstance, redis: Redis, prefix: string }> {
  const A = await buildApp(t, options)
  const B = await buildApp(t, options, { prefix: A.prefix })
  await A.app.ready()
  await B.app.ready()
  t.ok(await untilFeedUp(A.app), 'feed of A is up')
  t.ok(await untilFeedUp(B.app), 'feed of B is up')
  return { a: A.app, b: B.app, redis: A.redis, prefix: A.prefix }
}

t.test('logout on A: rejected at once on A and after the pub/sub delay on B', async t => {
  const { a, b, redis, prefix } = await twoInstances(t)
  const pair = await login(a)
  const sid = pair.sessionId

  for (const [name, app] of [['A', a], ['B', b]] as const) {
    const res = await me(app, pair.accessToken)
    t.equal(res.statusCode, 200, `token works on ${name}: ${res.body}`)
    t.equal(res.json().sessionId, sid)
  }
  t.ok(await readSession(redis, prefix, 'u-alice', sid), 'session record in Redis')

  const before = Date.now()
  const out = await a.inject({ method: 'POST', url: '/auth/logout', headers: bearer(pair.accessToken) })
  const after = Date.now()
  t.equal(out.statusCode, 204, out.body)

  const onA = await me(a, pair.accessToken)
  t.equal(onA.statusCode, 401, 'A rejects at once')
  t.equal(onA.json().code, 'TOKENGATE_TOKEN_REVOKED')
  t.equal(onA.headers['www-authenticate'], 'Bearer error="invalid_token"')

  const { delay, res } = await untilRejected(b, pair.accessToken)
  t.comment(`B rejected the revoked token ${delay} ms after logout on A returned (polled every 5 ms)`)
  t.ok(delay >= 0, 'B rejects the token within 2 s')
  t.equal(res.statusCode, 401)
  t.equal(res.json().code, 'TOKENGATE_TOKEN_REVOKED')
  t.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"')
  t.equal(b.tokengate.feedUp, true, 'B saw it through its feed (still up), not a per-request lookup')

  // The refresh token is unusable too, on either instance.
  const r = await b.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(r.statusCode, 401, r.body)
  t.equal(r.json().code, 'TOKENGATE_REFRESH_INVALID')

  t.equal(await redis.exists(sessionsKey(prefix, 'u-alice')), 0, 'session deleted, and the user\'s key with its last session')
  await assertRevokedEntry(t, redis, prefix, sid, before, after)
})

t.test('logout-all on A revokes every session of the user on both instances, other users untouched', async t => {
  const { a, b, redis, prefix } = await twoInstances(t)
  const one = await login(a)
  const two = await login(b)
  const bob = await login(a, 'bob')
  t.not(one.sessionId, two.sessionId)
  t.same(Object.keys(await readSessions(redis, prefix, 'u-alice') ?? {}).sort(), [one.sessionId, two.sessionId].sort(), 'both sessions stored')

  const before = Date.now()
  const out = await a.inject({ method: 'POST', url: '/auth/logout-all', headers: bearer(one.accessToken) })
  const after = Date.now()
  t.equal(out.statusCode, 204, out.body)

  for (const pair of [one, two]) {
    const onA = await me(a, pair.accessToken)
    t.equal(onA.statusCode, 401, 'A rejects at once')
    t.equal(onA.json().code, 'TOKENGATE_TOKEN_REVOKED')
    const { delay, res } = await untilRejected(b, pair.accessToken)
    t.comment(`B rejected session ${pair.sessionId} after ${delay} ms`)
    t.ok(delay >= 0, 'B rejects the token within 2 s')
    t.equal(res.json().code, 'TOKENGATE_TOKEN_REVOKED')
    t.equal(await readSession(redis, prefix, 'u-alice', pair.sessionId), undefined, 'record deleted')
    t.equal(await redis.zscore(`${prefix}:revoked`, pair.sessionId), null, 'no entry per session: one epoch for the user instead')
  }
  const epoch = await userEpoch(redis, prefix, 'u-alice')
  t.ok(epoch !== null && epoch >= before && epoch <= after, `alice's epoch in ${prefix}:epochs is the time of the logout-all`)
  const pttl = await redis.pttl(`${prefix}:epochs`)
  t.ok(pttl > 0 && pttl <= 600_000 + after - before, `${prefix}:epochs expires an access TTL after its latest epoch (pttl ${pttl})`)
  t.equal(await redis.exists(sessionsKey(prefix, 'u-alice')), 0, 'alice\'s key deleted')

  // bob is untouched, on both instances and in Redis.
  for (const app of [a, b]) {
    const res = await me(app, bob.accessToken)
    t.equal(res.statusCode, 200, res.body)
    t.equal(res.json().userId, 'u-bob')
  }
  t.same(Object.keys(await readSessions(redis, prefix, 'u-bob') ?? {}), [bob.sessionId], "bob's session kept")
  t.ok(await redis.pttl(sessionsKey(prefix, 'u-bob')) > 0, "bob's key still expires")
  t.equal(await redis.zscore(`${prefix}:revoked`, bob.sessionId), null, 'bob not in the revoked set')
  t.equal(await userEpoch(redis, prefix, 'u-bob'), null, 'bob has no epoch')
  const r = await b.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: bob.refreshToken } })
  t.equal(r.statusCode, 200, "bob's refresh token still works")
})

t.test('GET /auth/sessions and DELETE /auth/sessions/:id on B revoke another session on A', async t => {
  const { a, b, redis, prefix } = await twoInstances(t)
  const one = await login(a)
  const two = await login(a)

  const list = await b.inject({ url: '/auth/sessions', headers: bearer(one.accessToken) })
  t.equal(list.statusCode, 200, list.body)
  const sessions = list.json() as Array<Record<string, unknown>>
  t.equal(sessions.length, 2, 'both sessions listed')
  t.same(sessions.map(s => s.id).sort(), [one.sessionId, two.sessionId].sort())
  t.same(sessions.filter(s => s.current === true).map(s => s.id), [one.sessionId], 'current: true only on the caller\'s session')
  t.same(sessions.filter(s => s.current === false).map(s => s.id), [two.sessionId], 'current: false on the other')
  for (const s of sessions) {
    for (const f of ['createdAt', 'lastUsedAt', 'expiresAt']) t.match(s[f], ISO, `${f} is ISO-8601`)
    t.equal(s.ip, '127.0.0.1')
    t.type(s.userAgent, 'string')
  }

  const before = Date.now()
  const del = await b.inject({ method: 'DELETE', url: `/auth/sessions/${two.sessionId}`, headers: bearer(one.accessToken) })
  const after = Date.now()
  t.equal(del.statusCode, 204, del.body)
  t.equal(del.body, '')

  const onB = await me(b, two.accessToken)
  t.equal(onB.statusCode, 401, 'B (which deleted it) rejects at once')
  t.equal(onB.json().code, 'TOKENGATE_TOKEN_REVOKED')
  const { delay, res } = await untilRejected(a, two.accessToken)
  t.comment(`A rejected the deleted session's token after ${delay} ms`)
  t.ok(delay >= 0, 'A rejects the token within 2 s')
  t.equal(res.json().code, 'TOKENGATE_TOKEN_REVOKED')

  for (const app of [a, b]) t.equal((await me(app, one.accessToken)).statusCode, 200, "the caller's session still works")
  const left = await readSessions(redis, prefix, 'u-alice')
  t.same(Object.keys(left ?? {}), [one.sessionId], 'the deleted session is gone, the caller\'s is kept')
  t.equal(Number(await redis.pexpiretime(sessionsKey(prefix, 'u-alice'))), left?.[one.sessionId]?.x, 'the key now expires with the caller\'s session')
  await assertRevokedEntry(t, redis, prefix, two.sessionId, before, after)
  t.equal(await redis.zscore(`${prefix}:revoked`, one.sessionId), null, 'caller not revoked')

  const list2 = await a.inject({ url: '/auth/sessions', headers: bearer(one.accessToken) })
  t.same((list2.json() as Array<{ id: string }>).map(s => s.id), [one.sessionId], 'only the caller\'s session listed now')
})

t.test('DELETE /auth/sessions/:id of an unknown id or of another user\'s session: 404, nothing touched', async t => {
  const { a, b, redis, prefix } = await twoInstances(t)
  const alice = await login(a)
  const bob = await login(a, 'bob')
  const bobKey = sessionsKey(prefix, 'u-bob')
  const bobBefore = await redis.getBuffer(bobKey)
  t.equal((await readSession(redis, prefix, 'u-bob', bob.sessionId))?.h.length, 22, "bob's record has a refresh hash")

  const unknown = await b.inject({ method: 'DELETE', url: '/auth/sessions/no-such-session-id', headers: bearer(alice.accessToken) })
  t.equal(unknown.statusCode, 404, unknown.body)
  t.equal(unknown.json().code, 'TOKENGATE_SESSION_NOT_FOUND')
  t.equal(await redis.zscore(`${prefix}:revoked`, 'no-such-session-id'), null, 'unknown id not marked revoked')

  const other = await b.inject({ method: 'DELETE', url: `/auth/sessions/${bob.sessionId}`, headers: bearer(alice.accessToken) })
  t.equal(other.statusCode, 404, other.body)
  t.equal(other.json().code, 'TOKENGATE_SESSION_NOT_FOUND')

  t.same(await redis.getBuffer(bobKey), bobBefore, "bob's key unchanged, byte for byte")
  t.ok(await redis.pttl(bobKey) > 0, "bob's key still expires")
  t.equal(await redis.zscore(`${prefix}:revoked`, bob.sessionId), null, 'bob not in the revoked set')
  t.equal(await userEpoch(redis, prefix, 'u-bob'), null, 'bob has no epoch')
  await sleep(50) // give a (wrong) pub/sub message time to arrive
  for (const app of [a, b]) t.equal((await me(app, bob.accessToken)).statusCode, 200, "bob's token still works")
  t.equal((await me(a, alice.accessToken)).statusCode, 200, "the caller's token still works")
  t.ok(await readSession(redis, prefix, 'u-alice', alice.sessionId), "the caller's record kept")
})

t.test('reuse detected on B revokes the session\'s access tokens on A', async t => {
  const { a, b, redis, prefix } = await twoInstances(t, { reuseGraceMs: 0 })
  const pair = await login(a)
  const before = Date.now()
  await sleep(2) // a rotation in the same millisecond would still be inside a 0 ms window
  const r1 = await b.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(r1.statusCode, 200, r1.body)
  const next = r1.json()
  t.not(next.refreshToken, pair.refreshToken, 'rotated')
  t.equal(next.sessionId, pair.sessionId)
  t.equal((await me(a, next.accessToken)).statusCode, 200, 'the refreshed access token works on A')
  await sleep(2)

  const r2 = await b.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  const after = Date.now()
  t.equal(r2.statusCode, 401, r2.body)
  t.equal(r2.json().code, 'TOKENGATE_REFRESH_REUSED')
  t.equal(r2.headers['www-authenticate'], 'Bearer error="invalid_token"')

  for (const token of [pair.accessToken, next.accessToken]) {
    const onB = await me(b, token)
    t.equal(onB.statusCode, 401, 'B rejects at once')
    t.equal(onB.json().code, 'TOKENGATE_TOKEN_REVOKED')
    const { delay, res } = await untilRejected(a, token)
    t.comment(`A rejected an access token of the reused session after ${delay} ms`)
    t.ok(delay >= 0, 'A rejects the token within 2 s')
    t.equal(res.json().code, 'TOKENGATE_TOKEN_REVOKED')
  }
  const r3 = await a.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: next.refreshToken } })
  t.equal(r3.statusCode, 401, 'the successor refresh token is dead too')
  t.equal(r3.json().code, 'TOKENGATE_REFRESH_INVALID')
  t.equal(await redis.exists(sessionsKey(prefix, 'u-alice')), 0, 'session deleted, and the user\'s key with its last session')
  await assertRevokedEntry(t, redis, prefix, pair.sessionId, before, after)
})

t.test('an instance started after a revocation rejects the revoked token (loads <prefix>:revoked at start)', async t => {
  const A = await buildApp(t)
  const pair = await login(A.app)
  const out = await A.app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(pair.accessToken) })
  t.equal(out.statusCode, 204, out.body)
  t.not(await A.redis.zscore(`${A.prefix}:revoked`, pair.sessionId), null, 'revocation recorded in Redis')
  t.equal(await A.redis.exists(sessionsKey(A.prefix, 'u-alice')), 0, 'no session record left')

  // A third instance, started now: no pub/sub message reaches it for this revocation.
  const C = await buildApp(t, {}, { prefix: A.prefix })
  await C.app.ready()
  const early = await me(C.app, pair.accessToken)
  t.equal(early.statusCode, 401, 'rejected right after ready')
  t.equal(early.json().code, 'TOKENGATE_TOKEN_REVOKED')

  t.ok(await untilFeedUp(C.app), 'feed of the new instance is up')
  // With the feed up the check is in memory only: the revoked set was loaded.
  const res = await me(C.app, pair.accessToken)
  t.equal(res.statusCode, 401)
  t.equal(res.json().code, 'TOKENGATE_TOKEN_REVOKED')
  await t.rejects(C.app.tokengate.verify(pair.accessToken), { code: 'TOKENGATE_TOKEN_REVOKED' }, 'verify() rejects too')

  const fresh = await login(C.app)
  t.equal((await me(C.app, fresh.accessToken)).statusCode, 200, 'a new session works on the new instance')
})

t.test('app.tokengate.revokeSession, revokeAll and listSessions', async t => {
  const { a, b, redis, prefix } = await twoInstances(t)
  const one = await login(a)
  await sleep(2) // distinct start times: listSessions is newest first
  const two = await login(a)
  const bob = await login(a, 'bob')

  const list = await a.tokengate.listSessions('u-alice')
  t.equal(list.length, 2)
  t.same(list.map(s => s.id), [two.sessionId, one.sessionId], 'newest first')
  for (const s of list) {
    t.same(Object.keys(s).sort(), ['createdAt', 'expiresAt', 'id', 'ip', 'lastUsedAt', 'userAgent'], 'SessionInfo fields, no `current` outside HTTP')
    for (const f of ['createdAt', 'lastUsedAt', 'expiresAt'] as const) {
      t.match(s[f], ISO, `${f} is ISO-8601`)
      t.equal(new Date(s[f]).toISOString(), s[f])
    }
    const created = Date.parse(s.createdAt)
    t.ok(Math.abs(Date.parse(s.expiresAt) - created - 86_400_000) < 1000, 'expiresAt = createdAt + refresh TTL')
    t.equal(s.ip, '127.0.0.1')
    const record = await readSession(redis, prefix, 'u-alice', s.id)
    t.equal(record?.st, created, 'createdAt is the record\'s st')
  }
  t.same(await b.tokengate.listSessions('u-alice'), list, 'B lists the same sessions')

  t.equal(await a.tokengate.revokeSession('u-alice', one.sessionId), true, 'revokeSession → true')
  t.equal(await b.tokengate.revokeSession('u-alice', one.sessionId), false, 'again → false')
  t.equal(await a.tokengate.revokeSession('u-alice', bob.sessionId), false, "another user's session id → false")
  t.ok(await readSession(redis, prefix, 'u-bob', bob.sessionId), "bob's record untouched")
  t.equal(await readSession(redis, prefix, 'u-alice', one.sessionId), undefined, 'record deleted')
  t.not(await redis.zscore(`${prefix}:revoked`, one.sessionId), null, 'recorded as revoked')
  const onA = await me(a, one.accessToken)
  t.equal(onA.json().code, 'TOKENGATE_TOKEN_REVOKED', 'A rejects at once')
  const { delay } = await untilRejected(b, one.accessToken)
  t.ok(delay >= 0, 'B rejects within 2 s')
  t.same((await a.tokengate.listSessions('u-alice')).map(s => s.id), [two.sessionId])

  const bob2 = await login(b, 'bob')
  t.equal(await b.tokengate.revokeAll('u-bob'), 2, 'revokeAll → how many sessions there were')
  t.equal(await b.tokengate.revokeAll('u-bob'), 0, 'again → 0')
  t.same(await a.tokengate.listSessions('u-bob'), [])
  t.equal(await redis.exists(sessionsKey(prefix, 'u-bob')), 0, "bob's key deleted")
  for (const pair of [bob, bob2]) {
    t.equal((await me(b, pair.accessToken)).json().code, 'TOKENGATE_TOKEN_REVOKED', 'B rejects at once')
    const r = await untilRejected(a, pair.accessToken)
    t.ok(r.delay >= 0, 'A rejects within 2 s')
  }
  t.equal((await me(a, two.accessToken)).statusCode, 200, "alice's remaining session untouched")
  t.same((await a.tokengate.listSessions('u-alice')).map(s => s.id), [two.sessionId])
})
