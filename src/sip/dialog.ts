import { EventEmitter } from 'node:events';
import { randomInt } from 'node:crypto';
import type { Logger } from 'pino';
import { parseNameAddr, SipRequest, SipResponse } from './message';
import type { UaCore } from './uaCore';
import { sendWithCredentials, type DigestAuth } from './digest';
import { negotiateAsUas, readMinSe, readSessionExpires, SessionTimer } from './sessionTimer';

export type DialogState = 'early' | 'confirmed' | 'terminated';
export type DialogEndReason = 'bye' | 'local-bye' | 'no-ack' | 'session-timer' | 'shutdown' | 'request-timeout';

export interface DialogEvents {
  confirmed: [];
  reinvite: [req: SipRequest, reply: (status: number, sdp?: string) => void];
  /** An ACK with a body: the answer to the offer our 2xx made to a re-INVITE without SDP (RFC 3264 §4). */
  ackAnswer: [sdp: string];
  /** A DTMF digit sent as SIP INFO (application/dtmf-relay or application/dtmf), with its length when given. */
  infoDtmf: [digit: string, durationMs: number | undefined];
  terminated: [reason: DialogEndReason, req?: SipRequest];
  /**
   * A NOTIFY from the peer (the subscription of a REFER of ours, RFC 3515 §2.4.4), for the
   * application to answer: exactly once, at once. Without a listener it is answered 200 and
   * dropped, as before there were subscriptions.
   */
  notify: [req: SipRequest, respond: (status: number, reason?: string) => void];
  /** A REFER from the peer, for the application to answer (202 or a refusal). Without a listener: 405. */
  refer: [req: SipRequest, respond: (status: number, reason?: string) => void];
}

/**
 * The digit of an INFO request carrying DTMF, as PBXs send it (no RFC; Cisco's and Asterisk's
 * de-facto format): `application/dtmf-relay` with `Signal=5` and `Duration=160` (ms) lines, or
 * `application/dtmf` with the digit alone. null when it is no such request.
 */
