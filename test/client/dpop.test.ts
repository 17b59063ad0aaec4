// DPoP (RFC 9449) from the client in Node, against the server's own checks: with `dpop: true` the client signs
// its login and every authenticated request with one non-extractable ES256 key (the proof's header carries only
// the public key), so the server binds the session (tokenType 'DPoP') and the refresh hook keeps refreshing it
// with the proof through seconds of 1-second access tokens. The same access token sent as Bearer by a thief
// without the key is refused. With `dpop: { nonce: true }` the client completes the nonce dance by itself:
// its first login is answered 401 TOKENGATE_DPOP_NONCE with a DPoP-Nonce, it retries once with the nonce and
// succeeds, and its later proofs carry the latest nonce (so they need no retry).
// Client and server run in this process on one stopped clock (test/helpers/clock.ts), moved 100 ms after each
// request: seconds of traffic cost no real seconds, and a slow machine sends as many requests as a fast one.
import t from 'tap'
import { createClient, type TokenPair } from '../../client/index.js'
import { fakeClock } from '../helpers/clock.js'
import { credentials, headerOf, payloadOf, sharedStorage, startServer, uniqueKey } from './server.js'

const EVERY_MS = 100

t.test('a DPoP-bound session lives through seconds of 1 s access tokens, every request with a proof', async t => {
  const clock = fakeClock(t)
  const server = await startServer(t, { accessTokenTtl: '1s', dpop: {} })
  const auth = createClient({ baseUrl: server.baseUrl, storage: sharedStorage(), key: uniqueKey('dpop'), dpop: true })
  t.teardown(() => auth.close())

  const pair = await auth.login(credentials('alice')) as Required<TokenPair>
  t.equal(pair.tokenType, 'DPoP', 'the login with a proof answers tokenType DPoP')
  const jkt = payloadOf(pair.accessToken).cnf?.jkt as string | undefined
  t.type(jkt, 'string', 'the access token is bound to a key (cnf.jkt)')
  const login = server.seen.find(s => s.url === '/auth/login')!
  t.type(login.dpop, 'string', 'the login carried a DPoP proof')
  const loginProof = { header: headerOf(login.dpop!), claims: payloadOf(login.dpop!) }
  t.match(loginProof.header, { typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: 'EC', crv: 'P-256' } }, 'the proof is an ES256 dpop+jwt with the key in its header')
  t.same(Object.keys(loginProof.header.jwk).sort(), ['crv', 'kty', 'x', 'y'], 'the proof\'s jwk is the public key only')
  t.same(Object.keys(loginProof.claims).sort(), ['htm', 'htu', 'iat', 'jti'], 'the login proof has htm, htu, iat, jti (no ath: no access token yet)')
  t.equal(loginProof.claims.htu, `${server.baseUrl}/auth/login`, 'htu is the absolute login URL')
  server.reset()

  const statuses: number[] = []
  // 3 s: logged in at a whole second, the hook refreshes at 1.1 s and 2.1 s.
  for (let i = 0; i < 30; i++) {
    // Every other request with a query and a fragment: htu must leave them out.
    const res = await auth.fetch(i % 2 === 0 ? '/api/orders' : '/api/orders?page=2#top')
    statuses.push(res.status)
    const body = await res.json() as { jkt?: string }
    if (res.status === 200 && body.jkt !== jkt) t.fail('the route saw a request not bound to the login\'s key')
    clock.tick(EVERY_MS)
  }
  t.same(statuses.filter(s => s !== 200), [], `every one of the ${statuses.length} responses was a 200`)
  t.same(server.seen.filter(s => s.status !== 200).map(s => s.code), [], 'the server refused nothing')
  t.equal(server.seen.length, statuses.length, 'one request per fetch: no retries')
  t.ok(server.seen.every(s => s.authorization?.startsWith('DPoP ') === true && s.dpop !== undefined), 'every request sent the access token with the DPoP scheme and a proof')
  const jtis = new Set(server.seen.map(s => payloadOf(s.dpop!).jti))
  t.equal(jtis.size, server.seen.length, 'every proof has a fresh jti')
  t.ok(server.seen.every(s => payloadOf(s.dpop!).htu === `${server.baseUrl}/api/orders`), 'htu never carries the query or the fragment')
  t.ok(server.seen.every(s => payloadOf(s.dpop!).ath !== undefined && payloadOf(s.dpop!).htm === 'GET'), 'every proof has ath and htm')
  const rotations = new Set(server.seen.map(s => s.refreshToken)).size
  t.equal(rotations, 3, `the hook refreshed the bound session with the proof, once a second (${rotations} refresh tokens)`)
  const keys = new Set(server.seen.map(s => JSON.stringify(headerOf(s.dpop!).jwk)))
  t.equal(keys.size, 1, 'every proof was signed by the one key')
  t.ok(auth.signedIn, 'the client is still signed in')
})

