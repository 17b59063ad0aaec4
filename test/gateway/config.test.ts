/* eslint-disable no-template-curly-in-string -- ${VAR} is the config syntax under test */
// The gateway's config, in-process: every bad value names its field in a ConfigError (never echoing a
// secret), ${VAR} and ${VAR:-default}, defaults, paths relative to the config file, and `tokens` taking
// the plugin's own options schema. The bin's handling of these errors (exit 78, one line) is cli.test.ts.
import { randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import t from 'tap'
import { ConfigError, loadConfigFile, parseConfig } from '../../gateway/config.js'
import { tempDir } from '../helpers/spawn.js'

/** A secret that must never appear in an error message. */
const CHILD_SECRET = 'c' + randomBytes(64).toString('hex').slice(1)
const dir = tempDir('config')
const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
const missingFile = path.join(dir, 'no-such-dir', 'gateway.config.json')

/** A valid config; each error case breaks one thing. */
function base (): Record<string, any> {
  return {
    listen: { host: '127.0.0.1', port: 0 },
    tokens: { secret: '${TOKENGATE_SECRET}' },
    login: { usersFile: 'users.json' },
    routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }],
    logLevel: 'info'
  }
}

interface ErrorCase {
  name: string
  /** the config object (or raw file text) */
  config: Record<string, any> | string
  /** the field named on the stderr line, right after `tokengate: config: ` */
  field: string
  /** more the line must say */
  says?: RegExp
  env?: NodeJS.ProcessEnv
}

const errorCases: ErrorCase[] = [
  { name: 'missing ${TOKENGATE_SECRET}', config: base(), field: 'tokens.secret', says: /TOKENGATE_SECRET/, env: {} },
  { name: 'unknown route field', config: { ...base(), routes: [{ prefix: '/api', upstreem: 'http://127.0.0.1:9' }] }, field: 'routes[0].upstreem', says: /not a known field/ },
  { name: 'unknown top-level field', config: { ...base(), bogus: true }, field: 'bogus', says: /not a known field/ },
  { name: 'ftp upstream', config: { ...base(), routes: [{ prefix: '/api', upstream: 'ftp://x' }] }, field: 'routes[0].upstream' },
  { name: 'upstream not a URL', config: { ...base(), routes: [{ prefix: '/api', upstream: 'not a url' }] }, field: 'routes[0].upstream' },
  { name: 'port not a number', config: { ...base(), listen: { port: 'abc' } }, field: 'listen.port' },
  { name: 'login with both', config: { ...base(), login: { usersFile: 'users.json', upstream: 'http://127.0.0.1:9/verify' } }, field: 'login' },
  { name: 'login with neither', config: { ...base(), login: {} }, field: 'login' },
  { name: 'auth maybe', config: { ...base(), routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'maybe' }] }, field: 'routes[0].auth', says: /required.*optional.*public/ },
  // A literal secret whose quotes were forgotten: V8's JSON error quotes the text near the error.
  { name: 'invalid JSON', config: `{\n  "tokens": { "secret": ${CHILD_SECRET} }\n}\n`, field: '(file)', says: /JSON/ }
]

// ---- parseConfig directly ----------------------------------------------------------------------------------

const ENV = { TOKENGATE_SECRET: CHILD_SECRET }

t.test('config errors: a ConfigError naming the field, never the secret', async t => {
  for (const [i, c] of errorCases.entries()) {
    const env = c.env ?? ENV
    let caught: unknown
    if (typeof c.config === 'string') {
      const file = path.join(dir, `error-${i}.json`)
      await writeFile(file, c.config)
      try { loadConfigFile(file, env) } catch (err) { caught = err }
    } else {
      try { parseConfig(c.config, { env, baseDir: dir }) } catch (err) { caught = err }
    }
    t.type(caught, ConfigError, `${c.name}: a ConfigError`)
    const err = caught as ConfigError
    t.equal(err.field, c.field, `${c.name}: field ${c.field}`)
    t.match(err.message, new RegExp(`^config: ${escape(c.field)} `))
    if (c.says !== undefined) t.match(err.message, c.says)
    t.notOk(err.message.includes(CHILD_SECRET.slice(0, 8)), `${c.name}: no part of the secret in the message`)
  }
})

