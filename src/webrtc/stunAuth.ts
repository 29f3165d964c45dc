import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * ICE connectivity checks authenticated the way RFC 8445 §7.2.2 asks and werift 0.24 does not:
 * a STUN Binding request must name our ufrag first in its USERNAME and carry a
 * MESSAGE-INTEGRITY made with our ICE password (short-term credentials, RFC 5389 §10.1.2) —
 * only the browser, which got both in our SDP, can make one. werift parses requests without a
 * key and, as ICE-lite, takes any USE-CANDIDATE from any address as a nomination: one forged
 * packet could move a call's audio (to an eavesdropper, or onto a victim).
 */

const BINDING_REQUEST = 0x0001;
const MAGIC_COOKIE = 0x2112a442;
const HEADER = 20;
const USERNAME = 0x0006;
const MESSAGE_INTEGRITY = 0x0008;
const USE_CANDIDATE = 0x0025;
const FINGERPRINT = 0x8028;

/** Whether a datagram is a STUN Binding request (RFC 5389 §6: type, magic cookie). */
export function isStunBindingRequest(data: Buffer): boolean {
  return data.length >= HEADER && data.readUInt16BE(0) === BINDING_REQUEST && data.readUInt32BE(4) === MAGIC_COOKIE;
}

/**
 * A Binding request's authentication against our ICE credentials: null when it is not one or
 * fails (wrong or missing USERNAME, missing or wrong MESSAGE-INTEGRITY, malformed), else
 * whether it nominates (USE-CANDIDATE).
 */
export function authenticBindingRequest(data: Buffer, localUfrag: string, localPassword: string): { useCandidate: boolean } | null {
  if (!isStunBindingRequest(data)) return null;
  const end = HEADER + data.readUInt16BE(2);
  // The whole datagram is the message: werift reads attributes to the datagram's end, and one
  // added past what the MAC covers must not count.
  if (end !== data.length || end % 4 !== 0) return null;
  let username: string | null = null;
  let useCandidate = false;
  for (let off = HEADER; off + 4 <= end;) {
    const type = data.readUInt16BE(off);
    const len = data.readUInt16BE(off + 2);
    const value = off + 4;
    if (value + len > end) return null;
    if (type === USERNAME) username = data.toString('utf8', value, value + len);
    else if (type === USE_CANDIDATE) useCandidate = true;
    else if (type === MESSAGE_INTEGRITY) {
      // Only FINGERPRINT may follow it (§15.4), so everything that counts has been read. The
      // HMAC covers the message up to the attribute, its header length counting up to the
      // attribute's end.
      if (len !== 20 || username === null || !username.startsWith(`${localUfrag}:`)) return null;
      // After it, only a FINGERPRINT ending the message (RFC 5389 §15.4, §15.5): werift would
      // read anything else — a USE-CANDIDATE added by someone who saw the browser's check —
      // though the MAC does not cover it.
      const after = value + 20;
      if (after !== end && !(after + 8 === end && data.readUInt16BE(after) === FINGERPRINT && data.readUInt16BE(after + 2) === 4)) return null;
      const signed = Buffer.from(data.subarray(0, off));
      signed.writeUInt16BE(value + 20 - HEADER, 2);
      const mac = createHmac('sha1', Buffer.from(localPassword, 'utf8')).update(signed).digest();
      return timingSafeEqual(mac, data.subarray(value, value + 20)) ? { useCandidate } : null;
    }
    off = value + ((len + 3) & ~3);
  }
  return null; // no MESSAGE-INTEGRITY
}
