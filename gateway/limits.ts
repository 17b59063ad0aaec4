// The gateway's login limits: all logins and refreshes per client IP (a fixed window), and failed logins
// per client IP + username (a login refused for bad credentials counts); past `max` within `window`, 429.
import { createHash } from 'node:crypto'
import { isIP } from 'node:net'
import type { Redis } from 'ioredis'

export interface RequestLimiter {
  /** Counts one request of `ip`; resolves to 0 when it may proceed, else the milliseconds until it may. */
  hit: (ip: string) => Promise<number>
}

export interface FailedLogins {
  /** Milliseconds until this key may try again, or 0 when it may now. */
  blockedFor: (key: string) => Promise<number>
  /** Counts one failure. */
  fail: (key: string) => Promise<void>
}

const digest = (key: string): string => createHash('sha256').update(key).digest('base64url').slice(0, 22)

/** Counters in Redis, shared by every gateway instance: `<prefix>:rl:fail:<sha256(ip + username)>`. */
export function redisFailedLogins (redis: Redis, prefix: string, max: number, windowMs: number): FailedLogins {
  const k = (key: string): string => `${prefix}:rl:fail:${digest(key)}`
  return {
    async blockedFor (key) {
      const [[, count], [, pttl]] = await redis.multi().get(k(key)).pttl(k(key)).exec() as [[unknown, string | null], [unknown, number]]
      return Number(count ?? 0) >= max ? Math.max(pttl, 1) : 0
    },
    async fail (key) {
      await redis.multi().set(k(key), 0, 'PX', windowMs, 'NX').incr(k(key)).exec()
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

// One round trip: the count, and the window's expiry set with the first hit (and mended if it was lost).
const HIT_LUA = `local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return { n, ttl }`

/** Per-IP counters in Redis, shared by every gateway instance: `<prefix>:rl:ip:<ip>`. */
export function redisRequestLimiter (redis: Redis, prefix: string, max: number, windowMs: number): RequestLimiter {
  if (typeof (redis as unknown as Record<string, unknown>).tokengateHit !== 'function') redis.defineCommand('tokengateHit', { numberOfKeys: 1, lua: HIT_LUA })
  const hitScript = (redis as unknown as { tokengateHit: (key: string, windowMs: number) => Promise<[number, number]> }).tokengateHit.bind(redis)
  return {
    async hit (ip) {
      const [count, ttl] = await hitScript(`${prefix}:rl:ip:${ipKey(ip)}`, windowMs)
      return count > max ? Math.max(ttl, 1) : 0
    }
  }
}

/** Per-IP counters in this process (the memory-store gateway). */
export function memoryRequestLimiter (max: number, windowMs: number): RequestLimiter {
  const counters = new Map<string, { count: number, resetAt: number }>()
  return {
    async hit (ip) {
      const now = Date.now()
      if (counters.size > 100_000) for (const [k, c] of counters) if (c.resetAt <= now) counters.delete(k)
      let c = counters.get(ip)
      if (c === undefined || c.resetAt <= now) counters.set(ip, (c = { count: 0, resetAt: now + windowMs }))
      c.count++
      return c.count > max ? c.resetAt - now : 0
    }
  }
}
