// Signed identity for upstreams: a route with `assertion: { audience }` sends its upstream
// x-tokengate-assertion, a JWT signed with the gateway's first tokens.keys entry, checked here by an independent
// JOSE library (jose's jwtVerify against the gateway's own /.well-known/jwks.json over HTTP, as an upstream
// would): header kid and typ "JWT", claims iss, aud, sub, sid, roles, the user's claims, iat, exp ≤ 60 s
// later and never past the access token's. One assertion per token and audience is reused; a revoked session
// gets none; a client-sent one (any spelling) never reaches an upstream; forward authentication's 200 carries
// it; a config with `assertion` and no asymmetric key is refused at load (the bin exits 78).
import { generateKeyPairSync } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import type { IncomingHttpHeaders } from 'node:http'
import path from 'node:path'
import t, { type Test } from 'tap'
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose'
import { ConfigError, parseConfig } from '../../gateway/index.js'
import { assertionSigner } from '../../gateway/assertion.js'
import type { AuthInfo } from '../../plugin/index.js'
import { GATEWAY_USERS, postJson, rawRequest, startGateway, type TestGateway } from '../helpers/gateway.js'
import { childEnv, killChildren, runBin, tempDir } from '../helpers/spawn.js'
import { startEchoUpstream } from '../helpers/upstream.js'

t.teardown(killChildren)

type Alg = 'EdDSA' | 'ES256' | 'RS256'
const ISSUER = 'https://gateway.example'

function keyOf (alg: Alg, kid: string): { kid: string, algorithm: Alg, privateKey: string, publicKey: string } {
  const publicKeyEncoding = { type: 'spki', format: 'pem' } as const
  const privateKeyEncoding = { type: 'pkcs8', format: 'pem' } as const
  const pair = alg === 'EdDSA'
    ? generateKeyPairSync('ed25519', { publicKeyEncoding, privateKeyEncoding })
    : alg === 'ES256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256', publicKeyEncoding, privateKeyEncoding })
      : generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding, privateKeyEncoding })
  return { kid, algorithm: alg, privateKey: pair.privateKey, publicKey: pair.publicKey }
}

interface Echo { method: string, url: string, headers: IncomingHttpHeaders }

async function setup (t: Test, alg: Alg = 'EdDSA', tokens: Record<string, unknown> = {}): Promise<{ gw: TestGateway, jwks: ReturnType<typeof createRemoteJWKSet> }> {
  const up = await startEchoUpstream()
  t.teardown(up.close)
  const gw = await startGateway(t, {
    tokens: { secret: undefined, keys: [keyOf(alg, `${alg}-1`), keyOf('EdDSA', 'old')], issuer: ISSUER, ...tokens },
    forwardAuth: {},
    routes: [
      { prefix: '/orders', upstream: up.url, assertion: { audience: 'orders-api' } },
      { prefix: '/cms', upstream: up.url, auth: 'optional', assertion: { audience: 'cms' } },
      { prefix: '/plain', upstream: up.url },
      { prefix: '/pub', upstream: up.url, auth: 'public' },
      { prefix: '/billing', assertion: { audience: 'billing' } }
    ]
  }, { redis: true })
  return { gw, jwks: createRemoteJWKSet(new URL(`${gw.base}/.well-known/jwks.json`)) }
}

async function get (gw: TestGateway, url: string, headers: Record<string, string> = {}): Promise<{ status: number, echo: Echo, body: string }> {
  const res = await rawRequest(gw.port, { path: url, headers })
  let echo = {} as Echo
  try { echo = JSON.parse(res.body) } catch { /* not the echo */ }
  return { status: res.status, echo, body: res.body }
}

