// /login /refresh /logout /logout-all /sessions under routes.prefix, with TypeBox schemas.
import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { BadCredentialsError, BadRequestError, CsrfError, RefreshInvalidError, SessionNotFoundError, type TokengateError } from './errors.js'
import { authenticate, challenge, kAuthError } from './guards.js'
import type { RouteMark } from './hook.js'
import type { ResolvedOptions, UserInfo, VerifyCredentials } from './options.js'
import type { Sessions, TokenPair } from './sessions.js'
import { newId } from './tokens.js'
import { kByCookie, REFRESH_COOKIE, REFRESH_HEADER, requestMeta, type Transport } from './transport.js'

export const TokenPairSchema = Type.Object({
  accessToken: Type.String(),
  refreshToken: Type.String(),
  tokenType: Type.Literal('Bearer'),
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
  opts: ResolvedOptions & { routes: { prefix: string, verifyCredentials?: VerifyCredentials } },
  sessions: Sessions,
  transport: Transport
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

  function sendPair (request: FastifyRequest, reply: FastifyReply, pair: TokenPair, csrf: string | undefined): TokenPair {
    reply.header('cache-control', 'no-store')
    if (opts.transport.cookie && (csrf !== undefined || request[kByCookie])) transport.setCookies(request, reply, pair, pair.refreshExpiresIn, csrf)
    return pair
  }

  if (verifyCredentials !== undefined) {
    app.post(`${prefix}/login`, {
      config: mark('login'),
      bodyLimit: BODY_LIMIT,
      schema: { body: Type.Object({}, { additionalProperties: true }), response: { 200: TokenPairSchema } },
      preValidation: (request, _reply, done) => {
        done(deeperThan(request.body, MAX_BODY_DEPTH) ? new BadRequestError(`the body is nested deeper than ${MAX_BODY_DEPTH} levels`) : undefined)
      }
    }, challenged(async (request, reply) => {
      const user = await sessions.userCallback('verifyCredentials', () => verifyCredentials(request.body, request))
      if (user === null || user === undefined) throw new BadCredentialsError()
      const pair = await sessions.issue(user as UserInfo, requestMeta(request))
      return sendPair(request, reply, pair, opts.transport.cookie ? newId() : undefined)
    }))
  }

  app.post(`${prefix}/refresh`, {
    config: mark('refresh'),
    bodyLimit: BODY_LIMIT,
    schema: { body: RefreshBody, response: { 200: TokenPairSchema } }
  }, challenged(async (request, reply) => {
    const kept = request[kAuthError]
    if (kept instanceof CsrfError) throw kept
    const body = request.body as { refreshToken?: string } | null | undefined
    const header = request.headers[REFRESH_HEADER]
    const token = body?.refreshToken ??
      (typeof header === 'string' && header !== '' ? header : undefined) ??
      (opts.transport.cookie ? request.cookies?.[REFRESH_COOKIE] : undefined)
    if (token === undefined || token === '') throw new RefreshInvalidError()
    const pair = await sessions.refresh(token, requestMeta(request))
    return sendPair(request, reply, pair, undefined)
  }))

  app.post(`${prefix}/logout`, { onRequest: authenticate }, challenged(async (request, reply) => {
    await sessions.logout(request.auth!, { ...requestMeta(request), reason: 'logout' })
    if (opts.transport.cookie) transport.clear(reply)
    return await reply.code(204).send()
  }))

  app.post(`${prefix}/logout-all`, { onRequest: authenticate }, challenged(async (request, reply) => {
    await sessions.revokeAll(request.auth!.userId, { ...requestMeta(request), reason: 'logout-all' })
    if (opts.transport.cookie) transport.clear(reply)
    return await reply.code(204).send()
  }))

  app.get(`${prefix}/sessions`, {
    onRequest: authenticate,
    schema: { response: { 200: Type.Array(SessionInfoSchema) } }
  }, challenged(async (request) => {
    return await sessions.listSessions(request.auth!.userId, request.auth!.sessionId)
  }))

  app.delete(`${prefix}/sessions/:id`, {
    onRequest: authenticate,
    schema: { params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 128 }) }) }
  }, challenged(async (request, reply) => {
    const { id } = request.params as { id: string }
    const auth = request.auth!
    const found = await sessions.revokeSession(auth.userId, id, { ...requestMeta(request), reason: 'delete' })
    if (!found) throw new SessionNotFoundError()
    if (id === auth.sessionId && opts.transport.cookie) transport.clear(reply)
    return await reply.code(204).send()
  }))
}
