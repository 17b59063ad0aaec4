// Entry points run from source in a child process, as a user would run the built bin: the child gets
// this process's execArgv (tap's TypeScript loader), so no build is needed.
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))

const children: ChildProcess[] = []
process.on('exit', () => { for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL') })

/** Kills every child still running (call it in a teardown). */
export function killChildren (): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
}

/** The environment minus tokengate's own variables, plus `extra` (undefined deletes). */
export function childEnv (extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const k of ['TOKENGATE_SECRET', 'TOKENGATE_CONFIG', 'REDIS_URL', 'PORT', 'DEMO_UPSTREAM_PORT']) delete env[k]
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

/** Spawns a TypeScript entry point from source; resolves once `ready` matches stdout (rejects on exit or after 20 s). */
export async function spawnSource (file: string, args: string[], env: NodeJS.ProcessEnv, ready: RegExp): Promise<Proc> {
  const child = spawn(process.execPath, [...process.execArgv, file, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  let out = ''
  let err = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d })
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => child.once('exit', (code, signal) => resolve({ code, signal })))
  const match = await new Promise<RegExpMatchArray>((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new Error(`${file} did not get ready in 20 s\nstdout: ${out}\nstderr: ${err}`)) }, 20_000)
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
