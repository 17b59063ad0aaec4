// tokengate: JWT access tokens, rotating refresh sessions in Redis, the refresh hook and logout.
// fp(): options → tokens, store, revocation feed → hook, routes, decorators.
import fp from 'fastify-plugin'
import fastifyCookie from '@fastify/cookie'
import type { FastifyInstance, onRequestHookHandler } from 'fastify'
import { Dpop } from './dpop.js'
import { authenticate, checkPolicy, closedRoute, kAuthError, kDpopAlgs, kDpopScheme, routePolicy, type RouteAuthConfig } from './guards.js'
import { buildHook } from './hook.js'
import { resolveOptions, type RequestMeta, type TokengateOptions, type UserInfo } from './options.js'
import { Revocations } from './revocation.js'
import { registerOAuth } from './oauth.js'
import { registerRoutes } from './routes.js'
import { Sessions, type AuthInfo, type SessionInfo, type TokenPair } from './sessions.js'
import { MemoryStore, RedisStore, type SessionStore } from './store/index.js'
import { Tokens } from './tokens.js'
import { kByCookie, transport } from './transport.js'

export interface TokengateApi {
  /** Starts a session for a user and returns its first token pair. */
  issue: (user: UserInfo, meta?: RequestMeta) => Promise<TokenPair>
  /** Exchanges a refresh token for a new pair (rotating it unless rotateRefreshTokens is false). */
  refresh: (refreshToken: string, meta?: RequestMeta) => Promise<TokenPair>
  /** Verifies an access token, revocation included; rejects with a tokengate error. */
  verify: (accessToken: string) => Promise<AuthInfo>
  /** Revokes one session of a user; false when there was no such live session. */
  revokeSession: (userId: string, sessionId: string) => Promise<boolean>
  /** Revokes every session of a user; resolves to how many there were. */
  revokeAll: (userId: string) => Promise<number>
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
     * Per-route auth: true or { roles: [at least one] }: 401 unless authenticated, 403 without one of the
     * roles. Anything else makes app.ready() fail, naming the route.
     */
    auth?: boolean | RouteAuthConfig
  }
}

async function tokengate (app: FastifyInstance, options: TokengateOptions): Promise<void> {
  const opts = resolveOptions(options)

  let store: SessionStore
  let ownsStore = true
  if (opts.store !== undefined) {
    store = opts.store
    ownsStore = false
  } else if (opts.redis !== undefined) {
    const redisStore = new RedisStore({ redis: opts.redis, keyPrefix: opts.keyPrefix, timeoutMs: opts.storeTimeoutMs })
    if (!await redisStore.ready()) app.log.warn('tokengate: Redis is not reachable yet; session routes answer 503 until it is')
    store = redisStore
  } else {
    app.log.warn('tokengate: no redis or store option: using the in-memory store, which serves this one process only')
    store = new MemoryStore()
  }

  const tokens = await Tokens.create(app, opts)
  const dpop = opts.dpop === undefined
    ? undefined
    : new Dpop({ ...opts.dpop, clockToleranceMs: opts.clockToleranceMs }, tokens.secretMaterial, async (id, ttl) => await sessions.claimProof(id, ttl))
  const revocations = new Revocations(store, opts.accessTtlMs + opts.clockToleranceMs, app.log)
  await revocations.start()
  const sessions = new Sessions(opts, tokens, store, revocations, app.log, !ownsStore)
  app.addHook('onClose', async () => {
    revocations.close()
    dpop?.close()
    if (ownsStore) await store.close()
  })

  if (opts.transport.cookie && !app.hasRequestDecorator('cookies')) await app.register(fastifyCookie)
  const tokenTransport = transport(app, opts)

  app.decorateRequest('auth', null)
  app.decorateRequest(kAuthError, null)
  app.decorateRequest(kByCookie, false)
  app.decorateRequest(kDpopScheme, false)
  app.decorate(kDpopAlgs, dpop?.algs ?? null)

  const api: TokengateApi = {
    issue: async (user, meta) => await sessions.issue(user, meta),
    refresh: async (refreshToken, meta) => await sessions.refresh(refreshToken, meta),
    verify: async (accessToken) => await sessions.verify(accessToken),
    revokeSession: async (userId, sessionId) => await sessions.revokeSession(userId, sessionId),
    revokeAll: async (userId) => await sessions.revokeAll(userId),
    listSessions: async (userId) => await sessions.listSessions(userId),
    store,
    get feedUp () { return revocations.up },
    onSessionRevoked: (listener) => revocations.onRevoked(listener)
  }
  app.decorate('tokengate', api)
  app.decorate('authenticate', authenticate as onRequestHookHandler)

  // Per-route policy: config: { auth: true | { roles } } adds one hook that runs after tokengate's own. A
  // policy that does not check out closes its route and makes app.ready() fail, naming the route.
  const badPolicies: string[] = []
  app.addHook('onRoute', (route) => {
    if (route.config === undefined || !('auth' in route.config) || route.config.auth === undefined) return
    const checked = checkPolicy(route.config.auth)
    let guard
    if ('problem' in checked) {
      badPolicies.push(`route ${[route.method].flat().join(',')} ${route.url}: ${checked.problem}`)
      guard = closedRoute(checked.problem)
    } else if (checked.policy !== null) {
      guard = routePolicy(checked.policy)
    } else {
      return
    }
    const existing = route.onRequest === undefined ? [] : Array.isArray(route.onRequest) ? route.onRequest : [route.onRequest]
    route.onRequest = [guard, ...existing] as never
  })
  app.addHook('onReady', async () => {
    if (badPolicies.length > 0) throw new Error(`tokengate: invalid auth policy: ${badPolicies.join('; ')}`)
  })

  app.addHook('onRequest', buildHook(opts, sessions, tokenTransport, dpop))

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
}

export default fp(tokengate, { fastify: '5.x', name: 'tokengate' })
export { tokengate }
export * from './errors.js'
export { authOf, requireRoles, type RouteAuthConfig } from './guards.js'
export { corsHeaders } from './transport.js'
export { openapiSecuritySchemes, ErrorSchema, TokenPairSchema, SessionInfoSchema } from './routes.js'
export type { OAuthOptions } from './oauth.js'
export { thumbprint as jwkThumbprint, type DpopAlgorithm } from './dpop.js'
export { KeySchema, OAuthSchema, OptionError, OptionsSchema, durationMs, type TokengateOptions, type DpopOptions, type UserInfo, type RequestMeta, type AuditMeta, type AuditHook, type KeyConfig, type Duration } from './options.js'
export type { AuthInfo, SessionInfo, TokenPair, TokengateClaims } from './sessions.js'
export { MemoryStore, RedisStore, type SessionStore, type SessionRecord, type RedisClient, type RedisStoreOptions } from './store/index.js'
export { ownClientOptions as redisClientOptions } from './store/redis.js'
