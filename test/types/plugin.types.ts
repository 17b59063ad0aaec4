// A TypeScript user's view of tokengate. Never run: only type-checked by `npm run typecheck`
// (tsconfig.json includes test/**). Every `@ts-expect-error` below must really be an error.
import Fastify, { type FastifyReply, type FastifyRequest, type onRequestHookHandler, type RouteShorthandOptions } from 'fastify'
import { Redis } from 'ioredis'
import tokengate, {
  authOf,
  requireAuth,
  requireRoles,
  authPolicy,
  type AuthInfo,
  type SessionInfo,
  type TokenPair,
  type TokengateOptions,
  OAuthSchema,
  type OAuthOptions,
  type UserInfo,
  type VerifyCredentials,
  TokenPairSchema
} from '../../plugin/index.js'
import { Type, type Static } from '@sinclair/typebox'
import type { SessionInfo as ClientSessionInfo, TokenPair as ClientTokenPair } from '../../client/index.js'

/** Compiles only if `v` is assignable to T. */
function expectType<T> (_v: T): void {}
/** true only if A and B are the same type (not merely assignable). */
type Equal<A, B> = (<X>() => X extends A ? 1 : 2) extends (<X>() => X extends B ? 1 : 2) ? true : false

export async function userApp (): Promise<void> {
  const app = Fastify()

  const options: TokengateOptions = {
    secret: 'x'.repeat(64),
    redis: 'redis://127.0.0.1:6379',
    keyPrefix: 'myapp',
    accessTokenTtl: '10m',
    refreshTokenTtl: 86400,
    issuer: 'https://auth.example',
    audience: ['api', 'admin'],
    clockTolerance: '5s',
    transport: ['header', 'cookie'],
    rotateRefreshTokens: true,
    reuseGraceMs: 10_000,
    renewExpiredRefresh: true,
    maxSessionAge: '30d',
    cookie: { secure: true },
    routes: {
      prefix: '/auth',
      verifyCredentials: async (body, request) => {
        expectType<unknown>(body)
        expectType<Equal<typeof body, unknown>>(true) // unannotated: unknown, never any
        expectType<FastifyRequest>(request)
        return { sub: 'u1', roles: ['user'], claims: { name: 'Alice' } }
      }
    },
    refreshClaims: async (userId, sessionId) => {
      expectType<string>(userId)
      expectType<string>(sessionId)
      return { roles: ['user'] }
    },
    onIssue: (userId, sessionId, meta) => {
      expectType<string>(userId)
      expectType<string>(sessionId)
      expectType<string | undefined>(meta.ip)
    },
    onRevoke: async (_userId, _sessionId, meta) => { expectType<string | undefined>(meta.reason) }
  }
  await app.register(tokengate, options)

  // Options written inline in register() are checked too.
  await app.register(tokengate, { secret: 'x'.repeat(64), redis: new Redis(), accessTokenTtl: 90 })

  // @ts-expect-error unknown option name (a typo of `secret`)
  await app.register(tokengate, { secrett: 'x'.repeat(64) })
  // @ts-expect-error unknown option name in a typed options object
  const typo: TokengateOptions = { secret: 'x'.repeat(64), acessTokenTtl: '10m' }
  expectType<TokengateOptions>(typo)
  // @ts-expect-error transport takes 'header' | 'cookie'
  await app.register(tokengate, { secret: 'x'.repeat(64), transport: ['carrier-pigeon'] })
  // @ts-expect-error reuseGraceMs is a number of milliseconds
  await app.register(tokengate, { secret: 'x'.repeat(64), reuseGraceMs: 'soon' })
  // @ts-expect-error an audit hook is a function
  await app.register(tokengate, { secret: 'x'.repeat(64), onIssue: 'x' })
  // @ts-expect-error verifyCredentials is a function
  await app.register(tokengate, { secret: 'x'.repeat(64), routes: { verifyCredentials: 42 } })

  // verifyCredentials with a typed body: the shape routes.loginBody validates before the callback runs.
  interface LoginBody { email: string, password: string }
  await app.register(tokengate, {
    secret: 'x'.repeat(64),
    routes: {
      loginBody: { type: 'object', required: ['email', 'password'], properties: { email: { type: 'string' }, password: { type: 'string' } } },
      verifyCredentials: async (body: LoginBody, request) => {
        expectType<string>(body.email)
        expectType<FastifyRequest>(request)
        return body.password === 'x' ? { sub: body.email } : null
      }
    }
  })
  // The same body from a TypeBox schema.
  const LoginSchema = Type.Object({ username: Type.String(), password: Type.String() })
  const typedRoutes: TokengateOptions['routes'] = {
    loginBody: LoginSchema,
    verifyCredentials: async ({ username }: Static<typeof LoginSchema>) => ({ sub: username })
  }
  await app.register(tokengate, { secret: 'x'.repeat(64), routes: typedRoutes })
  const verify: VerifyCredentials<LoginBody> = async (body) => {
    expectType<string>(body.email)
    return null
  }
  await app.register(tokengate, { secret: 'x'.repeat(64), routes: { verifyCredentials: verify } })
  // @ts-expect-error verifyCredentials resolves to { sub } or null
  await app.register(tokengate, { secret: 'x'.repeat(64), routes: { verifyCredentials: async (body: LoginBody) => body.email } })

  // Decorators.
  const pair = await app.tokengate.issue({ sub: 'u1', roles: ['user'], claims: { name: 'Alice' } }, { ip: '127.0.0.1', userAgent: 'ua' })
  expectType<TokenPair>(pair)
  expectType<Equal<typeof pair, TokenPair>>(true)
  expectType<Equal<ReturnType<typeof app.tokengate.issue>, Promise<TokenPair>>>(true)
  expectType<string>(pair.accessToken)
  expectType<string>(pair.refreshToken)
  expectType<'Bearer' | 'DPoP'>(pair.tokenType)
  expectType<number>(pair.expiresIn)
  expectType<number>(pair.refreshExpiresIn)
  expectType<string>(pair.sessionId)
  expectType<Promise<TokenPair>>(app.tokengate.refresh(pair.refreshToken))
  expectType<Promise<AuthInfo>>(app.tokengate.verify(pair.accessToken))
  expectType<Promise<boolean>>(app.tokengate.revokeSession('u1', pair.sessionId))
  expectType<Promise<number>>(app.tokengate.revokeAll('u1'))
  expectType<Promise<SessionInfo[]>>(app.tokengate.listSessions('u1'))
  const user: UserInfo = { sub: 'u2' }
  await app.tokengate.issue(user)

  // @ts-expect-error issue() needs a user with a `sub`
  await app.tokengate.issue({})
  // @ts-expect-error sub is a string
  await app.tokengate.issue({ sub: 1 })
  // @ts-expect-error roles is a string array
  await app.tokengate.issue({ sub: 'u1', roles: 'admin' })
  // @ts-expect-error verify() takes the token string
  await app.tokengate.verify({ token: pair.accessToken })
  // @ts-expect-error TokenPair.accessToken is a string
  expectType<number>(pair.accessToken)

  // app.authenticate as an onRequest hook, alone, in an array, and next to requireRoles.
  expectType<onRequestHookHandler>(app.authenticate)
  app.get('/me', { onRequest: app.authenticate }, async (request) => {
    const id = request.auth?.userId
    expectType<string | undefined>(id)
    expectType<string>(request.auth!.userId)
    expectType<Equal<typeof request.auth, AuthInfo | null>>(true)
    expectType<Equal<AuthInfo['userId'], string>>(true)
    expectType<string>(request.auth!.sessionId)
    expectType<readonly string[]>(request.auth!.roles)
    expectType<unknown>(request.auth!.claims.name)
    expectType<string>(request.auth!.token)
    if (request.auth !== null) expectType<string>(request.auth.userId)

    // @ts-expect-error request.auth may be null, and userId is a string
    request.auth.userId = 1
    // @ts-expect-error userId is a string, even on a non-null auth
    request.auth!.userId = 1
    // @ts-expect-error roles are read-only
    request.auth!.roles.push('admin')
    // @ts-expect-error request.auth may be null on an anonymous request
    expectType<string>(request.auth.userId)

    // authOf: the identity typed as AuthInfo, or a 401 thrown.
    const auth = authOf(request)
    expectType<string>(auth.userId)
    expectType<readonly string[]>(auth.roles)

    return { userId: request.auth!.userId }
  })
  app.post('/admin', { onRequest: [app.authenticate, requireRoles(['admin'])] }, async (_request: FastifyRequest, reply: FastifyReply) => {
    return await reply.code(204).send()
  })
  // authPolicy: the hook config.auth installs, for a policy chosen at run time.
  app.get('/ops', { onRequest: authPolicy({ roles: ['ops'] }) }, async () => ({ ok: true }))
  app.get('/any', { onRequest: [authPolicy(true)] }, async () => ({ ok: true }))
  // @ts-expect-error roles is a string array
  authPolicy({ roles: 'ops' })

  // Per-route config.
  app.get('/admin/report', { config: { auth: { roles: ['admin'] } } }, async (request) => ({ by: request.auth?.userId ?? null }))
  app.get('/private', { config: { auth: true } }, async () => ({ ok: true }))
  app.route({ method: 'GET', url: '/public', config: { auth: false }, handler: async () => ({ ok: true }) })
  // @ts-expect-error roles is a string array
  app.get('/bad1', { config: { auth: { roles: 'admin' } } }, async () => ({}))
  // @ts-expect-error auth is true, false or { roles }
  const bad2: RouteShorthandOptions = { config: { auth: 'required' } }
  app.get('/bad2', bad2, async () => ({}))
  // @ts-expect-error roles is a string array (in typed route options too)
  const bad3: RouteShorthandOptions = { config: { auth: { roles: 'admin' } } }
  app.get('/bad3', bad3, async () => ({}))
  const good: RouteShorthandOptions = { config: { auth: { roles: ['admin'] } } }
  app.get('/good', good, async () => ({}))
  // Step-up (RFC 9470): maxAge (a duration or seconds) and/or acr, with or without roles.
  app.get('/fresh', { config: { auth: { maxAge: '5m' } } }, async () => ({}))
  app.get('/fresh-s', { config: { auth: { maxAge: 300 } } }, async () => ({}))
  app.get('/mfa', { config: { auth: { acr: ['mfa'], roles: ['admin'] } } }, async (request) => ({ acr: request.auth?.acr ?? null, at: request.auth?.authTime ?? 0 }))
  // @ts-expect-error acr is a string array
  app.get('/bad4', { config: { auth: { acr: 'mfa' } } }, async () => ({}))
  // @ts-expect-error a policy asks for something: roles, maxAge or acr
  app.get('/bad5', { config: { auth: {} } }, async () => ({}))
  app.post('/manual', { onRequest: [app.authenticate, requireAuth({ maxAge: '5m', acr: ['mfa'] })] }, async () => ({}))
  await app.tokengate.issue({ sub: 'u1', acr: 'mfa', amr: ['pwd', 'otp'] })
  // @ts-expect-error amr is a string array
  await app.tokengate.issue({ sub: 'u1', amr: 'pwd' })

  await app.ready()
}

// routes.oauth's type is the schema's (one definition: the two cannot drift apart).
export function oauthOptionsAreTheSchema (): void {
  expectType<Equal<OAuthOptions, Exclude<Static<typeof OAuthSchema>, boolean>>>(true)
  const o: OAuthOptions = { introspectionClients: [{ id: 'rs', secret: 'rs-secret-0123456789' }] }
  expectType<OAuthOptions>(o)
}

// tokengate/client keeps its own copies of the server's JSON shapes (it imports nothing, so a browser
// build pulls in no server types): they must stay the same types as the plugin's. The login answer is the
// JSON the plugin's TokenPairSchema describes: the tokens optional (cookie transport keeps them out of the body).
export function clientShapesMatchTheServer (): void {
  expectType<Equal<ClientTokenPair, Static<typeof TokenPairSchema>>>(true)
  // Over HTTP every session says whether it is the caller's: `current` is always there for the client.
  expectType<Equal<ClientSessionInfo, Required<SessionInfo>>>(true)
}
