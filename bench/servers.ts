// The benchmark's server process: one shared upstream and every variant in ONE process, so CPU per
// request can be read per batch with process.cpuUsage() (the parent runs the load and asks over IPC).
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import httpProxy from '@fastify/http-proxy'
import fastifyJwt from '@fastify/jwt'
import { Redis } from 'ioredis'
import pino from 'pino'
import { REDACT, buildGateway } from '../gateway/index.js'
import { hashPassword } from '../gateway/login.js'

export const SECRET = 'b'.repeat(128)

export interface ServerInfo {
  ports: Record<string, number>
  /** Access tokens per gateway, and a pool of refresh tokens for the refresh variant. */
  tokens: { hs256: string, info: string, eddsa: string, naive: string, refresh: string[] }
}

const port = (app: FastifyInstance): number => (app.server.address() as AddressInfo).port

async function listen (app: FastifyInstance): Promise<number> {
  await app.listen({ host: '127.0.0.1', port: 0 })
  return port(app)
}

export async function startServers (redisUrl: string, refreshPool: number): Promise<{ info: ServerInfo, close: () => Promise<void> }> {
  const apps: FastifyInstance[] = []
  const track = (app: FastifyInstance): FastifyInstance => { apps.push(app); return app }

  // 1. The upstream alone: a bare Fastify route.
  const upstream = track(Fastify({ logger: false }))
  upstream.get('/*', async () => ({ ok: true }))
  const upstreamPort = await listen(upstream)
  const upstreamUrl = `http://127.0.0.1:${upstreamPort}`

  // 2. Plain @fastify/http-proxy, no auth: the reference.
  const proxy = track(Fastify({ logger: false }))
  await proxy.register(httpProxy, { upstream: upstreamUrl, prefix: '/api', rewritePrefix: '/api', disableRequestLogging: true })
  const proxyPort = await listen(proxy)

  // 3. and 4. The gateway, HS256 and EdDSA: a public and an authenticated route on each.
  const dir = mkdtempSync(path.join(tmpdir(), 'tokengate-bench-'))
  writeFileSync(path.join(dir, 'users.json'), JSON.stringify([{ sub: 'bench', roles: ['user'], passwordHash: await hashPassword('bench') }]))
  const routes = [
    { prefix: '/pub', upstream: upstreamUrl, auth: 'public' },
    { prefix: '/api', upstream: upstreamUrl, auth: 'required', roles: ['user'] }
  ]
  const common = {
    redis: { url: redisUrl },
    login: { usersFile: path.join(dir, 'users.json') },
    routes,
    rateLimit: { requests: { max: 1_000_000_000, window: '1m' }, failedLogins: { max: 1_000_000, window: '1m' } },
    logLevel: 'silent'
  }
  // The gateways log at warn (nothing per request); one more at info writes its access log to /dev/null
  // the way buildGateway's default logger writes to stdout (one synchronous write per line).
  // (With forward authentication on: GET /auth/verify asks about the same /api route.)
  const hs = track(buildGateway({ ...common, logLevel: 'warn', forwardAuth: {}, tokens: { secret: SECRET, keyPrefix: 'bench-hs' } }))
  const infoGw = track(buildGateway({ ...common, logLevel: 'info', tokens: { secret: SECRET, keyPrefix: 'bench-info' } }, {
    logger: { level: 'info', redact: { paths: REDACT, censor: '[redacted]' }, stream: pino.destination({ dest: '/dev/null', sync: true }) }
  }))
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  // EdDSA, with a third route whose upstream also gets a signed identity assertion.
  const ed = track(buildGateway({
    ...common,
    routes: [...routes, { prefix: '/asrt', upstream: upstreamUrl, auth: 'required', roles: ['user'], assertion: { audience: 'bench-api' } }],
    tokens: {
      keyPrefix: 'bench-ed',
      issuer: 'https://bench.example',
      keys: [{ kid: 'k1', algorithm: 'EdDSA', privateKey: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), publicKey: publicKey.export({ format: 'pem', type: 'spki' }).toString() }]
    }
  }))
  const hsPort = await listen(hs)
  const infoPort = await listen(infoGw)
  // DPoP: the same gateway with DPoP on (replay memory per instance: no round trip per request).
  const dpopGw = track(buildGateway({ ...common, logLevel: 'warn', tokens: { secret: SECRET, keyPrefix: 'bench-dpop', dpop: { replay: 'memory' } } }))
  const dpopPort = await listen(dpopGw)
  const edPort = await listen(ed)

  // The floor of any server-side rotation: a bare Fastify route that reads a JSON body and runs one
  // EVALSHA on the same Redis (a compare-and-set of one key: the least a rotation has to do).
  const floorRedis = new Redis(redisUrl)
  floorRedis.defineCommand('benchCas', {
    numberOfKeys: 1,
    lua: "local v = redis.call('GET', KEYS[1]) if v == false or v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', 86400000) end return 1"
  })
  const floor = track(Fastify({ logger: false }))
  let n = 0
  floor.post('/rotate', async (request) => {
    const token = (request.body as { refreshToken?: string }).refreshToken ?? ''
    await (floorRedis as unknown as { benchCas: (k: string, a: string, b: string) => Promise<number> }).benchCas(`bench-floor:${n++ % 4096}`, token.slice(0, 22), token.slice(-22))
    return { refreshToken: token }
  })
  const floorPort = await listen(floor)

  // 5. The naive design: @fastify/jwt verify (no cache) + one Redis EXISTS denylist lookup, then the same proxy.
  const redis = new Redis(redisUrl)
  const naive = track(Fastify({ logger: false }))
  await naive.register(fastifyJwt, { secret: SECRET })
  naive.addHook('onRequest', async (request, reply) => {
    try {
      const payload = await request.jwtVerify<{ jti: string }>()
      if (await redis.exists(`denylist:${payload.jti}`) === 1) return await reply.code(401).send({ error: 'revoked' })
    } catch {
      return await reply.code(401).send({ error: 'unauthorized' })
    }
  })
  await naive.register(httpProxy, { upstream: upstreamUrl, prefix: '/api', rewritePrefix: '/api', disableRequestLogging: true })
  const naivePort = await listen(naive)

  const login = async (app: FastifyInstance): Promise<{ accessToken: string, refreshToken: string }> => {
    const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bench', password: 'bench' } })
    if (res.statusCode !== 200) throw new Error(`bench login failed: ${res.statusCode} ${res.body}`)
    return res.json()
  }
  const refresh: string[] = []
  for (let i = 0; i < refreshPool; i++) refresh.push((await hs.tokengate.issue({ sub: `bench-${i}`, roles: ['user'] })).refreshToken)
  const info: ServerInfo = {
    ports: { upstream: upstreamPort, proxy: proxyPort, gateway: hsPort, info: infoPort, eddsa: edPort, naive: naivePort, floor: floorPort, dpop: dpopPort },
    tokens: {
      hs256: (await login(hs)).accessToken,
      info: (await login(infoGw)).accessToken,
      eddsa: (await login(ed)).accessToken,
      naive: naive.jwt.sign({ sub: 'bench', jti: 'naive-1' }, { expiresIn: '1h' }),
      refresh
    }
  }
  return {
    info,
    close: async () => {
      for (const app of apps.reverse()) await app.close()
      redis.disconnect()
      floorRedis.disconnect()
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

// As a child process: start, report over IPC, answer CPU readings, stop on request.
if (process.send !== undefined && process.argv.includes('--child')) {
  const redisUrl = process.argv[process.argv.indexOf('--redis') + 1]
  const pool = Number(process.argv[process.argv.indexOf('--refresh-pool') + 1])
  startServers(redisUrl, pool).then(({ info, close }) => {
    process.on('message', (msg: { cmd: string, id: number }) => {
      if (msg.cmd === 'cpu') {
        const u = process.cpuUsage()
        process.send!({ id: msg.id, cpu: u.user + u.system })
      } else if (msg.cmd === 'stop') {
        close().then(() => process.exit(0), () => process.exit(1))
      }
    })
    process.send!({ ready: info })
  }, (err: Error) => {
    process.stderr.write(`bench servers: ${err.stack ?? err.message}\n`)
    process.exit(1)
  })
}
