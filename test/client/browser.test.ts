// The client in a real browser (headless Chromium through playwright-core; skipped when none is installed), for
// what Node cannot show: two tabs of one browser share the session through localStorage (the default storage)
// and hear each other's login and logout (storage events, BroadcastChannel); with `dpop: true` both tabs sign
// with ONE key pair kept in IndexedDB, non-extractable (its private key cannot be exported), and that key
// outlives a reload. The page loads dist/client/index.js as it ships, from the server's own origin (baseUrl
// defaults to the page's origin).
import { readFileSync } from 'node:fs'
import t from 'tap'
import { launchBrowser, noBrowser } from '../helpers/browser.js'
import { DIST } from '../helpers/spawn.js'
import { credentials, headerOf, startServer } from './server.js'

const PAGE = `<!doctype html><meta charset="utf-8"><title>tokengate client</title>
<script type="module">
import { createClient } from '/client.js'
window.changes = []
window.auth = createClient({ dpop: true })
window.auth.onChange(v => window.changes.push(v))
window.ready = true
</script>`

// What the page can do, typed loosely (it runs in the browser).
declare const window: any

t.test('two browser tabs share one DPoP key (IndexedDB) and one session (localStorage)', { skip: noBrowser }, async t => {
  const client = readFileSync(`${DIST}/client/index.js`, 'utf8')
  const server = await startServer(t, { dpop: {} }, app => {
    app.get('/client.js', async (_request, reply) => await reply.type('text/javascript').send(client))
    app.get('/page.html', async (_request, reply) => await reply.type('text/html').send(PAGE))
  })
  const browser = await launchBrowser(t)
  const context = await browser.newContext()
  const open = async (): Promise<Awaited<ReturnType<typeof context.newPage>>> => {
    const page = await context.newPage()
    await page.goto(`${server.baseUrl}/page.html`)
    await page.waitForFunction(() => window.ready === true)
    return page
  }
  const [a, b] = [await open(), await open()]
  const status = async (page: typeof a): Promise<number> => await page.evaluate(async () => (await window.auth.fetch('/api/orders')).status)

  const pair = await a.evaluate(async (c) => await window.auth.login(c), credentials('alice'))
  t.equal(pair.tokenType, 'DPoP', 'tab a logged in, bound to its key')
  await b.waitForFunction(() => window.changes.includes(true), undefined, { timeout: 3000 })
  t.pass('tab b heard the login (onChange(true))')
  server.reset()
  t.equal(await status(b), 200, 'tab b, which never logged in, reaches the protected route')
  t.equal(await status(a), 200, 'and so does tab a')
  const jwks = new Set(server.seen.map(s => JSON.stringify(headerOf(s.dpop!).jwk)))
  t.equal(jwks.size, 1, 'both tabs signed their proofs with the same key')

  const stored = await a.evaluate(async () => {
    const db: any = await new Promise((resolve, reject) => { const r = indexedDB.open('tokengate', 1); r.onsuccess = () => resolve(r.result); r.onerror = () => reject(r.error) })
    const pair: any = await new Promise((resolve, reject) => { const r = db.transaction('keys').objectStore('keys').get('tokengate'); r.onsuccess = () => resolve(r.result); r.onerror = () => reject(r.error) })
    db.close()
    const exported = await crypto.subtle.exportKey('jwk', pair.privateKey).then(() => 'exported', (e: Error) => e.name)
    return { found: pair !== undefined, extractable: pair?.privateKey.extractable, algorithm: pair?.privateKey.algorithm, exported }
  })
  t.ok(stored.found, 'the key pair is kept in IndexedDB')
  t.equal(stored.extractable, false, 'its private key is non-extractable')
  t.equal(stored.exported, 'InvalidAccessError', 'exporting the private key fails')
  t.same(stored.algorithm, { name: 'ECDSA', namedCurve: 'P-256' }, 'it is an ECDSA P-256 (ES256) key')

  await a.evaluate(async () => { await window.auth.logout() })
  await b.waitForFunction(() => window.changes.includes(false), undefined, { timeout: 3000 })
  t.pass('tab b heard tab a\'s logout (onChange(false))')
  t.equal(await b.evaluate(() => window.auth.signedIn), false, 'tab b is signed out')
  await b.waitForTimeout(200) // a second notice (the storage event and BroadcastChannel both fire) would come now
  t.same(await b.evaluate(() => window.changes), [true, false], 'tab b heard each change once, though two channels carried it')
  t.same(await a.evaluate(() => window.changes), [true, false], 'tab a heard its own login and logout once each')
  server.reset()
  t.equal(await status(b), 401, 'tab b\'s next fetch gets a 401')
  t.ok(server.seen.length === 1 && server.seen[0].authorization === undefined && server.seen[0].dpop === undefined, 'one request, with no token and no proof')

  // A reload starts a new page (a new JS realm): the key comes back from IndexedDB.
  await b.reload()
  await b.waitForFunction(() => window.ready === true)
  await b.evaluate(async (c) => await window.auth.login(c), credentials('alice'))
  // Another tab's localStorage write reaches this tab's renderer a moment later: wait until tab a has heard it.
  await a.waitForFunction(() => window.changes.length === 3, undefined, { timeout: 3000 })
  t.same(await a.evaluate(() => window.changes), [true, false, true], 'tab a heard tab b\'s login')
  server.reset()
  t.equal(await status(a), 200, 'after tab b reloaded and logged in, tab a gets through')
  t.same(new Set(server.seen.map(s => JSON.stringify(headerOf(s.dpop!).jwk))), jwks, 'with the same key as before the reload')
})
