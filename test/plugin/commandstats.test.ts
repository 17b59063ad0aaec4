// Steady state costs no Redis round trip: authenticated requests are checked against the in-memory
// revocation set. Measured on a redis-server of the test's own with INFO commandstats.
import t from 'tap'
import Fastify from 'fastify'
import type { Redis } from 'ioredis'
import tokengate, { type TokengateOptions } from '../../plugin/index.js'
import { SECRET, sleep, verifyCredentials } from '../helpers/app.js'
import { readSessions, sessionsKey, startOwnRedis, uniquePrefix } from '../helpers/redis.js'

const REQUESTS = 1000
/** What our own inspecting client issues between RESETSTAT and the read. */
const OWN_COMMANDS = new Set(['config|resetstat', 'info'])

/** INFO commandstats as { command: calls }. */
async function commandStats (client: Redis): Promise<Record<string, number>> {
  const info = await client.info('commandstats')
  const out: Record<string, number> = {}
  for (const line of info.split(/\r?\n/)) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line)
    if (m !== null) out[m[1]] = Number(m[2])
  }
  return out
}

t.test('no Redis command per authenticated request in steady state; a logout does issue some', async t => {
  const own = await startOwnRedis()
  const app = Fastify({ logger: false })
  t.teardown(async () => {
    await app.close()
    await own.stop()
  })
  const prefix = uniquePrefix('cmdstats')
  await app.register(tokengate, { secret: SECRET, redis: own.url, keyPrefix: prefix, routes: { verifyCredentials } } as TokengateOptions)
  app.get('/me', { onRequest: app.authenticate }, async (request) => ({ userId: request.auth!.userId, sessionId: request.auth!.sessionId }))
  await app.ready()
  const deadline = Date.now() + 3000
  while (!app.tokengate.feedUp && Date.now() < deadline) await sleep(10)
  t.equal(app.tokengate.feedUp, true, 'revocation feed up (steady state)')

  const client = own.client()
  const l = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  t.equal(l.statusCode, 200, l.statusCode === 200 ? 'login' : l.body)
  const { accessToken, sessionId } = l.json()
  t.same(Object.keys(await readSessions(client, prefix, 'u-alice') ?? {}), [sessionId], 'one session')
  const headers = { authorization: `Bearer ${accessToken}` }
  const warm = await app.inject({ url: '/me', headers })
  t.equal(warm.statusCode, 200, 'warm-up request')

  t.equal(await client.config('RESETSTAT'), 'OK')
  let ok = 0
  for (let i = 0; i < REQUESTS; i++) {
    const res = await app.inject({ url: '/me', headers })
    if (res.statusCode === 200 && res.json().sessionId === sessionId) ok++
  }
  t.equal(ok, REQUESTS, `all ${REQUESTS} authenticated GET /me answered 200`)

  const steady = await commandStats(client)
  t.comment(`commandstats after ${REQUESTS} requests: ${JSON.stringify(steady)}`)
  const foreign = Object.keys(steady).filter(c => !OWN_COMMANDS.has(c))
  t.same(foreign, [], 'no command other than the inspecting client\'s own')
  t.equal(steady['config|resetstat'], 1, 'the counter saw our RESETSTAT (the stats are live)')

  // Contrast: a logout does reach Redis (the revoke and mark-revoked scripts), so the counter can tell.
  const out = await app.inject({ method: 'POST', url: '/auth/logout', headers })
  t.equal(out.statusCode, 204, out.body)
  const after = await commandStats(client)
  t.comment(`commandstats after one logout: ${JSON.stringify(after)}`)
  const scripts = (after.evalsha ?? 0) + (after.eval ?? 0)
  t.ok(scripts >= 1, `logout ran ${scripts} script call(s) (evalsha/eval)`)
  t.equal(await client.exists(sessionsKey(prefix, 'u-alice')), 0, 'and deleted the session (the user\'s key with it)')
  t.not(await client.zscore(`${prefix}:revoked`, sessionId), null, 'and recorded the revocation')
  const res = await app.inject({ url: '/me', headers })
  t.equal(res.json().code, 'TOKENGATE_TOKEN_REVOKED')
})
