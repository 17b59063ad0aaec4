// The client cannot be made to adopt a planted token (DESIGN §2: an upstream cannot replace tokens). A route
// behind the server (the "upstream": here a handler of the same app) answers with x-access-token /
// x-refresh-token of the attacker's own, valid session: session fixation, the client would then act as the
// attacker. The client keeps only tokens of its own session; control: the refresh hook's genuine new tokens are kept.
import t from 'tap'
import { createClient } from '../../client/index.js'
import { fakeClock } from '../helpers/clock.js'
import { credentials, sharedStorage, startServer, uniqueKey, payloadOf } from './server.js'

t.test('tokens of another session in a response are not adopted; the hook\'s own are', async t => {
  const clock = fakeClock(t)
  const held: { planted?: { accessToken: string, refreshToken: string } } = {}
  const server = await startServer(t, { accessTokenTtl: '1s' }, app => {
    app.get('/api/planting', async (_request, reply) => {
      reply.header('x-access-token', held.planted!.accessToken).header('x-refresh-token', held.planted!.refreshToken)
      return { ok: true }
    })
  })
  const planted = held.planted = await server.app.tokengate.issue({ sub: 'u-mallory', roles: ['user'] })
  const storage = sharedStorage()
  const auth = createClient({ baseUrl: server.baseUrl, storage, key: uniqueKey('planted') })
  t.teardown(() => auth.close())
  const pair = await auth.login(credentials('alice'))
  const before = [...storage.map.values()].join('')

  const res = await auth.fetch('/api/planting')
  t.equal(res.status, 200)
  t.equal(res.headers.get('x-refresh-token'), planted.refreshToken, 'the response did carry the planted tokens')
  const kept = [...storage.map.values()].join('')
  t.notOk(kept.includes(planted.refreshToken) || kept.includes(planted.accessToken), 'the client did not adopt them')
  t.equal(kept, before, 'its storage is unchanged')
  const me = await auth.fetch('/api/orders')
  t.equal((await me.json() as { user: string }).user, 'u-alice', 'the next request is still alice\'s')
  t.equal(auth.sessionId, pair.sessionId)

  // Control: once the access token expired, the refresh hook's new tokens (same session) are kept.
  clock.tick(2100)
  server.reset()
  const refreshed = await auth.fetch('/api/orders')
  t.equal(refreshed.status, 200)
  t.type(server.seen[0].newRefresh, 'string', 'the hook sent a new refresh token')
  const now = [...storage.map.values()].join('')
  t.ok(now.includes(server.seen[0].newRefresh!), 'the client kept the hook\'s new refresh token')
  t.equal(payloadOf(server.seen[0].newAccess!).sid, pair.sessionId, 'of its own session')
})
