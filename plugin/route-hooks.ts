// Where tokengate's hooks (and the gateway's) sit among a route's own hooks: one helper, used everywhere.
//
// The order of a request's work:
//   1. onRequest, on every route: tokengate's hook (plugin/hook.ts). It reads the tokens and checks them:
//      the signature or MAC first, then the CSRF token, the DPoP proof, the revocation; it refreshes an
//      expired access token. It never answers: it sets request.auth, or keeps the error.
//   2. onRequest, the route's own hooks, first to last:
//      - [gateway] the request id, echoed on the gateway's own routes; the per-IP limit on login and refresh;
//      - tokengate's policy guard (`config: { auth }`): 401 with the kept error, 403, or step-up 401;
//      - the route's own onRequest hooks (the gateway's WebSocket note runs after the guard let it through).
//   3. The handler (or the proxy); 4. onResponse: the route's own, then [gateway] metrics and the access log.
import type { RouteOptions } from 'fastify'

type HookName = 'onRequest' | 'onResponse'

/** Adds `hook` to a route's own `name` hooks (in an onRoute hook), first or last among them. */
export function addRouteHook (route: RouteOptions, name: HookName, hook: unknown, where: 'first' | 'last'): void {
  const current = route[name] as unknown
  const existing = current === undefined ? [] : Array.isArray(current) ? current : [current]
  route[name] = (where === 'first' ? [hook, ...existing] : [...existing, hook]) as never
}
