// Starts an app on 127.0.0.1:0 and closes it when the file (or the current test) is done.
import { afterAll, expect, onTestFinished } from 'vitest'
import { createApp, type App, type AppOptions, type TlsOptions } from '../../ts/index.js'

export interface Started {
  app: App
  port: number
  /** `http://127.0.0.1:<port>` */
  base: string
  /** `base + path` */
  url(path: string): string
}

/** Options of `startApp`: the app's, plus how long `close` may wait for streams. */
export interface StartOptions extends AppOptions {
  /** Grace given to `app.close()` at cleanup. @default 200 */
  closeGraceMs?: number
  /** Listen with TLS (then `base` is `https://`). */
  tls?: TlsOptions
}

/**
 * Creates an app, lets `setup` add routes, listens on 127.0.0.1 port 0 and registers its
 * close: at the end of the current test when called inside one, else after the file.
 * Heartbeats are off unless asked for, so that raw-byte assertions see only what was sent.
 */
export async function startApp(setup: (app: App) => void, options: StartOptions = {}): Promise<Started> {
  const { closeGraceMs = 200, tls, ...appOptions } = options
  const app = createApp({ heartbeatMs: 0, onError: () => {}, ...appOptions })
  setup(app)
  const { port } = await app.listen({ host: '127.0.0.1', port: 0, tls })
  const close = () => app.close(closeGraceMs)
  if (expect.getState().currentTestName === undefined) afterAll(close)
  else onTestFinished(close)
  const base = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`
  return { app, port, base, url: (path) => base + path }
}
