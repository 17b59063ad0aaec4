// tokengate: JWT access tokens, rotating refresh sessions in Redis, the refresh hook and logout.
// fp(): options → tokens, store, revocation feed → hook, routes, decorators.
import { createHmac } from 'node:crypto'
import fp from 'fastify-plugin'
import fastifyCookie from '@fastify/cookie'
import type { FastifyInstance, onRequestHookHandler } from 'fastify'
import { kBridge } from './bridge.js'
import { Dpop } from './dpop.js'
import { authenticate, checkPolicy, closedRoute, kAuthError, kDpopAlgs, kDpopScheme, routePolicy, type RouteAuthConfig } from './guards.js'
import { buildHook } from './hook.js'
import { addRouteHook } from './route-hooks.js'
import { resolveOptions, type RequestMeta, type TokengateOptions, type UserInfo } from './options.js'
import { Revocations } from './revocation.js'
import { registerOAuth } from './oauth.js'
import { describeSecuritySchemes } from './openapi.js'
import { registerRoutes } from './routes.js'
import { Sessions, type AuthInfo, type SessionInfo, type TokenPair } from './sessions.js'
import { MemoryStore, RedisStore, type SessionStore } from './store/index.js'
import { redisAddress } from './store/redis-address.js'
import { Tokens } from './tokens.js'
import { kByCookie, kForwarded, requestMeta, transport } from './transport.js'

export interface TokengateApi {
  /** Starts a session for a user and returns its first token pair. */
  issue: (user: UserInfo, meta?: RequestMeta) => Promise<TokenPair>
  /** Exchanges a refresh token for a new pair (rotating it unless rotateRefreshTokens is false). */
  refresh: (refreshToken: string, meta?: RequestMeta) => Promise<TokenPair>
  /** Verifies an access token, revocation included; rejects with a tokengate error. */
  verify: (accessToken: string) => Promise<AuthInfo>
  /** Revokes one session of a user; false when there was no such live session. */
  revokeSession: (userId: string, sessionId: string) => Promise<boolean>
  /**
   * Revokes every session of a user; resolves to how many there were. One "not before" entry for the user on
   * every instance: any token of theirs issued before the call is refused.
   */
  revokeAll: (userId: string) => Promise<number>
  /**
   * Revokes every session of every user (after a breach): one "not before" entry on every instance; any
   * access or refresh token issued before the call is refused, tokens issued after it work.
   */
  revokeEveryone: () => Promise<void>
  /** The user's live sessions, newest first. */
  listSessions: (userId: string) => Promise<SessionInfo[]>
  /** The session store in use. */
  readonly store: SessionStore
  /** Whether this instance's revocation feed is up (else revocations are checked in the store per request). */
  readonly feedUp: boolean
  /**
   * Calls `listener(sessionId, userId?)` once for every revocation this instance learns of, its own and the
   * feed's (userId only for its own), so long-lived work of a dead session can end; returns the unsubscribe.
   */
  onSessionRevoked: (listener: (sessionId: string, userId?: string) => void) => () => void
  /**
   * Calls `listener(userId, before)` on every instance for revokeAll (the user) and revokeEveryone (userId
   * undefined): every token of that user, or of everybody, issued before `before` (ms) is refused from then on.
   */
  onRevokedBefore: (listener: (userId: string | undefined, before: number) => void) => () => void
}

declare module 'fastify' {
  interface FastifyInstance {
    tokengate: TokengateApi
    /** onRequest hook: 401 unless the request carries a valid access token (or was refreshed). */
    authenticate: onRequestHookHandler
  }
  interface FastifyRequest {
    /** The verified identity, or null on an anonymous request. */
    auth: AuthInfo | null
  }
  interface FastifyContextConfig {
    /**
     * Per-route auth: true, or { roles?, maxAge?, acr? } with at least one of them: 401 unless authenticated,
     * 403 without one of the roles, 401 TOKENGATE_STEP_UP_REQUIRED when the authentication is older than
     * maxAge or its acr is not one of acr. Anything else makes app.ready() fail, naming the route and field.
     */
    auth?: boolean | RouteAuthConfig
  }
}

/** Marks the config of a route whose policy the onRoute hook installed. */
const kPolicyHeld = Symbol('tokengate.policyHeld')

