// `tokengate sessions …`: an operator's hands on the sessions of the gateway's Redis, without writing code.
//   sessions list <userId>                 one JSON line per live session (never a token)
//   sessions revoke <userId> [<sessionId>] one session, or every session of the user
//   sessions revoke-everyone               every session of every user
// Each reads the gateway's config (--config, TOKENGATE_CONFIG, ./gateway.config.json; REDIS_URL when the
// config names no Redis), so it uses the gateway's Redis, key prefix and topology, and revokes through the
// plugin as a logout does: running gateways refuse the tokens at once (within the feed's delay).
// Exit codes: 0 done, 1 no such live session, 69 Redis cannot be reached (EX_UNAVAILABLE).
import Fastify from 'fastify'
import tokengate, { type SessionInfo, type TokengateOptions } from '../plugin/index.js'
import { ConfigError } from './config.js'
import type { GatewayConfig } from './config.js'
import { closeRedis, createRedis } from './redis.js'

export const SESSIONS_USAGE = `  tokengate sessions list <userId> [--config FILE]               one JSON line per live session of the user
  tokengate sessions revoke <userId> [<sessionId>] [--config FILE] revoke one session, or every session of the user
  tokengate sessions revoke-everyone [--config FILE]              revoke every session of every user`

/** What a sessions command prints and how it exits. */
export interface SessionsOutcome { lines: string[], message?: string, code: 0 | 1 | 69 }

const EX_UNAVAILABLE = 69

/** One session as `sessions list` prints it: what an operator needs to recognise it, never a token. */
function line (userId: string, s: SessionInfo): string {
  return JSON.stringify({ userId, id: s.id, createdAt: s.createdAt, lastUsedAt: s.lastUsedAt, expiresAt: s.expiresAt, ip: s.ip, userAgent: s.userAgent })
}

/**
 * Runs `sessions <command> …` against the config's Redis. `command` and its arguments were checked by the
 * caller (a usage error is the bin's to report).
 */
export async function runSessionsCommand (config: GatewayConfig, command: 'list' | 'revoke' | 'revoke-everyone', args: string[]): Promise<SessionsOutcome> {
  if (config.redis === undefined) throw new ConfigError('redis', 'is required for `tokengate sessions` (sessions live in Redis; set it in the config or REDIS_URL)')
  const timeoutMs = config.tokens.storeTimeoutMs ?? 1000
  const redis = createRedis(config.redis, timeoutMs)
  // Reached first: an unreachable Redis is reported in about storeTimeoutMs, before the plugin starts.
  if (!await connected(redis, timeoutMs)) {
    redis.disconnect()
    return { lines: [], message: `Redis cannot be reached (${describeRedis(config.redis)})`, code: EX_UNAVAILABLE }
  }
  const app = Fastify({ logger: false })
  try {
    await app.register(tokengate, { ...config.tokens, redis } as TokengateOptions)
    await app.ready()
    const api = app.tokengate
    if (command === 'list') {
      const [userId] = args
      return { lines: (await api.listSessions(userId)).map(s => line(userId, s)), code: 0 }
    }
    if (command === 'revoke') {
      const [userId, sessionId] = args
      if (sessionId !== undefined) {
        const found = await api.revokeSession(userId, sessionId)
        return found
          ? { lines: [JSON.stringify({ userId, revoked: 1 })], code: 0 }
          : { lines: [], message: `no live session ${sessionId} of user ${userId}`, code: 1 }
      }
      const n = await api.revokeAll(userId)
      return n > 0
        ? { lines: [JSON.stringify({ userId, revoked: n })], code: 0 }
        : { lines: [], message: `no live session of user ${userId}`, code: 1 }
    }
    await api.revokeEveryone()
    return { lines: [JSON.stringify({ revokedEveryoneAt: new Date().toISOString() })], code: 0 }
  } catch (err) {
    if ((err as { code?: string }).code === 'TOKENGATE_STORE_UNAVAILABLE') {
      return { lines: [], message: `Redis cannot be reached (${describeRedis(config.redis)})`, code: EX_UNAVAILABLE }
    }
    throw err
  } finally {
    await app.close().catch(() => {})
    await closeRedis(redis)
  }
}

/** Whether the client is ready within `ms`. */
async function connected (redis: ReturnType<typeof createRedis>, ms: number): Promise<boolean> {
  if (redis.status === 'ready') return true
  return await new Promise<boolean>(resolve => {
    const timer = setTimeout(() => { redis.off('ready', ready); resolve(false) }, Math.max(ms, 1000))
    const ready = (): void => { clearTimeout(timer); resolve(true) }
    redis.once('ready', ready)
  })
}

/** Where the config's Redis is, without a password. */
function describeRedis (r: NonNullable<GatewayConfig['redis']>): string {
  const strip = (u: string): string => {
    try {
      const url = new URL(u)
      return `${url.hostname}:${url.port === '' ? '6379' : url.port}`
    } catch {
      return '?'
    }
  }
  if (r.url !== undefined) return strip(r.url)
  if (r.cluster !== undefined) return `cluster ${r.cluster.map(strip).join(', ')}`
  return `sentinels ${(r.sentinels ?? []).join(', ')}, master ${r.name ?? '?'}`
}
