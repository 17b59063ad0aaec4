// DPoP (RFC 9449) proofs for tests, made outside tokengate: well-formed ones by panva's `dpop` package, and
// hand-built ones (odd headers, chosen iat/jti, missing claims) by `jose`, so the server is checked against
// proofs it did not make itself. Plus the assertion every refused proof shares.
import { createHash } from 'node:crypto'
import * as dpop from 'dpop'
import Fastify, { type FastifyInstance, type FastifyServerOptions, type LightMyRequestResponse } from 'fastify'
import { exportJWK, SignJWT, type JWK } from 'jose'
import { Redis } from 'ioredis'
import type { Test } from 'tap'
import tokengate, { type TokengateOptions } from '../../plugin/index.js'
import { SECRET, verifyCredentials } from './app.js'
import { deletePrefix, redisUrl, uniquePrefix } from './redis.js'

export type KeyPair = dpop.KeyPair
export type ProofAlg = 'ES256' | 'Ed25519'

/** The `dpop` option as docs/options.md and docs/dpop.md document it: every member optional, with its default. */
export interface DpopInput {
  required?: boolean
  algorithms?: Array<'ES256' | 'ES384' | 'ES512' | 'EdDSA' | 'Ed25519' | 'PS256' | 'RS256'>
  proofMaxAge?: string | number
  nonce?: boolean
  replay?: 'store' | 'memory'
}

/**
 * Plugin options with `dpop` on. The cast is needed because TokengateOptions types `dpop` as the schema's
 * Static type, where every member (defaults included) is required: `dpop: {}` does not compile for a user.
 */
export const withDpop = (dpop: DpopInput = {}, rest: Partial<TokengateOptions> = {}): Partial<TokengateOptions> =>
  ({ ...rest, dpop } as unknown as Partial<TokengateOptions>)

/** The algorithms a default `dpop: {}` names in its challenges. */
export const DEFAULT_ALGS = 'ES256 EdDSA'
export const INVALID_PROOF_CHALLENGE = `DPoP error="invalid_dpop_proof", algs="${DEFAULT_ALGS}"`
export const NONCE_CHALLENGE = `DPoP error="use_dpop_nonce", algs="${DEFAULT_ALGS}"`

/** A client's DPoP key pair (the public half is extractable, as a JWK in the proof header needs). */
export async function newKey (alg: ProofAlg = 'ES256'): Promise<KeyPair> {
  return await dpop.generateKeyPair(alg)
}

/** The RFC 7638 thumbprint the server must bind to, computed by the dpop package. */
export async function jktOf (key: KeyPair): Promise<string> {
  return await dpop.calculateThumbprint(key.publicKey)
}

/** A well-formed proof by the dpop package: fresh iat and jti, ath when an access token is given. */
export async function proof (key: KeyPair, method: string, url: string, o: { nonce?: string, accessToken?: string } = {}): Promise<string> {
  return await dpop.generateProof(key, url, method, o.nonce, o.accessToken)
}

/** base64url(SHA-256(token)): what `ath` must be. */
export const athOf = (token: string): string => createHash('sha256').update(token).digest('base64url')

export const nowSec = (): number => Math.floor(Date.now() / 1000)

let counter = 0

export interface CraftOptions {
  /** Protected header members over the default { alg, typ: 'dpop+jwt', jwk }; undefined removes one. */
  header?: Record<string, unknown>
  /** Claims over the default { htm, htu, iat: now, jti: random }; undefined removes one. */
  claims?: Record<string, unknown>
  /** What signs (default: the key pair's private key), e.g. an HMAC secret for an HS256 proof. */
  signWith?: CryptoKey | Uint8Array
}

/** A proof built by jose, with whatever header and claims a test needs. */
export async function craftProof (key: KeyPair, method: string, url: string, o: CraftOptions = {}): Promise<string> {
  const jwk = await exportJWK(key.publicKey)
  const defaultAlg = key.privateKey.algorithm.name === 'Ed25519' ? 'Ed25519' : 'ES256'
  const header = dropUndefined({ alg: defaultAlg, typ: 'dpop+jwt', jwk, ...o.header })
  const claims = dropUndefined({ htm: method, htu: url, iat: nowSec(), jti: `crafted-${process.pid}-${++counter}-${Math.random().toString(36).slice(2)}`, ...o.claims })
  return await new SignJWT(claims).setProtectedHeader(header as { alg: string, jwk?: JWK }).sign(o.signWith ?? key.privateKey)
}

