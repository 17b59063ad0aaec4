// Cookie transport: tg_access / tg_refresh (HttpOnly) and tg_csrf (readable), the double-submit CSRF check,
// the refresh hook by cookie, /auth/refresh by cookie, and logout clearing the cookies.
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { buildApp } from '../helpers/app.js'
import { readSession, sessionsKey } from '../helpers/redis.js'
import { b64json, craftAccessToken, hashOf } from '../helpers/tokens.js'

interface Cookie { name: string, value: string, maxAge?: number, expires?: Date, path?: string, httpOnly?: boolean, secure?: boolean, sameSite?: string }
interface Pair { accessToken?: string, refreshToken?: string, sessionId: string, expiresIn: number, refreshExpiresIn: number }

const expiredAccess = (sessionId: string): string => craftAccessToken({ sub: 'u-alice', sid: sessionId, roles: ['user'] }, { expiresInSec: -30 })

function cookiesOf (res: LightMyRequestResponse): Record<string, Cookie> {
  const out: Record<string, Cookie> = {}
  for (const c of res.cookies as Cookie[]) out[c.name] = c
  return out
}

/** Checks the attributes docs/cookie-transport.md names: HttpOnly (not for tg_csrf); Secure; SameSite=Strict; Path=/; Max-Age. */
function checkAttributes (t: Test, c: Cookie | undefined, name: string, maxAge: number): void {
  t.ok(c !== undefined, `${name} is set`)
  if (c === undefined) return
  t.ok(c.value.length > 0, `${name} has a value`)
  t.equal(c.path, '/', `${name} Path=/`)
  t.equal(c.secure, true, `${name} Secure`)
  t.equal(c.sameSite, 'Strict', `${name} SameSite=Strict`)
  t.equal(c.httpOnly === true, name !== 'tg_csrf', `${name} HttpOnly ${name !== 'tg_csrf'}`)
  t.ok(c.maxAge !== undefined && Math.abs(c.maxAge - maxAge) <= 1, `${name} Max-Age ≈ ${maxAge} (got ${String(c.maxAge)})`)
}

function isCleared (c: Cookie | undefined): boolean {
  if (c === undefined) return false
  return c.value === '' && (c.maxAge === 0 || (c.expires !== undefined && c.expires.getTime() < Date.now()))
}

async function cookieLogin (app: FastifyInstance, username = 'alice', headers: Record<string, string> = {}): Promise<{ res: LightMyRequestResponse, pair: Pair, jar: Record<string, string> }> {
  const res = await app.inject({ method: 'POST', url: '/auth/login', headers, payload: { username, password: username === 'alice' ? 'wonderland' : 'builder' } })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
  const jar: Record<string, string> = {}
  for (const c of res.cookies as Cookie[]) jar[c.name] = c.value
  return { res, pair: res.json(), jar }
}

t.test('login sets tg_access, tg_refresh and tg_csrf; the body carries no token', async t => {
  const { app, redis, prefix } = await buildApp(t, { transport: ['cookie'] })
  const { res, pair } = await cookieLogin(app)
  t.equal(res.headers['cache-control'], 'no-store')
  t.match(pair, { tokenType: 'Bearer', expiresIn: 600, refreshExpiresIn: 86400 })
  t.equal(pair.accessToken, undefined, 'no access token in the body')
  t.equal(pair.refreshToken, undefined, 'no refresh token in the body')
  const c = cookiesOf(res)
  t.same(Object.keys(c).sort(), ['tg_access', 'tg_csrf', 'tg_refresh'])
  checkAttributes(t, c.tg_access, 'tg_access', pair.refreshExpiresIn)
  checkAttributes(t, c.tg_refresh, 'tg_refresh', pair.refreshExpiresIn)
  checkAttributes(t, c.tg_csrf, 'tg_csrf', pair.refreshExpiresIn)
  t.match(b64json(c.tg_access.value.split('.')[1]), { sub: 'u-alice', sid: pair.sessionId }, 'tg_access is the session\'s access token')
  t.not(c.tg_csrf.value, c.tg_access.value)
  t.not(c.tg_csrf.value, c.tg_refresh.value)
  t.ok(c.tg_csrf.value.length >= 16, 'the CSRF token is not trivially short')
  // Raw header too.
  const raw = ([] as string[]).concat(res.headers['set-cookie'] as string | string[])
  for (const line of raw) {
    t.match(line, /; Path=\//)
    t.match(line, /; Secure/)
    t.match(line, /; SameSite=Strict/)
    t.match(line, /; Max-Age=86400/)
    if (line.startsWith('tg_csrf=')) t.notMatch(line, /HttpOnly/i)
    else t.match(line, /; HttpOnly/)
  }
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, hashOf(c.tg_refresh.value))
  // Another login gets another CSRF token.
  const second = await cookieLogin(app)
  t.not(second.jar.tg_csrf, c.tg_csrf.value)
})

