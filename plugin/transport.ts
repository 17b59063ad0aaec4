// How tokens travel: the Authorization / x-refresh-token headers and the tg_* cookies, both ways, and the
// double-submit CSRF check for cookie-authenticated unsafe requests.
import { timingSafeEqual } from 'node:crypto'
import type {} from '@fastify/cookie'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ResolvedOptions } from './options.js'
import { newId } from './tokens.js'

export const ACCESS_COOKIE = 'tg_access'
export const REFRESH_COOKIE = 'tg_refresh'
export const CSRF_COOKIE = 'tg_csrf'
export const CSRF_HEADER = 'x-csrf-token'
export const REFRESH_HEADER = 'x-refresh-token'
export const ACCESS_HEADER = 'x-access-token'

/**
 * For @fastify/cors: what a browser client on another origin must be allowed to send (tokens, the CSRF
 * header, DPoP proofs) and to read (the refresh hook's new tokens, DPoP nonces, challenges, request ids).
 */
export const corsHeaders = Object.freeze({
  allowedHeaders: ['authorization', 'content-type', REFRESH_HEADER, CSRF_HEADER, 'dpop', 'x-request-id'],
  exposedHeaders: [ACCESS_HEADER, REFRESH_HEADER, 'x-request-id', 'dpop-nonce', 'www-authenticate', 'retry-after']
})

/** Whether the request's tokens came by cookie (answers then go by cookie). */
export const kByCookie = Symbol('tokengate.byCookie')

declare module 'fastify' {
  interface FastifyRequest {
    [kByCookie]: boolean
  }
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

export interface PresentedTokens {
  access?: string
  refresh?: string
  byCookie: boolean
  /** The access token came as `Authorization: DPoP <token>` (only read when DPoP is on). */
  dpop: boolean
}

export interface Transport {
  /** The tokens a request carries: headers first, then (cookie transport) the cookies. */
  read: (request: FastifyRequest) => PresentedTokens
  /** Whether an unsafe request authenticated by cookie carries an x-csrf-token equal to the tg_csrf cookie. */
  csrfOk: (request: FastifyRequest) => boolean
  /** Sends freshly minted tokens the way the client sent its own (with Cache-Control: no-store). */
  send: (request: FastifyRequest, reply: FastifyReply, tokens: { accessToken?: string, refreshToken?: string }, refreshExpiresIn: number) => void
  /** Sets all three cookies (login; or a refresh by cookie), keeping the client's CSRF token unless `csrf` is new. */
  setCookies: (request: FastifyRequest, reply: FastifyReply, tokens: { accessToken: string, refreshToken: string }, refreshExpiresIn: number, csrf?: string) => void
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

export function transport (app: FastifyInstance, opts: ResolvedOptions): Transport {
  const useCookies = opts.transport.cookie
  const dpopScheme = opts.dpop !== undefined
  const base = { path: '/', secure: opts.cookie.secure, sameSite: 'strict' as const, ...(opts.cookie.domain !== undefined ? { domain: opts.cookie.domain } : {}) }

  function cookieJar (request: FastifyRequest): Record<string, string | undefined> | undefined {
    // @fastify/cookie parses in its own onRequest hook unless a user configured a later one.
    if (request.cookies == null && typeof request.headers.cookie === 'string') request.cookies = app.parseCookie(request.headers.cookie)
    return request.cookies ?? undefined
  }

  function setTokenCookies (reply: FastifyReply, t: { accessToken?: string, refreshToken?: string, csrf?: string }, maxAge: number): void {
    if (t.accessToken !== undefined) reply.setCookie(ACCESS_COOKIE, t.accessToken, { ...base, httpOnly: true, maxAge })
    if (t.refreshToken !== undefined) reply.setCookie(REFRESH_COOKIE, t.refreshToken, { ...base, httpOnly: true, maxAge })
    if (t.csrf !== undefined) reply.setCookie(CSRF_COOKIE, t.csrf, { ...base, httpOnly: false, maxAge })
  }

  // Keep the client's CSRF token (in-flight requests carry it); mint one if the browser lost it.
  const csrfOf = (request: FastifyRequest): string => request.cookies?.[CSRF_COOKIE] ?? newId()

  return {
    read (request) {
      const headers = request.headers
      let access: string | undefined
      let refresh: string | undefined
      let byCookie = false
      let dpop = false
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
      if (useCookies && (access === undefined || refresh === undefined) && headers.cookie !== undefined) {
        const jar = cookieJar(request)
        if (jar !== undefined) {
          if (access === undefined && typeof jar[ACCESS_COOKIE] === 'string' && jar[ACCESS_COOKIE] !== '') { access = jar[ACCESS_COOKIE]; byCookie = true }
          if (refresh === undefined && typeof jar[REFRESH_COOKIE] === 'string' && jar[REFRESH_COOKIE] !== '') { refresh = jar[REFRESH_COOKIE]; byCookie = true }
        }
      }
      return { access, refresh, byCookie, dpop }
    },

    csrfOk (request) {
      if (!UNSAFE.has(request.method)) return true
      const header = request.headers[CSRF_HEADER]
      const cookie = request.cookies?.[CSRF_COOKIE]
      return typeof header === 'string' && typeof cookie === 'string' && cookie !== '' && sameString(header, cookie)
    },

    send (request, reply, t, refreshExpiresIn) {
      reply.header('cache-control', 'no-store')
      if (request[kByCookie]) {
        setTokenCookies(reply, { ...t, csrf: csrfOf(request) }, refreshExpiresIn)
      } else {
        if (t.accessToken !== undefined) reply.header(ACCESS_HEADER, t.accessToken)
        if (t.refreshToken !== undefined) reply.header(REFRESH_HEADER, t.refreshToken)
      }
    },

    setCookies (request, reply, t, refreshExpiresIn, csrf) {
      setTokenCookies(reply, { ...t, csrf: csrf ?? csrfOf(request) }, refreshExpiresIn)
    },

    clear (reply) {
      reply.clearCookie(ACCESS_COOKIE, { ...base, httpOnly: true })
      reply.clearCookie(REFRESH_COOKIE, { ...base, httpOnly: true })
      reply.clearCookie(CSRF_COOKIE, { ...base, httpOnly: false })
    }
  }
}
