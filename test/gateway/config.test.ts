/* eslint-disable no-template-curly-in-string -- ${VAR} is the config syntax under test */
// The gateway's config as an operator meets it: errors through the bin (exit 78, one stderr line naming
// the field, never the secret), which file is read, ${VAR} and ${VAR:-default}, paths relative to the
// config file, and the bin's keygen / hash-password commands. Then parseConfig directly for the same errors.
import { spawn, type ChildProcess } from 'node:child_process'
import { createPrivateKey, createPublicKey, randomBytes, sign, verify } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { ConfigError, loadConfigFile, parseConfig } from '../../gateway/config.js'
import { hashPassword, verifyPassword } from '../../gateway/login.js'
import { freePort } from '../helpers/redis.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const SERVER = path.join(ROOT, 'gateway/server.ts')
// tap's TypeScript loader from process.execArgv; tap's mock and processinfo imports are left out (the
// children use neither, and they cost ~30% of each child's start-up, which this file pays 16 times).
const EXEC_ARGV = process.execArgv.filter(a => !/@tapjs[\\/](mock|processinfo)[\\/]/.test(a))
/**
 * The secret the children get through ${TOKENGATE_SECRET}: it must never reach stderr. Hex as from
 * `tokengate keygen`, starting with a letter (as 6 in 16 do) so a JSON error near it is deterministic.
 */
const CHILD_SECRET = 'c' + randomBytes(64).toString('hex').slice(1)

// ---- helpers ----------------------------------------------------------------------------------------

