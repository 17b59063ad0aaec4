// DPoP (RFC 9449) binding, as a client and a thief see it: a login or refresh with a valid proof binds the
// session to the proof key's thumbprint (the record's jkt, the access token's cnf.jkt, tokenType 'DPoP');
// a bound access token counts only as `Authorization: DPoP` with a proof by that key; a bound session
// refreshes (route and refresh hook) only with a proof by that key, and a refused refresh rotates nothing;
// unbound sessions work as before and get bound by a refresh with a proof; an invalid proof never leaves a
// login or refresh silently unbound; `required: true` refuses logins and refreshes without a proof.
// Proofs come from panva's dpop package (test/helpers/dpop.ts), with ES256 and Ed25519 keys.
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { buildApp, login, USERS } from '../helpers/app.js'
import { assertRefused, jktOf, newKey, payloadOf, proof, withDpop, type KeyPair, type ProofAlg } from '../helpers/dpop.js'
import { MemoryStore } from '../../plugin/index.js'
import { readSession, readSessions } from '../helpers/redis.js'
import { craftAccessToken, hashOf } from '../helpers/tokens.js'

const ORIGIN = 'http://localhost'
const DPOP = withDpop()

interface Pair { accessToken: string, refreshToken: string, tokenType: string, sessionId: string }

async function loginWith (app: FastifyInstance, key?: KeyPair, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  const dpop = key === undefined ? {} : { dpop: await proof(key, 'POST', `${ORIGIN}/auth/login`) }
  return await app.inject({ method: 'POST', url: '/auth/login', headers: { ...dpop, ...headers }, payload: { username: 'alice', password: USERS.alice.password } })
}

async function boundLogin (app: FastifyInstance, key: KeyPair): Promise<Pair> {
  const res = await loginWith(app, key)
  if (res.statusCode !== 200) throw new Error(`a login with a valid proof failed: ${res.statusCode} ${res.body}`)
  return res.json()
}

async function refreshWith (app: FastifyInstance, refreshToken: string, key?: KeyPair): Promise<LightMyRequestResponse> {
  const headers = key === undefined ? {} : { dpop: await proof(key, 'POST', `${ORIGIN}/auth/refresh`) }
  return await app.inject({ method: 'POST', url: '/auth/refresh', headers, payload: { refreshToken } })
}

/** GET /me with the access token by the DPoP scheme and a proof (with ath) by `key`. */
async function meDpop (app: FastifyInstance, accessToken: string, key?: KeyPair, extra: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  const headers: Record<string, string> = { authorization: `DPoP ${accessToken}`, ...extra }
  if (key !== undefined) headers.dpop = await proof(key, 'GET', `${ORIGIN}/me`, { accessToken })
  return await app.inject({ method: 'GET', url: '/me', headers })
}

/** An expired access token of alice's session, bound to `jkt` when given (signed with the test secret). */
const expiredAccess = (sessionId: string, jkt?: string): string =>
  craftAccessToken({ sub: 'u-alice', sid: sessionId, roles: ['user'], ...(jkt !== undefined ? { cnf: { jkt } } : {}) }, { expiresInSec: -30 })

