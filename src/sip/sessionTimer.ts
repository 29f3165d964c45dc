import type { Clock } from './transactions';
import type { SipRequest, SipResponse } from './message';

type SipMessage = SipRequest | SipResponse;

/**
 * RFC 4028 session timers: keep-alive for dialogs, so a call whose BYE was lost (or whose far
 * end died) does not stay up — and billed — forever.
 */
export interface SessionTimerSettings {
  /** Smallest interval we accept (Min-SE); requests below it get 422. RFC 4028 floor: 90 s. */
  minSe: number;
  /** Interval we ask for on our INVITEs and impose when the peer supports timers but asks none. 0 = off. */
  expires: number;
}
export const DEFAULT_SESSION_TIMER: SessionTimerSettings = { minSe: 90, expires: 1800 };

/** The longest delay setTimeout takes (2^31-1 ms, 24.8 days). */
const MAX_TIMER_MS = 0x7fffffff;

export interface SessionExpires { interval: number; refresher?: 'uac' | 'uas' }

/** `Session-Expires: 1800;refresher=uac` (compact form x). Null when absent or malformed. */
export function readSessionExpires(msg: SipMessage): SessionExpires | null {
  const v = msg.header('session-expires');
  if (!v) return null;
  const m = /^\s*(\d{1,9})\s*(?:;(.*))?$/.exec(v);
  if (!m) return null;
  const r = /(?:^|;)\s*refresher\s*=\s*(uac|uas)\s*(?:;|$)/i.exec(m[2] ?? '');
  return { interval: Number(m[1]), refresher: r ? (r[1].toLowerCase() as 'uac' | 'uas') : undefined };
}

export function readMinSe(msg: SipMessage): number | null {
  const m = /^\s*(\d{1,9})/.exec(msg.header('min-se') ?? '');
  return m ? Number(m[1]) : null;
}

export function supportsTimer(msg: SipMessage): boolean {
  return [...msg.headers('supported'), ...msg.headers('require')].some((h) => h.split(',').some((t) => t.trim().toLowerCase() === 'timer'));
}

/**
 * What a UAS answers to a session-timer request (RFC 4028 §9): 422 when too small; otherwise
 * the interval and who refreshes, or null for no timer (a peer that does not support timers
 * and asked for none).
 */
export function negotiateAsUas(req: SipMessage, s: SessionTimerSettings): { reject422: number } | { agreed: SessionExpires & { refresher: 'uac' | 'uas' }; headers: Array<[string, string]> } | null {
  const asked = readSessionExpires(req);
  if (asked && asked.interval < s.minSe) return { reject422: s.minSe };
  const peerSupports = supportsTimer(req);
  const interval = asked?.interval ?? (peerSupports ? s.expires : 0);
  if (!interval) return null;
  // A peer without timer support cannot refresh: then we must (§9).
  const refresher = peerSupports ? asked?.refresher ?? 'uac' : 'uas';
  const headers: Array<[string, string]> = [['Session-Expires', `${interval};refresher=${refresher}`]];
  if (peerSupports) headers.push(['Require', 'timer']);
  return { agreed: { interval, refresher }, headers };
}

/**
 * One dialog's timer: as refresher, refresh at half the interval; otherwise, if no refresh
 * came, end the session shortly before it expires (§10: interval - min(32, interval/3)).
 */
export class SessionTimer {
  private handle: unknown = null;
  interval = 0;
  weRefresh = false;

  /** `minInterval`: our Min-SE; a shorter Session-Expires from a peer is taken as this. */
  constructor(private readonly clock: Clock, private readonly onRefreshDue: () => void, private readonly onExpired: () => void, private readonly minInterval = 0) {}

  start(interval: number, weRefresh: boolean): void {
    this.stop();
    // A 2xx may carry any Session-Expires; one below Min-SE (RFC 4028 §5: never below 90 s)
    // would have us re-INVITE every half second, or BYE the call within one.
    if (interval > 0) interval = Math.max(interval, this.minInterval);
    this.interval = interval;
    this.weRefresh = weRefresh;
    if (interval <= 0) return;
    const ms = weRefresh ? (interval * 1000) / 2 : (interval - Math.min(32, interval / 3)) * 1000;
    this.arm(ms, weRefresh ? this.onRefreshDue : this.onExpired);
  }

  /**
   * setTimeout takes at most MAX_TIMER_MS and runs a longer timer after 1 ms; a peer's
   * Session-Expires may be up to 9 digits (31 years): a month-long one had its call BYE'd (or
   * re-INVITEd in a loop) at once. A long wait is taken in steps.
   */
  private arm(ms: number, due: () => void): void {
    const step = Math.min(ms, MAX_TIMER_MS);
    this.handle = this.clock.setTimeout(() => {
      this.handle = null;
      if (ms > step) this.arm(ms - step, due);
      else due();
    }, step);
  }

  /**
   * A refresh that could not go now (another re-INVITE in flight) or was refused (glare, a busy
   * peer) tries again after `seconds`;
   * the negotiated interval stays as it is (it is what the next refresh asks for).
   */
  retryRefreshIn(seconds: number): void {
    this.stop();
    this.arm(seconds * 1000, this.onRefreshDue); // a Retry-After may be long too
  }

  stop(): void {
    if (this.handle !== null) this.clock.clearTimeout(this.handle);
    this.handle = null;
  }

  get running(): boolean {
    return this.handle !== null;
  }
}
