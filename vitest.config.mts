import { configDefaults, defineConfig } from 'vitest/config'

const browser = '__test__/browser.test.ts'

export default defineConfig({
  test: {
    // Native addons misbehave under worker threads; each file gets its own process.
    pool: 'forks',
    testTimeout: 20_000,
    hookTimeout: 30_000,
    fileParallelism: true,
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: { name: 'node', include: ['__test__/**/*.test.ts'], exclude: [...configDefaults.exclude, browser], sequence: { groupOrder: 0 } },
      },
      // The browser checks time events on arrival (each within 100 ms of its send): they run
      // after the rest, alone, not beside a file that floods or blocks the machine.
      { extends: true, test: { name: 'browser', include: [browser], sequence: { groupOrder: 1 } } },
    ],
  },
})
