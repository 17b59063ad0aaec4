// Mass revocation in O(1): revokeAll(userId) and revokeEveryone() are each ONE "not before" entry (per user,
// or for everybody) on every instance and in Redis, not one entry per session. Every access and refresh
// token issued before the call is refused (at once on the instance that made it, within the feed delay on
// the others, and by instances started later), tokens issued after it work, even within the same second,
// and the check takes the latest of the user's and everybody's epoch everywhere a token is checked: the
// hook, verify(), introspection and refresh.
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { buildApp, login, sleep } from '../helpers/app.js'
import { redisUrl, userEpoch } from '../helpers/redis.js'
import { aheadStart, fakeClock } from '../helpers/clock.js'

const CLIENT = { id: 'rs', secret: 'resource-server-secret' }
const OPTIONS = { issuer: 'https://auth.example', routes: { verifyCredentials: (await import('../helpers/app.js')).verifyCredentials, oauth: { introspectionClients: [CLIENT] } } }

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })
const me = async (app: FastifyInstance, token: string): Promise<LightMyRequestResponse> => await app.inject({ url: '/me', headers: bearer(token) })
const refresh = async (app: FastifyInstance, token: string): Promise<LightMyRequestResponse> => await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: token } })
async function introspect (app: FastifyInstance, token: string): Promise<boolean> {
  const res = await app.inject({
    method: 'POST',
    url: '/auth/introspect',
    headers: { authorization: `Basic ${Buffer.from(`${CLIENT.id}:${CLIENT.secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    payload: `token=${encodeURIComponent(token)}`
  })
  return res.json().active
}
const iat = (accessToken: string): number => JSON.parse(Buffer.from(accessToken.split('.')[1], 'base64url').toString()).iat

async function until (check: () => Promise<boolean> | boolean, ms = 2000): Promise<boolean> {
  const deadline = Date.now() + ms
  while (!await check()) {
    if (Date.now() > deadline) return false
    await sleep(5)
  }
  return true
}

async function instances (t: Test, n: number): Promise<{ apps: FastifyInstance[], redis: Redis, prefix: string, more: () => Promise<FastifyInstance> }> {
  const first = await buildApp(t, OPTIONS)
  const more = async (): Promise<FastifyInstance> => {
    const { app } = await buildApp(t, OPTIONS, { prefix: first.prefix })
    if (!await until(() => app.tokengate.feedUp, 3000)) throw new Error('feed did not come up')
    return app
  }
  const apps = [first.app]
  for (let i = 1; i < n; i++) apps.push(await more())
  return { apps, redis: first.redis, prefix: first.prefix, more }
}

/** Every channel message published under the prefix while `fn` runs. */
async function messagesDuring (prefix: string, fn: () => Promise<void>): Promise<string[]> {
  const sub = new Redis(await redisUrl())
  const got: string[] = []
  sub.on('message', (_channel: string, message: string) => { got.push(message) })
  await sub.subscribe(`${prefix}:revocations`)
  try {
    await fn()
    await sleep(50)
  } finally {
    sub.disconnect()
  }
  return got
}

t.test('revokeAll(userId): one entry for the user, whatever the number of sessions; every token of theirs issued before is refused everywhere', async t => {
  const { apps: [A, B], redis, prefix } = await instances(t, 2)
  const sessions = []
  for (let i = 0; i < 25; i++) sessions.push(await login(i % 2 === 0 ? A : B))
  const bob = await login(A, 'bob')

  let revoked = 0
  const before = Date.now()
  const published = await messagesDuring(prefix, async () => { revoked = await A.tokengate.revokeAll('u-alice') })
  t.equal(revoked, 25, 'revokeAll resolves to the number of sessions')
  t.same(published.filter(m => !m.startsWith(`${prefix}`)).length, 1, `one message on the feed for 25 sessions (${published.join(' ')})`)
  const epoch = await userEpoch(redis, prefix, 'u-alice')
  t.ok(epoch !== null && epoch >= before, 'one entry in <prefix>:epochs')
  t.equal(await redis.zcard(`${prefix}:revoked`), 0, 'nothing per session in <prefix>:revoked')

  for (const s of [sessions[0], sessions[1], sessions[24]]) {
    const onA = await me(A, s.accessToken)
    t.equal(onA.json().code, 'TOKENGATE_TOKEN_REVOKED', 'A refuses the access token at once')
    t.ok(await until(async () => (await me(B, s.accessToken)).statusCode === 401), 'B refuses it within the feed delay')
    t.equal((await refresh(B, s.refreshToken)).json().code, 'TOKENGATE_REFRESH_INVALID', 'the refresh token is refused')
    t.equal(await introspect(B, s.accessToken), false, 'introspection: inactive')
    await t.rejects(B.tokengate.verify(s.accessToken), { code: 'TOKENGATE_TOKEN_REVOKED' }, 'verify() refuses it')
  }
  // control: another user, and a login after the call, work
  t.equal((await me(B, bob.accessToken)).statusCode, 200, 'bob is untouched')
  const after = await login(B)
  t.equal((await me(A, after.accessToken)).statusCode, 200, 'a login after revokeAll works on A')
  t.equal((await me(B, after.accessToken)).statusCode, 200, 'and on B')
  t.equal((await refresh(A, after.refreshToken)).statusCode, 200, 'its refresh token works')
  t.equal(await introspect(A, after.accessToken), true, 'introspection: active')
})

t.test('the same second: a token issued just before revokeAll is refused, one issued just after works', async t => {
  const { apps: [A] } = await instances(t, 1)
  // JWT times are whole seconds: try until old token, epoch and new token all fall in one second.
  for (let attempt = 1; attempt <= 20; attempt++) {
    const old = await login(A)
    await A.tokengate.revokeAll('u-alice')
    const fresh = await login(A)
    if (iat(old.accessToken) !== iat(fresh.accessToken)) continue
    t.comment(`attempt ${attempt}: both tokens have iat ${iat(old.accessToken)}`)
    t.equal((await me(A, old.accessToken)).json().code, 'TOKENGATE_TOKEN_REVOKED', 'the token issued before the call, in the same second, is refused')
    t.equal((await me(A, fresh.accessToken)).statusCode, 200, 'the token issued after it, in the same second, works')
    const renewed = await refresh(A, fresh.refreshToken)
    t.equal(renewed.statusCode, 200, 'and its refresh token')
    t.equal((await me(A, renewed.json().accessToken)).statusCode, 200, 'and the token that gives')
    return
  }
  t.fail('no attempt fell within one second')
})

// The same millisecond, on a stopped clock: the token issued before the call and the one issued after it
// carry the same Date.now(). The epoch is the call's next millisecond, and a token issued once an epoch is
// known is issued no earlier than it. (The clock stands at a second's last millisecond: the epoch is in the
// next second, and so is a token issued after it.)
for (const store of ['Redis', 'the memory store']) {
  for (const call of ['revokeAll', 'revokeEveryone'] as const) {
    t.test(`the same millisecond (${store}): a token issued just before ${call} is refused, one issued just after works`, async t => {
      const { app: A } = await buildApp(t, store === 'Redis' ? OPTIONS : { ...OPTIONS, redis: undefined })
      fakeClock(t, aheadStart() + 999)
      const old = await login(A)
      const bob = await login(A, 'bob')
      t.equal((await me(A, old.accessToken)).statusCode, 200, 'control: the old token works before the call')
      if (call === 'revokeAll') await A.tokengate.revokeAll('u-alice')
      else await A.tokengate.revokeEveryone()
      const fresh = await login(A)
      t.equal((await me(A, old.accessToken)).json().code, 'TOKENGATE_TOKEN_REVOKED', 'the access token issued before the call, in the same millisecond, is refused')
      t.equal((await refresh(A, old.refreshToken)).statusCode, 401, 'and its refresh token')
      t.equal((await me(A, bob.accessToken)).statusCode, call === 'revokeAll' ? 200 : 401, call === 'revokeAll' ? 'another user\'s token works' : 'so is another user\'s')
      t.equal((await me(A, fresh.accessToken)).statusCode, 200, 'the token issued after it, in the same millisecond, works')
      const renewed = await refresh(A, fresh.refreshToken)
      t.equal(renewed.statusCode, 200, 'and its refresh token')
      t.equal((await me(A, renewed.json().accessToken)).statusCode, 200, 'and the token that gives')
    })
  }
}

t.test('revokeEveryone(): every token of every user issued before is refused, on every instance and on one started later', async t => {
  const { apps: [A, B], redis, prefix, more } = await instances(t, 2)
  const alice = await login(A)
  const bob = await login(B, 'bob')
  const published = await messagesDuring(prefix, async () => { await A.tokengate.revokeEveryone() })
  t.equal(published.length, 1, 'one message on the feed')
  t.not(await redis.get(`${prefix}:epoch`), null, 'one key: <prefix>:epoch')
  t.ok(await redis.pttl(`${prefix}:epoch`) > 29 * 86_400_000, 'kept as long as a session may live (maxSessionAge)')

  for (const s of [alice, bob]) {
    t.equal((await me(A, s.accessToken)).json().code, 'TOKENGATE_TOKEN_REVOKED', 'A refuses at once')
    t.ok(await until(async () => (await me(B, s.accessToken)).statusCode === 401), 'B within the feed delay')
    t.equal((await refresh(B, s.refreshToken)).json().code, 'TOKENGATE_REFRESH_INVALID', 'refresh tokens are refused')
    t.equal(await introspect(A, s.refreshToken), false, 'introspection of the refresh token: inactive')
  }
  t.same(await A.tokengate.listSessions('u-alice'), [], 'no session is listed')
  const C = await more()
  t.equal((await me(C, alice.accessToken)).json().code, 'TOKENGATE_TOKEN_REVOKED', 'an instance started later learns the epoch from Redis')
  const fresh = await login(C)
  for (const app of [A, B, C]) t.equal((await me(app, fresh.accessToken)).statusCode, 200, 'a login after it works everywhere')
  t.equal((await refresh(A, fresh.refreshToken)).statusCode, 200, 'and refreshes')
  t.same((await A.tokengate.listSessions('u-alice')).map(s => s.id), [fresh.sessionId], 'only the new session is listed')
})

t.test('the latest of the user\'s and everybody\'s epoch wins, either way round (CVE-2026-18218)', async t => {
  const { apps: [A, B] } = await instances(t, 2)
  // A user epoch older than the global one: the global one still holds.
  await A.tokengate.revokeAll('u-alice')
  const between = await login(A)
  await sleep(2)
  await A.tokengate.revokeEveryone()
  for (const app of [A, B]) {
    t.ok(await until(async () => (await me(app, between.accessToken)).statusCode === 401), 'a token issued between the user\'s and everybody\'s epoch is refused')
    await t.rejects(app.tokengate.verify(between.accessToken), { code: 'TOKENGATE_TOKEN_REVOKED' })
    t.equal(await introspect(app, between.accessToken), false)
  }
  t.equal((await refresh(B, between.refreshToken)).json().code, 'TOKENGATE_REFRESH_INVALID', 'and its refresh token')

  // A user epoch newer than the global one: the user's holds.
  const second = await login(A)
  await sleep(2)
  await A.tokengate.revokeAll('u-alice')
  for (const app of [A, B]) t.ok(await until(async () => (await me(app, second.accessToken)).statusCode === 401), 'a token issued after the global epoch but before the user\'s is refused')
  t.equal((await refresh(B, second.refreshToken)).json().code, 'TOKENGATE_REFRESH_INVALID')
  const bob = await login(B, 'bob')
  t.equal((await me(A, bob.accessToken)).statusCode, 200, 'control: another user logged in after the global epoch works')
})

t.test('an instance that has not heard of revokeEveryone yet still refuses a refresh of an older session (one Redis server)', async t => {
  const { apps: [B], redis, prefix } = await instances(t, 1)
  const old = await login(B)
  // The epoch as another instance writes it, but B never hears of it (no message on the feed): B's memory
  // knows nothing, the session scripts read the key themselves.
  await redis.set(`${prefix}:epoch`, String(Date.now()), 'PX', 60_000)
  const refused = await refresh(B, old.refreshToken)
  t.equal(refused.statusCode, 401, 'the refresh of a session started before the epoch is refused')
  t.equal(refused.json().code, 'TOKENGATE_REFRESH_INVALID')
  t.same(await B.tokengate.listSessions('u-alice'), [], 'and the session is not listed')
  const fresh = await login(B)
  t.equal((await refresh(B, fresh.refreshToken)).statusCode, 200, 'control: a session started after it refreshes')
})
