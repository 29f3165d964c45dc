import type { RTCRtpTransceiver } from 'werift';

/**
 * The few werift internals the browser leg reaches into, in one place, each typed as the narrow
 * slice we touch. Every accessor checks the shape and reports failure instead of throwing, so a
 * werift upgrade that moves things degrades to werift's defaults rather than breaking calls.
 */

/** SRTP_AES128_CM_HMAC_SHA1_80 (RFC 5764 §4.1.2). */
export const PROFILE_AES128_CM_SHA1_80 = 0x0001;

export interface UdpTransportLike { socket: { send(buf: Buffer, port: number, host: string): void }; onData: (data: Buffer, addr: [string, number]) => void }
export interface CandidatePairLike { protocol: { transport?: UdpTransportLike }; remoteAddr: readonly [string, number] }
export interface IceConnectionLike { nominated?: CandidatePairLike; protocols: Array<{ transport?: UdpTransportLike }>; state: string }
export interface DtlsTransportLike {
  role: 'auto' | 'client' | 'server';
  srtpProfiles: number[];
  dtls?: { srtp: { srtpProfile?: number }; extractSessionKeys(keyLength: number, saltLength: number): { localKey: Buffer; localSalt: Buffer; remoteKey: Buffer; remoteSalt: Buffer } };
  iceTransport: { connection: IceConnectionLike };
}
export interface SenderLike { ssrc: number; cname?: unknown; ntpTimestamp: bigint; rtpTimestamp: number; packetCount: number; octetCount: number; runRtcp(): Promise<void> }
interface ReceiverLike { runRtcp(): Promise<void>; rtcpRunning: boolean; rtcpCancel: AbortController }

export function dtlsTransportOf(transceiver: RTCRtpTransceiver): DtlsTransportLike | null {
  try {
    const t = transceiver.dtlsTransport as unknown as DtlsTransportLike | undefined;
    return t && Array.isArray(t.srtpProfiles) && typeof t.role === 'string' && t.iceTransport?.connection ? t : null;
  } catch {
    return null;
  }
}

/**
 * Offers only SRTP_AES128_CM_HMAC_SHA1_80 in the DTLS handshake (werift prefers AES-GCM, which
 * browsers then choose; our SRTP does AES-CM). Call after the transceiver has its transport
 * (after the local or remote description is set) and before ICE connects.
 */
export function restrictSrtpProfile(transceiver: RTCRtpTransceiver): boolean {
  const t = dtlsTransportOf(transceiver);
  if (!t) return false;
  t.srtpProfiles = [PROFILE_AES128_CM_SHA1_80];
  return true;
}

/**
 * Sets the DTLS role our answer takes (a=setup, RFC 8842 §5.3), before createAnswer(). Left to
 * itself werift always answers active (client), even to an offer that is itself active.
 */
export function setAnswerDtlsRole(transceiver: RTCRtpTransceiver, role: 'client' | 'server'): boolean {
  const t = dtlsTransportOf(transceiver);
  if (!t) return false;
  t.role = role;
  return true;
}

/**
 * Keeps werift's RTP receiver from sending receiver reports, for when our code reports instead.
 * Its report loop starts at the first RTP packet it handles and from then on reports what it
 * saw; once the direct path has the packets that is nothing, or a frozen picture if a few
 * came through werift first, and the browser would read both reports. Returns an undo, or null
 * when werift's receiver is not as expected (then werift may report as well: it only does if it
 * ever got a packet).
 */
export function stopReceiverReports(transceiver: RTCRtpTransceiver): (() => void) | null {
  const r = transceiver.receiver as unknown as ReceiverLike;
  if (typeof r?.runRtcp !== 'function' || typeof r.rtcpRunning !== 'boolean' || !(r.rtcpCancel instanceof AbortController)) return null;
  r.runRtcp = async () => {}; // werift calls this for every RTP packet it receives
  if (r.rtcpRunning) {
    r.rtcpRunning = false; // what werift's own stop() does to end the loop
    r.rtcpCancel.abort();
  }
  return () => { delete (r as Partial<ReceiverLike>).runRtcp; };
}