for (const alg of ['ES256', 'Ed25519'] as ProofAlg[]) {
  t.test(`${alg}: a login with a valid proof binds the session; the bound token works by the DPoP scheme, and refreshes with the key`, async t => {
    const { app, redis, prefix } = await buildApp(t, DPOP)
    const key = await newKey(alg)
    const jkt = await jktOf(key)

    const pair = await boundLogin(app, key)
    t.equal(pair.tokenType, 'DPoP', 'the TokenPair says tokenType DPoP')
    t.same(payloadOf(pair.accessToken).cnf, { jkt }, 'the access token carries cnf.jkt, the RFC 7638 thumbprint of the proof key')
    const rec = await readSession(redis, prefix, 'u-alice', pair.sessionId)
    t.equal(rec?.jkt, jkt, 'the session record in Redis keeps the thumbprint')

    const me = await meDpop(app, pair.accessToken, key)
    t.equal(me.statusCode, 200, `Authorization: DPoP with a proof by the key is accepted: ${me.body}`)
    t.match(me.json(), { userId: 'u-alice', sessionId: pair.sessionId })
    const post = await app.inject({ method: 'POST', url: '/me', headers: { authorization: `DPoP ${pair.accessToken}`, dpop: await proof(key, 'POST', `${ORIGIN}/me`, { accessToken: pair.accessToken }) } })
    t.equal(post.statusCode, 200, `a POST with a proof for POST works too: ${post.body}`)

    const r = await refreshWith(app, pair.refreshToken, key)
    t.equal(r.statusCode, 200, `the bound session refreshes with a proof by its key: ${r.body}`)
    const next: Pair = r.json()
    t.equal(next.tokenType, 'DPoP', 'the refreshed pair is DPoP too')
    t.equal(next.sessionId, pair.sessionId)
    t.same(payloadOf(next.accessToken).cnf, { jkt }, 'the refreshed access token is bound to the same key')
    const after = await readSession(redis, prefix, 'u-alice', pair.sessionId)
    t.equal(after?.jkt, jkt, 'the record stays bound')
    t.equal(after?.h, hashOf(next.refreshToken), 'the session rotated to the new refresh token')
    const again = await meDpop(app, next.accessToken, key)
    t.equal(again.statusCode, 200, `the refreshed access token works by the DPoP scheme: ${again.body}`)
  })
}

t.test('a bound access token is refused as Bearer, without a proof, and with a proof by another key', async t => {
  const { app } = await buildApp(t, DPOP)
  const key = await newKey('ES256')
  const pair = await boundLogin(app, key)

  const bearer = await app.inject({ url: '/me', headers: { authorization: `Bearer ${pair.accessToken}` } })
  assertRefused(t, bearer, 'a bound token sent as Bearer (a downgrade)', { secrets: [pair.accessToken] })

  const bearerWithProof = await app.inject({ url: '/me', headers: { authorization: `Bearer ${pair.accessToken}`, dpop: await proof(key, 'GET', `${ORIGIN}/me`) } })
  assertRefused(t, bearerWithProof, 'a bound token sent as Bearer even with a proof by its key', { secrets: [pair.accessToken] })

  const noProof = await meDpop(app, pair.accessToken)
  assertRefused(t, noProof, 'the DPoP scheme without a DPoP header', { secrets: [pair.accessToken] })

  const other = await newKey('Ed25519')
  const otherProof = await proof(other, 'GET', `${ORIGIN}/me`, { accessToken: pair.accessToken })
  const wrongKey = await app.inject({ url: '/me', headers: { authorization: `DPoP ${pair.accessToken}`, dpop: otherProof } })
  assertRefused(t, wrongKey, 'a valid proof by another key (a stolen token with the thief\'s own key)', { secrets: [pair.accessToken, otherProof] })
})

t.test('a bound session refreshes on POST /auth/refresh only with a proof by its key; a refused refresh rotates nothing', async t => {
  const { app, redis, prefix } = await buildApp(t, DPOP)
  const key = await newKey('Ed25519')
  const pair = await boundLogin(app, key)
  const h0 = (await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h
  t.equal(h0, hashOf(pair.refreshToken))

  const bare = await refreshWith(app, pair.refreshToken)
  assertRefused(t, bare, 'the refresh token alone', { secrets: [pair.refreshToken] })
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, h0, 'the refused refresh did not rotate the session (h unchanged)')

  const thief = await newKey('ES256')
  const stolen = await refreshWith(app, pair.refreshToken, thief)
  assertRefused(t, stolen, 'the refresh token with a proof by another key', { secrets: [pair.refreshToken] })
  const rec = await readSession(redis, prefix, 'u-alice', pair.sessionId)
  t.equal(rec?.h, h0, 'h unchanged after a proof by another key')
  t.equal(rec?.jkt, await jktOf(key), 'the session is still bound to its own key, not the thief\'s')

  const ok = await refreshWith(app, pair.refreshToken, key)
  t.equal(ok.statusCode, 200, `the owner still refreshes with the key (the refusals did not kill the session): ${ok.body}`)
  t.equal(ok.json().tokenType, 'DPoP')
})