for (const alg of ['EdDSA', 'ES256', 'RS256'] as const) {
  t.test(`${alg}: the upstream receives an assertion any JOSE library verifies against the JWKS`, async t => {
    const { gw, jwks } = await setup(t, alg)
    const user = { sub: 'carol', roles: ['user', 'billing'], claims: { email: 'carol@example.com', tenant: 'acme', iss: 'not-this', roles: ['forged'] } }
    const pair = await gw.app.tokengate.issue(user)
    const before = Math.floor(Date.now() / 1000)
    const res = await get(gw, '/orders/42', { authorization: `Bearer ${pair.accessToken}` })
    t.equal(res.status, 200, res.body)
    const assertion = res.echo.headers['x-tokengate-assertion'] as string
    t.type(assertion, 'string', 'x-tokengate-assertion reached the upstream')
    const { payload, protectedHeader } = await jwtVerify(assertion, jwks, { issuer: ISSUER, audience: 'orders-api', typ: 'JWT', algorithms: [alg] })
    t.equal(protectedHeader.kid, `${alg}-1`, 'header kid: the first key\'s')
    t.equal(protectedHeader.typ, 'JWT', 'header typ: JWT')
    t.equal(protectedHeader.alg, alg)
    t.equal(payload.iss, ISSUER, 'iss: tokens.issuer (the user\'s own iss claim does not override it)')
    t.equal(payload.aud, 'orders-api', 'aud: the route\'s audience')
    t.equal(payload.sub, 'carol', 'sub')
    t.equal(payload.sid, pair.sessionId, 'sid')
    t.same(payload.roles, ['user', 'billing'], 'roles (not the user\'s forged roles claim)')
    t.equal(payload.email, 'carol@example.com', 'the user\'s claims')
    t.equal(payload.tenant, 'acme')
    t.equal(payload.auth_time, decodeJwt(pair.accessToken).auth_time, 'auth_time: the access token\'s')
    t.ok(payload.iat! >= before && payload.iat! <= Math.floor(Date.now() / 1000), 'iat: now')
    t.ok(payload.exp! > payload.iat! && payload.exp! - payload.iat! <= 60, `exp ≤ 60 s after iat (${payload.exp! - payload.iat!} s)`)
    t.ok(payload.exp! <= decodeJwt(pair.accessToken).exp!, 'and never after the access token\'s exp')
    t.equal(res.echo.headers['x-user-id'], 'carol', 'the plain identity headers still come')
    t.equal(decodeProtectedHeader(pair.accessToken).kid, `${alg}-1`, 'control: the same key signs the access tokens')
  })
}

t.test('an assertion outlives neither its access token nor 60 s', async t => {
  const { gw, jwks } = await setup(t, 'EdDSA', { accessTokenTtl: '20s' })
  const pair = await gw.app.tokengate.issue({ sub: 'dave', roles: [] })
  const res = await get(gw, '/orders/1', { authorization: `Bearer ${pair.accessToken}` })
  const { payload } = await jwtVerify(res.echo.headers['x-tokengate-assertion'] as string, jwks, { issuer: ISSUER, audience: 'orders-api' })
  t.equal(payload.exp, decodeJwt(pair.accessToken).exp, 'with a 20 s access token: the token\'s exp')
})

t.test('reused per access token and audience, signed anew for another token; a revoked session gets none', async t => {
  const { gw, jwks } = await setup(t)
  const a = await postJson(gw.base, '/auth/login', { username: 'alice', password: GATEWAY_USERS.alice })
  const first = await get(gw, '/orders/1', { authorization: `Bearer ${a.body.accessToken}` })
  const second = await get(gw, '/orders/2', { authorization: `Bearer ${a.body.accessToken}` })
  t.equal(second.echo.headers['x-tokengate-assertion'], first.echo.headers['x-tokengate-assertion'], 'the same token: the same assertion (not signed per request)')
  const cms = await get(gw, '/cms/1', { authorization: `Bearer ${a.body.accessToken}` })
  t.not(cms.echo.headers['x-tokengate-assertion'], first.echo.headers['x-tokengate-assertion'], 'another audience: another assertion')
  t.equal((await jwtVerify(cms.echo.headers['x-tokengate-assertion'] as string, jwks, { issuer: ISSUER, audience: 'cms' })).payload.sub, 'alice')
  await t.rejects(jwtVerify(cms.echo.headers['x-tokengate-assertion'] as string, jwks, { issuer: ISSUER, audience: 'orders-api' }), 'not valid for the other audience')
  const b = await postJson(gw.base, '/auth/login', { username: 'alice', password: GATEWAY_USERS.alice })
  const other = await get(gw, '/orders/1', { authorization: `Bearer ${b.body.accessToken}` })
  t.not(other.echo.headers['x-tokengate-assertion'], first.echo.headers['x-tokengate-assertion'], 'another token: another assertion')
  t.equal(decodeJwt(other.echo.headers['x-tokengate-assertion'] as string).sid, b.body.sessionId, 'naming its own session')

  const out = await rawRequest(gw.port, { method: 'POST', path: '/auth/logout', headers: { authorization: `Bearer ${a.body.accessToken}` } })
  t.equal(out.status, 204)
  const revoked = await get(gw, '/orders/3', { authorization: `Bearer ${a.body.accessToken}` })
  t.equal(revoked.status, 401, 'the revoked session: 401, its cached assertion never served')
  t.equal(revoked.echo.headers, undefined, 'the upstream was not reached')
  t.notOk(revoked.body.includes('x-tokengate-assertion'), 'no assertion in the answer')
  const refreshed = await get(gw, '/orders/3', { 'x-refresh-token': b.body.refreshToken })
  t.equal(refreshed.status, 200, 'control: the refresh hook on the other session')
  t.equal(decodeJwt(refreshed.echo.headers['x-tokengate-assertion'] as string).sid, b.body.sessionId, 'gets the assertion of its fresh token')
})

