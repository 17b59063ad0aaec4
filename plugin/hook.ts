// The refresh hook (of the two tokens a request sends, an expired one is reissued): one onRequest hook does
// all the auth work of a request. It never answers by itself: it sets request.auth, or keeps the error for the
// guards to answer with.
//
// Unauthenticated work is cheap: a request's token is checked first (the access token's signature, or the
// refresh token's MAC), then the CSRF token (cookie transport), then the DPoP proof's signature, and its jti is
// claimed last, so a bad token with a valid self-signed proof costs no signature check and no store command.
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import type { Dpop, Proof } from './dpop.js'
import { CsrfError, DpopInvalidError, RefreshExpiredError, RefreshInvalidError, TokenExpiredError, TokenInvalidError } from './errors.js'
import { kAuthError, kDpopScheme } from './guards.js'
import type { ResolvedOptions } from './options.js'
import type { AuthInfo, Sessions, Verified } from './sessions.js'
import { kByCookie, kForwarded, requestMeta, type ForwardedRequest, type Transport } from './transport.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** @internal marks tokengate's own login and refresh routes. */
    tokengate?: RouteMark
  }
}

/**
 * Per-route marks. tokengate's own login and refresh routes: the hook leaves refresh tokens (and proofs, and
 * CSRF) to them. A forward-authentication route (the gateway's): the hook authenticates the request as usual,
 * but checks CSRF and DPoP proofs against the request it asks about, which `forwarded` gives (null: none, or
 * none to authenticate; the request is then left anonymous).
 */
export type RouteMark = 'login' | 'refresh' | ForwardMark
export interface ForwardMark {
  forwarded: (request: FastifyRequest) => ForwardedRequest | null
  /** false: the refresh hook does not renew here (for a proxy that cannot hand new tokens back to the client). */
  refresh?: boolean
}

