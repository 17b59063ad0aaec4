// GET /auth/sessions, DELETE /auth/sessions/:id, POST /auth/logout-all, native Redis expiry,
// rotateRefreshTokens: false and lastUsedAt, checked against what Redis holds.
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { buildApp, login, sleep, until, USERS } from '../helpers/app.js'
import { fakeClock } from '../helpers/clock.js'
import { keysUnder, readSession, readSessions, sessionsKey, userEpoch } from '../helpers/redis.js'
import { hashOf as refreshHash } from '../helpers/tokens.js'

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/

interface Pair { accessToken: string, refreshToken: string, sessionId: string }

async function loginAs (app: FastifyInstance, username: string, userAgent: string): Promise<Pair> {
  const res = await app.inject({
    method: 'POST',
    url: '/auth/login',
    headers: { 'user-agent': userAgent },
    payload: { username, password: USERS[username].password }
  })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
  return res.json()
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

async function list (app: FastifyInstance, accessToken: string): Promise<LightMyRequestResponse> {
  return await app.inject({ url: '/auth/sessions', headers: bearer(accessToken) })
}

async function refresh (app: FastifyInstance, refreshToken: string): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken } })
}

t.test('GET /auth/sessions lists both sessions, newest first, current only for the caller', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const first = await loginAs(app, 'alice', 'FirstBrowser/1.0')
  await sleep(10) // distinct creation times
  const second = await loginAs(app, 'alice', 'SecondBrowser/2.0')
  await loginAs(app, 'bob', 'BobBrowser/3.0') // another user's session must not show

  const res = await list(app, first.accessToken)
  t.equal(res.statusCode, 200, res.body)
  const sessions = res.json() as Array<Record<string, unknown>>
  t.equal(sessions.length, 2, 'both sessions of alice, none of bob')
  t.same(sessions.map(s => s.id), [second.sessionId, first.sessionId], 'newest first')
  t.same(sessions.map(s => s.userAgent), ['SecondBrowser/2.0', 'FirstBrowser/1.0'])
  t.same(sessions.map(s => s.current), [false, true], 'current only for the caller')
  for (const s of sessions) {
    t.same(Object.keys(s).sort(), ['createdAt', 'current', 'expiresAt', 'id', 'ip', 'lastUsedAt', 'userAgent'])
    t.match(s.createdAt, ISO)
    t.match(s.lastUsedAt, ISO)
    t.match(s.expiresAt, ISO)
    t.equal(s.ip, '127.0.0.1')
    const rec = (await readSession(redis, prefix, 'u-alice', s.id as string))!
    t.equal(s.createdAt, new Date(rec.st).toISOString(), 'createdAt from st')
    t.equal(s.lastUsedAt, new Date(rec.lu).toISOString(), 'lastUsedAt from lu')
    t.equal(s.expiresAt, new Date(rec.re).toISOString(), 'expiresAt is the refresh expiry')
    t.equal(rec.ua, s.userAgent)
    t.equal(rec.ip, '127.0.0.1')
    t.ok(Date.parse(s.expiresAt as string) > Date.parse(s.createdAt as string))
  }
  t.ok(Date.parse(sessions[0].createdAt as string) > Date.parse(sessions[1].createdAt as string))

  const fromSecond = await list(app, second.accessToken)
  t.equal(fromSecond.statusCode, 200)
  t.same((fromSecond.json() as Array<Record<string, unknown>>).map(s => [s.id, s.current]), [[second.sessionId, true], [first.sessionId, false]])

  const anon = await app.inject({ url: '/auth/sessions' })
  t.equal(anon.statusCode, 401)
  t.equal(anon.json().code, 'TOKENGATE_TOKEN_MISSING')
})

