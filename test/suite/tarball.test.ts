// The package as a user gets it: `npm pack`, installed into an empty app with production dependencies
// only (no devDependency of this repository within reach), then the three entry points imported, the
// README's Usage app run as written, the installed bin run with the README's gateway quick start, the
// README's page that loads tokengate/client without a bundler (in Chromium), and a strict TypeScript
// app (skipLibCheck: false, the user's own ioredis 6 instance as `redis`) compiled and run. One pack and
// one install serve every subtest. dist/ is already built (npm test builds first), so the pack runs no
// script.
import { spawn, type SpawnOptions } from 'node:child_process'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { launchBrowser, noBrowser } from '../helpers/browser.js'
import { DOCS, checkUsageSteps, readmeBlock, runUsageSteps } from '../helpers/readme.js'
import { freePort, startOwnRedis, type OwnRedis } from '../helpers/redis.js'
import { DIST, ROOT, childEnv, killChildren, spawnDist, tempDir, track } from '../helpers/spawn.js'

t.setTimeout(300_000) // npm pack + npm install + a strict tsc run: half a minute, far more on a busy machine
t.teardown(killChildren)

const NODE_BIN = path.dirname(process.execPath)
const installed = (name: string): string => (JSON.parse(readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version

/** The environment for npm and the user's programs: none of tokengate's variables, none of the npm run this test may be under. */
function userEnv (extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env = childEnv(extra)
  for (const k of Object.keys(env)) if (/^npm_/i.test(k)) delete env[k]
  env.PATH = `${NODE_BIN}:${env.PATH ?? ''}`
  return env
}

interface Ran { code: number | null, stdout: string, stderr: string }

/** Runs a command to its end (killed after `timeoutMs`). */
async function run (cmd: string, args: string[], opts: SpawnOptions & { timeoutMs?: number } = {}): Promise<Ran> {
  const child = track(spawn(cmd, args, { env: userEnv(), ...opts, stdio: ['ignore', 'pipe', 'pipe'] }))
  let stdout = ''
  let stderr = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000)
  const code = await new Promise<number | null>(resolve => child.once('close', c => resolve(c)))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

const work = tempDir('tarball')
const appDir = path.join(work, 'app')
let packed: { filename: string, files: Array<{ path: string }> }
let install: Ran
let redis: OwnRedis

t.before(async () => {
  const pack = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: ROOT })
  if (pack.code !== 0) throw new Error(`npm pack failed: ${pack.stderr}`)
  packed = (JSON.parse(pack.stdout) as Array<typeof packed>)[0]
  mkdirSync(appDir)
  writeFileSync(path.join(appDir, 'package.json'), JSON.stringify({ name: 'an-app', private: true, type: 'module' }, null, 2))
  // What a user adds beside tokengate: Fastify (the peer dependency), their own ioredis (6, the current
  // major; 5 too, under another name, for the types), and Node's types for their TypeScript. The versions this repository tests with, so the npm
  // cache that `npm ci` filled serves them.
  install = await run('npm', [
    'install', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund',
    path.join(work, packed.filename), `fastify@${installed('fastify')}`, `ioredis@${installed('ioredis')}`, `ioredis5@npm:ioredis@${installed('ioredis5')}`, `@types/node@${installed('@types/node')}`
  ], { cwd: appDir, timeoutMs: 180_000 })
  if (install.code !== 0) throw new Error(`npm install of the tarball failed: ${install.stderr}`)
  redis = await startOwnRedis()
})
t.teardown(async () => { await redis?.stop() })

t.test('the tarball holds dist/, LICENSE, README.md with the docs/*.md it links to, and package.json, and nothing else', async t => {
  const paths = packed.files.map(f => f.path)
  t.same(paths.filter(p => !/^(?:package\.json|README\.md|LICENSE|docs\/[\w-]+\.md|dist\/.+)$/.test(p)), [], 'no file outside those')
  for (const file of DOCS.keys()) t.ok(paths.includes(file), `${file} is in it (the README links to it)`)
  t.same(paths.filter(p => /(?:^|\/)(?:test|bench|\.scratch|\.bench)\/|\.orig$|\.rej$|~$|(?<!\.d)\.ts$|\.tsbuildinfo$/.test(p)), [], 'no test, bench, patch leftover or TypeScript source')
  for (const entry of ['dist/plugin/index.js', 'dist/plugin/index.d.ts', 'dist/gateway/index.js', 'dist/gateway/server.js', 'dist/client/index.js', 'dist/plugin/store/lua/rotate.lua']) {
    t.ok(paths.includes(entry), `${entry} is in it`)
  }
})

