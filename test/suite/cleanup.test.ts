// The suite's own promise: a test file that fails or times out leaves no child process and no temp dir
// behind. A fixture starts a long-running child and makes a temp dir through the test helpers, then fails,
// or hangs until it gets the signal tap's runner sends past a timeout; afterwards both are gone.
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { ROOT, childEnv, tempDir, track } from '../helpers/spawn.js'

const alive = (pid: number): boolean => {
  try { process.kill(pid, 0); return true } catch { return false }
}

/**
 * Runs the fixture as tap runs a test file (this process's TypeScript loader), and for 'hang' sends it
 * what tap's runner sends a file past its timeout: SIGALRM.
 */
async function runFixture (end: 'hang' | 'fail'): Promise<{ code: number | null, signal: NodeJS.Signals | null, report: { pid: number, dir: string } }> {
  const report = path.join(tempDir('cleanup'), 'report.json')
  const execArgv = process.execArgv.filter(a => !/@tapjs[\\/](mock|processinfo)[\\/]/.test(a))
  const child = track(spawn(process.execPath, [...execArgv, path.join(ROOT, 'test/fixtures/leaves-children.ts')], {
    cwd: ROOT,
    env: childEnv({ FIXTURE_REPORT: report, FIXTURE_END: end }),
    stdio: 'ignore'
  }))
  const exited = new Promise<[number | null, NodeJS.Signals | null]>(resolve => child.once('exit', (c, s) => resolve([c, s])))
  if (end === 'hang') {
    while (!existsSync(report) && child.exitCode === null) await new Promise(resolve => setTimeout(resolve, 50))
    child.kill('SIGALRM')
  }
  const [code, signal] = await exited
  return { code, signal, report: JSON.parse(readFileSync(report, 'utf8')) }
}

async function gone (pid: number): Promise<boolean> {
  for (let i = 0; i < 50 && alive(pid); i++) await new Promise(resolve => setTimeout(resolve, 100))
  return !alive(pid)
}

// Both runs at once: each spends most of its time starting tap or waiting out the timeout.
const runs = { hang: runFixture('hang'), fail: runFixture('fail') }
for (const end of ['hang', 'fail'] as const) {
  t.test(`a test file that ${end === 'hang' ? 'times out' : 'fails'} kills its children and removes its temp dirs`, async t => {
    const { code, signal, report } = await runs[end]
    t.ok(code !== 0, `the fixture run failed (exit ${code}, signal ${signal})`)
    t.ok(report.pid > 0, 'the fixture started a child')
    t.ok(await gone(report.pid), `its child ${report.pid} is gone`)
    t.notOk(existsSync(report.dir), `its temp dir ${report.dir} is removed`)
  })
}