t.test('DELETE /auth/sessions/:id → 204 and the session is gone', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const keep = await loginAs(app, 'alice', 'Keep/1')
  const drop = await loginAs(app, 'alice', 'Drop/1')

  const del = await app.inject({ method: 'DELETE', url: `/auth/sessions/${drop.sessionId}`, headers: bearer(keep.accessToken) })
  t.equal(del.statusCode, 204, del.body)
  t.equal(del.body, '')

  const res = await list(app, keep.accessToken)
  t.same((res.json() as Array<{ id: string }>).map(s => s.id), [keep.sessionId], 'gone from the list')
  t.same(Object.keys(await readSessions(redis, prefix, 'u-alice') ?? {}), [keep.sessionId], 'gone from Redis, the other session stays')
  t.not(await redis.zscore(`${prefix}:revoked`, drop.sessionId), null, 'the deleted sid is in <prefix>:revoked')

  const dropped = await app.inject({ url: '/me', headers: bearer(drop.accessToken) })
  t.equal(dropped.statusCode, 401)
  t.equal(dropped.json().code, 'TOKENGATE_TOKEN_REVOKED')
  const r = await refresh(app, drop.refreshToken)
  t.equal(r.statusCode, 401)
  t.equal(r.json().code, 'TOKENGATE_REFRESH_INVALID')
  t.equal((await app.inject({ url: '/me', headers: bearer(keep.accessToken) })).statusCode, 200, 'the caller still works')

  const again = await app.inject({ method: 'DELETE', url: `/auth/sessions/${drop.sessionId}`, headers: bearer(keep.accessToken) })
  t.equal(again.statusCode, 404, 'deleting twice: not found')
  t.equal(again.json().code, 'TOKENGATE_SESSION_NOT_FOUND')
})

t.test('DELETE /auth/sessions/:id: 404 for an unknown id or another user\'s session, 401 without a token', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const alice = await loginAs(app, 'alice', 'A/1')
  const bob = await loginAs(app, 'bob', 'B/1')

  const unknown = await app.inject({ method: 'DELETE', url: '/auth/sessions/no-such-session', headers: bearer(alice.accessToken) })
  t.equal(unknown.statusCode, 404, unknown.body)
  t.equal(unknown.json().code, 'TOKENGATE_SESSION_NOT_FOUND')

  const foreign = await app.inject({ method: 'DELETE', url: `/auth/sessions/${bob.sessionId}`, headers: bearer(alice.accessToken) })
  t.equal(foreign.statusCode, 404, 'another user\'s session is not found')
  t.equal(foreign.json().code, 'TOKENGATE_SESSION_NOT_FOUND')
  t.ok(await readSession(redis, prefix, 'u-bob', bob.sessionId), 'bob\'s session untouched')

  const anon = await app.inject({ method: 'DELETE', url: `/auth/sessions/${alice.sessionId}` })
  t.equal(anon.statusCode, 401, anon.body)
  t.equal(anon.json().code, 'TOKENGATE_TOKEN_MISSING')
  t.equal(anon.headers['www-authenticate'], 'Bearer')
  t.ok(await readSession(redis, prefix, 'u-alice', alice.sessionId), 'alice\'s session untouched')
})

t.test('POST /auth/logout-all → 204, every session of the user gone, other users untouched', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const a1 = await loginAs(app, 'alice', 'A/1')
  const a2 = await loginAs(app, 'alice', 'A/2')
  const a3 = await loginAs(app, 'alice', 'A/3')
  const bob = await loginAs(app, 'bob', 'B/1')
  const bobBefore = await redis.getBuffer(sessionsKey(prefix, 'u-bob'))
  t.same(await keysUnder(redis, `${prefix}:{u-alice}`), [sessionsKey(prefix, 'u-alice')], 'one key for alice before')
  t.equal(Object.keys(await readSessions(redis, prefix, 'u-alice') ?? {}).length, 3, 'holding her three sessions')

  const before = Date.now()
  const res = await app.inject({ method: 'POST', url: '/auth/logout-all', headers: bearer(a2.accessToken) })
  const after = Date.now()
  t.equal(res.statusCode, 204, res.body)
  const epoch = await userEpoch(redis, prefix, 'u-alice')
  t.ok(epoch !== null && epoch >= before && epoch <= after, 'one entry for alice in <prefix>:epochs: the time of the logout-all')

  t.same(await keysUnder(redis, `${prefix}:{u-alice}`), [], 'no keys left under <prefix>:{u-alice}')
  for (const s of [a1, a2, a3]) {
    t.equal(await redis.zscore(`${prefix}:revoked`, s.sessionId), null, 'no entry per session in <prefix>:revoked')
    const me = await app.inject({ url: '/me', headers: bearer(s.accessToken) })
    t.equal(me.statusCode, 401)
    t.equal(me.json().code, 'TOKENGATE_TOKEN_REVOKED')
    const r = await refresh(app, s.refreshToken)
    t.equal(r.statusCode, 401)
    t.equal(r.json().code, 'TOKENGATE_REFRESH_INVALID')
  }

  t.same(await redis.getBuffer(sessionsKey(prefix, 'u-bob')), bobBefore, 'bob\'s key untouched')
  t.equal(await redis.zscore(`${prefix}:revoked`, bob.sessionId), null, 'bob not revoked')
  t.equal(await userEpoch(redis, prefix, 'u-bob'), null, 'bob has no epoch')
  t.equal((await app.inject({ url: '/me', headers: bearer(bob.accessToken) })).statusCode, 200)

  const anon = await app.inject({ method: 'POST', url: '/auth/logout-all' })
  t.equal(anon.statusCode, 401)
  t.equal(anon.json().code, 'TOKENGATE_TOKEN_MISSING')
})