async function tokengate (app: FastifyInstance, options: TokengateOptions): Promise<void> {
  const opts = resolveOptions(options)

  let store: SessionStore
  let ownsStore = true
  if (opts.store !== undefined) {
    store = opts.store
    ownsStore = false
  } else if (opts.redis !== undefined) {
    const redisStore = new RedisStore({ redis: opts.redis, keyPrefix: opts.keyPrefix, timeoutMs: opts.storeTimeoutMs, stalenessMs: opts.revocationStalenessMs })
    if (!await redisStore.ready()) app.log.warn(`tokengate: ${redisAddress(redisStore.client)} is not reachable yet; session routes answer 503 until it is`)
    store = redisStore
  } else {
    app.log.warn('tokengate: no redis or store option: using the in-memory store, which serves this one process only')
    store = new MemoryStore()
  }

  const tokens = await Tokens.create(app, opts)
  const dpop = opts.dpop === undefined
    ? undefined
    : new Dpop({ ...opts.dpop, clockToleranceMs: opts.clockToleranceMs }, tokens.secretMaterial, async (id, ttl) => await sessions.claimProof(id, ttl))
  const revocations = new Revocations(store, opts.accessTtlMs + opts.clockToleranceMs, app.log, opts.revocationStalenessMs, opts.maxSessionAgeMs + opts.accessTtlMs + opts.clockToleranceMs)
  await revocations.start()
  const sessions = new Sessions(opts, tokens, store, revocations, app.log, !ownsStore)
  app.addHook('onClose', async () => {
    revocations.close()
    dpop?.close()
    if (ownsStore) await store.close()
  })

  if (opts.transport.cookie && !app.hasRequestDecorator('cookies')) await app.register(fastifyCookie)
  const tokenTransport = transport(app, opts, tokens)

  app.decorateRequest('auth', null)
  app.decorateRequest(kAuthError, null)
  app.decorateRequest(kByCookie, false)
  app.decorateRequest(kDpopScheme, false)
  app.decorateRequest(kForwarded, null)
  app.decorate(kDpopAlgs, dpop?.algs ?? null)

  const api: TokengateApi = {
    issue: async (user, meta) => await sessions.issue(user, meta),
    refresh: async (refreshToken, meta) => await sessions.refresh(refreshToken, meta),
    verify: async (accessToken) => await sessions.verify(accessToken),
    revokeSession: async (userId, sessionId) => await sessions.revokeSession(userId, sessionId),
    revokeAll: async (userId) => await sessions.revokeAll(userId),
    revokeEveryone: async () => { await sessions.revokeEveryone() },
    listSessions: async (userId) => await sessions.listSessions(userId),
    store,
    get feedUp () { return revocations.up },
    onSessionRevoked: (listener) => revocations.onRevoked(listener),
    onRevokedBefore: (listener) => revocations.onEpoch(listener)
  }
  app.decorate('tokengate', api)
  app.decorate(kBridge, {
    startCookieSession: async (request, reply, user, providerSessionId) => {
      const pair = await sessions.issue(user, requestMeta(request), undefined, providerSessionId)
      tokenTransport.setCookies(reply, pair, pair.refreshExpiresIn, pair.sessionId)
      return pair
    },
    revokeSession: async (userId, sessionId, reason) => await sessions.revokeSession(userId, sessionId, { reason }),
    revokeAll: async (userId, reason) => await sessions.revokeAll(userId, { reason }),
    keyFor: (label) => createHmac('sha256', tokens.secretMaterial).update(label).digest()
  })
  app.decorate('authenticate', authenticate as onRequestHookHandler)

  // Per-route policy: config: { auth: true | { roles } } adds one hook that runs after tokengate's own. A
  // policy that does not check out closes its route and makes app.ready() fail, naming the route (once:
  // not again for the HEAD route Fastify adds beside a GET).
  const badPolicies: string[] = []
  const reported = new Set<string>()
  // While tokengate declares its own routes: those naming a security scheme describe it to @fastify/swagger.
  let declaringOwn = false
  app.addHook('onRoute', (route) => {
    if (declaringOwn && route.schema?.security !== undefined) route.config = { ...route.config, swaggerTransform: describeSecuritySchemes } as typeof route.config
    if (route.config === undefined || !('auth' in route.config) || route.config.auth === undefined) return
    // The route's policy is held here: the late-policy hook below leaves it alone.
    route.config = { ...route.config, [kPolicyHeld]: true } as typeof route.config
    const checked = checkPolicy(route.config.auth)
    let guard
    if ('problem' in checked) {
      const key = `${route.url}\0${checked.problem}`
      if (!reported.has(key)) badPolicies.push(`route ${[route.method].flat().join(',')} ${route.url}: ${checked.problem}`)
      reported.add(key)
      guard = closedRoute(checked.problem)
    } else if (checked.policy !== null) {
      guard = routePolicy(checked.policy)
    } else {
      return
    }
    addRouteHook(route, 'onRequest', guard, 'first')
  })
  app.addHook('onReady', async () => {
    if (badPolicies.length > 0) throw new Error(`tokengate: invalid auth policy: ${badPolicies.join('; ')}`)
  })

  // Forward-authentication routes (config.tokengate = { forwarded }): the hook reads their mark by path.
  const forwardPaths: string[] = []
  app.addHook('onRoute', (route) => {
    const mark = (route.config as { tokengate?: unknown } | undefined)?.tokengate
    if (typeof mark === 'object' && mark !== null && !forwardPaths.includes(route.url)) forwardPaths.push(route.url)
  })
  app.addHook('onRequest', buildHook(opts, sessions, tokenTransport, dpop, forwardPaths))

  // A route declared before tokengate loaded (app.register(tokengate) not awaited) was never seen by the
  // onRoute hook above; its config.auth holds all the same, checked here at its first request (an invalid
  // one closes the route and is logged, naming it). One property read per request on other routes.
  const lateGuards = new WeakMap<object, ReturnType<typeof routePolicy> | null>()
  app.addHook('onRequest', function tokengateLatePolicy (request, reply, done) {
    // A plugin context made before tokengate loaded has requests without the `auth` decoration: null, as documented.
    if (request.auth === undefined) request.auth = null
    const config = request.routeOptions.config as (Record<PropertyKey, unknown> & { auth?: unknown, url?: string, method?: string }) | undefined
    if (config?.auth === undefined || config[kPolicyHeld] === true) { done(); return }
    let guard = lateGuards.get(config)
    if (guard === undefined) {
      const checked = checkPolicy(config.auth)
      if ('problem' in checked) {
        request.log.error(`tokengate: invalid auth policy: route ${[config.method].flat().join(',')} ${config.url}: ${checked.problem}`)
        guard = closedRoute(checked.problem)
      } else {
        guard = checked.policy === null ? null : routePolicy(checked.policy)
      }
      lateGuards.set(config, guard)
    }
    if (guard === null) done()
    else guard(request, reply, done)
  })

  declaringOwn = true
  if (opts.routes !== undefined) {
    registerRoutes(app, { ...opts, routes: opts.routes }, sessions, tokenTransport, dpop)
    const oauth = opts.routes.oauth
    if (oauth !== undefined && oauth !== false) {
      registerOAuth(app, { ...opts, routes: opts.routes }, sessions, oauth === true ? {} : oauth, dpop)
      // With asymmetric keys the metadata names a JWKS, served here (the gateway serves its own otherwise).
      const jwks = tokens.jwks
      if (jwks !== undefined) {
        app.get('/.well-known/jwks.json', { schema: { summary: 'The public keys access tokens are signed with (RFC 7517)', tags: ['oauth'] } }, async (_request, reply) => {
          reply.header('cache-control', 'public, max-age=300')
          return jwks
        })
      }
    }
  }
  declaringOwn = false
}

