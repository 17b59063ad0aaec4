// The Dockerfile's steps, run without a Docker engine: the test reads the Dockerfile and carries out its
// instructions itself (each stage a temp dir standing for the image's root; COPY from the build context
// minus .dockerignore or from the build stage; RUN through sh in the WORKDIR, with the stage's ENV), then
// starts the final stage's ENTRYPOINT + CMD as the image would, against a Redis of the test's own. The
// Dockerfile is the one source of truth: an instruction the test cannot carry out fails the test, so the
// two cannot drift apart silently. What a Docker build does differently: the npm cache is preferred
// (npm_config_prefer_offline), the machine's Node runs the steps (the image has Node 24), and USER is not
// switched.
import { spawn } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readFileSync, renameSync, statSync } from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { freePort, startOwnRedis } from '../helpers/redis.js'
import { DIST, ROOT, childEnv, killChildren, spawnDist, tempDir, track } from '../helpers/spawn.js'

t.setTimeout(600_000) // npm ci installs every dev dependency and builds: a minute or more on a busy machine
t.teardown(killChildren)

interface Instruction { op: string, args: string, line: number }

/** The Dockerfile's instructions (continuation lines joined, comments dropped). */
function instructions (text: string): Instruction[] {
  const out: Instruction[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const start = i + 1
    let line = lines[i]
    while (line.endsWith('\\') && i + 1 < lines.length) line = line.slice(0, -1) + ' ' + lines[++i]
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line)
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue
    if (m === null) throw new Error(`Dockerfile line ${start}: cannot read ${JSON.stringify(line)}`)
    out.push({ op: m[1].toUpperCase(), args: m[2].trim(), line: start })
  }
  return out
}

/** .dockerignore as a predicate on paths relative to the context (Go filepath.Match patterns, `**` too). */
function dockerignore (text: string): (rel: string) => boolean {
  const patterns = text.split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('#')).map(p => {
    if (p.startsWith('!')) throw new Error(`.dockerignore exceptions (${p}) are not carried out by this test`)
    const re = p.replace(/^\/+|\/+$/g, '').split(/(\*\*|\*|\?)/).map(part =>
      part === '**' ? '.*' : part === '*' ? '[^/]*' : part === '?' ? '[^/]' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&')).join('')
    return new RegExp(`^${re}(?:/.*)?$`)
  })
  return rel => patterns.some(re => re.test(rel))
}

/** The exec form (a JSON array) of ENTRYPOINT or CMD. */
function execForm (ins: Instruction): string[] {
  const parsed: unknown = JSON.parse(ins.args)
  if (!Array.isArray(parsed) || !parsed.every(a => typeof a === 'string')) throw new Error(`Dockerfile line ${ins.line}: ${ins.op} must be in exec form`)
  return parsed
}

/** The environment of the steps: none of the npm run this test may be under, none of tokengate's variables. */
function stepsEnv (extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = childEnv(extra)
  for (const k of Object.keys(env)) if (/^npm_/i.test(k) && !(k in extra)) delete env[k]
  env.PATH = `${path.dirname(process.execPath)}:${env.PATH ?? ''}`
  return env
}

async function sh (script: string, cwd: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null, output: string }> {
  const child = track(spawn('sh', ['-c', script], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] }))
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => { output += d })
  child.stderr.setEncoding('utf8').on('data', (d: string) => { output += d })
  const code = await new Promise<number | null>(resolve => child.once('close', c => resolve(c)))
  return { code, output }
}

interface Stage { name: string, root: string, workdir: string, env: Record<string, string>, entrypoint: string[], cmd: string[] }