t.test('parseConfig: more bad values name their field', async t => {
  const cases: Array<[string, Record<string, any>, string]> = [
    ['duration', { ...base(), routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', timeout: 'soon' }] }, 'routes[0].timeout'],
    ['prefix', { ...base(), routes: [{ prefix: 'api', upstream: 'http://127.0.0.1:9' }] }, 'routes[0].prefix'],
    ['port range', { ...base(), listen: { port: 70000 } }, 'listen.port'],
    ['unknown tokens field', { ...base(), tokens: { secret: 'x'.repeat(64), ttl: '1m' } }, 'tokens.ttl'],
    ['no tokens.secret nor keys', { ...base(), tokens: {} }, 'tokens.secret'],
    ['missing variable deep inside', { ...base(), routes: [{ prefix: '/api', upstream: '${NOPE_UPSTREAM}' }] }, 'routes[0].upstream'],
    ['roles without required', { ...base(), routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'public', roles: ['x'] }] }, 'routes[0].roles'],
    ['route under /auth', { ...base(), routes: [{ prefix: '/auth/x', upstream: 'http://127.0.0.1:9' }] }, 'routes[0].prefix'],
    ['trustProxy type', { ...base(), trustProxy: 'maybe' }, 'trustProxy'],
    ['logLevel', { ...base(), logLevel: 'loud' }, 'logLevel']
  ]
  for (const [name, config, field] of cases) {
    t.throws(() => parseConfig(config, { env: ENV, baseDir: dir }), { name: 'ConfigError', field }, `${name}: ${field}`)
  }
})

