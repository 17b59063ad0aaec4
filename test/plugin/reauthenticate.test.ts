// Re-authentication (RFC 9470 step-up): POST /auth/login carrying a valid access token of a live session of
// the same user re-authenticates THAT session: same sessionId, a new auth_time/acr/amr, a rotated refresh
// token whose predecessor counts as the previous one (a refresh of it within reuseGraceMs gets the very same
// new token; after the window it is reuse), and listSessions still shows one session. Anything else starts a
// new session as any login does: another user's token (an attacker's), a revoked or expired token, a bound
// session without a proof by its key. Checked against what Redis holds; every refusal has a control.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import { Redis } from 'ioredis'
import tokengate, { MemoryStore, type SessionStore, type TokengateOptions, type UserInfo } from '../../plugin/index.js'
import { SECRET, sleep } from '../helpers/app.js'
import { jktOf, newKey, payloadOf, proof, withDpop } from '../helpers/dpop.js'
import { deletePrefix, readSession, readSessions, redisUrl, uniquePrefix } from '../helpers/redis.js'
import { hashOf } from '../helpers/tokens.js'

const PASSWORDS: Record<string, string> = { alice: 'wonderland', bob: 'builder' }

async function verifyCredentials (body: unknown): Promise<UserInfo | null> {
  const b = body as { username?: string, password?: string, otp?: string }
  if (b.username === undefined || PASSWORDS[b.username] !== b.password) return null
  const mfa = b.otp === '123456'
  return {
    sub: `u-${b.username}`,
    roles: mfa ? ['user', 'mfa-user'] : ['user'],
    claims: { via: mfa ? 'otp' : 'password' },
    acr: mfa ? 'mfa' : 'pwd',
    amr: mfa ? ['pwd', 'otp'] : ['pwd']
  }
}

interface Pair { accessToken: string, refreshToken: string, sessionId: string, tokenType: string, expiresIn: number, refreshExpiresIn: number }

interface ReauthApp { app: FastifyInstance, redis: Redis, prefix: string }

async function reauthApp (t: Test, options: Partial<TokengateOptions> = {}): Promise<ReauthApp> {
  const url = await redisUrl()
  const prefix = uniquePrefix('reauth')
  const redis = new Redis(url)
  const app = Fastify({ logger: false })
  await app.register(tokengate, { secret: SECRET, redis: url, keyPrefix: prefix, routes: { verifyCredentials }, ...options } as TokengateOptions)
  app.get('/mfa', { config: { auth: { acr: ['mfa'] } } }, async (request) => ({ sessionId: request.auth!.sessionId, roles: request.auth!.roles }))
  app.get('/open', { config: { auth: true } }, async (request) => ({ sessionId: request.auth!.sessionId }))
  t.teardown(async () => {
    await app.close()
    await deletePrefix(redis, prefix)
    redis.disconnect()
  })
  await app.ready()
  return { app, redis, prefix }
}

async function loginRes (app: FastifyInstance, username: string, headers: Record<string, string> = {}, extra: Record<string, unknown> = {}): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/auth/login', headers, payload: { username, password: PASSWORDS[username], ...extra } })
}

async function login (app: FastifyInstance, username: string, headers: Record<string, string> = {}, extra: Record<string, unknown> = {}): Promise<Pair> {
  const res = await loginRes(app, username, headers, extra)
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
  return res.json()
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })
const OTP = { otp: '123456' }

/** Waits until the wall clock is past the second of `authTime`, so a new authentication has a later auth_time. */
async function nextSecond (authTime: number): Promise<void> {
  const wait = (authTime + 1) * 1000 - Date.now()
  if (wait > 0) await sleep(wait)
}

async function refresh (app: FastifyInstance, refreshToken: string): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken } })
}

