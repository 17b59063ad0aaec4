// A real tokengate server for the client's tests: Fastify listening on 127.0.0.1 (the client talks to it over
// HTTP with Node's own fetch), tokengate on the shared Redis under a key prefix of the test's own, the users of
// test/helpers/app.ts, and a protected route /api/orders. Every request that reaches the server is logged with
// the headers the client sent and the status and token headers it got back, so tests can count exactly.
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import type { Test } from 'tap'
import tokengate, { type TokengateOptions } from '../../plugin/index.js'
import type { StorageLike } from '../../client/index.js'
import { SECRET, USERS, verifyCredentials } from '../helpers/app.js'
import { deletePrefix, redisUrl, uniquePrefix } from '../helpers/redis.js'

/** One request as the server saw it. */
export interface Seen {
  method: string
  url: string
  authorization?: string
  refreshToken?: string
  dpop?: string
  csrf?: string
  cookie?: string
  status?: number
  /** The response's x-access-token / x-refresh-token / DPoP-Nonce headers, and the error code of a failure. */
  newAccess?: string
  newRefresh?: string
  nonce?: string
  /** The response's Set-Cookie headers (cookie transport), joined. */
  setCookie?: string
  code?: string
}

export interface TestServer {
  app: FastifyInstance
  /** http://127.0.0.1:<port> */
  baseUrl: string
  /** Every request that reached the server, in arrival order (the record is completed when its response is sent). */
  seen: Seen[]
  /** How many requests reached the handler of /api/orders (authenticated ones). */
  orders: () => number
  /** Forgets what was seen so far. */
  reset: () => void
}

const header = (v: string | string[] | undefined): string | undefined => Array.isArray(v) ? v.join(', ') : v

/** Starts the server (with `setup`'s own routes, if given); closed (and its Redis keys deleted) at the test's teardown. */
export async function startServer (t: Test, options: Partial<TokengateOptions> = {}, setup?: (app: FastifyInstance) => void): Promise<TestServer> {
  const url = await redisUrl()
  const prefix = uniquePrefix('client')
  const redis = new Redis(url)
  const app = Fastify({ logger: false })
  let seen: Seen[] = []
  let orders = 0
  const records = new WeakMap<object, Seen>()
  // Before tokengate's hook: the request exactly as the client sent it.
  app.addHook('onRequest', async (request) => {
    const h = request.headers
    const s: Seen = {
      method: request.method,
      url: request.url,
      authorization: header(h.authorization),
      refreshToken: header(h['x-refresh-token']),
      dpop: header(h.dpop),
      csrf: header(h['x-csrf-token']),
      cookie: header(h.cookie)
    }
    seen.push(s)
    records.set(request, s)
  })
  app.addHook('onSend', async (request, reply, payload) => {
    const s = records.get(request)
    if (s === undefined) return payload
    s.status = reply.statusCode
    s.newAccess = reply.getHeader('x-access-token') as string | undefined
    s.newRefresh = reply.getHeader('x-refresh-token') as string | undefined
    s.nonce = reply.getHeader('dpop-nonce') as string | undefined
    if (reply.statusCode >= 400 && typeof payload === 'string') {
      try { s.code = JSON.parse(payload).code } catch {}
    }
    return payload
  })
  // Set-Cookie is written by @fastify/cookie's own onSend hook, after the one above.
  app.addHook('onResponse', async (request, reply) => {
    const s = records.get(request)
    const cookies = reply.getHeader('set-cookie')
    if (s !== undefined && cookies !== undefined) s.setCookie = ([] as string[]).concat(cookies as string | string[]).join('; ')
  })
  await app.register(tokengate, { secret: SECRET, redis: url, keyPrefix: prefix, routes: { verifyCredentials }, ...options } as TokengateOptions)
  const orderRoute = async (request: { auth: { userId: string, sessionId: string, jkt?: string } | null }): Promise<unknown> => {
    orders++
    return { user: request.auth!.userId, sessionId: request.auth!.sessionId, jkt: request.auth!.jkt ?? null }
  }
  app.get('/api/orders', { onRequest: app.authenticate }, orderRoute)
  app.post('/api/orders', { onRequest: app.authenticate }, orderRoute)
  setup?.(app)
  t.teardown(async () => {
    await app.close()
    await deletePrefix(redis, prefix)
    redis.disconnect()
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  return {
    app,
    baseUrl: `http://127.0.0.1:${port}`,
    get seen () { return seen },
    orders: () => orders,
    reset () { seen = []; orders = 0 }
  }
}

/** A storage object shared by the "tabs" (clients) of one test, as localStorage is shared by a browser's tabs. */
export function sharedStorage (): StorageLike & { map: Map<string, string> } {
  const map = new Map<string, string>()
  return { map, get: k => map.get(k) ?? null, set: (k, v) => { map.set(k, v) }, remove: k => { map.delete(k) } }
}

export const credentials = (username: 'alice' | 'bob'): { username: string, password: string } => ({ username, password: USERS[username].password })

/** A storage key (and BroadcastChannel name) no other test uses: clients of one test share it, other tests do not. */
let keys = 0
export const uniqueKey = (name: string): string => `tg-test-${name}-${process.pid}-${++keys}`

export const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

/** Resolves with the next value a client's onChange gives, or rejects after `ms`. */
export async function nextChange (client: { onChange: (l: (signedIn: boolean) => void) => () => void }, ms = 2000, what = 'onChange'): Promise<boolean> {
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`${what} did not fire within ${ms} ms`)) }, ms)
    const off = client.onChange(v => { clearTimeout(timer); off(); resolve(v) })
  })
}

/** The payload of a JWT, decoded without any check. */
export const payloadOf = (jwt: string): Record<string, any> => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'))
export const headerOf = (jwt: string): Record<string, any> => JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString('utf8'))
