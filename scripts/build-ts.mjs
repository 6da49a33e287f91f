// Compiles ts/ to CommonJS (dist/, with .d.ts) and writes a thin ES module entry
// (dist/esm) that re-exports it, so `import` and `require` share one instance.
import { execFileSync } from 'node:child_process'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
rmSync(join(root, 'dist'), { recursive: true, force: true })
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.json')], {
  stdio: 'inherit',
})
const require = createRequire(import.meta.url)
const api = require(join(root, 'dist/index.js'))
const names = Object.keys(api).filter((n) => n !== '__esModule').sort()
mkdirSync(join(root, 'dist/esm'), { recursive: true })
writeFileSync(
  join(root, 'dist/esm/index.mjs'),
  `import api from '../index.js'\nexport const { ${names.join(', ')} } = api\nexport default api\n`,
)
// The default export is the whole API, as index.mjs gives it.
writeFileSync(
  join(root, 'dist/esm/index.d.mts'),
  `import * as api from '../index.js'\nexport * from '../index.js'\nexport default api\n`,
)
console.log(`dist + dist/esm written (${names.length} exports)`)
