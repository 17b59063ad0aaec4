// maxSessionsPerUser: a login beyond the limit revokes the user's least recently used session (by last use,
// which moves at login and at each refresh, not by age), in the same Redis script as the new session; the
// evicted session's tokens die at once on every instance.
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import tokengate, { type AuditMeta, type TokengateOptions } from '../../plugin/index.js'
import { buildApp, login, SECRET, sleep } from '../helpers/app.js'
import { keysUnder, readSessions, sessionsKey, uniquePrefix } from '../helpers/redis.js'

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

async function me (app: FastifyInstance, accessToken: string): Promise<LightMyRequestResponse> {
  return await app.inject({ url: '/me', headers: bearer(accessToken) })
}

/** Polls another instance until it refuses the token (at most 2 s); returns its last answer. */
async function untilRefused (app: FastifyInstance, accessToken: string): Promise<{ res: LightMyRequestResponse, ms: number }> {
  const start = Date.now()
  let res = await me(app, accessToken)
  while (res.statusCode === 200 && Date.now() - start < 2000) {
    await sleep(10)
    res = await me(app, accessToken)
  }
  return { res, ms: Date.now() - start }
}

t.test('maxSessionsPerUser 2: a third login revokes the least recently used session, everywhere at once', async t => {
  const revoked: Array<[string, string, AuditMeta]> = []
  const A = await buildApp(t, { maxSessionsPerUser: 2, onRevoke: (userId, sessionId, meta) => { revoked.push([userId, sessionId, meta]) } })
  const B = await buildApp(t, { maxSessionsPerUser: 2 }, { prefix: A.prefix })
  const { redis, prefix } = A

  const first = await login(A.app)
  await sleep(5) // distinct last-use times
  const second = await login(A.app)
  await sleep(5)
  // Refreshing the first (older) session makes the second the least recently used.
  const r = await A.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: first.refreshToken } })
  t.equal(r.statusCode, 200, r.body)
  const firstNow = r.json()
  for (const token of [firstNow.accessToken, second.accessToken]) t.equal((await me(B.app, token)).statusCode, 200, 'both sessions work on B before the third login')
  await sleep(5)

  const third = await login(A.app)
  t.same(Object.keys(await readSessions(redis, prefix, 'u-alice') ?? {}).sort(), [first.sessionId, third.sessionId].sort(), 'Redis holds exactly the two live sessions: the refreshed one and the new one')
  t.same(await keysUnder(redis, `${prefix}:{u-alice}`), [sessionsKey(prefix, 'u-alice')], 'in the one key of the user')

  const onA = await me(A.app, second.accessToken)
  t.equal(onA.statusCode, 401, 'the evicted session\'s access token is refused at once on this instance')
  t.equal(onA.json().code, 'TOKENGATE_TOKEN_REVOKED')
  const { res: onB, ms } = await untilRefused(B.app, second.accessToken)
  t.comment(`B refused the evicted session's access token ${ms} ms after the login on A`)
  t.equal(onB.statusCode, 401, 'and on another instance within 2 s')
  t.equal(onB.json().code, 'TOKENGATE_TOKEN_REVOKED')
  const refresh = await B.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: second.refreshToken } })
  t.equal(refresh.statusCode, 401, refresh.body)
  t.equal(refresh.json().code, 'TOKENGATE_REFRESH_INVALID', 'its refresh token is refused')
  t.not(await redis.zscore(`${prefix}:revoked`, second.sessionId), null, 'the eviction is recorded in <prefix>:revoked')

  t.same(revoked.map(([userId, sessionId, meta]) => [userId, sessionId, meta.reason]), [['u-alice', second.sessionId, 'limit']], 'onRevoke fired once, with reason limit')
  for (const [name, token] of [['the refreshed session', firstNow.accessToken], ['the new session', third.accessToken]]) {
    for (const app of [A.app, B.app]) t.equal((await me(app, token)).statusCode, 200, `${name} still works`)
  }
  const listed = await A.app.inject({ url: '/auth/sessions', headers: bearer(third.accessToken) })
  t.same((listed.json() as Array<{ id: string }>).map(s => s.id), [third.sessionId, first.sessionId], 'GET /auth/sessions shows the two live sessions')
})

t.test('maxSessionsPerUser counts per user: another user\'s logins evict nothing', async t => {
  const { app, redis, prefix } = await buildApp(t, { maxSessionsPerUser: 1 })
  const alice = await login(app)
  const bob1 = await login(app, 'bob')
  const bob2 = await login(app, 'bob')
  t.equal((await me(app, alice.accessToken)).statusCode, 200, 'alice keeps her session')
  t.equal((await me(app, bob1.accessToken)).json().code, 'TOKENGATE_TOKEN_REVOKED', 'bob\'s first session is evicted by his second')
  t.equal((await me(app, bob2.accessToken)).statusCode, 200)
  t.same(Object.keys(await readSessions(redis, prefix, 'u-bob') ?? {}), [bob2.sessionId])
})

/** register must fail naming maxSessionsPerUser. */
async function failsNaming (t: Test, value: unknown): Promise<void> {
  const app = Fastify()
  t.teardown(async () => { await app.close() })
  app.register(tokengate, { secret: SECRET, keyPrefix: uniquePrefix('limits'), maxSessionsPerUser: value } as unknown as TokengateOptions)
  const err = await app.ready().then(() => null, (e: unknown) => e as Error)
  t.ok(err instanceof Error, `maxSessionsPerUser ${JSON.stringify(value)}: register fails`)
  t.match(err?.message, /option "maxSessionsPerUser"/, 'the message names the option')
}

t.test('a bad maxSessionsPerUser fails register, naming the option', async t => {
  for (const value of [0, 1.5, '2', -1]) await t.test(`maxSessionsPerUser ${JSON.stringify(value)}`, async t => { await failsNaming(t, value) })
})
