/** Token-bucket rate limiting keyed by string, with bounded memory and an injectable clock. */

/**
 * Bucket contents are counted in 1/60 000ths of a token, so a refill of `perMinute` units per
 * millisecond is exact integer arithmetic (no floating-point drift in the retry-after value).
 */
const UNIT = 60_000;

export class RateLimiter {
  private readonly buckets = new Map<string, { units: number; at: number }>();

  constructor(private readonly opts: { perMinute: number; burst?: number; now?: () => number; maxKeys?: number }) {}

  /** Takes one token for `key`: 0 = allowed, otherwise ms until one is available. */
  take(key: string): number {
    const now = this.opts.now?.() ?? Date.now();
    const capacity = (this.opts.burst ?? this.opts.perMinute) * UNIT;
    const rate = this.opts.perMinute; // units per ms
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= (this.opts.maxKeys ?? 100_000)) this.evict(now, capacity, rate);
      b = { units: capacity, at: now };
    } else {
      this.buckets.delete(key); // re-inserted below: Map order is then least recently used first
    }
    this.buckets.set(key, b);
    // A clock that steps backwards refills nothing (and must not take tokens away).
    b.units = Math.min(capacity, b.units + Math.max(0, now - b.at) * rate);
    b.at = now;
    if (b.units >= UNIT) { b.units -= UNIT; return 0; }
    return Math.ceil((UNIT - b.units) / rate);
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Drops buckets that have refilled (nothing to remember), then the least recently used. */
  private evict(now: number, capacity: number, rate: number): void {
    for (const [k, b] of this.buckets) if (b.units + Math.max(0, now - b.at) * rate >= capacity) this.buckets.delete(k);
    if (this.buckets.size >= (this.opts.maxKeys ?? 100_000)) {
      const leastRecent = this.buckets.keys().next().value;
      if (leastRecent !== undefined) this.buckets.delete(leastRecent);
    }
  }
}
