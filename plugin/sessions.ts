// The session operations behind the decorators, the routes and the hook: issue, refresh (rotation,
// grace, reuse), renew (a new refresh token while the access token is valid), verify, revoke, list.
import type { FastifyBaseLogger } from 'fastify'
import {
  DpopInvalidError, isTokengateError, RefreshExpiredError, RefreshInvalidError, RefreshReusedError, StoreUnavailableError, TokenExpiredError,
  TokenInvalidError, TokenMissingError, TokenRevokedError
} from './errors.js'
import type { AuditHook, AuditMeta, RequestMeta, ResolvedOptions, UserInfo } from './options.js'
import type { Revocations } from './revocation.js'
import { RedisStore, type SessionRecord, type SessionStore, type SessionTimes } from './store/index.js'
import { connectionProblem } from './store/redis-address.js'
import { hashRefreshId, issuedAtMs, newId, RESERVED_CLAIMS, type AccessPayload, type RefreshParts, type Tokens } from './tokens.js'

export interface TokenPair {
  accessToken: string
  refreshToken: string
  /** 'DPoP' when the session is bound to a DPoP key (use `Authorization: DPoP <token>` with a proof). */
  tokenType: 'Bearer' | 'DPoP'
  /** Seconds until the access token expires. */
  expiresIn: number
  /** Seconds until the refresh token expires. */
  refreshExpiresIn: number
  sessionId: string
}

/** A user's own claims; augment it to type `request.auth.claims`. */
export interface TokengateClaims { [claim: string]: unknown }

export interface AuthInfo {
  userId: string
  sessionId: string
  roles: readonly string[]
  claims: Readonly<TokengateClaims>
  /** The access token this request was authenticated with (a fresh one after a refresh). */
  token: string
  /** The DPoP key thumbprint (cnf.jkt) a bound token is confirmed by; absent on Bearer tokens. */
  jkt?: string
  /** When the user last authenticated in this session (seconds since the epoch: the token's auth_time). */
  authTime: number
  /** The authentication context class and methods of that authentication (the token's acr and amr), when known. */
  acr?: string
  amr?: readonly string[]
}

export interface SessionInfo {
  id: string
  createdAt: string
  lastUsedAt: string
  expiresAt: string
  ip: string | null
  userAgent: string | null
  current?: boolean
}

type PairRecord = Pick<SessionRecord, 'roles' | 'claims' | 'createdAt' | 'authTime' | 'jkt' | 'acr' | 'amr'>

/** A verified access token, remembered until its exp: its identity and when it was issued (ms). */
export interface Verified { info: AuthInfo, until: number, issuedAt: number }

const MAX_USER_AGENT = 256
/** Verified access tokens remembered (oldest dropped first). */
const VERIFIED_MAX = 10_000

/**
 * The epoch of a revokeAll or revokeEveryone made now: the next millisecond. A token issued in this millisecond,
 * before the call, is refused (issued before the epoch), even on a clock that did not move since.
 */
const epochNow = (): number => Date.now() + 1

/**
 * When a session starts or a token is issued: now, but never before the latest epoch this instance knows of
 * (at most a millisecond ahead, when the epoch was set in this one), so a token issued after a revokeAll or
 * revokeEveryone is never refused by it, whatever the clock's resolution.
 */
const issueTime = (notBefore: number): number => Math.max(Date.now(), notBefore)

export class Sessions {
  private readonly verified = new Map<string, Verified>()

  constructor (
    private readonly opts: ResolvedOptions,
    readonly tokens: Tokens,
    readonly store: SessionStore,
    readonly revocations: Revocations,
    private readonly log: FastifyBaseLogger,
    /** Whether the store was passed in by the user (its errors are then the user's own, not a 503). */
    private readonly userStore = false
  ) {}

  /** The times a store operation needs; sessions started before `notBefore` (the user's latest epoch) are gone. */
  private times (now: number, notBefore: number): SessionTimes {
    return {
      now,
      refreshTtlMs: this.opts.refreshTtlMs,
      maxSessionAgeMs: this.opts.maxSessionAgeMs,
      extraMs: this.opts.accessTtlMs + this.opts.clockToleranceMs,
      notBefore
    }
  }

