// A gateway for tests: buildGateway on the shared Redis (or none) under a key prefix of the test's own,
// listening on 127.0.0.1:0, with a users file in a temp dir; closed and cleaned at teardown.
import { writeFileSync } from 'node:fs'
import http, { type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import { Redis } from 'ioredis'
import type { Test } from 'tap'
import { buildGateway } from '../../gateway/index.js'
import { hashPassword } from '../../gateway/login.js'
import { SECRET } from './app.js'
import { deletePrefix, redisUrl, uniquePrefix } from './redis.js'
import { removeTempDir, tempDir } from './spawn.js'

export const GATEWAY_USERS = { alice: 'alice-pw-Qx7-wonderland', bob: 'bob-pw-Zk3-builder' } as const
let usersJson: string | undefined

/** A users file with alice (user) and bob (user, admin) in a temp dir removed at teardown. */
export async function usersFile (t: Test): Promise<string> {
  usersJson ??= JSON.stringify([
    { sub: 'alice', roles: ['user'], passwordHash: await hashPassword(GATEWAY_USERS.alice) },
    { sub: 'bob', roles: ['user', 'admin'], passwordHash: await hashPassword(GATEWAY_USERS.bob) }
  ])
  const dir = tempDir('gw')
  t.teardown(() => removeTempDir(dir))
  const file = path.join(dir, 'users.json')
  writeFileSync(file, usersJson)
  return file
}

export interface TestGateway { app: FastifyInstance, base: string, port: number, prefix: string }

/**
 * Builds and listens a gateway. `config` is merged over a valid base (tokens.secret, a users file,
 * no routes, logLevel silent); `redis: true` puts it on the shared Redis under its own prefix.
 */
export async function startGateway (t: Test, config: Record<string, any> = {}, opts: { redis?: boolean, logger?: FastifyServerOptions['logger'] } = {}): Promise<TestGateway> {
  const prefix = uniquePrefix('gw')
  const url = opts.redis === true ? await redisUrl() : undefined
  const app = buildGateway({
    ...(url !== undefined ? { redis: { url } } : {}),
    login: { usersFile: await usersFile(t) },
    routes: [],
    logLevel: 'silent',
    ...config,
    tokens: { secret: SECRET, keyPrefix: prefix, ...config.tokens }
  }, { logger: opts.logger ?? false })
  t.teardown(async () => {
    await app.close()
    if (url !== undefined) {
      const redis = new Redis(url)
      await deletePrefix(redis, prefix)
      redis.disconnect()
    }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  return { app, base: `http://127.0.0.1:${port}`, port, prefix }
}

export interface RawResponse { status: number, headers: IncomingHttpHeaders, body: string, closed: Promise<void> }

/**
 * One request over a fresh node:http connection, with the path and headers sent exactly as given (fetch
 * normalises '..' and refuses hop-by-hop headers). `closed` settles when the server closes the socket.
 */
export async function rawRequest (port: number, opts: { method?: string, path: string, headers?: Record<string, string>, body?: string }): Promise<RawResponse> {
  return await new Promise((resolve, reject) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const req = http.request({ host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path, headers: opts.headers, agent }, res => {
      const socket = res.socket
      const closed = new Promise<void>(resolve => { if (socket.destroyed) resolve(); else socket.once('close', () => resolve()) })
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, closed: closed.finally(() => agent.destroy()) }))
    })
    req.on('error', reject)
    req.end(opts.body)
  })
}

export async function postJson (base: string, url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number, headers: Headers, body: any }> {
  const res = await fetch(`${base}${url}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) })
  const text = await res.text()
  let json: any = text
  try { json = text === '' ? {} : JSON.parse(text) } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, body: json }
}
