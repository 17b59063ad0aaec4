#!/usr/bin/env node
// The `tokengate` bin: `tokengate [--config file.json]` runs the gateway (config from --config, else
// TOKENGATE_CONFIG, else gateway.config.json); `tokengate keygen [--eddsa [--kid K]]`;
// `tokengate hash-password [password]`. SIGTERM/SIGINT: stop accepting, drain, close Redis, exit 0.
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import closeWithGrace from 'close-with-grace'
import type { FastifyInstance } from 'fastify'
import { hashPasswordCommand, keygen } from './cli.js'
import { ConfigError, loadConfigFile } from './config.js'
import { buildGateway } from './index.js'
import { OptionError } from '../plugin/index.js'

const USAGE = `usage:
  tokengate [--config gateway.config.json]   run the gateway (or TOKENGATE_CONFIG)
  tokengate keygen [--eddsa [--kid KID]]       print a 64-byte hex secret, or an EdDSA key for tokens.keys
  tokengate hash-password [password]          print a scrypt hash for the users file (password from stdin if not given)`

export function configPath (args: string[], env: NodeJS.ProcessEnv): string {
  const at = args.indexOf('--config')
  if (at >= 0) {
    const file = args[at + 1]
    if (file === undefined || file.startsWith('--')) throw new ConfigError('--config', 'needs a file name')
    return file
  }
  const eq = args.find(a => a.startsWith('--config='))
  if (eq !== undefined) return eq.slice('--config='.length)
  return env.TOKENGATE_CONFIG ?? 'gateway.config.json'
}

/** Loads the config, builds the gateway and listens; REDIS_URL fills in redis.url when the config has none. */
export async function startGateway (args: string[], env: NodeJS.ProcessEnv = process.env): Promise<FastifyInstance> {
  const config = loadConfigFile(configPath(args, env), env)
  if (config.redis === undefined && env.REDIS_URL !== undefined && env.REDIS_URL !== '') config.redis = { url: env.REDIS_URL }
  const app = buildGateway(config, { baseDir: config.baseDir, env })
  await app.listen({ host: config.listen.host, port: config.listen.port })
  closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'gateway: stopping after an error')
    else app.log.info({ signal }, 'gateway: stopping: draining in-flight requests')
    // close() ends the connections idle when it starts; keep-alive connections whose in-flight request
    // finishes later become idle then, and are closed on the next sweep.
    const sweep = setInterval(() => { app.server.closeIdleConnections() }, 50)
    try {
      await app.close()
    } finally {
      clearInterval(sweep)
    }
  })
  return app
}

export async function main (args: string[]): Promise<void> {
  const [command, ...rest] = args
  if (command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE + '\n')
    return
  }
  if (command === 'keygen') {
    process.stdout.write(keygen(rest) + '\n')
    return
  }
  if (command === 'hash-password') {
    process.stdout.write(await hashPasswordCommand(rest) + '\n')
    return
  }
  if (command !== undefined && !command.startsWith('--')) throw new ConfigError(command, `is not a command\n${USAGE}`)
  await startGateway(args)
}

const invoked = process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))
if (invoked) {
  main(process.argv.slice(2)).catch((err: Error) => {
    // One line naming the problem (a config error names its field); never a token or a secret.
    const config = err instanceof ConfigError
      ? err
      : err instanceof OptionError ? new ConfigError(`tokens.${err.option}`, err.problem) : undefined
    process.stderr.write(`tokengate: ${config !== undefined ? config.message : `${err.name}: ${err.message}`}\n`)
    process.exit(config !== undefined ? 78 : 1)
  })
}
