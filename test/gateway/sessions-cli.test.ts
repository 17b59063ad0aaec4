/* eslint-disable no-template-curly-in-string -- ${VAR} is the config syntax under test */
// `tokengate sessions list | revoke | revoke-everyone`, run as the built bin against the gateway's config:
// what an operator sees (JSON lines, exit codes 0 / 1 / 69, never a token) and that a revocation takes
// effect on a running gateway as a logout does.
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { Redis } from 'ioredis'
import t from 'tap'
import { hashPassword } from '../../gateway/login.js'
import { sleep } from '../helpers/app.js'
import { deletePrefix, freePort, redisUrl, uniquePrefix } from '../helpers/redis.js'
import { childEnv, killChildren, runBin, spawnDist, tempDir } from '../helpers/spawn.js'

t.teardown(killChildren)
const SECRET = randomBytes(64).toString('hex')
const prefix = uniquePrefix('sessions-cli')
const url = await redisUrl()
const redis = new Redis(url)
t.teardown(async () => { await deletePrefix(redis, prefix); redis.disconnect() })
const dir = tempDir('sessions-cli')
await writeFile(path.join(dir, 'users.json'), JSON.stringify([
  { sub: 'alice', roles: ['user'], passwordHash: await hashPassword('pw') },
  { sub: 'bob', roles: ['user'], passwordHash: await hashPassword('pw') }
]))
const port = await freePort()
const config = path.join(dir, 'gateway.config.json')
await writeFile(config, JSON.stringify({
  listen: { host: '127.0.0.1', port },
  redis: { url },
  tokens: { secret: '${TOKENGATE_SECRET}', keyPrefix: prefix },
  login: { usersFile: 'users.json' },
  routes: [],
  logLevel: 'warn'
}))
const env = childEnv({ TOKENGATE_SECRET: SECRET })
await spawnDist('gateway/server.js', ['--config', config], env, /.*/)
const base = `http://127.0.0.1:${port}`
for (let i = 0; i < 100 && (await fetch(`${base}/readyz`).catch(() => undefined))?.status !== 200; i++) await sleep(50)

interface Pair { accessToken: string, refreshToken: string, sessionId: string }
async function login (username: string, ua: string): Promise<Pair> {
  const res = await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json', 'user-agent': ua }, body: JSON.stringify({ username, password: 'pw' }) })
  if (res.status !== 200) throw new Error(`login: ${res.status}`)
  return await res.json() as Pair
}
const sessions = async (...args: string[]): ReturnType<typeof runBin> => await runBin(['sessions', ...args, '--config', config], { env })
const status = async (token: string): Promise<number> => (await fetch(`${base}/auth/sessions`, { headers: { authorization: `Bearer ${token}` } })).status
const lines = (s: string): string[] => s.split('\n').filter(l => l !== '')

t.test('sessions list: one JSON line per live session, newest first, never a token', async t => {
  const a1 = await login('alice', 'laptop/1.0')
  const a2 = await login('alice', 'phone/2.0')
  const r = await sessions('list', 'alice')
  t.equal(r.code, 0, r.stderr)
  const out = lines(r.stdout).map(l => JSON.parse(l))
  t.same(out.map(s => s.id), [a2.sessionId, a1.sessionId], 'both sessions, newest first')
  t.same(Object.keys(out[0]).sort(), ['createdAt', 'expiresAt', 'id', 'ip', 'lastUsedAt', 'userAgent', 'userId'].sort(), 'id, times, ip, user agent (and the user)')
  t.match(out[0], { userId: 'alice', ip: '127.0.0.1', userAgent: 'phone/2.0' })
  for (const secret of [a1.accessToken, a1.refreshToken, a2.refreshToken, a2.refreshToken.split('.')[3]]) t.notOk(r.stdout.includes(secret) || r.stderr.includes(secret), 'no token, nor a refresh id, is printed')
  const none = await sessions('list', 'nobody')
  t.equal(none.code, 0, 'a user without sessions: exit 0')
  t.equal(none.stdout, '', 'and nothing printed')
})

