/** What IcePortPool.take() throws when every pair is in use: the gateway is at capacity. */
export class IcePortsExhaustedError extends Error {}

/**
 * Hands out the UDP port of each browser peer connection from the configured range.
 *
 * werift, given a port range, probes it from its first port on every new connection (a bind and
 * close per port, so setup slows down as calls accumulate) and binds the free port it found only
 * after closing its probe — two connections set up at the same moment can pick the same port.
 * We give each connection a range of its own instead: a pair of ports [p, p+1] (werift refuses a
 * one-port range) that no other live connection holds, round-robin so ports just freed are not
 * reused at once. werift binds p, or p+1 should something outside the gateway hold p.
 */
export class IcePortPool {
  private readonly inUse = new Set<number>();
  private next: number;

  constructor(private readonly range: [number, number]) {
    this.next = range[0];
  }

  /** The first port of a pair no live connection of ours holds; throws when the range is exhausted. */
  take(): number {
    const pairs = Math.floor((this.range[1] - this.range[0] + 1) / 2);
    for (let i = 0; i < pairs; i++) {
      const p = this.next;
      this.next = p + 3 > this.range[1] ? this.range[0] : p + 2;
      if (!this.inUse.has(p)) {
        this.inUse.add(p);
        return p;
      }
    }
    throw new IcePortsExhaustedError(`no free WebRTC port pair in ${this.range[0]}-${this.range[1]}`);
  }

  /** The range to give werift for a port from take(). */
  static rangeFor(port: number): [number, number] {
    return [port, port + 1];
  }

  release(port: number): void {
    this.inUse.delete(port);
  }

  get used(): number {
    return this.inUse.size;
  }
}
