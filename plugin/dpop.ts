// DPoP (RFC 9449): the proof a request carries in its DPoP header, checked as §4.3 lists, the proof key's
// RFC 7638 thumbprint (what a session is bound to), replay memory, and stateless rotating nonces.
//
// Proofs are decoded with jose (decodeProtectedHeader, decodeJwt) and their signatures checked with
// node:crypto's synchronous verify on a KeyObject imported from the proof's JWK, the primitive fast-jwt
// itself uses: jose's own verification goes through WebCrypto asynchronously (libuv's thread pool), which
// costs about 2.7× the signature check itself, and fast-jwt does not know RFC 9864's "Ed25519" alg name.
import { constants, createHash, createHmac, createPublicKey, timingSafeEqual, verify, type JsonWebKey, type KeyObject } from 'node:crypto'
import { decodeJwt, decodeProtectedHeader, type JWK } from 'jose'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { DpopInvalidError, DpopNonceError } from './errors.js'
import { sha256 } from './tokens.js'
import { kForwarded } from './transport.js'

/** JWS algorithms a proof may use; 'EdDSA' admits Ed25519 proofs under either name (RFC 9864). */
export type DpopAlgorithm = 'ES256' | 'ES384' | 'ES512' | 'EdDSA' | 'Ed25519' | 'PS256' | 'RS256'

export interface DpopSettings {
  required: boolean
  algorithms: DpopAlgorithm[]
  proofMaxAgeMs: number
  nonce: boolean
  replay: 'store' | 'memory'
  clockToleranceMs: number
}

/**
 * A verified proof: the key's thumbprint, what its replay check needs (its jti is claimed by `claim`), and the
 * access-token hash it names, if any (checked by `verify` when it is given the token).
 */
export interface Proof { jkt: string, jti: string, iat: number, ath?: string }

/** Remembers proof ids for a while: true the first time an id is seen within `ttlMs`. */
export type ClaimProof = (id: string, ttlMs: number) => Promise<boolean> | boolean

interface AlgSpec { kty: string, crv?: string, hash: string | null, ec?: boolean, pss?: boolean }
const ALGS: Record<string, AlgSpec> = {
  ES256: { kty: 'EC', crv: 'P-256', hash: 'sha256', ec: true },
  ES384: { kty: 'EC', crv: 'P-384', hash: 'sha384', ec: true },
  ES512: { kty: 'EC', crv: 'P-521', hash: 'sha512', ec: true },
  EdDSA: { kty: 'OKP', crv: 'Ed25519', hash: null },
  Ed25519: { kty: 'OKP', crv: 'Ed25519', hash: null },
  PS256: { kty: 'RSA', hash: 'sha256', pss: true },
  RS256: { kty: 'RSA', hash: 'sha256' }
}

/** The members RFC 7638 hashes, per key type, in lexicographic order. */
const THUMBPRINT_MEMBERS: Record<string, string[]> = { EC: ['crv', 'kty', 'x', 'y'], OKP: ['crv', 'kty', 'x'], RSA: ['e', 'kty', 'n'] }
/** Members of a private key: a proof's jwk must have none of them. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']

/** The RFC 7638 SHA-256 thumbprint of a public JWK (base64url). */
export function thumbprint (jwk: Record<string, unknown>): string {
  const members = THUMBPRINT_MEMBERS[String(jwk.kty)]
  if (members === undefined) throw new Error('unsupported key type')
  const canonical: Record<string, unknown> = {}
  for (const m of members) {
    if (typeof jwk[m] !== 'string') throw new Error(`the jwk lacks "${m}"`)
    canonical[m] = jwk[m]
  }
  return createHash('sha256').update(JSON.stringify(canonical)).digest('base64url')
}

/** base64url(SHA-256(access token)): a proof's `ath`. */
export const accessTokenHash = (token: string): string => sha256(token)

const KEY_CACHE_MAX = 10_000
const NONCE_LABEL = 'tokengate dpop nonce v1'
/** Proofs `replay: 'memory'` remembers at most, per instance. */
export const REPLAY_MEMORY_MAX = 100_000

