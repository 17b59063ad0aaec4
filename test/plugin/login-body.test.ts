// POST /auth/login bodies in the plugin: larger than 16 KB → 413, nested deeper than 32 levels → 400
// TOKENGATE_BAD_REQUEST, not a JSON object → 400 FST_ERR_VALIDATION; none of them reaches verifyCredentials,
// and no session is written. An object it accepts goes to verifyCredentials as it is.
import t from 'tap'
import { buildApp } from '../helpers/app.js'
import { keysUnder } from '../helpers/redis.js'

t.test('login bodies are bounded before verifyCredentials sees them', async t => {
  const seen: unknown[] = []
  const { app, redis, prefix } = await buildApp(t, { routes: { verifyCredentials: async (body) => { seen.push(body); return null } } })
  const post = async (payload: string, type = 'application/json'): Promise<{ statusCode: number, body: any }> => {
    const res = await app.inject({ method: 'POST', url: '/auth/login', headers: { 'content-type': type }, payload })
    return { statusCode: res.statusCode, body: res.json() }
  }
  const deep = (n: number): string => '{"u":' + '['.repeat(n) + ']'.repeat(n) + '}'

  const tooDeep = await post(deep(40))
  t.equal(tooDeep.statusCode, 400)
  t.equal(tooDeep.body.code, 'TOKENGATE_BAD_REQUEST')
  t.match(tooDeep.body.message, /nested deeper than 32 levels/)

  const veryDeep = await post(deep(7000))
  t.equal(veryDeep.statusCode, 400, '7,000 levels: still a clean 400, no stack overflow')
  t.equal(veryDeep.body.code, 'TOKENGATE_BAD_REQUEST')

  const big = await post(JSON.stringify({ username: 'alice', password: 'p'.repeat(16 * 1024) }))
  t.equal(big.statusCode, 413)
  t.equal(big.body.code, 'FST_ERR_CTP_BODY_TOO_LARGE')

  for (const payload of ['[]', '"alice"', '42', 'null']) {
    const r = await post(payload)
    t.equal(r.statusCode, 400, `${payload} → 400`)
    t.equal(r.body.code, 'FST_ERR_VALIDATION')
  }
  t.same(seen, [], 'verifyCredentials never saw any of those')

  const ok = await post(deep(31))
  t.equal(ok.statusCode, 401, '32 levels in all is accepted and goes to verifyCredentials (which says no)')
  t.equal(ok.body.code, 'TOKENGATE_BAD_CREDENTIALS')
  const empty = await post('{}')
  t.equal(empty.statusCode, 401, '{} is a JSON object: verifyCredentials decides (401 here)')
  t.equal(seen.length, 2)
  t.same(await keysUnder(redis, prefix), [], 'no session written')
})
