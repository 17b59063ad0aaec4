// buildGateway(config): the tokengate plugin + login provider + rate limits + upstream routes +
// health, readiness, metrics and JWKS, as one Fastify instance.
import { createPublicKey, randomUUID } from 'node:crypto'
import cors from '@fastify/cors'
import swagger from '@fastify/swagger'
import { Type } from '@sinclair/typebox'
import pino from 'pino'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions, type HookHandlerDoneFunction } from 'fastify'
import tokengate, { BadRequestError, RateLimitedError, addRouteHook, corsHeaders, durationMs, openapiSecuritySchemes, type AuditMeta, type TokengateOptions } from '../plugin/index.js'
import { parseConfig, type GatewayConfig } from './config.js'
import { memoryFailedLogins, redisFailedLogins, requestLimiter, type FailedLogins, type RequestLimiter } from './limits.js'
import { upstreamLogin, usersFileLogin, type LoginProvider } from './login.js'
import { createMetrics, instrument, serveMetrics } from './metrics.js'
import { OIDC_CALLBACK, OIDC_LOGIN, registerOidc } from './oidc.js'
import { closeRedis, createRedis } from './redis.js'
import { version as packageVersion } from './version.js'
import { socketRegistry } from './sockets.js'
import { registerUpstream } from './upstreams.js'
import { routeAssertions } from './assertion.js'
import { registerForwardAuth } from './forward-auth.js'

export { ConfigError, loadConfigFile, parseConfig, type GatewayConfig, type RouteConfig } from './config.js'
export { hashPassword, verifyPassword } from './login.js'

