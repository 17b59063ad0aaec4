// The refresh hook (origin steps 3–4) and `authenticate`. One onRequest hook does all the auth work:
// it never answers by itself; it sets request.auth or keeps the error for `authenticate` to answer with.
import { timingSafeEqual } from 'node:crypto'
import type {} from '@fastify/cookie'
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import {
  CsrfError, ForbiddenError, INVALID_TOKEN_CODES, StoreUnavailableError, TokenExpiredError, TokenInvalidError,
  TokenMissingError, TokenRevokedError, type TokengateError
} from './errors.js'
import type { ResolvedOptions } from './options.js'
import type { AuthInfo, Sessions, TokenPair } from './sessions.js'
import { newId } from './tokens.js'

export const ACCESS_COOKIE = 'tg_access'
export const REFRESH_COOKIE = 'tg_refresh'
export const CSRF_COOKIE = 'tg_csrf'
export const CSRF_HEADER = 'x-csrf-token'
export const REFRESH_HEADER = 'x-refresh-token'
export const ACCESS_HEADER = 'x-access-token'

/** Where the auth error of a request is kept for `authenticate`. */
export const kAuthError = Symbol('tokengate.authError')
/** Whether the request's tokens came by cookie (answers then go by cookie). */
export const kByCookie = Symbol('tokengate.byCookie')

declare module 'fastify' {
  interface FastifyRequest {
    [kAuthError]: TokengateError | null
    [kByCookie]: boolean
  }
  interface FastifyContextConfig {
    /** @internal marks tokengate's own login and refresh routes. */
    tokengate?: RouteMark
  }
}

/** Per-route marks set by tokengate's own routes: the hook leaves refresh tokens to them. */
export type RouteMark = 'login' | 'refresh'

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

export interface CookieWriter {
  setTokens: (reply: FastifyReply, tokens: { accessToken?: string, refreshToken?: string, csrf?: string }, maxAgeSec: number) => void
  clear: (reply: FastifyReply) => void
}

export function cookieWriter (opts: ResolvedOptions): CookieWriter {
  const base = { path: '/', secure: opts.cookie.secure, sameSite: 'strict' as const, ...(opts.cookie.domain !== undefined ? { domain: opts.cookie.domain } : {}) }
  return {
    setTokens (reply, t, maxAge) {
      if (t.accessToken !== undefined) reply.setCookie(ACCESS_COOKIE, t.accessToken, { ...base, httpOnly: true, maxAge })
      if (t.refreshToken !== undefined) reply.setCookie(REFRESH_COOKIE, t.refreshToken, { ...base, httpOnly: true, maxAge })
      if (t.csrf !== undefined) reply.setCookie(CSRF_COOKIE, t.csrf, { ...base, httpOnly: false, maxAge })
    },
    clear (reply) {
      reply.clearCookie(ACCESS_COOKIE, { ...base, httpOnly: true })
      reply.clearCookie(REFRESH_COOKIE, { ...base, httpOnly: true })
      reply.clearCookie(CSRF_COOKIE, { ...base, httpOnly: false })
    }
  }
}

function sameString (a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}

export function requestMeta (request: FastifyRequest): { ip: string, userAgent?: string } {
  const ua = request.headers['user-agent']
  return { ip: request.ip, userAgent: typeof ua === 'string' ? ua : undefined }
}

