// Redis topologies of a test's own, on loopback and free ports: a three-master Redis Cluster
// (redis-cli --cluster create) and a Sentinel group (a master, a replica and three sentinels, quick to
// fail over). Every process is killed, and every dir removed, when the test process ends.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import type { Test } from 'tap'
import { Redis } from 'ioredis'
import { freePort } from './redis.js'
import { removeTempDir, tempDir, track } from './spawn.js'

export const hasRedisTools = spawnSync('redis-cli', ['--version'], { stdio: 'ignore' }).status === 0 &&
  spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))
const cli = (port: number, ...args: string[]): string => spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout?.trim() ?? ''

async function until (what: string, limitMs: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + limitMs
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${limitMs} ms`)
    await sleep(50)
  }
}

export interface OwnCluster { nodes: Array<{ host: string, port: number }>, urls: string[] }

/** A three-master Redis Cluster (no replicas); stopped at the test's teardown. */
export async function startCluster (t: Test): Promise<OwnCluster> {
  const dir = tempDir('cluster')
  const ports = [await freePort(), await freePort(), await freePort()]
  const procs = ports.map(port => track(spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
    '--cluster-config-file', `nodes-${port}.conf`, '--save', '', '--appendonly', 'no', '--dir', dir
  ], { stdio: 'ignore' })))
  t.teardown(() => { for (const p of procs) p.kill('SIGKILL'); removeTempDir(dir) })
  for (const port of ports) await until(`cluster node ${port}`, 10_000, () => cli(port, 'ping') === 'PONG')
  const made = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map(p => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'])
  if (made.status !== 0) throw new Error(`redis-cli --cluster create failed: ${made.stderr?.toString()}`)
  await until('cluster_state:ok on every node', 20_000, () => ports.every(p => /cluster_state:ok/.test(cli(p, 'cluster', 'info'))))
  return { nodes: ports.map(port => ({ host: '127.0.0.1', port })), urls: ports.map(p => `redis://127.0.0.1:${p}`) }
}

export interface SentinelGroup {
  name: string
  /** 'host:port' of each sentinel */
  sentinels: string[]
  /** The current master's port, as the sentinels say. */
  masterPort: () => number
  /** Kills the current master at once (SIGKILL), as a crash would. */
  killMaster: () => void
  /**
   * Replication falls behind, then the master crashes: the replica is frozen and cut off, the master goes on
   * acknowledging writes it can no longer replicate until `lagged` resolves (the caller awaits the writes it
   * wants lost), and dies; the replica then resumes with what it had. Those writes are lost, as asynchronous
   * replication loses them.
   */
  lagThenKillMaster: (lagged: () => Promise<void>) => Promise<void>
  /** Waits until the sentinels name a master other than `port`, and it answers as a master. */
  failedOver: (port: number, limitMs?: number) => Promise<number>
  /** A client on the current master (for setup and inspection). */
  master: () => Redis
}

/** A master, one replica and three sentinels (down-after 500 ms); stopped at the test's teardown. */
export async function startSentinelGroup (t: Test, name = 'tgmaster'): Promise<SentinelGroup> {
  const dir = tempDir('sentinel')
  const procs = new Map<number, ChildProcess>()
  const clients: Redis[] = []
  t.teardown(() => {
    for (const c of clients) c.disconnect()
    for (const p of procs.values()) p.kill('SIGKILL')
    removeTempDir(dir)
  })
  const server = (port: number, extra: string[] = []): void => {
    procs.set(port, track(spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extra], { stdio: 'ignore' })))
  }
  const master = await freePort()
  const replica = await freePort()
  server(master)
  await until('master up', 10_000, () => cli(master, 'ping') === 'PONG')
  server(replica, ['--replicaof', '127.0.0.1', String(master)])
  await until('replica in sync', 20_000, () => /master_link_status:up/.test(cli(replica, 'info', 'replication')))
  const sentinelPorts = [await freePort(), await freePort(), await freePort()]
  for (const port of sentinelPorts) {
    const conf = path.join(dir, `sentinel-${port}.conf`)
    writeFileSync(conf, [
      `port ${port}`, 'bind 127.0.0.1', `dir ${dir}`,
      `sentinel monitor ${name} 127.0.0.1 ${master} 2`,
      `sentinel down-after-milliseconds ${name} 500`,
      `sentinel failover-timeout ${name} 5000`,
      `sentinel parallel-syncs ${name} 1`
    ].join('\n') + '\n')
    procs.set(port, track(spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' })))
  }
  const masterPortNow = (): number => {
    for (const s of sentinelPorts) {
      const lines = cli(s, 'sentinel', 'get-master-addr-by-name', name).split('\n')
      if (lines.length === 2 && lines[1] !== '') return Number(lines[1])
    }
    return -1
  }
  // Every sentinel knows the replica and its two peers before the group can fail over.
  await until('sentinels see the replica and each other', 20_000, () => sentinelPorts.every(s => {
    const info = cli(s, 'sentinel', 'master', name)
    return /num-slaves\n1/.test(info) && /num-other-sentinels\n2/.test(info)
  }))
  return {
    name,
    sentinels: sentinelPorts.map(p => `127.0.0.1:${p}`),
    masterPort: masterPortNow,
    killMaster () {
      const port = masterPortNow()
      procs.get(port)?.kill('SIGKILL')
    },
    async lagThenKillMaster (lagged) {
      const port = masterPortNow()
      const replicaPort = [...procs.keys()].find(p => p !== port && !sentinelPorts.includes(p))!
      procs.get(replicaPort)?.kill('SIGSTOP')
      cli(port, 'client', 'kill', 'type', 'replica')
      await lagged()
      procs.get(port)?.kill('SIGKILL')
      procs.get(replicaPort)?.kill('SIGCONT')
    },
    async failedOver (port, limitMs = 30_000) {
      let now = -1
      await until('the sentinels promote a new master', limitMs, () => {
        now = masterPortNow()
        return now !== port && now > 0 && /role:master/.test(cli(now, 'info', 'replication'))
      })
      return now
    },
    master () {
      const c = new Redis({ port: masterPortNow(), maxRetriesPerRequest: 1 })
      c.on('error', () => {})
      clients.push(c)
      return c
    }
  }
}
