// The gateway's config: a TypeBox schema, ${VAR} from the environment, file loading. Any problem is
// one ConfigError naming the field.
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import path from 'node:path'
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { ValueErrorType } from '@sinclair/typebox/errors'
import { checkPolicy, DurationSchema, KeySchema, OAuthSchema, OptionsSchema } from '../plugin/index.js'
import { ConfigError } from './config-error.js'
import { checkOidcConfig } from './oidc-config.js'
import { checkRedisConfig } from './redis.js'
import { checkAssertions } from './assertion.js'
import { checkForwardAuth } from './forward-auth.js'
import { routePolicyOf } from './route-policy.js'

// The plugin's duration (its description marks it, so a bad one is answered with the accepted forms).
const Duration = (def?: string | number) => Type.Union(DurationSchema.anyOf, { description: DurationSchema.description, ...(def === undefined ? {} : { default: def }) })
const HttpUrl = Type.String({ pattern: '^https?://[^\\s/]+(/\\S*)?$' })
const Prefix = Type.String({ pattern: '^/[^\\s?#]*$' })

// A key as the plugin takes it, or with its PEM in a file (read at load time, relative to the config).
const KeyConfig = Type.Composite([
  Type.Omit(KeySchema, ['publicKey']),
  Type.Object({
    publicKey: Type.Optional(Type.String({ minLength: 1 })),
    privateKeyFile: Type.Optional(Type.String({ minLength: 1 })),
    publicKeyFile: Type.Optional(Type.String({ minLength: 1 }))
  })
], { additionalProperties: false })

// `tokens` is the plugin's own options schema (defaults included), minus what only code can give
// (functions, client instances, routes), with keys that may come from files.
const Tokens = Type.Composite([
  Type.Omit(OptionsSchema, ['keys', 'redis', 'store', 'routes', 'refreshClaims', 'onIssue', 'onRefresh', 'onRevoke', 'onReuseDetected']),
  Type.Object({ keys: Type.Optional(Type.Array(KeyConfig, { minItems: 1 })) })
], { additionalProperties: false })

const Route = Type.Object({
  prefix: Prefix,
  // Optional only with forwardAuth: a route without one serves forward authentication alone (no proxy).
  upstream: Type.Optional(HttpUrl),
  auth: Type.Union([Type.Literal('required'), Type.Literal('optional'), Type.Literal('public')], { default: 'required' }),
  roles: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })),
  // Step-up (RFC 9470): the plugin's route policy fields, checked by its checkPolicy (below).
  maxAge: Type.Optional(Duration()),
  acr: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })),
  timeout: Duration('30s'),
  rewritePrefix: Type.Optional(Type.String()),
  forwardToken: Type.Boolean({ default: false }),
  websocket: Type.Boolean({ default: false }),
  // The upstream also receives x-tokengate-assertion, a JWT for this audience (see assertion.ts).
  assertion: Type.Optional(Type.Object({ audience: Type.String({ minLength: 1 }) }, { additionalProperties: false }))
}, { additionalProperties: false })

// Single sign-on through an OpenID Provider (login.oidc); checked further in checkOidcConfig.
const Oidc = Type.Object({
  issuer: HttpUrl,
  clientId: Type.String({ minLength: 1 }),
  clientSecret: Type.Optional(Type.String({ minLength: 1 })),
  scopes: Type.Array(Type.String({ minLength: 1, pattern: '^[\\x21\\x23-\\x5b\\x5d-\\x7e]+$' }), { default: ['openid', 'profile', 'email'], minItems: 1, uniqueItems: true }),
  rolesClaim: Type.Optional(Type.String({ minLength: 1 })),
  publicUrl: HttpUrl
}, { additionalProperties: false })

const Limit = (max: number, window: string) => Type.Object({
  max: Type.Integer({ minimum: 1, default: max }),
  window: Duration(window)
}, { additionalProperties: false, default: {} })

