// The Redis SessionStore: all sessions of a user in one key under the user's hash tag (one Cluster slot
// per user): a string while the user has few sessions, a hash beyond; every write is one Lua script. The
// record layout is in lua/common.lua; sessions of the 0.1 layout are moved over as they are touched. The
// revocation feed lives in feed.ts, connection options and the Sentinel reconnect in connections.ts.
import { readFileSync } from 'node:fs'
import { decode as decodeMsgpack } from '@msgpack/msgpack'
import { Redis } from 'ioredis'
import { closingClient, hasCommandTimeout, isCluster, ownClientOptions, type Client, type RedisClient } from './connections.js'
import { subscribeFeed, type Feed } from './feed.js'
import type {
  CreateOptions, EpochEntry, NewSession, ReauthInput, ReauthResult, RenewInput, RenewResult, RevocationEntry, RevocationFeedHandlers,
  RotateInput, RotateResult, SessionRecord, SessionStore, SessionTimes
} from './index.js'

export interface RedisStoreOptions {
  /** A redis:// URL (the store owns the connection) or your ioredis 5 or 6 Redis/Cluster instance (you own it). */
  redis: string | RedisClient
  /** Key and channel prefix; default 'tg'. */
  keyPrefix?: string
  /** Bound on every store call in ms; default 1000. */
  timeoutMs?: number
  /** A feed connection that answers nothing for this long (ms) is replaced; default 3500 (revocationStalenessMs). */
  stalenessMs?: number
}

const LUA_DIR = new URL('./lua/', import.meta.url)
const lua = (name: string): string => readFileSync(new URL(`${name}.lua`, LUA_DIR), 'utf8')
const COMMON = lua('common')
// A session script may be given revokeEveryone's key as KEYS[3] (one Redis server: any key is reachable; on a
// Cluster it lives in another slot and is not given): then it reads the epoch itself, so no session older than
// it survives an instance that has not heard of it yet. The 0.1 migration's KEYS[3…] are session keys.
const session = (name: string): string => 'local EVERYONE_KEY = KEYS[3]\n' + COMMON + '\n' + lua(name)

// Names are namespaced (and versioned: earlier layouts' scripts took other arguments) so several stores, or
// a user's own scripts, can share one ioredis instance. Every key a script touches is in its KEYS.
const SCRIPTS = {
  // The session scripts take 2 or 3 keys (see `session`): the caller passes the number first.
  tokengate4Create: { lua: session('create') },
  tokengate4Rotate: { lua: session('rotate') },
  tokengate4Renew: { lua: session('renew') },
  tokengate4Reauth: { lua: session('reauth') },
  tokengate4Revoke: { lua: session('revoke') },
  tokengate4RevokeAll: { lua: session('revoke-all') },
  tokengate2MarkRevoked: { numberOfKeys: 1, lua: lua('mark-revoked') },
  tokengate3MarkEpoch: { numberOfKeys: 1, lua: lua('mark-epoch') }
} as const

/**
 * How many sessions a user keeps in the string form before the key becomes a hash (lua/common.lua). Not an
 * option: the tests lower it to run the store contract against the hash form.
 */
export const layout = { stringFormMax: 8 }

/** The 0.1 migration declares the keys of the sessions it moves: a variable number. */
const MIGRATE_01 = 'local EVERYONE_KEY = nil\n' + COMMON + '\n' + lua('migrate-0.1')

type ScriptFn = (...args: Array<string | number | Buffer>) => Promise<unknown>
type Scripted = Record<keyof typeof SCRIPTS, ScriptFn>

/** `{`, `}` and `%` in a user id are percent-encoded so the id cannot break out of its hash tag. */
export function encodeUserId (userId: string): string {
  return userId.replace(/[%{}]/g, c => '%' + c.charCodeAt(0).toString(16).toUpperCase())
}

