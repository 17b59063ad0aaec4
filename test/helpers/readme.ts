// The documentation (README.md and the pages under docs/ it links to) and its runnable blocks, for the tests
// that check it and run it as written: in the repository (test/suite/readme.test.ts and others) and from the
// installed tarball (test/suite/tarball.test.ts).
import { spawn } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import path from 'node:path'
import type { Test } from 'tap'
import { ROOT, track } from './spawn.js'

/** README.md, then every docs/*.md, by path relative to the repository. */
export const DOCS: ReadonlyMap<string, string> = new Map([
  'README.md',
  ...readdirSync(path.join(ROOT, 'docs')).filter(f => f.endsWith('.md')).sort().map(f => `docs/${f}`)
].map(f => [f, readFileSync(path.join(ROOT, f), 'utf8')]))

export const README = DOCS.get('README.md')!

/** The text of one documentation file (`docs/errors.md`); throws when there is none. */
export function doc (file: string): string {
  const text = DOCS.get(file)
  if (text === undefined) throw new Error(`no documentation file ${file}`)
  return text
}

/** The files (README.md, docs/*.md) that hold `marker`. */
export function filesWith (marker: string): string[] {
  return [...DOCS].filter(([, text]) => text.includes(marker)).map(([file]) => file)
}

/** The fenced code block right after a `<!-- readme:NAME -->` marker, in the one documentation file that has it. */
export function readmeBlock (name: string): string {
  const marker = `<!-- readme:${name} -->`
  const files = filesWith(marker)
  if (files.length !== 1) throw new Error(`${marker} is in ${files.length === 0 ? 'no documentation file' : files.join(' and ')}: it must be in exactly one`)
  const text = doc(files[0])
  const m = /```\w*\n([\s\S]*?)```/.exec(text.slice(text.indexOf(marker)))
  if (m === null) throw new Error(`no code block after readme:${name} in ${files[0]}`)
  return m[1]
}

export interface StepsRun {
  status: number | null
  stderr: string
  /** What each line of the block printed, trimmed, by line number. */
  out: string[]
}

/** Runs the `usage-steps` block (bash, curl) against the Usage app listening on 127.0.0.1:`port`. */
export async function runUsageSteps (port: number): Promise<StepsRun> {
  const steps = readmeBlock('usage-steps').trim().split('\n')
  const script = steps.map((line, i) => `printf '\\n@@%s\\n' ${i}\n${line.replaceAll('localhost:3000', `127.0.0.1:${port}`)}`).join('\n')
  // `node` in the steps is the Node running the tests.
  const env = { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}` }
  const child = track(spawn('bash', ['-c', script], { env, stdio: ['ignore', 'pipe', 'pipe'] }))
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const status = await new Promise<number | null>(resolve => child.once('close', code => resolve(code)))
  clearTimeout(timer)
  const out: string[] = []
  for (const part of stdout.split('\n@@').slice(1)) {
    const nl = part.indexOf('\n')
    out[Number(part.slice(0, nl))] = part.slice(nl + 1).trim()
  }
  return { status, stderr, out }
}

/** The README's promises about what the Usage steps print, checked on a run. */
export function checkUsageSteps (t: Test, ran: StepsRun): void {
  const json = (text: string | undefined): any => { try { return JSON.parse(text ?? '') } catch { return { unparsed: text } } }
  const { out } = ran
  t.equal(ran.status, 0, `the steps run (${ran.stderr})`)
  t.same(out.slice(0, 3), ['', '', ''], 'login and keeping the tokens print nothing')
  t.same(json(out[3]), { user: 'u-alice' }, 'GET /orders with the access token')
  t.match(out[4], /^HTTP\/1\.1 200 /, 'only the refresh token: the refresh hook lets the request through')
  t.match(out[4], /^x-access-token: [\w-]+\.[\w-]+\.[\w-]+\r?$/m, 'with a new access token')
  t.match(out[4], /^x-refresh-token: tgr2\./m, 'and the rotated refresh token')
  t.match(json(out[5]), { statusCode: 403, code: 'TOKENGATE_FORBIDDEN' }, '/admin is 403 for alice')
  t.equal(out[6], '204', 'logout: 204')
  t.match(json(out[7]), { statusCode: 401, code: 'TOKENGATE_TOKEN_REVOKED' }, 'then the access token is refused')
}