t.test('sessions revoke <userId> <sessionId>: that session dies on the running gateway at once; another stays', async t => {
  const keep = await login('alice', 'a')
  const drop = await login('alice', 'b')
  t.equal(await status(drop.accessToken), 200, 'the token works before')
  const r = await sessions('revoke', 'alice', drop.sessionId)
  t.equal(r.code, 0, r.stderr)
  t.same(JSON.parse(r.stdout), { userId: 'alice', revoked: 1 })
  let refused = false
  for (let i = 0; i < 100 && !refused; i++) { refused = await status(drop.accessToken) === 401; if (!refused) await sleep(20) }
  t.ok(refused, 'the gateway refuses its access token')
  t.equal(await status(keep.accessToken), 200, 'the other session works')
  const again = await sessions('revoke', 'alice', drop.sessionId)
  t.equal(again.code, 1, 'revoking it again: exit 1')
  t.match(again.stderr, /no live session/)
  const unknown = await sessions('revoke', 'alice', 'no-such-session')
  t.equal(unknown.code, 1, 'an unknown session: exit 1')
  // Session ids are base64url: one may start with '-', and is an id, not a flag.
  const dashed = await sessions('revoke', 'alice', '-pZ3kq0wJt2bXcV9mLr8sQ')
  t.equal(dashed.code, 1, `a session id starting with '-' is taken as an id (${dashed.stderr.trim()})`)
  t.match(dashed.stderr, /no live session -pZ3kq0wJt2bXcV9mLr8sQ/)
  const dashedUser = await sessions('list', '-someone')
  t.equal(dashedUser.code, 0, 'so is a user id starting with \'-\'')
})

t.test('sessions revoke <userId>: every session of the user; sessions revoke-everyone: every session of everybody', async t => {
  const a = await login('alice', 'a')
  const b = await login('bob', 'b')
  const r = await sessions('revoke', 'alice')
  t.equal(r.code, 0, r.stderr)
  t.ok(JSON.parse(r.stdout).revoked >= 1, 'says how many')
  let refused = false
  for (let i = 0; i < 100 && !refused; i++) { refused = await status(a.accessToken) === 401; if (!refused) await sleep(20) }
  t.ok(refused, 'alice\'s token is refused by the gateway')
  t.equal(await status(b.accessToken), 200, 'bob\'s works')
  t.equal((await sessions('revoke', 'alice')).code, 1, 'a user without sessions: exit 1')

  const e = await sessions('revoke-everyone')
  t.equal(e.code, 0, e.stderr)
  refused = false
  for (let i = 0; i < 100 && !refused; i++) { refused = await status(b.accessToken) === 401; if (!refused) await sleep(20) }
  t.ok(refused, 'bob\'s token is refused too')
  const after = await login('bob', 'c')
  t.equal(await status(after.accessToken), 200, 'a login after it works')
  t.same(lines((await sessions('list', 'bob')).stdout).map(l => JSON.parse(l).id), [after.sessionId], 'and is the only session listed')
})

t.test('Redis cannot be reached: exit 69, naming where it looked; bad command lines: 64', async t => {
  const dead = path.join(dir, 'dead.json')
  await writeFile(dead, JSON.stringify({ redis: { url: `redis://:hunter2@127.0.0.1:${await freePort()}` }, tokens: { secret: '${TOKENGATE_SECRET}', keyPrefix: prefix }, login: { usersFile: 'users.json' }, routes: [] }))
  const deadRuns = [['list', 'alice'], ['revoke', 'alice', 'x'], ['revoke-everyone']]
  for (const [i, r] of (await Promise.all(deadRuns.map(async args => await runBin(['sessions', ...args, '--config', dead], { env })))).entries()) {
    t.equal(r.code, 69, `sessions ${deadRuns[i].join(' ')}: exit 69 (${r.stderr.trim()})`)
    t.match(r.stderr, /Redis cannot be reached \(127\.0\.0\.1:\d+\)/)
    t.notMatch(r.stderr, /hunter2/, 'never the password')
  }
  const bad = [[], ['lst', 'alice'], ['list'], ['list', 'a', 'b'], ['revoke'], ['revoke-everyone', 'x'], ['list', 'alice', '--confg', config]]
  for (const [i, r] of (await Promise.all(bad.map(async args => await runBin(['sessions', ...args], { env })))).entries()) {
    t.equal(r.code, 64, `sessions ${bad[i].join(' ')}: usage error (exit 64)`)
    t.match(r.stderr, /usage:/)
  }
  const memory = path.join(dir, 'memory.json')
  await writeFile(memory, JSON.stringify({ tokens: { secret: '${TOKENGATE_SECRET}' }, login: { usersFile: 'users.json' }, routes: [] }))
  const m = await runBin(['sessions', 'list', 'alice', '--config', memory], { env })
  t.equal(m.code, 78, 'a config without Redis: a config problem (78)')
  t.match(m.stderr, /redis/)
})
