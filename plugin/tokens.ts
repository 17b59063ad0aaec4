// Access tokens (JWT, RFC 9068 `at+jwt`, signed and verified by @fastify/jwt / fast-jwt) and refresh
// tokens (opaque, MAC'd with a key derived for that purpose only, so neither is accepted as the other).
import crypto, { createHash, createHmac, createPrivateKey, createPublicKey, randomBytes, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import fastifyJwt, { type JWT } from '@fastify/jwt'
import type { ResolvedOptions, UserInfo } from './options.js'

/** Claims tokengate sets itself; a user's `claims` cannot override them. */
export const RESERVED_CLAIMS: ReadonlySet<string> = new Set([
  'iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti', 'sid', 'auth_time', 'acr', 'amr', 'roles', 'typ', 'kid', 'alg', 'cnf', 'client_id', 'scope'
])

export interface AccessPayload {
  sub: string
  sid: string
  jti: string
  iat: number
  exp: number
  auth_time: number
  roles: string[]
  /** The authentication context class and methods of the session's last authentication (RFC 9470), when known. */
  acr?: string
  amr?: string[]
  iss?: string
  aud?: string | string[]
  /** The DPoP key a bound token is confirmed by (RFC 9449 §6). */
  cnf?: { jkt?: string }
  [claim: string]: unknown
}

export type AccessCheck =
  | { ok: true, payload: AccessPayload }
  | { ok: false, expired: boolean }

export interface RefreshParts {
  userId: string
  sessionId: string
  refreshId: string
  /** Expiry in ms since epoch. */
  expiresAt: number
  /** The hash of the refresh id this one succeeded (absent on a session's first token and on tgr1 tokens). */
  parentHash?: string
}

// tgr2.<b64url user>.<session>.<refresh id>.<parent hash | ->.<expiry ms, base36>.<mac>; tgr1 (0.1) had no parent.
const REFRESH_PREFIX = 'tgr2'
const REFRESH_PREFIX_V1 = 'tgr1'
const ID_BYTES = 16
const MAC_LABEL = 'tokengate refresh-token mac v1'
const SUCCESSOR_LABEL = 'tokengate refresh-token successor v1'
const CSRF_LABEL = 'tokengate csrf v1'

// Random bytes drawn from a pool refilled 4 KiB at a time: one CSPRNG call per ~200 ids, not one each.
const POOL_BYTES = 4096
let pool = randomBytes(POOL_BYTES)
let poolAt = 0
function random (n: number): Buffer {
  if (poolAt + n > POOL_BYTES) {
    pool = randomBytes(POOL_BYTES)
    poolAt = 0
  }
  const out = Buffer.from(pool.subarray(poolAt, poolAt + n))
  pool.fill(0, poolAt, poolAt + n)
  poolAt += n
  return out
}

export const newId = (): string => random(ID_BYTES).toString('base64url')

// SHA-256, base64url. crypto.hash (Node ≥ 20.12) hashes in one call, without a Hash object: about a third of the cost.
export const sha256 = typeof (crypto as { hash?: unknown }).hash === 'function'
  ? (data: string): string => (crypto as unknown as { hash: (alg: string, data: string, enc: string) => string }).hash('sha256', data, 'base64url')
  : (data: string): string => createHash('sha256').update(data).digest('base64url')

/** What the store keeps instead of a refresh id: the first 22 base64url characters (132 bits) of its SHA-256. */
export const hashRefreshId = (refreshId: string): string => sha256(refreshId).slice(0, 22)

const b64urlRe = /^[A-Za-z0-9_-]+$/

interface KeyMaterial { mac: Buffer, successor: Buffer }

const derive = (material: Buffer): KeyMaterial => ({
  mac: createHmac('sha256', material).update(MAC_LABEL).digest(),
  successor: createHmac('sha256', material).update(SUCCESSOR_LABEL).digest()
})

/**
 * The bytes a key's derived keys come from: the UTF-8 bytes of an HS256 `secret`; for a PEM private key the key
 * itself (its PKCS#8 DER), so the same key written with CRLF line ends or without its last newline derives the
 * same keys on every instance.
 */
function keyMaterial (k: { algorithm: string, privateKey: string }): Buffer {
  return k.algorithm === 'HS256' ? Buffer.from(k.privateKey, 'utf8') : createPrivateKey(k.privateKey).export({ format: 'der', type: 'pkcs8' })
}

export class Tokens {
  private readonly signer: JWT
  private readonly verifiers: Map<string | undefined, JWT>
  private readonly single?: JWT
  /** Per key: the MAC and successor keys; then (0.2's derivation, verification only) those from the PEM text. */
  private readonly refreshKeys: KeyMaterial[]
  /** Per key: the key CSRF tokens are MAC'd under (the first one makes them). */
  private readonly csrfKeys: Buffer[]
  private readonly opts: ResolvedOptions

  private constructor (opts: ResolvedOptions, signer: JWT, verifiers: Map<string | undefined, JWT>, refreshKeys: KeyMaterial[], csrfKeys: Buffer[]) {
    this.opts = opts
    this.signer = signer
    this.verifiers = verifiers
    this.single = verifiers.size === 1 ? signer : undefined
    this.refreshKeys = refreshKeys
    this.csrfKeys = csrfKeys
  }

  /** Registers one @fastify/jwt per key in a child context (its `jwt` decorator stays private to us). */
  static async create (app: FastifyInstance, opts: ResolvedOptions): Promise<Tokens> {
    const verify = {
      checkTyp: 'at+jwt',
      // fast-jwt skips iss/aud checks for a token without them: require them when they are configured.
      requiredClaims: ['sub', 'sid', 'exp', 'iat', ...(opts.issuer !== undefined ? ['iss'] : []), ...(opts.audience !== undefined ? ['aud'] : [])],
      clockTolerance: opts.clockToleranceMs,
      cache: true,
      cacheTTL: 600_000,
      ...(opts.issuer !== undefined ? { allowedIss: opts.issuer } : {}),
      ...(opts.audience !== undefined ? { allowedAud: opts.audience } : {})
    }
    const sign = {
      typ: 'at+jwt',
      ...(opts.issuer !== undefined ? { iss: opts.issuer } : {}),
      ...(opts.audience !== undefined ? { aud: opts.audience } : {})
    }
    const keys = opts.keys ?? [{ kid: undefined, algorithm: 'HS256' as const, privateKey: opts.secret!, publicKey: opts.secret! }]
    const apis = new Map<string | undefined, JWT>()
    for (const k of keys) {
      const secret = k.algorithm === 'HS256' ? k.privateKey! : { private: k.privateKey ?? k.publicKey, public: k.publicKey }
      await app.register(async child => {
        await child.register(fastifyJwt, {
          secret: secret as never,
          sign: { ...sign, algorithm: k.algorithm, ...(k.kid !== undefined ? { kid: k.kid } : {}) } as never,
          verify: { ...verify, algorithms: [k.algorithm] } as never
        })
        apis.set(k.kid, child.jwt)
      })
    }
    const signing = keys.filter(k => k.privateKey !== undefined) as Array<{ algorithm: string, privateKey: string }>
    const material = signing.map(keyMaterial)
    // Refresh tokens MAC'd before 0.3 (keys derived from the PEM text) are still accepted; a refresh replaces them.
    const legacy = signing.filter(k => k.algorithm !== 'HS256').map(k => Buffer.from(k.privateKey, 'utf8'))
    const refreshKeys = [...material, ...legacy].map(derive)
    const csrfKeys = material.map(m => createHmac('sha256', m).update(CSRF_LABEL).digest())
    return new Tokens(opts, apis.get(keys[0].kid)!, apis, refreshKeys, csrfKeys)
  }

  /**
   * The CSRF token of a session (cookie transport): a MAC of its id under a key derived for that purpose, so
   * another session's token (or one planted by a sibling subdomain) never passes for this one.
   */
  csrfToken (sessionId: string): string {
    return createHmac('sha256', this.csrfKeys[0]).update(sessionId).digest('base64url').slice(0, 32)
  }

  /** Whether `token` is the CSRF token of `sessionId` under any of the keys (constant time). */
  csrfValid (sessionId: string, token: string): boolean {
    const given = Buffer.from(token)
    let ok = false
    for (const key of this.csrfKeys) {
      const want = Buffer.from(createHmac('sha256', key).update(sessionId).digest('base64url').slice(0, 32))
      if (given.length === want.length && timingSafeEqual(given, want)) ok = true
    }
    return ok
  }

  /** The public keys as a JWK Set, when tokens are signed with asymmetric keys. */
  get jwks (): { keys: Array<Record<string, unknown>> } | undefined {
    const keys = this.opts.keys
    if (keys === undefined) return undefined
    return { keys: keys.map(k => ({ ...createPublicKey(k.publicKey).export({ format: 'jwk' }), kid: k.kid, alg: k.algorithm, use: 'sig' })) }
  }

  /**
   * The payload of an access token signed by one of our keys, expired or not (revocation and introspection);
   * null for anything else. fast-jwt checks the signature (and typ, required claims) before the expiry.
   */
  inspectAccess (token: string): AccessPayload | null {
    const r = this.verifyAccess(token)
    if (r.ok) return r.payload
    if (!r.expired) return null
    try {
      return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as AccessPayload
    } catch {
      return null
    }
  }

  /** Key material for other uses derived from the signing key (DPoP nonces). */
  get secretMaterial (): Buffer {
    return this.refreshKeys[0].successor
  }

  signAccess (user: Required<Pick<UserInfo, 'sub' | 'roles'>> & Pick<UserInfo, 'acr' | 'amr'> & { claims: Record<string, unknown> }, sessionId: string, startedMs: number, authTimeMs: number, now: number, jkt?: string): { token: string, expiresIn: number, payload: AccessPayload } {
    const iat = Math.floor(now / 1000)
    // No token of a session outlives its start + maxSessionAge.
    const expSec = Math.min(iat + Math.ceil(this.opts.accessTtlMs / 1000), Math.floor((startedMs + this.opts.maxSessionAgeMs) / 1000))
    const payload: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(user.claims)) if (!RESERVED_CLAIMS.has(k)) payload[k] = v
    payload.sub = user.sub
    payload.sid = sessionId
    payload.jti = tokenId(now)
    payload.iat = iat
    payload.exp = expSec
    payload.auth_time = Math.floor(authTimeMs / 1000)
    if (user.acr !== undefined) payload.acr = user.acr
    if (user.amr !== undefined) payload.amr = user.amr
    payload.roles = user.roles
    if (jkt !== undefined) payload.cnf = { jkt }
    return { token: this.signer.sign(payload), expiresIn: Math.max(0, expSec - iat), payload: payload as AccessPayload }
  }

  /** Verifies an access token (signature, algorithm, typ, exp/nbf/iat, iss/aud); results are cached by fast-jwt. */
  verifyAccess (token: string): AccessCheck {
    let api = this.single
    if (api === undefined) {
      api = this.verifiers.get(kidOf(token))
      if (api === undefined) return { ok: false, expired: false }
    }
    try {
      const payload = api.verify<AccessPayload>(token)
      if (typeof payload.sub !== 'string' || typeof payload.sid !== 'string') return { ok: false, expired: false }
      // fast-jwt checks iat only with maxAge: a token "issued" in the future beyond the tolerance is invalid.
      // (A token may be issued a millisecond ahead: at a revokeAll's or revokeEveryone's epoch, see sessions.ts.)
      if (typeof payload.iat !== 'number' || payload.iat * 1000 > Date.now() + this.opts.clockToleranceMs + 1) return { ok: false, expired: false }
      return { ok: true, payload }
    } catch (err) {
      return { ok: false, expired: (err as { code?: string }).code === 'FAST_JWT_EXPIRED' }
    }
  }

  makeRefresh (p: RefreshParts): string {
    const body = `${REFRESH_PREFIX}.${Buffer.from(p.userId, 'utf8').toString('base64url')}.${p.sessionId}.${p.refreshId}.${p.parentHash ?? '-'}.${p.expiresAt.toString(36)}`
    return `${body}.${createHmac('sha256', this.refreshKeys[0].mac).update(body).digest('base64url')}`
  }

  /** The expiry a refresh token claims, without checking its MAC (a cheap test on the hot path). */
  peekRefreshExpiry (token: string): number | null {
    const end = token.lastIndexOf('.')
    const start = token.lastIndexOf('.', end - 1)
    if (start < 0 || !(token.startsWith(REFRESH_PREFIX + '.') || token.startsWith(REFRESH_PREFIX_V1 + '.'))) return null
    const exp = parseInt(token.slice(start + 1, end), 36)
    return Number.isFinite(exp) ? exp : null
  }

  /** Parses a refresh token (tgr2, or 0.1's tgr1) and checks its MAC in constant time; null when it is not one of ours. */
  parseRefresh (token: string): (RefreshParts & { keyIndex: number }) | null {
    if (typeof token !== 'string' || token.length > 4096) return null
    const parts = token.split('.')
    let user: string, sessionId: string, refreshId: string, parent: string | undefined, exp: string, mac: string
    if (parts.length === 7 && parts[0] === REFRESH_PREFIX) {
      [, user, sessionId, refreshId, parent, exp, mac] = parts
      if (parent !== '-' && !/^[A-Za-z0-9_-]{22}$/.test(parent)) return null
    } else if (parts.length === 6 && parts[0] === REFRESH_PREFIX_V1) {
      [, user, sessionId, refreshId, exp, mac] = parts
    } else {
      return null
    }
    if (!b64urlRe.test(user) || !b64urlRe.test(sessionId) || !b64urlRe.test(refreshId) || !/^[0-9a-z]{1,12}$/.test(exp) || !b64urlRe.test(mac)) return null
    const given = Buffer.from(mac, 'base64url')
    const body = token.slice(0, token.length - mac.length - 1)
    for (let i = 0; i < this.refreshKeys.length; i++) {
      const want = createHmac('sha256', this.refreshKeys[i].mac).update(body).digest()
      if (given.length === want.length && timingSafeEqual(given, want)) {
        const out: RefreshParts & { keyIndex: number } = { userId: Buffer.from(user, 'base64url').toString('utf8'), sessionId, refreshId, expiresAt: parseInt(exp, 36), keyIndex: i }
        if (parent !== undefined && parent !== '-') out.parentHash = parent
        return out
      }
    }
    return null
  }

  /**
   * The successor of a refresh id, derived under a server key: every refresh of one token inside the grace
   * window gets the same successor, and nothing raw is stored. Unknowable without the key.
   */
  successorId (sessionId: string, refreshId: string, keyIndex = 0): string {
    return createHmac('sha256', this.refreshKeys[keyIndex].successor).update(`${sessionId}.${refreshId}`).digest('base64url').slice(0, 22)
  }

  /**
   * The successor a re-authentication gives a session: derived from the HASH of its current refresh id (all
   * the store keeps), under the signing key's successor key; as unknowable without the key. A refresh of the
   * previous token within the grace window derives the same one from the token it presents (`sid.h.<hash>`
   * cannot collide with `sid.<id>`: ids and hashes hold no dot).
   */
  reauthSuccessorId (sessionId: string, refreshHash: string): string {
    return createHmac('sha256', this.refreshKeys[0].successor).update(`${sessionId}.h.${refreshHash}`).digest('base64url').slice(0, 22)
  }
}

