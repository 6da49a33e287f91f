// A live log tail over SSE (seed 001, the `tail -f` log stream), without spawning `tail`.
//
//   npx tsx examples/log-tail.ts              (PORT and HOST are honoured)
//
// GET  /                    the page: pick a log, watch new lines arrive
// GET  /api/logs            the logs there are
// GET  /api/logs/:name      SSE: `connected`, the last lines, then each new line as it is written
// POST /api/logs/:name      appends the request body (text) as a line, to try it by hand
//
// The demo writes its own logs: a timer appends a line to app.log and access.log (in a fresh
// directory under os.tmpdir()) every second. A stream watches its file with fs.watch (plus a
// slow poll, as fs.watch can miss events on some file systems), reads only what was appended,
// at most 64 KiB at a time and only when the client has room, and stops watching the file the
// moment the client leaves.
import { mkdtempSync, rmSync, writeFileSync, appendFileSync, watch, type FSWatcher } from 'node:fs'
import { open, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createApp, HttpError, type App } from '../ts/index.js'
import { onClose, serve } from './_shared.js'

export interface LogTailOptions {
  /** Time between the lines the demo writes to each log, ms; 0 writes none. @default 1000 */
  writeIntervalMs?: number
  /** Lines sent from the end of the file when a client connects. @default 10 */
  backlogLines?: number
  /** Fallback poll interval, ms. @default 1000 */
  pollMs?: number
  /** Directory for the logs. @default a new directory under os.tmpdir(), removed on close */
  dir?: string
}

/** The log tail's app, with what tests need to watch it. */
export interface LogTailApp extends App {
  /** Streams reading a file now (each has a watcher and a poll timer). */
  activeTails(): number
  /** The directory holding the logs. */
  readonly logDir: string
  /** The path of log `name`. */
  logPath(name: string): string
}

const LOGS = ['app.log', 'access.log']
const MAX_READ = 64 * 1024
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

const LEVELS = ['INFO', 'INFO', 'INFO', 'DEBUG', 'WARN', 'ERROR']
const MESSAGES = ['cache refreshed', 'job 42 finished', 'user signed in', 'slow query (812 ms)', 'retrying upstream call', 'queue depth 17', 'config reloaded']
const PATHS = ['/', '/api/items', '/api/items/7', '/login', '/static/app.js', '/api/search?q=rat']
const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)]

function demoLine(name: string, n: number): string {
  const ts = new Date().toISOString()
  if (name === 'access.log') {
    const status = pick([200, 200, 200, 201, 304, 404, 500])
    return `${ts} 127.0.0.1 "GET ${pick(PATHS)}" ${status} ${Math.floor(Math.random() * 90) + 2}ms #${n}`
  }
  return `${ts} ${pick(LEVELS).padEnd(5)} ${pick(MESSAGES)} #${n}`
}

