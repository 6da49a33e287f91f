// Finds a Chromium for the browser tests, in order: CHROME_PATH, a system Chrome/Chromium,
// Playwright's cache, and the one @sparticuz/chromium ships for Linux x64 (unpacked to the
// temp dir on first use).
import { spawnSync } from 'node:child_process'
import { accessSync, constants, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { homedir, tmpdir } from 'node:os'
import { delimiter, dirname, join } from 'node:path'
import { brotliDecompressSync } from 'node:zlib'

export interface FoundBrowser {
  executablePath: string
  /** Where it was found, for the log. */
  source: string
  /** The environment to launch it with. */
  env: NodeJS.ProcessEnv
}

const NAMES = ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable']
const SYSTEM = [
  ...NAMES.map((n) => `/usr/bin/${n}`),
  '/Applications/Google Chrome.app/Contents/MacOS/Google Chrome',
  '/Applications/Chromium.app/Contents/MacOS/Chromium',
]
// Inside Playwright's chromium-<rev> and chromium_headless_shell-<rev>, newer layouts first.
const PLAYWRIGHT = {
  chromium: ['chrome-linux64/chrome', 'chrome-linux-arm64/chrome', 'chrome-linux/chrome'],
  chromium_headless_shell: [
    'chrome-headless-shell-linux64/chrome-headless-shell',
    'chrome-headless-shell-linux-arm64/chrome-headless-shell',
    'chrome-linux/headless_shell',
  ],
}

// A non-empty executable regular file: a /dev/null bind mount or a dangling link is not one.
function usable(p: string): boolean {
  try {
    const st = statSync(p)
    accessSync(p, constants.X_OK)
    return st.isFile() && st.size > 0
  } catch {
    return false
  }
}

function system(): string | undefined {
  const onPath = NAMES.flatMap((n) => (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, n)))
  return [...SYSTEM, ...onPath].find(usable)
}

function playwrightCache(): string | undefined {
  const env = process.env.PLAYWRIGHT_BROWSERS_PATH
  const root =
    env === '0'
      ? join(dirname(createRequire(__filename).resolve('playwright-core/package.json')), '.local-browsers')
      : env || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'ms-playwright')
  let dirs: string[]
  try {
    dirs = readdirSync(root)
  } catch {
    return undefined
  }
  const rev = (d: string) => Number(d.slice(d.lastIndexOf('-') + 1))
  for (const [prefix, paths] of Object.entries(PLAYWRIGHT)) {
    const found = dirs
      .filter((d) => d.startsWith(`${prefix}-`))
      .sort((a, b) => rev(b) - rev(a))
      .flatMap((d) => paths.map((p) => join(root, d, p)))
      .find(usable)
    if (found) return found
  }
  return undefined
}

// The NSS, NSPR and expat libraries the binary links against (al2023.tar.br, the set the
// package itself unpacks on Amazon Linux), unpacked once to <tmpdir>/al2023/lib.
function sparticuzLibs(bin: string): string {
  const lib = join(tmpdir(), 'al2023', 'lib')
  if (existsSync(join(lib, 'libnss3.so'))) return lib
  const tmp = mkdtempSync(join(tmpdir(), 'al2023-'))
  const archive = join(bin, 'al2023.tar.br')
  const tar = spawnSync('tar', ['-x', '--no-same-owner', '-C', tmp], { input: brotliDecompressSync(readFileSync(archive)) })
  if (tar.status !== 0) {
    rmSync(tmp, { recursive: true, force: true })
    throw new Error(`unpacking ${archive}: ${tar.error ?? tar.stderr}`)
  }
  try {
    renameSync(tmp, dirname(lib))
  } catch {
    rmSync(tmp, { recursive: true, force: true }) // unpacked concurrently by another process
  }
  return lib
}

async function sparticuz(): Promise<FoundBrowser | undefined> {
  const report = process.report.getReport() as { header?: { glibcVersionRuntime?: string } }
  if (process.platform !== 'linux' || process.arch !== 'x64' || !report.header?.glibcVersionRuntime) return undefined
  let entry: string
  try {
    entry = createRequire(__filename).resolve('@sparticuz/chromium')
  } catch {
    return undefined
  }
  const m = await import('@sparticuz/chromium')
  const executablePath = await m.default.executablePath()
  const lib = sparticuzLibs(join(dirname(entry), '..', '..', 'bin'))
  const env: NodeJS.ProcessEnv = { ...process.env, LD_LIBRARY_PATH: [lib, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':') }
  // Its own fonts.conf (<tmpdir>/fonts) where the system has none.
  if (!existsSync('/etc/fonts/fonts.conf')) env.FONTCONFIG_PATH ??= join(tmpdir(), 'fonts')
  return { executablePath, source: '@sparticuz/chromium', env }
}

export async function findBrowser(): Promise<FoundBrowser> {
  const env = process.env
  const given = env.CHROME_PATH
  if (given) {
    if (!usable(given)) throw new Error(`CHROME_PATH=${given} is not an executable file`)
    return { executablePath: given, source: 'CHROME_PATH', env }
  }
  const sys = system()
  if (sys) return { executablePath: sys, source: 'system', env }
  const pw = playwrightCache()
  if (pw) return { executablePath: pw, source: "Playwright's cache", env }
  const bundled = await sparticuz()
  if (bundled) return bundled
  throw new Error(
    'no Chrome/Chromium found for the browser tests: set CHROME_PATH to one, install chromium ' +
      '(e.g. apt-get install -y chromium), or run npm install on Linux x64 (glibc) for @sparticuz/chromium',
  )
}
