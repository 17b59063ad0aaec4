import t from 'tap'
import { buildApp, login } from '../helpers/app.js'

t.test('login, call, refresh, logout', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const pair = await login(app)
  t.match(pair, { tokenType: 'Bearer', expiresIn: 600, refreshExpiresIn: 86400 })
  const me = await app.inject({ url: '/me', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(me.statusCode, 200, me.body)
  const r = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(r.statusCode, 200, r.body)
  console.log(await redis.keys(prefix + ':*'))
  const out = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(out.statusCode, 204, out.body)
  const me2 = await app.inject({ url: '/me', headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(me2.statusCode, 401, me2.body)
  t.equal(me2.json().code, 'TOKENGATE_TOKEN_REVOKED')
  console.log(me2.headers, await redis.keys(prefix + ':*'))
})
