// tsc compiles plugin/store/redis.ts to dist/; its Lua scripts are read at run time beside it.
import { cpSync } from 'node:fs'
cpSync('plugin/store/lua', 'dist/plugin/store/lua', { recursive: true })
