// A user with many sessions (an API client that logs in over and over) must not make that user's
// operations, or Redis, slower for everyone: up to 8 sessions a user's key is a string (a MessagePack map,
// 0.2's layout), beyond it a hash with one field per session, so an operation on one session reads and
// writes that session's field alone. (Redis time per operation is measured in `npm run bench`.)
import { randomBytes } from 'node:crypto'
import { encode as encodeMsgpack } from '@msgpack/msgpack'
import t from 'tap'
import type { Test } from 'tap'
import { Redis } from 'ioredis'
import { RedisStore, type NewSession, type SessionTimes } from '../../plugin/store/index.js'
import { buildApp, login } from '../helpers/app.js'
import { deletePrefix, readSessions, redisUrl, sessionsKey, uniquePrefix } from '../helpers/redis.js'

const DAY = 86_400_000
const UA_104 = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.7 Safari/537.36'
const id = (): string => randomBytes(16).toString('base64url')
const hash = (): string => randomBytes(16).toString('base64url').slice(0, 22)
const times = (now: number, o: Partial<SessionTimes> = {}): SessionTimes => ({ now, refreshTtlMs: DAY, maxSessionAgeMs: 30 * DAY, extraMs: 600_000, ...o })

function session (userId: string, now: number, o: Partial<NewSession> = {}): NewSession {
  return { userId, sessionId: id(), refreshHash: hash(), refreshExpiresAt: now + DAY, createdAt: now, ip: '203.0.113.7', userAgent: UA_104, roles: ['user'], claims: {}, ...o }
}

async function storeFor (t: Test): Promise<{ store: RedisStore, client: Redis, prefix: string }> {
  const url = await redisUrl()
  const prefix = uniquePrefix('heavy')
  const client = new Redis(url)
  const store = new RedisStore({ redis: url, keyPrefix: prefix, timeoutMs: 5000 })
  await store.ready()
  t.teardown(async () => {
    await store.close()
    await deletePrefix(client, prefix)
    client.disconnect()
  })
  return { store, client, prefix }
}

t.test('up to 8 sessions the key is a string; the 9th login makes it a hash, and every session keeps working', async t => {
  const { app, redis, prefix } = await buildApp(t)
  const key = sessionsKey(prefix, 'u-alice')
  const pairs = []
  for (let i = 0; i < 8; i++) pairs.push(await login(app))
  t.equal(await redis.type(key), 'string', '8 sessions: one string (a MessagePack map)')
  pairs.push(await login(app))
  t.equal(await redis.type(key), 'hash', 'the 9th: a hash')
  t.equal(await redis.hlen(key), 9, 'one field per session')
  const stored = await readSessions(redis, prefix, 'u-alice')
  t.same(Object.keys(stored ?? {}).sort(), pairs.map(p => p.sessionId).sort(), 'each field is a session id, its value the record')

  for (const p of pairs) {
    const me = await app.inject({ url: '/me', headers: { authorization: `Bearer ${p.accessToken}` } })
    t.equal(me.statusCode, 200, 'the access token works')
    const r = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: p.refreshToken } })
    t.equal(r.statusCode, 200, `the refresh token rotates (${r.body.slice(0, 80)})`)
    const again = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: p.refreshToken } })
    t.equal(again.statusCode, 200, 'within the grace window it gets the same successor')
    t.equal(again.json().refreshToken, r.json().refreshToken)
  }
  const listed = await app.inject({ url: '/auth/sessions', headers: { authorization: `Bearer ${pairs[0].accessToken}` } })
  t.equal(listed.json().length, 9, 'all nine are listed')

  const gone = await app.inject({ method: 'DELETE', url: `/auth/sessions/${pairs[3].sessionId}`, headers: { authorization: `Bearer ${pairs[0].accessToken}` } })
  t.equal(gone.statusCode, 204)
  t.equal(await redis.hexists(key, pairs[3].sessionId), 0, 'a deleted session\'s field is gone')
  t.equal(await redis.hlen(key), 8, 'the others stay')
})

t.test('in the hash form a refresh writes its own session\'s field and nothing else', async t => {
  const { store, client, prefix } = await storeFor(t)
  const now = Date.now()
  const user = 'u-' + id()
  const all = Array.from({ length: 20 }, (_, i) => session(user, now, { createdAt: now - i }))
  for (const s of all) await store.create(s, times(now))
  const key = sessionsKey(prefix, user)
  t.equal(await client.type(key), 'hash')
  const before = await client.hgetallBuffer(key)
  const target = all[7]
  const r = await store.rotate({ ...times(now + 1000), userId: user, sessionId: target.sessionId, presentedHash: target.refreshHash, successorHash: hash(), rotate: true, graceMs: 10_000 })
  t.equal(r.status, 'ok')
  const after = await client.hgetallBuffer(key)
  t.same(Object.keys(after).sort(), Object.keys(before).sort(), 'the same sessions')
  for (const s of all) {
    if (s === target) t.notSame(after[s.sessionId], before[s.sessionId], 'the refreshed session\'s field changed')
    else t.ok(after[s.sessionId].equals(before[s.sessionId]), `session ${all.indexOf(s)}: byte for byte unchanged`)
  }
  const pexp = Number(await client.call('PEXPIRETIME', key))
  t.ok(r.status === 'ok' && pexp >= r.record.expiresAt, 'the key expires no earlier than the refreshed session')
})

