// The CSRF token is bound to the session (DESIGN §2): a sibling subdomain is same-site and can plant a tg_csrf
// cookie (cookie tossing) and send a header to match. It must not pass for another session's cookies: neither
// a value of its own invention nor the attacker's own session's CSRF token. Control: the session's own passes.
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { buildApp } from '../helpers/app.js'
import { readSession } from '../helpers/redis.js'
import { craftAccessToken } from '../helpers/tokens.js'

function jarOf (res: LightMyRequestResponse): Record<string, string> {
  const jar: Record<string, string> = {}
  for (const c of res.cookies as Array<{ name: string, value: string }>) jar[c.name] = c.value
  return jar
}

async function cookieLogin (app: FastifyInstance, username = 'alice'): Promise<{ jar: Record<string, string>, sessionId: string }> {
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username, password: username === 'alice' ? 'wonderland' : 'builder' } })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode}`)
  return { jar: jarOf(res), sessionId: res.json().sessionId }
}

const status = (res: LightMyRequestResponse): string => `${res.statusCode} ${res.statusCode >= 400 ? res.body : ''}`

t.test('a planted tg_csrf cookie with a matching header does not pass for another session', async t => {
  const { app, redis, prefix } = await buildApp(t, { transport: ['cookie'] })
  const victim = await cookieLogin(app, 'alice')
  const attacker = await cookieLogin(app, 'bob') // the attacker's own session: a genuine CSRF token of tokengate's
  t.not(attacker.jar.tg_csrf, victim.jar.tg_csrf)

  const planted = [
    ['the attacker\'s own session\'s CSRF token', attacker.jar.tg_csrf],
    ['a value of the attacker\'s invention', 'planted-by-a-sibling-subdomain-0123456789']
  ]
  for (const [what, value] of planted) {
    const cookies = { tg_access: victim.jar.tg_access, tg_refresh: victim.jar.tg_refresh, tg_csrf: value }
    const post = await app.inject({ method: 'POST', url: '/me', cookies, headers: { 'x-csrf-token': value } })
    t.equal(post.statusCode, 403, `${what}: POST /me refused (${status(post)})`)
    t.equal(post.json().code, 'TOKENGATE_CSRF')
    const logout = await app.inject({ method: 'POST', url: '/auth/logout', cookies, headers: { 'x-csrf-token': value } })
    t.equal(logout.statusCode, 403, `${what}: logout refused`)
    const h0 = (await readSession(redis, prefix, 'u-alice', victim.sessionId))?.h
    const refresh = await app.inject({ method: 'POST', url: '/auth/refresh', cookies, headers: { 'x-csrf-token': value } })
    t.equal(refresh.statusCode, 403, `${what}: POST /auth/refresh refused (${status(refresh)})`)
    t.equal(refresh.json().code, 'TOKENGATE_CSRF')
    // Through the refresh hook: an expired access cookie, a POST.
    const expired = craftAccessToken({ sub: 'u-alice', sid: victim.sessionId, roles: ['user'] }, { expiresInSec: -30 })
    const hook = await app.inject({ method: 'POST', url: '/me', cookies: { ...cookies, tg_access: expired }, headers: { 'x-csrf-token': value } })
    t.equal(hook.statusCode, 403, `${what}: a POST that would refresh through the hook is refused`)
    t.equal((await readSession(redis, prefix, 'u-alice', victim.sessionId))?.h, h0, `${what}: nothing rotated`)
  }
  t.equal((await readSession(redis, prefix, 'u-alice', victim.sessionId)) !== undefined, true, 'the victim\'s session is still there')

  // Control: the session's own CSRF token passes, by cookie and header.
  const own = await app.inject({ method: 'POST', url: '/me', cookies: victim.jar, headers: { 'x-csrf-token': victim.jar.tg_csrf } })
  t.equal(own.statusCode, 200, `the session's own CSRF token passes (${status(own)})`)
  const ownRefresh = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: victim.jar, headers: { 'x-csrf-token': victim.jar.tg_csrf } })
  t.equal(ownRefresh.statusCode, 200, `and refreshes (${status(ownRefresh)})`)
  // The session keeps its CSRF token across a refresh (in-flight requests carry it).
  t.equal(jarOf(ownRefresh).tg_csrf ?? victim.jar.tg_csrf, victim.jar.tg_csrf)
})

t.test('a refused request re-sets the session\'s own tg_csrf when the cookie was not it', async t => {
  const { app } = await buildApp(t, { transport: ['cookie'] })
  const victim = await cookieLogin(app, 'alice')
  const cookies = { tg_access: victim.jar.tg_access, tg_refresh: victim.jar.tg_refresh, tg_csrf: 'planted-by-a-sibling-subdomain-0123456789' }
  const refused = await app.inject({ method: 'POST', url: '/me', cookies, headers: { 'x-csrf-token': cookies.tg_csrf } })
  t.equal(refused.statusCode, 403)
  t.equal(jarOf(refused).tg_csrf, victim.jar.tg_csrf, 'the answer puts the session\'s own CSRF cookie back')
  t.equal(jarOf(refused).tg_access, undefined, 'and no token cookie')
  t.equal(refused.headers['cache-control'], 'no-store', 'an answer that sets a tg_* cookie is no-store')
  const retried = await app.inject({ method: 'POST', url: '/me', cookies: { ...cookies, tg_csrf: jarOf(refused).tg_csrf }, headers: { 'x-csrf-token': jarOf(refused).tg_csrf } })
  t.equal(retried.statusCode, 200, 'a retry with it passes')
})
