// Signing out stops all traffic, and never loops. A logout in one tab signs every tab out at once (the memory
// storage both share, plus Node's in-process BroadcastChannel): onChange(false) fires in both, later fetches
// send no token and get the route's own 401, and the server sees exactly the requests the test makes: no
// retries, no refresh calls. A 401 that no refresh can mend (the user's sessions revoked on the server) resolves
// as a Response (it does not throw), signs the client out once, and costs exactly one request. Tokens never
// go to another origin than baseUrl's.
import t from 'tap'
import { createClient } from '../../client/index.js'
import { credentials, nextChange, sleep, startServer, uniqueKey, type Seen } from './server.js'

const sentNoToken = (s: Seen): boolean => s.authorization === undefined && s.refreshToken === undefined && s.dpop === undefined

t.test('logout in one tab signs both tabs out, and later fetches send nothing and are not retried', async t => {
  const server = await startServer(t)
  const key = uniqueKey('logout')
  const a = createClient({ baseUrl: server.baseUrl, storage: 'memory', key })
  const b = createClient({ baseUrl: server.baseUrl, storage: 'memory', key })
  t.teardown(() => { a.close(); b.close() })
  const changes: Record<'a' | 'b', boolean[]> = { a: [], b: [] }
  a.onChange(v => changes.a.push(v))
  b.onChange(v => changes.b.push(v))

  const bSignedIn = nextChange(b, 2000, 'tab b\'s onChange after tab a\'s login')
  await a.login(credentials('alice'))
  t.equal(await bSignedIn, true, 'tab b heard tab a\'s login (onChange(true))')
  t.ok(b.signedIn, 'tab b is signed in too')
  for (const tab of [a, b]) t.equal((await tab.fetch('/api/orders')).status, 200, 'both tabs reach the protected route before the logout')

  const aOut = nextChange(a, 2000, 'tab a\'s onChange after its logout')
  const bOut = nextChange(b, 2000, 'tab b\'s onChange after tab a\'s logout')
  server.reset()
  await a.logout()
  t.equal(await aOut, false, 'tab a: onChange(false) after its logout')
  t.equal(await bOut, false, 'tab b: onChange(false) after tab a\'s logout (BroadcastChannel)')
  t.notOk(a.signedIn || b.signedIn, 'neither tab is signed in')
  t.equal(a.sessionId, null, 'tab a has no session id any more')
  t.equal(server.seen.length, 1, 'the logout was one request')
  t.match(server.seen[0], { method: 'POST', url: '/auth/logout', status: 204 }, 'POST /auth/logout answered 204')

  server.reset()
  const calls = [a, b, a, b, a]
  for (const tab of calls) {
    const res = await tab.fetch('/api/orders')
    t.equal(res.status, 401, 'a fetch after the logout gets the route\'s 401')
    t.equal((await res.json() as { code: string }).code, 'TOKENGATE_TOKEN_MISSING', 'the 401 is "no token presented"')
  }
  await sleep(300) // anything the client would send on its own comes now
  t.equal(server.seen.length, calls.length, `exactly ${calls.length} requests reached the server for ${calls.length} fetches: no retry, no refresh`)
  t.ok(server.seen.every(sentNoToken), 'no request after the logout carried an access token, refresh token or proof')
  t.equal(server.orders(), 0, 'none of them reached the protected handler')
  t.same(changes, { a: [true, false], b: [true, false] }, 'each tab heard one sign-in and one sign-out, no more')
})

t.test('a 401 that no refresh can mend resolves, signs out once and costs one request', async t => {
  const server = await startServer(t)
  const auth = createClient({ baseUrl: server.baseUrl, storage: 'memory', key: uniqueKey('revoked') })
  t.teardown(() => auth.close())
  const changes: boolean[] = []
  await auth.login(credentials('alice'))
  auth.onChange(v => changes.push(v))
  t.equal((await auth.fetch('/api/orders')).status, 200, 'the session works before it is revoked')

  t.equal(await server.app.tokengate.revokeAll('u-alice'), 1, 'the server revoked alice\'s one session')
  server.reset()
  const res = await auth.fetch('/api/orders')
  t.equal(res.status, 401, 'the next fetch resolves with the 401 (it does not throw)')
  t.equal((await res.json() as { code: string }).code, 'TOKENGATE_TOKEN_REVOKED', 'the 401 says the token was revoked')
  await sleep(300)
  t.same(changes, [false], 'onChange(false) fired exactly once')
  t.notOk(auth.signedIn, 'the client is signed out')
  t.equal(server.seen.length, 1, 'exactly one request reached the server for it (no retry, no refresh call)')
  t.ok(server.seen[0].authorization !== undefined, 'that request carried the (revoked) tokens')

  server.reset()
  const after = await auth.fetch('/api/orders')
  t.equal(after.status, 401, 'a later fetch gets a 401 too')
  t.equal(server.seen.length, 1, 'one request for it')
  t.ok(sentNoToken(server.seen[0]), 'and it carried no token')
  t.same(changes, [false], 'no further onChange')
})

t.test('tokens go to the server\'s origin only: a fetch to another origin carries none and signs nothing out', async t => {
  const server = await startServer(t)
  const other = await startServer(t)
  const auth = createClient({ baseUrl: server.baseUrl, storage: 'memory', key: uniqueKey('origin') })
  t.teardown(() => auth.close())
  await auth.login(credentials('alice'))
  const res = await auth.fetch(`${other.baseUrl}/api/orders`)
  t.equal(res.status, 401, 'the other origin\'s protected route answers 401')
  t.equal(other.seen.length, 1, 'one request reached the other origin')
  t.ok(sentNoToken(other.seen[0]), 'it carried no token')
  t.ok(auth.signedIn, 'a 401 from another origin does not sign the client out')
  t.equal((await auth.fetch(`${server.baseUrl}/api/orders`)).status, 200, 'an absolute URL on the server\'s own origin gets the tokens')
})
