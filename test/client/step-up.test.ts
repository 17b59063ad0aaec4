// Step-up (RFC 9470) from the client in Node, against a real server: a route that wants a newer or stronger
// login answers 401 TOKENGATE_STEP_UP_REQUIRED, which does NOT sign the client out (unlike a 401 no refresh can
// mend: the control); `AuthError.from(response)` gives the code and the challenge's maxAge/acrValues; and
// `auth.login(credentials)` while signed in sends the session's access token along, so the server
// re-authenticates the same session (same sessionId, the new acr), DPoP-bound sessions included.
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { AuthError, createClient, type TokenPair } from '../../client/index.js'
import type { UserInfo } from '../../plugin/index.js'
import { USERS } from '../helpers/app.js'
import { credentials, payloadOf, sharedStorage, sleep, startServer, uniqueKey } from './server.js'

/** The password alone is acr 'pwd'; with the one-time code 'mfa'. */
async function verifyCredentials (body: unknown): Promise<UserInfo | null> {
  const b = body as { username?: string, password?: string, otp?: string }
  const u = USERS[b.username ?? '']
  if (u === undefined || u.password !== b.password) return null
  const mfa = b.otp === '123456'
  return { ...u.user, acr: mfa ? 'mfa' : 'pwd', amr: mfa ? ['pwd', 'otp'] : ['pwd'] }
}

const routes = (app: FastifyInstance): void => {
  app.post('/api/transfer', { config: { auth: { acr: ['mfa'] } } }, async (request) => ({ sessionId: request.auth!.sessionId }))
  app.get('/api/settings', { config: { auth: { maxAge: '5m', acr: ['mfa', 'hwk'] } } }, async () => ({ ok: true }))
}

const mfa = { ...credentials('alice'), otp: '123456' }

t.test('a step-up 401 keeps the client signed in; AuthError.from gives the challenge; login while signed in steps the session up', async t => {
  const server = await startServer(t, { routes: { verifyCredentials } }, routes)
  const auth = createClient({ baseUrl: server.baseUrl, storage: 'memory', key: uniqueKey('stepup') })
  t.teardown(() => auth.close())
  const changes: boolean[] = []
  const first = await auth.login(credentials('alice')) as Required<TokenPair>
  auth.onChange(v => changes.push(v))

  const refused = await auth.fetch('/api/transfer', { method: 'POST' })
  t.equal(refused.status, 401)
  const err = await AuthError.from(refused)
  t.ok(err instanceof AuthError, 'an AuthError')
  t.equal(err?.status, 401)
  t.equal(err?.code, 'TOKENGATE_STEP_UP_REQUIRED')
  t.same(err?.acrValues, ['mfa'], 'acrValues from acr_values')
  t.equal(err?.maxAge, undefined, 'no max_age asked')
  t.equal((await refused.json() as { code: string }).code, 'TOKENGATE_STEP_UP_REQUIRED', 'AuthError.from left the body unread')
  t.ok(auth.signedIn, 'still signed in after a step-up 401')
  t.equal(auth.sessionId, first.sessionId)

  const settings = await AuthError.from(await auth.fetch('/api/settings'))
  t.equal(settings?.maxAge, 300, 'maxAge from max_age (seconds)')
  t.same(settings?.acrValues, ['mfa', 'hwk'], 'every acr value')
  t.equal(await AuthError.from(await auth.fetch('/api/orders')), null, 'a 200 is no AuthError')
  t.ok(auth.signedIn)

  server.reset()
  const stepped = await auth.login(mfa) as Required<TokenPair>
  t.equal(stepped.sessionId, first.sessionId, 'the login while signed in re-authenticated the same session')
  t.equal(payloadOf(stepped.accessToken).acr, 'mfa')
  t.equal(server.seen[0].authorization, `Bearer ${first.accessToken}`, 'the login carried the session\'s access token')
  t.equal(server.seen[0].refreshToken, undefined, 'and not its refresh token')
  const ok = await auth.fetch('/api/transfer', { method: 'POST' })
  t.equal(ok.status, 200, 'the stepped-up session passes')
  t.same(await ok.json(), { sessionId: first.sessionId })
  t.same(changes, [], 'the client never signed out (nor in again: the session stayed)')

  // Control: a 401 that no refresh can mend still signs the client out.
  await server.app.tokengate.revokeAll('u-alice')
  const dead = await auth.fetch('/api/orders')
  t.equal(dead.status, 401)
  t.notOk(auth.signedIn, 'control: a revoked session signs the client out')
  t.same(changes, [false])
})

