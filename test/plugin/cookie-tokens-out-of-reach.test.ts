// Cookie transport keeps tokens out of scripts' reach (DESIGN §2): a response that sets tg_access / tg_refresh
// carries neither token in its body or headers, and with transport ['cookie'] alone, tokens in the
// Authorization / x-refresh-token headers (or a refresh body) are ignored. The attacker is a script on the page
// (an XSS): it can read tg_csrf and POST /auth/refresh with the browser's cookies, and must learn no token.
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { buildApp } from '../helpers/app.js'
import { readSession } from '../helpers/redis.js'
import { craftAccessToken, hashOf } from '../helpers/tokens.js'

const SHAPE = ['expiresIn', 'refreshExpiresIn', 'sessionId', 'tokenType']

function jarOf (res: LightMyRequestResponse): Record<string, string> {
  const jar: Record<string, string> = {}
  for (const c of res.cookies as Array<{ name: string, value: string }>) jar[c.name] = c.value
  return jar
}

/** Neither token value anywhere in the body or a header other than Set-Cookie. */
function noTokenOutsideCookies (t: Test, res: LightMyRequestResponse, what: string): void {
  const jar = jarOf(res)
  t.ok(jar.tg_access !== undefined && jar.tg_refresh !== undefined, `${what}: the token cookies are set`)
  t.equal(res.headers['x-access-token'], undefined, `${what}: no x-access-token header`)
  t.equal(res.headers['x-refresh-token'], undefined, `${what}: no x-refresh-token header`)
  for (const [name, value] of Object.entries(res.headers)) {
    if (name === 'set-cookie') continue
    const text = String(value)
    t.notOk(text.includes(jar.tg_access) || text.includes(jar.tg_refresh), `${what}: header ${name} carries no token`)
  }
  t.notOk(res.body.includes(jar.tg_access), `${what}: the body does not carry the access token`)
  t.notOk(res.body.includes(jar.tg_refresh), `${what}: the body does not carry the refresh token`)
  t.notOk(/tgr[12]\./.test(res.body), `${what}: no refresh token of any kind in the body`)
  t.equal(res.headers['cache-control'], 'no-store', `${what}: Cache-Control: no-store`)
}

async function cookieLogin (app: FastifyInstance, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  const res = await app.inject({ method: 'POST', url: '/auth/login', headers, payload: { username: 'alice', password: 'wonderland' } })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
  return res
}

t.test('cookie transport: login answers with cookies and a body without tokens', async t => {
  const { app } = await buildApp(t, { transport: ['cookie'] })
  const res = await cookieLogin(app)
  noTokenOutsideCookies(t, res, 'login')
  const body = res.json()
  t.same(Object.keys(body).sort(), SHAPE, 'the body keeps tokenType, expiresIn, refreshExpiresIn, sessionId')
  t.match(body, { tokenType: 'Bearer', expiresIn: 600, refreshExpiresIn: 86400 })
  // Control: the cookies do carry a working session.
  const me = await app.inject({ url: '/me', cookies: jarOf(res) })
  t.equal(me.statusCode, 200, me.body)
  t.equal(me.json().sessionId, body.sessionId, 'the cookies authenticate the session the body names')
})

t.test('an XSS that POSTs /auth/refresh with the CSRF header learns no token', async t => {
  const { app, redis, prefix } = await buildApp(t, { transport: ['cookie'] })
  const login = await cookieLogin(app)
  const jar = jarOf(login)
  const { sessionId } = login.json()
  const res = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: jar, headers: { 'x-csrf-token': jar.tg_csrf } })
  t.equal(res.statusCode, 200, res.body)
  noTokenOutsideCookies(t, res, '/auth/refresh by cookie')
  t.same(Object.keys(res.json()).sort(), SHAPE)
  // Control: the refresh did happen (rotated in Redis, the new cookie is the current token).
  const next = jarOf(res)
  t.not(next.tg_refresh, jar.tg_refresh, 'rotated')
  t.equal((await readSession(redis, prefix, 'u-alice', sessionId))?.h, hashOf(next.tg_refresh), 'Redis holds the new cookie\'s refresh id')
})