t.test('a login with the session\'s access token re-authenticates it: same session, new auth_time/acr/amr/roles, one session listed', async t => {
  const { app, redis, prefix } = await reauthApp(t)
  const first = await login(app, 'alice')
  const before = payloadOf(first.accessToken)
  t.equal(before.acr, 'pwd')
  const weak = await app.inject({ url: '/mfa', headers: bearer(first.accessToken) })
  t.equal(weak.statusCode, 401, 'the password login does not pass an mfa route')
  t.equal(weak.json().code, 'TOKENGATE_STEP_UP_REQUIRED')
  await nextSecond(before.auth_time as number)

  const second = await login(app, 'alice', bearer(first.accessToken), OTP)
  t.equal(second.sessionId, first.sessionId, 'the same sessionId')
  const after = payloadOf(second.accessToken)
  t.equal(after.sid, first.sessionId, 'the access token names the same session')
  t.ok((after.auth_time as number) > (before.auth_time as number), `a new auth_time (${before.auth_time as number} → ${after.auth_time as number})`)
  t.equal(after.acr, 'mfa', 'the new acr')
  t.same(after.amr, ['pwd', 'otp'], 'the new amr')
  t.same(after.roles, ['user', 'mfa-user'], 'roles from the new verifyCredentials result')
  t.equal(after.via, 'otp', 'claims from the new verifyCredentials result')
  t.not(second.refreshToken, first.refreshToken, 'a rotated refresh token')

  const ok = await app.inject({ url: '/mfa', headers: bearer(second.accessToken) })
  t.equal(ok.statusCode, 200, 'the stepped-up token passes the mfa route')
  t.same(ok.json(), { sessionId: first.sessionId, roles: ['user', 'mfa-user'] })
  t.equal((await app.inject({ url: '/open', headers: bearer(first.accessToken) })).statusCode, 200, 'the earlier access token still works where it did')

  const listed = await app.tokengate.listSessions('u-alice')
  t.equal(listed.length, 1, 'listSessions shows one session')
  t.equal(listed[0].id, first.sessionId)
  const rec = await readSession(redis, prefix, 'u-alice', first.sessionId)
  t.equal(rec?.h, hashOf(second.refreshToken), 'Redis: h is the new refresh token\'s hash')
  t.equal(rec?.p, hashOf(first.refreshToken), 'Redis: p is the predecessor\'s hash (the grace window)')
  t.equal(rec?.acr, 'mfa', 'Redis: acr')
  t.same(rec?.amr, ['pwd', 'otp'], 'Redis: amr')
  t.equal(Math.floor(rec!.at / 1000), after.auth_time, 'Redis: at is the new auth_time')
  t.equal(rec?.st, Math.floor(rec!.st), 'Redis: the session start is kept')
  t.ok(rec!.at > rec!.st, 'the authentication is later than the session start')

  // The refresh that follows keeps the new authentication.
  const next = await refresh(app, second.refreshToken)
  t.equal(next.statusCode, 200)
  t.equal(payloadOf(next.json().accessToken).acr, 'mfa', 'a refresh after the re-authentication keeps acr')
  t.equal(payloadOf(next.json().accessToken).auth_time, after.auth_time, 'and auth_time')
})

t.test('the old refresh token within the grace window gets the very same new token; after it, reuse', async t => {
  await t.test('within the window (POST /auth/refresh and the refresh hook)', async t => {
    const { app } = await reauthApp(t)
    const first = await login(app, 'alice')
    const second = await login(app, 'alice', bearer(first.accessToken), OTP)
    t.equal(second.sessionId, first.sessionId)

    const late = await refresh(app, first.refreshToken)
    t.equal(late.statusCode, 200, `the predecessor within reuseGraceMs: 200 (${late.body})`)
    t.equal(late.json().refreshToken, second.refreshToken, 'the same new refresh token the login gave')
    t.equal(payloadOf(late.json().accessToken).acr, 'mfa', 'and an access token of the new authentication')

    const hooked = await app.inject({ url: '/open', headers: { 'x-refresh-token': first.refreshToken } })
    t.equal(hooked.statusCode, 200, 'the refresh hook too')
    t.equal(hooked.headers['x-refresh-token'], second.refreshToken, 'the hook hands back the same token')
    t.equal((await app.tokengate.listSessions('u-alice')).length, 1, 'still one session')
    // Control: the new token is current (a refresh of it rotates as usual).
    const rotated = await refresh(app, second.refreshToken)
    t.equal(rotated.statusCode, 200)
  })

  await t.test('after the window', async t => {
    const { app, redis, prefix } = await reauthApp(t, { reuseGraceMs: 300 })
    const first = await login(app, 'alice')
    const second = await login(app, 'alice', bearer(first.accessToken), OTP)
    t.equal(second.sessionId, first.sessionId)
    await sleep(400)
    const reused = await refresh(app, first.refreshToken)
    t.equal(reused.statusCode, 401)
    t.equal(reused.json().code, 'TOKENGATE_REFRESH_REUSED', 'the predecessor after reuseGraceMs is reuse')
    t.equal(await readSession(redis, prefix, 'u-alice', first.sessionId), undefined, 'the session is gone')
    const dead = await app.inject({ url: '/open', headers: bearer(second.accessToken) })
    t.equal(dead.json().code, 'TOKENGATE_TOKEN_REVOKED', 'and its access tokens are revoked')
  })
})

