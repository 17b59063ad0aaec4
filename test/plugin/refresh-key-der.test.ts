// Refresh MAC keys come from the key, not its text (DESIGN §2): the same PEM key with CRLF line ends, or
// without its last newline, on another instance accepts the first instance's refresh tokens. Control: a
// different key refuses them. And refresh tokens issued before the change (MAC'd under a key derived from the
// PEM text) keep working, so an upgrade logs nobody out.
import { createHmac, generateKeyPairSync } from 'node:crypto'
import t from 'tap'
import { buildApp } from '../helpers/app.js'
import { readSession, uniquePrefix } from '../helpers/redis.js'
import { hashOf } from '../helpers/tokens.js'

function edKey (): { privateKey: string, publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  return { privateKey: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), publicKey: publicKey.export({ format: 'pem', type: 'spki' }).toString() }
}
const keysOf = (k: { privateKey: string, publicKey: string }): Array<{ kid: string, algorithm: 'EdDSA', privateKey: string, publicKey: string }> =>
  [{ kid: 'k1', algorithm: 'EdDSA', privateKey: k.privateKey, publicKey: k.publicKey }]

t.test('the same key with CRLF line ends, or no final newline, accepts the other instance\'s refresh tokens', async t => {
  const key = edKey()
  t.ok(key.privateKey.endsWith('\n') && !key.privateKey.includes('\r'), 'the original PEM: LF line ends and a final newline')
  const shared = { prefix: uniquePrefix('derkey') }
  const a = await buildApp(t, { secret: undefined, keys: keysOf(key) })
  const variants = {
    'CRLF line ends': { privateKey: key.privateKey.replace(/\n/g, '\r\n'), publicKey: key.publicKey.replace(/\n/g, '\r\n') },
    'no final newline': { privateKey: key.privateKey.trimEnd(), publicKey: key.publicKey.trimEnd() }
  }
  for (const [what, variant] of Object.entries(variants)) {
    const b = await buildApp(t, { secret: undefined, keys: keysOf(variant), keyPrefix: a.prefix }, shared)
    const pair = await a.app.tokengate.issue({ sub: 'u-alice', roles: ['user'] })
    const res = await b.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
    t.equal(res.statusCode, 200, `${what}: the other instance refreshes the first one's token (${res.statusCode} ${res.statusCode === 200 ? '' : res.body})`)
    if (res.statusCode === 200) {
      const next = res.json().refreshToken as string
      t.equal((await readSession(a.redis, a.prefix, 'u-alice', pair.sessionId))?.h, hashOf(next), `${what}: rotated in Redis`)
      // And back: the first instance accepts the second one's token.
      const back = await a.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: next } })
      t.equal(back.statusCode, 200, `${what}: and the first accepts the second's`)
    }
  }

  // Control: another key refuses them.
  const other = await buildApp(t, { secret: undefined, keys: keysOf(edKey()), keyPrefix: a.prefix }, shared)
  const pair = await a.app.tokengate.issue({ sub: 'u-alice', roles: ['user'] })
  const res = await other.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
  t.equal(res.statusCode, 401, 'another key: refused')
  t.equal(res.json().code, 'TOKENGATE_REFRESH_INVALID')
})

t.test('a refresh token MAC\'d under the old derivation (from the PEM text) still refreshes, once', async t => {
  const key = edKey()
  const a = await buildApp(t, { secret: undefined, keys: keysOf(key) })
  const pair = await a.app.tokengate.issue({ sub: 'u-alice', roles: ['user'] })
  // The same token as 0.2 made it: its body, MAC'd under HMAC(PEM text, label).
  const body = pair.refreshToken.slice(0, pair.refreshToken.lastIndexOf('.'))
  const oldKey = createHmac('sha256', Buffer.from(key.privateKey, 'utf8')).update('tokengate refresh-token mac v1').digest()
  const legacy = `${body}.${createHmac('sha256', oldKey).update(body).digest('base64url')}`
  t.not(legacy, pair.refreshToken, 'the derivations differ')
  const res = await a.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: legacy } })
  t.equal(res.statusCode, 200, `the pre-upgrade token refreshes (${res.statusCode})`)
  const next = res.json().refreshToken as string
  const nextBody = next.slice(0, next.lastIndexOf('.'))
  t.not(next.slice(nextBody.length + 1), createHmac('sha256', oldKey).update(nextBody).digest('base64url'), 'its successor is MAC\'d under the new derivation')
  const again = await a.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: next } })
  t.equal(again.statusCode, 200, 'and refreshes')
  // Control: a MAC under some other key is refused.
  const forged = `${body}.${createHmac('sha256', Buffer.from('not the key')).update(body).digest('base64url')}`
  const bad = await a.app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: forged } })
  t.equal(bad.statusCode, 401)
  t.equal(bad.json().code, 'TOKENGATE_REFRESH_INVALID')
})
