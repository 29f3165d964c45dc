import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DtmfToneDetector } from '../../src/media/dtmfDetector';
import { dtmfToneFrames } from '../../src/media/dtmf';

/** What the detector reports for these 8 kHz frames. */
function detect(frames: Int16Array[]): string {
  const got: string[] = [];
  const d = new DtmfToneDetector((digit) => got.push(digit));
  for (const f of frames) d.push(f);
  return got.join('');
}

/** `ms` of 8 kHz audio from a function of time, in 20 ms frames. */
function signal(ms: number, at: (t: number) => number): Int16Array[] {
  return Array.from({ length: ms / 20 }, (_, f) => Int16Array.from({ length: 160 }, (_, i) => Math.max(-32768, Math.min(32767, Math.round(at((f * 160 + i) / 8000))))));
}

/** A deterministic pseudo-random sequence in [-1, 1) (noise that is the same on every run). */
function noise(seed: number): () => number {
  let s = seed;
  return () => { s = (s * 1103515245 + 12345) & 0x7fffffff; return s / 0x40000000 - 1; };
}

test('every digit, 80 ms each with 60 ms between, is detected once and right', () => {
  const all = '0123456789*#ABCD';
  assert.equal(detect([...all].flatMap((d) => dtmfToneFrames(d, 80))), all);
});

test('a held key is one digit; the same key twice with a pause between is two', () => {
  assert.equal(detect(dtmfToneFrames('5', 2000)), '5');
  assert.equal(detect([...dtmfToneFrames('9', 100), ...dtmfToneFrames('9', 100)]), '99');
});

test('a tone too short for a digit (20 ms) is none; one under noise at 20 dB SNR is found', () => {
  const short = dtmfToneFrames('1', 60).slice(0, 1); // one 20 ms frame of tone, then silence
  assert.equal(detect([...short, ...signal(200, () => 0)]), '');
  const n = noise(7);
  const tone = dtmfToneFrames('8', 120);
  const rms = Math.sqrt(tone[0].reduce((a, v) => a + v * v, 0) / tone[0].length);
  const noisy = tone.map((f) => f.map((v) => v + n() * rms * 0.1 * Math.sqrt(3)));
  assert.equal(detect(noisy), '8');
});

test('speech-like sound, a single tone, chords and noise are no digits (talk-off)', () => {
  // A voice: harmonics of a gliding 120 Hz fundamental, 10 s.
  const voice = signal(10000, (t) => {
    const f0 = 120 + 30 * Math.sin(2 * Math.PI * 3 * t);
    let v = 0;
    for (let h = 1; h < 25; h++) v += (Math.sin(2 * Math.PI * f0 * h * t) * 3000) / h;
    return v;
  });
  assert.equal(detect(voice), '');
  assert.equal(detect(signal(2000, (t) => 8000 * Math.sin(2 * Math.PI * 1000 * t))), '', 'the 1 kHz test tone');
  // Three-note chords changing every 100 ms (music on hold), 60 s.
  const r = noise(3);
  let notes = [0, 0, 0];
  const chords = signal(60000, (t) => {
    if (Math.round(t * 8000) % 800 === 0) notes = notes.map(() => 220 * 2 ** (Math.floor(((r() + 1) / 2) * 36) / 12));
    return notes.reduce((a, hz) => a + 5000 * Math.sin(2 * Math.PI * hz * t), 0);
  });
  assert.equal(detect(chords), '');
  const n = noise(11);
  assert.equal(detect(signal(5000, () => 8000 * n())), '', 'white noise');
  assert.equal(detect(signal(1000, () => 0)), '', 'silence');
});
