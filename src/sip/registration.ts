import { EventEmitter } from 'node:events';
import { parseNameAddr, parseUri, type SipResponse, type SipUri } from './message';
import { DigestAuth } from './digest';
import type { Credentials, SipUserAgent } from './userAgent';
import { addOutboundRoute, newCallId, newTag } from './userAgent';

export interface RegisterOptions {
  /** Registrar URI, e.g. 'sip:registrar.example.com;transport=udp'. */
  registrar: string;
  /** Address of record, e.g. 'sip:alice@example.com'. */
  aor: string;
  contactUser?: string;
  credentials?: Credentials;
  expires?: number;
  outboundProxy?: string;
}

/**
 * How long stop() waits, in all, for a REGISTER still on its way and then for the registrar's
 * answer to the unregister (Expires: 0).
 */
const UNREGISTER_WAIT_MS = 3000;
/**
 * REGISTERs per send at most: the first and answers to two challenges, enough for an
 * authenticating outbound proxy's 407 followed by the registrar's 401. A wrong password is
 * refused again and again; this bound turns that into 'failed' rather than a loop.
 */
const MAX_REQUESTS_PER_SEND = 3;
/** setTimeout's largest delay (~24.8 days); a longer one fires at once (Node clamps it to 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export type RegistrationState = 'unregistered' | 'registering' | 'registered' | 'failed';

/**
 * A REGISTER client for one address of record (RFC 3261 §10): digest auth, refresh before
 * expiry, re-register with exponential backoff after failures, Expires: 0 on stop.
 */
export class Registration extends EventEmitter<{ state: [RegistrationState] }> {
  state: RegistrationState = 'unregistered';
  lastStatus = 0;
  /** Successful REGISTERs so far (the first one, then every refresh). */
  successes = 0;
  private readonly callId = newCallId();
  private readonly tag = newTag();
  /**
   * Held for the registration's life, like a call's: refreshes and the unregister carry the
   * answers at once, and a proxy's 407 and the registrar's 401 are kept side by side.
   */
  private readonly auth: DigestAuth | null;
  /** The interval we ask for: opts.expires, raised to a registrar's Min-Expires after a 423. */
  private expires: number;
  private cseq = 0;
  private timer: NodeJS.Timeout | null = null;
  private failures = 0;
  private stopped = false;
  /**
   * Whether the registrar may hold our binding: it answered a REGISTER with 2xx, and no
   * unregister since. A refused refresh leaves the binding there until it expires (§10.3).
   */
  private bound = false;
  /** The REGISTER (with its challenge and 423 rounds) on its way, if any. */
  private inFlight: Promise<void> | null = null;
  private stopping: Promise<void> | null = null;

  constructor(private readonly ua: SipUserAgent, private readonly opts: RegisterOptions) {
    super();
    this.auth = opts.credentials ? new DigestAuth(opts.credentials) : null;
    this.expires = opts.expires ?? 600;
  }

  start(): void {
    this.stopped = false;
    this.stopping = null;
    this.attempt();
  }

  /** Unregisters when the registrar may hold a binding; resolves within UNREGISTER_WAIT_MS. */
  stop(): Promise<void> {
    // A second call (a tab closing during shutdown) waits for the same unregister.
    this.stopping ??= this.unregister();
    return this.stopping;
  }

  private async unregister(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const pending = this.inFlight;
    if (pending || this.bound) {
      const done = (async () => {
        // A REGISTER on its way may yet create or refresh the binding. Its answer comes first,
        // so that our Expires: 0 (the next CSeq) is the last word the registrar gets: sent
        // alongside, a refresh still in its 401 round would come after it and bind us again.
        if (pending) await pending;
        if (!this.bound) return;
        const { res } = await this.send(0);
        if (res.status >= 200 && res.status < 300) this.bound = false;
      })().catch(() => undefined);
      // A gateway shutting down does not wait out Timer F (32 s) for a registrar that has gone
      // away: a few seconds, then the binding simply expires there. Should the pending REGISTER
      // be answered later, the unregister above still follows it.
      let giveUp: NodeJS.Timeout | undefined;
      await Promise.race([done, new Promise<void>((r) => { giveUp = setTimeout(r, UNREGISTER_WAIT_MS); })]);
      clearTimeout(giveUp);
    }
    this.setState('unregistered');
  }

  private setState(s: RegistrationState): void {
    if (this.state === s) return;
    this.state = s;
    this.emit('state', s);
  }

  private attempt(): void {
    if (this.stopped || this.inFlight) return;
    const p: Promise<void> = this.register().finally(() => { if (this.inFlight === p) this.inFlight = null; });
    this.inFlight = p;
  }

