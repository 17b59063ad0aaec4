// The revocation feed proves it is alive. Instance B reaches Redis through a path that silently stops
// forwarding (a partition that holds bytes and resets nothing): a logout on A must still be refused on B
// (401, or 503 while B cannot reach Redis at all) within revocationStalenessMs (3.5 s) + storeTimeoutMs (1 s)
// of the revocation (under 5 s), and B recovers by itself once the path heals, reloading the revocations
// it missed.
import t from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { buildApp, login, sleep } from '../helpers/app.js'
import { redisUrl } from '../helpers/redis.js'
import { startTcpProxy } from '../helpers/tcp-proxy.js'

const me = async (app: FastifyInstance, token: string): Promise<LightMyRequestResponse> =>
  await app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })

async function until (limitMs: number, check: () => Promise<boolean> | boolean): Promise<number> {
  const start = Date.now()
  while (!await check()) {
    if (Date.now() - start > limitMs) return -1
    await sleep(50)
  }
  return Date.now() - start
}

t.test('a silent partition between B and Redis: B refuses a token revoked on A, then recovers', async t => {
  const target = new URL(await redisUrl())
  const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 6379) })
  t.teardown(async () => { await proxy.close() })

  const A = await buildApp(t)
  const B = await buildApp(t, { redis: proxy.url }, { prefix: A.prefix })
  t.ok(await until(5000, () => A.app.tokengate.feedUp && B.app.tokengate.feedUp) >= 0, 'both feeds up')

  const pair = await login(A.app)
  t.equal((await me(B.app, pair.accessToken)).statusCode, 200, 'the token works on B before the partition')

  proxy.partition()
  const out = await A.app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(out.statusCode, 204, 'logout on A (direct to Redis) succeeds')
  const loggedOutAt = Date.now()

  // Before the fix B kept answering 200 for as long as the partition lasted, its feed "up".
  let last: LightMyRequestResponse | undefined
  let accepted = 0
  const refusedAfter = await until(10_000, async () => {
    last = await me(B.app, pair.accessToken)
    if (last.statusCode === 200) accepted++
    return last.statusCode !== 200
  })
  t.comment(`B refused the revoked token ${Date.now() - loggedOutAt} ms after the logout (${accepted} requests accepted before)`)
  t.ok(refusedAfter >= 0, 'B refuses the revoked token while partitioned')
  t.ok(last !== undefined && [401, 503].includes(last.statusCode), `401 or 503, got ${last?.statusCode}`)
  if (last?.statusCode === 503) t.equal(last.json().code, 'TOKENGATE_STORE_UNAVAILABLE')
  t.equal(B.app.tokengate.feedUp, false, 'B counts its feed as down while it cannot prove it alive')

  // Still refused while the partition lasts (fail closed, never back to 200).
  const again = await me(B.app, pair.accessToken)
  t.not(again.statusCode, 200, `still refused (${again.statusCode})`)

  proxy.heal()
  t.ok(await until(10_000, () => B.app.tokengate.feedUp) >= 0, 'B\'s feed comes back up by itself after the partition heals')
  const revoked = await me(B.app, pair.accessToken)
  t.equal(revoked.statusCode, 401, 'after recovery the revoked token is refused from memory')
  t.equal(revoked.json().code, 'TOKENGATE_TOKEN_REVOKED')

  const fresh = await login(A.app)
  const ok = await me(B.app, fresh.accessToken)
  t.equal(ok.statusCode, 200, 'a live session works on B again')

  // And B hears new revocations through the feed again.
  await A.app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${fresh.accessToken}` } })
  t.ok(await until(3000, async () => (await me(B.app, fresh.accessToken)).statusCode === 401) >= 0, 'a later logout on A reaches B')
  t.equal(B.app.tokengate.feedUp, true, 'through its feed')
})
