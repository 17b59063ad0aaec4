// npm run bench: the cost of tokengate in front of an API, measured side by side in one run.
// Starts its own redis-server and a server process holding every variant; stops by itself.
import { fork, spawn, type ChildProcess } from 'node:child_process'
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto'
import { cpus } from 'node:os'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { readFileSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setImmediate as tick } from 'node:timers/promises'
import autocannon from 'autocannon'
import Fastify, { type FastifyInstance } from 'fastify'
import { createVerifier } from 'fast-jwt'
import http from 'node:http'
import { Redis } from 'ioredis'
import { WebSocket, WebSocketServer } from 'ws'
import { buildGateway } from '../gateway/index.js'
import tokengate, { RedisStore } from '../plugin/index.js'
import { Dpop } from '../plugin/dpop.js'
import { SECRET, type ServerInfo } from './servers.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(HERE, '../..')
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 6)
const BATCH_SEC = Number(process.env.BENCH_BATCH_SEC ?? 1)
const CONNECTIONS = 16
const PAIRS = Number(process.env.BENCH_PAIRS ?? 40)

// ---------- small statistics ----------
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2 }
const trimmedMean = (xs: number[], cut = 0.2): number => {
  const s = [...xs].sort((a, b) => a - b)
  const k = Math.floor(s.length * cut)
  const kept = s.slice(k, s.length - k)
  return kept.reduce((a, b) => a + b, 0) / kept.length
}
const pct = (xs: number[], p: number): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))] }
const round = (n: number, d = 1): number => Math.round(n * 10 ** d) / 10 ** d

// ---------- redis-server of our own ----------
async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = net.createServer().once('error', reject).listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)) })
  })
}

async function startRedis (): Promise<{ url: string, stop: () => void }> {
  const port = await freePort()
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  child.on('error', () => { process.stderr.write('bench: redis-server not found on PATH (apt-get install redis-server)\n'); process.exit(1) })
  const url = `redis://127.0.0.1:${port}`
  const probe = new Redis(url, { lazyConnect: true, retryStrategy: () => 50, maxRetriesPerRequest: 0 })
  probe.on('error', () => {})
  for (let i = 0; i < 100; i++) {
    try { await probe.connect(); if (await probe.ping() === 'PONG') break } catch { await new Promise(resolve => setTimeout(resolve, 50)) }
  }
  probe.disconnect()
  return { url, stop: () => { child.kill('SIGKILL') } }
}

// ---------- the server process ----------
interface Servers { info: ServerInfo, cpu: () => Promise<number>, stop: () => Promise<void>, child: ChildProcess }

async function startServers (redisUrl: string): Promise<Servers> {
  // BENCH_PROFILE=<dir>: the server process writes a V8 CPU profile there when it stops (where the time goes).
  const profile = process.env.BENCH_PROFILE !== undefined && process.env.BENCH_PROFILE !== '' ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(process.env.BENCH_PROFILE)}`] : []
  const child = fork(path.join(HERE, 'servers.js'), ['--child', '--redis', redisUrl, '--refresh-pool', '4000'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: profile })
  let next = 0
  const waiting = new Map<number, (cpu: number) => void>()
  const info = await new Promise<ServerInfo>((resolve, reject) => {
    child.on('message', (m: { ready?: ServerInfo, id?: number, cpu?: number }) => {
      if (m.ready !== undefined) resolve(m.ready)
      else if (m.id !== undefined) { waiting.get(m.id)?.(m.cpu!); waiting.delete(m.id) }
    })
    child.once('exit', code => reject(new Error(`bench server process exited (${code})`)))
  })
  return {
    info,
    child,
    cpu: async () => await new Promise<number>(resolve => { const id = next++; waiting.set(id, resolve); child.send({ cmd: 'cpu', id }) }),
    stop: async () => await new Promise<void>(resolve => { child.once('exit', () => resolve()); child.send({ cmd: 'stop' }) })
  }
}

// ---------- load ----------
interface Variant {
  key: string
  name: string
  url: string
  headers?: Record<string, string>
  refresh?: boolean
  /** A DPoP-bound access token and the key to sign each request's proof with. */
  dpop?: { token: string, signer: ProofSigner }
}

// ---------- DPoP proofs for the load generator (node:crypto, synchronous: one per request) ----------
interface ProofSigner { sign: (htm: string, htu: string, accessToken?: string) => string }

function proofSigner (alg: 'ES256' | 'EdDSA'): ProofSigner {
  const { privateKey, publicKey } = alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519')
  const jwk = publicKey.export({ format: 'jwk' })
  const header = Buffer.from(JSON.stringify({ typ: 'dpop+jwt', alg, jwk })).toString('base64url')
  return {
    sign (htm, htu, accessToken) {
      const claims: Record<string, unknown> = { htm, htu, iat: Math.floor(Date.now() / 1000), jti: randomBytes(12).toString('base64url') }
      if (accessToken !== undefined) claims.ath = createHash('sha256').update(accessToken).digest('base64url')
      const input = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`
      const sig = alg === 'ES256' ? sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }) : sign(null, Buffer.from(input), privateKey)
      return `${input}.${sig.toString('base64url')}`
    }
  }
}