/**
 * The in-memory replay check, bounded. Proofs are grouped by their `iat` second (a replay carries the same iat
 * as the original). A group is forgotten once its proofs can no longer pass the iat check. When `max` proofs
 * are remembered, the oldest second is forgotten early, and from then on every proof of that second or an
 * older one is refused: the cache stays bounded and never accepts a proof twice. A flood only narrows the
 * window in which proofs are accepted (fresh proofs, of the current second, pass unless the flood is of that
 * very second).
 */
export class ReplayMemory {
  private readonly bySecond = new Map<number, Set<string>>()
  /** Proofs with an iat at or below this second are refused (their group was dropped to stay bounded). */
  private floor = -Infinity
  size = 0

  constructor (readonly max: number, private readonly windowMs = Infinity) {}

  /** True the first time `id` is claimed; `iat` in seconds. */
  claim (id: string, iatSeconds: number): boolean {
    const iat = Math.floor(iatSeconds)
    if (iat <= this.floor) return false
    let group = this.bySecond.get(iat)
    if (group?.has(id) === true) return false
    if (this.size >= this.max) {
      this.dropOldest()
      if (iat <= this.floor) return false
      group = this.bySecond.get(iat)
    }
    if (group === undefined) this.bySecond.set(iat, (group = new Set()))
    group.add(id)
    this.size++
    return true
  }

  /** Forgets the groups no proof of which can pass the iat check any more. */
  sweep (now: number): void {
    for (const [second, group] of this.bySecond) {
      if (second * 1000 + this.windowMs < now) {
        this.bySecond.delete(second)
        this.size -= group.size
      }
    }
  }

  private dropOldest (): void {
    let oldest = Infinity
    for (const second of this.bySecond.keys()) if (second < oldest) oldest = second
    const group = this.bySecond.get(oldest)
    if (group === undefined) return
    this.bySecond.delete(oldest)
    this.size -= group.size
    this.floor = Math.max(this.floor, oldest)
  }
}

export class Dpop {
  /** Imported proof keys by their JWK's canonical JSON: a client signs every proof with the same key. */
  private readonly keys = new Map<string, { key: KeyObject, jkt: string }>()
  private readonly memory?: ReplayMemory
  private readonly sweeper?: NodeJS.Timeout
  private readonly nonceKey: Buffer
  private readonly allowed: Set<string>
  /** The WWW-Authenticate challenge's algs parameter. */
  readonly algs: string
  private nonceSlot = -1
  private nonceNow = ''
  private noncePrev = ''

  constructor (readonly settings: DpopSettings, secret: Buffer, private readonly claimInStore: ClaimProof) {
    this.allowed = new Set(settings.algorithms.flatMap(a => a === 'EdDSA' ? ['EdDSA', 'Ed25519'] : [a]))
    this.algs = settings.algorithms.join(' ')
    this.nonceKey = createHmac('sha256', secret).update(NONCE_LABEL).digest()
    if (settings.replay === 'memory') {
      const memory = this.memory = new ReplayMemory(REPLAY_MEMORY_MAX, settings.proofMaxAgeMs + settings.clockToleranceMs + 1000)
      this.sweeper = setInterval(() => { memory.sweep(Date.now()) }, Math.min(10_000, settings.proofMaxAgeMs)).unref()
    }
  }

  close (): void {
    clearInterval(this.sweeper)
  }

