// Step-up authentication (RFC 9470), as a route owner, a user and an attacker see it: a route policy may ask
// for a recent authentication (`maxAge`) or one of some classes (`acr`), with or without `roles`; a token
// that falls short is answered 401 TOKENGATE_STEP_UP_REQUIRED with `WWW-Authenticate: Bearer
// error="insufficient_user_authentication", error_description="…", max_age=<s>, acr_values="…"`, also when
// the refresh hook mints new tokens on the way (a refresh is not an authentication). A typo in a policy
// closes its route and fails app.ready(), naming the route and the field. Every refusal has a control beside it.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import tokengate, { requireAuth, type TokengateOptions, type UserInfo } from '../../plugin/index.js'
import { SECRET, sleep } from '../helpers/app.js'
import { jktOf, newKey, payloadOf, proof, withDpop, DEFAULT_ALGS } from '../helpers/dpop.js'
import { deletePrefix, redisUrl, uniquePrefix } from '../helpers/redis.js'
import { Redis } from 'ioredis'

const PASSWORDS: Record<string, string> = { alice: 'wonderland', bob: 'builder' }
const ROLES: Record<string, string[]> = { alice: ['user'], bob: ['user', 'admin'] }

/**
 * The app's login: a password alone is acr 'pwd' (amr ['pwd']); with the one-time code 'mfa' (amr ['pwd', 'otp']).
 * `claims` lets a test try to slip acr/amr in through the user's own claims.
 */
async function verifyCredentials (body: unknown): Promise<UserInfo | null> {
  const b = body as { username?: string, password?: string, otp?: string, noAcr?: boolean, claims?: Record<string, unknown> }
  if (b.username === undefined || PASSWORDS[b.username] !== b.password) return null
  const mfa = b.otp === '123456'
  return {
    sub: `u-${b.username}`,
    roles: ROLES[b.username],
    ...(b.claims !== undefined ? { claims: b.claims } : {}),
    ...(b.noAcr === true ? {} : { acr: mfa ? 'mfa' : 'pwd', amr: mfa ? ['pwd', 'otp'] : ['pwd'] })
  }
}

interface Pair { accessToken: string, refreshToken: string, sessionId: string, tokenType: string }

interface StepUpApp { app: FastifyInstance }

/** An app on the shared Redis with routes of every kind of policy; closed and cleaned at teardown. */
async function stepUpApp (t: Test, options: Partial<TokengateOptions> = {}): Promise<StepUpApp> {
  const url = await redisUrl()
  const prefix = uniquePrefix('stepup')
  const redis = new Redis(url)
  const app = Fastify({ logger: false })
  await app.register(tokengate, { secret: SECRET, redis: url, keyPrefix: prefix, routes: { verifyCredentials }, ...options } as TokengateOptions)
  const who = async (request: { auth: unknown }): Promise<unknown> => request.auth
  app.get('/open', { config: { auth: true } }, who)
  app.get('/recent', { config: { auth: { maxAge: '1h' } } }, who)
  app.get('/fresh', { config: { auth: { maxAge: 1 } } }, who)
  app.get('/five', { config: { auth: { maxAge: '5m' } } }, who)
  app.get('/mfa', { config: { auth: { acr: ['mfa'] } } }, who)
  app.get('/strong', { config: { auth: { acr: ['mfa', 'hwk'] } } }, who)
  app.get('/admin-mfa', { config: { auth: { roles: ['admin'], acr: ['mfa'] } } }, who)
  app.get('/fresh-mfa', { config: { auth: { maxAge: 1, acr: ['mfa'] } } }, who)
  app.get('/recent-mfa', { config: { auth: { maxAge: '1h', acr: ['mfa'] } } }, who)
  app.get('/manual', { onRequest: [app.authenticate, requireAuth({ maxAge: 1 })] }, who)
  t.teardown(async () => {
    await app.close()
    await deletePrefix(redis, prefix)
    redis.disconnect()
  })
  await app.ready()
  return { app }
}

