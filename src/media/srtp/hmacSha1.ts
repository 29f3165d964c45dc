import { createHash } from 'node:crypto';

/**
 * HMAC-SHA1 (RFC 2104) for one fixed key, allocation-free: the SRTP/SRTCP authentication tag.
 *
 * Why not node:crypto's createHmac: per packet it builds a stream-shaped Hmac object backed by a
 * native handle, re-hashes the key pads and returns a fresh Buffer. At 100 calls that was a few
 * thousand native handles and ArrayBuffers a second for the young-generation GC to sweep — its
 * pauses are what the media benchmark's latency p99 saw — and ~5 µs a tag. Here the key's inner
 * and outer pad blocks are compressed once, in the constructor (RFC 2104 §4, "precomputations"),
 * so a tag over an RTP packet costs three SHA-1 block compressions on reused arrays.
 *
 * Checked against node:crypto on random keys and messages and against RFC 2202's vectors
 * (test/media/hmacSha1.test.ts).
 */
export class HmacSha1 {
  /** SHA-1 chaining state after the key XOR ipad block, and after the key XOR opad block. */
  private readonly inner = new Int32Array(5);
  private readonly outer = new Int32Array(5);
  /** Working state, the message schedule and the last (padded) block(s). */
  private readonly h = new Int32Array(5);
  private readonly w = new Int32Array(80);
  private readonly tail = new Uint8Array(128);
  /** The last tag computed (valid until the next call). */
  readonly digest = new Uint8Array(20);

  constructor(key: Uint8Array) {
    const k = key.length > 64 ? createHash('sha1').update(key).digest() : key;
    const pad = new Uint8Array(64);
    for (const [state, byte] of [[this.inner, 0x36], [this.outer, 0x5c]] as const) {
      for (let i = 0; i < 64; i++) pad[i] = (i < k.length ? k[i] : 0) ^ byte;
      this.h.set(SHA1_INIT);
      this.compress(pad, 0);
      state.set(this.h);
    }
  }

  /**
   * HMAC over `data[0, length)` followed, when `suffix` is given, by `suffix` as a 32-bit
   * big-endian number (SRTP authenticates the packet and then its rollover counter, RFC 3711
   * §4.2). Returns {@link digest}.
   */
  mac(data: Uint8Array, length: number, suffix?: number): Uint8Array {
    const msgLen = length + (suffix === undefined ? 0 : 4);
    this.h.set(this.inner);
    let off = 0;
    for (; off + 64 <= length; off += 64) this.compress(data, off);
    // The rest of the data, the suffix, the 0x80 terminator and the bit length (the key block counts).
    const t = this.tail;
    let n = 0;
    for (; off < length; off++) t[n++] = data[off];
    if (suffix !== undefined) { t[n++] = suffix >>> 24; t[n++] = (suffix >>> 16) & 0xff; t[n++] = (suffix >>> 8) & 0xff; t[n++] = suffix & 0xff; }
    this.finish(n, 64 + msgLen);
    // Outer hash over the inner digest.
    for (let i = 0; i < 5; i++) { const v = this.h[i]; t[i * 4] = v >>> 24; t[i * 4 + 1] = (v >>> 16) & 0xff; t[i * 4 + 2] = (v >>> 8) & 0xff; t[i * 4 + 3] = v & 0xff; }
    this.h.set(this.outer);
    this.finish(20, 64 + 20);
    const d = this.digest;
    for (let i = 0; i < 5; i++) { const v = this.h[i]; d[i * 4] = v >>> 24; d[i * 4 + 1] = (v >>> 16) & 0xff; d[i * 4 + 2] = (v >>> 8) & 0xff; d[i * 4 + 3] = v & 0xff; }
    return d;
  }

  /** Does `data[at, at + tagLength)` equal the first `tagLength` bytes of the tag just computed? Constant time. */
  matches(data: Uint8Array, at: number, tagLength: number): boolean {
    let diff = 0;
    for (let i = 0; i < tagLength; i++) diff |= data[at + i] ^ this.digest[i];
    return diff === 0;
  }

  /** Pads the `n` message bytes waiting in `tail` (total message `bytes` long) and compresses them. */
  private finish(n: number, bytes: number): void {
    const t = this.tail;
    t[n++] = 0x80;
    const end = n + 8 <= 64 ? 64 : 128;
    while (n < end - 8) t[n++] = 0;
    // Bit length as 64 bits; messages here are far below 2^29 bytes, so the high word is 0.
    const bits = bytes * 8;
    t[n++] = 0; t[n++] = 0; t[n++] = 0; t[n++] = 0;
    t[n++] = bits >>> 24; t[n++] = (bits >>> 16) & 0xff; t[n++] = (bits >>> 8) & 0xff; t[n++] = bits & 0xff;
    this.compress(t, 0);
    if (end === 128) this.compress(t, 64);
  }

  /** One SHA-1 block (FIPS 180-4 §6.1.2) from `b[off, off + 64)` into `h`. */
  private compress(b: Uint8Array, off: number): void {
    const w = this.w;
    for (let i = 0; i < 16; i++, off += 4) w[i] = (b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3];
    for (let i = 16; i < 80; i++) { const x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]; w[i] = (x << 1) | (x >>> 31); }
    const h = this.h;
    let a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4];
    for (let i = 0; i < 80; i++) {
      let f: number, k: number;
      if (i < 20) { f = (bb & c) | (~bb & d); k = 0x5a827999; }
      else if (i < 40) { f = bb ^ c ^ d; k = 0x6ed9eba1; }
      else if (i < 60) { f = (bb & c) | (bb & d) | (c & d); k = 0x8f1bbcdc; }
      else { f = bb ^ c ^ d; k = 0xca62c1d6; }
      const tmp = (((a << 5) | (a >>> 27)) + f + e + k + w[i]) | 0;
      e = d; d = c; c = (bb << 30) | (bb >>> 2); bb = a; a = tmp;
    }
    h[0] = (h[0] + a) | 0; h[1] = (h[1] + bb) | 0; h[2] = (h[2] + c) | 0; h[3] = (h[3] + d) | 0; h[4] = (h[4] + e) | 0;
  }
}

const SHA1_INIT = new Int32Array([0x67452301, 0xefcdab89 | 0, 0x98badcfe | 0, 0x10325476, 0xc3d2e1f0 | 0]);
