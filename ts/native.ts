// Loads the napi-rs addon through the loader that `napi build` generates at the package
// root, one level above both the compiled API (dist/) and the TS sources that tsx and vitest
// run (ts/). The loader is not exported by the package.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type * as Native from '../index.js'

/** The platform package that holds this machine's binary, as napi-rs names it. */
function platformPackage(): string {
  const { platform, arch } = process
  if (platform === 'linux') {
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header
    return `rat-engine-linux-${arch}-${header?.glibcVersionRuntime ? 'gnu' : 'musl'}`
  }
  return `rat-engine-${platform}-${arch}${platform === 'win32' ? '-msvc' : ''}`
}

function load(): typeof Native {
  const loader = join(__dirname, '..', 'index.js')
  if (!existsSync(loader) || !existsSync(join(__dirname, '..', 'package.json'))) {
    throw new Error('rat-engine: the native loader (index.js) was not found; run `npm run build`')
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(loader) as typeof Native
  } catch (err) {
    // The generated loader's own message ends its search at a WebAssembly build that this
    // package does not ship; name the package that is missing instead.
    throw new Error(
      `rat-engine: no native binary for ${process.platform}-${process.arch}: the package ${platformPackage()} ` +
        'is not installed (an install with optional dependencies left out, or an unsupported platform); ' +
        'reinstall rat-engine with optional dependencies',
      { cause: err },
    )
  }
}

export const native: typeof Native = load()
export type { AccessLogEntry, EngineNote, KeptCall, WsRouteOptions, WsSocket, Channel as NativeChannel, Engine as NativeEngine, EngineMetrics, NativeChannelMetrics } from '../index.js'