export function readInfoDtmf(req: SipRequest): { digit: string; durationMs?: number } | null {
  const type = (req.header('content-type') ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/dtmf-relay' && type !== 'application/dtmf') return null;
  const body = req.body.trim();
  const signal = /^\s*signal\s*=\s*(\S+)\s*$/im.exec(body)?.[1] ?? (type === 'application/dtmf' ? body : '');
  // Events 10-15 (RFC 4733 numbering, which some PBXs use here) are * # A B C D.
  const byEvent = /^1[0-5]$/.test(signal) ? '*#ABCD'[Number(signal) - 10] : null;
  const digit = byEvent ?? signal.toUpperCase();
  if (!/^[0-9*#A-D]$/.test(digit)) return null;
  const duration = Number(/^\s*duration\s*=\s*(\d+)\s*$/im.exec(body)?.[1]);
  // Between 40 ms (ITU-T Q.24's shortest) and 8 s, as our own digits.
  return { digit, durationMs: Number.isFinite(duration) && duration > 0 ? Math.min(Math.max(duration, 40), 8000) : undefined };
}

/**
 * What a change of ours asked for by reinvite() settles with when a later one replaced it before
 * it took effect (waiting its turn, or refused 491): the later one carries the state wanted now.
 */
export class ReinviteSupersededError extends Error {
  constructor() {
    super('replaced by a later re-INVITE before it took effect');
    this.name = 'ReinviteSupersededError';
  }
}

/** A change asked for by reinvite(), until it goes (at most one waits: the latest). */
interface PendingOffer { sdp: string | (() => string); retried: boolean; resolve(res: SipResponse): void; reject(err: Error): void }

/**
 * A SIP dialog (RFC 3261 §12): identified by Call-ID and both tags, with the route set from
 * Record-Route, the remote target from Contact and a CSeq counter per direction. It sends and
 * receives in-dialog requests; BYE from either side terminates it.
 */
export class Dialog extends EventEmitter<DialogEvents> {
  state: DialogState;
  localSeq: number;
  remoteSeq: number;
  /** An INVITE of ours (a change by reinvite(), or a refresh) waits for its final response. */
  private reinviteInFlight = false;
  /**
   * After a 491 to an INVITE of ours (RFC 3261 §14.1), none goes before this timer fires: 2.1-4 s
   * when we made the Call-ID, 0-2 s when the peer did, so that the two sides' retries do not
   * cross again (the peer's retry comes first when it did not make it).
   */
  private glareTimer: unknown = null;
  /** The latest change asked for by reinvite() that has not gone yet (sendNextOffer). */
  private nextOffer: PendingOffer | null = null;
  /**
   * The CSeq of the peer's INVITE our 2xx answered with an offer (it had none: a delayed offer),
   * until the ACK brings the answer (RFC 3264 §4): meanwhile an offer from the peer would cross
   * ours (491), and we make none. 0: no such offer outstanding.
   */
  private offerInAckSeq = 0;
  /**
   * The peer's INVITE (or UPDATE with an offer) is with the application, not answered finally
   * yet: another from the peer gets 500 with Retry-After (RFC 3261 §14.2, RFC 3311 §5.2), and
   * our own INVITE waits for the answer (§14.1).
   */
  private peerRequestPending = false;
  /**
   * We made the Call-ID (the dialog comes from our INVITE): the longer wait after a 491 is
   * ours (RFC 3261 §14.1). Set by the UAC core.
   */
  ownsCallId = false;
  /** Seconds waited so far to retry refreshes refused in a row (491, 500 …): retried until the session would expire. */
  private refreshRetryWaited = 0;
  /** Our SDP the far end last accepted (an answer we sent, or an offer it answered 2xx): a refresh by re-INVITE re-sends it. */
  localSdp = '';
  /** Whether the peer listed UPDATE in Allow: refreshes then go without SDP. */
  peerAllowsUpdate = false;
  /**
   * The credentials the call was set up with (our INVITE's), with any digest challenges
   * answered so far; null for dialogs we accepted (then 401/407 are final, as before).
   */
  auth: DigestAuth | null = null;
  readonly sessionTimer: SessionTimer;
  /** The CSeq of the peer's INVITE that set up a dialog we accepted (0 for ours). */
  private readonly inviteSeq: number;
  /** A hang-up while our 200 waited for its ACK: the BYE's reason, sent once the ACK comes (bye()). */
  private byeAfterAck: DialogEndReason | null = null;
  /** Our 200's retransmissions gave up without an ACK: a BYE may go now. */
  private ackWaitOver = false;

  constructor(
    private readonly core: UaCore,
    readonly callId: string,
    readonly localTag: string,
    readonly remoteTag: string,
    /** Our From (UAC) or To (UAS) name-addr, with our tag. */
    readonly localAddr: string,
    /** The peer's name-addr, with its tag. */
    readonly remoteAddr: string,
    public remoteTarget: string,
    readonly routeSet: string[],
    localSeq: number,
    remoteSeq: number,
    state: DialogState,
    readonly log: Logger,
  ) {
    super();
    this.localSeq = localSeq;
    this.remoteSeq = remoteSeq;
    this.inviteSeq = remoteSeq;
    this.state = state;
    const logFailure = (err: unknown) => this.log.error({ err }, 'session timer action failed');
    this.sessionTimer = new SessionTimer(core.clock, () => { this.refreshSession().catch(logFailure); }, () => {
      this.log.warn({ interval: this.sessionTimer.interval }, 'session expired without refresh: sending BYE');
      this.bye('session-timer').catch(logFailure);
    }, core.sessionTimerSettings.minSe);
  }

  /** The session was refreshed (by either side): timer from now, refused refreshes forgotten. */
  private restartSessionTimer(interval: number, weRefresh: boolean): void {
    this.refreshRetryWaited = 0;
    this.sessionTimer.start(interval, weRefresh);
  }

  /** Records what the peer allows (from its INVITE or 2xx). */
  notePeerAllow(msg: SipRequest | SipResponse): void {
    this.peerAllowsUpdate = msg.headers('allow').some((h) => /(^|,)\s*UPDATE\s*(,|$)/i.test(h));
  }

  /**
   * Refresh as the refresher (RFC 4028 §7.4/§10): UPDATE without SDP when the peer allows it,
   * else re-INVITE with our current SDP. One that times out or finds no dialog ends the session
   * with BYE; one refused otherwise (glare, a busy peer) is tried again until the session would expire.
   */
  async refreshSession(minSe = 0): Promise<void> {
    if (this.state === 'terminated') return;
    // Deferred, not shortened: start(interval / 4) here made every later refresh ask for a
    // quarter of the interval, down to fractions no peer accepts.
    // Retried soon (the other side ends the session a third of the interval after the refresh
    // was due, or 32 s): a quarter of the interval would come too late for intervals up to 128 s.
    // So is one due while a change of ours waits its turn (after a 491, behind the peer's
    // INVITE or our offer's ACK): that change, once answered, refreshes the session (§10). A
    // refresh by re-INVITE is an offer too: not while the peer's INVITE or offer is unanswered,
    // nor while our offer in a 2xx waits for its answer (RFC 3261 §14.1, RFC 3264 §4).
    const method = this.peerAllowsUpdate ? 'UPDATE' : 'INVITE';
    const offerHeldBack = this.peerRequestPending || this.offerInAckSeq !== 0;
    if (this.reinviteInFlight || this.nextOffer || this.glareTimer !== null || (method === 'INVITE' && offerHeldBack)) {
      this.sessionTimer.retryRefreshIn(Math.max(0.5, Math.min(2, this.sessionTimer.interval / 8)));
      return;
    }
    const interval = Math.max(this.sessionTimer.interval, minSe);
    if (method === 'INVITE') this.reinviteInFlight = true;
    let res: SipResponse;
    try {
      res = await this.sendAuthenticated(() => {
        const req = this.createRequest(method, method === 'INVITE' ? this.localSdp : '');
        req.addHeader('Session-Expires', `${interval};refresher=uac`);
        req.addHeader('Supported', 'timer');
        return req;
      });
    } catch {
      res = new SipResponse(408, 'Request Timeout');
    } finally {
      if (method === 'INVITE') this.reinviteInFlight = false;
    }
    if (method === 'INVITE' && res.status === 491 && (this.state as DialogState) !== 'terminated') this.waitAfterGlare();
    // A change asked for meanwhile goes now (or once the 491's wait is over).
    this.sendNextOffer();
    if ((this.state as DialogState) === 'terminated') return; // a BYE may have crossed the refresh
    if (res.status === 422 && !minSe) { await this.refreshSession(readMinSe(res) ?? interval); return; }
    if (res.status >= 200 && res.status < 300) {
      this.refreshRetryWaited = 0;
      const se = readSessionExpires(res);
      // No Session-Expires in the 2xx: the peer dropped the timer (§7.2).
      if (se) this.restartSessionTimer(se.interval, se.refresher !== 'uas');
      else this.sessionTimer.stop();
      return;
    }
    // RFC 4028 §10: only a refresh that times out or finds no dialog (408, 481) ends the session.
    // Anything else (491 glare with the peer's own re-INVITE, 500 with Retry-After, 488) leaves it
    // up: the refresh is tried again shortly, before the session expires.
    // Retries stop where the peer would consider the session expired (RFC 4028 §10: half the
    // interval after the refresh was due, less min(32 s, a third)); then BYE. A Retry-After
    // (a 500 or 503 from a busy peer, RFC 3261 §21.5) is honoured as far as that allows.
    const retryIn = Math.max(0.25, Math.min(4, interval / 16));
    const left = interval / 2 - Math.min(32, interval / 3) - this.refreshRetryWaited;
    if (res.status === 408 || res.status === 481 || left < retryIn) {
      this.log.warn({ status: res.status, method }, 'session refresh failed: sending BYE');
      await this.bye('session-timer');
      return;
    }
    const retryAfter = Number(/^\s*(\d+)/.exec(res.header('retry-after') ?? '')?.[1] ?? 0);
    const wait = Math.min(Math.max(retryIn, retryAfter), left);
    // A peer that does not take UPDATE after all (405, 501): the next try is a re-INVITE, at once.
    if (method === 'UPDATE' && (res.status === 405 || res.status === 501)) {
      this.peerAllowsUpdate = false;
      this.log.info({ status: res.status }, 'session refresh by UPDATE refused: refreshing by re-INVITE');
      await this.refreshSession(minSe);
      return;
    }
    this.log.info({ status: res.status, method, retryInSec: wait }, 'session refresh refused: trying again shortly');
    this.refreshRetryWaited += wait;
    this.sessionTimer.retryRefreshIn(wait);
  }

  get id(): string {
    return `${this.callId};${this.localTag};${this.remoteTag}`;
  }

  /** Builds a request within the dialog (§12.2.1.1). */
  createRequest(method: string, body = '', contentType = 'application/sdp'): SipRequest {
    const seq = method === 'ACK' ? this.localSeq : ++this.localSeq;
    // Loose routing (RFC 3261 §12.2.1.1): Request-URI is the remote target, Route = route set.
    const req = new SipRequest(method, this.remoteTarget);
    for (const r of this.routeSet) req.addHeader('Route', r);
    req.addHeader('Max-Forwards', '70');
    req.addHeader('From', this.localAddr);
    req.addHeader('To', this.remoteAddr);
    req.addHeader('Call-ID', this.callId);
    req.addHeader('CSeq', `${seq} ${method}`);
    if (body) {
      req.addHeader('Content-Type', contentType);
      req.body = body;
    }
    return req;
  }

  /**
   * Ends the dialog with BYE; `reason` is what 'terminated' reports (no-ack, session-timer...).
   * On a dialog we accepted whose 200 has not been ACKed yet, the BYE waits for the ACK (RFC
   * 3261 §15): sent now, it would stop the 200's retransmissions, and a caller that lost the
   * 200 (or got the BYE first, through other proxies) would answer it 481 and then ACK a 200 we
   * no longer stand by. The 200 keeps going meanwhile; without an ACK it is given up after
   * 64·T1 (`ackGivenUp`) and the BYE goes then.
   */
  async bye(reason: DialogEndReason = 'local-bye'): Promise<void> {
    if (this.state === 'terminated') return;
    this.sessionTimer.stop();
    if (this.state === 'early' && this.inviteSeq > 0 && !this.ackWaitOver) {
      if (!this.byeAfterAck) this.log.info({ reason }, 'BYE waits for the ACK of our 200 (RFC 3261 §15)');
      this.byeAfterAck ??= reason;
      return;
    }
    this.terminate(reason);
    // A trunk that challenges BYE (many carriers do) gets it again with credentials: unanswered,
    // it would keep the call up (and billed) until its own timers end it. The dialog is already
    // over for us, so the retries go on regardless of its state.
    await sendWithCredentials(this.auth, () => this.createRequest('BYE'), (req) => this.core.sendInDialog(this, req)).catch(() => undefined);
  }

  /**
   * Offers `sdp` by re-INVITE (hold, resume, new media). One INVITE of ours at a time, and none
   * while the peer's INVITE is unanswered, our offer in a 2xx waits for its answer, the dialog
   * is not confirmed yet, or the wait after a 491 runs (RFC 3261 §14.1, RFC 3264 §4): a change
   * asked for meanwhile waits its turn, and only the latest does — one it replaces before it
   * went is settled at once with ReinviteSupersededError. Resolves with the final response;
   * rejects when the dialog ends first.
   *
   * A 491 (glare) starts the §14.1 wait: 2.1-4 s when we made the Call-ID, 0-2 s when the peer
   * did. A change asked for meanwhile goes when it ends, and this one settles as superseded.
   * Otherwise, given as a function, the offer is made again then (built anew: the peer's
   * re-INVITE that won may have changed what it should say), once; given as a string the 491 is
   * the answer, at once (the caller decides, and its next re-INVITE waits out the wait).
   * A function is also called only when the re-INVITE goes, after any wait.
   */
  async reinvite(sdp: string | (() => string)): Promise<SipResponse> {
    if (this.state === 'terminated') throw new Error('dialog terminated');
    return new Promise<SipResponse>((resolve, reject) => {
      this.nextOffer?.reject(new ReinviteSupersededError());
      this.nextOffer = { sdp, retried: false, resolve, reject };
      this.sendNextOffer();
    });
  }

  /** The change waiting (reinvite()) goes if nothing holds it back any more. */
  private sendNextOffer(): void {
    const offer = this.nextOffer;
    if (!offer || this.state !== 'confirmed' || this.reinviteInFlight || this.glareTimer !== null || this.peerRequestPending || this.offerInAckSeq !== 0) return;
    this.nextOffer = null;
    void this.sendOffer(offer);
  }

  private async sendOffer(offer: PendingOffer): Promise<void> {
    this.reinviteInFlight = true;
    let sdp = '';
    let res: SipResponse;
    try {
      sdp = typeof offer.sdp === 'function' ? offer.sdp() : offer.sdp;
      res = await this.sendAuthenticated(() => {
        const req = this.createRequest('INVITE', sdp);
        if (this.sessionTimer.interval) {
          req.addHeader('Session-Expires', `${this.sessionTimer.interval};refresher=${this.sessionTimer.weRefresh ? 'uac' : 'uas'}`);
          req.addHeader('Supported', 'timer');
        }
        return req;
      });
    } catch (err) {
      this.reinviteInFlight = false;
      offer.reject(err as Error);
      this.sendNextOffer();
      return;
    }
    this.reinviteInFlight = false;
    try {
      this.settleOffer(offer, sdp, res);
    } catch (err) {
      offer.reject(err as Error); // a promise settles once: a no-op when it did already
    } finally {
      this.sendNextOffer();
    }
  }

  /** What a final response to our INVITE means for the dialog and for the change that sent it. */
  private settleOffer(offer: PendingOffer, sdp: string, res: SipResponse): void {
    if (res.status === 491 && this.state !== 'terminated') {
      this.waitAfterGlare();
      // A later change goes after the wait instead of this one; without one, an offer we can
      // build anew goes once more then.
      if (this.nextOffer) offer.reject(new ReinviteSupersededError());
      else if (typeof offer.sdp === 'function' && !offer.retried) { offer.retried = true; this.nextOffer = offer; }
      else offer.resolve(res);
      return;
    }
    if (res.status >= 200 && res.status < 300) {
      // Ours from now on (a refresh re-sends it); a refused offer leaves the one before.
      this.localSdp = sdp;
      // Any successful re-INVITE refreshes the session (§10).
      const se = readSessionExpires(res);
      if (se && this.state !== 'terminated') this.restartSessionTimer(se.interval, se.refresher !== 'uas');
    }
    // §12.2.1.2: the dialog is over. With 481 the peer has none; with 408 (or our own timeout,
    // a CANCELled re-INVITE never answered 487) it may still hold the call: BYE it.
    if (res.status === 481) this.terminate('request-timeout');
    else if (res.status === 408) void this.bye('request-timeout');
    offer.resolve(res);
  }

  /** A 491 to an INVITE of ours: the next waits 2.1-4 s (we made the Call-ID) or 0-2 s, in steps of 10 ms (RFC 3261 §14.1). */
  private waitAfterGlare(): void {
    if (this.glareTimer !== null) this.core.clock.clearTimeout(this.glareTimer);
    const ms = this.ownsCallId ? 2100 + randomInt(0, 191) * 10 : randomInt(0, 201) * 10;
    this.glareTimer = this.core.clock.setTimeout(() => {
      this.glareTimer = null;
      this.sendNextOffer();
    }, ms);
  }

  /** An in-dialog request (with `headers` added), digest challenges answered as for every request of ours. */
  async request(method: string, body = '', contentType = 'application/sdp', headers: Array<[string, string]> = []): Promise<SipResponse> {
    return this.sendAuthenticated(() => {
      const req = this.createRequest(method, body, contentType);
      for (const [name, value] of headers) req.addHeader(name, value);
      return req;
    });
  }

  /** Sends the request `build` makes with the call's credentials, answering challenges (sendWithCredentials). */
  private sendAuthenticated(build: () => SipRequest): Promise<SipResponse> {
    return sendWithCredentials(this.auth, build, (req) => this.core.sendInDialog(this, req), () => this.state !== 'terminated');
  }

  /** An in-dialog request from the peer (already matched by the core). */
  receive(req: SipRequest, respond: (status: number, reason?: string, opts?: { body?: string; headers?: Array<[string, string]> }) => void): void {
    const seq = req.cseq.seq;
    if (req.method !== 'ACK' && req.method !== 'CANCEL') {
      // §12.2.2: a lower CSeq than seen is out of order.
      if (seq <= this.remoteSeq && this.remoteSeq !== 0) { respond(500, 'Server Internal Error', { headers: [['Retry-After', '1']] }); return; }
      this.remoteSeq = seq;
    }
    if (req.method === 'INVITE' || req.method === 'UPDATE') {
      const timer = negotiateAsUas(req, this.core.sessionTimerSettings);
      if (timer && 'reject422' in timer) { respond(422, 'Session Interval Too Small', { headers: [['Min-SE', String(timer.reject422)]] }); return; }
      // A target refresh takes effect with our 2xx (RFC 6141 §4): a re-INVITE we refuse (488,
      // 491, 500) leaves our requests going where they went.
      const contact = req.header('contact');
      const target = contact ? parseNameAddr(contact)?.uri : undefined;
      const inner = respond;
      respond = (status, reason, opts) => {
        if (status >= 200 && status < 300) {
          if (target) this.remoteTarget = target;
          if (timer) {
            opts = { ...opts, headers: [...(opts?.headers ?? []), ...timer.headers] };
            this.restartSessionTimer(timer.agreed.interval, timer.agreed.refresher === 'uas');
          }
          if (opts?.body) this.localSdp = opts.body;
        }
        inner(status, reason, opts);
      };
    }
    switch (req.method) {
      case 'BYE':
        respond(200, 'OK');
        this.terminate('bye', req);
        return;
      case 'INVITE':
        // The peer's previous INVITE is not answered yet (§14.2): 500, to be tried again later.
        if (this.peerRequestPending) { respond(500, 'Server Internal Error', { headers: [['Retry-After', String(randomInt(0, 11))]] }); return; }
        // Glare with our INVITE (§14.2), or our offer in a 2xx not answered yet by its ACK: the
        // offers would cross (RFC 3264 §4; RFC 3311 §5.2 says 491 for an UPDATE so).
        if (this.reinviteInFlight || this.offerInAckSeq !== 0) { respond(491, 'Request Pending'); return; }
        if (this.listenerCount('reinvite') === 0) { respond(488, 'Not Acceptable Here'); return; }
        this.offerToApplication(req, respond);
        return;
      case 'UPDATE':
        // An offer while the peer's earlier one is unanswered: 500 with Retry-After; while ours (a
        // re-INVITE, or a 2xx waiting for its ACK) waits for its answer: 491 (RFC 3311 §5.2).
        if (req.body && this.peerRequestPending) { respond(500, 'Server Internal Error', { headers: [['Retry-After', String(randomInt(0, 11))]] }); return; }
        if (req.body && (this.reinviteInFlight || this.offerInAckSeq !== 0)) { respond(491, 'Request Pending'); return; }
        if (req.body && this.listenerCount('reinvite') > 0) {
          this.offerToApplication(req, respond);
          return;
        }
        respond(200, 'OK');
        return;
      case 'INFO': {
        // DTMF by INFO (some PBXs send digits so): passed on; other INFO packages are taken and ignored.
        const dtmf = readInfoDtmf(req);
        respond(200, 'OK');
        if (dtmf) this.emit('infoDtmf', dtmf.digit, dtmf.durationMs);
        return;
      }
      case 'OPTIONS':
        respond(200, 'OK');
        return;
      case 'NOTIFY':
      case 'REFER':
        this.toApplication(req.method === 'NOTIFY' ? 'notify' : 'refer', req, respond);
        return;
      case 'PRACK':
        // One that crossed our 2xx acknowledges an 18x of the INVITE that set this dialog up
        // (nothing more to do: ours carry no SDP); any other matches nothing (RFC 3262 §3).
        respond(Number((req.header('rack') ?? '').trim().split(/\s+/)[1]) === this.inviteSeq && this.inviteSeq > 0 ? 200 : 481);
        return;
      default:
        respond(405, 'Method Not Allowed');
    }
  }

  /**
   * The peer's re-INVITE or UPDATE to the application ('reinvite'); until its final answer the
   * peer's next one gets 500 and ours waits. A 2xx with SDP to an INVITE without is our offer,
   * whose answer the ACK brings.
   */
  private offerToApplication(req: SipRequest, respond: (status: number, reason?: string, opts?: { body?: string }) => void): void {
    this.peerRequestPending = true;
    let answered = false;
    const reply = (status: number, sdp?: string) => {
      if (answered) return;
      if (status >= 200) {
        answered = true;
        this.peerRequestPending = false;
        if (status < 300 && sdp && req.method === 'INVITE' && !req.body.trim()) this.offerInAckSeq = req.cseq.seq;
      }
      respond(status, undefined, sdp ? { body: sdp } : undefined);
      if (answered) this.sendNextOffer();
    };
    try {
      this.emit('reinvite', req, reply);
    } catch (err) {
      // The application failed on it: the peer gets an answer all the same, and our changes go on.
      if (!answered) reply(500);
      throw err;
    }
  }

  /**
   * A NOTIFY or REFER to its listener, which answers it; answered once whatever the listener
   * does (one that throws or forgets gets 500). Without a listener a NOTIFY gets 200 (what the
   * gateway always did: unsolicited ones are dropped) and a REFER 405 (we take no transfers).
   */
  private toApplication(event: 'notify' | 'refer', req: SipRequest, respond: (status: number, reason?: string) => void): void {
    if (this.listenerCount(event) === 0) { respond(event === 'notify' ? 200 : 405); return; }
    let answered = false;
    const once = (status: number, reason?: string) => { if (!answered) { answered = true; respond(status, reason); } };
    try {
      this.emit(event, req, once);
    } finally {
      once(500, 'Server Internal Error');
    }
  }

  /** Our 2xx to the peer's INVITE `cseq` (one without SDP) carries an offer: its answer comes in the ACK. */
  awaitAnswerInAck(cseq: number): void {
    this.offerInAckSeq = cseq;
  }

  /**
   * Our 2xx to the peer's re-INVITE `cseq` was given up without an ACK (64·T1, §13.3.1.4): an
   * offer it carried will not be answered now, and offers are taken (and made) again.
   */
  ackNeverCame(cseq: number): void {
    if (this.offerInAckSeq !== cseq) return;
    this.offerInAckSeq = 0;
    this.sendNextOffer();
  }

  confirm(): void {
    if (this.state !== 'early') return;
    this.state = 'confirmed';
    this.emit('confirmed');
  }

  /** An ACK for one of our 2xx arrived: the dialog is confirmed, and a body in it may be an answer. */
  acked(ack: SipRequest): void {
    this.confirm();
    // Only the ACK of the 2xx that carried our offer answers it: any other (a repeated ACK of an
    // earlier 491 or 500, or one of no 2xx of ours) carries no answer, whatever its body. One
    // with a later CSeq has stopped that 2xx being sent again (the UA takes it as had,
    // stopAckWaits): its own ACK will not come now, and the offer is not waited for any longer.
    const answer = this.offerInAckSeq !== 0 && ack.cseq.seq === this.offerInAckSeq ? ack.body : '';
    if (this.offerInAckSeq !== 0 && ack.cseq.seq >= this.offerInAckSeq) this.offerInAckSeq = 0;
    if (this.byeAfterAck) { void this.bye(this.byeAfterAck); return; }
    if (answer) this.emit('ackAnswer', answer);
    // A change of ours held back by the unconfirmed dialog or the unanswered offer goes now.
    this.sendNextOffer();
  }

  /**
   * The UA is stopping: a BYE held back for the ACK (bye()) goes now, RFC 3261 §15 or not — the
   * 200 is no longer retransmitted, and without it the caller would ACK a 200 nobody stands by.
   * True when one was sent.
   */
  byeHeldBackNow(): boolean {
    if (!this.byeAfterAck || this.state === 'terminated') return false;
    this.ackWaitOver = true;
    void this.bye(this.byeAfterAck);
    return true;
  }

  /**
   * No ACK came for the 200 that set up this dialog (64·T1, §13.3.1.4): the session is not
   * established. Ends it with BYE, the one a hang-up was holding back if there was one.
   */
  ackGivenUp(): void {
    this.ackWaitOver = true;
    this.offerInAckSeq = 0;
    void this.bye(this.byeAfterAck ?? 'no-ack');
  }

  terminate(reason: DialogEndReason, req?: SipRequest): void {
    if (this.state === 'terminated') return;
    this.state = 'terminated';
    this.sessionTimer.stop();
    if (this.glareTimer !== null) this.core.clock.clearTimeout(this.glareTimer);
    this.glareTimer = null;
    // A change still waiting its turn will not go.
    const waiting = this.nextOffer;
    this.nextOffer = null;
    waiting?.reject(new Error('dialog terminated'));
    this.core.forgetDialog(this);
    this.log.debug({ reason }, 'dialog terminated');
    this.emit('terminated', reason, req);
  }
}