/**
 * An access token's jti: its issue time in ms (6 bytes) and 9 random bytes, base64url (20 characters). JWT
 * times are whole seconds; the epoch check ("not before", revokeAll / revokeEveryone) needs to tell a token
 * issued just before the epoch from one issued just after it, in the same second.
 */
export function tokenId (nowMs: number): string {
  const b = random(15)
  b.writeUIntBE(nowMs, 0, 6)
  return b.toString('base64url')
}

/** When an access token was issued (ms): from its jti when tokengate made it, else the start of its iat second. */
export function issuedAtMs (payload: { jti?: unknown, iat: number }): number {
  const jti = payload.jti
  if (typeof jti === 'string' && jti.length === 20) {
    const ms = Buffer.from(jti, 'base64url').readUIntBE(0, 6)
    // Within the iat second it claims (a jti of another shape, or of another time, is not ours to read).
    if (Math.floor(ms / 1000) === payload.iat) return ms
  }
  return payload.iat * 1000
}

/**
 * When an access token of tokengate's was issued (ms), read without checking it (the caller has: e.g. an
 * authenticated request's token); 0 when it cannot be read.
 */
export function accessTokenIssuedAt (token: string): number {
  const a = token.indexOf('.')
  const b = token.indexOf('.', a + 1)
  try {
    const payload = JSON.parse(Buffer.from(token.slice(a + 1, b), 'base64url').toString('utf8')) as { jti?: unknown, iat?: unknown }
    return typeof payload.iat === 'number' ? issuedAtMs({ jti: payload.jti, iat: payload.iat }) : 0
  } catch {
    return 0
  }
}

function kidOf (token: string): string | undefined {
  const dot = token.indexOf('.')
  if (dot <= 0) return undefined
  try {
    const header = JSON.parse(Buffer.from(token.slice(0, dot), 'base64url').toString('utf8')) as { kid?: unknown }
    return typeof header.kid === 'string' ? header.kid : undefined
  } catch {
    return undefined
  }
}
