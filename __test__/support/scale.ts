// CI-sized by default; `RAT_SCALE=full` (what `npm run soak` sets) runs the same tests at
// full scale.
export const full = process.env.RAT_SCALE === 'full'

/** `ci` in the normal test run, `fullValue` under `RAT_SCALE=full`. */
export function scale<T>(ci: T, fullValue: T): T {
  return full ? fullValue : ci
}
