// /login /refresh /logout /logout-all /sessions under routes.prefix, with TypeBox schemas.
import { Type, type TSchema } from '@sinclair/typebox'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { accessTokenHash, type Dpop, type Proof } from './dpop.js'
import { BadCredentialsError, BadRequestError, CsrfError, DpopInvalidError, RefreshInvalidError, SessionNotFoundError, type TokengateError } from './errors.js'
import { authenticate, challenge } from './guards.js'
import type { RouteMark } from './hook.js'
import type { ResolvedOptions, UserInfo, VerifyCredentials } from './options.js'
import type { Sessions, TokenPair } from './sessions.js'
import { noStore, REFRESH_COOKIE, REFRESH_HEADER, requestMeta, TRANSPORT_HEADER, type Transport } from './transport.js'

/** Fastify's error shape, as every failure of these routes is answered. */
export const ErrorSchema = Type.Object({
  statusCode: Type.Integer(),
  code: Type.String({ description: 'TOKENGATE_* or FST_* (see the README\'s error codes)' }),
  error: Type.String(),
  message: Type.String()
}, { description: 'Fastify\'s error shape' })

/** OpenAPI security schemes the routes name: spread into @fastify/swagger's components.securitySchemes. */
export const openapiSecuritySchemes = {
  bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'An access token (RFC 9068 at+jwt), with x-refresh-token for the refresh hook' },
  dpop: { type: 'http', scheme: 'dpop', description: 'A DPoP-bound access token with a DPoP proof header (RFC 9449)' },
  basic: { type: 'http', scheme: 'basic', description: 'An introspection client (routes.oauth.introspectionClients)' }
} as const

const authenticated: Array<Record<string, string[]>> = [{ bearer: [] }, { dpop: [] }]
const err = (description: string): ReturnType<typeof Type.Object> => Type.Object(ErrorSchema.properties, { description })
/** The failures every authenticated route can answer. */
const AUTH_FAILURES = {
  401: err('No valid access token (TOKENGATE_TOKEN_*), or one the refresh hook could not mend (TOKENGATE_REFRESH_*), or a DPoP failure (TOKENGATE_DPOP_*)'),
  403: err('TOKENGATE_CSRF: a cookie-authenticated unsafe request without a matching x-csrf-token'),
  503: err('TOKENGATE_STORE_UNAVAILABLE')
}

/** The login body when the app says nothing: any JSON object, as verifyCredentials reads it. */
export const DEFAULT_LOGIN_BODY = Type.Object({
  username: Type.Optional(Type.String()),
  password: Type.Optional(Type.String())
}, { additionalProperties: true, description: 'The credentials, as verifyCredentials reads them (any JSON object, at most 16 KB, 32 levels deep)' })

/** The login and refresh answer: with cookie transport the tokens are in the cookies only, never in the body. */
export const TokenPairSchema = Type.Object({
  accessToken: Type.Optional(Type.String({ description: 'Absent when the tokens are sent as cookies' })),
  refreshToken: Type.Optional(Type.String({ description: 'Absent when the tokens are sent as cookies' })),
  tokenType: Type.Union([Type.Literal('Bearer'), Type.Literal('DPoP')]),
  expiresIn: Type.Integer(),
  refreshExpiresIn: Type.Integer(),
  sessionId: Type.String()
})

export const SessionInfoSchema = Type.Object({
  id: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
  lastUsedAt: Type.String({ format: 'date-time' }),
  expiresAt: Type.String({ format: 'date-time' }),
  ip: Type.Union([Type.String(), Type.Null()]),
  userAgent: Type.Union([Type.String(), Type.Null()]),
  current: Type.Boolean()
})

const RefreshBody = Type.Union([
  Type.Object({ refreshToken: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })) }),
  Type.Null()
])

const mark = (m: RouteMark): { tokengate: RouteMark } => ({ tokengate: m })

/** Bodies of tokengate's routes are small: larger ones are refused (413) before they are parsed. */
export const BODY_LIMIT = 16 * 1024
/** JSON nested deeper than this is refused (400) before it reaches verifyCredentials. */
export const MAX_BODY_DEPTH = 32

/** Whether a parsed JSON value nests deeper than `limit` levels (iterative: no stack to overflow). */
export function deeperThan (value: unknown, limit: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]]
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!
    if (v === null || typeof v !== 'object') continue
    if (depth > limit) return true
    for (const child of Object.values(v)) if (child !== null && typeof child === 'object') stack.push([child, depth + 1])
  }
  return false
}

