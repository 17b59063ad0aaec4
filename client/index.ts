// tokengate/client: the browser (and Node ≥ 20) half of tokengate. Dependency-free: it uses web-platform
// globals only (fetch, crypto.subtle, BroadcastChannel, localStorage/sessionStorage, indexedDB, document.cookie)
// and does without the ones a platform lacks.
//
// It relies on the server's refresh hook: every request carries both tokens, and whatever new ones a response
// brings are kept; it never calls /auth/refresh itself. Tabs share tokens through the storage and take no lock:
// each request reads the newest tokens right before it goes, and a response's tokens are written only while the
// storage still holds the ones that request sent (so an old answer never overwrites a newer rotation, nor brings
// back a session another tab logged out). Concurrent refreshes of one refresh token are safe because the server
// gives them all the same successor within its grace window. A 401 that no refresh mended signs the client out
// (a step-up challenge, RFC 9470, does not: a login while signed in re-authenticates the session); the only
// automatic retry is one, for a DPoP nonce challenge.

/** The server's login answer (README, "API"). Times in seconds. With cookie transport the tokens are in HttpOnly cookies, not here. */
export interface TokenPair {
  accessToken?: string
  refreshToken?: string
  tokenType: 'Bearer' | 'DPoP'
  expiresIn: number
  refreshExpiresIn: number
  sessionId: string
}

/** One session of the user, as GET /auth/sessions lists it (ISO-8601 times). */
export interface SessionInfo {
  id: string
  createdAt: string
  lastUsedAt: string
  expiresAt: string
  ip: string | null
  userAgent: string | null
  current: boolean
}

/** A storage of the client's own: string values; synchronous or asynchronous. */
export interface StorageLike {
  get: (key: string) => string | null | undefined | Promise<string | null | undefined>
  set: (key: string, value: string) => unknown
  remove: (key: string) => unknown
}

export interface ClientOptions {
  /** The server's origin (and path base), e.g. 'https://api.example'; default: the page's origin. */
  baseUrl?: string
  /** Where tokengate's routes live (the plugin's routes.prefix). Default '/auth'. */
  prefix?: string
  /** 'header' (default): tokens in JS, sent as headers. 'cookie': HttpOnly cookies, the client sends x-csrf-token. */
  transport?: 'header' | 'cookie'
  /** Where tokens (or, by cookie, the session's id) are kept: shared by every tab with the same storage. Default 'local'. */
  storage?: 'local' | 'session' | 'memory' | StorageLike
  /** Bind the session to a non-extractable ES256 key (RFC 9449; header transport). Default false. */
  dpop?: boolean
  /** The storage key, BroadcastChannel name and IndexedDB key: clients with the same one are tabs of one session. Default 'tokengate'. */
  key?: string
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch
}

export interface Client {
  /** Whether the client holds a session (as of its last look at the storage). */
  readonly signedIn: boolean
  /** When the current access token expires (ms since the epoch), or null; by cookie, as of the login (the cookies are unreadable). */
  readonly accessExpiresAt: number | null
  /** The current session's id, or null. */
  readonly sessionId: string | null
  /**
   * POST {prefix}/login with these credentials; rejects with an AuthError on a refusal. While signed in it sends
   * the session's access token along: the server re-authenticates that session (same sessionId; step-up).
   */
  login: (credentials: Record<string, unknown>) => Promise<TokenPair>
  /** fetch with the session attached (same origin as baseUrl only); resolves with any status, a 401 included. */
  fetch: (pathOrUrl: string | URL, init?: RequestInit) => Promise<Response>
  /** Called with the new state whenever this client (or another tab) signs in or out; returns an unsubscribe function. */
  onChange: (listener: (signedIn: boolean) => void) => () => void
  sessions: () => Promise<SessionInfo[]>
  /** DELETE {prefix}/sessions/:id (revoking the current one signs this client out). */
  revokeSession: (id: string) => Promise<void>
  /** Revokes this session and signs every tab out (locally even when the server cannot be reached). */
  logout: () => Promise<void>
  /** Revokes every session of the user, and signs every tab out. */
  logoutAll: () => Promise<void>
  /** Stops listening to other tabs. */
  close: () => void
}

/**
 * A refused call of login, sessions, revokeSession, logout or logoutAll: the server's status and error code.
 * For a step-up challenge (code TOKENGATE_STEP_UP_REQUIRED, RFC 9470) also what a new login must achieve:
 * `maxAge` (seconds) and `acrValues` (any one of them). `AuthError.from(response)` reads one from any response.
 */