t.test('tokens takes the plugin\'s own options schema: the same fields, limits and defaults', async t => {
  const cfg = (tokens: Record<string, unknown>): Record<string, any> => ({ ...base(), tokens: { secret: '${TOKENGATE_SECRET}', ...tokens } })
  const ok = parseConfig(cfg({ storeTimeoutMs: 250, keyPrefix: 'app1', maxSessionAge: '7d' }), { env: ENV, baseDir: dir })
  t.equal(ok.tokens.storeTimeoutMs, 250, 'storeTimeoutMs, a plugin option the old copy of the schema lacked')
  t.equal(ok.tokens.keyPrefix, 'app1')
  const defaults = parseConfig(base(), { env: ENV, baseDir: dir })
  t.equal(defaults.tokens.keyPrefix, 'tg', "the plugin's defaults")
  t.equal(defaults.tokens.reuseGraceMs, 10_000)
  const bad: Array<[string, Record<string, unknown>, string]> = [
    ['keyPrefix with a brace', { keyPrefix: 'a{b' }, 'tokens.keyPrefix'],
    ['audience []', { audience: [] }, 'tokens.audience'],
    ['storeTimeoutMs 0', { storeTimeoutMs: 0 }, 'tokens.storeTimeoutMs'],
    ['transport twice', { transport: ['header', 'header'] }, 'tokens.transport'],
    ['an unknown option', { accessTtl: '1m' }, 'tokens.accessTtl'],
    ['routes (the gateway owns them)', { routes: { prefix: '/x' } }, 'tokens.routes'],
    ['a key with a bad algorithm', { secret: undefined, keys: [{ kid: 'k', algorithm: 'HS256', privateKey: 'x', publicKey: 'y' }] }, 'tokens.keys[0].algorithm']
  ]
  for (const [name, tokens, field] of bad) {
    t.throws(() => parseConfig(cfg(tokens), { env: ENV, baseDir: dir }), { name: 'ConfigError', field }, `${name}: ${field}`)
  }
  t.throws(() => parseConfig({ ...base(), routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', roles: [] }] }, { env: ENV, baseDir: dir }),
    { name: 'ConfigError', field: 'routes[0].roles' }, 'roles [] is refused (a route needs at least one role, or none at all)')
})

t.test('loadConfigFile: a missing file and invalid JSON are ConfigErrors', async t => {
  t.throws(() => loadConfigFile(missingFile, ENV), { name: 'ConfigError', field: '(file)', message: new RegExp(escape(missingFile)) })
  const bad = path.join(dir, 'bad.json')
  await writeFile(bad, '{ "listen": ')
  t.throws(() => loadConfigFile(bad, ENV), { name: 'ConfigError', field: '(file)', message: /JSON/ })
})

t.test('a duration in a wrong format lists the accepted forms, in every duration field', async t => {
  const forms = /'500ms', '10s', '10m', '1h', '1d' or a number of seconds/
  const cases: Array<[string, Record<string, any>]> = [
    ['tokens.accessTokenTtl', { ...base(), tokens: { secret: '${TOKENGATE_SECRET}', accessTokenTtl: '10 minutes' } }],
    ['tokens.maxSessionAge', { ...base(), tokens: { secret: '${TOKENGATE_SECRET}', maxSessionAge: '30 days' } }],
    ['routes[0].timeout', { ...base(), routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9', timeout: '30 seconds' }] }],
    ['login.timeout', { ...base(), login: { usersFile: 'users.json', timeout: '5 sec' } }],
    ['rateLimit.requests.window', { ...base(), rateLimit: { requests: { max: 5, window: '1 minute' } } }],
    ['rateLimit.failedLogins.window', { ...base(), rateLimit: { failedLogins: { window: '15min' } } }]
  ]
  for (const [field, config] of cases) {
    let caught: unknown
    try { parseConfig(config, { env: ENV, baseDir: dir }) } catch (err) { caught = err }
    t.match(caught, { name: 'ConfigError', field }, `${field}: named`)
    t.match((caught as Error).message, forms, `${field}: the accepted forms (${(caught as Error).message})`)
  }
})

t.test('a config file that is not JSON: where (line, column), never the text around it', async t => {
  const cases: Array<[string, string, number, number]> = [
    ['a trailing comma', '{\n  "listen": { "port": 8080 },\n}\n', 3, 1],
    ['a secret without quotes', `{\n  "tokens": { "secret": ${CHILD_SECRET} }\n}\n`, 2, 25],
    ['a missing colon', '{\n  "logLevel" "info"\n}', 2, 14],
    ['cut short', '{\n  "listen": {', 2, 14],
    ['a trailing comma in an array, CRLF lines', '{\r\n  "routes": [\r\n    1,\r\n  ]\r\n}', 4, 3]
  ]
  for (const [name, text, line, column] of cases) {
    const file = path.join(dir, `json-${name.replace(/\W+/g, '-')}.json`)
    await writeFile(file, text)
    let caught: unknown
    try { loadConfigFile(file, ENV) } catch (err) { caught = err }
    t.match(caught, { name: 'ConfigError', field: '(file)' }, `${name}: a ConfigError`)
    const message = (caught as Error).message
    t.match(message, new RegExp(`line ${line}, column ${column}\\b`), `${name}: line ${line}, column ${column} (${message})`)
    t.match(message, new RegExp(escape(file)), `${name}: the file`)
    t.notOk(message.includes(CHILD_SECRET.slice(0, 8)), `${name}: no part of the secret`)
  }
  // Control: a byte-order mark (as some Windows editors save) is not an error.
  const bom = path.join(dir, 'bom.json')
  await writeFile(bom, '\ufeff' + JSON.stringify(base()))
  t.equal(loadConfigFile(bom, ENV).routes[0].prefix, '/api', 'a file starting with a BOM loads')
})

t.test('parseConfig: ${VAR}, ${VAR:-default}, numbers from the environment, defaults, paths', async t => {
  const cfg = parseConfig({
    listen: { host: '${H:-0.0.0.0}', port: '${P}' },
    tokens: { secret: '${TOKENGATE_SECRET}', accessTokenTtl: '${TTL:-5m}', rotateRefreshTokens: '${ROTATE}' },
    login: { usersFile: 'users/users.json' },
    routes: [{ prefix: '/api', upstream: 'http://${UP_HOST:-127.0.0.1}:${UP_PORT}' }],
    trustProxy: '${TRUST:-false}'
  }, { env: { ...ENV, P: '8181', ROTATE: 'false', UP_PORT: '3002', TTL: '' }, baseDir: '/srv/gw' })
  t.equal(cfg.listen.port, 8181, 'a number from the environment')
  t.equal(cfg.listen.host, '0.0.0.0', 'the default when unset')
  t.equal(cfg.tokens.secret, CHILD_SECRET)
  t.equal(cfg.tokens.accessTokenTtl, '5m', 'the default when set to the empty string')
  t.equal(cfg.tokens.rotateRefreshTokens, false, 'a boolean from the environment')
  t.equal(cfg.trustProxy, false)
  t.equal(cfg.routes[0].upstream, 'http://127.0.0.1:3002')
  t.equal(cfg.routes[0].auth, 'required', 'auth defaults to required')
  t.equal(cfg.routes[0].timeout, '30s', 'timeout defaults to 30s')
  t.equal(cfg.login.usersFile, path.resolve('/srv/gw', 'users/users.json'), 'relative to the config directory')
  t.equal(cfg.rateLimit.failedLogins.max, 10)
  t.equal(cfg.rateLimit.requests.max, 100)
  t.equal(cfg.baseDir, '/srv/gw')

  const set = parseConfig({ listen: { port: '${P:-1}' }, tokens: { secret: '${TOKENGATE_SECRET}' }, login: { usersFile: 'u.json' } }, { env: { ...ENV, P: '2' } })
  t.equal(set.listen.port, 2, 'the variable over its default')

  const file = path.join(dir, 'sub', 'gw.json')
  await mkdir(path.dirname(file), { recursive: true })
  await writeFile(file, JSON.stringify({ tokens: { secret: '${TOKENGATE_SECRET}' }, login: { usersFile: 'users.json' } }))
  t.equal(loadConfigFile(file, ENV).login.usersFile, path.join(dir, 'sub', 'users.json'), 'loadConfigFile resolves against the file')
})
