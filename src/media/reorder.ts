import type { RtpPacketView } from './rtp';

/** Sequence distances of RFC 3550 A.1: beyond them a packet is a discontinuity, not disorder. */
const MAX_MISORDER = 100;
const MAX_DROPOUT = 3000;

/**
 * A small reorder and de-duplication stage for one RTP stream. Packets in order pass straight
 * through (no added delay); a packet that arrives ahead of a gap is held for at most `maxWaitMs`
 * or `depth` packets, waiting for the missing ones; duplicates and packets older than what was
 * already delivered are dropped. `deliver` learns how many packets were given up as lost just
 * before each packet, so the consumer can keep its timeline (advance timestamps, conceal).
 *
 * Packets of the stream that are not audio (comfort noise, telephone events) are pushed too,
 * with `audio` false: they take their place in the numbering without being delivered, so the
 * audio packet after them is not held for a gap that is not one.
 *
 * A sequence number far outside the current run (more than MAX_MISORDER behind, or MAX_DROPOUT
 * ahead, the same SSRC) is a new run only if the next packet follows it (RFC 3550 A.1's
 * probation): a far end that restarted its numbering is followed after one packet, and a single
 * stray packet does not drag the stream away.
 */
export class ReorderBuffer {
  private ssrc: number | null = null;
  private expected = -1;
  /** The sequence number that would confirm a discontinuity seen last (A.1's bad_seq); -1: none. */
  private badSeq = -1;
  private readonly held = new Map<number, { pkt: RtpPacketView; audio: boolean }>();
  private timer: NodeJS.Timeout | null = null;
  /** Packets that arrived after a higher-numbered one and were still put back in their place. */
  reordered = 0;
  /** Duplicates, and packets that came after their place was passed (delivered or given up). */
  dropped = 0;
  /** Missing sequence numbers given up on (the wait ran out): real losses and very late packets. */
  lost = 0;

  constructor(private readonly deliver: (pkt: RtpPacketView, lostBefore: number) => void, private readonly depth = 3, private readonly maxWaitMs = 40) {}

  push(pkt: RtpPacketView, audio = true): void {
    if (pkt.ssrc !== this.ssrc) {
      // A new source (re-INVITE, far-end restart): its sequence numbers start afresh.
      this.releaseAll();
      this.ssrc = pkt.ssrc;
      this.expected = pkt.sequenceNumber;
      this.badSeq = -1;
    }
    const d = (pkt.sequenceNumber - this.expected) & 0xffff;
    const farBehind = d >= 0x8000 && 0x10000 - d > MAX_MISORDER;
    if (farBehind || (d > MAX_DROPOUT && d < 0x8000)) {
      if (pkt.sequenceNumber !== this.badSeq) { this.badSeq = (pkt.sequenceNumber + 1) & 0xffff; this.dropped++; return; }
      // Two in a row: the stream really moved. Start over from this packet.
      this.releaseAll();
      this.badSeq = -1;
      this.emit(pkt, 0, audio);
      return;
    }
    if (d >= 0x8000 || this.held.has(pkt.sequenceNumber)) { this.dropped++; return; } // late or duplicate
    if (this.held.size > 0 && this.heldBeyond(d)) this.reordered++;
    if (d === 0) {
      this.emit(pkt, 0, audio);
      this.drainInOrder();
      return;
    }
    if (d > MAX_MISORDER) {
      // A jump ahead beyond any reordering (a long loss): nothing is worth waiting for.
      this.releaseAll();
      this.emit(pkt, 0, audio);
      return;
    }
    this.held.set(pkt.sequenceNumber, { pkt, audio });
    if (this.held.size > this.depth) this.giveUpGap();
    else if (!this.timer) this.timer = setTimeout(() => { this.timer = null; this.giveUpGap(); }, this.maxWaitMs);
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.held.clear();
  }

  private emit(pkt: RtpPacketView, lostBefore: number, audio: boolean): void {
    this.expected = (pkt.sequenceNumber + 1) & 0xffff;
    this.lost += lostBefore;
    if (audio) this.deliver(pkt, lostBefore);
  }

  private drainInOrder(): void {
    for (let h = this.held.get(this.expected); h; h = this.held.get(this.expected)) {
      this.held.delete(h.pkt.sequenceNumber);
      this.emit(h.pkt, 0, h.audio);
    }
    if (this.held.size === 0 && this.timer) { clearTimeout(this.timer); this.timer = null; }
  }

  /** Whether a packet later than the one `d` ahead of `expected` is held: that one arrived out of order. */
  private heldBeyond(d: number): boolean {
    for (const seq of this.held.keys()) if (((seq - this.expected) & 0xffff) > d) return true;
    return false;
  }

  /** The missing packet is not coming: deliver the earliest held one, counting the gap. */
  private giveUpGap(): void {
    if (this.held.size === 0) return;
    let best: { pkt: RtpPacketView; audio: boolean } | null = null;
    let bestD = Infinity;
    for (const h of this.held.values()) {
      const d = (h.pkt.sequenceNumber - this.expected) & 0xffff;
      if (d < bestD) { bestD = d; best = h; }
    }
    this.held.delete(best!.pkt.sequenceNumber);
    this.emit(best!.pkt, bestD, best!.audio);
    this.drainInOrder();
    if (this.held.size > 0 && !this.timer) this.timer = setTimeout(() => { this.timer = null; this.giveUpGap(); }, this.maxWaitMs);
  }

  private releaseAll(): void {
    while (this.held.size > 0) this.giveUpGap();
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
  }
}
