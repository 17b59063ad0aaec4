// An in-process SessionStore: the same contract as the Redis store, for a single process.
import type {
  CreateOptions, EpochEntry, NewSession, ReauthInput, ReauthResult, RenewInput, RenewResult, RevocationEntry, RevocationFeedHandlers,
  RotateInput, RotateResult, SessionRecord, SessionStore, SessionTimes
} from './index.js'

interface Entry extends SessionRecord {
  prevHash?: string
  prevAt?: number
}

const SWEEP_MS = 60_000

export class MemoryStore implements SessionStore {
  private readonly users = new Map<string, Map<string, Entry>>()
  private readonly revoked = new Map<string, number>()
  private readonly proofs = new Map<string, number>()
  private readonly epochs = new Map<string | undefined, EpochEntry>()
  private readonly listeners = new Set<RevocationFeedHandlers>()
  private readonly timer: NodeJS.Timeout

  constructor () {
    // The time is read through Date.now() (or given by the caller), never a copy of it: one seam for tests.
    this.timer = setInterval(() => this.sweep(Date.now()), SWEEP_MS).unref()
  }

  private live (userId: string, sessionId: string, now: number, notBefore = 0): Entry | undefined {
    const sessions = this.users.get(userId)
    const e = sessions?.get(sessionId)
    if (e === undefined) return undefined
    if (e.expiresAt <= now || e.createdAt < notBefore) {
      sessions!.delete(sessionId)
      if (sessions!.size === 0) this.users.delete(userId)
      return undefined
    }
    return e
  }

  private sweep (now: number): void {
    for (const [userId, sessions] of this.users) {
      for (const [id, e] of sessions) if (e.expiresAt <= now) sessions.delete(id)
      if (sessions.size === 0) this.users.delete(userId)
    }
    for (const [id, until] of this.revoked) if (until <= now) this.revoked.delete(id)
    for (const [id, until] of this.proofs) if (until <= now) this.proofs.delete(id)
    for (const [id, e] of this.epochs) if (e.until <= now) this.epochs.delete(id)
  }

  async create (s: NewSession, t: SessionTimes, options: CreateOptions = {}): Promise<string[]> {
    let sessions = this.users.get(s.userId)
    if (sessions === undefined) this.users.set(s.userId, (sessions = new Map()))
    for (const [id, e] of sessions) if (e.expiresAt <= t.now || e.createdAt < (t.notBefore ?? 0)) sessions.delete(id)
    sessions.set(s.sessionId, {
      sessionId: s.sessionId,
      refreshHash: s.refreshHash,
      refreshExpiresAt: s.refreshExpiresAt,
      createdAt: s.createdAt,
      lastUsedAt: t.now,
      expiresAt: s.refreshExpiresAt + t.extraMs,
      ip: s.ip,
      userAgent: s.userAgent,
      roles: [...s.roles],
      claims: structuredClone(s.claims),
      authTime: s.authTime ?? s.createdAt,
      ...(s.jkt !== undefined ? { jkt: s.jkt } : {}),
      ...(s.acr !== undefined ? { acr: s.acr } : {}),
      ...(s.amr !== undefined ? { amr: [...s.amr] } : {}),
      ...(s.providerSessionId !== undefined ? { providerSessionId: s.providerSessionId } : {})
    })
    const evicted: string[] = []
    const max = options.maxSessions ?? 0
    for (let over = max > 0 ? sessions.size - max : 0; over > 0; over--) {
      let lru: Entry | undefined
      for (const e of sessions.values()) if (e.sessionId !== s.sessionId && (lru === undefined || e.lastUsedAt < lru.lastUsedAt)) lru = e
      sessions.delete(lru!.sessionId)
      evicted.push(lru!.sessionId)
    }
    return evicted
  }

  private advance (e: Entry, presented: string, successor: string, t: SessionTimes): void {
    e.prevHash = presented
    e.prevAt = t.now
    e.refreshHash = successor
    e.refreshExpiresAt = Math.min(t.now + t.refreshTtlMs, e.createdAt + t.maxSessionAgeMs)
    e.expiresAt = e.refreshExpiresAt + t.extraMs
  }