  /**
   * Verifies the request's DPoP proof (RFC 9449 §4.3) for `htm`/`htu` of this request, with `ath` when an
   * access token is presented: everything but the replay check, which `claim` does last. Returns null when the
   * request has no DPoP header; throws TOKENGATE_DPOP_INVALID or TOKENGATE_DPOP_NONCE.
   */
  verify (request: FastifyRequest, reply: FastifyReply, accessToken?: string): Proof | null {
    const header = request.headers.dpop
    if (header === undefined) return null
    if (this.settings.nonce) reply.header('dpop-nonce', this.currentNonce())
    // 1. One DPoP header (Node joins repeated ones with ", "; a JWS has no comma).
    if (typeof header !== 'string' || header.includes(',')) throw new DpopInvalidError('exactly one DPoP header is required')
    const proof = this.verifyJws(header)
    const { jwt, jkt } = proof
    // 7–8. The method and the URL as the client saw it (behind trustProxy, Fastify's protocol and host); on a
    // forward-authentication route, those of the request it asks about.
    const forwarded = request[kForwarded]
    if (jwt.htm !== (forwarded?.method ?? request.method)) throw new DpopInvalidError('htm does not match the request method')
    if (typeof jwt.htu !== 'string') throw new DpopInvalidError('htu is missing')
    const uri = forwarded == null ? requestUri(request) : withoutQuery(forwarded.url)
    if (jwt.htu !== uri && !sameUri(jwt.htu, uri)) throw new DpopInvalidError('htu does not match the request URL')
    // 10. A nonce of ours, when nonces are on.
    if (this.settings.nonce && !this.validNonce(jwt.nonce)) throw new DpopNonceError()
    // 11. iat within proofMaxAge (and the clock tolerance), either way.
    if (typeof jwt.iat !== 'number' || Math.abs(Date.now() - jwt.iat * 1000) > this.settings.proofMaxAgeMs + this.settings.clockToleranceMs) {
      throw new DpopInvalidError('iat is outside the accepted window')
    }
    // 12. ath: the hash of the access token this request presents.
    if (accessToken !== undefined) {
      if (typeof jwt.ath !== 'string' || !sameString(jwt.ath, accessTokenHash(accessToken))) throw new DpopInvalidError('ath does not match the access token')
    }
    if (typeof jwt.jti !== 'string' || jwt.jti === '' || jwt.jti.length > 256) throw new DpopInvalidError('jti is missing')
    return { jkt, jti: jwt.jti, iat: jwt.iat, ...(typeof jwt.ath === 'string' ? { ath: jwt.ath } : {}) }
  }

  /** The replay check, last: a proof is used once within its window (rejects with TOKENGATE_DPOP_INVALID). */
  async claim (proof: Proof): Promise<void> {
    const id = sha256(`${proof.jkt}.${proof.jti}`).slice(0, 22)
    let first: boolean
    if (this.memory !== undefined) {
      first = this.memory.claim(id, proof.iat)
    } else {
      // Remembered for as long as the proof could still pass the iat check (at least a second).
      const ttl = Math.max(1000, proof.iat * 1000 + this.settings.proofMaxAgeMs + this.settings.clockToleranceMs - Date.now())
      first = await this.claimInStore(id, ttl)
    }
    if (!first) throw new DpopInvalidError('the proof was already used')
  }

  /** verify, then claim: for a request whose token was already checked. Resolves to null without a DPoP header. */
  async check (request: FastifyRequest, reply: FastifyReply, accessToken?: string): Promise<Proof | null> {
    const proof = this.verify(request, reply, accessToken)
    if (proof !== null) await this.claim(proof)
    return proof
  }

