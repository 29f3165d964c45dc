/**
 * Receive statistics per RTP source (RFC 3550 §6.4, Appendix A.3 and A.8) and a call-quality
 * estimate (a simplified ITU-T G.107 E-model).
 */

/** RFC 3550 A.1's limits: beyond them a sequence number is a discontinuity, not loss or disorder. */
const MAX_DROPOUT = 3000;
const MAX_MISORDER = 100;
/**
 * Sequence numbers remembered up to the highest one, to tell a duplicate from a late packet:
 * the highest and the 63 below it. Smaller than MAX_MISORDER on purpose: a packet 64 to 100
 * behind is still counted (A.1) but only as late, a duplicate of it is not recognised.
 */
const SEQ_WINDOW = 64;

/**
 * Counts per RTP source: `packets` received, and what was odd about their order. RFC 3550
 * A.3's "received" includes duplicates and late packets, so `lost` (expected − received) does
 * not see a late packet as lost, and goes down — even below zero — with duplicates; `duplicates`
 * and `late` say how much of `packets` was which. A packet more than MAX_MISORDER behind the
 * highest is no late packet for A.1 but a possible restart of the numbering: until the next
 * packet confirms the restart it is counted nowhere.
 */
export class ReceiveStats {
  /** Packets counted, duplicates and late ones included (RFC 3550 A.3). */
  packets = 0;
  bytes = 0;
  private baseSeq = -1;
  private maxSeq = 0;
  private cycles = 0;
  /** Interarrival jitter in timestamp units (A.8). */
  jitterTs = 0;
  private lastTransit: number | null = null;
  /**
   * Packets whose sequence number had already been received (within SEQ_WINDOW of the highest),
   * from any source this object has followed. Also in `packets`.
   */
  duplicates = 0;
  /**
   * Packets older than the highest sequence number seen that were not duplicates (reordered on
   * the way; older than SEQ_WINDOW a duplicate is counted here too, it cannot be told). Also in
   * `packets`; each fills a gap, so it is not lost.
   */
  late = 0;
  /**
   * Which of the sequence numbers maxSeq − 63 … maxSeq were received: bit (seq & 63) of a
   * 64-bit ring in two 32-bit words (65536 is a multiple of 64, so the ring survives the wrap).
   */
  private readonly seen = new Uint32Array(SEQ_WINDOW / 32);
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
    if (this.baseSeq < 0) {
      // A new source (or a restart of the numbering): nothing before it is its duplicate.
      this.baseSeq = seq;
      this.maxSeq = seq;
      this.seen.fill(0);
      this.seen[(seq >>> 5) & 1] |= 1 << (seq & 31);
    } else {
      const delta = (seq - this.maxSeq) & 0xffff;
      if (delta > 0 && delta < 0x8000) {
        // Newer: the ring's slots for maxSeq+1 … seq held numbers now out of the window.
        if (delta >= SEQ_WINDOW) this.seen.fill(0);
        else for (let s = this.maxSeq + 1, end = this.maxSeq + delta; s <= end; s++) this.seen[(s >>> 5) & 1] &= ~(1 << (s & 31));
        this.seen[(seq >>> 5) & 1] |= 1 << (seq & 31);
        if (seq < this.maxSeq) this.cycles += 0x10000;
        this.maxSeq = seq;
      } else if (((this.maxSeq - seq) & 0xffff) < SEQ_WINDOW) {
        // The highest itself (delta 0) or up to 63 behind it: the ring knows whether it came.
        const word = (seq >>> 5) & 1;
        const bit = 1 << (seq & 31);
        if (this.seen[word] & bit) this.duplicates++;
        else { this.late++; this.seen[word] |= bit; }
      } else {
        this.late++; // 64 to MAX_MISORDER behind: reordered, or a duplicate the ring has forgotten
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

  /**
   * Cumulative packets lost: expected − received (RFC 3550 A.3), where received counts
   * duplicates too, so it may be negative. A late packet fills its gap: not lost.
   */
  get lost(): number {
    return this.expected - this.packets;
  }

  /**
   * Packets never received: `lost` without duplicates offsetting real losses (a packet sent
   * twice does not make up for one that never came). For our statistics and MOS; RTCP
   * reports carry `lost`, as RFC 3550 defines it.
   */
  get missing(): number {
    return Math.max(0, this.lost + this.duplicates);
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
   * (`packets` is cumulative; restarting `expected` alone made `lost` hugely negative). The
   * record of numbers received starts over with the next packet: the new source's numbers are
   * not the old one's.
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
  /** Packets never received (ReceiveStats.missing: duplicates do not make up for them). */
  packetsLost: number;
  jitterMs: number;
  rttMs: number | null;
  mos: number;
  /** Dropped: malformed, unknown PT, SRTP failures, replays, wrong source. */
  dropped: number;
  /**
   * Packets of the leg's source received again (same sequence number, up to 63 behind the
   * highest; ReceiveStats.duplicates). They are in `packetsReceived` (RFC 3550 A.3) but do not
   * offset `packetsLost` (our RTCP reports' cumulative loss, A.3's, does). With SRTP a
   * duplicate is refused as a replay before it gets here: it is in `dropped` instead.
   */
  duplicates: number;
  /**
   * Packets of the leg's source that came after a higher-numbered one (reordered on the way;
   * ReceiveStats.late). In `packetsReceived`, not lost. What then happened to them is counted
   * where it happened: the SIP leg's reorder stage put them back in sequence or dropped them
   * (`reorder`); the bridge drops the browser's late and duplicate audio, which the browser
   * leg's `dropped` counts too.
   */
  late: number;
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
