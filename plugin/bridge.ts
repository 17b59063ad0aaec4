// What the gateway needs from the plugin beyond its public API, under a symbol (not part of the package's
// API): starting a cookie session for a user it authenticated itself (single sign-on), revoking with a
// reason, and key material derived from the signing key.
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { UserInfo } from './options.js'
import type { TokenPair } from './sessions.js'

export const kBridge = Symbol('tokengate.bridge')

export interface Bridge {
  /**
   * Starts a session for `user` and sets its tg_* cookies on `reply` (Cache-Control: no-store). The session
   * record keeps `providerSessionId` (the OpenID provider's `sid`) when given. Needs cookie transport.
   */
  startCookieSession: (request: FastifyRequest, reply: FastifyReply, user: UserInfo, providerSessionId?: string) => Promise<TokenPair>
  /** Revokes one session of a user (on every instance); false when it was not live. */
  revokeSession: (userId: string, sessionId: string, reason: string) => Promise<boolean>
  /** Revokes every session of a user (on every instance); how many there were. */
  revokeAll: (userId: string, reason: string) => Promise<number>
  /** 32 bytes derived from the signing key for `label`: the same on every instance with the same keys. */
  keyFor: (label: string) => Buffer
}

declare module 'fastify' {
  interface FastifyInstance {
    [kBridge]: Bridge
  }
}
