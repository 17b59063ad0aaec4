// The one error of the gateway's config (its own module, so config.ts and redis.ts both use it without
// importing each other). `field` names what is wrong, as `routes[0].upstream`.
export class ConfigError extends Error {
  constructor (readonly field: string, problem: string) {
    super(`config: ${field} ${problem}`)
    this.name = 'ConfigError'
  }
}
