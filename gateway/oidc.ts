// Single sign-on through an OpenID Provider (login.oidc) and OpenID Connect Back-Channel Logout 1.0.
//
// GET  /auth/oidc/login?returnTo=/path  → 302 to the provider: authorization code flow, PKCE (S256), state, nonce
// GET  /auth/oidc/callback              → code exchange, ID token checked → a cookie session → 303 to returnTo
// POST /auth/oidc/backchannel-logout    → a logout token checked (§2.6) → the sessions of that provider session revoked
//
// openid-client does discovery, the authorization URL, PKCE and the code grant (the ID token's signature by the
// provider's JWKS, iss, aud, exp, nonce); jose checks logout tokens. The flow's transient state (state, nonce,
// PKCE verifier, returnTo) rides in the browser, in an encrypted cookie (keyed from the signing key, so any
// instance can finish the callback); a used state, a seen logout-token jti and the provider-sid index are
// shared through Redis (in this process without it).
import { createHash, timingSafeEqual } from 'node:crypto'
import formbody from '@fastify/formbody'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Cluster, Redis } from 'ioredis'
import { EncryptJWT, createRemoteJWKSet, jwtDecrypt, jwtVerify, type JWTPayload } from 'jose'
import * as client from 'openid-client'
import { kBridge } from '../plugin/bridge.js'
import { OidcFailedError, StoreUnavailableError, UpstreamTimeoutError, UpstreamUnavailableError } from '../plugin/index.js'
import type { OidcConfig } from './oidc-config.js'

export const OIDC_PREFIX = '/auth/oidc'
export const OIDC_LOGIN = `${OIDC_PREFIX}/login`
export const OIDC_CALLBACK = `${OIDC_PREFIX}/callback`
export const OIDC_BACKCHANNEL = `${OIDC_PREFIX}/backchannel-logout`

/** The flow cookie: the transient state of the sign-ins this browser has under way (encrypted, HttpOnly, SameSite=Lax). */
export const FLOW_COOKIE = 'tg_oidc'
/** How long a sign-in may take at the provider (the flow cookie's and a used state's lifetime). */
const FLOW_TTL_MS = 10 * 60_000
/** Sign-ins under way at once in one browser (tabs): the oldest is dropped beyond it. */
const MAX_FLOWS = 4
const MAX_RETURN_TO = 2048
/** The flow cookie's value at most (a browser keeps 4096 bytes for name, value and attributes). */
const MAX_COOKIE = 3800
const LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout'
/** A logout token older than this (by its iat) is refused: its jti is remembered at least that long. */
const LOGOUT_TOKEN_MAX_AGE_MS = 10 * 60_000
/** How far the provider's clock may be from ours. */
const SKEW_MS = 60_000
const JTI_TTL_MS = LOGOUT_TOKEN_MAX_AGE_MS + 2 * SKEW_MS
const BODY_LIMIT = 16 * 1024

export interface OidcDeps {
  config: OidcConfig
  /** The gateway's Redis (state, jti and sid memory shared by every instance), or none (this process). */
  redis?: Redis | Cluster
  keyPrefix: string
  /** Bound on each request to the provider (login.timeout). */
  timeoutMs: number
  /** How long a session can live (maxSessionAge + access TTL): the provider-sid index entries live as long. */
  sessionLifetimeMs: number
  /** Counts a finished sign-in (tokengate_logins_total). */
  onLogin?: (result: 'success' | 'failure') => void
}

interface Flow {
  /** state */ s: string
  /** nonce */ n: string
  /** PKCE code verifier */ v: string
  /** returnTo */ r: string
  /** expiry (ms) */ e: number
}

const digest = (value: string): string => createHash('sha256').update(value).digest('base64url').slice(0, 32)

function sameString (a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}

/** Whether a string holds a control character, a space or DEL (a browser drops tabs and newlines from URLs). */
const hasControl = (s: string): boolean => { for (let i = 0; i < s.length; i++) { const c = s.charCodeAt(i); if (c <= 0x20 || c === 0x7f) return true } return false }

/**
 * `returnTo` when it is a path on the gateway's own origin, else '/': it starts with one '/' (not '//', not
 * '/\'), printable ASCII only (no tab or newline a browser would drop), and stays so however often it is
 * percent-decoded ('/%2F%2Fevil' is refused too).
 */
