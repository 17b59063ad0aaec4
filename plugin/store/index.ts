// The SessionStore interface: what tokengate needs from a place that keeps refresh sessions.
// Stores know nothing of Fastify or of tokens: they keep records, compare hashes and expire things.

export interface SessionRecord {
  sessionId: string
  /** Hash of the current refresh id (never the id or the token). */
  refreshHash: string
  /** When the current refresh token expires (ms since epoch). */
  refreshExpiresAt: number
  /** When the session started (ms): its maxSessionAge counts from here. */
  createdAt: number
  lastUsedAt: number
  /** When the record itself goes (ms): refresh expiry + access TTL + clock tolerance. */
  expiresAt: number
  ip?: string
  userAgent?: string
  roles: string[]
  claims: Record<string, unknown>
  /** The DPoP key thumbprint the session is bound to (RFC 7638), if any. */
  jkt?: string
  /** When the user last authenticated in this session (ms): the access token's auth_time. */
  authTime: number
  /** The authentication context class and methods of that authentication (RFC 9470), if known. */
  acr?: string
  amr?: string[]
  /** The OpenID provider's session id (`sid`) the session was started from, if any. */
  providerSessionId?: string
}

export interface NewSession {
  userId: string
  sessionId: string
  refreshHash: string
  refreshExpiresAt: number
  createdAt: number
  ip?: string
  userAgent?: string
  roles: string[]
  claims: Record<string, unknown>
  jkt?: string
  /** When the user authenticated (ms); default createdAt. */
  authTime?: number
  acr?: string
  amr?: string[]
  providerSessionId?: string
}

export interface CreateOptions {
  /** At most this many live sessions per user: a creation beyond it evicts the least recently used ones. */
  maxSessions?: number
}

/** Times every store operation needs to compute expiries itself, atomically. */
export interface SessionTimes {
  now: number
  refreshTtlMs: number
  maxSessionAgeMs: number
  /** access TTL + clock tolerance: how long a record outlives its refresh expiry. */
  extraMs: number
  /** Sessions started before this time (ms) are gone (revokeEveryone); default 0. */
  notBefore?: number
}

export interface RotateInput extends SessionTimes {
  userId: string
  sessionId: string
  presentedHash: string
  /** Hash of the successor refresh id (derived from the presented one). Equal to presentedHash when not rotating. */
  successorHash: string
  /**
   * Hash of the presented refresh id's parent, when the token says: a token one rotation ahead of the record
   * (the record lost a rotation it had acknowledged, in a failover) is accepted, and the record catches up.
   */
  parentHash?: string
  rotate: boolean
  graceMs: number
  /** New roles/claims from refreshClaims(), stored with the rotation. */
  roles?: string[]
  claims?: Record<string, unknown>
  /**
   * The DPoP key thumbprint the request proved, if any: a session bound to another key (or to a key the
   * request did not prove) is 'key' and not rotated; an unbound session proved with a key is bound to it.
   */
  jkt?: string
  /**
   * When the presented hash is the previous one, within graceMs, but the current hash is not successorHash:
   * answer 'successor' (nothing changed) instead of reuse, so the caller can try again with the successor a
   * re-authentication derives (see `reauthenticate`). A store that ignores this answers 'reused', as before.
   */
  reportSuccessorMismatch?: boolean
}

export type RenewInput = Omit<RotateInput, 'rotate' | 'roles' | 'claims' | 'reportSuccessorMismatch'>

/** A re-authentication of a live session (a login made with its access token): see SessionStore.reauthenticate. */
export interface ReauthInput extends SessionTimes {
  userId: string
  sessionId: string
  /**
   * The hash of the successor of a current refresh hash (derived under a server key): the store reads the
   * session's current hash, and, atomically with the check that it is still current, makes it the previous
   * one (its rotation time now) and this successor the current one.
   */
  successorOf: (currentHash: string) => string
  /** The new authentication: its time is `now`; roles, claims, acr and amr replace the session's. */
  roles: string[]
  claims: Record<string, unknown>
  acr?: string
  amr?: string[]
  /** The DPoP key the login proved, if any: a session bound to another key is 'key'; an unbound one proved with a key is bound to it. */
  jkt?: string
}

export type ReauthResult =
  /** `previousHash`: the hash that was current and is now the previous one (its successor is the record's). */
  | { status: 'ok', previousHash: string, record: SessionRecord }
  | { status: 'missing' }
  | { status: 'key' }
  /** createdAt + maxSessionAge has passed: nothing changed. */
  | { status: 'capped' }
  /** The current hash kept changing under concurrent refreshes: nothing changed. */
  | { status: 'race' }

