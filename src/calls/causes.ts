import type { SipResponse } from '../sip';

/**
 * Why a call ended, as the browser is told (docs/protocol.md). One fixed list, so the SDK and
 * CDRs can rely on it; the SIP status and reason travel next to it for detail.
 */
export const END_CAUSES = [
  'busy', 'no-answer', 'rejected', 'not-found', 'unavailable', 'cancelled', 'remote-hangup',
  'local-hangup', 'connection-lost', 'answered-elsewhere', 'declined-elsewhere', 'forbidden', 'media-timeout', 'ice-failed', 'shutdown', 'failed',
  // The far end was transferred (our REFER, RFC 5589 §6): it is talking to someone else now.
  'transferred',
] as const;
export type EndCause = (typeof END_CAUSES)[number];

/** Maps a final SIP failure response (RFC 3261 §21, RFC 3398 conventions) to a cause. */
export function causeFromSipStatus(status: number): EndCause {
  switch (status) {
    case 486: case 600: return 'busy';
    case 408: return 'no-answer';
    case 480: case 410: case 500: case 502: case 503: case 504: return 'unavailable';
    case 404: case 484: case 604: return 'not-found';
    case 403: return 'forbidden';
    case 603: case 488: case 606: return 'rejected';
    case 487: return 'cancelled';
    default: return status >= 400 && status < 700 ? 'failed' : 'failed';
  }
}

/** The SIP response an inbound call gets when the browser side ends it before answering. */
export function sipStatusForRefusal(reason: 'busy' | 'declined' | 'offline' | 'timeout' | 'shutdown' | 'capacity' | 'media'): [number, string] {
  switch (reason) {
    case 'busy': return [486, 'Busy Here'];
    case 'declined': return [603, 'Decline'];
    case 'offline': return [480, 'Temporarily Unavailable'];
    case 'timeout': return [480, 'Temporarily Unavailable'];
    case 'shutdown': return [503, 'Service Unavailable'];
    case 'capacity': return [503, 'Service Unavailable'];
    case 'media': return [488, 'Not Acceptable Here'];
  }
}

/**
 * A response's reason phrase as a tab may read it: the far end's own, or for a response our
 * transaction layer made up (a transport error's 503, a timeout's 408: no source address) a
 * fixed phrase — theirs carry the error's code, host or address, which are the operator's.
 */
export function tabSafeReason(res: SipResponse): string {
  return res.source.host ? res.reason : 'the far end could not be reached';
}
