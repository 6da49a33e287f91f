// Runs a fixture script in its own Node process (TypeScript through tsx).
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { onTestFinished } from 'vitest'

const root = join(__dirname, '..', '..')

export interface Child {
  proc: ChildProcess
  /** Everything written to stdout so far. */
  stdout(): string
  stderr(): string
  /** Resolves with the exit code (or the signal's name) once the child is gone. */
  exited: Promise<number | string>
  /**
   * Resolves with the time (Date.now()) at which stdout first contained `text`; rejects,
   * with the child's stderr, if that takes over `timeoutMs` or the child exits first.
   */
  printed(text: string, timeoutMs?: number): Promise<number>
}

/** Starts `node --import tsx __test__/fixtures/<name> ...args`; kills it when the test ends. */
export function runFixture(name: string, args: string[] = []): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', join('__test__', 'fixtures', name), ...args], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_ENV: 'test' },
  })
  let out = ''
  let err = ''
  const waiters: Array<{ text: string; resolve: (t: number) => void }> = []
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString()
    for (const w of waiters.splice(0)) {
      if (out.includes(w.text)) w.resolve(Date.now())
      else waiters.push(w)
    }
  })
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  // 'close' rather than 'exit': it comes after the child's output has all been read.
  const exited = new Promise<number | string>((resolve) => proc.on('close', (code, signal) => resolve(code ?? signal ?? -1)))
  onTestFinished(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  })
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    exited,
    printed: (text, timeoutMs = 15_000) => {
      if (out.includes(text)) return Promise.resolve(Date.now())
      const seen = new Promise<number>((resolve) => waiters.push({ text, resolve }))
      const timeout = new Promise<string>((r) => setTimeout(r, timeoutMs, `timed out after ${timeoutMs} ms`).unref())
      const failed = Promise.race([exited.then((code) => `exited (${code})`), timeout]).then((why) => {
        throw new Error(`${name} ${why} before printing "${text}"; stderr:\n${err}`)
      })
      return Promise.race([seen, failed])
    },
  }
}
