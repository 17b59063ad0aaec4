// The refresh hook (of the two tokens a request sends, an expired one is reissued): one onRequest hook does
// all the auth work of a request. It never answers by itself: it sets request.auth, or keeps the error for the
// guards to answer with.
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import type { Dpop, Proof } from './dpop.js'
import { CsrfError, DpopInvalidError } from './errors.js'
import { kAuthError, kDpopScheme } from './guards.js'
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

export function buildHook (opts: ResolvedOptions, sessions: Sessions, transport: Transport, dpop?: Dpop) {
  const renewExpired = opts.renewExpiredRefresh

  function fail (request: FastifyRequest, err: Error, done: HookHandlerDoneFunction): void {
    request[kAuthError] = err
    done()
  }

  async function refreshFor (request: FastifyRequest, reply: FastifyReply, refreshToken: string, proof: Proof | null): Promise<void> {
    // With dpop.required, the hook refreshes only with a proof, as POST /refresh does.
    if (proof === null && dpop?.settings.required === true) { request[kAuthError] = new DpopInvalidError('a DPoP proof is required'); return }
    try {
      const { pair, auth } = await sessions.refreshToAuth(refreshToken, requestMeta(request), proof?.jkt)
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
    // (A bound token got here only with a proof by its key: that key renews its session.)
    // Not one of ours, or another session's: the valid access token still authenticates the request.
    const parts = sessions.tokens.parseRefresh(refreshToken)
    if (parts === null || parts.sessionId !== auth.sessionId || parts.userId !== auth.userId) return
    try {
      const renewed = await sessions.renew(parts, auth.jkt)
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

  /** After the access check: proceed, refresh (an expired access token, reissued for a valid refresh token) or keep the error. */
  function decide (request: FastifyRequest, reply: FastifyReply, checked: AuthInfo | Error, refresh: string | undefined, mark: RouteMark | undefined, proof: Proof | null, done: HookHandlerDoneFunction): void {
    if (!(checked instanceof Error)) {
      // A bound token counts only with the DPoP scheme and a proof by its key (a downgrade to Bearer is refused);
      // the DPoP scheme counts only with a bound token. tokengate's own login and refresh routes check proofs themselves.
      if (mark === undefined && dpop !== undefined) {
        const scheme = request[kDpopScheme]
        if (checked.jkt !== undefined && (!scheme || proof === null || proof.jkt !== checked.jkt)) {
          fail(request, new DpopInvalidError(scheme ? 'the proof is not by the key the access token is bound to' : 'a DPoP-bound access token must be sent with the DPoP scheme and a proof'), done)
          return
        }
        if (checked.jkt === undefined && scheme) { fail(request, new DpopInvalidError('the access token is not DPoP-bound'), done); return }
      }
      authenticated(request, reply, checked, refresh, mark, done)
      return
    }
    if ((checked as { code?: string }).code === 'TOKENGATE_TOKEN_EXPIRED' && refresh !== undefined && mark === undefined) {
      refreshFor(request, reply, refresh, proof).then(() => done(), done)
      return
    }
    fail(request, checked, done)
  }

  /** The access and refresh tokens, once the request's DPoP proof (if any) has been checked. */
  function proceed (request: FastifyRequest, reply: FastifyReply, access: string | undefined, refresh: string | undefined, mark: RouteMark | undefined, proof: Proof | null, done: HookHandlerDoneFunction): void {
    if (access === undefined) {
      // tokengate's own login/refresh routes handle the refresh token themselves.
      if (mark !== undefined) { done(); return }
      // A missing access token is handled as an expired one (browsers drop cookies on their own schedule).
      refreshFor(request, reply, refresh!, proof).then(() => done(), done)
      return
    }
    const checked = sessions.authorize(access)
    if (checked instanceof Promise) checked.then(c => decide(request, reply, c, refresh, mark, proof, done), done)
    else decide(request, reply, checked, refresh, mark, proof, done)
  }

  // Only tokengate's own routes carry a mark, and they live under the prefix: the (allocating)
  // request.routeOptions getter is read for those alone.
  const markedPrefix = opts.routes?.prefix
  return function tokengateOnRequest (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
    const { access, refresh, byCookie, dpop: dpopScheme } = transport.read(request)
    if (access === undefined && refresh === undefined) { done(); return }
    if (dpopScheme) request[kDpopScheme] = true

    const mark = markedPrefix !== undefined && request.url.startsWith(markedPrefix) ? request.routeOptions.config?.tokengate : undefined
    if (byCookie) {
      request[kByCookie] = true
      // Double-submit CSRF check for cookie-authenticated unsafe requests; login authenticates by its body.
      if (mark !== 'login' && !transport.csrfOk(request)) { fail(request, new CsrfError(), done); return }
    }

    // The request's DPoP proof, checked once (with ath when it presents an access token by the DPoP scheme).
    if (dpop !== undefined && mark === undefined && (dpopScheme || request.headers.dpop !== undefined)) {
      dpop.check(request, reply, dpopScheme ? access : undefined).then(
        proof => proceed(request, reply, access, refresh, mark, proof, done),
        err => fail(request, err as Error, done)
      )
      return
    }
    proceed(request, reply, access, refresh, mark, null, done)
  }
}
