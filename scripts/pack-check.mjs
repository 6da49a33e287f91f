// npm run pack:check [-- --no-build] [-- --keep]
//
// Does what `npm install rat-engine` does on a user's machine, with packages made here:
//   1. builds the release binary and the TS API (`npm run build`; skip with --no-build),
//   2. stages the main package exactly as `npm pack` would ship it, and runs the release
//      flow on that copy: `napi create-npm-dirs`, `napi artifacts`, `napi prepublish -t npm
//      --no-gh-release --skip-optional-publish` (which pins every platform package in
//      optionalDependencies) and scripts/release-guard.mjs (the prepublishOnly check),
//   3. packs the main package and this host's platform package (e.g.
//      rat-engine-linux-x64-gnu) as tarballs with `npm pack`,
//   4. installs both with one `npm install <tarballs>` into a fresh folder outside the repo,
//      with the repo's node_modules/.bin and the Rust toolchain removed from PATH,
//   5. checks the install (the main package's optional dependency resolved to the local
//      platform tarball, no binary inside the main package), then writes a small TypeScript
//      program there in ESM (.mts, `import`) and CommonJS (.cts, `require`), type-checks and
//      compiles it with `tsc` (strict, library types checked too), and runs both: each serves
//      a JSON route and an SSE route on 127.0.0.1 and reads them back with fetch.
// Exits non-zero on any failure, after a summary. The temporary folder is removed unless
// --keep is given or a step failed (then its path is printed).
//
// Binaries of the other targets cannot be built here: `napi prepublish` validates every
// platform package, so the staged (never packed) copies of those get a placeholder file.
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseTriple } from '@napi-rs/cli'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const args = new Set(process.argv.slice(2))
const build = !args.has('--no-build') && !process.env.PACK_CHECK_NO_BUILD
const keep = args.has('--keep')
const isWin = process.platform === 'win32'
const npmCmd = isWin ? 'npm.cmd' : 'npm'
const napiCli = join(root, 'node_modules/@napi-rs/cli/dist/cli.js')
const started = Date.now()

const rootPkg = readJson(join(root, 'package.json'))
const version = rootPkg.version
const packageName = rootPkg.napi?.packageName ?? rootPkg.name
const binaryName = rootPkg.napi?.binaryName ?? 'index'
const targets = (rootPkg.napi?.targets ?? []).map((t) => ({ triple: t, abi: parseTriple(t).platformArchABI }))

// ---------------------------------------------------------------------------------------------
// Step bookkeeping

const results = [] // { name, ok, ms, detail }
let failed = false

function step(name, fn) {
  if (failed) {
    results.push({ name, ok: null, ms: 0, detail: 'skipped' })
    return undefined
  }
  const t0 = Date.now()
  console.log(`\n== ${name}`)
  try {
    const detail = fn()
    results.push({ name, ok: true, ms: Date.now() - t0, detail: detail ?? '' })
    if (detail) console.log(`   ok: ${detail}`)
    return detail
  } catch (err) {
    failed = true
    const msg = err instanceof Error ? err.message : String(err)
    // The summary shows the first line that looks like the cause, not the command line.
    const lines = msg.split('\n').map((l) => l.replace(/^\s*\| /, ''))
    const cause = lines.slice(1).find((l) => /error|not |expected|missing|cannot/i.test(l)) ?? lines[0]
    results.push({ name, ok: false, ms: Date.now() - t0, detail: cause.trim() })
    console.error(`   FAILED: ${msg}`)
    return undefined
  }
}

function check(cond, message) {
  if (!cond) throw new Error(message)
}

function readJson(path) {
  return JSON.parse(readFileSync(path, 'utf8'))
}

