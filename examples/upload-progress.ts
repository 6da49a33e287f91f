// Upload progress over SSE (seed 001, the upload progress stream).
//
//   npx tsx examples/upload-progress.ts       (PORT and HOST are honoured)
//
// GET  /                                  the page: pick a file, upload it, watch the progress
// POST /api/upload                        {filename, size, type} → a session (id and URLs)
// POST /api/upload/:session_id            the file itself, one POST, read as it arrives
// GET  /api/progress/:session_id          SSE: init, progress…, completed (or heartbeat meanwhile)
// GET  /api/download/:session_id          the uploaded file, once complete
//
// The upload route streams its request body (`streamBody: true`): the handler reads the
// body chunk by chunk as the client sends it and publishes progress to the session's
// channel. A slow reader slows the client through TCP backpressure; nothing piles up in
// the server.
import { createHash } from 'node:crypto'
import { createApp, HttpError, reply, type App, type Channel } from '../ts/index.js'
import { isSessionId, newSessionId, onClose, serve } from './_shared.js'

export interface UploadProgressOptions {
  /** Publish a progress event every time at least this many more bytes arrived. @default 65536 */
  progressStepBytes?: number
  /** Largest file accepted, bytes. @default 52428800 (50 MiB) */
  maxFileBytes?: number
  /** Time between heartbeat events on a progress stream, ms. @default 10000 */
  heartbeatIntervalMs?: number
  /**
   * Pause after each chunk read, ms: an artificial "processing" delay so that progress is
   * visible on localhost, where an upload is otherwise instant. The client is paced by TCP
   * backpressure meanwhile. @default 15
   */
  readDelayMs?: number
  /** A session and its file are dropped this long after it was created, ms. @default 600000 */
  sessionTtlMs?: number
}

interface UploadSession {
  id: string
  filename: string
  type: string
  size: number
  received: number
  receiving: boolean
  chunks: Buffer[]
  file: Buffer | null
  sha256: string | null
  channel: Channel
  startedAt: number
  expiry: NodeJS.Timeout
}

