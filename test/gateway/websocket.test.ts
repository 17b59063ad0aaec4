// WebSocket routes through the gateway: the upgrade is authenticated like any request (401 before any
// upstream connection), the upstream's handshake carries the verified identity and none of the client's
// tokens or spoofed identity headers, messages flow both ways, and closing the gateway closes the sockets.
import { writeFileSync } from 'node:fs'
import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import type net from 'node:net'
import path from 'node:path'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { WebSocket, WebSocketServer, type RawData } from 'ws'
import { buildGateway, hashPassword } from '../../gateway/index.js'
import { SECRET } from '../helpers/app.js'
import { fakeClock } from '../helpers/clock.js'
import { deletePrefix, redisUrl, uniquePrefix } from '../helpers/redis.js'
import { removeTempDir, tempDir } from '../helpers/spawn.js'

interface Pair { accessToken: string, refreshToken: string, sessionId: string }
interface Handshake { url: string, headers: IncomingHttpHeaders }
interface WsUpstream { origin: string, handshakes: Handshake[], sockets: Set<WebSocket> }

const ALICE = { username: 'u-alice', password: 'wonderland' }
const aliceHash = await hashPassword(ALICE.password)
const BOUND_MS = 5000

/** Rejects after `ms` with `what`: a generous "did not hang" bound. */
async function within<T> (ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const limit = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms) })
  try {
    return await Promise.race([p, limit])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * A WebSocket echo server (ws on node:http) that records each upgrade's URL and headers and, asked
 * "headers?", answers them as JSON.
 */
async function startWsUpstream (t: Test): Promise<WsUpstream> {
  const handshakes: Handshake[] = []
  const sockets = new Set<WebSocket>()
  const server = http.createServer((_req, res) => { res.writeHead(426); res.end() })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
    const hs = { url: req.url ?? '', headers: req.headers }
    handshakes.push(hs)
    sockets.add(ws)
    ws.on('close', () => sockets.delete(ws))
    ws.on('message', (data: RawData, binary: boolean) => {
      if (!binary && data.toString() === 'headers?') ws.send(JSON.stringify(hs))
      else ws.send(data, { binary })
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const ws of wss.clients) ws.terminate()
    await new Promise<void>(resolve => wss.close(() => resolve()))
    server.closeAllConnections()
    await new Promise<void>(resolve => server.close(() => resolve()))
  })
  return { origin: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, handshakes, sockets }
}

interface Gateway { app: FastifyInstance, http: string, ws: string, close: () => Promise<void> }

/** A gateway on the shared Redis; `shared.prefix` puts a second instance on the first one's sessions. */
async function startGateway (t: Test, routes: unknown[], shared?: { prefix: string }): Promise<Gateway & { prefix: string }> {
  const url = await redisUrl()
  const prefix = shared?.prefix ?? uniquePrefix('gw-ws')
  const dir = tempDir('ws')
  const usersFile = path.join(dir, 'users.json')
  writeFileSync(usersFile, JSON.stringify([{ sub: ALICE.username, roles: ['user'], passwordHash: aliceHash }]))
  const app = buildGateway({
    redis: { url },
    tokens: { secret: SECRET, keyPrefix: prefix },
    login: { usersFile },
    routes,
    logLevel: 'silent'
  }, { logger: false })
  let closing: Promise<void> | undefined
  const close = async (): Promise<void> => { closing ??= app.close(); await closing }
  t.teardown(async () => {
    await close()
    const redis = new Redis(url)
    await deletePrefix(redis, prefix)
    redis.disconnect()
    removeTempDir(dir)
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as net.AddressInfo).port
  return { app, http: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}`, close, prefix }
}

async function login (base: string): Promise<Pair> {
  const res = await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ALICE) })
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${await res.text()}`)
  return await res.json() as Pair
}