async function login (app: FastifyInstance, username: string, extra: Record<string, unknown> = {}): Promise<Pair> {
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username, password: PASSWORDS[username], ...extra } })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
  return res.json()
}

const get = async (app: FastifyInstance, url: string, headers: Record<string, string>): Promise<LightMyRequestResponse> =>
  await app.inject({ method: 'GET', url, headers })
const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

/** Waits until an authentication at `authTime` (seconds) is older than `maxAge` seconds by the server's rule. */
async function untilOlderThan (authTime: number, maxAge: number): Promise<void> {
  const wait = (authTime + maxAge) * 1000 + 1 - Date.now()
  if (wait > 0) await sleep(wait)
}

function stepUp (t: Test, res: LightMyRequestResponse, challenge: string, what: string): void {
  t.equal(res.statusCode, 401, `${what}: 401 (${res.body})`)
  t.equal(res.json().code, 'TOKENGATE_STEP_UP_REQUIRED', `${what}: TOKENGATE_STEP_UP_REQUIRED`)
  t.equal(res.headers['www-authenticate'], challenge, `${what}: the challenge`)
}

const STALE = 'error_description="More recent authentication is required"'
const WEAK = 'error_description="A different authentication level is required"'
const BOTH = 'error_description="More recent authentication at a different level is required"'
const ERR = 'Bearer error="insufficient_user_authentication"'

t.test('maxAge: a token whose authentication is older is refused with the challenge; the same token passes routes without it', async t => {
  const { app } = await stepUpApp(t)
  const pair = await login(app, 'alice')
  const authTime = payloadOf(pair.accessToken).auth_time as number
  t.type(authTime, 'number', 'the access token carries auth_time')
  t.equal((await get(app, '/recent', bearer(pair.accessToken))).statusCode, 200, 'control: maxAge 1h admits a login of just now')

  await untilOlderThan(authTime, 1)
  stepUp(t, await get(app, '/fresh', bearer(pair.accessToken)), `${ERR}, ${STALE}, max_age=1`, 'maxAge 1 s, 1 s later')
  stepUp(t, await get(app, '/manual', bearer(pair.accessToken)), `${ERR}, ${STALE}, max_age=1`, 'requireAuth({ maxAge: 1 })')
  t.equal((await get(app, '/open', bearer(pair.accessToken))).statusCode, 200, 'control: the same token on a route without maxAge')
  t.equal((await get(app, '/recent', bearer(pair.accessToken))).statusCode, 200, 'control: the same token within a longer maxAge')
  t.equal((await get(app, '/five', bearer(pair.accessToken))).statusCode, 200, 'control: maxAge \'5m\'')

  // Not authenticated at all: the usual 401, not a step-up.
  const none = await get(app, '/fresh', {})
  t.equal(none.statusCode, 401)
  t.equal(none.json().code, 'TOKENGATE_TOKEN_MISSING', 'no token: TOKEN_MISSING, as on any protected route')
  t.equal(none.headers['www-authenticate'], 'Bearer')
})

