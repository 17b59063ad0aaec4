// The session management a UI shows, checked against what the server holds: sessions() lists the user's live
// sessions (current: true on the caller's), revokeSession(id) of another session ends that one alone (its
// client is signed out at its next request), revoking the client's own session signs it out, logoutAll() ends
// every session of the user and signs the caller out, and refusals reject with the server's status and code.
import t, { type Test } from 'tap'
import { AuthError, createClient, type Client } from '../../client/index.js'
import { credentials, startServer, uniqueKey, type TestServer } from './server.js'

function newClient (t: Test, server: TestServer): Client {
  // Each "device" has a storage of its own (another browser).
  const client = createClient({ baseUrl: server.baseUrl, storage: 'memory', key: uniqueKey('device') })
  t.teardown(() => client.close())
  return client
}

const liveIds = async (server: TestServer, userId: string): Promise<string[]> =>
  (await server.app.tokengate.listSessions(userId)).map(s => s.id).sort()

t.test('sessions, revokeSession and logoutAll match the server', async t => {
  const server = await startServer(t)
  const laptop = newClient(t, server)
  const phone = newClient(t, server)
  const tablet = newClient(t, server)
  const bob = newClient(t, server)
  for (const c of [laptop, phone, tablet]) await c.login(credentials('alice'))
  await bob.login(credentials('bob'))
  const ids = [laptop, phone, tablet].map(c => c.sessionId!)

  const listed = await laptop.sessions()
  t.same(listed.map(s => s.id).sort(), await liveIds(server, 'u-alice'), 'sessions() lists exactly the server\'s live sessions of alice')
  t.same(listed.map(s => s.id).sort(), [...ids].sort(), 'the three devices\' sessions, and not bob\'s')
  t.same(listed.filter(s => s.current).map(s => s.id), [laptop.sessionId], 'current: true on the laptop\'s own session only')
  t.ok(listed.every(s => typeof s.createdAt === 'string' && typeof s.expiresAt === 'string'), 'each entry has its times')

  await laptop.revokeSession(phone.sessionId!)
  t.same(await liveIds(server, 'u-alice'), [laptop.sessionId!, tablet.sessionId!].sort(), 'the phone\'s session is gone from the server, the others live')
  t.ok(laptop.signedIn, 'revoking another session leaves the laptop signed in')
  t.same((await laptop.sessions()).map(s => s.id).sort(), [laptop.sessionId!, tablet.sessionId!].sort(), 'sessions() no longer lists it')
  const phoneRes = await phone.fetch('/api/orders')
  t.equal(phoneRes.status, 401, 'the phone\'s next request is refused')
  t.notOk(phone.signedIn, 'and the phone is signed out')

  const missing = await laptop.revokeSession(ids[1]).then(() => null, (err: unknown) => err)
  t.ok(missing instanceof AuthError, 'revoking a session that is gone rejects with an AuthError')
  t.match(missing, { status: 404, code: 'TOKENGATE_SESSION_NOT_FOUND' }, 'with the server\'s 404 and code')

  await tablet.revokeSession(tablet.sessionId!)
  t.notOk(tablet.signedIn, 'revoking its own session signs the tablet out')
  t.same(await liveIds(server, 'u-alice'), [laptop.sessionId!], 'only the laptop\'s session is left')

  const other = newClient(t, server)
  await other.login(credentials('alice'))
  t.equal((await liveIds(server, 'u-alice')).length, 2, 'a new login adds a session')
  await laptop.logoutAll()
  t.notOk(laptop.signedIn, 'logoutAll signs the caller out')
  t.same(await liveIds(server, 'u-alice'), [], 'logoutAll left alice no session on the server')
  t.equal((await other.fetch('/api/orders')).status, 401, 'the other device\'s next request is refused')
  t.notOk(other.signedIn, 'and it is signed out')
  t.same(await liveIds(server, 'u-bob'), [bob.sessionId!], 'bob\'s session is untouched')
  t.equal((await bob.fetch('/api/orders')).status, 200, 'and still works')

  const signedOut = await laptop.sessions().then(() => null, (err: unknown) => err)
  t.match(signedOut, { status: 401, code: 'TOKENGATE_TOKEN_MISSING' }, 'sessions() when signed out rejects with the 401')
})

t.test('a refused login rejects with the server\'s status and code and signs nobody in', async t => {
  const server = await startServer(t)
  const client = newClient(t, server)
  const changes: boolean[] = []
  client.onChange(v => changes.push(v))
  const err = await client.login({ username: 'alice', password: 'wrong' }).then(() => null, (e: unknown) => e)
  t.ok(err instanceof AuthError, 'login with a wrong password rejects with an AuthError')
  t.match(err, { status: 401, code: 'TOKENGATE_BAD_CREDENTIALS' }, 'carrying 401 TOKENGATE_BAD_CREDENTIALS')
  t.notOk(client.signedIn, 'the client is not signed in')
  t.same(changes, [], 'onChange did not fire')
  t.equal(server.seen.length, 1, 'one request: a refused login is not retried')
})