t.test('an attacker\'s login with the victim\'s access token and their own credentials does not touch the victim\'s session', async t => {
  const { app, redis, prefix } = await reauthApp(t)
  const victim = await login(app, 'alice')
  const stored = await readSession(redis, prefix, 'u-alice', victim.sessionId)

  const attacker = await login(app, 'bob', bearer(victim.accessToken), OTP)
  t.not(attacker.sessionId, victim.sessionId, 'a session of its own')
  t.equal(payloadOf(attacker.accessToken).sub, 'u-bob', 'for the attacker\'s own user')
  t.same(await readSession(redis, prefix, 'u-alice', victim.sessionId), stored, 'the victim\'s record is unchanged (hash, auth time, acr)')
  t.equal((await refresh(app, victim.refreshToken)).statusCode, 200, 'the victim\'s refresh token is still current')
  t.equal((await app.tokengate.listSessions('u-alice')).length, 1)
  t.equal((await app.tokengate.listSessions('u-bob')).length, 1)

  // Control: the victim's own credentials with the same token do re-authenticate.
  const mine = await readSession(redis, prefix, 'u-alice', victim.sessionId)
  const own = await login(app, 'alice', bearer(victim.accessToken), OTP)
  t.equal(own.sessionId, victim.sessionId, 'control: same user, same session')
  t.not((await readSession(redis, prefix, 'u-alice', victim.sessionId))?.h, mine?.h, 'control: its refresh hash moved')
})

t.test('a revoked or expired access token starts a new session; the login never fails for the token it carries', async t => {
  await t.test('revoked', async t => {
    const { app } = await reauthApp(t)
    const first = await login(app, 'alice')
    await app.tokengate.revokeSession('u-alice', first.sessionId)
    const second = await login(app, 'alice', bearer(first.accessToken), OTP)
    t.not(second.sessionId, first.sessionId, 'a new session')
    t.equal(payloadOf(second.accessToken).acr, 'mfa')
    t.same((await app.tokengate.listSessions('u-alice')).map(s => s.id), [second.sessionId], 'the revoked one stays gone')
  })

  await t.test('expired', async t => {
    const { app } = await reauthApp(t, { accessTokenTtl: 1 })
    const first = await login(app, 'alice')
    const exp = payloadOf(first.accessToken).exp as number
    await sleep(exp * 1000 + 1 - Date.now())
    const second = await login(app, 'alice', bearer(first.accessToken), OTP)
    t.not(second.sessionId, first.sessionId, 'a new session')
    t.equal((await app.tokengate.listSessions('u-alice')).length, 2, 'the first one lives on (its refresh token still works)')
  })

  await t.test('garbage, and wrong credentials', async t => {
    const { app } = await reauthApp(t)
    const first = await login(app, 'alice')
    const second = await login(app, 'alice', bearer('not-a-token'))
    t.not(second.sessionId, first.sessionId)
    const bad = await loginRes(app, 'alice', bearer(first.accessToken), { password: 'wrong' })
    t.equal(bad.statusCode, 401, 'wrong credentials with a valid token: refused')
    t.equal(bad.json().code, 'TOKENGATE_BAD_CREDENTIALS')
    t.equal((await refresh(app, first.refreshToken)).statusCode, 200, 'and the session is untouched')
  })
})

t.test('cookie transport: the tg_access cookie re-authenticates the session', async t => {
  const { app } = await reauthApp(t, { transport: ['cookie'], cookie: { secure: false } })
  const res = await loginRes(app, 'alice')
  t.equal(res.statusCode, 200)
  const cookies = Object.fromEntries(res.cookies.map(c => [c.name, c.value]))
  const again = await loginRes(app, 'alice', { cookie: `tg_access=${cookies.tg_access}` }, OTP)
  t.equal(again.statusCode, 200)
  t.equal(again.json().sessionId, res.json().sessionId, 'same session')
  const access = again.cookies.find(c => c.name === 'tg_access')!.value
  t.equal(payloadOf(access).acr, 'mfa', 'the new access cookie carries the new acr')
  t.equal((await app.tokengate.listSessions('u-alice')).length, 1)
})