t.test('a refresh does not make an authentication fresh: the refresh hook mints tokens, the route still wants a step-up', async t => {
  const { app } = await stepUpApp(t)
  const pair = await login(app, 'alice')
  const authTime = payloadOf(pair.accessToken).auth_time as number
  await untilOlderThan(authTime, 1)

  // The refresh token alone (an access token that expired or was dropped): the hook refreshes on the way.
  const hooked = await get(app, '/fresh', { 'x-refresh-token': pair.refreshToken })
  stepUp(t, hooked, `${ERR}, ${STALE}, max_age=1`, 'refresh hook on a maxAge route')
  const minted = hooked.headers['x-access-token'] as string | undefined
  t.ok(minted !== undefined && hooked.headers['x-refresh-token'] !== undefined, 'the hook did refresh: the 401 carries the new tokens')
  t.equal(payloadOf(minted!).auth_time, authTime, 'the new access token keeps the authentication time of the login')
  t.equal(payloadOf(minted!).acr, 'pwd', 'and its acr')
  t.not(payloadOf(minted!).iat, undefined)

  // Control: the same kind of request on a route without maxAge goes through with the refreshed tokens.
  const open = await get(app, '/open', { 'x-refresh-token': hooked.headers['x-refresh-token'] as string })
  t.equal(open.statusCode, 200, 'control: the refreshed session is fine elsewhere')

  // POST /auth/refresh is no authentication either.
  const refreshed = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: open.headers['x-refresh-token'] } })
  t.equal(refreshed.statusCode, 200)
  const access = refreshed.json().accessToken as string
  t.equal(payloadOf(access).auth_time, authTime, 'POST /auth/refresh keeps auth_time')
  stepUp(t, await get(app, '/fresh', bearer(access)), `${ERR}, ${STALE}, max_age=1`, 'a token from POST /auth/refresh')
  // Both tokens at once: a valid access token and a refresh token riding along change nothing.
  stepUp(t, await get(app, '/fresh', { ...bearer(access), 'x-refresh-token': refreshed.json().refreshToken }), `${ERR}, ${STALE}, max_age=1`, 'both tokens')
})

t.test('acr: a token without the class, or of another class, is refused; one of the listed classes passes', async t => {
  const { app } = await stepUpApp(t)
  const none = await login(app, 'alice', { noAcr: true })
  const pwd = await login(app, 'alice')
  const mfa = await login(app, 'alice', { otp: '123456' })
  t.equal(payloadOf(none.accessToken).acr, undefined, 'a login without acr: the token has none')
  t.equal(payloadOf(pwd.accessToken).acr, 'pwd')
  t.same(payloadOf(pwd.accessToken).amr, ['pwd'])
  t.equal(payloadOf(mfa.accessToken).acr, 'mfa')
  t.same(payloadOf(mfa.accessToken).amr, ['pwd', 'otp'], 'amr as verifyCredentials said')

  stepUp(t, await get(app, '/mfa', bearer(none.accessToken)), `${ERR}, ${WEAK}, acr_values="mfa"`, 'no acr at all')
  stepUp(t, await get(app, '/mfa', bearer(pwd.accessToken)), `${ERR}, ${WEAK}, acr_values="mfa"`, 'acr pwd on an mfa route')
  stepUp(t, await get(app, '/strong', bearer(pwd.accessToken)), `${ERR}, ${WEAK}, acr_values="mfa hwk"`, 'acr_values lists every accepted class, space-separated')
  const ok = await get(app, '/mfa', bearer(mfa.accessToken))
  t.equal(ok.statusCode, 200, 'control: acr mfa passes')
  t.equal(ok.json().acr, 'mfa', 'request.auth.acr')
  t.same(ok.json().amr, ['pwd', 'otp'], 'request.auth.amr')
  t.type(ok.json().authTime, 'number', 'request.auth.authTime (seconds)')
  t.equal((await get(app, '/strong', bearer(mfa.accessToken))).statusCode, 200, 'control: any one of the classes suffices')
  t.equal((await get(app, '/open', bearer(pwd.accessToken))).statusCode, 200, 'control: acr pwd on a route without acr')
})

t.test('a user\'s own claims cannot forge acr, amr or auth_time', async t => {
  const { app } = await stepUpApp(t)
  const forged = await login(app, 'alice', { noAcr: true, claims: { acr: 'mfa', amr: ['hwk'], auth_time: 4102444800, dept: 'x' } })
  const p = payloadOf(forged.accessToken)
  t.equal(p.acr, undefined, 'claims.acr is dropped')
  t.equal(p.amr, undefined, 'claims.amr is dropped')
  t.not(p.auth_time, 4102444800, 'claims.auth_time is dropped')
  t.equal(p.dept, 'x', 'control: other claims pass')
  stepUp(t, await get(app, '/mfa', bearer(forged.accessToken)), `${ERR}, ${WEAK}, acr_values="mfa"`, 'forged claims.acr')
  const real = await login(app, 'alice', { otp: '123456', claims: { acr: 'pwd' } })
  t.equal(payloadOf(real.accessToken).acr, 'mfa', 'control: the login\'s acr wins over a claim of the same name')
  t.equal((await get(app, '/mfa', bearer(real.accessToken))).statusCode, 200)
})

