/**
 * Receive statistics per RTP source (RFC 3550 §6.4, Appendix A.3 and A.8) and a call-quality
 * estimate (a simplified ITU-T G.107 E-model).
 */

/** RFC 3550 A.1's limits: beyond them a sequence number is a discontinuity, not loss or disorder. */
const MAX_DROPOUT = 3000;
const MAX_MISORDER = 100;

export class ReceiveStats {
  packets = 0;
  bytes = 0;
  private baseSeq = -1;
  private maxSeq = 0;
  private cycles = 0;
  /** Interarrival jitter in timestamp units (A.8). */
  jitterTs = 0;
  private lastTransit: number | null = null;
  duplicatesOrLate = 0;
  private expectedPrior = 0;
  private receivedPrior = 0;
  /** Packets expected from earlier sources (before resetSource), so `lost` stays continuous. */
  private expectedEarlier = 0;
  /** The sequence number that would confirm a jump seen last (RFC 3550 A.1's bad_seq); -1: none. */
  private badSeq = -1;

  constructor(private clockRate: number) {}

  /** The stream's RTP clock changed (a re-INVITE to another codec): jitter starts over in the new units. */
  setClockRate(rate: number): void {
    if (rate === this.clockRate) return;
    this.clockRate = rate;
    this.jitterTs = 0;
    this.lastTransit = null;
  }

  /**
   * One packet; `arrivalMs` from a monotonic clock. `timed` false for a packet whose timestamp
   * is not its sampling instant — an RFC 4733 telephone-event repeats its event's start time
   * for the whole tone (and may run on another clock): it counts for sequence and loss, but
   * timing it would read a 200 ms key press as 200 ms of network jitter.
   */
  onPacket(seq: number, rtpTs: number, bytes: number, arrivalMs: number, timed = true): void {
    if (this.baseSeq >= 0) {
      // RFC 3550 A.1: a jump beyond any loss or disorder (same source) is a restart of its
      // numbering once the next packet confirms it; until then the packet is not counted.
      const delta = (seq - this.maxSeq) & 0xffff;
      if ((delta > MAX_DROPOUT && delta < 0x8000) || (delta >= 0x8000 && 0x10000 - delta > MAX_MISORDER)) {
        if (seq !== this.badSeq) { this.badSeq = (seq + 1) & 0xffff; return; }
        this.resetSource();
      }
    }
    this.badSeq = -1;
    this.packets++;
    this.bytes += bytes;
    if (this.baseSeq < 0) { this.baseSeq = seq; this.maxSeq = seq; }
    else {
      const delta = (seq - this.maxSeq) & 0xffff;
      if (delta > 0 && delta < 0x8000) {
        if (seq < this.maxSeq) this.cycles += 0x10000;
        this.maxSeq = seq;
      } else if (delta !== 0) {
        // older than the highest seen: late or reordered
      } else {
        this.duplicatesOrLate++;
      }
    }
    if (!timed) return;
    const arrivalTs = (arrivalMs * this.clockRate) / 1000;
    const transit = arrivalTs - rtpTs;
    if (this.lastTransit !== null) {
      let d = transit - this.lastTransit;
      if (d < 0) d = -d;
      // A timestamp jump (new talkspurt, SSRC change) is not jitter.
      if (d < this.clockRate * 10) this.jitterTs += (d - this.jitterTs) / 16;
    }
    this.lastTransit = transit;
  }

  get expected(): number {
    return this.expectedEarlier + this.expectedThisSource();
  }

  private expectedThisSource(): number {
    return this.baseSeq < 0 ? 0 : this.cycles + this.maxSeq - this.baseSeq + 1;
  }

  /** Cumulative packets lost (may be negative with duplicates, RFC 3550 A.3). */
  get lost(): number {
    return this.expected - this.packets;
  }

  get jitterMs(): number {
    return (this.jitterTs / this.clockRate) * 1000;
  }

  get extendedHighestSeq(): number {
    return this.cycles + this.maxSeq;
  }