t.test('dead sessions in a hash are swept by later logins, a few at a time', async t => {
  const { store, client, prefix } = await storeFor(t)
  const now = Date.now()
  const user = 'u-' + id()
  // 30 sessions whose records end within 2 s (refresh 1 s + access 1 s), then logins 10 s later by the
  // store's clock (the caller's `now`): each login looks at 8 sessions at random and deletes the dead ones.
  for (let i = 0; i < 30; i++) await store.create(session(user, now, { refreshExpiresAt: now + 1000 }), times(now, { extraMs: 1000 }))
  const key = sessionsKey(prefix, user)
  t.equal(await client.hlen(key), 30)
  const later = now + 10_000
  const live = []
  for (let i = 0; i < 40 && await client.hlen(key) > live.length; i++) {
    const s = session(user, later)
    live.push(s)
    await store.create(s, times(later))
  }
  t.equal(await client.hlen(key), live.length, `after ${live.length} logins only the live sessions are left`)
  t.ok(live.length < 40, 'well before every dead session could have been looked at one by one')
  t.equal((await store.list(user, later)).length, live.length, 'and listed')
})

t.test('a user with 2,000 live sessions: under 400 bytes of Redis memory per session, each one works', async t => {
  const { store, client, prefix } = await storeFor(t)
  const now = Date.now()
  const user = 'u-' + id()
  const all: NewSession[] = []
  for (let i = 0; i < 2000; i++) {
    const s = session(user, now, { createdAt: now - i })
    all.push(s)
    await store.create(s, times(now))
  }
  const key = sessionsKey(prefix, user)
  const bytes = Number(await client.memory('USAGE', key, 'SAMPLES', 0))
  t.ok(bytes / 2000 < 400, `MEMORY USAGE of the user's key / 2,000 = ${(bytes / 2000).toFixed(1)} bytes per session (ip and a 104-character user agent each)`)
  const list = await store.list(user, now)
  t.equal(list.length, 2000, 'every session is listed')
  t.same(list.slice(0, 3).map(r => r.sessionId), all.slice(0, 3).map(s => s.sessionId), 'newest first')
  for (const s of [all[0], all[999], all[1999]]) {
    const r = await store.rotate({ ...times(now + 1), userId: user, sessionId: s.sessionId, presentedHash: s.refreshHash, successorHash: hash(), rotate: true, graceMs: 10_000 })
    t.equal(r.status, 'ok', 'rotates')
  }
  t.same(await store.revoke(user, [all[5].sessionId]), [all[5].sessionId], 'one revoked')
  const gone = await store.revokeAll(user)
  t.equal(gone.length, 1999, 'revokeAll returns every live session')
  t.equal(await client.exists(key), 0, 'and the key is gone')
})

t.test('a 0.2 user with more than 8 sessions keeps them: the first login moves the map into a hash', async t => {
  const { store, client, prefix } = await storeFor(t)
  const now = Date.now()
  const user = 'u-' + id()
  // 0.2 wrote one string: a MessagePack map { sessionId: [h, p, pt, re, st, lu, x, ip, ua, ro, cl, jkt] }.
  const old: Record<string, unknown[]> = {}
  const hashes: Record<string, string> = {}
  for (let i = 0; i < 12; i++) {
    const sid = id()
    hashes[sid] = hash()
    old[sid] = [hashes[sid], false, false, DAY, now - i, 0, DAY + 600_000, '198.51.100.1', 'old-ua', '["user"]', '{}', false]
  }
  const key = sessionsKey(prefix, user)
  await client.set(key, Buffer.from(encodeMsgpack(old)), 'PXAT', now + DAY + 600_000)
  const first = Object.keys(old)[0]
  const r = await store.rotate({ ...times(now), userId: user, sessionId: first, presentedHash: hashes[first], successorHash: hash(), rotate: true, graceMs: 10_000 })
  t.equal(r.status, 'ok', 'a 0.2 session rotates as it is')
  t.equal(r.status === 'ok' && r.record.authTime, now, 'its authentication time is its start')
  t.equal((await store.list(user, now)).length, 12, 'all twelve listed')
  await store.create(session(user, now), times(now))
  t.equal(await client.type(key), 'hash', 'the next login moved them into a hash')
  t.equal((await store.list(user, now)).length, 13)
  const second = Object.keys(old)[1]
  const r2 = await store.rotate({ ...times(now), userId: user, sessionId: second, presentedHash: hashes[second], successorHash: hash(), rotate: true, graceMs: 10_000 })
  t.equal(r2.status, 'ok', 'a moved 0.2 session rotates')
})