  /** §4.3 checks 2–6: a compact JWS, typ dpop+jwt, an allowed asymmetric alg, a public jwk, a valid signature. */
  private verifyJws (token: string): { jwt: Record<string, unknown>, jkt: string } {
    const parts = token.split('.')
    if (parts.length !== 3 || parts.some(p => p === '' || !/^[A-Za-z0-9_-]+$/.test(p))) throw new DpopInvalidError('not a compact JWS')
    let header: ReturnType<typeof decodeProtectedHeader>
    let jwt: Record<string, unknown>
    try {
      header = decodeProtectedHeader(token)
      jwt = decodeJwt(token)
    } catch {
      throw new DpopInvalidError('not a JWT')
    }
    if (header.typ !== 'dpop+jwt') throw new DpopInvalidError('typ must be dpop+jwt')
    const alg = header.alg
    const spec = typeof alg === 'string' && this.allowed.has(alg) ? ALGS[alg] : undefined
    if (spec === undefined) throw new DpopInvalidError('alg is not allowed')
    const jwk = header.jwk as JWK | undefined
    if (jwk === undefined || jwk === null || typeof jwk !== 'object') throw new DpopInvalidError('the header has no jwk')
    if (PRIVATE_MEMBERS.some(m => m in jwk)) throw new DpopInvalidError('the jwk is a private key')
    if (jwk.kty !== spec.kty || (spec.crv !== undefined && jwk.crv !== spec.crv)) throw new DpopInvalidError('the jwk does not fit alg')
    const { key, jkt } = this.importKey(jwk)
    const signature = Buffer.from(parts[2], 'base64url')
    const data = Buffer.from(`${parts[0]}.${parts[1]}`)
    let ok = false
    try {
      ok = spec.ec === true
        ? verify(spec.hash, data, { key, dsaEncoding: 'ieee-p1363' }, signature)
        : spec.pss === true
          ? verify(spec.hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, signature)
          : verify(spec.hash, data, key, signature)
    } catch {
      ok = false
    }
    if (!ok) throw new DpopInvalidError('the signature does not verify')
    return { jwt, jkt }
  }

  private importKey (jwk: JWK): { key: KeyObject, jkt: string } {
    const members = THUMBPRINT_MEMBERS[String(jwk.kty)]
    if (members === undefined) throw new DpopInvalidError('unsupported key type')
    const cacheKey = members.map(m => String((jwk as Record<string, unknown>)[m])).join('.')
    let hit = this.keys.get(cacheKey)
    if (hit === undefined) {
      try {
        const jkt = thumbprint(jwk as Record<string, unknown>)
        const publicJwk: Record<string, unknown> = {}
        for (const m of members) publicJwk[m] = (jwk as Record<string, unknown>)[m]
        hit = { key: createPublicKey({ key: publicJwk as unknown as JsonWebKey, format: 'jwk' }), jkt }
      } catch {
        throw new DpopInvalidError('the jwk is not a valid public key')
      }
      if (this.keys.size >= KEY_CACHE_MAX) this.keys.delete(this.keys.keys().next().value as string)
      this.keys.set(cacheKey, hit)
    }
    return hit
  }

  // Nonces are stateless and rotate every proofMaxAge: `<slot, base36>.<HMAC of the slot>`, accepted for the
  // current slot and the one before, on every instance that shares the secret.
  private nonceFor (slot: number): string {
    return `${slot.toString(36)}.${createHmac('sha256', this.nonceKey).update(String(slot)).digest('base64url').slice(0, 22)}`
  }

  currentNonce (): string {
    const slot = Math.floor(Date.now() / this.settings.proofMaxAgeMs)
    if (slot !== this.nonceSlot) {
      this.nonceSlot = slot
      this.nonceNow = this.nonceFor(slot)
      this.noncePrev = this.nonceFor(slot - 1)
    }
    return this.nonceNow
  }

  private validNonce (nonce: unknown): boolean {
    if (typeof nonce !== 'string') return false
    this.currentNonce()
    return sameString(nonce, this.nonceNow) || sameString(nonce, this.noncePrev)
  }
}

function sameString (a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}

/** The request's URL as the client addressed it, without query: scheme and host from Fastify (trustProxy). */
export function requestUri (request: FastifyRequest): string {
  const url = request.url
  const q = url.indexOf('?')
  return `${request.protocol}://${request.host}${q < 0 ? url : url.slice(0, q)}`
}

function withoutQuery (url: string): string {
  const end = url.search(/[?#]/)
  return end < 0 ? url : url.slice(0, end)
}

/** RFC 9449 §4.3: htu and the request URI compared without query and fragment, after URL normalisation. */
function sameUri (htu: string, actual: string): boolean {
  try {
    const a = new URL(htu)
    const b = new URL(actual)
    return a.protocol === b.protocol && a.host === b.host && a.pathname === b.pathname
  } catch {
    return false
  }
}