  private inGrace (e: Entry, presented: string, successor: string, now: number, graceMs: number): boolean {
    return e.prevHash === presented && e.prevAt !== undefined && now - e.prevAt < graceMs && e.refreshHash === successor
  }

  async rotate (i: RotateInput): Promise<RotateResult> {
    const e = this.live(i.userId, i.sessionId, i.now, i.notBefore)
    if (e === undefined) return { status: 'missing' }
    let kind: 'current' | 'grace' | 'ahead'
    if (e.refreshHash === i.presentedHash) kind = 'current'
    else if (i.rotate && this.inGrace(e, i.presentedHash, i.successorHash, i.now, i.graceMs)) kind = 'grace'
    // The previous token in grace with another successor (a re-authentication's): nothing changes (as rotate.lua).
    else if (i.rotate && i.reportSuccessorMismatch === true && this.inGrace(e, i.presentedHash, e.refreshHash, i.now, i.graceMs)) return { status: 'successor' }
    else if (i.rotate && i.parentHash !== undefined && e.refreshHash === i.parentHash) kind = 'ahead'
    else {
      // Reuse kills the session whatever key the request proves (as rotate.lua).
      this.users.get(i.userId)!.delete(i.sessionId)
      return { status: 'reused' }
    }
    if (e.jkt !== undefined && e.jkt !== i.jkt) return { status: 'key' }
    const grace = kind === 'grace'
    const ahead = kind === 'ahead'
    if (ahead || (kind === 'current' && i.rotate)) this.advance(e, i.presentedHash, i.successorHash, i)
    e.lastUsedAt = i.now
    if (e.jkt === undefined && i.jkt !== undefined) e.jkt = i.jkt
    if (i.roles !== undefined) e.roles = [...i.roles]
    if (i.claims !== undefined) e.claims = structuredClone(i.claims)
    return { status: 'ok', grace, ...(ahead ? { ahead } : {}), record: snapshot(e) }
  }

  async renew (i: RenewInput): Promise<RenewResult> {
    const e = this.live(i.userId, i.sessionId, i.now, i.notBefore)
    if (e === undefined) return { status: 'missing' }
    if (e.jkt !== undefined && e.jkt !== i.jkt) return { status: 'key' }
    if (i.now >= e.createdAt + i.maxSessionAgeMs) return { status: 'capped' }
    let grace = false
    let ahead = false
    if (e.refreshHash === i.presentedHash) {
      this.advance(e, i.presentedHash, i.successorHash, i)
    } else if (this.inGrace(e, i.presentedHash, i.successorHash, i.now, i.graceMs) && e.refreshExpiresAt > i.now) {
      grace = true
    } else if (i.parentHash !== undefined && e.refreshHash === i.parentHash) {
      ahead = true
      this.advance(e, i.presentedHash, i.successorHash, i)
    } else {
      return { status: 'stale' }
    }
    e.lastUsedAt = i.now
    return { status: 'ok', grace, ...(ahead ? { ahead } : {}), record: snapshot(e) }
  }

  async reauthenticate (i: ReauthInput): Promise<ReauthResult> {
    const e = this.live(i.userId, i.sessionId, i.now, i.notBefore)
    if (e === undefined) return { status: 'missing' }
    if (e.jkt !== undefined && e.jkt !== i.jkt) return { status: 'key' }
    if (i.now >= e.createdAt + i.maxSessionAgeMs) return { status: 'capped' }
    // As the Redis store: the successor is derived from the hash read, and set only while that hash is current.
    let previousHash = e.refreshHash
    let successor = i.successorOf(previousHash)
    for (let attempt = 1; ; attempt++) {
      if (this.live(i.userId, i.sessionId, i.now, i.notBefore) !== e) return { status: 'missing' }
      if (e.refreshHash === previousHash) break
      if (attempt >= 3) return { status: 'race' }
      previousHash = e.refreshHash
      successor = i.successorOf(previousHash)
    }
    this.advance(e, previousHash, successor, i)
    e.lastUsedAt = i.now
    e.authTime = i.now
    e.roles = [...i.roles]
    e.claims = structuredClone(i.claims)
    if (e.jkt === undefined && i.jkt !== undefined) e.jkt = i.jkt
    if (i.acr !== undefined) e.acr = i.acr
    else delete e.acr
    if (i.amr !== undefined) e.amr = [...i.amr]
    else delete e.amr
    return { status: 'ok', previousHash, record: snapshot(e) }
  }

