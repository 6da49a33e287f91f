// Runs every test suite (cargo test for the Rust crates, vitest against the built addon)
// and ends with one line totalled over both: "N passed, N failed".
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

let passed = 0
let failed = 0
let broken = false

function run(cmd, args, opts = {}) {
  console.log(`\n$ ${cmd} ${args.join(' ')}`)
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 28, ...opts })
  process.stdout.write(r.stdout ?? '')
  if (r.error) throw r.error
  return r
}

// cargo test: the engine crate (unit, integration and doc tests) and any other
// workspace crate that has tests; the napi cdylib has none and cannot link a test binary.
const cargo = run('cargo', ['test', '--workspace', '--exclude', 'rat-engine-node', '--color', 'never'])
for (const m of cargo.stdout.matchAll(/test result: \w+\. (\d+) passed; (\d+) failed/g)) {
  passed += Number(m[1])
  failed += Number(m[2])
}
if (cargo.status !== 0 && !/test result: FAILED/.test(cargo.stdout)) broken = true

const dir = mkdtempSync(join(tmpdir(), 'rat-vitest-'))
const report = join(dir, 'report.json')
const vitest = run(process.execPath, [
  'node_modules/vitest/vitest.mjs',
  'run',
  '--reporter=default',
  '--reporter=json',
  `--outputFile.json=${report}`,
])
try {
  const r = JSON.parse(readFileSync(report, 'utf8'))
  passed += r.numPassedTests
  failed += r.numFailedTests
  // A file that fails to load has no test results: count it as a failure.
  failed += r.testResults.filter((f) => f.status === 'failed' && f.assertionResults.length === 0).length
} catch {
  broken = true
}
rmSync(dir, { recursive: true, force: true })
if (vitest.status !== 0 && failed === 0) broken = true

if (broken) console.log('a test runner failed to run (see above)')
console.log(`${passed} passed, ${failed + (broken ? 1 : 0)} failed`)
process.exit(failed > 0 || broken ? 1 : 0)
