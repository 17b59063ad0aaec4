/* eslint-disable no-template-curly-in-string -- ${VAR} is the config syntax the demo reads */
// Single sign-on in a real browser (headless Chromium through playwright-core; skipped when none is installed):
// the built demo (`npm start`, as dist/gateway/demo.js runs it) with a config that has login.oidc offers "Sign in with <provider>"; a click goes through the
// provider's own login and consent pages (panva's oidc-provider) and back to the page, signed in by the tg_*
// cookies the gateway set (SameSite=Strict cookies set on the callback's redirect are used by the page's own
// requests); the protected upstream sees the user. Signing out at the provider's end-session page ends the
// gateway session through the back-channel logout: the page's next request finds itself signed out.
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { SECRET } from '../helpers/app.js'
import { launchBrowser, noBrowser } from '../helpers/browser.js'
import { startProvider } from '../helpers/oidc-provider.js'
import { freePort } from '../helpers/redis.js'
import { ROOT, childEnv, removeTempDir, spawnDist, tempDir } from '../helpers/spawn.js'

declare const document: any

t.test('the demo page: "Sign in with …" through the provider\'s pages, the upstream sees the user, signed out at the provider', { skip: noBrowser }, async t => {
  const port = await freePort()
  const publicUrl = `http://127.0.0.1:${port}`
  const op = await startProvider([{
    client_id: 'demo',
    client_secret: 'demo-client-secret-0123456789',
    redirect_uris: [`${publicUrl}/auth/oidc/callback`],
    backchannel_logout_uri: `${publicUrl}/auth/oidc/backchannel-logout`,
    backchannel_logout_session_required: true,
    grant_types: ['authorization_code'],
    response_types: ['code']
  }])
  t.teardown(op.close)
  // The demo's own config, with single sign-on beside its users file.
  const dir = tempDir('oidc-demo')
  t.teardown(() => removeTempDir(dir))
  const configFile = path.join(dir, 'gateway.config.json')
  writeFileSync(configFile, JSON.stringify({
    listen: { host: '127.0.0.1', port: '${PORT}' },
    tokens: { secret: '${TOKENGATE_SECRET}', transport: ['header', 'cookie'] },
    login: {
      usersFile: path.join(ROOT, 'examples', 'users.json'),
      oidc: { issuer: op.issuer, clientId: 'demo', clientSecret: 'demo-client-secret-0123456789', rolesClaim: 'realm_access.roles', publicUrl }
    },
    routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:${DEMO_UPSTREAM_PORT}', auth: 'required', roles: ['user'] }],
    logLevel: 'warn'
  }))
  const demo = await spawnDist('gateway/demo.js', [], childEnv({ PORT: String(port), DEMO_UPSTREAM_PORT: String(await freePort()), TOKENGATE_SECRET: SECRET, TOKENGATE_CONFIG: configFile }), /Ctrl-C stops it\./)
  t.teardown(() => { if (demo.child.exitCode === null && demo.child.signalCode === null) demo.child.kill('SIGKILL') })

  const browser = await launchBrowser(t)
  const page = await (await browser.newContext()).newPage()
  await page.goto(`${publicUrl}/`)
  await page.waitForFunction(() => (globalThis as any).demoReady === true)
  const link = page.locator('#sso-link')
  t.equal(await link.textContent(), `Sign in with 127.0.0.1:${new URL(op.issuer).port}`, 'the page offers single sign-on, naming the provider')
  t.ok(await page.locator('#login').isVisible(), 'and the password form beside it (the gateway has a users file too)')
  if (process.env.TOKENGATE_SCREENSHOTS !== undefined) await page.screenshot({ path: path.join(process.env.TOKENGATE_SCREENSHOTS, 'demo-sso.png') })

  await link.click()
  await page.waitForURL(u => u.origin === op.issuer && u.pathname.startsWith('/interaction/'))
  t.pass('at the provider\'s login page')
  await page.fill('input[name=login]', 'kim')
  await page.fill('input[name=password]', 'any password')
  await page.click('button[type=submit]')
  await page.waitForURL(u => u.origin === op.issuer && u.pathname.startsWith('/interaction/'))
  await page.locator('button:has-text("Continue")').click()
  t.pass('consented at the provider')
  await page.waitForURL(`${publicUrl}/`)
  await page.locator('#signed-in').waitFor({ state: 'visible', timeout: 10_000 })
  t.pass('back on the page, signed in')
  const cookies = await page.context().cookies(publicUrl)
  t.ok(cookies.some(c => c.name === 'tg_access' && c.httpOnly && c.sameSite === 'Strict'), 'the session is in the HttpOnly tg_* cookies')
  t.notOk(cookies.some(c => c.name === 'tg_oidc'), 'the flow cookie is gone')
  t.equal(await page.evaluate(() => JSON.stringify(Object.keys(localStorage))), '[]', 'no token in the page\'s storage')

  await page.click('#call')
  await page.waitForFunction(() => document.getElementById('result').textContent.startsWith('200'))
  const result = await page.textContent('#result')
  t.match(result, /"user": "kim"/, 'the protected upstream saw kim')
  await page.waitForFunction(() => document.querySelectorAll('#sessions tr.current').length === 1, undefined, { timeout: 10_000 })
  t.pass('the page lists its session')

  // Signing out at the provider: its end-session page, "Yes, sign me out"; it calls the gateway's back-channel URI.
  const before = op.backchannel.length
  const provider = await page.context().newPage()
  await provider.goto(`${op.issuer}/session/end`)
  await provider.click('button[name=logout]')
  await provider.waitForLoadState()
  t.match(op.backchannel.slice(before), [{ clientId: 'demo', sub: 'kim' }], 'the provider called the gateway\'s back-channel logout')
  t.equal(op.backchannel.slice(before).find(b => b.error !== undefined), undefined, 'and the gateway answered 200')

  await page.click('#call')
  await page.locator('#signed-out').waitFor({ state: 'visible', timeout: 10_000 })
  t.pass('the page\'s next request found the session dead: signed out')
})