  /**
   * The user's latest epoch (theirs or everybody's): from memory while the revocation feed is trusted, else
   * from the store too (an instance cut off from the feed must not let a session older than an epoch it missed
   * refresh into a new one). A store failure there is the caller's store failure.
   */
  private async notBefore (userId: string, what: string): Promise<number> {
    const known = this.revocations.notBefore(userId)
    if (this.revocations.up) return known
    return Math.max(known, await this.stored(what, async () => await this.store.epochOf(userId)))
  }

  /**
   * A store call failed: logged with its stack; the error to answer with is 503 TOKENGATE_STORE_UNAVAILABLE
   * for tokengate's own stores, and a store passed in keeps its own error (its statusCode, else 500).
   */
  private storeFailure (err: unknown, what: string): Error {
    // tokengate's own Redis store: a connection failure in our words (where, not ioredis's stream state).
    const problem = this.store instanceof RedisStore ? connectionProblem(this.store.client, err) : undefined
    if (problem !== undefined) this.log.error(`tokengate: ${problem}; ${what} answered 503 TOKENGATE_STORE_UNAVAILABLE`)
    else this.log.error({ err }, `tokengate: session store failed during ${what}`)
    if (this.userStore && err instanceof Error) return err
    return new StoreUnavailableError()
  }

