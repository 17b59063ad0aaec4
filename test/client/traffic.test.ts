// The client keeps a session alive on its own through the server's refresh hook: with 1-second access tokens,
// 4 seconds of traffic (a request every 100 ms) from one client, and from two "tabs" (two clients sharing one
// storage) that fire at the same moments, so both refresh the same expired token at once. Every response must
// be a 200, the server must answer no 401 at all, the refresh token must rotate once a second, no request may
// go to /auth/refresh (the client never refreshes by hand), and the tabs must never be signed out: the server's
// grace window gives concurrent refreshes of one token the same successor, and the client takes no lock.
// Client and server run in this process on one stopped clock (test/helpers/clock.ts), moved 100 ms after each
// request: the seconds of traffic cost no real seconds, and a slow machine sends as many requests as a fast one.
import t from 'tap'
import { createClient, type Client } from '../../client/index.js'
import { fakeClock } from '../helpers/clock.js'
import { credentials, payloadOf, sharedStorage, startServer, uniqueKey, type Seen } from './server.js'

const REQUESTS = 40
const EVERY_MS = 100
// Logged in at a whole second, each access token lives 1 s (valid up to its exp inclusive): the hook refreshes
// at 1.1 s, 2.1 s and 3.1 s, so four refresh tokens are presented in all.
const REFRESH_TOKENS = 4

/** Distinct refresh tokens the client presented (each one a rotation the client took up). */
const presented = (seen: Seen[]): number => new Set(seen.map(s => s.refreshToken).filter(r => r !== undefined)).size

t.test('one client: 4 s of traffic with 1 s access tokens, every answer a 200, the refresh token rotated', async t => {
  const clock = fakeClock(t)
  const server = await startServer(t, { accessTokenTtl: '1s' })
  const auth = createClient({ baseUrl: server.baseUrl, storage: sharedStorage(), key: uniqueKey('one') })
  t.teardown(() => auth.close())
  const changes: boolean[] = []
  auth.onChange(v => changes.push(v))

  const pair = await auth.login(credentials('alice'))
  t.equal(pair.tokenType, 'Bearer', 'the login answers a Bearer pair')
  t.equal(auth.sessionId, pair.sessionId, 'the client knows its session id')
  t.ok(auth.signedIn, 'the client is signed in after login')
  t.equal(auth.accessExpiresAt, clock.now() + pair.expiresIn * 1000, 'accessExpiresAt comes from the login answer\'s expiresIn')
  server.reset()

  const statuses: number[] = []
  const expiries = new Set<number | null>()
  for (let i = 0; i < REQUESTS; i++) {
    const res = await auth.fetch('/api/orders')
    statuses.push(res.status)
    const body = await res.json() as { user?: string }
    if (res.status === 200 && body.user !== 'u-alice') t.fail(`the route answered for ${String(body.user)}, not u-alice`)
    expiries.add(auth.accessExpiresAt)
    clock.tick(EVERY_MS)
  }

  t.same(statuses.filter(s => s !== 200), [], 'every response the client got was a 200')
  t.same(server.seen.filter(s => s.status === 401), [], 'the server answered no 401 at all')
  t.equal(server.seen.length, statuses.length, 'exactly one request reached the server per auth.fetch (no retries, no refresh calls)')
  t.equal(server.seen.filter(s => s.url.startsWith('/auth/')).length, 0, 'the client never called /auth/refresh (the refresh hook did the refreshing)')
  t.ok(server.seen.every(s => s.authorization?.startsWith('Bearer ') === true && s.refreshToken !== undefined), 'every request carried both tokens')
  const rotations = presented(server.seen)
  t.equal(rotations, REFRESH_TOKENS, `the refresh token rotated once a second (${rotations} distinct refresh tokens presented)`)
  t.equal(expiries.size, REFRESH_TOKENS, `accessExpiresAt followed the new access tokens (${expiries.size} distinct values)`)
  const last = server.seen.filter(s => s.newAccess !== undefined).at(-1)?.newAccess
  t.equal(auth.accessExpiresAt, last === undefined ? undefined : payloadOf(last).exp * 1000, 'accessExpiresAt is the latest token\'s exp')
  t.same(changes, [true], 'onChange heard the login and nothing else: the client was never signed out')
  t.ok(auth.signedIn, 'the client is still signed in')
  t.comment(`one client: ${statuses.length} requests, ${rotations} refresh tokens`)
})

