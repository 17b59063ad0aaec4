// Cookie transport from the client (docs/cookie-transport.md): the tokens live in HttpOnly cookies the
// client never handles. Node's fetch keeps no cookies, so the test plays the browser: a cookie jar wraps fetch
// (and only honours `credentials: 'include'`, as a cross-origin browser would), and `document.cookie` shows the
// scripts-readable tg_csrf alone. The client must send credentials: 'include', no token header, the tg_csrf
// value as x-csrf-token on unsafe methods (without it the server answers 403 TOKENGATE_CSRF), keep no token
// in its storage, ride the refresh hook's new cookies through 1 s access tokens, and sign out on logout.
import t from 'tap'
import { createClient } from '../../client/index.js'
import { fakeClock } from '../helpers/clock.js'
import { credentials, sharedStorage, startServer, uniqueKey } from './server.js'

interface Jar { cookies: Map<string, { value: string, httpOnly: boolean }>, fetch: typeof fetch, credentialsSeen: Array<RequestCredentials | undefined> }

function browserJar (): Jar {
  const cookies = new Map<string, { value: string, httpOnly: boolean }>()
  const credentialsSeen: Array<RequestCredentials | undefined> = []
  const jarFetch: typeof fetch = async (input, init) => {
    credentialsSeen.push(init?.credentials)
    const headers = new Headers(init?.headers)
    if (init?.credentials === 'include' && cookies.size > 0) headers.set('cookie', [...cookies].map(([k, c]) => `${k}=${c.value}`).join('; '))
    const res = await fetch(input, { ...init, headers })
    if (init?.credentials === 'include') {
      for (const line of res.headers.getSetCookie()) {
        const [pair, ...attrs] = line.split(/;\s*/)
        const eq = pair.indexOf('=')
        const name = pair.slice(0, eq)
        const value = pair.slice(eq + 1)
        const gone = value === '' || attrs.some(a => /^max-age=0$/i.test(a) || (/^expires=/i.test(a) && Date.parse(a.slice(8)) <= Date.now()))
        if (gone) cookies.delete(name)
        else cookies.set(name, { value, httpOnly: attrs.some(a => /^httponly$/i.test(a)) })
      }
    }
    return res
  }
  return { cookies, fetch: jarFetch, credentialsSeen }
}

t.test('cookie transport: credentials included, CSRF header on unsafe methods, no token in JS', async t => {
  // Client and server share this process's clock, stopped (test/helpers/clock.ts): 2.5 s of traffic, moved
  // 100 ms per request, cost no real seconds.
  const clock = fakeClock(t)
  const server = await startServer(t, { transport: ['cookie'], cookie: { secure: false }, accessTokenTtl: '1s' })
  const jar = browserJar()
  const g = globalThis as { document?: { cookie: string } }
  g.document = {
    get cookie () { return [...jar.cookies].filter(([, c]) => !c.httpOnly).map(([k, c]) => `${k}=${c.value}`).join('; ') }
  }
  t.teardown(() => { delete g.document })
  const storage = sharedStorage()
  const auth = createClient({ baseUrl: server.baseUrl, transport: 'cookie', storage, key: uniqueKey('cookie'), fetch: jar.fetch })
  t.teardown(() => auth.close())
  const changes: boolean[] = []
  auth.onChange(v => changes.push(v))

  const pair = await auth.login(credentials('alice'))
  t.ok(auth.signedIn, 'signed in after login')
  t.same([...jar.cookies.keys()].sort(), ['tg_access', 'tg_csrf', 'tg_refresh'], 'the login set the three cookies in the jar')
  t.equal(pair.accessToken, undefined, 'the login answer carries no access token (it is in an HttpOnly cookie)')
  t.equal(pair.refreshToken, undefined, 'nor a refresh token')
  const kept = [...storage.map.values()].join('')
  t.notOk(kept.includes(jar.cookies.get('tg_access')!.value) || kept.includes(jar.cookies.get('tg_refresh')!.value), 'the client keeps no token in its storage')
  t.equal(auth.sessionId, pair.sessionId, 'it keeps the session id')

  server.reset()
  const statuses: number[] = []
  for (let i = 0; i < 25; i++) {
    const res = await auth.fetch('/api/orders', i % 2 === 0 ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
    statuses.push(res.status)
    await res.arrayBuffer()
    clock.tick(100)
  }
  t.same(statuses.filter(s => s !== 200), [], `every one of the ${statuses.length} GETs and POSTs was a 200 through 1 s access tokens`)
  t.ok(server.seen.every(s => s.authorization === undefined && s.refreshToken === undefined), 'no request carried a token header')
  t.ok(server.seen.every(s => s.cookie?.includes('tg_refresh=') === true), 'every request carried the cookies')
  const csrf = jar.cookies.get('tg_csrf')!.value
  t.ok(server.seen.filter(s => s.method === 'POST').every(s => s.csrf === csrf), 'every POST carried x-csrf-token = the tg_csrf cookie')
  t.ok(server.seen.filter(s => s.method === 'GET').every(s => s.csrf === undefined), 'GETs carried no x-csrf-token')
  t.ok(jar.credentialsSeen.every(c => c === 'include'), 'every fetch had credentials: \'include\'')
  // Logged in at a whole second, the hook refreshes at 1.1 s and 2.1 s: three refresh cookies in all.
  t.equal(new Set(server.seen.map(s => /tg_refresh=([^;]+)/.exec(s.cookie ?? '')?.[1])).size, 3, 'the refresh hook rotated the refresh cookie once a second')

  // Without document.cookie (the tg_csrf value unknown) the server's CSRF check refuses the POST: the header mattered.
  const doc = g.document
  delete g.document
  const noCsrf = await auth.fetch('/api/orders', { method: 'POST' })
  t.equal(noCsrf.status, 403, 'a POST without x-csrf-token is refused with 403')
  t.equal((await noCsrf.json() as { code: string }).code, 'TOKENGATE_CSRF', 'code TOKENGATE_CSRF')
  t.ok(auth.signedIn, 'a 403 does not sign the client out')
  g.document = doc

  server.reset()
  await auth.logout()
  t.match(server.seen, [{ method: 'POST', url: '/auth/logout', status: 204, csrf }], 'the logout was one POST with the CSRF header, answered 204')
  t.notOk(jar.cookies.has('tg_access') || jar.cookies.has('tg_refresh'), 'the logout cleared the token cookies')
  t.same(changes, [true, false], 'onChange heard the login and the logout')
  t.equal((await auth.fetch('/api/orders')).status, 401, 'a fetch after the logout gets a 401')
})