export const ConfigSchema = Type.Object({
  listen: Type.Object({
    host: Type.String({ default: '127.0.0.1' }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 8080 })
  }, { additionalProperties: false, default: {} }),
  // One of url, cluster or sentinels (+ name); checked further in checkRedisConfig.
  redis: Type.Optional(Type.Object({
    url: Type.Optional(Type.String({ pattern: '^rediss?://\\S+$' })),
    cluster: Type.Optional(Type.Array(Type.String({ pattern: '^rediss?://\\S+$' }), { minItems: 1 })),
    sentinels: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })),
    name: Type.Optional(Type.String({ minLength: 1 })),
    password: Type.Optional(Type.String({ minLength: 1 })),
    sentinelPassword: Type.Optional(Type.String({ minLength: 1 })),
    tls: Type.Optional(Type.Boolean())
  }, { additionalProperties: false })),
  tokens: Tokens,
  login: Type.Object({
    upstream: Type.Optional(HttpUrl),
    usersFile: Type.Optional(Type.String({ minLength: 1 })),
    oidc: Type.Optional(Oidc),
    timeout: Duration('5s')
  }, { additionalProperties: false }),
  routes: Type.Array(Route, { default: [] }),
  // Forward authentication for nginx auth_request, Caddy forward_auth, Traefik ForwardAuth (see forward-auth.ts).
  forwardAuth: Type.Optional(Type.Object({
    path: Type.String({ pattern: '^/[A-Za-z0-9._~/-]*$', default: '/auth/verify' }),
    // false: no renewal there, for a proxy that cannot hand new tokens back to the client.
    refresh: Type.Boolean({ default: true })
  }, { additionalProperties: false })),
  rateLimit: Type.Object({
    failedLogins: Limit(10, '15m'),
    // Per account, from any IP: an attacker rotating addresses gets no more guesses than this.
    failedLoginsPerUser: Limit(100, '15m'),
    requests: Limit(100, '1m')
  }, { additionalProperties: false, default: {} }),
  // Fastify's trustProxy: true, a hop count, or addresses/CIDRs (an array, or a comma-separated string); checked in parseConfig.
  trustProxy: Type.Unsafe<boolean | number | string | string[]>(Type.Any({ default: false })),
  // OAuth 2.0 endpoints under /auth (token, revoke, introspect) and the metadata: the plugin's routes.oauth.
  oauth: Type.Optional(OAuthSchema),
  // Browsers on these origins may call the gateway (CORS, with credentials).
  cors: Type.Optional(Type.Object({
    origins: Type.Array(Type.String({ pattern: '^https?://[^/\\s]+$' }), { minItems: 1 })
  }, { additionalProperties: false })),
  // GET /metrics: on the public port (default), on a listener of its own ({ listen }), or off (false).
  metrics: Type.Union([
    Type.Literal(false),
    Type.Object({
      listen: Type.Optional(Type.Object({
        host: Type.String({ default: '127.0.0.1' }),
        port: Type.Integer({ minimum: 0, maximum: 65535 })
      }, { additionalProperties: false }))
    }, { additionalProperties: false })
  ], { default: {} }),
  logLevel: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map(l => Type.Literal(l)), { default: 'info' })
}, { additionalProperties: false })

export type GatewayConfig = Static<typeof ConfigSchema>
export type RouteConfig = Static<typeof Route>

export { ConfigError }

const VAR_RE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g

/** Replaces ${VAR} (and ${VAR:-default}) in every string of the config; a missing variable names its field. */
export function expandEnv (value: unknown, env: NodeJS.ProcessEnv, field = ''): unknown {
  if (typeof value === 'string') {
    return value.replace(VAR_RE, (_m, name: string, fallback: string | undefined) => {
      const v = env[name]
      if (v !== undefined && v !== '') return v
      if (fallback !== undefined) return fallback
      throw new ConfigError(field || '(root)', `uses \${${name}}, but the environment variable ${name} is not set`)
    })
  }
  if (Array.isArray(value)) return value.map((v, i) => expandEnv(v, env, `${field}[${i}]`))
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[k] = expandEnv(v, env, field === '' ? k : `${field}.${k}`)
    return out
  }
  return value
}

