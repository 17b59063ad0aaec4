// The Redis SessionStore: all sessions of a user in one key under the user's hash tag (one Cluster slot
// per user), expiring natively with the user's latest session; every operation is one Lua script.
// The record layout is in lua/common.lua; sessions of the 0.1 layout are moved over as they are touched.
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Redis, type Cluster, type RedisOptions } from 'ioredis'
import type {
  CreateOptions, NewSession, RenewInput, RenewResult, RevocationEntry, RevocationFeedHandlers, RotateInput,
  RotateResult, SessionRecord, SessionStore, SessionTimes
} from './index.js'

/**
 * A Redis client of yours for tokengate to use: an ioredis `Redis` or `Cluster` instance of ioredis 5 or 6.
 * Written out as the few members both majors share, not as ioredis's classes, so an instance made by your
 * own copy of ioredis, whichever major, is accepted (ioredis's classes of one copy do not accept another's).
 */
export interface RedisClient {
  readonly status: string
  /** true on a `Cluster`, false on a `Redis` (ioredis 5 and 6 both say so). */
  readonly isCluster: boolean
  defineCommand: (name: string, definition: { lua: string, numberOfKeys?: number }) => void
  quit: () => Promise<unknown>
  disconnect: () => void
}

/** How the store calls a client: through ioredis 6's types, the API every accepted client shares. */
type Client = Redis | Cluster

export interface RedisStoreOptions {
  /** A redis:// URL (the store owns the connection) or your ioredis 5 or 6 Redis/Cluster instance (you own it). */
  redis: string | RedisClient
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

// Names are namespaced (and versioned: the 0.1 scripts took other arguments) so several stores, or a
// user's own scripts, can share one ioredis instance.
const SCRIPTS = {
  tokengate2Create: { numberOfKeys: 2, lua: script('create') },
  tokengate2Rotate: { numberOfKeys: 2, lua: script('rotate') },
  tokengate2Renew: { numberOfKeys: 2, lua: script('renew') },
  tokengate2Revoke: { numberOfKeys: 2, lua: script('revoke') },
  tokengate2RevokeAll: { numberOfKeys: 2, lua: script('revoke-all') },
  tokengate2List: { numberOfKeys: 2, lua: script('list') },
  tokengate2MarkRevoked: { numberOfKeys: 1, lua: script('mark-revoked') }
} as const

type ScriptFn = (...args: Array<string | number | Buffer>) => Promise<unknown>
type Scripted = Record<keyof typeof SCRIPTS, ScriptFn>

/** Options for the connections tokengate opens itself: fail fast while Redis is away, reconnect forever. */
export function ownClientOptions (timeoutMs: number): RedisOptions {
  return {
    enableOfflineQueue: false,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 1,
    connectTimeout: Math.max(timeoutMs, 1000),
    retryStrategy: (times: number) => Math.min(50 * times, 1000)
  }
}

const closedByUs = new WeakSet<object>()

/**
 * ioredis ends a Sentinel client for good when its failover detector hears +switch-master while the client
 * is asking a sentinel where the master is: the pending connect is rejected ("Connection is closed.") and
 * ioredis takes that as final, so every command fails until a restart. A client given to keepConnected
 * that ends without closingClient connects again (every 100 ms until it is back).
 */
export function keepConnected (client: Redis): void {
  client.on('end', () => {
    if (closedByUs.has(client)) return
    setTimeout(() => {
      if (!closedByUs.has(client) && client.status === 'end') client.connect().catch(() => { /* ends again: retried */ })
    }, 100).unref()
  })
}

/** Marks a client as closed on purpose (keepConnected leaves it closed). */
export function closingClient (client: object): void {
  closedByUs.add(client)
}

/**
 * Whether a client is a Cluster. Asked of the client, never with `instanceof`: a user's client may come from
 * another copy or major of ioredis than ours.
 */
function isCluster (client: Client): client is Cluster {
  return client.isCluster
}

/** Whether a client carries a command timeout (ioredis then bounds every call on it). */
function hasCommandTimeout (client: Client): boolean {
  const timeout = isCluster(client) ? client.options.redisOptions?.commandTimeout : client.options.commandTimeout
  return typeof timeout === 'number' && timeout > 0
}

/** `{`, `}` and `%` in a user id are percent-encoded so the id cannot break out of its hash tag. */
export function encodeUserId (userId: string): string {
  return userId.replace(/[%{}]/g, c => '%' + c.charCodeAt(0).toString(16).toUpperCase())
}

export class RedisStore implements SessionStore {
  readonly client: Client
  private readonly owned: boolean
  /** Whether ioredis bounds every call itself (a command timeout on the connection), so no timer per call is needed. */
  private readonly selfBounded: boolean
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
      : opts.redis as unknown as Client
    if (this.owned) this.client.on('error', () => { /* reported by failing calls; reconnects by itself */ })
    this.selfBounded = this.owned || hasCommandTimeout(this.client)
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

