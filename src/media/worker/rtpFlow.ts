import type { RtpPacketView } from '../rtp';
import { PacketBatchWriter } from './packetBatch';

/**
 * A thread that stops reading its port (a hung or overloaded media worker, or a stalled main
 * thread) would otherwise let the other side's postMessage queue of audio grow without limit:
 * structured-clone messages wait in the port, unseen by the sender. So each direction counts
 * the packets it posted against those the reader said it read (RtpReadAcks), and drops beyond
 * QUEUE_PACKETS_PER_BRIDGE per bridge, counting the drops. Stale audio is worthless anyway: the
 * jitter buffers downstream would discard it, and a late burst is heard as garbage.
 */

/** 1 s of audio per call at 20 ms packets; a thread reading normally keeps a few packets out. */
export const QUEUE_PACKETS_PER_BRIDGE = 50;
/** The reader says how much it read at most this often: ~3 packets per call still out. */
export const ACK_DELAY_MS = 50;

/** Packets toward the other thread: one batch per event-loop turn, capped at what it has not read. */
export class RtpOutbox {
  private readonly writer = new PacketBatchWriter();
  private posted = 0;
  private read = 0;
  private flushScheduled = false;
  /** Packets dropped because the reader was too far behind (cumulative). */
  dropped = 0;

  constructor(private readonly post: (batch: ArrayBuffer, packets: number) => void, private readonly bridges: () => number) {}

  /** Queues a packet for the next batch; false (dropped and counted) when the reader is too far behind. */
  add(bridgeId: number, pkt: RtpPacketView): boolean {
    const outstanding = this.posted - this.read + this.writer.count;
    if (outstanding >= QUEUE_PACKETS_PER_BRIDGE * Math.max(1, this.bridges())) {
      this.dropped++;
      return false;
    }
    this.writer.add(bridgeId, pkt);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    return true;
  }

  /** The reader's cumulative count of packets read (an RtpReadAcks message). */
  acked(packets: number): void {
    this.read = packets;
  }

  /** A new reader (a restarted worker): nothing outstanding, and nothing of the old one's sent to it. */
  reset(): void {
    this.writer.take();
    this.posted = 0;
    this.read = 0;
  }

  private flush(): void {
    this.flushScheduled = false;
    const packets = this.writer.count;
    if (packets === 0) return;
    const batch = this.writer.take();
    this.posted += packets;
    this.post(batch, packets);
  }
}

/** The reading side: tells the writer, at most every ACK_DELAY_MS, how many packets it has read in all. */
export class RtpReadAcks {
  private read = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly send: (packets: number) => void) {}

  consumed(packets: number): void {
    this.read += packets;
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.send(this.read);
    }, ACK_DELAY_MS);
    this.timer.unref();
  }

  /** A new writer (a restarted worker): its count starts from 0. */
  reset(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.read = 0;
  }
}
