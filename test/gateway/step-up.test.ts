// Step-up through the gateway (RFC 9470): routes take `maxAge` and `acr` (with auth 'required', beside roles),
// checked by the plugin's one policy check (a bad value is a ConfigError naming the field); the identity
// service may answer `acr` and `amr`, which the access tokens carry; a route's step-up refusal is a 401
// TOKENGATE_STEP_UP_REQUIRED with the challenge, and the upstream never sees the request; a login carrying
// the session's access token re-authenticates it. Real sockets: the gateway, an identity service, an upstream.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { parseConfig } from '../../gateway/config.js'
import { sleep } from '../helpers/app.js'
import { GATEWAY_USERS, startGateway } from '../helpers/gateway.js'
import { payloadOf } from '../helpers/dpop.js'

interface Pair { accessToken: string, refreshToken: string, sessionId: string }

/** An identity service: the password alone is acr 'pwd'; with the one-time code, 'mfa' (amr pwd + otp). */
async function startIdentityService (t: Test): Promise<{ url: string }> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { username?: string, password?: string, otp?: string }
      const send = (status: number, json: unknown): void => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(json)) }
      if (body.password !== 'pw' || (body.username !== 'carol' && body.username !== 'dave')) { send(401, {}); return }
      const mfa = body.otp === '123456'
      const roles = body.username === 'dave' ? ['user', 'admin'] : ['user']
      // dave's service answers a malformed acr/amr: read as unknown.
      if (body.username === 'dave' && !mfa) send(200, { sub: 'u-dave', roles, acr: 42, amr: 'pwd' })
      else send(200, { sub: `u-${body.username}`, roles, acr: mfa ? 'mfa' : 'pwd', amr: mfa ? ['pwd', 'otp'] : ['pwd'] })
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { server.closeAllConnections(); await new Promise<void>(resolve => server.close(() => resolve())) })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/verify` }
}

/** An upstream that counts the requests that reach it. */
async function startCountingUpstream (t: Test): Promise<{ origin: string, hits: string[] }> {
  const hits: string[] = []
  const server = http.createServer((req, res) => {
    hits.push(req.url ?? '')
    req.resume()
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ user: req.headers['x-user-id'] }))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { server.closeAllConnections(); await new Promise<void>(resolve => server.close(() => resolve())) })
  return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits }
}

const ERR = 'Bearer error="insufficient_user_authentication"'

t.test('routes with maxAge and acr, through the real proxy, with acr/amr from the identity service', async t => {
  const idp = await startIdentityService(t)
  const up = await startCountingUpstream(t)
  const { base } = await startGateway(t, {
    login: { upstream: idp.url },
    routes: [
      { prefix: '/api', upstream: up.origin, auth: 'required' },
      { prefix: '/pay', upstream: up.origin, auth: 'required', acr: ['mfa'] },
      { prefix: '/fresh', upstream: up.origin, auth: 'required', maxAge: 1 },
      { prefix: '/admin', upstream: up.origin, auth: 'required', roles: ['admin'], acr: ['mfa'], maxAge: '5m' }
    ]
  }, { redis: true })
  const login = async (body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<Pair> => {
    const res = await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
    t.equal(res.status, 200, `login ${JSON.stringify(body)}`)
    return await res.json() as Pair
  }
  const get = async (path: string, pair: Pair, extra: Record<string, string> = {}): Promise<Response> =>
    await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${pair.accessToken}`, ...extra } })
  const refusedStepUp = async (res: Response, challenge: string, what: string): Promise<void> => {
    const before = up.hits.length
    t.equal(res.status, 401, `${what}: 401`)
    t.equal((await res.json() as { code: string }).code, 'TOKENGATE_STEP_UP_REQUIRED', `${what}: TOKENGATE_STEP_UP_REQUIRED`)
    t.equal(res.headers.get('www-authenticate'), challenge, `${what}: the challenge`)
    t.equal(up.hits.length, before, `${what}: the upstream saw nothing`)
  }

  const pwd = await login({ username: 'carol', password: 'pw' })
  t.equal(payloadOf(pwd.accessToken).acr, 'pwd', 'the identity service\'s acr is in the access token')
  t.same(payloadOf(pwd.accessToken).amr, ['pwd'], 'and its amr')
  await refusedStepUp(await get('/pay/transfer', pwd), `${ERR}, error_description="A different authentication level is required", acr_values="mfa"`, 'acr pwd on an acr mfa route')
  const open = await get('/api/x', pwd)
  t.equal(open.status, 200, 'control: the same token on a route without acr reaches the upstream')
  t.equal(up.hits.at(-1), '/api/x')

  // The same session, re-authenticated with the second factor (the login carries its access token).
  const mfa = await login({ username: 'carol', password: 'pw', otp: '123456' }, { authorization: `Bearer ${pwd.accessToken}` })
  t.equal(mfa.sessionId, pwd.sessionId, 'a re-authentication through the gateway keeps the session')
  t.equal(payloadOf(mfa.accessToken).acr, 'mfa')
  const paid = await get('/pay/transfer', mfa)
  t.equal(paid.status, 200, 'the stepped-up token reaches the upstream')
  t.equal(up.hits.at(-1), '/pay/transfer')

  // maxAge: 1 s after the login the route wants a newer one, even with the refresh token riding along.
  const authTime = payloadOf(mfa.accessToken).auth_time as number
  await sleep(Math.max(0, (authTime + 1) * 1000 + 1 - Date.now()))
  await refusedStepUp(await get('/fresh/x', mfa), `${ERR}, error_description="More recent authentication is required", max_age=1`, 'maxAge 1 s')
  const hooked = await fetch(`${base}/fresh/x`, { headers: { 'x-refresh-token': mfa.refreshToken } })
  const newAccess = hooked.headers.get('x-access-token')
  await refusedStepUp(hooked, `${ERR}, error_description="More recent authentication is required", max_age=1`, 'refreshed by the hook on the way')
  t.ok(newAccess !== null, 'the hook did refresh (new tokens on the 401)')
  t.equal(payloadOf(newAccess!).auth_time, authTime, 'the refreshed token keeps the login\'s auth_time')
  t.equal((await get('/api/x', mfa)).status, 200, 'control: the same token on a route without maxAge')

  // roles + acr + maxAge: carol has no admin role (403 whatever her authentication); dave steps up.
  const forbidden = await get('/admin/x', mfa)
  t.equal(forbidden.status, 403, 'no admin role: 403')
  t.equal((await forbidden.json() as { code: string }).code, 'TOKENGATE_FORBIDDEN')
  const dave = await login({ username: 'dave', password: 'pw' })
  t.equal(payloadOf(dave.accessToken).acr, undefined, 'a malformed acr from the identity service is read as none')
  t.equal(payloadOf(dave.accessToken).amr, undefined, 'and a malformed amr')
  await refusedStepUp(await get('/admin/x', dave), `${ERR}, error_description="A different authentication level is required", max_age=300, acr_values="mfa"`, 'admin without acr')
  const daveMfa = await login({ username: 'dave', password: 'pw', otp: '123456' }, { authorization: `Bearer ${dave.accessToken}` })
  t.equal(daveMfa.sessionId, dave.sessionId)
  const admin = await get('/admin/x', daveMfa)
  t.equal(admin.status, 200, 'control: admin, mfa, just now')
  t.same(await admin.json(), { user: 'u-dave' })
})