  /** The key holding all sessions of a user. */
  sessionsKey (userId: string): string {
    return `${this.userTag(userId)}:s`
  }

  /** The 0.1 layout's keys of a user (read, moved over and deleted as the user is touched). */
  private legacy (userId: string): { index: string, recordPrefix: string } {
    const tag = this.userTag(userId)
    return { index: `${tag}:sessions`, recordPrefix: `${tag}:s:` }
  }

  private get scripts (): Scripted {
    return this.client as unknown as Scripted
  }

  /**
   * Bounds a call even on a client whose options (a user's instance) would let it wait forever; clients
   * with a command timeout (tokengate's own, the gateway's) need no timer per call (`always` adds one
   * anyway, for calls off the hot path on connections that may lack it).
   */
  private async bounded<T> (p: Promise<T>, always = false): Promise<T> {
    if (this.selfBounded && !always) return await p
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

  /** KEYS and the first ARGV (legacy record prefix, now) every session script takes. */
  private head (userId: string, now: number): Array<string | number> {
    const legacy = this.legacy(userId)
    return [this.sessionsKey(userId), legacy.index, legacy.recordPrefix, now]
  }

  async create (s: NewSession, t: SessionTimes, options: CreateOptions = {}): Promise<string[]> {
    return await this.bounded(this.scripts.tokengate2Create(
      ...this.head(s.userId, t.now), s.sessionId, s.refreshHash, s.refreshExpiresAt, t.extraMs,
      s.ip ?? '', s.userAgent ?? '', JSON.stringify(s.roles), JSON.stringify(s.claims), options.maxSessions ?? 0, s.createdAt, s.jkt ?? ''
    )) as string[]
  }

  async rotate (i: RotateInput): Promise<RotateResult> {
    const r = await this.bounded(this.scripts.tokengate2Rotate(
      ...this.head(i.userId, i.now), i.sessionId, i.presentedHash, i.successorHash, i.parentHash === undefined ? '' : i.parentHash,
      i.refreshTtlMs, i.maxSessionAgeMs, i.extraMs, i.rotate ? '1' : '0', i.graceMs,
      i.roles === undefined ? '' : JSON.stringify(i.roles), i.claims === undefined ? '' : JSON.stringify(i.claims), i.jkt ?? ''
    )) as [string, number?, number?, Row?]
    // The row carries the record's current hash: the successor (or, not rotating, the presented one).
    if (r[0] === 'ok') return { status: 'ok', grace: r[1] === 1, ...(r[2] === 1 ? { ahead: true } : {}), record: parseRow(r[3]!) }
    return { status: r[0] as 'missing' | 'reused' | 'key' }
  }

  async renew (i: RenewInput): Promise<RenewResult> {
    const r = await this.bounded(this.scripts.tokengate2Renew(
      ...this.head(i.userId, i.now), i.sessionId, i.presentedHash, i.successorHash, i.parentHash === undefined ? '' : i.parentHash,
      i.refreshTtlMs, i.maxSessionAgeMs, i.extraMs, i.graceMs, i.jkt ?? ''
    )) as [string, number?, number?, Row?]
    if (r[0] === 'ok') return { status: 'ok', grace: r[1] === 1, ...(r[2] === 1 ? { ahead: true } : {}), record: parseRow(r[3]!) }
    return { status: r[0] as 'missing' | 'stale' | 'capped' | 'key' }
  }

  async revoke (userId: string, sessionIds: string[]): Promise<string[]> {
    if (sessionIds.length === 0) return []
    return await this.bounded(this.scripts.tokengate2Revoke(...this.head(userId, Date.now()), ...sessionIds)) as string[]
  }

  async revokeAll (userId: string): Promise<string[]> {
    return await this.bounded(this.scripts.tokengate2RevokeAll(...this.head(userId, Date.now()))) as string[]
  }

  async list (userId: string, now: number): Promise<SessionRecord[]> {
    const rows = await this.bounded(this.scripts.tokengate2List(...this.head(userId, now))) as Row[]
    return rows.map(row => parseRow(row)).sort((a, b) => b.createdAt - a.createdAt)
  }

  async markRevoked (entries: RevocationEntry[], now: number): Promise<void> {
    if (entries.length === 0) return
    const args: Array<string | number> = [this.channel, now]
    for (const e of entries) args.push(e.sessionId, e.until)
    await this.bounded(this.scripts.tokengate2MarkRevoked(this.revokedKey, ...args))
  }

  async loadRevoked (now: number): Promise<RevocationEntry[]> {
    const reply: Array<string | [string, string | number]> = await this.bounded(this.client.zrangebyscore(this.revokedKey, `(${now}`, '+inf', 'WITHSCORES'))
    // [member, score, …] (RESP2, and ioredis 6's default reply mapping), or [[member, score], …] from a
    // user's ioredis 6 client made with replyMapping: 'resp3'.
    const flat = reply.flat()
    const out: RevocationEntry[] = []
    for (let i = 0; i < flat.length; i += 2) out.push({ sessionId: String(flat[i]), until: Number(flat[i + 1]) })
    return out
  }

  async claimProof (id: string, ttlMs: number): Promise<boolean> {
    return (await this.bounded(this.client.set(`${this.prefix}:dpop:${id}`, '1', 'PX', ttlMs, 'NX'))) === 'OK'
  }

  async isRevoked (sessionId: string, now: number): Promise<boolean> {
    const score = await this.bounded(this.client.zscore(this.revokedKey, sessionId))
    return score !== null && Number(score) > now
  }

  async subscribe (handlers: RevocationFeedHandlers): Promise<void> {
    // A connection of its own: a subscribed connection can run no other command.
    const sub: Client = isCluster(this.client)
      ? this.client.duplicate()
      // No command timeout: the heartbeat bounds its own PING (and would read an ioredis timeout as a miss).
      : this.client.duplicate({ ...ownClientOptions(this.timeoutMs), commandTimeout: undefined })
    this.subscriber = sub
    if (!isCluster(sub)) keepConnected(sub)
    let subscribed = false
    const down = (): void => {
      subscribed = false
      handlers.onState(false)
    }
    sub.on('error', () => { /* the feed reports down on close; reconnects by itself */ })
    // The proof of life: a PING on the subscriber's own connection. A Cluster subscribes through a
    // connection of its own choosing, which a PING on the Cluster would not reach: there the proof is a
    // message this instance publishes to a channel of its own and hears back through the subscription.
    const cluster = isCluster(sub)
    const probeChannel = `${this.channel}:alive:${randomBytes(8).toString('hex')}`
    let heard: (() => void) | undefined
    sub.on('message', (channel: string, message: string) => {
      if (channel === this.channel) handlers.onRevoked(message)
      else if (channel === probeChannel) heard?.()
    })
    const probe = async (): Promise<unknown> => cluster
      ? await new Promise<void>((resolve, reject) => {
        heard = resolve
        this.client.publish(probeChannel, '1').catch(reject)
      })
      : await sub.ping()
    const up = async (): Promise<void> => {
      try {
        await this.bounded(cluster ? sub.subscribe(this.channel, probeChannel) : sub.subscribe(this.channel), true)
        subscribed = true
        handlers.onState(true)
      } catch {
        down()
      }
    }
    sub.on('close', down)
    // A connection can go silent without closing (a partition that holds bytes and resets nothing): the
    // feed proves it is alive every HEARTBEAT_MS, answered within timeoutMs. A miss counts the feed as
    // down and starts a fresh connection, whose 'ready' subscribes (and reloads revocations) again.
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
      probe().then(() => {
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
    // QUIT, then disconnect() in any case: with Sentinel, only disconnect() ends ioredis's own connections
    // to the sentinels (its failover detector), which would otherwise keep the process alive.
    const quit = async (c: Client): Promise<void> => {
      closingClient(c)
      try { await this.bounded(c.quit()) } catch { /* closed below */ }
      c.disconnect()
    }
    if (this.subscriber !== undefined) await quit(this.subscriber)
    if (this.owned) await quit(this.client)
  }
}

/** A record as the scripts return it (lua/common.lua, out()). */
type Row = [sid: string, h: string | null, p: string | null, pt: number | null, re: number, st: number, lu: number, x: number, ip: string, ua: string, ro: string, cl: string, jkt: string | null]

/** A row as a record (the scripts' `out`: the current hash, times absolute). */
function parseRow (row: Row): SessionRecord {
  const [sessionId, h, , , re, st, lu, x, ip, ua, ro, cl, jkt] = row
  const record: SessionRecord = {
    sessionId,
    refreshHash: h!,
    refreshExpiresAt: Number(re),
    createdAt: Number(st),
    lastUsedAt: Number(lu),
    expiresAt: Number(x),
    ip: ip === '' ? undefined : ip,
    userAgent: ua === '' ? undefined : ua,
    roles: JSON.parse(ro),
    claims: JSON.parse(cl)
  }
  if (typeof jkt === 'string') record.jkt = jkt
  return record
}
