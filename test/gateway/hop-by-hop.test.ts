// Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy, in either direction: Connection and the
// headers it names, Keep-Alive, Proxy-Authenticate, Proxy-Authorization, TE, Trailer, Transfer-Encoding and
// Upgrade (outside a WebSocket upgrade). A client's `Connection: close` closes its connection.
import http, { type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { rawRequest, startGateway } from '../helpers/gateway.js'

t.test('hop-by-hop headers are dropped both ways, and Connection: close closes the client connection', async t => {
  const received: IncomingHttpHeaders[] = []
  const up = http.createServer((req, res) => {
    received.push(req.headers)
    req.resume()
    req.on('end', () => {
      res.writeHead(200, {
        'content-type': 'application/json',
        connection: 'keep-alive, x-hop-res',
        'keep-alive': 'timeout=5',
        'x-hop-res': 'named in Connection',
        'proxy-authenticate': 'Basic realm="upstream"',
        'x-end-to-end': 'kept'
      })
      res.end('{"ok":true}')
    })
  })
  await new Promise<void>(resolve => up.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { up.closeAllConnections(); await new Promise<void>(resolve => up.close(() => resolve())) })
  const upstream = `http://127.0.0.1:${(up.address() as AddressInfo).port}`
  const { port } = await startGateway(t, { routes: [{ prefix: '/pub', upstream, auth: 'public' }] })

  const res = await rawRequest(port, {
    path: '/pub/x',
    headers: {
      connection: 'close, x-hop-req',
      'x-hop-req': 'named in Connection',
      'keep-alive': 'timeout=5',
      'proxy-authorization': 'Basic dXNlcjpwdw==',
      te: 'trailers',
      upgrade: 'h2c',
      'x-end-to-end': 'kept'
    }
  })
  t.equal(res.status, 200, res.body)

  const got = received[0]
  t.ok(got !== undefined, 'the upstream was called')
  for (const name of ['keep-alive', 'proxy-authorization', 'te', 'upgrade', 'x-hop-req']) {
    t.equal(got[name], undefined, `request: ${name} not forwarded`)
  }
  t.notMatch(String(got.connection ?? ''), /close|x-hop-req/, `request: the client's Connection not forwarded (${String(got.connection)})`)
  t.equal(got['x-end-to-end'], 'kept', 'request: end-to-end headers are forwarded')

  for (const name of ['keep-alive', 'proxy-authenticate', 'x-hop-res']) {
    t.equal(res.headers[name], undefined, `response: ${name} not forwarded`)
  }
  t.equal(res.headers.connection, 'close', "response: Connection: close, as the client asked (not the upstream's keep-alive)")
  t.equal(res.headers['x-end-to-end'], 'kept', 'response: end-to-end headers are forwarded')
  let timer: NodeJS.Timeout | undefined
  const closed = await Promise.race([res.closed.then(() => true), new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(false), 3000) })])
  clearTimeout(timer)
  t.ok(closed, 'the gateway closed the client connection')
})