export function buildHook (app: FastifyInstance, opts: ResolvedOptions, sessions: Sessions, cookies: CookieWriter) {
  const useCookies = opts.transport.cookie
  const renewExpired = opts.renewExpiredRefresh

  function cookieJar (request: FastifyRequest): Record<string, string | undefined> | undefined {
    if (!useCookies) return undefined
    // @fastify/cookie parses in its own onRequest hook unless a user configured a later one.
    if (request.cookies == null && typeof request.headers.cookie === 'string') request.cookies = app.parseCookie(request.headers.cookie)
    return request.cookies ?? undefined
  }

  /** Sends freshly minted tokens the way the client sent its own. */
  function sendTokens (request: FastifyRequest, reply: FastifyReply, t: { accessToken?: string, refreshToken?: string }, refreshExpiresIn: number): void {
    reply.header('cache-control', 'no-store')
    if (request[kByCookie]) {
      // Keep the client's CSRF token (in-flight requests carry it); mint one if the browser lost it.
      const csrf = request.cookies?.[CSRF_COOKIE] ?? newId()
      cookies.setTokens(reply, { ...t, csrf }, refreshExpiresIn)
    } else {
      if (t.accessToken !== undefined) reply.header(ACCESS_HEADER, t.accessToken)
      if (t.refreshToken !== undefined) reply.header(REFRESH_HEADER, t.refreshToken)
    }
  }

  function fail (request: FastifyRequest, err: TokengateError, done: HookHandlerDoneFunction): void {
    request[kAuthError] = err
    done()
  }

  async function refreshFor (request: FastifyRequest, reply: FastifyReply, refreshToken: string): Promise<void> {
    try {
      const pair: TokenPair = await sessions.refresh(refreshToken, requestMeta(request))
      const checked = await sessions.verify(pair.accessToken)
      request.auth = checked
      sendTokens(request, reply, {
        accessToken: pair.accessToken,
        refreshToken: pair.refreshToken !== refreshToken ? pair.refreshToken : undefined
      }, pair.refreshExpiresIn)
    } catch (err) {
      request[kAuthError] = asTokengateError(err)
    }
  }

  async function renewFor (request: FastifyRequest, reply: FastifyReply, auth: AuthInfo, refreshToken: string): Promise<void> {
    // Not one of ours, or another session's: the valid access token still authenticates the request.
    const parts = sessions.tokens.parseRefresh(refreshToken)
    if (parts === null || parts.sessionId !== auth.sessionId || parts.userId !== auth.userId) return
    try {
      const renewed = await sessions.renew(parts)
      // By cookie, the access cookie is set again too, so both live as long as the new refresh token.
      if (renewed !== null) sendTokens(request, reply, { accessToken: request[kByCookie] ? auth.token : undefined, refreshToken: renewed.refreshToken }, renewed.refreshExpiresIn)
    } catch (err) {
      request.log.warn({ err }, 'tokengate: refresh token renewal failed')
    }
  }

  function checked (request: FastifyRequest, reply: FastifyReply, auth: AuthInfo, refreshToken: string | undefined, mark: RouteMark | undefined, done: HookHandlerDoneFunction): void {
    request.auth = auth
    if (refreshToken !== undefined && renewExpired && mark === undefined) {
      const exp = sessions.tokens.peekRefreshExpiry(refreshToken)
      if (exp !== null && exp <= Date.now()) {
        renewFor(request, reply, auth, refreshToken).then(() => done(), done)
        return
      }
    }
    done()
  }

  // Only tokengate's own routes carry a mark, and they live under the prefix: the (allocating)
  // request.routeOptions getter is read for those alone.
  const markedPrefix = opts.routes?.prefix
  return function tokengateOnRequest (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
    const headers = request.headers
    let access: string | undefined
    let refresh: string | undefined
    let byCookie = false

    const authz = headers.authorization
    if (typeof authz === 'string' && authz.length > 7 && (authz.startsWith('Bearer ') || authz.slice(0, 7).toLowerCase() === 'bearer ')) {
      access = authz.slice(7).trim()
      if (access === '') access = undefined
    }
    const rh = headers[REFRESH_HEADER]
    if (typeof rh === 'string' && rh.length > 0) refresh = rh
    if (useCookies && (access === undefined || refresh === undefined) && headers.cookie !== undefined) {
      const jar = cookieJar(request)
      if (jar !== undefined) {
        if (access === undefined && typeof jar[ACCESS_COOKIE] === 'string' && jar[ACCESS_COOKIE] !== '') { access = jar[ACCESS_COOKIE]; byCookie = true }
        if (refresh === undefined && typeof jar[REFRESH_COOKIE] === 'string' && jar[REFRESH_COOKIE] !== '') { refresh = jar[REFRESH_COOKIE]; byCookie = true }
      }
    }
    if (access === undefined && refresh === undefined) { done(); return }

    const mark = markedPrefix !== undefined && request.url.startsWith(markedPrefix) ? request.routeOptions.config?.tokengate : undefined
    if (byCookie) {
      request[kByCookie] = true
      // Double-submit CSRF check for cookie-authenticated unsafe requests; login authenticates by its body.
      if (UNSAFE.has(request.method) && mark !== 'login') {
        const header = headers[CSRF_HEADER]
        const cookie = request.cookies?.[CSRF_COOKIE]
        if (typeof header !== 'string' || typeof cookie !== 'string' || cookie === '' || !sameString(header, cookie)) {
          fail(request, new CsrfError(), done)
          return
        }
      }
    }

    if (access !== undefined) {
      const auth = sessions.checkAccess(access)
      if (typeof auth === 'object') {
        const revoked = sessions.revocations.isRevoked(auth.sessionId)
        if (revoked === false) { checked(request, reply, auth, refresh, mark, done); return }
        if (revoked === true) { fail(request, new TokenRevokedError(), done); return }
        revoked.then(
          (yes) => { if (yes) fail(request, new TokenRevokedError(), done); else checked(request, reply, auth, refresh, mark, done) },
          (err) => { request.log.error({ err }, 'tokengate: revocation check failed'); fail(request, new StoreUnavailableError(), done) }
        )
        return
      }
      if (auth === 'invalid') { fail(request, new TokenInvalidError(), done); return }
      if (refresh === undefined || mark !== undefined) { fail(request, new TokenExpiredError(), done); return }
    } else if (mark !== undefined) {
      // tokengate's own login/refresh routes handle the refresh token themselves.
      done()
      return
    }
    // Access missing or expired, refresh token present: origin step 4.1.
    refreshFor(request, reply, refresh!).then(() => done(), done)
  }
}

