// Session records stay compact hashes (listpack) even with a browser's long user agent or large claims:
// longer values are split into fields of at most 64 bytes and joined again on read.
import t from 'tap'
import { buildApp, login } from '../helpers/app.js'
import { recordKey } from '../helpers/redis.js'

const UA = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'
const BIG_CLAIMS = { team: 'ünïcødé-'.repeat(12), tags: Array.from({ length: 10 }, (_, i) => `tag-${i}-🙂`) }

t.test('a long user agent and large claims: listpack encoding, every value ≤ 64 bytes, read back whole', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const pair = await app.tokengate.issue({ sub: 'u-big', roles: ['user'], claims: BIG_CLAIMS }, { ip: '203.0.113.7', userAgent: UA })
  const key = recordKey(prefix, 'u-big', pair.sessionId)
  t.equal(await redis.object('ENCODING', key), 'listpack', 'the record is a compact hash')
  const h = await redis.hgetall(key)
  for (const [field, value] of Object.entries(h)) t.ok(Buffer.byteLength(value) <= 64, `${field} holds ${Buffer.byteLength(value)} bytes`)
  t.ok('ua.1' in h, 'the user agent continues in ua.1')
  t.ok('cl.1' in h, 'the claims continue in cl.1')

  const [session] = await app.tokengate.listSessions('u-big')
  t.equal(session.userAgent, UA, 'listSessions joins the user agent again')
  t.equal(session.ip, '203.0.113.7')
  const auth = await app.tokengate.verify(pair.accessToken)
  t.same(auth.claims, BIG_CLAIMS, 'the access token carries the claims')

  const next = await app.tokengate.refresh(pair.refreshToken)
  t.same((await app.tokengate.verify(next.accessToken)).claims, BIG_CLAIMS, 'a refresh re-mints the claims from the record')
  t.equal(await redis.object('ENCODING', key), 'listpack', 'still compact after a rotation')
})

t.test('refreshClaims replacing large claims by small ones leaves no stale continuation fields', async t => {
  let claims: Record<string, unknown> = BIG_CLAIMS
  const { app, redis, prefix } = await buildApp(t, { refreshClaims: async () => ({ claims }) })
  const pair = await login(app)
  const key = recordKey(prefix, 'u-alice', pair.sessionId)
  const first = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(first.statusCode, 200)
  t.ok('cl.1' in await redis.hgetall(key), 'large claims stored in several fields')
  claims = { small: true }
  const second = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: first.json().refreshToken } })
  t.equal(second.statusCode, 200)
  const h = await redis.hgetall(key)
  t.same(Object.keys(h).filter(f => f.startsWith('cl')), ['cl'], 'only cl is left')
  t.same(JSON.parse(h.cl), { small: true })
  t.same(JSON.parse(h.ro), ['user'], 'roles untouched')
  t.same((await app.tokengate.verify(second.json().accessToken)).claims, { small: true })
})
