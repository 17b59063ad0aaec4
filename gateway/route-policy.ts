// A gateway route's policy, in one place: the proxied route, forward authentication and the config check all
// apply it as the plugin's `config: { auth }` takes it (checked by the plugin's checkPolicy).
import type { RouteAuthConfig } from '../plugin/index.js'
import type { RouteConfig } from './config.js'

/** undefined when the route is not 'required'; true when it asks for nothing more than a valid token. */
export function routePolicyOf (route: RouteConfig): true | RouteAuthConfig | undefined {
  if (route.auth !== 'required') return undefined
  if (route.roles === undefined && route.maxAge === undefined && route.acr === undefined) return true
  return {
    ...(route.roles !== undefined ? { roles: route.roles } : {}),
    ...(route.maxAge !== undefined ? { maxAge: route.maxAge } : {}),
    ...(route.acr !== undefined ? { acr: route.acr } : {})
  } as RouteAuthConfig
}