  private async register(): Promise<void> {
    if (this.state !== 'registered') this.setState('registering');
    let res: SipResponse;
    let contact: string;
    try {
      ({ res, contact } = await this.send(this.expires));
      // 423 Interval Too Brief (§10.2.8): asked again at once with the registrar's minimum, once;
      // a second 423 (or one without a usable Min-Expires) is a failure like any other.
      const min = res.status === 423 ? /^\s*(\d{1,9})\s*$/.exec(res.header('min-expires') ?? '') : null;
      if (min && Number(min[1]) > this.expires && !this.stopped) {
        this.ua.log.info({ aor: this.opts.aor, asked: this.expires, minExpires: Number(min[1]) }, 'REGISTER interval too brief: asking for the registrar\'s minimum');
        this.expires = Number(min[1]);
        ({ res, contact } = await this.send(this.expires));
      }
    } catch (err) {
      this.ua.log.warn({ err: (err as Error).message, aor: this.opts.aor }, 'REGISTER could not be sent');
      this.scheduleRetry();
      return;
    }
    this.lastStatus = res.status;
    const ok = res.status >= 200 && res.status < 300;
    // Before the stop check: a stop() waiting for this answer unregisters what it bound.
    if (ok) this.bound = true;
    if (this.stopped) return;
    if (ok) {
      this.failures = 0;
      this.successes++;
      this.setState('registered');
      const granted = grantedExpires(res, contact, this.expires);
      // Refresh well before expiry: at 80 %, never later than 30 s before the end.
      const refreshIn = Math.min(MAX_TIMER_MS, Math.max(1, Math.min(granted * 0.8, granted - 30)) * 1000);
      this.timer = setTimeout(() => { this.timer = null; this.attempt(); }, refreshIn);
      this.timer.unref();
      return;
    }
    this.ua.log.warn({ status: res.status, aor: this.opts.aor }, 'REGISTER refused');
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.stopped) return;
    this.failures++;
    this.setState('failed');
    const delay = Math.min(300, 2 ** Math.min(this.failures, 8)) * 1000;
    this.timer = setTimeout(() => { this.timer = null; this.attempt(); }, delay);
    this.timer.unref();
  }

  /** One REGISTER and its answers to challenges; also returns the Contact it bound. */
  private async send(expires: number): Promise<{ res: SipResponse; contact: string }> {
    const dest = await this.ua.resolve(this.opts.outboundProxy ?? this.opts.registrar);
    const contact = this.ua.contactUri(dest.transport, this.opts.contactUser ?? userOf(this.opts.aor));
    for (let n = 1; ; n++) {
      this.cseq++;
      const req = this.ua.newRequest('REGISTER', this.opts.registrar, { uri: this.opts.aor, tag: this.tag }, { uri: this.opts.aor }, this.callId, this.cseq, dest.transport);
      req.setHeader('Contact', contact);
      req.setHeader('Expires', String(expires));
      addOutboundRoute(req, this.opts.outboundProxy);
      this.auth?.authorize(req);
      const res = await this.ua.sendRequest(req, dest);
      // The challenge is taken even when not answered now: the next REGISTER carries it at once.
      const answer = this.auth?.accept(res) ?? false;
      // Once stopped, a binding is no longer wanted: the challenge is the answer (the unregister,
      // Expires: 0, still answers its own challenges).
      if (!answer || n >= MAX_REQUESTS_PER_SEND || (expires > 0 && this.stopped)) return { res, contact };
    }
  }
}

function userOf(aor: string): string {
  return /sips?:([^@]+)@/.exec(aor)?.[1] ?? 'gw';
}

/**
 * The interval a 2xx grants us. A registrar's 200 lists every binding of the address of record
 * (§10.3 step 8), a desk phone's among them, so it is the `expires` of our own Contact, found by
 * comparing URIs (§19.1.4: scheme, user, host, port and transport, whatever the parameters'
 * order); else the Expires header; else what we asked for.
 */
export function grantedExpires(res: SipResponse, ourContact: string, asked: number): number {
  const ours = parseUri(parseNameAddr(ourContact)?.uri ?? '');
  for (const value of res.headers('contact')) {
    const na = parseNameAddr(value);
    const uri = na ? parseUri(na.uri) : null;
    if (!na || !uri || !ours || !sameBinding(uri, ours)) continue;
    const e = na.params.expires;
    if (e && /^\d{1,10}$/.test(e)) return Number(e);
    break;
  }
  const e = res.header('expires')?.trim();
  return e && /^\d{1,10}$/.test(e) ? Number(e) : asked;
}

function sameBinding(a: SipUri, b: SipUri): boolean {
  // A port or transport left out is the default one: a registrar may write either form back.
  const transport = (u: SipUri) => (u.params.transport ?? (u.scheme === 'sips' ? 'tls' : 'udp')).toLowerCase();
  const port = (u: SipUri) => u.port ?? (transport(u) === 'tls' ? 5061 : 5060);
  return a.scheme === b.scheme && a.user === b.user && a.host === b.host && port(a) === port(b) && transport(a) === transport(b);
}