  private async stored<T> (what: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call()
    } catch (err) {
      throw this.storeFailure(err, what)
    }
  }

  /** Runs a user callback (verifyCredentials, refreshClaims): its error is logged with its stack and rethrown as it is. */
  async userCallback<T> (name: string, call: () => T | Promise<T>): Promise<T> {
    try {
      return await call()
    } catch (err) {
      // tokengate's own errors thrown from a callback (the gateway's rate limits) are expected outcomes.
      if (!isTokengateError(err)) this.log.error({ err }, `tokengate: ${name} failed`)
      throw err
    }
  }

  private async audit (hook: AuditHook | undefined, name: string, userId: string, sessionId: string, meta: AuditMeta): Promise<void> {
    if (hook === undefined) return
    try {
      await hook(userId, sessionId, meta)
    } catch (err) {
      this.log.error({ err }, `tokengate: ${name} hook failed`)
    }
  }

  private pair (userId: string, sessionId: string, record: PairRecord, refreshToken: string, refreshExpiresAt: number, now: number): TokenPair {
    return this.pairWithPayload(userId, sessionId, record, refreshToken, refreshExpiresAt, now).pair
  }

  /** A new pair, and the access token's payload (what verifying it would give). */
  private pairWithPayload (userId: string, sessionId: string, record: PairRecord, refreshToken: string, refreshExpiresAt: number, now: number): { pair: TokenPair, payload: AccessPayload } {
    const access = this.tokens.signAccess({ sub: userId, roles: record.roles, claims: record.claims, acr: record.acr, amr: record.amr }, sessionId, record.createdAt, record.authTime, now, record.jkt)
    return {
      pair: {
        accessToken: access.token,
        refreshToken,
        tokenType: record.jkt === undefined ? 'Bearer' : 'DPoP',
        expiresIn: access.expiresIn,
        refreshExpiresIn: Math.max(0, Math.round((refreshExpiresAt - now) / 1000)),
        sessionId
      },
      payload: access.payload
    }
  }

  /**
   * Starts a session; `jkt` binds it to the DPoP key a proof of the login request showed; `providerSessionId`
   * is the OpenID provider's session (`sid`) it was started from (gateway single sign-on).
   */
  async issue (user: UserInfo, meta: RequestMeta = {}, jkt?: string, providerSessionId?: string): Promise<TokenPair> {
    const { acr, amr } = checkUser(user)
    const nb = await this.notBefore(user.sub, 'issue')
    const now = issueTime(nb)
    const sessionId = newId()
    const refreshId = newId()
    const refreshExpiresAt = now + this.opts.refreshTtlMs
    const roles = user.roles ?? []
    const claims = ownClaims(user.claims)
    const evicted = await this.stored('issue', async () => await this.store.create({
      userId: user.sub,
      sessionId,
      refreshHash: hashRefreshId(refreshId),
      refreshExpiresAt,
      createdAt: now,
      ip: meta.ip,
      userAgent: meta.userAgent?.slice(0, MAX_USER_AGENT),
      roles,
      claims,
      ...(jkt !== undefined ? { jkt } : {}),
      ...(acr !== undefined ? { acr } : {}),
      ...(amr !== undefined ? { amr } : {}),
      ...(providerSessionId !== undefined ? { providerSessionId } : {})
    }, this.times(now, nb), { maxSessions: this.opts.maxSessionsPerUser }))
    const refreshToken = this.tokens.makeRefresh({ userId: user.sub, sessionId, refreshId, expiresAt: refreshExpiresAt })
    await this.audit(this.opts.onIssue, 'onIssue', user.sub, sessionId, meta)
    if (evicted.length > 0) {
      // maxSessionsPerUser: the least recently used sessions went in the same script; their access tokens die now.
      await this.publish(evicted, user.sub)
      for (const id of evicted) await this.audit(this.opts.onRevoke, 'onRevoke', user.sub, id, { ...meta, reason: 'limit' })
    }
    return this.pair(user.sub, sessionId, { roles, claims, createdAt: now, authTime: now, jkt, acr, amr }, refreshToken, refreshExpiresAt, now)
  }

  /**
   * Re-authentication (RFC 9470 step-up): a login made with a valid access token of a live session of the same
   * user gives THAT session a new authentication (time, acr, amr, roles, claims) and a rotated refresh token
   * whose predecessor counts as the previous one (the grace window). `jkt` is the DPoP key the login proved
   * (a bound session needs it). Resolves to null when the session cannot be re-authenticated (gone, bound to
   * another key, a store without reauthenticate(), or rotateRefreshTokens off: its refresh token must stay the
   * same, and with no grace window the others' copy would read as reuse): the caller then starts a new
   * session, as any login does.
   */
  async reauthenticate (auth: AuthInfo, user: UserInfo, meta: RequestMeta = {}, jkt?: string): Promise<TokenPair | null> {
    const { acr, amr } = checkUser(user)
    const store = this.store
    if (user.sub !== auth.userId || store.reauthenticate === undefined || !this.opts.rotateRefreshTokens) return null
    const reauthenticate = store.reauthenticate.bind(store)
    const { userId, sessionId } = auth
    const nb = await this.notBefore(userId, 'reauthenticate')
    const now = issueTime(nb)
    const roles = user.roles ?? []
    const claims = ownClaims(user.claims)
    const r = await this.stored('reauthenticate', async () => await reauthenticate({
      ...this.times(now, nb),
      userId,
      sessionId,
      successorOf: (current) => hashRefreshId(this.tokens.reauthSuccessorId(sessionId, current)),
      roles,
      claims,
      ...(acr !== undefined ? { acr } : {}),
      ...(amr !== undefined ? { amr } : {}),
      ...(jkt !== undefined ? { jkt } : {})
    }))
    if (r.status !== 'ok') return null
    // The token a refresh of the previous one within the grace window also gets (same id, parent and expiry).
    const refreshToken = this.tokens.makeRefresh({
      userId, sessionId, refreshId: this.tokens.reauthSuccessorId(sessionId, r.previousHash), parentHash: r.previousHash, expiresAt: r.record.refreshExpiresAt
    })
    await this.audit(this.opts.onIssue, 'onIssue', userId, sessionId, { ...meta, reason: 'reauthenticate' })
    return this.pair(userId, sessionId, r.record, refreshToken, r.record.refreshExpiresAt, now)
  }

  /** Checks a refresh token without the store: format, MAC and expiry. */
  checkRefresh (refreshToken: unknown, now = Date.now()): RefreshParts & { keyIndex: number } {
    const parts = typeof refreshToken === 'string' ? this.tokens.parseRefresh(refreshToken) : null
    if (parts === null) throw new RefreshInvalidError()
    if (parts.expiresAt <= now) throw new RefreshExpiredError()
    return parts
  }

  /** A refresh; `jkt` is the DPoP key the request proved (a bound session needs it; an unbound one gets bound). */
  /**
   * A refresh; `jkt` is the DPoP key the request proved (a bound session needs it; an unbound one gets bound).
   * `checked`: the token's parts when the caller has already checked it (its MAC is not checked twice).
   */
  async refresh (refreshToken: string, meta: RequestMeta = {}, jkt?: string, checked?: RefreshParts & { keyIndex: number }): Promise<TokenPair> {
    return (await this.refreshWithPayload(refreshToken, meta, jkt, checked)).pair
  }

  private async refreshWithPayload (refreshToken: string, meta: RequestMeta, jkt: string | undefined, checked: (RefreshParts & { keyIndex: number }) | undefined): Promise<{ pair: TokenPair, payload: AccessPayload }> {
    const now = Date.now()
    const parts = checked ?? this.checkRefresh(refreshToken, now)
    // Revoked here (by this instance or the feed): refused without asking the store, which may have lost the
    // deletion in a failover.
    if (this.revocations.knownRevoked(parts.sessionId)) throw new RefreshInvalidError()
    const rotate = this.opts.rotateRefreshTokens
    let successorId = rotate ? this.tokens.successorId(parts.sessionId, parts.refreshId, parts.keyIndex) : parts.refreshId
    let fresh: Pick<UserInfo, 'roles' | 'claims'> | null | undefined
    const refreshClaims = this.opts.refreshClaims
    if (refreshClaims !== undefined) fresh = await this.userCallback('refreshClaims', () => refreshClaims(parts.userId, parts.sessionId))
    const presentedHash = hashRefreshId(parts.refreshId)
    const nb = this.revocations.up ? this.revocations.notBefore(parts.userId) : await this.notBefore(parts.userId, 'refresh')
    const rotateInput = {
      ...this.times(now, nb),
      userId: parts.userId,
      sessionId: parts.sessionId,
      presentedHash,
      successorHash: hashRefreshId(successorId),
      parentHash: parts.parentHash,
      rotate,
      graceMs: this.opts.reuseGraceMs,
      roles: fresh?.roles,
      claims: fresh?.claims === undefined ? undefined : ownClaims(fresh.claims),
      jkt,
      reportSuccessorMismatch: rotate
    }
    let r = await this.stored('refresh', () => this.store.rotate(rotateInput))
    if (r.status === 'successor') {
      // The previous token of a session re-authenticated within the grace window: its successor is the one the
      // re-authentication derived from this token's hash (the login's answer got the same token).
      successorId = this.tokens.reauthSuccessorId(parts.sessionId, presentedHash)
      const again = { ...rotateInput, successorHash: hashRefreshId(successorId), reportSuccessorMismatch: false }
      r = await this.stored('refresh', () => this.store.rotate(again))
    }
    if (r.status === 'missing' || r.status === 'successor') throw new RefreshInvalidError()
    if (r.status === 'key') throw new DpopInvalidError(jkt === undefined ? 'the session is bound to a DPoP key: a proof is required' : 'the session is bound to another DPoP key')
    if (r.status === 'reused') {
      const auditMeta = { ...meta, reason: 'reuse' }
      await this.audit(this.opts.onReuseDetected, 'onReuseDetected', parts.userId, parts.sessionId, auditMeta)
      try {
        await this.revocations.publish([parts.sessionId], parts.userId)
      } catch (err) {
        this.log.error({ err }, 'tokengate: publishing a revocation failed; it is retried when the store is back')
      }
      await this.audit(this.opts.onRevoke, 'onRevoke', parts.userId, parts.sessionId, auditMeta)
      throw new RefreshReusedError()
    }
    if (r.ahead === true) this.caughtUp(parts)
    const newRefresh = rotate
      ? this.tokens.makeRefresh({ userId: parts.userId, sessionId: parts.sessionId, refreshId: successorId, parentHash: presentedHash, expiresAt: r.record.refreshExpiresAt })
      : refreshToken
    if (this.opts.onRefresh !== undefined) await this.audit(this.opts.onRefresh, 'onRefresh', parts.userId, parts.sessionId, meta)
    return this.pairWithPayload(parts.userId, parts.sessionId, r.record, newRefresh, r.record.refreshExpiresAt, Math.max(now, nb))
  }

  /**
   * Renewal: the access token is valid but the refresh token expired: a new refresh token for the
   * same session, unless revoked, not the current refresh id, or past createdAt + maxSessionAge.
   */
  async renew (parts: RefreshParts & { keyIndex: number }, jkt?: string): Promise<{ refreshToken: string, refreshExpiresIn: number } | null> {
    const now = Date.now()
    const successorId = this.tokens.successorId(parts.sessionId, parts.refreshId, parts.keyIndex)
    const presentedHash = hashRefreshId(parts.refreshId)
    const nb = await this.notBefore(parts.userId, 'renew')
    const r = await this.stored('renew', async () => await this.store.renew({
      ...this.times(now, nb),
      userId: parts.userId,
      sessionId: parts.sessionId,
      presentedHash,
      successorHash: hashRefreshId(successorId),
      parentHash: parts.parentHash,
      graceMs: this.opts.reuseGraceMs,
      jkt
    }))
    if (r.status !== 'ok') return null
    if (r.ahead === true) this.caughtUp(parts)
    return {
      refreshToken: this.tokens.makeRefresh({ userId: parts.userId, sessionId: parts.sessionId, refreshId: successorId, parentHash: presentedHash, expiresAt: r.record.refreshExpiresAt }),
      refreshExpiresIn: Math.max(0, Math.round((r.record.refreshExpiresAt - now) / 1000))
    }
  }

  /** DPoP replay memory in the store (a store failure is a 503, or a store passed in keeps its error). */
  async claimProof (id: string, ttlMs: number): Promise<boolean> {
    return await this.stored('DPoP replay check', async () => await this.store.claimProof(id, ttlMs))
  }

  /** A token one rotation ahead of its record was accepted: the store had lost a rotation (a failover). */
  private caughtUp (parts: RefreshParts): void {
    this.log.info({ sessionId: parts.sessionId }, 'tokengate: a refresh token one rotation ahead of its session was accepted (the store had lost a rotation); the session caught up')
  }

  /** The AuthInfo of a verified payload, frozen (it is shared by every request with that token). */
  private authInfo (payload: AccessPayload, token: string): AuthInfo {
    const claims: Record<string, unknown> = {}
    for (const k in payload) if (!RESERVED_CLAIMS.has(k)) claims[k] = payload[k]
    return Object.freeze({
      userId: payload.sub,
      sessionId: payload.sid,
      roles: Object.freeze(Array.isArray(payload.roles) ? [...payload.roles] : []),
      claims: Object.freeze(claims),
      token,
      ...(typeof payload.cnf?.jkt === 'string' ? { jkt: payload.cnf.jkt } : {}),
      // (A token without auth_time reads as authenticated at the epoch: no maxAge policy admits it.)
      authTime: typeof payload.auth_time === 'number' ? payload.auth_time : 0,
      ...(typeof payload.acr === 'string' ? { acr: payload.acr } : {}),
      ...(Array.isArray(payload.amr) ? { amr: Object.freeze(payload.amr.filter((m): m is string => typeof m === 'string')) } : {})
    })
  }

  /**
   * Verifies an access token (revocation not included). Verified tokens are remembered by their exact
   * string until they expire, so a token seen before costs one Map lookup: no hashing, no JSON, no
   * AuthInfo rebuilt. Misses go to @fastify/jwt (fast-jwt, its own cache on).
   */
  checkAccess (token: string): Verified | 'expired' | 'invalid' {
    const hit = this.verified.get(token)
    if (hit !== undefined) {
      if (hit.until > Date.now()) return hit
      this.verified.delete(token)
    }
    const r = this.tokens.verifyAccess(token)
    if (!r.ok) return r.expired ? 'expired' : 'invalid'
    return this.remember(token, r.payload)
  }

  /** Remembers a verified (or just signed) access token until its exp. */
  private remember (token: string, payload: AccessPayload): Verified {
    const entry = { info: this.authInfo(payload, token), until: payload.exp * 1000 + this.opts.clockToleranceMs, issuedAt: issuedAtMs(payload) }
    if (this.verified.size >= VERIFIED_MAX) this.verified.delete(this.verified.keys().next().value as string)
    this.verified.set(token, entry)
    return entry
  }

  /**
   * The one access check (the token, then its session's revocation and its user's epochs) behind verify(),
   * introspection and the hook: synchronous while the revocation feed is trusted; a Promise while the
   * store must be asked.
   */
  authorize (token: string): AuthInfo | Error | Promise<AuthInfo | Error> {
    const checked = this.checkAccess(token)
    if (checked === 'expired') return new TokenExpiredError()
    if (checked === 'invalid') return new TokenInvalidError()
    return this.unlessRevoked(checked)
  }

  /**
   * The revocation half of `authorize`, for an access token already checked: its session revoked, or the token
   * issued before its user's latest epoch. Synchronous while the feed is trusted.
   */
  unlessRevoked (checked: Verified): AuthInfo | Error | Promise<AuthInfo | Error> {
    const auth = checked.info
    const revoked = this.revocations.isRevoked(auth.sessionId, auth.userId, checked.issuedAt)
    if (revoked === false) return auth
    if (revoked === true) return new TokenRevokedError()
    return revoked.then(
      (yes) => yes ? new TokenRevokedError() : auth,
      (err) => this.storeFailure(err, 'revocation check (feed down)')
    )
  }

  async verify (accessToken: string): Promise<AuthInfo> {
    if (typeof accessToken !== 'string' || accessToken.length === 0) throw new TokenMissingError()
    const checked = await this.authorize(accessToken)
    if (checked instanceof Error) throw checked
    return checked
  }

  /** A refresh for the hook: the new pair, and the request's identity from its fresh access token. */
  /**
   * A refresh for the hook: the new pair, and the request's identity from its fresh access token, built from
   * the payload just signed (not verified again) and remembered like a verified token, for the client's next
   * request.
   */
  async refreshToAuth (refreshToken: string, meta: RequestMeta, jkt?: string, checked?: RefreshParts & { keyIndex: number }): Promise<{ pair: TokenPair, auth: AuthInfo }> {
    const { pair, payload } = await this.refreshWithPayload(refreshToken, meta, jkt, checked)
    return { pair, auth: this.remember(pair.accessToken, payload).info }
  }

  async revokeSession (userId: string, sessionId: string, meta: AuditMeta = { reason: 'api' }): Promise<boolean> {
    const gone = await this.stored('revoke', async () => await this.store.revoke(userId, [sessionId], this.revocations.notBefore(userId)))
    if (gone.length === 0) return false
    await this.publish(gone, userId)
    await this.audit(this.opts.onRevoke, 'onRevoke', userId, sessionId, meta)
    return true
  }

  /**
   * Every session of a user: their records go, and one epoch for the user reaches every instance (no token of
   * theirs issued before it is accepted), instead of one revocation per session. This instance's listeners
   * hear of each session too.
   */
  async revokeAll (userId: string, meta: AuditMeta = { reason: 'api' }): Promise<number> {
    const gone = await this.stored('revokeAll', async () => await this.store.revokeAll(userId, this.revocations.notBefore(userId)))
    await this.stored('revocation publish', async () => await this.revocations.publishEpoch(userId, epochNow()))
    for (const id of gone) {
      this.revocations.announce(id, userId)
      await this.audit(this.opts.onRevoke, 'onRevoke', userId, id, meta)
    }
    return gone.length
  }

  /**
   * Every session of every user: one epoch for everybody reaches every instance; tokens issued before it are
   * refused, sessions started before it are gone (each store operation drops them as it meets them).
   */
  async revokeEveryone (): Promise<void> {
    await this.stored('revocation publish', async () => await this.revocations.publishEpoch(undefined, epochNow()))
  }

  /** Logout of the session an access token names: revoked even if its record already went. */
  async logout (auth: AuthInfo, meta: AuditMeta): Promise<void> {
    await this.stored('logout', async () => await this.store.revoke(auth.userId, [auth.sessionId]))
    await this.publish([auth.sessionId], auth.userId)
    await this.audit(this.opts.onRevoke, 'onRevoke', auth.userId, auth.sessionId, meta)
  }

  private async publish (sessionIds: string[], userId?: string): Promise<void> {
    await this.stored('revocation publish', async () => await this.revocations.publish(sessionIds, userId))
  }

  /** One live session's record, or undefined. */
  async record (userId: string, sessionId: string): Promise<SessionRecord | undefined> {
    const nb = await this.notBefore(userId, 'list')
    return (await this.stored('list', async () => await this.store.list(userId, Date.now(), nb))).find(r => r.sessionId === sessionId)
  }

  async listSessions (userId: string, currentSessionId?: string): Promise<SessionInfo[]> {
    const nb = await this.notBefore(userId, 'list')
    const records = await this.stored('list', async () => await this.store.list(userId, Date.now(), nb))
    return records.map(r => {
      const info: SessionInfo = {
        id: r.sessionId,
        createdAt: new Date(r.createdAt).toISOString(),
        lastUsedAt: new Date(r.lastUsedAt).toISOString(),
        expiresAt: new Date(r.refreshExpiresAt).toISOString(),
        ip: r.ip ?? null,
        userAgent: r.userAgent ?? null
      }
      if (currentSessionId !== undefined) info.current = r.sessionId === currentSessionId
      return info
    })
  }
}

