// What a reader of the repository trips over: references to files it does not hold, shorthand that only
// the project's history explains, and modules that import each other in a circle.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { ROOT } from '../helpers/spawn.js'

const tracked = execFileSync('git', ['ls-files', '-co', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' })
  .split('\n')
  .filter(f => /\.(ts|js|mjs|md|lua|html|css|json)$/.test(f) && !f.startsWith('node_modules/') && !f.startsWith('dist/') && f !== 'package-lock.json')
const read = (f: string): string => { try { return readFileSync(path.join(ROOT, f), 'utf8') } catch { return '' } }

t.test('no file cites the design notes kept outside the repository', async t => {
  const name = ['DESIGN', 'md'].join('.')
  const citing = tracked.filter(f => read(f).includes(name))
  t.same(citing, [], `files naming ${name}`)
})

t.test('no "origin step" shorthand: what it means is said in plain words', async t => {
  const shorthand = /origin(?:'s)? steps? \d/i
  const using = tracked.filter(f => shorthand.test(read(f)))
  t.same(using, [], 'files using the shorthand')
})

/** Whether an import or export statement is erased at run time (`import type`, or only `type` names). */
const typeOnly = (statement: string): boolean => {
  if (/^(?:import|export)\s+type\s/.test(statement)) return true
  const names = /\{([^}]*)\}/.exec(statement)?.[1].split(',').map(n => n.trim()).filter(n => n !== '')
  return names !== undefined && names.length > 0 && !/^import\s+\w/.test(statement.replace(/^import\s+type\b/, '')) && names.every(n => n.startsWith('type '))
}

t.test('no import circle (at run time) among the modules of plugin/, gateway/ and client/', async t => {
  const modules = tracked.filter(f => /^(plugin|gateway|client)\/.*\.ts$/.test(f))
  const edges = new Map<string, string[]>()
  for (const f of modules) {
    const deps: string[] = []
    for (const m of read(f).matchAll(/^(?:import|export)\s[^'"]*?from\s+'(\.{1,2}\/[^']+)'/gm)) {
      if (typeOnly(m[0])) continue
      deps.push(path.posix.normalize(path.posix.join(path.posix.dirname(f), m[1].replace(/\.js$/, '.ts'))))
    }
    edges.set(f, deps.filter(d => modules.includes(d)))
  }
  const circles: string[] = []
  const state = new Map<string, 'open' | 'done'>()
  const visit = (f: string, trail: string[]): void => {
    if (state.get(f) === 'done') return
    if (state.get(f) === 'open') { circles.push([...trail.slice(trail.indexOf(f)), f].join(' → ')); return }
    state.set(f, 'open')
    for (const d of edges.get(f) ?? []) visit(d, [...trail, f])
    state.set(f, 'done')
  }
  for (const f of modules) visit(f, [])
  t.same(circles, [], 'import circles')
})
