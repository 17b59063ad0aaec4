// The plugin's options: one TypeBox schema, defaults in one place, durations resolved to milliseconds.
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { ValueErrorType } from '@sinclair/typebox/errors'
import type { FastifyRequest } from 'fastify'
import type { DpopAlgorithm } from './dpop.js'
import type { RedisClient, SessionStore } from './store/index.js'

const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** The forms a duration takes, as messages about a bad one list them. */
const DURATION_FORMS = "'500ms', '10s', '10m', '1h', '1d' or a number of seconds"
const DURATION_DESCRIPTION = `A duration: ${DURATION_FORMS}`

/** A duration: a string such as '500ms', '10s', '10m', '1h', '1d', or a number of seconds. */
export const DurationSchema = Type.Union([
  Type.String({ pattern: DURATION_RE.source }),
  Type.Number({ minimum: 0 })
], { description: DURATION_DESCRIPTION })
export type Duration = Static<typeof DurationSchema>

/** DurationSchema with a default. */
const durationWithDefault = (def: Duration): typeof DurationSchema =>
  Type.Union(DurationSchema.anyOf, { description: DURATION_DESCRIPTION, default: def })

/** Whether a schema (from a validation error) is a duration's: its message then lists the accepted forms. */
const isDurationSchema = (schema: unknown): boolean => (schema as { description?: unknown } | null)?.description === DURATION_DESCRIPTION

export const KeySchema = Type.Object({
  kid: Type.String({ minLength: 1 }),
  algorithm: Type.Union([Type.Literal('EdDSA'), Type.Literal('ES256'), Type.Literal('RS256')]),
  privateKey: Type.Optional(Type.String({ minLength: 1 })),
  publicKey: Type.String({ minLength: 1 })
}, { additionalProperties: false })
export type KeyConfig = Static<typeof KeySchema>

const OAuthObjectSchema = Type.Object({
  /** Clients allowed to call the introspection endpoint, with HTTP Basic credentials. */
  introspectionClients: Type.Optional(Type.Array(Type.Object({
    id: Type.String({ minLength: 1 }),
    secret: Type.String({ minLength: 16 })
  }, { additionalProperties: false }), { description: 'Clients allowed to call the introspection endpoint, with HTTP Basic credentials' }))
}, { additionalProperties: false })

/** routes.oauth and the gateway's top-level `oauth`: true, or { introspectionClients }. */
export const OAuthSchema = Type.Union([Type.Boolean(), OAuthObjectSchema])

/** routes.oauth as an object: `{ introspectionClients?: [{ id, secret }] }`. */
export type OAuthOptions = Static<typeof OAuthObjectSchema>

