// About 1 KiB of JSON trade rows per message: data that compresses as real data does (as
// bench/peers/common.mjs makes them with PUB_BYTES=1024).
let seq = 0

export function nextMessage () {
  const s = seq++
  let out = ''
  for (let r = 0; out.length < 1024 - 40; r++) {
    const i = s * 31 + r
    out += `${r ? ',' : ''}{"id":${i},"sym":"SYM${(i * 7) % 50}","price":${100 + ((i * 13) % 900)}.${(i * 31) % 100},"qty":${(i * 17) % 1000},"side":"${i % 2 ? 'sell' : 'buy'}"}`
  }
  return `{"seq":${s},"rows":[${out}]}`
}

/** Events a GET /go publishes, and the interval between them. */
export const EVENTS = 100
export const EVERY_MS = 20
