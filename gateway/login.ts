// Login providers: an identity service the gateway POSTs the login body to, or a users file of
// scrypt hashes. Both resolve to the plugin's UserInfo, or null for bad credentials.
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Pool, errors as undiciErrors } from 'undici'
import { UpstreamTimeoutError, UpstreamUnavailableError, type UserInfo } from '../plugin/index.js'
import { ConfigError } from './config.js'
import { SCRYPT, parseHash, verifyPassword } from './passwords.js'

export { hashPassword, verifyPassword } from './passwords.js'

export interface LoginProvider {
  verify: (body: unknown, requestId: string) => Promise<UserInfo | null>
  close: () => Promise<void>
}

function asUser (value: unknown): UserInfo | null {
  const v = value as { sub?: unknown, roles?: unknown, claims?: unknown, acr?: unknown, amr?: unknown } | null
  if (v === null || typeof v !== 'object' || typeof v.sub !== 'string' || v.sub === '') return null
  // (A role with a comma would read as two in x-user-roles: such roles are left out.)
  const roles = Array.isArray(v.roles) && v.roles.every(r => typeof r === 'string') ? (v.roles as string[]).filter(r => !r.includes(',')) : []
  const claims = v.claims !== null && typeof v.claims === 'object' && !Array.isArray(v.claims) ? v.claims as Record<string, unknown> : undefined
  const user: UserInfo = { sub: v.sub, roles, claims }
  // RFC 9470: the authentication's class and methods, when the service says (anything else reads as unknown:
  // no acr policy admits it).
  if (typeof v.acr === 'string' && v.acr !== '') user.acr = v.acr
  if (Array.isArray(v.amr) && v.amr.length > 0 && v.amr.every(m => typeof m === 'string' && m !== '')) user.amr = v.amr as string[]
  return user
}

/**
 * The identity-service contract: POST the client's login body as JSON; a 2xx JSON answer
 * `{ sub, roles, claims, acr, amr }` logs the user in, 401/403/404 are bad credentials, anything else (or no
 * answer) is 502, no answer within the timeout is 504. One undici pool for the service.
 */
export function upstreamLogin (url: string, timeoutMs: number): LoginProvider {
  const target = new URL(url)
  const pool = new Pool(target.origin, { connections: 32, headersTimeout: timeoutMs, bodyTimeout: timeoutMs, connectTimeout: timeoutMs })
  return {
    async verify (body, requestId) {
      // Serialised before the request: a body that cannot be serialised is the client's problem, not an outage.
      const payload = JSON.stringify(body ?? {})
      let res
      try {
        res = await pool.request({
          method: 'POST',
          path: target.pathname + target.search,
          headers: { 'content-type': 'application/json', accept: 'application/json', 'x-request-id': requestId },
          body: payload
        })
      } catch (err) {
        const code = (err as { code?: string }).code
        if (err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError || code === 'UND_ERR_CONNECT_TIMEOUT') throw new UpstreamTimeoutError()
        throw new UpstreamUnavailableError()
      }
      const status = res.statusCode
      let answer: unknown
      try {
        answer = await res.body.json()
      } catch (err) {
        if (err instanceof undiciErrors.BodyTimeoutError) throw new UpstreamTimeoutError()
        answer = undefined
      }
      if (status === 401 || status === 403 || status === 404) return null
      if (status < 200 || status > 299) throw new UpstreamUnavailableError()
      const user = asUser(answer)
      if (user === null) throw new UpstreamUnavailableError()
      return user
    },
    async close () {
      await pool.close()
    }
  }
}

interface FileUser { sub: string, roles: string[], claims?: Record<string, unknown>, passwordHash: string }

/** Users from a JSON array of `{ sub, roles, passwordHash }`; the login body is `{ username, password }`. */
export function usersFileLogin (file: string): LoginProvider {
  let list: unknown
  try {
    list = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new ConfigError('login.usersFile', `cannot be read as JSON: ${file} (${(err as Error).message})`)
  }
  if (!Array.isArray(list)) throw new ConfigError('login.usersFile', 'must hold a JSON array of { sub, roles, passwordHash }')
  const users = new Map<string, FileUser>()
  for (const [i, u] of list.entries()) {
    const user = asUser(u)
    const passwordHash = (u as { passwordHash?: unknown })?.passwordHash
    const hash = typeof passwordHash === 'string' ? parseHash(passwordHash) : null
    if (user === null || hash === null) throw new ConfigError(`login.usersFile[${i}]`, 'needs a string sub and a passwordHash made by `tokengate hash-password`')
    users.set(user.sub, { sub: user.sub, roles: user.roles ?? [], claims: user.claims, passwordHash: passwordHash as string })
  }
  // Unknown users are checked against a dummy hash so their answer takes as long as a known user's.
  const dummy = `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${randomBytes(16).toString('base64')}$${randomBytes(32).toString('base64')}`
  return {
    async verify (body) {
      const b = body as { username?: unknown, password?: unknown } | null
      const username = typeof b?.username === 'string' ? b.username : ''
      const password = typeof b?.password === 'string' ? b.password : ''
      const user = users.get(username)
      const ok = await verifyPassword(password, user?.passwordHash ?? dummy)
      if (!ok || user === undefined || password === '') return null
      // A password, and nothing else (RFC 8176 "pwd"): no acr.
      return { sub: user.sub, roles: user.roles, claims: user.claims, amr: ['pwd'] }
    },
    async close () {}
  }
}
