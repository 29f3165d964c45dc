/**
 * Opus settings for the SIP → browser direction chosen on measurement: a speech-like test
 * signal at 8 kHz (a gliding pulse train through three formant resonators, in syllables with
 * pauses) encoded the way G711ToOpus does, decoded back at 8 kHz, and compared with the input.
 * Two measures, neither a listening score (no PESQ/POLQA here): segmental SNR, a waveform
 * measure (Opus is not a waveform coder, so read it for where it stops improving), and the
 * log-spectral distance, which ignores phase and asks how far the decoded spectrum strays from
 * the input's, frame by frame (dB; lower is closer).
 */
import { OpusDecoder, OpusEncoder } from '../src/media/codecs';

export interface CodecQualityRow { complexity: number; bitrate: number; usPerFrame: number; segSnrDb: number; logSpectralDistanceDb: number }

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

/** The codec's delay in samples: the lag that best lines the output up with the input. */
function delayOf(ref: Int16Array, got: Int16Array): number {
  let bestLag = 0;
  let best = -Infinity;
  for (let lag = 0; lag < 200; lag++) {
    let c = 0;
    for (let i = 2000; i < 10000; i++) c += ref[i] * got[i + lag];
    if (c > best) { best = c; bestLag = lag; }
  }
  return bestLag;
}

/** Segmental SNR over 20 ms frames that carry signal, after aligning for the codec's delay. */
function segmentalSnr(ref: Int16Array, got: Int16Array): number {
  const bestLag = delayOf(ref, got);
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

/** In-place radix-2 FFT of (re, im); length a power of two. */
function fft(re: Float64Array, im: Float64Array): void {
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; [im[i], im[j]] = [im[j], im[i]]; }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const ang = (-2 * Math.PI) / len;
    for (let i = 0; i < n; i += len) {
      for (let k = 0; k < len / 2; k++) {
        const wr = Math.cos(ang * k), wi = Math.sin(ang * k);
        const ur = re[i + k], ui = im[i + k];
        const vr = re[i + k + len / 2] * wr - im[i + k + len / 2] * wi;
        const vi = re[i + k + len / 2] * wi + im[i + k + len / 2] * wr;
        re[i + k] = ur + vr; im[i + k] = ui + vi;
        re[i + k + len / 2] = ur - vr; im[i + k + len / 2] = ui - vi;
      }
    }
  }
}

/**
 * Mean log-spectral distance over 20 ms frames that carry signal (Hann window, 256-point FFT,
 * 0–4 kHz): sqrt(mean over bins of (10·log10 P_ref − 10·log10 P_out)²), floored at -60 dB of
 * the frame's peak so near-empty bins do not dominate.
 */
function logSpectralDistance(ref: Int16Array, got: Int16Array): number {
  const lag = delayOf(ref, got);
  const N = 256;
  const spectrum = (x: Int16Array, start: number): Float64Array => {
    const re = new Float64Array(N), im = new Float64Array(N);
    for (let i = 0; i < 160; i++) re[i] = x[start + i] * (0.5 - 0.5 * Math.cos((2 * Math.PI * i) / 159));
    fft(re, im);
    const p = new Float64Array(N / 2 + 1);
    for (let k = 0; k <= N / 2; k++) p[k] = re[k] * re[k] + im[k] * im[k];
    return p;
  };
  let sum = 0;
  let frames = 0;
  for (let f = 0; (f + 1) * 160 + lag < got.length && (f + 1) * 160 < ref.length; f++) {
    let energy = 0;
    for (let i = f * 160; i < (f + 1) * 160; i++) energy += ref[i] ** 2;
    if (energy / 160 < 1e4) continue; // skip pauses
    const a = spectrum(ref, f * 160), b = spectrum(got, f * 160 + lag);
    const floor = Math.max(...a) * 1e-6;
    let d = 0;
    for (let k = 0; k < a.length; k++) d += (10 * Math.log10(Math.max(a[k], floor) / Math.max(b[k], floor))) ** 2;
    sum += Math.sqrt(d / a.length);
    frames++;
  }
  return frames ? sum / frames : NaN;
}

export function codecQuality(): CodecQualityRow[] {
  const input = speechLike(20);
  const rows: CodecQualityRow[] = [];
  const settings: Array<[number, number]> = [[0, 24000], [1, 24000], [2, 24000], [3, 24000], [5, 24000], [8, 24000], [10, 24000], [1, 16000], [1, 32000], [5, 16000], [5, 32000]];
  // Warm the binding and the JIT first, at every complexity: V8 runs WebAssembly unoptimised
  // (Liftoff) until a function is hot, and each complexity takes code paths of its own (the
  // first row, complexity 0, was charged ~4x its cost when only complexity 5 was warmed).
  for (const complexity of new Set(settings.map(([c]) => c))) {
    const warm = new OpusEncoder({ sampleRate: 8000, channels: 1, application: 'voip', complexity, bitrate: 24000, fec: true, packetLossPercent: 5 });
    for (let f = 0; f < 300; f++) warm.encode(input.subarray((f % 100) * 160, (f % 100 + 1) * 160));
    warm.delete();
  }
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
    rows.push({ complexity, bitrate, usPerFrame: Number(encNs) / 1000 / (input.length / 160), segSnrDb: segmentalSnr(input, out), logSpectralDistanceDb: logSpectralDistance(input, out) });
  }
  return rows;
}