/** Runs a command; throws with its output on a non-zero exit. Returns stdout. */
function run(cmd, argv, { cwd, env = process.env, timeoutMs = 300_000, quiet = false } = {}) {
  const shown = `${relative(root, cwd) || '.'}$ ${[cmd, ...argv].map((a) => (a.startsWith(root + sep) ? relative(root, a) : a)).join(' ')}`
  console.log(`   ${shown}`)
  const r = spawnSync(cmd, argv, {
    cwd,
    env,
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 1 << 28,
    shell: isWin && /\.cmd$/.test(cmd),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : r.signal ? `killed by ${r.signal}` : `exit code ${r.status}`
    throw new Error(`${shown} failed (${why})\n${indent(tail(out, 60))}`)
  }
  if (!quiet && out.trim()) console.log(indent(tail(out, 15)))
  return r.stdout ?? ''
}

const indent = (s) => s.replace(/^/gm, '     | ')
const tail = (s, n) => {
  const lines = s.trimEnd().split('\n').filter((l) => !/Unknown (user|project) config/.test(l))
  return (lines.length > n ? ['...', ...lines.slice(-n)] : lines).join('\n')
}

/** `npm pack --json` in `dir` into `dest`; returns { filename, files: string[], size }. */
function npmPack(dir, dest, env) {
  mkdirSync(dest, { recursive: true })
  const out = run(npmCmd, ['pack', '--json', '--pack-destination', dest], { cwd: dir, env, quiet: true })
  const info = JSON.parse(out.slice(out.indexOf('[')))[0]
  return { filename: join(dest, info.filename), files: info.files.map((f) => f.path), size: info.size }
}

/** The napi-rs platform/arch/abi suffix of the machine this runs on. */
function hostAbi() {
  if (process.platform === 'linux') {
    const glibc = process.report?.getReport?.().header?.glibcVersionRuntime
    return `linux-${process.arch}-${glibc ? 'gnu' : 'musl'}`
  }
  if (process.platform === 'win32') return `win32-${process.arch}-msvc`
  return `${process.platform}-${process.arch}`
}

/** Environment for the user's side: no repo on PATH, no Rust toolchain, no npm run context. */
function userEnv() {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_(package_|lifecycle_|command$|execpath$|node_execpath$|config_local_prefix$|config_call$)/i.test(k)) continue
    if (/^(INIT_CWD|NODE_PATH|CARGO|CARGO_HOME|RUSTUP_HOME|RUSTUP_TOOLCHAIN)$/i.test(k)) continue
    env[k] = v
  }
  const pathKey = Object.keys(env).find((k) => k.toUpperCase() === 'PATH') ?? 'PATH'
  env[pathKey] = (env[pathKey] ?? '')
    .split(delimiter)
    .filter((p) => p && !isInside(root, p) && !/node_modules[\\/]\.bin[\\/]?$/.test(p) && !/node-gyp-bin/.test(p) && !/[\\/]\.(cargo|rustup)[\\/]/.test(p + sep))
    .join(delimiter)
  return env
}

function isInside(parent, child) {
  const rel = relative(parent, resolve(child))
  return rel === '' || (!rel.startsWith('..') && !rel.startsWith(sep) && !/^[a-zA-Z]:/.test(rel))
}

// ---------------------------------------------------------------------------------------------

const abi = hostAbi()
const hostTarget = targets.find((t) => t.abi === abi)
const platformPkgName = `${packageName}-${abi}`
const nodeFile = `${binaryName}.${abi}.node`

const work = realpathSync(mkdtempSync(join(tmpdir(), 'rat-engine-pack-check-')))
const stage = join(work, 'stage') // the main package as shipped, plus npm/ and artifacts/
const tarballs = join(work, 'tarballs')
const app = join(work, 'app') // the "user's project"
let rootTarball
let platformTarball
let mainFiles

console.log(`pack:check: ${packageName}@${version}, host package ${platformPkgName}, work dir ${work}`)

step('host target is a configured napi target', () => {
  check(!isInside(root, work), `the temporary folder ${work} is inside the repo; set TMPDIR elsewhere`)
  check(hostTarget, `this host (${abi}) is not in package.json napi.targets (${targets.map((t) => t.abi).join(', ')})`)
  return `${hostTarget.triple} -> ${platformPkgName}`
})