t.test('a users-file login is amr ["pwd"], without acr', async t => {
  const up = await startCountingUpstream(t)
  const { base } = await startGateway(t, { routes: [{ prefix: '/pay', upstream: up.origin, auth: 'required', acr: ['mfa'] }] })
  const res = await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: GATEWAY_USERS.alice }) })
  const pair = await res.json() as Pair
  t.same(payloadOf(pair.accessToken).amr, ['pwd'])
  t.equal(payloadOf(pair.accessToken).acr, undefined)
  const pay = await fetch(`${base}/pay/x`, { headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(pay.status, 401)
  t.equal(up.hits.length, 0)
})

t.test('config: maxAge and acr are checked like the plugin\'s policy, naming the route\'s field', async t => {
  const base = (route: Record<string, unknown>): Record<string, unknown> => ({
    tokens: { secret: 'x'.repeat(64) },
    login: { upstream: 'http://127.0.0.1:9/verify' },
    routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', ...route }]
  })
  const bad: Array<[string, Record<string, unknown>, string, RegExp]> = [
    ["maxAge '5 minutes'", { maxAge: '5 minutes' }, 'routes[0].maxAge', /duration/],
    ["maxAge '500ms'", { maxAge: '500ms' }, 'routes[0].maxAge', /whole number of seconds/],
    ['maxAge 1.5', { maxAge: 1.5 }, 'routes[0].maxAge', /whole number of seconds/],
    ["acr 'mfa hwk' (one string, space-separated)", { acr: 'mfa hwk' }, 'routes[0].acr[0]', /spaces/],
    ['acr []', { acr: [] }, 'routes[0].acr', /invalid/],
    ["acr ['two words']", { acr: ['two words'] }, 'routes[0].acr[0]', /spaces/],
    ['maxage (a typo)', { maxage: '5m' }, 'routes[0].maxage', /not a known field/],
    ['maxAge on an optional route', { auth: 'optional', maxAge: '5m' }, 'routes[0].maxAge', /needs auth: "required"/],
    ['acr on a public route', { auth: 'public', acr: ['mfa'] }, 'routes[0].acr', /needs auth: "required"/]
  ]
  for (const [name, route, field, says] of bad) {
    t.throws(() => parseConfig(base(route)), { name: 'ConfigError', field, message: says }, `${name}: ${field}`)
  }
  const ok = parseConfig(base({ maxAge: '5m', acr: ['mfa', 'urn:example:loa:2'], roles: ['admin'] }))
  t.equal(ok.routes[0].maxAge, '5m', 'control: a valid policy parses')
  t.same(ok.routes[0].acr, ['mfa', 'urn:example:loa:2'])
  t.equal(parseConfig(base({ maxAge: 300 })).routes[0].maxAge, 300, 'control: a number of seconds')
  // As for roles (a value from ${VAR} is a string): one string is a list of one.
  t.same(parseConfig(base({ acr: 'mfa' })).routes[0].acr, ['mfa'], 'acr "mfa" reads as ["mfa"], as roles "admin" does')
})
