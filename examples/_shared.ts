// Small helpers the examples share: standalone start with graceful shutdown, and session ids.
// In your own project, import from 'rat-engine' instead of '../ts/index.js'.
import { randomInt } from 'node:crypto'
import type { App } from '../ts/index.js'

const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

/** A random 16-character alphanumeric session id. */
export function newSessionId(): string {
  let id = ''
  for (let i = 0; i < 16; i++) id += ALPHANUMERIC[randomInt(ALPHANUMERIC.length)]
  return id
}

/** True for a well-formed session id: exactly 16 ASCII letters or digits. */
export function isSessionId(id: string): boolean {
  return /^[A-Za-z0-9]{16}$/.test(id)
}

/**
 * Runs an example's app standalone: listens on `HOST`:`PORT` (default 127.0.0.1:8080),
 * prints the URL, and closes gracefully on SIGINT/SIGTERM (a second signal exits at once).
 */
export async function serve(app: App, name: string): Promise<void> {
  const host = process.env.HOST || '127.0.0.1'
  const port = process.env.PORT ? Number(process.env.PORT) : 8080
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`${name}: PORT must be an integer between 0 and 65535, got ${JSON.stringify(process.env.PORT)}`)
    process.exit(1)
  }
  let address
  try {
    address = await app.listen({ host, port })
  } catch (err) {
    const message = (err as Error).message
    const hint = /already in use/.test(message) ? '; set PORT to another port (PORT=0 picks a free one)' : ''
    console.error(`${name}: ${message}${hint}`)
    process.exit(1)
  }
  const shown = address.host === '0.0.0.0' || address.host === '::' ? 'localhost' : address.host
  const urlHost = shown.includes(':') ? `[${shown}]` : shown
  console.log(`${name} listening on http://${urlHost}:${address.port}/  (Ctrl+C to stop)`)

  let closing = false
  const shutdown = (signal: string) => {
    if (closing) process.exit(130) // second Ctrl+C: do not wait any longer
    closing = true
    console.log(`\n${signal}: closing (open streams get 2 s to finish)...`)
    app.close(2000).then(
      () => {
        console.log('closed')
        // Nothing should keep Node alive now; exit anyway if something does.
        setTimeout(() => process.exit(0), 1000).unref()
      },
      (err) => {
        console.error('close failed:', err)
        process.exit(1)
      },
    )
  }
  process.on('SIGINT', () => shutdown('SIGINT'))
  process.on('SIGTERM', () => shutdown('SIGTERM'))
}

/** Wraps `app.close` so that `cleanup` runs first (timers, watchers, temp files). */
export function onClose<A extends App>(app: A, cleanup: () => void | Promise<void>): A {
  const close = app.close.bind(app)
  app.close = async (graceMs?: number) => {
    await cleanup()
    await close(graceMs)
  }
  return app
}