t.test('every source map in the tarball carries the sources it points at', async t => {
  const dist = path.join(appDir, 'node_modules', 'tokengate', 'dist')
  const maps = readdirSync(dist, { recursive: true, encoding: 'utf8' }).filter(f => f.endsWith('.map'))
  t.ok(maps.length > 0, `${maps.length} maps`)
  const bare: string[] = []
  for (const file of maps) {
    const map = JSON.parse(readFileSync(path.join(dist, file), 'utf8')) as { sources: string[], sourcesContent?: Array<string | null> }
    map.sources.forEach((source, i) => {
      const carried = typeof map.sourcesContent?.[i] === 'string' && map.sourcesContent[i] !== ''
      if (!carried && !existsSync(path.resolve(dist, path.dirname(file), source))) bare.push(`${file} → ${source}`)
    })
  }
  t.same(bare, [], 'no map names a source that is neither carried nor shipped')
})

t.test('the install: production dependencies only, one ioredis, no install script of its own', async t => {
  const modules = path.join(appDir, 'node_modules')
  for (const dev of ['typescript', 'tap', 'tsx', '@types/ws', 'dpop', 'playwright-core']) t.notOk(existsSync(path.join(modules, dev)), `no ${dev}`)
  t.equal(installed('ioredis').split('.')[0], '6', 'the repository tests with ioredis 6')
  t.match(JSON.parse(readFileSync(path.join(modules, 'ioredis', 'package.json'), 'utf8')), { version: /^6\./ }, "the app's ioredis is 6")
  t.notOk(existsSync(path.join(modules, 'tokengate', 'node_modules', 'ioredis')), 'tokengate uses the same copy (no second ioredis)')
  // npm 11 lists the `prepare` script of a package installed from a tarball (or git) as "not yet covered by
  // allowScripts", although npm never runs it for a tarball (dist/ is in it already). Nothing else may be
  // listed: no install script runs anywhere in what a user installs.
  const listed = install.stderr.split('\n').filter(l => /^npm warn install-scripts {3}\S/.test(l)).map(l => l.replace(/^npm warn install-scripts {3}/, ''))
  t.ok(listed.every(l => /^tokengate@[\d.]+ \(prepare: npm run build\)$/.test(l)), `only tokengate's prepare is listed (${JSON.stringify(listed)})`)
})

t.test('import tokengate, tokengate/gateway, tokengate/client', async t => {
  const code = `
    const plugin = await import('tokengate')
    const gateway = await import('tokengate/gateway')
    const client = await import('tokengate/client')
    const { default: pkg } = await import('tokengate/package.json', { with: { type: 'json' } })
    console.log(JSON.stringify({ plugin: typeof plugin.default, authOf: typeof plugin.authOf, buildGateway: typeof gateway.buildGateway, hashPassword: typeof gateway.hashPassword, createClient: typeof client.createClient, version: pkg.version }))`
  const ran = await run(process.execPath, ['--input-type=module', '-e', code], { cwd: appDir })
  t.equal(ran.code, 0, `node exits 0 (${ran.stderr})`)
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }
  t.same(JSON.parse(ran.stdout), { plugin: 'function', authOf: 'function', buildGateway: 'function', hashPassword: 'function', createClient: 'function', version: pkg.version })
})

t.test("the README's Usage app, as written, on the installed package", async t => {
  const app = path.join(appDir, 'app.mjs')
  writeFileSync(app, readmeBlock('usage'))
  const port = await freePort()
  const env = userEnv({ TOKENGATE_SECRET: 'a'.repeat(64), REDIS_URL: redis.url, PORT: String(port) })
  const proc = await spawnDist(path.relative(DIST, app), [], env, /Server listening/, { cwd: appDir })
  t.teardown(() => { proc.child.kill('SIGKILL') })
  checkUsageSteps(t, await runUsageSteps(port))
})