function fieldOf (pointer: string): string {
  return pointer.replace(/^\//, '').split('/').map((p, i) => /^\d+$/.test(p) ? `[${p}]` : (i === 0 ? p : `.${p}`)).join('') || '(root)'
}

const PROXY_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal'])

/** Whether one trustProxy entry is an address, a CIDR (address/prefix or address/netmask) or a proxy-addr name. */
function proxyAddress (entry: string): boolean {
  if (PROXY_NAMES.has(entry)) return true
  const [ip, range, ...rest] = entry.split('/')
  const version = isIP(ip)
  if (version === 0 || rest.length > 0) return false
  if (range === undefined) return true
  if (/^\d{1,3}$/.test(range)) return Number(range) <= (version === 4 ? 32 : 128)
  return version === 4 && isIP(range) === 4
}

/**
 * trustProxy in Fastify's forms: true / false, a hop count (the n proxies nearest to the gateway are trusted),
 * or the proxies' addresses and CIDRs (an array, or a comma-separated string). From ${VAR}, "2" is a hop
 * count and "true"/"false" booleans.
 */
function trustProxyOf (value: unknown): boolean | number | string | string[] {
  const bad = (field: string, problem: string): ConfigError => new ConfigError(field, `${problem}: use true, a hop count (e.g. 1) or the proxies' addresses/CIDRs (e.g. ["10.0.0.0/8"] or "10.0.0.1, 10.0.0.2")`)
  if (typeof value === 'boolean') return value
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < 0) throw bad('trustProxy', `is invalid (got ${value})`)
    return value
  }
  if (typeof value === 'string') {
    if (/^\d+$/.test(value)) return Number(value)
    if (value === 'true' || value === 'false') return value === 'true'
    const entries = value.split(',').map(e => e.trim())
    const wrong = entries.find(e => !proxyAddress(e))
    if (wrong !== undefined) throw bad('trustProxy', `is invalid: ${JSON.stringify(wrong)} is not an address or CIDR`)
    return value.trim()
  }
  if (Array.isArray(value) && value.length > 0) {
    for (const [i, e] of value.entries()) {
      if (typeof e !== 'string' || !proxyAddress(e.trim())) throw bad(`trustProxy[${i}]`, `is invalid: ${JSON.stringify(e)} is not an address or CIDR`)
    }
    // Fastify reads a list's entries as they are: the spaces around one go, as around a comma-separated string's.
    return (value as string[]).map(e => e.trim())
  }
  throw bad('trustProxy', 'is invalid')
}

/**
 * Validates a config object (after ${VAR} expansion), fills defaults, resolves file paths against
 * `baseDir` and reads key files. Throws ConfigError naming the field.
 */
