// Hostile and broken tokens: every one is refused with the right 401 code and challenge, echoes
// nothing secret, and leaves the user's session in Redis exactly as it was.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { buildApp, login, SECRET, type TestApp } from '../helpers/app.js'
import { readSession, sessionsKey, type StoredSession } from '../helpers/redis.js'
import { fakeClock } from '../helpers/clock.js'
import { b64json, craftAccessToken, hashOf, toB64json } from '../helpers/tokens.js'

type Pair = Awaited<ReturnType<typeof login>>

const WRONG_SECRET = 'z'.repeat(64) + 'y'.repeat(64)
const INVALID_CHALLENGE = 'Bearer error="invalid_token"'

interface Ctx extends TestApp {
  pair: Pair
  /** the key holding alice's sessions */
  key: string
  /** her session as stored right after login */
  before: StoredSession
}

/** An app with alice logged in, and a snapshot of her session record. */
async function setup (t: Test, options: Parameters<typeof buildApp>[1] = {}): Promise<Ctx> {
  const ta = await buildApp(t, options)
  const pair = await login(ta.app)
  const key = sessionsKey(ta.prefix, 'u-alice')
  const before = await readSession(ta.redis, ta.prefix, 'u-alice', pair.sessionId)
  if (before === undefined) throw new Error('the session is not stored after login')
  t.equal(before.h, hashOf(pair.refreshToken), 'the session holds the refresh hash')
  return { ...ta, pair, key, before }
}

/** The session record is still there with the same `h` (and no field changed at all). */
async function untouched (t: Test, ctx: Ctx): Promise<void> {
  const now = await readSession(ctx.redis, ctx.prefix, 'u-alice', ctx.pair.sessionId)
  t.equal(now?.h, ctx.before.h, 'session still present with the same h')
  t.same(now, ctx.before, 'no field of the session changed')
  t.ok(await ctx.redis.pttl(ctx.key) > 0, 'the user\'s key still expires natively')
  t.equal(await ctx.redis.zscore(`${ctx.prefix}:revoked`, ctx.pair.sessionId), null, 'session not revoked')
}

/** Strings that must never appear in a response: the secret, the user's real tokens and the presented one. */
function secretsOf (ctx: Ctx, presented: string[]): string[] {
  const out = [SECRET, ctx.pair.accessToken, ctx.pair.refreshToken]
  for (const p of presented) {
    if (p.length >= 8) out.push(p)
    // every long-enough segment of a presented token (signature, MAC, payload)
    for (const seg of p.split('.')) if (seg.length >= 16) out.push(seg)
  }
  return out
}

function assert401 (t: Test, res: LightMyRequestResponse, code: string, presented: boolean, secrets: string[]): void {
  t.equal(res.statusCode, 401, res.body)
  const body = res.json()
  t.equal(body.code, code)
  t.equal(body.statusCode, 401)
  t.equal(res.headers['www-authenticate'], presented ? INVALID_CHALLENGE : 'Bearer')
  for (const s of secrets) t.notOk(res.body.includes(s), 'the response does not echo a token or the secret')
  t.notOk('stack' in body, 'no stack trace')
  t.equal(res.headers['x-access-token'], undefined, 'no token handed out')
  t.equal(res.headers['x-refresh-token'], undefined, 'no token handed out')
}

/** GET /me with this bearer token, and app.tokengate.verify(token): both refuse with `code`; session untouched. */
async function refusedAccess (t: Test, ctx: Ctx, token: string, code: string, headers: Record<string, string> = {}): Promise<void> {
  const res = await ctx.app.inject({ url: '/me', headers: { authorization: `Bearer ${token}`, ...headers } })
  assert401(t, res, code, true, secretsOf(ctx, [token]))
  const err = await ctx.app.tokengate.verify(token).then(() => null, (e: unknown) => e as Error & { code: string })
  t.match(err, { statusCode: 401, code }, 'verify() rejects with the same code')
  for (const s of secretsOf(ctx, [token])) t.notOk(String(err?.message).includes(s), 'the error message does not echo a token')
  await untouched(t, ctx)
}