/** Builds the log tail's app (not listening yet). */
export function createLogTail(options: LogTailOptions = {}): LogTailApp {
  const writeIntervalMs = options.writeIntervalMs ?? 1000
  const backlogLines = options.backlogLines ?? 10
  const pollMs = options.pollMs ?? 1000
  const ownDir = options.dir === undefined
  const logDir = options.dir ?? mkdtempSync(join(tmpdir(), 'rat-engine-logs-'))
  const logPath = (name: string) => join(logDir, name)

  for (const name of LOGS) writeFileSync(logPath(name), `${demoLine(name, 0)}\n`, { flag: 'a' })
  let written = 0
  const writer =
    writeIntervalMs > 0
      ? setInterval(() => {
          written++
          for (const name of LOGS) appendFileSync(logPath(name), `${demoLine(name, written)}\n`)
        }, writeIntervalMs)
      : null

  const app = createApp()
  const tails = new Set<() => void>()

  // A log name from the path: a plain file name, never a path (400), that exists (404).
  function checkName(name: string): string {
    if (/[/\\]/.test(name) || name.includes('..') || !NAME.test(name)) {
      throw new HttpError(400, 'invalid log name: use a plain file name such as app.log (no path separators)')
    }
    if (!LOGS.includes(name)) throw new HttpError(404, `no log named ${name}; there are: ${LOGS.join(', ')}`)
    return name
  }

  app.html('/', PAGE)

  app.get('/api/logs', () => ({ logs: LOGS, dir: logDir }))

  app.post('/api/logs/:name', async (req) => {
    const name = checkName(req.params.name)
    const line = (await req.text()).replace(/[\r\n]+/g, ' ').trim().slice(0, 1000)
    if (!line) throw new HttpError(400, 'send the line to append as the request body')
    appendFileSync(logPath(name), `${new Date().toISOString()} NOTE  ${line}\n`)
    return { appended: line }
  })

  app.sse('/api/logs/:name', async (req, stream) => {
    const name = checkName(req.params.name)
    const path = logPath(name)
    const fd = await open(path, 'r')
    const { size } = await fd.stat()

    // Start at the last `backlogLines` lines (read from at most the last 64 KiB).
    const start = Math.max(0, size - MAX_READ)
    const head = Buffer.alloc(size - start)
    await fd.read(head, 0, head.length, start)
    let lines = head.toString('utf8').split('\n').slice(0, -1)
    if (start > 0) lines = lines.slice(1) // the first line is probably cut
    let position = size
    let partial = ''

    let stopped = false
    let reading = false
    let again = false
    const send = (message: string, backlog = false) =>
      stream.send({ type: 'log', service: name, message, backlog, timestamp: Date.now() / 1000 })

    stream.send({ type: 'connected', service: name, timestamp: Date.now() / 1000 })
    for (const line of lines.slice(-backlogLines)) send(line, true)

    // Reads what was appended since `position`, 64 KiB at a time, waiting for the client
    // whenever the stream's queue is full. One read runs at a time; changes seen during it
    // cause one more pass.
    const readNew = async () => {
      if (reading) {
        again = true
        return
      }
      reading = true
      try {
        do {
          again = false
          const { size } = await stat(path)
          if (size < position) {
            position = 0 // truncated or replaced: start over
            partial = ''
          }
          while (!stopped && position < size) {
            const buf = Buffer.alloc(Math.min(MAX_READ, size - position))
            const { bytesRead } = await fd.read(buf, 0, buf.length, position)
            if (bytesRead === 0) break
            position += bytesRead
            const parts = (partial + buf.toString('utf8', 0, bytesRead)).split('\n')
            partial = parts.pop() ?? ''
            let room = true
            for (const line of parts) room = send(line) && room
            if (!room && !(await stream.ready())) return
          }
        } while (again && !stopped)
      } catch (err) {
        if (!stopped) stream.send({ type: 'error', message: (err as Error).message })
      } finally {
        reading = false
      }
    }

    let watcher: FSWatcher | null = null
    try {
      watcher = watch(path, () => void readNew())
      watcher.on('error', () => {})
    } catch {
      // fs.watch is not available here: the poll below does the work.
    }
    const poll = setInterval(() => void readNew(), pollMs)

    const stop = () => {
      if (stopped) return
      stopped = true
      watcher?.close()
      clearInterval(poll)
      tails.delete(stop)
      void fd.close().catch(() => {})
      if (!stream.closed) stream.end() // server closing: end the response too
    }
    tails.add(stop)
    // The client left (or the server is closing): stop watching and reading the file.
    req.signal.addEventListener('abort', stop)
    if (req.signal.aborted) stop()
    void readNew() // lines written while we were setting up
  })

  onClose(app, () => {
    if (writer) clearInterval(writer)
    for (const stop of [...tails]) stop()
    if (ownDir) rmSync(logDir, { recursive: true, force: true })
  })

  return Object.assign(app, { activeTails: () => tails.size, logDir, logPath })
}