t.test('the refresh hook (expired access token + x-refresh-token) refreshes a bound session only with a proof by its key', async t => {
  const { app, redis, prefix } = await buildApp(t, DPOP)
  const key = await newKey('ES256')
  const jkt = await jktOf(key)
  const pair = await boundLogin(app, key)
  const h0 = (await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h
  const expired = expiredAccess(pair.sessionId, jkt)

  const bearer = await app.inject({ url: '/me', headers: { authorization: `Bearer ${expired}`, 'x-refresh-token': pair.refreshToken } })
  assertRefused(t, bearer, 'the hook: expired bound token as Bearer + refresh token, no proof', { secrets: [expired, pair.refreshToken] })
  t.equal(bearer.headers['x-access-token'], undefined, 'no new access token')
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, h0, 'h unchanged')

  const refreshOnly = await app.inject({ url: '/me', headers: { 'x-refresh-token': pair.refreshToken } })
  assertRefused(t, refreshOnly, 'the hook: the refresh token alone (no access token, no proof)', { secrets: [pair.refreshToken] })
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, h0, 'h unchanged')

  const thief = await newKey('Ed25519')
  const stolen = await meDpop(app, expired, thief, { 'x-refresh-token': pair.refreshToken })
  assertRefused(t, stolen, 'the hook: a proof by another key', { secrets: [expired, pair.refreshToken] })
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, h0, 'h unchanged after a proof by another key')

  const ok = await meDpop(app, expired, key, { 'x-refresh-token': pair.refreshToken })
  t.equal(ok.statusCode, 200, `the hook refreshes with a proof by the key (ath of the expired token): ${ok.body}`)
  t.match(ok.json(), { userId: 'u-alice', sessionId: pair.sessionId })
  const access = ok.headers['x-access-token']
  const refresh = ok.headers['x-refresh-token']
  t.type(access, 'string', 'a new access token in x-access-token')
  t.type(refresh, 'string', 'a new refresh token in x-refresh-token')
  if (typeof access === 'string') t.same(payloadOf(access).cnf, { jkt }, 'the new access token is bound to the key')
  if (typeof refresh === 'string') {
    t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, hashOf(refresh), 'the session rotated')
    // No access token at all, the refresh token and a proof: the hook refreshes too.
    const again = await app.inject({ url: '/me', headers: { 'x-refresh-token': refresh, dpop: await proof(key, 'GET', `${ORIGIN}/me`) } })
    t.equal(again.statusCode, 200, `the hook refreshes from the refresh token alone with a proof by the key: ${again.body}`)
  }
})

t.test('unbound sessions work as before: Bearer, tokenType Bearer, no cnf; the DPoP scheme with an unbound token is refused', async t => {
  const { app, redis, prefix } = await buildApp(t, DPOP)
  const res = await loginWith(app)
  t.equal(res.statusCode, 200, res.body)
  const pair: Pair = res.json()
  t.equal(pair.tokenType, 'Bearer', 'a login without a proof is Bearer')
  t.equal(payloadOf(pair.accessToken).cnf, undefined, 'no cnf in an unbound access token')
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.jkt, null, 'the record has no jkt')

  const me = await app.inject({ url: '/me', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(me.statusCode, 200, `Bearer works for an unbound token: ${me.body}`)

  const key = await newKey('ES256')
  const asDpop = await meDpop(app, pair.accessToken, key)
  assertRefused(t, asDpop, 'an unbound token by the DPoP scheme, with a valid proof', { secrets: [pair.accessToken] })

  const r = await refreshWith(app, pair.refreshToken)
  t.equal(r.statusCode, 200, `an unbound session refreshes without a proof: ${r.body}`)
  t.equal(r.json().tokenType, 'Bearer')
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.jkt, null, 'still unbound')

  const hooked = await app.inject({ url: '/me', headers: { authorization: `Bearer ${expiredAccess(pair.sessionId)}`, 'x-refresh-token': r.json().refreshToken } })
  t.equal(hooked.statusCode, 200, `the refresh hook refreshes an unbound session without a proof: ${hooked.body}`)
})

