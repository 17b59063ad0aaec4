// Hostile and malformed requests at the gateway: login bodies are bounded (over 16 KB → 413, JSON nested
// deeper than 32 levels → 400) and never reach the identity service nor read as an upstream outage; and
// every error body has a code (TOKENGATE_* or Fastify's FST_*), the gateway's 404 and the proxy's 400 included.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { captureLogs } from '../helpers/logs.js'
import { postJson, rawRequest, startGateway } from '../helpers/gateway.js'
import { startEchoUpstream } from '../helpers/upstream.js'

const nested = (depth: number): string => '{"username":"alice","password":"x","deep":' + '['.repeat(depth) + ']'.repeat(depth) + '}'
const CODE = /^(TOKENGATE|FST)_[A-Z0-9_]+$/

function errorShape (t: Test, status: number, body: any, code?: string | RegExp): void {
  t.type(body, 'object', `a JSON error body (${JSON.stringify(body)})`)
  t.equal(body.statusCode, status, 'statusCode matches the status')
  t.match(body.code, code ?? CODE, `code ${String(body.code)}`)
  t.type(body.error, 'string')
  t.type(body.message, 'string')
  t.notOk('stack' in body, 'no stack')
}

t.test('login bodies with an identity service: bounded before the service is called', async t => {
  let calls = 0
  const idp = http.createServer((req, res) => {
    calls++
    req.resume()
    req.on('end', () => { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"sub":"u-ext","roles":["user"]}') })
  })
  await new Promise<void>(resolve => idp.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { idp.closeAllConnections(); await new Promise<void>(resolve => idp.close(() => resolve())) })
  const logs = captureLogs()
  const { base } = await startGateway(t, { login: { upstream: `http://127.0.0.1:${(idp.address() as AddressInfo).port}/verify` }, logLevel: 'info' }, { logger: { level: 'info', stream: logs.stream } })

  // The body: {"a": × 10,000 … (50 KB): JSON.stringify overflowed inside the try that meant "upstream down".
  const huge = '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000)
  const r1 = await postJson(base, '/auth/login', huge)
  t.equal(r1.status, 413, `50 KB nested body → 413 (${JSON.stringify(r1.body)})`)
  errorShape(t, 413, r1.body, 'FST_ERR_CTP_BODY_TOO_LARGE')

  // Deeply nested but under 16 KB: parses, and is refused for its depth.
  const deep = nested(7000)
  t.ok(deep.length < 16 * 1024, `${deep.length} bytes, under the limit`)
  const r2 = await postJson(base, '/auth/login', deep)
  t.equal(r2.status, 400, `7,000 levels deep → 400 (${JSON.stringify(r2.body)})`)
  errorShape(t, 400, r2.body, 'TOKENGATE_BAD_REQUEST')

  const r3 = await postJson(base, '/auth/login', nested(33))
  t.equal(r3.status, 400, '33 levels deep (34 with the object) → 400')
  errorShape(t, 400, r3.body, 'TOKENGATE_BAD_REQUEST')

  const flat = JSON.stringify({ username: 'alice', password: 'x'.repeat(17 * 1024) })
  const r4 = await postJson(base, '/auth/login', flat)
  t.equal(r4.status, 413, '17 KB flat body → 413')
  errorShape(t, 413, r4.body, 'FST_ERR_CTP_BODY_TOO_LARGE')

  t.equal(calls, 0, 'the identity service was never called')

  // 31 levels of nesting inside the body object (32 in all) is within bounds and reaches the service.
  const r5 = await postJson(base, '/auth/login', nested(31))
  t.equal(r5.status, 200, `32 levels deep is accepted (${JSON.stringify(r5.body)})`)
  t.equal(calls, 1, 'and reaches the identity service')

  const errorLines = logs.lines().filter(l => l.level >= 50)
  t.same(errorLines.map(l => l.msg), [], 'nothing logged at error level')
  t.notMatch(logs.text(), /upstream unavailable|UPSTREAM_UNAVAILABLE/, 'never logged as an upstream failure')
})

t.test('every error body has a code: 404, path traversal, bad JSON, media type, validation', async t => {
  const up = await startEchoUpstream()
  t.teardown(up.close)
  const { base, port } = await startGateway(t, { routes: [{ prefix: '/api', upstream: up.url, auth: 'public' }, { prefix: '/public', upstream: up.url, auth: 'public' }] })

  const notFound = await rawRequest(port, { path: '/nope/here?token=secret-looking' })
  t.equal(notFound.status, 404)
  const nf = JSON.parse(notFound.body)
  errorShape(t, 404, nf, 'FST_ERR_NOT_FOUND')
  t.equal(nf.message, 'Route GET:/nope/here not found', 'the message names method and path (not the query)')

  const traversal = await rawRequest(port, { path: '/public/../api/x' })
  t.equal(traversal.status, 400, `path traversal → 400 (${traversal.body})`)
  errorShape(t, 400, JSON.parse(traversal.body), 'TOKENGATE_BAD_REQUEST')

  const encoded = await rawRequest(port, { path: '/public/%2e%2e/api/x' })
  t.equal(encoded.status, 400, `encoded traversal → 400 (${encoded.body})`)
  errorShape(t, 400, JSON.parse(encoded.body))

  const badJson = await postJson(base, '/auth/login', '{"username": ')
  t.equal(badJson.status, 400)
  errorShape(t, 400, badJson.body, 'FST_ERR_CTP_INVALID_JSON_BODY')

  const emptyJson = await rawRequest(port, { method: 'POST', path: '/auth/login', headers: { 'content-type': 'application/json' }, body: '' })
  t.equal(emptyJson.status, 400)
  errorShape(t, 400, JSON.parse(emptyJson.body), 'FST_ERR_CTP_EMPTY_JSON_BODY')

  const media = await rawRequest(port, { method: 'POST', path: '/auth/login', headers: { 'content-type': 'text/xml' }, body: '<login/>' })
  t.equal(media.status, 415)
  errorShape(t, 415, JSON.parse(media.body), 'FST_ERR_CTP_INVALID_MEDIA_TYPE')

  const notObject = await postJson(base, '/auth/login', '["alice","pw"]')
  t.equal(notObject.status, 400, 'a login body that is not an object → 400')
  errorShape(t, 400, notObject.body, 'FST_ERR_VALIDATION')

  const badRefresh = await postJson(base, '/auth/refresh', { refreshToken: { not: 'a string' } })
  t.equal(badRefresh.status, 400)
  errorShape(t, 400, badRefresh.body, 'FST_ERR_VALIDATION')
})