export type RotateResult =
  /** `ahead`: the presented token was one rotation ahead of the record, which caught up. */
  | { status: 'ok', grace: boolean, ahead?: boolean, record: SessionRecord }
  /** No such session: expired, revoked or never issued. */
  | { status: 'missing' }
  /** A live session's refresh id that is neither current nor previous-in-grace: the session was deleted. */
  | { status: 'reused' }
  /** The session is bound to a DPoP key the request did not prove: nothing changed. */
  | { status: 'key' }
  /** (reportSuccessorMismatch) The previous hash within the grace window, with another successor: nothing changed. */
  | { status: 'successor' }

export type RenewResult =
  | { status: 'ok', grace: boolean, ahead?: boolean, record: SessionRecord }
  | { status: 'missing' }
  /** The presented refresh id is not the session's current one. */
  | { status: 'stale' }
  /** createdAt + maxSessionAge has passed. */
  | { status: 'capped' }
  | { status: 'key' }

export interface RevocationEntry {
  sessionId: string
  /** When the entry may be forgotten (ms): revocation time + access TTL + clock tolerance. */
  until: number
}

/** A "not before" epoch: every token of the user (of everybody when userId is undefined) issued before `at` is refused. */
export interface EpochEntry {
  userId?: string
  /** The epoch (ms). */
  at: number
  /** When the entry may be forgotten (ms): no token issued before `at` can still be accepted by then. */
  until: number
}

export interface RevocationFeedHandlers {
  /** A session id revoked by any instance (including this one). */
  onRevoked: (sessionId: string) => void
  /** An epoch set by any instance (including this one). */
  onEpoch: (userId: string | undefined, at: number) => void
  /** The feed's connection went up (subscribed) or down. */
  onState: (up: boolean) => void
  /**
   * The feed proved that every revocation published before `at` (ms) has reached it (an answered PING sent at
   * `at` on the subscribed connection). A feed that cannot miss a message (in-process) passes Infinity once.
   * Without proofs an instance trusts its memory only for revocationStalenessMs after each load.
   */
  onAlive: (at: number) => void
}

export interface SessionStore {
  /** Creates a session; resolves to the ids of sessions it evicted (maxSessions, least recently used first). */
  create: (session: NewSession, times: SessionTimes, options?: CreateOptions) => Promise<string[]>
  /** Rotation, grace window and reuse detection in one atomic step. */
  rotate: (input: RotateInput) => Promise<RotateResult>
  /** Renewal: a new refresh id for a session whose refresh token expired while its access token is valid. */
  renew: (input: RenewInput) => Promise<RenewResult>
  /**
   * Re-authentication (RFC 9470 step-up): the session gets a new authentication time, acr, amr, roles and
   * claims and a rotated refresh hash, its predecessor kept as the previous one (the grace window). Optional:
   * without it a login made with an access token starts a new session, as any login does.
   */
  reauthenticate?: (input: ReauthInput) => Promise<ReauthResult>
  /** Deletes the given sessions of a user; returns the ids that were live (started at or after `notBefore`). */
  revoke: (userId: string, sessionIds: string[], notBefore?: number) => Promise<string[]>
  /** Deletes every session of a user; returns the ids that were live. */
  revokeAll: (userId: string, notBefore?: number) => Promise<string[]>
  /** Live sessions of a user (started at or after `notBefore`), newest first. */
  list: (userId: string, now: number, notBefore?: number) => Promise<SessionRecord[]>
  /** Records revocations for every instance (sorted set + pub/sub). Idempotent. */
  markRevoked: (entries: RevocationEntry[], now: number) => Promise<void>
  /** Revocations still in force. */
  loadRevoked: (now: number) => Promise<RevocationEntry[]>
  /** Per-request check, used only while the feed is down. */
  isRevoked: (sessionId: string, now: number) => Promise<boolean>
  /** Records an epoch for every instance (kept until `until`) and tells the feed. Idempotent; a later epoch wins. */
  markEpoch: (entry: EpochEntry, now: number) => Promise<void>
  /** Epochs still in force. */
  loadEpochs: (now: number) => Promise<EpochEntry[]>
  /** The latest epoch that applies to a user (theirs or everybody's; 0 for none): per request, while the feed is down. */
  epochOf: (userId: string) => Promise<number>
  /** Subscribes to revocations; resolves once subscribed. */
  subscribe: (handlers: RevocationFeedHandlers) => Promise<void>
  /** DPoP replay memory: true the first time a proof id is claimed within `ttlMs`, shared by every instance. */
  claimProof: (id: string, ttlMs: number) => Promise<boolean>
  /** Whether the store answers now (for readiness checks). */
  ping: () => Promise<boolean>
  close: () => Promise<void>
}

export { MemoryStore } from './memory.js'
export { RedisStore, type RedisStoreOptions } from './redis.js'
export type { RedisClient } from './connections.js'
