import { createCipheriv, type Cipher } from 'node:crypto';
import type { SdesCrypto, SrtpSuite } from './sdes';
import { HmacSha1 } from './hmacSha1';

/**
 * SRTP and SRTCP (RFC 3711) for the AES-CM + HMAC-SHA1 suites SIP trunks use with SDES:
 * AES_CM_128_HMAC_SHA1_80 and _32 (the latter only shortens the SRTP tag; SRTCP keeps 80 bits,
 * RFC 4568 §6.2.1). Key derivation rate 0, no MKI on send.
 *
 * Receive side: rollover counter estimation (§3.3.1, Appendix A) per SSRC, a 128-packet replay
 * window (§3.3.2) and authentication before decryption. Bad packets return null and are
 * counted; nothing throws.
 */

const LABEL = { rtpEnc: 0, rtpAuth: 1, rtpSalt: 2, rtcpEnc: 3, rtcpAuth: 4, rtcpSalt: 5 } as const;
export const REPLAY_WINDOW = 128;

interface SessionKeys { rtpEnc: Buffer; rtpAuth: Buffer; rtpSalt: Buffer; rtcpEnc: Buffer; rtcpAuth: Buffer; rtcpSalt: Buffer }

/** AES-CM key derivation (§4.3.1) with kdr = 0. */
export function deriveKeys(masterKey: Buffer, masterSalt: Buffer): SessionKeys {
  const derive = (label: number, length: number): Buffer => {
    // x = (label << 48) XOR master_salt, as a 112-bit value; IV = x * 2^16.
    const iv = Buffer.alloc(16);
    masterSalt.copy(iv, 0, 0, 14);
    iv[7] ^= label;
    const c = createCipheriv('aes-128-ctr', masterKey, iv);
    return c.update(Buffer.alloc(length));
  };
  return {
    rtpEnc: derive(LABEL.rtpEnc, 16), rtpAuth: derive(LABEL.rtpAuth, 20), rtpSalt: derive(LABEL.rtpSalt, 14),
    rtcpEnc: derive(LABEL.rtcpEnc, 16), rtcpAuth: derive(LABEL.rtcpAuth, 20), rtcpSalt: derive(LABEL.rtcpSalt, 14),
  };
}

/** The counter block for packet `index` of `ssrc` (§4.1.1): (salt·2^16) ⊕ (ssrc·2^64) ⊕ (index·2^16). */
export function counterIv(iv: Buffer, salt: Buffer, ssrc: number, indexHi: number, indexLo: number): Buffer {
  iv.fill(0, 14);
  salt.copy(iv, 0, 0, 14);
  iv.writeUInt32BE((iv.readUInt32BE(4) ^ ssrc) >>> 0, 4);
  // 48-bit index at bytes 8..13: high 16 bits then low 32 bits.
  iv.writeUInt16BE((iv.readUInt16BE(8) ^ indexHi) & 0xffff, 8);
  iv.writeUInt32BE((iv.readUInt32BE(10) ^ indexLo) >>> 0, 10);
  return iv;
}

function rtpHeaderLength(p: Buffer): number {
  if (p.length < 12) return -1;
  let len = 12 + (p[0] & 0x0f) * 4;
  if (p[0] & 0x10) {
    if (p.length < len + 4) return -1;
    len += 4 + p.readUInt16BE(len + 2) * 4;
  }
  return len <= p.length ? len : -1;
}

/**
 * AES-128 in counter mode from one long-lived ECB cipher: the keystream is the encryption of the
 * counter blocks, so no cipher object is built per packet (that setup, not AES itself, was most
 * of the cost of createCipheriv('aes-128-ctr') per packet).
 */
export class AesCtr {
  private readonly ecb: Cipher;
  private blocks = Buffer.alloc(16 * 16);

  constructor(key: Buffer) {
    this.ecb = createCipheriv('aes-128-ecb', key, null);
    this.ecb.setAutoPadding(false);
  }