t.test('a client-sent assertion, in any spelling, never reaches an upstream', async t => {
  const { gw, jwks } = await setup(t)
  const pair = await gw.app.tokengate.issue({ sub: 'erin', roles: ['user'] })
  const forged = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.'
  const spellings = { 'x-tokengate-assertion': forged, x_tokengate_assertion: forged, 'X_Tokengate-Assertion': forged }
  for (const [url, auth] of [['/orders/1', true], ['/plain/1', true], ['/cms/1', false], ['/pub/1', true], ['/pub/1', false]] as const) {
    for (const [name, value] of Object.entries(spellings)) {
      const res = await get(gw, url, { ...(auth ? { authorization: `Bearer ${pair.accessToken}` } : {}), [name]: value, 'x-harmless': 'kept' })
      t.equal(res.status, 200, `${url} ${auth ? 'with' : 'without'} a token, ${name}: ${res.body}`)
      const h = res.echo.headers
      t.notOk(JSON.stringify(h).includes(forged), `${url}, ${name}: the forged assertion did not arrive`)
      t.same(Object.keys(h).filter(k => k.replace(/_/g, '-').toLowerCase() === 'x-tokengate-assertion' && k !== 'x-tokengate-assertion'), [], `${url}, ${name}: no other spelling arrived`)
      t.equal(h['x-harmless'], 'kept', `${url}, ${name}: control: other headers arrive`)
      if (url === '/orders/1') t.equal((await jwtVerify(h['x-tokengate-assertion'] as string, jwks, { issuer: ISSUER, audience: 'orders-api' })).payload.sub, 'erin', 'control: the gateway\'s own assertion took its place')
      else t.equal(h['x-tokengate-assertion'], undefined, `${url}: no assertion at all (no assertion route, or no identity)`)
    }
  }
})