step(build ? 'build release binary and TS API (npm run build)' : 'use existing build (--no-build)', () => {
  if (build) run(npmCmd, ['run', 'build'], { cwd: root, timeoutMs: 1_200_000, quiet: true })
  for (const f of [nodeFile, 'index.js', 'index.d.ts', 'dist/index.js', 'dist/index.d.ts', 'dist/esm/index.mjs', 'dist/esm/index.d.mts']) {
    check(existsSync(join(root, f)), `${f} is missing: run \`npm run build\``)
  }
  const st = statSync(join(root, nodeFile))
  return `${nodeFile} ${(st.size / 1048576).toFixed(1)} MiB, built ${new Date(st.mtimeMs).toISOString()}`
})

step('main package contents (npm pack of the repo)', () => {
  const { files, size } = npmPack(root, join(work, 'repo-pack'))
  mainFiles = files
  const required = ['package.json', 'index.js', 'index.d.ts', 'LICENSE', 'dist/index.js', 'dist/index.d.ts', 'dist/esm/index.mjs', 'dist/esm/index.d.mts']
  const missing = required.filter((f) => !files.includes(f))
  check(missing.length === 0, `missing from the main package: ${missing.join(', ')}`)
  const unwanted = files.filter((f) => /\.node$|\.map$|\.tgz$|^(ts|crates|target|npm|scripts|__test__|examples|bench|docs|\.github|\.ci)\//.test(f) || /^(Cargo\.(toml|lock)|tsconfig\.json|vitest\.config\.mts|package-lock\.json)$/.test(f))
  check(unwanted.length === 0, `the main package ships files it does not need: ${unwanted.join(', ')}`)
  const odd = files.filter((f) => !/^(package\.json|index\.js|index\.d\.ts|LICENSE|README\.md|dist\/(esm\/)?[\w.-]+)$/.test(f))
  check(odd.length === 0, `unexpected files in the main package: ${odd.join(', ')}`)
  if (!files.includes('README.md')) console.log('   note: README.md is missing from the main package')
  return `${files.length} files, ${(size / 1024).toFixed(1)} kB packed`
})

step('stage the main package and create the platform packages (napi create-npm-dirs, napi artifacts)', () => {
  for (const f of mainFiles) {
    mkdirSync(dirname(join(stage, f)), { recursive: true })
    copyFileSync(join(root, f), join(stage, f))
  }
  run(process.execPath, [napiCli, 'create-npm-dirs', '--cwd', stage], { cwd: stage, quiet: true })
  // What the release workflow downloads: one artifact folder per target.
  for (const t of targets) {
    const dir = join(stage, 'artifacts', `bindings-${t.triple}`)
    mkdirSync(dir, { recursive: true })
    const dest = join(dir, `${binaryName}.${t.abi}.node`)
    if (t === hostTarget) copyFileSync(join(root, nodeFile), dest)
    else writeFileSync(dest, `placeholder for ${t.triple}: not buildable on this host, never packed\n`)
  }
  run(process.execPath, [napiCli, 'artifacts', '--cwd', stage], { cwd: stage, quiet: true })
  const made = readdirSync(join(stage, 'npm')).sort()
  const expected = targets.map((t) => t.abi).sort()
  check(JSON.stringify(made) === JSON.stringify(expected), `npm/ has ${made.join(', ')}; expected ${expected.join(', ')}`)
  const pj = readJson(join(stage, 'npm', abi, 'package.json'))
  check(pj.name === platformPkgName && pj.version === version, `npm/${abi}/package.json is ${pj.name}@${pj.version}`)
  check(pj.main === nodeFile && existsSync(join(stage, 'npm', abi, nodeFile)), `npm/${abi} has no ${nodeFile}`)
  // The committed npm/ dirs must be what create-npm-dirs writes.
  for (const a of made) {
    const committed = join(root, 'npm', a, 'package.json')
    check(existsSync(committed), `npm/${a}/package.json is not in the repo: run \`npm run create-npm-dirs\` and commit npm/`)
    check(readFileSync(committed, 'utf8') === readFileSync(join(stage, 'npm', a, 'package.json'), 'utf8'), `npm/${a}/package.json in the repo differs from what \`napi create-npm-dirs\` writes: rerun it and commit`)
  }
  return `npm/${made.join(', npm/')}; ${nodeFile} copied into npm/${abi}`
})

step('napi prepublish -t npm --no-gh-release --skip-optional-publish, then the prepublishOnly guard', () => {
  run(process.execPath, [napiCli, 'prepublish', '-t', 'npm', '--no-gh-release', '--skip-optional-publish', '--cwd', stage], { cwd: stage, quiet: true })
  const pj = readJson(join(stage, 'package.json'))
  const opt = pj.optionalDependencies ?? {}
  const wrong = targets.filter((t) => opt[`${packageName}-${t.abi}`] !== version).map((t) => `${packageName}-${t.abi}=${opt[`${packageName}-${t.abi}`]}`)
  check(wrong.length === 0, `optionalDependencies not pinned to ${version}: ${wrong.join(', ')}`)
  check(pj.version === version, `version changed to ${pj.version}`)
  for (const t of targets) {
    const v = readJson(join(stage, 'npm', t.abi, 'package.json')).version
    check(v === version, `npm/${t.abi} has version ${v}, main package ${version}`)
  }
  run(process.execPath, [join(root, 'scripts/release-guard.mjs')], { cwd: stage })
  return `${Object.keys(opt).length} optionalDependencies pinned to ${version}`
})

step('npm pack: main package and platform package', () => {
  const main = npmPack(stage, tarballs)
  const plat = npmPack(join(stage, 'npm', abi), tarballs)
  rootTarball = main.filename
  platformTarball = plat.filename
  check(JSON.stringify([...main.files].sort()) === JSON.stringify([...mainFiles].sort()), `the staged main package packs different files: ${main.files.join(', ')}`)
  check(plat.files.includes(nodeFile) && plat.files.includes('package.json'), `the platform package lacks ${nodeFile}: ${plat.files.join(', ')}`)
  const extra = plat.files.filter((f) => !['package.json', 'README.md', nodeFile].includes(f))
  check(extra.length === 0, `the platform package ships more: ${extra.join(', ')}`)
  return `${relative(work, rootTarball)} (${(main.size / 1024).toFixed(1)} kB), ${relative(work, platformTarball)} (${(plat.size / 1048576).toFixed(1)} MiB)`
})

const env = userEnv()

step('npm install <main tarball> <platform tarball> in a fresh folder outside the repo', () => {
  mkdirSync(join(app, 'src'), { recursive: true })
  writeFileSync(join(app, 'package.json'), `${JSON.stringify({ name: 'pack-check-app', private: true, version: '1.0.0' }, null, 2)}\n`)
  // Same compiler and Node types as the repo's, from the npm cache when it has them.
  const ts = readJson(join(root, 'node_modules/typescript/package.json')).version
  const types = readJson(join(root, 'node_modules/@types/node/package.json')).version
  run(npmCmd, ['install', '--no-audit', '--no-fund', '--prefer-offline', rootTarball, platformTarball, `typescript@${ts}`, `@types/node@${types}`], { cwd: app, env, quiet: true, timeoutMs: 240_000 })
  const lock = readJson(join(app, 'package-lock.json')).packages
  const main = lock[`node_modules/${packageName}`]
  const plat = lock[`node_modules/${platformPkgName}`]
  check(main?.version === version, `node_modules/${packageName} is not ${version}`)
  check(main.optionalDependencies?.[platformPkgName] === version, `the installed main package does not pin ${platformPkgName}@${version}`)
  check(plat?.version === version && String(plat.resolved).startsWith('file:'), `${platformPkgName} did not come from the local tarball (${plat?.resolved})`)
  check(!lock[`node_modules/${packageName}/node_modules/${platformPkgName}`], `${platformPkgName} was installed a second time under ${packageName}/node_modules`)
  const others = Object.keys(lock).filter((k) => k.startsWith(`node_modules/${packageName}-`) && k !== `node_modules/${platformPkgName}`)
  check(others.length === 0, `other platform packages were installed: ${others.join(', ')}`)
  const pkgDir = join(app, 'node_modules', packageName)
  const nodes = readdirSync(pkgDir, { recursive: true }).filter((f) => String(f).endsWith('.node'))
  check(nodes.length === 0, `the main package contains binaries: ${nodes.join(', ')}`)
  check(existsSync(join(app, 'node_modules', platformPkgName, nodeFile)), `${nodeFile} is not in node_modules/${platformPkgName}`)
  return `${packageName}@${version} + ${platformPkgName}@${version} (resolved ${plat.resolved}), typescript@${ts}, @types/node@${types}`
})

// The user's program. Both variants share the body; only how they get the module differs.
const body = (kind) => `
const app = createApp({ heartbeatMs: 0, exposeErrors: true })
app.get('/hello/:name', (req) => ({ hello: req.params.name, kind: '${kind}' }))
app.get('/teapot', () => {
  throw new HttpError(418, 'short and stout')
})
app.sse('/count/<int:n>', async function* (req) {
  const n: number = req.params.n // typed from the route pattern
  for (let i = 1; i <= n; i++) {
    const event: SseEvent = sseEvent({ i, of: n }, { event: 'tick', id: i })
    yield event
  }
})

interface Frame {
  event?: string
  id?: string
  data: string[]
}

function parseSse(text: string): Frame[] {
  const frames: Frame[] = []
  for (const block of text.split(/\\r?\\n\\r?\\n/)) {
    const frame: Frame = { data: [] }
    for (const line of block.split(/\\r?\\n/)) {
      if (line === '' || line.startsWith(':')) continue
      const colon = line.indexOf(':')
      const field = colon < 0 ? line : line.slice(0, colon)
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '')
      if (field === 'data') frame.data.push(value)
      else if (field === 'event') frame.event = value
      else if (field === 'id') frame.id = value
    }
    if (frame.data.length > 0 || frame.event !== undefined) frames.push(frame)
  }
  return frames
}

function assert(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error('${kind}: ' + message)
}

async function main(): Promise<void> {
  const { port }: AddressInfo = await app.listen({ port: 0, host: '127.0.0.1' })
  const base = \`http://127.0.0.1:\${port}\`
  try {
    const hello = await fetch(\`\${base}/hello/pack\`, { signal: AbortSignal.timeout(10_000) })
    assert(hello.status === 200, \`GET /hello/pack: status \${hello.status}\`)
    const json = (await hello.json()) as { hello: string; kind: string }
    assert(json.hello === 'pack' && json.kind === '${kind}', \`GET /hello/pack: \${JSON.stringify(json)}\`)

    const res = await fetch(\`\${base}/count/3\`, { headers: { accept: 'text/event-stream' }, signal: AbortSignal.timeout(10_000) })
    assert(res.status === 200, \`GET /count/3: status \${res.status}\`)
    const type = res.headers.get('content-type') ?? ''
    assert(type.startsWith('text/event-stream'), \`GET /count/3: content-type \${type}\`)
    const frames = parseSse(await res.text())
    assert(frames.length === 3, \`expected 3 SSE events, got \${JSON.stringify(frames)}\`)
    frames.forEach((f, k) => {
      assert(f.event === 'tick' && f.id === String(k + 1), \`event \${k}: \${JSON.stringify(f)}\`)
      const data = JSON.parse(f.data.join('\\n')) as { i: number; of: number }
      assert(data.i === k + 1 && data.of === 3, \`event \${k} data: \${f.data.join('\\n')}\`)
    })
    const teapot = await fetch(\`\${base}/teapot\`, { signal: AbortSignal.timeout(10_000) })
    assert(teapot.status === 418, \`GET /teapot: status \${teapot.status}\`)
    await teapot.arrayBuffer()
    console.log(JSON.stringify({ kind: '${kind}', ok: true, port, events: frames.length, sameInstance: await sameInstance() }))
  } finally {
    await app.close(100)
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
`

const esmSource = `// ESM consumer: \`import\` through the "import" condition of the exports map.
import rat, { createApp, HttpError, sseEvent, type AddressInfo, type SseEvent } from '${packageName}'
import { createRequire } from 'node:module'

// \`require\` from ESM must give the very same API object (one instance, not two), and the
// default import is that object.
async function sameInstance(): Promise<boolean> {
  const cjs = createRequire(import.meta.url)('${packageName}') as typeof import('${packageName}')
  if (cjs.createApp !== createApp) throw new Error('esm: require() and import give different instances')
  if (rat.createApp !== createApp) throw new Error('esm: the default import is not the API')
  return true
}
${body('esm')}`

const cjsSource = `// CommonJS consumer: \`require\` through the "require" condition of the exports map.
import rat = require('${packageName}')
const { createApp, HttpError, sseEvent } = rat
type AddressInfo = rat.AddressInfo
type SseEvent = rat.SseEvent

// The napi loader is not part of the package's exports.
try {
  require('${packageName}/native')
  throw new Error('cjs: ${packageName}/native is exported')
} catch (err) {
  if ((err as { code?: string }).code !== 'ERR_PACKAGE_PATH_NOT_EXPORTED') throw err
}

async function sameInstance(): Promise<boolean> {
  const esm = await import('${packageName}')
  if (esm.createApp !== createApp) throw new Error('cjs: import() and require give different instances')
  return true
}
${body('cjs')}`

step('write the TypeScript program (src/esm.mts, src/cjs.cts) and type-check + compile it with tsc --strict', () => {
  writeFileSync(
    join(app, 'tsconfig.json'),
    `${JSON.stringify(
      {
        compilerOptions: {
          target: 'ES2022',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          lib: ['ES2022'],
          types: ['node'],
          strict: true,
          skipLibCheck: false,
          noEmitOnError: true,
          rootDir: 'src',
          outDir: 'out',
        },
        include: ['src'],
      },
      null,
      2,
    )}\n`,
  )
  writeFileSync(join(app, 'src/esm.mts'), esmSource)
  writeFileSync(join(app, 'src/cjs.cts'), cjsSource)
  run(process.execPath, [join(app, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: app, env })
  check(existsSync(join(app, 'out/esm.mjs')) && existsSync(join(app, 'out/cjs.cjs')), 'tsc wrote no out/esm.mjs or out/cjs.cjs')
  const cjsOut = readFileSync(join(app, 'out/cjs.cjs'), 'utf8')
  check(/require\((["'])rat-engine\1\)/.test(cjsOut), 'out/cjs.cjs does not require() the package')
  return 'no type errors (strict, skipLibCheck: false)'
})

for (const [kind, file] of [
  ['ESM', 'out/esm.mjs'],
  ['CommonJS', 'out/cjs.cjs'],
]) {
  step(`run the ${kind} program: serve JSON + SSE on 127.0.0.1 and read them back`, () => {
    const out = run(process.execPath, [file], { cwd: app, env, timeoutMs: 60_000, quiet: true }).trim()
    const last = JSON.parse(out.split('\n').pop() ?? '{}')
    check(last.ok === true && last.events === 3 && last.sameInstance === true, `unexpected output: ${out}`)
    return out
  })
}

// ---------------------------------------------------------------------------------------------

const passedCount = results.filter((r) => r.ok === true).length
const failedCount = results.filter((r) => r.ok === false).length
const skipped = results.filter((r) => r.ok === null).length
console.log(`\npack:check summary (${((Date.now() - started) / 1000).toFixed(1)}s)`)
for (const r of results) {
  const mark = r.ok === true ? 'ok  ' : r.ok === false ? 'FAIL' : 'skip'
  console.log(`  ${mark}  ${r.name}${r.ok === false ? `\n          ${r.detail}` : ''}  (${(r.ms / 1000).toFixed(1)}s)`)
}
if (failed || keep) console.log(`work dir kept: ${work}`)
else rmSync(work, { recursive: true, force: true })
console.log(`pack-check: ${passedCount} passed, ${failedCount} failed${skipped ? `, ${skipped} skipped` : ''}`)
process.exit(failed ? 1 : 0)
