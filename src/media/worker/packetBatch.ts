import type { RtpPacketView } from '../rtp';

/**
 * RTP packets crossing between the main thread and a media worker, many to one message: one
 * postMessage per event-loop turn and direction instead of one per packet (each costs a
 * structured clone and a wake-up of the other thread). Packed into one ArrayBuffer that is
 * transferred, not copied:
 *
 *   per packet: u32 bridge id | u8 payload type | u8 marker | u16 sequence | u32 timestamp |
 *               u32 SSRC | u16 payload length | payload
 */
const HEADER = 18;
const INITIAL = 16 * 1024;

export class PacketBatchWriter {
  private buf = Buffer.allocUnsafe(INITIAL);
  private used = 0;
  private packets = 0;

  get count(): number {
    return this.packets;
  }

  add(bridgeId: number, pkt: RtpPacketView): void {
    const len = pkt.payload.length;
    if (len > 0xffff) return; // not an RTP packet a UDP datagram could carry
    this.reserve(HEADER + len);
    const b = this.buf;
    let o = this.used;
    b.writeUInt32LE(bridgeId, o);
    b[o + 4] = pkt.payloadType & 0x7f;
    b[o + 5] = pkt.marker ? 1 : 0;
    b.writeUInt16LE(pkt.sequenceNumber & 0xffff, o + 6);
    b.writeUInt32LE(pkt.timestamp >>> 0, o + 8);
    b.writeUInt32LE(pkt.ssrc >>> 0, o + 12);
    b.writeUInt16LE(len, o + 16);
    o += HEADER;
    b.set(pkt.payload, o);
    this.used = o + len;
    this.packets++;
  }

  /** The packed batch as its own ArrayBuffer (to transfer), and an empty writer again. */
  take(): ArrayBuffer {
    const out = new ArrayBuffer(this.used);
    new Uint8Array(out).set(this.buf.subarray(0, this.used));
    this.used = 0;
    this.packets = 0;
    return out;
  }

  private reserve(n: number): void {
    if (this.used + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.used + n));
    this.buf.copy(bigger, 0, 0, this.used);
    this.buf = bigger;
  }
}

/**
 * Calls `each` for every packet in a batch. The payloads are views into the batch (no copy):
 * valid during the call only, like a datagram's buffer. A truncated batch stops at the damage.
 */
export function readPacketBatch(batch: ArrayBuffer, each: (bridgeId: number, pkt: RtpPacketView) => void, onThrow: (bridgeId: number, err: unknown) => void): void {
  const b = Buffer.from(batch);
  let o = 0;
  while (o + HEADER <= b.length) {
    const len = b.readUInt16LE(o + 16);
    if (o + HEADER + len > b.length) return;
    const bridgeId = b.readUInt32LE(o);
    // One call's packet that cannot be delivered must not cost the other calls in the batch
    // theirs: the batch goes on, and the caller decides what becomes of that call.
    try {
      each(bridgeId, {
        payloadType: b[o + 4],
        marker: b[o + 5] === 1,
        sequenceNumber: b.readUInt16LE(o + 6),
        timestamp: b.readUInt32LE(o + 8),
        ssrc: b.readUInt32LE(o + 12),
        payload: b.subarray(o + HEADER, o + HEADER + len),
      });
    } catch (err) {
      onThrow(bridgeId, err);
    }
    o += HEADER + len;
  }
}

/**
 * Bridges a batch's packet could not be delivered to (readPacketBatch's onThrow), so that each is
 * logged once rather than per packet; bounded, a long-running gateway forgets old ones.
 */
export class FailedBridges {
  private readonly seen = new Set<number>();

  /** True the first time `bridgeId` fails. */
  first(bridgeId: number): boolean {
    if (this.seen.has(bridgeId)) return false;
    if (this.seen.size >= 1000) this.seen.clear();
    this.seen.add(bridgeId);
    return true;
  }
}
