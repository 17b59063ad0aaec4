// The gateway with asymmetric keys: GET /.well-known/jwks.json publishes the public keys (never a
// private part), tokens carry alg/kid/typ and verify with `jose` against that JWKS, and key rotation
// (new key signs, old key still verifies) keeps earlier access and refresh tokens working until the
// old key is removed.
import t, { type Test } from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { Redis } from 'ioredis'
import { SignJWT, createLocalJWKSet, decodeProtectedHeader, importPKCS8, jwtVerify, type JSONWebKeySet } from 'jose'
import { buildGateway } from '../../gateway/index.js'
import { hashPassword } from '../../gateway/login.js'
import { startEchoUpstream } from '../helpers/upstream.js'
import { SECRET } from '../helpers/app.js'
import { deletePrefix, redisUrl, uniquePrefix } from '../helpers/redis.js'
import { tempDir } from '../helpers/spawn.js'

type Alg = 'EdDSA' | 'ES256' | 'RS256'
interface KeyPair { privateKey: string, publicKey: string }

function keyPair (alg: Alg): KeyPair {
  const publicKeyEncoding = { type: 'spki', format: 'pem' } as const
  const privateKeyEncoding = { type: 'pkcs8', format: 'pem' } as const
  if (alg === 'EdDSA') return generateKeyPairSync('ed25519', { publicKeyEncoding, privateKeyEncoding })
  if (alg === 'ES256') return generateKeyPairSync('ec', { namedCurve: 'P-256', publicKeyEncoding, privateKeyEncoding })
  return generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding, privateKeyEncoding })
}

const PASSWORD = 'wonderland-jwks-7'

/** A users file (alice) in a temp dir of its own, removed at teardown. */
let usersFilePath: string | undefined
async function usersFile (): Promise<string> {
  if (usersFilePath !== undefined) return usersFilePath
  const dir = tempDir('jwks')
  const file = path.join(dir, 'users.json')
  writeFileSync(file, JSON.stringify([{ sub: 'alice', roles: ['user'], passwordHash: await hashPassword(PASSWORD) }]))
  usersFilePath = file
  return file
}

/** An upstream that echoes what it received. */
let echoUrl: string | undefined
async function echoUpstream (): Promise<string> {
  if (echoUrl !== undefined) return echoUrl
  const up = await startEchoUpstream()
  t.teardown(up.close)
  echoUrl = up.url
  return echoUrl
}

/** A key prefix on the shared Redis, deleted at the test's teardown. */
async function sharedPrefix (t: Test): Promise<{ url: string, prefix: string }> {
  const url = await redisUrl()
  const prefix = uniquePrefix('gw-jwks')
  t.teardown(async () => {
    const c = new Redis(url)
    await deletePrefix(c, prefix)
    c.disconnect()
  })
  return { url, prefix }
}

/** Builds and listens a gateway; closed at teardown. Returns its base URL. */
async function gateway (t: Test, tokens: Record<string, unknown>, redis: string): Promise<string> {
  const app = buildGateway({
    redis: { url: redis },
    tokens,
    login: { usersFile: await usersFile() },
    routes: [{ prefix: '/api', upstream: await echoUpstream() }],
    logLevel: 'silent'
  }, { logger: false })
  t.teardown(async () => { await app.close() })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
}

interface Pair { accessToken: string, refreshToken: string, sessionId: string }

async function login (base: string): Promise<Pair> {
  const res = await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: PASSWORD }) })
  const body = await res.json() as Pair
  if (res.status !== 200) throw new Error(`login: ${res.status} ${JSON.stringify(body)}`)
  return body
}

async function jwks (base: string): Promise<{ status: number, body: JSONWebKeySet }> {
  const res = await fetch(`${base}/.well-known/jwks.json`)
  return { status: res.status, body: await res.json() as JSONWebKeySet }
}