  /** Fraction lost since the last report, 0..255 (for an RR block), and resets the interval. */
  fractionLostSinceLast(): number {
    const expected = this.expected;
    const expectedInterval = expected - this.expectedPrior;
    const receivedInterval = this.packets - this.receivedPrior;
    this.expectedPrior = expected;
    this.receivedPrior = this.packets;
    const lostInterval = expectedInterval - receivedInterval;
    if (expectedInterval <= 0 || lostInterval <= 0) return 0;
    return Math.min(255, Math.floor((lostInterval << 8) / expectedInterval));
  }

  /**
   * Restart sequence tracking (new SSRC after a re-INVITE); counters are kept, and `expected`
   * carries on from the old source so `lost` and the fraction-lost interval stay continuous
   * (`packets` is cumulative; restarting `expected` alone made `lost` hugely negative).
   */
  resetSource(): void {
    this.expectedEarlier += this.expectedThisSource();
    this.baseSeq = -1;
    this.cycles = 0;
    this.lastTransit = null;
  }
}

/**
 * Mean opinion score from a simplified E-model (ITU-T G.107): R = 93.2 − Id − Ie,eff, with
 * Id from one-way delay (G.107 §3.4 simplified as in ITU-T G.108 Appendix) and Ie,eff from
 * packet loss with the codec's Ie/Bpl (G.113 Appendix I: G.711 Ie=0, Bpl=25.1 with PLC).
 * Returns 1..4.5.
 */
export function estimateMos(opts: { lossPercent: number; oneWayDelayMs: number; jitterMs?: number; ie?: number; bpl?: number }): number {
  // A NaN input (e.g. from a 0/0 upstream) must not turn the score into NaN; ±Infinity clamps.
  const num = (v: number | undefined, dflt: number) => (v === undefined || Number.isNaN(v) ? dflt : v);
  const ie = num(opts.ie, 0);
  const bpl = num(opts.bpl, 25.1);
  // Jitter buffers turn jitter into delay: count twice the jitter as added delay.
  const d = num(opts.oneWayDelayMs, 0) + 2 * num(opts.jitterMs, 0);
  const id = 0.024 * d + (d > 177.3 ? 0.11 * (d - 177.3) : 0);
  const ppl = Math.max(0, Math.min(100, num(opts.lossPercent, 0)));
  const ieEff = ie + (95 - ie) * (ppl / (ppl + bpl));
  const r = Math.max(0, Math.min(100, 93.2 - id - ieEff));
  if (r <= 0) return 1;
  const mos = 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6;
  return Math.round(Math.max(1, Math.min(4.5, mos)) * 100) / 100;
}

export interface LegStats {
  packetsSent: number;
  bytesSent: number;
  packetsReceived: number;
  bytesReceived: number;
  packetsLost: number;
  jitterMs: number;
  rttMs: number | null;
  mos: number;
  /** Dropped: malformed, unknown PT, SRTP failures, replays, wrong source. */
  dropped: number;
  /** SIP leg only: what the gateway's reorder stage did to trunk audio before the browser. */
  reorder?: ReorderStats;
  /**
   * SIP leg of a call where the gateway decoded the trunk's Opus (for a PCMU browser; Opus on
   * both sides passes through, the browser conceals): frames of that audio concealed with PLC
   * (lost or malformed), and lost frames rebuilt from the next packet's in-band FEC.
   */
  concealed?: number;
  fecRecovered?: number;
}

/**
 * Counters of the reorder stage (src/media/reorder.ts) on trunk audio. They are separate from
 * the socket-level `packetsLost`/`dropped`: a packet the stage gave up on and that then came
 * anyway counts in both `givenUp` and `duplicateOrLate`, and in `packetsReceived`.
 */
export interface ReorderStats {
  /** Packets that arrived after a higher-numbered one and were put back in sequence. */
  reordered: number;
  /** Packets dropped as duplicates, or as too late (their place already passed to the browser). */
  duplicateOrLate: number;
  /** Missing packets the stage stopped waiting for (its depth or wait ran out) and concealed. */
  givenUp: number;
}
