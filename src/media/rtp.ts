/** RTP (RFC 3550 §5.1) header parsing and writing without per-packet objects where possible. */

export interface RtpPacketView {
  payloadType: number;
  sequenceNumber: number;
  timestamp: number;
  marker: boolean;
  ssrc: number;
  payload: Buffer;
}

/** Parses an RTP packet; null when it is not one (too short, wrong version, bad lengths). */
export function parseRtp(buf: Buffer): RtpPacketView | null {
  if (buf.length < 12 || (buf[0] & 0xc0) !== 0x80) return null;
  let off = 12 + (buf[0] & 0x0f) * 4;
  if (buf[0] & 0x10) {
    if (buf.length < off + 4) return null;
    off += 4 + buf.readUInt16BE(off + 2) * 4;
  }
  let end = buf.length;
  if (buf[0] & 0x20) {
    const pad = buf[buf.length - 1];
    if (pad === 0 || pad > end - off) return null;
    end -= pad;
  }
  if (off > end) return null;
  return {
    payloadType: buf[1] & 0x7f,
    marker: (buf[1] & 0x80) !== 0,
    sequenceNumber: buf.readUInt16BE(2),
    timestamp: buf.readUInt32BE(4),
    ssrc: buf.readUInt32BE(8),
    payload: buf.subarray(off, end),
  };
}

/** Writes a minimal RTP header + payload into a new buffer. */
export function buildRtp(pt: number, seq: number, ts: number, ssrc: number, payload: Uint8Array, marker = false): Buffer {
  const b = Buffer.allocUnsafe(12 + payload.length);
  writeRtpHeader(b, pt, seq, ts, ssrc, marker);
  b.set(payload, 12);
  return b;
}

/** Writes a minimal 12-byte RTP header (V=2, no CSRC or extension) at the start of `b`. */
export function writeRtpHeader(b: Buffer, pt: number, seq: number, ts: number, ssrc: number, marker = false): Buffer {
  b[0] = 0x80;
  b[1] = (marker ? 0x80 : 0) | (pt & 0x7f);
  b.writeUInt16BE(seq & 0xffff, 2);
  b.writeUInt32BE(ts >>> 0, 4);
  b.writeUInt32BE(ssrc >>> 0, 8);
  return b;
}

/** RTCP packet types (RFC 3550 §12.1). */
export const RTCP = { SR: 200, RR: 201, SDES: 202, BYE: 203, APP: 204 } as const;

/**
 * Is this datagram a STUN message or an empty one — a far end's connectivity check or NAT
 * keep-alive on its RTP/RTCP ports (RFC 6263 §4), not media? STUN is told apart by its first
 * byte as RFC 7983 §7 does (0-3; RTP and RTCP start at 128) and by a length field that matches
 * the datagram (RFC 5389 §6: a 20-byte header and attributes in 4-byte units; RFC 3489's
 * classic STUN too). mediastreamer2 (Linphone) sends Binding Requests from both of a stream's
 * ports until the first RTP and the first RTCP come back.
 */
export function isStunOrKeepalive(buf: Buffer): boolean {
  if (buf.length === 0) return true;
  if (buf.length < 20 || buf[0] > 3) return false;
  const len = buf.readUInt16BE(2);
  return len % 4 === 0 && len + 20 === buf.length;
}

/** Is this datagram RTCP rather than RTP (RFC 5761 §4: PT 64–95 after masking the marker)? */
export function isRtcp(buf: Buffer): boolean {
  return buf.length >= 8 && (buf[0] & 0xc0) === 0x80 && buf[1] >= 192 && buf[1] <= 223;
}
