import { spawnSync } from 'node:child_process'
import { copyFileSync, cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createApp } from '../ts/index.js'

const app = createApp({ heartbeatMs: 0 })
app.get('/hello', () => 'hello')
let base = ''
beforeAll(async () => {
  const { port } = await app.listen({ port: 0 })
  base = `http://127.0.0.1:${port}`
})
afterAll(() => app.close(100))

test('a JS handler answers through the engine', async () => {
  const r = await fetch(`${base}/hello`)
  expect(r.status).toBe(200)
  expect(await r.text()).toBe('hello')
})

test('without its platform package, loading names the package that is missing', () => {
  // The package's layout (loader, package.json, the API sources) with no binary beside it
  // and no platform package to resolve.
  const dir = mkdtempSync(join(tmpdir(), 'rat-no-binary-'))
  try {
    const root = join(__dirname, '..')
    copyFileSync(join(root, 'index.js'), join(dir, 'index.js'))
    copyFileSync(join(root, 'package.json'), join(dir, 'package.json'))
    cpSync(join(root, 'ts'), join(dir, 'ts'), { recursive: true })
    const tsx = pathToFileURL(join(root, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href
    const r = spawnSync(process.execPath, ['--import', tsx, '-e', "require('./ts/index.ts')"], { cwd: dir, encoding: 'utf8', timeout: 30_000 })
    expect(r.status).not.toBe(0)
    const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime
    const abi = process.platform === 'linux' ? (glibc ? '-gnu' : '-musl') : process.platform === 'win32' ? '-msvc' : ''
    const expected = `rat-engine-${process.platform}-${process.arch}${abi}`
    expect(r.stderr).toContain(`rat-engine: no native binary for ${process.platform}-${process.arch}: the package ${expected}`)
    expect(r.stderr).not.toMatch(/^Error: Cannot find native binding/m)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}, 30_000)
