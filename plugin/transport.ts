// How tokens travel: the Authorization / x-refresh-token headers and the tg_* cookies, both ways, and the
// double-submit CSRF check for cookie-authenticated unsafe requests, bound to the session.
import { timingSafeEqual } from 'node:crypto'
import type {} from '@fastify/cookie'
import type { ServerResponse } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ResolvedOptions } from './options.js'
import type { Tokens } from './tokens.js'

export const ACCESS_COOKIE = 'tg_access'
export const REFRESH_COOKIE = 'tg_refresh'
export const CSRF_COOKIE = 'tg_csrf'
export const CSRF_HEADER = 'x-csrf-token'
export const REFRESH_HEADER = 'x-refresh-token'
export const ACCESS_HEADER = 'x-access-token'
/** With both transports, a login asks for cookies with `x-tokengate-transport: cookie` (else it answers in the body). */
export const TRANSPORT_HEADER = 'x-tokengate-transport'

/**
 * For @fastify/cors: what a browser client on another origin must be allowed to send (tokens, the CSRF
 * header, DPoP proofs) and to read (the refresh hook's new tokens, DPoP nonces, challenges, request ids).
 */
export const corsHeaders = Object.freeze({
  allowedHeaders: ['authorization', 'content-type', REFRESH_HEADER, CSRF_HEADER, 'dpop', 'x-request-id', TRANSPORT_HEADER],
  exposedHeaders: [ACCESS_HEADER, REFRESH_HEADER, 'x-request-id', 'dpop-nonce', 'www-authenticate', 'retry-after']
})

/** Whether the request's tokens came by cookie (answers then go by cookie). */
export const kByCookie = Symbol('tokengate.byCookie')

/**
 * The request another proxy asks about (forward authentication): its method and its URL as the client
 * addressed it (absolute). Set by the hook on routes marked for it; the CSRF and DPoP checks read it.
 */
export interface ForwardedRequest { method: string, url: string }
export const kForwarded = Symbol('tokengate.forwarded')

declare module 'fastify' {
  interface FastifyRequest {
    [kByCookie]: boolean
    [kForwarded]: ForwardedRequest | null
  }
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])
/** RFC 9110 §9.2.1: a forwarded request's method is checked unless it is one of these (WebDAV's are not). */
const SAFE = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE'])

export interface PresentedTokens {
  access?: string
  refresh?: string
  byCookie: boolean
  /** The access token came as `Authorization: DPoP <token>` (only read when DPoP is on). */
  dpop: boolean
}

export interface Transport {
  /** The tokens a request carries: headers first (unless transport is ['cookie'] alone), then (cookie transport) the cookies. */
  read: (request: FastifyRequest) => PresentedTokens
  /**
   * Whether a cookie-authenticated unsafe request (by its forwarded method on a forward-authentication route)
   * carries x-csrf-token equal to the tg_csrf cookie and to the CSRF token of `sessionId` (a MAC of it): another
   * session's token, or a planted one, does not pass.
   */
  csrfOk: (request: FastifyRequest, sessionId: string) => boolean
  /** After a refused CSRF check: sets the session's own tg_csrf again when the browser's cookie was another one. */
  csrfRefused: (request: FastifyRequest, reply: FastifyReply, sessionId: string) => void
  /** Sends freshly minted tokens the way the client sent its own (with Cache-Control: no-store). */
  send: (request: FastifyRequest, reply: FastifyReply, tokens: { accessToken?: string, refreshToken?: string }, refreshExpiresIn: number, sessionId: string) => void
  /** Sets all three cookies (a login, or a refresh by cookie), with Cache-Control: no-store. */
  setCookies: (reply: FastifyReply, tokens: { accessToken: string, refreshToken: string }, refreshExpiresIn: number, sessionId: string) => void
  /** Clears the token cookies (logout). */
  clear: (reply: FastifyReply) => void
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

const kNoStore = Symbol('tokengate.noStore')
type Pinned = ServerResponse & { [kNoStore]?: true }

/**
 * `Cache-Control: no-store` on a response that carries tokens, whatever is set after it (a handler, or the
 * upstream's headers that a proxy copies over the reply's): the response's writeHead puts it back last. Only
 * responses that carry tokens pay for it.
 */
export function noStore (reply: FastifyReply): void {
  reply.header('cache-control', 'no-store')
  const res = reply.raw as Pinned
  if (res[kNoStore] === true) return
  res[kNoStore] = true
  const writeHead = res.writeHead
  res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
    const headers = args[args.length - 1]
    if (Array.isArray(headers)) {
      // [name, value, name, value, …]
      for (let i = headers.length - 2; i >= 0; i -= 2) if (String(headers[i]).toLowerCase() === 'cache-control') headers.splice(i, 2)
      headers.push('cache-control', 'no-store')
    } else if (headers !== null && typeof headers === 'object') {
      const h = headers as Record<string, unknown>
      for (const name of Object.keys(h)) if (name !== 'cache-control' && name.toLowerCase() === 'cache-control') delete h[name]
      h['cache-control'] = 'no-store'
    }
    if (!this.headersSent) this.setHeader('cache-control', 'no-store')
    return (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args)
  } as ServerResponse['writeHead']
}

