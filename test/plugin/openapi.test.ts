// OpenAPI: every route tokengate adds has complete request and response schemas (the login body, the
// 204s, the 401/403/429 failures, the security schemes), so @fastify/swagger describes the routes as they
// are. The gateway serves its document at GET /openapi.json.
import swagger from '@fastify/swagger'
import Fastify from 'fastify'
import t from 'tap'
import tokengate, { openapiSecuritySchemes, type TokengateOptions } from '../../plugin/index.js'
import { SECRET, verifyCredentials } from '../helpers/app.js'
import { startGateway } from '../helpers/gateway.js'

type Doc = { paths: Record<string, Record<string, any>>, components?: { securitySchemes?: Record<string, unknown> } }

t.test('@fastify/swagger describes every plugin route as it is', async t => {
  const app = Fastify({ logger: false })
  t.teardown(async () => { await app.close() })
  await app.register(swagger, { openapi: { info: { title: 'app', version: '1' }, components: { securitySchemes: { ...openapiSecuritySchemes } } } })
  await app.register(tokengate, { secret: SECRET, issuer: 'https://auth.example', dpop: {}, routes: { verifyCredentials, oauth: { introspectionClients: [{ id: 'rs', secret: 'rs-secret-0123456789' }] } } } as TokengateOptions)
  await app.ready()
  const doc = app.swagger() as unknown as Doc
  const op = (path: string, method: string): any => doc.paths[path]?.[method]

  const login = op('/auth/login', 'post')
  t.ok(login !== undefined, 'POST /auth/login is described')
  t.match(login.requestBody.content['application/json'].schema, { type: 'object', properties: { username: { type: 'string' }, password: { type: 'string' } } }, 'the login body')
  for (const code of ['200', '400', '401', '413', '429', '503']) t.ok(login.responses[code] !== undefined, `login answers ${code}`)
  t.match(login.responses['200'].content['application/json'].schema, { properties: { accessToken: { type: 'string' }, refreshToken: { type: 'string' }, tokenType: {}, expiresIn: { type: 'integer' } } }, 'a TokenPair')
  t.match(login.responses['401'].content['application/json'].schema, { properties: { statusCode: {}, code: {}, error: {}, message: {} } }, "failures in Fastify's error shape")

  const refresh = op('/auth/refresh', 'post')
  for (const code of ['200', '400', '401', '403', '429']) t.ok(refresh.responses[code] !== undefined, `refresh answers ${code}`)

  for (const [path, method] of [['/auth/logout', 'post'], ['/auth/logout-all', 'post'], ['/auth/sessions/{id}', 'delete']] as const) {
    const o = op(path, method)
    t.ok(o !== undefined, `${method.toUpperCase()} ${path} is described`)
    t.ok(o.responses['204'] !== undefined, `${path}: 204`)
    t.ok(o.responses['401'] !== undefined && o.responses['403'] !== undefined, `${path}: 401 and 403`)
    t.same(o.security, [{ bearer: [] }, { dpop: [] }], `${path}: Bearer or DPoP`)
  }
  t.ok(op('/auth/sessions/{id}', 'delete').responses['404'] !== undefined, 'DELETE /auth/sessions/{id}: 404')
  t.match(op('/auth/sessions', 'get').responses['200'].content['application/json'].schema, { type: 'array', items: { properties: { id: {}, createdAt: { format: 'date-time' }, current: { type: 'boolean' } } } })

  const token = op('/auth/token', 'post')
  t.ok(token.requestBody.content['application/x-www-form-urlencoded'] !== undefined, 'the token endpoint takes a form')
  t.ok(token.responses['200'] !== undefined && token.responses['400'] !== undefined)
  t.ok(op('/auth/revoke', 'post') !== undefined && op('/auth/introspect', 'post') !== undefined, 'revocation and introspection are described')
  t.same(op('/auth/introspect', 'post').security, [{ basic: [] }])
  t.ok(op('/.well-known/oauth-authorization-server', 'get') !== undefined, 'the metadata')
  t.same(Object.keys(doc.components?.securitySchemes ?? {}).sort(), ['basic', 'bearer', 'dpop'], 'the security schemes the routes name')
})

