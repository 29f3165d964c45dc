/**
 * G.711 (ITU-T G.711) mu-law and A-law with lookup tables: decode is one table read, encode
 * uses a 16-bit-indexed table built once (64 KiB each), so the per-sample cost is a read.
 */

function muLawEncodeSample(sample: number): number {
  const BIAS = 0x84; const CLIP = 32635;
  let s = sample;
  const sign = s < 0 ? 0x80 : 0;
  if (s < 0) s = -s;
  if (s > CLIP) s = CLIP;
  s += BIAS;
  let exponent = 7;
  for (let mask = 0x4000; (s & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

function muLawDecodeSample(u: number): number {
  const v = ~u & 0xff;
  const sign = v & 0x80; const exponent = (v >> 4) & 0x07; const mantissa = v & 0x0f;
  const magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
  return sign ? -magnitude : magnitude;
}

function aLawEncodeSample(sample: number): number {
  let s = sample >> 3; // 13-bit
  let mask: number;
  if (s >= 0) mask = 0xd5; else { mask = 0x55; s = -s - 1; }
  const segEnd = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];
  let seg = 0;
  while (seg < 8 && s > segEnd[seg]) seg++;
  if (seg >= 8) return 0x7f ^ mask;
  let aval = seg << 4;
  aval |= seg < 2 ? (s >> 1) & 0x0f : (s >> seg) & 0x0f;
  return aval ^ mask;
}

function aLawDecodeSample(a: number): number {
  const v = a ^ 0x55;
  let t = (v & 0x0f) << 4;
  const seg = (v & 0x70) >> 4;
  if (seg === 0) t += 8;
  else if (seg === 1) t += 0x108;
  else { t += 0x108; t <<= seg - 1; }
  return v & 0x80 ? t : -t;
}

const MU_DECODE = new Int16Array(256);
const A_DECODE = new Int16Array(256);
const MU_ENCODE = new Uint8Array(65536);
const A_ENCODE = new Uint8Array(65536);
for (let i = 0; i < 256; i++) { MU_DECODE[i] = muLawDecodeSample(i); A_DECODE[i] = aLawDecodeSample(i); }
for (let i = 0; i < 65536; i++) { const s = i - 32768; MU_ENCODE[i] = muLawEncodeSample(s); A_ENCODE[i] = aLawEncodeSample(s); }

export function pcmuEncode(pcm: Int16Array, out: Buffer = Buffer.allocUnsafe(pcm.length)): Buffer {
  for (let i = 0; i < pcm.length; i++) out[i] = MU_ENCODE[pcm[i] + 32768];
  return out;
}

export function pcmuDecode(data: Uint8Array, out: Int16Array = new Int16Array(data.length)): Int16Array {
  for (let i = 0; i < data.length; i++) out[i] = MU_DECODE[data[i]];
  return out;
}

export function pcmaEncode(pcm: Int16Array, out: Buffer = Buffer.allocUnsafe(pcm.length)): Buffer {
  for (let i = 0; i < pcm.length; i++) out[i] = A_ENCODE[pcm[i] + 32768];
  return out;
}

export function pcmaDecode(data: Uint8Array, out: Int16Array = new Int16Array(data.length)): Int16Array {
  for (let i = 0; i < data.length; i++) out[i] = A_DECODE[data[i]];
  return out;
}

/**
 * One law's bytes as the other's (a trunk that sends the other law than the one negotiated, a
 * PCMU browser and a PCMA trunk): each code decoded and encoded in the other law, by a table
 * per direction built once (not G.711's own conversion tables). A-law to mu-law and back leaves
 * 240 of the 256 codes as they were and moves 16 by one step (3-5 %); so does mu-law through
 * A-law (tested in codecs.test.ts).
 */
const A_TO_MU = new Uint8Array(256);
const MU_TO_A = new Uint8Array(256);
for (let i = 0; i < 256; i++) { A_TO_MU[i] = MU_ENCODE[A_DECODE[i] + 32768]; MU_TO_A[i] = A_ENCODE[MU_DECODE[i] + 32768]; }

export function pcmaToPcmu(data: Uint8Array, out: Buffer = Buffer.allocUnsafe(data.length)): Buffer {
  for (let i = 0; i < data.length; i++) out[i] = A_TO_MU[data[i]];
  return out;
}

export function pcmuToPcma(data: Uint8Array, out: Buffer = Buffer.allocUnsafe(data.length)): Buffer {
  for (let i = 0; i < data.length; i++) out[i] = MU_TO_A[data[i]];
  return out;
}

/** The byte that encodes silence: 0xFF for mu-law, 0xD5 for A-law. */
export const PCMU_SILENCE = 0xff;
export const PCMA_SILENCE = 0xd5;
