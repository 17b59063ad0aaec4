// What a user installs loads: every package the built dist/ imports (at run time in *.js, for the types
// in *.d.ts) is one the package declares in `dependencies` or `peerDependencies`, never a devDependency
// that only this repository has. TypeScript's own scanner lists the imports (static, dynamic, `import()`
// types, `/// <reference types>`), so no import form slips past a regular expression.
import { readFileSync, readdirSync } from 'node:fs'
import { builtinModules } from 'node:module'
import path from 'node:path'
import t from 'tap'
import ts from 'typescript'
import { DIST, ROOT } from '../helpers/spawn.js'

const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as Record<string, Record<string, string> | undefined>
const declared = new Set([...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.peerDependencies ?? {})])
const builtins = new Set(builtinModules)

function files (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter(e => e.isFile() && /\.(?:js|d\.ts)$/.test(e.name))
    .map(e => path.join(e.parentPath, e.name))
}

/** The package a specifier names (`@scope/name/sub` → `@scope/name`), or null for a path, a URL or a Node builtin. */
function packageOf (specifier: string): string | null {
  if (specifier.startsWith('.') || specifier.startsWith('/') || /^[a-z][a-z\d+.-]*:/i.test(specifier)) return null
  const name = specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]
  return builtins.has(name) ? null : name
}

/** Every bare import of a built file. */
function bareImports (file: string): string[] {
  const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true)
  const specifiers = [...info.importedFiles, ...info.typeReferenceDirectives].map(f => f.fileName)
  // `/// <reference types="node" />` stands for Node's own modules, as a `node:` import does.
  return specifiers.map(packageOf).filter((p): p is string => p !== null && !(p === 'node' && file.endsWith('.d.ts')))
}

t.test('the scanner sees every import form, and what is bare', async t => {
  t.equal(packageOf('node:crypto'), null, 'node: builtins are not packages')
  t.equal(packageOf('events'), null, 'neither are builtins without the prefix')
  t.equal(packageOf('./store/redis.js'), null, 'relative paths are not packages')
  t.equal(packageOf('/demo/client.js'), null, "the demo page's absolute URL is not a package")
  t.equal(packageOf('@fastify/jwt'), '@fastify/jwt')
  t.equal(packageOf('@sinclair/typebox/value'), '@sinclair/typebox', 'a subpath names its package')
  const src = "import a from 'a'; export { b } from 'b'; const c = await import('c'); export type D = import('d').D\n"
  t.same(ts.preProcessFile(src, true, true).importedFiles.map(f => f.fileName), ['a', 'b', 'c', 'd'], 'static, re-export, dynamic and type imports')
})

t.test('every package dist/ imports is a dependency or a peer dependency', async t => {
  const all = files(DIST)
  t.ok(all.some(f => f.endsWith('.d.ts')) && all.some(f => f.endsWith('.js')), `dist/ holds built code and types (${all.length} files)`)
  const missing = new Map<string, string[]>()
  for (const file of all) {
    for (const name of bareImports(file)) {
      if (declared.has(name)) continue
      const list = missing.get(name) ?? []
      missing.set(name, [...list, path.relative(ROOT, file)])
    }
  }
  t.same(Object.fromEntries(missing), {}, 'no import of a package the user would not have (package → the files importing it)')
  // Control: the scan does find what dist/ imports at run time.
  const seen = new Set(all.flatMap(bareImports))
  for (const name of ['fastify', 'ioredis', '@fastify/jwt']) t.ok(seen.has(name), `${name} is seen`)
})

t.test('the browser client imports no package at all', async t => {
  const client = files(path.join(DIST, 'client'))
  t.ok(client.length > 0, 'dist/client is built')
  t.same(client.flatMap(f => bareImports(f).map(p => `${path.basename(f)}: ${p}`)), [], 'dist/client/* import only each other')
})
