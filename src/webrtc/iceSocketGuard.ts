import { authenticBindingRequest, isStunBindingRequest } from './stunAuth';

/**
 * What of a browser leg's ICE socket traffic werift may see. werift 0.24 trusts the network in
 * two ways a stranger who learns the port can use:
 * - it verifies no MESSAGE-INTEGRITY on connectivity checks and, as ICE-lite, takes any
 *   USE-CANDIDATE as the call's path (stunAuth.ts);
 * - it hands every DTLS record to its DTLS transport whatever address it came from, and that
 *   transport closes on a plaintext alert or a record of a type it does not know — one
 *   datagram, no key needed, silently ended the audio werift sends toward the browser.
 * So checks pass only when signed with our ICE password, and DTLS (RFC 7983: first byte
 * 20–63) only from an address one of them came from: the browser's DTLS always follows its
 * checks from the same address (the ICE pair's), so it loses nothing. RTP and RTCP are left
 * alone: SRTP authenticates them whatever their source.
 */

/** Addresses remembered per leg: a browser has a few; the oldest-checked one goes first. */
const MAX_CHECKED_ADDRESSES = 16;

export type DatagramHandler = (data: Buffer, addr: [string, number]) => void;

/** Wraps werift's receive handler of one ICE socket; `checked` is shared by the leg's sockets. */
export function guardIceReceive(werift: DatagramHandler, ufrag: string, password: string, checked: Set<string>): DatagramHandler {
  return (data, addr) => {
    if (isStunBindingRequest(data)) {
      if (!authenticBindingRequest(data, ufrag, password)) return;
      const key = `${addr[0]} ${addr[1]}`;
      // Most recent last, so the address the browser keeps checking from (consent freshness,
      // RFC 7675) is never the one evicted.
      checked.delete(key);
      checked.add(key);
      if (checked.size > MAX_CHECKED_ADDRESSES) checked.delete(checked.values().next().value as string);
    } else if (data.length > 0 && data[0] >= 20 && data[0] <= 63 && !checked.has(`${addr[0]} ${addr[1]}`)) {
      return;
    }
    werift(data, addr);
  };
}