/** POST /auth/refresh (body and header), GET /me with x-refresh-token, and app.tokengate.refresh(): all REFRESH_INVALID. */
async function refusedRefresh (t: Test, ctx: Ctx, token: string): Promise<void> {
  const code = 'TOKENGATE_REFRESH_INVALID'
  const secrets = secretsOf(ctx, [token])
  const byBody = await ctx.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: token } })
  assert401(t, byBody, code, true, secrets)
  const byHeader = await ctx.app.inject({ method: 'POST', url: '/auth/refresh', headers: { 'x-refresh-token': token } })
  assert401(t, byHeader, code, true, secrets)
  const me = await ctx.app.inject({ url: '/me', headers: { 'x-refresh-token': token } })
  assert401(t, me, code, true, secrets)
  const expired = craftAccessToken({ sub: 'u-alice', sid: ctx.pair.sessionId }, { expiresInSec: -60 })
  const meExpired = await ctx.app.inject({ url: '/me', headers: { authorization: `Bearer ${expired}`, 'x-refresh-token': token } })
  assert401(t, meExpired, code, true, secrets)
  const err = await ctx.app.tokengate.refresh(token).then(() => null, (e: unknown) => e)
  t.match(err, { statusCode: 401, code }, 'tokengate.refresh() rejects with the same code')
  await untouched(t, ctx)
}

/** The real tokens still work afterwards: nothing above revoked the session. */
async function stillWorks (t: Test, ctx: Ctx): Promise<void> {
  const me = await ctx.app.inject({ url: '/me', headers: { authorization: `Bearer ${ctx.pair.accessToken}` } })
  t.equal(me.statusCode, 200, me.body)
  t.equal(me.json().userId, 'u-alice')
}

/** A plain node:http GET, for header values that app.inject() passes through untouched but real HTTP does not. */
async function rawGet (port: number, path: string, headers: Record<string, string>): Promise<{ status: number, challenge: unknown, body: string }> {
  return await new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, challenge: res.headers['www-authenticate'], body }))
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('no token at all: TOKEN_MISSING with a plain Bearer challenge', async t => {
  const ctx = await setup(t)
  const res = await ctx.app.inject({ url: '/me' })
  assert401(t, res, 'TOKENGATE_TOKEN_MISSING', false, secretsOf(ctx, []))
  await t.rejects(ctx.app.tokengate.verify(''), { statusCode: 401, code: 'TOKENGATE_TOKEN_MISSING' })
  await untouched(t, ctx)
})

t.test('a crafted token that is in fact well formed is accepted (control for the cases below)', async t => {
  const ctx = await setup(t)
  const token = craftAccessToken({ sub: 'u-alice', sid: ctx.pair.sessionId, roles: ['user'] })
  const res = await ctx.app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })
  t.equal(res.statusCode, 200, res.body)
  t.match(await ctx.app.tokengate.verify(token), { userId: 'u-alice', sessionId: ctx.pair.sessionId })
  await untouched(t, ctx)
})

t.test('alg: none', async t => {
  const ctx = await setup(t)
  const [, payload, signature] = ctx.pair.accessToken.split('.')
  for (const alg of ['none', 'None', 'NONE']) {
    const header = toB64json({ alg, typ: 'at+jwt' })
    await t.test(`alg ${alg}, empty signature`, async t => {
      await refusedAccess(t, ctx, `${header}.${payload}.`, 'TOKENGATE_TOKEN_INVALID')
    })
    await t.test(`alg ${alg}, the real token's signature kept`, async t => {
      await refusedAccess(t, ctx, `${header}.${payload}.${signature}`, 'TOKENGATE_TOKEN_INVALID')
    })
  }
  await t.test('alg none without a trailing dot', async t => {
    await refusedAccess(t, ctx, `${toB64json({ alg: 'none', typ: 'at+jwt' })}.${payload}`, 'TOKENGATE_TOKEN_INVALID')
  })
  await t.test('alg none signed by fast-jwt itself', async t => {
    const token = craftAccessToken({ sub: 'u-alice', sid: ctx.pair.sessionId }, { algorithm: 'none' })
    t.match(JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString()), { alg: 'none' })
    await refusedAccess(t, ctx, token, 'TOKENGATE_TOKEN_INVALID')
  })
  await stillWorks(t, ctx)
})

