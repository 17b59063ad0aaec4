// The SessionStore contract (plugin/store/index.ts), one suite run against MemoryStore and RedisStore.
// Times are explicit `now` values close to the real clock (the Redis store expires keys natively, on
// Redis's clock), so every expiry asserted here is also what Redis does by itself.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import { Redis } from 'ioredis'
import {
  MemoryStore, RedisStore, type NewSession, type RotateInput, type RenewInput, type SessionRecord,
  type SessionStore, type SessionTimes
} from '../../plugin/store/index.js'
import { deletePrefix, keysUnder, redisUrl, uniquePrefix } from '../helpers/redis.js'
import { sleep } from '../helpers/app.js'

/** Redis-only views, to check the keys behind the contract. */
interface Inspect {
  client: Redis
  prefix: string
  recordKey: (userId: string, sessionId: string) => string
  indexKey: (userId: string) => string
}

interface Harness {
  store: SessionStore
  /** Another instance on the same data (Redis: same prefix, own connection; memory: the same instance). */
  peer: () => Promise<SessionStore>
  inspect?: Inspect
}

type Factory = (t: Test) => Promise<Harness>

const memoryFactory: Factory = async (t) => {
  const store = new MemoryStore()
  t.teardown(async () => await store.close())
  return { store, peer: async () => store }
}

const redisFactory: Factory = async (t) => {
  const url = await redisUrl()
  const prefix = uniquePrefix('contract')
  const client = new Redis(url)
  const stores: RedisStore[] = []
  const make = (): RedisStore => {
    const s = new RedisStore({ redis: url, keyPrefix: prefix, timeoutMs: 1000 })
    stores.push(s)
    return s
  }
  const store = make()
  await store.ready()
  t.teardown(async () => {
    for (const s of stores) await s.close()
    await deletePrefix(client, prefix)
    client.disconnect()
  })
  return {
    store,
    peer: async () => {
      const p = make()
      await p.ready()
      return p
    },
    inspect: {
      client,
      prefix,
      recordKey: (u, s) => store.recordKey(u, s),
      indexKey: (u) => store.indexKey(u)
    }
  }
}

const hash = (): string => randomBytes(16).toString('base64url').slice(0, 22)
const id = (): string => randomBytes(16).toString('base64url')

const HOUR = 3_600_000
const DAY = 24 * HOUR

/** Times for most tests: long enough that nothing expires while a test runs. */
function times (now: number, o: Partial<SessionTimes> = {}): SessionTimes {
  return { now, refreshTtlMs: DAY, maxSessionAgeMs: 30 * DAY, extraMs: 600_000, ...o }
}

function newSession (userId: string, now: number, o: Partial<NewSession> = {}): NewSession {
  return {
    userId,
    sessionId: id(),
    refreshHash: hash(),
    refreshExpiresAt: now + DAY,
    createdAt: now,
    ip: '203.0.113.7',
    userAgent: 'contract-test/1.0',
    roles: ['user'],
    claims: { name: 'Alice', n: 1 },
    ...o
  }
}

/** |actual - expected| <= tol (the Redis store reports expiresAt as now + PTTL, a few ms of slack). */
function near (t: Test, actual: number, expected: number, tol: number, what: string): void {
  t.ok(Math.abs(actual - expected) <= tol, `${what}: ${actual} within ${tol}ms of ${expected} (off by ${actual - expected})`)
}

async function findSession (store: SessionStore, userId: string, sessionId: string): Promise<SessionRecord | undefined> {
  return (await store.list(userId, Date.now())).find(r => r.sessionId === sessionId)
}

