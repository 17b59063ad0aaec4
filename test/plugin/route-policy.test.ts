// A typo in a route policy must close the route, never open it: `config.auth` is checked when the route is
// registered, and anything but true, false or { roles: [non-empty strings, at least one] } makes
// app.ready() fail with a message naming the route and the field.
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import tokengate, { authOf, authPolicy, requireRoles } from '../../plugin/index.js'
import { SECRET, USERS } from '../helpers/app.js'

async function appWith (auth: unknown): Promise<{ ready: Promise<unknown>, token: string, inject: () => Promise<{ statusCode: number, body: string }> }> {
  const app = Fastify({ logger: false })
  await app.register(tokengate, { secret: SECRET })
  app.get('/admin', { config: { auth: auth as never } }, async () => ({ secret: 'admin only' }))
  const pair = await app.tokengate.issue(USERS.alice.user) // alice has role user, not admin
  const ready = Promise.resolve(app.ready())
  ready.catch(() => {})
  return {
    ready,
    token: pair.accessToken,
    inject: async () => await app.inject({ url: '/admin', headers: { authorization: `Bearer ${pair.accessToken}` } })
  }
}

const typos: Array<[string, unknown, RegExp]> = [
  ['{ role: [admin] } (roles misspelt)', { role: ['admin'] }, /GET \/admin.*config\.auth\.role/],
  ["roles: 'admin' (a string, not an array)", { roles: 'admin' }, /GET \/admin.*config\.auth\.roles/],
  ['roles: [] (no role at all)', { roles: [] }, /GET \/admin.*config\.auth\.roles/],
  ["roles: ['admin', ''] (an empty role)", { roles: ['admin', ''] }, /GET \/admin.*config\.auth\.roles/],
  ['roles: [1]', { roles: [1] }, /GET \/admin.*config\.auth\.roles/],
  ['{} (no roles)', {}, /GET \/admin.*config\.auth\.roles/],
  ["'required' (a string)", 'required', /GET \/admin.*config\.auth/],
  ['1 (a number)', 1, /GET \/admin.*config\.auth/],
  ['null', null, /GET \/admin.*config\.auth/]
]

for (const [name, auth, message] of typos) {
  t.test(`config.auth ${name}: app.ready() fails naming the route and the field; the route never answers`, async t => {
    const { ready, inject } = await appWith(auth)
    await t.rejects(ready, message)
    // Whatever a caller does next, the route does not serve its content.
    const res = await inject().catch((err: Error) => ({ statusCode: 0, body: err.message }))
    t.not(res.statusCode, 200, `not served (${res.statusCode})`)
    t.notMatch(res.body, /admin only/)
  })
}

t.test('valid policies: true, false and { roles } register; roles are enforced', async t => {
  for (const [auth, status] of [[true, 200], [false, 200], [{ roles: ['user'] }, 200], [{ roles: ['admin'] }, 403], [{ roles: ['admin', 'user'] }, 200]] as const) {
    const { ready, inject } = await appWith(auth)
    await ready
    const res = await inject()
    t.equal(res.statusCode, status, `${JSON.stringify(auth)} → ${status}`)
  }
})

t.test('requireRoles takes an array of non-empty strings; anything else throws at once', async t => {
  t.throws(() => requireRoles('admin' as never), /requireRoles.*array/)
  t.throws(() => requireRoles([] as never), /requireRoles.*at least one/)
  t.throws(() => requireRoles(['admin', ''] as never), /requireRoles/)
  t.type(requireRoles(['admin']), 'function')
})