/** Opens a client; resolves once open, or rejects with the refused upgrade's status and body. */
async function connect (t: Test, url: string, headers: Record<string, string> = {}): Promise<WebSocket> {
  const ws = new WebSocket(url, { headers })
  t.teardown(() => ws.terminate())
  return await within(BOUND_MS, `connect ${url}`, new Promise<WebSocket>((resolve, reject) => {
    ws.once('open', () => resolve(ws))
    ws.once('unexpected-response', (_req, res: IncomingMessage) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => reject(Object.assign(new Error(`upgrade refused: ${String(res.statusCode)}`), { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') })))
    })
    ws.once('error', reject)
  }))
}

interface Refused { status?: number, headers?: IncomingHttpHeaders, body?: string }

async function refused (t: Test, url: string, headers: Record<string, string> = {}): Promise<Refused> {
  try {
    await connect(t, url, headers)
  } catch (err) {
    return err as Refused
  }
  t.fail('the upgrade was accepted')
  return {}
}

async function nextMessage (ws: WebSocket): Promise<{ data: Buffer, binary: boolean }> {
  return await within(BOUND_MS, 'message', new Promise(resolve => {
    ws.once('message', (data: RawData, binary: boolean) => resolve({ data: Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer), binary }))
  }))
}

async function upstreamHandshake (ws: WebSocket): Promise<Handshake> {
  ws.send('headers?')
  return JSON.parse((await nextMessage(ws)).data.toString('utf8')) as Handshake
}

t.test('auth: required WebSocket route', async t => {
  const up = await startWsUpstream(t)
  const gw = await startGateway(t, [{ prefix: '/ws', upstream: up.origin, websocket: true, auth: 'required' }])
  const pair = await login(gw.http)

  await t.test('without a token the upgrade is refused with 401 and the upstream is never contacted', async t => {
    const r = await refused(t, `${gw.ws}/ws/chat`)
    t.equal(r.status, 401, 'unexpected-response 401')
    t.match(JSON.parse(r.body ?? '{}'), { statusCode: 401, code: 'TOKENGATE_TOKEN_MISSING' })
    t.match(r.headers?.['www-authenticate'], /^Bearer/)
    const bad = await refused(t, `${gw.ws}/ws/chat`, { authorization: 'Bearer not.a.token' })
    t.equal(bad.status, 401, 'an invalid token is refused too')
    t.match(JSON.parse(bad.body ?? '{}'), { code: 'TOKENGATE_TOKEN_INVALID' })
    t.equal(up.handshakes.length, 0, 'no upgrade reached the upstream')
  })

  await t.test('with Authorization: Bearer it connects, echoes, and the upstream sees the identity but not the token', async t => {
    const ws = await connect(t, `${gw.ws}/ws/chat?room=7`, {
      authorization: `Bearer ${pair.accessToken}`,
      'x-user-id': 'evil',
      'x-user-roles': 'admin',
      'x-user-email': 'evil@example.com',
      'x-session-id': 'not-mine',
      'x-refresh-token': pair.refreshToken,
      'x-request-id': 'ws-req.1',
      cookie: `tg_access=${pair.accessToken}; theme=dark`
    })
    ws.send('hello')
    const text = await nextMessage(ws)
    t.equal(text.data.toString('utf8'), 'hello', 'a text message is echoed')
    t.equal(text.binary, false)
    const bytes = Buffer.from([0, 1, 2, 250, 255])
    ws.send(bytes)
    const bin = await nextMessage(ws)
    t.ok(bin.data.equals(bytes), 'a binary message is echoed byte for byte')
    t.equal(bin.binary, true)

    const hs = await upstreamHandshake(ws)
    t.equal(hs.url, '/ws/chat?room=7', 'path and query reach the upstream unchanged')
    t.equal(hs.headers['x-user-id'], ALICE.username, 'x-user-id is the verified user, not the spoofed one')
    t.equal(hs.headers['x-user-roles'], 'user')
    t.equal(hs.headers['x-session-id'], pair.sessionId)
    t.equal(hs.headers['x-request-id'], 'ws-req.1', 'the client\'s well-formed request id')
    t.equal(hs.headers.authorization, undefined, 'no Authorization header')
    t.equal(hs.headers['x-refresh-token'], undefined, 'no x-refresh-token header')
    t.equal(hs.headers['x-user-email'], undefined, 'client-sent x-user-* removed')
    t.equal(hs.headers.cookie, 'theme=dark', 'token cookies dropped, other cookies kept')
    t.notMatch(JSON.stringify(hs.headers), pair.accessToken, 'the access token appears nowhere in the upstream handshake')
    t.equal(up.handshakes.length, 1)
    ws.close()
  })

  await t.test('a request id that is not well-formed is replaced by a new one', async t => {
    const ws = await connect(t, `${gw.ws}/ws/x`, { authorization: `Bearer ${pair.accessToken}`, 'x-request-id': 'has spaces!' })
    const hs = await upstreamHandshake(ws)
    t.match(hs.headers['x-request-id'], /^[A-Za-z0-9._-]{1,128}$/)
    t.not(hs.headers['x-request-id'], 'has spaces!')
    ws.close()
  })
})

t.test('auth: public WebSocket route works without a token and passes no identity', async t => {
  const up = await startWsUpstream(t)
  const gw = await startGateway(t, [{ prefix: '/live', upstream: up.origin, websocket: true, auth: 'public' }])
  const pair = await login(gw.http)

  const anon = await connect(t, `${gw.ws}/live/feed`, { 'x-user-id': 'evil', 'x-session-id': 'spoof' })
  anon.send('ping-1')
  t.equal((await nextMessage(anon)).data.toString('utf8'), 'ping-1', 'echoed without a token')
  let hs = await upstreamHandshake(anon)
  t.equal(hs.url, '/live/feed')
  t.equal(hs.headers['x-user-id'], undefined, 'no x-user-id (the spoofed one removed)')
  t.equal(hs.headers['x-user-roles'], undefined)
  t.equal(hs.headers['x-session-id'], undefined, 'no x-session-id (the spoofed one removed)')
  t.match(hs.headers['x-request-id'], /^[A-Za-z0-9._-]{1,128}$/, 'x-request-id on every route')
  anon.close()

  // A token on a public route still passes no identity, and is not forwarded.
  const withToken = await connect(t, `${gw.ws}/live/feed`, { authorization: `Bearer ${pair.accessToken}` })
  hs = await upstreamHandshake(withToken)
  t.equal(hs.headers['x-user-id'], undefined, 'public routes get no identity even with a token')
  t.equal(hs.headers['x-session-id'], undefined)
  t.equal(hs.headers.authorization, undefined)
  withToken.close()
})

t.test('closing the gateway closes the WebSocket connections (bounded)', async t => {
  const up = await startWsUpstream(t)
  const gw = await startGateway(t, [
    { prefix: '/ws', upstream: up.origin, websocket: true, auth: 'required' },
    { prefix: '/live', upstream: up.origin, websocket: true, auth: 'public' }
  ])
  const pair = await login(gw.http)
  const a = await connect(t, `${gw.ws}/ws/a`, { authorization: `Bearer ${pair.accessToken}` })
  const b = await connect(t, `${gw.ws}/live/b`)
  for (const ws of [a, b]) {
    ws.send('still there?')
    t.equal((await nextMessage(ws)).data.toString('utf8'), 'still there?')
  }
  t.equal(up.sockets.size, 2, 'two upstream connections open')
  const closed = (ws: WebSocket): Promise<number> => new Promise(resolve => {
    if (ws.readyState === WebSocket.CLOSED) resolve(-1)
    else ws.once('close', (code: number) => resolve(code))
  })
  const aClosed = closed(a)
  const bClosed = closed(b)
  await within(BOUND_MS, 'app.close()', gw.close())
  t.pass('the gateway closed with WebSockets open')
  await within(BOUND_MS, 'client sockets closing', Promise.all([aClosed, bClosed]))
  t.equal(a.readyState, WebSocket.CLOSED, 'client a closed')
  t.equal(b.readyState, WebSocket.CLOSED, 'client b closed')
  const deadline = Date.now() + BOUND_MS
  while (up.sockets.size > 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
  t.equal(up.sockets.size, 0, 'the upstream connections were closed too')
})

t.test('a revoked session\'s WebSockets are closed (1008 "session revoked") on whichever instance holds them', async t => {
  const up = await startWsUpstream(t)
  const routes = [{ prefix: '/ws', upstream: up.origin, websocket: true, auth: 'required' }]
  const a = await startGateway(t, routes)
  const b = await startGateway(t, routes, { prefix: a.prefix })
  const closed = async (ws: WebSocket): Promise<{ code: number, reason: string }> =>
    await within(BOUND_MS, 'close', new Promise(resolve => ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() }))))

  // Logout on B closes the socket A holds, and the upstream's side too.
  const pair = await login(a.http)
  const ws = await connect(t, `${a.ws}/ws/chat`, { authorization: `Bearer ${pair.accessToken}` })
  ws.send('ping?')
  t.equal((await nextMessage(ws)).data.toString(), 'ping?', 'the socket works')
  const other = await login(a.http)
  const bystander = await connect(t, `${a.ws}/ws/chat`, { authorization: `Bearer ${other.accessToken}` })
  bystander.send('up?')
  await nextMessage(bystander) // an echo proves its upstream link is up
  t.equal(up.sockets.size, 2, 'two upstream sockets, one per client')
  const gone = closed(ws)
  const out = await fetch(`${b.http}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(out.status, 204, 'logout on B')
  t.same(await gone, { code: 1008, reason: 'session revoked' }, 'the client on A gets 1008 session revoked')
  await within(BOUND_MS, 'upstream side closed', (async () => { while (up.sockets.size > 1) await new Promise(resolve => setTimeout(resolve, 20)) })())
  t.pass('the upstream side of that socket is closed too')
  bystander.send('still?')
  t.equal((await nextMessage(bystander)).data.toString(), 'still?', "another session's socket stays open")

  // logout-all on A closes every socket of the user, here one held by B.
  const third = await login(b.http)
  const onB = await connect(t, `${b.ws}/ws/chat`, { authorization: `Bearer ${third.accessToken}` })
  const goneB = closed(onB)
  const goneBystander = closed(bystander)
  const all = await fetch(`${a.http}/auth/logout-all`, { method: 'POST', headers: { authorization: `Bearer ${other.accessToken}` } })
  t.equal(all.status, 204)
  t.same(await goneB, { code: 1008, reason: 'session revoked' }, 'logout-all closes the socket on B')
  t.same(await goneBystander, { code: 1008, reason: 'session revoked' }, 'and the one on A')

  // revokeEveryone on A closes every socket on B; a socket opened after it stays.
  const [p1, p2] = [await login(b.http), await login(b.http)]
  const s1 = await connect(t, `${b.ws}/ws/chat`, { authorization: `Bearer ${p1.accessToken}` })
  const s2 = await connect(t, `${b.ws}/ws/chat`, { authorization: `Bearer ${p2.accessToken}` })
  const [g1, g2] = [closed(s1), closed(s2)]
  await a.app.tokengate.revokeEveryone()
  t.same(await g1, { code: 1008, reason: 'session revoked' }, 'revokeEveryone closes a socket on B')
  t.same(await g2, { code: 1008, reason: 'session revoked' }, 'and another session\'s')
  const later = await login(b.http)
  const s3 = await connect(t, `${b.ws}/ws/chat`, { authorization: `Bearer ${later.accessToken}` })
  s3.send('after?')
  t.equal((await nextMessage(s3)).data.toString(), 'after?', 'a socket of a login after it works')
})

t.test('a socket outlives its upgrade\'s access token, never its session: logout-all and revokeEveryone elsewhere close it', async t => {
  const clock = fakeClock(t)
  const up = await startWsUpstream(t)
  const routes = [{ prefix: '/ws', upstream: up.origin, websocket: true, auth: 'required' }]
  const a = await startGateway(t, routes)
  const b = await startGateway(t, routes, { prefix: a.prefix })
  const closed = async (ws: WebSocket): Promise<{ code: number, reason: string }> =>
    await within(BOUND_MS, 'close', new Promise(resolve => ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() }))))
  for (const revoke of ['logout-all', 'revokeEveryone'] as const) {
    const pair = await login(b.http)
    const ws = await connect(t, `${b.ws}/ws/chat`, { authorization: `Bearer ${pair.accessToken}` })
    const gone = closed(ws)
    clock.tick(11 * 60_000) // past the access token's 10 minutes
    await t.rejects(b.app.tokengate.verify(pair.accessToken), { code: 'TOKENGATE_TOKEN_EXPIRED' }, `${revoke}: the upgrade's token has expired`)
    ws.send('still?')
    t.equal((await nextMessage(ws)).data.toString(), 'still?', `${revoke}: the socket works on (an expiry does not close it)`)
    if (revoke === 'revokeEveryone') {
      await a.app.tokengate.revokeEveryone()
    } else {
      const fresh = await login(a.http) // a new login of the same user, to log out everywhere with
      const out = await fetch(`${a.http}/auth/logout-all`, { method: 'POST', headers: { authorization: `Bearer ${fresh.accessToken}` } })
      t.equal(out.status, 204)
    }
    t.same(await gone, { code: 1008, reason: 'session revoked' }, `${revoke} on A closes the socket B holds`)
  }
})