  /** XORs `data` with the keystream starting at counter block `iv` into `out` at `outOffset`. */
  xor(iv: Buffer, data: Uint8Array, out: Buffer, outOffset: number): void {
    const n = Math.ceil(data.length / 16);
    if (n === 0) return;
    if (this.blocks.length < n * 16) this.blocks = Buffer.alloc(n * 16);
    for (let b = 0; b < n; b++) {
      iv.copy(this.blocks, b * 16);
      // The low 16 bits of the IV are the block counter (§4.1.1: IV · 2^16 + i).
      this.blocks.writeUInt16BE((iv.readUInt16BE(14) + b) & 0xffff, b * 16 + 14);
    }
    const ks = this.ecb.update(this.blocks.subarray(0, n * 16));
    for (let i = 0; i < data.length; i++) out[outOffset + i] = data[i] ^ ks[i];
  }
}

/**
 * The replay list of one source (RFC 3711 §3.3.2): the highest authenticated index and which of
 * the REPLAY_WINDOW indexes up to it were seen, one bit per index at (index mod REPLAY_WINDOW).
 * Fixed-size and allocation-free (a BigInt bitmap allocated per packet). For SRTP the highest
 * index also carries the rollover counter and sequence number the ROC estimate needs (§3.3.1).
 */
class ReplayWindow {
  highest: number;
  private readonly seen = new Uint32Array(REPLAY_WINDOW / 32);

  /** Starts with the first authenticated index. */
  constructor(index: number) {
    this.highest = index;
    this.mark(index);
  }

  /** Is this index new: above the window, or inside it and not seen yet? */
  isNew(index: number): boolean {
    if (index > this.highest) return true;
    if (this.highest - index >= REPLAY_WINDOW) return false;
    const b = index % REPLAY_WINDOW;
    return (this.seen[b >>> 5] & (1 << (b & 31))) === 0;
  }

  /** Records an authenticated index (isNew was true). */
  accept(index: number): void {
    if (index > this.highest) {
      // Slots between the old highest and this index now stand for indexes not seen.
      if (index - this.highest >= REPLAY_WINDOW) this.seen.fill(0);
      else for (let i = this.highest + 1; i < index; i++) { const b = i % REPLAY_WINDOW; this.seen[b >>> 5] &= ~(1 << (b & 31)); }
      this.highest = index;
    }
    this.mark(index);
  }

  private mark(index: number): void {
    const b = index % REPLAY_WINDOW;
    this.seen[b >>> 5] |= 1 << (b & 31);
  }
}

/** One direction's crypto: session keys, and one long-lived keystream cipher and tag state per key. */
class KeyContext {
  readonly keys: SessionKeys;
  readonly rtpCipher: AesCtr;
  readonly rtcpCipher: AesCtr;
  readonly rtpMac: HmacSha1;
  readonly rtcpMac: HmacSha1;
  readonly tagLen: number;
  /** The MKI the far end puts before each tag (RFC 3711 §3.1), or none. */
  readonly mki: Buffer | null;

  constructor(readonly crypto: SdesCrypto) {
    this.keys = deriveKeys(crypto.key, crypto.salt);
    this.rtpCipher = new AesCtr(this.keys.rtpEnc);
    this.rtcpCipher = new AesCtr(this.keys.rtcpEnc);
    this.rtpMac = new HmacSha1(this.keys.rtpAuth);
    this.rtcpMac = new HmacSha1(this.keys.rtcpAuth);
    this.tagLen = tagLength(crypto.suite);
    this.mki = crypto.mki ? Buffer.from(crypto.mki, 'hex') : null;
  }

  sameAs(c: SdesCrypto): boolean {
    return this.crypto.suite === c.suite && this.crypto.key.equals(c.key) && this.crypto.salt.equals(c.salt) && (this.crypto.mki ?? '') === (c.mki ?? '');
  }

  /**
   * Whether a packet carries this context's MKI in the `mki.length` bytes before its tag at
   * `at`. One key per direction here, so another MKI names a key we do not have.
   */
  mkiMatches(packet: Buffer, at: number): boolean {
    const mki = this.mki;
    if (!mki) return true;
    for (let i = 0; i < mki.length; i++) if (packet[at + i] !== mki[i]) return false;
    return true;
  }
}

