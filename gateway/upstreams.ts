// The route table → one @fastify/http-proxy per route (one undici pool per upstream), with the
// route's auth policy, identity headers for the upstream, and upstream errors in tokengate's codes.
import type { IncomingHttpHeaders } from 'node:http'
import httpProxy from '@fastify/http-proxy'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { UpstreamTimeoutError, UpstreamUnavailableError, addRouteHook, durationMs, type AuthInfo, type RouteAuthConfig } from '../plugin/index.js'
import { ASSERTION_HEADER, type Assert } from './assertion.js'
import type { RouteConfig } from './config.js'
import { routePolicyOf } from './route-policy.js'
import type { Recorder } from './metrics.js'
import type { SocketRegistry } from './sockets.js'

const TOKEN_COOKIES = new Set(['tg_access', 'tg_refresh', 'tg_csrf'])

/** Drops tokengate's own cookies from a Cookie header; undefined when nothing is left. */
export function withoutTokenCookies (cookie: string): string | undefined {
  const kept = cookie.split(';').filter(part => {
    const name = part.slice(0, part.indexOf('=') === -1 ? undefined : part.indexOf('=')).trim()
    return !TOKEN_COOKIES.has(name)
  }).map(p => p.trim()).filter(p => p !== '')
  return kept.length === 0 ? undefined : kept.join('; ')
}

/** Hop-by-hop headers (RFC 9110 §7.6.1): they belong to one connection and never cross the proxy. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'])

/** The header names a Connection header lists (lower-cased), which are hop-by-hop too. */
function namedByConnection (connection: unknown): Set<string> | undefined {
  if (typeof connection !== 'string' || connection === '') return undefined
  const lower = connection.toLowerCase()
  if (lower === 'keep-alive' || lower === 'close') return undefined // the usual values name no header
  return new Set(lower.split(',').map(n => n.trim()).filter(n => n !== ''))
}

/** Response headers only tokengate sets: an upstream's never reach the client (it cannot plant a token). */
const TOKEN_RESPONSE_HEADERS = new Set(['x-access-token', 'x-refresh-token'])

/** An upstream's Set-Cookie lines without tokengate's own cookies; undefined when none is left. */
function withoutTokenSetCookies (value: unknown): string | string[] | undefined {
  const lines = ([] as unknown[]).concat(value).map(String).filter(line => !TOKEN_COOKIES.has(line.slice(0, line.indexOf('=')).trim().toLowerCase()))
  return lines.length === 0 ? undefined : lines
}

/**
 * Response headers for the client: the upstream's, minus hop-by-hop ones, minus any token header or tg_*
 * cookie of its own, plus the request id. (When the refresh hook sent tokens with this response, their
 * Cache-Control: no-store is put back last, whatever the upstream said: see the plugin's noStore.)
 */
export function clientHeaders (headers: Record<string, unknown>, requestId: string): Record<string, unknown> {
  const named = namedByConnection(headers.connection)
  const out: Record<string, unknown> = {}
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || named?.has(name) === true || TOKEN_RESPONSE_HEADERS.has(name)) continue
    if (name === 'set-cookie') {
      const kept = withoutTokenSetCookies(headers[name])
      if (kept !== undefined) out[name] = kept
      continue
    }
    out[name] = headers[name]
  }
  out['x-request-id'] = requestId
  return out
}

/**
 * Client header names the gateway sets or strips (lower-case): identity, the request id, the identity
 * assertion, tokens, hop-by-hop. Their spellings with `_` for `-` are dropped too: Rack, PHP and WSGI
 * upstreams read `x_user_id` as `x-user-id` (HTTP_X_USER_ID).
 */
const GUARDED = new Set(['x-session-id', 'x-request-id', 'authorization', 'x-refresh-token', 'x-csrf-token', 'dpop', 'cookie', ...HOP_BY_HOP])

/** Whether a header name (lower-case, `-` only) is one of the identity headers the gateway sets. */
const identityName = (n: string): boolean => n.startsWith('x-user-') || n.startsWith('x-tokengate-') || n === 'x-session-id'

/** Whether a client header name (lower-case, with `_`) reads as one the gateway sets or strips. */
function spoofed (name: string): boolean {
  const n = name.replace(/_/g, '-')
  return identityName(n) || GUARDED.has(n)
}

/**
 * The first client header whose name reads as one of the identity headers the gateway sets (`x-user-*`,
 * `x-session-id`, `x-tokengate-*`; any case, `_` for `-`), or undefined: forward authentication refuses such a
 * request, since the proxy in front passes the client's headers on to the app and only replaces those it
 * names.
 */
export function identityLikeHeader (headers: IncomingHttpHeaders): string | undefined {
  for (const name in headers) {
    if (identityName(name.includes('_') ? name.replace(/_/g, '-') : name)) return name
  }
  return undefined
}

/**
 * The headers an upstream receives: a fresh object (no `delete`, which slows V8 objects) without
 * hop-by-hop headers, without any client-sent x-user-* / x-session-id / x-request-id / x-tokengate-*
 * (nor any spelling of a header the gateway sets or strips with `_` for `-`), without the tokens unless
 * forwardToken, plus the verified identity and the request id.
 */
