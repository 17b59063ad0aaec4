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

/** A checked proof: the key's thumbprint, and its jti (for replay memory). */
export interface Proof { jkt: string, jti: string }

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

export class Dpop {
  /** Imported proof keys by their JWK's canonical JSON: a client signs every proof with the same key. */
  private readonly keys = new Map<string, { key: KeyObject, jkt: string }>()
  private readonly seen = new Map<string, number>()
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
      this.sweeper = setInterval(() => {
        const now = Date.now()
        for (const [id, until] of this.seen) if (until <= now) this.seen.delete(id)
      }, Math.min(10_000, settings.proofMaxAgeMs)).unref()
    }
  }

  close (): void {
    clearInterval(this.sweeper)
  }

  /**
   * Checks the request's DPoP proof (RFC 9449 §4.3) for `htm`/`htu` of this request, with `ath` when an
   * access token is presented. Resolves to null when the request has no DPoP header; rejects with
   * TOKENGATE_DPOP_INVALID or TOKENGATE_DPOP_NONCE.
   */
  async check (request: FastifyRequest, reply: FastifyReply, accessToken?: string): Promise<Proof | null> {
    const header = request.headers.dpop
    if (header === undefined) return null
    if (this.settings.nonce) reply.header('dpop-nonce', this.currentNonce())
    // 1. One DPoP header (Node joins repeated ones with ", "; a JWS has no comma).
    if (typeof header !== 'string' || header.includes(',')) throw new DpopInvalidError('exactly one DPoP header is required')
    const proof = this.verifyJws(header)
    const { jwt, jkt } = proof
    // 7–8. The method and the URL as the client saw it (behind trustProxy, Fastify's protocol and host).
    if (jwt.htm !== request.method) throw new DpopInvalidError('htm does not match the request method')
    if (typeof jwt.htu !== 'string') throw new DpopInvalidError('htu is missing')
    const uri = requestUri(request)
    if (jwt.htu !== uri && !sameUri(jwt.htu, uri)) throw new DpopInvalidError('htu does not match the request URL')
    // 10. A nonce of ours, when nonces are on.
    if (this.settings.nonce && !this.validNonce(jwt.nonce)) throw new DpopNonceError()
    // 11. iat within proofMaxAge (and the clock tolerance), either way.
    const now = Date.now()
    if (typeof jwt.iat !== 'number' || Math.abs(now - jwt.iat * 1000) > this.settings.proofMaxAgeMs + this.settings.clockToleranceMs) {
      throw new DpopInvalidError('iat is outside the accepted window')
    }
    // 12. ath: the hash of the access token this request presents.
    if (accessToken !== undefined) {
      if (typeof jwt.ath !== 'string' || !sameString(jwt.ath, accessTokenHash(accessToken))) throw new DpopInvalidError('ath does not match the access token')
    }
    // jti: a proof is used once within its window.
    if (typeof jwt.jti !== 'string' || jwt.jti === '' || jwt.jti.length > 256) throw new DpopInvalidError('jti is missing')
    // Remembered for as long as the proof could still pass the iat check (at least a second).
    const ttl = Math.max(1000, jwt.iat * 1000 + this.settings.proofMaxAgeMs + this.settings.clockToleranceMs - now)
    const first = this.settings.replay === 'memory'
      ? this.claimInMemory(`${jkt}.${jwt.jti}`, ttl)
      : await this.claimInStore(createHash('sha256').update(`${jkt}.${jwt.jti}`).digest('base64url').slice(0, 22), ttl)
    if (!first) throw new DpopInvalidError('the proof was already used')
    return { jkt, jti: jwt.jti }
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

  private claimInMemory (id: string, ttlMs: number): boolean {
    const now = Date.now()
    const until = this.seen.get(id)
    if (until !== undefined && until > now) return false
    this.seen.set(id, now + ttlMs)
    return true
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
