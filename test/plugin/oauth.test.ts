// The OAuth 2.0 endpoints (routes.oauth), exercised by a standard client, panva's oauth4webapi, exactly as
// it talks to any authorization server: discovery (RFC 8414), the refresh token grant (RFC 6749 §6, with
// and without DPoP), revocation (RFC 7009: the access token dies at once), introspection (RFC 7662, active
// and inactive, Basic-authenticated) and invalid_grant. Then the error shapes a client sees by hand.
import * as oauth from 'oauth4webapi'
import t, { type Test } from 'tap'
import { buildApp, login, verifyCredentials } from '../helpers/app.js'
import { freePort } from '../helpers/redis.js'

const RS = { id: 'orders-api', secret: 'orders-api-secret-0123456789' }
const insecure = { [oauth.allowInsecureRequests]: true } // loopback HTTP in tests
const client: oauth.Client = { client_id: 'spa' }

async function server (t: Test, extra: Record<string, unknown> = {}): Promise<{ base: string, issuer: URL, as: oauth.AuthorizationServer, app: Awaited<ReturnType<typeof buildApp>>['app'] }> {
  // routes.oauth needs the issuer (the metadata never takes it from the Host header): the URL the server will listen on.
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const { app } = await buildApp(t, { issuer: base, routes: { verifyCredentials, oauth: { introspectionClients: [RS] } }, ...extra })
  await app.listen({ port, host: '127.0.0.1' })
  const issuer = new URL(base)
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }))
  return { base, issuer, as, app }
}

t.test('discovery: the metadata names every endpoint, and oauth4webapi accepts it', async t => {
  const { as, base } = await server(t, { dpop: {} })
  t.equal(as.issuer, base, 'issuer: the issuer option')
  t.equal(as.token_endpoint, `${base}/auth/token`)
  t.equal(as.revocation_endpoint, `${base}/auth/revoke`)
  t.equal(as.introspection_endpoint, `${base}/auth/introspect`)
  t.same(as.grant_types_supported, ['refresh_token'], 'only the refresh grant (no password grant: RFC 9700 §2.4)')
  t.same(as.dpop_signing_alg_values_supported, ['ES256', 'EdDSA'])
  t.equal(as.jwks_uri, undefined, 'no JWKS with a shared secret')
})

t.test('refresh grant: a new pair with Cache-Control: no-store; the old token within grace gets the same successor', async t => {
  const { as, app, base } = await server(t)
  const pair = await login(app)
  const res = await oauth.refreshTokenGrantRequest(as, client, oauth.None(), pair.refreshToken, insecure)
  t.equal(res.headers.get('cache-control'), 'no-store')
  const tokens = await oauth.processRefreshTokenResponse(as, client, res)
  t.equal(tokens.token_type, 'bearer', 'token_type Bearer')
  t.type(tokens.access_token, 'string')
  t.type(tokens.refresh_token, 'string')
  t.not(tokens.refresh_token, pair.refreshToken, 'rotated')
  t.ok(typeof tokens.expires_in === 'number' && tokens.expires_in > 0)
  const me = await fetch(`${base}/me`, { headers: { authorization: `Bearer ${tokens.access_token}` } })
  t.equal(me.status, 200, 'the new access token works')
  const again = await oauth.processRefreshTokenResponse(as, client, await oauth.refreshTokenGrantRequest(as, client, oauth.None(), pair.refreshToken, insecure))
  t.equal(again.refresh_token, tokens.refresh_token, 'a second refresh of the same token inside the grace window: the same successor')
})

t.test('invalid_grant: a forged, an expired-looking and a reused refresh token', async t => {
  const { as, app } = await server(t, { reuseGraceMs: 0 })
  for (const bad of ['not-a-refresh-token', 'tgr2.YQ.abc.def.-.zzzzzzz.mac']) {
    const err = await oauth.processRefreshTokenResponse(as, client, await oauth.refreshTokenGrantRequest(as, client, oauth.None(), bad, insecure)).then(() => null, (e: unknown) => e)
    t.ok(err instanceof oauth.ResponseBodyError, `${bad.slice(0, 12)}…: an OAuth error response`)
    t.equal((err as oauth.ResponseBodyError).error, 'invalid_grant')
    t.equal((err as oauth.ResponseBodyError).status, 400)
  }
  const pair = await login(app)
  await oauth.processRefreshTokenResponse(as, client, await oauth.refreshTokenGrantRequest(as, client, oauth.None(), pair.refreshToken, insecure))
  const reused = await oauth.processRefreshTokenResponse(as, client, await oauth.refreshTokenGrantRequest(as, client, oauth.None(), pair.refreshToken, insecure)).then(() => null, (e: unknown) => e)
  t.equal((reused as oauth.ResponseBodyError).error, 'invalid_grant', 'reuse is invalid_grant (and the session is revoked)')
  t.same(await app.tokengate.listSessions('u-alice'), [], 'the reused session is gone')
})

