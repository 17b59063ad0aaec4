// Empties an output dir before a build, so nothing a deleted or renamed source once produced is shipped.
import { rmSync } from 'node:fs'
rmSync(process.argv[2] ?? 'dist', { recursive: true, force: true })
