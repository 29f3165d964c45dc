/** Token-bucket rate limiting keyed by string, with bounded memory and an injectable clock. */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(private readonly opts: { perMinute: number; burst?: number; now?: () => number; maxKeys?: number }) {}

  /** Takes one token for `key`: 0 = allowed, otherwise ms until one is available. */
  take(key: string): number {
    const now = this.opts.now?.() ?? Date.now();
    const capacity = this.opts.burst ?? this.opts.perMinute;
    const ratePerMs = this.opts.perMinute / 60_000;
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= (this.opts.maxKeys ?? 100_000)) this.evict(now, capacity, ratePerMs);
      b = { tokens: capacity, at: now };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(capacity, b.tokens + (now - b.at) * ratePerMs);
    b.at = now;
    if (b.tokens >= 1) { b.tokens -= 1; return 0; }
    return Math.ceil((1 - b.tokens) / ratePerMs);
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Drops buckets that have refilled (nothing to remember), then the oldest if still full. */
  private evict(now: number, capacity: number, ratePerMs: number): void {
    for (const [k, b] of this.buckets) if (b.tokens + (now - b.at) * ratePerMs >= capacity) this.buckets.delete(k);
    if (this.buckets.size >= (this.opts.maxKeys ?? 100_000)) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
  }
}
