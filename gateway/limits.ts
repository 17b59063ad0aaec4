// Failed-login counting per client IP + username (the per-IP request limit is @fastify/rate-limit's):
// a login refused for bad credentials counts; past `max` within `window`, logins answer 429.
import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'

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
