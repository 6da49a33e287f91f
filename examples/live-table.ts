// The SSE live table (seed 002, sse_table_demo.py): a table that changes on the server and
// is pushed to every browser watching the session.
//
//   npx tsx examples/live-table.ts            (PORT and HOST are honoured)
//
// GET  /                         the page: start/stop, status, stat cards, table, operation log
// GET  /api/data                 the current table as JSON
// POST /api/start                starts a session; returns its 16-character alphanumeric id
// POST /api/stop/:session_id     stops it (its streams get an `end` event and close)
// GET  /api/stream/:session_id   SSE: an `init` snapshot, then add/update/delete/heartbeat/end
// GET  /api/metrics              sessions, connections and the engine's counters
//
// Each session has one broadcast channel (`session:<id>`): the generator publishes each change
// once, and the engine fans it out to every connection of the session.
import { createApp, HttpError, type App, type Channel } from '../ts/index.js'
import { isSessionId, newSessionId, onClose, serve } from './_shared.js'

export interface LiveTableOptions {
  /** Time between table changes, ms. @default 2000 */
  updateIntervalMs?: number
  /** Time between heartbeat events, ms. @default 10000 */
  heartbeatIntervalMs?: number
  /** A session ends by itself after this long, ms. @default 300000 */
  maxSessionMs?: number
  /** Connections allowed per session. @default 5 */
  maxConnectionsPerSession?: number
  /** Connections allowed over all sessions. @default 100 */
  maxTotalConnections?: number
  /** The table never has fewer rows than this. @default 3 */
  minRecords?: number
  /** Random number source in [0, 1) (tests may pass a seeded one). @default Math.random */
  random?: () => number
}

export interface TableRow {
  id: number
  name: string
  age: number
  city: string
  score: number
  status: string
  updated_at: string
}

type Operation = 'add' | 'update' | 'delete'

interface Session {
  id: string
  createdAt: number
  channel: Channel
  generationCount: number
  connections: Set<Connection>
  timers: NodeJS.Timeout[]
}

interface Connection {
  session: Session
}

/** The live table's app, with a view of its sessions for tests and the metrics route. */
export interface LiveTableApp extends App {
  /** Active session ids. */
  sessions(): string[]
  /** Open SSE connections, in total or of one session. */
  connections(sessionId?: string): number
  /** The current table. */
  table(): TableRow[]
}

const FIRST_NAMES = ['Zhang Wei', 'Li Na', 'Wang Fang', 'Liu Yang', 'Chen Jing', 'Yang Lei', 'Zhao Min', 'Huang Li', 'Zhou Tao', 'Wu Xia', 'Xu Ming', 'Sun Yu', 'Ma Lin', 'Zhu Hui', 'Hu Jun', 'Guo Qiang']
const CITIES = ['Beijing', 'Shanghai', 'Guangzhou', 'Shenzhen', 'Hangzhou', 'Chengdu', 'Wuhan', "Xi'an", 'Nanjing']
const STATUSES = ['active', 'idle', 'busy', 'offline']
const OPERATIONS: Operation[] = ['add', 'update', 'delete']
const WEIGHTS = [0.4, 0.5, 0.1]