t.test("the installed bin: keygen, hash-password, then the README's gateway quick start until /readyz is 200 and a proxied request", async t => {
  const bin = path.join(appDir, 'node_modules', '.bin', 'tokengate')
  const version = await run(bin, ['--version'], { cwd: appDir })
  t.equal(version.code, 0, `tokengate --version (${version.stderr})`)
  const secret = (await run(bin, ['keygen'], { cwd: appDir })).stdout.trim()
  t.match(secret, /^[0-9a-f]{128}$/, 'keygen prints a 64-byte hex secret')
  const hash = (await run(bin, ['hash-password', 'wonderland'], { cwd: appDir })).stdout.trim()
  t.match(hash, /^scrypt\$/, 'hash-password prints a scrypt hash')
  writeFileSync(path.join(appDir, 'users.json'), JSON.stringify([{ sub: 'alice', roles: ['user'], passwordHash: hash }]))
  // The service behind the gateway (the quick start's "service of yours on port 3000"), on a free port.
  const seen: Array<{ url?: string, user?: string | string[], roles?: string | string[], session?: string | string[] }> = []
  const service = createServer((req, res) => {
    seen.push({ url: req.url, user: req.headers['x-user-id'], roles: req.headers['x-user-roles'], session: req.headers['x-session-id'] })
    res.setHeader('content-type', 'application/json')
    res.end('{"orders":[]}')
  })
  await new Promise<void>(resolve => service.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { service.close() })
  const config = readmeBlock('gateway-config')
  t.ok(config.includes('http://127.0.0.1:3000'), 'the quick start proxies to port 3000')
  writeFileSync(path.join(appDir, 'gateway.json'), config.replace('http://127.0.0.1:3000', `http://127.0.0.1:${(service.address() as AddressInfo).port}`))
  const port = await freePort()
  const child = track(spawn(bin, ['--config', 'gateway.json'], { cwd: appDir, env: userEnv({ TOKENGATE_SECRET: secret, PORT: String(port), REDIS_URL: redis.url }), stdio: ['ignore', 'pipe', 'pipe'] }))
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  child.stdout.resume()
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  t.teardown(() => { child.kill('SIGKILL') })
  const base = `http://127.0.0.1:${port}`
  let ready = 0
  for (let i = 0; i < 300 && ready !== 200 && child.exitCode === null; i++) {
    ready = await fetch(`${base}/readyz`).then(r => r.status, () => 0)
    if (ready !== 200) await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.equal(ready, 200, `GET /readyz answers 200 (${stderr})`)
  const login = await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: 'wonderland' }) })
  t.equal(login.status, 200, 'a user of the users file logs in')
  const pair = await login.json() as { accessToken: string, refreshToken: string }
  t.match(pair, { accessToken: /^[\w-]+\.[\w-]+\.[\w-]+$/, refreshToken: /^tgr2\./ })
  const anonymous = await fetch(`${base}/api/orders`)
  t.equal(anonymous.status, 401, 'without a token: 401')
  t.same(seen, [], 'and the service saw nothing')
  const orders = await fetch(`${base}/api/orders`, { headers: { authorization: `Bearer ${pair.accessToken}` } })
  t.equal(orders.status, 200, 'with the access token: 200')
  t.same(await orders.json(), { orders: [] }, "the service's answer")
  t.match(seen, [{ url: '/api/orders', user: 'alice', roles: 'user', session: /^\S+$/ }], 'the service got the request with x-user-id, x-user-roles and x-session-id')
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'SIGTERM: it drains and exits 0')
})