export class RedisStore implements SessionStore {
  readonly client: Client
  /** Whether the client is a Cluster (revokeEveryone's key then lives in another slot than a user's). */
  private readonly cluster: boolean
  private readonly owned: boolean
  /** Whether ioredis bounds every call itself (a command timeout on the connection), so no timer per call is needed. */
  private readonly selfBounded: boolean
  private readonly prefix: string
  private readonly timeoutMs: number
  private readonly stalenessMs: number
  private readonly revokedKey: string
  private readonly epochsKey: string
  private readonly everyoneKey: string
  readonly channel: string
  private feed?: Feed

  constructor (opts: RedisStoreOptions) {
    this.prefix = opts.keyPrefix ?? 'tg'
    this.timeoutMs = opts.timeoutMs ?? 1000
    this.stalenessMs = opts.stalenessMs ?? 3500
    this.owned = typeof opts.redis === 'string'
    this.client = typeof opts.redis === 'string'
      ? new Redis(opts.redis, ownClientOptions(this.timeoutMs))
      : opts.redis as unknown as Client
    if (this.owned) this.client.on('error', () => { /* reported by failing calls; reconnects by itself */ })
    this.cluster = isCluster(this.client)
    this.selfBounded = this.owned || hasCommandTimeout(this.client)
    for (const [name, def] of Object.entries(SCRIPTS)) {
      if (typeof (this.client as unknown as Record<string, unknown>)[name] !== 'function') this.client.defineCommand(name, def)
    }
    this.revokedKey = `${this.prefix}:revoked`
    this.epochsKey = `${this.prefix}:epochs`
    this.everyoneKey = `${this.prefix}:epoch`
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
  private bounded<T> (p: Promise<T>, always = false): Promise<T> {
    return this.selfBounded && !always ? p : this.raced(p)
  }

  private async raced<T> (p: Promise<T>): Promise<T> {
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

  /** KEYS and the first ARGV (now, not-before, the string form's size) every session script takes. */
  private head (userId: string, now: number, notBefore = 0): Array<string | number> {
    return this.cluster
      ? [2, this.sessionsKey(userId), this.legacy(userId).index, now, notBefore, layout.stringFormMax]
      : [3, this.sessionsKey(userId), this.legacy(userId).index, this.everyoneKey, now, notBefore, layout.stringFormMax]
  }

  /**
   * Runs a session script; one that finds sessions of the 0.1 layout ('legacy') runs again once they are
   * moved over (migrate-0.1.lua, with their keys declared).
   */
  private async run<T extends unknown[]> (userId: string, now: number, notBefore: number, call: () => Promise<unknown>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const r = await this.bounded(call()) as T
      if (r[0] !== 'legacy' || attempt >= 3) return r
      await this.migrateLegacy(userId, now, notBefore)
    }
  }

  private async migrateLegacy (userId: string, now: number, notBefore: number): Promise<void> {
    const { index, recordPrefix } = this.legacy(userId)
    for (let attempt = 0; attempt < 3; attempt++) {
      const members = await this.bounded(this.client.zrange(index, 0, '-1'))
      const keys = [this.sessionsKey(userId), index, ...members.map(m => recordPrefix + m)]
      const r = await this.bounded(this.client.eval(MIGRATE_01, keys.length, ...keys, now, notBefore, layout.stringFormMax, recordPrefix)) as [string]
      if (r[0] === 'ok') return
    }
  }

  async create (s: NewSession, t: SessionTimes, options: CreateOptions = {}): Promise<string[]> {
    const nb = t.notBefore ?? 0
    const r = await this.run<[string, string[]]>(s.userId, t.now, nb, async () => await this.scripts.tokengate4Create(
      ...this.head(s.userId, t.now, nb), s.sessionId, s.refreshHash, s.refreshExpiresAt, t.extraMs,
      s.ip ?? '', s.userAgent ?? '', JSON.stringify(s.roles), JSON.stringify(s.claims), options.maxSessions ?? 0, s.createdAt, s.jkt ?? '',
      s.authTime ?? s.createdAt, s.acr ?? '', s.amr === undefined ? '' : JSON.stringify(s.amr), s.providerSessionId ?? ''
    ))
    return r[1] ?? []
  }

  async rotate (i: RotateInput): Promise<RotateResult> {
    const nb = i.notBefore ?? 0
    const r = await this.run<[string, number?, number?, Row?]>(i.userId, i.now, nb, async () => await this.scripts.tokengate4Rotate(
      ...this.head(i.userId, i.now, nb), i.sessionId, i.presentedHash, i.successorHash, i.parentHash === undefined ? '' : i.parentHash,
      i.refreshTtlMs, i.maxSessionAgeMs, i.extraMs, i.rotate ? '1' : '0', i.graceMs,
      i.roles === undefined ? '' : JSON.stringify(i.roles), i.claims === undefined ? '' : JSON.stringify(i.claims), i.jkt ?? '',
      i.reportSuccessorMismatch === true ? '1' : ''
    ))
    // The row carries the record's current hash: the successor (or, not rotating, the presented one).
    if (r[0] === 'ok') return { status: 'ok', grace: r[1] === 1, ...(r[2] === 1 ? { ahead: true } : {}), record: parseRow(r[3]!) }
    return { status: r[0] === 'legacy' ? 'missing' : r[0] as 'missing' | 'reused' | 'key' | 'successor' }
  }

  async reauthenticate (i: ReauthInput): Promise<ReauthResult> {
    const nb = i.notBefore ?? 0
    const fixed = [
      i.refreshTtlMs, i.maxSessionAgeMs, i.extraMs, JSON.stringify(i.roles), JSON.stringify(i.claims), i.acr ?? '',
      i.amr === undefined ? '' : JSON.stringify(i.amr), i.jkt ?? ''
    ]
    // Read the current hash, derive its successor, then set both if the hash is still current; a refresh that
    // rotated the session in between is met by reading again (a few times at most).
    for (let attempt = 0; attempt < 3; attempt++) {
      const read = await this.run<[string, string?]>(i.userId, i.now, nb, async () => await this.scripts.tokengate4Reauth(
        ...this.head(i.userId, i.now, nb), i.sessionId, '', '', ...fixed
      ))
      if (read[0] !== 'hash') return { status: read[0] === 'key' || read[0] === 'capped' ? read[0] : 'missing' }
      const current = read[1]!
      const r = await this.run<[string, Row?]>(i.userId, i.now, nb, async () => await this.scripts.tokengate4Reauth(
        ...this.head(i.userId, i.now, nb), i.sessionId, current, i.successorOf(current), ...fixed
      ))
      if (r[0] === 'ok') return { status: 'ok', previousHash: current, record: parseRow(r[1]!) }
      if (r[0] !== 'race') return { status: r[0] === 'key' || r[0] === 'capped' ? r[0] : 'missing' }
    }
    return { status: 'race' }
  }

  async renew (i: RenewInput): Promise<RenewResult> {
    const nb = i.notBefore ?? 0
    const r = await this.run<[string, number?, number?, Row?]>(i.userId, i.now, nb, async () => await this.scripts.tokengate4Renew(
      ...this.head(i.userId, i.now, nb), i.sessionId, i.presentedHash, i.successorHash, i.parentHash === undefined ? '' : i.parentHash,
      i.refreshTtlMs, i.maxSessionAgeMs, i.extraMs, i.graceMs, i.jkt ?? ''
    ))
    if (r[0] === 'ok') return { status: 'ok', grace: r[1] === 1, ...(r[2] === 1 ? { ahead: true } : {}), record: parseRow(r[3]!) }
    return { status: r[0] === 'legacy' ? 'missing' : r[0] as 'missing' | 'stale' | 'capped' | 'key' }
  }

  async revoke (userId: string, sessionIds: string[], notBefore = 0): Promise<string[]> {
    if (sessionIds.length === 0) return []
    const now = Date.now()
    const r = await this.run<[string, string[]?]>(userId, now, notBefore, async () => await this.scripts.tokengate4Revoke(...this.head(userId, now, notBefore), ...sessionIds))
    return r[1] ?? []
  }

  async revokeAll (userId: string, notBefore = 0): Promise<string[]> {
    const now = Date.now()
    // Read first: in the hash form the script answers every field, dead ones too, and only this read knows them.
    const before = await this.read(userId, now, notBefore)
    const r = await this.run<[string, string[]?, number?]>(userId, now, notBefore, async () => await this.scripts.tokengate4RevokeAll(...this.head(userId, now, notBefore)))
    const ids = r[1] ?? []
    if (r[2] === 1) return ids
    const dead = new Set(before.dead)
    return ids.filter(id => !dead.has(id))
  }

  /**
   * Live sessions of a user, newest first: read with plain commands (one MULTI: GET for the string form,
   * HGETALL for the hash form) and decoded here, so a user with thousands of sessions does not hold Redis
   * for a script that decodes them all. Dead sessions of the hash form met here are deleted.
   */
  async list (userId: string, now: number, notBefore = 0): Promise<SessionRecord[]> {
    const { records, dead } = await this.read(userId, now, notBefore)
    if (dead.length > 0) await this.bounded(this.client.hdel(this.sessionsKey(userId), ...dead)).catch(() => { /* swept later */ })
    return records.sort((a, b) => b.createdAt - a.createdAt)
  }

  /** Every session of a user as stored, split into live records and the ids of dead ones (hash form only). */
  private async read (userId: string, now: number, notBefore: number): Promise<{ records: SessionRecord[], dead: string[] }> {
    const key = this.sessionsKey(userId)
    const { index } = this.legacy(userId)
    for (let attempt = 0; ; attempt++) {
      type Reply<T> = [Error | null, T]
      const multi = this.client.multi().exists(index).getBuffer(key).hgetallBuffer(key)
      // One server: revokeEveryone's epoch read in the same transaction (the later of it and the caller's wins).
      if (!this.cluster) multi.get(this.everyoneKey)
      const [legacy, asString, asHash, everyone] = await this.bounded(multi.exec()) as [Reply<number>, Reply<Buffer | null>, Reply<Record<string, Buffer>>, Reply<string | null>?]
      if (legacy[1] === 1 && attempt < 3) { await this.migrateLegacy(userId, now, notBefore); continue }
      const epoch = everyone?.[1] == null ? 0 : Number(everyone[1])
      if (epoch > notBefore) notBefore = epoch
      const stored: Array<[string, unknown[]]> = []
      if (asString[0] === null && asString[1] !== null) {
        for (const [sid, r] of Object.entries(decodeMsgpack(asString[1]) as Record<string, unknown[]>)) stored.push([sid, r])
      } else if (asHash[0] === null) {
        for (const [sid, raw] of Object.entries(asHash[1])) stored.push([sid, decodeMsgpack(raw) as unknown[]])
      }
      const records: SessionRecord[] = []
      const dead: string[] = []
      for (const [sid, r] of stored) {
        const record = fromStored(sid, r)
        if (record.expiresAt > now && record.createdAt >= notBefore) records.push(record)
        else dead.push(sid)
      }
      return { records, dead: asHash[0] === null ? dead : [] }
    }
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

  async markEpoch (e: EpochEntry, now: number): Promise<void> {
    const everyone = e.userId === undefined
    await this.bounded(this.scripts.tokengate3MarkEpoch(everyone ? this.everyoneKey : this.epochsKey, this.channel, now, everyone ? 'everyone' : 'user', e.at, e.until, e.userId ?? ''))
  }

  async loadEpochs (now: number): Promise<EpochEntry[]> {
    const [scored, everyone, pexpire] = await Promise.all([
      this.bounded(this.client.zrange(this.epochsKey, 0, '-1', 'WITHSCORES')) as Promise<Array<string | [string, string | number]>>,
      this.bounded(this.client.get(this.everyoneKey)),
      this.bounded(this.client.pexpiretime(this.everyoneKey))
    ])
    // [member, score, …], or [[member, score], …] with replyMapping: 'resp3' (see loadRevoked).
    const users = scored.flat()
    const out: EpochEntry[] = []
    // A user's entry is useful for the access TTL after its epoch; the set is trimmed on write.
    const keepUntil = await this.bounded(this.client.pexpiretime(this.epochsKey))
    for (let i = 0; i < users.length; i += 2) out.push({ userId: String(users[i]), at: Number(users[i + 1]), until: Number(keepUntil) })
    if (everyone !== null) out.push({ at: Number(everyone), until: Number(pexpire) })
    return out.filter(e => e.until < 0 || e.until > now)
  }

  async epochOf (userId: string): Promise<number> {
    const [user, everyone] = await Promise.all([
      this.bounded(this.client.zscore(this.epochsKey, userId)),
      this.bounded(this.client.get(this.everyoneKey))
    ])
    return Math.max(user === null ? 0 : Number(user), everyone === null ? 0 : Number(everyone))
  }

  async claimProof (id: string, ttlMs: number): Promise<boolean> {
    return (await this.bounded(this.client.set(`${this.prefix}:dpop:${id}`, '1', 'PX', ttlMs, 'NX'))) === 'OK'
  }

  async isRevoked (sessionId: string, now: number): Promise<boolean> {
    const score = await this.bounded(this.client.zscore(this.revokedKey, sessionId))
    return score !== null && Number(score) > now
  }

  async subscribe (handlers: RevocationFeedHandlers): Promise<void> {
    this.feed = await subscribeFeed({ client: this.client, channel: this.channel, timeoutMs: this.timeoutMs, stalenessMs: this.stalenessMs }, handlers)
  }

  async ping (): Promise<boolean> {
    try {
      return (await this.bounded(this.client.ping())) === 'PONG'
    } catch {
      return false
    }
  }

  async close (): Promise<void> {
    this.feed?.stop()
    // QUIT, then disconnect() in any case: with Sentinel, only disconnect() ends ioredis's own connections
    // to the sentinels (its failover detector), which would otherwise keep the process alive.
    const quit = async (c: Client): Promise<void> => {
      closingClient(c)
      try { await this.bounded(c.quit()) } catch { /* closed below */ }
      c.disconnect()
    }
    if (this.feed !== undefined) await quit(this.feed.subscriber)
    if (this.owned) await quit(this.client)
  }
}

/** A record as the scripts return it (lua/common.lua, out()). */
type Row = [
  sid: string, h: string, p: string | null, pt: number | null, re: number, st: number, lu: number, x: number, ip: string, ua: string,
  ro: string, cl: string, jkt: string | null, at: number, acr: string | null, amr: string | null, os: string | null
]

/** A record as stored (lua/common.lua: times after st as offsets from it; false for none). */
function fromStored (sessionId: string, r: unknown[]): SessionRecord {
  const st = Number(r[4])
  const at = r[12]
  const record: SessionRecord = {
    sessionId,
    refreshHash: String(r[0]),
    refreshExpiresAt: st + Number(r[3]),
    createdAt: st,
    lastUsedAt: st + Number(r[5]),
    expiresAt: st + Number(r[6]),
    authTime: typeof at === 'number' ? st + at : st,
    ip: r[7] === '' ? undefined : String(r[7]),
    userAgent: r[8] === '' ? undefined : String(r[8]),
    roles: JSON.parse(String(r[9])),
    claims: JSON.parse(String(r[10]))
  }
  if (typeof r[11] === 'string') record.jkt = r[11]
  if (typeof r[13] === 'string') record.acr = r[13]
  if (typeof r[14] === 'string') record.amr = JSON.parse(r[14])
  if (typeof r[15] === 'string') record.providerSessionId = r[15]
  return record
}

/** A row as a record (the scripts' `out`: the current hash, times absolute). */
function parseRow (row: Row): SessionRecord {
  const [sessionId, h, , , re, st, lu, x, ip, ua, ro, cl, jkt, at, acr, amr, os] = row
  const record: SessionRecord = {
    sessionId,
    refreshHash: h,
    refreshExpiresAt: Number(re),
    createdAt: Number(st),
    lastUsedAt: Number(lu),
    expiresAt: Number(x),
    authTime: Number(at),
    ip: ip === '' ? undefined : ip,
    userAgent: ua === '' ? undefined : ua,
    roles: JSON.parse(ro),
    claims: JSON.parse(cl)
  }
  if (typeof jkt === 'string') record.jkt = jkt
  if (typeof acr === 'string') record.acr = acr
  if (typeof amr === 'string') record.amr = JSON.parse(amr)
  if (typeof os === 'string') record.providerSessionId = os
  return record
}