/** The upload demo's app, with a view of its sessions for tests. */
export interface UploadProgressApp extends App {
  /** Ids of the sessions kept now. */
  sessions(): string[]
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Builds the upload demo's app (not listening yet). */
export function createUploadProgress(options: UploadProgressOptions = {}): UploadProgressApp {
  const progressStepBytes = options.progressStepBytes ?? 64 * 1024
  const maxFileBytes = options.maxFileBytes ?? 50 * 1024 * 1024
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? 10_000
  const readDelayMs = options.readDelayMs ?? 15
  const sessionTtlMs = options.sessionTtlMs ?? 600_000

  const app = createApp()
  const sessions = new Map<string, UploadSession>()
  const pct = (s: UploadSession) => (s.size === 0 ? 100 : Math.round((s.received / s.size) * 1000) / 10)

  function sessionOf(id: string): UploadSession {
    if (!isSessionId(id)) throw new HttpError(400, 'invalid session id: expected 16 letters or digits')
    const session = sessions.get(id)
    if (!session) throw new HttpError(404, `unknown upload session ${id} (expired or never created)`)
    return session
  }

  const completedEvent = (s: UploadSession) => ({
    type: 'completed',
    session_id: s.id,
    filename: s.filename,
    file_size: s.size,
    sha256: s.sha256,
    download_url: `/api/download/${s.id}`,
    progress: 100,
    elapsed_ms: Date.now() - s.startedAt,
  })

  function complete(s: UploadSession): void {
    s.file = Buffer.concat(s.chunks, s.size)
    s.chunks = []
    s.sha256 = createHash('sha256').update(s.file).digest('hex')
    s.channel.publish(completedEvent(s))
    // Ends every progress stream of this session after the completed event.
    app.deleteChannel(s.channel.name)
  }

  function drop(s: UploadSession): void {
    clearTimeout(s.expiry)
    sessions.delete(s.id)
    if (!s.channel.closed) {
      s.channel.publish({ type: 'error', session_id: s.id, message: 'upload session expired' })
      app.deleteChannel(s.channel.name)
    }
  }

  app.html('/', PAGE)

  app.post('/api/upload', async (req) => {
    const body = await req.json<{ filename?: unknown; size?: unknown; type?: unknown }>()
    const filename = typeof body.filename === 'string' && body.filename.trim() ? body.filename.trim().slice(0, 255) : 'upload.bin'
    const size = body.size
    if (typeof size !== 'number' || !Number.isInteger(size) || size < 0) throw new HttpError(400, '"size" must be the file size in bytes')
    if (size > maxFileBytes) throw new HttpError(413, `file too large: at most ${maxFileBytes} bytes`)
    const type = typeof body.type === 'string' && /^[\w.+-]+\/[\w.+-]+$/.test(body.type) ? body.type : 'application/octet-stream'
    const id = newSessionId()
    const session: UploadSession = {
      id,
      filename,
      type,
      size,
      received: 0,
      receiving: false,
      chunks: [],
      file: null,
      sha256: null,
      channel: app.channel(`upload:${id}`, { history: 20 }),
      startedAt: Date.now(),
      expiry: setTimeout(() => drop(session), sessionTtlMs),
    }
    sessions.set(id, session)
    if (size === 0) complete(session)
    return {
      session_id: id,
      upload_url: `/api/upload/${id}`,
      progress_url: `/api/progress/${id}`,
    }
  })

  const progressEvent = (s: UploadSession) => ({ type: 'progress', session_id: s.id, received: s.received, total: s.size, progress: pct(s) })

  // The file in one POST, read as it arrives: progress is published as bytes come in.
  app.post(
    '/api/upload/:session_id',
    async (req) => {
      const s = sessionOf(req.params.session_id)
      if (s.file) throw new HttpError(409, 'this upload is already complete')
      if (s.receiving) throw new HttpError(409, 'an upload for this session is already in progress')
      s.receiving = true
      let published = 0
      try {
        for await (const chunk of req.stream()) {
          if (s.received + chunk.length > s.size) throw new HttpError(400, `the body goes past the announced size of ${s.size} bytes`)
          s.chunks.push(chunk)
          s.received += chunk.length
          if (s.received - published >= progressStepBytes || s.received === s.size) {
            published = s.received
            s.channel.publish(progressEvent(s)) // once, to every watcher of the session
          }
          if (readDelayMs > 0) await sleep(readDelayMs)
        }
        if (s.received !== s.size) throw new HttpError(400, `the body ended after ${s.received} of ${s.size} bytes`)
      } catch (err) {
        // Start over on the next attempt, and tell the watchers.
        s.chunks = []
        s.received = 0
        s.channel.publish({ type: 'reset', session_id: s.id, message: err instanceof Error ? err.message : String(err) })
        throw err
      } finally {
        s.receiving = false
      }
      complete(s)
      return { received: s.received, total: s.size, progress: 100, completed: true }
    },
    { streamBody: true, bodyLimit: maxFileBytes },
  )

  app.sse('/api/progress/:session_id', (req, stream) => {
    const s = sessionOf(req.params.session_id)
    stream.send({ type: 'init', session_id: s.id, filename: s.filename, file_size: s.size, received: s.received, progress: pct(s), completed: s.file !== null })
    if (s.file) {
      stream.send(completedEvent(s))
      stream.end()
      return
    }
    stream.subscribe(s.channel)
    const heartbeat = setInterval(() => stream.send({ type: 'heartbeat', timestamp: Date.now() / 1000 }), heartbeatIntervalMs)
    stream.onClose(() => clearInterval(heartbeat))
  })

  app.get('/api/download/:session_id', (req) => {
    const s = sessionOf(req.params.session_id)
    if (!s.file) throw new HttpError(409, `upload not complete yet (${s.received} of ${s.size} bytes)`)
    const ascii = s.filename.replace(/[^\x20-\x7e]|["\\]/g, '_')
    return reply(s.file, {
      headers: {
        'content-type': s.type,
        'content-disposition': `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(s.filename)}`,
      },
    })
  })

  onClose(app, () => {
    for (const s of [...sessions.values()]) drop(s)
  })

  return Object.assign(app, { sessions: () => [...sessions.keys()] })
}

const PAGE = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rat-engine · upload progress</title>
<link rel="icon" href="data:,">
<style>
  * { box-sizing: border-box; }
  body { margin: 0; min-height: 100vh; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2937;
         background: #eef2f7; padding: 32px 16px; }
  .wrap { max-width: 760px; margin: 0 auto; background: #fff; border-radius: 16px; padding: 28px; box-shadow: 0 10px 30px rgba(20, 40, 80, .1); }
  h1 { margin: 0 0 4px; font-size: 24px; }
  .sub { margin: 0 0 22px; color: #6b7280; }
  .pick { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; padding: 18px; border: 2px dashed #c7d2fe; border-radius: 12px; background: #f8faff; }
  .pick input[type=file] { flex: 1; min-width: 220px; font: inherit; color: #374151; }
  .pick input[type=file]::file-selector-button { font: inherit; margin-right: 12px; padding: 8px 16px; border: 1px solid #c7d2fe; border-radius: 10px; background: #fff; color: #4338ca; font-weight: 600; cursor: pointer; }
  button { font: inherit; font-weight: 600; border: 0; border-radius: 10px; padding: 10px 22px; cursor: pointer; color: #fff; background: #4f46e5; }
  button:disabled { opacity: .45; cursor: default; }
  .bar { position: relative; height: 30px; margin: 22px 0 8px; border-radius: 999px; background: #e5e7eb; overflow: hidden; }
  #bar-fill { height: 100%; width: 0; background: linear-gradient(90deg, #6366f1, #22c55e); transition: width .2s; }
  #bar-text { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center; font-weight: 700; font-size: 14px; color: #111827; }
  #details { color: #6b7280; font-size: 14px; min-height: 21px; }
  #result { margin: 14px 0 0; padding: 12px 16px; border-radius: 10px; background: #ecfdf5; color: #065f46; display: none; word-break: break-all; }
  #result a { color: #047857; font-weight: 600; }
  h2 { font-size: 15px; margin: 24px 0 8px; }
  #events { height: 220px; overflow-y: auto; margin: 0; padding: 10px 12px; border-radius: 10px; background: #0f172a; color: #dbe4ff;
            font: 12.5px/1.5 ui-monospace, SFMono-Regular, Menlo, monospace; }
  #events .t { color: #7c8db5; } #events .k { color: #fbbf24; }
  .note { margin-top: 18px; font-size: 13px; color: #6b7280; }
</style>
</head>
<body>
<div class="wrap">
  <h1>Upload with live progress</h1>
  <p class="sub">The file goes up in one POST; the server reads it as it arrives and reports its progress over Server-Sent Events.</p>
  <div class="pick">
    <input type="file" id="file">
    <button id="upload" disabled>Upload</button>
  </div>
  <div class="bar"><div id="bar-fill"></div><div id="bar-text">0%</div></div>
  <div id="details">Choose a file to start.</div>
  <div id="result"></div>
  <h2>Progress stream events</h2>
  <pre id="events"></pre>
  <p class="note">The percentages are the server's own count of bytes received: the route streams its request body
  (<code>streamBody: true</code>), and this demo reads slowly on purpose so the bar is visible on localhost.</p>
</div>
<script>
'use strict';
var state = window.upload = { progress: 0, events: [], eventSource: null, done: false, error: null };
var fileInput = document.getElementById('file');
var button = document.getElementById('upload');

function pad(n, w) { n = String(n); while (n.length < (w || 2)) n = '0' + n; return n; }
function clock() { var d = new Date(); return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + '.' + pad(d.getMilliseconds(), 3); }
function size(n) { return n < 1024 ? n + ' B' : n < 1048576 ? (n / 1024).toFixed(1) + ' KiB' : (n / 1048576).toFixed(2) + ' MiB'; }
function log(kind, text) {
  var box = document.getElementById('events');
  var line = document.createElement('div');
  var t = document.createElement('span'); t.className = 't'; t.textContent = '[' + clock() + '] ';
  var k = document.createElement('span'); k.className = 'k'; k.textContent = kind + ' ';
  line.appendChild(t); line.appendChild(k); line.appendChild(document.createTextNode(text));
  box.appendChild(line); box.scrollTop = box.scrollHeight;
}
function setProgress(p) {
  state.progress = p;
  document.getElementById('bar-fill').style.width = p + '%';
  document.getElementById('bar-text').textContent = (p === 100 ? '100' : p.toFixed(1)) + '%';
}
function postJson(url, body) {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    .then(function (r) { return r.json().then(function (b) { if (!r.ok) throw new Error(b.error || r.statusText); return b; }); });
}

fileInput.onchange = function () {
  var f = fileInput.files[0];
  button.disabled = !f;
  if (f) document.getElementById('details').textContent = f.name + ' · ' + size(f.size);
};

// Opens the progress stream and resolves once its init event is in.
function watch(session) {
  return new Promise(function (resolve) {
    var es = state.eventSource = new EventSource(session.progress_url);
    es.onmessage = function (e) {
      var m = JSON.parse(e.data);
      state.events.push(m);
      if (m.type === 'init') { log('init', m.filename + ', ' + size(m.file_size) + ', ' + m.progress + '%'); resolve(); }
      else if (m.type === 'progress') {
        setProgress(m.progress);
        var secs = (performance.now() - state.t0) / 1000;
        document.getElementById('details').textContent = size(m.received) + ' of ' + size(m.total) + ' · ' + size(m.received / Math.max(secs, 0.001)) + '/s';
        log('progress', m.progress + '% (' + m.received + ' / ' + m.total + ' bytes)');
      } else if (m.type === 'completed') {
        setProgress(100);
        state.done = true;
        es.close();
        log('completed', m.filename + ' in ' + m.elapsed_ms + ' ms');
        var r = document.getElementById('result');
        r.style.display = 'block';
        r.textContent = '\u2713 Uploaded ' + m.filename + ' (' + size(m.file_size) + '). sha256 ' + m.sha256 + ' · ';
        var a = document.createElement('a'); a.id = 'download'; a.href = m.download_url; a.textContent = 'Download it back'; a.setAttribute('download', m.filename);
        r.appendChild(a);
        button.disabled = false;
      } else if (m.type === 'heartbeat') log('heartbeat', new Date(m.timestamp * 1000).toLocaleTimeString());
      else if (m.type === 'reset') log('reset', m.message);
      else if (m.type === 'error') { log('error', m.message); es.close(); }
    };
    es.onerror = function () { if (es.readyState === EventSource.CLOSED && !state.done) log('error', 'progress stream closed'); };
  });
}

function sendFile(file, session) {
  return fetch(session.upload_url, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: file })
    .then(function (r) { return r.json().then(function (b) { if (!r.ok) throw new Error(b.error || r.statusText); return b; }); });
}

button.onclick = function () {
  var file = fileInput.files[0];
  if (!file) return;
  button.disabled = true;
  state.done = false; state.events = []; state.error = null;
  if (state.eventSource) state.eventSource.close();
  document.getElementById('result').style.display = 'none';
  document.getElementById('events').textContent = '';
  setProgress(0);
  state.t0 = performance.now();
  postJson('/api/upload', { filename: file.name, size: file.size, type: file.type })
    .then(function (session) { log('session', session.session_id); return watch(session).then(function () { return sendFile(file, session); }); })
    .catch(function (e) { state.error = e.message; log('error', e.message); button.disabled = false; });
};
</script>
</body>
</html>
`

if (require.main === module) {
  void serve(createUploadProgress(), 'rat-engine upload progress')
}
