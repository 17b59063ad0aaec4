// Identity headers cannot be spoofed by spelling (DESIGN §2). Rack, PHP and WSGI upstreams read `x_user_id` as
// HTTP_X_USER_ID, the same variable as `x-user-id` (the class of Puma's CVE-2024-45614). A client header whose
// name, lower-cased with `_` read as `-`, is one the gateway sets or strips never reaches an upstream, on every
// kind of route: public, optional, required, and WebSocket upgrades. Sent over a raw socket, exactly as written.
// Controls: a harmless underscored header does arrive, and the gateway's own identity headers are the real ones.
import http, { type IncomingHttpHeaders } from 'node:http'
import net, { type AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { WebSocketServer } from 'ws'
import { GATEWAY_USERS, postJson, startGateway } from '../helpers/gateway.js'

/** Headers the gateway sets or strips, as an upstream that maps `_` to `-` would read them. */
const GUARDED = ['x-user-id', 'x-user-roles', 'x-user-jkt', 'x-user-anything', 'x-session-id', 'x-request-id', 'x-tokengate-assertion', 'x-refresh-token', 'x-csrf-token', 'transfer-encoding', 'keep-alive', 'proxy-authorization']

const SPOOFS: Array<[string, string]> = [
  ['x_user_id', 'admin'],
  ['X_User_Roles', 'admin'],
  ['x_user_jkt', 'spoofed-jkt'],
  ['x_user-anything', 'spoofed'],
  ['x_session_id', 'spoofed-session'],
  ['x_request_id', 'spoofed-request'],
  ['x_tokengate_assertion', 'spoofed.assertion.jwt'],
  ['x-tokengate-assertion', 'spoofed.assertion.jwt'],
  ['x_refresh_token', 'spoofed-refresh'],
  ['x_csrf_token', 'spoofed-csrf'],
  ['transfer_encoding', 'chunked'],
  ['keep_alive', 'timeout=1'],
  ['proxy_authorization', 'Basic c3Bvb2Y6c3Bvb2Y=']
]

const normal = (name: string): string => name.toLowerCase().replace(/_/g, '-')

/** One request over a raw socket, header names exactly as written; resolves with the status line. */
async function raw (port: number, lines: string[]): Promise<string> {
  return await new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    let data = ''
    socket.setEncoding('utf8')
    socket.on('data', (c: string) => {
      data += c
      if (data.includes('\r\n\r\n')) { socket.destroy(); resolve(data.slice(0, data.indexOf('\r\n'))) }
    })
    socket.on('error', reject)
    socket.on('close', () => resolve(data.slice(0, data.indexOf('\r\n'))))
    socket.write(lines.join('\r\n') + '\r\n\r\n')
  })
}

/** An HTTP upstream that records every request's headers, with a WebSocket server on it. */
async function recordingUpstream (t: Test): Promise<{ url: string, seen: IncomingHttpHeaders[] }> {
  const seen: IncomingHttpHeaders[] = []
  const server = http.createServer((req, res) => {
    seen.push(req.headers)
    req.resume()
    req.on('end', () => { res.setHeader('content-type', 'application/json'); res.end('{}') })
  })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws, req) => { seen.push(req.headers); ws.close() })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const ws of wss.clients) ws.terminate()
    await new Promise<void>(resolve => wss.close(() => resolve()))
    server.closeAllConnections()
    await new Promise<void>(resolve => server.close(() => resolve()))
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
}

function checkReceived (t: Test, h: IncomingHttpHeaders | undefined, what: string, identity: { userId?: string }): void {
  if (h === undefined) { t.fail(`${what}: the upstream saw the request`); return }
  const spoofed = Object.keys(h).filter(name => name.includes('_') && GUARDED.some(g => normal(name) === g || (g === 'x-user-anything' && normal(name).startsWith('x-user-'))))
  t.same(spoofed, [], `${what}: no underscored spelling of a guarded header reached the upstream`)
  t.notOk(JSON.stringify(h).includes('spoofed'), `${what}: no spoofed value reached the upstream`)
  t.equal(h['x-tokengate-assertion'], undefined, `${what}: no client-sent assertion`)
  t.not(h['x-request-id'], 'spoofed-request', `${what}: the request id is the gateway's`)
  t.equal(h['x-user-id'], identity.userId, `${what}: x-user-id is ${identity.userId ?? 'absent'}`)
  t.equal(h['x-user-roles'], identity.userId === undefined ? undefined : 'user', `${what}: x-user-roles is the real one`)
  // Controls: underscored headers do cross the proxy, and so do ordinary ones.
  t.equal(h.x_custom_header, 'kept', `${what}: control: a harmless underscored header arrives`)
  t.equal(h['x-custom'], 'kept', `${what}: control: an ordinary header arrives`)
}

t.test('underscored identity headers never reach an upstream, on every kind of route', async t => {
  const up = await recordingUpstream(t)
  const gw = await startGateway(t, {
    routes: [
      { prefix: '/pub', upstream: up.url, auth: 'public' },
      { prefix: '/opt', upstream: up.url, auth: 'optional' },
      { prefix: '/req', upstream: up.url, auth: 'required' },
      { prefix: '/ws', upstream: up.url, auth: 'required', websocket: true }
    ]
  })
  const login = await postJson(gw.base, '/auth/login', { username: 'alice', password: GATEWAY_USERS.alice })
  t.equal(login.status, 200)
  const access = login.body.accessToken as string
  const spoofLines = [...SPOOFS.map(([k, v]) => `${k}: ${v}`), 'x_custom_header: kept', 'x-custom: kept']

  const cases: Array<[string, string, boolean]> = [
    ['public, anonymous', '/pub/a', false],
    ['public, with a token (no identity forwarded)', '/pub/b', true],
    ['optional, anonymous', '/opt/a', false],
    ['optional, authenticated', '/opt/b', true],
    ['required, authenticated', '/req/a', true]
  ]
  for (const [what, path, authed] of cases) {
    const before = up.seen.length
    const status = await raw(gw.port, [`GET ${path} HTTP/1.1`, `Host: 127.0.0.1:${gw.port}`, ...(authed ? [`Authorization: Bearer ${access}`] : []), ...spoofLines, 'Connection: close'])
    t.match(status, /^HTTP\/1\.1 200/, `${what}: ${status}`)
    checkReceived(t, up.seen[before], what, { userId: authed && !path.startsWith('/pub') ? 'alice' : undefined })
  }

  // A WebSocket upgrade, authenticated.
  const before = up.seen.length
  const status = await raw(gw.port, [
    'GET /ws/socket HTTP/1.1', `Host: 127.0.0.1:${gw.port}`, 'Upgrade: websocket', 'Connection: Upgrade',
    'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', `Authorization: Bearer ${access}`, ...spoofLines
  ])
  t.match(status, /^HTTP\/1\.1 101/, `WebSocket upgrade: ${status}`)
  const deadline = Date.now() + 5000
  while (up.seen.length === before && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
  checkReceived(t, up.seen[before], 'WebSocket upgrade', { userId: 'alice' })
})