/** Redis only: the record's and the index's native expiries follow the record. */
async function checkKeys (t: Test, h: Harness, userId: string, rec: SessionRecord, extraMs: number): Promise<void> {
  if (h.inspect === undefined) return
  const { client, recordKey, indexKey } = h.inspect
  const key = recordKey(userId, rec.sessionId)
  const [pexp, fields, score, indexExp] = await Promise.all([
    client.call('PEXPIRETIME', key) as Promise<number>,
    client.hgetall(key),
    client.zscore(indexKey(userId), rec.sessionId),
    client.call('PEXPIRETIME', indexKey(userId)) as Promise<number>
  ])
  t.equal(fields.h, rec.refreshHash, 'field h is the current hash')
  t.equal(Number(fields.re), rec.refreshExpiresAt, 'field re is the refresh expiry')
  t.equal(Number(pexp), rec.refreshExpiresAt + extraMs, 'record PEXPIREAT = refresh expiry + extraMs')
  t.equal(Number(score), rec.refreshExpiresAt + extraMs, 'index score = record expiry')
  t.ok(Number(indexExp) >= Number(pexp), 'index expires no earlier than the record')
}

/** Redis only: the session's keys are gone. */
async function checkGone (t: Test, h: Harness, userId: string, sessionId: string): Promise<void> {
  if (h.inspect === undefined) return
  const { client, recordKey, indexKey } = h.inspect
  t.equal(await client.exists(recordKey(userId, sessionId)), 0, 'record key gone')
  t.equal(await client.zscore(indexKey(userId), sessionId), null, 'not in the index')
}

function rotateInput (userId: string, sessionId: string, presentedHash: string, successorHash: string, now: number, o: Partial<RotateInput> = {}): RotateInput {
  return { ...times(now), userId, sessionId, presentedHash, successorHash, rotate: true, graceMs: 10_000, ...o }
}

function renewInput (userId: string, sessionId: string, presentedHash: string, successorHash: string, now: number, o: Partial<RenewInput> = {}): RenewInput {
  return { ...times(now), userId, sessionId, presentedHash, successorHash, graceMs: 10_000, ...o }
}