t.test('a step-up 401 that carries refreshed tokens: the tokens are kept, the client stays signed in', async t => {
  const server = await startServer(t, { routes: { verifyCredentials }, accessTokenTtl: '1s' }, routes)
  const storage = sharedStorage()
  const key = uniqueKey('stepup-refresh')
  const auth = createClient({ baseUrl: server.baseUrl, storage, key })
  t.teardown(() => auth.close())
  const pair = await auth.login(credentials('alice')) as Required<TokenPair>
  await sleep((payloadOf(pair.accessToken).exp as number) * 1000 + 1 - Date.now())
  server.reset()
  const refused = await auth.fetch('/api/transfer', { method: 'POST' })
  t.equal(refused.status, 401)
  t.equal((await AuthError.from(refused))?.code, 'TOKENGATE_STEP_UP_REQUIRED')
  t.ok(server.seen[0].newAccess !== undefined && server.seen[0].newRefresh !== undefined, 'the refresh hook refreshed on the way')
  const stored = JSON.parse(storage.map.get(key)!) as { a: string, r: string }
  t.equal(stored.a, server.seen[0].newAccess, 'the new access token is kept')
  t.equal(stored.r, server.seen[0].newRefresh, 'the new refresh token is kept')
  t.ok(auth.signedIn)
  t.equal((await auth.fetch('/api/orders')).status, 200, 'and works')
})

t.test('a DPoP client steps its bound session up: the login proof names the access token', async t => {
  const server = await startServer(t, { routes: { verifyCredentials }, dpop: {} }, routes)
  const auth = createClient({ baseUrl: server.baseUrl, storage: sharedStorage(), key: uniqueKey('stepup-dpop'), dpop: true })
  t.teardown(() => auth.close())
  const first = await auth.login(credentials('alice')) as Required<TokenPair>
  t.equal(first.tokenType, 'DPoP')
  t.equal((await auth.fetch('/api/transfer', { method: 'POST' })).status, 401)
  t.ok(auth.signedIn)
  server.reset()
  const stepped = await auth.login(mfa) as Required<TokenPair>
  t.equal(stepped.sessionId, first.sessionId, 'the same bound session')
  t.equal(stepped.tokenType, 'DPoP')
  t.same(payloadOf(stepped.accessToken).cnf, payloadOf(first.accessToken).cnf, 'bound to the same key')
  t.equal(server.seen[0].authorization, `DPoP ${first.accessToken}`)
  t.type(payloadOf(server.seen[0].dpop!).ath, 'string', 'the login proof carries ath')
  t.equal((await auth.fetch('/api/transfer', { method: 'POST' })).status, 200)
})

t.test('AuthError from a refused login carries no challenge fields', async t => {
  const server = await startServer(t, { routes: { verifyCredentials } }, routes)
  const auth = createClient({ baseUrl: server.baseUrl, storage: 'memory', key: uniqueKey('stepup-bad') })
  t.teardown(() => auth.close())
  const err = await auth.login({ username: 'alice', password: 'wrong' }).catch((e: unknown) => e) as AuthError
  t.ok(err instanceof AuthError)
  t.equal(err.code, 'TOKENGATE_BAD_CREDENTIALS')
  t.equal(err.maxAge, undefined)
  t.equal(err.acrValues, undefined)
})