t.test('roles + acr: a missing role is 403 whatever the acr; with the role, a weak acr is a step-up', async t => {
  const { app } = await stepUpApp(t)
  const aliceMfa = await login(app, 'alice', { otp: '123456' })
  const bobPwd = await login(app, 'bob')
  const bobMfa = await login(app, 'bob', { otp: '123456' })
  const forbidden = await get(app, '/admin-mfa', bearer(aliceMfa.accessToken))
  t.equal(forbidden.statusCode, 403, 'alice (no admin) with mfa: 403')
  t.equal(forbidden.json().code, 'TOKENGATE_FORBIDDEN')
  t.equal(forbidden.headers['www-authenticate'], undefined, 'no challenge on a 403')
  stepUp(t, await get(app, '/admin-mfa', bearer(bobPwd.accessToken)), `${ERR}, ${WEAK}, acr_values="mfa"`, 'bob (admin) without mfa')
  t.equal((await get(app, '/admin-mfa', bearer(bobMfa.accessToken))).statusCode, 200, 'control: bob with mfa')
})

t.test('maxAge and acr together: the challenge names both requirements, whichever falls short', async t => {
  const { app } = await stepUpApp(t)
  const pwd = await login(app, 'alice')
  const mfa = await login(app, 'alice', { otp: '123456' })
  const authTime = payloadOf(mfa.accessToken).auth_time as number
  await untilOlderThan(Math.max(authTime, payloadOf(pwd.accessToken).auth_time as number), 1)
  stepUp(t, await get(app, '/fresh-mfa', bearer(pwd.accessToken)), `${ERR}, ${BOTH}, max_age=1, acr_values="mfa"`, 'stale and weak')
  stepUp(t, await get(app, '/fresh-mfa', bearer(mfa.accessToken)), `${ERR}, ${STALE}, max_age=1, acr_values="mfa"`, 'stale, of the right class')
  // Recent enough, of the wrong class: still both requirements, so the next login meets them at once.
  stepUp(t, await get(app, '/recent-mfa', bearer(pwd.accessToken)), `${ERR}, ${WEAK}, max_age=3600, acr_values="mfa"`, 'recent, of the wrong class')
  t.equal((await get(app, '/recent-mfa', bearer(mfa.accessToken))).statusCode, 200, 'control: recent and mfa')
})

t.test('the challenge with DPoP on: a bound token gets the DPoP scheme, a Bearer token Bearer with the DPoP offer', async t => {
  const { app } = await stepUpApp(t, withDpop())
  const key = await newKey()
  const res = await app.inject({ method: 'POST', url: '/auth/login', headers: { dpop: await proof(key, 'POST', 'http://localhost/auth/login') }, payload: { username: 'alice', password: 'wonderland' } })
  const bound = res.json() as Pair
  t.equal(bound.tokenType, 'DPoP')
  t.same(payloadOf(bound.accessToken).cnf, { jkt: await jktOf(key) })
  const dpopGet = async (url: string): Promise<LightMyRequestResponse> =>
    await get(app, url, { authorization: `DPoP ${bound.accessToken}`, dpop: await proof(key, 'GET', `http://localhost${url}`, { accessToken: bound.accessToken }) })
  const refused = await dpopGet('/mfa')
  stepUp(t, refused, `DPoP error="insufficient_user_authentication", ${WEAK}, acr_values="mfa", algs="${DEFAULT_ALGS}"`, 'a DPoP-bound token')
  t.equal((await dpopGet('/open')).statusCode, 200, 'control: the bound token with its proof passes a route without acr')

  const plain = await login(app, 'alice')
  stepUp(t, await get(app, '/mfa', bearer(plain.accessToken)), `${ERR}, ${WEAK}, acr_values="mfa", DPoP algs="${DEFAULT_ALGS}"`, 'a Bearer token, DPoP on')
})

