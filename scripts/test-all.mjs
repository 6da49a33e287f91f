// Runs every test suite (cargo test for the Rust crates, vitest against the built addon)
// and ends with one line totalled over both: "N passed, N failed".
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

let passed = 0
let failed = 0
let broken = false

// Runs a command with its stderr merged into stdout, in order, echoing the output as it
// comes; resolves with the whole of it and how the command ended.
function run(cmd, args) {
  console.log(`\n$ ${cmd} ${args.join(' ')}`)
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', 'exec "$0" "$@" 2>&1', cmd, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
    let stdout = ''
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (d) => {
      process.stdout.write(d)
      stdout += d
    })
    child.on('error', reject)
    child.on('close', (status, signal) => resolve({ stdout, status, signal }))
  })
}

// A runner that failed without test results: its last lines again, so that a log cut to
// its tail still shows why.
const tails = []
function brokenRunner(name, r) {
  broken = true
  const lines = (r.stdout ?? '').trimEnd().split('\n')
  tails.push(`--- ${name} exited with ${r.status ?? r.signal}; its last lines:`, ...lines.slice(-30))
}

// cargo test: the engine crate (unit, integration and doc tests) and any other
// workspace crate that has tests; the napi cdylib has none and cannot link a test binary.
const cargo = await run('cargo', ['test', '--workspace', '--exclude', 'rat-engine-node', '--color', 'never'])
for (const m of cargo.stdout.matchAll(/test result: \w+\. (\d+) passed; (\d+) failed/g)) {
  passed += Number(m[1])
  failed += Number(m[2])
}
if (cargo.status !== 0 && !/test result: FAILED/.test(cargo.stdout)) brokenRunner('cargo test', cargo)

const dir = mkdtempSync(join(tmpdir(), 'rat-vitest-'))
const report = join(dir, 'report.json')
const vitest = await run(process.execPath, [
  'node_modules/vitest/vitest.mjs',
  'run',
  '--reporter=default',
  '--reporter=json',
  `--outputFile.json=${report}`,
])
let vitestCounted = true
try {
  const r = JSON.parse(readFileSync(report, 'utf8'))
  passed += r.numPassedTests
  failed += r.numFailedTests
  // A file that fails to load has no test results: count it as a failure.
  failed += r.testResults.filter((f) => f.status === 'failed' && f.assertionResults.length === 0).length
} catch {
  vitestCounted = false
}
rmSync(dir, { recursive: true, force: true })
if (!vitestCounted || (vitest.status !== 0 && failed === 0)) brokenRunner('vitest', vitest)

if (broken) console.log(`\n${tails.join('\n')}\na test runner failed to run`)
console.log(`${passed} passed, ${failed + (broken ? 1 : 0)} failed`)
process.exit(failed > 0 || broken ? 1 : 0)