t.test('GET with the cookies only: authenticated, nothing re-set', async t => {
  const { app, redis, prefix } = await buildApp(t, { transport: ['cookie'] })
  const { pair, jar } = await cookieLogin(app)
  const before = await readSession(redis, prefix, 'u-alice', pair.sessionId)
  const res = await app.inject({ method: 'GET', url: '/me', cookies: jar })
  t.equal(res.statusCode, 200, res.body)
  t.same(res.json(), { userId: 'u-alice', sessionId: pair.sessionId, roles: ['user'], claims: { name: 'Alice' } })
  t.equal(res.headers['set-cookie'], undefined)
  t.same(await readSession(redis, prefix, 'u-alice', pair.sessionId), before, 'the session is untouched')
  // Without cookies: 401.
  const none = await app.inject({ method: 'GET', url: '/me' })
  t.equal(none.statusCode, 401)
  t.equal(none.json().code, 'TOKENGATE_TOKEN_MISSING')
})

t.test('unsafe method by cookie needs x-csrf-token equal to tg_csrf', async t => {
  const { app } = await buildApp(t, { transport: ['cookie'] })
  const { jar } = await cookieLogin(app)
  const none = await app.inject({ method: 'POST', url: '/me', cookies: jar })
  t.equal(none.statusCode, 403, none.body)
  t.equal(none.json().code, 'TOKENGATE_CSRF')
  const wrong = await app.inject({ method: 'POST', url: '/me', cookies: jar, headers: { 'x-csrf-token': jar.tg_csrf + 'x' } })
  t.equal(wrong.statusCode, 403, wrong.body)
  t.equal(wrong.json().code, 'TOKENGATE_CSRF')
  const other = await app.inject({ method: 'POST', url: '/me', cookies: jar, headers: { 'x-csrf-token': 'A'.repeat(jar.tg_csrf.length) } })
  t.equal(other.statusCode, 403)
  t.equal(other.json().code, 'TOKENGATE_CSRF')
  const { tg_csrf: csrf, ...noCsrfCookie } = jar
  const noCookie = await app.inject({ method: 'POST', url: '/me', cookies: noCsrfCookie, headers: { 'x-csrf-token': csrf } })
  t.equal(noCookie.statusCode, 403, 'the header alone is not enough')
  t.equal(noCookie.json().code, 'TOKENGATE_CSRF')
  const right = await app.inject({ method: 'POST', url: '/me', cookies: jar, headers: { 'x-csrf-token': jar.tg_csrf } })
  t.equal(right.statusCode, 200, right.body)
  t.same(right.json(), { userId: 'u-alice' })
  // Safe methods need none.
  const safe = await app.inject({ method: 'GET', url: '/me', cookies: jar })
  t.equal(safe.statusCode, 200)
})

