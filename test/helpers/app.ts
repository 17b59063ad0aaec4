// A fresh Fastify app with tokengate on the shared Redis, under a key prefix of the test's own.
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import type { Test } from 'tap'
import tokengate, { type TokengateOptions, type UserInfo } from '../../plugin/index.js'
import { deletePrefix, redisUrl, uniquePrefix } from './redis.js'

export const SECRET = 'a'.repeat(64) + 'b'.repeat(64) // 128 hex-ish characters, as `openssl rand -hex 64`

export const USERS: Record<string, { password: string, user: UserInfo }> = {
  alice: { password: 'wonderland', user: { sub: 'u-alice', roles: ['user'], claims: { name: 'Alice' } } },
  bob: { password: 'builder', user: { sub: 'u-bob', roles: ['user', 'admin'] } }
}

export async function verifyCredentials (body: unknown): Promise<UserInfo | null> {
  const b = body as { username?: string, password?: string }
  const u = USERS[b.username ?? '']
  return u !== undefined && u.password === b.password ? u.user : null
}

export interface TestApp {
  app: FastifyInstance
  redis: Redis
  prefix: string
  url: string
}

/** Builds an app (not listening) with tokengate, routes and two probe routes; closed and cleaned at teardown. */
export async function buildApp (t: Test, options: Partial<TokengateOptions> = {}, shared?: { prefix: string }): Promise<TestApp> {
  const url = await redisUrl()
  const prefix = shared?.prefix ?? uniquePrefix(t.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 20))
  const redis = new Redis(url)
  const app = Fastify({ logger: false })
  await app.register(tokengate, {
    secret: SECRET,
    redis: url,
    keyPrefix: prefix,
    routes: { verifyCredentials },
    ...options
  } as TokengateOptions)
  app.get('/me', { onRequest: app.authenticate }, async (request) => ({ userId: request.auth!.userId, sessionId: request.auth!.sessionId, roles: request.auth!.roles, claims: request.auth!.claims }))
  app.get('/anon', async (request) => ({ userId: request.auth?.userId ?? null }))
  app.post('/me', { onRequest: app.authenticate }, async (request) => ({ userId: request.auth!.userId }))
  t.teardown(async () => {
    await app.close()
    if (shared === undefined) await deletePrefix(redis, prefix)
    redis.disconnect()
  })
  await app.ready()
  return { app, redis, prefix, url }
}

export async function login (app: FastifyInstance, username = 'alice'): Promise<{ accessToken: string, refreshToken: string, sessionId: string, expiresIn: number, refreshExpiresIn: number }> {
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username, password: USERS[username].password } })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
  return res.json()
}

export const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

/** Polls `check` until it holds, or throws after `limitMs` (real time: a test may have stopped the Date clock). */
export async function until (what: string, limitMs: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const start = performance.now()
  while (!await check()) {
    if (performance.now() - start > limitMs) throw new Error(`${what}: not within ${limitMs} ms`)
    await sleep(20)
  }
}
