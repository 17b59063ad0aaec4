// Unauthenticated work is cheap (DESIGN §2): a request's token is checked (access-token signature, or
// refresh-token MAC) before its DPoP proof's signature is verified, and the proof's jti is stored last. A
// request with a bad token and a valid self-signed proof costs no signature check and no Redis command.
// Counted where they happen: node:crypto's verify (the built-in's export, synced for ESM importers) and the
// commands a redis-server of the test's own executes (MONITOR; the feed's liveness PINGs aside).
import crypto from 'node:crypto'
import { syncBuiltinESMExports } from 'node:module'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import tokengate, { type TokengateOptions } from '../../plugin/index.js'
import { ReplayMemory } from '../../plugin/dpop.js'
import { SECRET, sleep, verifyCredentials } from '../helpers/app.js'
import { athOf, newKey, proof, withDpop } from '../helpers/dpop.js'
import { startOwnRedis, uniquePrefix } from '../helpers/redis.js'
import { craftAccessToken } from '../helpers/tokens.js'

const ORIGIN = 'http://localhost:80'

/** Every command the server executes, as lower-case argv arrays, through MONITOR. */
async function monitor (t: Test, client: Redis, marker: Redis): Promise<{ since: () => Promise<string[][]> }> {
  const seen: string[][] = []
  const m = await client.monitor()
  t.teardown(() => { m.disconnect() })
  m.on('monitor', (_time: string, args: string[]) => { seen.push(args.map(a => String(a).toLowerCase())) })
  let n = 0
  return {
    // The commands since the last call: a marker ECHO is sent last and awaited in the stream (MONITOR lists
    // commands in the order they ran), so every command a request caused before it is in.
    async since () {
      const mark = `marker-${++n}`
      await marker.echo(mark)
      const deadline = Date.now() + 5000
      while (!seen.some(a => a[0] === 'echo' && a[1] === mark)) {
        if (Date.now() > deadline) throw new Error('MONITOR did not see the marker')
        await sleep(5)
      }
      const out = seen.splice(0).filter(a => !(a[0] === 'echo' && a[1] === mark) && a[0] !== 'ping')
      return out
    }
  }
}

