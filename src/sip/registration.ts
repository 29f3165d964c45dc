import { EventEmitter } from 'node:events';
import type { SipResponse } from './message';
import { DigestClient, pickChallenge } from './digest';
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

/** How long stop() waits for the registrar's answer to the unregister (Expires: 0). */
const UNREGISTER_WAIT_MS = 3000;

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
  private cseq = 0;
  private timer: NodeJS.Timeout | null = null;
  private failures = 0;
  private stopped = false;

  constructor(private readonly ua: SipUserAgent, private readonly opts: RegisterOptions) {
    super();
  }

  start(): void {
    this.stopped = false;
    void this.attempt();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.state === 'registered') {
      // A gateway shutting down does not wait out Timer F (32 s) for a registrar that has gone
      // away: the unregister gets a few seconds, then the binding simply expires there.
      let giveUp: NodeJS.Timeout | undefined;
      await Promise.race([
        this.send(0).catch(() => undefined),
        new Promise<void>((r) => { giveUp = setTimeout(r, UNREGISTER_WAIT_MS); }),
      ]);
      clearTimeout(giveUp);
    }
    this.setState('unregistered');
  }

  private setState(s: RegistrationState): void {
    if (this.state === s) return;
    this.state = s;
    this.emit('state', s);
  }

  private async attempt(): Promise<void> {
    if (this.stopped) return;
    if (this.state !== 'registered') this.setState('registering');
    let res: SipResponse;
    try {
      res = await this.send(this.opts.expires ?? 600);
    } catch (err) {
      this.ua.log.warn({ err: (err as Error).message, aor: this.opts.aor }, 'REGISTER could not be sent');
      return this.scheduleRetry();
    }
    this.lastStatus = res.status;
    if (this.stopped) return;
    if (res.status >= 200 && res.status < 300) {
      this.failures = 0;
      this.successes++;
      this.setState('registered');
      const granted = grantedExpires(res, this.opts.expires ?? 600);
      // Refresh well before expiry: at 80 %, never later than 30 s before the end.
      const refreshIn = Math.max(1, Math.min(granted * 0.8, granted - 30)) * 1000;
      this.timer = setTimeout(() => void this.attempt(), refreshIn);
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
    this.timer = setTimeout(() => void this.attempt(), delay);
    this.timer.unref();
  }

  private async send(expires: number): Promise<SipResponse> {
    const dest = await this.ua.resolve(this.opts.outboundProxy ?? this.opts.registrar);
    let auth: [string, string] | undefined;
    for (let round = 0; round < 3; round++) {
      this.cseq++;
      const req = this.ua.newRequest('REGISTER', this.opts.registrar, { uri: this.opts.aor, tag: this.tag }, { uri: this.opts.aor }, this.callId, this.cseq, dest.transport);
      req.setHeader('Contact', this.ua.contactUri(dest.transport, this.opts.contactUser ?? userOf(this.opts.aor)));
      req.setHeader('Expires', String(expires));
      addOutboundRoute(req, this.opts.outboundProxy);
      if (auth) req.addHeader(auth[0], auth[1]);
      const res = await this.ua.sendRequest(req, dest);
      if ((res.status === 401 || res.status === 407) && this.opts.credentials) {
        const ch = pickChallenge(res.headers(res.status === 401 ? 'www-authenticate' : 'proxy-authenticate'));
        if (!ch || (auth && !ch.stale)) return res;
        const digest = new DigestClient(ch, this.opts.credentials.username, this.opts.credentials.password);
        auth = [res.status === 401 ? 'Authorization' : 'Proxy-Authorization', digest.authorization('REGISTER', this.opts.registrar)];
        continue;
      }
      return res;
    }
    throw new Error('REGISTER authentication loop');
  }
}

function userOf(aor: string): string {
  return /sips?:([^@]+)@/.exec(aor)?.[1] ?? 'gw';
}

function grantedExpires(res: SipResponse, asked: number): number {
  for (const c of res.headers('contact')) {
    const m = /;\s*expires=(\d+)/i.exec(c);
    if (m) return Number(m[1]);
  }
  const e = res.header('expires');
  return e && /^\d+$/.test(e) ? Number(e) : asked;
}
