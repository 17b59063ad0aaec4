// Redis for tests: REDIS_URL if set, else 127.0.0.1:6379 if it answers, else a redis-server of our own
// on a free port. Each test works under its own key prefix and deletes only its own keys.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import { decode as decodeMsgpack } from '@msgpack/msgpack'
import { Redis } from 'ioredis'
import { track } from './spawn.js'

let resolved: Promise<string> | undefined

async function answers (url: string): Promise<boolean> {
  const c = new Redis(url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 500 })
  c.on('error', () => {})
  try {
    await c.connect()
    return (await c.ping()) === 'PONG'
  } catch {
    return false
  } finally {
    c.disconnect()
  }
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })
}

function hasRedisServer (): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0
}

export interface OwnRedis {
  url: string
  port: number
  /** Starts (or restarts) the server on the same port. */
  start: () => Promise<void>
  /** Kills the server at once (SIGKILL). */
  kill: () => Promise<void>
  /** A client on it, closed with stop(). */
  client: () => Redis
  stop: () => Promise<void>
}

/** A redis-server of the test's own, on a free port, for tests that kill or inspect a whole server; `args` are added to its command line. */
export async function startOwnRedis (args: string[] = []): Promise<OwnRedis> {
  if (!hasRedisServer()) throw new Error('this test needs redis-server on PATH (apt-get install redis-server)')
  const port = await freePort()
  const url = `redis://127.0.0.1:${port}`
  let child: ChildProcess | undefined
  const clients: Redis[] = []
  const own: OwnRedis = {
    url,
    port,
    async start () {
      child = track(spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...args], { stdio: 'ignore' }))
      const deadline = Date.now() + 5000
      while (!await answers(url)) {
        if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not start`)
        await new Promise(resolve => setTimeout(resolve, 50))
      }
    },
    async kill () {
      const c = child
      if (c === undefined || c.exitCode !== null) return
      await new Promise<void>(resolve => { c.once('exit', () => resolve()); c.kill('SIGKILL') })
    },
    client () {
      const c = new Redis(url, { maxRetriesPerRequest: 1 })
      c.on('error', () => {})
      clients.push(c)
      return c
    },
    async stop () {
      for (const c of clients) c.disconnect()
      await own.kill()
    }
  }
  await own.start()
  return own
}

/** The Redis every test shares (see the file header for how it is found). */
export async function redisUrl (): Promise<string> {
  resolved ??= (async () => {
    if (process.env.REDIS_URL !== undefined && process.env.REDIS_URL !== '') return process.env.REDIS_URL
    const local = 'redis://127.0.0.1:6379'
    if (await answers(local)) return local
    if (hasRedisServer()) return (await startOwnRedis()).url
    throw new Error('tokengate tests need Redis: set REDIS_URL, start redis-server on 127.0.0.1:6379, or install redis-server (apt-get install redis-server)')
  })()
  return await resolved
}

/** The Redis key holding all sessions of a user, as the keys table of docs/redis.md names it. */
export const sessionsKey = (prefix: string, userId: string): string => `${prefix}:{${userId}}:s`
/** The 0.1 layout's key of one session record (a hash), for migration tests. */
export const legacyRecordKey = (prefix: string, userId: string, sessionId: string): string => `${prefix}:{${userId}}:s:${sessionId}`
/** The 0.1 layout's per-user index (a sorted set), for migration tests. */
export const legacyIndexKey = (prefix: string, userId: string): string => `${prefix}:{${userId}}:sessions`

/** One session as Redis keeps it (docs/redis.md), decoded by an independent MessagePack library. */
export interface StoredSession {
  /** hash of the current refresh id, 22 base64url characters (what hashOf(token) gives) */
  h: string
  /** hash of the previous refresh id, and when it was rotated (ms) */
  p: string | null
  pt: number | null
  /** refresh expiry, session start, last use, record expiry (ms since the epoch) */
  re: number
  st: number
  lu: number
  x: number
  ip: string
  ua: string
  ro: unknown
  cl: unknown
  jkt: string | null
  /** authentication time (ms), acr, amr, and the OpenID provider's session id */
  at: number
  acr: string | null
  amr: string[] | null
  os: string | null
}

const str = (v: unknown): string | null => v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : typeof v === 'string' ? v : null

type SessionsReader = Pick<Redis, 'getBuffer' | 'hgetallBuffer' | 'type'>

/** One stored record (an array, docs/redis.md) as a StoredSession. */
function storedSession (r: unknown[]): StoredSession {
  const st = r[4] as number
  const text = (v: unknown): string => Buffer.from(v as Uint8Array).toString('utf8')
  const opt = (v: unknown): string | null => v === false || v === undefined || v === null ? null : text(v)
  return {
    h: str(r[0])!,
    p: r[1] === false ? null : str(r[1]),
    pt: r[2] === false ? null : st + (r[2] as number),
    re: st + (r[3] as number),
    st,
    lu: st + (r[5] as number),
    x: st + (r[6] as number),
    ip: text(r[7]),
    ua: text(r[8]),
    ro: JSON.parse(text(r[9])),
    cl: JSON.parse(text(r[10])),
    jkt: opt(r[11]),
    at: r[12] === false || r[12] === undefined ? st : st + (r[12] as number),
    acr: opt(r[13]),
    amr: r[14] === false || r[14] === undefined ? null : JSON.parse(text(r[14])),
    os: opt(r[15])
  }
}

/**
 * Every session of a user as stored (undefined when the user has no key), keyed by session id: the key is a
 * string (a MessagePack map of records) for a user with few sessions, a hash (a MessagePack record per field)
 * beyond. Any client that can GET and HGETALL (a Cluster too).
 */
export async function readSessions (client: SessionsReader, prefix: string, userId: string): Promise<Record<string, StoredSession> | undefined> {
  const key = sessionsKey(prefix, userId)
  const type = await client.type(key)
  if (type === 'none') return undefined
  const out: Record<string, StoredSession> = {}
  if (type === 'hash') {
    for (const [sid, raw] of Object.entries(await client.hgetallBuffer(key))) out[sid] = storedSession(decodeMsgpack(raw, { rawStrings: true }) as unknown[])
    return out
  }
  const map = decodeMsgpack((await client.getBuffer(key))!, { rawStrings: true }) as Record<string, unknown[]>
  for (const [sid, r] of Object.entries(map)) out[sid] = storedSession(r)
  return out
}

/** One session as stored, or undefined. */
export async function readSession (client: SessionsReader, prefix: string, userId: string, sessionId: string): Promise<StoredSession | undefined> {
  return (await readSessions(client, prefix, userId))?.[sessionId]
}

/** A key prefix no other test uses. */
export function uniquePrefix (name = 't'): string {
  return `tgtest-${name}-${process.pid}-${randomBytes(4).toString('hex')}`
}

/** Deletes every key under a prefix. */
export async function deletePrefix (client: Redis, prefix: string): Promise<void> {
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500)
    cursor = next
    if (keys.length > 0) await client.del(...keys)
  } while (cursor !== '0')
}

/** Every key under a prefix. */
export async function keysUnder (client: Redis, prefix: string): Promise<string[]> {
  const out: string[] = []
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500)
    cursor = next
    out.push(...keys)
  } while (cursor !== '0')
  return out.sort()
}

/** revokeAll's one entry in Redis: the user's epoch (ms) in <prefix>:epochs, or null. */
export async function userEpoch (client: Pick<Redis, 'zscore'>, prefix: string, userId: string): Promise<number | null> {
  const score = await client.zscore(`${prefix}:epochs`, userId)
  return score === null ? null : Number(score)
}
