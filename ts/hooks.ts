// Hooks (`app.use`): which routes a hook applies to, decided once per route where the
// pattern allows it and per request where it does not.
import { RatError } from './errors.js'
import type { Reply } from './reply.js'
import type { RatRequest } from './request.js'

/**
 * Runs before a route's handler. Returns nothing to go on, or a `Reply` to answer with it
 * instead of the handler; throws (`HttpError` for a status) to refuse. May be async.
 */
export type Hook = (req: RatRequest) => void | Reply | PromiseLike<void | Reply>

/** A registered hook: `prefix` holds the decoded segments of its path scope, null for all paths. */
export interface HookEntry {
  readonly hook: Hook
  readonly prefix: readonly string[] | null
}

/** A hook as it applies to one route: `under` is null when it applies to every request. @internal */
export interface Applied {
  readonly hook: Hook
  readonly under: readonly string[] | null
}

function decodeSegment(s: string): string {
  if (!s.includes('%')) return s
  try {
    return decodeURIComponent(s)
  } catch {
    return s
  }
}

const isParam = (segment: string): boolean => /^[:*<{]/.test(segment)

/** The decoded segments of a hook's path prefix (`'/api/'` → `['api']`, `'/'` → `[]`). */
export function prefixSegments(prefix: string): string[] {
  if (typeof prefix !== 'string' || !prefix.startsWith('/')) {
    throw new RatError('ERR_INVALID_ARGUMENT', `invalid hook prefix ${JSON.stringify(prefix)}: it must be a path starting with '/', e.g. '/api'`)
  }
  const trimmed = prefix.replace(/\/+$/, '')
  if (trimmed === '') return []
  const segments = trimmed.slice(1).split('/')
  const param = segments.find(isParam)
  if (param !== undefined) {
    throw new RatError('ERR_INVALID_ARGUMENT', `invalid hook prefix ${JSON.stringify(prefix)}: segment ${JSON.stringify(param)} is a parameter; a prefix is a literal path such as '/api/admin'`)
  }
  return segments.map(decodeSegment)
}

/**
 * Whether a path scope covers every request of a route `pattern` (true), none (false), or
 * depends on the values of its parameters (null).
 */
function covers(pattern: string, prefix: readonly string[]): boolean | null {
  const segments = pattern.slice(1).split('/')
  for (let i = 0; i < prefix.length; i++) {
    if (i >= segments.length) return false
    if (isParam(segments[i])) return null
    if (decodeSegment(segments[i]) !== prefix[i]) return false
  }
  return true
}

/** True when the request path (as sent) is `prefix` or below it, segment by segment, decoded. */
export function isUnder(path: string, prefix: readonly string[]): boolean {
  let at = 1
  for (let i = 0; i < prefix.length; i++) {
    if (at > path.length) return false
    let end = path.indexOf('/', at)
    if (end < 0) end = path.length
    if (decodeSegment(path.slice(at, end)) !== prefix[i]) return false
    at = end + 1
  }
  return true
}

/** The hooks that apply to a route, in registration order; empty when none can. */
export function hooksFor(pattern: string, hooks: readonly HookEntry[]): Applied[] {
  const out: Applied[] = []
  for (const { hook, prefix } of hooks) {
    if (prefix === null) {
      out.push({ hook, under: null })
      continue
    }
    const c = covers(pattern, prefix)
    if (c === true) out.push({ hook, under: null })
    else if (c === null) out.push({ hook, under: prefix })
  }
  return out
}