/** What we send with: our key, and per SSRC the rollover counter; the SRTCP index. */
class SendContext extends KeyContext {
  readonly roc = new Map<number, { roc: number; lastSeq: number }>();
  srtcpIndex = 0;
}

/** What the far end sends with: its key, and per SSRC the replay windows (which carry the ROC). */
class ReceiveContext extends KeyContext {
  readonly rtp = new Map<number, ReplayWindow>();
  readonly rtcp = new Map<number, ReplayWindow>();
}

export class SrtpSession {
  readonly stats = { authFailures: 0, replays: 0, malformed: 0 };
  private tx: SendContext;
  private rx: ReceiveContext;
  /** Counter-block scratch per direction: each IV is consumed before the next is built. */
  private readonly txIv = Buffer.alloc(16);
  private readonly rxIv = Buffer.alloc(16);

  constructor(opts: { local: SdesCrypto; remote: SdesCrypto }) {
    this.tx = new SendContext(opts.local);
    this.rx = new ReceiveContext(opts.remote);
  }

  /**
   * New keys from a re-INVITE. Each direction is its own crypto context (RFC 3711 §3.2): only
   * the side whose key changed starts a new one. Rebuilding ours too when just the far end
   * re-keyed would restart our rollover counter and SRTCP index under the key the far end
   * still holds: our SRTCP would read as replays, and after our next sequence wrap every SRTP
   * packet would fail its authentication there.
   */
  updateKeys(opts: { local: SdesCrypto; remote: SdesCrypto }): void {
    if (!this.tx.sameAs(opts.local)) this.tx = new SendContext(opts.local);
    if (!this.rx.sameAs(opts.remote)) this.rx = new ReceiveContext(opts.remote);
  }

  protectRtp(packet: Buffer): Buffer {
    const hl = rtpHeaderLength(packet);
    if (hl < 0) throw new Error('not an RTP packet');
    return this.protectRtpParts(packet, hl, packet.subarray(hl));
  }

  /**
   * SRTP for an RTP header (the first `headerLength` bytes of `header`) and a payload held apart:
   * one buffer for the protected packet, no plain packet assembled first (a sender that writes
   * the header into a scratch buffer saves an allocation and a copy per packet).
   */
  protectRtpParts(header: Buffer, headerLength: number, payload: Uint8Array): Buffer {
    const tx = this.tx;
    const ssrc = header.readUInt32BE(8);
    const seq = header.readUInt16BE(2);
    let st = tx.roc.get(ssrc);
    if (!st) { st = { roc: 0, lastSeq: seq }; tx.roc.set(ssrc, st); }
    // Our own sequence numbers only move forward: a wrap increments the ROC (§3.3.1).
    if (seq < st.lastSeq && st.lastSeq - seq > 0x8000) st.roc = (st.roc + 1) >>> 0;
    st.lastSeq = seq;
    const length = headerLength + payload.length;
    const out = Buffer.allocUnsafe(length + tx.tagLen);
    header.copy(out, 0, 0, headerLength);
    const iv = counterIv(this.txIv, tx.keys.rtpSalt, ssrc, st.roc >>> 16, ((st.roc & 0xffff) * 65536 + seq) >>> 0);
    tx.rtpCipher.xor(iv, payload, out, headerLength);
    out.set(tx.rtpMac.mac(out, length, st.roc).subarray(0, tx.tagLen), length);
    return out;
  }