t.test('native expiry: the session key expires in Redis by itself', async t => {
  // Redis expires keys by its own (real) clock. The Date clock is stopped a second behind it, so the key,
  // due 2 s after login by that clock (refresh TTL + access TTL), is due a second after login in Redis.
  const clock = fakeClock(t, Date.now() - 1000)
  const { app, redis, prefix } = await buildApp(t, { accessTokenTtl: '1s', refreshTokenTtl: '1s' })
  const pair = await login(app)
  const key = sessionsKey(prefix, 'u-alice')
  const rec = await readSession(redis, prefix, 'u-alice', pair.sessionId)
  t.equal(rec?.re, clock.now() + 1000, 'refresh expiry = login + refresh TTL')
  t.equal(rec?.x, (rec?.re ?? 0) + 1000, 'record expiry = re + access TTL')
  t.equal(Number(await redis.pexpiretime(key)), rec?.x, 'the key expires with it')

  await until('Redis expires the key', 10_000, async () => await redis.pttl(key) === -2)
  t.same(await keysUnder(redis, `${prefix}:{u-alice}`), [], 'nothing left for the user')

  clock.to(rec!.re)
  const r = await refresh(app, pair.refreshToken)
  t.equal(r.statusCode, 401, r.body)
  t.equal(r.json().code, 'TOKENGATE_REFRESH_EXPIRED')
})

t.test('rotateRefreshTokens: false → the same refresh token every time, h kept', async t => {
  const { app, redis, prefix } = await buildApp(t, { rotateRefreshTokens: false })
  const pair = await login(app)
  const before = (await readSession(redis, prefix, 'u-alice', pair.sessionId))!
  t.equal(before.h, refreshHash(pair.refreshToken))
  const accessTokens = new Set<string>([pair.accessToken])
  for (let i = 0; i < 3; i++) {
    await sleep(5)
    const res = await refresh(app, pair.refreshToken)
    t.equal(res.statusCode, 200, res.body)
    const next = res.json()
    t.equal(next.refreshToken, pair.refreshToken, `refresh ${i + 1}: same refresh token`)
    t.equal(next.sessionId, pair.sessionId)
    accessTokens.add(next.accessToken)
    t.equal((await app.inject({ url: '/me', headers: bearer(next.accessToken) })).statusCode, 200)
    const rec = await readSession(redis, prefix, 'u-alice', pair.sessionId)
    t.equal(rec?.h, before.h, `refresh ${i + 1}: h kept`)
    t.equal(rec?.re, before.re, `refresh ${i + 1}: the refresh expiry does not move`)
  }
  t.equal(accessTokens.size, 4, 'each refresh minted a new access token')
  t.same(Object.keys(await readSessions(redis, prefix, 'u-alice') ?? {}), [pair.sessionId], 'still one session')
})

t.test('lastUsedAt moves on refresh', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const pair = await login(app)
  const before = (await readSession(redis, prefix, 'u-alice', pair.sessionId))!
  t.equal(before.lu, before.st, 'lastUsedAt = createdAt at login')

  await sleep(30)
  const r = await refresh(app, pair.refreshToken)
  t.equal(r.statusCode, 200, r.body)
  const after = (await readSession(redis, prefix, 'u-alice', pair.sessionId))!
  t.ok(after.lu > before.lu, 'lu moved forward')
  t.equal(after.st, before.st, 'st kept')

  const res = await list(app, r.json().accessToken)
  t.equal(res.statusCode, 200, res.body)
  const [s] = res.json() as Array<{ createdAt: string, lastUsedAt: string }>
  t.equal(s.lastUsedAt, new Date(after.lu).toISOString())
  t.ok(Date.parse(s.lastUsedAt) > Date.parse(s.createdAt), 'listed lastUsedAt is after createdAt')
})
