// Nothing between us and the client may cache or replace tokens (DESIGN §2). A hostile (or careless) upstream
// answers every request with `Cache-Control: public, max-age=300`, its own x-access-token / x-refresh-token and
// Set-Cookie tg_* lines: none of its tokens reaches the client, and every response that carries one of ours is
// `Cache-Control: no-store`, whatever the upstream said. Controls: its other headers and cookies pass, and on a
// response that carries no token its Cache-Control stands.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { SECRET } from '../helpers/app.js'
import { GATEWAY_USERS, postJson, rawRequest, startGateway, type RawResponse } from '../helpers/gateway.js'
import { readSession, redisUrl } from '../helpers/redis.js'
import { craftAccessToken, hashOf } from '../helpers/tokens.js'

const PLANTED = 'planted-0123456789'

async function hostileUpstream (t: Test): Promise<string> {
  const server = http.createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      res.setHeader('cache-control', 'public, max-age=300')
      res.setHeader('x-access-token', `${PLANTED}-access`)
      res.setHeader('x-refresh-token', `${PLANTED}-refresh`)
      res.setHeader('set-cookie', [`tg_refresh=${PLANTED}; Path=/; HttpOnly`, `tg_access=${PLANTED}; Path=/`, `tg_csrf=${PLANTED}; Path=/`, 'theme=dark; Path=/'])
      res.setHeader('x-upstream', 'yes')
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ ok: true }))
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { server.closeAllConnections(); await new Promise<void>(resolve => server.close(() => resolve())) })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

const cookiesOf = (res: RawResponse): string[] => ([] as string[]).concat(res.headers['set-cookie'] ?? [])
const cookieValue = (res: RawResponse, name: string): string[] => cookiesOf(res).filter(c => c.startsWith(`${name}=`)).map(c => c.slice(name.length + 1, c.indexOf(';') < 0 ? undefined : c.indexOf(';')))

/** Nothing the upstream planted reached the client; its harmless headers did. */
function nothingPlanted (t: Test, res: RawResponse, what: string): void {
  t.equal(res.status, 200, `${what}: 200`)
  t.notOk(JSON.stringify(res.headers).includes(PLANTED), `${what}: no planted token anywhere in the headers`)
  for (const name of ['tg_access', 'tg_refresh', 'tg_csrf']) t.notOk(cookieValue(res, name).includes(PLANTED), `${what}: no planted ${name} cookie`)
  t.equal(res.headers['x-upstream'], 'yes', `${what}: control: the upstream's other headers pass`)
  t.same(cookieValue(res, 'theme'), ['dark'], `${what}: control: the upstream's own cookies pass`)
}

