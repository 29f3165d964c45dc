import { authenticBindingRequest, isStunBindingRequest } from './stunAuth';

/**
 * What of a browser leg's ICE socket traffic werift may see. werift 0.24 trusts the network in
 * ways a stranger who learns the port can use:
 * - it verifies no MESSAGE-INTEGRITY on connectivity checks and, as ICE-lite, takes any
 *   USE-CANDIDATE as the call's path (stunAuth.ts); it answers any other STUN request with a
 *   signed error response three times its size, to whatever source the request claims;
 * - it hands every DTLS record to its DTLS transport whatever address it came from, and that
 *   transport closes on an alert (plaintext, or with a known alert code: it never authenticates
 *   them) or a record of a type it does not know — one datagram silently ended the audio werift
 *   sends toward the browser;
 * - it parses an RTP header before SRTP authenticates the packet, and its header-extension
 *   parser is quadratic in the length the header claims: one 36-byte packet claiming 0xffff
 *   words froze the whole process for minutes (werift's own media path only: ours reads RTP
 *   before werift does).
 * So: STUN passes only as a Binding request signed with our ICE password, not replayed from
 * another address; DTLS (RFC 7983: first byte 20–63) only from an address such a check came
 * from, and never an alert or a record type werift cannot use (the browser's close_notify at
 * hang-up is all that is lost); RTP only with a header that fits the packet and an extension of
 * a sane length. The browser's DTLS always follows its checks from the same address (the ICE
 * pair's), so it loses nothing.
 */

/** Addresses remembered per leg: a browser has a few; the oldest-checked one goes first. */
const MAX_CHECKED_ADDRESSES = 64;
/** Transaction ids of recent checks, to tell a browser's retransmission from a replay elsewhere. */
const MAX_RECENT_CHECKS = 256;
/** Header-extension words an RTP packet may claim (Chrome's audio uses a handful). */
const MAX_RTP_EXTENSION_WORDS = 64;
/** SRTP's authentication tag (the shortest werift takes: AES_CM_128_HMAC_SHA1_80's 10 bytes). */
const SRTP_TAG = 10;
const DTLS_RECORD_HEADER = 13;
const DTLS_CHANGE_CIPHER_SPEC = 20;
const DTLS_HANDSHAKE = 22;
const DTLS_APPLICATION_DATA = 23;

export type DatagramHandler = (data: Buffer, addr: [string, number]) => void;

/** What the guard of one leg remembers, shared by its sockets. */
export interface GuardState {
  /** Addresses signed checks came from, most recent last. */
  checked: Set<string>;
  /** Transaction id (hex) of recent signed checks → the address it came from. */
  recentChecks: Map<string, string>;
}

export function newGuardState(): GuardState {
  return { checked: new Set(), recentChecks: new Map() };
}

/**
 * Wraps werift's receive handler of one ICE socket. `credentials` gives our ICE ufrag and
 * password at the time of each check (werift would change them on an ICE restart).
 */
export function guardIceReceive(werift: DatagramHandler, credentials: () => { ufrag: string; password: string } | null, state: GuardState): DatagramHandler {
  return (data, addr) => {
    if (data.length === 0) return;
    const first = data[0];
    if (first < 4) {
      if (isStunShaped(data) && acceptCheck(data, addr, credentials(), state)) werift(data, addr);
      return;
    }
    if (first >= 20 && first <= 63) {
      if (state.checked.has(key(addr)) && dtlsRecordsUsable(data)) werift(data, addr);
      return;
    }
    if (first >= 128 && first <= 191 && !(data.length >= 2 && data[1] >= 192 && data[1] <= 223) && !rtpHeaderSane(data)) return;
    werift(data, addr);
  };
}

/** What guardSockets needs of werift's list of an ICE connection's sockets (its `protocols`). */
export interface SocketList { push(...items: Array<{ transport?: { onData?: unknown } }>): number; [Symbol.iterator](): Iterator<{ transport?: { onData?: unknown } }> }

