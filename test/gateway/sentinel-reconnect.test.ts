// ioredis ends a Sentinel client for good (status 'end', every command "Connection is closed.") when its
// failover detector hears +switch-master while the client is still asking a sentinel where the master is:
// the detector closes the connector under the pending connect, whose rejection ioredis takes as final.
// After the master dies, a client retries every 50–1000 ms and each retry asks a sentinel first, so the
// switch lands in that question now and then; on a loaded machine (slow sentinel replies) often, and a
// gateway then answered 503 until restarted. Here every sentinel reply is slowed (as under load) so the
// race is hit on most clients; all of them must come back on the new master without a restart.
import t from 'tap'
import type { Redis } from 'ioredis'
import { closeRedis, createRedis } from '../../gateway/redis.js'
import { sleep } from '../helpers/app.js'
import { hasRedisTools, startSentinelGroup } from '../helpers/topologies.js'

const CLIENTS = 4
/** How much slower a sentinel answers each client's "where is the master?" (a loaded sentinel or network): different per client, so their retries fall out of step. */
const slowSentinelMs = (i: number): number => 400 + 300 * i
const skip = hasRedisTools ? false : 'redis-server / redis-cli are not on PATH'

t.test('a failover heard while asking a sentinel for the master does not end the client', { skip, timeout: 60_000 }, async t => {
  const group = await startSentinelGroup(t)
  const clients = Array.from({ length: CLIENTS }, () => createRedis({ sentinels: group.sentinels, name: group.name }, 1000) as Redis)
  t.teardown(async () => { await Promise.all(clients.map(async c => await closeRedis(c))) })
  for (const [i, c] of clients.entries()) {
    const connector = (c as unknown as { connector: { resolve: (endpoint: unknown) => Promise<unknown> } }).connector
    const resolve = connector.resolve.bind(connector)
    connector.resolve = async (endpoint) => { const r = await resolve(endpoint); await sleep(slowSentinelMs(i)); return r }
  }
  const ping = async (c: Redis): Promise<string> => await c.ping().catch((err: Error) => err.message)
  for (const [i, c] of clients.entries()) {
    for (const deadline = Date.now() + 10_000; await ping(c) !== 'PONG' && Date.now() < deadline;) await sleep(50)
    t.equal(await ping(c), 'PONG', `client ${i} is up before the failover`)
  }

  const old = group.masterPort()
  group.killMaster()
  const promoted = await group.failedOver(old, 30_000)
  t.comment(`promoted ${promoted}`)

  // Every client reaches the new master by itself, and writes there.
  const deadline = Date.now() + 15_000
  for (const [i, c] of clients.entries()) {
    while (await ping(c) !== 'PONG' && Date.now() < deadline) await sleep(100)
    t.equal(await ping(c), 'PONG', `client ${i} answers after the failover (status ${c.status})`)
    t.equal(await c.set(`tg-reconnect-${i}`, '1').catch((err: Error) => err.message), 'OK', `client ${i} writes on the new master`)
  }
})
