// Processes for the runner: starting a pinned server and waiting for `listening`, running
// the pinned load client, and reading a process tree's CPU time and RSS from /proc.

import { spawn, execFileSync } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { cpus, release } from 'node:os'
import { createInterface } from 'node:readline'

export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
})()

/** Parent pid of each live process, for finding a server's descendants. */
function parents() {
  const out = new Map()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      out.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]))
    } catch {
      // The process exited between readdir and read.
    }
  }
  return out
}

/** `pid` and all its descendants: a server that forks workers is measured whole. */
function tree(pid) {
  const ppid = parents()
  const pids = [pid]
  for (let i = 0; i < pids.length; i++) {
    for (const [child, parent] of ppid) if (parent === pids[i]) pids.push(child)
  }
  return pids
}

/** CPU seconds (user + system, all threads) and RSS in bytes of `pid`'s process tree. */
export function sampleTree(pid) {
  let ticks = 0
  let rss = 0
  for (const p of tree(pid)) {
    try {
      const raw = readFileSync(`/proc/${p}/stat`, 'utf8')
      const stat = raw.slice(raw.lastIndexOf(')') + 2).split(' ') // from field 3 on
      ticks += Number(stat[11]) + Number(stat[12]) // utime, stime: fields 14 and 15
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))
      if (m) rss += Number(m[1]) * 1024
    } catch {
      // Gone already.
    }
  }
  return { cpuS: ticks / CLK_TCK, rss, at: performance.now() }
}

/** Busy CPU seconds so far, all processes, summed over the CPUs in `cpus`. */
export function machineBusyS(cpus) {
  let ticks = 0
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)$/.exec(line)
    if (!m || !cpus.includes(Number(m[1]))) continue
    const [user, nice, system, , , irq, softirq, steal] = m[2].trim().split(/\s+/).map(Number)
    ticks += user + nice + system + irq + softirq + steal
  }
  return ticks / CLK_TCK
}

/**
 * On a shared machine other work competes for the two CPUs: waits (up to `maxMs`) until
 * they are at most `threshold` busy over one second, and returns the last busy fraction.
 */
export async function waitForQuiet(cpus, { threshold = 0.25, maxMs = 30_000 } = {}) {
  const deadline = performance.now() + maxMs
  for (;;) {
    const before = machineBusyS(cpus)
    await new Promise((r) => setTimeout(r, 1000))
    const busy = (machineBusyS(cpus) - before) / cpus.length
    if (busy <= threshold || performance.now() >= deadline) return busy
  }
}

let niceness = 0
/** Scheduling priority for servers and clients (negative: ahead of other work; root only). */
export function setNiceness(n) {
  niceness = n
}

/** Runs `cmd` on CPU `cpu` with the hard open-file limit as its soft limit. */
function spawnPinned(cpu, cmd, { cwd, env }) {
  const quoted = cmd.map((a) => `'${String(a).replaceAll("'", "'\\''")}'`).join(' ')
  const renice = niceness ? `exec nice -n ${niceness} ` : 'exec '
  // `exec` keeps the pid: the child's pid is the server's (or the client's) own.
  return spawn('sh', ['-c', `ulimit -n "$(ulimit -Hn)"; ${renice}taskset -c ${cpu} ${quoted}`], {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
}

/** Keeps the last lines of a stream for error messages. */
function tail(stream, keep = 20) {
  const lines = []
  createInterface({ input: stream }).on('line', (l) => {
    lines.push(l)
    if (lines.length > keep) lines.shift()
  })
  return lines
}

/** Starts a server and resolves once it prints `listening`; rejects after `timeoutMs`. */
export function startServer(server, { cpu, port, pubMs, timeoutMs = 30_000 }) {
  const child = spawnPinned(cpu, server.cmd, { cwd: server.cwd, env: { ...server.env, PORT: String(port), PUB_INTERVAL_MS: String(pubMs) } })
  const errors = tail(child.stderr)
  return new Promise((resolve, reject) => {
    let settled = false
    const fail = (why) => {
      if (settled) return
      settled = true
      child.kill('SIGKILL')
      reject(new Error(`${server.name}: ${why}\n${errors.join('\n')}`))
    }
    const timer = setTimeout(() => fail(`no "listening" within ${timeoutMs} ms`), timeoutMs)
    const lines = createInterface({ input: child.stdout })
    lines.on('line', (line) => {
      if (!line.includes('listening')) return
      clearTimeout(timer)
      settled = true
      lines.removeAllListeners('line')
      child.stdout.resume() // keep draining: a full pipe would block the server
      // `exited()`: the exit code or signal if the server is gone; `stderr`: its last lines.
      resolve({ child, pid: child.pid, stop: () => stopProcess(child), exited: () => child.exitCode ?? child.signalCode, stderr: errors })
    })
    child.on('exit', (code, signal) => fail(`exited (${code ?? signal}) before listening`))
    child.on('error', (err) => fail(err.message))
  })
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
export function stopProcess(child, graceMs = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
    child.once('exit', () => {
      clearTimeout(timer)
      resolve()
    })
    child.kill('SIGTERM')
  })
}

/**
 * Runs the load client and returns its JSON result. `onPhase(name)` is called at each
 * `phase <name>` marker, when the runner samples the server. Killed after `timeoutMs`.
 */
export function runClient(cmd, { cpu, cwd, timeoutMs, onPhase }) {
  const child = spawnPinned(cpu, cmd, { cwd, env: {} })
  const errors = []
  createInterface({ input: child.stderr }).on('line', (line) => {
    const m = /^phase (\S+)$/.exec(line)
    if (m) onPhase(m[1], child.pid)
    else errors.push(line)
  })
  let stdout = ''
  child.stdout.on('data', (d) => (stdout += d))
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  return new Promise((resolve, reject) => {
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      if (code === 0) {
        try {
          return resolve(JSON.parse(stdout))
        } catch {
          // fall through
        }
      }
      reject(new Error(`rat-bench ${cmd[1]} failed (${code ?? signal}): ${errors.slice(-5).join(' | ')}`))
    })
  })
}

/** What the report says about the machine. */
export function machineInfo() {
  const sh = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    } catch {
      return 'unknown'
    }
  }
  const cpuModel = cpus()[0]?.model ?? 'unknown'
  return {
    nproc: Number(sh('nproc', [])) || cpus().length,
    cpuModel,
    kernel: release(),
    memTotalGiB: Math.round((Number(/MemTotal:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1]) / (1 << 20)) * 10) / 10,
    node: process.version,
    rustc: sh('rustc', ['--version']),
    nofileHard: Number(sh('sh', ['-c', 'ulimit -Hn'])) || null,
  }
}
