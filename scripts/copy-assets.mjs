// tsc compiles TypeScript to dist/ (the bench to .bench/: `node scripts/copy-assets.mjs .bench`); what is read
// at run time beside it is copied there: the Lua scripts (plugin/store/redis.ts) and the demo page's files
// (gateway/demo.ts).
import { cpSync } from 'node:fs'
const out = process.argv[2] ?? 'dist'
cpSync('plugin/store/lua', `${out}/plugin/store/lua`, { recursive: true })
cpSync('gateway/demo-page', `${out}/gateway/demo-page`, { recursive: true })
