#!/usr/bin/env node
// The `tokengate` bin: `tokengate [--config file.json]` runs the gateway (config from --config, else
// TOKENGATE_CONFIG, else gateway.config.json); `tokengate keygen [--eddsa [--kid K]]`;
// `tokengate hash-password [password]`; `--version`, `--help`. Unknown flags are refused with the usage
// (exit 64), config problems exit 78. SIGTERM/SIGINT: stop accepting, drain, close Redis, exit 0.
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import type { FastifyInstance } from 'fastify'
import type { GatewayConfig } from './config.js'
import { hashPasswordCommand, keygen } from './cli.js'
import { version } from './version.js'
// The gateway itself (Fastify, ioredis, the plugin) is imported when it starts: the other commands and a
// refused command line answer without loading it.

const USAGE = `usage:
  tokengate [--config FILE]              run the gateway (config: --config, else TOKENGATE_CONFIG, else ./gateway.config.json)
  tokengate keygen [--eddsa [--kid KID]]  print a 64-byte hex secret, or an EdDSA key for tokens.keys
  tokengate hash-password [PASSWORD]      print a scrypt hash for the users file (the password from stdin if not given)
  tokengate sessions list <userId> [--config FILE]                one JSON line per live session of the user
  tokengate sessions revoke <userId> [<sessionId>] [--config FILE] revoke one session, or every session of the user
  tokengate sessions revoke-everyone [--config FILE]              revoke every session of every user
  tokengate --version | --help`

/** A command line tokengate does not understand: usage on stderr, exit 64 (EX_USAGE). */
export class UsageError extends Error {
  constructor (problem: string) {
    super(problem)
    this.name = 'UsageError'
  }
}

/** node:util parseArgs, strict: an unknown flag or a stray argument is a UsageError. */
function parse<O extends ParseArgsConfig['options']> (args: string[], options: O, positionals = 0): { values: Record<string, string | boolean | undefined>, positionals: string[] } {
  try {
    const r = parseArgs({ args, options, strict: true, allowPositionals: positionals > 0 })
    if (r.positionals.length > positionals) throw new UsageError(`unexpected argument '${r.positionals[positionals]}'`)
    return r as { values: Record<string, string | boolean | undefined>, positionals: string[] }
  } catch (err) {
    if (err instanceof UsageError) throw err
    // parseArgs' own messages name the flag; drop its advice about '--' (tokengate takes no such arguments).
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''))
  }
}

export function configPath (args: string[], env: NodeJS.ProcessEnv): string {
  const { values } = parse(args, { config: { type: 'string', short: 'c' } })
  if (values.config === '') throw new UsageError('--config needs a file name')
  return (values.config as string | undefined) ?? env.TOKENGATE_CONFIG ?? 'gateway.config.json'
}

/**
 * Loads the config, builds the gateway and listens; REDIS_URL fills in redis.url when the config has none.
 * `setup` may add routes before it listens (the demo's page), knowing the config.
 */