// @fastify/swagger registered the usual way, with no components of tokengate's: the document still builds
// and carries the schemes tokengate's routes name (a user's own schemes of the same name win).
t.test('@fastify/swagger registered without tokengate\'s schemes: the document builds and carries them', async t => {
  const build = async (swaggerOptions: Record<string, unknown>, order: 'swagger first' | 'tokengate first' | 'neither awaited'): Promise<Doc & { securityDefinitions?: Record<string, any> }> => {
    const app = Fastify({ logger: false })
    t.teardown(async () => { await app.close() })
    const options = { secret: SECRET, issuer: 'https://auth.example', routes: { verifyCredentials, oauth: { introspectionClients: [{ id: 'rs', secret: 'rs-secret-0123456789' }] } } } as TokengateOptions
    if (order === 'swagger first') {
      await app.register(swagger, swaggerOptions)
      await app.register(tokengate, options)
    } else if (order === 'tokengate first') {
      await app.register(tokengate, options)
      await app.register(swagger, swaggerOptions)
    } else {
      app.register(swagger, swaggerOptions)
      app.register(tokengate, options)
    }
    app.get('/mine', { schema: { summary: 'a route of the app' } }, async () => 'ok')
    await app.ready()
    return app.swagger() as unknown as Doc & { securityDefinitions?: Record<string, any> }
  }
  const info = { title: 'app', version: '1' }

  for (const order of ['swagger first', 'neither awaited'] as const) {
    const doc = await build({ openapi: { info } }, order)
    t.same(Object.keys(doc.components?.securitySchemes ?? {}).sort(), ['basic', 'bearer', 'dpop'], `OpenAPI 3, ${order}: the schemes`)
    t.match(doc.components?.securitySchemes, { bearer: { type: 'http', scheme: 'bearer' }, dpop: { type: 'http', scheme: 'dpop' }, basic: { type: 'http', scheme: 'basic' } })
    t.same(doc.paths['/auth/logout']?.post?.security, [{ bearer: [] }, { dpop: [] }], `OpenAPI 3, ${order}: the routes name them`)
    // (Not awaited, /mine is declared before @fastify/swagger loads: swagger's own rule, not tokengate's.)
    if (order === 'swagger first') t.ok(doc.paths['/mine']?.get !== undefined, `OpenAPI 3, ${order}: the app's own routes are there`)
  }

  const own = { bearer: { type: 'http', scheme: 'bearer', description: 'ours' }, apiKey: { type: 'apiKey', in: 'header', name: 'x-api-key' } }
  const mixed = await build({ openapi: { info, components: { securitySchemes: own } } }, 'swagger first')
  t.same(Object.keys(mixed.components?.securitySchemes ?? {}).sort(), ['apiKey', 'basic', 'bearer', 'dpop'], "the app's schemes and tokengate's")
  t.equal((mixed.components?.securitySchemes?.bearer as { description?: string }).description, 'ours', "an app's scheme of the same name is kept")
  t.same(Object.keys(own).sort(), ['apiKey', 'bearer'], "the app's options object is left as it was")

  const v2 = await build({ swagger: { info } }, 'swagger first')
  t.same(Object.keys(v2.securityDefinitions ?? {}).sort(), ['basic', 'bearer', 'dpop'], 'Swagger 2.0: the schemes as securityDefinitions')
  t.match(v2.securityDefinitions, { bearer: { type: 'apiKey', in: 'header', name: 'authorization' }, basic: { type: 'basic' } })
  const v2default = await build({}, 'swagger first')
  t.ok(v2default.securityDefinitions?.bearer !== undefined, "@fastify/swagger's default (Swagger 2.0) builds too")

  // Registered after tokengate, @fastify/swagger never hears of its routes (it collects routes as they are
  // declared): the document builds, without them.
  const after = await build({ openapi: { info } }, 'tokengate first')
  t.ok(after.paths['/mine']?.get !== undefined, 'swagger after tokengate: the document builds')
})

t.test('the gateway serves its document at GET /openapi.json', async t => {
  const { base } = await startGateway(t, { oauth: true, tokens: { issuer: 'https://auth.example' } })
  const res = await fetch(`${base}/openapi.json`)
  t.equal(res.status, 200)
  const doc = await res.json() as Doc & { openapi: string, info: { title: string } }
  t.match(doc.openapi, /^3\./)
  t.equal(doc.info.title, 'tokengate gateway')
  for (const path of ['/auth/login', '/auth/refresh', '/auth/logout', '/auth/token', '/healthz', '/readyz']) t.ok(doc.paths[path] !== undefined, `${path} is in the document`)
  t.match(doc.paths['/auth/login'].post.requestBody.content['application/json'].schema, { required: ['username', 'password'] }, 'with a users file the login body is { username, password }')
  t.ok(doc.components?.securitySchemes?.bearer !== undefined && doc.components?.securitySchemes?.dpop !== undefined)
})