export function registerRoutes (
  app: FastifyInstance,
  opts: ResolvedOptions & { routes: { prefix: string, verifyCredentials?: VerifyCredentials, loginBody?: TSchema } },
  sessions: Sessions,
  transport: Transport,
  dpop?: Dpop
): void {
  const prefix = opts.routes.prefix
  const verifyCredentials = opts.routes.verifyCredentials

  // 401s from these routes carry WWW-Authenticate like those of `authenticate`.
  const challenged = <T>(handler: (request: FastifyRequest, reply: FastifyReply) => Promise<T>) =>
    async (request: FastifyRequest, reply: FastifyReply): Promise<T> => {
      try {
        return await handler(request, reply)
      } catch (err) {
        if (typeof (err as TokengateError).statusCode === 'number') challenge(reply, err as TokengateError)
        throw err
      }
    }

  /** The DPoP proof of a login or refresh (no access token: no ath), verified but not yet claimed; with dpop.required, one is needed. */
  function proofOf (request: FastifyRequest, reply: FastifyReply): Proof | null {
    if (dpop === undefined) return null
    const proof = dpop.verify(request, reply)
    if (proof === null && dpop.settings.required) throw new DpopInvalidError('a DPoP proof is required')
    return proof
  }

  /** The pair in the body, or (cookie transport) in the cookies and never in the body. Never cached. */
  function sendPair (reply: FastifyReply, pair: TokenPair, byCookie: boolean): Partial<TokenPair> {
    if (!byCookie) {
      noStore(reply)
      return pair
    }
    transport.setCookies(reply, pair, pair.refreshExpiresIn, pair.sessionId)
    return { tokenType: pair.tokenType, expiresIn: pair.expiresIn, refreshExpiresIn: pair.refreshExpiresIn, sessionId: pair.sessionId }
  }

  // With cookie transport alone a login answers by cookie; with both, when the client asks (x-tokengate-transport: cookie).
  const loginByCookie = (request: FastifyRequest): boolean =>
    opts.transport.cookie && (!opts.transport.header || request.headers[TRANSPORT_HEADER] === 'cookie')

  if (verifyCredentials !== undefined) {
    app.post(`${prefix}/login`, {
      config: mark('login'),
      bodyLimit: BODY_LIMIT,
      schema: {
        summary: 'Log in: a session, and its first token pair (a DPoP proof binds the session to its key); with a valid access token of a live session of the same user, that session re-authenticated (RFC 9470 step-up)',
        tags: ['auth'],
        body: opts.routes.loginBody ?? DEFAULT_LOGIN_BODY,
        response: {
          200: TokenPairSchema,
          400: err('A body that is not a JSON object (FST_ERR_VALIDATION), malformed JSON (FST_ERR_CTP_*), or nested deeper than 32 levels (TOKENGATE_BAD_REQUEST)'),
          401: err('TOKENGATE_BAD_CREDENTIALS, or a DPoP failure (TOKENGATE_DPOP_INVALID, TOKENGATE_DPOP_NONCE)'),
          413: err('FST_ERR_CTP_BODY_TOO_LARGE: over 16 KB'),
          429: err('TOKENGATE_RATE_LIMITED (the gateway\'s limits), with Retry-After'),
          503: err('TOKENGATE_STORE_UNAVAILABLE')
        }
      },
      preValidation: (request, _reply, done) => {
        done(deeperThan(request.body, MAX_BODY_DEPTH) ? new BadRequestError(`the body is nested deeper than ${MAX_BODY_DEPTH} levels`) : undefined)
      }
    }, challenged(async (request, reply) => {
      // The proof first: a login with an invalid proof is refused, never silently left unbound. Its jti is
      // claimed once the credentials checked out.
      const proof = proofOf(request, reply)
      const user = await sessions.userCallback('verifyCredentials', () => verifyCredentials(request.body, request))
      if (user === null || user === undefined) throw new BadCredentialsError()
      if (proof !== null) await dpop!.claim(proof)
      // A login made with a valid access token of a live session of the same user (the hook has checked it,
      // revocation included) re-authenticates that session; a bound one only with a proof by its key that
      // names the token. Anything else (another user, no such session, another key) starts a new session.
      const auth = request.auth
      const reauth = auth !== null && (auth.jkt === undefined || (proof !== null && proof.jkt === auth.jkt && proof.ath !== undefined && proof.ath === accessTokenHash(auth.token)))
        ? await sessions.reauthenticate(auth, user as UserInfo, requestMeta(request), proof?.jkt)
        : null
      const pair = reauth ?? await sessions.issue(user as UserInfo, requestMeta(request), proof?.jkt)
      return sendPair(reply, pair, loginByCookie(request))
    }))
  }

  app.post(`${prefix}/refresh`, {
    config: mark('refresh'),
    bodyLimit: BODY_LIMIT,
    schema: {
      summary: 'Refresh: a new pair for a refresh token (rotated), from the body, x-refresh-token or the tg_refresh cookie',
      tags: ['auth'],
      body: RefreshBody,
      response: {
        200: TokenPairSchema,
        400: err('FST_ERR_VALIDATION'),
        401: err('TOKENGATE_REFRESH_INVALID, _REFRESH_EXPIRED or _REFRESH_REUSED (the session is then revoked), or a DPoP failure'),
        403: err('TOKENGATE_CSRF (cookie transport)'),
        413: err('FST_ERR_CTP_BODY_TOO_LARGE: over 16 KB'),
        429: err('TOKENGATE_RATE_LIMITED (the gateway\'s limits), with Retry-After'),
        503: err('TOKENGATE_STORE_UNAVAILABLE')
      }
    }
  }, challenged(async (request, reply) => {
    // The body or x-refresh-token (header transport), else the cookie; answered the way it came.
    let token: string | undefined
    if (opts.transport.header) {
      const body = request.body as { refreshToken?: string } | null | undefined
      const header = request.headers[REFRESH_HEADER]
      token = body?.refreshToken ?? (typeof header === 'string' && header !== '' ? header : undefined)
    }
    const byCookie = token === undefined && opts.transport.cookie
    if (byCookie) token = request.cookies?.[REFRESH_COOKIE]
    if (token === undefined || token === '') throw new RefreshInvalidError()
    // The token (its MAC and expiry), then the CSRF token of its session, then the proof, its jti last.
    const parts = sessions.checkRefresh(token)
    if (sessions.revocations.knownRevoked(parts.sessionId)) throw new RefreshInvalidError()
    if (byCookie && !transport.csrfOk(request, parts.sessionId)) {
      transport.csrfRefused(request, reply, parts.sessionId)
      throw new CsrfError()
    }
    const proof = proofOf(request, reply)
    if (proof !== null) await dpop!.claim(proof)
    const pair = await sessions.refresh(token, requestMeta(request), proof?.jkt, parts)
    return sendPair(reply, pair, byCookie)
  }))

  const noContent = (description: string): ReturnType<typeof Type.Null> => Type.Null({ description })

  app.post(`${prefix}/logout`, {
    onRequest: authenticate,
    schema: { summary: 'Log out: this session is revoked (its access tokens die at once, on every instance)', tags: ['auth'], security: authenticated, response: { 204: noContent('Logged out'), ...AUTH_FAILURES } }
  }, challenged(async (request, reply) => {
    await sessions.logout(request.auth!, { ...requestMeta(request), reason: 'logout' })
    if (opts.transport.cookie) transport.clear(reply)
    return await reply.code(204).send()
  }))

  app.post(`${prefix}/logout-all`, {
    onRequest: authenticate,
    schema: { summary: 'Log out everywhere: every session of the user is revoked', tags: ['auth'], security: authenticated, response: { 204: noContent('Every session revoked'), ...AUTH_FAILURES } }
  }, challenged(async (request, reply) => {
    await sessions.revokeAll(request.auth!.userId, { ...requestMeta(request), reason: 'logout-all' })
    if (opts.transport.cookie) transport.clear(reply)
    return await reply.code(204).send()
  }))

  app.get(`${prefix}/sessions`, {
    onRequest: authenticate,
    schema: { summary: 'The user\'s live sessions, newest first (current: true on this one)', tags: ['auth'], security: authenticated, response: { 200: Type.Array(SessionInfoSchema), 401: AUTH_FAILURES[401], 503: AUTH_FAILURES[503] } }
  }, challenged(async (request) => {
    return await sessions.listSessions(request.auth!.userId, request.auth!.sessionId)
  }))

  app.delete(`${prefix}/sessions/:id`, {
    onRequest: authenticate,
    schema: {
      summary: 'Revoke one session of the user',
      tags: ['auth'],
      security: authenticated,
      params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 128 }) }),
      response: { 204: noContent('Revoked'), 400: err('FST_ERR_VALIDATION'), 404: err('TOKENGATE_SESSION_NOT_FOUND'), ...AUTH_FAILURES }
    }
  }, challenged(async (request, reply) => {
    const { id } = request.params as { id: string }
    const auth = request.auth!
    const found = await sessions.revokeSession(auth.userId, id, { ...requestMeta(request), reason: 'delete' })
    if (!found) throw new SessionNotFoundError()
    if (id === auth.sessionId && opts.transport.cookie) transport.clear(reply)
    return await reply.code(204).send()
  }))
}