t.test('an unbound session refreshed with a valid proof becomes bound (route and refresh hook)', async t => {
  const { app, redis, prefix } = await buildApp(t, DPOP)
  const key = await newKey('Ed25519')
  const jkt = await jktOf(key)

  const viaRoute = await login(app)
  const r = await refreshWith(app, viaRoute.refreshToken, key)
  t.equal(r.statusCode, 200, r.body)
  const bound: Pair = r.json()
  t.equal(bound.tokenType, 'DPoP', 'the refresh with a proof answers tokenType DPoP')
  t.same(payloadOf(bound.accessToken).cnf, { jkt }, 'its access token is bound to the proof key')
  t.equal((await readSession(redis, prefix, 'u-alice', viaRoute.sessionId))?.jkt, jkt, 'the record is now bound')
  const h1 = (await readSession(redis, prefix, 'u-alice', viaRoute.sessionId))?.h
  const bare = await refreshWith(app, bound.refreshToken)
  assertRefused(t, bare, 'the now-bound session refreshed without a proof', { secrets: [bound.refreshToken] })
  t.equal((await readSession(redis, prefix, 'u-alice', viaRoute.sessionId))?.h, h1, 'h unchanged')
  t.equal((await refreshWith(app, bound.refreshToken, key)).statusCode, 200, 'and with the key it refreshes')

  const viaHook = await login(app)
  const hooked = await app.inject({ url: '/me', headers: { authorization: `Bearer ${expiredAccess(viaHook.sessionId)}`, 'x-refresh-token': viaHook.refreshToken, dpop: await proof(key, 'GET', `${ORIGIN}/me`) } })
  t.equal(hooked.statusCode, 200, `the hook refreshes an unbound session with a proof: ${hooked.body}`)
  const access = hooked.headers['x-access-token']
  if (typeof access === 'string') t.same(payloadOf(access).cnf, { jkt }, 'the hook\'s new access token is bound')
  else t.fail('the hook sent no new access token')
  t.equal((await readSession(redis, prefix, 'u-alice', viaHook.sessionId))?.jkt, jkt, 'the hook bound the record')
})

t.test('a login or refresh with an invalid proof is refused, never silently left unbound', async t => {
  const { app, redis, prefix } = await buildApp(t, DPOP)
  const key = await newKey('ES256')

  const wrongUrl = await proof(key, 'POST', `${ORIGIN}/auth/refresh`)
  const l1 = await app.inject({ method: 'POST', url: '/auth/login', headers: { dpop: wrongUrl }, payload: { username: 'alice', password: USERS.alice.password } })
  assertRefused(t, l1, 'a login with a proof for another URL', { secrets: [wrongUrl] })
  const l2 = await app.inject({ method: 'POST', url: '/auth/login', headers: { dpop: 'not-a-proof' }, payload: { username: 'alice', password: USERS.alice.password } })
  assertRefused(t, l2, 'a login with a DPoP header that is not a JWS')
  t.equal(await readSessions(redis, prefix, 'u-alice'), undefined, 'no session was created by the refused logins')

  const pair = await login(app)
  const h0 = (await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h
  const badProof = await proof(key, 'GET', `${ORIGIN}/auth/refresh`)
  const r = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { dpop: badProof }, payload: { refreshToken: pair.refreshToken } })
  assertRefused(t, r, 'the refresh of an unbound session with an invalid proof (wrong htm)', { secrets: [badProof, pair.refreshToken] })
  const rec = await readSession(redis, prefix, 'u-alice', pair.sessionId)
  t.equal(rec?.h, h0, 'the refused refresh did not rotate')
  t.equal(rec?.jkt, null, 'nor bind')

  const hooked = await app.inject({ url: '/me', headers: { authorization: `Bearer ${expiredAccess(pair.sessionId)}`, 'x-refresh-token': pair.refreshToken, dpop: badProof } })
  assertRefused(t, hooked, 'the refresh hook with an invalid proof', { secrets: [badProof, pair.refreshToken] })
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, h0, 'the hook did not rotate either')
})