t.test('tampered payload, signature kept', async t => {
  const ctx = await setup(t)
  const [header, payload, signature] = ctx.pair.accessToken.split('.')
  const claims = b64json(payload)
  t.equal(claims.sub, 'u-alice')
  t.equal(claims.sid, ctx.pair.sessionId)
  const tampered = (change: Record<string, unknown>): string => `${header}.${toB64json({ ...claims, ...change })}.${signature}`
  await t.test('sub changed', async t => {
    await refusedAccess(t, ctx, tampered({ sub: 'u-bob' }), 'TOKENGATE_TOKEN_INVALID')
  })
  await t.test('roles changed', async t => {
    await refusedAccess(t, ctx, tampered({ roles: ['user', 'admin'] }), 'TOKENGATE_TOKEN_INVALID')
  })
  await t.test('exp pushed a year out', async t => {
    await refusedAccess(t, ctx, tampered({ exp: (claims.exp as number) + 365 * 86400 }), 'TOKENGATE_TOKEN_INVALID')
  })
  await t.test('tampered access token + a valid refresh token: invalid, and no refresh is tried', async t => {
    await refusedAccess(t, ctx, tampered({ sub: 'u-bob' }), 'TOKENGATE_TOKEN_INVALID', { 'x-refresh-token': ctx.pair.refreshToken })
  })
  await stillWorks(t, ctx)
})

t.test('signed with the wrong secret', async t => {
  const ctx = await setup(t)
  const token = craftAccessToken({ sub: 'u-alice', sid: ctx.pair.sessionId, roles: ['user'] }, { key: WRONG_SECRET })
  await refusedAccess(t, ctx, token, 'TOKENGATE_TOKEN_INVALID')
  await stillWorks(t, ctx)
})

t.test('HS512 with the right secret: algorithm not allowed', async t => {
  const ctx = await setup(t)
  const token = craftAccessToken({ sub: 'u-alice', sid: ctx.pair.sessionId, roles: ['user'] }, { algorithm: 'HS512' })
  t.equal(b64json(token.split('.')[0]).alg, 'HS512')
  await refusedAccess(t, ctx, token, 'TOKENGATE_TOKEN_INVALID')
  const hs384 = craftAccessToken({ sub: 'u-alice', sid: ctx.pair.sessionId, roles: ['user'] }, { algorithm: 'HS384' })
  await refusedAccess(t, ctx, hs384, 'TOKENGATE_TOKEN_INVALID')
  await stillWorks(t, ctx)
})

t.test('typ JWT instead of at+jwt, right secret: not an access token', async t => {
  const ctx = await setup(t)
  const token = craftAccessToken({ sub: 'u-alice', sid: ctx.pair.sessionId, roles: ['user'] }, { typ: 'JWT' })
  t.equal(b64json(token.split('.')[0]).typ, 'JWT')
  await refusedAccess(t, ctx, token, 'TOKENGATE_TOKEN_INVALID')
  await stillWorks(t, ctx)
})

t.test('a refresh token sent as an access token', async t => {
  const ctx = await setup(t)
  await refusedAccess(t, ctx, ctx.pair.refreshToken, 'TOKENGATE_TOKEN_INVALID')
  await stillWorks(t, ctx)
})

t.test('an access token sent as a refresh token', async t => {
  const ctx = await setup(t)
  await refusedRefresh(t, ctx, ctx.pair.accessToken)
  await stillWorks(t, ctx)
})

t.test('expired access tokens', async t => {
  const ctx = await setup(t)
  await t.test('expired, right secret, real sid: TOKEN_EXPIRED', async t => {
    const token = craftAccessToken({ sub: 'u-alice', sid: ctx.pair.sessionId, roles: ['user'] }, { expiresInSec: -60 })
    await refusedAccess(t, ctx, token, 'TOKENGATE_TOKEN_EXPIRED')
  })
  await t.test('expired and the wrong secret: TOKEN_INVALID (a forgery is not "expired")', async t => {
    const token = craftAccessToken({ sub: 'u-alice', sid: ctx.pair.sessionId, roles: ['user'] }, { expiresInSec: -60, key: WRONG_SECRET })
    await refusedAccess(t, ctx, token, 'TOKENGATE_TOKEN_INVALID')
  })
  await stillWorks(t, ctx)
})

