// OAuth 2.0 endpoints (opt-in: routes.oauth), so standard clients and resource servers can speak to
// tokengate in OAuth's words: the token endpoint for the refresh grant (RFC 6749 §6), revocation (RFC 7009),
// introspection (RFC 7662) and authorization server metadata (RFC 8414). Login stays POST /login (the
// password grant is not offered, RFC 9700 §2.4). Failures take OAuth's error shape.
import { createHash, timingSafeEqual } from 'node:crypto'
import formbody from '@fastify/formbody'
import { Type } from '@sinclair/typebox'
import type { FastifyError, FastifyInstance, FastifyRequest } from 'fastify'
import type { Dpop, Proof } from './dpop.js'
import { DpopInvalidError, type TokengateError } from './errors.js'
import type { RouteMark } from './hook.js'
import type { OAuthOptions, ResolvedOptions } from './options.js'
import type { Sessions } from './sessions.js'
import { hashRefreshId } from './tokens.js'
import { noStore, requestMeta } from './transport.js'

const OAuthError = Type.Object({ error: Type.String(), error_description: Type.Optional(Type.String()) })

/** tokengate's errors (and Fastify's) in OAuth's words, per endpoint family. */
function oauthError (err: FastifyError | TokengateError): { status: number, error: string } {
  const code = err.code
  if (code === 'FST_ERR_VALIDATION' || code?.startsWith('FST_ERR_CTP_') === true) return { status: err.statusCode === 413 ? 413 : 400, error: 'invalid_request' }
  if (code === 'TOKENGATE_REFRESH_INVALID' || code === 'TOKENGATE_REFRESH_EXPIRED' || code === 'TOKENGATE_REFRESH_REUSED') return { status: 400, error: 'invalid_grant' }
  if (code === 'TOKENGATE_DPOP_INVALID') return { status: 400, error: 'invalid_dpop_proof' }
  if (code === 'TOKENGATE_DPOP_NONCE') return { status: 400, error: 'use_dpop_nonce' }
  if (code === 'TOKENGATE_RATE_LIMITED' || code === 'TOKENGATE_STORE_UNAVAILABLE') return { status: err.statusCode ?? 503, error: 'temporarily_unavailable' }
  if (code === 'TOKENGATE_BAD_REQUEST') return { status: 400, error: 'invalid_request' }
  return { status: 500, error: 'server_error' }
}

class OAuthRequestError extends Error {
  readonly statusCode = 400
  constructor (readonly oauthCode: string, message: string) {
    super(message)
    this.name = 'OAuthRequestError'
  }
}

const mark = (m: RouteMark): { tokengate: RouteMark } => ({ tokengate: m })

/** SHA-256 of a client id or secret: 32 bytes whatever its length, for constant-time comparisons. */
const digest = (s: string): Buffer => createHash('sha256').update(s).digest()

/** HTTP Basic client credentials (RFC 6749 §2.3.1: each part form-urlencoded), or null. */
function basicCredentials (request: FastifyRequest): { id: string, secret: string } | null {
  const h = request.headers.authorization
  if (typeof h !== 'string' || h.slice(0, 6).toLowerCase() !== 'basic ') return null
  const decoded = Buffer.from(h.slice(6).trim(), 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 0) return null
  try {
    return { id: decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, ' ')), secret: decodeURIComponent(decoded.slice(colon + 1).replace(/\+/g, ' ')) }
  } catch {
    return null
  }
}

