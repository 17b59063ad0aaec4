// login.oidc without a provider at hand: the config's rules (each refusal names its field, with a valid
// control), how it sits with a password login, the per-IP limit on the sign-in routes, a provider that cannot
// be reached, and the returnTo and rolesClaim rules one by one.
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { ConfigError, buildGateway, parseConfig } from '../../gateway/index.js'
import { rolesAt, safeReturnTo } from '../../gateway/oidc.js'
import { SECRET } from '../helpers/app.js'
import { GATEWAY_USERS, usersFile } from '../helpers/gateway.js'
import { doc } from '../helpers/readme.js'
import { freePort } from '../helpers/redis.js'

const oidc = { issuer: 'https://accounts.example.com', clientId: 'gw', publicUrl: 'https://gateway.example' }
const base = (over: { login?: Record<string, unknown>, tokens?: Record<string, unknown> } = {}): Record<string, unknown> => ({
  tokens: { secret: SECRET, transport: ['header', 'cookie'], ...over.tokens },
  login: { oidc, ...over.login },
  logLevel: 'silent'
})

function refused (t: Test, config: Record<string, unknown>, field: string, says: RegExp, what: string): void {
  try {
    parseConfig(config)
    t.fail(`${what}: accepted`)
  } catch (err) {
    t.type(err, ConfigError, `${what}: a ConfigError`)
    t.equal((err as ConfigError).field, field, `${what}: names ${field}`)
    t.match((err as Error).message, says, what)
  }
}

t.test('login.oidc: defaults, and each bad value refused naming its field', async t => {
  const config = parseConfig(base({ login: { oidc: { ...oidc, publicUrl: 'https://gateway.example/' } } }))
  t.same(config.login.oidc?.scopes, ['openid', 'profile', 'email'], 'scopes default to openid profile email')
  t.equal(config.login.oidc?.publicUrl, 'https://gateway.example', 'a trailing slash is dropped from publicUrl')
  t.equal(parseConfig(base({ login: { oidc: { ...oidc, issuer: 'http://127.0.0.1:9000' } } })).login.oidc?.issuer, 'http://127.0.0.1:9000', 'http is fine for a provider on loopback')
  t.ok(parseConfig(base({ login: { oidc: { ...oidc, issuer: 'http://localhost:8080/realms/x' } } })), 'and on localhost')

  refused(t, base({ tokens: { transport: ['header'] } }), 'tokens.transport', /must include "cookie"/, 'header transport alone')
  refused(t, { ...base(), tokens: { secret: SECRET } }, 'tokens.transport', /must include "cookie"/, 'the default transport (header)')
  t.ok(parseConfig(base({ tokens: { transport: ['cookie'] } })), 'control: cookie alone is fine')
  refused(t, base({ login: { oidc: { ...oidc, scopes: ['profile'] } } }), 'login.oidc.scopes', /openid/, 'scopes without openid')
  refused(t, base({ login: { oidc: { ...oidc, issuer: 'http://accounts.example.com' } } }), 'login.oidc.issuer', /https/, 'plain http to a remote provider')
  refused(t, base({ login: { oidc: { ...oidc, issuer: 'https://accounts.example.com/.well-known/openid-configuration' } } }), 'login.oidc.issuer', /discovery document/, 'the discovery URL instead of the issuer')
  refused(t, base({ login: { oidc: { ...oidc, issuer: 'https://accounts.example.com/?x=1' } } }), 'login.oidc.issuer', /query/, 'an issuer with a query')
  refused(t, base({ login: { oidc: { ...oidc, publicUrl: 'https://gateway.example/app' } } }), 'login.oidc.publicUrl', /origin/, 'a publicUrl with a path')
  refused(t, base({ login: { oidc: { ...oidc, publicUrl: 'gateway.example' } } }), 'login.oidc.publicUrl', /invalid/, 'a publicUrl without a scheme')
  refused(t, base({ login: { oidc: { ...oidc, clientId: '' } } }), 'login.oidc.clientId', /invalid/, 'an empty clientId')
  refused(t, base({ login: { oidc: { issuer: oidc.issuer, clientId: 'gw' } } }), 'login.oidc.publicUrl', /invalid|required/i, 'no publicUrl')
  refused(t, base({ login: { oidc: { ...oidc, clientSecrt: 'x' } } }), 'login.oidc.clientSecrt', /not a known field/, 'a misspelt field')
  refused(t, { tokens: { secret: SECRET }, login: {} }, 'login', /exactly one/, 'no login at all')
  refused(t, base({ login: { usersFile: 'u.json', upstream: 'http://127.0.0.1:9/verify' } }), 'login', /exactly one/, 'oidc with both password logins')
})