t.test('POST /auth/login is exempt from CSRF', async t => {
  const { app, redis, prefix } = await buildApp(t, { transport: ['cookie'] })
  const first = await cookieLogin(app)
  // Another user's login with alice's cookies, no x-csrf-token: a session of their own; alice's is untouched.
  const res = await app.inject({ method: 'POST', url: '/auth/login', cookies: first.jar, payload: { username: 'bob', password: 'builder' } })
  t.equal(res.statusCode, 200, res.body)
  const pair = res.json() as Pair
  t.not(pair.sessionId, first.pair.sessionId)
  const c = cookiesOf(res)
  t.match(b64json(c.tg_access!.value.split('.')[1]), { sid: pair.sessionId, sub: 'u-bob' })
  t.ok(c.tg_csrf?.value, 'a CSRF cookie')
  t.equal((await readSession(redis, prefix, 'u-bob', pair.sessionId))?.h, hashOf(c.tg_refresh!.value), 'the new session is stored')
  t.equal((await readSession(redis, prefix, 'u-alice', first.pair.sessionId))?.h, hashOf(first.jar.tg_refresh), 'the old session untouched')
  // alice's own login with her cookies, no x-csrf-token either: her session, re-authenticated (step-up).
  const again = await app.inject({ method: 'POST', url: '/auth/login', cookies: first.jar, payload: { username: 'alice', password: 'wonderland' } })
  t.equal(again.statusCode, 200, again.body)
  t.equal((again.json() as Pair).sessionId, first.pair.sessionId, 're-authenticated: the same session')
  const c2 = cookiesOf(again)
  t.equal((await readSession(redis, prefix, 'u-alice', first.pair.sessionId))?.h, hashOf(c2.tg_refresh!.value), 'its refresh cookie rotated')
  t.equal(c2.tg_csrf?.value, first.jar.tg_csrf, 'the same session\'s CSRF token')
})

t.test('expired access cookie + refresh cookie: refreshed, new cookies', async t => {
  const { app, redis, prefix } = await buildApp(t, { transport: ['cookie'] })
  const { pair, jar } = await cookieLogin(app)
  const h0 = (await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h
  const res = await app.inject({ method: 'GET', url: '/me', cookies: { ...jar, tg_access: expiredAccess(pair.sessionId) } })
  t.equal(res.statusCode, 200, res.body)
  t.same(res.json(), { userId: 'u-alice', sessionId: pair.sessionId, roles: ['user'], claims: { name: 'Alice' } })
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(res.headers['x-access-token'], undefined, 'tokens go back the way they came: by cookie')
  t.equal(res.headers['x-refresh-token'], undefined)
  const c = cookiesOf(res)
  checkAttributes(t, c.tg_access, 'tg_access', 86400)
  checkAttributes(t, c.tg_refresh, 'tg_refresh', 86400)
  t.not(c.tg_access?.value, pair.accessToken)
  t.not(c.tg_refresh?.value, pair.refreshToken)
  if (c.tg_csrf !== undefined) t.equal(c.tg_csrf.value, jar.tg_csrf, 'the CSRF token is kept')
  if (c.tg_access === undefined || c.tg_refresh === undefined) return
  t.match(b64json(c.tg_access.value.split('.')[1]), { sub: 'u-alice', sid: pair.sessionId })
  const rec = await readSession(redis, prefix, 'u-alice', pair.sessionId)
  t.equal(rec?.h, hashOf(c.tg_refresh.value), 'Redis holds the new refresh id')
  t.equal(rec?.p, h0, 'and the previous one')
  const again = await app.inject({ method: 'GET', url: '/me', cookies: { tg_access: c.tg_access.value } })
  t.equal(again.statusCode, 200, again.body)
})

t.test('missing access cookie + refresh cookie: refreshed', async t => {
  const { app, redis, prefix } = await buildApp(t, { transport: ['cookie'] })
  const { pair, jar } = await cookieLogin(app)
  const res = await app.inject({ method: 'GET', url: '/me', cookies: { tg_refresh: jar.tg_refresh, tg_csrf: jar.tg_csrf } })
  t.equal(res.statusCode, 200, res.body)
  t.match(res.json(), { userId: 'u-alice', sessionId: pair.sessionId })
  t.equal(res.headers['cache-control'], 'no-store')
  const c = cookiesOf(res)
  checkAttributes(t, c.tg_access, 'tg_access', 86400)
  checkAttributes(t, c.tg_refresh, 'tg_refresh', 86400)
  if (c.tg_refresh === undefined || c.tg_access === undefined) return
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, hashOf(c.tg_refresh.value), 'Redis holds the new refresh id')
  const again = await app.inject({ method: 'GET', url: '/me', cookies: { tg_access: c.tg_access.value } })
  t.equal(again.statusCode, 200, again.body)
  // An invalid refresh cookie alone: anonymous, 401 on protected routes with the kept code.
  const bad = await app.inject({ method: 'GET', url: '/me', cookies: { tg_refresh: 'nonsense' } })
  t.equal(bad.statusCode, 401)
  t.equal(bad.json().code, 'TOKENGATE_REFRESH_INVALID')
  const anon = await app.inject({ method: 'GET', url: '/anon', cookies: { tg_refresh: 'nonsense' } })
  t.equal(anon.statusCode, 200)
  t.same(anon.json(), { userId: null })
})

