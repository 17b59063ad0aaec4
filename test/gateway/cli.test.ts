/* eslint-disable no-template-curly-in-string -- ${VAR} is the config syntax under test */
// The `tokengate` bin as an operator meets it, run from the built dist/: config errors exit 78 with one
// stderr line naming the field (never the secret), which config file is read, keygen, hash-password,
// --version and --help, and command lines it does not understand refused with the usage (exit 64).
import { createPrivateKey, createPublicKey, randomBytes, sign, verify } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import t from 'tap'
import { parseConfig } from '../../gateway/config.js'
import { hashPassword, verifyPassword } from '../../gateway/login.js'
import { freePort } from '../helpers/redis.js'
import { ROOT, childEnv, killChildren, runBin, spawnDist, tempDir } from '../helpers/spawn.js'

/** Hex as from `tokengate keygen`, starting with a letter so a JSON error near it is deterministic. */
const CHILD_SECRET = 'c' + randomBytes(64).toString('hex').slice(1)
const env = childEnv({ TOKENGATE_SECRET: CHILD_SECRET })
t.teardown(killChildren)
const dir = tempDir('cli')
const usersJson = JSON.stringify([{ sub: 'alice', roles: ['user'], passwordHash: await hashPassword('pw') }])
await writeFile(path.join(dir, 'users.json'), usersJson)
const lines = (s: string): string[] => s.split('\n').filter(l => l !== '')

function base (): Record<string, any> {
  return {
    listen: { host: '127.0.0.1', port: 0 },
    tokens: { secret: '${TOKENGATE_SECRET}' },
    login: { usersFile: 'users.json' },
    routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }],
    logLevel: 'info'
  }
}

async function configFile (name: string, config: Record<string, any> | string): Promise<string> {
  const file = path.join(dir, name)
  await writeFile(file, typeof config === 'string' ? config : JSON.stringify(config, null, 2))
  return file
}

t.test('config errors: exit 78, one stderr line naming the field, never the secret', async t => {
  const cases: Array<[string, Record<string, any> | string, string, NodeJS.ProcessEnv]> = [
    ['missing ${TOKENGATE_SECRET}', base(), 'tokens.secret', childEnv()],
    ['unknown route field', { ...base(), routes: [{ prefix: '/api', upstreem: 'http://127.0.0.1:9' }] }, 'routes[0].upstreem', env],
    // A literal secret whose quotes were forgotten: V8's JSON error quotes the text near the error.
    ['invalid JSON around a literal secret', `{\n  "tokens": { "secret": ${CHILD_SECRET} }\n}\n`, '(file)', env],
    ['a secret under 32 bytes (a plugin option error)', { ...base(), tokens: { secret: 'too-short-secret-0123456789' } }, 'tokens.secret', env]
  ]
  const runs = await Promise.all(cases.map(async ([name, config, , e], i) => await runBin(['--config', await configFile(`error-${i}.json`, config)], { env: e }).then(r => ({ name, r }))))
  for (const [i, { name, r }] of runs.entries()) {
    const field = cases[i][2]
    t.equal(r.code, 78, `${name}: exit code 78`)
    const err = lines(r.stderr)
    t.equal(err.length, 1, `${name}: exactly one stderr line (got ${JSON.stringify(r.stderr.replaceAll(CHILD_SECRET.slice(0, 8), '<secret>'))})`)
    t.ok((err[0] ?? '').startsWith(`tokengate: config: ${field} `), `${name}: names ${field}`)
    for (const secret of [CHILD_SECRET.slice(0, 8), 'too-short-secret']) t.notOk(r.stderr.includes(secret) || r.stdout.includes(secret), `${name}: the secret is not printed`)
    t.notMatch(r.stdout, /Server listening/, `${name}: never listened`)
  }
  t.match(runs[3].r.stderr, /32/, 'the short secret: says how long it must be')
})

t.test('a missing config file: exit 78, one line naming the file', async t => {
  const missing = path.join(dir, 'no-such-dir', 'gateway.config.json')
  const r = await runBin(['--config', missing], { env })
  t.equal(r.code, 78)
  t.equal(lines(r.stderr).length, 1, r.stderr)
  t.match(r.stderr, /^tokengate: config: \(file\) cannot be read: /)
  t.ok(r.stderr.includes(missing), 'names the file it tried')
})