/** Builds the live table's app (not listening yet). */
export function createLiveTable(options: LiveTableOptions = {}): LiveTableApp {
  const updateIntervalMs = options.updateIntervalMs ?? 2000
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? 10_000
  const maxSessionMs = options.maxSessionMs ?? 300_000
  const maxPerSession = options.maxConnectionsPerSession ?? 5
  const maxTotal = options.maxTotalConnections ?? 100
  const minRecords = options.minRecords ?? 3
  const random = options.random ?? Math.random

  const app = createApp()
  const sessions = new Map<string, Session>()
  let totalConnections = 0
  let nextId = 1

  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]
  const now = () => new Date().toISOString()
  const newRecord = (): TableRow => ({
    id: nextId++,
    name: pick(FIRST_NAMES),
    age: 18 + Math.floor(random() * 48),
    city: pick(CITIES),
    score: Math.round((60 + random() * 40) * 10) / 10,
    status: pick(STATUSES),
    updated_at: now(),
  })
  // One table for the whole app, as in the seed: every session's generator changes it.
  const table: TableRow[] = Array.from({ length: 5 }, newRecord)

  function chooseOperation(): Operation {
    let r = random()
    for (let i = 0; i < OPERATIONS.length; i++) {
      if (r < WEIGHTS[i]) return OPERATIONS[i]
      r -= WEIGHTS[i]
    }
    return 'update'
  }

  // One change to the table, published once to the session's channel.
  function generate(session: Session): void {
    let op = chooseOperation()
    // The seed skips the tick when a delete would go below the minimum; we update instead,
    // so every tick shows something.
    if (op === 'delete' && table.length <= minRecords) op = 'update'
    if (op === 'update' && table.length === 0) op = 'add'
    let record: TableRow
    let message: string
    if (op === 'add') {
      record = newRecord()
      table.push(record)
      message = `Added ${record.name} (#${record.id})`
    } else if (op === 'update') {
      record = pick(table)
      const before = record.score
      record.score = Math.round((60 + random() * 40) * 10) / 10
      record.status = pick(STATUSES)
      record.age = Math.min(65, record.age + (random() < 0.2 ? 1 : 0))
      record.updated_at = now()
      message = `Updated ${record.name} (#${record.id}): score ${before} → ${record.score}, ${record.status}`
    } else {
      record = table.splice(Math.floor(random() * table.length), 1)[0]
      message = `Deleted ${record.name} (#${record.id})`
    }
    session.generationCount++
    session.channel.publish({
      type: op,
      data: record,
      message,
      table_data: table,
      timestamp: now(),
      generation_count: session.generationCount,
    })
  }

  function endSession(session: Session, message: string): void {
    if (sessions.get(session.id) !== session) return
    sessions.delete(session.id)
    for (const t of session.timers) clearTimeout(t)
    session.channel.publish({ type: 'end', session_id: session.id, message, timestamp: now() })
    // Closing the channel ends every subscribed stream; their onClose hooks release the counts.
    app.deleteChannel(session.channel.name)
  }

  function release(conn: Connection): void {
    if (conn.session.connections.delete(conn)) totalConnections--
  }

  // A session id from the path: 400 when malformed, 404 when unknown.
  function sessionOf(id: string): Session {
    if (!isSessionId(id)) throw new HttpError(400, 'invalid session id: expected 16 letters or digits')
    const session = sessions.get(id)
    if (!session) throw new HttpError(404, `unknown session ${id} (it was stopped, expired, or never started)`)
    return session
  }

  app.html('/', PAGE)

  app.get('/api/data', () => ({ status: 'success', data: table, timestamp: now() }))

  app.post('/api/start', () => {
    const id = newSessionId()
    const session: Session = {
      id,
      createdAt: Date.now(),
      // Replay history lets a reconnecting EventSource (Last-Event-ID) catch up.
      channel: app.channel(`session:${id}`, { history: 50 }),
      generationCount: 0,
      connections: new Set(),
      timers: [],
    }
    sessions.set(id, session)
    session.timers.push(
      setInterval(() => generate(session), updateIntervalMs),
      setInterval(() => session.channel.publish({ type: 'heartbeat', timestamp: Date.now() / 1000 }), heartbeatIntervalMs),
      setTimeout(() => endSession(session, `session ended after ${Math.round(maxSessionMs / 1000)} s`), maxSessionMs),
    )
    return { status: 'success', session_id: id, message: 'data generation started', update_interval_ms: updateIntervalMs }
  })

  app.post('/api/stop/:session_id', (req) => {
    const session = sessionOf(req.params.session_id)
    endSession(session, 'data generation stopped')
    return { status: 'success', session_id: session.id, message: 'data generation stopped', generation_count: session.generationCount }
  })

  app.sse('/api/stream/:session_id', (req, stream) => {
    const session = sessionOf(req.params.session_id)
    if (session.connections.size >= maxPerSession) {
      throw new HttpError(429, `too many connections to session ${session.id}: at most ${maxPerSession} per session`)
    }
    if (totalConnections >= maxTotal) {
      throw new HttpError(429, `too many connections: at most ${maxTotal} in total`)
    }
    const conn: Connection = { session }
    session.connections.add(conn)
    totalConnections++
    stream.onClose(() => release(conn))

    stream.send({ type: 'init', session_id: session.id, data: table, timestamp: now(), generation_count: session.generationCount })
    stream.subscribe(session.channel)
  })

  app.get('/api/metrics', () => ({
    active_sessions: sessions.size,
    total_connections: totalConnections,
    table_records: table.length,
    engine: app.metrics(),
  }))

  onClose(app, () => {
    for (const session of [...sessions.values()]) endSession(session, 'server shutting down')
  })

  return Object.assign(app, {
    sessions: () => [...sessions.keys()],
    connections: (id?: string) => (id === undefined ? totalConnections : (sessions.get(id)?.connections.size ?? 0)),
    table: () => table,
  })
}