export function parseConfig (input: unknown, opts: { env?: NodeJS.ProcessEnv, baseDir?: string } = {}): GatewayConfig & { baseDir: string } {
  const env = opts.env ?? process.env
  const baseDir = opts.baseDir ?? process.cwd()
  const expanded = expandEnv(input, env)
  // ${VAR} yields strings: numbers and booleans from the environment are converted where the schema wants them.
  const withDefaults = Value.Default(ConfigSchema, Value.Convert(ConfigSchema, Value.Clone(expanded)))
  const errors = [...Value.Errors(ConfigSchema, withDefaults)]
  // An unknown field is named by its own name; otherwise the first problem, with the value given.
  const unknown = errors.find(e => e.type === ValueErrorType.ObjectAdditionalProperties)
  if (unknown !== undefined) throw new ConfigError(fieldOf(unknown.path), 'is not a known field')
  const first = errors[0]
  if (first !== undefined) {
    // Echo the bad value, except where it may be a secret (a secret, a key, a URL with a password).
    const sensitive = /secret|key|url|password|upstream/i.test(first.path)
    const got = !sensitive && first.value !== undefined && typeof first.value !== 'object' ? ` (got ${JSON.stringify(first.value)})` : ''
    const choices = (first.schema as { anyOf?: Array<{ const?: unknown }> }).anyOf?.map(s => s.const)
    const message = (first.schema as { description?: string }).description === DurationSchema.description
      ? `must be ${DurationSchema.description!.replace(/^A /, 'a ')}`
      : choices !== undefined && choices.every(c => typeof c === 'string')
        ? `must be one of ${choices.join(', ')}`
        : first.message.replace(/^Expected union value$/, 'has the wrong type or format')
    throw new ConfigError(fieldOf(first.path), `is invalid: ${message}${got}`)
  }
  const config = withDefaults as GatewayConfig

  if (config.redis !== undefined) checkRedisConfig(config.redis)
  if (config.login.upstream !== undefined && config.login.usersFile !== undefined) {
    throw new ConfigError('login', 'needs exactly one of "upstream" or "usersFile"')
  }
  if (config.login.upstream === undefined && config.login.usersFile === undefined && config.login.oidc === undefined) {
    throw new ConfigError('login', 'needs exactly one of "upstream" or "usersFile", or "oidc" (single sign-on), or "oidc" with one of them')
  }
  if (config.login.oidc !== undefined) checkOidcConfig(config.login.oidc, config.tokens.transport)
  if (config.login.usersFile !== undefined) config.login.usersFile = path.resolve(baseDir, config.login.usersFile)
  if (config.tokens.secret === undefined && config.tokens.keys === undefined) throw new ConfigError('tokens.secret', 'is required (or tokens.keys)')
  for (const [i, k] of (config.tokens.keys ?? []).entries()) {
    for (const which of ['privateKey', 'publicKey'] as const) {
      const file = k[`${which}File`]
      if (file !== undefined) {
        if (k[which] !== undefined) throw new ConfigError(`tokens.keys[${i}].${which}File`, `cannot be set with ${which}`)
        try {
          k[which] = readFileSync(path.resolve(baseDir, file), 'utf8')
        } catch {
          throw new ConfigError(`tokens.keys[${i}].${which}File`, `cannot be read: ${path.resolve(baseDir, file)}`)
        }
        delete k[`${which}File`]
      }
    }
    if (k.publicKey === undefined) throw new ConfigError(`tokens.keys[${i}].publicKey`, 'is required')
  }
  config.trustProxy = trustProxyOf(config.trustProxy)
  // The OAuth metadata names the issuer and the endpoints under it: never taken from a request's Host header.
  if (config.oauth !== undefined && config.oauth !== false) {
    if (config.tokens.issuer === undefined) throw new ConfigError('tokens.issuer', 'is required with oauth: the authorization server metadata names it and the endpoint URLs under it (the gateway\'s public URL, e.g. "https://auth.example")')
    if (!/^https?:\/\/[^/?#\s]+(\/[^?#\s]*)?$/.test(config.tokens.issuer)) throw new ConfigError('tokens.issuer', 'must be an http(s) URL without query or fragment with oauth (the gateway\'s public URL)')
  }
  const prefixes = new Set<string>()
  for (const [i, r] of config.routes.entries()) {
    if (r.prefix === '/auth' || r.prefix.startsWith('/auth/')) throw new ConfigError(`routes[${i}].prefix`, 'cannot be under /auth (the gateway serves its own routes there)')
    if (prefixes.has(r.prefix)) throw new ConfigError(`routes[${i}].prefix`, `repeats ${r.prefix}`)
    prefixes.add(r.prefix)
    for (const field of ['roles', 'maxAge', 'acr'] as const) {
      if (r[field] !== undefined && r.auth !== 'required') throw new ConfigError(`routes[${i}].${field}`, 'needs auth: "required"')
    }
    const checked = checkPolicy(routePolicyOf(r) ?? true, `routes[${i}]`)
    if ('problem' in checked) {
      const [, field, problem] = /^(\S+) (.*)$/s.exec(checked.problem)!
      throw new ConfigError(field, problem)
    }
  }
  checkForwardAuth(config)
  checkAssertions(config)
  // Not a config field: kept off the enumerable keys so a parsed config can be parsed again.
  return Object.defineProperty(config, 'baseDir', { value: baseDir, enumerable: false }) as GatewayConfig & { baseDir: string }
}

/** Reads and parses a JSON config file; paths inside it are relative to the file. */
export function loadConfigFile (file: string, env: NodeJS.ProcessEnv = process.env): GatewayConfig & { baseDir: string } {
  const full = path.resolve(file)
  let text: string
  try {
    text = readFileSync(full, 'utf8')
  } catch {
    throw new ConfigError('(file)', `cannot be read: ${full}`)
  }
  // A byte-order mark, as some editors save one, is not part of the JSON.
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    // Not JSON.parse's message: it quotes the text around the error, which may be a secret. Where, instead.
    throw new ConfigError('(file)', `is not valid JSON${whereJsonFails(text)}: ${full}`)
  }
  return parseConfig(json, { env, baseDir: path.dirname(full) })
}

/** " at line L, column C" of the first JSON syntax error in `text` ('' when none is found), and a likely cause. */
function whereJsonFails (text: string): string {
  const at = jsonErrorOffset(text)
  if (at < 0) return ''
  const line = text.slice(0, at).split('\n').length
  const column = at - (text.lastIndexOf('\n', at - 1) + 1) + 1
  const trailingComma = (text[at] === '}' || text[at] === ']') && /,\s*$/.test(text.slice(0, at))
  return ` at line ${line}, column ${column}${trailingComma ? ' (a comma before a closing bracket?)' : ''}`
}

/**
 * The offset of the first syntax error in `text` by the JSON grammar (RFC 8259), or -1: V8's messages give
 * no position for some errors ("Unexpected token …"), and quote the text where they do.
 */
function jsonErrorOffset (text: string): number {
  let i = 0
  const stop = (): never => { throw i } // the offset, caught below
  const ws = (): void => { while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++ }
  const digits = (): void => { if (!(text[i] >= '0' && text[i] <= '9')) stop(); while (text[i] >= '0' && text[i] <= '9') i++ }
  const str = (): void => {
    i++
    for (;;) {
      if (i >= text.length || text.charCodeAt(i) < 0x20) stop()
      const c = text[i]
      if (c === '"') { i++; return }
      if (c === '\\') {
        i++
        if (text[i] === 'u') {
          i++
          for (let k = 0; k < 4; k++, i++) if (!/[0-9a-fA-F]/.test(text[i] ?? '')) stop()
        } else if (text[i] !== undefined && '"\\/bfnrt'.includes(text[i])) {
          i++
        } else {
          stop()
        }
      } else {
        i++
      }
    }
  }
  const value = (): void => {
    ws()
    const c = text[i]
    if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']'
      i++
      ws()
      if (text[i] === close) { i++; return }
      for (;;) {
        ws()
        if (c === '{') {
          if (text[i] !== '"') stop()
          str()
          ws()
          if (text[i] !== ':') stop()
          i++
        }
        value()
        ws()
        if (text[i] === ',') { i++; continue }
        if (text[i] === close) { i++; return }
        stop()
      }
    }
    if (c === '"') { str(); return }
    if (c === '-' || (c >= '0' && c <= '9')) {
      if (c === '-') i++
      if (text[i] === '0') i++
      else digits()
      if (text[i] === '.') { i++; digits() }
      if (text[i] === 'e' || text[i] === 'E') { i++; if (text[i] === '+' || text[i] === '-') i++; digits() }
      return
    }
    for (const word of ['true', 'false', 'null']) {
      if (c === word[0]) {
        for (const ch of word) { if (text[i] !== ch) stop(); i++ }
        return
      }
    }
    stop()
  }
  try {
    value()
    ws()
    return i < text.length ? i : -1
  } catch (at) {
    return typeof at === 'number' ? at : -1
  }
}
