/**
 * Opus settings for the SIP → browser direction chosen on measurement: a speech-like test
 * signal at 8 kHz (a gliding pulse train through three formant resonators, in syllables with
 * pauses) encoded the way G711ToOpus does, decoded back at 8 kHz, and compared with the input.
 * Segmental SNR is a waveform measure and Opus is not a waveform coder, so read the column for
 * where it stops improving, not as a listening score.
 */
import { OpusDecoder, OpusEncoder } from '../src/media/codecs';

export interface CodecQualityRow { complexity: number; bitrate: number; usPerFrame: number; segSnrDb: number }

function speechLike(seconds: number): Int16Array {
  const rate = 8000;
  const n = rate * seconds;
  const out = new Int16Array(n);
  const formants = [[700, 130], [1220, 70], [2600, 160]].map(([f, bw]) => {
    const r = Math.exp((-Math.PI * bw) / rate);
    return { a1: 2 * r * Math.cos((2 * Math.PI * f) / rate), a2: -r * r, y1: 0, y2: 0 };
  });
  let phase = 0;
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    const f0 = 110 + 70 * (0.5 + 0.5 * Math.sin(2 * Math.PI * 0.7 * t));
    phase += f0 / rate;
    let x = 0;
    if (phase >= 1) { phase -= 1; x = 1; }
    x += (Math.random() - 0.5) * 0.02; // a little breath noise
    let y = x;
    for (const r of formants) { const v = y + r.a1 * r.y1 + r.a2 * r.y2; r.y2 = r.y1; r.y1 = v; y = v; }
    const syllable = Math.max(0, Math.sin(2 * Math.PI * 3.5 * t)) ** 0.5 * (t % 2 < 1.6 ? 1 : 0);
    out[i] = Math.max(-32768, Math.min(32767, Math.round(y * 900 * syllable)));
  }
  return out;
}

/** Segmental SNR over 20 ms frames that carry signal, after aligning for the codec's delay. */
function segmentalSnr(ref: Int16Array, got: Int16Array): number {
  let bestLag = 0;
  let best = -Infinity;
  for (let lag = 0; lag < 200; lag++) {
    let c = 0;
    for (let i = 2000; i < 10000; i++) c += ref[i] * got[i + lag];
    if (c > best) { best = c; bestLag = lag; }
  }
  let sum = 0;
  let frames = 0;
  for (let f = 0; (f + 1) * 160 + bestLag < got.length && (f + 1) * 160 < ref.length; f++) {
    let s = 0, e = 0;
    for (let i = f * 160; i < (f + 1) * 160; i++) { s += ref[i] ** 2; e += (ref[i] - got[i + bestLag]) ** 2; }
    if (s / 160 < 1e4) continue; // skip pauses
    sum += Math.max(-10, Math.min(35, 10 * Math.log10(s / Math.max(e, 1))));
    frames++;
  }
  return frames ? sum / frames : NaN;
}

export function codecQuality(): CodecQualityRow[] {
  const input = speechLike(20);
  const rows: CodecQualityRow[] = [];
  // Warm the binding and the JIT first, so the first row is not charged for it.
  const warm = new OpusEncoder({ sampleRate: 8000, channels: 1, application: 'voip', complexity: 5, bitrate: 24000 });
  for (let f = 0; f < 200; f++) warm.encode(input.subarray((f % 100) * 160, (f % 100 + 1) * 160));
  warm.delete();
  const settings: Array<[number, number]> = [[0, 24000], [2, 24000], [5, 24000], [8, 24000], [10, 24000], [5, 16000], [5, 32000]];
  for (const [complexity, bitrate] of settings) {
    const enc = new OpusEncoder({ sampleRate: 8000, channels: 1, application: 'voip', complexity, bitrate, fec: true, packetLossPercent: 5 });
    const dec = new OpusDecoder({ sampleRate: 8000 });
    const out = new Int16Array(input.length);
    let encNs = 0n;
    for (let f = 0; (f + 1) * 160 <= input.length; f++) {
      const t0 = process.hrtime.bigint();
      const pkt = enc.encode(input.subarray(f * 160, (f + 1) * 160));
      encNs += process.hrtime.bigint() - t0;
      out.set(dec.decode(pkt).subarray(0, 160), f * 160);
    }
    enc.delete();
    dec.delete();
    rows.push({ complexity, bitrate, usPerFrame: Number(encNs) / 1000 / (input.length / 160), segSnrDb: segmentalSnr(input, out) });
  }
  return rows;
}