export async function startGateway (args: string[], env: NodeJS.ProcessEnv = process.env, setup?: (app: FastifyInstance, config: GatewayConfig) => void): Promise<FastifyInstance> {
  const file = configPath(args, env)
  const [{ loadConfigFile }, { buildGateway }, { default: closeWithGrace }] = await Promise.all([import('./config.js'), import('./index.js'), import('close-with-grace')])
  const config = loadConfigFile(file, env)
  if (config.redis === undefined && env.REDIS_URL !== undefined && env.REDIS_URL !== '') config.redis = { url: env.REDIS_URL }
  const app = buildGateway(config, { baseDir: config.baseDir, env })
  setup?.(app, config)
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

/**
 * The arguments of `sessions …`: `--config FILE` (`-c`, `--config=FILE`) and positionals. Not parseArgs: a
 * session id is base64url and may start with '-', which parseArgs would take for a flag; any other `--flag`
 * is refused, and `--` ends the flags.
 */
function sessionsArgs (args: string[]): { config?: string, positionals: string[] } {
  let config: string | undefined
  const positionals: string[] = []
  for (let i = 0; i < args.length; i++) {
    const a = args[i]
    if (a === '--') { positionals.push(...args.slice(i + 1)); break }
    if (a === '--config' || a === '-c') {
      if (i + 1 >= args.length || args[i + 1] === '') throw new UsageError('--config needs a file name')
      config = args[++i]
    } else if (a.startsWith('--config=')) {
      config = a.slice('--config='.length)
      if (config === '') throw new UsageError('--config needs a file name')
    } else if (a.startsWith('--')) {
      throw new UsageError(`Unknown option '${a.split('=')[0]}'`)
    } else {
      positionals.push(a)
    }
  }
  return { config, positionals }
}

/** `tokengate sessions …` (see sessions-cli.ts): prints its lines, returns the exit code. */
async function sessions (args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const [sub, ...rest] = args
  const arity: Record<string, [number, number]> = { list: [1, 1], revoke: [1, 2], 'revoke-everyone': [0, 0] }
  if (sub === undefined || !(sub in arity)) throw new UsageError(sub === undefined ? 'sessions needs a command: list, revoke or revoke-everyone' : `'sessions ${sub}' is not a command`)
  const [min, max] = arity[sub]
  const { config: configFlag, positionals } = sessionsArgs(rest)
  if (positionals.length > max) throw new UsageError(`unexpected argument '${positionals[max]}'`)
  if (positionals.length < min) throw new UsageError(`sessions ${sub} needs ${sub === 'list' ? '<userId>' : '<userId> [<sessionId>]'}`)
  if (positionals.some(p => p === '')) throw new UsageError('an empty user or session id')
  const file = configPath(configFlag === undefined ? [] : ['--config', configFlag], env)
  const [{ loadConfigFile }, { runSessionsCommand }] = await Promise.all([import('./config.js'), import('./sessions-cli.js')])
  const config = loadConfigFile(file, env)
  if (config.redis === undefined && env.REDIS_URL !== undefined && env.REDIS_URL !== '') config.redis = { url: env.REDIS_URL }
  let out
  try {
    out = await runSessionsCommand(config, sub as 'list' | 'revoke' | 'revoke-everyone', positionals)
  } catch (err) {
    // Not "no such session" (1): an unexpected failure is EX_SOFTWARE. A config problem is the caller's (78).
    if ((err as Error).name === 'ConfigError' || (err as Error).name === 'TokengateOptionError') throw err
    process.stderr.write(`tokengate: sessions ${sub} failed: ${(err as Error).message}\n`)
    return 70
  }
  for (const l of out.lines) process.stdout.write(l + '\n')
  if (out.message !== undefined) process.stderr.write(`tokengate: ${out.message}\n`)
  return out.code
}

let exitWhenDone = false

export async function main (args: string[]): Promise<void> {
  const [command, ...rest] = args
  if (command === 'help' || command === '--help' || command === '-h') {
    parse(rest, {})
    process.stdout.write(USAGE + '\n')
    return
  }
  if (command === '--version' || command === '-v') {
    parse(rest, {})
    process.stdout.write(version() + '\n')
    return
  }
  if (command === 'keygen') {
    const { values } = parse(rest, { eddsa: { type: 'boolean' }, kid: { type: 'string' } })
    if (values.kid !== undefined && values.eddsa !== true) throw new UsageError('--kid goes with --eddsa')
    process.stdout.write(keygen({ eddsa: values.eddsa === true, kid: values.kid as string | undefined }) + '\n')
    return
  }
  if (command === 'hash-password') {
    const { positionals } = parse(rest, {}, 1)
    process.stdout.write(await hashPasswordCommand(positionals[0]) + '\n')
    return
  }
  if (command === 'sessions') {
    process.exitCode = await sessions(rest, process.env)
    // Done: ioredis may keep a reconnect timer of a client that never connected for a second or two.
    exitWhenDone = true
    return
  }
  if (command !== undefined && !command.startsWith('-')) throw new UsageError(`'${command}' is not a command`)
  await startGateway(args)
}

const invoked = process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))
if (invoked) {
  main(process.argv.slice(2)).then(() => {
    if (exitWhenDone) process.stdout.write('', () => process.exit())
  }, (err: Error) => {
    // One line naming the problem (a config error names its field); never a token or a secret.
    if (err instanceof UsageError) {
      process.stderr.write(`tokengate: ${err.message}\n${USAGE}\n`)
      process.exit(64)
    }
    // A ConfigError, or the plugin's OptionError (a bad tokens.* value), by name: their modules load lazily.
    const config = err.name === 'ConfigError'
      ? err.message
      : err.name === 'TokengateOptionError' ? `config: tokens.${(err as Error & { option: string }).option} ${(err as Error & { problem: string }).problem}` : undefined
    process.stderr.write(`tokengate: ${config ?? `${err.name}: ${err.message}`}\n`)
    process.exit(config !== undefined ? 78 : 1)
  })
}
