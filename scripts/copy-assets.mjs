// tsc compiles TypeScript to dist/; what is read at run time beside it is copied there: the Lua scripts
// (plugin/store/redis.ts) and the demo page's files (gateway/demo.ts).
import { cpSync } from 'node:fs'
cpSync('plugin/store/lua', 'dist/plugin/store/lua', { recursive: true })
cpSync('gateway/demo-page', 'dist/gateway/demo-page', { recursive: true })
