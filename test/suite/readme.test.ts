// The documentation is the contract and must be true: README.md and the pages under docs/ it links to. Its
// error tables match plugin/errors.ts, its options table lists every option of the schema, it points at
// nothing outside the repository, every file and link it names exists (the headings a link names too), the
// bench output lives in the one file `npm run bench` rewrites, the gateway quick start's config is a valid
// config, and the Usage section runs as written (the app on a Redis of the test's own, then the shell steps).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { parseConfig } from '../../gateway/index.js'
import * as errors from '../../plugin/errors.js'
import { OptionsSchema } from '../../plugin/index.js'
import { SECRET } from '../helpers/app.js'
import { DOCS, README, checkUsageSteps, doc, filesWith, readmeBlock, runUsageSteps } from '../helpers/readme.js'
import { freePort, startOwnRedis } from '../helpers/redis.js'
import { ROOT, childEnv, killChildren, spawnDist, tempDir } from '../helpers/spawn.js'

t.teardown(killChildren)

/** The text outside fenced code blocks (a `#` there is a comment, a `](` is code). */
const prose = (text: string): string => text.replace(/^```[\s\S]*?^```/gm, '')

/** The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces as '-', repeats numbered. */
function anchors (text: string): Set<string> {
  const seen = new Map<string, number>()
  const out = new Set<string>()
  for (const m of prose(text).matchAll(/^#{1,6} (.+)$/gm)) {
    const slug = m[1].trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-')
    const n = seen.get(slug) ?? 0
    seen.set(slug, n + 1)
    out.add(n === 0 ? slug : `${slug}-${n}`)
  }
  return out
}

t.test('the documentation is README.md and the pages under docs/ it links to', async t => {
  t.ok(DOCS.size > 1, `${DOCS.size} files: ${[...DOCS.keys()].join(', ')}`)
  for (const file of DOCS.keys()) {
    if (file === 'README.md') continue
    t.ok(README.includes(`](${file})`), `the README links to ${file}`)
  }
  for (const marker of ['usage', 'usage-steps']) t.same(filesWith(`<!-- readme:${marker} -->`), ['README.md'], `the ${marker} block is in the README itself`)
})

t.test('the error tables (docs/errors.md) and plugin/errors.ts agree: every code, its status, nothing more', async t => {
  const fromCode = new Map<string, number>()
  for (const value of Object.values(errors)) {
    if (typeof value !== 'function' || !/Error$/.test(value.name)) continue
    const e = new (value as new () => { code?: string, statusCode?: number })()
    if (typeof e.code === 'string' && e.code.startsWith('TOKENGATE_')) fromCode.set(e.code, e.statusCode ?? 0)
  }
  t.ok(fromCode.size >= 16, `errors.ts defines ${fromCode.size} codes`)
  t.same(filesWith('<!-- readme:errors -->'), ['docs/errors.md'], 'the tables are in docs/errors.md')
  const page = doc('docs/errors.md')
  const tables = page.slice(page.indexOf('<!-- readme:errors -->'))
  const fromDocs = new Map<string, number>()
  for (const m of tables.matchAll(/^\| `((?:TOKENGATE|FST)_[A-Z_]+)` \| (\d{3}) \|/gm)) fromDocs.set(m[1], Number(m[2]))
  for (const [code, status] of fromCode) t.equal(fromDocs.get(code), status, `${code}: ${status} in docs/errors.md`)
  const documented = [...fromDocs.keys()].filter(c => c.startsWith('TOKENGATE_'))
  t.same(documented.filter(c => !fromCode.has(c)), [], 'docs/errors.md lists no TOKENGATE_ code errors.ts lacks')
  for (const fst of ['FST_ERR_VALIDATION', 'FST_ERR_CTP_INVALID_JSON_BODY', 'FST_ERR_CTP_BODY_TOO_LARGE', 'FST_ERR_NOT_FOUND']) {
    t.ok(fromDocs.has(fst), `${fst} is listed`)
  }
})

t.test('the options table (docs/options.md) lists every option of the schema', async t => {
  const page = doc('docs/options.md')
  const at = page.indexOf('| option | default | meaning |')
  t.ok(at >= 0, 'docs/options.md has the options table')
  const rows = page.slice(at).split('\n\n')[0].split('\n').slice(2)
  const named = new Set(rows.flatMap(row => [...row.split('|')[1].matchAll(/`(\w+)`/g)].map(m => m[1])))
  for (const name of Object.keys(OptionsSchema.properties)) t.ok(named.has(name), `${name} has a row`)
  t.same([...named].filter(name => !(name in OptionsSchema.properties)), [], 'and no row names an option the schema lacks')
})

t.test('the documentation stands alone: no pointer outside the repository', async t => {
  for (const [file, text] of DOCS) {
    t.notMatch(text, /\.\.\/shared|DESIGN\.md|shared folder/, `${file}: no reference to files outside the repository`)
    for (const m of text.matchAll(/`((?:plugin|gateway|test|docker|examples|bench|docs)\/[\w./-]+\.(?:ts|json|lua|md|png))`/g)) {
      t.ok(existsSync(path.join(ROOT, m[1])), `${file}: ${m[1]} exists`)
    }
  }
})

t.test('every link and image of the documentation points at a file of the repository, and at a heading it has', async t => {
  let links = 0
  for (const [file, text] of DOCS) {
    for (const m of prose(text).matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1]
      if (/^[a-z][\w+.-]*:/i.test(target)) continue // a URL (https:, mailto:)
      links++
      const [where, anchor] = target.split('#') as [string, string | undefined]
      const resolved = where === '' ? file : path.posix.normalize(path.posix.join(path.posix.dirname(file), where))
      t.ok(existsSync(path.join(ROOT, resolved)), `${file}: ${target} → ${resolved} exists`)
      if (anchor !== undefined) {
        const into = DOCS.get(resolved)
        t.ok(into !== undefined && anchors(into).has(anchor), `${file}: ${resolved} has a heading #${anchor}`)
      }
    }
  }
  t.ok(links > 40, `${links} links checked`)
  // A control: the slug rule gives what GitHub gives.
  t.same([...anchors('# The browser client: `tokengate/client`\n## OAuth 2.0 endpoints\n## API\n## API\n')],
    ['the-browser-client-tokengateclient', 'oauth-20-endpoints', 'api', 'api-1'])
})