t.test('header transport: planted tokens never reach the client; refreshed answers are no-store', async t => {
  const upstream = await hostileUpstream(t)
  const gw = await startGateway(t, { routes: [{ prefix: '/api', upstream, auth: 'required' }, { prefix: '/open', upstream, auth: 'optional' }] }, { redis: true })
  const login = await postJson(gw.base, '/auth/login', { username: 'alice', password: GATEWAY_USERS.alice })
  t.equal(login.status, 200)
  const pair = login.body

  // Not refreshed: the upstream's Cache-Control stands (no token in this answer), its tokens are gone.
  const plain = await rawRequest(gw.port, { path: '/api/x', headers: { authorization: `Bearer ${pair.accessToken}`, 'x-refresh-token': pair.refreshToken } })
  nothingPlanted(t, plain, 'not refreshed')
  t.equal(plain.headers['x-access-token'], undefined, 'not refreshed: no x-access-token')
  t.equal(plain.headers['x-refresh-token'], undefined, 'not refreshed: no x-refresh-token')
  t.equal(plain.headers['cache-control'], 'public, max-age=300', 'not refreshed: control: the upstream\'s Cache-Control on a tokenless answer')

  // Refreshed by the hook: our tokens, no-store.
  const expired = craftAccessToken({ sub: 'alice', sid: pair.sessionId, roles: ['user'] }, { expiresInSec: -30 })
  const refreshed = await rawRequest(gw.port, { path: '/api/x', headers: { authorization: `Bearer ${expired}`, 'x-refresh-token': pair.refreshToken } })
  nothingPlanted(t, refreshed, 'refreshed')
  t.equal(refreshed.headers['cache-control'], 'no-store', 'refreshed: Cache-Control: no-store, whatever the upstream said')
  const access = refreshed.headers['x-access-token'] as string
  const refresh = refreshed.headers['x-refresh-token'] as string
  t.match(access, /^eyJ/, 'refreshed: our access token')
  t.match(refresh, /^tgr2\./, 'refreshed: our refresh token')
  const redis = new Redis(await redisUrl())
  t.teardown(() => redis.disconnect())
  t.equal((await readSession(redis, gw.prefix, 'alice', pair.sessionId))?.h, hashOf(refresh), 'refreshed: the x-refresh-token is the session\'s current one')
  const again = await rawRequest(gw.port, { path: '/api/x', headers: { authorization: `Bearer ${access}` } })
  t.equal(again.status, 200, 'refreshed: the x-access-token works')

  // An anonymous request on an optional route: nothing planted either.
  const anon = await rawRequest(gw.port, { path: '/open/x' })
  nothingPlanted(t, anon, 'anonymous')
})

t.test('cookie transport: planted tg_* cookies never reach the client; refreshed answers are no-store', async t => {
  const upstream = await hostileUpstream(t)
  const gw = await startGateway(t, { tokens: { transport: ['cookie'], cookie: { secure: false } }, routes: [{ prefix: '/api', upstream, auth: 'required' }] }, { redis: true })
  const login = await postJson(gw.base, '/auth/login', { username: 'alice', password: GATEWAY_USERS.alice })
  t.equal(login.status, 200)
  const jar: Record<string, string> = {}
  for (const line of login.headers.getSetCookie()) { const [pair] = line.split(';'); const eq = pair.indexOf('='); jar[pair.slice(0, eq)] = pair.slice(eq + 1) }
  t.ok(jar.tg_access !== undefined && jar.tg_refresh !== undefined && jar.tg_csrf !== undefined, 'logged in by cookie')
  const cookie = (j: Record<string, string>): string => Object.entries(j).map(([k, v]) => `${k}=${v}`).join('; ')

  const plain = await rawRequest(gw.port, { path: '/api/x', headers: { cookie: cookie(jar) } })
  nothingPlanted(t, plain, 'not refreshed')
  t.same(cookiesOf(plain).filter(c => c.startsWith('tg_')), [], 'not refreshed: no tg_* cookie at all')

  const sid = login.body.sessionId as string
  const expired = craftAccessToken({ sub: 'alice', sid, roles: ['user'] }, { expiresInSec: -30 })
  const refreshed = await rawRequest(gw.port, { path: '/api/x', headers: { cookie: cookie({ ...jar, tg_access: expired }) } })
  nothingPlanted(t, refreshed, 'refreshed')
  t.equal(refreshed.headers['cache-control'], 'no-store', 'refreshed: Cache-Control: no-store, whatever the upstream said')
  t.equal(cookieValue(refreshed, 'tg_access').length, 1, 'refreshed: one tg_access cookie, ours')
  t.equal(cookieValue(refreshed, 'tg_refresh').length, 1, 'refreshed: one tg_refresh cookie, ours')
  const next = { ...jar, tg_access: cookieValue(refreshed, 'tg_access')[0], tg_refresh: cookieValue(refreshed, 'tg_refresh')[0] }
  const again = await rawRequest(gw.port, { path: '/api/x', headers: { cookie: cookie(next) } })
  t.equal(again.status, 200, 'refreshed: the new cookies work')
  t.equal(SECRET.length, 128)
})
