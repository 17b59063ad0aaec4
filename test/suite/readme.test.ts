// The README is the contract and must be true: its error tables match plugin/errors.ts, its options
// table lists every option of the schema, it points at nothing outside the repository, and its Usage
// section runs as written (the app on a Redis of the test's own, then the shell steps).
import { spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import * as errors from '../../plugin/errors.js'
import { OptionsSchema } from '../../plugin/index.js'
import { SECRET } from '../helpers/app.js'
import { freePort, startOwnRedis } from '../helpers/redis.js'
import { ROOT, childEnv, killChildren, spawnDist, tempDir } from '../helpers/spawn.js'

const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8')
t.teardown(killChildren)

/** The fenced code block right after a `<!-- readme:NAME -->` marker. */
function block (name: string): string {
  const at = readme.indexOf(`<!-- readme:${name} -->`)
  if (at < 0) throw new Error(`README has no <!-- readme:${name} --> marker`)
  const m = /```\w*\n([\s\S]*?)```/.exec(readme.slice(at))
  if (m === null) throw new Error(`no code block after readme:${name}`)
  return m[1]
}

t.test('the error tables and plugin/errors.ts agree: every code, its status, nothing more', async t => {
  const fromCode = new Map<string, number>()
  for (const value of Object.values(errors)) {
    if (typeof value !== 'function' || !/Error$/.test(value.name)) continue
    const e = new (value as new () => { code?: string, statusCode?: number })()
    if (typeof e.code === 'string' && e.code.startsWith('TOKENGATE_')) fromCode.set(e.code, e.statusCode ?? 0)
  }
  t.ok(fromCode.size >= 16, `errors.ts defines ${fromCode.size} codes`)
  const tables = readme.slice(readme.indexOf('<!-- readme:errors -->'), readme.indexOf('## Redis keys'))
  const fromReadme = new Map<string, number>()
  for (const m of tables.matchAll(/^\| `((?:TOKENGATE|FST)_[A-Z_]+)` \| (\d{3}) \|/gm)) fromReadme.set(m[1], Number(m[2]))
  for (const [code, status] of fromCode) t.equal(fromReadme.get(code), status, `${code}: ${status} in the README`)
  const documented = [...fromReadme.keys()].filter(c => c.startsWith('TOKENGATE_'))
  t.same(documented.filter(c => !fromCode.has(c)), [], 'the README lists no TOKENGATE_ code errors.ts lacks')
  for (const fst of ['FST_ERR_VALIDATION', 'FST_ERR_CTP_INVALID_JSON_BODY', 'FST_ERR_CTP_BODY_TOO_LARGE', 'FST_ERR_NOT_FOUND']) {
    t.ok(fromReadme.has(fst), `${fst} is listed`)
  }
})

t.test('the options table lists every option of the schema', async t => {
  const table = readme.slice(readme.indexOf('## Options'), readme.indexOf('## API'))
  for (const name of Object.keys(OptionsSchema.properties)) t.match(table, new RegExp('`' + name + '`'), `${name} is documented`)
})

t.test('the README stands alone: no pointer outside the repository', async t => {
  t.notMatch(readme, /\.\.\/shared|DESIGN\.md|shared folder/, 'no reference to files outside the repository')
  for (const m of readme.matchAll(/`((?:plugin|gateway|test|docker|examples|bench)\/[\w./-]+\.(?:ts|json|lua))`/g)) {
    t.ok(spawnSync('test', ['-e', path.join(ROOT, m[1])]).status === 0, `${m[1]} exists`)
  }
})

t.test('Usage runs as written: the app, then the shell steps', async t => {
  const redis = await startOwnRedis()
  t.teardown(async () => { await redis.stop() })
  // Inside the package (.scratch/ is git-ignored), so that `import 'tokengate'` resolves to this package (self-reference), as it
  // resolves to the installed package in a user's app.
  mkdirSync(path.join(ROOT, '.scratch'), { recursive: true })
  const dir = tempDir('readme', path.join(ROOT, '.scratch'))
  const app = path.join(dir, 'app.mjs')
  writeFileSync(app, block('usage'))
  const port = await freePort()
  await spawnDist('../' + path.relative(ROOT, app), [], childEnv({ TOKENGATE_SECRET: SECRET, REDIS_URL: redis.url, PORT: String(port) }), /Server listening/)

  const steps = block('usage-steps').trim().split('\n')
  const script = steps.map((line, i) => `printf '\\n@@%s\\n' ${i}\n${line.replaceAll('localhost:3000', `127.0.0.1:${port}`)}`).join('\n')
  const ran = spawnSync('bash', ['-c', script], { env: { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}` }, encoding: 'utf8', timeout: 30_000 })
  t.equal(ran.status, 0, `the steps run (${ran.stderr})`)
  const out: string[] = []
  for (const part of ran.stdout.split('\n@@').slice(1)) {
    const nl = part.indexOf('\n')
    out[Number(part.slice(0, nl))] = part.slice(nl + 1).trim()
  }
  const json = (text: string | undefined): any => { try { return JSON.parse(text ?? '') } catch { return { unparsed: text } } }
  t.same(out.slice(0, 3), ['', '', ''], 'login and keeping the tokens print nothing')
  t.same(json(out[3]), { user: 'u-alice' }, 'GET /orders with the access token')
  t.match(out[4], /^HTTP\/1\.1 200 /, 'only the refresh token: the refresh hook lets the request through')
  t.match(out[4], /^x-access-token: [\w-]+\.[\w-]+\.[\w-]+\r?$/m, 'with a new access token')
  t.match(out[4], /^x-refresh-token: tgr2\./m, 'and the rotated refresh token')
  t.match(json(out[5]), { statusCode: 403, code: 'TOKENGATE_FORBIDDEN' }, '/admin is 403 for alice')
  t.equal(out[6], '204', 'logout: 204')
  t.match(json(out[7]), { statusCode: 401, code: 'TOKENGATE_TOKEN_REVOKED' }, 'then the access token is refused')
})