const PAGE = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rat-engine · SSE live table</title>
<link rel="icon" href="data:,">
<style>
  * { box-sizing: border-box; }
  body { margin: 0; min-height: 100vh; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2937;
         background: linear-gradient(135deg, #667eea 0%, #764ba2 100%); padding: 28px 16px; }
  .wrap { max-width: 1080px; margin: 0 auto; background: rgba(255, 255, 255, .97); border-radius: 16px; padding: 26px 28px;
          box-shadow: 0 20px 50px rgba(30, 20, 70, .25); }
  h1 { margin: 0 0 4px; font-size: 26px; }
  .sub { margin: 0 0 20px; color: #6b7280; }
  .controls { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; margin-bottom: 20px; }
  button { font: inherit; font-weight: 600; border: 0; border-radius: 10px; padding: 10px 20px; cursor: pointer; color: #fff; transition: transform .1s, opacity .2s; }
  button:active { transform: scale(.97); }
  button:disabled { opacity: .45; cursor: default; }
  #start { background: linear-gradient(135deg, #10b981, #059669); }
  #stop { background: linear-gradient(135deg, #ef4444, #dc2626); }
  .status { display: inline-flex; align-items: center; gap: 8px; padding: 7px 14px; border-radius: 999px; background: #f3f4f6; font-size: 14px; }
  .dot { width: 10px; height: 10px; border-radius: 50%; background: #9ca3af; }
  .status.active .dot { background: #10b981; box-shadow: 0 0 0 4px rgba(16, 185, 129, .2); animation: pulse 1.6s infinite; }
  .status.connecting .dot { background: #f59e0b; }
  .status.error .dot { background: #ef4444; }
  @keyframes pulse { 50% { box-shadow: 0 0 0 7px rgba(16, 185, 129, .05); } }
  #session { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; color: #6b7280; }
  .stats { display: grid; grid-template-columns: repeat(3, 1fr); gap: 14px; margin-bottom: 20px; }
  .card { border-radius: 12px; padding: 14px 18px; color: #fff; }
  .card:nth-child(1) { background: linear-gradient(135deg, #3b82f6, #2563eb); }
  .card:nth-child(2) { background: linear-gradient(135deg, #8b5cf6, #7c3aed); }
  .card:nth-child(3) { background: linear-gradient(135deg, #f59e0b, #d97706); }
  .card .label { font-size: 13px; opacity: .9; }
  .card .value { font-size: 30px; font-weight: 700; line-height: 1.2; }
  .grid { display: grid; grid-template-columns: minmax(0, 2fr) minmax(0, 1fr); gap: 18px; }
  @media (max-width: 800px) { .grid { grid-template-columns: 1fr; } .stats { grid-template-columns: 1fr; } }
  h2 { font-size: 16px; margin: 0 0 10px; }
  .table-box { border: 1px solid #e5e7eb; border-radius: 12px; overflow: hidden; }
  table { width: 100%; border-collapse: collapse; font-size: 14px; }
  th { text-align: left; background: #f9fafb; color: #6b7280; font-weight: 600; font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
  th, td { padding: 9px 12px; border-bottom: 1px solid #f0f1f4; white-space: nowrap; }
  tr:last-child td { border-bottom: 0; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  tr.added { animation: added 2s ease-out; }
  tr.updated { animation: updated 2s ease-out; }
  @keyframes added { from { background: #bbf7d0; } to { background: transparent; } }
  @keyframes updated { from { background: #fde68a; } to { background: transparent; } }
  .pill { display: inline-block; padding: 2px 9px; border-radius: 999px; font-size: 12px; font-weight: 600; }
  .pill.active { background: #d1fae5; color: #047857; } .pill.idle { background: #e0e7ff; color: #4338ca; }
  .pill.busy { background: #fef3c7; color: #b45309; } .pill.offline { background: #f3f4f6; color: #6b7280; }
  #log { height: 360px; overflow-y: auto; border: 1px solid #e5e7eb; border-radius: 12px; padding: 8px 10px; background: #fafafa;
         font: 12.5px/1.5 ui-monospace, SFMono-Regular, Menlo, monospace; }
  .entry { padding: 3px 6px; border-left: 3px solid #3b82f6; margin-bottom: 4px; background: #fff; border-radius: 4px; word-break: break-word; }
  .entry.success { border-color: #10b981; } .entry.error { border-color: #ef4444; } .entry.warn { border-color: #f59e0b; }
  .entry time { color: #9ca3af; margin-right: 6px; }
  .empty { color: #9ca3af; text-align: center; padding: 18px; }
</style>
</head>
<body>
<div class="wrap">
  <h1>SSE live table</h1>
  <p class="sub">The server adds, updates and deletes rows every few seconds and pushes each change over Server-Sent Events.</p>
  <div class="controls">
    <button id="start">▶ Start generating</button>
    <button id="stop" disabled>■ Stop</button>
    <span class="status" id="status"><span class="dot"></span><span id="status-text">Not connected</span></span>
    <span id="session"></span>
  </div>
  <div class="stats">
    <div class="card"><div class="label">Records</div><div class="value" id="stat-records">0</div></div>
    <div class="card"><div class="label">Updates</div><div class="value" id="stat-updates">0</div></div>
    <div class="card"><div class="label">Average score</div><div class="value" id="stat-average">–</div></div>
  </div>
  <div class="grid">
    <div>
      <h2>Data</h2>
      <div class="table-box">
        <table>
          <thead><tr><th>ID</th><th>Name</th><th>Age</th><th>City</th><th>Score</th><th>Status</th></tr></thead>
          <tbody id="rows"><tr><td colspan="6" class="empty">Loading…</td></tr></tbody>
        </table>
      </div>
    </div>
    <div>
      <h2>Operation log</h2>
      <div id="log"></div>
    </div>
  </div>
</div>
<script>
'use strict';
function pad(n) { return n < 10 ? '0' + n : String(n); }
function clock() { var d = new Date(); return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()); }
function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; }

function LiveTable() {
  this.sessionId = null;
  this.eventSource = null;
  this.updateCount = 0;
  this.rows = [];
  var self = this;
  document.getElementById('start').onclick = function () { self.start(); };
  document.getElementById('stop').onclick = function () { self.stop(); };
  this.loadInitialData();
}

LiveTable.prototype.loadInitialData = function () {
  var self = this;
  fetch('/api/data').then(function (r) { return r.json(); }).then(function (body) {
    self.render(body.data, null, null);
    self.log('info', 'Loaded ' + body.data.length + ' records');
  }).catch(function (e) { self.log('error', 'Could not load data: ' + e.message); });
};

LiveTable.prototype.start = function () {
  var self = this;
  document.getElementById('start').disabled = true;
  this.setStatus('connecting', 'Starting…');
  fetch('/api/start', { method: 'POST' }).then(function (r) {
    return r.json().then(function (body) { if (!r.ok) throw new Error(body.error || r.statusText); return body; });
  }).then(function (body) {
    self.sessionId = body.session_id;
    self.updateCount = 0;
    document.getElementById('session').textContent = 'session ' + body.session_id;
    self.log('success', 'Session ' + body.session_id + ' started');
    self.connect();
  }).catch(function (e) {
    self.log('error', 'Could not start: ' + e.message);
    self.setStatus('error', 'Error');
    document.getElementById('start').disabled = false;
  });
};

LiveTable.prototype.connect = function () {
  var self = this;
  var es = this.eventSource = new EventSource('/api/stream/' + this.sessionId);
  es.onopen = function () { self.setStatus('active', 'Live'); document.getElementById('stop').disabled = false; };
  es.onmessage = function (e) { self.handle(JSON.parse(e.data)); };
  es.onerror = function () {
    if (es.readyState === EventSource.CLOSED) {
      // Refused (404 after the session ended, 429 over the limit): the browser gives up.
      self.log('error', 'SSE connection closed by the server');
      self.disconnect('error', 'Disconnected');
    } else {
      self.setStatus('connecting', 'Reconnecting…');
      self.log('warn', 'SSE connection lost, reconnecting…');
    }
  };
};

LiveTable.prototype.handle = function (msg) {
  switch (msg.type) {
    case 'init':
      this.render(msg.data, null, null);
      this.log('info', 'Snapshot received: ' + msg.data.length + ' records');
      break;
    case 'add':
    case 'update':
    case 'delete':
      this.updateCount++;
      this.render(msg.table_data, msg.type, msg.data.id);
      this.log(msg.type === 'delete' ? 'warn' : 'success', msg.message);
      break;
    case 'heartbeat':
      this.log('info', '♥ heartbeat');
      break;
    case 'end':
      this.log('info', msg.message);
      this.disconnect('', 'Session ended');
      break;
  }
};

LiveTable.prototype.stop = function () {
  var self = this, id = this.sessionId;
  this.disconnect('', 'Stopped');
  if (!id) return;
  fetch('/api/stop/' + id, { method: 'POST' }).then(function (r) { return r.json(); }).then(function (body) {
    self.log(body.error ? 'error' : 'info', body.error || ('Session ' + id + ' stopped after ' + body.generation_count + ' changes'));
  }).catch(function (e) { self.log('error', 'Stop failed: ' + e.message); });
};

// Closes the EventSource (it stays on window.liveTable.eventSource, readyState 2).
LiveTable.prototype.disconnect = function (cls, text) {
  if (this.eventSource) this.eventSource.close();
  this.setStatus(cls, text);
  document.getElementById('start').disabled = false;
  document.getElementById('stop').disabled = true;
};

LiveTable.prototype.setStatus = function (cls, text) {
  document.getElementById('status').className = 'status ' + (cls || '');
  document.getElementById('status-text').textContent = text;
};

LiveTable.prototype.render = function (data, op, changedId) {
  this.rows = data;
  var body = document.getElementById('rows');
  body.textContent = '';
  if (!data.length) body.appendChild(el('tr')).appendChild(el('td', 'empty', 'No records')).colSpan = 6;
  data.forEach(function (r) {
    var tr = el('tr');
    tr.dataset.id = r.id;
    if (r.id === changedId && op !== 'delete') tr.className = op === 'add' ? 'added' : 'updated';
    tr.appendChild(el('td', 'num', '#' + r.id));
    tr.appendChild(el('td', null, r.name));
    tr.appendChild(el('td', 'num', r.age));
    tr.appendChild(el('td', null, r.city));
    tr.appendChild(el('td', 'num', r.score.toFixed(1)));
    var st = el('td'); st.appendChild(el('span', 'pill ' + r.status, r.status)); tr.appendChild(st);
    body.appendChild(tr);
  });
  document.getElementById('stat-records').textContent = data.length;
  document.getElementById('stat-updates').textContent = this.updateCount;
  var avg = data.length ? data.reduce(function (s, r) { return s + r.score; }, 0) / data.length : null;
  document.getElementById('stat-average').textContent = avg == null ? '–' : avg.toFixed(1);
};

LiveTable.prototype.log = function (kind, text) {
  var box = document.getElementById('log');
  var e = el('div', 'entry ' + kind);
  e.appendChild(el('time', null, clock()));
  e.appendChild(document.createTextNode(text));
  box.appendChild(e);
  while (box.children.length > 200) box.removeChild(box.firstChild);
  box.scrollTop = box.scrollHeight;
};

window.liveTable = new LiveTable();
</script>
</body>
</html>
`

if (require.main === module) {
  void serve(createLiveTable(), 'rat-engine live table')
}