t.test('required: true refuses a login or a refresh without a proof', async t => {
  const { app, redis, prefix } = await buildApp(t, withDpop({ required: true }))
  const bare = await loginWith(app)
  assertRefused(t, bare, 'a login without a proof')
  t.equal(await readSessions(redis, prefix, 'u-alice'), undefined, 'no session created')

  const key = await newKey('ES256')
  const pair = await boundLogin(app, key)
  t.equal(pair.tokenType, 'DPoP', 'a login with a proof works')
  t.equal((await refreshWith(app, pair.refreshToken, key)).statusCode, 200, 'and refreshes with a proof')

  // A session made unbound before `required` was turned on (another instance on the same prefix without it).
  const { app: before } = await buildApp(t, DPOP, { prefix })
  const old = await login(before)
  const h0 = (await readSession(redis, prefix, 'u-alice', old.sessionId))?.h
  const r = await refreshWith(app, old.refreshToken)
  assertRefused(t, r, 'POST /auth/refresh of an unbound session without a proof', { secrets: [old.refreshToken] })
  t.equal((await readSession(redis, prefix, 'u-alice', old.sessionId))?.h, h0, 'h unchanged')

  const withProof = await refreshWith(app, old.refreshToken, key)
  t.equal(withProof.statusCode, 200, `with a proof, the old unbound session refreshes and gets bound: ${withProof.body}`)
  t.equal((await readSession(redis, prefix, 'u-alice', old.sessionId))?.jkt, await jktOf(key), 'the old session is now bound')
})

t.test('required: true also holds for the refresh hook: an unbound session is not refreshed there without a proof', async t => {
  const { app, redis, prefix } = await buildApp(t, withDpop({ required: true }))
  // An unbound session, made before `required` was turned on (another instance on the same prefix without it).
  const { app: before } = await buildApp(t, DPOP, { prefix })
  const old = await login(before)
  const h0 = (await readSession(redis, prefix, 'u-alice', old.sessionId))?.h

  const hooked = await app.inject({ url: '/me', headers: { authorization: `Bearer ${expiredAccess(old.sessionId)}`, 'x-refresh-token': old.refreshToken } })
  assertRefused(t, hooked, 'the refresh hook (expired token + x-refresh-token, no proof) with required: true', { secrets: [old.refreshToken] })
  t.equal(hooked.headers['x-access-token'], undefined, 'no new access token from the hook without a proof')
  t.equal((await readSession(redis, prefix, 'u-alice', old.sessionId))?.h, h0, 'the hook did not rotate the unbound session without a proof')

  const refreshOnly = await app.inject({ url: '/me', headers: { 'x-refresh-token': old.refreshToken } })
  assertRefused(t, refreshOnly, 'the refresh hook (x-refresh-token alone, no proof) with required: true', { secrets: [old.refreshToken] })
})

t.test('reuse beats binding: a thief who binds a stolen session to his key loses it when the victim reuses the old token', async t => {
  for (const store of ['redis', 'memory'] as const) {
    const { app, redis, prefix } = await buildApp(t, withDpop({}, { reuseGraceMs: 0, ...(store === 'memory' ? { redis: undefined, store: new MemoryStore() } : {}) }))
    const thief = await newKey('ES256')
    const victim = await login(app)
    // The thief refreshes first, with a proof by his own key: the unbound session is now bound to it.
    const stolen = await refreshWith(app, victim.refreshToken, thief)
    t.equal(stolen.statusCode, 200, `${store}: the thief's refresh binds the session`)
    // The victim's client still holds the old token and refreshes without a proof: that is reuse, and the
    // session dies (not a key refusal that would leave the thief holding it).
    const reused = await refreshWith(app, victim.refreshToken)
    t.equal(reused.statusCode, 401, store)
    t.equal(reused.json().code, 'TOKENGATE_REFRESH_REUSED', `${store}: the victim's old token reads as reuse`)
    const after = await refreshWith(app, (stolen.json() as Pair).refreshToken, thief)
    t.equal(after.statusCode, 401, `${store}: the thief's token died with the session`)
    if (store === 'redis') t.equal(await readSession(redis, prefix, 'u-alice', victim.sessionId), undefined, 'the record is gone')
  }
})
