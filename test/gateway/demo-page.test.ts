// `npm start`'s demo page in a real browser (headless Chromium through playwright-core; skipped when none is
// installed): the built demo (dist/gateway/demo.js, as `npm start` runs it) with 2 s access tokens. The page
// logs in through its form, calls the protected upstream, shows the access token's remaining life counting
// down and renewing by itself (the page never calls /auth/refresh: its requests carry the refresh token and
// the gateway's refresh hook answers with new tokens), lists the user's sessions (device, ip, last used) and
// revokes another device's session, which that device then finds signed out.
// TOKENGATE_SCREENSHOTS=<dir> saves the screenshots the README shows (docs/demo-*.png).
import path from 'node:path'
import type { Page } from 'playwright-core'
import t from 'tap'
import { launchBrowser, noBrowser } from '../helpers/browser.js'
import { freePort } from '../helpers/redis.js'
import { childEnv, spawnDist } from '../helpers/spawn.js'

declare const document: any
declare const window: any

const shots = process.env.TOKENGATE_SCREENSHOTS

t.test('the demo page: log in, call the upstream, the countdown renews, sessions listed and revoked', { skip: noBrowser }, async t => {
  const ports = { port: await freePort(), upstream: await freePort() }
  const demo = await spawnDist('gateway/demo.js', [], childEnv({ PORT: String(ports.port), DEMO_UPSTREAM_PORT: String(ports.upstream), ACCESS_TOKEN_TTL: '2s' }), /Ctrl-C stops it\./)
  t.teardown(() => { if (demo.child.exitCode === null && demo.child.signalCode === null) demo.child.kill('SIGKILL') })
  const base = `http://127.0.0.1:${ports.port}`
  t.match(demo.stdout(), `Open ${base}/ in a browser`, 'npm start names the page')

  const browser = await launchBrowser(t)
  // Every response the pages get (the favicon included): none may be missing or broken (a 401 for a revoked
  // session is the demo working).
  const failed: string[] = []
  const device = async (userAgent?: string): Promise<Page> => {
    const context = await browser.newContext({ viewport: { width: 900, height: 760 }, ...(userAgent !== undefined ? { userAgent } : {}) })
    const page = await context.newPage()
    page.on('response', res => { if (res.status() === 404 || res.status() >= 500) failed.push(`${res.status()} ${res.url()}`) })
    const res = await page.goto(`${base}/`)
    t.equal(res?.status(), 200, 'GET / is the page')
    t.match(res?.headers()['content-security-policy'], /default-src 'self'/, 'with a CSP: scripts from the page\'s own origin only')
    await page.waitForFunction(() => window.demoReady === true)
    return page
  }
  const visible = async (page: Page, selector: string): Promise<void> => { await page.locator(selector).waitFor({ state: 'visible', timeout: 10_000 }) }

  const a = await device()
  t.ok(await a.locator('#signed-out').isVisible(), 'signed out at first: the login form')
  const icon = await a.evaluate(async () => {
    const link = document.querySelector('link[rel~="icon"]')
    if (link === null) return null
    const res = await fetch(link.href)
    return { status: res.status, type: res.headers.get('content-type') }
  })
  t.match(icon, { status: 200, type: /^image\// }, 'the page names its icon, and it is served')
  const favicon = await fetch(`${base}/favicon.ico`)
  t.not(favicon.status, 404, `GET /favicon.ico (browsers ask for it) is not a 404 (${favicon.status})`)
  if (shots !== undefined) await a.screenshot({ path: path.join(shots, 'demo-login.png') })

  await a.fill('input[name=password]', 'wrong')
  await a.click('#login button[type=submit]')
  await visible(a, '#login-error')
  t.match(await a.textContent('#login-error'), /TOKENGATE_BAD_CREDENTIALS/, 'a wrong password: the error and its code')

  await a.fill('input[name=password]', 'demo-password')
  await a.click('#login button[type=submit]')
  await visible(a, '#signed-in')
  t.pass('logged in through the form')

  await a.click('#call')
  await a.waitForFunction(() => document.getElementById('result').textContent.startsWith('200'))
  const result = await a.textContent('#result')
  t.match(result, /"user": "demo"/, 'the protected upstream saw the demo user')
  t.match(result, /"sawAuthorization": false/, 'and not the token')

  // The countdown: 2 s tokens run out, the page's next request is refreshed by the hook, and it starts again.
  const left = async (): Promise<number> => Number((await a.textContent('#countdown'))?.replace(/\D+/g, ''))
  t.ok(await left() <= 2, 'the countdown shows the access token\'s remaining life')
  t.match(await a.evaluate(() => document.getElementById('renewals').parentElement.textContent), /renewed 0 times/, 'renewed 0 times')
  // The sentence at the moment of the first renewal (read in the page, so it cannot move on in between).
  const once = await a.waitForFunction(() => {
    const n = document.getElementById('renewals')
    return n.textContent === '1' ? n.parentElement.textContent : false
  }, undefined, { timeout: 15_000, polling: 50 })
  t.match(await once.jsonValue(), /renewed 1 time by/, 'renewed 1 time (not "1 times")')
  await a.waitForFunction(() => Number(document.getElementById('renewals').textContent) >= 2, undefined, { timeout: 15_000 })
  t.pass('the access token renewed by itself, twice')
  await a.waitForFunction(() => /^[12] s$/.test(document.getElementById('countdown').textContent), undefined, { timeout: 5000 })
  t.pass('and the countdown started again')
  await a.click('#call')
  await a.waitForFunction(() => document.getElementById('result').textContent.startsWith('200'))
  t.pass('the renewed session still reaches the upstream')

  // Another device logs in; the first lists both sessions (device, ip, last used) and revokes the other.
  const b = await device('Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0')
  await b.click('#login button[type=submit]')
  await visible(b, '#signed-in')
  await a.waitForFunction(() => document.querySelectorAll('#sessions tr').length === 2, undefined, { timeout: 10_000 })
  const rows = await a.$$eval('#sessions tr', trs => trs.map((tr: any) => ({ current: tr.classList.contains('current'), cells: [...tr.querySelectorAll('td')].map((td: any) => td.textContent) })))
  const mine = rows.find(r => r.current)
  const other = rows.find(r => !r.current)
  t.match(mine?.cells[0], /Chrome on Linux.*this browser/, 'this browser\'s session, marked')
  t.match(other?.cells[0], /^Firefox on Windows/, 'the other device by its user agent')
  t.equal(other?.cells[1], '127.0.0.1', 'its ip')
  t.match(other?.cells[2], /s ago$/, 'when it was last used')
  if (shots !== undefined) await a.screenshot({ path: path.join(shots, 'demo-signed-in.png'), fullPage: true })

  await a.click('#sessions tr:not(.current) button.revoke')
  await a.waitForFunction(() => document.querySelectorAll('#sessions tr').length === 1, undefined, { timeout: 10_000 })
  t.pass('the revoked session left the list')
  await visible(b, '#signed-out')
  t.pass('the revoked device found itself signed out at its next request')
  t.ok(await a.locator('#signed-in').isVisible(), 'the first device is still signed in')

  await a.click('#logout')
  await visible(a, '#signed-out')
  t.pass('log out: back to the form')
  t.same(failed, [], 'no request of the pages was a 404 or a 5xx')
})
