/**
 * RFC 4733 telephone-event payloads: 4 bytes — event, E|R|volume, duration (timestamp units).
 */
const DIGITS = '0123456789*#ABCD';

export function digitToEvent(d: string): number {
  // One character exactly: indexOf would also find '' (at 0) and substrings such as '12'.
  const i = d.length === 1 ? DIGITS.indexOf(d.toUpperCase()) : -1;
  if (i < 0) throw new Error(`not a DTMF digit: ${d}`);
  return i;
}

export function eventToDigit(e: number): string | null {
  return Number.isInteger(e) && e >= 0 && e < 16 ? DIGITS[e] : null;
}

export function encodeTelephoneEvent(event: number, end: boolean, durationTs: number, volume = 10): Buffer {
  const b = Buffer.alloc(4);
  b[0] = event;
  b[1] = (end ? 0x80 : 0) | (volume & 0x3f);
  b.writeUInt16BE(Math.min(0xffff, durationTs), 2);
  return b;
}

export function decodeTelephoneEvent(p: Uint8Array): { event: number; end: boolean; volume: number; duration: number } | null {
  if (p.length < 4) return null;
  return { event: p[0], end: (p[1] & 0x80) !== 0, volume: p[1] & 0x3f, duration: (p[2] << 8) | p[3] };
}

/**
 * Detects digits in a received telephone-event stream: one digit per event timestamp, reported
 * at its first packet (so a lost end packet still yields the digit), duplicates and the
 * three end retransmissions ignored — also when a retransmission of the previous event arrives
 * after the next event has started (reordering), hence a few recent timestamps are remembered.
 */
export class DtmfReceiver {
  private readonly recentEventTs: number[] = [];
  /** The telephone-event format's RTP clock (durations count its ticks); may change with a re-INVITE. */
  clockRate: number;
  constructor(private readonly onDigit: (digit: string, durationMs: number) => void, clockRate = 8000) {
    this.clockRate = clockRate;
  }

  /** One telephone-event payload; false when it is malformed (for the caller to count). */
  onPacket(rtpTs: number, payload: Uint8Array): boolean {
    const ev = decodeTelephoneEvent(payload);
    if (!ev) return false;
    if (this.recentEventTs.includes(rtpTs)) return true;
    this.recentEventTs.push(rtpTs);
    if (this.recentEventTs.length > 8) this.recentEventTs.shift();
    const digit = eventToDigit(ev.event);
    if (digit) this.onDigit(digit, (ev.duration / this.clockRate) * 1000);
    return true;
  }
}

/**
 * The packet train for one digit (RFC 4733 §2.5): packets every 20 ms with the same timestamp
 * and a growing duration, the first with the marker bit, the last three with E set.
 */
export function dtmfPacketTrain(digit: string, durationMs: number, clockRate: number): Array<{ payload: Buffer; marker: boolean; delayMs: number }> {
  const event = digitToEvent(digit);
  const step = 20;
  const out: Array<{ payload: Buffer; marker: boolean; delayMs: number }> = [];
  const total = Math.max(40, Math.round(durationMs / step) * step);
  for (let t = step; t < total; t += step) out.push({ payload: encodeTelephoneEvent(event, false, (t * clockRate) / 1000), marker: t === step, delayMs: t - step });
  // The end packet three times, at the update interval (RFC 4733 §2.5.1.4): sent at once, one
  // burst loss would take all three.
  for (let i = 0; i < 3; i++) out.push({ payload: encodeTelephoneEvent(event, true, (total * clockRate) / 1000), marker: false, delayMs: total - step + i * step });
  return out;
}

/** DTMF row and column frequencies (ITU-T Q.23) by digit. */
const DTMF_FREQS: Record<string, [number, number]> = {
  1: [697, 1209], 2: [697, 1336], 3: [697, 1477], A: [697, 1633],
  4: [770, 1209], 5: [770, 1336], 6: [770, 1477], B: [770, 1633],
  7: [852, 1209], 8: [852, 1336], 9: [852, 1477], C: [852, 1633],
  '*': [941, 1209], 0: [941, 1336], '#': [941, 1477], D: [941, 1633],
};

/**
 * In-band DTMF for a trunk without telephone-event (legacy PBXs and IVRs): the digit's two tones
 * as frames of `frameSamples` 8 kHz samples for `durationMs` (at least 60 ms, ITU-T Q.24 asks
 * 40), then at least 60 ms of silence so that two digits in a row are heard as two. Each tone at
 * about -10 dBm0.
 */
export function dtmfToneFrames(digit: string, durationMs: number, frameSamples = 160): Int16Array[] {
  digitToEvent(digit); // a bad digit throws
  const [low, high] = DTMF_FREQS[digit.toUpperCase()];
  const frames: Int16Array[] = [];
  const frameMs = frameSamples / 8;
  const toneFrames = Math.max(Math.ceil(60 / frameMs), Math.round(durationMs / frameMs));
  const pauseFrames = Math.ceil(60 / frameMs);
  for (let f = 0; f < toneFrames + pauseFrames; f++) {
    const frame = new Int16Array(frameSamples);
    if (f < toneFrames) {
      for (let i = 0; i < frameSamples; i++) {
        const t = (f * frameSamples + i) / 8000;
        frame[i] = Math.round(7000 * (Math.sin(2 * Math.PI * low * t) + Math.sin(2 * Math.PI * high * t)));
      }
    }
    frames.push(frame);
  }
  return frames;
}