t.test("the README's page without a bundler: tokengate/client served from the installed package, in Chromium", { skip: noBrowser }, async t => {
  const usage = readmeBlock('usage')
  const listen = usage.indexOf('await app.listen(')
  t.ok(listen > 0, 'the Usage app has app.listen')
  const app = path.join(appDir, 'page-app.mjs')
  writeFileSync(app, usage.slice(0, listen) + readmeBlock('client-serve') + '\n' + usage.slice(listen))
  writeFileSync(path.join(appDir, 'index.html'), readmeBlock('client-page'))
  const port = await freePort()
  const proc = await spawnDist(path.relative(DIST, app), [], userEnv({ TOKENGATE_SECRET: 'c'.repeat(64), REDIS_URL: redis.url, PORT: String(port) }), /Server listening/, { cwd: appDir })
  t.teardown(() => { proc.child.kill('SIGKILL') })

  const browser = await launchBrowser(t)
  const page = await browser.newPage()
  const problems: string[] = []
  page.on('pageerror', err => problems.push(err.message))
  page.on('console', msg => { if (msg.type() === 'error') problems.push(msg.text()) })
  const served = page.waitForResponse(r => new URL(r.url()).pathname === '/tokengate-client.js')
  await page.goto(`http://localhost:${port}/`)
  const module = await served
  t.equal(module.status(), 200, 'the page loads /tokengate-client.js')
  t.ok((await module.body()).equals(readFileSync(path.join(appDir, 'node_modules', 'tokengate', 'dist', 'client', 'index.js'))),
    'and it is the installed node_modules/tokengate/dist/client/index.js')
  await page.fill('input[name=username]', 'alice')
  await page.fill('input[name=password]', 'wonderland')
  await page.click('button')
  await page.waitForFunction(() => (globalThis as any).document.querySelector('output').textContent !== '')
  t.same(JSON.parse(await page.textContent('output') ?? ''), { user: 'u-alice' }, 'logged in through the client, the page shows GET /orders')
  t.same(problems, [], 'no error in the page')
})

t.test('a strict TypeScript app against the shipped types (skipLibCheck: false), with its own ioredis 6 instance (and 5 for the types)', async t => {
  writeFileSync(path.join(appDir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { strict: true, skipLibCheck: false, target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', outDir: 'out', types: ['node'] },
    files: ['main.ts']
  }))
  writeFileSync(path.join(appDir, 'main.ts'), `
import Fastify from 'fastify'
import { Cluster, Redis } from 'ioredis'
import { Cluster as Cluster5, Redis as Redis5 } from 'ioredis5'
import tokengate, { authOf, type AuthInfo, type TokengateOptions } from 'tokengate'
import { buildGateway, hashPassword, type GatewayConfig } from 'tokengate/gateway'
import { createClient, type Client, type ClientOptions } from 'tokengate/client'

const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379')
const options: TokengateOptions = {
  secret: process.env.TOKENGATE_SECRET,
  redis,
  keyPrefix: 'ts',
  routes: { verifyCredentials: async () => ({ sub: 'u-ts', roles: ['user'] }) }
}
const app = Fastify()
await app.register(tokengate, options)
app.get('/me', { config: { auth: { roles: ['user'] } } }, async (request) => {
  const who: AuthInfo = authOf(request)
  return { user: who.userId }
})
await app.ready()
const pair = await app.tokengate.issue({ sub: 'u-ts', roles: ['user'] })
const me = await app.inject({ url: '/me', headers: { authorization: 'Bearer ' + pair.accessToken } })
const sessions = await app.tokengate.listSessions('u-ts')
await app.close()
const stillYours = redis.status
await redis.quit()

// Types only: a Cluster is accepted too, and ioredis 5's Redis and Cluster; the gateway and the client are typed.
const others: Array<TokengateOptions['redis']> = [
  new Cluster([{ host: '127.0.0.1', port: 7000 }], { lazyConnect: true }),
  new Redis5({ lazyConnect: true }),
  new Cluster5([{ host: '127.0.0.1', port: 7000 }], { lazyConnect: true })
]
for (const other of others) if (typeof other === 'object') other.disconnect()
const config: GatewayConfig | undefined = undefined
const build: typeof buildGateway = buildGateway
const hash: Promise<string> = hashPassword('x')
const clientOptions: ClientOptions = {}
const make: (o?: ClientOptions) => Client = createClient
void [config, build, hash, clientOptions, make]

console.log(JSON.stringify({ status: me.statusCode, body: me.json(), sessions: sessions.length, stillYours }))
`)
  const tsc = await run(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: appDir })
  t.equal(tsc.code, 0, `tsc compiles it with no error\n${tsc.stdout}${tsc.stderr}`)
  if (tsc.code !== 0) return
  const ran = await run(process.execPath, ['out/main.js'], { cwd: appDir, env: userEnv({ REDIS_URL: redis.url, TOKENGATE_SECRET: 'b'.repeat(64) }) })
  t.equal(ran.code, 0, `it runs (${ran.stderr})`)
  t.same(JSON.parse(ran.stdout || '{}'), { status: 200, body: { user: 'u-ts' }, sessions: 1, stillYours: 'ready' },
    "the user's ioredis 6 instance serves the sessions, and stays open (theirs) after app.close()")
})
