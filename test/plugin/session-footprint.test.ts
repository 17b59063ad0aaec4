// What a session costs in Redis and what it keeps: a browser's long user agent and large claims come back
// whole through login, list and refresh, while a typical session stays under 400 bytes of Redis memory.
import t from 'tap'
import { buildApp, login } from '../helpers/app.js'
import { readSession, sessionsKey } from '../helpers/redis.js'

const LONG_UA = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'
// A desktop Chrome's user agent is about 100 characters: the size budget is checked with one of 104.
const UA_104 = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.7 Safari/537.36'
const BIG_CLAIMS = { team: 'ünïcødé-'.repeat(12), tags: Array.from({ length: 10 }, (_, i) => `tag-${i}-🙂`) }
const BUDGET_BYTES = 400

t.test('a long user agent and large claims round-trip intact through login, list and refresh', async t => {
  const { app, redis, prefix } = await buildApp(t, { routes: { verifyCredentials: async () => ({ sub: 'u-big', roles: ['user'], claims: BIG_CLAIMS }) } })
  const res = await app.inject({ method: 'POST', url: '/auth/login', headers: { 'user-agent': LONG_UA }, payload: { username: 'big', password: 'x' } })
  t.equal(res.statusCode, 200, res.body)
  const pair = res.json()
  const bearer = { authorization: `Bearer ${pair.accessToken as string}` }

  const stored = await readSession(redis, prefix, 'u-big', pair.sessionId)
  t.equal(stored?.ua, LONG_UA, 'the user agent is stored whole')
  t.same(stored?.cl, BIG_CLAIMS, 'the claims are stored whole')

  const listed = await app.inject({ url: '/auth/sessions', headers: bearer })
  t.equal(listed.statusCode, 200, listed.body)
  t.match(listed.json(), [{ id: pair.sessionId, userAgent: LONG_UA, ip: '127.0.0.1' }], 'GET /auth/sessions shows the whole user agent')
  const me = await app.inject({ url: '/me', headers: bearer })
  t.same(me.json().claims, BIG_CLAIMS, 'the access token carries the claims')

  const r = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(r.statusCode, 200, r.body)
  const me2 = await app.inject({ url: '/me', headers: { authorization: `Bearer ${r.json().accessToken as string}` } })
  t.same(me2.json().claims, BIG_CLAIMS, 'a refresh re-mints the claims from the stored session')
  const again = await app.tokengate.listSessions('u-big')
  t.equal(again[0]?.userAgent, LONG_UA, 'still whole after a rotation')
})

t.test(`one session with a ${UA_104.length}-character user agent and an IPv4 address takes under ${BUDGET_BYTES} bytes of Redis memory`, async t => {
  const { app, redis, prefix } = await buildApp(t)
  t.equal(UA_104.length, 104)
  const res = await app.inject({ method: 'POST', url: '/auth/login', headers: { 'user-agent': UA_104 }, payload: { username: 'alice', password: 'wonderland' } })
  t.equal(res.statusCode, 200, res.body)
  const pair = res.json()
  const stored = await readSession(redis, prefix, 'u-alice', pair.sessionId)
  t.match(stored, { ip: '127.0.0.1', ua: UA_104 }, 'the session holds the ip and the user agent')

  const key = sessionsKey(prefix, 'u-alice')
  const afterLogin = Number(await redis.memory('USAGE', key, 'SAMPLES', 0))
  t.ok(afterLogin > 0 && afterLogin < BUDGET_BYTES, `MEMORY USAGE of the user's key after login: ${afterLogin} bytes (budget ${BUDGET_BYTES})`)

  // A rotation adds the previous hash and its time: still within the budget.
  const r = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { 'user-agent': UA_104 }, payload: { refreshToken: pair.refreshToken } })
  t.equal(r.statusCode, 200, r.body)
  const afterRefresh = Number(await redis.memory('USAGE', key, 'SAMPLES', 0))
  t.ok(afterRefresh < BUDGET_BYTES, `MEMORY USAGE after a refresh: ${afterRefresh} bytes (budget ${BUDGET_BYTES})`)
})

t.test('refreshClaims replacing large claims by small ones leaves no trace of the old ones', async t => {
  let claims: Record<string, unknown> = BIG_CLAIMS
  const { app, redis, prefix } = await buildApp(t, { refreshClaims: async () => ({ claims }) })
  const pair = await login(app)
  const key = sessionsKey(prefix, 'u-alice')
  const first = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(first.statusCode, 200, first.body)
  t.same((await readSession(redis, prefix, 'u-alice', pair.sessionId))?.cl, BIG_CLAIMS, 'the large claims are stored')
  const bigBytes = (await redis.getBuffer(key))!.length

  claims = { small: true }
  const second = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: first.json().refreshToken } })
  t.equal(second.statusCode, 200, second.body)
  const s = await readSession(redis, prefix, 'u-alice', pair.sessionId)
  t.same(s?.cl, { small: true }, 'the claims are replaced, not merged')
  t.same(s?.ro, ['user'], 'roles untouched')
  const raw = (await redis.getBuffer(key))!
  for (const piece of ['ünïcødé', 'tag-0', '🙂', 'team']) t.notOk(raw.includes(Buffer.from(piece)), `nothing of the old claims (${piece}) is left in Redis`)
  t.ok(raw.length < bigBytes, `the stored value shrank (${bigBytes} → ${raw.length} bytes)`)
  t.same((await app.tokengate.verify(second.json().accessToken)).claims, { small: true })
})