t.test('revocation: a refresh token or an access token ends the session; its access token dies at once; 200 for anything', async t => {
  const { as, app, base } = await server(t)
  const me = async (token: string): Promise<number> => (await fetch(`${base}/me`, { headers: { authorization: `Bearer ${token}` } })).status
  const one = await login(app)
  t.equal(await me(one.accessToken), 200)
  await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, oauth.None(), one.refreshToken, { ...insecure, additionalParameters: { token_type_hint: 'refresh_token' } }))
  t.equal(await me(one.accessToken), 401, 'revoking the refresh token kills the access token at once')
  const two = await login(app)
  await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, oauth.None(), two.accessToken, insecure))
  t.equal(await me(two.accessToken), 401, 'revoking the access token ends its session')
  const refreshAfter = await fetch(`${base}/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refreshToken: two.refreshToken }) })
  t.equal(refreshAfter.status, 401, 'and its refresh token')
  const unknown = await oauth.revocationRequest(as, client, oauth.None(), 'no-such-token', insecure)
  t.equal(unknown.status, 200, 'an unknown token: 200 (RFC 7009 §2.2)')
  await oauth.processRevocationResponse(unknown)
})

t.test('introspection: active access and refresh tokens, inactive ones, and client authentication', async t => {
  const { as, app, base } = await server(t)
  const rs: oauth.Client = { client_id: RS.id }
  const introspect = async (token: string): Promise<oauth.IntrospectionResponse> =>
    await oauth.processIntrospectionResponse(as, rs, await oauth.introspectionRequest(as, rs, oauth.ClientSecretBasic(RS.secret), token, insecure))
  const pair = await login(app)
  const access = await introspect(pair.accessToken)
  t.match(access, { active: true, sub: 'u-alice', sid: pair.sessionId, token_type: 'Bearer', roles: ['user'] }, 'a live access token')
  t.type(access.exp, 'number')
  t.type(access.iat, 'number')
  const refresh = await introspect(pair.refreshToken)
  t.match(refresh, { active: true, sub: 'u-alice', sid: pair.sessionId, token_type: 'refresh_token' }, 'a live refresh token')
  t.same(await introspect('garbage'), { active: false }, 'garbage: inactive')
  const next = await fetch(`${base}/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refreshToken: pair.refreshToken }) })
  t.equal(next.status, 200)
  t.same(await introspect(pair.refreshToken), { active: false }, 'a rotated refresh token: inactive')
  await app.tokengate.revokeAll('u-alice')
  t.same(await introspect(pair.accessToken), { active: false }, 'the access token of a revoked session: inactive')

  for (const [what, secret] of [['a wrong secret', 'wrong-secret-0123456789'], ['no credentials', undefined]] as const) {
    const res = await fetch(`${base}/auth/introspect`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...(secret !== undefined ? { authorization: `Basic ${Buffer.from(`${RS.id}:${secret}`).toString('base64')}` } : {}) },
      body: new URLSearchParams({ token: pair.accessToken }).toString()
    })
    t.equal(res.status, 401, `${what}: 401`)
    t.equal(res.headers.get('www-authenticate'), 'Basic realm="tokengate"')
    t.same(await res.json(), { error: 'invalid_client', error_description: 'client authentication failed' })
  }
})

t.test('DPoP at the token endpoint: oauth4webapi binds the session, and proof failures take OAuth\'s shape', async t => {
  const { as, app, base } = await server(t, { dpop: { nonce: true } })
  const keyPair = await oauth.generateKeyPair('ES256')
  const DPoP = oauth.DPoP(client, keyPair)
  // Log in with a bound session through the plugin's own route (the token endpoint refreshes only).
  const first = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wonderland' } })
  const unbound = first.json()
  const grant = async (): Promise<Response> => await oauth.refreshTokenGrantRequest(as, client, oauth.None(), unbound.refreshToken, { ...insecure, DPoP })
  let res = await grant()
  let tokens
  try {
    tokens = await oauth.processRefreshTokenResponse(as, client, res)
  } catch (err) {
    t.ok(oauth.isDPoPNonceError(err), 'the first proof lacks the server nonce: use_dpop_nonce')
    t.equal((err as oauth.ResponseBodyError).status, 400)
    res = await grant() // oauth4webapi kept the DPoP-Nonce header's nonce
    tokens = await oauth.processRefreshTokenResponse(as, client, res)
  }
  t.equal(tokens.token_type, 'dpop', 'the refresh with a proof bound the session: token_type DPoP')
  const bearer = await fetch(`${base}/me`, { headers: { authorization: `Bearer ${tokens.access_token}` } })
  t.equal(bearer.status, 401, 'the bound access token as Bearer is refused')
  const noProof = await fetch(`${base}/auth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token! }).toString() })
  t.equal(noProof.status, 400, 'refreshing the bound session without a proof: 400')
  t.same(await noProof.json(), { error: 'invalid_dpop_proof', error_description: 'Invalid DPoP proof: the session is bound to a DPoP key: a proof is required' })
})

t.test('request errors take OAuth\'s shape: invalid_request, unsupported_grant_type', async t => {
  const { base } = await server(t)
  const post = async (path: string, body: Record<string, string>): Promise<{ status: number, body: any, cache: string | null }> => {
    const res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(body).toString() })
    return { status: res.status, body: await res.json(), cache: res.headers.get('cache-control') }
  }
  t.match(await post('/auth/token', {}), { status: 400, body: { error: 'invalid_request' } }, 'no grant_type')
  t.match(await post('/auth/token', { grant_type: 'password', username: 'alice', password: 'wonderland' }), { status: 400, body: { error: 'unsupported_grant_type' } }, 'the password grant is not offered')
  t.match(await post('/auth/token', { grant_type: 'refresh_token' }), { status: 400, body: { error: 'invalid_request' } }, 'no refresh_token')
  t.match(await post('/auth/revoke', {}), { status: 400, body: { error: 'invalid_request' } }, 'revoke without a token')
  const r = await post('/auth/token', { grant_type: 'refresh_token', refresh_token: 'x' })
  t.match(r, { status: 400, body: { error: 'invalid_grant' }, cache: 'no-store' }, 'invalid_grant, not cached')
})
