// Loads the napi-rs addon through the loader that `napi build` generates at the package
// root. The compiled API lives in dist/cjs (two levels below the root); the TS sources run
// by tsx/vitest live in ts/ (one level below).
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type * as Native from 'rat-engine/native'

function load(): typeof Native {
  for (const rel of ['..', join('..', '..')]) {
    const loader = join(__dirname, rel, 'index.js')
    if (existsSync(loader) && existsSync(join(__dirname, rel, 'package.json'))) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return require(loader) as typeof Native
    }
  }
  throw new Error('rat-engine: the native loader (index.js) was not found; run `npm run build`')
}

export const native: typeof Native = load()
export type { AccessLogEntry, Calls, Channel as NativeChannel, Engine as NativeEngine, EngineMetrics, NativeChannelMetrics } from 'rat-engine/native'
