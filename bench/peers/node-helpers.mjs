// Raw node:http response writers shared by the peers built on node:http (node-http,
// better-sse, and fastify's /chunked, which no SSE library covers).

export function badRequest (res) {
  res.writeHead(400, { 'content-type': 'text/plain' }).end('bad query')
}

/**
 * Writes `produce(i)` for i = 0..count-1, pausing on a full socket buffer until 'drain',
 * then ends the response.
 */
export function pump (res, count, produce) {
  let i = 0
  const step = () => {
    while (i < count) {
      if (!res.write(produce(i++))) return res.once('drain', step)
    }
    res.end()
  }
  step()
}

/** /chunked: `bytes` in `size`-byte writes of one reused buffer (the last one shorter). */
export function writeChunked (res, { bytes, size }) {
  const buf = Buffer.alloc(size)
  const writes = Math.ceil(bytes / size)
  const tail = buf.subarray(0, bytes - (writes - 1) * size)
  res.writeHead(200, { 'content-type': 'application/octet-stream' })
  pump(res, writes, (i) => (i === writes - 1 ? tail : buf))
}
