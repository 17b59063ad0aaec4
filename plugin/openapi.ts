// The OpenAPI document of tokengate's routes with @fastify/swagger registered the usual way: the security
// schemes its routes name are added to the document as it is built, so the app passes none of its own.
import { openapiSecuritySchemes } from './routes.js'

/** The same schemes in Swagger 2.0's terms (its securityDefinitions know no http bearer). */
const swagger2SecurityDefinitions = {
  bearer: { type: 'apiKey', in: 'header', name: 'authorization', description: 'Bearer <access token> (RFC 9068 at+jwt), with x-refresh-token for the refresh hook' },
  dpop: { type: 'apiKey', in: 'header', name: 'authorization', description: 'DPoP <access token>, with a DPoP proof header (RFC 9449)' },
  basic: { type: 'basic', description: 'An introspection client (routes.oauth.introspectionClients)' }
} as const

interface TransformInput {
  schema: unknown
  url: string
  openapiObject?: { components?: { securitySchemes?: Record<string, unknown> } }
  swaggerObject?: { securityDefinitions?: Record<string, unknown> }
}

/**
 * @fastify/swagger's per-route transform (`config.swaggerTransform`) for tokengate's routes that name a
 * security scheme: it runs before the route is described, and adds the schemes the app has not defined
 * itself (an app's own scheme of the same name is kept). The objects it changes are the document's own,
 * made anew for each document; the app's options are not touched.
 */
export function describeSecuritySchemes ({ schema, url, openapiObject, swaggerObject }: TransformInput): { schema: unknown, url: string } {
  if (openapiObject !== undefined) {
    const components = openapiObject.components ??= {}
    components.securitySchemes = { ...openapiSecuritySchemes, ...components.securitySchemes }
  } else if (swaggerObject !== undefined) {
    swaggerObject.securityDefinitions = { ...swagger2SecurityDefinitions, ...swaggerObject.securityDefinitions }
  }
  return { schema, url }
}
