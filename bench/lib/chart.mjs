// The report's chart, written as plain SVG: one panel per scenario, one horizontal bar per
// server (the median), longest bar = the panel's largest value, our engine in orange and
// the floor in grey so both stand out at a glance.

const WIDTH = 860
const LABEL_W = 220
const VALUE_W = 110
const BAR_H = 16
const GAP = 4
const TITLE_H = 26
const PANEL_GAP = 14
const COLORS = { ours: '#e8590c', floor: '#868e96', peer: '#4c6ef5' }

const esc = (s) => String(s).replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')

/**
 * `panels`: [{ title, rows: [{ label, value, text, kind: 'ours'|'floor'|'peer' }] }].
 * Rows without a value are drawn as "no result". Returns the SVG document.
 */
export function barChart(panels, heading) {
  const parts = []
  let y = 34
  const barMax = WIDTH - LABEL_W - VALUE_W - 20
  for (const panel of panels) {
    parts.push(`<text x="10" y="${y + 16}" class="t">${esc(panel.title)}</text>`)
    y += TITLE_H
    const max = Math.max(0, ...panel.rows.map((r) => r.value ?? 0))
    for (const row of panel.rows) {
      const cy = y + BAR_H / 2 + 4
      parts.push(`<text x="${LABEL_W - 8}" y="${cy}" class="l">${esc(row.label)}</text>`)
      if (row.value === undefined || row.value === null || !(max > 0)) {
        parts.push(`<text x="${LABEL_W}" y="${cy}" class="n">no result</text>`)
      } else {
        const w = Math.max(1, (row.value / max) * barMax)
        parts.push(`<rect x="${LABEL_W}" y="${y}" width="${w.toFixed(1)}" height="${BAR_H}" fill="${COLORS[row.kind]}"/>`)
        parts.push(`<text x="${(LABEL_W + w + 6).toFixed(1)}" y="${cy}" class="v">${esc(row.text)}</text>`)
      }
      y += BAR_H + GAP
    }
    y += PANEL_GAP
  }
  const height = y + 10
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif">
<style>
  .h { font-size: 16px; font-weight: 600; fill: #212529 }
  .t { font-size: 13px; font-weight: 600; fill: #343a40 }
  .l { font-size: 12px; fill: #343a40; text-anchor: end }
  .v { font-size: 12px; fill: #212529 }
  .n { font-size: 12px; fill: #adb5bd; font-style: italic }
</style>
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="10" y="22" class="h">${esc(heading)}</text>
${parts.join('\n')}
</svg>
`
}