async function listen (config: Record<string, unknown>): Promise<{ close: () => Promise<void>, base: string }> {
  const app = buildGateway(config, { logger: false })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { close: async () => { await app.close() }, base: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` }
}

t.test('the single sign-on config the documentation shows (docs/oidc.md) is a valid config', async t => {
  const section = doc('docs/oidc.md')
  const json = /```json\n([\s\S]*?)```/.exec(section)?.[1]
  t.ok(json, 'the section shows a config')
  const config = parseConfig(JSON.parse(json!), { env: { TOKENGATE_SECRET: SECRET, OIDC_CLIENT_SECRET: 'from-the-environment' } })
  t.match(config.login.oidc, { issuer: /^https:\/\//, clientId: 'tokengate', clientSecret: 'from-the-environment', rolesClaim: 'realm_access.roles', scopes: ['openid', 'profile', 'email'] })
  t.ok(config.tokens.transport.includes('cookie'), 'with cookie transport')
})

t.test('single sign-on alone: no password login; with a users file: both', async t => {
  // A provider that is not there: the sign-in answers 502, nothing hangs.
  const nowhere = `http://127.0.0.1:${await freePort()}`
  const alone = await listen(base({ login: { oidc: { ...oidc, issuer: nowhere } } }))
  t.teardown(alone.close)
  const login = await fetch(`${alone.base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"username":"alice","password":"x"}' })
  t.equal(login.status, 404, 'POST /auth/login does not exist with single sign-on alone')
  const sso = await fetch(`${alone.base}/auth/oidc/login`, { redirect: 'manual' })
  t.equal(sso.status, 502, 'an unreachable provider: 502')
  t.equal((await sso.json() as { code: string }).code, 'TOKENGATE_UPSTREAM_UNAVAILABLE')

  const both = await listen(base({ login: { oidc, usersFile: await usersFile(t) } }))
  t.teardown(both.close)
  const pw = await fetch(`${both.base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: GATEWAY_USERS.alice }) })
  t.equal(pw.status, 200, 'with a users file beside it, the password login works')
  const none = await listen({ tokens: { secret: SECRET }, login: { usersFile: await usersFile(t) }, logLevel: 'silent' })
  t.teardown(none.close)
  t.equal((await fetch(`${none.base}/auth/oidc/login`, { redirect: 'manual' })).status, 404, 'control: without login.oidc there are no /auth/oidc routes')
})

t.test('the per-IP request limit counts the sign-in routes', async t => {
  const gw = await listen({ ...base({ login: { oidc: { ...oidc, issuer: `http://127.0.0.1:${await freePort()}` } } }), rateLimit: { requests: { max: 3, window: '1d' } } })
  t.teardown(gw.close)
  const statuses: number[] = []
  for (let i = 0; i < 2; i++) statuses.push((await fetch(`${gw.base}/auth/oidc/login`, { redirect: 'manual' })).status)
  statuses.push((await fetch(`${gw.base}/auth/oidc/callback?state=x&code=y`, { redirect: 'manual' })).status)
  t.same(statuses, [502, 502, 401], 'three requests pass the limit (no provider; a callback without a flow)')
  const fourth = await fetch(`${gw.base}/auth/oidc/login`, { redirect: 'manual' })
  t.equal(fourth.status, 429, 'the fourth: 429')
  t.equal((await fourth.json() as { code: string }).code, 'TOKENGATE_RATE_LIMITED')
  t.match(fourth.headers.get('retry-after'), /^\d+$/, 'with Retry-After')
  const bc = await fetch(`${gw.base}/auth/oidc/backchannel-logout`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'logout_token=x' })
  t.equal(bc.status, 502, 'the back-channel logout is not limited (the provider calls it, for every user): not 429, but 502 here (no provider to check the token with)')
})

t.test('returnTo: a path on our origin, else /', async t => {
  for (const ok of ['/', '/x', '/api/orders?id=1&x=%2F', '/a/b#frag', '/%E2%9C%93', '/a//b']) t.equal(safeReturnTo(ok), ok, `${ok} kept`)
  const evil = [
    '//evil.example', '///evil.example', '/\\evil.example', '\\\\evil.example', 'https://evil.example', 'http:/evil.example',
    '/%2F%2Fevil', '/%2f%2Fevil', '%2F%2Fevil', '/%5Cevil', '/%252F%252Fevil', '/%25252F%25252Fevil', 'javascript:alert(1)', 'JAVASCRIPT:alert(1)',
    'data:text/html,x', '/\tevil', '/\nevil', '/ evil', '/%09/evil', '/%0a/evil', 'evil.example', '', ' /x', '/%', '/é', '/' + 'a'.repeat(3000)
  ]
  for (const e of evil) t.equal(safeReturnTo(e), '/', `${JSON.stringify(e)} → /`)
  t.equal(safeReturnTo(['/a', '/b']), '/', 'a repeated parameter → /')
  t.equal(safeReturnTo(undefined), '/', 'none → /')
})

t.test('rolesClaim: a dot path into the ID token\'s claims', async t => {
  const claims = { realm_access: { roles: ['user', 'admin', 3, '', 'user'] }, groups: 'staff', nested: { a: { b: ['x'] } } }
  t.same(rolesAt({ r: ['team-x,admin', 'user'] }, 'r'), ['user'], 'a role with a comma is not taken (it would read as two in x-user-roles)')
  t.same(rolesAt({ r: 'a,b' }, 'r'), [], 'nor a single one')
  t.same(rolesAt(claims, 'realm_access.roles'), ['user', 'admin'], 'strings only, once each')
  t.same(rolesAt(claims, 'groups'), ['staff'], 'a string is one role')
  t.same(rolesAt(claims, 'nested.a.b'), ['x'])
  t.same(rolesAt(claims, 'nested.a'), [], 'an object is no roles')
  t.same(rolesAt(claims, 'missing.path'), [])
  t.same(rolesAt(claims, undefined), [], 'no rolesClaim: no roles')
  t.same(rolesAt(claims, '__proto__.constructor'), [], 'own properties only')
  t.same(rolesAt(claims, 'realm_access.roles.length'), [], 'not into an array\'s properties')
})
