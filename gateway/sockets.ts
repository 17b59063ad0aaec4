// Proxied WebSockets of a session end with it: when a session is revoked (logout, a deleted session, reuse
// detection, a session limit; logout-all / revokeAll and revokeEveryone, which reach other instances as one
// epoch) on any instance, the instance holding its sockets closes them with 1008 "session revoked" (RFC 6455
// §7.4.1: policy violation), upstream side included.
import type { Socket } from 'node:net'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { accessTokenIssuedAt } from '../plugin/index.js'

/** What the registry uses of a proxied client socket (a `ws` WebSocket), written out so the shipped types need no `ws` types. */
export interface ProxiedSocket {
  close: (code: number, reason: string) => void
  once: (event: 'close', listener: () => void) => unknown
}

export const REVOKED_CLOSE = { code: 1008, reason: 'session revoked' } as const

interface Owner { sessionId: string, userId: string, token: string, issuedAt: number }

export interface SocketRegistry {
  /** Notes the session of an authenticated upgrade request (before the proxy opens its sockets). */
  note: (request: FastifyRequest) => void
  /** @fastify/http-proxy's wsHooks.onConnect: the client socket is up, the upstream connected. */
  onConnect: (context: unknown, source: ProxiedSocket) => void
  /** How many proxied sockets are open for sessions (for tests and metrics). */
  readonly size: number
}

export function socketRegistry (app: FastifyInstance): SocketRegistry {
  // The upgrade's network socket → its session; ws keeps the same socket as `_socket` (ws has no public
  // accessor for it, and the proxy's hooks do not pass the request).
  const pending = new WeakMap<Socket, Owner>()
  const bySession = new Map<string, Set<ProxiedSocket>>()
  const owners = new Map<ProxiedSocket, Owner>()
  let size = 0

  function closeAll (sessionId: string): void {
    const sockets = bySession.get(sessionId)
    if (sockets === undefined) return
    bySession.delete(sessionId)
    for (const ws of sockets) ws.close(REVOKED_CLOSE.code, REVOKED_CLOSE.reason)
  }
  /** Closes a socket whose token is refused now (revoked, or issued before an epoch). */
  function recheck (ws: ProxiedSocket, owner: Owner): void {
    app.tokengate.verify(owner.token).catch((err: { code?: string }) => {
      if (err.code === 'TOKENGATE_TOKEN_REVOKED') ws.close(REVOKED_CLOSE.code, REVOKED_CLOSE.reason)
    })
  }

  // revokeAll (a user) or revokeEveryone (userId undefined): the sockets opened with a token issued before the
  // epoch (expired since or not: a socket outlives its upgrade's token, never its session).
  function closeBefore (userId: string | undefined, before: number): void {
    for (const [ws, owner] of owners) {
      if ((userId === undefined || owner.userId === userId) && owner.issuedAt < before) ws.close(REVOKED_CLOSE.code, REVOKED_CLOSE.reason)
    }
  }

  const unsubscribe: Array<() => void> = []
  app.addHook('onReady', async () => {
    unsubscribe.push(app.tokengate.onSessionRevoked(closeAll), app.tokengate.onRevokedBefore(closeBefore))
  })
  app.addHook('onClose', async () => { for (const off of unsubscribe) off() })

  return {
    note (request) {
      const auth = request.auth
      if (auth !== null) pending.set(request.raw.socket, { sessionId: auth.sessionId, userId: auth.userId, token: auth.token, issuedAt: accessTokenIssuedAt(auth.token) })
    },
    onConnect (_context, source) {
      const socket = (source as unknown as { _socket?: Socket })._socket
      const owner = socket === undefined ? undefined : pending.get(socket)
      if (owner === undefined) return
      pending.delete(socket!)
      let sockets = bySession.get(owner.sessionId)
      if (sockets === undefined) bySession.set(owner.sessionId, (sockets = new Set()))
      sockets.add(source)
      owners.set(source, owner)
      size++
      source.once('close', () => {
        size--
        owners.delete(source)
        const set = bySession.get(owner.sessionId)
        set?.delete(source)
        if (set?.size === 0) bySession.delete(owner.sessionId)
      })
      // Revoked while the upstream was connecting: the revocation found no socket to close then.
      recheck(source, owner)
    },
    get size () { return size }
  }
}