/** `forwardPaths`: the paths of routes with a ForwardMark (filled as they are registered), where the mark is read. */
export function buildHook (opts: ResolvedOptions, sessions: Sessions, transport: Transport, dpop: Dpop | undefined, forwardPaths: readonly string[]) {
  const renewExpired = opts.renewExpiredRefresh
  const beforeRefresh = opts.beforeRefresh
  const tokens = sessions.tokens

  function fail (request: FastifyRequest, err: Error, done: HookHandlerDoneFunction): void {
    request[kAuthError] = err
    done()
  }

  /** A cookie-authenticated request's CSRF check against its session; false (the error kept) when it fails. */
  function csrfPassed (request: FastifyRequest, reply: FastifyReply, sessionId: string): boolean {
    if (!request[kByCookie] || transport.csrfOk(request, sessionId)) return true
    transport.csrfRefused(request, reply, sessionId)
    request[kAuthError] = new CsrfError()
    return false
  }

  /** The request's DPoP proof, verified but not yet claimed (null without one); throws on a bad one. */
  function proofOf (request: FastifyRequest, reply: FastifyReply, ath: string | undefined): Proof | null {
    if (dpop === undefined || (request.headers.dpop === undefined && !request[kDpopScheme])) return null
    return dpop.verify(request, reply, ath)
  }

  /** The access token expired or is missing: the refresh token is checked and used to reissue it. */
  async function refreshFor (request: FastifyRequest, reply: FastifyReply, refreshToken: string, access: string | undefined): Promise<void> {
    try {
      const parts = tokens.parseRefresh(refreshToken)
      if (parts === null) throw new RefreshInvalidError()
      if (parts.expiresAt <= Date.now()) throw new RefreshExpiredError()
      // A session this instance knows is revoked: refused before any proof or store work.
      if (sessions.revocations.knownRevoked(parts.sessionId)) throw new RefreshInvalidError()
      if (!csrfPassed(request, reply, parts.sessionId)) return
      // Counted (the gateway's per-IP limit) before any costly work; a refusal is kept like any refresh failure.
      if (beforeRefresh !== undefined) await beforeRefresh(request)
      const proof = proofOf(request, reply, request[kDpopScheme] ? access : undefined)
      // With dpop.required, the hook refreshes only with a proof, as POST /refresh does.
      if (proof === null && dpop?.settings.required === true) throw new DpopInvalidError('a DPoP proof is required')
      if (proof !== null) await dpop!.claim(proof)
      const { pair, auth } = await sessions.refreshToAuth(refreshToken, requestMeta(request), proof?.jkt, parts)
      request.auth = auth
      transport.send(request, reply, {
        accessToken: pair.accessToken,
        refreshToken: pair.refreshToken !== refreshToken ? pair.refreshToken : undefined
      }, pair.refreshExpiresIn, pair.sessionId)
    } catch (err) {
      // Kept for the guards, whatever it is (a tokengate code, or a user callback's own error, logged where it was thrown).
      request[kAuthError] = err as Error
    }
  }

  async function renewFor (request: FastifyRequest, reply: FastifyReply, auth: AuthInfo, refreshToken: string): Promise<void> {
    // (A bound token got here only with a proof by its key: that key renews its session.)
    // Not one of ours, or another session's: the valid access token still authenticates the request.
    const parts = tokens.parseRefresh(refreshToken)
    if (parts === null || parts.sessionId !== auth.sessionId || parts.userId !== auth.userId) return
    try {
      if (beforeRefresh !== undefined) await beforeRefresh(request)
      const renewed = await sessions.renew(parts, auth.jkt)
      // By cookie, the access cookie is set again too, so both live as long as the new refresh token.
      if (renewed !== null) transport.send(request, reply, { accessToken: request[kByCookie] ? auth.token : undefined, refreshToken: renewed.refreshToken }, renewed.refreshExpiresIn, auth.sessionId)
    } catch (err) {
      // Past the rate limit, or a store failure: the access token still authenticates the request.
      request.log.warn({ err }, 'tokengate: refresh token renewal failed')
    }
  }

  function authenticated (request: FastifyRequest, reply: FastifyReply, auth: AuthInfo, refreshToken: string | undefined, done: HookHandlerDoneFunction): void {
    request.auth = auth
    if (refreshToken !== undefined && renewExpired) {
      const exp = tokens.peekRefreshExpiry(refreshToken)
      if (exp !== null && exp <= Date.now()) {
        renewFor(request, reply, auth, refreshToken).then(() => done(), done)
        return
      }
    }
    done()
  }

  /** A valid access token, not revoked: its proof claimed (if any), then the request is authenticated. */
  function admitted (request: FastifyRequest, reply: FastifyReply, checked: AuthInfo | Error, proof: Proof | null, refresh: string | undefined, done: HookHandlerDoneFunction): void {
    if (checked instanceof Error) { fail(request, checked, done); return }
    if (proof === null) { authenticated(request, reply, checked, refresh, done); return }
    dpop!.claim(proof).then(() => authenticated(request, reply, checked, refresh, done), err => fail(request, err as Error, done))
  }

  /** A request presenting a valid (unexpired, signed by us) access token, on a route of the app. */
  function withAccess (request: FastifyRequest, reply: FastifyReply, verified: Verified, access: string, refresh: string | undefined, done: HookHandlerDoneFunction): void {
    const auth = verified.info
    if (request[kByCookie] && !csrfPassed(request, reply, auth.sessionId)) { done(); return }
    let proof: Proof | null = null
    if (dpop !== undefined) {
      const scheme = request[kDpopScheme]
      try {
        proof = proofOf(request, reply, scheme ? access : undefined)
      } catch (err) {
        fail(request, err as Error, done)
        return
      }
      // A bound token counts only with the DPoP scheme and a proof by its key (a downgrade to Bearer is refused);
      // the DPoP scheme counts only with a bound token.
      if (auth.jkt !== undefined && (!scheme || proof === null || proof.jkt !== auth.jkt)) {
        fail(request, new DpopInvalidError(scheme ? 'the proof is not by the key the access token is bound to' : 'a DPoP-bound access token must be sent with the DPoP scheme and a proof'), done)
        return
      }
      if (auth.jkt === undefined && scheme) { fail(request, new DpopInvalidError('the access token is not DPoP-bound'), done); return }
    }
    const checked = sessions.unlessRevoked(verified)
    if (checked instanceof Promise) checked.then(c => admitted(request, reply, c, proof, refresh, done), done)
    else admitted(request, reply, checked, proof, refresh, done)
  }

  /** tokengate's own routes check refresh tokens, proofs and CSRF themselves: only the access token is read here. */
  function onMarkedRoute (request: FastifyRequest, access: string | undefined, done: HookHandlerDoneFunction): void {
    if (access === undefined) { done(); return }
    const checked = sessions.authorize(access)
    const settle = (c: AuthInfo | Error): void => {
      if (c instanceof Error) request[kAuthError] = c
      else request.auth = c
      done()
    }
    if (checked instanceof Promise) checked.then(settle, done)
    else settle(checked)
  }

  // Only tokengate's own routes (under the prefix) and forward-authentication routes carry a mark: the
  // (allocating) request.routeOptions getter is read for those alone.
  const markedPrefix = opts.routes?.prefix
  const marked = (url: string): boolean => {
    if (markedPrefix !== undefined && url.startsWith(markedPrefix)) return true
    for (let i = 0; i < forwardPaths.length; i++) if (url.startsWith(forwardPaths[i])) return true
    return false
  }
  return function tokengateOnRequest (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
    const presented = transport.read(request)
    const { access, byCookie, dpop: dpopScheme } = presented
    let refresh = presented.refresh
    if (access === undefined && refresh === undefined) { done(); return }
    if (dpopScheme) request[kDpopScheme] = true
    if (byCookie) request[kByCookie] = true

    const mark = marked(request.url) ? request.routeOptions.config?.tokengate : undefined
    if (typeof mark === 'object') {
      const forwarded = mark.forwarded(request)
      if (forwarded === null) { done(); return }
      request[kForwarded] = forwarded
      if (mark.refresh === false) {
        refresh = undefined
        if (access === undefined) { done(); return }
      }
    } else if (mark !== undefined) {
      onMarkedRoute(request, access, done)
      return
    }

    if (access !== undefined) {
      // 1. The token: its signature (cached once verified), before anything else.
      const auth = sessions.checkAccess(access)
      if (auth === 'invalid') { fail(request, new TokenInvalidError(), done); return }
      if (auth !== 'expired') { withAccess(request, reply, auth, access, refresh, done); return }
      if (refresh === undefined) { fail(request, new TokenExpiredError(), done); return }
    }
    // A missing access token is handled as an expired one (browsers drop cookies on their own schedule).
    refreshFor(request, reply, refresh!, access).then(() => done(), done)
  }
}
