// Route guards: `authenticate`, per-route policies (`config: { auth: true | { roles, maxAge, acr } }`),
// requireRoles and requireAuth. A policy is checked when its route is registered: a typo closes the route,
// it never opens it. maxAge and acr are RFC 9470 step-up: a token whose authentication is too old, or of
// another class, is answered 401 TOKENGATE_STEP_UP_REQUIRED with a challenge saying what would do.
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import { ForbiddenError, INVALID_TOKEN_CODES, StepUpRequiredError, TokenMissingError, type TokengateError } from './errors.js'
import { durationMs, OptionError, type Duration } from './options.js'
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

interface PolicyFields {
  /** Any one of these roles is required (403 TOKENGATE_FORBIDDEN otherwise). */
  roles?: string[]
  /**
   * The user must have authenticated at most this long ago (the token's auth_time; a refresh does not count):
   * a duration ('5m', '300s', …) or a number of seconds, at least 1 s and whole seconds. Else 401
   * TOKENGATE_STEP_UP_REQUIRED.
   */
  maxAge?: Duration
  /** The token's acr must be one of these (401 TOKENGATE_STEP_UP_REQUIRED otherwise). */
  acr?: string[]
}

/** A route's policy: at least one of roles, maxAge and acr. */
export type RouteAuthConfig =
  | (PolicyFields & { roles: string[] })
  | (PolicyFields & { maxAge: Duration })
  | (PolicyFields & { acr: string[] })

/** A policy as checked: maxAge in seconds. */
export interface CheckedPolicy { roles?: string[], maxAge?: number, acr?: string[] }

/** A route's policy, checked: authenticated only (true), or with roles and/or step-up requirements. */
export type Policy = true | CheckedPolicy

/** What a step-up challenge names: the route's requirements (RFC 9470 max_age, acr_values). */
interface StepUp { description: string, maxAge?: number, acr?: string[] }
const kStepUp = Symbol('tokengate.stepUp')
type StepUpError = TokengateError & { [kStepUp]?: StepUp }

/**
 * Sets WWW-Authenticate on a 401: Bearer (RFC 6750 §3), and with DPoP on the DPoP challenge as RFC 9449 §7.1
 * words it (its error for a proof, a nonce, or a token presented with the DPoP scheme).
 */