t.test('the refresh hook by cookie sends tokens by cookie only', async t => {
  const { app } = await buildApp(t, { transport: ['cookie'] })
  const login = await cookieLogin(app)
  const jar = jarOf(login)
  const expired = craftAccessToken({ sub: 'u-alice', sid: login.json().sessionId, roles: ['user'] }, { expiresInSec: -30 })
  const res = await app.inject({ url: '/me', cookies: { ...jar, tg_access: expired } })
  t.equal(res.statusCode, 200, res.body)
  noTokenOutsideCookies(t, res, 'hook refresh')
})

t.test('transport [\'cookie\'] alone ignores tokens in headers and in a refresh body', async t => {
  const { app, redis, prefix } = await buildApp(t, { transport: ['cookie'] })
  const pair = await app.tokengate.issue({ sub: 'u-alice', roles: ['user'] })
  const h0 = (await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h

  const bearer = await app.inject({ url: '/me', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(bearer.statusCode, 401, 'Authorization: Bearer is ignored')
  t.equal(bearer.json().code, 'TOKENGATE_TOKEN_MISSING')
  const refreshHeader = await app.inject({ url: '/me', headers: { 'x-refresh-token': pair.refreshToken } })
  t.equal(refreshHeader.statusCode, 401, 'x-refresh-token is ignored by the hook')
  t.equal(refreshHeader.json().code, 'TOKENGATE_TOKEN_MISSING')
  t.equal(refreshHeader.headers['x-access-token'], undefined)
  t.equal(refreshHeader.headers['set-cookie'], undefined, 'nothing issued')
  const route = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { 'x-refresh-token': pair.refreshToken } })
  t.equal(route.statusCode, 401, 'POST /auth/refresh ignores x-refresh-token')
  t.equal(route.json().code, 'TOKENGATE_REFRESH_INVALID')
  const body = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(body.statusCode, 401, 'POST /auth/refresh ignores a body token')
  t.equal(body.json().code, 'TOKENGATE_REFRESH_INVALID')
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, h0, 'nothing rotated')

  // Control: the same tokens as cookies work.
  const cookie = await app.inject({ url: '/me', cookies: { tg_access: pair.accessToken } })
  t.equal(cookie.statusCode, 200, cookie.body)
  t.equal(cookie.json().sessionId, pair.sessionId)
})

t.test('transport [header, cookie]: a login answers one way, never both', async t => {
  const { app } = await buildApp(t, { transport: ['header', 'cookie'] })
  // A header client: the pair in the body, no cookies.
  const byHeader = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  t.equal(byHeader.statusCode, 200, byHeader.body)
  t.type(byHeader.json().accessToken, 'string')
  t.type(byHeader.json().refreshToken, 'string')
  t.equal(byHeader.headers['set-cookie'], undefined, 'no cookies with body tokens')
  // A cookie client says so: cookies, and a body without tokens.
  const byCookie = await cookieLogin(app, { 'x-tokengate-transport': 'cookie' })
  noTokenOutsideCookies(t, byCookie, 'login asking for cookies')
  t.same(Object.keys(byCookie.json()).sort(), SHAPE)
  // A refresh answers the way its token came: by cookie → cookies only; by header → body only.
  const jar = jarOf(byCookie)
  const refreshed = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: jar, headers: { 'x-csrf-token': jar.tg_csrf } })
  t.equal(refreshed.statusCode, 200, refreshed.body)
  noTokenOutsideCookies(t, refreshed, 'refresh by cookie')
  const headerRefresh = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { 'x-refresh-token': byHeader.json().refreshToken } })
  t.equal(headerRefresh.statusCode, 200, headerRefresh.body)
  t.type(headerRefresh.json().refreshToken, 'string')
  t.equal(headerRefresh.headers['set-cookie'], undefined, 'no cookies with body tokens')
  // A body token with cookies along (a cookie client's browser sends them anyway): answered by body, no cookies.
  const mixed = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: { tg_csrf: jar.tg_csrf }, payload: { refreshToken: headerRefresh.json().refreshToken } })
  t.equal(mixed.statusCode, 200, mixed.body)
  t.type(mixed.json().refreshToken, 'string')
  t.equal(mixed.headers['set-cookie'], undefined)
})