export function upstreamHeaders (request: FastifyRequest, headers: IncomingHttpHeaders, route: RouteConfig, assert?: Assert): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {}
  // reply-from has dropped Connection and the headers it names; the WebSocket path has not.
  const named = namedByConnection(request.headers.connection)
  for (const name in headers) {
    if (identityName(name) || name === 'x-request-id') continue
    if (name.includes('_') && spoofed(name)) continue
    if (HOP_BY_HOP.has(name) || named?.has(name) === true) continue
    if (!route.forwardToken) {
      if (name === 'authorization' || name === 'x-refresh-token' || name === 'x-csrf-token' || name === 'dpop') continue
      if (name === 'cookie') {
        const c = withoutTokenCookies(String(headers.cookie))
        if (c !== undefined) out.cookie = c
        continue
      }
    }
    out[name] = headers[name]
  }
  const auth = request.auth
  if (auth !== null && route.auth !== 'public') identityHeaders(out, auth, assert)
  out['x-request-id'] = request.id
  return out
}

/** The verified identity as an upstream receives it (and forward authentication answers it). */
export function identityHeaders (out: Record<string, string | string[] | undefined>, auth: AuthInfo, assert?: Assert): void {
  out['x-user-id'] = auth.userId
  out['x-user-roles'] = auth.roles.join(',')
  out['x-session-id'] = auth.sessionId
  if (auth.jkt !== undefined) out['x-user-jkt'] = auth.jkt
  if (assert !== undefined) out[ASSERTION_HEADER] = assert(auth)
}

/** A route's `config.auth` for the plugin: its policy, or undefined for an optional or public route. */
/** A route's policy, as its proxied route and forward authentication apply it (roles, maxAge, acr). */
export function routeAuth (route: RouteConfig): true | RouteAuthConfig | undefined {
  return routePolicyOf(route)
}

function mapUpstreamError (reply: FastifyReply, { error }: { error: Error & { statusCode?: number, code?: string } }): void {
  const timedOut = error.statusCode === 504 || error.code === 'UND_ERR_CONNECT_TIMEOUT'
  reply.log.warn({ upstreamError: error.code ?? error.message }, timedOut ? 'upstream timed out' : 'upstream unavailable')
  reply.send(timedOut ? new UpstreamTimeoutError() : new UpstreamUnavailableError())
}

/**
 * Registers one route of the table; `record` counts its requests (see metrics.ts); `sockets` learns the
 * sessions of its WebSocket upgrades, to close them when the session is revoked.
 */
export async function registerUpstream (app: FastifyInstance, route: RouteConfig, record: Recorder, sockets: SocketRegistry, assert?: Assert): Promise<void> {
  if (route.websocket) {
    app.addHook('onRoute', (r) => {
      // After the route's auth policy (which runs first among its hooks) has let the upgrade through.
      addRouteHook(r, 'onRequest', (request: FastifyRequest, _reply: FastifyReply, done: () => void) => {
        if (request.headers.upgrade !== undefined) sockets.note(request)
        done()
      }, 'last')
    })
  }
  const timeoutMs = durationMs(route.timeout, 'timeout')
  const auth = routeAuth(route)
  await app.register(httpProxy, {
    upstream: route.upstream,
    prefix: route.prefix,
    // The path reaches the upstream unchanged unless the route says otherwise.
    rewritePrefix: route.rewritePrefix ?? route.prefix,
    websocket: route.websocket,
    // `proxied` marks the route for the gateway's hooks and carries its metrics recorder.
    config: auth === undefined ? { proxied: record } : { auth, proxied: record },
    disableRequestLogging: true,
    undici: { connections: 128, pipelining: 1, keepAliveTimeout: 60_000, headersTimeout: timeoutMs, bodyTimeout: timeoutMs },
    replyOptions: {
      rewriteRequestHeaders: (request: FastifyRequest, headers: IncomingHttpHeaders) => upstreamHeaders(request, headers, route, assert),
      rewriteHeaders: (headers: Record<string, unknown>, request: FastifyRequest) => clientHeaders(headers, request.id),
      // Counted when the upstream's answer arrives (latency to its headers); errors are counted in onError.
      onResponse: (request: FastifyRequest, reply: FastifyReply, res: { stream: unknown }) => {
        record(request, reply.statusCode, reply.elapsedTime / 1000)
        reply.send(res.stream)
      },
      onError: mapUpstreamError as never
    },
    wsHooks: { onConnect: sockets.onConnect },
    wsClientOptions: {
      rewriteRequestHeaders: (_headers: unknown, request: FastifyRequest) => {
        const h = upstreamHeaders(request, request.headers, route, assert)
        // The WebSocket client writes its own handshake headers.
        for (const name of ['host', 'connection', 'upgrade', 'sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol', 'content-length']) h[name] = undefined
        return Object.fromEntries(Object.entries(h).filter(([, v]) => v !== undefined))
      }
    }
  } as never)
}
