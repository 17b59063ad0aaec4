// Many tabs of one real browser (headless Chromium through playwright-core; skipped when none is installed),
// the promise the client exists for: three tabs share one session, with 2 s access tokens, and send requests
// for 15 s with no lock between them. Every refresh happens in the server's refresh hook, often in two tabs
// at once; not one request may fail. Then a logout in one tab signs the other tabs out within a second, and
// their next requests carry no token. Both transports run side by side: tokens in headers (localStorage)
// and HttpOnly cookies (the client sends x-csrf-token from tg_csrf itself).
import { readFileSync } from 'node:fs'
import t from 'tap'
import { launchBrowser, noBrowser } from '../helpers/browser.js'
import { DIST } from '../helpers/spawn.js'
import { credentials, startServer, type TestServer } from './server.js'

const TABS = 3
const TRAFFIC_MS = 15_000

// The page: a client with the transport the URL names, and a traffic loop the test starts.
const PAGE = `<!doctype html><meta charset="utf-8"><title>tab</title>
<script type="module">
import { createClient } from '/client.js'
const transport = new URLSearchParams(location.search).get('transport')
window.auth = createClient({ transport, key: 'tabs-' + transport })
window.signedOutAt = null
window.auth.onChange(v => { if (!v) window.signedOutAt = Date.now() })
window.traffic = async (ms) => {
  const statuses = []
  const end = Date.now() + ms
  for (let i = 0; Date.now() < end; i++) {
    // GETs and POSTs (a POST by cookie needs the CSRF header), with jitter so tabs collide at random.
    const res = await window.auth.fetch('/api/orders', { method: i % 3 === 0 ? 'POST' : 'GET' })
    statuses.push(res.status)
    await new Promise(r => setTimeout(r, 60 + Math.random() * 120))
  }
  return statuses
}
window.ready = true
</script>`

declare const window: any

t.test(`${TABS} tabs, 2 s access tokens, ${TRAFFIC_MS / 1000} s of requests: no failure; a logout in one tab signs the others out within 1 s`, { skip: noBrowser }, async t => {
  const client = readFileSync(`${DIST}/client/index.js`, 'utf8')
  const serve = (server: { app: TestServer['app'] }): void => {
    server.app.get('/client.js', async (_request, reply) => await reply.type('text/javascript').send(client))
    server.app.get('/page.html', async (_request, reply) => await reply.type('text/html').send(PAGE))
  }
  const servers = {
    header: await startServer(t, { accessTokenTtl: '2s' }, app => serve({ app })),
    cookie: await startServer(t, { accessTokenTtl: '2s', transport: ['cookie'], cookie: { secure: false } }, app => serve({ app }))
  }
  const browser = await launchBrowser(t)
  t.jobs = 2 // the two transports at once

  await Promise.all((['header', 'cookie'] as const).map(transport => t.test(`transport: ${transport}`, async t => {
    const server = servers[transport]
    const context = await browser.newContext()
    const tabs = []
    for (let i = 0; i < TABS; i++) {
      const page = await context.newPage()
      await page.goto(`${server.baseUrl}/page.html?transport=${transport}`)
      await page.waitForFunction(() => window.ready === true)
      tabs.push(page)
    }
    const pair = await tabs[0].evaluate(async (c) => await window.auth.login(c), credentials('alice'))
    t.ok(pair.sessionId, 'tab 1 logged in')
    // Every tab has heard of the login (a storage write reaches other tabs a moment later) before traffic starts.
    for (const page of tabs) await page.waitForFunction(() => window.auth.signedIn === true)
    if (transport === 'cookie') {
      const cookies = await context.cookies()
      t.ok(cookies.some(c => c.name === 'tg_access' && c.httpOnly), 'the access token is an HttpOnly cookie')
      t.equal(await tabs[0].evaluate(() => localStorage.getItem('tabs-cookie')?.includes('accessToken') ?? false), false, 'no token in localStorage')
    }
    server.reset()

    const results: number[][] = await Promise.all(tabs.map(async page => await page.evaluate(async (ms) => await window.traffic(ms), TRAFFIC_MS)))
    const total = results.reduce((n, r) => n + r.length, 0)
    const failed = results.flat().filter(s => s !== 200)
    t.same(failed, [], `all ${total} requests of the ${TABS} tabs answered 200 (${results.map(r => r.length).join(' + ')})`)
    t.same(server.seen.filter(s => s.status !== 200).map(s => `${s.status} ${s.code}`), [], 'the server refused nothing')
    t.equal(server.orders(), total, 'every request reached the route once: no retries')
    const refreshed = server.seen.filter(s => s.newAccess !== undefined || /tg_access=[^;]/.test(s.setCookie ?? '')).length
    t.ok(refreshed >= TRAFFIC_MS / 2000 - 1, `the refresh hook renewed the access token as it expired (${refreshed} answers carried new tokens)`)
    const refreshOf = (s: { refreshToken?: string, cookie?: string }): string | undefined => transport === 'header' ? s.refreshToken : /tg_refresh=([^;]+)/.exec(s.cookie ?? '')?.[1]
    const rotations = new Set(server.seen.map(refreshOf)).size
    t.ok(rotations >= 5, `the refresh token rotated all along (${rotations} refresh tokens in use), with no lock between the tabs`)

    // Logout in tab 1: the others are signed out within a second, without a request of their own.
    const loggedOutAt = await tabs[0].evaluate(async () => { const at = Date.now(); await window.auth.logout(); return at })
    for (const [i, page] of tabs.slice(1).entries()) {
      await page.waitForFunction(() => window.signedOutAt !== null, undefined, { timeout: 3000 })
      const at: number = await page.evaluate(() => window.signedOutAt)
      t.ok(at - loggedOutAt < 1000, `tab ${i + 2} signed out ${at - loggedOutAt} ms after the logout began`)
      t.equal(await page.evaluate(() => window.auth.signedIn), false, `tab ${i + 2} says it is signed out`)
    }
    server.reset()
    const after = await tabs[2].evaluate(async () => (await window.auth.fetch('/api/orders')).status)
    t.equal(after, 401, 'a signed-out tab\'s request is refused')
    t.equal(server.orders(), 0, 'and never reaches the route')
    if (transport === 'header') t.equal(server.seen[0].authorization, undefined, 'it carries no token')
    else t.notMatch(String(server.seen[0].cookie), /tg_access=|tg_refresh=/, 'it carries no session cookie (logout cleared them)')
    await context.close()
  })))
})