t.test('the bench output lives in exactly one file, the one `npm run bench` rewrites', async t => {
  const starts = filesWith('<!-- bench:start -->')
  t.same(starts, filesWith('<!-- bench:end -->'), 'both markers in the same file')
  t.equal(starts.length, 1, `in one file (${starts.join(', ')})`)
  const text = doc(starts[0])
  t.equal(text.split('<!-- bench:start -->').length, 2, 'once')
  t.ok(text.indexOf('<!-- bench:start -->') < text.indexOf('<!-- bench:end -->'), 'start before end')
  const run = readFileSync(path.join(ROOT, 'bench', 'run.ts'), 'utf8')
  const written = /function updateReadme[\s\S]*?path\.join\(ROOT, ([^)]*)\)/.exec(run)?.[1]
  t.ok(written, 'bench/run.ts names the file it rewrites')
  t.equal(path.posix.join(...[...written!.matchAll(/'([^']+)'/g)].map(m => m[1])), starts[0], `bench/run.ts rewrites ${starts[0]}`)
})

t.test("the gateway quick start's config is a valid config", async t => {
  const config = parseConfig(JSON.parse(readmeBlock('gateway-config')), { env: { TOKENGATE_SECRET: SECRET }, baseDir: '/app' })
  t.match(config, {
    listen: { host: '127.0.0.1', port: 8080 },
    redis: { url: 'redis://127.0.0.1:6379' },
    login: { usersFile: '/app/users.json' },
    routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:3000', auth: 'required', roles: ['user'] }]
  })
  t.equal(parseConfig(JSON.parse(readmeBlock('gateway-config')), { env: { TOKENGATE_SECRET: SECRET, PORT: '9090' } }).listen.port, 9090, 'PORT moves it')
})

t.test('Usage runs as written: the app, then the shell steps', async t => {
  const redis = await startOwnRedis()
  t.teardown(async () => { await redis.stop() })
  // Inside the package (.scratch/ is git-ignored), so that `import 'tokengate'` resolves to this package (self-reference), as it
  // resolves to the installed package in a user's app.
  mkdirSync(path.join(ROOT, '.scratch'), { recursive: true })
  const dir = tempDir('readme', path.join(ROOT, '.scratch'))
  const app = path.join(dir, 'app.mjs')
  writeFileSync(app, readmeBlock('usage'))
  const port = await freePort()
  await spawnDist('../' + path.relative(ROOT, app), [], childEnv({ TOKENGATE_SECRET: SECRET, REDIS_URL: redis.url, PORT: String(port) }), /Server listening/)
  checkUsageSteps(t, await runUsageSteps(port))
})
