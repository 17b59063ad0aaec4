// The Redis SessionStore: one hash per session and one sorted set per user, both under the user's
// hash tag (one Cluster slot per user), expiring natively; every state change is one Lua script.
import { readFileSync } from 'node:fs'
import { Cluster, Redis } from 'ioredis'
import type {
  NewSession, RenewInput, RenewResult, RevocationEntry, RevocationFeedHandlers, RotateInput, RotateResult,
  SessionRecord, SessionStore, SessionTimes
} from './index.js'

type Client = Redis | Cluster

export interface RedisStoreOptions {
  /** A redis:// URL (the store owns the connection) or an ioredis Redis/Cluster instance (you own it). */
  redis: string | Client
  /** Key and channel prefix; default 'tg'. */
  keyPrefix?: string
  /** Bound on every store call in ms; default 1000. */
  timeoutMs?: number
}

/** How often the revocation feed's connection proves it is alive. */
const HEARTBEAT_MS = 500

const LUA_DIR = new URL('./lua/', import.meta.url)
const COMMON = readFileSync(new URL('common.lua', LUA_DIR), 'utf8')
const script = (name: string): string => COMMON + '\n' + readFileSync(new URL(`${name}.lua`, LUA_DIR), 'utf8')

// Names are namespaced so several stores (or a user's own scripts) can share one ioredis instance.
const SCRIPTS = {
  tokengateCreate: { numberOfKeys: 2, lua: script('create') },
  tokengateRotate: { numberOfKeys: 2, lua: script('rotate') },
  tokengateRenew: { numberOfKeys: 2, lua: script('renew') },
  tokengateRevoke: { lua: script('revoke') },
  tokengateRevokeAll: { numberOfKeys: 1, lua: script('revoke-all') },
  tokengateList: { numberOfKeys: 1, lua: script('list') },
  tokengateMarkRevoked: { numberOfKeys: 1, lua: script('mark-revoked') }
} as const

type ScriptFn = (...args: Array<string | number>) => Promise<unknown>
type Scripted = Record<keyof typeof SCRIPTS, ScriptFn>

/** Options for the connections tokengate opens itself: fail fast while Redis is away, reconnect forever. */
export function ownClientOptions (timeoutMs: number): import('ioredis').RedisOptions {
  return {
    enableOfflineQueue: false,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 1,
    connectTimeout: Math.max(timeoutMs, 1000),
    retryStrategy: (times: number) => Math.min(50 * times, 1000)
  }
}

/** `{`, `}` and `%` in a user id are percent-encoded so the id cannot break out of its hash tag. */
export function encodeUserId (userId: string): string {
  return userId.replace(/[%{}]/g, c => '%' + c.charCodeAt(0).toString(16).toUpperCase())
}

export class RedisStore implements SessionStore {
  readonly client: Client
  private readonly owned: boolean
  private readonly prefix: string
  private readonly timeoutMs: number
  private readonly revokedKey: string
  readonly channel: string
  private subscriber?: Client
  private heartbeat?: NodeJS.Timeout

  constructor (opts: RedisStoreOptions) {
    this.prefix = opts.keyPrefix ?? 'tg'
    this.timeoutMs = opts.timeoutMs ?? 1000
    this.owned = typeof opts.redis === 'string'
    this.client = typeof opts.redis === 'string'
      ? new Redis(opts.redis, ownClientOptions(this.timeoutMs))
      : opts.redis
    if (this.owned) this.client.on('error', () => { /* reported by failing calls; reconnects by itself */ })
    for (const [name, def] of Object.entries(SCRIPTS)) {
      if (typeof (this.client as unknown as Record<string, unknown>)[name] !== 'function') this.client.defineCommand(name, def)
    }
    this.revokedKey = `${this.prefix}:revoked`
    this.channel = `${this.prefix}:revocations`
  }

  /** Resolves when the connection is ready, or after timeoutMs (the store then answers once Redis does). */
  async ready (): Promise<boolean> {
    if (this.client.status === 'ready') return true
    return await new Promise<boolean>(resolve => {
      const done = (ok: boolean): void => { clearTimeout(t); this.client.off('ready', onReady); resolve(ok) }
      const onReady = (): void => done(true)
      const t = setTimeout(() => done(false), this.timeoutMs)
      this.client.once('ready', onReady)
    })
  }

  userTag (userId: string): string {
    return `${this.prefix}:{${encodeUserId(userId)}}`
  }

  recordKey (userId: string, sessionId: string): string {
    return `${this.userTag(userId)}:s:${sessionId}`
  }

  indexKey (userId: string): string {
    return `${this.userTag(userId)}:sessions`
  }

  private get scripts (): Scripted {
    return this.client as unknown as Scripted
  }