/**
 * Puts `wrap` under the receive handler of every socket of werift's list, now and as werift adds
 * more: it gathers for as long as it likes (past the 2 s our SDP waits for it) and would add a
 * socket on an ICE restart, and one added unguarded would let a stranger's unsigned nomination
 * or DTLS alert through. werift adds a socket to the list only once its handler is set, and
 * replaces the list only when it closes.
 */
export function guardSockets(list: SocketList, wrap: (onData: DatagramHandler) => DatagramHandler, unguardable: () => void): void {
  const guarded = new WeakSet<object>();
  const guard = (p: { transport?: { onData?: unknown } }) => {
    const t = p.transport;
    // werift's TURN and TCP sockets have no such handler: not used today (ICE-lite, no ICE
    // servers, no TCP), they would pass unguarded — said, not silent.
    if (!t || typeof t.onData !== 'function') { unguardable(); return; }
    if (guarded.has(t)) return;
    t.onData = wrap(t.onData as DatagramHandler);
    guarded.add(t);
  };
  for (const p of list) guard(p);
  const push = list.push;
  list.push = function (this: SocketList, ...items) {
    for (const p of items) guard(p);
    return push.apply(this, items);
  };
}

function key(addr: [string, number]): string {
  return `${addr[0]} ${addr[1]}`;
}

/** RFC 5389 §6: the top two bits zero and the magic cookie. */
function isStunShaped(data: Buffer): boolean {
  return data.length >= 20 && data.readUInt32BE(4) === 0x2112a442;
}

/** A signed Binding request that is no replay from elsewhere; its source is remembered. */
function acceptCheck(data: Buffer, addr: [string, number], creds: { ufrag: string; password: string } | null, state: GuardState): boolean {
  if (!creds || !isStunBindingRequest(data) || !authenticBindingRequest(data, creds.ufrag, creds.password)) return false;
  const from = key(addr);
  // A browser retransmits a check with its transaction id from the same address; the same
  // signed check from another address is someone who saw it (the MAC does not cover the
  // source) trying to get that address let in.
  const tid = data.toString('hex', 8, 20);
  const seenFrom = state.recentChecks.get(tid);
  if (seenFrom !== undefined && seenFrom !== from) return false;
  if (seenFrom === undefined) {
    state.recentChecks.set(tid, from);
    if (state.recentChecks.size > MAX_RECENT_CHECKS) state.recentChecks.delete(state.recentChecks.keys().next().value as string);
  }
  // Most recent last, so the address the browser keeps checking from (consent freshness,
  // RFC 7675) is never the one evicted.
  state.checked.delete(from);
  state.checked.add(from);
  if (state.checked.size > MAX_CHECKED_ADDRESSES) state.checked.delete(state.checked.values().next().value as string);
  return true;
}

/**
 * Every record in the datagram is one werift can use without harm: ChangeCipherSpec,
 * handshake or application data, each whole (RFC 6347 §4.1 record layer).
 */
function dtlsRecordsUsable(data: Buffer): boolean {
  let off = 0;
  while (off < data.length) {
    if (off + DTLS_RECORD_HEADER > data.length) return false;
    const type = data[off];
    if (type !== DTLS_CHANGE_CIPHER_SPEC && type !== DTLS_HANDSHAKE && type !== DTLS_APPLICATION_DATA) return false;
    off += DTLS_RECORD_HEADER + data.readUInt16BE(off + 11);
  }
  return off === data.length;
}

/** RFC 3550 §5.1/§5.3.1: CSRCs, the extension and SRTP's tag fit in the packet; the extension is short. */
function rtpHeaderSane(data: Buffer): boolean {
  if (data.length < 12 + SRTP_TAG) return false;
  let header = 12 + 4 * (data[0] & 0x0f);
  if (data[0] & 0x10) {
    if (data.length < header + 4) return false;
    const words = data.readUInt16BE(header + 2);
    if (words > MAX_RTP_EXTENSION_WORDS) return false;
    header += 4 + 4 * words;
  }
  return header + SRTP_TAG <= data.length;
}
