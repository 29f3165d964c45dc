import type { RtpPacketView } from './rtp';

/**
 * A small reorder and de-duplication stage for one RTP stream. Packets in order pass straight
 * through (no added delay); a packet that arrives ahead of a gap is held for at most `maxWaitMs`
 * or `depth` packets, waiting for the missing ones; duplicates and packets older than what was
 * already delivered are dropped. `deliver` learns how many packets were given up as lost just
 * before each packet, so the consumer can keep its timeline (advance timestamps, conceal).
 */
export class ReorderBuffer {
  private ssrc: number | null = null;
  private expected = -1;
  private readonly held = new Map<number, RtpPacketView>();
  private timer: NodeJS.Timeout | null = null;
  /** Packets that arrived after a higher-numbered one and were still put back in their place. */
  reordered = 0;
  /** Duplicates, and packets that came after their place was passed (delivered or given up). */
  dropped = 0;
  /** Missing sequence numbers given up on (the wait ran out): real losses and very late packets. */
  lost = 0;

  constructor(private readonly deliver: (pkt: RtpPacketView, lostBefore: number) => void, private readonly depth = 3, private readonly maxWaitMs = 40) {}

  push(pkt: RtpPacketView): void {
    if (pkt.ssrc !== this.ssrc) {
      // A new source (re-INVITE, far-end restart): its sequence numbers start afresh.
      this.releaseAll();
      this.ssrc = pkt.ssrc;
      this.expected = pkt.sequenceNumber;
    }
    const d = (pkt.sequenceNumber - this.expected) & 0xffff;
    if (d >= 0x8000 || this.held.has(pkt.sequenceNumber)) { this.dropped++; return; } // late or duplicate
    if (this.held.size > 0 && this.heldBeyond(d)) this.reordered++;
    if (d === 0) {
      this.emit(pkt, 0);
      this.drainInOrder();
      return;
    }
    if (d > 100) {
      // A jump far ahead is a discontinuity, not reordering: resynchronise on it.
      this.releaseAll();
      this.expected = pkt.sequenceNumber;
      this.emit(pkt, 0);
      return;
    }
    this.held.set(pkt.sequenceNumber, pkt);
    if (this.held.size > this.depth) this.giveUpGap();
    else if (!this.timer) this.timer = setTimeout(() => { this.timer = null; this.giveUpGap(); }, this.maxWaitMs);
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.held.clear();
  }

  private emit(pkt: RtpPacketView, lostBefore: number): void {
    this.expected = (pkt.sequenceNumber + 1) & 0xffff;
    this.lost += lostBefore;
    this.deliver(pkt, lostBefore);
  }

  private drainInOrder(): void {
    for (let p = this.held.get(this.expected); p; p = this.held.get(this.expected)) {
      this.held.delete(p.sequenceNumber);
      this.emit(p, 0);
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
    let best: RtpPacketView | null = null;
    let bestD = Infinity;
    for (const p of this.held.values()) {
      const d = (p.sequenceNumber - this.expected) & 0xffff;
      if (d < bestD) { bestD = d; best = p; }
    }
    this.held.delete(best!.sequenceNumber);
    this.emit(best!, bestD);
    this.drainInOrder();
    if (this.held.size > 0 && !this.timer) this.timer = setTimeout(() => { this.timer = null; this.giveUpGap(); }, this.maxWaitMs);
  }

  private releaseAll(): void {
    while (this.held.size > 0) this.giveUpGap();
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
  }
}