t.test('which file: --config beats TOKENGATE_CONFIG beats ./gateway.config.json; paths relative to it', async t => {
  // pick/a/config.json: usersFile "users/users.json" → pick/a/users/users.json (the working directory is pick/)
  // pick/b/config.json: port "${GW_PORT}", logLevel "${GW_LOG_LEVEL:-silent}", usersFile "${GW_USERS_FILE:-users.json}"
  const pick = path.join(dir, 'pick')
  await mkdir(path.join(pick, 'a', 'users'), { recursive: true })
  await mkdir(path.join(pick, 'b'), { recursive: true })
  await writeFile(path.join(pick, 'a', 'users', 'users.json'), usersJson)
  await writeFile(path.join(pick, 'b', 'users.json'), usersJson)
  await writeFile(path.join(pick, 'users.json'), usersJson)
  const ports = { a: await freePort(), b: await freePort(), c: await freePort() }
  await writeFile(path.join(pick, 'a', 'config.json'), JSON.stringify({ ...base(), listen: { host: '127.0.0.1', port: ports.a }, login: { usersFile: 'users/users.json' } }))
  await writeFile(path.join(pick, 'b', 'config.json'), JSON.stringify({ ...base(), listen: { host: '127.0.0.1', port: '${GW_PORT}' }, login: { usersFile: '${GW_USERS_FILE:-users.json}' }, logLevel: '${GW_LOG_LEVEL:-silent}' }))
  await writeFile(path.join(pick, 'gateway.config.json'), JSON.stringify({ ...base(), listen: { host: '127.0.0.1', port: ports.c } }))
  const listening = /Server listening at http:\/\/127\.0\.0\.1:(\d+)/
  const [flag, fromEnv, cwd] = await Promise.all([
    spawnDist('gateway/server.js', ['--config', 'a/config.json'], childEnv({ TOKENGATE_SECRET: CHILD_SECRET, TOKENGATE_CONFIG: 'b/config.json' }), listening, { cwd: pick }),
    spawnDist('gateway/server.js', [], childEnv({ TOKENGATE_SECRET: CHILD_SECRET, TOKENGATE_CONFIG: 'b/config.json', GW_PORT: String(ports.b), GW_LOG_LEVEL: 'info' }), listening, { cwd: pick }),
    spawnDist('gateway/server.js', [], childEnv({ TOKENGATE_SECRET: CHILD_SECRET }), listening, { cwd: pick })
  ])
  const login = async (port: number, password: string): Promise<number> => (await fetch(`http://127.0.0.1:${port}/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password })
  })).status
  t.equal(Number(flag.match[1]), ports.a, '--config a/config.json is used although TOKENGATE_CONFIG and ./gateway.config.json exist')
  t.equal(await login(ports.a, 'pw'), 200, 'usersFile "users/users.json" was found next to a/config.json')
  t.equal(await login(ports.a, 'wrong'), 401)
  t.equal(Number(fromEnv.match[1]), ports.b, 'TOKENGATE_CONFIG is used; listen.port "${GW_PORT}" became a number')
  t.match(fromEnv.stdout(), /"level":30/, 'logLevel "${GW_LOG_LEVEL:-silent}": the variable over its default')
  t.equal(await login(ports.b, 'pw'), 200, 'usersFile "${GW_USERS_FILE:-users.json}": the default, relative to b/')
  t.equal(Number(cwd.match[1]), ports.c, 'gateway.config.json in the working directory')
  t.equal((await fetch(`http://127.0.0.1:${ports.c}/healthz`)).status, 200)
})

t.test('tokengate keygen prints a 128-hex-character secret the config accepts', async t => {
  const a = await runBin(['keygen'])
  t.equal(a.code, 0, a.stderr)
  t.match(a.stdout, /^[0-9a-f]{128}\n$/)
  t.notMatch(a.stdout, /^(.)\1+\n$/, 'not one repeated character')
  t.doesNotThrow(() => parseConfig({ tokens: { secret: a.stdout.trim() }, login: { usersFile: 'u.json' } }))
})

t.test('tokengate keygen --eddsa --kid k1: a JSON key node:crypto can load, sign and verify with', async t => {
  const r = await runBin(['keygen', '--eddsa', '--kid', 'k1'])
  t.equal(r.code, 0, r.stderr)
  const key = JSON.parse(r.stdout) as { kid: string, algorithm: string, privateKey: string, publicKey: string }
  t.equal(key.kid, 'k1')
  t.equal(key.algorithm, 'EdDSA')
  const priv = createPrivateKey(key.privateKey)
  const pub = createPublicKey(key.publicKey)
  t.equal(priv.asymmetricKeyType, 'ed25519')
  const data = Buffer.from('tokengate')
  const sig = sign(null, data, priv)
  t.ok(verify(null, data, pub, sig), 'the public key verifies what the private key signed')
  t.notOk(verify(null, Buffer.from('tokengatE'), pub, sig), 'and nothing else')
  t.equal(parseConfig({ tokens: { keys: [key] }, login: { usersFile: 'u.json' } }).tokens.keys?.[0].kid, 'k1', 'usable as tokens.keys as printed')
})

t.test('tokengate hash-password reads stdin (or its one argument) and prints a hash verifyPassword accepts', async t => {
  const r = await runBin(['hash-password'], { input: 'correct horse battery\n' })
  t.equal(r.code, 0, r.stderr)
  const hash = r.stdout.trim()
  t.equal(lines(r.stdout).length, 1)
  t.match(hash, /^scrypt\$/)
  t.notMatch(r.stdout, /correct horse/, 'the password is not echoed')
  t.equal(await verifyPassword('correct horse battery', hash), true)
  t.equal(await verifyPassword('correct horse batterY', hash), false)
  const arg = await runBin(['hash-password', 's3cret'])
  t.equal(arg.code, 0, arg.stderr)
  t.equal(await verifyPassword('s3cret', arg.stdout.trim()), true)
})

t.test('--version prints the package version; --help the usage', async t => {
  const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }
  for (const flag of ['--version', '-v']) {
    const r = await runBin([flag], { cwd: dir })
    t.equal(r.code, 0, `${flag}: exit 0 (${r.stderr})`)
    t.equal(r.stdout, `${pkg.version}\n`, `${flag}: the version`)
  }
  const h = await runBin(['--help'], { cwd: dir })
  t.equal(h.code, 0)
  t.match(h.stdout, /^usage:\n {2}tokengate \[--config FILE\]/)
  t.match(h.stdout, /keygen/)
  t.match(h.stdout, /hash-password/)
})

t.test('what the bin does not understand is refused with the usage: exit 64, nothing started', async t => {
  // The working directory has no gateway.config.json: a flag that was ignored would end in exit 78 instead.
  const cases: Array<[string[], RegExp]> = [
    [['--confg', 'x.json'], /--confg/],
    [['--config'], /--config/],
    [['--config', 'x.json', 'extra'], /extra/],
    [['keygen', '--rsa'], /--rsa/],
    [['keygen', '--kid', 'k1'], /--kid goes with --eddsa/],
    [['hash-password', 'a', 'b'], /'b'/],
    [['frobnicate'], /'frobnicate' is not a command/],
    [['--version', '--verbose'], /--verbose/]
  ]
  const runs = await Promise.all(cases.map(async ([args]) => await runBin(args, { cwd: dir, env })))
  for (const [i, [args, says]] of cases.entries()) {
    const r = runs[i]
    t.equal(r.code, 64, `${args.join(' ')}: exit 64 (stderr ${JSON.stringify(r.stderr.split('\n')[0])})`)
    t.match(r.stderr.split('\n')[0], says, `${args.join(' ')}: names what is wrong`)
    t.match(r.stderr, /\nusage:\n/, `${args.join(' ')}: prints the usage`)
    t.equal(r.stdout, '', `${args.join(' ')}: nothing on stdout`)
  }
})
