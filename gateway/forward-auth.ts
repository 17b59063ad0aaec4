// Forward authentication: nginx auth_request, Caddy forward_auth and Traefik ForwardAuth ask the gateway
// whether a request may pass. `forwardAuth: { path = '/auth/verify' }`: any method on that path authenticates
// the request it carries (its tokens, DPoP proof and CSRF header) for the ORIGINAL method and URI, from
// X-Forwarded-Method / X-Forwarded-Uri (Traefik, Caddy) or X-Original-Method / X-Original-URI (nginx). The
// route whose prefix matches that URI gives the policy, applied by the plugin's own route guard; the answer is
// 200 with the identity headers its upstream would get, or the guard's 401 / 403.
//
// The plugin's hook does the authentication (the refresh hook included: renewed tokens ride on the 200), told
// by the route's mark to check CSRF and DPoP proofs against the original request, not this one.
import http from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import { BadRequestError, authPolicy } from '../plugin/index.js'
import type { Assert } from './assertion.js'
import { ConfigError } from './config-error.js'
import type { GatewayConfig, RouteConfig } from './config.js'
import { identityHeaders, identityLikeHeader, routeAuth } from './upstreams.js'

/** Methods the original request may have: those Node's own HTTP parser accepts (upper-case, as sent). */
const METHODS = new Set(http.METHODS)
const MAX_URI = 8192

/** Gateway paths forwardAuth.path cannot take (exactly, or under the ones ending in '/'). */
const TAKEN = ['/auth/login', '/auth/refresh', '/auth/logout', '/auth/logout-all', '/auth/sessions', '/auth/sessions/', '/auth/token', '/auth/revoke', '/auth/introspect', '/auth/oidc/', '/healthz', '/readyz', '/metrics', '/openapi.json', '/.well-known/']

/** Whether `path` (decoded) falls under a route's `prefix`, as the route's proxy would take it. */
function under (prefix: string, path: string): boolean {
  return path === prefix || path.startsWith(prefix.endsWith('/') ? prefix : `${prefix}/`)
}

/** Refuses, naming the field, what forward authentication cannot serve. */
export function checkForwardAuth (config: GatewayConfig): void {
  for (const [i, r] of config.routes.entries()) {
    if (r.upstream !== undefined) continue
    if (config.forwardAuth === undefined) throw new ConfigError(`routes[${i}].upstream`, 'is required (a route without one only answers forward authentication: set forwardAuth)')
    if (r.websocket) throw new ConfigError(`routes[${i}].websocket`, 'needs an upstream')
    if (r.rewritePrefix !== undefined) throw new ConfigError(`routes[${i}].rewritePrefix`, 'needs an upstream')
  }
  const path = config.forwardAuth?.path
  if (path === undefined) return
  if (TAKEN.some(p => path === p || (p.endsWith('/') && path.startsWith(p)))) throw new ConfigError('forwardAuth.path', `is one of the gateway's own routes (${path})`)
  for (const [i, r] of config.routes.entries()) {
    if (r.prefix !== '/' && under(r.prefix, path)) throw new ConfigError('forwardAuth.path', `is under routes[${i}].prefix (${r.prefix}): choose a path no route serves (default /auth/verify)`)
  }
}

type Original =
  | { problem: string, consulted: boolean }
  | { method: string, uri: string, path: string, route: RouteConfig | undefined, consulted: boolean }

const kOriginal = Symbol('tokengate.gateway.original')

declare module 'fastify' {
  interface FastifyRequest {
    [kOriginal]: Original | null
  }
}

/** One request header, undefined when absent. */
function header (request: FastifyRequest, name: string): string | undefined {
  const v = request.headers[name]
  return Array.isArray(v) ? v.join(', ') : v
}

/**
 * The path of an original URI as a route matches it (decoded), or a problem. Anything two proxies could read
 * differently is refused rather than guessed: dot segments (`/public/../api`, encoded too), empty segments,
 * backslashes, encoded slashes and control characters, anything but an origin-form URI.
 */
function pathOf (uri: string): string | { problem: string } {
  if (uri.length > MAX_URI) return { problem: 'the original URI is too long' }
  if (!/^\/[\x21-\x7e]*$/.test(uri) || uri.startsWith('//')) return { problem: 'the original URI must be a path on this origin (/…), in visible ASCII' }
  if (uri.includes('#')) return { problem: 'the original URI has a fragment' }
  const q = uri.indexOf('?')
  const raw = q < 0 ? uri : uri.slice(0, q)
  if (/\\|%2f|%5c/i.test(raw)) return { problem: 'the original path has a backslash or an encoded slash' }
  let path: string
  try {
    path = decodeURIComponent(raw)
  } catch {
    return { problem: 'the original path has a malformed percent-encoding' }
  }
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(path)) return { problem: 'the original path has a control character' }
  const segments = path.split('/')
  if (segments.some((s, i) => s === '.' || s === '..' || (s === '' && i > 0 && i < segments.length - 1))) {
    return { problem: 'the original path has dot segments or empty segments (/./, /../, //)' }
  }
  return path
}

/** The original request's method, URI, path and matching route (longest prefix), read once per request. */
function originalOf (request: FastifyRequest, routes: readonly RouteConfig[]): Original {
  const cached = request[kOriginal]
  if (cached !== null && cached !== undefined) return cached
  const o = readOriginal(request, routes)
  request[kOriginal] = o
  return o
}