/** Carries out the Dockerfile; returns the final stage. */
async function build (t: Test, work: string): Promise<Stage> {
  const ignored = dockerignore(readFileSync(path.join(ROOT, '.dockerignore'), 'utf8'))
  const stages: Stage[] = []
  let stage: Stage | undefined
  const inStage = (ins: Instruction): Stage => {
    if (stage === undefined) throw new Error(`Dockerfile line ${ins.line}: ${ins.op} before FROM`)
    return stage
  }
  for (const ins of instructions(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'))) {
    switch (ins.op) {
      case 'FROM': {
        const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args)
        if (m === null) throw new Error(`Dockerfile line ${ins.line}: FROM ${ins.args}`)
        t.match(m[1], /^node:/, `stage ${stages.length} starts from a Node image (${m[1]})`)
        const root = path.join(work, `stage-${stages.length}`)
        mkdirSync(root)
        stage = { name: m[2] ?? String(stages.length), root, workdir: root, env: {}, entrypoint: [], cmd: [] }
        stages.push(stage)
        break
      }
      case 'WORKDIR': {
        const s = inStage(ins)
        s.workdir = ins.args.startsWith('/') ? path.join(s.root, ins.args) : path.resolve(s.workdir, ins.args)
        mkdirSync(s.workdir, { recursive: true })
        break
      }
      case 'ENV': {
        for (const m of ins.args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) inStage(ins).env[m[1]] = m[2].replace(/^"|"$/g, '')
        break
      }
      case 'COPY': {
        const s = inStage(ins)
        const words = ins.args.split(/\s+/)
        const from = words[0].startsWith('--from=') ? stages.find(x => x.name === words.shift()!.slice('--from='.length)) : undefined
        if (words.some(w => w.startsWith('--'))) throw new Error(`Dockerfile line ${ins.line}: COPY flag not carried out by this test: ${ins.args}`)
        const destArg = words.pop()!
        const dest = path.resolve(s.workdir, destArg)
        for (const src of words) {
          const abs = from !== undefined ? path.join(from.root, src) : path.join(ROOT, src)
          if (from === undefined && (/[*?[]/.test(src) || path.relative(ROOT, abs).startsWith('..'))) throw new Error(`Dockerfile line ${ins.line}: COPY ${src} is not carried out by this test`)
          if (!existsSync(abs)) throw new Error(`Dockerfile line ${ins.line}: COPY ${src}: no such file`)
          // As Docker does: a directory's contents go into dest; a file becomes dest, or goes into it when dest
          // ends with '/' or there are several sources.
          const target = statSync(abs).isDirectory() || !(destArg.endsWith('/') || words.length > 1) ? dest : path.join(dest, path.basename(src))
          // From an earlier stage the files are moved, not copied (a second COPY of them would fail loudly).
          if (from !== undefined && !existsSync(target)) renameSync(abs, target)
          else cpSync(abs, target, { recursive: true, filter: (p: string) => from !== undefined || !ignored(path.relative(ROOT, p).split(path.sep).join('/')) })
        }
        break
      }
      case 'RUN': {
        const s = inStage(ins)
        const ran = await sh(ins.args, s.workdir, stepsEnv({ ...s.env, npm_config_prefer_offline: 'true', npm_config_audit: 'false', npm_config_fund: 'false' }))
        t.equal(ran.code, 0, `RUN ${ins.args} (line ${ins.line})`, { output: ran.output.slice(-4000) })
        if (ran.code !== 0) throw new Error(`RUN ${ins.args} failed`)
        break
      }
      case 'ENTRYPOINT': inStage(ins).entrypoint = execForm(ins); break
      case 'CMD': inStage(ins).cmd = execForm(ins); break
      case 'USER': case 'EXPOSE': case 'LABEL': inStage(ins); break
      default: throw new Error(`Dockerfile line ${ins.line}: ${ins.op} is not carried out by this test: teach test/suite/docker-steps.test.ts`)
    }
  }
  if (stage === undefined) throw new Error('the Dockerfile has no FROM')
  return stage
}

t.test('the Dockerfile, carried out: the image starts the gateway, /readyz is 200, the demo user logs in through it', async t => {
  const work = tempDir('docker')
  const image = await build(t, work)
  const app = image.workdir
  for (const dev of ['typescript', 'tap', 'tsx', 'eslint']) t.notOk(existsSync(path.join(app, 'node_modules', dev)), `the image has no ${dev} (dev dependencies pruned)`)
  t.ok(existsSync(path.join(app, 'node_modules', 'jose')), 'and has jose (a run-time dependency)')

  // The config's variables without a default are what the deployment must give (compose.test.ts checks
  // that docker-compose.yml sets them).
  const command = [...image.entrypoint, ...image.cmd]
  t.same(command.slice(0, 2), ['node', 'dist/gateway/server.js'], 'the image runs the bin')
  const configAt = command.indexOf('--config')
  const configText = readFileSync(path.join(app, command[configAt + 1]), 'utf8')
  const required = [...new Set([...configText.matchAll(/\$\{([A-Z_][A-Z0-9_]*)\}/g)].map(m => m[1]))].sort()
  t.same(required, ['CMS_URL', 'ORDERS_URL', 'REDIS_URL', 'TOKENGATE_SECRET', 'USERS_FILE'], 'the config needs these variables')

  const redis = await startOwnRedis()
  t.teardown(async () => { await redis.stop() })
  // The example upstream runs from the image too, as docker-compose.yml's orders service does.
  const upstream = await spawnDist(path.relative(DIST, path.join(app, 'dist/gateway/demo.js')), ['--upstream-only', '--name', 'orders', '--port', '0'],
    stepsEnv(image.env), /listening on [^:]+:(\d+)/, { cwd: app })
  const port = await freePort()
  const env = stepsEnv({
    ...image.env,
    REDIS_URL: redis.url,
    TOKENGATE_SECRET: 'c'.repeat(128),
    USERS_FILE: path.join(ROOT, 'examples', 'users.json'), // compose mounts this file there
    ORDERS_URL: `http://127.0.0.1:${upstream.match[1]}`,
    CMS_URL: `http://127.0.0.1:${upstream.match[1]}`,
    LISTEN_HOST: '127.0.0.1',
    PORT: String(port)
  })
  t.equal(command[0], 'node')
  const gateway = await spawnDist(path.relative(DIST, path.join(app, command[1])), command.slice(2), env, /Server listening/, { cwd: app })
  const base = `http://127.0.0.1:${port}`
  let ready = 0
  for (let i = 0; i < 300 && ready !== 200 && gateway.child.exitCode === null; i++) {
    ready = await fetch(`${base}/readyz`).then(r => r.status, () => 0)
    if (ready !== 200) await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.equal(ready, 200, `GET /readyz answers 200 (${gateway.stderr()})`)
  const login = await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'demo', password: 'demo-password' }) })
  t.equal(login.status, 200, 'the demo user of the mounted users file logs in')
  const { accessToken } = await login.json() as { accessToken: string }
  const orders = await fetch(`${base}/api/orders/1`, { headers: { authorization: `Bearer ${accessToken}` } })
  t.equal(orders.status, 200, 'a protected route reaches the upstream')
  t.match(await orders.json(), { user: 'demo' }, 'with the identity forwarded')
  t.equal((await fetch(`${base}/api/orders/1`)).status, 401, 'and without a token it is refused (control)')
  gateway.child.kill('SIGTERM')
  t.same(await gateway.exited, { code: 0, signal: null }, 'SIGTERM (docker stop): it drains and exits 0')
  upstream.child.kill('SIGTERM')
  await upstream.exited
})
