// Revoked sessions, known to every instance without a Redis round trip per request: each instance
// subscribes to the revocation channel first, then loads the revoked set, and only then counts its
// feed as up. While the feed is down it asks the store per request (and fails closed if that fails).
import type { FastifyBaseLogger } from 'fastify'
import type { RevocationEntry, SessionStore } from './store/index.js'

const PRUNE_MS = 30_000
const PUBLISH_ATTEMPTS = 3

/** Called once per revoked session an instance learns of: its own revocations and the feed's. */
export type RevocationListener = (sessionId: string, userId?: string) => void

export class Revocations {
  private readonly revoked = new Map<string, number>()
  private readonly pending = new Map<string, number>()
  private readonly listeners = new Set<RevocationListener>()
  private generation = 0
  private loading?: Promise<void>
  private timer?: NodeJS.Timeout
  private closed = false
  /** True while the pub/sub feed is subscribed and the revoked set loaded. */
  up = false

  constructor (
    private readonly store: SessionStore,
    /** access TTL + clock tolerance: how long a revocation must be remembered. */
    private readonly windowMs: number,
    private readonly log: FastifyBaseLogger
  ) {}

  async start (): Promise<void> {
    this.timer = setInterval(() => this.prune(Date.now()), PRUNE_MS).unref()
    await this.store.subscribe({
      onRevoked: (sessionId) => { this.remember(sessionId, Date.now() + this.windowMs) },
      onState: (up) => {
        this.generation++
        if (!up) {
          if (this.up) this.log.warn('tokengate: revocation feed down; checking revocations in the store per request')
          this.up = false
        } else {
          this.loading = this.load(this.generation)
        }
      }
    })
    // Count the feed as up before the app is ready when Redis answers now.
    await this.loading
  }

  private async load (generation: number): Promise<void> {
    try {
      await this.flushPending()
      const entries = await this.store.loadRevoked(Date.now())
      for (const e of entries) this.remember(e.sessionId, e.until)
      if (generation === this.generation && !this.closed) {
        if (!this.up) this.log.info('tokengate: revocation feed up')
        this.up = true
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

  private announce (sessionId: string, userId: string | undefined): void {
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

  private prune (now: number): void {
    for (const [id, until] of this.revoked) if (until <= now) this.revoked.delete(id)
  }

  /** Whether the session was revoked here (no I/O). */
  knownRevoked (sessionId: string): boolean {
    const until = this.revoked.get(sessionId)
    return until !== undefined && until > Date.now()
  }

  /**
   * Whether a session's access tokens must be refused: synchronous while the feed is up; a store
   * round trip while it is down (rejects when the store is unreachable too).
   */
  isRevoked (sessionId: string): boolean | Promise<boolean> {
    if (this.knownRevoked(sessionId)) return true
    if (this.up) return false
    return this.store.isRevoked(sessionId, Date.now())
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

  private async flushPending (): Promise<void> {
    if (this.pending.size === 0) return
    const entries: RevocationEntry[] = [...this.pending].map(([sessionId, until]) => ({ sessionId, until }))
    let lastErr: unknown
    for (let attempt = 0; attempt < PUBLISH_ATTEMPTS; attempt++) {
      if (attempt > 0) await new Promise(resolve => setTimeout(resolve, 100 * attempt))
      try {
        await this.store.markRevoked(entries, Date.now())
        for (const e of entries) if (this.pending.get(e.sessionId) === e.until) this.pending.delete(e.sessionId)
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
    this.up = false
    clearInterval(this.timer)
  }
}
