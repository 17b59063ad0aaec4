// What every instance knows of revocations without a Redis round trip per request:
// - revoked sessions (a logout, a deleted session, reuse, a session limit), each remembered for the access
//   TTL (+ clock tolerance), after which its access tokens have expired anyway;
// - "not before" epochs: revokeAll(userId) is one entry for the user, revokeEveryone() one for everybody;
//   a token issued before the epoch is refused. Memory grows with the users revoked, never with sessions.
// Each instance subscribes to the revocation feed first, then loads the revocations in force, and counts
// its memory as complete from then on. The feed keeps proving that nothing published has been missed; for
// up to `stalenessMs` after its last proof the instance serves from memory (so a Redis stall costs
// authenticated requests nothing), past it it asks the store per request and fails closed.
import type { FastifyBaseLogger } from 'fastify'
import type { EpochEntry, RevocationEntry, SessionStore } from './store/index.js'

const PRUNE_MS = 30_000
const PUBLISH_ATTEMPTS = 3

/** Called once per revoked session an instance learns of: its own revocations and the feed's. */
export type RevocationListener = (sessionId: string, userId?: string) => void

/**
 * Called on every instance for revokeAll (with the user) and revokeEveryone (userId undefined): every token
 * of that user (or of everybody) issued before `before` (ms) is refused from now on.
 */
export type EpochListener = (userId: string | undefined, before: number) => void

export class Revocations {
  private readonly revoked = new Map<string, number>()
  /** userId → the epoch (ms) and when it may be forgotten (every token issued before it has expired). */
  private readonly users = new Map<string, { at: number, until: number }>()
  /** revokeEveryone's epoch (ms), 0 when none. */
  everyone = 0
  private readonly pending = new Map<string, number>()
  private readonly pendingEpochs: EpochEntry[] = []
  private readonly listeners = new Set<RevocationListener>()
  private readonly epochListeners = new Set<EpochListener>()
  private generation = 0
  private loading?: Promise<void>
  private timer?: NodeJS.Timeout
  private closed = false
  /** Every revocation published before this time (ms) is known here (the feed's last proof). */
  private provenAt = Number.NEGATIVE_INFINITY
  /** Whether the feed is subscribed and the revocations in force were loaded through it. */
  private loaded = false
  /** An in-process store's feed, which cannot miss a message. */
  private inProcess = false

  constructor (
    private readonly store: SessionStore,
    /** access TTL + clock tolerance: how long a revocation must be remembered. */
    private readonly windowMs: number,
    private readonly log: FastifyBaseLogger,
    /** How long after the feed's last proof of life memory is trusted (revocationStalenessMs). */
    private readonly stalenessMs: number,
    /** How long revokeEveryone's epoch is kept in the store: the longest a session can live (+ the window). */
    private readonly everyoneKeepMs: number
  ) {}

  /** Whether this instance's memory of revocations is complete (the feed proved itself within stalenessMs). */
  get up (): boolean {
    return Date.now() - this.provenAt <= this.stalenessMs
  }

  async start (): Promise<void> {
    this.timer = setInterval(() => this.prune(Date.now()), PRUNE_MS).unref()
    let wasUp = false
    await this.store.subscribe({
      onRevoked: (sessionId) => { this.remember(sessionId, Date.now() + this.windowMs) },
      onEpoch: (userId, at) => { this.rememberEpoch(userId, at) },
      onAlive: (at) => {
        if (at === Number.POSITIVE_INFINITY) this.inProcess = true
        if (at > this.provenAt && this.loaded) this.provenAt = at
        if (!wasUp && this.up) { wasUp = true; this.log.info('tokengate: revocation feed up') }
      },
      onState: (subscribed) => {
        this.generation++
        if (!subscribed) {
          this.loaded = false
          if (wasUp && !this.closed) this.log.warn(`tokengate: revocation feed disconnected; serving from memory for up to ${this.stalenessMs} ms after its last proof, then checking revocations in the store per request`)
          wasUp = false
        } else {
          this.loading = this.load(this.generation)
        }
      }
    })
    // Count the feed as up before the app is ready when Redis answers now.
    await this.loading
  }

  private async load (generation: number): Promise<void> {
    const started = Date.now()
    try {
      await this.flushPending()
      const entries = await this.store.loadRevoked(started)
      for (const e of entries) this.remember(e.sessionId, e.until)
      const epochs = await this.store.loadEpochs(started)
      for (const e of epochs) this.rememberEpoch(e.userId, e.at)
      if (generation === this.generation && !this.closed) {
        this.loaded = true
        // Subscribed before the load began: everything published before it is known now.
        if (this.inProcess) this.provenAt = Number.POSITIVE_INFINITY
        else if (started > this.provenAt) this.provenAt = started
        this.log.info('tokengate: revocation feed up')
      }
    } catch (err) {
      this.log.warn({ err }, 'tokengate: loading revocations failed; retrying')
      if (!this.closed) setTimeout(() => { if (generation === this.generation) this.load(generation).catch(() => {}) }, 500).unref()
    }
  }

