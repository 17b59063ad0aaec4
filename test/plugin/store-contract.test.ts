// The SessionStore contract (plugin/store/index.ts), one suite run against MemoryStore and RedisStore.
// Times are explicit `now` values close to the real clock (the Redis store expires keys natively, on
// Redis's clock), so every expiry asserted here is also what Redis does by itself.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import { Redis } from 'ioredis'
import { layout } from '../../plugin/store/redis.js'
import {
  MemoryStore, RedisStore, type NewSession, type RotateInput, type RenewInput, type SessionRecord,
  type SessionStore, type SessionTimes
} from '../../plugin/store/index.js'
import { deletePrefix, keysUnder, readSessions, redisUrl, uniquePrefix, type StoredSession } from '../helpers/redis.js'
import { sleep, until } from '../helpers/app.js'
import { fakeClock } from '../helpers/clock.js'

/** Redis-only views, to check the keys behind the contract. */
interface Inspect {
  client: Redis
  prefix: string
  /** The one key holding all sessions of a user. */
  sessionsKey: (userId: string) => string
  /** The user's sessions as stored (undefined when the user has no key). */
  sessions: (userId: string) => Promise<Record<string, StoredSession> | undefined>
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
      sessionsKey: (u) => store.sessionsKey(u),
      sessions: async (u) => await readSessions(client, prefix, u)
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

async function findSession (store: SessionStore, userId: string, sessionId: string, now = Date.now()): Promise<SessionRecord | undefined> {
  return (await store.list(userId, now)).find(r => r.sessionId === sessionId)
}

/** Redis only: the stored session follows the record, and the user's key expires with its latest session. */
async function checkKeys (t: Test, h: Harness, userId: string, rec: SessionRecord, extraMs: number): Promise<void> {
  if (h.inspect === undefined) return
  const { client, sessionsKey, sessions } = h.inspect
  const [pexp, all] = await Promise.all([
    client.call('PEXPIRETIME', sessionsKey(userId)) as Promise<number>,
    sessions(userId)
  ])
  const stored = all?.[rec.sessionId]
  t.ok(stored !== undefined, 'the session is in the user\'s key')
  if (all === undefined || stored === undefined) return
  t.equal(stored.h, rec.refreshHash, 'h is the current hash')
  t.equal(stored.re, rec.refreshExpiresAt, 're is the refresh expiry')
  t.equal(stored.x, rec.refreshExpiresAt + extraMs, 'x (record expiry) = refresh expiry + extraMs')
  const latest = Math.max(...Object.values(all).map(s => s.x))
  // A hash is never read whole on the hot path: its expiry only ever moves out, to the latest expiry it held.
  if (await client.type(sessionsKey(userId)) === 'hash') t.ok(Number(pexp) >= latest, 'the user\'s key (a hash) expires no earlier than its latest session')
  else t.equal(Number(pexp), latest, 'the user\'s key PEXPIRETIME = the latest session\'s record expiry')
}

/** Redis only: the session is gone from the user's key. */
async function checkGone (t: Test, h: Harness, userId: string, sessionId: string): Promise<void> {
  if (h.inspect === undefined) return
  const all = await h.inspect.sessions(userId)
  t.equal(all?.[sessionId], undefined, 'the session is not in the user\'s key')
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
      for (const s of [older, newest, middle]) t.same(await store.create(s, times(now)), [], 'create evicts nothing without maxSessions')
      const other = 'u-other-' + id()
      await store.create(newSession(other, now), times(now))

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
        const stored = (await h.inspect.sessions(user))?.[middle.sessionId]
        t.equal(stored?.ip, '', 'no ip stored when none given')
        t.equal(stored?.ua, '', 'no user agent stored when none given')
        t.same(await keysUnder(h.inspect.client, h.inspect.prefix), [h.inspect.sessionsKey(user), h.inspect.sessionsKey(other)].sort(), 'one key per user, nothing else')
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

    t.test('reauthenticate past createdAt + maxSessionAge: capped, nothing changes (a login then starts a new session)', async t => {
      const { store } = await factory(t)
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now - 5000, { createdAt: now - 5000 })
      await store.create(s, times(now - 5000))
      const input = { userId: user, sessionId: s.sessionId, successorOf: () => hash(), roles: ['user'], claims: {} }
      t.same(await store.reauthenticate!({ ...times(now, { maxSessionAgeMs: 4000 }), ...input }), { status: 'capped' }, 'started 5 s ago, at most 4 s: capped')
      t.equal((await findSession(store, user, s.sessionId))?.refreshHash, s.refreshHash, 'the session is unchanged')
      t.equal((await store.reauthenticate!({ ...times(now, { maxSessionAgeMs: 6000 }), ...input })).status, 'ok', 'control: within the cap, ok')
    })