t.test('two tabs sharing one storage, firing together: all 200, the refresh token rotated, never signed out', async t => {
  const clock = fakeClock(t)
  const server = await startServer(t, { accessTokenTtl: '1s' })
  const storage = sharedStorage()
  const key = uniqueKey('tabs')
  const tabs: Client[] = [createClient({ baseUrl: server.baseUrl, storage, key }), createClient({ baseUrl: server.baseUrl, storage, key })]
  t.teardown(() => { for (const tab of tabs) tab.close() })
  const signedOut: number[] = []
  tabs.forEach((tab, i) => tab.onChange(v => { if (!v) signedOut.push(i) }))

  const pair = await tabs[0].login(credentials('bob'))
  server.reset()

  const statuses: number[] = []
  const sessionsSeen = new Set<string>()
  for (let i = 0; i < REQUESTS; i++) {
    // Both tabs read the same tokens from the storage and send them at the same moment.
    const answers = await Promise.all(tabs.map(async tab => {
      const res = await tab.fetch('/api/orders')
      const body = await res.json() as { sessionId?: string }
      if (body.sessionId !== undefined) sessionsSeen.add(body.sessionId)
      return res.status
    }))
    statuses.push(...answers)
    clock.tick(EVERY_MS)
  }

  t.same(statuses.filter(s => s !== 200), [], `every one of the ${statuses.length} responses was a 200`)
  t.same(server.seen.filter(s => s.status === 401), [], 'the server answered no 401 at all')
  t.equal(server.seen.length, statuses.length, 'exactly one request reached the server per auth.fetch')
  t.same([...sessionsSeen], [pair.sessionId], 'both tabs used the one session tab 0 logged in')
  const rotations = presented(server.seen)
  t.equal(rotations, REFRESH_TOKENS, `the refresh token rotated once a second (${rotations} distinct refresh tokens presented)`)
  // The same refresh token refreshed by both tabs at once: what the grace window makes safe.
  const refreshedBy = new Map<string, number>()
  for (const s of server.seen) if (s.newRefresh !== undefined && s.refreshToken !== undefined) refreshedBy.set(s.refreshToken, (refreshedBy.get(s.refreshToken) ?? 0) + 1)
  const concurrent = [...refreshedBy.values()].filter(n => n >= 2).length
  t.equal(concurrent, REFRESH_TOKENS - 1, `the tabs refreshed each expired token concurrently (${concurrent} times), and neither was logged out for it`)
  const successors = new Map<string, Set<string>>()
  for (const s of server.seen) if (s.newRefresh !== undefined && s.refreshToken !== undefined) successors.set(s.refreshToken, (successors.get(s.refreshToken) ?? new Set()).add(s.newRefresh))
  t.ok([...successors.values()].every(set => set.size === 1), 'every concurrent refresh of one token got the same successor')
  t.same(signedOut, [], 'neither tab was ever signed out')
  t.ok(tabs.every(tab => tab.signedIn && tab.sessionId === pair.sessionId), 'both tabs are still signed in to the session')
  const live = await server.app.tokengate.listSessions('u-bob')
  t.same(live.map(s => s.id), [pair.sessionId], 'the session is still live on the server (no reuse detection fired)')
  t.comment(`two tabs: ${statuses.length} requests, ${rotations} refresh tokens, ${concurrent} concurrent refreshes`)
})