  /**
   * Bounds a call even on a client whose options (a user's instance) would let it wait forever; the
   * connections tokengate opens itself carry a command timeout already and need no timer per call
   * (`always` adds one anyway, for calls off the hot path on connections that may lack it).
   */
  private async bounded<T> (p: Promise<T>, always = false): Promise<T> {
    if (this.owned && !always) return await p
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`Redis did not answer within ${this.timeoutMs}ms`)), this.timeoutMs)
    })
    try {
      return await Promise.race([p, timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  async create (s: NewSession, t: SessionTimes): Promise<void> {
    const fields: Array<string | number> = ['h', s.refreshHash, 're', s.refreshExpiresAt, 'st', s.createdAt, 'lu', t.now]
    chunked('ro', JSON.stringify(s.roles), fields)
    chunked('cl', JSON.stringify(s.claims), fields)
    if (s.ip !== undefined && s.ip !== '') chunked('ip', s.ip, fields)
    if (s.userAgent !== undefined && s.userAgent !== '') chunked('ua', s.userAgent, fields)
    await this.bounded(this.scripts.tokengateCreate(
      this.recordKey(s.userId, s.sessionId), this.indexKey(s.userId),
      s.sessionId, t.now, s.refreshExpiresAt, t.extraMs, ...fields
    ))
  }

  async rotate (i: RotateInput): Promise<RotateResult> {
    const replace: string[] = []
    if (i.roles !== undefined) chunked('ro', JSON.stringify(i.roles), replace)
    if (i.claims !== undefined) chunked('cl', JSON.stringify(i.claims), replace)
    const r = await this.bounded(this.scripts.tokengateRotate(
      this.recordKey(i.userId, i.sessionId), this.indexKey(i.userId),
      i.presentedHash, i.successorHash, i.now, i.refreshTtlMs, i.maxSessionAgeMs, i.extraMs,
      i.rotate ? '1' : '0', i.graceMs, i.sessionId, ...replace
    )) as [string, number?, string[]?, number?]
    if (r[0] === 'ok') return { status: 'ok', grace: r[1] === 1, record: parseRecord(i.sessionId, r[2]!, i.now + r[3]!) }
    return { status: r[0] as 'missing' | 'reused' }
  }

  async renew (i: RenewInput): Promise<RenewResult> {
    const r = await this.bounded(this.scripts.tokengateRenew(
      this.recordKey(i.userId, i.sessionId), this.indexKey(i.userId),
      i.presentedHash, i.successorHash, i.now, i.refreshTtlMs, i.maxSessionAgeMs, i.extraMs, i.graceMs, i.sessionId
    )) as [string, number?, string[]?, number?]
    if (r[0] === 'ok') return { status: 'ok', grace: r[1] === 1, record: parseRecord(i.sessionId, r[2]!, i.now + r[3]!) }
    return { status: r[0] as 'missing' | 'stale' | 'capped' }
  }

  async revoke (userId: string, sessionIds: string[]): Promise<string[]> {
    if (sessionIds.length === 0) return []
    const keys = sessionIds.map(id => this.recordKey(userId, id))
    return await this.bounded(this.scripts.tokengateRevoke(
      1 + keys.length, this.indexKey(userId), ...keys, Date.now(), ...sessionIds
    )) as string[]
  }

  async revokeAll (userId: string): Promise<string[]> {
    return await this.bounded(this.scripts.tokengateRevokeAll(this.indexKey(userId), `${this.userTag(userId)}:s:`)) as string[]
  }

  async list (userId: string, now: number): Promise<SessionRecord[]> {
    const rows = await this.bounded(this.scripts.tokengateList(this.indexKey(userId), `${this.userTag(userId)}:s:`, now)) as Array<[string, string[], number]>
    return rows.map(([id, fields, pttl]) => parseRecord(id, fields, now + pttl)).sort((a, b) => b.createdAt - a.createdAt)
  }

  async markRevoked (entries: RevocationEntry[], now: number): Promise<void> {
    if (entries.length === 0) return
    const args: Array<string | number> = [this.channel, now]
    for (const e of entries) args.push(e.sessionId, e.until)
    await this.bounded(this.scripts.tokengateMarkRevoked(this.revokedKey, ...args))
  }

  async loadRevoked (now: number): Promise<RevocationEntry[]> {
    const flat = await this.bounded(this.client.zrangebyscore(this.revokedKey, `(${now}`, '+inf', 'WITHSCORES'))
    const out: RevocationEntry[] = []
    for (let i = 0; i < flat.length; i += 2) out.push({ sessionId: flat[i], until: Number(flat[i + 1]) })
    return out
  }

  async isRevoked (sessionId: string, now: number): Promise<boolean> {
    const score = await this.bounded(this.client.zscore(this.revokedKey, sessionId))
    return score !== null && Number(score) > now
  }

  async subscribe (handlers: RevocationFeedHandlers): Promise<void> {
    // A connection of its own: a subscribed connection can run no other command.
    const sub: Client = this.client instanceof Cluster
      ? this.client.duplicate()
      // No command timeout: the heartbeat bounds its own PING (and would read an ioredis timeout as a miss).
      : this.client.duplicate({ ...ownClientOptions(this.timeoutMs), commandTimeout: undefined })
    this.subscriber = sub
    let subscribed = false
    const down = (): void => {
      subscribed = false
      handlers.onState(false)
    }
    sub.on('error', () => { /* the feed reports down on close; reconnects by itself */ })
    sub.on('message', (channel: string, message: string) => {
      if (channel === this.channel) handlers.onRevoked(message)
    })
    const up = async (): Promise<void> => {
      try {
        await this.bounded(sub.subscribe(this.channel), true)
        subscribed = true
        handlers.onState(true)
      } catch {
        down()
      }
    }
    sub.on('close', down)
    // A connection can go silent without closing (a partition that holds bytes and resets nothing): the
    // feed proves it is alive with a PING every HEARTBEAT_MS, answered within timeoutMs. A miss counts the
    // feed as down and starts a fresh connection, whose 'ready' subscribes (and reloads revocations) again.
    let probing = false
    this.heartbeat = setInterval(() => {
      if (!subscribed || probing) return
      probing = true
      let answered = false
      const timer = setTimeout(() => {
        // Checked after the poll phase, so a reply that arrived while this process was busy counts.
        setImmediate(() => {
          probing = false
          if (answered || !subscribed) return
          down()
          sub.disconnect(true)
        })
      }, this.timeoutMs)
      timer.unref()
      sub.ping().then(() => {
        answered = true
        probing = false
        clearTimeout(timer)
      }, () => {})
    }, HEARTBEAT_MS)
    this.heartbeat.unref()
    // Resolves once subscribed (or after timeoutMs; the feed then comes up when Redis does).
    await new Promise<void>(resolve => {
      const t = setTimeout(resolve, this.timeoutMs)
      const ready = (): void => { up().finally(() => { clearTimeout(t); resolve() }).catch(() => {}) }
      sub.on('ready', ready)
      if (sub.status === 'ready') ready()
    })
  }

  async ping (): Promise<boolean> {
    try {
      return (await this.bounded(this.client.ping())) === 'PONG'
    } catch {
      return false
    }
  }

  async close (): Promise<void> {
    clearInterval(this.heartbeat)
    const quit = async (c: Client): Promise<void> => {
      try { await this.bounded(c.quit()) } catch { c.disconnect() }
    }
    if (this.subscriber !== undefined) await quit(this.subscriber)
    if (this.owned) await quit(this.client)
  }
}

/**
 * Redis keeps a hash compact (a listpack, about half the memory of a hashtable) only while every value
 * fits hash-max-listpack-value (64 bytes by default). A longer value (a browser's user agent, large
 * claims) is stored as `field`, `field.1`, `field.2`, ... of at most 64 bytes each, split between
 * characters, and joined again on read.
 */
export const CHUNK_BYTES = 64

export function chunked (field: string, value: string, out: Array<string | number>): void {
  let part = ''
  let bytes = 0
  let n = 0
  for (const ch of value) {
    const size = ch.length === 2 ? 4 : ch.charCodeAt(0) < 0x80 ? 1 : ch.charCodeAt(0) < 0x800 ? 2 : 3
    if (bytes + size > CHUNK_BYTES) {
      out.push(n === 0 ? field : `${field}.${n}`, part)
      n++
      part = ''
      bytes = 0
    }
    part += ch
    bytes += size
  }
  out.push(n === 0 ? field : `${field}.${n}`, part)
}

function joined (h: Record<string, string>, field: string): string | undefined {
  let value = h[field]
  if (value === undefined) return undefined
  for (let n = 1; h[`${field}.${n}`] !== undefined; n++) value += h[`${field}.${n}`]
  return value
}

function parseRecord (sessionId: string, flat: string[], expiresAt: number): SessionRecord {
  const h: Record<string, string> = {}
  for (let i = 0; i < flat.length; i += 2) h[flat[i]] = flat[i + 1]
  return {
    sessionId,
    refreshHash: h.h,
    refreshExpiresAt: Number(h.re),
    createdAt: Number(h.st),
    lastUsedAt: Number(h.lu),
    expiresAt,
    ip: joined(h, 'ip'),
    userAgent: joined(h, 'ua'),
    roles: JSON.parse(joined(h, 'ro') ?? '[]'),
    claims: JSON.parse(joined(h, 'cl') ?? '{}')
  }
}
