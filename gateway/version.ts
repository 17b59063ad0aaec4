// The package's version, for --version and the OpenAPI document (node:fs only: the bin loads it cheaply).
import { readFileSync } from 'node:fs'

/** The package's version (package.json beside dist/ or the sources). */
export function version (): string {
  for (const rel of ['../../package.json', '../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string, version?: string }
      if (pkg.name === 'tokengate' && typeof pkg.version === 'string') return pkg.version
    } catch { /* try the next */ }
  }
  return 'unknown'
}