function contract (name: string, factory: Factory): void {
  t.test(name, async t => {
    t.test('create + list: fields, newest first, ip/userAgent optional', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const older = newSession(user, now, { createdAt: now - 3000 })
      const newest = newSession(user, now, { createdAt: now - 1000, roles: ['user', 'admin'], claims: { deep: { a: [1, 2] } } })
      const middle = newSession(user, now, { createdAt: now - 2000, ip: undefined, userAgent: undefined, roles: [], claims: {} })
      for (const s of [older, newest, middle]) await store.create(s, times(now))
      await store.create(newSession('u-other-' + id(), now), times(now))

      const list = await store.list(user, now)
      t.same(list.map(r => r.sessionId), [newest.sessionId, middle.sessionId, older.sessionId], 'newest first')
      const n = list[0]
      t.equal(n.refreshHash, newest.refreshHash)
      t.equal(n.refreshExpiresAt, newest.refreshExpiresAt)
      t.equal(n.createdAt, newest.createdAt)
      t.equal(n.lastUsedAt, now, 'lastUsedAt = now of create')
      near(t, n.expiresAt, newest.refreshExpiresAt + 600_000, 200, 'expiresAt = refresh expiry + extraMs')
      t.equal(n.ip, '203.0.113.7')
      t.equal(n.userAgent, 'contract-test/1.0')
      t.same(n.roles, ['user', 'admin'])
      t.same(n.claims, { deep: { a: [1, 2] } })
      const m = list[1]
      t.equal(m.ip, undefined, 'no ip when none given')
      t.equal(m.userAgent, undefined, 'no userAgent when none given')
      t.same(m.roles, [])
      t.same(m.claims, {})
      t.same(await store.list('u-nobody-' + id(), now), [], 'unknown user: empty list')

      await checkKeys(t, h, user, n, 600_000)
      if (h.inspect !== undefined) {
        const f = await h.inspect.client.hgetall(h.inspect.recordKey(user, middle.sessionId))
        t.notOk('ip' in f, 'no ip field stored when none given')
        t.notOk('ua' in f, 'no ua field stored when none given')
      }
    })

    t.test('rotate ok: the hash advances and expiries follow', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now, { createdAt: now - 1000, refreshExpiresAt: now + 5000 })
      await store.create(s, times(now))

      // refreshTtl bounds: refreshExpiresAt = now + refreshTtl
      const next = hash()
      const t1 = Date.now()
      const r = await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, next, t1, { refreshTtlMs: HOUR }))
      t.equal(r.status, 'ok')
      if (r.status !== 'ok') return
      t.equal(r.grace, false)
      t.equal(r.record.sessionId, s.sessionId)
      t.equal(r.record.refreshHash, next, 'hash advanced to the successor')
      t.equal(r.record.refreshExpiresAt, t1 + HOUR, 'refreshExpiresAt = now + refreshTtl')
      near(t, r.record.expiresAt, t1 + HOUR + 600_000, 200, 'record expiresAt = refreshExpiresAt + extraMs')
      t.equal(r.record.lastUsedAt, t1)
      t.equal(r.record.createdAt, s.createdAt, 'createdAt unchanged')
      t.same(r.record.roles, s.roles, 'roles kept when none given')
      t.same(r.record.claims, s.claims, 'claims kept when none given')
      t.equal(r.record.ip, s.ip)
      t.equal(r.record.userAgent, s.userAgent)
      const listed = await findSession(store, user, s.sessionId)
      t.equal(listed?.refreshHash, next, 'list sees the new hash')
      t.equal(listed?.refreshExpiresAt, t1 + HOUR)
      await checkKeys(t, h, user, r.record, 600_000)

      // maxSessionAge bounds: refreshExpiresAt = createdAt + maxSessionAge
      const third = hash()
      const t2 = Date.now()
      const r2 = await store.rotate(rotateInput(user, s.sessionId, next, third, t2, { refreshTtlMs: HOUR, maxSessionAgeMs: 60_000 }))
      t.equal(r2.status, 'ok')
      if (r2.status !== 'ok') return
      t.equal(r2.record.refreshHash, third)
      t.equal(r2.record.refreshExpiresAt, s.createdAt + 60_000, 'capped by createdAt + maxSessionAge')
      near(t, r2.record.expiresAt, s.createdAt + 60_000 + 600_000, 200, 'record expiresAt follows the cap')
      await checkKeys(t, h, user, r2.record, 600_000)
    })

    t.test('rotate grace: the previous hash within graceMs with the same successor', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now)
      await store.create(s, times(now))
      const next = hash()
      const r1 = await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, next, now, { graceMs: 5000 }))
      t.equal(r1.status, 'ok')
      if (r1.status !== 'ok') return

      for (let i = 0; i < 2; i++) {
        const r = await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, next, now + 100 + i, { graceMs: 5000 }))
        t.equal(r.status, 'ok', `grace refresh ${i}`)
        if (r.status !== 'ok') return
        t.equal(r.grace, true, 'grace: true')
        t.equal(r.record.refreshHash, next, 'still the same successor')
        t.equal(r.record.refreshExpiresAt, r1.record.refreshExpiresAt, 'refresh expiry unchanged')
      }
      const listed = await findSession(store, user, s.sessionId)
      t.equal(listed?.refreshHash, next, 'no further change')
      t.equal(listed?.refreshExpiresAt, r1.record.refreshExpiresAt)
      if (listed !== undefined) await checkKeys(t, h, user, { ...listed, refreshExpiresAt: r1.record.refreshExpiresAt }, 600_000)
      // the successor itself still rotates normally afterwards
      const third = hash()
      const r3 = await store.rotate(rotateInput(user, s.sessionId, next, third, now + 200, { graceMs: 5000 }))
      t.match(r3, { status: 'ok', grace: false, record: { refreshHash: third } })
    })

    t.test('rotate outside grace: reused, and the session is gone', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now)
      const other = newSession(user, now, { createdAt: now - 10 })
      await store.create(s, times(now))
      await store.create(other, times(now))
      const next = hash()
      t.match(await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, next, now, { graceMs: 50 })), { status: 'ok' })
      const r = await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, next, now + 51, { graceMs: 50 }))
      t.same(r, { status: 'reused' })
      t.equal(await findSession(store, user, s.sessionId), undefined, 'session gone from list')
      t.same(await store.rotate(rotateInput(user, s.sessionId, next, hash(), now + 60)), { status: 'missing' }, 'even the current token no longer works')
      await checkGone(t, h, user, s.sessionId)
      t.ok(await findSession(store, user, other.sessionId), 'other session untouched')
    })

    t.test('rotate with a never-seen hash: reused, session gone', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now)
      await store.create(s, times(now))
      t.same(await store.rotate(rotateInput(user, s.sessionId, hash(), hash(), now)), { status: 'reused' })
      t.equal(await findSession(store, user, s.sessionId), undefined)
      await checkGone(t, h, user, s.sessionId)
    })

    t.test('rotate with the previous hash in grace but a wrong successor: reused', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now)
      await store.create(s, times(now))
      t.match(await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, hash(), now)), { status: 'ok' })
      t.same(await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, hash(), now + 10)), { status: 'reused' })
      t.equal(await findSession(store, user, s.sessionId), undefined, 'session gone')
      await checkGone(t, h, user, s.sessionId)
    })

    t.test('rotate on a missing session: missing', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      t.same(await store.rotate(rotateInput(user, id(), hash(), hash(), now)), { status: 'missing' })
      t.same(await store.list(user, now), [], 'nothing created by the attempt')
      if (h.inspect !== undefined) t.same(await keysUnder(h.inspect.client, h.inspect.prefix), [], 'no key created')
    })

    t.test('rotate: false keeps the hash and the expiry, moves lastUsedAt', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now, { refreshExpiresAt: now + 5 * 60_000 })
      await store.create(s, times(now))
      const r = await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, s.refreshHash, now + 500, { rotate: false }))
      t.equal(r.status, 'ok')
      if (r.status !== 'ok') return
      t.equal(r.grace, false)
      t.equal(r.record.refreshHash, s.refreshHash, 'same hash stays')
      t.equal(r.record.refreshExpiresAt, s.refreshExpiresAt, 'refresh expiry unchanged')
      t.equal(r.record.lastUsedAt, now + 500, 'lastUsedAt changed')
      const listed = await findSession(store, user, s.sessionId)
      t.equal(listed?.refreshHash, s.refreshHash)
      t.equal(listed?.lastUsedAt, now + 500)
      await checkKeys(t, h, user, r.record, 600_000)
      // and again: the same token keeps working
      t.match(await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, s.refreshHash, now + 600, { rotate: false })), { status: 'ok', record: { refreshHash: s.refreshHash, lastUsedAt: now + 600 } })
    })

    t.test('rotate replaces roles and claims when given', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now, { roles: ['user'], claims: { name: 'Alice', old: true } })
      await store.create(s, times(now))
      const next = hash()
      const r = await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, next, now, { roles: ['admin'], claims: { name: 'Queen' } }))
      t.match(r, { status: 'ok' })
      if (r.status !== 'ok') return
      t.same(r.record.roles, ['admin'])
      t.same(r.record.claims, { name: 'Queen' }, 'claims replaced, not merged')
      const listed = await findSession(store, user, s.sessionId)
      t.same(listed?.roles, ['admin'])
      t.same(listed?.claims, { name: 'Queen' })
      // with rotate:false too
      const r2 = await store.rotate(rotateInput(user, s.sessionId, next, next, now + 1, { rotate: false, roles: [], claims: {} }))
      t.match(r2, { status: 'ok' })
      const again = await findSession(store, user, s.sessionId)
      t.same(again?.roles, [])
      t.same(again?.claims, {})
    })

    t.test('renew: ok advances the hash, grace returns the same successor', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now, { createdAt: now - 2000, refreshExpiresAt: now - 1 })
      await store.create(s, times(now))
      const next = hash()
      const t1 = Date.now()
      const r = await store.renew(renewInput(user, s.sessionId, s.refreshHash, next, t1, { refreshTtlMs: HOUR }))
      t.equal(r.status, 'ok')
      if (r.status !== 'ok') return
      t.equal(r.grace, false)
      t.equal(r.record.refreshHash, next)
      t.equal(r.record.refreshExpiresAt, t1 + HOUR, 'refreshExpiresAt = now + refreshTtl')
      near(t, r.record.expiresAt, t1 + HOUR + 600_000, 200, 'record expiresAt = refreshExpiresAt + extraMs')
      t.equal(r.record.lastUsedAt, t1)
      t.equal(r.record.createdAt, s.createdAt)
      await checkKeys(t, h, user, r.record, 600_000)

      const g = await store.renew(renewInput(user, s.sessionId, s.refreshHash, next, t1 + 50, { refreshTtlMs: HOUR }))
      t.equal(g.status, 'ok')
      if (g.status !== 'ok') return
      t.equal(g.grace, true)
      t.equal(g.record.refreshHash, next)
      t.equal(g.record.refreshExpiresAt, t1 + HOUR, 'no further change in grace')
      t.equal((await findSession(store, user, s.sessionId))?.refreshHash, next)

      // renew is capped by createdAt + maxSessionAge too
      const third = hash()
      const r3 = await store.renew(renewInput(user, s.sessionId, next, third, t1 + 60, { refreshTtlMs: HOUR, maxSessionAgeMs: 60_000 }))
      t.match(r3, { status: 'ok', grace: false, record: { refreshHash: third, refreshExpiresAt: s.createdAt + 60_000 } })
    })

    t.test('renew: stale when not the current hash, the session stays', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now)
      await store.create(s, times(now))
      const next = hash()
      t.match(await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, next, now, { graceMs: 50 })), { status: 'ok' })
      // the previous hash, outside grace
      t.same(await store.renew(renewInput(user, s.sessionId, s.refreshHash, next, now + 51, { graceMs: 50 })), { status: 'stale' })
      // a hash the session never had
      t.same(await store.renew(renewInput(user, s.sessionId, hash(), hash(), now + 52)), { status: 'stale' })
      // the previous hash in grace but with a wrong successor
      t.same(await store.renew(renewInput(user, s.sessionId, s.refreshHash, hash(), now + 10, { graceMs: 50 })), { status: 'stale' })
      const listed = await findSession(store, user, s.sessionId)
      t.equal(listed?.refreshHash, next, 'session untouched by stale renewals')
      if (h.inspect !== undefined) t.equal(await h.inspect.client.exists(h.inspect.recordKey(user, s.sessionId)), 1, 'record kept')
    })

    t.test('renew: capped at createdAt + maxSessionAge, the session stays', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now, { createdAt: now - 10_000, refreshExpiresAt: now + 60_000 })
      await store.create(s, times(now))
      t.same(await store.renew(renewInput(user, s.sessionId, s.refreshHash, hash(), now, { maxSessionAgeMs: 10_000 })), { status: 'capped' }, 'now == cap')
      t.same(await store.renew(renewInput(user, s.sessionId, s.refreshHash, hash(), now + 1, { maxSessionAgeMs: 5000 })), { status: 'capped' }, 'now > cap')
      const listed = await findSession(store, user, s.sessionId)
      t.equal(listed?.refreshHash, s.refreshHash, 'hash unchanged')
      t.equal(listed?.refreshExpiresAt, s.refreshExpiresAt, 'refresh expiry unchanged')
      // just under the cap it renews
      t.match(await store.renew(renewInput(user, s.sessionId, s.refreshHash, hash(), now, { maxSessionAgeMs: 10_001 })), { status: 'ok', record: { refreshExpiresAt: now + 1 } })
    })

    t.test('renew on a missing session: missing', async t => {
      const h = await factory(t)
      const now = Date.now()
      const user = 'u-' + id()
      t.same(await h.store.renew(renewInput(user, id(), hash(), hash(), now)), { status: 'missing' })
      t.same(await h.store.list(user, now), [])
    })

    t.test('revoke returns only the ids that existed; others untouched', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const other = 'u-other-' + id()
      const a = newSession(user, now, { createdAt: now - 3 })
      const b = newSession(user, now, { createdAt: now - 2 })
      const c = newSession(user, now, { createdAt: now - 1 })
      const o = newSession(other, now)
      for (const s of [a, b, c, o]) await store.create(s, times(now))
      const ghost = id()
      const gone = await store.revoke(user, [a.sessionId, ghost, c.sessionId, o.sessionId])
      t.same([...gone].sort(), [a.sessionId, c.sessionId].sort(), 'only existing sessions of this user')
      t.same((await store.list(user, now)).map(r => r.sessionId), [b.sessionId], 'b stays')
      t.same((await store.list(other, now)).map(r => r.sessionId), [o.sessionId], "another user's session with a given id stays")
      t.same(await store.revoke(user, [a.sessionId]), [], 'revoking again: nothing existed')
      t.same(await store.revoke(user, []), [], 'empty list')
      await checkGone(t, h, user, a.sessionId)
      await checkGone(t, h, user, c.sessionId)
      const lb = await findSession(store, user, b.sessionId)
      if (lb !== undefined) await checkKeys(t, h, user, lb, 600_000)
      t.same(await store.rotate(rotateInput(user, a.sessionId, a.refreshHash, hash(), now)), { status: 'missing' })
    })

    t.test('revokeAll deletes every session of one user', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const other = 'u-other-' + id()
      const mine = [newSession(user, now), newSession(user, now, { createdAt: now - 1 })]
      const o = newSession(other, now)
      for (const s of [...mine, o]) await store.create(s, times(now))
      const gone = await store.revokeAll(user)
      t.same([...gone].sort(), mine.map(s => s.sessionId).sort())
      t.same(await store.list(user, now), [])
      t.equal((await store.list(other, now)).length, 1, 'other user untouched')
      t.same(await store.revokeAll(user), [], 'again: nothing')
      t.same(await store.revokeAll('u-nobody-' + id()), [], 'unknown user')
      if (h.inspect !== undefined) {
        const keys = await keysUnder(h.inspect.client, h.inspect.prefix)
        t.same(keys, [h.inspect.indexKey(other), h.inspect.recordKey(other, o.sessionId)].sort(), "only the other user's keys remain")
      }
    })

    t.test('native expiry: records go by themselves', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const short = { refreshTtlMs: 300, extraMs: 200 }
      const s = newSession(user, now, { refreshExpiresAt: now + 300 })
      const rotated = newSession(user, now, { refreshExpiresAt: now + 300 })
      await store.create(s, times(now, short))
      await store.create(rotated, times(now, short))
      const r = await store.rotate(rotateInput(user, rotated.sessionId, rotated.refreshHash, hash(), Date.now(), short))
      t.match(r, { status: 'ok' })
      t.equal((await store.list(user, Date.now())).length, 2, 'both live at first')
      if (h.inspect !== undefined) {
        const pttl = await h.inspect.client.pttl(h.inspect.recordKey(user, s.sessionId))
        t.ok(pttl > 0 && pttl <= 500, `record has a native TTL (${pttl})`)
        t.ok(await h.inspect.client.pttl(h.inspect.indexKey(user)) > 0, 'index has a native TTL')
      }
      // still there in the extra window after the refresh expiry
      await sleep(Math.max(0, now + 350 - Date.now()))
      if (Date.now() < now + 450) t.ok(await findSession(store, user, s.sessionId), 'still listed after refresh expiry, within extraMs')
      await sleep(Math.max(0, now + 800 - Date.now()) + 200)
      t.same(await store.list(user, Date.now()), [], 'list empty')
      t.same(await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, hash(), Date.now(), short)), { status: 'missing' })
      t.same(await store.renew(renewInput(user, s.sessionId, s.refreshHash, hash(), Date.now(), short)), { status: 'missing' })
      if (h.inspect !== undefined) {
        const { client, recordKey, indexKey, prefix } = h.inspect
        t.equal(await client.exists(recordKey(user, s.sessionId), recordKey(user, rotated.sessionId), indexKey(user)), 0, 'record and index keys expired')
        t.same(await keysUnder(client, prefix), [], 'nothing left under the prefix')
      }
    })

    t.test('markRevoked / loadRevoked / isRevoked', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const a = id()
      const b = id()
      const past = id()
      await store.markRevoked([{ sessionId: a, until: now + 60_000 }, { sessionId: b, until: now + 120_000 }, { sessionId: past, until: now - 1 }], now)
      const loaded = await store.loadRevoked(now)
      t.same([...loaded].sort((x, y) => x.until - y.until), [{ sessionId: a, until: now + 60_000 }, { sessionId: b, until: now + 120_000 }], 'entries in force')
      t.equal(await store.isRevoked(a, now), true)
      t.equal(await store.isRevoked(b, now), true)
      t.equal(await store.isRevoked(past, now), false, 'until in the past: not revoked')
      t.equal(await store.isRevoked(id(), now), false, 'unknown id')
      t.equal(await store.isRevoked(a, now + 60_000), false, 'not revoked once until is reached')
      t.same((await store.loadRevoked(now + 90_000)).map(e => e.sessionId), [b], 'loadRevoked drops entries past until')
      // idempotent; a shorter until does not shorten an entry
      await store.markRevoked([{ sessionId: a, until: now + 1000 }], now)
      t.equal(await store.isRevoked(a, now + 30_000), true, 'a shorter until keeps the longer one')
      await store.markRevoked([{ sessionId: a, until: now + 90_000 }], now)
      t.equal(await store.isRevoked(a, now + 80_000), true, 'a longer until extends')
      await store.markRevoked([], now)
      t.equal((await store.loadRevoked(now)).length, 2)
      if (h.inspect !== undefined) {
        const key = `${h.inspect.prefix}:revoked`
        t.equal(await h.inspect.client.zscore(key, past), null, 'past entry not kept in Redis')
        t.equal(Number(await h.inspect.client.zscore(key, a)), now + 90_000)
        t.equal(Number(await h.inspect.client.call('PEXPIRETIME', key)), now + 120_000, 'the set expires with its last member')
      }
    })

    t.test('subscribe: onState(true), and onRevoked for revocations of another instance', async t => {
      const h = await factory(t)
      const other = await h.peer()
      const states: boolean[] = []
      const got: string[] = []
      await h.store.subscribe({ onRevoked: id => got.push(id), onState: up => states.push(up) })
      // "resolves once subscribed": onState(true) has been called, and a revocation published right after arrives
      t.same(states, [true], 'onState(true) called by the time subscribe() resolved')
      const a = id()
      const b = id()
      await other.markRevoked([{ sessionId: a, until: Date.now() + 60_000 }, { sessionId: b, until: Date.now() + 60_000 }], Date.now())
      const deadline = Date.now() + 2000
      while (got.length < 2 && Date.now() < deadline) await sleep(10)
      t.ok(states.includes(true), 'onState(true) called')
      t.notOk(states.includes(false), 'never down')
      t.same([...got].sort(), [a, b].sort(), 'onRevoked got both ids, published right after subscribe() resolved')
      // and later ones too
      const c = id()
      await other.markRevoked([{ sessionId: c, until: Date.now() + 60_000 }], Date.now())
      const deadline2 = Date.now() + 2000
      while (!got.includes(c) && Date.now() < deadline2) await sleep(10)
      t.ok(got.includes(c), 'a later revocation arrives too')
      t.equal(await h.store.isRevoked(a, Date.now()), true, 'and they are in the shared set')
      t.ok(await h.store.ping(), 'ping')
    })
  })
}

contract('MemoryStore', memoryFactory)
contract('RedisStore', redisFactory)