export function challenge (reply: FastifyReply, err: { statusCode?: number, code?: string }): void {
  if (err.statusCode !== 401) return
  const algs = reply.server[kDpopAlgs]
  const stepUp = (err as StepUpError)[kStepUp]
  if (stepUp !== undefined) {
    // RFC 9470 §3, in the scheme the token came with (RFC 9449 §7.1 for a DPoP-bound one).
    let params = `error="insufficient_user_authentication", error_description="${stepUp.description}"`
    if (stepUp.maxAge !== undefined) params += `, max_age=${stepUp.maxAge}`
    if (stepUp.acr !== undefined) params += `, acr_values="${stepUp.acr.join(' ')}"`
    if (algs === null || algs === undefined) reply.header('www-authenticate', `Bearer ${params}`)
    else if (reply.request[kDpopScheme]) reply.header('www-authenticate', `DPoP ${params}, algs="${algs}"`)
    else reply.header('www-authenticate', `Bearer ${params}, DPoP algs="${algs}"`)
    return
  }
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

/** maxAge in whole seconds (at least 1), or a problem naming the field. */
function maxAgeOf (value: unknown, field: string): number | { problem: string } {
  if (typeof value !== 'string' && typeof value !== 'number') {
    return { problem: `${field} must be a duration ('5m', '300s', '1h', …) or a number of seconds, got ${describe(value)}` }
  }
  let ms: number
  try {
    ms = durationMs(value, field)
  } catch (err) {
    return { problem: `${field} ${(err as OptionError).problem}` }
  }
  // auth_time is in whole seconds, and so is the challenge's max_age.
  if (!Number.isFinite(ms) || ms < 1000 || ms % 1000 !== 0) return { problem: `${field} must be a whole number of seconds, at least 1s, got ${JSON.stringify(value)}` }
  return ms / 1000
}

/** An acr value goes into acr_values="…" (space-separated): visible ASCII without space, quote or backslash. */
const ACR_VALUE = /^[\x21\x23-\x5b\x5d-\x7e]+$/

function acrProblem (acr: unknown, field: string): string | undefined {
  if (!Array.isArray(acr)) return `${field} must be an array of acr values (any one suffices), got ${describe(acr)}`
  if (acr.length === 0) return `${field} must hold at least one acr value`
  const bad = acr.findIndex(a => typeof a !== 'string' || !ACR_VALUE.test(a))
  if (bad >= 0) return `${field}[${bad}] must be a non-empty string of visible ASCII without spaces, quotes or backslashes, got ${describe(acr[bad])}`
  return undefined
}

const POLICY_FIELDS = new Set(['roles', 'maxAge', 'acr'])

/**
 * Checks a route's `config.auth`: true, false or { roles?, maxAge?, acr? } with at least one of them (roles:
 * non-empty strings, at least one; maxAge: a duration of whole seconds, at least 1 s; acr: non-empty strings
 * without spaces, at least one). Returns the policy (null for false), or a problem naming the field. `field`
 * names the policy in problems (the gateway passes its route's own name). The one check every caller uses.
 */
export function checkPolicy (auth: unknown, field = 'config.auth'): { policy: Policy | null } | { problem: string } {
  if (auth === true) return { policy: true }
  if (auth === false) return { policy: null }
  if (auth === null || typeof auth !== 'object' || Array.isArray(auth)) {
    return { problem: `${field} must be true, false or { roles, maxAge, acr }, got ${describe(auth)}` }
  }
  for (const key of Object.keys(auth)) {
    if (!POLICY_FIELDS.has(key)) return { problem: `${field}.${key} is not a known field (${field} takes roles, maxAge and acr)` }
  }
  // A field that is present is checked, even when undefined: `roles: undefined` (an unset variable) is a problem.
  const a = auth as Record<string, unknown>
  if (!('roles' in a) && !('maxAge' in a) && !('acr' in a)) return { problem: `${field}.roles, ${field}.maxAge or ${field}.acr is required (or use auth: true)` }
  const policy: CheckedPolicy = {}
  if ('roles' in a) {
    const problem = rolesProblem(a.roles, `${field}.roles`)
    if (problem !== undefined) return { problem }
    policy.roles = [...a.roles as string[]]
  }
  if ('maxAge' in a) {
    const maxAge = maxAgeOf(a.maxAge, `${field}.maxAge`)
    if (typeof maxAge !== 'number') return maxAge
    policy.maxAge = maxAge
  }
  if ('acr' in a) {
    const problem = acrProblem(a.acr, `${field}.acr`)
    if (problem !== undefined) return { problem }
    policy.acr = [...a.acr as string[]]
  }
  return { policy }
}

/**
 * What an authenticated identity lacks under a checked policy: 403 TOKENGATE_FORBIDDEN without one of its
 * roles (a step-up would not help), else 401 TOKENGATE_STEP_UP_REQUIRED when its authentication is older than
 * maxAge or its acr is not one of acr (the challenge then names every requirement of the policy); undefined
 * when it passes.
 */
export function policyError (policy: Policy, auth: AuthInfo, now = Date.now()): TokengateError | undefined {
  if (policy === true) return undefined
  if (policy.roles !== undefined && !hasRole(auth, policy.roles)) return new ForbiddenError() as TokengateError
  // auth_time is whole seconds: stale once now is past auth_time + maxAge (never admits an older authentication).
  const stale = policy.maxAge !== undefined && !(now <= (auth.authTime + policy.maxAge) * 1000)
  const weak = policy.acr !== undefined && (auth.acr === undefined || !policy.acr.includes(auth.acr))
  if (!stale && !weak) return undefined
  const description = stale && weak
    ? 'More recent authentication at a different level is required'
    : stale ? 'More recent authentication is required' : 'A different authentication level is required'
  const err = new StepUpRequiredError(description) as StepUpError
  err[kStepUp] = { description, ...(policy.maxAge !== undefined ? { maxAge: policy.maxAge } : {}), ...(policy.acr !== undefined ? { acr: policy.acr } : {}) }
  return err
}

const hasRole = (auth: AuthInfo, roles: readonly string[]): boolean => roles.some(r => auth.roles.includes(r))

type Guard = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => void

/**
 * The onRequest hook for a checked policy: 401 (or the error the refresh hook kept) unless authenticated, 403
 * without a role, 401 TOKENGATE_STEP_UP_REQUIRED (with its challenge) when maxAge or acr is not met.
 */
export function routePolicy (policy: Policy): Guard {
  if (policy !== true && (policy.maxAge !== undefined || policy.acr !== undefined)) return stepUpPolicy(policy)
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

/** routePolicy for a policy with maxAge or acr (routes without them pay nothing for it). */
function stepUpPolicy (policy: CheckedPolicy): Guard {
  return function tokengateStepUpPolicy (request, reply, done) {
    const auth = request.auth
    if (auth === null || auth === undefined) {
      const err = request[kAuthError] ?? new TokenMissingError()
      challenge(reply, err as TokengateError)
      done(err)
      return
    }
    const err = policyError(policy, auth)
    if (err !== undefined) challenge(reply, err)
    done(err)
  }
}

/**
 * An onRequest hook for a policy applied by hand: `requireAuth({ maxAge: '5m', acr: ['mfa'], roles? })`, as
 * config.auth takes it (401 unless authenticated, 403 without a role, 401 TOKENGATE_STEP_UP_REQUIRED). Throws
 * a TypeError at once for a policy that does not check out.
 */
export function requireAuth (policy: RouteAuthConfig): Guard {
  const checked = checkPolicy(policy, 'requireAuth(policy)')
  if ('problem' in checked) throw new TypeError(`tokengate: ${checked.problem}`)
  if (checked.policy === null || checked.policy === true) throw new TypeError('tokengate: requireAuth(policy) takes { roles, maxAge, acr }')
  return routePolicy(checked.policy)
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
