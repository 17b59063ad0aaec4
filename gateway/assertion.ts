// Signed identity for upstreams: a route with `assertion: { audience }` sends its upstream
// x-tokengate-assertion, a short-lived JWT signed with the gateway's first asymmetric key (the one the JWKS
// at /.well-known/jwks.json publishes), so an upstream need not trust a header anyone inside the network
// could set. One assertion per access token and audience is signed, then reused while more than half of its
// life (at most 30 s) remains: a proxied request costs a Map lookup, not a signature.
import { createPrivateKey, sign, type KeyObject } from 'node:crypto'
import type { AuthInfo } from '../plugin/index.js'
import { ConfigError } from './config-error.js'
import type { GatewayConfig } from './config.js'

/** The header that carries the assertion (client-sent ones never reach an upstream: see upstreams.ts). */
export const ASSERTION_HEADER = 'x-tokengate-assertion'
/** An assertion's lifetime at most (its exp is also never past the access token's). */
export const ASSERTION_TTL_S = 60
/** Assertions remembered per audience at most (the oldest is dropped first). */
export const ASSERTION_CACHE_MAX = 10_000

/** Claims an assertion sets itself: a user's claims of these names are not copied. */
const OWN_CLAIMS = new Set(['iss', 'aud', 'sub', 'sid', 'roles', 'iat', 'exp', 'nbf', 'jti', 'auth_time', 'acr', 'amr', 'cnf', 'typ'])

/** The assertion of a request's identity for one audience. */
export type Assert = (auth: AuthInfo) => string

export interface AssertionSigner {
  /** The function that gives a request's assertion for `audience` (one cache per audience). */
  forAudience: (audience: string) => Assert
}

interface Entry { jwt: string, renewAt: number }

/** Refuses, naming the field, a route assertion the gateway cannot sign (no asymmetric key, no issuer). */
export function checkAssertions (config: GatewayConfig): void {
  for (const [i, r] of config.routes.entries()) {
    if (r.assertion === undefined) continue
    const field = `routes[${i}].assertion`
    if (config.tokens.keys === undefined) throw new ConfigError(field, 'needs asymmetric signing keys in tokens.keys (an assertion is signed with the first one and checked against /.well-known/jwks.json; tokens.secret cannot sign one an upstream could check without holding the secret)')
    if (config.tokens.issuer === undefined) throw new ConfigError('tokens.issuer', `is required with ${field}: it is the assertion's iss, which upstreams check`)
    if (r.auth === 'public') throw new ConfigError(field, 'needs auth "required" or "optional" (a public route forwards no identity)')
    // Signed with the same key as access tokens: an access token must never pass for an assertion of this
    // audience at an upstream that does not check typ.
    const audiences = [config.tokens.audience ?? []].flat()
    if (audiences.includes(r.assertion.audience)) throw new ConfigError(`${field}.audience`, 'must differ from tokens.audience (an access token would pass for an assertion at an upstream that does not check typ)')
  }
}

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')

/** The access token's own exp (s): it was verified by the plugin, so its payload is only read here. */
function tokenExp (token: string): number {
  const a = token.indexOf('.')
  const b = token.indexOf('.', a + 1)
  try {
    const exp = (JSON.parse(Buffer.from(token.slice(a + 1, b), 'base64url').toString('utf8')) as { exp?: unknown }).exp
    return typeof exp === 'number' ? exp : 0
  } catch {
    return 0
  }
}

/**
 * A signer with `key` (the gateway's first tokens.keys entry) for `issuer`. `now` is the clock (ms), `max` the
 * bound of each audience's cache.
 */
export function assertionSigner (key: { kid: string, algorithm: 'EdDSA' | 'ES256' | 'RS256', privateKey: string }, issuer: string, opts: { now?: () => number, max?: number } = {}): AssertionSigner {
  const now = opts.now ?? Date.now
  const max = opts.max ?? ASSERTION_CACHE_MAX
  const privateKey: KeyObject = createPrivateKey(key.privateKey)
  const header = b64({ alg: key.algorithm, typ: 'JWT', kid: key.kid })
  const signature = (data: Buffer): Buffer => key.algorithm === 'EdDSA'
    ? sign(null, data, privateKey)
    : key.algorithm === 'ES256'
      ? sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' })
      : sign('sha256', data, privateKey)

  function signFor (auth: AuthInfo, audience: string, nowMs: number): Entry {
    const iat = Math.floor(nowMs / 1000)
    const exp = Math.min(iat + ASSERTION_TTL_S, tokenExp(auth.token))
    const claims: Record<string, unknown> = {}
    for (const k in auth.claims) if (!OWN_CLAIMS.has(k)) claims[k] = auth.claims[k]
    // What the access token says of the authentication itself.
    claims.auth_time = auth.authTime
    if (auth.acr !== undefined) claims.acr = auth.acr
    if (auth.amr !== undefined) claims.amr = auth.amr
    claims.iss = issuer
    claims.aud = audience
    claims.sub = auth.userId
    claims.sid = auth.sessionId
    claims.roles = auth.roles
    claims.iat = iat
    claims.exp = exp
    const input = `${header}.${b64(claims)}`
    const jwt = `${input}.${signature(Buffer.from(input)).toString('base64url')}`
    // Reused while more than half its life (at most 30 s) remains.
    return { jwt, renewAt: iat * 1000 + Math.min(ASSERTION_TTL_S * 500, Math.max(0, exp - iat) * 500) }
  }

  return {
    forAudience (audience) {
      // By access token: one token is one identity, and a revoked one never gets this far (the plugin's hook
      // refuses it before any proxying), so no revocation can be outlived by what is kept here.
      const cache = new Map<string, Entry>()
      return function assert (auth) {
        const t = now()
        const hit = cache.get(auth.token)
        if (hit !== undefined && t < hit.renewAt) return hit.jwt
        const entry = signFor(auth, audience, t)
        if (hit !== undefined) cache.delete(auth.token)
        else if (cache.size >= max) cache.delete(cache.keys().next().value as string)
        cache.set(auth.token, entry)
        return entry.jwt
      }
    }
  }
}

/** The assertion of each route that has one (one signer, one cache per audience); empty without any. */
export function routeAssertions (config: GatewayConfig): Map<GatewayConfig['routes'][number], Assert> {
  const out = new Map<GatewayConfig['routes'][number], Assert>()
  const withAssertion = config.routes.filter(r => r.assertion !== undefined)
  if (withAssertion.length === 0) return out
  // checkAssertions made sure of both when the config was parsed.
  const key = config.tokens.keys![0] as { kid: string, algorithm: 'EdDSA' | 'ES256' | 'RS256', privateKey: string }
  const signer = assertionSigner(key, config.tokens.issuer!)
  const byAudience = new Map<string, Assert>()
  for (const r of withAssertion) {
    const audience = r.assertion!.audience
    let assert = byAudience.get(audience)
    if (assert === undefined) byAudience.set(audience, (assert = signer.forAudience(audience)))
    out.set(r, assert)
  }
  return out
}
