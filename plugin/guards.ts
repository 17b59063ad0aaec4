// Route guards: `authenticate`, per-route policies (`config: { auth: true | { roles } }`) and requireRoles.
// A policy is checked when its route is registered: a typo closes the route, it never opens it.
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import { ForbiddenError, INVALID_TOKEN_CODES, TokenMissingError, type TokengateError } from './errors.js'
import type { AuthInfo } from './sessions.js'

/** Where the auth error of a request is kept for the guards to answer with. */
export const kAuthError = Symbol('tokengate.authError')
/** Whether the request presented its access token with the DPoP scheme. */
export const kDpopScheme = Symbol('tokengate.dpopScheme')
/** On the instance, when DPoP is on: the algorithms a DPoP challenge names. */
export const kDpopAlgs = Symbol('tokengate.dpopAlgs')

declare module 'fastify' {
  interface FastifyRequest {
    [kAuthError]: Error | null
    [kDpopScheme]: boolean
  }
  interface FastifyInstance {
    [kDpopAlgs]: string | null
  }
}

export interface RouteAuthConfig {
  /** Any one of these roles is required (403 TOKENGATE_FORBIDDEN otherwise). */
  roles: string[]
}

/** A route's policy, checked: authenticated only, or authenticated with one of `roles`. */
export type Policy = true | RouteAuthConfig

/**
 * Sets WWW-Authenticate on a 401: Bearer (RFC 6750 §3), and with DPoP on the DPoP challenge as RFC 9449 §7.1
 * words it (its error for a proof, a nonce, or a token presented with the DPoP scheme).
 */
export function challenge (reply: FastifyReply, err: { statusCode?: number, code?: string }): void {
  if (err.statusCode !== 401) return
  const algs = reply.server[kDpopAlgs]
  const invalid = INVALID_TOKEN_CODES.has(err.code ?? '')
  if (algs === null || algs === undefined) {
    reply.header('www-authenticate', invalid ? 'Bearer error="invalid_token"' : 'Bearer')
    return
  }
  if (err.code === 'TOKENGATE_DPOP_INVALID') reply.header('www-authenticate', `DPoP error="invalid_dpop_proof", algs="${algs}"`)
  else if (err.code === 'TOKENGATE_DPOP_NONCE') reply.header('www-authenticate', `DPoP error="use_dpop_nonce", algs="${algs}"`)
  else if (reply.request[kDpopScheme]) reply.header('www-authenticate', `DPoP ${invalid ? 'error="invalid_token", ' : ''}algs="${algs}"`)
  else reply.header('www-authenticate', `${invalid ? 'Bearer error="invalid_token"' : 'Bearer'}, DPoP algs="${algs}"`)
}

/** What is wrong with a roles list, or undefined when it is an array of at least one non-empty string. */
function rolesProblem (roles: unknown, field: string): string | undefined {
  if (!Array.isArray(roles)) return `${field} must be an array of role names, got ${describe(roles)}`
  if (roles.length === 0) return `${field} must hold at least one role (use auth: true for "any authenticated user")`
  const bad = roles.findIndex(r => typeof r !== 'string' || r === '')
  if (bad >= 0) return `${field}[${bad}] must be a non-empty string, got ${describe(roles[bad])}`
  return undefined
}

const describe = (v: unknown): string => v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'string' ? JSON.stringify(v) : typeof v

/**
 * Checks a route's `config.auth`: true, false or { roles: [non-empty strings, at least one] }. Returns the
 * policy (null for false), or a problem naming the field.
 */
export function checkPolicy (auth: unknown): { policy: Policy | null } | { problem: string } {
  if (auth === true) return { policy: true }
  if (auth === false) return { policy: null }
  if (auth === null || typeof auth !== 'object' || Array.isArray(auth)) {
    return { problem: `config.auth must be true, false or { roles: [...] }, got ${describe(auth)}` }
  }
  for (const key of Object.keys(auth)) {
    if (key !== 'roles') return { problem: `config.auth.${key} is not a known field (config.auth takes only roles)` }
  }
  if (!('roles' in auth)) return { problem: 'config.auth.roles is required (or use auth: true)' }
  const problem = rolesProblem((auth as { roles: unknown }).roles, 'config.auth.roles')
  return problem === undefined ? { policy: { roles: [...(auth as RouteAuthConfig).roles] } } : { problem }
}

const hasRole = (auth: AuthInfo, roles: readonly string[]): boolean => roles.some(r => auth.roles.includes(r))

type Guard = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => void

/** The onRequest hook for a checked policy: 401 (or the error the refresh hook kept) unless authenticated, 403 without a role. */
export function routePolicy (policy: Policy): Guard {
  const roles = policy === true ? undefined : policy.roles
  return function tokengateRoutePolicy (request, reply, done) {
    // (undefined on a request of a plugin context made before tokengate decorated requests: not authenticated)
    const auth = request.auth
    if (auth === null || auth === undefined) {
      const err = request[kAuthError] ?? new TokenMissingError()
      challenge(reply, err as TokengateError)
      done(err)
      return
    }
    if (roles === undefined || hasRole(auth, roles)) done()
    else done(new ForbiddenError())
  }
}

/**
 * The onRequest hook `config: { auth }` installs, for a policy chosen at run time (the gateway's forward
 * authentication applies its routes' policies this way). Throws a TypeError naming the problem for a policy
 * that does not check out; `false` lets every request through.
 */
export function authPolicy (auth: boolean | RouteAuthConfig): Guard {
  const checked = checkPolicy(auth)
  if ('problem' in checked) throw new TypeError(`tokengate: ${checked.problem}`)
  return checked.policy === null ? (_request, _reply, done) => { done() } : routePolicy(checked.policy)
}

/** A hook for a route whose policy did not check out: it never lets a request through. */
export function closedRoute (problem: string): Guard {
  return function tokengateClosedRoute (_request, _reply, done) {
    done(Object.assign(new Error(`tokengate: this route's auth policy is invalid (${problem})`), { statusCode: 500 }))
  }
}

/** `app.authenticate`: 401 (or the kept error) unless the request is authenticated. */
export const authenticate: Guard = routePolicy(true)

/** An onRequest hook requiring one of `roles` (after authenticate): 403 TOKENGATE_FORBIDDEN otherwise. */
export function requireRoles (roles: readonly string[]): Guard {
  const problem = rolesProblem(roles, 'requireRoles(roles): roles')
  if (problem !== undefined) throw new TypeError(`tokengate: ${problem}`)
  const list = [...roles]
  return function tokengateRoles (request, _reply, done) {
    if (request.auth !== null && request.auth !== undefined && hasRole(request.auth, list)) { done(); return }
    done(new ForbiddenError())
  }
}

/**
 * The verified identity of a request, typed as AuthInfo (no `!`): for handlers of protected routes.
 * Throws 401 TOKENGATE_TOKEN_MISSING (or the error the refresh hook kept) when the request has none.
 */
export function authOf (request: FastifyRequest): AuthInfo {
  if (request.auth !== null && request.auth !== undefined) return request.auth
  throw request[kAuthError] ?? new TokenMissingError()
}
