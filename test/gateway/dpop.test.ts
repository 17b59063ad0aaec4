// DPoP through the gateway, over real sockets: `tokens: { dpop: {} }` turns it on; a login with a proof whose
// htu is the gateway URL the client used binds the session; the bound access token works through the proxy
// with a proof for the gateway URL (not the upstream's); the upstream never receives the DPoP header (unless
// the route sets forwardToken), and receives x-user-jkt (the key thumbprint) on bound requests only, a
// client-sent x-user-jkt being dropped; refusals (Bearer downgrade, the upstream's URL as htu, two DPoP
// headers, a replay) are 401 TOKENGATE_DPOP_INVALID with the DPoP challenge; behind trustProxy, htu is the
// public URL from X-Forwarded-Proto/Host.
import type { IncomingHttpHeaders } from 'node:http'
import t, { type Test } from 'tap'
import { assertRefused, jktOf, newKey, payloadOf, proof, type KeyPair } from '../helpers/dpop.js'
import { GATEWAY_USERS, rawRequest, startGateway, type TestGateway } from '../helpers/gateway.js'
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js'

interface Echo { method: string, url: string, headers: IncomingHttpHeaders }
interface Pair { accessToken: string, refreshToken: string, tokenType: string, sessionId: string }

async function echoUpstream (t: Test): Promise<EchoUpstream> {
  const up = await startEchoUpstream()
  t.teardown(async () => { await up.close() })
  return up
}

/** A gateway with DPoP on, routes /api (auth required) and /fwd (forwardToken) to the echo upstream. */
async function dpopGateway (t: Test, extra: Record<string, unknown> = {}): Promise<{ gw: TestGateway, up: EchoUpstream }> {
  const up = await echoUpstream(t)
  const gw = await startGateway(t, {
    tokens: { dpop: {} },
    routes: [{ prefix: '/api', upstream: up.url }, { prefix: '/fwd', upstream: up.url, forwardToken: true }],
    ...extra
  }, { redis: true })
  return { gw, up }
}

async function post (url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number, headers: Headers, body: string }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  return { status: res.status, headers: res.headers, body: await res.text() }
}

async function login (gw: TestGateway, key?: KeyPair): Promise<Pair> {
  const headers: Record<string, string> = key === undefined ? {} : { dpop: await proof(key, 'POST', `${gw.base}/auth/login`) }
  const res = await post(`${gw.base}/auth/login`, { username: 'alice', password: GATEWAY_USERS.alice }, headers)
  if (res.status !== 200) throw new Error(`gateway login failed: ${res.status} ${res.body}`)
  return JSON.parse(res.body)
}

async function get (gw: TestGateway, path: string, headers: Record<string, string>): Promise<{ statusCode: number, headers: Record<string, unknown>, body: string }> {
  const res = await rawRequest(gw.port, { path, headers })
  return { statusCode: res.status, headers: res.headers, body: res.body }
}

t.test('a bound login through the gateway; the bound token works with a proof for the gateway URL; the upstream gets x-user-jkt and no DPoP header', async t => {
  const { gw } = await dpopGateway(t)
  const key = await newKey('ES256')
  const jkt = await jktOf(key)
  const pair = await login(gw, key)
  t.equal(pair.tokenType, 'DPoP', 'the gateway login with a proof is DPoP-bound')
  t.same(payloadOf(pair.accessToken).cnf, { jkt }, 'its access token carries cnf.jkt')

  const dpop = await proof(key, 'GET', `${gw.base}/api/items`, { accessToken: pair.accessToken })
  const res = await get(gw, '/api/items?page=2', { authorization: `DPoP ${pair.accessToken}`, dpop, 'x-user-jkt': 'forged-by-the-client' })
  t.equal(res.statusCode, 200, `proxied with a proof for ${gw.base}/api/items: ${res.body}`)
  const seen: Echo = JSON.parse(res.body)
  t.equal(seen.url, '/api/items?page=2', 'the upstream got the path and query')
  t.equal(seen.headers['x-user-jkt'], jkt, 'the upstream gets x-user-jkt, the thumbprint (not the client-sent value)')
  t.equal(seen.headers['x-user-id'], 'alice')
  t.equal(seen.headers.dpop, undefined, 'the upstream never receives the DPoP header')
  t.equal(seen.headers.authorization, undefined, 'nor the access token')

  const edKey = await newKey('Ed25519')
  const edPair = await login(gw, edKey)
  const ed = await get(gw, '/api/x', { authorization: `DPoP ${edPair.accessToken}`, dpop: await proof(edKey, 'GET', `${gw.base}/api/x`, { accessToken: edPair.accessToken }) })
  t.equal(ed.statusCode, 200, `an Ed25519-bound token through the proxy: ${ed.body}`)
  t.equal((JSON.parse(ed.body) as Echo).headers['x-user-jkt'], await jktOf(edKey), 'x-user-jkt is that key\'s thumbprint')
})

t.test('forwardToken: true forwards the DPoP header (and the token) to the upstream', async t => {
  const { gw } = await dpopGateway(t)
  const key = await newKey('Ed25519')
  const pair = await login(gw, key)
  const dpop = await proof(key, 'GET', `${gw.base}/fwd/x`, { accessToken: pair.accessToken })
  const res = await get(gw, '/fwd/x', { authorization: `DPoP ${pair.accessToken}`, dpop })
  t.equal(res.statusCode, 200, res.body)
  const seen: Echo = JSON.parse(res.body)
  t.equal(seen.headers.dpop, dpop, 'the upstream of a forwardToken route gets the DPoP proof')
  t.equal(seen.headers.authorization, `DPoP ${pair.accessToken}`, 'and the Authorization header')
  t.equal(seen.headers['x-user-jkt'], await jktOf(key))
})

