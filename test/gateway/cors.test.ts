// CORS in the gateway (`cors: { origins }`, through @fastify/cors): a browser app on another origin can
// preflight, send the client's headers (authorization, x-refresh-token, x-csrf-token, dpop) with credentials,
// and read what the refresh hook sends back (x-access-token, x-refresh-token, x-request-id, dpop-nonce),
// 401s included. Other origins get no CORS headers, and a preflight never reaches an upstream.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { rawRequest, startGateway } from '../helpers/gateway.js'

const APP = 'http://app.example:5173'

t.test('cors: { origins }: preflight, credentials, allowed and exposed headers', async t => {
  let upstreamCalls = 0
  const up = http.createServer((req, res) => { upstreamCalls++; req.resume(); res.end('{}') })
  await new Promise<void>(resolve => up.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { up.closeAllConnections(); await new Promise<void>(resolve => up.close(() => resolve())) })
  const upstream = `http://127.0.0.1:${(up.address() as AddressInfo).port}`
  const { port } = await startGateway(t, { cors: { origins: [APP] }, routes: [{ prefix: '/api', upstream }, { prefix: '/pub', upstream, auth: 'public' }] })
  const counting = (): number => upstreamCalls
  const preflight = await rawRequest(port, {
    method: 'OPTIONS',
    path: '/api/orders',
    headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, x-refresh-token, x-csrf-token, dpop, content-type' }
  })
  t.equal(preflight.status, 204, `the preflight is answered (${preflight.status} ${preflight.body})`)
  t.equal(preflight.headers['access-control-allow-origin'], APP)
  t.equal(preflight.headers['access-control-allow-credentials'], 'true')
  const allowed = String(preflight.headers['access-control-allow-headers']).split(',').map(s => s.trim())
  for (const h of ['authorization', 'x-refresh-token', 'x-csrf-token', 'dpop', 'content-type']) t.ok(allowed.includes(h), `allows ${h}`)
  t.match(String(preflight.headers['access-control-allow-methods']), /POST/)
  t.equal(counting(), 0, 'the preflight did not reach the upstream')

  const denied = await rawRequest(port, { path: '/api/orders', headers: { origin: APP } })
  t.equal(denied.status, 401, 'a request without a token is still refused')
  t.equal(denied.headers['access-control-allow-origin'], APP, 'and the browser may read the 401')
  const exposed = String(denied.headers['access-control-expose-headers']).split(',').map(s => s.trim())
  for (const h of ['x-access-token', 'x-refresh-token', 'x-request-id', 'dpop-nonce']) t.ok(exposed.includes(h), `exposes ${h}`)

  const pub = await rawRequest(port, { path: '/pub/x', headers: { origin: APP } })
  t.equal(pub.status, 200)
  t.equal(counting(), 1, 'a real request reaches the upstream (the count works)')
  t.equal(pub.headers['access-control-allow-origin'], APP, 'proxied answers carry the CORS headers too')

  const other = await rawRequest(port, { method: 'OPTIONS', path: '/api/orders', headers: { origin: 'http://evil.example', 'access-control-request-method': 'GET' } })
  t.equal(other.headers['access-control-allow-origin'], undefined, 'another origin gets no CORS headers')
  const otherGet = await rawRequest(port, { path: '/auth/sessions', headers: { origin: 'http://evil.example' } })
  t.equal(otherGet.headers['access-control-allow-origin'], undefined)
})

t.test('without cors, no CORS headers at all', async t => {
  const { port } = await startGateway(t)
  const res = await rawRequest(port, { path: '/auth/sessions', headers: { origin: APP } })
  t.equal(res.headers['access-control-allow-origin'], undefined)
})
