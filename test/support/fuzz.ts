/** What the seeded fuzz tests share: a repeatable random source, a timer for growth checks, and failures that name their input. */
import assert from 'node:assert/strict';

export interface Prng { int(n: number): number; pick<T>(a: readonly T[]): T; bytes(n: number): Buffer }

/** xorshift32: the same inputs on every run (a failure names its seed and round). */
export function prng(seed: number): Prng {
  let x = seed >>> 0 || 1;
  const next = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  const int = (n: number) => next() % n;
  return {
    int,
    pick: (a) => a[int(a.length)],
    bytes: (n) => { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = next() & 0xff; return b; },
  };
}

/** Milliseconds for one call of `fn`: the best of a few batches, each long enough to time. */
export function timeOf(fn: () => void): number {
  let reps = 1;
  for (;;) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < reps; i++) fn();
    if (Number(process.hrtime.bigint() - t0) / 1e6 >= 5 || reps >= 4096) break;
    reps *= 4;
  }
  let best = Infinity;
  for (let k = 0; k < 5; k++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < reps; i++) fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6 / reps);
  }
  return best;
}

/**
 * Runs `fn`; an assertion failing in it gets `what()` (the input) put in front of its message,
 * and anything else it throws fails the test naming the input. Built only on failure: the
 * input of a passing round is never formatted.
 */
export function explain<T>(what: () => string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof assert.AssertionError) {
      // The reporter prints the stack, written when the error was made: the input goes there too.
      const before = err.message;
      err.message = `${what()}\n${before}`;
      if (err.stack?.includes(before)) err.stack = err.stack.replace(before, err.message);
    }
    else assert.fail(`${what()}: threw ${(err as Error)?.stack ?? String(err)}`);
    throw err;
  }
}