export function safeReturnTo (value: unknown): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_RETURN_TO) return '/'
  if (!/^[\x21-\x7e]+$/.test(value)) return '/'
  let decoded = value
  for (let i = 0; i < 4; i++) {
    if (!/^\/(?![/\\])/.test(decoded) || decoded.includes('\\') || hasControl(decoded)) return '/'
    let next: string
    try {
      next = decodeURIComponent(decoded)
    } catch {
      return '/'
    }
    if (next === decoded) return value
    decoded = next
  }
  return '/'
}

/** `claims` at a dot path ('realm_access.roles'), own properties only; roles are its strings (a string alone is one role). */
export function rolesAt (claims: Record<string, unknown>, dotPath: string | undefined): string[] {
  if (dotPath === undefined) return []
  let at: unknown = claims
  for (const part of dotPath.split('.')) {
    if (at === null || typeof at !== 'object' || Array.isArray(at) || !Object.hasOwn(at, part)) return []
    at = (at as Record<string, unknown>)[part]
  }
  // A role with a comma would read as two in x-user-roles: such a value is not taken as a role.
  const role = (r: unknown): r is string => typeof r === 'string' && r !== '' && !r.includes(',')
  if (typeof at === 'string') return role(at) ? [at] : []
  if (!Array.isArray(at)) return []
  return [...new Set(at.filter(role))]
}

/** What instances share: a used state, a seen logout-token jti, the sessions started from a provider session. */
interface SharedMemory {
  /** true the first time `key` is claimed within `ttlMs`, on every instance. */
  claim: (key: string, ttlMs: number) => Promise<boolean>
  release: (key: string) => Promise<void>
  addSession: (key: string, userId: string, sessionId: string, ttlMs: number) => Promise<void>
  sessions: (key: string) => Promise<Array<[string, string]>>
  forget: (key: string) => Promise<void>
  close: () => void
}

function redisMemory (redis: Redis | Cluster): SharedMemory {
  return {
    claim: async (key, ttlMs) => (await redis.set(key, '1', 'PX', ttlMs, 'NX')) === 'OK',
    release: async (key) => { await redis.del(key) },
    async addSession (key, userId, sessionId, ttlMs) {
      // Every session lives as long, so each login's expiry is the latest: the set outlives its sessions.
      await redis.multi().sadd(key, JSON.stringify([userId, sessionId])).pexpire(key, ttlMs).exec()
    },
    sessions: async (key) => parseMembers(await redis.smembers(key)),
    forget: async (key) => { await redis.del(key) },
    close: () => {}
  }
}

function parseMembers (members: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = []
  for (const m of members) {
    try {
      const v = JSON.parse(m) as unknown
      if (Array.isArray(v) && typeof v[0] === 'string' && typeof v[1] === 'string') out.push([v[0], v[1]])
    } catch { /* not ours */ }
  }
  return out
}

function processMemory (): SharedMemory {
  const claims = new Map<string, number>()
  const sids = new Map<string, { members: Set<string>, until: number }>()
  const prune = (): void => {
    const now = Date.now()
    for (const [k, until] of claims) if (until <= now) claims.delete(k)
    for (const [k, e] of sids) if (e.until <= now) sids.delete(k)
  }
  const timer = setInterval(prune, 60_000)
  timer.unref()
  return {
    async claim (key, ttlMs) {
      const now = Date.now()
      if ((claims.get(key) ?? 0) > now) return false
      claims.set(key, now + ttlMs)
      return true
    },
    release: async (key) => { claims.delete(key) },
    async addSession (key, userId, sessionId, ttlMs) {
      const now = Date.now()
      let e = sids.get(key)
      if (e === undefined || e.until <= now) sids.set(key, e = { members: new Set(), until: 0 })
      e.members.add(JSON.stringify([userId, sessionId]))
      e.until = now + ttlMs
    },
    async sessions (key) {
      const e = sids.get(key)
      return e === undefined || e.until <= Date.now() ? [] : parseMembers([...e.members])
    },
    forget: async (key) => { sids.delete(key) },
    close: () => { clearInterval(timer) }
  }
}

