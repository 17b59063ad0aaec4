// The checks a DPoP proof must pass (RFC 9449 §4.3), each failure on its own, as an attacker would try them:
// one DPoP header, a compact JWS, typ dpop+jwt, an allowed asymmetric alg (EdDSA admitting both Ed25519
// names, RFC 9864), a public jwk that fits alg, a valid signature, htm, htu (without query; behind
// trustProxy, the URL the client saw), iat within proofMaxAge (clockTolerance widening it), ath for the
// access token sent, and a jti used once. Every refusal is 401 TOKENGATE_DPOP_INVALID with the DPoP
// challenge, echoes neither the proof nor a token, and creates no session. The odd proofs are built with
// jose, the well-formed ones with the dpop package (test/helpers/dpop.ts): never by tokengate itself.
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { exportJWK, generateKeyPair } from 'jose'
import type { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { buildApp, USERS } from '../helpers/app.js'
import { assertRefused, athOf, buildAppWith, craftProof, freshClaims, newKey, nowSec, proof, signRaw, withDpop, type KeyPair } from '../helpers/dpop.js'
import { keysUnder, readSessions } from '../helpers/redis.js'
import { fakeClock } from '../helpers/clock.js'

const ORIGIN = 'http://localhost'
const LOGIN_URL = `${ORIGIN}/auth/login`
const DPOP = withDpop()

async function loginWith (app: FastifyInstance, dpop: string | string[] | undefined, o: { url?: string, headers?: Record<string, string> } = {}): Promise<LightMyRequestResponse> {
  return await app.inject({
    method: 'POST',
    url: o.url ?? '/auth/login',
    headers: { ...(dpop !== undefined ? { dpop } : {}), ...o.headers } as Record<string, string>,
    payload: { username: 'alice', password: USERS.alice.password }
  })
}

/** How many sessions alice has in Redis. */
async function sessionCount (redis: Redis, prefix: string): Promise<number> {
  return Object.keys(await readSessions(redis, prefix, 'u-alice') ?? {}).length
}

interface Ctx { app: FastifyInstance, redis: Redis, prefix: string }

/** A login with this DPoP header is refused as a bad proof, and no session appears. */
async function loginRefused (t: Test, c: Ctx, dpop: string | string[], what: string, o: { challenge?: string, headers?: Record<string, string> } = {}): Promise<void> {
  const before = await sessionCount(c.redis, c.prefix)
  const res = await loginWith(c.app, dpop, { headers: o.headers })
  assertRefused(t, res, what, { challenge: o.challenge, secrets: [dpop].flat() })
  t.equal(await sessionCount(c.redis, c.prefix), before, `${what}: no session was created`)
}

/** A login with this DPoP header works and is bound. */
async function loginAccepted (t: Test, app: FastifyInstance, dpop: string, what: string, o: { headers?: Record<string, string>, url?: string } = {}): Promise<void> {
  const res = await loginWith(app, dpop, o)
  t.equal(res.statusCode, 200, `${what}: accepted (${res.body.slice(0, 200)})`)
  if (res.statusCode === 200) t.equal(res.json().tokenType, 'DPoP', `${what}: the session is bound`)
}

/** A bound login's tokens, for the checks of requests that present an access token. */
async function boundLogin (app: FastifyInstance, key: KeyPair): Promise<{ accessToken: string, refreshToken: string }> {
  const res = await loginWith(app, await proof(key, 'POST', LOGIN_URL))
  if (res.statusCode !== 200) throw new Error(`bound login failed: ${res.statusCode} ${res.body}`)
  return res.json()
}

/** A jose key pair of another kind (ES384, RS256…), private key exportable, shaped like the dpop package's. */
async function joseKey (alg: string): Promise<KeyPair> {
  return await generateKeyPair(alg, { extractable: true }) as unknown as KeyPair
}

t.test('control: a proof built by jose with every member right is accepted (ES256, Ed25519)', async t => {
  const { app } = await buildApp(t, DPOP)
  await loginAccepted(t, app, await craftProof(await newKey('ES256'), 'POST', LOGIN_URL), 'a jose-built ES256 proof')
  await loginAccepted(t, app, await craftProof(await newKey('Ed25519'), 'POST', LOGIN_URL), 'a jose-built Ed25519 proof')
})

t.test('exactly one DPoP header: two are refused', async t => {
  const c = await buildApp(t, DPOP)
  const key = await newKey('ES256')
  const a = await proof(key, 'POST', LOGIN_URL)
  const b = await proof(key, 'POST', LOGIN_URL)
  await loginRefused(t, c, [a, b], 'two DPoP headers')
  await loginRefused(t, c, `${a}, ${b}`, 'two proofs joined in one header')
  await loginAccepted(t, c.app, a, 'one of them alone (the refusals did not use it up)')
})

t.test('the DPoP header must be a compact JWS', async t => {
  const c = await buildApp(t, DPOP)
  const good = await proof(await newKey('ES256'), 'POST', LOGIN_URL)
  const [h, p, s] = good.split('.')
  await loginRefused(t, c, 'not-a-proof', 'a word')
  await loginRefused(t, c, `${h}.${p}`, 'two parts')
  await loginRefused(t, c, `${h}.${p}.${s}.${s}`, 'four parts')
  await loginRefused(t, c, `${h}.${p}.`, 'an empty signature')
  await loginRefused(t, c, `${h}.!!!.${s}`, 'a part that is not base64url')
  await loginRefused(t, c, `${Buffer.from('{"typ":').toString('base64url')}.${p}.${s}`, 'a header that is not JSON')
})

t.test('typ must be dpop+jwt', async t => {
  const c = await buildApp(t, DPOP)
  const key = await newKey('ES256')
  await loginRefused(t, c, await craftProof(key, 'POST', LOGIN_URL, { header: { typ: 'JWT' } }), 'typ JWT')
  await loginRefused(t, c, await craftProof(key, 'POST', LOGIN_URL, { header: { typ: 'at+jwt' } }), 'typ at+jwt (an access token\'s)')
  await loginRefused(t, c, await craftProof(key, 'POST', LOGIN_URL, { header: { typ: undefined } }), 'no typ')
})

t.test('alg: symmetric (HS256) and none are refused', async t => {
  const c = await buildApp(t, DPOP)
  const key = await newKey('ES256')
  const secret = new Uint8Array(32).fill(7)
  await loginRefused(t, c, await craftProof(key, 'POST', LOGIN_URL, { header: { alg: 'HS256' }, signWith: secret }), 'alg HS256 (an HMAC anyone could make)')
  const none = (sig: string): string => [
    Buffer.from(JSON.stringify({ alg: 'none', typ: 'dpop+jwt', jwk: { kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' } })).toString('base64url'),
    Buffer.from(JSON.stringify({ htm: 'POST', htu: LOGIN_URL, iat: nowSec(), jti: `none-${Math.random()}` })).toString('base64url'),
    sig
  ].join('.')
  await loginRefused(t, c, none(''), 'alg none, no signature')
  await loginRefused(t, c, none('c2ln'), 'alg none with a made-up signature')
})

t.test('alg outside the allowed list (default ES256, EdDSA) is refused: ES384, RS256', async t => {
  const c = await buildApp(t, DPOP)
  const es384 = await joseKey('ES384')
  const rs256 = await joseKey('RS256')
  const es384Proof = async (): Promise<string> => await craftProof(es384, 'POST', LOGIN_URL, { header: { alg: 'ES384' } })
  const rs256Proof = async (): Promise<string> => await craftProof(rs256, 'POST', LOGIN_URL, { header: { alg: 'RS256' } })
  await loginRefused(t, c, await es384Proof(), 'a valid ES384 proof')
  await loginRefused(t, c, await rs256Proof(), 'a valid RS256 proof')

  // The same kind of proofs are good ones: they pass where the algorithms are listed.
  const { app: listed } = await buildApp(t, withDpop({ algorithms: ['ES256', 'ES384', 'RS256'] }))
  await loginAccepted(t, listed, await es384Proof(), 'an ES384 proof where ES384 is listed')
  await loginAccepted(t, listed, await rs256Proof(), 'an RS256 proof where RS256 is listed')
})

t.test('EdDSA admits Ed25519 proofs under either alg name (RFC 9864); a list without it refuses them', async t => {
  const { app } = await buildApp(t, DPOP)
  const key = await newKey('Ed25519')
  await loginAccepted(t, app, await craftProof(key, 'POST', LOGIN_URL, { header: { alg: 'EdDSA' } }), 'alg EdDSA with an Ed25519 key')
  await loginAccepted(t, app, await craftProof(key, 'POST', LOGIN_URL, { header: { alg: 'Ed25519' } }), 'alg Ed25519 with an Ed25519 key')

  const es = await buildApp(t, withDpop({ algorithms: ['ES256'] }))
  const esOnly = 'DPoP error="invalid_dpop_proof", algs="ES256"'
  await loginRefused(t, es, await craftProof(key, 'POST', LOGIN_URL, { header: { alg: 'EdDSA' } }), 'alg EdDSA where only ES256 is allowed', { challenge: esOnly })
  await loginRefused(t, es, await proof(key, 'POST', LOGIN_URL), 'alg Ed25519 where only ES256 is allowed', { challenge: esOnly })
  await loginAccepted(t, es.app, await proof(await newKey('ES256'), 'POST', LOGIN_URL), 'ES256 where only ES256 is allowed')

  const ed = await buildApp(t, withDpop({ algorithms: ['EdDSA'] }))
  await loginRefused(t, ed, await proof(await newKey('ES256'), 'POST', LOGIN_URL), 'ES256 where only EdDSA is allowed', { challenge: 'DPoP error="invalid_dpop_proof", algs="EdDSA"' })
  await loginAccepted(t, ed.app, await proof(key, 'POST', LOGIN_URL), 'alg Ed25519 where only EdDSA is listed')
})

t.test('the jwk header: present, public, and of the key type alg names', async t => {
  const c = await buildApp(t, DPOP)
  const key = await joseKey('ES256')
  const ed = await newKey('Ed25519')
  await loginRefused(t, c, await craftProof(key, 'POST', LOGIN_URL, { header: { jwk: undefined } }), 'no jwk')
  await loginRefused(t, c, await craftProof(key, 'POST', LOGIN_URL, { header: { jwk: await exportJWK(key.privateKey) } }), 'a jwk with the private part (d)')
  await loginRefused(t, c, await craftProof(key, 'POST', LOGIN_URL, { header: { jwk: 'not-a-jwk' } }), 'a jwk that is a string')
  await loginRefused(t, c, await craftProof(key, 'POST', LOGIN_URL, { header: { jwk: { kty: 'oct', k: 'c2VjcmV0' } } }), 'a symmetric jwk')
  const edJwk = await exportJWK(ed.publicKey)
  const ecJwk = await exportJWK(key.publicKey)
  await loginRefused(t, c, await signRaw(ed, { alg: 'ES256', typ: 'dpop+jwt', jwk: edJwk }, freshClaims('POST', LOGIN_URL)), 'alg ES256 with an Ed25519 jwk (and an Ed25519 signature)')
  await loginRefused(t, c, await signRaw(key, { alg: 'EdDSA', typ: 'dpop+jwt', jwk: ecJwk }, freshClaims('POST', LOGIN_URL)), 'alg EdDSA with an EC jwk (and an ECDSA signature)')
  await loginRefused(t, c, await signRaw(key, { alg: 'ES256', typ: 'dpop+jwt', jwk: { ...ecJwk, crv: 'P-384' } }, freshClaims('POST', LOGIN_URL)), 'alg ES256 with a jwk claiming curve P-384')
  // The raw signer itself makes good proofs when header and key agree.
  await loginAccepted(t, c.app, await signRaw(key, { alg: 'ES256', typ: 'dpop+jwt', jwk: ecJwk }, freshClaims('POST', LOGIN_URL)), 'control: a raw-signed proof whose alg and jwk fit')
})

t.test('the signature must verify: a tampered payload, another key\'s jwk, a damaged signature', async t => {
  const c = await buildApp(t, DPOP)
  const key = await newKey('ES256')
  const other = await newKey('ES256')
  const [h, p, s] = (await proof(key, 'POST', LOGIN_URL)).split('.')
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'))
  const tampered = Buffer.from(JSON.stringify({ ...claims, jti: `${claims.jti as string}-x` })).toString('base64url')
  await loginRefused(t, c, `${h}.${tampered}.${s}`, 'a payload changed after signing (new jti)')
  const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'))
  const swapped = Buffer.from(JSON.stringify({ ...header, jwk: await exportJWK(other.publicKey) })).toString('base64url')
  await loginRefused(t, c, `${swapped}.${p}.${s}`, 'the jwk swapped for another key (a thief claiming the victim\'s proof)')
  const [, , otherSig] = (await proof(other, 'POST', LOGIN_URL)).split('.')
  await loginRefused(t, c, `${h}.${p}.${otherSig}`, 'another key\'s signature')
  await loginRefused(t, c, `${h}.${p}.${s.slice(0, 40)}`, 'a truncated signature')
  const edKey = await newKey('Ed25519')
  const [eh, ep, es] = (await proof(edKey, 'POST', LOGIN_URL)).split('.')
  const edClaims = JSON.parse(Buffer.from(ep, 'base64url').toString('utf8'))
  await loginRefused(t, c, `${eh}.${Buffer.from(JSON.stringify({ ...edClaims, htm: 'POST ' })).toString('base64url')}.${es}`, 'a tampered Ed25519 proof')
})

t.test('htm must be the request method', async t => {
  const c = await buildApp(t, DPOP)
  const key = await newKey('Ed25519')
  await loginRefused(t, c, await proof(key, 'GET', LOGIN_URL), 'a proof for GET on a POST')
  await loginRefused(t, c, await proof(key, 'post', LOGIN_URL), 'a proof for "post" (methods are case-sensitive)')
  await loginRefused(t, c, await craftProof(key, 'POST', LOGIN_URL, { claims: { htm: undefined } }), 'no htm')
})

t.test('htu must be the request URL without query and fragment', async t => {
  const c = await buildApp(t, DPOP)
  const key = await newKey('ES256')
  await loginAccepted(t, c.app, await proof(key, 'POST', LOGIN_URL), 'a request with a query string, a proof without it', { url: '/auth/login?next=%2Fhome' })
  await loginAccepted(t, c.app, await proof(key, 'POST', `${LOGIN_URL}#top`), 'a proof whose htu has a fragment')
  await loginRefused(t, c, await proof(key, 'POST', `${ORIGIN}/auth/refresh`), 'a proof for another path')
  await loginRefused(t, c, await proof(key, 'POST', 'http://evil.example/auth/login'), 'a proof for another host')
  await loginRefused(t, c, await proof(key, 'POST', 'https://localhost/auth/login'), 'a proof for https on an http request')
  await loginRefused(t, c, await proof(key, 'POST', '/auth/login'), 'a relative htu')
  await loginRefused(t, c, await craftProof(key, 'POST', LOGIN_URL, { claims: { htu: undefined } }), 'no htu')

  // With an access token too: GET /me?page=2 with a proof for /me.
  const pair = await boundLogin(c.app, key)
  const me = await c.app.inject({ url: '/me?page=2', headers: { authorization: `DPoP ${pair.accessToken}`, dpop: await proof(key, 'GET', `${ORIGIN}/me`, { accessToken: pair.accessToken }) } })
  t.equal(me.statusCode, 200, `GET /me?page=2 with a proof for ${ORIGIN}/me: ${me.body}`)
  const anon = await proof(key, 'GET', `${ORIGIN}/anon`, { accessToken: pair.accessToken })
  const wrong = await c.app.inject({ url: '/me', headers: { authorization: `DPoP ${pair.accessToken}`, dpop: anon } })
  assertRefused(t, wrong, 'GET /me with a proof for /anon', { secrets: [anon, pair.accessToken] })
})

t.test('behind trustProxy: htu is the URL the client saw (X-Forwarded-Proto/Host); without it, those headers count for nothing', async t => {
  const forwarded = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'api.example.com' }
  const key = await newKey('ES256')
  const proxied = await buildAppWith(t, { trustProxy: true }, DPOP)
  await loginAccepted(t, proxied.app, await proof(key, 'POST', 'https://api.example.com/auth/login'), 'trustProxy: a proof for the public URL', { headers: forwarded })
  await loginRefused(t, proxied, await proof(key, 'POST', LOGIN_URL), 'trustProxy: a proof for the internal URL', { headers: forwarded })

  const direct = await buildApp(t, DPOP)
  await loginRefused(t, direct, await proof(key, 'POST', 'https://api.example.com/auth/login'), 'no trustProxy: a proof for the URL a client claims in X-Forwarded-*', { headers: forwarded })
  await loginAccepted(t, direct.app, await proof(key, 'POST', LOGIN_URL), 'no trustProxy: a proof for the URL actually requested', { headers: forwarded })
})

t.test('iat must be within proofMaxAge (60s by default), either way', async t => {
  const c = await buildApp(t, DPOP)
  const key = await newKey('ES256')
  const at = async (iat: unknown): Promise<string> => await craftProof(key, 'POST', LOGIN_URL, { claims: { iat } })
  await loginRefused(t, c, await at(nowSec() - 120), 'a proof made 2 minutes ago')
  await loginRefused(t, c, await at(nowSec() + 120), 'a proof dated 2 minutes in the future')
  await loginRefused(t, c, await at(undefined), 'no iat')
  await loginRefused(t, c, await at(String(nowSec())), 'iat as a string')
  await loginAccepted(t, c.app, await at(nowSec() - 30), 'a proof made 30 s ago')

  const short = await buildApp(t, withDpop({ proofMaxAge: '10s' }))
  await loginRefused(t, short, await at(nowSec() - 30), 'proofMaxAge 10s: a proof made 30 s ago')
  await loginAccepted(t, short.app, await at(nowSec() - 5), 'proofMaxAge 10s: a proof made 5 s ago')
})

t.test('clockTolerance widens the iat window', async t => {
  const c = await buildApp(t, withDpop({}, { clockTolerance: '60s' }))
  const key = await newKey('Ed25519')
  const at = async (iat: number): Promise<string> => await craftProof(key, 'POST', LOGIN_URL, { claims: { iat } })
  await loginAccepted(t, c.app, await at(nowSec() - 100), 'clockTolerance 60s: a proof made 100 s ago')
  await loginAccepted(t, c.app, await at(nowSec() + 100), 'clockTolerance 60s: a proof dated 100 s ahead')
  await loginRefused(t, c, await at(nowSec() - 150), 'clockTolerance 60s: a proof made 150 s ago')
})

t.test('ath must be the hash of the access token sent', async t => {
  const c = await buildApp(t, DPOP)
  const key = await newKey('ES256')
  const pair = await boundLogin(c.app, key)
  const second = await boundLogin(c.app, key)
  const meWith = async (dpop: string): Promise<LightMyRequestResponse> => await c.app.inject({ url: '/me', headers: { authorization: `DPoP ${pair.accessToken}`, dpop } })

  const noAth = await proof(key, 'GET', `${ORIGIN}/me`)
  assertRefused(t, await meWith(noAth), 'a proof without ath', { secrets: [noAth, pair.accessToken] })
  const otherToken = await proof(key, 'GET', `${ORIGIN}/me`, { accessToken: second.accessToken })
  assertRefused(t, await meWith(otherToken), 'ath for another access token of the same key', { secrets: [otherToken, pair.accessToken] })
  const refreshAth = await craftProof(key, 'GET', `${ORIGIN}/me`, { claims: { ath: athOf(pair.refreshToken) } })
  assertRefused(t, await meWith(refreshAth), 'ath of the refresh token', { secrets: [refreshAth, pair.accessToken, pair.refreshToken] })
  const ok = await meWith(await craftProof(key, 'GET', `${ORIGIN}/me`, { claims: { ath: athOf(pair.accessToken) } }))
  t.equal(ok.statusCode, 200, `ath of this access token (computed here) is accepted: ${ok.body}`)
})

t.test('jti: a proof is used once; a missing jti is refused', async t => {
  const c = await buildApp(t, DPOP)
  const key = await newKey('ES256')
  const once = await proof(key, 'POST', LOGIN_URL)
  await loginAccepted(t, c.app, once, 'the first use of a proof')
  await loginRefused(t, c, once, 'the same proof a second time (a replay)')
  t.equal(await sessionCount(c.redis, c.prefix), 1, 'one session, from the first use only')

  const fixed = `fixed-${Math.random()}`
  await loginAccepted(t, c.app, await craftProof(key, 'POST', LOGIN_URL, { claims: { jti: fixed } }), 'a proof with a new jti')
  await loginRefused(t, c, await craftProof(key, 'POST', LOGIN_URL, { claims: { jti: fixed, iat: nowSec() - 1 } }), 'a new proof (other iat, new signature) reusing that jti')
  await loginRefused(t, c, await craftProof(key, 'POST', LOGIN_URL, { claims: { jti: undefined } }), 'no jti')
  await loginRefused(t, c, await craftProof(key, 'POST', LOGIN_URL, { claims: { jti: '' } }), 'an empty jti')

  const pair = await boundLogin(c.app, key)
  const meProof = await proof(key, 'GET', `${ORIGIN}/me`, { accessToken: pair.accessToken })
  const first = await c.app.inject({ url: '/me', headers: { authorization: `DPoP ${pair.accessToken}`, dpop: meProof } })
  t.equal(first.statusCode, 200, `GET /me with a fresh proof: ${first.body}`)
  const replay = await c.app.inject({ url: '/me', headers: { authorization: `DPoP ${pair.accessToken}`, dpop: meProof } })
  assertRefused(t, replay, 'GET /me replaying that proof', { secrets: [meProof, pair.accessToken] })
})

t.test('a proof is refused a second time for as long as its iat is accepted (jti memory covers a future-dated proof too)', async t => {
  // proofMaxAge 10s accepts iat from now-10s to now+10s: a proof dated 10 s ahead (a client clock a little
  // fast) stays acceptable for 20 s, so its jti must be remembered that long. The clock is stopped (at a
  // whole second: the proof is exactly 10 s ahead of it).
  const clock = fakeClock(t)
  const c = await buildApp(t, withDpop({ proofMaxAge: '10s' }))
  const key = await newKey('ES256')
  const iat = nowSec() + 10
  const ahead = await craftProof(key, 'POST', LOGIN_URL, { claims: { iat } })
  await loginAccepted(t, c.app, ahead, 'a proof dated 10 s ahead, within proofMaxAge 10s')
  // Redis keeps the jti by its own clock: 20 s, where a proof dated now would be kept 10 s.
  const [jtiKey] = (await keysUnder(c.redis, c.prefix)).filter(k => k.startsWith(`${c.prefix}:dpop:`))
  const pttl = await c.redis.pttl(jtiKey)
  t.ok(pttl > 10_000 && pttl <= 20_000, `the jti is remembered 20 s (PTTL ${pttl} ms)`)
  clock.to(iat * 1000 + 3000)
  await loginRefused(t, c, ahead, 'the same proof 13 s later, its iat still within the window')
  t.equal(await sessionCount(c.redis, c.prefix), 1, 'the replay made no second session')
})