/** The data options (functions and client instances are checked by hand in resolveOptions). */
export const OptionsSchema = Type.Object({
  secret: Type.Optional(Type.String()),
  keys: Type.Optional(Type.Array(KeySchema, { minItems: 1 })),
  redis: Type.Optional(Type.Unknown()),
  store: Type.Optional(Type.Unknown()),
  keyPrefix: Type.String({ default: 'tg', minLength: 1, pattern: '^[^{}]+$' }),
  accessTokenTtl: durationWithDefault('10m'),
  refreshTokenTtl: durationWithDefault('1d'),
  issuer: Type.Optional(Type.String({ minLength: 1 })),
  audience: Type.Optional(Type.Union([Type.String({ minLength: 1 }), Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })])),
  clockTolerance: durationWithDefault(0),
  transport: Type.Array(Type.Union([Type.Literal('header'), Type.Literal('cookie')]), { default: ['header'], minItems: 1, uniqueItems: true }),
  rotateRefreshTokens: Type.Boolean({ default: true }),
  reuseGraceMs: Type.Integer({ default: 10_000, minimum: 0 }),
  renewExpiredRefresh: Type.Boolean({ default: true }),
  maxSessionAge: durationWithDefault('30d'),
  storeTimeoutMs: Type.Integer({ default: 1000, minimum: 1 }),
  // How long after the revocation feed last proved itself alive an instance still trusts its memory of
  // revocations (then: a store round trip per authenticated request, failing closed).
  revocationStalenessMs: Type.Integer({ default: 3500, minimum: 500 }),
  maxSessionsPerUser: Type.Optional(Type.Integer({ minimum: 1 })),
  // DPoP (RFC 9449): sender-constrained tokens; absent = off.
  dpop: Type.Optional(Type.Object({
    required: Type.Boolean({ default: false }),
    algorithms: Type.Array(Type.Union(['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'PS256', 'RS256'].map(a => Type.Literal(a))), { default: ['ES256', 'EdDSA'], minItems: 1, uniqueItems: true }),
    proofMaxAge: durationWithDefault('60s'),
    nonce: Type.Boolean({ default: false }),
    replay: Type.Union([Type.Literal('store'), Type.Literal('memory')], { default: 'store' })
  }, { additionalProperties: false })),
  cookie: Type.Object({
    domain: Type.Optional(Type.String({ minLength: 1 })),
    secure: Type.Boolean({ default: true })
  }, { default: {}, additionalProperties: false }),
  routes: Type.Optional(Type.Object({
    prefix: Type.String({ default: '/auth', pattern: '^(/[^/]+)*$' }),
    verifyCredentials: Type.Optional(Type.Unknown()),
    // The JSON Schema of POST /login's body (validation and OpenAPI); default: any JSON object.
    loginBody: Type.Optional(Type.Object({ type: Type.Literal('object') }, { additionalProperties: true })),
    // OAuth 2.0 endpoints (token, revoke, introspect, metadata): true, or with introspection clients.
    oauth: Type.Optional(OAuthSchema)
  }, { additionalProperties: false })),
  refreshClaims: Type.Optional(Type.Unknown()),
  onIssue: Type.Optional(Type.Unknown()),
  onRefresh: Type.Optional(Type.Unknown()),
  onRevoke: Type.Optional(Type.Unknown()),
  onReuseDetected: Type.Optional(Type.Unknown()),
  beforeRefresh: Type.Optional(Type.Unknown())
}, { additionalProperties: false })

export interface UserInfo {
  sub: string
  roles?: string[]
  claims?: Record<string, unknown>
  /** The authentication context class this login achieved (RFC 9470 `acr`), e.g. 'mfa': access tokens carry it. */
  acr?: string
  /** The authentication methods used (RFC 8176 `amr`), e.g. ['pwd', 'otp']: access tokens carry them. */
  amr?: string[]
}

export interface RequestMeta {
  ip?: string
  userAgent?: string
}

export interface AuditMeta extends RequestMeta {
  /** Why a session was revoked: 'logout', 'logout-all', 'delete', 'reuse', 'limit', 'revoke' (RFC 7009) or 'api'. */
  reason?: string
}

export type AuditHook = (userId: string, sessionId: string, meta: AuditMeta) => void | Promise<void>

/**
 * routes.verifyCredentials: POST /login's body → the user, or null/undefined (401). Fastify has validated the
 * body against routes.loginBody before the call, so the first parameter may be annotated with the type that
 * schema describes (`async (body: { email: string, password: string }) => …`): it is accepted as it is
 * (a method's parameters are checked both ways); unannotated, `body` is `unknown`.
 */
export type VerifyCredentials<Body = unknown> = {
  bivarianceHack (body: Body, request: FastifyRequest): Promise<UserInfo | null | undefined> | UserInfo | null | undefined
}['bivarianceHack']

/**
 * Called before the refresh hook refreshes (or renews) a session's tokens, with the request: throwing refuses
 * that refresh, and the error is kept as any refresh failure is (a protected route answers with it).
 */
export type BeforeRefresh = (request: FastifyRequest) => void | Promise<void>

export type RefreshClaims = (userId: string, sessionId: string) =>
  Promise<Pick<UserInfo, 'roles' | 'claims'> | null | undefined> | Pick<UserInfo, 'roles' | 'claims'> | null | undefined

type DataOptions = Static<typeof OptionsSchema>

export interface DpopOptions {
  /** Refuse logins, refreshes and access without a proof (default false: unbound clients work as before). */
  required?: boolean
  /** Proof algorithms accepted (default ['ES256', 'EdDSA']). */
  algorithms?: DpopAlgorithm[]
  /** How old a proof's `iat` may be (default '60s'). */
  proofMaxAge?: string | number
  /** Demand a server nonce (`DPoP-Nonce`) in every proof (default false). */
  nonce?: boolean
  /** Where proof `jti`s are remembered: 'store' (shared by every instance; default) or 'memory'. */
  replay?: 'store' | 'memory'
}

export interface TokengateOptions extends Partial<Omit<DataOptions, 'redis' | 'store' | 'routes' | 'refreshClaims' | 'onIssue' | 'onRefresh' | 'onRevoke' | 'onReuseDetected' | 'beforeRefresh' | 'cookie' | 'dpop'>> {
  /** A redis:// URL, or your ioredis 5 or 6 Redis or Cluster instance (you keep ownership of an instance). */
  redis?: string | RedisClient
  /** A custom SessionStore. */
  store?: SessionStore
  cookie?: { domain?: string, secure?: boolean }
  /** DPoP (RFC 9449): `{}` turns it on with the defaults. */
  dpop?: DpopOptions
  routes?: { prefix?: string, verifyCredentials?: VerifyCredentials, oauth?: boolean | OAuthOptions, loginBody?: Record<string, unknown> }
  refreshClaims?: RefreshClaims
  onIssue?: AuditHook
  onRefresh?: AuditHook
  onRevoke?: AuditHook
  onReuseDetected?: AuditHook
  /** Called before each refresh the refresh hook makes; throw (e.g. a RateLimitedError) to refuse it. */
  beforeRefresh?: BeforeRefresh
}

export interface ResolvedOptions {
  secret?: string
  keys?: KeyConfig[]
  redis?: TokengateOptions['redis']
  store?: SessionStore
  keyPrefix: string
  accessTtlMs: number
  refreshTtlMs: number
  issuer?: string
  audience?: string | string[]
  clockToleranceMs: number
  transport: { header: boolean, cookie: boolean }
  rotateRefreshTokens: boolean
  reuseGraceMs: number
  renewExpiredRefresh: boolean
  maxSessionAgeMs: number
  storeTimeoutMs: number
  revocationStalenessMs: number
  maxSessionsPerUser?: number
  dpop?: { required: boolean, algorithms: DpopAlgorithm[], proofMaxAgeMs: number, nonce: boolean, replay: 'store' | 'memory' }
  cookie: { domain?: string, secure: boolean }
  routes?: { prefix: string, verifyCredentials?: VerifyCredentials, oauth?: boolean | OAuthOptions, loginBody?: TSchema }
  refreshClaims?: RefreshClaims
  onIssue?: AuditHook
  onRefresh?: AuditHook
  onRevoke?: AuditHook
  onReuseDetected?: AuditHook
  beforeRefresh?: BeforeRefresh
}

export const MIN_SECRET_BYTES = 32

/** Parses a duration option to milliseconds; a number means seconds. */
export function durationMs (value: Duration, name: string): number {
  if (typeof value === 'number') return Math.round(value * 1000)
  const m = DURATION_RE.exec(value)
  if (m === null) throw new OptionError(name, `must be a duration: ${DURATION_FORMS}; got ${JSON.stringify(value)}`)
  return Math.round(Number(m[1]) * UNIT_MS[m[2]])
}

function dpopOptions (d: NonNullable<DataOptions['dpop']>): NonNullable<ResolvedOptions['dpop']> {
  const proofMaxAgeMs = durationMs(d.proofMaxAge, 'dpop.proofMaxAge')
  if (proofMaxAgeMs < 1000) throw new OptionError('dpop.proofMaxAge', 'must be at least 1s (proof times are whole seconds)')
  return { required: d.required, algorithms: d.algorithms as DpopAlgorithm[], proofMaxAgeMs, nonce: d.nonce, replay: d.replay }
}

export class OptionError extends Error {
  constructor (readonly option: string, readonly problem: string) {
    super(`tokengate: option "${option}" ${problem}`)
    this.name = 'TokengateOptionError'
  }
}

// Fastify passes its own register options to the plugin along with the user's.
const FASTIFY_REGISTER_KEYS = new Set(['prefix', 'logLevel', 'logSerializers'])

/**
 * A copy of the data options that Value.Default may fill in: plain objects and arrays are copied, anything
 * else (a function, a client instance) is kept as it is, so the schema check names it where it does not belong.
 */
function copyData (value: unknown): unknown {
  if (Array.isArray(value)) return value.map(copyData)
  if (value === null || typeof value !== 'object') return value
  const proto = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null) return value
  const out: Record<string | symbol, unknown> = {}
  for (const k of Reflect.ownKeys(value)) out[k] = copyData((value as Record<string | symbol, unknown>)[k])
  return out
}