  private remember (sessionId: string, until: number, userId?: string): void {
    const known = this.revoked.get(sessionId)
    if (known !== undefined && known >= until) return
    this.revoked.set(sessionId, until)
    if (known === undefined || known <= Date.now()) this.announce(sessionId, userId)
  }

  private rememberEpoch (userId: string | undefined, at: number): void {
    if (userId === undefined) {
      if (at <= this.everyone) return
      this.everyone = at
    } else {
      const known = this.users.get(userId)
      if (known !== undefined && known.at >= at) return
      this.users.set(userId, { at, until: at + this.windowMs })
    }
    for (const l of this.epochListeners) {
      try {
        l(userId, at)
      } catch (err) {
        this.log.error({ err }, 'tokengate: an onRevokedBefore listener failed')
      }
    }
  }

  /** Announces one session's revocation to this instance's listeners only (nothing is remembered). */
  announce (sessionId: string, userId: string | undefined): void {
    for (const l of this.listeners) {
      try {
        l(sessionId, userId)
      } catch (err) {
        this.log.error({ err }, 'tokengate: an onSessionRevoked listener failed')
      }
    }
  }

  /** Calls `listener` for every revocation this instance learns of from now on; returns the unsubscribe. */
  onRevoked (listener: RevocationListener): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  /** Calls `listener` for every epoch (revokeAll, revokeEveryone) this instance learns of; returns the unsubscribe. */
  onEpoch (listener: EpochListener): () => void {
    this.epochListeners.add(listener)
    return () => { this.epochListeners.delete(listener) }
  }

  private prune (now: number): void {
    for (const [id, until] of this.revoked) if (until <= now) this.revoked.delete(id)
    for (const [id, e] of this.users) if (e.until <= now) this.users.delete(id)
  }

  /** Whether the session was revoked here (no I/O). */
  knownRevoked (sessionId: string): boolean {
    const until = this.revoked.get(sessionId)
    return until !== undefined && until > Date.now()
  }

  /** The latest epoch that applies to a user (ms; 0 for none): the user's own or everybody's, whichever is later. */
  notBefore (userId: string): number {
    const user = this.users.size === 0 ? undefined : this.users.get(userId)
    return user !== undefined && user.at > this.everyone ? user.at : this.everyone
  }

  /**
   * Whether a token must be refused: its session was revoked, or it was issued (ms) before the latest epoch of
   * its user. Synchronous while memory is trusted; a store round trip past the feed's staleness bound (rejects
   * when the store is unreachable too).
   */
  isRevoked (sessionId: string, userId: string, issuedAt: number): boolean | Promise<boolean> {
    if (this.knownRevoked(sessionId)) return true
    if (issuedAt < this.notBefore(userId)) return true
    if (this.up) return false
    return Promise.all([this.store.isRevoked(sessionId, Date.now()), this.store.epochOf(userId)])
      .then(([revoked, epoch]) => revoked || issuedAt < epoch)
  }

  /** Revokes sessions at once here, then for every instance (retried; kept for the next reconnect on failure). */
  async publish (sessionIds: string[], userId?: string): Promise<void> {
    if (sessionIds.length === 0) return
    const now = Date.now()
    const until = now + this.windowMs
    for (const id of sessionIds) {
      this.remember(id, until, userId)
      this.pending.set(id, until)
    }
    await this.flushPending()
  }

  /**
   * An epoch, at once here, then for every instance: every token of `userId` (undefined: of everybody) issued
   * before `at` is refused. Retried; kept for the next reconnect on failure.
   */
  async publishEpoch (userId: string | undefined, at: number): Promise<void> {
    this.rememberEpoch(userId, at)
    this.pendingEpochs.push({ userId, at, until: at + (userId === undefined ? this.everyoneKeepMs : this.windowMs) })
    await this.flushPending()
  }

  private async flushPending (): Promise<void> {
    if (this.pending.size === 0 && this.pendingEpochs.length === 0) return
    const entries: RevocationEntry[] = [...this.pending].map(([sessionId, until]) => ({ sessionId, until }))
    const epochs = [...this.pendingEpochs]
    let lastErr: unknown
    for (let attempt = 0; attempt < PUBLISH_ATTEMPTS; attempt++) {
      if (attempt > 0) await new Promise(resolve => setTimeout(resolve, 100 * attempt))
      try {
        if (entries.length > 0) {
          await this.store.markRevoked(entries, Date.now())
          for (const e of entries) if (this.pending.get(e.sessionId) === e.until) this.pending.delete(e.sessionId)
          entries.length = 0
        }
        for (const e of epochs) {
          await this.store.markEpoch(e, Date.now())
          const i = this.pendingEpochs.indexOf(e)
          if (i >= 0) this.pendingEpochs.splice(i, 1)
        }
        return
      } catch (err) {
        lastErr = err
      }
    }
    throw lastErr
  }

  close (): void {
    this.closed = true
    this.listeners.clear()
    this.epochListeners.clear()
    this.provenAt = Number.NEGATIVE_INFINITY
    clearInterval(this.timer)
  }
}
