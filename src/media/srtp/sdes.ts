import { randomBytes } from 'node:crypto';
import { REPLAY_WINDOW } from './srtpSession';

/** SDES key exchange in SDP (RFC 4568): the a=crypto attribute. */
export type SrtpSuite = 'AES_CM_128_HMAC_SHA1_80' | 'AES_CM_128_HMAC_SHA1_32';
export const SUPPORTED_SUITES: SrtpSuite[] = ['AES_CM_128_HMAC_SHA1_80', 'AES_CM_128_HMAC_SHA1_32'];

export interface SdesCrypto {
  tag: number;
  suite: SrtpSuite;
  /** 16-byte master key. */
  key: Buffer;
  /** 14-byte master salt. */
  salt: Buffer;
  /**
   * The master key identifier the sender puts in each packet (RFC 3711 §3.1), as hex of its
   * a=crypto length: `inline:KEY|2^20|1:4` → "00000001". Absent: no MKI (what we send).
   */
  mki?: string;
}

/**
 * Session parameters we cannot honour (RFC 4568 §6.3); everything else is tolerated. FEC_ORDER
 * only matters with an FEC stream, which FEC_KEY would key (refused); WSH is checked on its own.
 */
const UNSUPPORTED_SESSION_PARAMS = /^(UNENCRYPTED_SRTP|UNENCRYPTED_SRTCP|UNAUTHENTICATED_SRTP|FEC_KEY)/i;

/**
 * Parses the value of an a=crypto attribute (without 'crypto:'), e.g.
 * `1 AES_CM_128_HMAC_SHA1_80 inline:KEY|2^20|1:4;inline:KEY2 KDR=0`.
 * The first usable key is taken; lifetime is accepted, an MKI is checked and skipped in the
 * far end's packets (we send none).
 */
export function parseCryptoAttribute(value: string): SdesCrypto | { error: string } {
  const parts = value.trim().split(/\s+/);
  if (parts.length < 3) return { error: 'a=crypto needs a tag, a suite and key parameters' };
  const tag = Number(parts[0]);
  if (!/^\d{1,9}$/.test(parts[0])) return { error: `a=crypto tag "${parts[0].slice(0, 12)}" is not a number` };
  const suite = parts[1].toUpperCase();
  if (!SUPPORTED_SUITES.includes(suite as SrtpSuite)) return { error: `unsupported crypto suite ${parts[1].slice(0, 40)}` };
  for (const sp of parts.slice(3)) {
    if (UNSUPPORTED_SESSION_PARAMS.test(sp)) return { error: `unsupported SRTP session parameter ${sp.slice(0, 40)}` };
    // WSH (§6.3.7): the replay window the sender asks its receiver for, 64 at least; ours
    // (srtpSession.ts) meets a hint up to its size.
    const wsh = /^WSH=(\d+)$/i.exec(sp);
    if (wsh && Number(wsh[1]) > REPLAY_WINDOW) return { error: `replay window of ${wsh[1].slice(0, 12)} packets asked (WSH), ours is ${REPLAY_WINDOW}` };
    const kdr = /^KDR=(\d+)$/i.exec(sp);
    if (kdr && kdr[1] !== '0') return { error: 'key derivation rate other than 0 is not supported' };
  }
  for (const keyParam of parts[2].split(';')) {
    const m = /^inline:([A-Za-z0-9+/=]+)(?:\|([^|]+))?(?:\|([^|]+))?$/.exec(keyParam);
    if (!m) continue;
    const raw = Buffer.from(m[1], 'base64');
    if (raw.length !== 30) continue;
    const mkiParam = [m[2], m[3]].find((p) => p?.includes(':'));
    const c: SdesCrypto = { tag, suite: suite as SrtpSuite, key: raw.subarray(0, 16), salt: raw.subarray(16, 30) };
    if (mkiParam) {
      const mki = parseMki(mkiParam);
      if (typeof mki !== 'string') return mki;
      c.mki = mki;
    }
    return c;
  }
  return { error: 'a=crypto has no usable inline key (30 bytes base64)' };
}

/** `value:length` (RFC 4568 §6.1: decimal value, length 1-128 bytes) → the MKI's bytes as hex. */
function parseMki(param: string): string | { error: string } {
  const m = /^(\d{1,40}):(\d{1,3})$/.exec(param);
  const length = m ? Number(m[2]) : 0;
  if (!m || length < 1 || length > 128) return { error: `a=crypto MKI "${param.slice(0, 40)}" is not value:length with a length of 1 to 128` };
  const hex = BigInt(m[1]).toString(16).padStart(length * 2, '0');
  if (hex.length > length * 2) return { error: `a=crypto MKI ${m[1].slice(0, 40)} does not fit in ${length} bytes` };
  return hex;
}

export function formatCryptoAttribute(c: SdesCrypto): string {
  return `${c.tag} ${c.suite} inline:${Buffer.concat([c.key, c.salt]).toString('base64')}`;
}

export function generateSdesCrypto(tag: number, suite: SrtpSuite): SdesCrypto {
  const k = randomBytes(30);
  return { tag, suite, key: k.subarray(0, 16), salt: k.subarray(16) };
}

/**
 * Picks the first offered a=crypto we can do (RFC 4568 §7.1.2: the answerer chooses one), and
 * the suite our answer uses (the same). Returns null when none is usable.
 */
export function chooseCrypto(offered: string[], supported: SrtpSuite[] = SUPPORTED_SUITES): { remote: SdesCrypto; localSuite: SrtpSuite } | null {
  for (const line of offered) {
    const c = parseCryptoAttribute(line);
    if ('error' in c) continue;
    if (supported.includes(c.suite)) return { remote: c, localSuite: c.suite };
  }
  return null;
}
