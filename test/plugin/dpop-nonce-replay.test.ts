// DPoP replay memory and server nonces across instances. `replay: 'store'` (the default) keeps the jti
// memory in Redis, so a proof used on one instance is refused on another on the same key prefix;
// `replay: 'memory'` keeps it per process (the documented trade-off: another instance accepts it once).
// `nonce: true` (RFC 9449 §8): a proof without the server's nonce, or with a wrong one, is answered
// 401 TOKENGATE_DPOP_NONCE with `WWW-Authenticate: DPoP error="use_dpop_nonce"` and a DPoP-Nonce header; the
// retry with that nonce works, on every route; nonces are stateless, so one from instance A works on B.
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { buildApp, USERS } from '../helpers/app.js'
import { assertRefused, newKey, proof, withDpop, type KeyPair } from '../helpers/dpop.js'
import { readSession, readSessions } from '../helpers/redis.js'
import { hashOf } from '../helpers/tokens.js'

const ORIGIN = 'http://localhost'
const LOGIN_URL = `${ORIGIN}/auth/login`

async function loginWith (app: FastifyInstance, dpop: string): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/auth/login', headers: { dpop }, payload: { username: 'alice', password: USERS.alice.password } })
}

/** The DPoP-Nonce a refusal handed out (fails the test when there is none). */
function nonceOf (t: Test, res: LightMyRequestResponse, what: string): string {
  const nonce = res.headers['dpop-nonce']
  t.type(nonce, 'string', `${what}: the answer carries a DPoP-Nonce header`)
  if (typeof nonce === 'string') t.ok(nonce.length > 0, `${what}: the nonce is not empty`)
  return typeof nonce === 'string' ? nonce : ''
}

/** Logs in with a nonce from a first refused attempt; returns the pair and the nonce. */
async function nonceLogin (app: FastifyInstance, key: KeyPair): Promise<{ pair: { accessToken: string, refreshToken: string, sessionId: string }, nonce: string }> {
  const first = await loginWith(app, await proof(key, 'POST', LOGIN_URL))
  const nonce = first.headers['dpop-nonce']
  if (typeof nonce !== 'string') throw new Error(`no DPoP-Nonce from a nonce-less login: ${first.statusCode} ${first.body}`)
  const res = await loginWith(app, await proof(key, 'POST', LOGIN_URL, { nonce }))
  if (res.statusCode !== 200) throw new Error(`a login with the server nonce failed: ${res.statusCode} ${res.body}`)
  return { pair: res.json(), nonce }
}

t.test('replay: store (default) shares the jti memory: a proof used on instance A is refused on instance B', async t => {
  const a = await buildApp(t, withDpop())
  const b = await buildApp(t, withDpop(), { prefix: a.prefix })
  const key = await newKey('ES256')
  const p = await proof(key, 'POST', LOGIN_URL)
  t.equal((await loginWith(a.app, p)).statusCode, 200, 'the first use, on A, is accepted')
  assertRefused(t, await loginWith(b.app, p), 'the same proof on B', { secrets: [p] })
  assertRefused(t, await loginWith(a.app, p), 'the same proof on A again', { secrets: [p] })
  t.equal(Object.keys(await readSessions(a.redis, a.prefix, 'u-alice') ?? {}).length, 1, 'one session in all')
})

t.test('replay: memory keeps jti memory per instance: B accepts a proof used on A (the documented trade-off), A still refuses it', async t => {
  const a = await buildApp(t, withDpop({ replay: 'memory' }))
  const b = await buildApp(t, withDpop({ replay: 'memory' }), { prefix: a.prefix })
  const key = await newKey('Ed25519')
  const p = await proof(key, 'POST', LOGIN_URL)
  t.equal((await loginWith(a.app, p)).statusCode, 200, 'the first use, on A, is accepted')
  t.equal((await loginWith(b.app, p)).statusCode, 200, 'B, with its own memory, accepts it')
  assertRefused(t, await loginWith(a.app, p), 'the second use on A', { secrets: [p] })
  assertRefused(t, await loginWith(b.app, p), 'the second use on B', { secrets: [p] })
})

t.test('nonce: true: a proof without the server nonce is answered use_dpop_nonce with a DPoP-Nonce; the retry with it works', async t => {
  const { app, redis, prefix } = await buildApp(t, withDpop({ nonce: true }))
  const key = await newKey('ES256')
  const bare = await proof(key, 'POST', LOGIN_URL)
  const first = await loginWith(app, bare)
  assertRefused(t, first, 'a login proof without a nonce', { code: 'TOKENGATE_DPOP_NONCE', secrets: [bare] })
  const nonce = nonceOf(t, first, 'the nonce-less login')
  t.equal(await readSessions(redis, prefix, 'u-alice'), undefined, 'no session from the refused login')

  const retry = await loginWith(app, await proof(key, 'POST', LOGIN_URL, { nonce }))
  t.equal(retry.statusCode, 200, `the retry with the DPoP-Nonce works: ${retry.body}`)
  t.equal(retry.json().tokenType, 'DPoP')
  nonceOf(t, retry, 'the accepted retry (every answer to a DPoP request carries the current nonce)')
})