t.test('a DPoP-bound session is re-authenticated only by a login with a proof by its key that names the token', async t => {
  const { app, redis, prefix } = await reauthApp(t, withDpop())
  const key = await newKey()
  const other = await newKey()
  const loginUrl = 'http://localhost/auth/login'
  const first = await login(app, 'alice', { dpop: await proof(key, 'POST', loginUrl) })
  t.equal(first.tokenType, 'DPoP')
  const dpopAuth = { authorization: `DPoP ${first.accessToken}` }
  const untouched = async (what: string): Promise<void> => {
    const rec = await readSession(redis, prefix, 'u-alice', first.sessionId)
    t.equal(rec?.h, hashOf(first.refreshToken), `${what}: the bound session's refresh token is still current`)
    t.equal(rec?.acr, 'pwd', `${what}: and its acr unchanged`)
  }

  const noProof = await login(app, 'alice', dpopAuth, OTP)
  t.not(noProof.sessionId, first.sessionId, 'without a proof: a new session')
  await untouched('without a proof')

  const otherKey = await login(app, 'alice', { ...dpopAuth, dpop: await proof(other, 'POST', loginUrl, { accessToken: first.accessToken }) }, OTP)
  t.not(otherKey.sessionId, first.sessionId, 'a proof by another key: a new session')
  t.same(payloadOf(otherKey.accessToken).cnf, { jkt: await jktOf(other) }, 'bound to that other key')
  await untouched('another key')

  const noAth = await login(app, 'alice', { ...dpopAuth, dpop: await proof(key, 'POST', loginUrl) }, OTP)
  t.not(noAth.sessionId, first.sessionId, 'a proof by the key that does not name the token (no ath): a new session')
  await untouched('no ath')

  const same = await login(app, 'alice', { ...dpopAuth, dpop: await proof(key, 'POST', loginUrl, { accessToken: first.accessToken }) }, OTP)
  t.equal(same.sessionId, first.sessionId, 'control: a proof by the session\'s key with ath: re-authenticated')
  t.equal(same.tokenType, 'DPoP')
  t.same(payloadOf(same.accessToken).cnf, { jkt: await jktOf(key) }, 'still bound to the key')
  t.equal(payloadOf(same.accessToken).acr, 'mfa')
  const byKey = (await readSessions(redis, prefix, 'u-alice'))!
  t.equal(byKey[first.sessionId].jkt, await jktOf(key))
})

t.test('rotateRefreshTokens: false: a login starts a new session (a re-authentication would rotate), the first one untouched', async t => {
  const { app, redis, prefix } = await reauthApp(t, { rotateRefreshTokens: false })
  const first = await login(app, 'alice')
  const before = await readSession(redis, prefix, 'u-alice', first.sessionId)
  const second = await login(app, 'alice', bearer(first.accessToken), OTP)
  t.not(second.sessionId, first.sessionId, 'a new session')
  t.equal(payloadOf(second.accessToken).acr, 'mfa')
  t.same(await readSession(redis, prefix, 'u-alice', first.sessionId), before, 'the first session as it was')
  const again = await refresh(app, first.refreshToken)
  t.equal(again.statusCode, 200, 'its refresh token still works (no reuse verdict)')
  t.equal(again.json().refreshToken, first.refreshToken, 'and stays the same')
})

/** A store without reauthenticate(): a custom store written before it existed. */
function withoutReauth (store: SessionStore): SessionStore {
  return new Proxy(store, { get: (target, prop) => prop === 'reauthenticate' ? undefined : Reflect.get(target, prop, target) })
}

t.test('MemoryStore re-authenticates the same way; a store without reauthenticate() starts a new session', async t => {
  for (const [name, store, same] of [['MemoryStore', new MemoryStore(), true], ['a store without reauthenticate()', withoutReauth(new MemoryStore()), false]] as const) {
    const app = Fastify({ logger: false })
    t.teardown(async () => { await app.close(); await store.close() })
    await app.register(tokengate, { secret: SECRET, store, routes: { verifyCredentials } })
    const first = await login(app, 'alice')
    const second = await login(app, 'alice', bearer(first.accessToken), OTP)
    t.equal(second.sessionId === first.sessionId, same, `${name}: ${same ? 'the same session' : 'a new session'}`)
    t.equal(payloadOf(second.accessToken).acr, 'mfa', `${name}: the new acr`)
    if (same) {
      const late = await refresh(app, first.refreshToken)
      t.equal(late.json().refreshToken, second.refreshToken, `${name}: the predecessor in grace gets the same token`)
    }
  }
})