t.test('the bound access token is refused as Bearer', async t => {
  const server = await startServer(t, { dpop: {} })
  const auth = createClient({ baseUrl: server.baseUrl, storage: sharedStorage(), key: uniqueKey('bearer'), dpop: true })
  t.teardown(() => auth.close())
  const pair = await auth.login(credentials('alice')) as Required<TokenPair>
  t.equal((await auth.fetch('/api/orders')).status, 200, 'the client itself gets through')

  const asBearer = await fetch(`${server.baseUrl}/api/orders`, { headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(asBearer.status, 401, 'a raw fetch with the same token as Bearer is refused with 401')
  t.equal((await asBearer.json() as { code: string }).code, 'TOKENGATE_DPOP_INVALID', 'the code is TOKENGATE_DPOP_INVALID')
  const noProof = await fetch(`${server.baseUrl}/api/orders`, { headers: { authorization: `DPoP ${pair.accessToken}`, 'x-refresh-token': pair.refreshToken } })
  t.equal(noProof.status, 401, 'with the DPoP scheme but no proof (and the refresh token) it is refused too')
  t.equal((await noProof.json() as { code: string }).code, 'TOKENGATE_DPOP_INVALID', 'the code is TOKENGATE_DPOP_INVALID')
  t.equal((await auth.fetch('/api/orders')).status, 200, 'the client still gets through afterwards')
})

t.test('with server nonces the client retries its login once with the nonce, then carries it', async t => {
  const clock = fakeClock(t)
  const server = await startServer(t, { accessTokenTtl: '1s', dpop: { nonce: true } })
  const auth = createClient({ baseUrl: server.baseUrl, storage: sharedStorage(), key: uniqueKey('nonce'), dpop: true })
  t.teardown(() => auth.close())

  const pair = await auth.login(credentials('alice')) as Required<TokenPair>
  t.equal(pair.tokenType, 'DPoP', 'the login succeeded, bound')
  const logins = server.seen.filter(s => s.url === '/auth/login')
  t.equal(logins.length, 2, 'two login requests reached the server: the challenged one and one retry')
  t.match(logins[0], { status: 401, code: 'TOKENGATE_DPOP_NONCE' }, 'the first was answered 401 TOKENGATE_DPOP_NONCE')
  t.type(logins[0].nonce, 'string', 'with a DPoP-Nonce')
  t.equal(payloadOf(logins[0].dpop!).nonce, undefined, 'the first proof had no nonce')
  t.equal(payloadOf(logins[1].dpop!).nonce, logins[0].nonce, 'the retry\'s proof carried the nonce the challenge gave')
  t.equal(logins[1].status, 200, 'the retry was answered 200')
  server.reset()

  const statuses: number[] = []
  for (let i = 0; i < 20; i++) {
    const res = await auth.fetch('/api/orders')
    statuses.push(res.status)
    await res.arrayBuffer()
    clock.tick(EVERY_MS)
  }
  t.same(statuses.filter(s => s !== 200), [], `every one of the ${statuses.length} later requests was a 200`)
  t.equal(server.seen.length, statuses.length, 'they needed no nonce retry (the client kept the nonce)')
  t.ok(server.seen.every(s => typeof payloadOf(s.dpop!).nonce === 'string'), 'every later proof carried a nonce')
  // The latest nonce the server gave (nonces rotate every proofMaxAge).
  const latest = [logins[1].nonce, ...server.seen.map(s => s.nonce)]
  t.ok(server.seen.every((s, i) => payloadOf(s.dpop!).nonce === latest[i]), 'each proof carried the latest nonce the server had given')
  t.equal(new Set(server.seen.map(s => s.refreshToken)).size, 2, 'the session was refreshed through the hook with nonce-carrying proofs')
})

t.test('two tabs of one bound session sign with the same key', async t => {
  const clock = fakeClock(t)
  const server = await startServer(t, { accessTokenTtl: '1s', dpop: {} })
  const storage = sharedStorage()
  const key = uniqueKey('dpop-tabs')
  const a = createClient({ baseUrl: server.baseUrl, storage, key, dpop: true })
  const b = createClient({ baseUrl: server.baseUrl, storage, key, dpop: true })
  t.teardown(() => { a.close(); b.close() })
  await a.login(credentials('bob'))
  server.reset()
  const statuses: number[] = []
  for (let i = 0; i < 15; i++) {
    statuses.push(...await Promise.all([a, b].map(async tab => {
      const res = await tab.fetch('/api/orders')
      await res.arrayBuffer()
      return res.status
    })))
    clock.tick(EVERY_MS)
  }
  t.same(statuses.filter(s => s !== 200), [], `tab b, which never logged in, and tab a: all ${statuses.length} requests answered 200`)
  t.equal(new Set(server.seen.map(s => JSON.stringify(headerOf(s.dpop!).jwk))).size, 1, 'both tabs signed with one key')
  t.ok(a.signedIn && b.signedIn, 'both tabs are still signed in')
})

t.test('a stale nonce on a later request costs one retry, and a server that challenges every time no loop', async t => {
  // Nonces rotate every proofMaxAge and are good for two slots: after 2 s idle with 1 s slots, the kept one is stale.
  const clock = fakeClock(t)
  const server = await startServer(t, { dpop: { nonce: true, proofMaxAge: '1s' } })
  const auth = createClient({ baseUrl: server.baseUrl, storage: sharedStorage(), key: uniqueKey('stale'), dpop: true })
  t.teardown(() => auth.close())
  await auth.login(credentials('alice'))
  clock.tick(2000)
  server.reset()
  const res = await auth.fetch('/api/orders')
  t.equal(res.status, 200, 'the request with a stale nonce ends in a 200')
  t.match(server.seen, [{ status: 401, code: 'TOKENGATE_DPOP_NONCE' }, { status: 200 }], 'two requests: the challenged one and one retry')
  t.equal(payloadOf(server.seen[1].dpop!).nonce, server.seen[0].nonce, 'the retry carried the challenge\'s nonce')
  t.ok(auth.signedIn, 'a nonce challenge does not sign the client out')

  // A server that answers every proof with a nonce challenge: one retry, then the 401 is the caller's.
  let calls = 0
  const challenging: typeof fetch = async () => {
    calls++
    return new Response('{"code":"TOKENGATE_DPOP_NONCE"}', { status: 401, headers: { 'dpop-nonce': `n${calls}`, 'www-authenticate': 'DPoP error="use_dpop_nonce", algs="ES256"' } })
  }
  const stubborn = createClient({ baseUrl: 'http://127.0.0.1:9', storage: sharedStorage(), key: uniqueKey('stubborn'), dpop: true, fetch: challenging })
  t.teardown(() => stubborn.close())
  const refused = await stubborn.login(credentials('alice')).then(() => null, (err: unknown) => err)
  t.match(refused, { status: 401, code: 'TOKENGATE_DPOP_NONCE' }, 'login rejects with the second challenge')
  t.equal(calls, 2, 'exactly two requests: the first and one retry, no loop')
})