t.test('garbage strings', async t => {
  const ctx = await setup(t)
  const long = 'x'.repeat(10 * 1024)
  const longDotted = `${'A'.repeat(4000)}.${'B'.repeat(4000)}.${'C'.repeat(10 * 1024 - 8002)}`
  t.equal(longDotted.length, 10 * 1024)
  for (const [name, token] of [['abc', 'abc'], ['a.b.c', 'a.b.c'], ['10 kB of x', long], ['10 kB in three parts', longDotted], ['a lone dot', '.'], ['two dots', '..']]) {
    await t.test(name, async t => {
      await refusedAccess(t, ctx, token, 'TOKENGATE_TOKEN_INVALID')
    })
  }
  await t.test('empty bearer: no token was presented', async t => {
    const res = await ctx.app.inject({ url: '/me', headers: { authorization: 'Bearer ' } })
    assert401(t, res, 'TOKENGATE_TOKEN_MISSING', false, secretsOf(ctx, []))
    await t.rejects(ctx.app.tokengate.verify(''), { statusCode: 401, code: 'TOKENGATE_TOKEN_MISSING' })
    await untouched(t, ctx)
  })
  await t.test('bearer with only blanks, over real HTTP: no token was presented', async t => {
    // Node's HTTP parser strips trailing blanks from header values, so a client can only send "Bearer".
    await ctx.app.listen({ port: 0, host: '127.0.0.1' })
    const { port } = ctx.app.server.address() as AddressInfo
    for (const value of ['Bearer    ', 'Bearer \t ', 'bearer  ']) {
      const res = await rawGet(port, '/me', { authorization: value })
      t.equal(res.status, 401, res.body)
      t.equal(JSON.parse(res.body).code, 'TOKENGATE_TOKEN_MISSING')
      t.equal(res.challenge, 'Bearer')
    }
    await untouched(t, ctx)
  })
  await t.test('garbage as a refresh token', async t => {
    for (const token of ['abc', 'a.b.c', long.slice(0, 4000), 'tgr1.....', 'tgr2......']) await refusedRefresh(t, ctx, token)
  })
  await stillWorks(t, ctx)
})

t.test('tampered refresh tokens', async t => {
  const ctx = await setup(t)
  // tgr2.<user>.<session>.<refresh id>.<parent hash | ->.<expiry>.<mac>
  const parts = ctx.pair.refreshToken.split('.')
  t.equal(parts.length, 7)
  t.equal(parts[0], 'tgr2')
  const rebuilt = (i: number, value: string): string => parts.map((p, j) => (j === i ? value : p)).join('.')
  const flip = (s: string, at: number): string => s.slice(0, at) + (s[at] === 'A' ? 'B' : 'A') + s.slice(at + 1)

  await t.test('one character of the MAC flipped', async t => {
    await refusedRefresh(t, ctx, rebuilt(6, flip(parts[6], 10)))
  })
  await t.test('the MAC dropped', async t => {
    await refusedRefresh(t, ctx, parts.slice(0, 6).join('.') + '.')
  })
  await t.test('expiry moved to the far future', async t => {
    await refusedRefresh(t, ctx, rebuilt(5, (Date.now() + 10 * 365 * 86400_000).toString(36)))
  })
  await t.test('a parent hash added (posing as one rotation ahead of the session)', async t => {
    t.equal(parts[4], '-', 'a login token has no parent')
    await refusedRefresh(t, ctx, rebuilt(4, ctx.before.h))
  })
  await t.test('downgraded to the 0.1 format (parent dropped, tgr1)', async t => {
    await refusedRefresh(t, ctx, ['tgr1', ...parts.slice(1, 4), ...parts.slice(5)].join('.'))
  })
  await t.test('user part changed to another user', async t => {
    t.equal(Buffer.from(parts[1], 'base64url').toString(), 'u-alice')
    await refusedRefresh(t, ctx, rebuilt(1, Buffer.from('u-bob').toString('base64url')))
  })
  await t.test('refresh id changed', async t => {
    await refusedRefresh(t, ctx, rebuilt(3, flip(parts[3], 3)))
  })
  await t.test('real refresh token still refreshes after all that', async t => {
    const res = await ctx.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: ctx.pair.refreshToken } })
    t.equal(res.statusCode, 200, res.body)
    t.not((await readSession(ctx.redis, ctx.prefix, 'u-alice', ctx.pair.sessionId))?.h, ctx.before.h, 'a real rotation does change h (so the checks above could fail)')
  })
})