/** Options people put one level off: they belong in `routes`, or beside it. */
const ROUTES_OPTIONS = new Set(['verifyCredentials', 'loginBody', 'oauth'])

/** How many single-character edits turn a into b (for "did you mean"). */
function editDistance (a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_v, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    prev = row
  }
  return prev[b.length]
}

/** What to say about an unknown option: where it belongs, or the known one it is likely a typo of. */
function unknownOptionHint (path: string, known: string[]): string {
  const dot = path.lastIndexOf('.')
  const parent = dot < 0 ? '' : path.slice(0, dot)
  const name = path.slice(dot + 1)
  if (parent === '' && ROUTES_OPTIONS.has(name)) return `: it belongs in routes: { ${name} }`
  if (parent === 'routes' && name in OptionsSchema.properties) return ': it belongs at the top level of the options, beside routes'
  let best: string | undefined
  let bestDistance = Infinity
  for (const k of known) {
    const d = k.toLowerCase() === name.toLowerCase() ? 0 : editDistance(k, name)
    if (d < bestDistance) { best = k; bestDistance = d }
  }
  return best !== undefined && bestDistance <= Math.max(1, Math.min(3, Math.floor(name.length / 3)))
    ? ` (did you mean "${parent === '' ? '' : `${parent}.`}${best}"?)`
    : ''
}