t.test('POST /auth/refresh by cookie needs the CSRF header', async t => {
  const { app, redis, prefix } = await buildApp(t, { transport: ['cookie'] })
  const { pair, jar } = await cookieLogin(app)
  const h0 = (await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h

  const without = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: { tg_refresh: jar.tg_refresh, tg_csrf: jar.tg_csrf } })
  t.equal(without.statusCode, 403, without.body)
  t.equal(without.json().code, 'TOKENGATE_CSRF')
  t.equal(without.headers['set-cookie'], undefined)
  const allCookies = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: jar, headers: { 'x-csrf-token': 'wrong' } })
  t.equal(allCookies.statusCode, 403, allCookies.body)
  t.equal(allCookies.json().code, 'TOKENGATE_CSRF')
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, h0, 'nothing rotated')

  const ok = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: { tg_refresh: jar.tg_refresh, tg_csrf: jar.tg_csrf }, headers: { 'x-csrf-token': jar.tg_csrf } })
  t.equal(ok.statusCode, 200, ok.body)
  const next = ok.json() as Pair
  t.equal(next.sessionId, pair.sessionId)
  t.equal(next.refreshToken, undefined, 'no token in the body')
  t.equal(ok.headers['cache-control'], 'no-store')
  const c = cookiesOf(ok)
  checkAttributes(t, c.tg_access, 'tg_access', next.refreshExpiresIn)
  checkAttributes(t, c.tg_refresh, 'tg_refresh', next.refreshExpiresIn)
  t.not(c.tg_refresh?.value, jar.tg_refresh, 'rotated')
  const rec = await readSession(redis, prefix, 'u-alice', pair.sessionId)
  t.equal(rec?.h, hashOf(c.tg_refresh!.value), 'Redis holds the new refresh id')
  t.equal(rec?.p, h0, 'and the previous one')
  const me = await app.inject({ method: 'GET', url: '/me', cookies: { tg_access: c.tg_access!.value } })
  t.equal(me.statusCode, 200, me.body)
})

