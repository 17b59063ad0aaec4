// The gateway's login limits: all logins and refreshes per client IP (a fixed window), and failed logins
// per client IP + username and per username (a login refused for bad credentials counts); past `max`
// within `window`, 429.
import { createHash } from 'node:crypto'
import { isIP } from 'node:net'
import type { Cluster, Redis } from 'ioredis'

export interface RequestLimiter {
  /** Counts one request of `ip`: 0 when it may proceed, else the milliseconds until it may. No I/O. */
  hit: (ip: string) => number
  close: () => void
}

export interface FailedLogins {
  /** Milliseconds until this key may try again, or 0 when it may now. */
  blockedFor: (key: string) => Promise<number>
  /** Counts one failure. */
  fail: (key: string) => Promise<void>
}

/** How long a login waits for the failed-login counters in Redis before going on without them. */
const LIMITS_WAIT_MS = 250

/**
 * `p`'s answer, or `fallback` when Redis fails or does not answer within LIMITS_WAIT_MS: a stalled Redis must
 * not hold a login for a command timeout before the session store's own (the login needs the store, so it
 * answers 503 then anyway; the counters apply again as soon as Redis answers).
 */
async function briefly<T> (p: Promise<T>, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  // (The fallback waits one more turn of the event loop: an answer that came in while the loop was busy is read
  // first, not passed over because the timer's phase comes before the sockets'.)
  const late = new Promise<T>(resolve => { timer = setTimeout(() => setImmediate(resolve, fallback), LIMITS_WAIT_MS) })
  try {
    return await Promise.race([p.catch(() => fallback), late])
  } finally {
    clearTimeout(timer)
  }
}

const digest = (key: string): string => createHash('sha256').update(key).digest('base64url').slice(0, 22)

/**
 * Counters in Redis, shared by every gateway instance: `<prefix>:rl:fail:<sha256(ip + username)>` (and, for the
 * per-account count, `<prefix>:rl:user:<sha256(username)>`). Each call waits for Redis LIMITS_WAIT_MS at most
 * (then: not blocked, nothing counted).
 */
export function redisFailedLogins (redis: Redis | Cluster, prefix: string, max: number, windowMs: number, kind: 'fail' | 'user' = 'fail'): FailedLogins {
  const k = (key: string): string => `${prefix}:rl:${kind}:${digest(key)}`
  return {
    async blockedFor (key) {
      return await briefly(redis.multi().get(k(key)).pttl(k(key)).exec().then(r => {
        const [[, count], [, pttl]] = r as [[unknown, string | null], [unknown, number]]
        return Number(count ?? 0) >= max ? Math.max(pttl, 1) : 0
      }), 0)
    },
    async fail (key) {
      await briefly(redis.multi().set(k(key), 0, 'PX', windowMs, 'NX').incr(k(key)).exec().then(() => {}), undefined)
    }
  }
}

/** Counters in this process (the memory-store gateway). */
export function memoryFailedLogins (max: number, windowMs: number): FailedLogins {
  const counters = new Map<string, { count: number, resetAt: number }>()
  const live = (key: string, now: number): { count: number, resetAt: number } | undefined => {
    const c = counters.get(digest(key))
    if (c !== undefined && c.resetAt <= now) { counters.delete(digest(key)); return undefined }
    return c
  }
  return {
    async blockedFor (key) {
      const now = Date.now()
      const c = live(key, now)
      return c !== undefined && c.count >= max ? c.resetAt - now : 0
    },
    async fail (key) {
      const now = Date.now()
      if (counters.size > 100_000) for (const [id, c] of counters) if (c.resetAt <= now) counters.delete(id)
      const c = live(key, now)
      if (c === undefined) counters.set(digest(key), { count: 1, resetAt: now + windowMs })
      else c.count++
    }
  }
}

/** An IP as a key part: itself when it is one, else (a forwarded value, with trustProxy) its digest. */
const ipKey = (ip: string): string => isIP(ip) !== 0 ? ip : digest(ip)

interface Counter {
  /** The fixed window (its index since the epoch, windows aligned on every instance). */
  window: number
  /** Requests counted here since the last sync. */
  local: number
  /** The total of every instance, as Redis said at the last sync. */
  shared: number
}

/**
 * Requests per client IP in fixed windows aligned to the clock, counted in this process and decided here
 * (a login or refresh costs no Redis round trip), shared through Redis every `syncMs`: each instance adds
 * its new counts to `<prefix>:rl:ip:<ip>` and learns the total of all. Without Redis the counts stay local.
 * A flood spread over several instances is seen by each within one sync.
 */
export function requestLimiter (redis: Redis | Cluster | undefined, prefix: string, max: number, windowMs: number, syncMs = 250): RequestLimiter {
  const counters = new Map<string, Counter>()
  const dirty = new Set<string>()
  type Add = (key: string, window: number, n: number, expiresAt: number) => Promise<number>
  let add: Add | undefined
  if (redis !== undefined) {
    if (typeof (redis as unknown as Record<string, unknown>).tokengateRateAdd !== 'function') redis.defineCommand('tokengateRateAdd', { numberOfKeys: 1, lua: ADD_LUA })
    add = (redis as unknown as { tokengateRateAdd: Add }).tokengateRateAdd.bind(redis)
  }

  let syncing = false
  async function sync (): Promise<void> {
    if (add === undefined || syncing || dirty.size === 0) return
    syncing = true
    const batch = [...dirty]
    dirty.clear()
    try {
      // One small script per IP (keys of different IPs live in different Cluster slots).
      await Promise.all(batch.map(async ip => {
        const c = counters.get(ip)
        if (c === undefined || c.local === 0) return
        const pushed = c.local
        const window = c.window
        try {
          const total = await add!(`${prefix}:rl:ip:${ipKey(ip)}`, window, pushed, (window + 1) * windowMs)
          if (counters.get(ip) === c && c.window === window) {
            c.local -= pushed
            c.shared = Math.max(c.shared, Number(total))
          }
        } catch {
          dirty.add(ip) // kept, and pushed again at the next sync
        }
      }))
    } finally {
      syncing = false
    }
    const current = Math.floor(Date.now() / windowMs)
    for (const [ip, c] of counters) if (c.window < current && !dirty.has(ip)) counters.delete(ip)
  }
  const timer = add !== undefined ? setInterval(() => { sync().catch(() => {}) }, syncMs) : undefined
  timer?.unref()

  return {
    hit (ip) {
      const now = Date.now()
      const window = Math.floor(now / windowMs)
      let c = counters.get(ip)
      if (c === undefined || c.window !== window) {
        c = { window, local: 0, shared: 0 }
        counters.set(ip, c)
        if (add === undefined && counters.size > 100_000) for (const [k, o] of counters) if (o.window < window) counters.delete(k)
      }
      c.local++
      if (add !== undefined) dirty.add(ip)
      return c.shared + c.local > max ? (window + 1) * windowMs - now : 0
    },
    close () {
      clearInterval(timer)
    }
  }
}

// Adds an instance's new counts to the IP's window, resetting it when the window moved on (counts of a
// window already past are dropped); the key expires at the end of its window.
const ADD_LUA = `local w = tonumber(redis.call('HGET', KEYS[1], 'w'))
local window = tonumber(ARGV[1])
if w ~= nil and w > window then return 0 end
if w ~= window then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'w', ARGV[1])
end
local n = redis.call('HINCRBY', KEYS[1], 'n', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return n`
