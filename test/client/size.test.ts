// The client as it ships (dist/client/index.js, built by `npm run build`) stays small and dependency-free: at
// most 8 KB minified and gzipped, DPoP included (the figure is printed for the README), with no import of
// anything (neither the server nor an npm package), and it loads in Node where browser globals (localStorage,
// indexedDB, document, window) are absent.
import { readFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { transformSync } from 'esbuild'
import t from 'tap'
import { DIST } from '../helpers/spawn.js'

const BUDGET = 8192
const file = `${DIST}/client/index.js`

t.test('dist/client/index.js is at most 8 KB min+gzip', async t => {
  const source = readFileSync(file, 'utf8')
  const { code } = transformSync(source, { minify: true, format: 'esm', target: 'es2022', loader: 'js' })
  const gzipped = gzipSync(code, { level: 9 }).length
  t.comment(`client size: ${source.length} B compiled, ${code.length} B minified, ${gzipped} B min+gzip (budget ${BUDGET} B)`)
  t.ok(gzipped <= BUDGET, `the client is ${gzipped} B min+gzip, within the ${BUDGET} B budget`)
})

t.test('the client imports nothing and loads without browser globals', async t => {
  const { code } = transformSync(readFileSync(file, 'utf8'), { minify: true, format: 'esm', loader: 'js' })
  t.notMatch(code, /\bimport\s*[\w{*"'(]|\brequire\(/, 'the built client has no import or require: no dependency, nothing of the server')
  t.equal(typeof (globalThis as Record<string, unknown>).localStorage, 'undefined', '(this Node has no localStorage)')
  const mod = await import(file) as typeof import('../../client/index.js')
  t.same(Object.keys(mod).sort(), ['AuthError', 'createClient'], 'it exports createClient and AuthError')
  const client = mod.createClient({ baseUrl: 'http://127.0.0.1:9', dpop: true })
  t.equal(client.signedIn, false, 'a new client in Node (storage falls back to memory) starts signed out')
  client.close()
})