t.test('forward authentication\'s 200 carries the route\'s assertion', async t => {
  const { gw, jwks } = await setup(t)
  const pair = await gw.app.tokengate.issue({ sub: 'frank', roles: ['user'] })
  const res = await rawRequest(gw.port, { path: '/auth/verify', headers: { authorization: `Bearer ${pair.accessToken}`, 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/billing/invoices' } })
  t.equal(res.status, 200, res.body)
  const { payload } = await jwtVerify(res.headers['x-tokengate-assertion'] as string, jwks, { issuer: ISSUER, audience: 'billing', typ: 'JWT' })
  t.equal(payload.sub, 'frank')
  t.equal(payload.sid, pair.sessionId)
  const plain = await rawRequest(gw.port, { path: '/auth/verify', headers: { authorization: `Bearer ${pair.accessToken}`, 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/plain/x' } })
  t.equal(plain.status, 200)
  t.equal(plain.headers['x-tokengate-assertion'], undefined, 'control: a route without one: none')
})

t.test('config: assertion without asymmetric keys, without an issuer, or on a public route is refused at load', async t => {
  const key = keyOf('EdDSA', 'k1')
  const base = { login: { upstream: 'http://127.0.0.1:9/login' } }
  const route = { prefix: '/api', upstream: 'http://127.0.0.1:9', assertion: { audience: 'api' } }
  const refused = (config: Record<string, unknown>, field: string, says: RegExp): void => {
    const err = (() => { try { parseConfig({ ...base, ...config }); return undefined } catch (e) { return e as Error } })()
    t.ok(err instanceof ConfigError, `${field}: a ConfigError (${err?.message})`)
    t.equal((err as ConfigError | undefined)?.field, field, `names ${field}`)
    t.match(err?.message, says)
  }
  refused({ tokens: { secret: 'x'.repeat(64), issuer: ISSUER }, routes: [route] }, 'routes[0].assertion', /tokens\.keys/)
  refused({ tokens: { keys: [key] }, routes: [route] }, 'tokens.issuer', /routes\[0\]\.assertion/)
  refused({ tokens: { keys: [key], issuer: ISSUER }, routes: [{ ...route, auth: 'public' }] }, 'routes[0].assertion', /public/)
  refused({ tokens: { keys: [key], issuer: ISSUER }, routes: [{ ...route, assertion: { audience: '' } }] }, 'routes[0].assertion.audience', /invalid/)
  refused({ tokens: { keys: [key], issuer: ISSUER }, routes: [{ ...route, assertion: { aud: 'api' } }] }, 'routes[0].assertion.aud', /not a known field/)
  refused({ tokens: { keys: [key], issuer: ISSUER, audience: ['web', 'api'] }, routes: [route] }, 'routes[0].assertion.audience', /tokens\.audience/)
  t.ok(parseConfig({ ...base, tokens: { keys: [key], issuer: ISSUER, audience: 'web' }, routes: [route] }), 'control: an audience of its own loads')
  t.ok(parseConfig({ ...base, tokens: { keys: [key], issuer: ISSUER }, routes: [route] }), 'control: with a key and an issuer it loads')

  const dir = tempDir('assertion-bin')
  const file = path.join(dir, 'gateway.json')
  await writeFile(file, JSON.stringify({ listen: { port: 0 }, tokens: { secret: 'y'.repeat(64), issuer: ISSUER }, login: { upstream: 'http://127.0.0.1:9/login' }, routes: [route] }))
  const r = await runBin(['--config', file], { env: childEnv() })
  t.equal(r.code, 78, 'the bin exits 78')
  t.match(r.stderr, /^tokengate: config: routes\[0\]\.assertion /, `one line naming the field (${r.stderr})`)
  t.notMatch(r.stdout, /listening/i, 'it never listened')
})

t.test('the cache: reused until half its life, bounded, never past the token', async t => {
  let now = 1_800_000_000_000
  const key = keyOf('EdDSA', 'k1')
  const signer = assertionSigner(key, ISSUER, { now: () => now, max: 3 })
  const assert = signer.forAudience('api')
  const token = (exp: number, n: number): string => `h.${Buffer.from(JSON.stringify({ exp, n })).toString('base64url')}.s`
  const auth = (tok: string): AuthInfo => ({ userId: 'u', sessionId: 's', roles: ['r'], claims: {}, token: tok, authTime: now / 1000 - 60 })
  const long = token(now / 1000 + 600, 1)
  const a1 = assert(auth(long))
  now += 29_000
  t.equal(assert(auth(long)), a1, 'reused 29 s later')
  now += 2_000
  const a2 = assert(auth(long))
  t.not(a2, a1, 'signed anew past half its life (30 s)')
  t.equal(decodeJwt(a2).iat, now / 1000)
  t.equal(decodeJwt(a2).exp! - decodeJwt(a2).iat!, 60)
  const short = token(now / 1000 + 10, 2)
  const s1 = assert(auth(short))
  t.equal(decodeJwt(s1).exp, now / 1000 + 10, 'a token with 10 s left: exp is the token\'s')
  now += 4_000
  t.equal(assert(auth(short)), s1, 'reused within half of its 10 s')
  now += 2_000
  t.not(assert(auth(short)), s1, 'then signed anew')
  // Bounded: a fourth token drops the oldest entry.
  for (let n = 3; n <= 5; n++) assert(auth(token(now / 1000 + 600, n)))
  const again = assert(auth(long))
  t.not(again, a2, 'the oldest entry was dropped (max 3): signed again')
})
