// The refresh hook (origin steps 3–4): one onRequest hook does all the auth work of a request. It never
// answers by itself: it sets request.auth, or keeps the error for the guards to answer with.
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import { CsrfError } from './errors.js'
import { kAuthError } from './guards.js'
import type { ResolvedOptions } from './options.js'
import type { AuthInfo, Sessions } from './sessions.js'
import { kByCookie, requestMeta, type Transport } from './transport.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** @internal marks tokengate's own login and refresh routes. */
    tokengate?: RouteMark
  }
}

/** Per-route marks set by tokengate's own routes: the hook leaves refresh tokens to them. */
export type RouteMark = 'login' | 'refresh'

export function buildHook (opts: ResolvedOptions, sessions: Sessions, transport: Transport) {
  const renewExpired = opts.renewExpiredRefresh

  function fail (request: FastifyRequest, err: Error, done: HookHandlerDoneFunction): void {
    request[kAuthError] = err
    done()
  }

  async function refreshFor (request: FastifyRequest, reply: FastifyReply, refreshToken: string): Promise<void> {
    try {
      const { pair, auth } = await sessions.refreshToAuth(refreshToken, requestMeta(request))
      request.auth = auth
      transport.send(request, reply, {
        accessToken: pair.accessToken,
        refreshToken: pair.refreshToken !== refreshToken ? pair.refreshToken : undefined
      }, pair.refreshExpiresIn)
    } catch (err) {
      // Kept for the guards, whatever it is (a tokengate code, or a user callback's own error, logged where it was thrown).
      request[kAuthError] = err as Error
    }
  }

  async function renewFor (request: FastifyRequest, reply: FastifyReply, auth: AuthInfo, refreshToken: string): Promise<void> {
    // Not one of ours, or another session's: the valid access token still authenticates the request.
    const parts = sessions.tokens.parseRefresh(refreshToken)
    if (parts === null || parts.sessionId !== auth.sessionId || parts.userId !== auth.userId) return
    try {
      const renewed = await sessions.renew(parts)
      // By cookie, the access cookie is set again too, so both live as long as the new refresh token.
      if (renewed !== null) transport.send(request, reply, { accessToken: request[kByCookie] ? auth.token : undefined, refreshToken: renewed.refreshToken }, renewed.refreshExpiresIn)
    } catch (err) {
      request.log.warn({ err }, 'tokengate: refresh token renewal failed')
    }
  }

  function authenticated (request: FastifyRequest, reply: FastifyReply, auth: AuthInfo, refreshToken: string | undefined, mark: RouteMark | undefined, done: HookHandlerDoneFunction): void {
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

  /** After the access check: proceed, refresh (origin step 4.1) or keep the error. */
  function decide (request: FastifyRequest, reply: FastifyReply, checked: AuthInfo | Error, refresh: string | undefined, mark: RouteMark | undefined, done: HookHandlerDoneFunction): void {
    if (!(checked instanceof Error)) { authenticated(request, reply, checked, refresh, mark, done); return }
    if ((checked as { code?: string }).code === 'TOKENGATE_TOKEN_EXPIRED' && refresh !== undefined && mark === undefined) {
      refreshFor(request, reply, refresh).then(() => done(), done)
      return
    }
    fail(request, checked, done)
  }

  // Only tokengate's own routes carry a mark, and they live under the prefix: the (allocating)
  // request.routeOptions getter is read for those alone.
  const markedPrefix = opts.routes?.prefix
  return function tokengateOnRequest (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
    const { access, refresh, byCookie } = transport.read(request)
    if (access === undefined && refresh === undefined) { done(); return }

    const mark = markedPrefix !== undefined && request.url.startsWith(markedPrefix) ? request.routeOptions.config?.tokengate : undefined
    if (byCookie) {
      request[kByCookie] = true
      // Double-submit CSRF check for cookie-authenticated unsafe requests; login authenticates by its body.
      if (mark !== 'login' && !transport.csrfOk(request)) { fail(request, new CsrfError(), done); return }
    }

    if (access === undefined) {
      // tokengate's own login/refresh routes handle the refresh token themselves.
      if (mark !== undefined) { done(); return }
      // A missing access token is handled as an expired one (browsers drop cookies on their own schedule).
      refreshFor(request, reply, refresh!).then(() => done(), done)
      return
    }
    const checked = sessions.authorize(access)
    if (checked instanceof Promise) checked.then(c => decide(request, reply, c, refresh, mark, done), done)
    else decide(request, reply, checked, refresh, mark, done)
  }
}
