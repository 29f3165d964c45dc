import { readFileSync, writeFileSync } from 'node:fs';

/**
 * Writes a 16-bit PCM WAV with a sine tone (Chromium's fake mic and baresip's aufile read
 * these): mono, or the same tone on both channels (baresip's aufile wants stereo for Opus/2).
 */
export function writeToneWav(path: string, opts: { hz: number; sampleRate: number; seconds: number; amplitude?: number; channels?: 1 | 2 }): void {
  const n = Math.round(opts.sampleRate * opts.seconds);
  const channels = opts.channels ?? 1;
  const amp = opts.amplitude ?? 12000;
  const data = Buffer.alloc(n * 2 * channels);
  for (let i = 0; i < n; i++) {
    const v = Math.round(amp * Math.sin((2 * Math.PI * opts.hz * i) / opts.sampleRate));
    for (let c = 0; c < channels; c++) data.writeInt16LE(v, (i * channels + c) * 2);
  }
  writeFileSync(path, Buffer.concat([wavHeader(data.length, opts.sampleRate, channels), data]));
}

/**
 * Writes a mono 16-bit PCM WAV of a synthetic voice: a gliding pitch with formant-shaped
 * harmonics in syllable-like bursts and pauses. Browsers' Opus encoders treat it as speech
 * (SILK, which carries in-band FEC), where a pure tone gets CELT-only packets.
 */
export function writeSpeechWav(path: string, opts: { sampleRate: number; seconds: number }): void {
  const rate = opts.sampleRate;
  const n = Math.round(rate * opts.seconds);
  const data = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    const f0 = 170 + 45 * Math.sin(2 * Math.PI * 0.37 * t) + 15 * Math.sin(2 * Math.PI * 1.3 * t);
    // The phase of that pitch glide (its integral), so the harmonics stay continuous.
    const phase = 2 * Math.PI * (170 * t - (45 / (2 * Math.PI * 0.37)) * Math.cos(2 * Math.PI * 0.37 * t) - (15 / (2 * Math.PI * 1.3)) * Math.cos(2 * Math.PI * 1.3 * t));
    const f1 = 500 + 250 * Math.sin(2 * Math.PI * 0.9 * t);
    const f2 = 1500 + 600 * Math.sin(2 * Math.PI * 0.55 * t + 1);
    let v = 0;
    for (let k = 1; k * f0 < 3800; k++) { const f = k * f0; v += (1 / (1 + ((f - f1) / 120) ** 2) + 0.5 / (1 + ((f - f2) / 180) ** 2)) * Math.sin(k * phase); }
    const syllable = Math.max(0, Math.sin(2 * Math.PI * 4 * t)) ** 0.7 * (Math.sin(2 * Math.PI * 0.25 * t) > -0.6 ? 1 : 0);
    data.writeInt16LE(Math.max(-32768, Math.min(32767, Math.round(4500 * v * syllable))), i * 2);
  }
  writeFileSync(path, Buffer.concat([wavHeader(n * 2, rate), data]));
}

function wavHeader(dataBytes: number, sampleRate: number, channels = 1): Buffer {
  const h = Buffer.alloc(44);
  h.write('RIFF', 0); h.writeUInt32LE(36 + dataBytes, 4); h.write('WAVE', 8);
  h.write('fmt ', 12); h.writeUInt32LE(16, 16); h.writeUInt16LE(1, 20); h.writeUInt16LE(channels, 22);
  h.writeUInt32LE(sampleRate, 24); h.writeUInt32LE(sampleRate * 2 * channels, 28); h.writeUInt16LE(2 * channels, 32); h.writeUInt16LE(16, 34);
  h.write('data', 36); h.writeUInt32LE(dataBytes, 40);
  return h;
}

/** Reads a 16-bit PCM WAV (first channel), tolerating extra chunks and a data size of 0 (unfinished file). */
export function readWav(path: string): { sampleRate: number; samples: Int16Array } {
  const b = readFileSync(path);
  let off = 12; let sampleRate = 8000; let channels = 1;
  while (off + 8 <= b.length) {
    const id = b.toString('ascii', off, off + 4); const size = b.readUInt32LE(off + 4);
    if (id === 'fmt ') { channels = b.readUInt16LE(off + 10); sampleRate = b.readUInt32LE(off + 12); }
    if (id === 'data') {
      const end = size === 0 || off + 8 + size > b.length ? b.length : off + 8 + size;
      const frames = Math.floor((end - off - 8) / (2 * channels));
      const s = new Int16Array(frames);
      for (let i = 0; i < frames; i++) s[i] = b.readInt16LE(off + 8 + i * 2 * channels);
      return { sampleRate, samples: s };
    }
    off += 8 + size + (size & 1);
  }
  return { sampleRate, samples: new Int16Array(0) };
}

/** Power of one frequency relative to total power (Goertzel), 0..1: ~1 for a clean tone. */
export function toneRatio(samples: Int16Array, sampleRate: number, hz: number): number {
  const k = (2 * Math.PI * hz) / sampleRate; const coeff = 2 * Math.cos(k);
  let s1 = 0; let s2 = 0; let total = 0;
  for (let i = 0; i < samples.length; i++) { const s0 = samples[i] + coeff * s1 - s2; s2 = s1; s1 = s0; total += samples[i] * samples[i]; }
  const power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
  if (total === 0) return 0;
  return (2 * power) / (samples.length * total);
}

/** RMS of a sample block. */
export function rms(samples: Int16Array): number {
  let t = 0; for (let i = 0; i < samples.length; i++) t += samples[i] * samples[i];
  return samples.length ? Math.sqrt(t / samples.length) : 0;
}