/** One proof's signature check (node:crypto verify on an imported key): the floor of any DPoP request. */
function proofVerifyFloor (alg: 'ES256' | 'EdDSA'): number {
  const signer = proofSigner(alg)
  const proofs = Array.from({ length: 3000 }, () => signer.sign('GET', 'http://127.0.0.1/api/x'))
  const [h] = proofs[0].split('.')
  const key = createPublicKey({ key: JSON.parse(Buffer.from(h, 'base64url').toString()).jwk, format: 'jwk' })
  const once = (p: string): boolean => {
    const [a, b, s] = p.split('.')
    return alg === 'ES256'
      ? verify('sha256', Buffer.from(`${a}.${b}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url'))
      : verify(null, Buffer.from(`${a}.${b}`), key, Buffer.from(s, 'base64url'))
  }
  for (let i = 0; i < 300; i++) once(proofs[i])
  const runs: number[] = []
  for (let rep = 0; rep < 5; rep++) {
    const c0 = process.cpuUsage()
    for (let i = 0; i < proofs.length; i++) once(proofs[i])
    const c = process.cpuUsage(c0)
    runs.push((c.user + c.system) / proofs.length)
  }
  return round(median(runs), 1)
}

/** tokengate's whole proof check (every §4.3 check, ath, jti memory; replay: memory) in process, per proof. */
async function proofCheckCost (): Promise<number> {
  const signer = proofSigner('ES256')
  const token = 'e30.' + 'a'.repeat(400) + '.' + 'b'.repeat(43) // an access token's size; ath is its hash
  const htu = 'http://127.0.0.1:8080/api/x'
  const reply = { header () { return reply } }
  const request = (proof: string): never => ({ headers: { dpop: proof }, method: 'GET', protocol: 'http', host: '127.0.0.1:8080', url: '/api/x' }) as never
  const runs: number[] = []
  for (let rep = 0; rep < 6; rep++) {
    const proofs = Array.from({ length: 3000 }, () => signer.sign('GET', htu, token))
    const dpop = new Dpop({ required: false, algorithms: ['ES256'], proofMaxAgeMs: 60_000, nonce: false, replay: 'memory', clockToleranceMs: 0 }, Buffer.alloc(32, 1), () => true)
    const c0 = process.cpuUsage()
    for (const p of proofs) await dpop.check(request(p), reply as never, token)
    const c = process.cpuUsage(c0)
    dpop.close()
    if (rep > 0) runs.push((c.user + c.system) / proofs.length) // the first warms up
  }
  return round(median(runs), 1)
}

interface Sample { rps: number, p50: number, p99: number, cpuPerReq: number, total: number, errors: number }

/** One batch of `seconds`; `rate` (req/s over all connections) holds the load generator to a fixed rate. */
async function batch (s: Servers, v: Variant, pool: string[], seconds: number, rate?: number): Promise<Sample> {
  const opts: autocannon.Options = { url: v.url, connections: CONNECTIONS, duration: seconds, headers: v.headers }
  if (rate !== undefined) opts.overallRate = rate
  if (v.dpop !== undefined) {
    // Proofs are signed before the batch (fresh iat, one jti each), so the load generator's signing does not take
    // the server's core during it; more are signed on the fly if the batch outruns them.
    const { token, signer } = v.dpop
    const htu = v.url
    const ready = Array.from({ length: Math.ceil((rate ?? 6000) * seconds * 1.2) }, () => signer.sign('GET', htu, token))
    let next = 0
    opts.requests = [{ setupRequest: (req) => ({ ...req, headers: { ...req.headers, authorization: `DPoP ${token}`, dpop: next < ready.length ? ready[next++] : signer.sign('GET', htu, token) } }) }]
  }
  if (v.refresh === true) {
    opts.requests = [{
      method: 'POST',
      setupRequest: (req) => ({ ...req, headers: { ...req.headers, 'content-type': 'application/json' }, body: JSON.stringify({ refreshToken: pool.shift() }) }),
      onResponse: (status, body) => { if (status === 200) pool.push(JSON.parse(body).refreshToken) }
    }]
  }
  const before = await s.cpu()
  const r = await autocannon(opts)
  const after = await s.cpu()
  const total = r.requests.total
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, cpuPerReq: (after - before) / Math.max(1, total), total, errors: r.non2xx + r.errors + r.timeouts }
}

// ---------- in-process micro-benchmarks ----------
async function verifyMicro (): Promise<{ tokengateUs: number, fastJwtCachedUs: number, fastJwtUncachedUs: number, ratio: number }> {
  const app = Fastify({ logger: false })
  await app.register(tokengate, { secret: SECRET })
  await app.ready()
  const { accessToken } = await app.tokengate.issue({ sub: 'u1', roles: ['user'] })
  const cached = createVerifier({ key: SECRET, algorithms: ['HS256'], cache: true })
  const uncached = createVerifier({ key: SECRET, algorithms: ['HS256'] })
  const N = 100_000
  const runs = { tg: [] as number[], cached: [] as number[], uncached: [] as number[] }
  for (let rep = 0; rep < 6; rep++) {
    let t0 = process.hrtime.bigint()
    for (let i = 0; i < N; i++) await app.tokengate.verify(accessToken)
    const tg = Number(process.hrtime.bigint() - t0) / N / 1000
    t0 = process.hrtime.bigint()
    for (let i = 0; i < N; i++) cached(accessToken)
    const c = Number(process.hrtime.bigint() - t0) / N / 1000
    t0 = process.hrtime.bigint()
    for (let i = 0; i < N / 10; i++) uncached(accessToken)
    const u = Number(process.hrtime.bigint() - t0) / (N / 10) / 1000
    if (rep > 0) { runs.tg.push(tg); runs.cached.push(c); runs.uncached.push(u) } // rep 0 warms up
  }
  await app.close()
  const tokengateUs = median(runs.tg)
  const fastJwtCachedUs = median(runs.cached)
  return { tokengateUs: round(tokengateUs, 2), fastJwtCachedUs: round(fastJwtCachedUs, 2), fastJwtUncachedUs: round(median(runs.uncached), 2), ratio: round(tokengateUs / fastJwtCachedUs, 2) }
}

/** tokengate.refresh() on the in-memory store: the refresh's own work (MAC, hashes, successor, JWT), no I/O. */
async function refreshCompute (): Promise<{ us: number }> {
  const app = Fastify({ logger: false })
  await app.register(tokengate, { secret: SECRET })
  await app.ready()
  const tokens: string[] = []
  for (let i = 0; i < 200; i++) tokens.push((await app.tokengate.issue({ sub: `c${i}`, roles: ['user'] })).refreshToken)
  const runs: number[] = []
  for (let rep = 0; rep < 6; rep++) {
    const N = 10_000
    const c0 = process.cpuUsage()
    for (let i = 0; i < N; i++) tokens[i % 200] = (await app.tokengate.refresh(tokens[i % 200])).refreshToken
    const c = process.cpuUsage(c0)
    if (rep > 0) runs.push((c.user + c.system) / N)
  }
  await app.close()
  return { us: round(median(runs), 1) }
}

async function propagation (redisUrl: string, trials = 200): Promise<{ p50Ms: number, p99Ms: number, maxMs: number }> {
  const keyPrefix = `bench-prop-${randomBytes(3).toString('hex')}`
  const make = async (): Promise<FastifyInstance> => {
    const app = Fastify({ logger: false })
    await app.register(tokengate, { secret: SECRET, redis: redisUrl, keyPrefix })
    await app.ready()
    return app
  }
  const a = await make()
  const b = await make()
  const times: number[] = []
  for (let i = 0; i < trials; i++) {
    const pair = await a.tokengate.issue({ sub: `p${i}` })
    await b.tokengate.verify(pair.accessToken)
    const t0 = process.hrtime.bigint()
    await a.tokengate.revokeSession(`p${i}`, pair.sessionId)
    for (;;) {
      try { await b.tokengate.verify(pair.accessToken) } catch { break }
      await tick()
    }
    times.push(Number(process.hrtime.bigint() - t0) / 1e6)
  }
  await a.close()
  await b.close()
  return { p50Ms: round(pct(times, 50), 2), p99Ms: round(pct(times, 99), 2), maxMs: round(Math.max(...times), 2) }
}

/**
 * What a mass revocation costs another instance's memory: instance B's heap (after a full GC) before and after
 * instance A revokes every session of a user with `sessions` sessions, then every session of everybody; and
 * that B refuses the revoked tokens. 0.2 published every session id, which each instance kept for an access
 * TTL (about 2.7 MB for 30,000 sessions).
 */
async function revocationMemory (redisUrl: string, sessions = 30_000): Promise<{ sessions: number, revokeAllKb: number, revokeEveryoneKb: number }> {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const keyPrefix = `bench-revmem-${randomBytes(3).toString('hex')}`
  const make = async (): Promise<FastifyInstance> => {
    const app = Fastify({ logger: false })
    await app.register(tokengate, { secret: SECRET, redis: redisUrl, keyPrefix })
    await app.ready()
    return app
  }
  const a = await make()
  const b = await make()
  const first = await a.tokengate.issue({ sub: 'heavy' })
  for (let i = 1; i < sessions; i += 500) await Promise.all(Array.from({ length: Math.min(500, sessions - i) }, async () => await a.tokengate.issue({ sub: 'heavy' })))
  const others = await Promise.all(Array.from({ length: 100 }, async (_, i) => await a.tokengate.issue({ sub: `u${i}` })))
  await b.tokengate.verify(first.accessToken)
  await b.tokengate.verify(others[0].accessToken)
  const heap = async (): Promise<number> => {
    await tick()
    gc()
    gc()
    return process.memoryUsage().heapUsed
  }
  const refused = async (token: string): Promise<void> => {
    for (;;) {
      try { await b.tokengate.verify(token) } catch { return }
      await tick()
    }
  }
  const h0 = await heap()
  await a.tokengate.revokeAll('heavy')
  await refused(first.accessToken)
  const h1 = await heap()
  await a.tokengate.revokeEveryone()
  await refused(others[0].accessToken)
  const h2 = await heap()
  await a.close()
  await b.close()
  process.stderr.write(`bench: revocation memory: revokeAll of ${sessions} sessions +${Math.round((h1 - h0) / 1024)} KB, revokeEveryone +${Math.round((h2 - h1) / 1024)} KB on another instance\n`)
  return { sessions, revokeAllKb: Math.round((h1 - h0) / 1024), revokeEveryoneKb: Math.round((h2 - h1) / 1024) }
}

// A 104-character browser user agent, as the memory goal states it.
const UA = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari'
if (UA.length !== 104) throw new Error(`bench UA is ${UA.length} characters`)

/** Redis memory per session with one session per user (ip and a 104-character user agent), at each count. */
async function memoryPerSession (redisUrl: string, counts: number[]): Promise<Array<{ sessions: number, bytesPerSession: number, keyBytes: number }>> {
  const redis = new Redis(redisUrl)
  const out = []
  for (const n of counts) {
    await redis.flushall()
    const used = async (): Promise<number> => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1])
    const store = new RedisStore({ redis, keyPrefix: 'tg' })
    const before = await used()
    const now = Date.now()
    const times = { now, refreshTtlMs: 86_400_000, maxSessionAgeMs: 30 * 86_400_000, extraMs: 600_000 }
    for (let i = 0; i < n; i += 2000) {
      const jobs = []
      for (let j = i; j < Math.min(n, i + 2000); j++) {
        jobs.push(store.create({
          userId: `user-${String(j).padStart(7, '0')}`,
          sessionId: randomBytes(16).toString('base64url'),
          refreshHash: randomBytes(16).toString('base64url'),
          refreshExpiresAt: now + 86_400_000,
          createdAt: now,
          ip: `203.0.${(j >> 8) & 255}.${j & 255}`,
          userAgent: UA,
          roles: ['user'],
          claims: {}
        }, times))
      }
      await Promise.all(jobs)
    }
    const after = await used()
    const keyBytes = Number(await redis.memory('USAGE', 'tg:{user-0000000}:s'))
    out.push({ sessions: n, bytesPerSession: Math.round((after - before) / n), keyBytes })
    process.stderr.write(`bench: memory at ${n} sessions: ${Math.round((after - before) / n)} B each\n`)
  }
  await redis.flushall()
  redis.disconnect()
  return out
}

/**
 * A heavy user against a light one, on our own redis-server: Redis's own time per refresh (SLOWLOG with a
 * threshold of 0: the time inside Redis, whatever the client's or the machine's load) for a user with one
 * session and a user with 2,000, the slowest single script of the whole run (creating, refreshing, listing
 * and revoking them), and the heavy user's memory per session.
 */
async function heavyUser (redisUrl: string, sessions = 2000, refreshes = 2000): Promise<{ sessions: number, lightUs: number, heavyUs: number, ratio: number, worstUs: number, worstCommand: string, bytesPerSession: number }> {
  const redis = new Redis(redisUrl)
  await redis.flushall()
  const store = new RedisStore({ redis, keyPrefix: 'tg', timeoutMs: 10_000 })
  const now = Date.now()
  const times = { now, refreshTtlMs: 86_400_000, maxSessionAgeMs: 30 * 86_400_000, extraMs: 600_000 }
  const id = (): string => randomBytes(16).toString('base64url')
  const hashOf = (rid: string): string => createHash('sha256').update(rid).digest('base64url').slice(0, 22)
  await redis.config('SET', 'slowlog-max-len', String(4 * (sessions + refreshes) + 100))
  await redis.config('SET', 'slowlog-log-slower-than', '0')
  await redis.slowlog('RESET')
  const make = async (userId: string, n: number): Promise<Array<{ sid: string, rid: string }>> => {
    const out = []
    for (let i = 0; i < n; i++) {
      const sid = id()
      const rid = id()
      await store.create({ userId, sessionId: sid, refreshHash: hashOf(rid), refreshExpiresAt: now + 86_400_000, createdAt: now - i, ip: '203.0.113.7', userAgent: UA, roles: ['user'], claims: {} }, times)
      out.push({ sid, rid })
    }
    return out
  }
  const light = await make('light', 1)
  const heavy = await make('heavy', sessions)
  const bytesPerSession = Math.round(Number(await redis.memory('USAGE', 'tg:{heavy}:s', 'SAMPLES', 0)) / sessions)
  const log = async (): Promise<Array<{ us: number, command: string }>> => {
    const entries = await redis.slowlog('GET', -1) as Array<[number, number, number, string[]]>
    await redis.slowlog('RESET')
    return entries.map(e => ({ us: Number(e[2]), command: String(e[3][0]).toLowerCase() })).filter(e => e.command !== 'slowlog' && e.command !== 'config')
  }
  const setup = await log()
  const refreshAll = async (userId: string, list: Array<{ sid: string, rid: string }>): Promise<number> => {
    for (let k = 0; k < refreshes; k++) {
      const s = list[k % list.length]
      const next = id()
      const r = await store.rotate({ ...times, now: Date.now(), userId, sessionId: s.sid, presentedHash: hashOf(s.rid), successorHash: hashOf(next), rotate: true, graceMs: 10_000 })
      if (r.status !== 'ok') throw new Error(`bench: a heavy-user refresh answered ${r.status}`)
      s.rid = next
    }
    const scripts = (await log()).filter(e => e.command.startsWith('eval'))
    return median(scripts.map(e => e.us))
  }
  const lightUs = await refreshAll('light', light)
  const heavyUs = await refreshAll('heavy', heavy)
  await store.list('heavy', Date.now())
  await store.revokeAll('heavy')
  const rest = await log()
  // Scripts (EVALSHA; an EVAL is a script's first run, its compilation included) and the listing's reads.
  const worst = [...setup, ...rest].filter(e => e.command === 'evalsha' || e.command === 'exec').sort((a, b) => b.us - a.us)[0] ?? { us: 0, command: '' }
  await redis.config('SET', 'slowlog-log-slower-than', '10000')
  await redis.flushall()
  redis.disconnect()
  process.stderr.write(`bench: heavy user: ${heavyUs} µs per refresh in Redis vs ${lightUs} µs, worst ${worst.us} µs (${worst.command}), ${bytesPerSession} B per session\n`)
  return { sessions, lightUs, heavyUs, ratio: round(heavyUs / lightUs, 2), worstUs: worst.us, worstCommand: worst.command, bytesPerSession }
}

/**
 * Logout on instance A → the WebSocket a client holds through instance B is closed (1008): the time from
 * the logout's answer to the client's close event, over `trials` sessions.
 */
async function revocationToSocket (redisUrl: string, trials = 200): Promise<{ p50Ms: number, p99Ms: number, maxMs: number, codes: number[] }> {
  const upstream = http.createServer((_req, res) => { res.writeHead(426); res.end() })
  const wss = new WebSocketServer({ server: upstream })
  wss.on('connection', ws => { ws.on('message', data => ws.send(data)) })
  await new Promise<void>(resolve => upstream.listen(0, '127.0.0.1', resolve))
  const upstreamUrl = `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`
  const keyPrefix = `bench-ws-${randomBytes(3).toString('hex')}`
  const gw = async (): Promise<{ app: FastifyInstance, port: number }> => {
    const app = buildGateway({
      redis: { url: redisUrl },
      tokens: { secret: SECRET, keyPrefix },
      login: { upstream: 'http://127.0.0.1:9/unused' },
      routes: [{ prefix: '/ws', upstream: upstreamUrl, websocket: true, auth: 'required' }],
      logLevel: 'silent'
    }, { logger: false })
    await app.listen({ host: '127.0.0.1', port: 0 })
    for (let i = 0; !app.tokengate.feedUp && i < 500; i++) await new Promise(resolve => setTimeout(resolve, 10))
    return { app, port: (app.server.address() as net.AddressInfo).port }
  }
  const a = await gw()
  const b = await gw()
  const times: number[] = []
  const codes = new Set<number>()
  for (let i = 0; i < trials; i++) {
    const pair = await a.app.tokengate.issue({ sub: `ws-${i}` })
    const ws = new WebSocket(`ws://127.0.0.1:${b.port}/ws/x`, { headers: { authorization: `Bearer ${pair.accessToken}` } })
    await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject) })
    ws.send('hi')
    await new Promise<void>(resolve => ws.once('message', () => resolve()))
    const closed = new Promise<number>(resolve => ws.once('close', (code: number) => resolve(code)))
    const res = await a.app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${pair.accessToken}` } })
    const t0 = process.hrtime.bigint()
    if (res.statusCode !== 204) throw new Error(`bench logout: ${res.statusCode}`)
    codes.add(await closed)
    times.push(Number(process.hrtime.bigint() - t0) / 1e6)
  }
  await a.app.close()
  await b.app.close()
  for (const ws of wss.clients) ws.terminate()
  wss.close()
  upstream.closeAllConnections()
  upstream.close()
  return { p50Ms: round(pct(times, 50), 2), p99Ms: round(pct(times, 99), 2), maxMs: round(Math.max(...times), 2), codes: [...codes] }
}

// ---------- main ----------
async function main (): Promise<void> {
  const started = Date.now()
  const redis = await startRedis()
  if (process.env.BENCH_ONLY === 'heavy') {
    // The heavy-user and mass-revocation figures alone (Redis time and memory; no load, no server process).
    try { process.stdout.write(JSON.stringify({ heavy: await heavyUser(redis.url), revocationMemory: await revocationMemory(redis.url) }, null, 2) + '\n') } finally { redis.stop() }
    return
  }
  const servers = await startServers(redis.url)
  const { ports, tokens } = servers.info
  const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` })
  // A DPoP-bound session on the DPoP gateway: logged in with a proof by the load generator's key.
  const dpopSigner = proofSigner('ES256')
  const dpopLogin = await fetch(`http://127.0.0.1:${ports.dpop}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', dpop: dpopSigner.sign('POST', `http://127.0.0.1:${ports.dpop}/auth/login`) },
    body: JSON.stringify({ username: 'bench', password: 'bench' })
  })
  const dpopPair = await dpopLogin.json() as { accessToken: string, tokenType: string }
  if (dpopPair.tokenType !== 'DPoP') throw new Error(`bench: the DPoP login gave ${JSON.stringify(dpopPair)}`)
  const variants: Variant[] = [
    { key: 'upstream', name: '1. upstream alone (bare Fastify route)', url: `http://127.0.0.1:${ports.upstream}/api/x` },
    { key: 'proxy', name: '2. @fastify/http-proxy, no auth (reference)', url: `http://127.0.0.1:${ports.proxy}/api/x` },
    { key: 'public', name: '   gateway, public route', url: `http://127.0.0.1:${ports.gateway}/pub/x` },
    { key: 'gateway', name: '3. gateway, authenticated route, HS256 (logLevel warn)', url: `http://127.0.0.1:${ports.gateway}/api/x`, headers: bearer(tokens.hs256) },
    { key: 'info', name: '   the same at logLevel info (one access-log line per request)', url: `http://127.0.0.1:${ports.info}/api/x`, headers: bearer(tokens.info) },
    { key: 'eddsa', name: '4. gateway, authenticated route, EdDSA', url: `http://127.0.0.1:${ports.eddsa}/api/x`, headers: bearer(tokens.eddsa) },
    { key: 'assertion', name: '   the same with a signed identity assertion for the upstream (routes[].assertion)', url: `http://127.0.0.1:${ports.eddsa}/asrt/x`, headers: bearer(tokens.eddsa) },
    { key: 'fwdauth', name: '   gateway, forward-auth check (GET /auth/verify for GET /api/x, HS256; nothing proxied)', url: `http://127.0.0.1:${ports.gateway}/auth/verify`, headers: { ...bearer(tokens.hs256), 'x-original-method': 'GET', 'x-original-uri': '/api/x' } },
    { key: 'dpop', name: '   gateway, DPoP-bound token + an ES256 proof per request (replay: memory)', url: `http://127.0.0.1:${ports.dpop}/api/x`, dpop: { token: dpopPair.accessToken, signer: dpopSigner } },
    { key: 'naive', name: '5. naive: @fastify/jwt + Redis EXISTS + proxy', url: `http://127.0.0.1:${ports.naive}/api/x`, headers: bearer(tokens.naive) },
    { key: 'refresh', name: '6. POST /auth/refresh (rotation, Redis)', url: `http://127.0.0.1:${ports.gateway}/auth/refresh`, refresh: true },
    { key: 'floor', name: '7. floor: bare Fastify route, one EVALSHA', url: `http://127.0.0.1:${ports.floor}/rotate`, refresh: true }
  ]
  // BENCH_ONLY=proxy,public,gateway narrows the load part to some variants (for profiling work).
  const only = process.env.BENCH_ONLY?.split(',')
  if (only !== undefined) variants.splice(0, variants.length, ...variants.filter(v => only.includes(v.key)))
  const pools: Record<string, string[]> = { refresh: [...tokens.refresh], floor: [...tokens.refresh] }
  process.stderr.write(`bench: warming up (${variants.length} variants)\n`)
  for (const v of variants) await batch(servers, v, pools[v.key] ?? [], 1)
  const samples = new Map<string, Sample[]>(variants.map(v => [v.key, []]))
  const authAdds: number[] = []
  for (let r = 0; r < ROUNDS; r++) {
    // Rotate the order each round so no variant always follows the same neighbour.
    const order = variants.map((_, i) => variants[(i + r) % variants.length])
    const got: Record<string, Sample> = {}
    for (const v of order) {
      got[v.key] = await batch(servers, v, pools[v.key] ?? [], BATCH_SEC)
      samples.get(v.key)!.push(got[v.key])
    }
    process.stderr.write(`bench: round ${r + 1}/${ROUNDS} done\n`)
  }
  // The headlines "auth adds" and "DPoP adds": many short, alternating pairs (order swapped each pair),
  // CPU per request differenced within each pair: public vs authenticated route of one gateway, and a
  // Bearer vs a DPoP-bound request.
  // A server's CPU per request grows as its request rate falls (fewer requests share each wake-up and write), so
  // when the two sides of a pair run at very different rates (a DPoP request is much slower), both run at one
  // fixed rate the slower side sustains: 70% of its median from the rounds above.
  const pairDeltas = async (base: Variant | undefined, other: Variant | undefined, out: number[], fixedRate = false): Promise<number | undefined> => {
    if (base === undefined || other === undefined) return
    const slower = Math.min(...[base, other].map(v => median(samples.get(v.key)?.map(x => x.rps) ?? [0])))
    const rate = fixedRate && slower > 0 ? Math.round(slower * 0.7) : undefined
    for (let i = 0; i < PAIRS; i++) {
      const [first, second] = i % 2 === 0 ? [base, other] : [other, base]
      const a = await batch(servers, first, [], 0.5, rate)
      const b = await batch(servers, second, [], 0.5, rate)
      const [p, q] = first === base ? [a, b] : [b, a]
      out.push(q.cpuPerReq - p.cpuPerReq)
    }
    return rate
  }
  const dpopAdds: number[] = []
  await pairDeltas(variants.find(v => v.key === 'public'), variants.find(v => v.key === 'gateway'), authAdds)
  const dpopRate = await pairDeltas(variants.find(v => v.key === 'gateway'), variants.find(v => v.key === 'dpop'), dpopAdds, true)
  // Forward auth and assertions: both sides' CPU per request from alternating pairs, and their ratio.
  const pairCosts = async (base: Variant | undefined, other: Variant | undefined): Promise<{ baseUs: number, otherUs: number, ratio: number } | undefined> => {
    if (base === undefined || other === undefined) return undefined
    const a: number[] = []
    const b: number[] = []
    for (let i = 0; i < PAIRS; i++) {
      const [first, second] = i % 2 === 0 ? [base, other] : [other, base]
      const x = await batch(servers, first, [], 0.5)
      const y = await batch(servers, second, [], 0.5)
      a.push((first === base ? x : y).cpuPerReq)
      b.push((first === base ? y : x).cpuPerReq)
    }
    const baseUs = trimmedMean(a)
    const otherUs = trimmedMean(b)
    return { baseUs: round(baseUs, 1), otherUs: round(otherUs, 1), ratio: round(otherUs / baseUs, 2) }
  }
  const fwdauth = await pairCosts(variants.find(v => v.key === 'gateway'), variants.find(v => v.key === 'fwdauth'))
  const assertion = await pairCosts(variants.find(v => v.key === 'eddsa'), variants.find(v => v.key === 'assertion'))
  await servers.stop()
  if (only !== undefined) {
    for (const v of variants) {
      const s = samples.get(v.key)!
      process.stdout.write(`${v.key.padEnd(10)} cpu µs/req ${round(trimmedMean(s.map(x => x.cpuPerReq)), 1)}  rps ${Math.round(median(s.map(x => x.rps)))}\n`)
    }
    if (authAdds.length > 0) process.stdout.write(`auth adds ${round(trimmedMean(authAdds), 1)} µs\n`)
    if (dpopAdds.length > 0) process.stdout.write(`DPoP adds ${round(trimmedMean(dpopAdds), 1)} µs\n`)
    if (fwdauth !== undefined) process.stdout.write(`forward-auth check ${fwdauth.otherUs} µs vs proxied ${fwdauth.baseUs} µs (${fwdauth.ratio}×)\n`)
    if (assertion !== undefined) process.stdout.write(`with an assertion ${assertion.otherUs} µs vs without ${assertion.baseUs} µs (${assertion.ratio}×)\n`)
    redis.stop()
    return
  }

  process.stderr.write('bench: verify micro-benchmark\n')
  const verify = await verifyMicro()
  const compute = await refreshCompute()
  const proofFloor = { es256: proofVerifyFloor('ES256'), eddsa: proofVerifyFloor('EdDSA') }
  const proofCheck = await proofCheckCost()
  process.stderr.write('bench: revocation propagation\n')
  const prop = await propagation(redis.url)
  process.stderr.write('bench: revocation to a WebSocket on another instance\n')
  const sockets = await revocationToSocket(redis.url)
  process.stderr.write('bench: Redis memory per session\n')
  const memory = await memoryPerSession(redis.url, (process.env.BENCH_MEMORY ?? '10000,100000,1000000').split(',').map(Number))
  process.stderr.write('bench: a user with 2,000 sessions\n')
  const heavy = await heavyUser(redis.url)
  process.stderr.write('bench: what a mass revocation costs another instance\n')
  const revocationMem = await revocationMemory(redis.url)
  redis.stop()

  const summary = variants.map(v => {
    const s = samples.get(v.key)!
    return {
      key: v.key,
      name: v.name,
      rps: Math.round(median(s.map(x => x.rps))),
      p50: median(s.map(x => x.p50)),
      p99: median(s.map(x => x.p99)),
      cpuUs: round(trimmedMean(s.map(x => x.cpuPerReq)), 1),
      errors: s.reduce((a, x) => a + x.errors, 0)
    }
  })
  const by = Object.fromEntries(summary.map(s => [s.key, s]))
  const ref = by.proxy
  const results = {
    date: new Date().toISOString(),
    machine: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}`,
    settings: { rounds: ROUNDS, batchSeconds: BATCH_SEC, connections: CONNECTIONS, pairs: PAIRS },
    variants: summary.map(s => ({ ...s, rpsRatio: round(s.rps / ref.rps, 2), p99Ratio: round(s.p99 / ref.p99, 2), cpuRatio: round(s.cpuUs / ref.cpuUs, 2) })),
    headline: {
      authAddsCpuUs: round(trimmedMean(authAdds), 1),
      verify,
      gatewayVsNaiveRps: round(by.gateway.rps / by.naive.rps, 2),
      refreshVsFloorRps: round(by.refresh.rps / by.floor.rps, 2),
      refreshVsFloorCpu: round(by.refresh.cpuUs / by.floor.cpuUs, 2),
      refreshComputeUs: compute.us,
      proofFloorUs: proofFloor,
      proofCheckUs: proofCheck,
      proofCheckVsVerify: round(proofCheck / proofFloor.es256, 2),
      dpopAddsUs: round(trimmedMean(dpopAdds), 1),
      dpopPairsRate: dpopRate,
      dpopAddsVsVerify: round(trimmedMean(dpopAdds) / proofFloor.es256, 2),
      forwardAuth: fwdauth,
      assertion,
      infoVsWarnCpuUs: round(by.info.cpuUs - by.gateway.cpuUs, 1),
      infoVsProxyCpu: round(by.info.cpuUs / ref.cpuUs, 2),
      warnVsProxyCpu: round(by.gateway.cpuUs / ref.cpuUs, 2),
      gatewayVsProxyRps: round(by.gateway.rps / ref.rps, 2),
      gatewayVsProxyP99: round(by.gateway.p99 / ref.p99, 2)
    },
    propagation: prop,
    sockets,
    memory,
    heavy,
    revocationMemory: revocationMem,
    seconds: Math.round((Date.now() - started) / 1000)
  }
  const table = render(results)
  process.stdout.write(table + '\n')
  writeFileSync(path.join(ROOT, 'bench', 'results.json'), JSON.stringify(results, null, 2) + '\n')
  updateReadme(table)
}

function render (r: any): string {
  const lines: string[] = []
  lines.push(`Machine: ${r.machine}; ${r.settings.rounds} rounds of ${r.settings.batchSeconds}s batches per variant, ${r.settings.connections} connections, interleaved; medians (CPU: 20%-trimmed mean). Took ${r.seconds}s.`)
  lines.push('')
  lines.push('In-process (the headline):')
  lines.push('')
  lines.push('| measure | value | target |')
  lines.push('|---|---|---|')
  lines.push(`| auth adds (authenticated − public route of one gateway, ${r.settings.pairs} alternating pairs), CPU per request | ${r.headline.authAddsCpuUs} µs | ≤ 10 µs |`)
  lines.push(`| \`tokengate.verify\` per call (revocation check included) | ${r.headline.verify.tokengateUs} µs | ≤ 1.5× fast-jwt cached |`)
  lines.push(`| fast-jwt HS256 verify, cached / uncached | ${r.headline.verify.fastJwtCachedUs} / ${r.headline.verify.fastJwtUncachedUs} µs | |`)
  lines.push(`| one DPoP proof's signature check (node:crypto verify), ES256 / EdDSA | ${r.headline.proofFloorUs.es256} / ${r.headline.proofFloorUs.eddsa} µs | the floor |`)
  lines.push(`| tokengate's whole proof check (every §4.3 check, ath, jti memory), ES256, in process | ${r.headline.proofCheckUs} µs = ${r.headline.proofCheckVsVerify}× the ES256 check | |`)
  lines.push(`| DPoP adds over a Bearer request (a proof per request, ES256; ${r.settings.pairs} alternating pairs, both at ${r.headline.dpopPairsRate} req/s), CPU per request | ${r.headline.dpopAddsUs} µs = ${r.headline.dpopAddsVsVerify}× the ES256 check | ≤ 1.3× |`)
  if (r.headline.forwardAuth != null) lines.push(`| a forward-auth check (GET /auth/verify, the route's policy, identity headers; nothing proxied) vs a proxied authenticated request through the same gateway (its upstream's share included), ${r.settings.pairs} alternating pairs, CPU per request | ${r.headline.forwardAuth.otherUs} / ${r.headline.forwardAuth.baseUs} µs = ${r.headline.forwardAuth.ratio}× | |`)
  if (r.headline.assertion != null) lines.push(`| an authenticated proxied request with a signed identity assertion vs one without (EdDSA, one gateway), ${r.settings.pairs} alternating pairs, CPU per request | ${r.headline.assertion.otherUs} / ${r.headline.assertion.baseUs} µs = ${r.headline.assertion.ratio}× | ≤ 1.1× |`)
  lines.push(`| a refresh's own work (MAC check, hashes, successor, new refresh token, JWT signature; in-memory store, no I/O), CPU per call | ${r.headline.refreshComputeUs} µs | |`)
  lines.push(`| ratio tokengate.verify / fast-jwt cached | ${r.headline.verify.ratio}× | ≤ 1.5× |`)
  lines.push(`| revocation visible on another instance, p50 / p99 (200 trials) | ${r.propagation.p50Ms} / ${r.propagation.p99Ms} ms | p99 ≤ 50 ms |`)
  lines.push(`| logout on instance A → the client's WebSocket through instance B closed (close code ${r.sockets.codes.join(', ')}), p50 / p99 (200 trials) | ${r.sockets.p50Ms} / ${r.sockets.p99Ms} ms | p99 ≤ 50 ms |`)
  for (const m of r.memory) lines.push(`| Redis memory per session at ${m.sessions.toLocaleString('en')} sessions, one per user, ip and a 104-character user agent (the user's key: ${m.keyBytes} B) | ${m.bytesPerSession} B | ≤ 400 B, flat |`)
  const h = r.heavy
  lines.push(`| a refresh's time inside Redis (SLOWLOG, median), a user with ${h.sessions.toLocaleString('en')} sessions / a user with one | ${h.heavyUs} / ${h.lightUs} µs = ${h.ratio}× | ≤ 3× |`)
  lines.push(`| the slowest single command of that run (${h.sessions.toLocaleString('en')} logins, refreshes, a listing, revokeAll) | ${h.worstUs} µs (${h.worstCommand}) | ≤ 2,000 µs |`)
  lines.push(`| Redis memory per session of the user with ${h.sessions.toLocaleString('en')} sessions | ${h.bytesPerSession} B | ≤ 400 B |`)
  const rm = r.revocationMemory
  lines.push(`| another instance's heap after revokeAll of a user with ${rm.sessions.toLocaleString('en')} sessions / then revokeEveryone (0.2: about 2.7 MB) | ${rm.revokeAllKb} / ${rm.revokeEveryoneKb} KB | flat |`)
  lines.push('')
  lines.push('Under load (autocannon on loopback; ratios against variant 2):')
  lines.push('')
  lines.push('| variant | req/s | ratio | p50 ms | p99 ms | p99 ratio | server CPU µs/req | CPU ratio | errors |')
  lines.push('|---|---|---|---|---|---|---|---|---|')
  for (const v of r.variants) lines.push(`| ${v.name.trim()} | ${v.rps} | ${v.rpsRatio} | ${v.p50} | ${v.p99} | ${v.p99Ratio} | ${v.cpuUs} | ${v.cpuRatio} | ${v.errors} |`)
  lines.push('')
  lines.push(`Gateway (3) / naive (5) req/s: ${r.headline.gatewayVsNaiveRps}× (target ≥ 1.5×). Refresh (6) / its floor (7) req/s: ${r.headline.refreshVsFloorRps}× (goal ≥ 0.6×, CPU ≤ 1.67×; CPU per request ${r.headline.refreshVsFloorCpu}×). Gateway (3) / proxy (2): req/s ${r.headline.gatewayVsProxyRps}× (target ≥ 0.95×), p99 ${r.headline.gatewayVsProxyP99}× (target ≤ 1.1×). Access log: logLevel info costs ${r.headline.infoVsWarnCpuUs} µs more CPU per proxied request than warn (${r.headline.infoVsProxyCpu}× vs ${r.headline.warnVsProxyCpu}× the plain proxy).`)
  return lines.join('\n')
}

function updateReadme (table: string): void {
  const file = path.join(ROOT, 'docs', 'performance.md')
  const text = readFileSync(file, 'utf8')
  const start = '<!-- bench:start -->'
  const end = '<!-- bench:end -->'
  const a = text.indexOf(start)
  const b = text.indexOf(end)
  if (a < 0 || b < a) return
  writeFileSync(file, text.slice(0, a + start.length) + '\n' + table + '\n' + text.slice(b))
}

main().catch((err: Error) => {
  process.stderr.write(`bench: ${err.stack ?? err.message}\n`)
  process.exit(1)
})