t.test('nonce: true: a wrong nonce is refused the same way, with a nonce to retry with', async t => {
  const { app } = await buildApp(t, withDpop({ nonce: true }))
  const { app: otherSecret } = await buildApp(t, withDpop({ nonce: true }, { secret: 'c'.repeat(64) + 'd'.repeat(64) }))
  const key = await newKey('Ed25519')
  const foreign = nonceOf(t, await loginWith(otherSecret, await proof(key, 'POST', LOGIN_URL)), 'an instance with another secret')
  const real = nonceOf(t, await loginWith(app, await proof(key, 'POST', LOGIN_URL)), 'this instance')
  const [slot] = real.split('.')
  for (const [nonce, what] of [
    ['made-up', 'a made-up nonce'],
    [`${slot}.AAAAAAAAAAAAAAAAAAAAAA`, 'a nonce of the right shape with a forged MAC'],
    [foreign, 'a nonce from an instance with another secret'],
    [`${(parseInt(slot, 36) - 5).toString(36)}.${real.split('.')[1]}`, 'the current nonce\'s MAC moved to another slot']
  ]) {
    const p = await proof(key, 'POST', LOGIN_URL, { nonce })
    const res = await loginWith(app, p)
    assertRefused(t, res, what, { code: 'TOKENGATE_DPOP_NONCE', secrets: [p] })
    nonceOf(t, res, what)
  }
  const ok = await loginWith(app, await proof(key, 'POST', LOGIN_URL, { nonce: real }))
  t.equal(ok.statusCode, 200, `the server's own nonce works: ${ok.body}`)
})

t.test('nonce: true: a nonce from instance A works on instance B (same secret, same prefix)', async t => {
  const a = await buildApp(t, withDpop({ nonce: true }))
  const b = await buildApp(t, withDpop({ nonce: true }), { prefix: a.prefix })
  const key = await newKey('ES256')
  const nonce = nonceOf(t, await loginWith(a.app, await proof(key, 'POST', LOGIN_URL)), 'A')
  const res = await loginWith(b.app, await proof(key, 'POST', LOGIN_URL, { nonce }))
  t.equal(res.statusCode, 200, `B accepts A's nonce: ${res.body}`)
})

t.test('nonce: true on resource requests, POST /auth/refresh and the refresh hook too', async t => {
  const { app, redis, prefix } = await buildApp(t, withDpop({ nonce: true }))
  const key = await newKey('Ed25519')
  const { pair, nonce } = await nonceLogin(app, key)

  const meProof = await proof(key, 'GET', `${ORIGIN}/me`, { accessToken: pair.accessToken })
  const me = await app.inject({ url: '/me', headers: { authorization: `DPoP ${pair.accessToken}`, dpop: meProof } })
  assertRefused(t, me, 'GET /me with a proof without a nonce', { code: 'TOKENGATE_DPOP_NONCE', secrets: [meProof, pair.accessToken] })
  const meNonce = nonceOf(t, me, 'GET /me')
  const meOk = await app.inject({ url: '/me', headers: { authorization: `DPoP ${pair.accessToken}`, dpop: await proof(key, 'GET', `${ORIGIN}/me`, { accessToken: pair.accessToken, nonce: meNonce }) } })
  t.equal(meOk.statusCode, 200, `GET /me with the nonce: ${meOk.body}`)

  const h0 = (await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h
  const refreshProof = await proof(key, 'POST', `${ORIGIN}/auth/refresh`)
  const r = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { dpop: refreshProof }, payload: { refreshToken: pair.refreshToken } })
  assertRefused(t, r, 'POST /auth/refresh with a proof without a nonce', { code: 'TOKENGATE_DPOP_NONCE', secrets: [refreshProof, pair.refreshToken] })
  nonceOf(t, r, 'POST /auth/refresh')
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, h0, 'the refused refresh did not rotate')

  const hookProof = await proof(key, 'GET', `${ORIGIN}/me`)
  const hooked = await app.inject({ url: '/me', headers: { 'x-refresh-token': pair.refreshToken, dpop: hookProof } })
  assertRefused(t, hooked, 'the refresh hook with a proof without a nonce', { code: 'TOKENGATE_DPOP_NONCE', secrets: [hookProof, pair.refreshToken] })
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, h0, 'the hook did not rotate')

  const ok = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { dpop: await proof(key, 'POST', `${ORIGIN}/auth/refresh`, { nonce }) }, payload: { refreshToken: pair.refreshToken } })
  t.equal(ok.statusCode, 200, `POST /auth/refresh with the nonce: ${ok.body}`)
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, hashOf(ok.json().refreshToken), 'and it rotated')
})