/**
 * Checks what issue() and a login's verifyCredentials give (a TypeError naming the field otherwise); returns
 * its acr and amr (null reads as none).
 */
function checkUser (user: UserInfo): { acr?: string, amr?: string[] } {
  if (user === null || typeof user !== 'object' || typeof user.sub !== 'string' || user.sub.length === 0) {
    throw new TypeError('tokengate.issue(user): user.sub must be a non-empty string')
  }
  // A sub that is not well-formed Unicode (a lone surrogate) would reach Redis and the feed as another string.
  if (!(user.sub as string & { isWellFormed: () => boolean }).isWellFormed()) throw new TypeError('tokengate.issue(user): user.sub must be well-formed Unicode (no lone surrogate)')
  if (user.roles !== undefined && (!Array.isArray(user.roles) || !user.roles.every(r => typeof r === 'string'))) {
    throw new TypeError('tokengate.issue(user): user.roles must be an array of strings')
  }
  // Roles travel comma-separated (x-user-roles): a role with a comma would read as two.
  const comma = user.roles?.find(r => r.includes(','))
  if (comma !== undefined) throw new TypeError(`tokengate.issue(user): user.roles: a role cannot contain a comma (${JSON.stringify(comma)})`)
  const { acr, amr } = user as { acr?: unknown, amr?: unknown }
  if (acr != null && (typeof acr !== 'string' || acr === '')) throw new TypeError('tokengate.issue(user): user.acr must be a non-empty string')
  if (amr != null && (!Array.isArray(amr) || !amr.every(m => typeof m === 'string' && m !== ''))) {
    throw new TypeError('tokengate.issue(user): user.amr must be an array of non-empty strings')
  }
  return { ...(acr != null ? { acr: acr as string } : {}), ...(amr != null ? { amr: [...amr as string[]] } : {}) }
}

function ownClaims (claims: Record<string, unknown> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  if (claims === undefined || claims === null || typeof claims !== 'object') return out
  for (const [k, v] of Object.entries(claims)) if (!RESERVED_CLAIMS.has(k)) out[k] = v
  return out
}