const PAGE = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rat-engine · log tail</title>
<link rel="icon" href="data:,">
<style>
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: #111827; color: #e5e7eb; }
  header { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; padding: 16px 24px; background: #1f2937; border-bottom: 1px solid #374151; }
  h1 { margin: 0 16px 0 0; font-size: 20px; }
  select, input, button { font: inherit; border-radius: 8px; border: 1px solid #4b5563; background: #111827; color: #e5e7eb; padding: 7px 10px; }
  button { cursor: pointer; background: #2563eb; border-color: #2563eb; color: #fff; font-weight: 600; }
  button.secondary { background: #374151; border-color: #4b5563; }
  #status { margin-left: auto; display: inline-flex; align-items: center; gap: 8px; font-size: 14px; color: #9ca3af; }
  #status .dot { width: 9px; height: 9px; border-radius: 50%; background: #6b7280; }
  #status.live .dot { background: #22c55e; box-shadow: 0 0 0 3px rgba(34, 197, 94, .25); }
  #note { flex: 1; min-width: 180px; }
  #out { margin: 0; padding: 14px 24px; height: calc(100vh - 110px); overflow-y: auto; font: 13px/1.55 ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre-wrap; word-break: break-word; }
  #out .backlog { opacity: .55; }
  #out .WARN { color: #fbbf24; } #out .ERROR { color: #f87171; } #out .DEBUG { color: #93c5fd; } #out .NOTE { color: #c4b5fd; }
  #out .sys { color: #34d399; font-style: italic; }
  footer { padding: 6px 24px; font-size: 12px; color: #6b7280; border-top: 1px solid #1f2937; }
</style>
</head>
<body>
<header>
  <h1>Log tail</h1>
  <select id="log"><option>app.log</option><option>access.log</option></select>
  <button id="toggle">Follow</button>
  <input id="note" placeholder="Write a line to the log…">
  <button id="write" class="secondary">Append</button>
  <span id="status"><span class="dot"></span><span id="status-text">not following</span></span>
</header>
<pre id="out"></pre>
<footer id="footer">lines: 0</footer>
<script>
'use strict';
var tail = window.tail = { eventSource: null, lines: 0 };
var out = document.getElementById('out');

function add(text, cls) {
  var line = document.createElement('div');
  if (cls) line.className = cls;
  line.textContent = text;
  var stick = out.scrollTop + out.clientHeight >= out.scrollHeight - 30;
  out.appendChild(line);
  while (out.children.length > 1000) out.removeChild(out.firstChild);
  if (stick) out.scrollTop = out.scrollHeight;
}
function status(live, text) {
  document.getElementById('status').className = live ? 'live' : '';
  document.getElementById('status-text').textContent = text;
  document.getElementById('toggle').textContent = live ? 'Stop' : 'Follow';
}
function follow() {
  unfollow();
  var name = document.getElementById('log').value;
  var es = tail.eventSource = new EventSource('/api/logs/' + encodeURIComponent(name));
  es.onmessage = function (e) {
    var m = JSON.parse(e.data);
    if (m.type === 'connected') { add('── following ' + m.service + ' ──', 'sys'); status(true, 'following ' + m.service); }
    else if (m.type === 'log') {
      var level = (m.message.split(/\\s+/)[1] || '');
      add(m.message, (m.backlog ? 'backlog ' : '') + level);
      tail.lines++;
      document.getElementById('footer').textContent = 'lines: ' + tail.lines;
    } else if (m.type === 'error') add('error: ' + m.message, 'ERROR');
  };
  es.onerror = function () { status(false, es.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting…'); };
}
function unfollow() {
  if (tail.eventSource) { tail.eventSource.close(); tail.eventSource = null; add('── stopped ──', 'sys'); }
  status(false, 'not following');
}
document.getElementById('toggle').onclick = function () { if (tail.eventSource) unfollow(); else follow(); };
document.getElementById('log').onchange = function () { if (tail.eventSource) follow(); };
document.getElementById('write').onclick = function () {
  var input = document.getElementById('note');
  if (!input.value.trim()) return;
  fetch('/api/logs/' + encodeURIComponent(document.getElementById('log').value), { method: 'POST', body: input.value })
    .then(function () { input.value = ''; });
};
document.getElementById('note').onkeydown = function (e) { if (e.key === 'Enter') document.getElementById('write').click(); };
follow();
</script>
</body>
</html>
`

if (require.main === module) {
  void serve(createLogTail(), 'rat-engine log tail')
}