export default fp(tokengate, { fastify: '5.x', name: 'tokengate' })
export { tokengate }
export * from './errors.js'
export { accessTokenIssuedAt } from './tokens.js'
export { addRouteHook } from './route-hooks.js'
export { authOf, authPolicy, checkPolicy, policyError, requireAuth, requireRoles, routePolicy, type CheckedPolicy, type Policy, type RouteAuthConfig } from './guards.js'
export { corsHeaders } from './transport.js'
export { openapiSecuritySchemes, ErrorSchema, TokenPairSchema, SessionInfoSchema } from './routes.js'
export { thumbprint as jwkThumbprint, type DpopAlgorithm } from './dpop.js'
export { DurationSchema, KeySchema, OAuthSchema, OptionError, OptionsSchema, durationMs, type TokengateOptions, type VerifyCredentials, type OAuthOptions, type DpopOptions, type UserInfo, type RequestMeta, type AuditMeta, type AuditHook, type KeyConfig, type Duration } from './options.js'
export type { AuthInfo, SessionInfo, TokenPair, TokengateClaims } from './sessions.js'
export { MemoryStore, RedisStore, type SessionStore, type SessionRecord, type RedisClient, type RedisStoreOptions } from './store/index.js'
// For the gateway's own connections (the same options, and a Sentinel client kept connected through failovers).
export { ownClientOptions as redisClientOptions, keepConnected, closingClient } from './store/connections.js'