t.test('a bad token with a valid self-signed proof costs no signature check and no Redis command', async t => {
  const own = await startOwnRedis()
  const app: FastifyInstance = Fastify({ logger: false })
  t.teardown(async () => {
    await app.close()
    await own.stop()
  })
  await app.register(tokengate, { secret: SECRET, redis: own.url, keyPrefix: uniquePrefix('cheap'), routes: { verifyCredentials }, ...withDpop({ replay: 'store' }) } as TokengateOptions)
  app.get('/me', { onRequest: app.authenticate }, async (request) => ({ userId: request.auth!.userId }))
  app.get('/anon', async (request) => ({ userId: request.auth?.userId ?? null }))
  await app.ready()
  const deadline = Date.now() + 3000
  while (!app.tokengate.feedUp && Date.now() < deadline) await sleep(10)
  t.equal(app.tokengate.feedUp, true, 'revocation feed up')

  const original = crypto.verify
  let verifies = 0
  crypto.verify = ((...args: Parameters<typeof original>) => { verifies++; return (original as (...a: unknown[]) => unknown)(...args) }) as typeof original
  syncBuiltinESMExports()
  t.teardown(() => { crypto.verify = original; syncBuiltinESMExports() })

  const mon = await monitor(t, own.client(), own.client())
  const key = await newKey()
  // A bound session, for the controls and for tokens with a right format and a wrong MAC or signature.
  const loginRes = await app.inject({ method: 'POST', url: '/auth/login', headers: { dpop: await proof(key, 'POST', `${ORIGIN}/auth/login`) }, payload: { username: 'alice', password: 'wonderland' } })
  t.equal(loginRes.statusCode, 200, 'a DPoP-bound login')
  const pair = loginRes.json()
  t.equal(pair.tokenType, 'DPoP')
  await mon.since()

  const wrongMac = pair.refreshToken.slice(0, -4) + (pair.refreshToken.endsWith('AAAA') ? 'BBBB' : 'AAAA')
  const forged = craftAccessToken({ sub: 'u-alice', sid: pair.sessionId, roles: ['user'], cnf: { jkt: 'x' } }, { key: 'not-the-secret-'.repeat(4) })
  const expiredNoRefresh = craftAccessToken({ sub: 'u-alice', sid: pair.sessionId, roles: ['user'] }, { expiresInSec: -30 })
  const cases: Array<[string, (url: string) => Promise<Record<string, string>>]> = [
    ['x-refresh-token: garbage', async url => ({ 'x-refresh-token': 'garbage', dpop: await proof(key, 'GET', url) })],
    ['a refresh token with a wrong MAC', async url => ({ 'x-refresh-token': wrongMac, dpop: await proof(key, 'GET', url) })],
    ['DPoP scheme with a garbage access token', async url => ({ authorization: 'DPoP garbage.garbage.garbage', dpop: await proof(key, 'GET', url, { accessToken: 'garbage.garbage.garbage' }) })],
    ['DPoP scheme with a forged signature', async url => ({ authorization: `DPoP ${forged}`, dpop: await proof(key, 'GET', url, { accessToken: forged }) })],
    ['an expired access token and no refresh token', async url => ({ authorization: `Bearer ${expiredNoRefresh}`, dpop: await proof(key, 'GET', url) })]
  ]
  for (const [what, headersFor] of cases) {
    for (const path of ['/anon', '/me']) {
      const headers = await headersFor(`${ORIGIN}${path}`)
      verifies = 0
      const res = await app.inject({ url: path, headers })
      const commands = await mon.since()
      t.equal(res.statusCode, path === '/anon' ? 200 : 401, `${what} on ${path}: ${res.statusCode}`)
      t.equal(verifies, 0, `${what} on ${path}: no signature verified (${verifies})`)
      t.same(commands, [], `${what} on ${path}: no Redis command (${JSON.stringify(commands)})`)
    }
  }

  // Controls: the bound session's own requests do verify the proof and claim its jti (one SET NX PX).
  verifies = 0
  const me = await app.inject({ url: '/me', headers: { authorization: `DPoP ${pair.accessToken}`, dpop: await proof(key, 'GET', `${ORIGIN}/me`, { accessToken: pair.accessToken }) } })
  const used = await mon.since()
  t.equal(me.statusCode, 200, 'control: the bound access token with its proof')
  t.equal(verifies, 1, 'control: one proof signature verified')
  t.equal(used.filter(c => c[0] === 'set' && c.includes('nx')).length, 1, `control: one jti claimed (${JSON.stringify(used)})`)
  verifies = 0
  const refreshed = await app.inject({ url: '/me', headers: { 'x-refresh-token': pair.refreshToken, dpop: await proof(key, 'GET', `${ORIGIN}/me`) } })
  const refreshCommands = await mon.since()
  t.equal(refreshed.statusCode, 200, 'control: the refresh hook with the session\'s key')
  t.equal(verifies, 1, 'control: one proof signature verified')
  t.ok(refreshCommands.some(c => c[0] === 'set' && c.includes('nx')) && refreshCommands.some(c => c[0] === 'evalsha' || c[0] === 'eval'), 'control: the jti claimed and the session rotated')
  t.equal(athOf(pair.accessToken).length, 43)
})

t.test('the in-memory replay cache is bounded, and never forgets a proof it could still accept', async t => {
  const max = 50
  const window = 60 // seconds a proof is accepted either way of now
  const memory = new ReplayMemory(max)
  const now = Math.floor(Date.now() / 1000)
  const accepted: Array<[string, number]> = []
  let largest = 0
  // A flood: proofs spread over the whole window, in random order, far more than the cache holds.
  for (let i = 0; i < 1000; i++) {
    const iat = now - window + Math.floor(Math.random() * (2 * window + 1))
    const id = `flood-${i}`
    if (memory.claim(id, iat)) accepted.push([id, iat])
    largest = Math.max(largest, memory.size)
  }
  t.ok(largest <= max, `never more than the cap (at most ${largest} of ${max})`)
  t.ok(accepted.length >= max, `the cache accepted proofs (${accepted.length})`)
  // No replay, ever: every proof it accepted is refused a second time, evicted or not.
  const replays = accepted.filter(([id, iat]) => memory.claim(id, iat))
  t.same(replays, [], 'no accepted proof is accepted again')
  // A fresh proof (iat now + 1 s, newer than anything the flood could push out) is still accepted.
  t.equal(memory.claim('fresh', now + window + 1), true, 'a newer proof passes')
  t.equal(memory.claim('fresh', now + window + 1), false, 'once')
})