    t.test('reauthenticate: the current hash becomes the previous one, its successor current; a new authentication', async t => {
      const h = await factory(t)
      const { store } = h
      t.type(store.reauthenticate, 'function', 'the store implements reauthenticate')
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now - 5000, { createdAt: now - 5000, authTime: now - 5000, acr: 'pwd', amr: ['pwd'] })
      const other = newSession(user, now - 5000, { createdAt: now - 6000 })
      await store.create(s, times(now - 5000))
      await store.create(other, times(now - 5000))
      const next = hash()
      const asked: string[] = []
      const r = await store.reauthenticate!({
        ...times(now, { refreshTtlMs: HOUR }),
        userId: user,
        sessionId: s.sessionId,
        successorOf: (current) => { asked.push(current); return next },
        roles: ['user', 'mfa-user'],
        claims: { via: 'otp' },
        acr: 'mfa',
        amr: ['pwd', 'otp']
      })
      t.equal(r.status, 'ok')
      if (r.status !== 'ok') return
      t.same(asked, [s.refreshHash], 'successorOf was asked for the successor of the current hash')
      t.equal(r.previousHash, s.refreshHash, 'previousHash: the hash that was current')
      t.equal(r.record.refreshHash, next, 'the successor is current')
      t.equal(r.record.refreshExpiresAt, now + HOUR, 'a new refresh expiry (now + refreshTtl)')
      t.equal(r.record.authTime, now, 'authTime = now')
      t.equal(r.record.createdAt, s.createdAt, 'the session keeps its start')
      t.equal(r.record.lastUsedAt, now)
      t.equal(r.record.acr, 'mfa')
      t.same(r.record.amr, ['pwd', 'otp'])
      t.same(r.record.roles, ['user', 'mfa-user'])
      t.same(r.record.claims, { via: 'otp' })
      t.equal(r.record.ip, s.ip, 'ip and user agent kept')
      const listed = await findSession(store, user, s.sessionId)
      t.equal(listed?.authTime, now, 'list sees the new authentication')
      t.equal(listed?.acr, 'mfa')
      t.equal(listed?.refreshHash, next)
      t.equal((await store.list(user, now)).length, 2, 'no session added')
      await checkKeys(t, h, user, r.record, 600_000)
      if (h.inspect !== undefined) {
        const stored = (await h.inspect.sessions(user))![s.sessionId]
        t.equal(stored.p, s.refreshHash, 'Redis: p is the predecessor')
        t.equal(stored.pt, now, 'Redis: pt is now')
        t.equal(stored.at, now, 'Redis: at is now')
      }
      t.equal((await findSession(store, user, other.sessionId))?.refreshHash, other.refreshHash, 'another session untouched')

      // A login without acr/amr clears them.
      const plain = await store.reauthenticate!({ ...times(now + 10), userId: user, sessionId: s.sessionId, successorOf: () => hash(), roles: [], claims: {} })
      t.equal(plain.status, 'ok')
      if (plain.status !== 'ok') return
      t.equal(plain.record.acr, undefined, 'no acr')
      t.equal(plain.record.amr, undefined, 'no amr')
      t.equal(plain.previousHash, next)
    })

    t.test('after reauthenticate, the predecessor in grace: reported as another successor, then grace with the re-authentication\'s', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now)
      await store.create(s, times(now))
      const next = hash()
      t.match(await store.reauthenticate!({ ...times(now), userId: user, sessionId: s.sessionId, successorOf: () => next, roles: [], claims: {} }), { status: 'ok' })
      const derived = hash() // what a refresh derives from the presented token: not the re-authentication's successor
      t.same(await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, derived, now + 10, { reportSuccessorMismatch: true })), { status: 'successor' }, 'reported, nothing changed')
      t.equal((await findSession(store, user, s.sessionId))?.refreshHash, next, 'still the re-authentication\'s successor')
      const r = await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, next, now + 20))
      t.match(r, { status: 'ok', grace: true, record: { refreshHash: next } }, 'grace with the successor the re-authentication set')
      // Outside the window, the report does not apply: reuse, as always.
      t.same(await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, derived, now + 10_001, { reportSuccessorMismatch: true })), { status: 'reused' })
      t.equal(await findSession(store, user, s.sessionId), undefined, 'session gone')
      await checkGone(t, h, user, s.sessionId)
    })

    t.test('rotate with reportSuccessorMismatch: a never-seen hash is still reuse', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now)
      await store.create(s, times(now))
      t.same(await store.rotate(rotateInput(user, s.sessionId, hash(), hash(), now, { reportSuccessorMismatch: true })), { status: 'reused' })
      await checkGone(t, h, user, s.sessionId)
    })

    t.test('reauthenticate: missing session; a bound session needs its key, an unbound one gets bound', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const input = (sessionId: string, o: { jkt?: string } = {}) => ({ ...times(now), userId: user, sessionId, successorOf: () => hash(), roles: [], claims: {}, ...o })
      t.same(await store.reauthenticate!(input(id())), { status: 'missing' })
      if (h.inspect !== undefined) t.same(await keysUnder(h.inspect.client, h.inspect.prefix), [], 'no key created')
      const bound = newSession(user, now, { jkt: 'jkt-A' })
      await store.create(bound, times(now))
      t.same(await store.reauthenticate!(input(bound.sessionId)), { status: 'key' }, 'no key proved')
      t.same(await store.reauthenticate!(input(bound.sessionId, { jkt: 'jkt-B' })), { status: 'key' }, 'another key')
      t.equal((await findSession(store, user, bound.sessionId))?.refreshHash, bound.refreshHash, 'nothing changed')
      t.match(await store.reauthenticate!(input(bound.sessionId, { jkt: 'jkt-A' })), { status: 'ok', record: { jkt: 'jkt-A' } }, 'control: its key')
      const unbound = newSession(user, now)
      await store.create(unbound, times(now))
      t.match(await store.reauthenticate!(input(unbound.sessionId, { jkt: 'jkt-C' })), { status: 'ok', record: { jkt: 'jkt-C' } }, 'an unbound session proved with a key is bound to it')
      const gone = newSession(user, now)
      await store.create(gone, times(now))
      await store.revoke(user, [gone.sessionId])
      t.same(await store.reauthenticate!(input(gone.sessionId)), { status: 'missing' }, 'a revoked session')
    })

    t.test('reauthenticate: a rotation between reading the hash and writing is met by reading again', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now)
      await store.create(s, times(now))
      const rotated = hash()
      const asked: string[] = []
      let rotation: Promise<unknown> | undefined
      const r = await store.reauthenticate!({
        ...times(now),
        userId: user,
        sessionId: s.sessionId,
        successorOf: (current) => {
          asked.push(current)
          // A refresh lands after the read (on the same connection, so before the write).
          if (asked.length === 1) rotation = store.rotate(rotateInput(user, s.sessionId, s.refreshHash, rotated, now))
          return 'successor-of-' + current
        },
        roles: [],
        claims: {}
      })
      t.match(await rotation, { status: 'ok' }, 'the concurrent rotation went through')
      t.same(asked, [s.refreshHash, rotated], 'the successor was derived again from the hash the rotation set')
      t.match(r, { status: 'ok', previousHash: rotated, record: { refreshHash: 'successor-of-' + rotated } })
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
      if (h.inspect !== undefined) t.equal((await h.inspect.sessions(user))?.[s.sessionId]?.h, next, 'record kept as it was')
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
        t.same(keys, [h.inspect.sessionsKey(other)], "only the other user's key remains")
      }
    })

    t.test('revoke, revokeAll and claimProof read the time where the rest of tokengate does (Date.now())', async t => {
      // One seam for time: a store that kept its own copy of the clock would disagree with its callers
      // (and with tests that stop the clock). The store exists first; then the clock stops, and the
      // sessions expire when it is moved past them.
      const h = await factory(t)
      const { store } = h
      const clock = fakeClock(t)
      const now = clock.now()
      const user = 'u-' + id()
      const short = { refreshTtlMs: 1000, extraMs: 1000 }
      const [a, b] = [newSession(user, now, { refreshExpiresAt: now + 1000 }), newSession(user, now, { refreshExpiresAt: now + 1000 })]
      for (const s of [a, b]) await store.create(s, times(now, short))
      t.ok(await store.claimProof(`proof-${id()}`, 1000), 'a proof id is claimed')
      const proofId = `proof-${id()}`
      t.ok(await store.claimProof(proofId, 1000), 'another proof id is claimed')
      t.notOk(await store.claimProof(proofId, 1000), 'and is refused a second time while the clock stands')
      clock.tick(2000) // both sessions' records expire (refresh expiry + extraMs)
      t.same(await store.revoke(user, [a.sessionId]), [], 'revoke: nothing live to revoke once the clock passed the record\'s expiry')
      t.same(await store.revokeAll(user), [], 'revokeAll: nothing live either')
      // (The Redis store keeps proof ids by Redis's own clock, PX: the real one.)
      if (h.inspect === undefined) t.ok(await store.claimProof(proofId, 1000), 'memory store: the proof id is free again once its time passed')
    })

    t.test('native expiry: records go by themselves', async t => {
      const h = await factory(t)
      const { store } = h
      // The store is told the time: the records' expiry is checked at chosen instants, not by sleeping.
      // Redis's own key expiry runs on the real clock: \`now\` is real, and the test awaits it below.
      const now = Date.now()
      const user = 'u-' + id()
      const short = { refreshTtlMs: 300, extraMs: 700 }
      const s = newSession(user, now, { refreshExpiresAt: now + 300 })
      const rotated = newSession(user, now, { refreshExpiresAt: now + 300 })
      await store.create(s, times(now, short))
      await store.create(rotated, times(now, short))
      const r = await store.rotate(rotateInput(user, rotated.sessionId, rotated.refreshHash, hash(), now, short))
      t.match(r, { status: 'ok' })
      t.equal((await store.list(user, now)).length, 2, 'both live at first')
      if (h.inspect !== undefined) {
        t.equal(Number(await h.inspect.client.pexpiretime(h.inspect.sessionsKey(user))), now + 1000, 'the user\'s key expires natively with its last record')
      }
      t.ok(await findSession(store, user, s.sessionId, now + 999), 'still listed after refresh expiry, within extraMs')
      t.same(await store.list(user, now + 1000), [], 'list empty once refresh expiry + extraMs has passed')
      t.same(await store.rotate(rotateInput(user, s.sessionId, s.refreshHash, hash(), now + 1000, short)), { status: 'missing' })
      t.same(await store.renew(renewInput(user, s.sessionId, s.refreshHash, hash(), now + 1000, short)), { status: 'missing' })
      if (h.inspect !== undefined) {
        const { client, sessionsKey, prefix } = h.inspect
        await until('the user\'s key expires in Redis', 10_000, async () => await client.exists(sessionsKey(user)) === 0)
        t.same(await keysUnder(client, prefix), [], 'nothing left under the prefix')
      }
    })

    t.test('create with maxSessions evicts the least recently used sessions, and returns their ids', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const other = 'u-other-' + id()
      // Distinct last uses: a at now, b at now + 1, c at now + 2; then a refresh makes a the most recent.
      const [a, b, c] = [0, 1, 2].map(i => newSession(user, now, { createdAt: now + i }))
      for (const [i, s] of [a, b, c].entries()) t.same(await store.create(s, times(now + i), { maxSessions: 3 }), [], `session ${i + 1} of 3 evicts nothing`)
      const o = newSession(other, now)
      await store.create(o, times(now), { maxSessions: 1 })
      const aNext = hash()
      t.match(await store.rotate(rotateInput(user, a.sessionId, a.refreshHash, aNext, now + 10)), { status: 'ok', record: { lastUsedAt: now + 10 } })

      const d = newSession(user, now, { createdAt: now + 20 })
      const evicted = await store.create(d, times(now + 20), { maxSessions: 2 })
      t.same(evicted, [b.sessionId, c.sessionId], 'b and c (least recently used first) are evicted, not a, the oldest session but the last used')
      const list = await store.list(user, now + 20)
      t.same(list.map(r => r.sessionId), [d.sessionId, a.sessionId], 'the new session and the recently used one survive')
      t.match(list[1], { refreshHash: aNext, lastUsedAt: now + 10, createdAt: a.createdAt, ip: a.ip, userAgent: a.userAgent, roles: a.roles, claims: a.claims }, 'the survivor is intact')
      t.match(list[0], { refreshHash: d.refreshHash, lastUsedAt: now + 20, createdAt: d.createdAt }, 'the new session as created')
      t.same(await store.rotate(rotateInput(user, b.sessionId, b.refreshHash, hash(), now + 30)), { status: 'missing' }, 'an evicted session no longer rotates')
      t.same((await store.list(other, now + 20)).map(r => r.sessionId), [o.sessionId], "another user's session is not counted nor evicted")
      await checkGone(t, h, user, b.sessionId)
      await checkGone(t, h, user, c.sessionId)
      for (const r of list) await checkKeys(t, h, user, r, 600_000)

      // The session being created is never the one evicted, even with a limit of 1.
      const e = newSession(user, now, { createdAt: now + 40 })
      t.same(await store.create(e, times(now + 40), { maxSessions: 1 }), [a.sessionId, d.sessionId], 'a limit of 1 evicts every other session, least recently used first')
      t.same((await store.list(user, now + 40)).map(r => r.sessionId), [e.sessionId], 'only the new session is left')
      t.same(await store.create(newSession(user, now, { createdAt: now + 50 }), times(now + 50)), [], 'no maxSessions: no limit')
      t.equal((await store.list(user, now + 50)).length, 2)
    })

    t.test('a token one rotation ahead (parentHash = the current hash) is accepted and the record catches up', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      // The record holds A; the client holds B, the successor of A, from a rotation the store lost.
      const s = newSession(user, now)
      await store.create(s, times(now))
      const [A, B, C, D] = [s.refreshHash, hash(), hash(), hash()]
      const r = await store.rotate(rotateInput(user, s.sessionId, B, C, now + 100, { parentHash: A }))
      t.equal(r.status, 'ok', 'not reuse')
      if (r.status !== 'ok') return
      t.equal(r.ahead, true, 'ahead: true')
      t.equal(r.grace, false)
      t.equal(r.record.refreshHash, C, 'the record advanced to the successor of the presented token')
      t.equal(r.record.lastUsedAt, now + 100)
      t.equal(r.record.refreshExpiresAt, now + 100 + DAY, 'refresh expiry moved as in a rotation')
      t.equal((await findSession(store, user, s.sessionId))?.refreshHash, C, 'list sees the caught-up hash')
      await checkKeys(t, h, user, r.record, 600_000)
      if (h.inspect !== undefined) t.equal((await h.inspect.sessions(user))?.[s.sessionId]?.p, B, 'p = the presented hash, for the grace window')

      // After catching up, the grace window works as after any rotation: B again gets C.
      const g = await store.rotate(rotateInput(user, s.sessionId, B, C, now + 200, { parentHash: A }))
      t.match(g, { status: 'ok', grace: true, record: { refreshHash: C } }, 'B inside the grace window gets the same successor')
      t.notOk(g.status === 'ok' && g.ahead === true, 'a grace refresh is not ahead')
      const n = await store.rotate(rotateInput(user, s.sessionId, C, D, now + 300, { parentHash: B }))
      t.match(n, { status: 'ok', grace: false, record: { refreshHash: D } }, 'C rotates normally')
      t.notOk(n.status === 'ok' && n.ahead === true, 'a normal rotation is not ahead')
    })

    t.test('renew accepts a token one rotation ahead too', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now, { refreshExpiresAt: now - 1 })
      await store.create(s, times(now))
      const [B, C] = [hash(), hash()]
      const r = await store.renew(renewInput(user, s.sessionId, B, C, now + 100, { parentHash: s.refreshHash, refreshTtlMs: HOUR }))
      t.match(r, { status: 'ok', grace: false, ahead: true, record: { refreshHash: C, refreshExpiresAt: now + 100 + HOUR } })
      t.equal((await findSession(store, user, s.sessionId))?.refreshHash, C)
    })

    t.test('a parentHash that matches nothing is reuse, as before (only one rotation ahead is accepted)', async t => {
      const h = await factory(t)
      const { store } = h
      const now = Date.now()
      const user = 'u-' + id()
      const s = newSession(user, now)
      const other = newSession(user, now, { createdAt: now - 10 })
      await store.create(s, times(now))
      await store.create(other, times(now))
      // Two rotations ahead: C (child of B, child of the stored A) names B as its parent.
      const [B, C, D] = [hash(), hash(), hash()]
      t.same(await store.rotate(rotateInput(user, s.sessionId, C, D, now + 100, { parentHash: B })), { status: 'reused' })
      t.equal(await findSession(store, user, s.sessionId), undefined, 'the session is gone')
      await checkGone(t, h, user, s.sessionId)
      t.ok(await findSession(store, user, other.sessionId), 'the other session is untouched')
      // Renewal never revokes: a parent that matches nothing is only stale.
      t.same(await store.renew(renewInput(user, other.sessionId, C, D, now + 100, { parentHash: B })), { status: 'stale' })
      t.equal((await findSession(store, user, other.sessionId))?.refreshHash, other.refreshHash, 'and changes nothing')
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
      const epochs: Array<[string | undefined, number]> = []
      const proofs: number[] = []
      await h.store.subscribe({ onRevoked: id => got.push(id), onState: up => states.push(up), onEpoch: (u, at) => epochs.push([u, at]), onAlive: at => proofs.push(at) })
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
      // epochs of another instance arrive as such, a user's and everybody's
      const user = 'u-' + id() + ':with:colons'
      const at = Date.now()
      await other.markEpoch({ userId: user, at, until: at + 60_000 }, at)
      await other.markEpoch({ at: at + 1, until: at + 3_600_000 }, at)
      const deadline3 = Date.now() + 2000
      while (epochs.length < 2 && Date.now() < deadline3) await sleep(10)
      t.same(epochs, [[user, at], [undefined, at + 1]], 'onEpoch: the user (colons and all), then everybody')
      // the feed proves itself alive: a proof no older than a few heartbeats, or once Infinity (in-process)
      const deadline4 = Date.now() + 2000
      while (proofs.length === 0 && Date.now() < deadline4) await sleep(10)
      t.ok(proofs.length > 0 && (proofs.includes(Number.POSITIVE_INFINITY) || Date.now() - Math.max(...proofs) < 2000), 'onAlive: the feed proved itself alive')
    })

    t.test('markEpoch / loadEpochs / epochOf: the latest of a user\'s and everybody\'s', async t => {
      const { store } = await factory(t)
      const now = Date.now()
      const u1 = 'u-' + id()
      const u2 = 'u-' + id()
      t.equal(await store.epochOf(u1), 0, 'no epoch: 0')
      await store.markEpoch({ userId: u1, at: now - 10, until: now + 60_000 }, now)
      t.equal(await store.epochOf(u1), now - 10, 'the user\'s epoch')
      t.equal(await store.epochOf(u2), 0, 'another user\'s is none')
      await store.markEpoch({ userId: u1, at: now - 20, until: now + 60_000 }, now)
      t.equal(await store.epochOf(u1), now - 10, 'an earlier epoch does not move it back')
      await store.markEpoch({ at: now - 5, until: now + 3_600_000 }, now)
      t.equal(await store.epochOf(u1), now - 5, 'everybody\'s, later than the user\'s, wins')
      t.equal(await store.epochOf(u2), now - 5, 'and applies to every user')
      await store.markEpoch({ userId: u1, at: now, until: now + 60_000 }, now)
      t.equal(await store.epochOf(u1), now, 'a later user epoch wins over an older global one (the latest of both)')
      await store.markEpoch({ at: now - 100, until: now + 3_600_000 }, now)
      t.equal(await store.epochOf(u2), now - 5, 'an earlier global epoch does not move it back')
      const loaded = await store.loadEpochs(now)
      t.same(loaded.map(e => [e.userId, e.at]).sort(), [[u1, now], [undefined, now - 5]].sort(), 'loadEpochs: the epochs in force')
    })
  })
}

// Users with more sessions than the string form holds (8) live in a hash: the whole contract again, with
// every user in that form from the first session.
const hashFormFactory: Factory = async (t) => {
  layout.stringFormMax = 0
  t.teardown(() => { layout.stringFormMax = 8 })
  return await redisFactory(t)
}

contract('MemoryStore', memoryFactory)
contract('RedisStore', redisFactory)
contract('RedisStore, every user in the hash form', hashFormFactory)
