// The README's CORS recipe for plugin users, in a real browser (headless Chromium through playwright-core;
// skipped when none is installed): the page comes from one origin, the API (a Fastify app with @fastify/cors
// given tokengate's `corsHeaders`, then tokengate) from another. The client logs in across origins, and with
// 1 s access tokens keeps working for seconds: it can only do so if the browser lets it read the refresh
// hook's x-access-token and x-refresh-token. Without `corsHeaders` (exposedHeaders left out) the same page
// cannot read them and keeps sending its first refresh token: once the grace window (1 s here) is over,
// that is reuse and the session dies. The recipe is what makes it work.
// The API's clock is stopped (test/helpers/clock.ts; the browser's is left alone: with header transport the
// client reckons only in expiresIn) and moved 150 ms after each request, so 3.6 s of traffic take no real
// seconds and as many requests on a slow machine as on a fast one.
import { readFileSync } from 'node:fs'
import cors from '@fastify/cors'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import tokengate, { corsHeaders } from '../../plugin/index.js'
import { SECRET, verifyCredentials } from '../helpers/app.js'
import { launchBrowser, noBrowser } from '../helpers/browser.js'
import { fakeClock } from '../helpers/clock.js'
import { deletePrefix, redisUrl, uniquePrefix } from '../helpers/redis.js'
import { DIST } from '../helpers/spawn.js'
import { credentials } from './server.js'

declare const window: any

async function listen (t: Test, app: FastifyInstance): Promise<number> {
  t.teardown(async () => await app.close())
  await app.listen({ host: '127.0.0.1', port: 0 })
  return (app.server.address() as { port: number }).port
}

/** The plugin user's API on its own origin (http://localhost:<port>): the recipe, or CORS without exposed headers. */
async function api (t: Test, pageOrigin: string, recipe: boolean): Promise<string> {
  const url = await redisUrl()
  const prefix = uniquePrefix('cors-recipe')
  const redis = new Redis(url)
  t.teardown(async () => { await deletePrefix(redis, prefix); redis.disconnect() })
  const app = Fastify()
  await app.register(cors, recipe
    ? { origin: [pageOrigin], credentials: true, ...corsHeaders }
    : { origin: [pageOrigin], credentials: true, allowedHeaders: corsHeaders.allowedHeaders })
  await app.register(tokengate, { secret: SECRET, redis: url, keyPrefix: prefix, accessTokenTtl: '1s', reuseGraceMs: 1000, routes: { verifyCredentials } })
  app.get('/api/orders', { onRequest: app.authenticate }, async (request) => ({ user: request.auth!.userId }))
  return `http://localhost:${await listen(t, app)}`
}

t.test('the CORS recipe: a page on another origin keeps its session through the refresh hook', { skip: noBrowser }, async t => {
  const client = readFileSync(`${DIST}/client/index.js`, 'utf8')
  const site = Fastify()
  site.get('/client.js', async (_request, reply) => await reply.type('text/javascript').send(client))
  site.get('/page.html', async (request, reply) => await reply.type('text/html').send(`<!doctype html><meta charset="utf-8">
<script type="module">
import { createClient } from '/client.js'
window.auth = createClient({ baseUrl: ${JSON.stringify((request.query as { api: string }).api)}, storage: 'session' })
window.ready = true
</script>`))
  const pageOrigin = `http://127.0.0.1:${await listen(t, site)}`
  const browser = await launchBrowser(t)
  const clock = fakeClock(t)

  for (const recipe of [true, false]) {
    const apiBase = await api(t, pageOrigin, recipe)
    const page = await (await browser.newContext()).newPage()
    await page.goto(`${pageOrigin}/page.html?api=${encodeURIComponent(apiBase)}`)
    await page.waitForFunction(() => window.ready === true)
    const pair = await page.evaluate(async (c) => await window.auth.login(c), credentials('alice'))
    t.ok(pair.sessionId, `${recipe ? 'recipe' : 'no exposed headers'}: the login crossed origins (${pageOrigin} → ${apiBase})`)
    const statuses: number[] = []
    for (let i = 0; i < 24; i++) {
      statuses.push(await page.evaluate(async () => (await window.auth.fetch('/api/orders')).status))
      clock.tick(150)
    }
    if (recipe) {
      t.same(statuses.filter(s => s !== 200), [], `with corsHeaders: ${statuses.length} requests over 3.6 s of 1 s access tokens, all 200`)
      t.equal(await page.evaluate(() => window.auth.signedIn), true, 'and the client is still signed in')
    } else {
      t.ok(statuses.includes(401), 'without the exposed headers the client cannot read the new tokens: its session dies')
      t.equal(await page.evaluate(() => window.auth.signedIn), false, 'and it signs itself out')
    }
    await page.context().close()
  }
})