/**
 * A JWS with exactly this header and these claims, signed by the key with its own algorithm whatever the
 * header's alg says (jose refuses to sign a mismatch, which is the point of some tests).
 */
export async function signRaw (key: KeyPair, header: Record<string, unknown>, claims: Record<string, unknown>): Promise<string> {
  const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url')
  const input = `${b64(header)}.${b64(claims)}`
  const algorithm = key.privateKey.algorithm.name === 'ECDSA' ? { name: 'ECDSA', hash: 'SHA-256' } : { name: key.privateKey.algorithm.name }
  const signature = await crypto.subtle.sign(algorithm, key.privateKey, Buffer.from(input))
  return `${input}.${Buffer.from(signature).toString('base64url')}`
}

/** The claims every proof needs, fresh. */
export const freshClaims = (method: string, url: string): Record<string, unknown> =>
  ({ htm: method, htu: url, iat: nowSec(), jti: `raw-${process.pid}-${++counter}-${Math.random().toString(36).slice(2)}` })

function dropUndefined (o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v
  return out
}

/** The payload of a JWT (access token or proof), decoded without any check. */
export const payloadOf = (jwt: string): Record<string, any> => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'))

/**
 * A refused DPoP request as RFC 9449 §7.1 and tokengate word it: 401, the given code, the DPoP challenge,
 * and a body that echoes none of `secrets` (the proof, the tokens presented).
 */
export function assertRefused (t: Test, res: LightMyRequestResponse | { statusCode: number, headers: Record<string, unknown>, body: string }, what: string, o: { code?: string, challenge?: string, secrets?: Array<string | undefined> } = {}): void {
  const code = o.code ?? 'TOKENGATE_DPOP_INVALID'
  t.equal(res.statusCode, 401, `${what}: refused with 401 (got ${res.statusCode} ${res.body.slice(0, 200)})`)
  let body: { code?: string } = {}
  try { body = JSON.parse(res.body) } catch { /* asserted below */ }
  t.equal(body.code, code, `${what}: the error code is ${code}`)
  t.equal(res.headers['www-authenticate'], o.challenge ?? (code === 'TOKENGATE_DPOP_NONCE' ? NONCE_CHALLENGE : INVALID_PROOF_CHALLENGE), `${what}: WWW-Authenticate carries the DPoP challenge`)
  for (const s of o.secrets ?? []) {
    if (s === undefined || s === '') continue
    t.notOk(res.body.includes(s), `${what}: the error body does not echo a token or the proof`)
    // The signature (or a refresh token's MAC) alone is enough to recognise a token or proof.
    const last = s.split('.').pop()!
    if (last.length >= 16) t.notOk(res.body.includes(last), `${what}: the error body does not echo the signature of a token or the proof`)
  }
}

/**
 * An app like buildApp's (tokengate on the shared Redis, the routes, GET/POST /me and GET /anon) with Fastify
 * options of the test's own, e.g. { trustProxy: true }; closed and cleaned at teardown.
 */
export async function buildAppWith (t: Test, fastifyOptions: FastifyServerOptions, options: Partial<TokengateOptions> = {}): Promise<{ app: FastifyInstance, redis: Redis, prefix: string }> {
  const url = await redisUrl()
  const prefix = uniquePrefix('dpop-app')
  const redis = new Redis(url)
  const app = Fastify({ logger: false, ...fastifyOptions })
  await app.register(tokengate, { secret: SECRET, redis: url, keyPrefix: prefix, routes: { verifyCredentials }, ...options } as TokengateOptions)
  app.get('/me', { onRequest: app.authenticate }, async (request) => ({ userId: request.auth!.userId, sessionId: request.auth!.sessionId }))
  app.get('/anon', async (request) => ({ userId: request.auth?.userId ?? null }))
  t.teardown(async () => {
    await app.close()
    await deletePrefix(redis, prefix)
    redis.disconnect()
  })
  await app.ready()
  return { app, redis, prefix }
}
