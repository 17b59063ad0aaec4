// A typo in a route policy must close the route, never open it: `config.auth` is checked when the route is
// registered, and anything but true, false or { roles: [non-empty strings, at least one] } makes
// app.ready() fail with a message naming the route and the field.
import t from 'tap'
import Fastify from 'fastify'
import tokengate, { authOf, requireRoles } from '../../plugin/index.js'
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
