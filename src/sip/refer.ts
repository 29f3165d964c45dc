import { parseNameAddr, type SipRequest } from './message';

/**
 * The SIP pieces of a blind transfer by REFER (RFC 3515, RFC 5589 §6): building the request's
 * headers and reading the NOTIFYs of the implicit subscription it creates. No timers, no call
 * state here: the transfer state machine that uses them is calls/transfer.ts.
 */

/** A status line read from a message/sipfrag body (RFC 3420). */
export interface SipfragStatus { status: number; reason: string }

/**
 * The status line a REFER's NOTIFY reports (RFC 3515 §2.4.5: the body is message/sipfrag and
 * starts with the status line of the response the transferee got to its INVITE). Only the
 * first line counts; anything after it (headers of that response) is ignored. null when the
 * body does not start with a status line: `SIP/2.0 <100-699> <reason>` — a request line, an
 * empty body, a status out of range, a version other than 2.0.
 */
export function parseSipfragStatus(body: string): SipfragStatus | null {
  // The fragment may start with a stray line break from a sloppy notifier; nothing else.
  const first = body.replace(/^(\r?\n)+/, '').split(/\r?\n/, 1)[0] ?? '';
  const m = /^SIP\/2\.0[ \t]+([1-6][0-9][0-9])(?:[ \t]+([^\r\n]*))?$/i.exec(first.trimEnd());
  if (!m) return null;
  // Reason phrases are free text (RFC 3261 §25.1): kept short and printable for logs and the tab.
  return { status: Number(m[1]), reason: (m[2] ?? '').replace(/[^\x20-\x7e]/g, '').slice(0, 100) };
}

/** What a Subscription-State header says (RFC 6665 §8.2.3). */
export interface SubscriptionState { state: 'active' | 'pending' | 'terminated' | 'other'; reason?: string }

/**
 * A NOTIFY's Subscription-State: `active;expires=60`, `terminated;reason=noresource`. A NOTIFY
 * without one (the header is mandatory, RFC 6665 §8.2.3) is read as `active`: answering it with
 * an error would make the notifier drop the subscription (§4.2.2), and with it the outcome.
 */
export function readSubscriptionState(req: SipRequest): SubscriptionState {
  const value = req.header('subscription-state');
  if (value === undefined) return { state: 'active' };
  const [head, ...params] = value.split(';');
  const s = head.trim().toLowerCase();
  const reason = params.map((p) => /^\s*reason\s*=\s*([A-Za-z0-9_.!%*+`'~-]{1,40})\s*$/i.exec(p)?.[1]).find((r) => r !== undefined);
  return { state: s === 'active' || s === 'pending' || s === 'terminated' ? s : 'other', ...(reason ? { reason: reason.toLowerCase() } : {}) };
}

/**
 * The Event header of a NOTIFY, when it is of the refer package: its `id` parameter (the CSeq
 * number of the REFER it reports on, RFC 3515 §2.4.6) or null without one. undefined when the
 * NOTIFY is of another package (or names none).
 */
export function referEventId(req: SipRequest): number | null | undefined {
  const value = req.header('event');
  if (value === undefined) return undefined;
  const [pkg, ...params] = value.split(';');
  if (pkg.trim().toLowerCase() !== 'refer') return undefined;
  const id = params.map((p) => /^\s*id\s*=\s*(\d{1,10})\s*$/i.exec(p)?.[1]).find((x) => x !== undefined);
  return id === undefined ? null : Number(id);
}

/** Whether a NOTIFY's body is declared as message/sipfrag (parameters such as version aside). */
export function isSipfrag(req: SipRequest): boolean {
  return (req.header('content-type') ?? '').split(';')[0].trim().toLowerCase() === 'message/sipfrag';
}

/**
 * The headers of a blind-transfer REFER: `Refer-To` the target (RFC 3515 §2.1; in angle brackets,
 * since the URI may carry parameters — `;user=phone`, a transport — that would otherwise be read
 * as the header's), and `Referred-By` our own URI in the dialog (RFC 3892: the transferee puts
 * it in its INVITE, so the target sees who transferred). `localAddr` is the dialog's name-addr
 * for us (with its tag, which the URI leaves out). Throws for a target that is not a plain
 * sip:/sips: URI — one with brackets, spaces or line breaks would inject header text.
 */
export function referHeaders(targetUri: string, localAddr: string): Array<[string, string]> {
  if (!/^sips?:[^\s<>"]+$/i.test(targetUri)) throw new Error(`not a SIP URI to refer to: ${targetUri.slice(0, 64)}`);
  const local = parseNameAddr(localAddr)?.uri;
  const headers: Array<[string, string]> = [['Refer-To', `<${targetUri}>`]];
  if (local && /^sips?:[^\s<>"]+$/i.test(local)) headers.push(['Referred-By', `<${local}>`]);
  return headers;
}
