import type { RTCRtpTransceiver } from 'werift';

/**
 * The few werift internals the browser leg reaches into, in one place, each typed as the narrow
 * slice we touch. Every accessor checks the shape and reports failure instead of throwing, so a
 * werift upgrade that moves things degrades to werift's defaults rather than breaking calls.
 */

/** SRTP_AES128_CM_HMAC_SHA1_80 (RFC 5764 §4.1.2). */
export const PROFILE_AES128_CM_SHA1_80 = 0x0001;

export interface UdpTransportLike { socket: { send(buf: Buffer, port: number, host: string): void }; onData: (data: Buffer, addr: [string, number]) => void }
export interface CandidatePairLike { protocol: { transport?: UdpTransportLike }; remoteAddr: readonly [string, number]; nominated?: boolean }
export interface IceConnectionLike { nominated?: CandidatePairLike; checkList?: CandidatePairLike[]; protocols: Array<{ transport?: UdpTransportLike }>; state: string; localUsername?: string; localPassword?: string }
export interface DtlsTransportLike {
  role: 'auto' | 'client' | 'server';
  srtpProfiles: number[];
  dtls?: { srtp: { srtpProfile?: number }; extractSessionKeys(keyLength: number, saltLength: number): { localKey: Buffer; localSalt: Buffer; remoteKey: Buffer; remoteSalt: Buffer } };
  iceTransport: { connection: IceConnectionLike };
}
export interface SenderLike { ssrc: number; cname?: unknown }
/** werift's RTCRtpSender and RTCRtpReceiver both run their RTCP reports like this. */
interface RtcpLoopLike { runRtcp(): Promise<void>; rtcpRunning: boolean; rtcpCancel: AbortController }

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
 * Keeps werift's RTP sender and receiver from sending RTCP reports, for when the direct path
 * reports instead. The sender's loop starts at its first RTP packet and the receiver's at the
 * first one it gets; on the direct path they would report stale or no figures, and the sender's
 * SRs would spend SRTCP indexes of the sender SSRC that our SRTCP session also uses (the same
 * key, SSRC and index twice reuses keystream, RFC 3711 §9.1). Returns an undo, or null when
 * either is not as expected (then nothing was changed).
 */
export function stopRtcpReports(transceiver: RTCRtpTransceiver): (() => void) | null {
  const loops = [transceiver.sender, transceiver.receiver] as unknown as RtcpLoopLike[];
  if (!loops.every((r) => typeof r?.runRtcp === 'function' && typeof r.rtcpRunning === 'boolean' && r.rtcpCancel instanceof AbortController)) return null;
  for (const r of loops) {
    r.runRtcp = async () => {}; // werift calls this for every RTP packet sent or received
    if (r.rtcpRunning) {
      r.rtcpRunning = false; // what werift's own stop() does to end the loop
      r.rtcpCancel.abort();
    }
  }
  return () => { for (const r of loops) delete (r as Partial<RtcpLoopLike>).runRtcp; };
}
