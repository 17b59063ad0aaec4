// A real nginx for tests (Debian's nginx-light: `nginx` on PATH), in the foreground on a free port with a
// config the test writes into a temp dir of its own (`-p <dir>`, `daemon off; master_process off;`): stopped
// at the test's teardown, and killed with the temp dir removed however the test file ends (see spawn.ts).
import { spawn, spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import type { Test } from 'tap'
import { freePort } from './redis.js'
import { removeTempDir, tempDir, track } from './spawn.js'

export interface Nginx { port: number, base: string, stderr: () => string }

const HAS_NGINX = spawnSync('nginx', ['-v'], { stdio: 'ignore' }).status === 0

// CI (.ci/run) installs nginx-light and sets TOKENGATE_REQUIRE_NGINX=1: there a missing nginx fails the test
// instead of skipping it.
if (!HAS_NGINX && process.env.TOKENGATE_REQUIRE_NGINX === '1') throw new Error('TOKENGATE_REQUIRE_NGINX=1 but nginx is not installed')

/** For t.test's `skip` option: false, or the one line a skipped test prints. */
export const noNginx: string | false = HAS_NGINX ? false : 'no nginx on this machine (apt-get install nginx-light)'

async function accepts (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

/**
 * Starts nginx with `httpBlock` (what goes inside `http { }`; `listen PORT` in it is replaced by the free port
 * chosen here) and resolves once it accepts connections.
 */
export async function startNginx (t: Test, httpBlock: (port: number) => string): Promise<Nginx> {
  const dir = tempDir('nginx')
  const port = await freePort()
  const conf = `
pid ${dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${httpBlock(port)}
}
`
  writeFileSync(path.join(dir, 'nginx.conf'), conf)
  const child = track(spawn('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', 'stderr', '-g', 'daemon off; master_process off;'], { stdio: ['ignore', 'ignore', 'pipe'] }))
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  let gone = false
  const exited = new Promise<void>(resolve => child.once('exit', () => { gone = true; resolve() }))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      await exited
    }
    removeTempDir(dir)
  })
  const deadline = Date.now() + 10_000
  while (!await accepts(port)) {
    if (gone) throw new Error(`nginx exited before it listened: ${stderr}`)
    if (Date.now() > deadline) throw new Error(`nginx did not listen on ${port} within 10 s: ${stderr}`)
    await new Promise(resolve => setTimeout(resolve, 25))
  }
  return { port, base: `http://127.0.0.1:${port}`, stderr: () => stderr }
}
