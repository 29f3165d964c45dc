import dgram from 'node:dgram';

/**
 * What PortAllocator.allocate() throws when no RTP/RTCP pair of the range can be had: the
 * gateway is at capacity (as with IcePortsExhaustedError for the WebRTC side).
 */
export class RtpPortsExhaustedError extends Error {}

/**
 * Hands out RTP/RTCP socket pairs from a configured range: an even port for RTP and the next
 * odd one for RTCP (RFC 3550 §11). A port is never handed out twice; ports the OS refuses
 * (in use by someone else) are skipped; `release` returns the pair.
 */
export class PortAllocator {
  private readonly inUse = new Set<number>();
  private next: number;
  private readonly first: number;
  private readonly last: number;

  constructor(range: [number, number], private readonly host: string) {
    this.first = range[0] % 2 === 0 ? range[0] : range[0] + 1;
    this.last = range[1];
    if (this.last - this.first < 1) throw new Error(`media port range ${range[0]}-${range[1]} holds no even/odd pair`);
    this.next = this.first;
  }

  get capacity(): number {
    return Math.floor((this.last - this.first + 1) / 2);
  }

  get allocated(): number {
    return this.inUse.size;
  }

  /** Binds an RTP/RTCP socket pair; rejects with RtpPortsExhaustedError when the range is exhausted. */
  async allocate(): Promise<{ port: number; rtp: dgram.Socket; rtcp: dgram.Socket }> {
    for (let tries = 0; tries < this.capacity; tries++) {
      const port = this.next;
      this.next = this.next + 2 > this.last - 1 ? this.first : this.next + 2;
      if (this.inUse.has(port)) continue;
      this.inUse.add(port);
      const rtp = await bind(port, this.host);
      if (!rtp) { this.inUse.delete(port); continue; }
      const rtcp = await bind(port + 1, this.host);
      if (!rtcp) { rtp.close(); this.inUse.delete(port); continue; }
      return { port, rtp, rtcp };
    }
    throw new RtpPortsExhaustedError(`no free media ports in ${this.first}-${this.last} (${this.inUse.size} pairs in use)`);
  }

  release(port: number): void {
    this.inUse.delete(port);
  }
}

function bind(port: number, host: string): Promise<dgram.Socket | null> {
  return new Promise((resolve) => {
    const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const onError = () => { s.close(); resolve(null); };
    s.once('error', onError);
    s.bind(port, host, () => { s.off('error', onError); resolve(s); });
  });
}