export class AuthError extends Error {
  /** (Step-up) The authentication must be at most this many seconds old: the challenge's max_age. */
  readonly maxAge?: number
  /** (Step-up) The authentication must be of one of these classes: the challenge's acr_values. */
  readonly acrValues?: string[]
  constructor (message: string, readonly status: number, readonly code?: string, challenge?: string | null) {
    super(message)
    this.name = 'AuthError'
    if (challenge != null && /insufficient_user_authentication/.test(challenge)) {
      const maxAge = /max_age="?(\d+)/.exec(challenge)?.[1]
      const acr = /acr_values="([^"]*)"/.exec(challenge)?.[1]
      if (maxAge !== undefined) this.maxAge = Number(maxAge)
      if (acr !== undefined) this.acrValues = acr.split(' ').filter(Boolean)
    }
  }

  /** The AuthError a response stands for (its body is left unread), or null for a 2xx/3xx one. */
  static async from (res: Response): Promise<AuthError | null> {
    if (res.status < 400) return null
    const data = await res.clone().json().catch(() => ({}))
    return new AuthError(data.message ?? `HTTP ${res.status}`, res.status, data.code, res.headers.get('www-authenticate'))
  }
}

/** What the storage keeps: access and refresh tokens (header transport), token type, session id, access expiry. */
interface Stored { a?: string, r?: string, t: string, s: string, e: number | null }

const g = globalThis as any
const mem = new Map<string, string>()
const memory: StorageLike = { get: k => mem.get(k), set: (k, v) => mem.set(k, v), remove: k => mem.delete(k) }
const keyPairs = new Map<string, Promise<[CryptoKeyPair, JsonWebKey]>>()
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
const enc = (s: string): Uint8Array<ArrayBuffer> => new TextEncoder().encode(s)
const b64 = (b: ArrayBuffer | Uint8Array): string =>
  btoa(String.fromCharCode(...new Uint8Array(b))).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')
const b64json = (v: unknown): string => b64(enc(JSON.stringify(v)))

function webStorage (name: string): StorageLike {
  try {
    const s: Storage = g[name]
    s.getItem('')
    return { get: k => s.getItem(k), set: (k, v) => s.setItem(k, v), remove: k => s.removeItem(k) }
  } catch {
    return memory // Node, or storage the browser refuses (privacy modes)
  }
}

const idb = <T>(r: IDBRequest<T> | IDBOpenDBRequest): Promise<T> =>
  new Promise((resolve, reject) => { r.onsuccess = () => resolve(r.result as T); r.onerror = () => reject(r.error) })

/** The one key pair every tab signs with: kept in IndexedDB (a CryptoKey is structured-cloneable), else in memory. */
async function loadKeyPair (name: string): Promise<[CryptoKeyPair, JsonWebKey]> {
  const make = (): Promise<CryptoKeyPair> => crypto.subtle.generateKey(ALG, false, ['sign', 'verify'])
  let pair: CryptoKeyPair | undefined
  try {
    const open = indexedDB.open('tokengate', 1)
    open.onupgradeneeded = () => open.result.createObjectStore('keys')
    const db = await idb(open) as IDBDatabase
    const store = (mode: IDBTransactionMode): IDBObjectStore => db.transaction('keys', mode).objectStore('keys')
    pair = await idb(store('readonly').get(name))
    if (pair === undefined) {
      const fresh = await make()
      // Readwrite transactions on one store run one at a time: the first tab to put its key wins.
      const rw = store('readwrite')
      pair = await idb(rw.get(name)) ?? fresh
      if (pair === fresh) rw.put(fresh, name)
    }
    db.close()
  } catch {}
  pair ??= await make()
  const { kty, crv, x, y } = await crypto.subtle.exportKey('jwk', pair.publicKey)
  return [pair, { kty, crv, x, y }]
}

/** The claims of a JWT, read without verification; {} when it is not one. */
function claimsOf (jwt: string): { exp?: unknown, sid?: unknown } {
  try {
    return JSON.parse(atob(jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))) ?? {}
  } catch {
    return {}
  }
}

/** The exp (seconds) of a JWT, in ms; null when there is none. */
function expiryOf (jwt: string): number | null {
  const exp = claimsOf(jwt).exp
  return typeof exp === 'number' ? exp * 1000 : null
}

/** Whether a token names this session (an access token's sid; a refresh token's `tgr2.<user>.<session>.…`). */
const ofSession = (token: string, access: boolean, session: string): boolean =>
  (access ? claimsOf(token).sid : token.split('.')[2]) === session