export function asTokengateError (err: unknown): TokengateError {
  const code = (err as { code?: unknown })?.code
  if (typeof code === 'string' && code.startsWith('TOKENGATE_')) return err as TokengateError
  return new StoreUnavailableError()
}

/** Sets WWW-Authenticate (RFC 6750 §3) on a 401. */
export function challenge (reply: FastifyReply, err: TokengateError): void {
  if (err.statusCode === 401) {
    reply.header('www-authenticate', INVALID_TOKEN_CODES.has(err.code) ? 'Bearer error="invalid_token"' : 'Bearer')
  }
}

const hasRole = (auth: AuthInfo, roles: readonly string[]): boolean => roles.some(r => auth.roles.includes(r))

/** The onRequest hook for a route with `config: { auth: true | { roles } }`: authenticate and the role check in one. */
export function routePolicy (policy: true | { roles?: string[] }) {
  const roles = typeof policy === 'object' && policy.roles !== undefined && policy.roles.length > 0 ? policy.roles : undefined
  return function tokengateRoutePolicy (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
    const auth = request.auth
    if (auth === null) {
      const err = request[kAuthError] ?? new TokenMissingError()
      challenge(reply, err)
      done(err)
      return
    }
    if (roles === undefined || hasRole(auth, roles)) done()
    else done(new ForbiddenError())
  }
}

/** `app.authenticate`: an onRequest hook for protected routes: 401 (or the kept error) unless authenticated. */
export function authenticate (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
  if (request.auth !== null) { done(); return }
  const err = request[kAuthError] ?? new TokenMissingError()
  challenge(reply, err)
  done(err)
}

/** An onRequest hook requiring one of `roles` (after authenticate): 403 TOKENGATE_FORBIDDEN otherwise. */
export function requireRoles (roles: readonly string[]) {
  return function tokengateRoles (request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
    if (roles.length === 0 || (request.auth !== null && hasRole(request.auth, roles))) { done(); return }
    done(new ForbiddenError())
  }
}