export function transport (app: FastifyInstance, opts: ResolvedOptions, tokens: Tokens): Transport {
  const useCookies = opts.transport.cookie
  const useHeaders = opts.transport.header
  const dpopScheme = opts.dpop !== undefined
  const base = { path: '/', secure: opts.cookie.secure, sameSite: 'strict' as const, ...(opts.cookie.domain !== undefined ? { domain: opts.cookie.domain } : {}) }

  function cookieJar (request: FastifyRequest): Record<string, string | undefined> | undefined {
    // @fastify/cookie parses in its own onRequest hook unless a user configured a later one.
    if (request.cookies == null && typeof request.headers.cookie === 'string') request.cookies = app.parseCookie(request.headers.cookie)
    return request.cookies ?? undefined
  }

  function setTokenCookies (reply: FastifyReply, t: { accessToken?: string, refreshToken?: string }, sessionId: string, maxAge: number): void {
    noStore(reply)
    if (t.accessToken !== undefined) reply.setCookie(ACCESS_COOKIE, t.accessToken, { ...base, httpOnly: true, maxAge })
    if (t.refreshToken !== undefined) reply.setCookie(REFRESH_COOKIE, t.refreshToken, { ...base, httpOnly: true, maxAge })
    reply.setCookie(CSRF_COOKIE, tokens.csrfToken(sessionId), { ...base, httpOnly: false, maxAge })
  }

  return {
    read (request) {
      const headers = request.headers
      let access: string | undefined
      let refresh: string | undefined
      let byCookie = false
      let dpop = false
      if (useHeaders) {
        const authz = headers.authorization
        if (typeof authz === 'string' && authz.length > 7) {
          if (authz.startsWith('Bearer ') || authz.slice(0, 7).toLowerCase() === 'bearer ') {
            access = authz.slice(7).trim()
          } else if (dpopScheme && authz.length > 5 && authz.slice(0, 5).toLowerCase() === 'dpop ') {
            access = authz.slice(5).trim()
            dpop = true
          }
          if (access === '') access = undefined
        }
        const rh = headers[REFRESH_HEADER]
        if (typeof rh === 'string' && rh.length > 0) refresh = rh
      }
      if (useCookies && (access === undefined || refresh === undefined) && headers.cookie !== undefined) {
        const jar = cookieJar(request)
        if (jar !== undefined) {
          if (access === undefined && typeof jar[ACCESS_COOKIE] === 'string' && jar[ACCESS_COOKIE] !== '') { access = jar[ACCESS_COOKIE]; byCookie = true }
          if (refresh === undefined && typeof jar[REFRESH_COOKIE] === 'string' && jar[REFRESH_COOKIE] !== '') { refresh = jar[REFRESH_COOKIE]; byCookie = true }
        }
      }
      return { access, refresh, byCookie, dpop }
    },

    csrfOk (request, sessionId) {
      // On a forward-authentication route, the method of the request it asks about (any of the methods a proxy
      // may pass on that is not safe).
      const forwarded = request[kForwarded]
      if (forwarded == null ? !UNSAFE.has(request.method) : SAFE.has(forwarded.method)) return true
      const header = request.headers[CSRF_HEADER]
      const cookie = cookieJar(request)?.[CSRF_COOKIE]
      return typeof header === 'string' && typeof cookie === 'string' && cookie !== '' && sameString(header, cookie) && tokens.csrfValid(sessionId, header)
    },

    csrfRefused (request, reply, sessionId) {
      // The answer goes to the browser that holds the session's cookies, whoever sent the request: the cookie is
      // only what the page reads to fill x-csrf-token, so a forged request learns nothing from it.
      const cookie = cookieJar(request)?.[CSRF_COOKIE]
      const own = tokens.csrfToken(sessionId)
      if (cookie === undefined || !sameString(cookie, own)) {
        noStore(reply)
        reply.setCookie(CSRF_COOKIE, own, { ...base, httpOnly: false, maxAge: Math.round(opts.refreshTtlMs / 1000) })
      }
    },

    send (request, reply, t, refreshExpiresIn, sessionId) {
      if (request[kByCookie]) {
        setTokenCookies(reply, t, sessionId, refreshExpiresIn)
      } else {
        noStore(reply)
        if (t.accessToken !== undefined) reply.header(ACCESS_HEADER, t.accessToken)
        if (t.refreshToken !== undefined) reply.header(REFRESH_HEADER, t.refreshToken)
      }
    },

    setCookies (reply, t, refreshExpiresIn, sessionId) {
      setTokenCookies(reply, t, sessionId, refreshExpiresIn)
    },

    clear (reply) {
      noStore(reply)
      reply.clearCookie(ACCESS_COOKIE, { ...base, httpOnly: true })
      reply.clearCookie(REFRESH_COOKIE, { ...base, httpOnly: true })
      reply.clearCookie(CSRF_COOKIE, { ...base, httpOnly: false })
    }
  }
}