  unprotectRtp(packet: Buffer): Buffer | null {
    const rx = this.rx;
    const hl = rtpHeaderLength(packet);
    const mkiLen = rx.mki?.length ?? 0;
    if (hl < 0 || packet.length < hl + mkiLen + rx.tagLen) { this.stats.malformed++; return null; }
    const ssrc = packet.readUInt32BE(8);
    const seq = packet.readUInt16BE(2);
    const st = rx.rtp.get(ssrc);
    // Appendix A: guess the ROC from the highest index seen (0 for a new source).
    let v = 0;
    if (st) {
      const roc = Math.floor(st.highest / 65536);
      const highestSeq = st.highest % 65536;
      v = roc;
      if (highestSeq < 0x8000) { if (seq - highestSeq > 0x8000) v = (roc - 1) >>> 0; }
      else if (highestSeq - 0x8000 > seq) v = (roc + 1) >>> 0;
    }
    const index = v * 65536 + seq;
    if (st && !st.isNew(index)) { this.stats.replays++; return null; }
    // Header and payload are authenticated; an MKI sits between them and the tag, outside.
    const authLen = packet.length - rx.tagLen - mkiLen;
    if (!rx.mkiMatches(packet, authLen)) { this.stats.authFailures++; return null; }
    rx.rtpMac.mac(packet, authLen, v);
    if (!rx.rtpMac.matches(packet, authLen + mkiLen, rx.tagLen)) { this.stats.authFailures++; return null; }
    const out = Buffer.allocUnsafe(authLen);
    packet.copy(out, 0, 0, hl);
    const iv = counterIv(this.rxIv, rx.keys.rtpSalt, ssrc, v >>> 16, ((v & 0xffff) * 65536 + seq) >>> 0);
    rx.rtpCipher.xor(iv, packet.subarray(hl, authLen), out, hl);
    // The ROC, highest index and replay window move only for authenticated packets.
    if (st) st.accept(index);
    else rx.rtp.set(ssrc, new ReplayWindow(index));
    return out;
  }

  protectRtcp(packet: Buffer): Buffer {
    if (packet.length < 8) throw new Error('not an RTCP packet');
    const tx = this.tx;
    const ssrc = packet.readUInt32BE(4);
    tx.srtcpIndex = (tx.srtcpIndex + 1) & 0x7fffffff;
    const out = Buffer.allocUnsafe(packet.length + 4 + 10);
    packet.copy(out, 0, 0, 8);
    const iv = counterIv(this.txIv, tx.keys.rtcpSalt, ssrc, 0, tx.srtcpIndex);
    tx.rtcpCipher.xor(iv, packet.subarray(8), out, 8);
    out.writeUInt32BE((0x80000000 | tx.srtcpIndex) >>> 0, packet.length);
    out.set(tx.rtcpMac.mac(out, packet.length + 4).subarray(0, 10), packet.length + 4);
    return out;
  }

  unprotectRtcp(packet: Buffer): Buffer | null {
    const rx = this.rx;
    const mkiLen = rx.mki?.length ?? 0;
    if (packet.length < 8 + 4 + mkiLen + 10) { this.stats.malformed++; return null; }
    // Authenticated: header, payload and E+index; then the MKI, then the tag.
    const authLen = packet.length - 10 - mkiLen;
    if (!rx.mkiMatches(packet, authLen)) { this.stats.authFailures++; return null; }
    rx.rtcpMac.mac(packet, authLen);
    if (!rx.rtcpMac.matches(packet, authLen + mkiLen, 10)) { this.stats.authFailures++; return null; }
    const eIndex = packet.readUInt32BE(authLen - 4);
    const index = eIndex & 0x7fffffff;
    const ssrc = packet.readUInt32BE(4);
    const rp = rx.rtcp.get(ssrc);
    if (rp && !rp.isNew(index)) { this.stats.replays++; return null; }
    const plainLen = authLen - 4;
    const out = Buffer.allocUnsafe(plainLen);
    packet.copy(out, 0, 0, 8);
    if (eIndex & 0x80000000) {
      const iv = counterIv(this.rxIv, rx.keys.rtcpSalt, ssrc, 0, index);
      rx.rtcpCipher.xor(iv, packet.subarray(8, plainLen), out, 8);
    } else {
      packet.copy(out, 8, 8, plainLen);
    }
    if (rp) rp.accept(index);
    else rx.rtcp.set(ssrc, new ReplayWindow(index));
    return out;
  }
}

function tagLength(suite: SrtpSuite): number {
  return suite === 'AES_CM_128_HMAC_SHA1_32' ? 4 : 10;
}