t.test('foreign iss / aud', async t => {
  const ctx = await setup(t, { issuer: 'https://auth.example', audience: 'api' })
  const claims = b64json(ctx.pair.accessToken.split('.')[1])
  t.equal(claims.iss, 'https://auth.example', 'issued tokens carry iss')
  t.equal(claims.aud, 'api', 'issued tokens carry aud')
  await stillWorks(t, ctx)
  t.match(await ctx.app.tokengate.verify(ctx.pair.accessToken), { userId: 'u-alice' })

  const base = { sub: 'u-alice', sid: ctx.pair.sessionId, roles: ['user'] }
  await t.test('crafted with the right iss and aud works (control)', async t => {
    const token = craftAccessToken(base, { iss: 'https://auth.example', aud: 'api' })
    const res = await ctx.app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })
    t.equal(res.statusCode, 200, res.body)
  })
  await t.test('iss https://evil.example', async t => {
    await refusedAccess(t, ctx, craftAccessToken(base, { iss: 'https://evil.example', aud: 'api' }), 'TOKENGATE_TOKEN_INVALID')
  })
  await t.test('aud other', async t => {
    await refusedAccess(t, ctx, craftAccessToken(base, { iss: 'https://auth.example', aud: 'other' }), 'TOKENGATE_TOKEN_INVALID')
  })
  // RFC 9068 §2.2: iss and aud are required in an access token; a configured check must not be skipped when they are absent.
  await t.test('no iss claim (aud right)', async t => {
    await refusedAccess(t, ctx, craftAccessToken(base, { aud: 'api' }), 'TOKENGATE_TOKEN_INVALID')
  })
  await t.test('no aud claim (iss right)', async t => {
    await refusedAccess(t, ctx, craftAccessToken(base, { iss: 'https://auth.example' }), 'TOKENGATE_TOKEN_INVALID')
  })
  await t.test('a refreshed token still carries iss/aud', async t => {
    const res = await ctx.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: ctx.pair.refreshToken } })
    t.equal(res.statusCode, 200, res.body)
    t.match(b64json(res.json().accessToken.split('.')[1]), { iss: 'https://auth.example', aud: 'api', sub: 'u-alice' })
  })
})

t.test("a revoked session's token: TOKEN_REVOKED", async t => {
  const ctx = await setup(t)
  t.equal(await ctx.app.tokengate.revokeSession('u-alice', ctx.pair.sessionId), true)
  t.equal(await ctx.redis.exists(ctx.key), 0, 'the session is gone (and the user\'s key with it)')
  t.ok(await ctx.redis.zscore(`${ctx.prefix}:revoked`, ctx.pair.sessionId) !== null, 'the session is in the revoked set')
  const tokens = [ctx.pair.accessToken, craftAccessToken({ sub: 'u-alice', sid: ctx.pair.sessionId, roles: ['user'] })]
  for (const token of tokens) {
    const res = await ctx.app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })
    assert401(t, res, 'TOKENGATE_TOKEN_REVOKED', true, secretsOf(ctx, [token]))
    await t.rejects(ctx.app.tokengate.verify(token), { statusCode: 401, code: 'TOKENGATE_TOKEN_REVOKED' })
  }
  const r = await ctx.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: ctx.pair.refreshToken } })
  t.equal(r.statusCode, 401, r.body)
  t.equal(r.json().code, 'TOKENGATE_REFRESH_INVALID')
  t.equal(await ctx.redis.exists(ctx.key), 0, 'no session came back')
})