async function api (base: string, token: string): Promise<{ status: number, body: Record<string, unknown> }> {
  const res = await fetch(`${base}/api/items/7`, { headers: { authorization: `Bearer ${token}` } })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

const PRIVATE_PARTS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']

function assertPublicOnly (t: Test, set: JSONWebKeySet): void {
  for (const k of set.keys) {
    for (const part of PRIVATE_PARTS) t.notOk(part in k, `JWK ${String(k.kid)} has no private part "${part}"`)
  }
}

t.test('EdDSA: JWKS lists the public key; tokens verify with jose; a protected route works', async t => {
  const { url, prefix } = await sharedPrefix(t)
  const k1 = keyPair('EdDSA')
  const base = await gateway(t, { keys: [{ kid: 'k1', algorithm: 'EdDSA', ...k1 }], keyPrefix: prefix }, url)

  const set = await jwks(base)
  t.equal(set.status, 200)
  t.equal(set.body.keys.length, 1, 'one key')
  const jwk = set.body.keys[0]
  t.match(jwk, { kty: 'OKP', crv: 'Ed25519', kid: 'k1', alg: 'EdDSA', use: 'sig' })
  t.type(jwk.x, 'string', 'public x present')
  assertPublicOnly(t, set.body)

  const pair = await login(base)
  const header = decodeProtectedHeader(pair.accessToken)
  t.same({ alg: header.alg, kid: header.kid, typ: header.typ }, { alg: 'EdDSA', kid: 'k1', typ: 'at+jwt' }, 'token header')

  const { payload, protectedHeader } = await jwtVerify(pair.accessToken, createLocalJWKSet(set.body), { algorithms: ['EdDSA'], typ: 'at+jwt' })
  t.equal(protectedHeader.kid, 'k1')
  t.equal(payload.sub, 'alice')
  t.equal(payload.sid, pair.sessionId)
  t.same(payload.roles, ['user'])

  const r = await api(base, pair.accessToken)
  t.equal(r.status, 200, 'protected route answers')
  t.match(r.body, { url: '/api/items/7', headers: { 'x-user-id': 'alice', 'x-user-roles': 'user', 'x-session-id': pair.sessionId } })
})

t.test('rotation: k2 signs, k1 still verifies; removing k1 rejects its tokens', async t => {
  const { url, prefix } = await sharedPrefix(t)
  const k1 = keyPair('EdDSA')
  const k2 = keyPair('EdDSA')

  const before = await gateway(t, { keys: [{ kid: 'k1', algorithm: 'EdDSA', ...k1 }], keyPrefix: prefix }, url)
  const old = await login(before)
  const oldRefresh = (await login(before)).refreshToken // a second session, refreshed after the rotation
  t.equal(decodeProtectedHeader(old.accessToken).kid, 'k1')

  const rotated = await gateway(t, { keys: [{ kid: 'k2', algorithm: 'EdDSA', ...k2 }, { kid: 'k1', algorithm: 'EdDSA', ...k1 }], keyPrefix: prefix }, url)
  const set = await jwks(rotated)
  t.equal(set.status, 200)
  t.same(set.body.keys.map(k => k.kid).sort(), ['k1', 'k2'], 'the rotated JWKS lists both keys')
  for (const k of set.body.keys) t.match(k, { kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig' })
  assertPublicOnly(t, set.body)
  const keySet = createLocalJWKSet(set.body)

  // The k1 token from before the rotation.
  const r1 = await api(rotated, old.accessToken)
  t.equal(r1.status, 200, `k1 token accepted by the rotated gateway (${JSON.stringify(r1.body)})`)
  t.match(r1.body, { headers: { 'x-user-id': 'alice', 'x-session-id': old.sessionId } })
  const v1 = await jwtVerify(old.accessToken, keySet, { algorithms: ['EdDSA'], typ: 'at+jwt' })
  t.equal(v1.protectedHeader.kid, 'k1')
  t.equal(v1.payload.sid, old.sessionId)

  // New tokens are signed by k2.
  const fresh = await login(rotated)
  t.equal(decodeProtectedHeader(fresh.accessToken).kid, 'k2', 'new tokens carry kid k2')
  const v2 = await jwtVerify(fresh.accessToken, keySet, { algorithms: ['EdDSA'], typ: 'at+jwt' })
  t.equal(v2.payload.sub, 'alice')
  t.equal(v2.payload.sid, fresh.sessionId)
  t.same(v2.payload.roles, ['user'])
  t.equal((await api(rotated, fresh.accessToken)).status, 200, 'k2 token accepted')

  // A refresh token issued before the rotation still refreshes, into a k2 access token.
  const res = await fetch(`${rotated}/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refreshToken: oldRefresh }) })
  const refreshed = await res.json() as Pair & { code?: string }
  t.equal(res.status, 200, `pre-rotation refresh token refreshes (${refreshed.code ?? ''})`)
  if (res.status === 200) {
    t.equal(decodeProtectedHeader(refreshed.accessToken).kid, 'k2', 'refreshed access token carries kid k2')
    await t.resolves(jwtVerify(refreshed.accessToken, keySet, { algorithms: ['EdDSA'], typ: 'at+jwt' }), 'refreshed token verifies with jose')
  }

  // k1 removed: its tokens are refused.
  const retired = await gateway(t, { keys: [{ kid: 'k2', algorithm: 'EdDSA', ...k2 }], keyPrefix: prefix }, url)
  const set2 = await jwks(retired)
  t.same(set2.body.keys.map(k => k.kid), ['k2'], 'JWKS without k1')
  const r2 = await api(retired, old.accessToken)
  t.equal(r2.status, 401, 'k1 token refused once k1 is removed')
  t.equal(r2.body.code, 'TOKENGATE_TOKEN_INVALID')
  await t.rejects(jwtVerify(old.accessToken, createLocalJWKSet(set2.body), { algorithms: ['EdDSA'] }), 'jose finds no key for k1 either')
  t.equal((await api(retired, fresh.accessToken)).status, 200, 'k2 token still accepted')
})

for (const alg of ['ES256', 'RS256'] as const) {
  t.test(`${alg} keys produce tokens jose verifies`, async t => {
    const { url, prefix } = await sharedPrefix(t)
    const kp = keyPair(alg)
    const kid = `${alg.toLowerCase()}-1`
    const base = await gateway(t, { keys: [{ kid, algorithm: alg, ...kp }], keyPrefix: prefix }, url)
    const set = await jwks(base)
    t.equal(set.status, 200)
    t.match(set.body.keys[0], alg === 'ES256' ? { kty: 'EC', crv: 'P-256', kid, alg, use: 'sig' } : { kty: 'RSA', kid, alg, use: 'sig' })
    assertPublicOnly(t, set.body)

    const pair = await login(base)
    const header = decodeProtectedHeader(pair.accessToken)
    t.same({ alg: header.alg, kid: header.kid, typ: header.typ }, { alg, kid, typ: 'at+jwt' })
    const { payload } = await jwtVerify(pair.accessToken, createLocalJWKSet(set.body), { algorithms: [alg], typ: 'at+jwt' })
    t.equal(payload.sub, 'alice')
    t.equal(payload.sid, pair.sessionId)
    t.same(payload.roles, ['user'])
    t.equal((await api(base, pair.accessToken)).status, 200, 'protected route answers')
  })
}

t.test('a token signed by an unlisted key but carrying kid k1 is refused', async t => {
  const { url, prefix } = await sharedPrefix(t)
  const k1 = keyPair('EdDSA')
  const base = await gateway(t, { keys: [{ kid: 'k1', algorithm: 'EdDSA', ...k1 }], keyPrefix: prefix }, url)
  const real = await login(base) // a live session, so only the signature is wrong

  const intruder = await importPKCS8(keyPair('EdDSA').privateKey, 'EdDSA')
  const now = Math.floor(Date.now() / 1000)
  const forged = await new SignJWT({ sid: real.sessionId, roles: ['user'], auth_time: now })
    .setProtectedHeader({ alg: 'EdDSA', kid: 'k1', typ: 'at+jwt' })
    .setSubject('alice')
    .setJti('forged')
    .setIssuedAt(now)
    .setExpirationTime(now + 600)
    .sign(intruder)

  const r = await api(base, forged)
  t.equal(r.status, 401)
  t.equal(r.body.code, 'TOKENGATE_TOKEN_INVALID')
  t.equal((await api(base, real.accessToken)).status, 200, 'the genuine token still works')
})

t.test('with a plain secret there is no JWKS', async t => {
  const { url, prefix } = await sharedPrefix(t)
  const base = await gateway(t, { secret: SECRET, keyPrefix: prefix }, url)
  const res = await fetch(`${base}/.well-known/jwks.json`)
  t.equal(res.status, 404)
  await res.arrayBuffer()
  const pair = await login(base)
  t.equal(decodeProtectedHeader(pair.accessToken).alg, 'HS256', 'tokens are HS256')
})
