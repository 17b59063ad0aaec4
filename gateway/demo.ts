// `npm start`: the gateway from gateway.config.json (or TOKENGATE_CONFIG) in front of a small bundled demo upstream, with a
// demo user, the demo page at / (built on tokengate/client), and the curl steps to try it. `--upstream-only [--port N] [--host H] [--name NAME]` runs just
// the demo upstream (docker-compose uses it for its example services).
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import type { GatewayConfig } from './config.js'
import { startGateway } from './server.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), path.basename(path.dirname(path.dirname(fileURLToPath(import.meta.url)))) === 'dist' ? '../..' : '..')

/** An upstream that answers with what it received: the path and the identity headers the gateway sent. */
export function demoUpstream (name: string): FastifyInstance {
  const app = Fastify({ logger: false })
  app.all('/*', async (request) => ({
    service: name,
    method: request.method,
    path: request.url,
    user: request.headers['x-user-id'] ?? null,
    roles: request.headers['x-user-roles'] ?? null,
    session: request.headers['x-session-id'] ?? null,
    requestId: request.headers['x-request-id'] ?? null,
    sawAuthorization: request.headers.authorization !== undefined
  }))
  return app
}

const PAGE_HEADERS = {
  // The page loads its script, style and the client from this origin only, and is never framed.
  'content-security-policy': "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache'
}

const htmlAttribute = (s: string): string => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

/**
 * The demo page: GET / and its assets under /demo/, the client as it ships (dist/client/index.js). Same
 * origin as the gateway's /auth and /api routes, so it needs no CORS. With the gateway's config: "Sign in
 * with <the provider>" when it has login.oidc, and no password form when single sign-on is its only login.
 */
export function serveDemoPage (app: FastifyInstance, config?: Pick<GatewayConfig, 'login'>): void {
  const here = path.dirname(fileURLToPath(import.meta.url))
  let index = readFileSync(path.join(here, 'demo-page', 'index.html'), 'utf8')
  const oidc = config?.login.oidc
  if (oidc !== undefined) {
    index = index.replace('data-sso=""', `data-sso="${htmlAttribute(new URL(oidc.issuer).host)}"`)
    if (config?.login.usersFile === undefined && config?.login.upstream === undefined) index = index.replace('data-password="true"', 'data-password="false"')
  }
  const files: Record<string, [string, string]> = {
    '/': ['text/html; charset=utf-8', index],
    '/demo/app.js': ['text/javascript; charset=utf-8', readFileSync(path.join(here, 'demo-page', 'app.js'), 'utf8')],
    '/demo/demo.css': ['text/css; charset=utf-8', readFileSync(path.join(here, 'demo-page', 'demo.css'), 'utf8')],
    '/demo/client.js': ['text/javascript; charset=utf-8', readFileSync(path.join(here, '..', 'client', 'index.js'), 'utf8')],
    '/demo/favicon.svg': ['image/svg+xml', readFileSync(path.join(here, 'demo-page', 'favicon.svg'), 'utf8')]
  }
  for (const [url, [type, body]] of Object.entries(files)) {
    app.get(url, { schema: { hide: true } }, async (_request, reply) => await reply.headers(PAGE_HEADERS).type(type).send(body))
  }
  // Browsers ask for /favicon.ico on their own (the page names its icon, but not every client reads that).
  app.get('/favicon.ico', { schema: { hide: true } }, async (_request, reply) => await reply.redirect('/demo/favicon.svg', 301))
}

function arg (args: string[], name: string, fallback: string): string {
  const at = args.indexOf(name)
  return at >= 0 && args[at + 1] !== undefined ? args[at + 1] : fallback
}

async function main (args: string[]): Promise<void> {
  if (args.includes('--upstream-only')) {
    const up = demoUpstream(arg(args, '--name', 'demo'))
    await up.listen({ host: arg(args, '--host', '127.0.0.1'), port: Number(arg(args, '--port', '3001')) })
    const a = up.server.address() as AddressInfo
    process.stdout.write(`demo upstream ${arg(args, '--name', 'demo')} listening on ${a.address}:${a.port}\n`)
    process.on('SIGTERM', () => { up.close().then(() => process.exit(0), () => process.exit(1)) })
    process.on('SIGINT', () => { up.close().then(() => process.exit(0), () => process.exit(1)) })
    return
  }
  const env = { ...process.env }
  if (env.TOKENGATE_SECRET === undefined || env.TOKENGATE_SECRET === '') {
    env.TOKENGATE_SECRET = randomBytes(64).toString('hex')
    process.stderr.write('demo: TOKENGATE_SECRET is not set: using a random one for this run (tokens end with the process)\n')
  }
  const upstream = demoUpstream('demo')
  await upstream.listen({ host: '127.0.0.1', port: Number(env.DEMO_UPSTREAM_PORT ?? 3001) })
  // TOKENGATE_CONFIG: another config for the demo (e.g. one with login.oidc: the page then offers single sign-on).
  const configFile = env.TOKENGATE_CONFIG !== undefined && env.TOKENGATE_CONFIG !== '' ? path.resolve(env.TOKENGATE_CONFIG) : path.join(ROOT, 'gateway.config.json')
  const gateway = await startGateway(['--config', configFile], env, serveDemoPage)
  const address = gateway.server.address() as AddressInfo
  const base = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
  process.stdout.write(`
tokengate gateway on ${base} (${env.REDIS_URL !== undefined && env.REDIS_URL !== '' ? 'sessions in Redis' : 'in-memory sessions'}), demo upstream on 127.0.0.1:${(upstream.server.address() as AddressInfo).port}

  Open ${base}/ in a browser (log in as demo / demo-password), or try it with curl:

  # log in as the demo user and keep the two tokens
  PAIR=$(curl -s -X POST ${base}/auth/login -H 'content-type: application/json' -d '{"username":"demo","password":"demo-password"}')
  ACCESS=$(printf '%s' "$PAIR" | node -pe 'JSON.parse(require("fs").readFileSync(0)).accessToken')
  REFRESH=$(printf '%s' "$PAIR" | node -pe 'JSON.parse(require("fs").readFileSync(0)).refreshToken')

  # a protected route: the upstream sees the user, not the token (401 without one)
  curl -s ${base}/api/hello -H "authorization: Bearer $ACCESS"
  curl -s ${base}/api/hello

  # the refresh hook: send the refresh token along and the request goes through even when the access
  # token has expired or is missing (here: missing); the answer carries a new access token in
  # x-access-token and the rotated refresh token in x-refresh-token
  curl -s -i ${base}/api/hello -H "x-refresh-token: $REFRESH"

  # a public route
  curl -s ${base}/public/hello

  # log out: the access token stops working at once
  curl -s -X POST ${base}/auth/logout -H "authorization: Bearer $ACCESS" -o /dev/null -w '%{http_code}\\n'
  curl -s ${base}/api/hello -H "authorization: Bearer $ACCESS"

Ctrl-C stops it.
`)
}

main(process.argv.slice(2)).catch((err: Error) => {
  process.stderr.write(`demo: ${err.message}\n`)
  process.exit(1)
})