t.test('Bearer requests through the gateway: no x-user-jkt upstream, and a client-sent one is removed', async t => {
  const { gw } = await dpopGateway(t)
  const pair = await login(gw)
  t.equal(pair.tokenType, 'Bearer', 'a login without a proof is Bearer')
  const res = await get(gw, '/api/x', { authorization: `Bearer ${pair.accessToken}`, 'x-user-jkt': 'forged-by-the-client' })
  t.equal(res.statusCode, 200, res.body)
  const seen: Echo = JSON.parse(res.body)
  t.equal(seen.headers['x-user-jkt'], undefined, 'no x-user-jkt for a Bearer request (the client-sent one was dropped)')
  t.equal(seen.headers['x-user-id'], 'alice')
})

t.test('refusals through the gateway: Bearer downgrade, the upstream URL as htu, two DPoP headers, a replayed proof', async t => {
  const { gw, up } = await dpopGateway(t)
  const key = await newKey('ES256')
  const pair = await login(gw, key)

  const bearer = await get(gw, '/api/x', { authorization: `Bearer ${pair.accessToken}` })
  assertRefused(t, bearer, 'the bound token as Bearer through the proxy', { secrets: [pair.accessToken] })

  const upstreamUrl = await proof(key, 'GET', `${up.url}/api/x`, { accessToken: pair.accessToken })
  assertRefused(t, await get(gw, '/api/x', { authorization: `DPoP ${pair.accessToken}`, dpop: upstreamUrl }), 'a proof whose htu is the upstream\'s URL', { secrets: [upstreamUrl, pair.accessToken] })

  const a = await proof(key, 'GET', `${gw.base}/api/x`, { accessToken: pair.accessToken })
  const b = await proof(key, 'GET', `${gw.base}/api/x`, { accessToken: pair.accessToken })
  // Two header lines on the wire (node:http sends an array as repeated lines).
  const two = await get(gw, '/api/x', { authorization: `DPoP ${pair.accessToken}`, dpop: [a, b] as unknown as string })
  assertRefused(t, two, 'two DPoP header lines', { secrets: [a, b, pair.accessToken] })

  const once = await get(gw, '/api/x', { authorization: `DPoP ${pair.accessToken}`, dpop: a })
  t.equal(once.statusCode, 200, `one of them alone works: ${once.body}`)
  assertRefused(t, await get(gw, '/api/x', { authorization: `DPoP ${pair.accessToken}`, dpop: a }), 'the same proof again (a replay)', { secrets: [a, pair.accessToken] })

  const badLogin = await post(`${gw.base}/auth/login`, { username: 'alice', password: GATEWAY_USERS.alice }, { dpop: upstreamUrl })
  assertRefused(t, { statusCode: badLogin.status, headers: { 'www-authenticate': badLogin.headers.get('www-authenticate') }, body: badLogin.body }, 'a gateway login with an invalid proof', { secrets: [upstreamUrl] })
})

t.test('POST /auth/refresh through the gateway: a bound session refreshes only with a proof for the gateway URL', async t => {
  const { gw } = await dpopGateway(t)
  const key = await newKey('Ed25519')
  const pair = await login(gw, key)
  const bare = await post(`${gw.base}/auth/refresh`, { refreshToken: pair.refreshToken })
  assertRefused(t, { statusCode: bare.status, headers: { 'www-authenticate': bare.headers.get('www-authenticate') }, body: bare.body }, 'a refresh without a proof', { secrets: [pair.refreshToken] })
  const ok = await post(`${gw.base}/auth/refresh`, { refreshToken: pair.refreshToken }, { dpop: await proof(key, 'POST', `${gw.base}/auth/refresh`) })
  t.equal(ok.status, 200, ok.body)
  const next: Pair = JSON.parse(ok.body)
  t.equal(next.tokenType, 'DPoP')
  const res = await get(gw, '/api/x', { authorization: `DPoP ${next.accessToken}`, dpop: await proof(key, 'GET', `${gw.base}/api/x`, { accessToken: next.accessToken }) })
  t.equal(res.statusCode, 200, `the refreshed token through the proxy: ${res.body}`)
})

t.test('a gateway behind a proxy (trustProxy: true): htu is the public URL the client used', async t => {
  const { gw } = await dpopGateway(t, { trustProxy: true })
  const key = await newKey('ES256')
  const forwarded = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'api.example.com' }
  const res = await post(`${gw.base}/auth/login`, { username: 'alice', password: GATEWAY_USERS.alice }, { ...forwarded, dpop: await proof(key, 'POST', 'https://api.example.com/auth/login') })
  t.equal(res.status, 200, `a login proof for the public URL: ${res.body}`)
  const pair: Pair = JSON.parse(res.body)
  const ok = await get(gw, '/api/x', { ...forwarded, authorization: `DPoP ${pair.accessToken}`, dpop: await proof(key, 'GET', 'https://api.example.com/api/x', { accessToken: pair.accessToken }) })
  t.equal(ok.statusCode, 200, `a proof for https://api.example.com/api/x through the proxy: ${ok.body}`)
  const internal = await proof(key, 'GET', `${gw.base}/api/x`, { accessToken: pair.accessToken })
  assertRefused(t, await get(gw, '/api/x', { ...forwarded, authorization: `DPoP ${pair.accessToken}`, dpop: internal }), 'a proof for the gateway\'s internal URL', { secrets: [internal, pair.accessToken] })
})