t.test('authOf(request): the identity on a protected route; 401 (or the kept error) where there is none', async t => {
  const app = Fastify({ logger: false })
  await app.register(tokengate, { secret: SECRET })
  app.get('/who', async (request) => ({ userId: authOf(request).userId }))
  const pair = await app.tokengate.issue(USERS.alice.user)
  const ok = await app.inject({ url: '/who', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(ok.statusCode, 200)
  t.same(ok.json(), { userId: 'u-alice' })
  const none = await app.inject({ url: '/who' })
  t.equal(none.statusCode, 401)
  t.equal(none.json().code, 'TOKENGATE_TOKEN_MISSING')
  const bad = await app.inject({ url: '/who', headers: { authorization: 'Bearer not-a-token' } })
  t.equal(bad.statusCode, 401)
  t.equal(bad.json().code, 'TOKENGATE_TOKEN_INVALID', 'the error the hook kept')
})

t.test('an invalid policy is reported once per route (not again for the HEAD route Fastify adds)', async t => {
  const app = Fastify({ logger: false })
  t.teardown(async () => { await app.close() })
  await app.register(tokengate, { secret: SECRET })
  app.get('/d', { config: { auth: { role: ['admin'] } as never } }, async () => 'd')
  app.route({ method: ['POST', 'PUT'], url: '/e', config: { auth: 'yes' as never }, handler: async () => 'e' })
  const err = await Promise.resolve(app.ready()).then(() => null, (e: Error) => e)
  t.match(err?.message, /route GET \/d: config\.auth\.role/)
  t.match(err?.message, /route POST,PUT \/e: config\.auth/)
  t.equal(err?.message.match(/\/d:/g)?.length, 1, `GET /d once (${err?.message})`)
  t.notMatch(err?.message, /HEAD \/d/)
})

// `app.register(tokengate)` without await, then routes: they are declared before tokengate has loaded, so
// before its onRoute hook exists. Their `config.auth` must hold all the same, with the same answers as on
// routes declared after it loaded.
t.test('config.auth holds whatever the registration order', async t => {
  for (const order of ['awaited', 'not awaited', 'in a plugin registered before'] as const) {
    await t.test(order, async t => {
      const app = Fastify({ logger: false })
      t.teardown(async () => { await app.close() })
      const routes = async (scope: FastifyInstance): Promise<void> => {
        scope.get('/b', { config: { auth: true } }, async (request) => ({ user: request.auth?.userId }))
        scope.get('/admin', { config: { auth: { roles: ['admin'] } } }, async () => ({ secret: 'admin only' }))
        scope.get('/off', { config: { auth: false } }, async () => ({ open: true }))
        scope.get('/plain', async (request) => ({ user: request.auth }))
      }
      if (order === 'awaited') {
        await app.register(tokengate, { secret: SECRET })
        await routes(app)
      } else if (order === 'not awaited') {
        app.register(tokengate, { secret: SECRET })
        await routes(app)
      } else {
        // The routes in a plugin of their own, registered before tokengate.
        app.register(routes)
        app.register(tokengate, { secret: SECRET })
      }
      await app.ready()
      const alice = await app.tokengate.issue(USERS.alice.user)
      const bob = await app.tokengate.issue(USERS.bob.user)
      const as = (token: string): { authorization: string } => ({ authorization: `Bearer ${token}` })

      const none = await app.inject({ url: '/b' })
      t.equal(none.statusCode, 401, `/b without a token: 401 (${none.body})`)
      t.equal(none.json().code, 'TOKENGATE_TOKEN_MISSING')
      t.equal(none.headers['www-authenticate'], 'Bearer')
      t.notMatch(none.body, /user/)
      const head = await app.inject({ method: 'HEAD', url: '/b' })
      t.equal(head.statusCode, 401, 'HEAD /b without a token: 401')
      const bad = await app.inject({ url: '/b', headers: as('not-a-token') })
      t.equal(bad.statusCode, 401)
      t.equal(bad.json().code, 'TOKENGATE_TOKEN_INVALID', 'the error the refresh hook kept')
      t.equal(bad.headers['www-authenticate'], 'Bearer error="invalid_token"')
      const ok = await app.inject({ url: '/b', headers: as(alice.accessToken) })
      t.equal(ok.statusCode, 200, 'with a token: 200 (control)')
      t.same(ok.json(), { user: 'u-alice' })
      const refreshed = await app.inject({ url: '/b', headers: { 'x-refresh-token': alice.refreshToken } })
      t.equal(refreshed.statusCode, 200, 'the refresh hook mends a missing access token')
      t.ok(refreshed.headers['x-access-token'], 'and sends the new access token')

      const forbidden = await app.inject({ url: '/admin', headers: as(alice.accessToken) })
      t.equal(forbidden.statusCode, 403, '/admin as alice (no admin role): 403')
      t.match(forbidden.json(), { statusCode: 403, code: 'TOKENGATE_FORBIDDEN', error: 'Forbidden' })
      t.notMatch(forbidden.body, /admin only/)
      t.equal((await app.inject({ url: '/admin' })).statusCode, 401, '/admin without a token: 401')
      const admin = await app.inject({ url: '/admin', headers: as(bob.accessToken) })
      t.equal(admin.statusCode, 200, '/admin as bob (admin): 200 (control)')

      t.equal((await app.inject({ url: '/off' })).statusCode, 200, 'auth: false stays open')
      t.same((await app.inject({ url: '/plain' })).json(), { user: null }, 'a route without a policy stays open (request.auth null)')
    })
  }
})

t.test('an invalid policy on a route declared before tokengate loaded: the route stays closed, the log names it', async t => {
  const lines: string[] = []
  const app = Fastify({ logger: { level: 'error', stream: { write: (line: string) => { lines.push(line) } } } })
  t.teardown(async () => { await app.close() })
  app.register(tokengate, { secret: SECRET })
  app.get('/typo', { config: { auth: { role: ['admin'] } as never } }, async () => ({ secret: 'admin only' }))
  await app.ready()
  const bob = await app.tokengate.issue(USERS.bob.user)
  for (const headers of [{}, { authorization: `Bearer ${bob.accessToken}` }]) {
    const res = await app.inject({ url: '/typo', headers })
    t.equal(res.statusCode, 500, `never served (${res.statusCode})`)
    t.notMatch(res.body, /admin only/)
  }
  const logged = lines.map(l => JSON.parse(l) as { msg: string }).filter(l => /invalid auth policy/.test(l.msg))
  t.equal(logged.length, 1, 'logged once')
  t.match(logged[0]?.msg, /route GET \/typo: config\.auth\.role/)
})

t.test('authPolicy(auth): the hook config.auth installs, for a policy chosen at run time', async t => {
  const app = Fastify({ logger: false })
  await app.register(tokengate, { secret: SECRET })
  app.get('/admin', { onRequest: authPolicy({ roles: ['admin'] }) }, async () => ({ secret: 'admin only' }))
  app.get('/any', { onRequest: authPolicy(true) }, async (request) => ({ userId: authOf(request).userId }))
  app.get('/open', { onRequest: authPolicy(false) }, async () => ({ open: true }))
  const alice = await app.tokengate.issue(USERS.alice.user)
  const bob = await app.tokengate.issue(USERS.bob.user)
  const get = async (url: string, token?: string): Promise<{ statusCode: number, json: () => any, headers: Record<string, unknown> }> =>
    await app.inject({ url, headers: token === undefined ? {} : { authorization: `Bearer ${token}` } })
  const none = await get('/admin')
  t.equal(none.statusCode, 401, 'no token: 401')
  t.equal(none.json().code, 'TOKENGATE_TOKEN_MISSING')
  t.equal(none.headers['www-authenticate'], 'Bearer', 'with the challenge')
  t.equal((await get('/admin', alice.accessToken)).json().code, 'TOKENGATE_FORBIDDEN', 'alice lacks admin: 403')
  t.equal((await get('/admin', bob.accessToken)).statusCode, 200, 'control: bob has it')
  t.same((await get('/any', alice.accessToken)).json(), { userId: USERS.alice.user.sub }, 'authPolicy(true): any authenticated user')
  t.equal((await get('/any')).statusCode, 401)
  t.same((await get('/open')).json(), { open: true }, 'authPolicy(false): open')
  for (const bad of [{ role: ['admin'] }, { roles: [] }, { roles: 'admin' }, 'required', null]) {
    t.throws(() => authPolicy(bad as never), { name: 'TypeError', message: /config\.auth/ }, `authPolicy(${JSON.stringify(bad)}) throws, naming the problem`)
  }
  await app.close()
})