export function createClient (options: ClientOptions = {}): Client {
  const base = (options.baseUrl ?? g.location?.origin ?? '').replace(/\/+$/, '')
  if (!/^https?:\/\//.test(base)) throw new TypeError('tokengate/client: baseUrl must be an http(s) URL')
  const origin = new URL(base).origin
  const auth = base + (options.prefix ?? '/auth')
  const cookie = options.transport === 'cookie'
  const useDpop = options.dpop === true && !cookie // bound tokens travel in the Authorization header only
  const key = options.key ?? 'tokengate'
  const send = options.fetch ?? ((input, init) => fetch(input, init))
  const s = options.storage ?? 'local'
  const store = typeof s === 'object' ? s : s === 'memory' ? memory : webStorage(s === 'session' ? 'sessionStorage' : 'localStorage')
  const listeners = new Set<(signedIn: boolean) => void>()
  let state: Stored | null = null
  let nonce: string | undefined

  function update (next: Stored | null): void {
    const was = state !== null
    state = next
    if (was !== (next !== null)) {
      for (const l of [...listeners]) {
        try { l(next !== null) } catch (err) { queueMicrotask(() => { throw err }) }
      }
    }
  }
  const parse = (v: string | null | undefined): Stored | null => {
    try {
      const o = v == null ? null : JSON.parse(v)
      return typeof o?.s === 'string' ? o : null
    } catch { return null }
  }
  /** The newest state in the storage (what another tab may have written). */
  async function read (): Promise<Stored | null> {
    update(parse(await store.get(key)))
    return state
  }
  async function write (next: Stored): Promise<void> {
    await store.set(key, JSON.stringify(next))
    update(next)
  }
  const bc: BroadcastChannel | undefined = typeof BroadcastChannel === 'function' ? new BroadcastChannel('tokengate:' + key) : undefined
  const sync = (): void => { read().catch(() => {}) }
  const onStorage = (e: StorageEvent): void => { if (e.key === key || e.key === null) sync() }
  ;(bc as any)?.unref?.() // Node: a client alone keeps no process alive
  if (bc !== undefined) bc.onmessage = sync
  g.addEventListener?.('storage', onStorage)
  async function signOut (): Promise<void> {
    await store.remove(key)
    update(null)
    bc?.postMessage(0)
  }

  const initial = store.get(key)
  if (initial instanceof Promise) sync()
  else state = parse(initial)

  async function proof (method: string, url: string, access?: string): Promise<string> {
    let kp = keyPairs.get(key)
    if (kp === undefined) {
      keyPairs.set(key, kp = loadKeyPair(key))
      kp.catch(() => keyPairs.delete(key))
    }
    const [pair, jwk] = await kp
    const u = new URL(url)
    const claims = {
      htm: method,
      htu: u.origin + u.pathname,
      iat: Math.floor(Date.now() / 1000),
      jti: b64(crypto.getRandomValues(new Uint8Array(16))),
      ath: access === undefined ? undefined : b64(await crypto.subtle.digest('SHA-256', enc(access))),
      nonce
    }
    const input = b64json({ typ: 'dpop+jwt', alg: 'ES256', jwk }) + '.' + b64json(claims)
    return input + '.' + b64(await crypto.subtle.sign(ALG, pair.privateKey, enc(input)))
  }

  /**
   * One request to the server: the newest tokens from the storage (when `authed`; a login sends the access token
   * alone, to re-authenticate its session), a DPoP proof and the CSRF header as they apply; one retry for a DPoP
   * nonce challenge. Resolves with the response and what it sent.
   */
  async function call (url: string, init: RequestInit, authed: boolean | 'login', retried?: boolean): Promise<[Response, Stored | null]> {
    const sent = authed !== false ? await read() : null
    const headers = new Headers(init.headers)
    const method = (init.method ?? 'GET').toUpperCase()
    const bound = useDpop && (authed !== true || sent?.t === 'DPoP') // a login, or a DPoP-bound session
    if (sent?.a !== undefined && (sent.r !== undefined || authed === 'login')) {
      headers.set('authorization', `${sent.t === 'DPoP' ? 'DPoP' : 'Bearer'} ${sent.a}`)
      if (authed === true) headers.set('x-refresh-token', sent.r!)
    }
    if (bound) headers.set('dpop', await proof(method, url, sent?.a))
    if (cookie && /^(POST|PUT|PATCH|DELETE)$/.test(method)) {
      const csrf = /(?:^|;\s*)tg_csrf=([^;]*)/.exec(g.document?.cookie ?? '')?.[1]
      if (csrf !== undefined) headers.set('x-csrf-token', decodeURIComponent(csrf))
    }
    const res = await send(url, { ...init, method, headers, ...(cookie ? { credentials: 'include' } : {}) })
    nonce = res.headers.get('dpop-nonce') ?? nonce
    if (bound && !retried && res.headers.has('dpop-nonce') &&
      (res.status === 401 ? /use_dpop_nonce/.test(res.headers.get('www-authenticate') ?? '') : res.status === 400 && (await res.clone().text()).includes('use_dpop_nonce'))) {
      res.body?.cancel().catch(() => {}) // the challenge's body is not needed
      return await call(url, init, authed, true)
    }
    return [res, sent]
  }

  /** Keeps the tokens a response brings, or signs out on a 401 that no refresh mended; only while the storage holds what was sent. */
  async function settle (res: Response, sent: Stored | null): Promise<void> {
    if (sent === null) return
    // Only tokens of this very session are kept: one of another session (planted by whatever answered) is ignored.
    let access = res.headers.get('x-access-token')
    let refresh = res.headers.get('x-refresh-token')
    if ((access !== null && !ofSession(access, true, sent.s)) || (refresh !== null && !ofSession(refresh, false, sent.s))) access = refresh = null
    // A DPoP nonce challenge, or a step-up one (the session is fine, the route wants a newer or stronger login).
    if (res.status === 401 && access === null && refresh === null && /use_dpop_nonce|insufficient_user_authentication/.test(res.headers.get('www-authenticate') ?? '')) return
    const now = await read()
    if (now === null || now.s !== sent.s || now.r !== sent.r) return
    if (res.status === 401 && access === null && refresh === null) await signOut()
    else if (!cookie && (access !== null || refresh !== null)) {
      await write({ ...now, a: access ?? now.a, r: refresh ?? now.r, e: access === null ? now.e : expiryOf(access) })
    }
  }

  const resolve = (p: string | URL): string => typeof p === 'string' && !/^[a-z][a-z\d+.-]*:/i.test(p) ? base + (p.startsWith('/') ? '' : '/') + p : String(p)

  async function authFetch (pathOrUrl: string | URL, init: RequestInit = {}): Promise<Response> {
    const url = resolve(pathOrUrl)
    // Tokens go to the server's origin only, never to a third party.
    if (new URL(url).origin !== origin) return await send(url, init)
    const [res, sent] = await call(url, init, true)
    await settle(res, sent)
    return res
  }

  /** An authenticated call of one of tokengate's routes: its JSON (or undefined for a 204), else an AuthError. */
  async function route (path: string, method: string): Promise<any> {
    const res = await authFetch(auth + path, { method })
    return await body(res)
  }
  async function body (res: Response): Promise<any> {
    if (res.status === 204) return
    const data = await res.json().catch(() => ({}))
    if (!res.ok) throw new AuthError(data.message ?? `HTTP ${res.status}`, res.status, data.code, res.headers.get('www-authenticate'))
    return data
  }

  return {
    get signedIn () { return state !== null },
    get accessExpiresAt () { return state?.e ?? null },
    get sessionId () { return state?.s ?? null },
    async login (credentials) {
      // By cookie the server keeps the tokens out of the answer's body (asked for, where it offers both transports).
      const headers: Record<string, string> = { 'content-type': 'application/json', ...(cookie ? { 'x-tokengate-transport': 'cookie' } : {}) }
      const [res] = await call(auth + '/login', { method: 'POST', headers, body: JSON.stringify(credentials) }, 'login')
      const pair: TokenPair = await body(res)
      const next: Stored = { t: pair.tokenType, s: pair.sessionId, e: Date.now() + pair.expiresIn * 1000 }
      if (!cookie) {
        if (pair.accessToken === undefined || pair.refreshToken === undefined) throw new AuthError('the server answered without tokens: is it configured for cookie transport?', res.status)
        next.a = pair.accessToken
        next.r = pair.refreshToken
      }
      await write(next)
      bc?.postMessage(1)
      return pair
    },
    fetch: authFetch,
    onChange (listener) {
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    },
    sessions: async () => await route('/sessions', 'GET'),
    async revokeSession (id) {
      await route('/sessions/' + encodeURIComponent(id), 'DELETE')
      if (id === state?.s) await signOut()
    },
    async logout () {
      try { await authFetch(auth + '/logout', { method: 'POST' }) } finally { await signOut() }
    },
    async logoutAll () {
      try { await route('/logout-all', 'POST') } finally { await signOut() }
    },
    close () {
      bc?.close()
      g.removeEventListener?.('storage', onStorage)
    }
  }
}