t.test('POST /auth/logout by cookie: 204, cookies cleared, session gone, old access cookie revoked', async t => {
  const { app, redis, prefix } = await buildApp(t, { transport: ['cookie'] })
  const { pair, jar } = await cookieLogin(app)
  const key = sessionsKey(prefix, 'u-alice')

  const noCsrf = await app.inject({ method: 'POST', url: '/auth/logout', cookies: jar })
  t.equal(noCsrf.statusCode, 403, noCsrf.body)
  t.equal(noCsrf.json().code, 'TOKENGATE_CSRF')
  t.equal(await redis.exists(key), 1, 'no logout without the CSRF header')

  const out = await app.inject({ method: 'POST', url: '/auth/logout', cookies: jar, headers: { 'x-csrf-token': jar.tg_csrf } })
  t.equal(out.statusCode, 204, out.body)
  t.equal(out.headers['cache-control'], 'no-store', 'an answer that sets tg_* cookies, cleared ones too, is no-store')
  const c = cookiesOf(out)
  for (const name of ['tg_access', 'tg_refresh', 'tg_csrf']) {
    t.ok(isCleared(c[name]), `${name} cleared`)
    t.equal(c[name]?.path, '/', `${name} cleared on Path=/`)
  }
  t.equal(await redis.exists(key), 0, 'the session is gone, and with it the user\'s key (it was the only one)')
  t.not(await redis.zscore(`${prefix}:revoked`, pair.sessionId), null)

  const old = await app.inject({ method: 'GET', url: '/me', cookies: { tg_access: jar.tg_access } })
  t.equal(old.statusCode, 401, old.body)
  t.equal(old.json().code, 'TOKENGATE_TOKEN_REVOKED')
  const oldBoth = await app.inject({ method: 'GET', url: '/me', cookies: jar })
  t.equal(oldBoth.statusCode, 401)
  t.equal(oldBoth.json().code, 'TOKENGATE_TOKEN_REVOKED')
  t.equal(oldBoth.headers['set-cookie'], undefined, 'nothing issued')
  const oldRefresh = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: jar, headers: { 'x-csrf-token': jar.tg_csrf } })
  t.equal(oldRefresh.statusCode, 401)
  t.equal(oldRefresh.json().code, 'TOKENGATE_REFRESH_INVALID')
})

t.test('transport [header, cookie]: each client gets tokens back the way it sent them', async t => {
  const { app, redis, prefix } = await buildApp(t, { transport: ['header', 'cookie'] })
  const { res, jar } = await cookieLogin(app, 'alice', { 'x-tokengate-transport': 'cookie' })
  const c = cookiesOf(res)
  t.ok(c.tg_access?.value, 'a login asking for cookies gets them')
  t.ok(c.tg_refresh?.value)
  t.ok(c.tg_csrf?.value)
  const byBody = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  const pair = byBody.json() as Pair
  t.type(pair.accessToken, 'string', 'a login that does not ask gets the pair in the body')
  t.equal(byBody.headers['set-cookie'], undefined, 'and no cookies')

  // Bearer header: no CSRF needed (not authenticated by cookie).
  const post = await app.inject({ method: 'POST', url: '/me', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(post.statusCode, 200, post.body)
  // Cookies: CSRF needed.
  const postCookie = await app.inject({ method: 'POST', url: '/me', cookies: jar })
  t.equal(postCookie.statusCode, 403)
  t.equal(postCookie.json().code, 'TOKENGATE_CSRF')

  // Header refresh → headers, no cookies.
  const byHeader = await app.inject({ method: 'GET', url: '/me', headers: { authorization: `Bearer ${expiredAccess(pair.sessionId)}`, 'x-refresh-token': pair.refreshToken } })
  t.equal(byHeader.statusCode, 200, byHeader.body)
  t.type(byHeader.headers['x-access-token'], 'string')
  const nextRefresh = byHeader.headers['x-refresh-token']
  t.type(nextRefresh, 'string')
  t.equal(byHeader.headers['set-cookie'], undefined)
  if (typeof nextRefresh !== 'string') return
  t.equal((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.h, hashOf(nextRefresh))

  // Cookie refresh (another session) → cookies, no headers.
  const second = await cookieLogin(app, 'alice', { 'x-tokengate-transport': 'cookie' })
  const byCookie = await app.inject({ method: 'GET', url: '/me', cookies: { ...second.jar, tg_access: expiredAccess(second.pair.sessionId) } })
  t.equal(byCookie.statusCode, 200, byCookie.body)
  t.equal(byCookie.headers['x-access-token'], undefined)
  t.equal(byCookie.headers['x-refresh-token'], undefined)
  const bc = cookiesOf(byCookie)
  t.ok(bc.tg_access?.value)
  t.ok(bc.tg_refresh?.value)
  if (bc.tg_refresh !== undefined) t.equal((await readSession(redis, prefix, 'u-alice', second.pair.sessionId))?.h, hashOf(bc.tg_refresh.value))
})