/** A failure to reach the provider: 504 past the timeout, else 502 (logged, without any token). */
function providerUnreachable (app: FastifyInstance, err: unknown, what: string): Error {
  const e = err as { name?: string, message?: string, cause?: { name?: string, code?: string } }
  const timedOut = e?.name === 'TimeoutError' || e?.name === 'AbortError' || e?.cause?.name === 'TimeoutError' || e?.cause?.code === 'ERR_JWKS_TIMEOUT' || (e as { code?: string })?.code === 'ERR_JWKS_TIMEOUT'
  app.log.error(`gateway: the OpenID provider ${what} failed: ${e?.message ?? String(err)}${e?.cause?.code !== undefined ? ` (${e.cause.code})` : ''}`)
  return timedOut ? new UpstreamTimeoutError() : new UpstreamUnavailableError()
}

/** Whether an error is the network's (no answer, refused, timed out) rather than the provider's answer. */
function networkError (err: unknown): boolean {
  const e = err as { name?: string, message?: string, code?: string }
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return true
  if (err instanceof TypeError && /fetch failed/i.test(e.message ?? '')) return true
  return e?.code === 'ERR_JWKS_TIMEOUT' || e?.code === 'OAUTH_RESPONSE_IS_NOT_CONFORM' || e?.code === 'OAUTH_RESPONSE_IS_NOT_JSON'
}

/**
 * The /auth/oidc routes. Registered from buildGateway; the tokengate plugin (registered before) gives the
 * cookie session, revocations and the key the flow cookie is encrypted with.
 */