function checkFunction (opts: Record<string, unknown>, name: string): void {
  if (opts[name] !== undefined && typeof opts[name] !== 'function') throw new OptionError(name, 'must be a function')
}

/** Validates the options against the schema, fills defaults and resolves durations. Throws OptionError naming the option. */
export function resolveOptions (input: TokengateOptions | undefined): ResolvedOptions {
  const raw: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(input ?? {})) {
    if (!FASTIFY_REGISTER_KEYS.has(k) && v !== undefined) raw[k] = v
  }
  // Functions and client instances are not data: validate a copy without them, then put the originals back.
  const HANDS_OFF = ['redis', 'store', 'refreshClaims', 'onIssue', 'onRefresh', 'onRevoke', 'onReuseDetected', 'beforeRefresh']
  const data: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(raw)) if (!HANDS_OFF.includes(k)) data[k] = v
  const routesIn = raw.routes
  if (routesIn !== null && typeof routesIn === 'object') {
    const { verifyCredentials: _vc, ...rest } = routesIn as Record<string, unknown>
    data.routes = rest
  }
  const opts = Value.Default(OptionsSchema, copyData(data)) as Record<string, unknown>
  for (const k of HANDS_OFF) if (k in raw) opts[k] = raw[k]
  if (routesIn !== null && typeof routesIn === 'object' && 'verifyCredentials' in routesIn) {
    (opts.routes as Record<string, unknown>).verifyCredentials = (routesIn as Record<string, unknown>).verifyCredentials
  }

  const first = Value.Errors(OptionsSchema, opts).First()
  if (first !== undefined) {
    // TypeBox reports an unknown option at its own path.
    const path = first.path.replace(/^\//, '').replace(/\//g, '.') || '(options)'
    if (first.type === ValueErrorType.ObjectAdditionalProperties) {
      throw new OptionError(path, `is not a known option${unknownOptionHint(path, Object.keys((first.schema as { properties?: object }).properties ?? {}))}`)
    }
    if (isDurationSchema(first.schema)) {
      const got = typeof first.value === 'string' || typeof first.value === 'number' ? `; got ${JSON.stringify(first.value)}` : ''
      throw new OptionError(path, `must be a duration: ${DURATION_FORMS}${got}`)
    }
    if (typeof first.value === 'function') throw new OptionError(path, `is a function, but this option is not one (${first.message})`)
    throw new OptionError(path, `is invalid: ${first.message}`)
  }
  const o = opts as unknown as DataOptions & TokengateOptions

  if (o.secret === undefined && o.keys === undefined) throw new OptionError('secret', `is required (or "keys"): a random string of at least ${MIN_SECRET_BYTES} bytes, e.g. openssl rand -hex 64`)
  if (o.secret !== undefined && o.keys !== undefined) throw new OptionError('secret', 'and "keys" cannot both be set')
  if (o.secret !== undefined && Buffer.byteLength(o.secret, 'utf8') < MIN_SECRET_BYTES) {
    throw new OptionError('secret', `must be at least ${MIN_SECRET_BYTES} bytes long (got ${Buffer.byteLength(o.secret, 'utf8')}); generate one with openssl rand -hex 64`)
  }
  if (o.keys !== undefined) {
    if (o.keys[0].privateKey === undefined) throw new OptionError('keys[0].privateKey', 'is required: the first key signs')
    const kids = new Set(o.keys.map(k => k.kid))
    if (kids.size !== o.keys.length) throw new OptionError('keys', 'must have distinct kid values')
  }
  if (o.redis !== undefined && o.store !== undefined) throw new OptionError('redis', 'and "store" cannot both be set')
  if (o.redis !== undefined && typeof o.redis !== 'string' && (typeof o.redis !== 'object' || o.redis === null || typeof (o.redis as { defineCommand?: unknown }).defineCommand !== 'function')) {
    throw new OptionError('redis', 'must be a redis:// URL or an ioredis Redis/Cluster instance')
  }
  if (typeof o.redis === 'string' && !/^rediss?:\/\//.test(o.redis)) throw new OptionError('redis', 'must be a redis:// or rediss:// URL')
  if (o.store !== undefined) {
    const s = o.store as unknown as Record<string, unknown>
    const needed = ['create', 'rotate', 'renew', 'revoke', 'revokeAll', 'list', 'markRevoked', 'loadRevoked', 'isRevoked', 'markEpoch', 'loadEpochs', 'epochOf', 'subscribe', 'ping', 'close']
    if (o.dpop !== undefined && o.dpop.replay !== 'memory') needed.push('claimProof')
    for (const m of needed) {
      if (typeof s?.[m] !== 'function') throw new OptionError('store', `must implement SessionStore (missing ${m}())`)
    }
  }
  for (const name of ['refreshClaims', 'onIssue', 'onRefresh', 'onRevoke', 'onReuseDetected', 'beforeRefresh']) checkFunction(opts, name)
  if (o.routes?.verifyCredentials !== undefined && typeof o.routes.verifyCredentials !== 'function') {
    throw new OptionError('routes.verifyCredentials', 'must be a function')
  }

  // The OAuth metadata names the issuer and the endpoints: from this option, never from a request's Host header.
  if (o.routes?.oauth !== undefined && o.routes.oauth !== false) {
    if (o.issuer === undefined) throw new OptionError('issuer', 'is required with routes.oauth: the authorization server metadata names it and the endpoint URLs under it (e.g. \'https://auth.example\')')
    if (!/^https?:\/\/[^/?#\s]+(\/[^?#\s]*)?$/.test(o.issuer)) throw new OptionError('issuer', 'must be an http(s) URL without query or fragment with routes.oauth (e.g. \'https://auth.example\')')
  }

  const accessTtlMs = durationMs(o.accessTokenTtl, 'accessTokenTtl')
  const refreshTtlMs = durationMs(o.refreshTokenTtl, 'refreshTokenTtl')
  const maxSessionAgeMs = durationMs(o.maxSessionAge, 'maxSessionAge')
  if (accessTtlMs < 1000) throw new OptionError('accessTokenTtl', 'must be at least 1s (JWT times are whole seconds)')
  if (refreshTtlMs < 1000) throw new OptionError('refreshTokenTtl', 'must be at least 1s')
  if (maxSessionAgeMs < refreshTtlMs) throw new OptionError('maxSessionAge', 'must be at least refreshTokenTtl')

  return {
    secret: o.secret,
    keys: o.keys,
    redis: o.redis,
    store: o.store,
    keyPrefix: o.keyPrefix,
    accessTtlMs,
    refreshTtlMs,
    issuer: o.issuer,
    audience: o.audience,
    clockToleranceMs: durationMs(o.clockTolerance, 'clockTolerance'),
    transport: { header: o.transport.includes('header'), cookie: o.transport.includes('cookie') },
    rotateRefreshTokens: o.rotateRefreshTokens,
    reuseGraceMs: o.reuseGraceMs,
    renewExpiredRefresh: o.renewExpiredRefresh,
    maxSessionAgeMs,
    storeTimeoutMs: o.storeTimeoutMs,
    revocationStalenessMs: o.revocationStalenessMs,
    maxSessionsPerUser: o.maxSessionsPerUser,
    dpop: o.dpop === undefined ? undefined : dpopOptions(o.dpop),
    cookie: o.cookie as ResolvedOptions['cookie'],
    routes: o.routes as ResolvedOptions['routes'],
    refreshClaims: o.refreshClaims,
    onIssue: o.onIssue,
    onRefresh: o.onRefresh,
    onRevoke: o.onRevoke,
    onReuseDetected: o.onReuseDetected,
    beforeRefresh: o.beforeRefresh as BeforeRefresh | undefined
  }
}
