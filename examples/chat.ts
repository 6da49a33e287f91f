// A chat room: messages go up over a WebSocket and come down through a channel, to every
// WebSocket in the room and to anyone reading the same channel over SSE.
//
//   npx tsx examples/chat.ts        (PORT and HOST are honoured)
//
// GET /         the page (WebSocket; `/?via=sse` reads the room over EventSource instead)
// GET /ws       WebSocket: send {"name","text"}; receive each message as JSON text frames
// GET /events   SSE: the same messages as `message` events, with Last-Event-ID replay
import { createApp, type App } from '../ts/index.js'
import { serve } from './_shared.js'

/** A message as the room sees it. */
export interface ChatMessage {
  name: string
  text: string
  at: number
}

const MAX_NAME = 32
const MAX_TEXT = 500

/** Builds the chat's app (not listening yet). */
export function createChat(): App {
  const app = createApp()
  const room = app.channel('chat', { history: 100 })

  app.html('/', PAGE)
  app.sse('/events', room)
  app.ws(
    '/ws',
    {
      open: (ws) => ws.subscribe(room),
      message: (ws, data, isBinary) => {
        if (isBinary) return ws.close(1003, 'text messages only')
        let msg: { name?: unknown; text?: unknown }
        try {
          msg = JSON.parse(data as string)
        } catch {
          return ws.close(1007, 'send JSON: {"name": "...", "text": "..."}')
        }
        const name = typeof msg.name === 'string' && msg.name.trim() ? msg.name.trim().slice(0, MAX_NAME) : 'anonymous'
        const text = typeof msg.text === 'string' ? msg.text.trim().slice(0, MAX_TEXT) : ''
        if (text) room.publish({ name, text, at: Date.now() } satisfies ChatMessage, { event: 'message' })
      },
    },
    { maxPayload: 4096, idleTimeoutMs: 0, compression: true },
  )
  return app
}

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>rat-engine chat</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
  #messages { list-style: none; padding: 0; border: 1px solid #ccc; border-radius: 6px; height: 20rem; overflow-y: auto; }
  #messages li { padding: .3rem .6rem; border-bottom: 1px solid #eee; }
  #messages b { margin-right: .4rem; }
  form { display: flex; gap: .5rem; margin-top: .5rem; }
  #text { flex: 1; }
  #status { color: #666; font-size: 13px; }
</style>
</head>
<body>
<h1>Chat</h1>
<p id="status">connecting...</p>
<ul id="messages"></ul>
<form id="form">
  <input id="name" placeholder="name" size="10" value="guest">
  <input id="text" placeholder="message" autocomplete="off">
  <button id="send">Send</button>
</form>
<script>
(function () {
  var list = document.getElementById('messages');
  var status = document.getElementById('status');
  var via = new URLSearchParams(location.search).get('via') === 'sse' ? 'sse' : 'ws';
  var chat = window.chat = { via: via, received: 0, open: false };
  function show(json) {
    var m = JSON.parse(json);
    var li = document.createElement('li');
    var who = document.createElement('b');
    who.textContent = m.name;
    li.appendChild(who);
    li.appendChild(document.createTextNode(m.text));
    list.appendChild(li);
    list.scrollTop = list.scrollHeight;
    chat.received++;
  }
  var proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  var ws = new WebSocket(proto + '//' + location.host + '/ws');
  ws.onopen = function () { chat.open = true; status.textContent = 'connected (reading over ' + via + ')'; };
  ws.onclose = function (e) { chat.open = false; status.textContent = 'closed (' + e.code + ')'; };
  if (via === 'ws') {
    ws.onmessage = function (e) { show(e.data); };
  } else {
    var es = new EventSource('/events');
    es.addEventListener('message', function (e) { show(e.data); });
  }
  document.getElementById('form').onsubmit = function (e) {
    e.preventDefault();
    var text = document.getElementById('text');
    if (!text.value.trim() || ws.readyState !== 1) return;
    ws.send(JSON.stringify({ name: document.getElementById('name').value, text: text.value }));
    text.value = '';
  };
})();
</script>
</body>
</html>
`

if (require.main === module) {
  void serve(createChat(), 'rat-engine chat')
}