const children: ChildProcess[] = []
t.teardown(() => { for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL') })

function childEnv (extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const k of ['TOKENGATE_SECRET', 'TOKENGATE_CONFIG', 'REDIS_URL', 'PORT', 'DEMO_UPSTREAM_PORT']) delete env[k]
  for (const [k, v] of Object.entries(extra)) if (v === undefined) delete env[k]; else env[k] = v
  return env
}

// Each child spends ~2 s of CPU loading the gateway's TypeScript: they run a few at a time, in the order
// the subtests need them, so none starves (all at once on a small machine would each take the sum).
const SLOTS = Math.max(2, os.availableParallelism())
let busy = 0
const waiting: Array<() => void> = []
async function slot (): Promise<() => void> {
  if (busy >= SLOTS) await new Promise<void>(resolve => waiting.push(resolve))
  busy++
  let released = false
  return () => {
    if (released) return
    released = true
    busy--
    waiting.shift()?.()
  }
}

interface Ran { code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string }

/** Runs the bin from source to its end (killed after 20 s: code null then). */
async function runBin (args: string[], opts: { cwd?: string, env?: NodeJS.ProcessEnv, input?: string } = {}): Promise<Ran> {
  const release = await slot()
  const child = spawn(process.execPath, [...EXEC_ARGV, SERVER, ...args], {
    cwd: opts.cwd ?? ROOT,
    env: opts.env ?? childEnv({ TOKENGATE_SECRET: CHILD_SECRET }),
    stdio: ['pipe', 'pipe', 'pipe']
  })
  children.push(child)
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  child.stdin.end(opts.input ?? '')
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>(resolve => child.once('close', (c, s) => resolve([c, s])))
  clearTimeout(timer)
  release()
  return { code, signal, stdout, stderr }
}

interface Running { port: number, stdout: () => string, stderr: () => string }

/** Starts the bin as a gateway and waits for its listening line (rejects on exit or after 20 s); killed at teardown. */
async function startBin (args: string[], opts: { cwd: string, env: NodeJS.ProcessEnv }): Promise<Running> {
  const release = await slot()
  const child = spawn(process.execPath, [...EXEC_ARGV, SERVER, ...args], { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  let out = ''
  let err = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d })
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line in 20 s\nstdout: ${out}\nstderr: ${err}`)), 20_000)
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d
      const m = /Server listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(out)
      if (m !== null) { clearTimeout(timer); resolve(Number(m[1])) }
    })
    child.once('exit', code => { clearTimeout(timer); reject(new Error(`exited (${code}) before listening\nstdout: ${out}\nstderr: ${err}`)) })
  }).finally(release)
  return { port, stdout: () => out, stderr: () => err }
}

const lines = (s: string): string[] => s.split('\n').filter(l => l !== '')
const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

// ---- fixtures ---------------------------------------------------------------------------------------

const dir = await mkdtemp(path.join(os.tmpdir(), 'tokengate-config-'))
t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
const usersJson = JSON.stringify([{ sub: 'alice', roles: ['user'], passwordHash: await hashPassword('pw') }])

/** A valid config; each error case breaks one thing. */
function base (): Record<string, any> {
  return {
    listen: { host: '127.0.0.1', port: 0 },
    tokens: { secret: '${TOKENGATE_SECRET}' },
    login: { usersFile: 'users.json' },
    routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }],
    logLevel: 'info'
  }
}

interface ErrorCase {
  name: string
  /** the config object (or raw file text) */
  config: Record<string, any> | string
  /** the field named on the stderr line, right after `tokengate: config: ` */
  field: string
  /** more the line must say */
  says?: RegExp
  env?: NodeJS.ProcessEnv
}

const errorCases: ErrorCase[] = [
  { name: 'missing ${TOKENGATE_SECRET}', config: base(), field: 'tokens.secret', says: /TOKENGATE_SECRET/, env: childEnv() },
  { name: 'unknown route field', config: { ...base(), routes: [{ prefix: '/api', upstreem: 'http://127.0.0.1:9' }] }, field: 'routes[0].upstreem', says: /not a known field/ },
  { name: 'unknown top-level field', config: { ...base(), bogus: true }, field: 'bogus', says: /not a known field/ },
  { name: 'ftp upstream', config: { ...base(), routes: [{ prefix: '/api', upstream: 'ftp://x' }] }, field: 'routes[0].upstream' },
  { name: 'upstream not a URL', config: { ...base(), routes: [{ prefix: '/api', upstream: 'not a url' }] }, field: 'routes[0].upstream' },
  { name: 'port not a number', config: { ...base(), listen: { port: 'abc' } }, field: 'listen.port' },
  { name: 'login with both', config: { ...base(), login: { usersFile: 'users.json', upstream: 'http://127.0.0.1:9/verify' } }, field: 'login' },
  { name: 'login with neither', config: { ...base(), login: {} }, field: 'login' },
  { name: 'auth maybe', config: { ...base(), routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'maybe' }] }, field: 'routes[0].auth', says: /required.*optional.*public/ },
  // A literal secret whose quotes were forgotten: V8's JSON error quotes the text near the error.
  { name: 'invalid JSON', config: `{\n  "tokens": { "secret": ${CHILD_SECRET} }\n}\n`, field: '(file)', says: /JSON/ }
]

// All bin runs are queued now, in the order the subtests await them.
await writeFile(path.join(dir, 'users.json'), usersJson)
const errorRuns = await Promise.all(errorCases.map(async (c, i) => {
  const file = path.join(dir, `error-${i}.json`)
  await writeFile(file, typeof c.config === 'string' ? c.config : JSON.stringify(c.config, null, 2))
  return { c, file, ran: runBin(['--config', file], { env: c.env }) }
}))
const invalidJsonRun = errorRuns.find(r => r.c.name === 'invalid JSON')!.ran
const missingFile = path.join(dir, 'no-such-dir', 'gateway.config.json')
const missingRun = runBin(['--config', missingFile])
const SHORT_SECRET = 'too-short-secret-0123456789'
await writeFile(path.join(dir, 'short-secret.json'), JSON.stringify({ ...base(), tokens: { secret: SHORT_SECRET } }))
const shortRun = runBin(['--config', path.join(dir, 'short-secret.json')])

// Which file: --config beats TOKENGATE_CONFIG beats ./gateway.config.json, all three present, each with
// its own port. The same runs show ${VAR} / ${VAR:-default} and paths relative to the config file:
//   pick/a/config.json        usersFile "users/users.json" → pick/a/users/users.json (cwd is pick/)
//   pick/b/config.json        port "${GW_PORT}", logLevel "${GW_LOG_LEVEL:-silent}", usersFile "${GW_USERS_FILE:-users.json}"
//   pick/gateway.config.json  usersFile "users.json"
const pick = path.join(dir, 'pick')
await mkdir(path.join(pick, 'a', 'users'), { recursive: true })
await mkdir(path.join(pick, 'b'), { recursive: true })
await writeFile(path.join(pick, 'a', 'users', 'users.json'), usersJson)
await writeFile(path.join(pick, 'b', 'users.json'), usersJson)
await writeFile(path.join(pick, 'users.json'), usersJson)
const ports = { a: await freePort(), b: await freePort(), c: await freePort() }
await writeFile(path.join(pick, 'a', 'config.json'), JSON.stringify({ ...base(), listen: { host: '127.0.0.1', port: ports.a }, login: { usersFile: 'users/users.json' } }))
await writeFile(path.join(pick, 'b', 'config.json'), JSON.stringify({
  ...base(),
  listen: { host: '${GW_HOST:-127.0.0.1}', port: '${GW_PORT}' },
  login: { usersFile: '${GW_USERS_FILE:-users.json}' },
  logLevel: '${GW_LOG_LEVEL:-silent}'
}))
await writeFile(path.join(pick, 'gateway.config.json'), JSON.stringify({ ...base(), listen: { host: '127.0.0.1', port: ports.c } }))
const pickRuns = {
  flag: startBin(['--config', 'a/config.json'], { cwd: pick, env: childEnv({ TOKENGATE_SECRET: CHILD_SECRET, TOKENGATE_CONFIG: 'b/config.json' }) }),
  env: startBin([], { cwd: pick, env: childEnv({ TOKENGATE_SECRET: CHILD_SECRET, TOKENGATE_CONFIG: 'b/config.json', GW_PORT: String(ports.b), GW_LOG_LEVEL: 'info' }) }),
  cwd: startBin([], { cwd: pick, env: childEnv({ TOKENGATE_SECRET: CHILD_SECRET }) })
}
// Start-up failures surface in the subtests that await them, not as unhandled rejections here.
for (const p of Object.values(pickRuns)) p.catch(() => {})

const keygenRun = runBin(['keygen'])
const eddsaRun = runBin(['keygen', '--eddsa', '--kid', 'k1'])
const hashRun = runBin(['hash-password'], { input: 'correct horse battery\n' })

async function get (port: number, urlPath: string): Promise<number> {
  return (await fetch(`http://127.0.0.1:${port}${urlPath}`, { signal: AbortSignal.timeout(10_000) })).status
}

async function loginStatus (port: number, password: string): Promise<{ status: number, body: { accessToken?: unknown, code?: unknown } }> {
  const res = await fetch(`http://127.0.0.1:${port}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'alice', password }),
    signal: AbortSignal.timeout(10_000)
  })
  return { status: res.status, body: await res.json() as { accessToken?: unknown, code?: unknown } }
}

// ---- the bin: config errors ---------------------------------------------------------------------------

t.test('config errors: exit 78, one stderr line naming the field, never the secret', async t => {
  for (const { c, ran } of errorRuns) {
    const r = await ran
    t.equal(r.code, 78, `${c.name}: exit code 78`)
    const err = lines(r.stderr)
    t.equal(err.length, 1, `${c.name}: exactly one stderr line (got ${JSON.stringify(r.stderr)})`)
    t.match(err[0] ?? '', new RegExp(`^tokengate: config: ${escape(c.field)} `), `${c.name}: names ${c.field}`)
    if (c.says !== undefined) t.match(err[0] ?? '', c.says, `${c.name}: says what is wrong`)
    t.notOk(r.stderr.includes(CHILD_SECRET) || r.stdout.includes(CHILD_SECRET), `${c.name}: the secret is not printed`)
    t.notMatch(r.stdout, /Server listening/, `${c.name}: never listened`)
  }
})

t.test('invalid JSON around a literal secret: the error quotes no part of it', async t => {
  const r = await invalidJsonRun
  const fragment = CHILD_SECRET.slice(0, 8)
  t.notOk(r.stderr.includes(fragment), `no part of the secret on stderr (got ${JSON.stringify(r.stderr.replaceAll(fragment, '<secret…>'))})`)
})

t.test('a missing config file: exit 78, one line naming the file', async t => {
  const r = await missingRun
  t.equal(r.code, 78)
  const err = lines(r.stderr)
  t.equal(err.length, 1, r.stderr)
  t.match(err[0] ?? '', /^tokengate: config: /)
  t.match(err[0] ?? '', missingFile, 'names the file it tried')
})

t.test('a secret under 32 bytes: non-zero exit naming the secret, without printing it', async t => {
  const r = await shortRun
  t.not(r.code, 0, 'non-zero exit')
  t.not(r.code, null, 'exits by itself')
  const err = lines(r.stderr)
  t.equal(err.length, 1, `one stderr line (got ${JSON.stringify(r.stderr)})`)
  t.match(err[0] ?? '', /^tokengate: .*secret/, 'names the secret')
  t.match(err[0] ?? '', /32/, 'says how long it must be')
  t.notOk(r.stderr.includes(SHORT_SECRET) || r.stdout.includes(SHORT_SECRET), 'the secret is not printed')
  t.notMatch(r.stdout, /Server listening/)
})

// ---- the bin: which file, ${VAR}, relative paths ----------------------------------------------------------

t.test('--config beats TOKENGATE_CONFIG and ./gateway.config.json; its paths are relative to it', async t => {
  const r = await pickRuns.flag
  t.equal(r.port, ports.a, '--config a/config.json is used although TOKENGATE_CONFIG and ./gateway.config.json exist')
  t.equal(await get(r.port, '/healthz'), 200)
  const ok = await loginStatus(r.port, 'pw')
  t.equal(ok.status, 200, 'usersFile "users/users.json" was found next to a/config.json, not in the working directory')
  t.type(ok.body.accessToken, 'string')
  const bad = await loginStatus(r.port, 'wrong')
  t.equal(bad.status, 401)
  t.equal(bad.body.code, 'TOKENGATE_BAD_CREDENTIALS')
})

t.test('TOKENGATE_CONFIG beats ./gateway.config.json; ${VAR} and ${VAR:-default}', async t => {
  const r = await pickRuns.env
  t.equal(r.port, ports.b, 'TOKENGATE_CONFIG (relative to the working directory) is used; listen.port "${GW_PORT}" became a number')
  t.equal(await get(r.port, '/healthz'), 200)
  t.match(r.stdout(), /"level":30/, 'logLevel "${GW_LOG_LEVEL:-silent}": the variable over its default')
  t.equal((await loginStatus(r.port, 'pw')).status, 200, 'usersFile "${GW_USERS_FILE:-users.json}": the default, relative to b/')
})

t.test('./gateway.config.json by default', async t => {
  const r = await pickRuns.cwd
  t.equal(r.port, ports.c, 'gateway.config.json in the working directory')
  t.equal(await get(r.port, '/healthz'), 200)
})

// ---- the bin: keygen and hash-password -------------------------------------------------------------------

t.test('tokengate keygen prints a 128-hex-character secret', async t => {
  const a = await keygenRun
  t.equal(a.code, 0, a.stderr)
  t.match(a.stdout, /^[0-9a-f]{128}\n$/)
  t.notMatch(a.stdout, /^(.)\1+\n$/, 'not one repeated character')
  // and the gateway accepts it as tokens.secret
  t.doesNotThrow(() => parseConfig({ tokens: { secret: a.stdout.trim() }, login: { usersFile: 'u.json' } }))
})

t.test('tokengate keygen --eddsa --kid k1: a JSON key node:crypto can load, sign and verify with', async t => {
  const r = await eddsaRun
  t.equal(r.code, 0, r.stderr)
  const key = JSON.parse(r.stdout) as { kid: string, algorithm: string, privateKey: string, publicKey: string }
  t.equal(key.kid, 'k1')
  t.equal(key.algorithm, 'EdDSA')
  t.match(key.privateKey, /^-----BEGIN PRIVATE KEY-----\n/)
  t.match(key.publicKey, /^-----BEGIN PUBLIC KEY-----\n/)
  const priv = createPrivateKey(key.privateKey)
  const pub = createPublicKey(key.publicKey)
  t.equal(priv.asymmetricKeyType, 'ed25519')
  t.equal(pub.asymmetricKeyType, 'ed25519')
  const data = Buffer.from('tokengate')
  const sig = sign(null, data, priv)
  t.ok(verify(null, data, pub, sig), 'the public key verifies what the private key signed')
  t.notOk(verify(null, Buffer.from('tokengatE'), pub, sig), 'and nothing else')
  // usable as tokens.keys as printed
  const cfg = parseConfig({ tokens: { keys: [key] }, login: { usersFile: 'u.json' } })
  t.equal(cfg.tokens.keys?.[0].kid, 'k1')
})

t.test('tokengate hash-password reads stdin and prints a hash verifyPassword accepts', async t => {
  const r = await hashRun
  t.equal(r.code, 0, r.stderr)
  const hash = r.stdout.trim()
  t.equal(lines(r.stdout).length, 1)
  t.match(hash, /^scrypt\$/)
  t.notMatch(r.stdout, /correct horse/, 'the password is not echoed')
  t.equal(await verifyPassword('correct horse battery', hash), true)
  t.equal(await verifyPassword('correct horse batterY', hash), false)
  t.equal(await verifyPassword('', hash), false)
})

// ---- parseConfig directly ----------------------------------------------------------------------------------

const ENV = { TOKENGATE_SECRET: CHILD_SECRET }

t.test('parseConfig: the same errors name the same fields', async t => {
  for (const c of errorCases) {
    if (typeof c.config === 'string') continue
    const env = c.env === undefined ? ENV : {}
    let caught: unknown
    try { parseConfig(c.config, { env, baseDir: dir }) } catch (err) { caught = err }
    t.type(caught, ConfigError, `${c.name}: a ConfigError`)
    const err = caught as ConfigError
    t.equal(err.field, c.field, `${c.name}: field ${c.field}`)
    t.match(err.message, new RegExp(`^config: ${escape(c.field)} `))
    if (c.says !== undefined) t.match(err.message, c.says)
    t.notOk(err.message.includes(CHILD_SECRET), `${c.name}: no secret in the message`)
  }
})

t.test('parseConfig: more bad values name their field', async t => {
  const cases: Array<[string, Record<string, any>, string]> = [
    ['duration', { ...base(), routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', timeout: 'soon' }] }, 'routes[0].timeout'],
    ['prefix', { ...base(), routes: [{ prefix: 'api', upstream: 'http://127.0.0.1:9' }] }, 'routes[0].prefix'],
    ['port range', { ...base(), listen: { port: 70000 } }, 'listen.port'],
    ['unknown tokens field', { ...base(), tokens: { secret: 'x'.repeat(64), ttl: '1m' } }, 'tokens.ttl'],
    ['no tokens.secret nor keys', { ...base(), tokens: {} }, 'tokens.secret'],
    ['missing variable deep inside', { ...base(), routes: [{ prefix: '/api', upstream: '${NOPE_UPSTREAM}' }] }, 'routes[0].upstream'],
    ['roles without required', { ...base(), routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'public', roles: ['x'] }] }, 'routes[0].roles'],
    ['route under /auth', { ...base(), routes: [{ prefix: '/auth/x', upstream: 'http://127.0.0.1:9' }] }, 'routes[0].prefix'],
    ['trustProxy type', { ...base(), trustProxy: 'maybe' }, 'trustProxy'],
    ['logLevel', { ...base(), logLevel: 'loud' }, 'logLevel']
  ]
  for (const [name, config, field] of cases) {
    t.throws(() => parseConfig(config, { env: ENV, baseDir: dir }), { name: 'ConfigError', field }, `${name}: ${field}`)
  }
})

t.test('loadConfigFile: a missing file and invalid JSON are ConfigErrors', async t => {
  t.throws(() => loadConfigFile(missingFile, ENV), { name: 'ConfigError', field: '(file)', message: new RegExp(escape(missingFile)) })
  const bad = path.join(dir, 'bad.json')
  await writeFile(bad, '{ "listen": ')
  t.throws(() => loadConfigFile(bad, ENV), { name: 'ConfigError', field: '(file)', message: /JSON/ })
})

t.test('parseConfig: ${VAR}, ${VAR:-default}, numbers from the environment, defaults, paths', async t => {
  const cfg = parseConfig({
    listen: { host: '${H:-0.0.0.0}', port: '${P}' },
    tokens: { secret: '${TOKENGATE_SECRET}', accessTokenTtl: '${TTL:-5m}', rotateRefreshTokens: '${ROTATE}' },
    login: { usersFile: 'users/users.json' },
    routes: [{ prefix: '/api', upstream: 'http://${UP_HOST:-127.0.0.1}:${UP_PORT}' }],
    trustProxy: '${TRUST:-false}'
  }, { env: { ...ENV, P: '8181', ROTATE: 'false', UP_PORT: '3002', TTL: '' }, baseDir: '/srv/gw' })
  t.equal(cfg.listen.port, 8181, 'a number from the environment')
  t.equal(cfg.listen.host, '0.0.0.0', 'the default when unset')
  t.equal(cfg.tokens.secret, CHILD_SECRET)
  t.equal(cfg.tokens.accessTokenTtl, '5m', 'the default when set to the empty string')
  t.equal(cfg.tokens.rotateRefreshTokens, false, 'a boolean from the environment')
  t.equal(cfg.trustProxy, false)
  t.equal(cfg.routes[0].upstream, 'http://127.0.0.1:3002')
  t.equal(cfg.routes[0].auth, 'required', 'auth defaults to required')
  t.equal(cfg.routes[0].timeout, '30s', 'timeout defaults to 30s')
  t.equal(cfg.login.usersFile, path.resolve('/srv/gw', 'users/users.json'), 'relative to the config directory')
  t.equal(cfg.rateLimit.failedLogins.max, 10)
  t.equal(cfg.rateLimit.requests.max, 100)
  t.equal(cfg.baseDir, '/srv/gw')

  const set = parseConfig({ listen: { port: '${P:-1}' }, tokens: { secret: '${TOKENGATE_SECRET}' }, login: { usersFile: 'u.json' } }, { env: { ...ENV, P: '2' } })
  t.equal(set.listen.port, 2, 'the variable over its default')

  const file = path.join(dir, 'sub', 'gw.json')
  await mkdir(path.dirname(file), { recursive: true })
  await writeFile(file, JSON.stringify({ tokens: { secret: '${TOKENGATE_SECRET}' }, login: { usersFile: 'users.json' } }))
  t.equal(loadConfigFile(file, ENV).login.usersFile, path.join(dir, 'sub', 'users.json'), 'loadConfigFile resolves against the file')
})