const typos: Array<[string, unknown, RegExp]> = [
  ['{ maxage: \'5m\' } (maxAge misspelt)', { maxage: '5m' }, /GET \/step.*config\.auth\.maxage is not a known field/],
  ["{ acr: 'mfa' } (a string, not an array)", { acr: 'mfa' }, /GET \/step.*config\.auth\.acr must be an array/],
  ["{ maxAge: '5 minutes' }", { maxAge: '5 minutes' }, /GET \/step.*config\.auth\.maxAge must be a duration/],
  ["{ maxAge: '500ms' } (under a second)", { maxAge: '500ms' }, /GET \/step.*config\.auth\.maxAge must be a whole number of seconds/],
  ['{ maxAge: 1.5 } (not whole seconds)', { maxAge: 1.5 }, /GET \/step.*config\.auth\.maxAge/],
  ['{ maxAge: -60 }', { maxAge: -60 }, /GET \/step.*config\.auth\.maxAge/],
  ['{ maxAge: null }', { maxAge: null }, /GET \/step.*config\.auth\.maxAge/],
  ['{ acr: [] }', { acr: [] }, /GET \/step.*config\.auth\.acr must hold at least one/],
  ["{ acr: ['mfa', ''] }", { acr: ['mfa', ''] }, /GET \/step.*config\.auth\.acr\[1\]/],
  ["{ acr: ['two words'] } (acr_values is space-separated)", { acr: ['two words'] }, /GET \/step.*config\.auth\.acr\[0\]/],
  ["{ acr: ['a\"b'] }", { acr: ['a"b'] }, /GET \/step.*config\.auth\.acr\[0\]/],
  ["{ roles: undefined, maxAge: '5m' } (an unset variable)", { roles: undefined, maxAge: '5m' }, /GET \/step.*config\.auth\.roles must be an array/],
  ["{ roles: 'admin', acr: ['mfa'] }", { roles: 'admin', acr: ['mfa'] }, /GET \/step.*config\.auth\.roles/],
  ['{} (nothing asked)', {}, /GET \/step.*config\.auth\.roles, config\.auth\.maxAge or config\.auth\.acr is required/]
]

for (const [name, auth, message] of typos) {
  t.test(`config.auth ${name}: app.ready() fails naming the route and the field; the route never answers`, async t => {
    const app = Fastify({ logger: false })
    t.teardown(async () => { await app.close() })
    await app.register(tokengate, { secret: SECRET })
    app.get('/step', { config: { auth: auth as never } }, async () => ({ secret: 'sensitive' }))
    app.get('/control', { config: { auth: { maxAge: '5m', acr: ['mfa'] } } }, async () => ({ ok: true }))
    const pair = await app.tokengate.issue({ sub: 'u-alice', acr: 'mfa' })
    const ready = Promise.resolve(app.ready())
    await t.rejects(ready, message)
    await t.rejects(ready, { message: /tokengate: invalid auth policy/ })
    const res = await app.inject({ url: '/step', headers: bearer(pair.accessToken) }).catch((err: Error) => ({ statusCode: 0, body: err.message }))
    t.not(res.statusCode, 200, `not served (${res.statusCode})`)
    t.notMatch(res.body, /sensitive/)
  })
}

