// The streaming demo (seed 000, python_streaming_demo.py): one page, five kinds of streams.
//
//   npx tsx examples/streaming-demo.ts        (or `npm run demo`; PORT and HOST are honoured)
//
// GET /               the page: a panel per stream, showing data as it arrives
// GET /sse            SSE: a `connected` event, then a JSON `update` event every second
// GET /chunked        chunked text: processing steps 800 ms apart (chunkedResponse)
// GET /json-stream    NDJSON: one JSON object per line, spaced out (jsonStream)
// GET /text-stream    text lines, spaced out (textStream)
// GET /binary-stream  bytes, in spaced-out chunks (binaryStream)
// GET /api/metrics    the engine's counters (app.metrics()) as JSON
import { binaryStream, chunkedResponse, createApp, jsonStream, sseEvent, textStream, type App } from '../ts/index.js'
import { serve } from './_shared.js'

export interface StreamingDemoOptions {
  /** Time between SSE `update` events, ms. @default 1000 */
  sseIntervalMs?: number
  /** `update` events before the SSE stream sends `done` and ends. @default 10 */
  sseUpdates?: number
  /** Pause between the chunked steps, ms. @default 800 */
  chunkDelayMs?: number
  /** Pause between items of the JSON, text and binary streams, ms. @default 500 */
  itemDelayMs?: number
  /** Chunks sent by /binary-stream. @default 8 */
  binaryChunks?: number
  /** Bytes per binary chunk. @default 4096 */
  binaryChunkBytes?: number
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** The bytes of binary chunk `index`: a counting pattern, so a client can check them. */
export function binaryChunk(index: number, size: number): Uint8Array {
  const out = new Uint8Array(size)
  for (let j = 0; j < size; j++) out[j] = (index * 16 + j) & 0xff
  return out
}

export const CHUNKED_STEPS = ['[1/4] Initializing the processor...', '[2/4] Loading data...', '[3/4] Running the analysis...', '[4/4] Processing complete.']

const USERS = [
  { id: 1, name: 'Alice', role: 'admin' },
  { id: 2, name: 'Bob', role: 'editor' },
  { id: 3, name: 'Charlie', role: 'viewer' },
  { id: 4, name: 'Dana', role: 'editor' },
  { id: 5, name: 'Eve', role: 'viewer' },
]

const LINES = ['First line of text', 'Second line of text', 'Third line of text', 'Fourth line of text', 'Last line of text']

/** Builds the streaming demo's app (not listening yet). */
export function createStreamingDemo(options: StreamingDemoOptions = {}): App {
  const sseIntervalMs = options.sseIntervalMs ?? 1000
  const sseUpdates = options.sseUpdates ?? 10
  const chunkDelayMs = options.chunkDelayMs ?? 800
  const itemDelayMs = options.itemDelayMs ?? 500
  const binaryChunks = options.binaryChunks ?? 8
  const binaryChunkBytes = options.binaryChunkBytes ?? 4096
  const startedAt = Date.now()

  const app = createApp()

  app.html('/', PAGE)

  // An async generator: each yielded event is written when its turn comes. If the client
  // leaves, the generator is stopped at its next `await` (its `finally` would run).
  app.sse('/sse', async function* () {
    yield sseEvent('SSE connection established', { event: 'connected' })
    for (let i = 1; i <= sseUpdates; i++) {
      await sleep(sseIntervalMs)
      yield sseEvent({ counter: i, message: `Update #${i}`, timestamp: new Date().toISOString() }, { event: 'update' })
    }
    yield sseEvent({ updates: sseUpdates }, { event: 'done' })
  })

  // The seed's builder: chunks with pauses between them, returned as the response.
  app.chunked('/chunked', () => {
    const response = chunkedResponse()
    CHUNKED_STEPS.forEach((step, i) => {
      if (i > 0) response.addDelay(chunkDelayMs)
      response.addChunk(`${step}\n`)
    })
    return response
  })

  app.chunked('/json-stream', () =>
    jsonStream(
      (async function* () {
        for (const [i, user] of USERS.entries()) {
          if (i > 0) await sleep(itemDelayMs)
          yield { ...user, sentAt: new Date().toISOString() }
        }
      })(),
    ),
  )

  app.chunked('/text-stream', () =>
    textStream(
      (async function* () {
        for (const [i, line] of LINES.entries()) {
          if (i > 0) await sleep(itemDelayMs)
          yield `${i + 1}: ${line}`
        }
      })(),
    ),
  )

  app.chunked('/binary-stream', () =>
    binaryStream(
      (async function* () {
        for (let i = 0; i < binaryChunks; i++) {
          if (i > 0) await sleep(itemDelayMs)
          yield binaryChunk(i, binaryChunkBytes)
        }
      })(),
    ),
  )

  app.get('/api/metrics', () => ({ ...app.metrics(), uptimeMs: Date.now() - startedAt }))

  return app
}

// The page. Plain JS (no template literals, so it sits in this TS template string as is).
const PAGE = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rat-engine streaming demo</title>
<link rel="icon" href="data:,">
<style>
  :root { --bg: #f4f6fb; --card: #fff; --ink: #1d2433; --muted: #69738a; --line: #e3e7f0;
          --accent: #4f46e5; --ok: #0f9d58; --warn: #d97706; --err: #dc2626; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         background: var(--bg); color: var(--ink); }
  header { background: linear-gradient(120deg, #4f46e5, #7c3aed); color: #fff; padding: 22px 28px; }
  header h1 { margin: 0 0 4px; font-size: 24px; }
  header p { margin: 0; opacity: .9; }
  .toolbar { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; padding: 14px 28px;
             background: var(--card); border-bottom: 1px solid var(--line); }
  #metrics { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; color: var(--muted); }
  main { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 18px; padding: 20px 28px 32px; }
  .panel { background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 16px;
           display: flex; flex-direction: column; min-width: 0; box-shadow: 0 1px 3px rgba(20, 30, 60, .06); }
  .panel h2 { margin: 0; font-size: 17px; display: flex; flex-wrap: wrap; align-items: center; gap: 4px 8px; }
  .panel h2 code { white-space: nowrap; font-size: 13px; background: #eef0fb; color: var(--accent); padding: 2px 6px; border-radius: 6px; }
  .panel .what { margin: 4px 0 10px; min-height: 2.9em; color: var(--muted); font-size: 13px; }
  .howto { font-size: 13.5px; }
  .howto pre { margin: 6px 0 12px; padding: 10px; border-radius: 8px; background: #f1f3f9; font: 12.5px/1.6 ui-monospace, SFMono-Regular, Menlo, monospace; overflow-x: auto; }
  .howto p { margin: 4px 0; color: var(--muted); }
  .row { display: flex; gap: 8px; align-items: center; margin-bottom: 10px; }
  button { font: inherit; font-size: 14px; border: 0; border-radius: 8px; padding: 7px 14px; cursor: pointer;
           background: var(--accent); color: #fff; }
  button.secondary { background: #e8eaf3; color: var(--ink); }
  button:disabled { opacity: .5; cursor: default; }
  .badge { margin-left: auto; font-size: 12px; padding: 3px 9px; border-radius: 999px; background: #eef0f5; color: var(--muted); white-space: nowrap; }
  .badge.streaming { background: #fff4e0; color: var(--warn); }
  .badge.done { background: #e5f6ec; color: var(--ok); }
  .badge.error { background: #fde8e8; color: var(--err); }
  .out { flex: 1; height: 230px; overflow: auto; margin: 0; padding: 10px; border-radius: 8px; background: #0f172a; color: #dbe4ff;
         font: 12.5px/1.5 ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre-wrap; word-break: break-word; }
  .out .t { color: #7c8db5; }
  .out .ev { color: #fbbf24; }
  .out .empty { color: #64748b; font-style: italic; }
  .summary { margin-top: 8px; font-size: 12.5px; color: var(--muted); }
</style>
</head>
<body>
<header>
  <h1>rat-engine streaming demo</h1>
  <p>Server-Sent Events, chunked transfer, NDJSON, text and binary streams, served by a Rust (hyper/tokio) core with routes in TypeScript.</p>
</header>
<div class="toolbar">
  <button id="start-all">▶ Start all streams</button>
  <span id="metrics">metrics: loading…</span>
</div>
<main id="panels"></main>
<script>
'use strict';
var PANELS = [
  { key: 'sse', url: '/sse', title: 'Server-Sent Events', what: 'EventSource: a "connected" event, then a JSON "update" every second.' },
  { key: 'chunked', url: '/chunked', title: 'Chunked transfer', what: 'chunkedResponse().addChunk().addDelay(800): steps 800 ms apart.' },
  { key: 'json', url: '/json-stream', title: 'JSON stream', what: 'jsonStream(): NDJSON, one object per line, read with fetch + a stream reader.' },
  { key: 'text', url: '/text-stream', title: 'Text stream', what: 'textStream(): lines of text as they are produced.' },
  { key: 'binary', url: '/binary-stream', title: 'Binary stream', what: 'binaryStream(): raw bytes; each read shows its size and first bytes.' }
];

// What the page has received, per panel (the browser test reads it).
var demo = window.demo = { panels: {} };

function pad(n, w) { n = String(n); while (n.length < (w || 2)) n = '0' + n; return n; }
function clock() { var d = new Date(); return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + '.' + pad(d.getMilliseconds(), 3); }
function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; }

function build(p) {
  var box = el('section', 'panel'); box.id = 'panel-' + p.key;
  var h = el('h2'); h.appendChild(document.createTextNode(p.title + ' ')); h.appendChild(el('code', null, 'GET ' + p.url));
  box.appendChild(h);
  box.appendChild(el('p', 'what', p.what));
  var row = el('div', 'row');
  var start = el('button', null, 'Start'); start.className = 'start';
  var stop = el('button', 'secondary stop', 'Stop'); stop.disabled = true;
  var badge = el('span', 'badge', 'idle');
  row.appendChild(start); row.appendChild(stop); row.appendChild(badge);
  box.appendChild(row);
  var out = el('pre', 'out'); out.appendChild(el('span', 'empty', 'Press Start to open ' + p.url));
  box.appendChild(out);
  var summary = el('div', 'summary', '\\u00a0');
  box.appendChild(summary);
  document.getElementById('panels').appendChild(box);

  var state = demo.panels[p.key] = { items: 0, bytes: 0, status: 'idle', runs: 0 };
  var ui = { start: start, stop: stop, badge: badge, out: out, summary: summary, t0: 0, cancel: null };

  function status(s, label) {
    state.status = s; badge.className = 'badge ' + s; badge.textContent = label || s;
    stop.disabled = s !== 'streaming';
    start.textContent = state.runs ? 'Restart' : 'Start';
  }
  function line(text, tag) {
    if (state.items === 0 && !out.dataset.used) { out.textContent = ''; out.dataset.used = '1'; }
    var l = el('div');
    l.appendChild(el('span', 't', '[' + clock() + ' +' + (performance.now() - ui.t0).toFixed(0) + 'ms] '));
    if (tag) l.appendChild(el('span', 'ev', tag + ' '));
    l.appendChild(document.createTextNode(text));
    out.appendChild(l);
    out.scrollTop = out.scrollHeight;
  }
  function count(n, bytes) {
    state.items += n; state.bytes += bytes || 0;
    summary.textContent = state.items + (p.key === 'binary' ? ' reads, ' + state.bytes + ' bytes' : ' items') + ' received';
  }
  function run() {
    if (ui.cancel) ui.cancel();
    state.items = 0; state.bytes = 0; state.runs++;
    out.textContent = ''; out.dataset.used = '1'; summary.textContent = '\\u00a0';
    ui.t0 = performance.now();
    status('streaming', 'streaming…');
    ui.cancel = p.key === 'sse' ? runSse(line, count, status) : runFetch(p, line, count, status);
  }
  start.onclick = run;
  stop.onclick = function () { if (ui.cancel) { ui.cancel(); ui.cancel = null; } line('stopped by you'); status('idle', 'stopped'); };
  return run;
}

function runSse(line, count, status) {
  var es = demo.eventSource = new EventSource('/sse');
  es.addEventListener('connected', function (e) { line(e.data, 'connected'); count(1); });
  es.addEventListener('update', function (e) {
    var d = JSON.parse(e.data);
    line('#' + d.counter + ' ' + d.message, 'update'); count(1);
  });
  es.addEventListener('done', function () { line('stream finished', 'done'); es.close(); status('done', 'done'); });
  es.onerror = function () { if (es.readyState === EventSource.CLOSED) { line('connection failed'); status('error', 'error'); } else line('connection lost, reconnecting…'); };
  return function () { es.close(); };
}

function runFetch(p, line, count, status) {
  var ctrl = new AbortController();
  var decoder = new TextDecoder();
  var pending = '';
  function lines(text, flush) {
    pending += text;
    var parts = pending.split('\\n');
    pending = flush ? '' : parts.pop();
    parts.forEach(function (s) {
      if (!s) return;
      if (p.key === 'json') {
        var v = JSON.parse(s);
        line(JSON.stringify(v), '{ }');
      } else line(s);
      count(1);
    });
  }
  fetch(p.url, { signal: ctrl.signal }).then(function (res) {
    line('HTTP ' + res.status + ', ' + (res.headers.get('content-type') || '?'), 'head');
    var reader = res.body.getReader();
    function pump() {
      return reader.read().then(function (r) {
        if (r.done) {
          if (p.key !== 'binary') lines(decoder.decode(), true);
          line('end of stream'); status('done', 'done');
          return;
        }
        if (p.key === 'binary') {
          var hex = Array.prototype.slice.call(r.value, 0, 8).map(function (b) { return pad(b.toString(16)); }).join(' ');
          line(r.value.length + ' bytes: ' + hex + ' …', 'bytes');
          count(1, r.value.length);
        } else lines(decoder.decode(r.value, { stream: true }), false);
        return pump();
      });
    }
    return pump();
  }).catch(function (err) {
    if (err.name === 'AbortError') return;
    line('error: ' + err.message); status('error', 'error');
  });
  return function () { ctrl.abort(); };
}

var runs = PANELS.map(build);
(function howto() {
  var box = el('section', 'panel howto');
  box.appendChild(el('h2', null, 'From a terminal'));
  box.appendChild(el('p', null, 'Every stream works with any HTTP client; -N turns off curl\u2019s buffering:'));
  var cmds = PANELS.map(function (p) { return 'curl -N ' + location.origin + p.url; }).join('\\n');
  box.appendChild(el('pre', null, cmds + '\\ncurl -s ' + location.origin + '/api/metrics'));
  box.appendChild(el('p', null, 'Each panel above opens its stream and prints every piece with the time it arrived (+ms since the start).'));
  document.getElementById('panels').appendChild(box);
})();
document.getElementById('start-all').onclick = function () { runs.forEach(function (run) { run(); }); };

function metrics() {
  fetch('/api/metrics').then(function (r) { return r.json(); }).then(function (m) {
    document.getElementById('metrics').textContent =
      'connections ' + m.activeConnections + ' · requests ' + m.totalRequests + ' · open streams ' + m.activeStreams +
      ' · SSE events ' + m.eventsSent + ' · ' + (m.bytesSent / 1024).toFixed(1) + ' KiB sent · up ' + Math.round(m.uptimeMs / 1000) + ' s';
  }).catch(function () { document.getElementById('metrics').textContent = 'metrics: unavailable'; });
}
metrics();
setInterval(metrics, 1500);
</script>
</body>
</html>
`

if (require.main === module) {
  void serve(createStreamingDemo(), 'rat-engine streaming demo')
}