export function registerOAuth (app: FastifyInstance, opts: ResolvedOptions & { routes: { prefix: string } }, sessions: Sessions, oauth: OAuthOptions, dpop?: Dpop): void {
  const prefix = opts.routes.prefix
  const clients = oauth.introspectionClients ?? []
  const tokens = sessions.tokens

  // The issuer identifier and the base of the endpoints: the `issuer` option (required with routes.oauth, an
  // http(s) URL), never the request's Host header, so the metadata is the same for everyone and may be cached.
  const issuer = opts.issuer!
  const at = issuer.replace(/\/$/, '') + prefix
  const metadata = Object.freeze({
    issuer,
    token_endpoint: `${at}/token`,
    revocation_endpoint: `${at}/revoke`,
    introspection_endpoint: `${at}/introspect`,
    grant_types_supported: ['refresh_token'],
    token_endpoint_auth_methods_supported: ['none'],
    revocation_endpoint_auth_methods_supported: ['none'],
    introspection_endpoint_auth_methods_supported: ['client_secret_basic'],
    ...(dpop !== undefined ? { dpop_signing_alg_values_supported: dpop.settings.algorithms } : {}),
    ...(tokens.jwks !== undefined ? { jwks_uri: `${issuer.replace(/\/$/, '')}/.well-known/jwks.json` } : {})
  })
  // Introspection clients, hashed once: each request compares its credentials' hashes with every client's.
  const clientDigests = clients.map(c => ({ id: digest(c.id), secret: digest(c.secret) }))

  app.get('/.well-known/oauth-authorization-server', {
    schema: {
      summary: 'OAuth 2.0 authorization server metadata (RFC 8414)',
      tags: ['oauth'],
      response: { 200: Type.Object({ issuer: Type.String() }, { additionalProperties: true }) }
    }
  }, async (_request, reply) => {
    reply.header('cache-control', 'public, max-age=300')
    return metadata
  })

  // The form-encoded endpoints live in a scope of their own: its body parser and OAuth error shape stay there.
  app.register(async (scope) => {
    await scope.register(formbody)
    scope.setErrorHandler((err: FastifyError, request, reply) => {
      const mapped = err instanceof OAuthRequestError ? { status: 400, error: err.oauthCode } : oauthError(err)
      if (mapped.status >= 500 && mapped.error === 'server_error') request.log.error({ err }, 'tokengate: OAuth endpoint failed')
      const headers = (err as { headers?: Record<string, string> }).headers
      if (headers !== undefined) reply.headers(headers)
      reply.code(mapped.status).header('cache-control', 'no-store')
      // Never the token, never a stack: the error's own message is ours or Fastify's.
      return { error: mapped.error, error_description: mapped.error === 'server_error' ? 'The request could not be processed' : err.message }
    })

    const form = (extra: Record<string, ReturnType<typeof Type.String>> = {}) => Type.Object({ client_id: Type.Optional(Type.String()), ...extra }, { additionalProperties: true })

    scope.post(`${prefix}/token`, {
      config: mark('refresh'),
      bodyLimit: 16 * 1024,
      schema: {
        summary: 'Token endpoint: the refresh token grant (RFC 6749 §6), DPoP-bound with a DPoP proof',
        tags: ['oauth'],
        consumes: ['application/x-www-form-urlencoded'],
        body: form({ grant_type: Type.String({ description: 'refresh_token' }), refresh_token: Type.String() }),
        response: {
          200: Type.Object({
            access_token: Type.String(),
            token_type: Type.Union([Type.Literal('Bearer'), Type.Literal('DPoP')]),
            expires_in: Type.Integer(),
            refresh_token: Type.String()
          }),
          400: OAuthError
        }
      },
      // Checked here rather than by the schema, to answer unsupported_grant_type before invalid_request.
      preValidation: (request, _reply, done) => {
        const b = request.body as Record<string, unknown> | null | undefined
        if (b === null || typeof b !== 'object' || typeof b.grant_type !== 'string') { done(new OAuthRequestError('invalid_request', 'grant_type is required')); return }
        if (b.grant_type !== 'refresh_token') { done(new OAuthRequestError('unsupported_grant_type', 'only the refresh_token grant is offered')); return }
        if (typeof b.refresh_token !== 'string' || b.refresh_token === '') { done(new OAuthRequestError('invalid_request', 'refresh_token is required')); return }
        done()
      }
    }, async (request, reply) => {
      const body = request.body as { refresh_token: string }
      // The token (its MAC and expiry) first, then the proof, its jti last.
      const parts = sessions.checkRefresh(body.refresh_token)
      let proof: Proof | null = null
      if (dpop !== undefined) {
        proof = dpop.verify(request, reply)
        if (proof === null && dpop.settings.required) throw new DpopInvalidError('a DPoP proof is required')
        if (proof !== null) await dpop.claim(proof)
      }
      const pair = await sessions.refresh(body.refresh_token, requestMeta(request), proof?.jkt, parts)
      noStore(reply)
      reply.header('pragma', 'no-cache')
      return { access_token: pair.accessToken, token_type: pair.tokenType, expires_in: pair.expiresIn, refresh_token: pair.refreshToken }
    })

    scope.post(`${prefix}/revoke`, {
      config: mark('refresh'),
      bodyLimit: 16 * 1024,
      schema: {
        summary: 'Token revocation (RFC 7009): an access or a refresh token; its session ends (its access tokens die at once)',
        tags: ['oauth'],
        consumes: ['application/x-www-form-urlencoded'],
        body: form({ token: Type.String({ minLength: 1 }), token_type_hint: Type.Optional(Type.String()) }),
        response: { 200: Type.Null({ description: 'Revoked, or not a token of a live session (RFC 7009 §2.2)' }), 400: OAuthError }
      }
    }, async (request, reply) => {
      const { token } = request.body as { token: string }
      const session = sessionOf(token)
      if (session !== null) await sessions.revokeSession(session.userId, session.sessionId, { ...requestMeta(request), reason: 'revoke' })
      reply.header('cache-control', 'no-store')
      return await reply.code(200).send()
    })

    scope.post(`${prefix}/introspect`, {
      config: mark('refresh'),
      bodyLimit: 16 * 1024,
      schema: {
        summary: 'Token introspection (RFC 7662), for resource servers with HTTP Basic client credentials',
        tags: ['oauth'],
        security: [{ basic: [] }],
        consumes: ['application/x-www-form-urlencoded'],
        body: form({ token: Type.String({ minLength: 1 }), token_type_hint: Type.Optional(Type.String()) }),
        response: {
          200: Type.Object({ active: Type.Boolean() }, { additionalProperties: true }),
          400: OAuthError,
          401: OAuthError
        }
      },
      onRequest: (request, reply, done) => {
        const c = basicCredentials(request)
        // Every configured client's id and secret are compared, in constant time, with no early exit: the
        // answer takes as long whichever id is given, and whether it exists.
        let ok = 0
        if (c !== null) {
          const id = digest(c.id)
          const secret = digest(c.secret)
          for (const known of clientDigests) ok |= Number(timingSafeEqual(id, known.id)) & Number(timingSafeEqual(secret, known.secret))
        }
        if (ok === 1) { done(); return }
        reply.code(401).header('www-authenticate', 'Basic realm="tokengate"').header('cache-control', 'no-store').send({ error: 'invalid_client', error_description: 'client authentication failed' })
      }
    }, async (request, reply) => {
      const { token } = request.body as { token: string }
      reply.header('cache-control', 'no-store')
      return await introspect(token)
    })
  })

  /**
   * The session a token revokes: an unexpired refresh token of ours (MAC checked), or an unexpired access token
   * signed by us. An expired one (an old token from a log) revokes nothing.
   */
  function sessionOf (token: string): { userId: string, sessionId: string } | null {
    const refresh = tokens.parseRefresh(token)
    if (refresh !== null) return refresh.expiresAt > Date.now() ? { userId: refresh.userId, sessionId: refresh.sessionId } : null
    const access = tokens.verifyAccess(token)
    return access.ok ? { userId: access.payload.sub, sessionId: access.payload.sid } : null
  }

  async function introspect (token: string): Promise<Record<string, unknown>> {
    const refresh = tokens.parseRefresh(token)
    if (refresh !== null) {
      const now = Date.now()
      if (refresh.expiresAt <= now || sessions.revocations.knownRevoked(refresh.sessionId)) return { active: false }
      const live = await sessions.record(refresh.userId, refresh.sessionId)
      // Only the session's current refresh token is active (a rotated one would be reuse).
      if (live === undefined || live.refreshHash !== hashRefreshId(refresh.refreshId)) return { active: false }
      return {
        active: true,
        token_type: 'refresh_token',
        sub: refresh.userId,
        sid: refresh.sessionId,
        exp: Math.floor(refresh.expiresAt / 1000),
        roles: live.roles,
        auth_time: Math.floor(live.authTime / 1000),
        ...(live.acr !== undefined ? { acr: live.acr } : {}),
        ...(live.amr !== undefined ? { amr: live.amr } : {}),
        ...(opts.issuer !== undefined ? { iss: opts.issuer } : {}),
        ...(live.jkt !== undefined ? { cnf: { jkt: live.jkt } } : {})
      }
    }
    const checked = await sessions.authorize(token)
    if (checked instanceof Error) return { active: false }
    const payload = tokens.inspectAccess(token)
    if (payload === null) return { active: false }
    return {
      active: true,
      token_type: checked.jkt !== undefined ? 'DPoP' : 'Bearer',
      sub: payload.sub,
      sid: payload.sid,
      exp: payload.exp,
      iat: payload.iat,
      roles: payload.roles,
      // RFC 9470 §6.2: what a resource server needs to ask for a step-up itself.
      ...(typeof payload.auth_time === 'number' ? { auth_time: payload.auth_time } : {}),
      ...(payload.acr !== undefined ? { acr: payload.acr } : {}),
      ...(payload.amr !== undefined ? { amr: payload.amr } : {}),
      ...(payload.iss !== undefined ? { iss: payload.iss } : {}),
      ...(payload.aud !== undefined ? { aud: payload.aud } : {}),
      ...(payload.cnf !== undefined ? { cnf: payload.cnf } : {})
    }
  }
}