t.test("clockTolerance '30s'", async t => {
  const ctx = await setup(t, { clockTolerance: '30s' })
  const base = { sub: 'u-alice', sid: ctx.pair.sessionId, roles: ['user'] }
  await t.test('expired 10 s ago: accepted', async t => {
    const token = craftAccessToken(base, { expiresInSec: -10 })
    const res = await ctx.app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })
    t.equal(res.statusCode, 200, res.body)
    t.equal(res.json().userId, 'u-alice')
    t.match(await ctx.app.tokengate.verify(token), { userId: 'u-alice', sessionId: ctx.pair.sessionId })
    await untouched(t, ctx)
  })
  await t.test('expired 60 s ago: TOKEN_EXPIRED', async t => {
    await refusedAccess(t, ctx, craftAccessToken(base, { expiresInSec: -60 }), 'TOKENGATE_TOKEN_EXPIRED')
  })
})

t.test('iat in the future beyond clockTolerance: TOKEN_INVALID (fast-jwt checks iat only with maxAge)', async t => {
  // A stopped clock at a whole second: iat "now" and "one second ahead" are exact.
  const clock = fakeClock(t)
  const now = clock.now() / 1000
  await t.test('clockTolerance 0: iat a second or an hour ahead is refused, iat now is accepted', async t => {
    const ctx = await setup(t)
    const base = { sub: 'u-alice', sid: ctx.pair.sessionId, roles: ['user'] }
    await refusedAccess(t, ctx, craftAccessToken({ ...base, iat: now + 3600 }, { expiresInSec: 7200 }), 'TOKENGATE_TOKEN_INVALID')
    await refusedAccess(t, ctx, craftAccessToken({ ...base, iat: now + 1 }), 'TOKENGATE_TOKEN_INVALID')
    const ok = craftAccessToken({ ...base, iat: now })
    t.equal((await ctx.app.inject({ url: '/me', headers: { authorization: `Bearer ${ok}` } })).statusCode, 200)
    // A future iat is never refreshed around either: it is invalid, not expired.
    await refusedAccess(t, ctx, craftAccessToken({ ...base, iat: now + 3600 }, { expiresInSec: 7200 }), 'TOKENGATE_TOKEN_INVALID', { 'x-refresh-token': ctx.pair.refreshToken })
  })
  await t.test("clockTolerance '30s': 30 s ahead accepted, 31 s ahead refused", async t => {
    const ctx = await setup(t, { clockTolerance: '30s' })
    const base = { sub: 'u-alice', sid: ctx.pair.sessionId, roles: ['user'] }
    const ahead30 = craftAccessToken({ ...base, iat: now + 30 })
    t.equal((await ctx.app.inject({ url: '/me', headers: { authorization: `Bearer ${ahead30}` } })).statusCode, 200)
    await refusedAccess(t, ctx, craftAccessToken({ ...base, iat: now + 31 }), 'TOKENGATE_TOKEN_INVALID')
  })
})

t.test('a remembered access token stops working at its exp (the verified-token memory never outlives it)', async t => {
  const clock = fakeClock(t)
  const ctx = await setup(t, { accessTokenTtl: '10m' })
  const token = ctx.pair.accessToken
  const exp = b64json(token.split('.')[1]).exp as number
  t.equal(exp * 1000 - clock.now(), 600_000, 'logged in at a whole second: exp is 10 minutes on')
  for (let i = 0; i < 3; i++) {
    const res = await ctx.app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })
    t.equal(res.statusCode, 200, `use ${i + 1} (remembered after the first)`)
  }
  clock.to(exp * 1000 - 1)
  t.equal((await ctx.app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })).statusCode, 200, 'a millisecond before exp: still remembered')
  clock.to(exp * 1000 + 1)
  await refusedAccess(t, ctx, token, 'TOKENGATE_TOKEN_EXPIRED')
})
