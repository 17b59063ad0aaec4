// Child processes and temp dirs of a test file, cleaned up however the file ends: its teardowns, a
// failure, or tap's timeout (SIGALRM) all kill the children still running and remove the temp dirs.
// Entry points run from the built dist/ (npm test builds first), as a user runs the bin: no TypeScript
// loader in the child, so it starts in well under a second even on a loaded machine.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { onExit } from 'signal-exit'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const DIST = path.join(ROOT, 'dist')
/** The bin as a user runs it. */
export const BIN = path.join(DIST, 'gateway', 'server.js')

const children = new Set<ChildProcess>()
const dirs = new Set<string>()

function cleanup (): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  children.clear()
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
  dirs.clear()
}
onExit(cleanup, { alwaysLast: true })

/** Kills the child when this test process ends, however it ends. */
export function track<C extends ChildProcess> (child: C): C {
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

/** Kills every tracked child still running and removes the temp dirs (also runs by itself at exit). */
export function killChildren (): void {
  cleanup()
}

/** A fresh temp dir (under `parent`, default the OS temp dir), removed when this test process ends (or earlier with removeTempDir). */
export function tempDir (name: string, parent = os.tmpdir()): string {
  const dir = mkdtempSync(path.join(parent, `tokengate-${name}-`))
  dirs.add(dir)
  return dir
}

export function removeTempDir (dir: string): void {
  rmSync(dir, { recursive: true, force: true })
  dirs.delete(dir)
}

/** The environment minus tokengate's own variables, plus `extra` (undefined deletes). */
export function childEnv (extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const k of ['TOKENGATE_SECRET', 'TOKENGATE_CONFIG', 'REDIS_URL', 'PORT', 'DEMO_UPSTREAM_PORT', 'ACCESS_TOKEN_TTL', 'USERS_FILE']) delete env[k]
  for (const k of Object.keys(env)) if (k.startsWith('TAP') || k.startsWith('NODE_OPTIONS')) delete env[k]
  for (const [k, v] of Object.entries(extra)) if (v === undefined) delete env[k]; else env[k] = v
  return env
}

export interface Proc {
  child: ChildProcess
  stdout: () => string
  stderr: () => string
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  match: RegExpMatchArray
}

const READY_MS = 30_000

/**
 * Spawns a built entry point (`file` relative to dist/, e.g. 'gateway/server.js'); resolves once `ready`
 * matches stdout, rejects if it exits first or after 30 s.
 */
export async function spawnDist (file: string, args: string[], env: NodeJS.ProcessEnv, ready: RegExp, opts: { cwd?: string } = {}): Promise<Proc> {
  const child = track(spawn(process.execPath, [path.join(DIST, file), ...args], { cwd: opts.cwd ?? ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] }))
  let out = ''
  let err = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d })
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => child.once('exit', (code, signal) => resolve({ code, signal })))
  const match = await new Promise<RegExpMatchArray>((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new Error(`${file} did not get ready in ${READY_MS / 1000} s\nstdout: ${out}\nstderr: ${err}`)) }, READY_MS)
    const check = (): void => {
      const m = out.match(ready)
      if (m !== null) { cleanup(); resolve(m) }
    }
    const onExit = (code: number | null): void => { cleanup(); reject(new Error(`${file} exited (${code}) before it was ready\nstdout: ${out}\nstderr: ${err}`)) }
    function cleanup (): void {
      clearTimeout(timer)
      child.stdout!.off('data', check)
      child.off('exit', onExit)
    }
    child.stdout!.on('data', check)
    child.once('exit', onExit)
    check()
  })
  return { child, stdout: () => out, stderr: () => err, exited, match }
}

export interface Ran { code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string }

/** Runs the built bin to its end (killed after 30 s: code null then). */
export async function runBin (args: string[], opts: { cwd?: string, env?: NodeJS.ProcessEnv, input?: string } = {}): Promise<Ran> {
  const child = track(spawn(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? ROOT, env: opts.env ?? childEnv(), stdio: ['pipe', 'pipe', 'pipe'] }))
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  child.stdin.end(opts.input ?? '')
  const timer = setTimeout(() => child.kill('SIGKILL'), READY_MS)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>(resolve => child.once('close', (c, s) => resolve([c, s])))
  clearTimeout(timer)
  return { code, signal, stdout, stderr }
}