export interface BuildOptions {
  /** Directory that relative paths in the config are resolved against (default: the working directory). */
  baseDir?: string
  /** Environment for ${VAR} (default: process.env). */
  env?: NodeJS.ProcessEnv
  /** Fastify's logger option; default: pino at config.logLevel with tokens, cookies and secrets redacted. */
  logger?: FastifyServerOptions['logger']
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/
const AUTH_PREFIX = '/auth'
/** The routes the per-IP limit counts: logins (single sign-on's two steps too) and every kind of refresh. */
const LIMITED = new Set([`${AUTH_PREFIX}/login`, `${AUTH_PREFIX}/refresh`, `${AUTH_PREFIX}/token`, OIDC_LOGIN, OIDC_CALLBACK])

/** Everything pino must never print. */
export const REDACT = [
  'req.headers.authorization', 'req.headers.cookie', 'req.headers["x-refresh-token"]', 'req.headers["x-csrf-token"]',
  'res.headers["set-cookie"]', 'res.headers["x-access-token"]', 'res.headers["x-refresh-token"]',
  'password', 'body.password', 'secret', 'refreshToken', 'accessToken'
]

function rateLimited (retryAfterMs: number): Error {
  const err = new RateLimitedError() as Error & { headers?: Record<string, string> }
  err.headers = { 'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) }
  return err
}

/**
 * Fastify's own per-request log lines off ("incoming request", "request completed", the default error
 * handler's and the 404's): the gateway writes one access-log line per request itself, and logs 5xx errors
 * in its error handler. Through a LogController where Fastify has one (5.x ≥ 5.12 deprecates the option).
 */
function quietLogs (): Pick<FastifyServerOptions, 'disableRequestLogging' | 'logController'> {
  const Base = (Fastify as unknown as { LogController?: new () => NonNullable<FastifyServerOptions['logController']> }).LogController
  if (Base === undefined) return { disableRequestLogging: true }
  class Quiet extends Base {
    override incomingRequest (): void {}
    override requestCompleted (): void {}
    override defaultErrorLog (): void {}
    override routeNotFound (): void {}
  }
  return { logController: new Quiet() }
}

/**
 * The config's trustProxy for Fastify. A hop count n trusts the n proxies nearest to the gateway: the client's
 * address is the one the nth proxy appended to X-Forwarded-For, whatever the client wrote in front of it.
 * (Fastify ≥ 5.12 ignores a number, so the count is given to it as the trust function older versions built.)
 */
function trustProxyOption (tp: GatewayConfig['trustProxy']): FastifyServerOptions['trustProxy'] {
  if (typeof tp !== 'number') return tp
  return tp === 0 ? false : (_address: string, hop: number) => hop < tp
}

export function buildGateway (input: unknown, options: BuildOptions = {}): FastifyInstance {
  const config: GatewayConfig = parseConfig(input, { baseDir: options.baseDir, env: options.env })

  const app = Fastify({
    // Lines go to stdout with a synchronous write each: pino's default asynchronous writes hand every
    // line to libuv's thread pool, which at proxy rates costs several times the line itself.
    logger: options.logger ?? { level: config.logLevel, redact: { paths: REDACT, censor: '[redacted]' }, stream: pino.destination({ dest: 1, sync: true }) },
    trustProxy: trustProxyOption(config.trustProxy),
    // One access-log line per request is written where it is counted (metrics.ts), as a proxy does.
    ...quietLogs(),
    requestIdHeader: false,
    // A client's own request id is kept when it is well-formed; any other gets a new one.
    genReqId: (req) => {
      const id = req.headers['x-request-id']
      return typeof id === 'string' && REQUEST_ID.test(id) ? id : randomUUID()
    }
  })

  // CORS first: a preflight is answered before any auth hook, and every answer (a 401 too) carries the
  // CORS headers a browser needs to read it.
  if (config.cors !== undefined) {
    app.register(cors, {
      origin: config.cors.origins,
      credentials: true,
      methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
      allowedHeaders: corsHeaders.allowedHeaders,
      exposedHeaders: corsHeaders.exposedHeaders,
      maxAge: 600
    })
  }
  // The OpenAPI document (GET /openapi.json): registered before the routes it describes.
  app.register(swagger, {
    openapi: {
      info: { title: 'tokengate gateway', version: packageVersion() },
      components: { securitySchemes: openapiSecuritySchemes }
    }
  })

  const metrics = createMetrics()
  const { recorder } = instrument(app, metrics)
  serveMetrics(app, metrics, config.metrics)
  // Kept on the public port by default (compatibility), but said: the counters tell an outsider what the gateway sees.
  if (config.metrics !== false && config.metrics.listen === undefined && !/^(127\.|::1$|localhost$)/.test(config.listen.host)) {
    app.log.warn(`gateway: GET /metrics is served on the public port (${config.listen.host}); set "metrics": { "listen": { "port": … } } to serve it apart, or false`)
  }
  // The request id goes back on every response: proxied answers get it in the proxy's response-header
  // rewrite and errors in onError, so only the gateway's own routes need a hook for it (hooks cost).
  const echoRequestId = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    reply.header('x-request-id', request.id)
    done()
  }
  app.addHook('onRoute', (route) => {
    if ((route.config as { proxied?: unknown } | undefined)?.proxied !== undefined) return
    addRouteHook(route, 'onRequest', echoRequestId, 'first')
  })
  app.addHook('onError', (request, reply, _error, done) => {
    reply.header('x-request-id', request.id)
    done()
  })

  // Every error body has a code: an error without one (the proxy's 400 for a path that escapes its
  // prefix) is a TOKENGATE_BAD_REQUEST. Fastify's own error log lines are off (see quietLogs): a 5xx is
  // logged here, with its stack; a 4xx is in the access log only.
  app.setErrorHandler((error: Error & { code?: string, statusCode?: number }, request, reply) => {
    const err = error.code === undefined && error.statusCode === 400 ? new BadRequestError(error.message) : error
    if ((err.statusCode ?? 500) >= 500) request.log.error({ err }, err.message)
    reply.send(err)
  })

  const redis = config.redis !== undefined ? createRedis(config.redis, config.tokens.storeTimeoutMs) : undefined
  const keyPrefix = config.tokens.keyPrefix ?? 'tg'

  // A password login (POST /auth/login) with an identity service or a users file; none with single sign-on alone.
  const provider: LoginProvider | undefined = config.login.upstream !== undefined
    ? upstreamLogin(config.login.upstream, durationMs(config.login.timeout, 'login.timeout'))
    : config.login.usersFile !== undefined ? usersFileLogin(config.login.usersFile) : undefined
  const failed = config.rateLimit.failedLogins
  const failedWindowMs = durationMs(failed.window, 'rateLimit.failedLogins.window')
  const failedLogins: FailedLogins = redis !== undefined
    ? redisFailedLogins(redis, keyPrefix, failed.max, failedWindowMs)
    : memoryFailedLogins(failed.max, failedWindowMs)
  const perUser = config.rateLimit.failedLoginsPerUser
  const perUserWindowMs = durationMs(perUser.window, 'rateLimit.failedLoginsPerUser.window')
  const failedPerUser: FailedLogins = redis !== undefined
    ? redisFailedLogins(redis, keyPrefix, perUser.max, perUserWindowMs, 'user')
    : memoryFailedLogins(perUser.max, perUserWindowMs)

  app.addHook('onClose', async () => {
    await provider?.close()
    if (redis !== undefined) await closeRedis(redis)
  })

  // Logins and refreshes per client IP (one counter for both): decided in this process (no round trip on a
  // refresh), shared through Redis when there is one (see requestLimiter).
  const perIp = config.rateLimit.requests
  const perIpLimiter: RequestLimiter = requestLimiter(redis, keyPrefix, perIp.max, durationMs(perIp.window, 'rateLimit.requests.window'))
  app.addHook('onClose', async () => { perIpLimiter.close() })
  const limitPerIp = (request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    const wait = perIpLimiter.hit(request.ip)
    done(wait > 0 ? rateLimited(wait) : undefined)
  }
  app.addHook('onRoute', (route) => {
    if (LIMITED.has(route.url ?? '')) addRouteHook(route, 'onRequest', limitPerIp, 'first')
  })

  const tokenOptions = {
    ...config.tokens,
    ...(redis !== undefined ? { redis } : {}),
    routes: {
      prefix: AUTH_PREFIX,
      // With a users file the login body is known: { username, password } (400 otherwise, before scrypt runs).
      ...(config.login.usersFile !== undefined
        ? { loginBody: Type.Object({ username: Type.String({ minLength: 1, maxLength: 256 }), password: Type.String({ minLength: 1, maxLength: 1024 }) }, { additionalProperties: true }) }
        : {}),
      ...(config.oauth !== undefined ? { oauth: config.oauth } : {}),
      verifyCredentials: async (body: unknown, request: FastifyRequest) => {
        const b = body as { username?: unknown, email?: unknown }
        const who = typeof b.username === 'string' ? b.username : typeof b.email === 'string' ? b.email : ''
        const key = `${request.ip}\n${who}`
        // Per IP + username, and per username from any IP (so rotating addresses buys no more guesses at one
        // account; a body without a username or email is counted per IP only).
        const account = who !== ''
        const waits = await Promise.all([failedLogins.blockedFor(key).catch(() => 0), account ? failedPerUser.blockedFor(who).catch(() => 0) : 0])
        const wait = Math.max(...waits)
        if (wait > 0) throw rateLimited(wait)
        const user = await provider!.verify(body, String(request.id))
        metrics.logins.inc({ result: user === null ? 'failure' : 'success' })
        if (user === null) await Promise.all([failedLogins.fail(key).catch(() => {}), account ? failedPerUser.fail(who).catch(() => {}) : undefined])
        return user
      }
    },
    // Every refresh counts against the per-IP limit: the refresh hook's on any route as POST /auth/refresh's
    // (those routes are counted by URL above). Past the limit the hook refreshes nothing and keeps the 429.
    beforeRefresh: (request: FastifyRequest) => {
      const wait = perIpLimiter.hit(request.ip)
      if (wait > 0) throw rateLimited(wait)
    },
    onRefresh: () => { metrics.refreshes.inc({ result: 'success' }) },
    onRevoke: (_userId: string, _sessionId: string, meta: AuditMeta) => { metrics.revocations.inc({ reason: meta.reason ?? 'api' }) },
    onReuseDetected: () => { metrics.reuseDetections.inc() }
  }
  // Single sign-on alone: no POST /auth/login.
  if (provider === undefined) delete (tokenOptions.routes as { verifyCredentials?: unknown }).verifyCredentials
  app.register(tokengate, tokenOptions as TokengateOptions)

  if (config.login.oidc !== undefined) {
    registerOidc(app, {
      config: config.login.oidc,
      redis,
      keyPrefix,
      timeoutMs: durationMs(config.login.timeout, 'login.timeout'),
      sessionLifetimeMs: durationMs(config.tokens.maxSessionAge, 'tokens.maxSessionAge') + durationMs(config.tokens.accessTokenTtl, 'tokens.accessTokenTtl'),
      onLogin: (result) => { metrics.logins.inc({ result }) }
    })
  }

  // The gateway's own routes, in a scope registered after the OpenAPI plugin, so the document has them.
  app.register(async (scope) => {
    const Ready = Type.Object({ status: Type.String(), redis: Type.String() })
    scope.get('/healthz', { logLevel: 'warn', schema: { summary: 'The process is alive', tags: ['ops'], response: { 200: Type.Object({ status: Type.String() }) } } }, async () => ({ status: 'ok' }))
    scope.get('/readyz', {
      logLevel: 'warn',
      schema: { summary: 'Ready to serve: 503 while Redis is unreachable', tags: ['ops'], response: { 200: Ready, 503: Ready } }
    }, async (_request, reply) => {
      const ok = redis === undefined || await app.tokengate.store.ping()
      reply.code(ok ? 200 : 503)
      return { status: ok ? 'ready' : 'unavailable', redis: redis === undefined ? 'none' : ok ? 'up' : 'down' }
    })
    scope.get('/openapi.json', { logLevel: 'warn', schema: { hide: true } }, async () => app.swagger())
  })

  // (With oauth on, the plugin serves the JWKS its metadata names.)
  if (config.tokens.keys !== undefined && (config.oauth === undefined || config.oauth === false)) {
    const jwks = {
      keys: config.tokens.keys.map(k => ({
        ...createPublicKey(k.publicKey!).export({ format: 'jwk' }),
        kid: k.kid,
        alg: k.algorithm,
        use: 'sig'
      }))
    }
    app.get('/.well-known/jwks.json', async (_request, reply) => {
      reply.header('cache-control', 'public, max-age=300')
      return jwks
    })
  }

  const sockets = socketRegistry(app)
  const asserts = routeAssertions(config)
  for (const route of config.routes) {
    if (route.upstream !== undefined) app.register(async (scope) => { await registerUpstream(scope, route, recorder(`${route.prefix}/*`), sockets, asserts.get(route)) })
  }
  if (config.forwardAuth !== undefined) registerForwardAuth(app, config.forwardAuth, config.routes, asserts)

  return app
}

export default buildGateway