export function registerOidc (app: FastifyInstance, deps: OidcDeps): void {
  const { config } = deps
  const issuerUrl = new URL(config.issuer)
  const insecure = issuerUrl.protocol === 'http:'
  const redirectUri = `${config.publicUrl}${OIDC_CALLBACK}`
  const secureCookie = config.publicUrl.startsWith('https:')
  const memory = deps.redis !== undefined ? redisMemory(deps.redis) : processMemory()
  const prefix = `${deps.keyPrefix}:oidc`
  const onLogin = deps.onLogin ?? (() => {})
  app.addHook('onClose', async () => { memory.close() })

  /** Redis (or memory) calls: a failure is 503 TOKENGATE_STORE_UNAVAILABLE. */
  async function shared<T> (what: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call()
    } catch (err) {
      app.log.error({ err }, `gateway: single sign-on: ${what} failed in the store`)
      throw new StoreUnavailableError()
    }
  }

  // Discovery, once (again after a failure): the provider's metadata and keys.
  interface Provider { config: client.Configuration, jwks: ReturnType<typeof createRemoteJWKSet>, algorithms: string[], issuer: string }
  let discovering: Promise<Provider> | undefined
  async function provider (): Promise<Provider> {
    discovering ??= (async () => {
      const execute = [client.enableNonRepudiationChecks, ...(insecure ? [client.allowInsecureRequests] : [])]
      const auth = config.clientSecret !== undefined ? client.ClientSecretBasic(config.clientSecret) : client.None()
      const cfg = await client.discovery(issuerUrl, config.clientId, config.clientSecret, auth, { execute, timeout: deps.timeoutMs / 1000 })
      const meta = cfg.serverMetadata()
      if (typeof meta.jwks_uri !== 'string') throw new Error('the provider\'s metadata names no jwks_uri')
      // Logout tokens are signed as ID tokens are: the provider's asymmetric algorithms, never "none" nor a MAC.
      const supported = (meta.id_token_signing_alg_values_supported ?? ['RS256']).filter(a => a !== 'none' && !a.startsWith('HS'))
      return {
        config: cfg,
        jwks: createRemoteJWKSet(new URL(meta.jwks_uri), { timeoutDuration: deps.timeoutMs }),
        algorithms: supported.length > 0 ? supported : ['RS256'],
        issuer: meta.issuer
      }
    })()
    try {
      return await discovering
    } catch (err) {
      discovering = undefined
      throw providerUnreachable(app, err, `discovery at ${config.issuer}`)
    }
  }

  let flowKey: Uint8Array | undefined
  const key = (): Uint8Array => (flowKey ??= new Uint8Array(app[kBridge].keyFor('tokengate oidc flow cookie v1')))

  /** The flows of the request's flow cookie still under way ([] when none, expired or not ours). */
  async function readFlows (request: FastifyRequest): Promise<Flow[]> {
    const raw = request.cookies?.[FLOW_COOKIE]
    if (typeof raw !== 'string' || raw === '' || raw.length > MAX_COOKIE) return []
    try {
      const { payload } = await jwtDecrypt(raw, key(), { keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] })
      const flows = (payload as { f?: unknown }).f
      if (!Array.isArray(flows)) return []
      const now = Date.now()
      return flows.filter((f): f is Flow => f !== null && typeof f === 'object' &&
        typeof f.s === 'string' && typeof f.n === 'string' && typeof f.v === 'string' && typeof f.r === 'string' && typeof f.e === 'number' && f.e > now)
    } catch {
      return []
    }
  }

  async function writeFlows (reply: FastifyReply, flows: Flow[]): Promise<void> {
    const base = { path: OIDC_PREFIX, httpOnly: true, secure: secureCookie, sameSite: 'lax' as const }
    if (flows.length === 0) {
      reply.clearCookie(FLOW_COOKIE, base)
      return
    }
    // A browser keeps a cookie of up to 4096 bytes: the oldest flows go until it fits (long returnTo paths).
    for (let keep = flows.length; keep > 0; keep--) {
      const kept = flows.slice(-keep)
      const until = Math.max(...kept.map(f => f.e))
      const value = await new EncryptJWT({ f: kept })
        .setProtectedHeader({ alg: 'dir', enc: 'A256GCM' })
        .setExpirationTime(Math.ceil(until / 1000))
        .encrypt(key())
      if (value.length <= MAX_COOKIE || keep === 1) {
        reply.setCookie(FLOW_COOKIE, value, { ...base, maxAge: Math.max(1, Math.ceil((until - Date.now()) / 1000)) })
        return
      }
    }
  }

  const fail = (reason: string): Error => {
    onLogin('failure')
    return new OidcFailedError(reason)
  }

  app.register(async (scope) => {
    scope.get(OIDC_LOGIN, {
      // No HEAD twin: a HEAD would start or finish a sign-in as the GET does.
      exposeHeadRoute: false,
      schema: {
        summary: 'Single sign-on: a redirect to the OpenID provider (authorization code flow with PKCE)',
        tags: ['oidc'],
        querystring: { type: 'object', properties: { returnTo: { description: 'A path on this origin to land on afterwards (anything else lands on /)' } } },
        response: { 302: { type: 'null', description: 'To the provider\'s authorization endpoint' } }
      }
    }, async (request, reply) => {
      const op = await provider()
      const returnTo = safeReturnTo((request.query as Record<string, unknown> | undefined)?.returnTo)
      const flow: Flow = { s: client.randomState(), n: client.randomNonce(), v: client.randomPKCECodeVerifier(), r: returnTo, e: Date.now() + FLOW_TTL_MS }
      const url = client.buildAuthorizationUrl(op.config, {
        redirect_uri: redirectUri,
        scope: config.scopes.join(' '),
        code_challenge: await client.calculatePKCECodeChallenge(flow.v),
        code_challenge_method: 'S256',
        state: flow.s,
        nonce: flow.n
      })
      // Sign-ins already under way in other tabs stay (the newest MAX_FLOWS).
      const flows = [...(await readFlows(request)), flow].slice(-MAX_FLOWS)
      await writeFlows(reply, flows)
      reply.header('cache-control', 'no-store')
      return await reply.redirect(url.href, 302)
    })

    scope.get(OIDC_CALLBACK, {
      // No HEAD twin: a HEAD would start or finish a sign-in as the GET does.
      exposeHeadRoute: false,
      schema: {
        summary: 'Single sign-on: the provider\'s answer; a session (tg_* cookies) and a redirect to returnTo',
        tags: ['oidc'],
        response: { 303: { type: 'null', description: 'Signed in: to returnTo' } }
      }
    }, async (request, reply) => {
      reply.header('cache-control', 'no-store')
      const query = request.query as Record<string, unknown>
      const state = query.state
      if (typeof state !== 'string' || state === '') throw fail('the answer carries no state')
      // The state must be one this browser's flow cookie holds (bound to the browser that started the sign-in)…
      const flows = await readFlows(request)
      const at = flows.findIndex(f => sameString(f.s, state))
      if (at < 0) throw fail('the state is not one this browser started, or the sign-in took too long')
      const [flow] = flows.splice(at, 1)
      await writeFlows(reply, flows)
      // …and is used once, on whichever instance finishes it.
      if (!await shared('the state check', async () => await memory.claim(`${prefix}:state:${digest(state)}`, FLOW_TTL_MS))) {
        throw fail('the state was already used')
      }
      if (typeof query.error === 'string') throw fail(`the provider answered ${/^[\x21-\x7e]{1,64}$/.test(query.error) ? query.error : 'an error'}`)

      const op = await provider()
      const rawQuery = request.url.includes('?') ? request.url.slice(request.url.indexOf('?')) : ''
      let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>
      try {
        tokens = await client.authorizationCodeGrant(op.config, new URL(redirectUri + rawQuery), {
          pkceCodeVerifier: flow.v,
          expectedState: flow.s,
          expectedNonce: flow.n,
          idTokenExpected: true
        })
      } catch (err) {
        if (networkError(err)) throw providerUnreachable(app, err, 'token request')
        request.log.info(`gateway: single sign-on refused: ${(err as Error).message}`)
        throw fail(`the provider's answer did not check out (${(err as { code?: string }).code ?? (err as Error).name})`)
      }
      const claims = tokens.claims()
      if (claims === undefined || typeof claims.sub !== 'string' || claims.sub === '') throw fail('no ID token')
      const sid = typeof claims.sid === 'string' && claims.sid !== '' ? claims.sid : undefined
      // How the user authenticated at the provider (RFC 9470's acr and amr), for step-up policies.
      const acr = typeof claims.acr === 'string' && claims.acr !== '' ? claims.acr : undefined
      const amr = Array.isArray(claims.amr) && claims.amr.length > 0 && claims.amr.every(m => typeof m === 'string' && m !== '') ? claims.amr as string[] : undefined
      const user = { sub: claims.sub, roles: rolesAt(claims, config.rolesClaim), ...(acr !== undefined ? { acr } : {}), ...(amr !== undefined ? { amr } : {}) }
      const bridge = app[kBridge]
      const pair = await bridge.startCookieSession(request, reply, user, sid)
      if (sid !== undefined) {
        try {
          await memory.addSession(`${prefix}:sid:${digest(`${op.issuer}\n${sid}`)}`, user.sub, pair.sessionId, deps.sessionLifetimeMs)
        } catch (err) {
          // A session the provider could not log out does not stay.
          await bridge.revokeSession(user.sub, pair.sessionId, 'oidc-index').catch(() => {})
          app.log.error({ err }, 'gateway: single sign-on: recording the provider session failed in the store')
          throw new StoreUnavailableError()
        }
      }
      onLogin('success')
      return await reply.redirect(flow.r, 303)
    })
  })

  // Back-channel logout: its own scope, so that any malformed request is answered as the spec says.
  app.register(async (scope) => {
    await scope.register(formbody, { bodyLimit: BODY_LIMIT })
    const invalid = async (request: FastifyRequest, reply: FastifyReply, reason: string): Promise<FastifyReply> => {
      request.log.info(`gateway: back-channel logout refused: ${reason}`)
      return await reply.code(400).header('cache-control', 'no-store').send({ error: 'invalid_request' })
    }
    scope.setErrorHandler(async (error: Error & { statusCode?: number }, request, reply) => {
      // A body that does not parse, is too large, or is not a form: the request is invalid. Anything else
      // (the store, the provider) goes to the gateway's handler.
      if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) return await invalid(request, reply, error.message)
      throw error
    })

    scope.post(OIDC_BACKCHANNEL, {
      bodyLimit: BODY_LIMIT,
      schema: {
        summary: 'OpenID Connect Back-Channel Logout: the provider ends the sessions started from one of its sessions',
        tags: ['oidc'],
        consumes: ['application/x-www-form-urlencoded'],
        response: {
          200: { type: 'null', description: 'The sessions are revoked (on every instance)' },
          400: { type: 'object', properties: { error: { type: 'string', enum: ['invalid_request'] } }, required: ['error'], description: 'Not a valid logout token' }
        }
      }
    }, async (request, reply) => {
      // A form (§2.5), nothing else: another media type has no parser here (→ 400 above), JSON is refused here.
      if (!/^application\/x-www-form-urlencoded\s*(;|$)/i.test(request.headers['content-type'] ?? '')) return await invalid(request, reply, 'not a form')
      const body = request.body as Record<string, unknown> | undefined
      const token = body?.logout_token
      if (typeof token !== 'string' || token === '') return await invalid(request, reply, 'no logout_token')
      const op = await provider()

      // OpenID Connect Back-Channel Logout 1.0 §2.6, one check per line:
      let claims: JWTPayload
      try {
        // 2. a JWT signed by a key of the provider's JWKS, with one of its ID-token algorithms (never "none");
        // 3. iss the provider's issuer, aud holding our client id, exp (when present) not past.
        claims = (await jwtVerify(token, op.jwks, { algorithms: op.algorithms, issuer: op.issuer, audience: config.clientId, clockTolerance: SKEW_MS / 1000 })).payload
      } catch (err) {
        if (networkError(err) || (err as { code?: string }).code === 'ERR_JWKS_TIMEOUT') throw providerUnreachable(app, err, 'key set fetch')
        return await invalid(request, reply, `the token does not verify (${(err as { code?: string }).code ?? (err as Error).name})`)
      }
      const now = Date.now()
      // 3. iat present, not in the future, and recent (its jti is remembered that long).
      if (typeof claims.iat !== 'number') return await invalid(request, reply, 'no iat')
      if (claims.iat * 1000 > now + SKEW_MS) return await invalid(request, reply, 'iat is in the future')
      if (claims.iat * 1000 < now - LOGOUT_TOKEN_MAX_AGE_MS - SKEW_MS) return await invalid(request, reply, 'iat is too old')
      // 4. sid and/or sub (strings when present).
      const { sub, sid } = claims as { sub?: unknown, sid?: unknown }
      if (sub !== undefined && (typeof sub !== 'string' || sub === '')) return await invalid(request, reply, 'sub is not a string')
      if (sid !== undefined && (typeof sid !== 'string' || sid === '')) return await invalid(request, reply, 'sid is not a string')
      if (sub === undefined && sid === undefined) return await invalid(request, reply, 'neither sid nor sub')
      // 5. events holds the back-channel logout event, a JSON object.
      const events = claims.events as Record<string, unknown> | undefined
      const event = events !== null && typeof events === 'object' && !Array.isArray(events) && Object.hasOwn(events, LOGOUT_EVENT) ? events[LOGOUT_EVENT] : undefined
      if (event === null || typeof event !== 'object' || Array.isArray(event)) return await invalid(request, reply, 'no back-channel logout event')
      // 6. no nonce (an ID token is not a logout token).
      if (Object.hasOwn(claims, 'nonce')) return await invalid(request, reply, 'it carries a nonce')
      // 7. a jti not seen before (on any instance): claimed last, once every other check has passed.
      if (typeof claims.jti !== 'string' || claims.jti === '') return await invalid(request, reply, 'no jti')
      const jtiKey = `${prefix}:jti:${digest(`${op.issuer}\n${claims.jti}`)}`
      if (!await shared('the jti check', async () => await memory.claim(jtiKey, JTI_TTL_MS))) return await invalid(request, reply, 'the jti was seen before')

      try {
        await logout(op.issuer, sub as string | undefined, sid as string | undefined)
      } catch (err) {
        // Not logged out: the provider may send it again.
        await memory.release(jtiKey).catch(() => {})
        throw err
      }
      return await reply.code(200).header('cache-control', 'no-store').send()
    })
  })

  /** Revokes the sessions started from provider session `sid` (of `sub` when given), or every session of `sub`. */
  async function logout (issuer: string, sub: string | undefined, sid: string | undefined): Promise<void> {
    const bridge = app[kBridge]
    if (sid === undefined) {
      await bridge.revokeAll(sub!, 'oidc-logout')
      return
    }
    const indexKey = `${prefix}:sid:${digest(`${issuer}\n${sid}`)}`
    const sessions = new Map<string, string>()
    for (const [userId, sessionId] of await shared('the provider session lookup', async () => await memory.sessions(indexKey))) {
      if (sub === undefined || userId === sub) sessions.set(sessionId, userId)
    }
    // The user's records name the provider session too (should the index have lost it).
    if (sub !== undefined) {
      for (const r of await shared('the session list', async () => await app.tokengate.store.list(sub, Date.now()))) {
        if (r.providerSessionId === sid) sessions.set(r.sessionId, sub)
      }
    }
    for (const [sessionId, userId] of sessions) await bridge.revokeSession(userId, sessionId, 'oidc-logout')
    await shared('forgetting the provider session', async () => { await memory.forget(indexKey) })
  }
}