  async revoke (userId: string, sessionIds: string[], notBefore = 0): Promise<string[]> {
    const now = Date.now()
    const out: string[] = []
    for (const id of sessionIds) {
      if (this.live(userId, id, now, notBefore) !== undefined) {
        this.users.get(userId)!.delete(id)
        out.push(id)
      }
    }
    return out
  }

  async revokeAll (userId: string, notBefore = 0): Promise<string[]> {
    const now = Date.now()
    const sessions = this.users.get(userId)
    if (sessions === undefined) return []
    const out = [...sessions.values()].filter(e => e.expiresAt > now && e.createdAt >= notBefore).map(e => e.sessionId)
    this.users.delete(userId)
    return out
  }

  async list (userId: string, now: number, notBefore = 0): Promise<SessionRecord[]> {
    const sessions = this.users.get(userId)
    if (sessions === undefined) return []
    const out: SessionRecord[] = []
    for (const id of [...sessions.keys()]) {
      const e = this.live(userId, id, now, notBefore)
      if (e !== undefined) out.push(snapshot(e))
    }
    return out.sort((a, b) => b.createdAt - a.createdAt)
  }

  async markRevoked (entries: RevocationEntry[], now: number): Promise<void> {
    for (const { sessionId, until } of entries) {
      if (until > now) this.revoked.set(sessionId, Math.max(until, this.revoked.get(sessionId) ?? 0))
    }
    for (const l of this.listeners) for (const { sessionId } of entries) l.onRevoked(sessionId)
  }

  async loadRevoked (now: number): Promise<RevocationEntry[]> {
    const out: RevocationEntry[] = []
    for (const [sessionId, until] of this.revoked) if (until > now) out.push({ sessionId, until })
    return out
  }

  async claimProof (id: string, ttlMs: number): Promise<boolean> {
    const now = Date.now()
    if ((this.proofs.get(id) ?? 0) > now) return false
    this.proofs.set(id, now + ttlMs)
    return true
  }

  async isRevoked (sessionId: string, now: number): Promise<boolean> {
    return (this.revoked.get(sessionId) ?? 0) > now
  }

  async markEpoch (entry: EpochEntry, now: number): Promise<void> {
    const known = this.epochs.get(entry.userId)
    if (entry.until > now && (known === undefined || known.at < entry.at)) this.epochs.set(entry.userId, { ...entry })
    for (const l of this.listeners) l.onEpoch(entry.userId, entry.at)
  }

  async loadEpochs (now: number): Promise<EpochEntry[]> {
    return [...this.epochs.values()].filter(e => e.until > now).map(e => ({ ...e }))
  }

  async epochOf (userId: string): Promise<number> {
    const now = Date.now()
    const at = (e: EpochEntry | undefined): number => e !== undefined && e.until > now ? e.at : 0
    return Math.max(at(this.epochs.get(userId)), at(this.epochs.get(undefined)))
  }

  async subscribe (handlers: RevocationFeedHandlers): Promise<void> {
    this.listeners.add(handlers)
    handlers.onState(true)
    // In-process: the feed cannot miss a message.
    handlers.onAlive(Number.POSITIVE_INFINITY)
  }

  async ping (): Promise<boolean> {
    return true
  }

  async close (): Promise<void> {
    clearInterval(this.timer)
    this.listeners.clear()
  }
}

function snapshot (e: Entry): SessionRecord {
  return {
    sessionId: e.sessionId,
    refreshHash: e.refreshHash,
    refreshExpiresAt: e.refreshExpiresAt,
    createdAt: e.createdAt,
    lastUsedAt: e.lastUsedAt,
    expiresAt: e.expiresAt,
    ip: e.ip,
    userAgent: e.userAgent,
    roles: [...e.roles],
    claims: structuredClone(e.claims),
    authTime: e.authTime,
    ...(e.jkt !== undefined ? { jkt: e.jkt } : {}),
    ...(e.acr !== undefined ? { acr: e.acr } : {}),
    ...(e.amr !== undefined ? { amr: [...e.amr] } : {}),
    ...(e.providerSessionId !== undefined ? { providerSessionId: e.providerSessionId } : {})
  }
}