t.test('control: the valid forms register and are enforced (string durations, seconds, roles beside)', async t => {
  const app = Fastify({ logger: false })
  t.teardown(async () => { await app.close() })
  await app.register(tokengate, { secret: SECRET })
  for (const [i, auth] of [{ maxAge: '5m' }, { maxAge: 300 }, { maxAge: '1.5m' }, { acr: ['mfa'] }, { roles: ['user'], maxAge: '1h', acr: ['urn:example:loa:2', 'mfa'] }].entries()) {
    app.get(`/ok${i}`, { config: { auth: auth as never } }, async () => ({ ok: true }))
  }
  await app.ready()
  const pair = await app.tokengate.issue({ sub: 'u-alice', roles: ['user'], acr: 'mfa', amr: ['otp'] })
  for (let i = 0; i < 5; i++) t.equal((await app.inject({ url: `/ok${i}`, headers: bearer(pair.accessToken) })).statusCode, 200, `/ok${i}`)
  const weak = await app.tokengate.issue({ sub: 'u-alice', roles: ['user'] })
  t.equal((await app.inject({ url: '/ok3', headers: bearer(weak.accessToken) })).statusCode, 401, 'acr enforced on a valid policy')
})

t.test('a route declared before tokengate loaded: its maxAge/acr policy holds (checked at its first request); a typo closes it', async t => {
  const app = Fastify({ logger: false })
  t.teardown(async () => { await app.close() })
  const reg = app.register(tokengate, { secret: SECRET })
  app.get('/late-mfa', { config: { auth: { acr: ['mfa'] } } }, async () => ({ secret: 'sensitive' }))
  app.get('/late-typo', { config: { auth: { maxage: '5m' } as never } }, async () => ({ secret: 'sensitive' }))
  await reg
  await app.ready()
  const weak = await app.tokengate.issue({ sub: 'u-alice' })
  const strong = await app.tokengate.issue({ sub: 'u-alice', acr: 'mfa' })
  const refused = await app.inject({ url: '/late-mfa', headers: bearer(weak.accessToken) })
  t.equal(refused.statusCode, 401)
  t.equal(refused.json().code, 'TOKENGATE_STEP_UP_REQUIRED')
  t.equal(refused.headers['www-authenticate'], `${ERR}, ${WEAK}, acr_values="mfa"`)
  t.equal((await app.inject({ url: '/late-mfa', headers: bearer(strong.accessToken) })).statusCode, 200, 'control: acr mfa passes')
  const typo = await app.inject({ url: '/late-typo', headers: bearer(strong.accessToken) })
  t.equal(typo.statusCode, 500, 'the typo closes the route')
  t.notMatch(typo.body, /sensitive/)
})

t.test('requireAuth checks its policy at once; issue() checks acr and amr', async t => {
  t.throws(() => requireAuth({ maxAge: '5 minutes' } as never), /requireAuth\(policy\)\.maxAge/)
  t.throws(() => requireAuth({ acr: 'mfa' } as never), /requireAuth\(policy\)\.acr/)
  t.throws(() => requireAuth({ maxage: 60 } as never), /requireAuth\(policy\)\.maxage/)
  t.throws(() => requireAuth(true as never), /requireAuth/)
  t.type(requireAuth({ maxAge: 60 }), 'function')
  t.type(requireAuth({ acr: ['mfa'], roles: ['admin'] }), 'function')

  const app = Fastify({ logger: false })
  t.teardown(async () => { await app.close() })
  await app.register(tokengate, { secret: SECRET })
  await t.rejects(app.tokengate.issue({ sub: 'u', acr: 7 as never }), /user\.acr/)
  await t.rejects(app.tokengate.issue({ sub: 'u', acr: '' }), /user\.acr/)
  await t.rejects(app.tokengate.issue({ sub: 'u', amr: 'pwd' as never }), /user\.amr/)
  const ok = await app.tokengate.issue({ sub: 'u', acr: 'mfa', amr: ['otp'] })
  const auth = await app.tokengate.verify(ok.accessToken)
  t.equal(auth.acr, 'mfa', 'verify() gives acr')
  t.same(auth.amr, ['otp'], 'and amr')
  t.equal(auth.authTime, payloadOf(ok.accessToken).auth_time, 'and authTime, the token\'s auth_time')
})