function readOriginal (request: FastifyRequest, routes: readonly RouteConfig[]): Original {
  const problem = (p: string): Original => ({ problem: p, consulted: false })
  const fm = header(request, 'x-forwarded-method')
  const fu = header(request, 'x-forwarded-uri')
  const om = header(request, 'x-original-method')
  const ou = header(request, 'x-original-uri')
  const forwarded = fm !== undefined || fu !== undefined
  const original = om !== undefined || ou !== undefined
  // One pair, never a mix: a client's own header of the other pair, passed on by a proxy that sets only its
  // own, must not choose what is checked.
  if (forwarded && original) return problem('both X-Forwarded-Method/X-Forwarded-Uri and X-Original-Method/X-Original-URI are present: the proxy must send one pair')
  if (!forwarded && !original) return problem('the original request is missing: send X-Forwarded-Method and X-Forwarded-Uri, or X-Original-Method and X-Original-URI')
  const [mName, uName, method, uri] = forwarded ? ['X-Forwarded-Method', 'X-Forwarded-Uri', fm, fu] : ['X-Original-Method', 'X-Original-URI', om, ou]
  // A client's own identity header would reach the app beside (or instead of) the proxy's: refused, never passed.
  const spoof = identityLikeHeader(request.headers)
  if (spoof !== undefined) return problem(`the request carries ${JSON.stringify(spoof.slice(0, 64))}, a name of the identity headers the gateway sets: a proxy passes a client's own on to the app`)
  if (method === undefined) return problem(`${mName} is required with ${uName}`)
  if (uri === undefined) return problem(`${uName} is required with ${mName}`)
  if (!METHODS.has(method)) return problem(`${mName} is not an HTTP method`)
  const path = pathOf(uri)
  if (typeof path !== 'string') return problem(path.problem)
  let route: RouteConfig | undefined
  for (const r of routes) if (under(r.prefix, path) && (route === undefined || r.prefix.length > route.prefix.length)) route = r
  return { method, uri, path, route, consulted: false }
}

/**
 * `options`: the config's forwardAuth (where; whether the refresh hook renews there); `routes`: the route table;
 * `asserts`: the assertion of each route that has one.
 */
export function registerForwardAuth (app: FastifyInstance, options: { path: string, refresh: boolean }, routes: readonly RouteConfig[], asserts: ReadonlyMap<RouteConfig, Assert>): void {
  const path = options.path
  app.decorateRequest(kOriginal, null)
  // Each route's policy, as the plugin's route guard applies it on the proxied route.
  const guards = new Map<RouteConfig, ReturnType<typeof authPolicy>>()
  for (const r of routes) {
    const auth = routeAuth(r)
    if (auth !== undefined) guards.set(r, authPolicy(auth))
  }

  /** For the plugin's hook: the request to authenticate, or null when there is none (or none to authenticate). */
  const forwarded = (request: FastifyRequest): { method: string, url: string } | null => {
    const o = originalOf(request, routes)
    o.consulted = true
    if ('problem' in o || o.route === undefined || o.route.auth === 'public') return null
    return { method: o.method, url: `${request.protocol}://${request.host}${o.uri}` }
  }

  const guarded = async (guard: ReturnType<typeof authPolicy>, request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    await new Promise<void>((resolve, reject) => {
      (guard as (q: FastifyRequest, r: FastifyReply, d: HookHandlerDoneFunction) => void)(request, reply, (err?: Error) => { if (err === undefined || err === null) resolve(); else reject(err) })
    })
  }

  app.register(async (scope) => {
    // The body of the request asked about is not this request's business: read and dropped, whatever its type.
    scope.removeAllContentTypeParsers()
    scope.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, _body, done) => { done(null, undefined) })
    scope.all(path, {
      config: { tokengate: { forwarded, refresh: options.refresh } },
      schema: { hide: true }
    }, async (request, reply) => {
      // Never cached by anyone: the answer is about one client's tokens (and may carry new ones).
      reply.header('cache-control', 'no-store')
      const o = originalOf(request, routes)
      if ('problem' in o) throw new BadRequestError(o.problem)
      const route = o.route
      if (route === undefined) {
        const q = o.uri.indexOf('?')
        throw Object.assign(new Error(`Route ${o.method}:${(q < 0 ? o.uri : o.uri.slice(0, q)).slice(0, 256)} not found`), { statusCode: 404, code: 'FST_ERR_NOT_FOUND' })
      }
      const guard = guards.get(route)
      if (guard !== undefined) await guarded(guard, request, reply)
      const auth = request.auth
      if (auth !== null && route.auth !== 'public') {
        // Only the hook, told which request this is, may have authenticated it (never against this request's own
        // method and URL).
        if (!o.consulted) throw Object.assign(new Error('tokengate: forward authentication: the request was authenticated without its original method and URI'), { statusCode: 500 })
        const h: Record<string, string> = {}
        identityHeaders(h, auth, asserts.get(route))
        // An identity no header can carry as it is (a line break in a user id) is refused, never sent mangled.
        if (Object.values(h).some(v => /[^\t\x20-\x7e\x80-\xff]/.test(v))) throw Object.assign(new Error('tokengate: forward authentication: the identity cannot be sent in a header'), { statusCode: 500 })
        reply.headers(h)
      }
      return await reply.code(200).send()
    })
  })
}
