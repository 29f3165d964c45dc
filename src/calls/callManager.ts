import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Credentials, DigestServer, ServerInvite, SipUserAgent } from '../sip';
import { parseSipOffer } from '../sdp';
import { CallBase, type CallContext, type CallRecord, type Identity } from './callBase';
import type { EndCause } from './causes';
import { InboundCall, type RingTarget } from './inboundCall';
import { userPart } from './sipUser';
import { OutboundCall, type OutboundTarget } from './outboundCall';
import type { TransferTarget } from './transfer';
import { IcePortsExhaustedError } from '../webrtc/icePortPool';
import { OfferRefusedError } from '../webrtc/browserLeg';
import { RtpPortsExhaustedError } from '../media';
import { checkBrowserOffer } from '../sdp';

/** Where outbound calls go and how inbound ones find a user. */
export interface Routing {
  /** Destination check (dial plan + token rules); returns the number to dial. */
  checkDestination(to: string, identity: Identity): { allowed: true; number: string } | { allowed: false; reason: string };
  /** SIP target for a dialable number. */
  outboundTarget(number: string, identity: Identity): OutboundTarget;
  /** The user an inbound INVITE is for (DID map or user part), or null. */
  inboundUser(requestUser: string, toUser: string): string | null;
  /** Is this source allowed to send us INVITEs? */
  trustedSource(ip: string): boolean;
  /**
   * The trunk's credentials, to answer its challenges to our requests in a call it placed (its
   * BYE); undefined for a source that is not the trunk (a trusted PBX must not be answered
   * with the trunk's password).
   */
  trunkCredentials?(sourceIp: string): Credentials | undefined;
}

/** Refused call attempts written to the CDR per second at most (recordRefused). */
const REFUSED_RECORDS_PER_SEC = 20;

/** The browser tabs a user is connected with (the signaling layer). */
export interface UserDirectory {
  ringTargets(user: string): RingTarget[];
}

export interface CallHooks {
  callStarted?(call: CallBase): void;
  callEnded?(call: CallBase): void;
  /**
   * A call attempt refused before any call existed, for the CDR: an inbound INVITE from a
   * trusted source for a user who is offline or unknown, at capacity, with unusable SDP; a
   * browser's call the dial plan forbids or the limits refuse. (Digest challenges and untrusted
   * sources are not call attempts: a scanner's flood would be a flood of records.)
   */
  callRefused?(record: CallRecord): void;
}

/** What handling one INVITE has created so far (for the error path). */
interface InviteSetup {
  call: InboundCall | null;
}

export type StartResult =
  | { ok: true; call: OutboundCall; answerSdp: string }
  | { ok: false; code: 'draining' | 'too-many-calls' | 'bad-sdp' | 'internal'; message: string }
  | { ok: false; code: 'forbidden'; message: string; cause: EndCause; callId: string };

/**
 * Owns every live call: starts them, routes inbound INVITEs, enforces the global cap and ends
 * them all on shutdown. A call leaves the registry the moment it ends.
 */
export class CallManager {
  private readonly calls = new Map<string, CallBase>();
  private draining = false;

  constructor(
    private readonly opts: {
      ua: SipUserAgent;
      ctx: CallContext;
      routing: Routing;
      directory: UserDirectory;
      logger: Logger;
      maxCallsGlobal: number;
      ringTimeoutMs: number;
      /** Digest challenge for INVITEs from sources not in the trusted list (absent: 403). */
      inboundAuth?: DigestServer;
      hooks?: CallHooks;
    },
  ) {
    opts.ua.on('invite', (inv: ServerInvite) => {
      const setup: InviteSetup = { call: null };
      this.onInvite(inv, setup).catch((err) => this.inviteFailed(inv, setup.call, err));
    });
  }

  get size(): number {
    return this.calls.size;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  get(callId: string): CallBase | undefined {
    return this.calls.get(callId);
  }

  countFor(identityId: string): number {
    let n = 0;
    for (const c of this.calls.values()) if (c.identity?.id === identityId) n++;
    return n;
  }

  /** Click-to-call: answers the browser offer and sends the INVITE. */
  async startOutbound(identity: Identity, to: string, offerSdp: string, extraHeaders?: Record<string, string>): Promise<StartResult> {
    if (this.draining) return { ok: false, code: 'draining', message: 'the gateway is shutting down' };
    const from = identity.callerId ?? identity.id;
    if (this.calls.size >= this.opts.maxCallsGlobal) {
      this.recordRefused({ direction: 'outbound', from, to, identity: identity.id, cause: 'unavailable', sipReason: 'the gateway is at its call limit' });
      return { ok: false, code: 'too-many-calls', message: 'the gateway is at its call limit' };
    }
    const maxForIdentity = identity.maxCalls;
    if (maxForIdentity !== undefined && this.countFor(identity.id) >= maxForIdentity) {
      return { ok: false, code: 'too-many-calls', message: `at most ${maxForIdentity} concurrent calls for this identity` };
    }
    const dest = this.opts.routing.checkDestination(to, identity);
    if (!dest.allowed) {
      // A dial-plan refusal is worth its record: premium-rate and international attempts are
      // how toll fraud shows.
      const callId = this.recordRefused({ direction: 'outbound', from, to: to.slice(0, 64), identity: identity.id, cause: 'forbidden', sipReason: dest.reason });
      this.opts.logger.info({ callId, identity: identity.id, to, reason: dest.reason }, 'destination refused by dial plan');
      return { ok: false, code: 'forbidden', message: dest.reason, cause: 'forbidden', callId };
    }
    // A first look at the offer: nothing is allocated and no call exists for one that cannot work.
    const badOffer = checkBrowserOffer(offerSdp);
    if (badOffer) {
      this.opts.logger.info({ identity: identity.id, reason: badOffer }, 'browser offer refused');
      return { ok: false, code: 'bad-sdp', message: badOffer };
    }
    const target = this.opts.routing.outboundTarget(dest.number, identity);
    if (extraHeaders) target.headers = [...(target.headers ?? []), ...Object.entries(extraHeaders)];
    // A redirect is followed as a number the caller dialed: the dial plan and the token decide.
    const redirect = (number: string) => {
      const d = this.opts.routing.checkDestination(number, identity);
      if (!d.allowed) return { refused: d.reason };
      const t = this.opts.routing.outboundTarget(d.number, identity);
      if (extraHeaders) t.headers = [...(t.headers ?? []), ...Object.entries(extraHeaders)];
      return { target: t, number: d.number };
    };
    const call = new OutboundCall(identity.callerId ?? identity.id, dest.number, identity, this.opts.ctx, this.opts.ua, target, redirect);
    return this.setUpOutbound(call, offerSdp).catch((err) => this.outboundFailed(call, err));
  }

  /**
   * Where a blind transfer by a tab signed in as `identity` may send a call's far end: the
   * number through exactly the checks a `call` to it gets (the dial plan, international and
   * premium rules, the token's destinations: routing.checkDestination), and the URI an outbound
   * call to it would use as its Request-URI (routing.outboundTarget). A transfer must never be a
   * way around the dial plan: the trunk would place that call on our account.
   */
  transferTarget(identity: Identity, to: string): { ok: true; target: TransferTarget } | { ok: false; message: string } {
    const dest = this.opts.routing.checkDestination(to, identity);
    if (!dest.allowed) {
      this.opts.logger.warn({ identity: identity.id, to: to.slice(0, 64), reason: dest.reason }, 'transfer target refused by the dial plan');
      return { ok: false, message: dest.reason };
    }
    const target = this.opts.routing.outboundTarget(dest.number, identity);
    // A demo number is our own endpoint on loopback: referred there, the trunk would call its own loopback.
    if (target.demo) return { ok: false, message: `${dest.number} is a demo number: a transfer goes through the trunk` };
    return { ok: true, target: { number: dest.number, uri: target.requestUri } };
  }

  /**
   * Registers the call, answers the browser, takes the SIP side's RTP ports and starts dialing;
   * what throws is outboundFailed's. The ports are taken before the tab hears `calling`, so that
   * a gateway out of them refuses the call like one out of WebRTC ports (refuseAtCapacity).
   */
  private async setUpOutbound(call: OutboundCall, offerSdp: string): Promise<StartResult> {
    this.track(call);
    let answerSdp: string;
    try {
      answerSdp = await call.answerBrowser(offerSdp);
    } catch (err) {
      if (err instanceof IcePortsExhaustedError) return this.refuseAtCapacity(call, err, 'WebRTC');
      // Anything else that failed while answering is ours, not the browser's: outboundFailed
      // ends the call as `failed` and tells the tab `internal`.
      if (!(err instanceof OfferRefusedError)) throw err;
      call.log.warn({ err: err.message }, 'browser offer rejected');
      // The CDR says failed: the call never reached the trunk, and nobody hung up.
      call.hangup('failed');
      return { ok: false, code: 'bad-sdp', message: `could not answer the offer: ${err.message}` };
    }
    try {
      // False: the call ended meanwhile (shutdown); the session still sends `calling`, then `ended`.
      if (!(await call.reserveSipMedia())) return { ok: true, call, answerSdp };
    } catch (err) {
      if (err instanceof RtpPortsExhaustedError) return this.refuseAtCapacity(call, err, 'RTP');
      throw err;
    }
    call.dial().catch((err) => this.outboundFailed(call, err));
    return { ok: true, call, answerSdp };
  }

  /**
   * Every port pair of a range (WebRTC toward the browser, RTP toward SIP) is in use: the gateway
   * is at capacity, as at maxCallsGlobal, and the tab is told so alike for both (error
   * `too-many-calls`). Not 'bad-sdp' or 'internal' (nothing is wrong with the request; the
   * browser should retry later), and in the CDR `unavailable` as an inbound call refused for the
   * same reason (503), not a hangup by the browser or a failure.
   */
  private refuseAtCapacity(call: OutboundCall, err: Error, kind: 'WebRTC' | 'RTP'): StartResult {
    call.log.warn({ err: err.message }, `no free ${kind} port: call refused`);
    call.failBeforeDial({ cause: 'unavailable', sipReason: err.message });
    return { ok: false, code: 'too-many-calls', message: `no free ${kind} port: the gateway is at capacity` };
  }

  /**
   * Setting up an outbound call threw after it was registered (the outbound inviteFailed). The
   * call is ended with cause `failed` (an INVITE already sent is CANCELled or BYE'd): nothing
   * else might ever end it. The tab learns it from the `internal` result while startOutbound has
   * not returned yet, else from the call's `ended` event (dialing runs on after the return).
   */
  private outboundFailed(call: OutboundCall, err: unknown): StartResult {
    call.log.error({ err }, 'outbound call set-up failed');
    this.endFailedSetup(call);
    return { ok: false, code: 'internal', message: 'internal error while setting up the call' };
  }

  /** failSetup for a call whose set-up threw; should ending it throw too, that is logged. */
  private endFailedSetup(call: InboundCall | OutboundCall): void {
    try {
      call.failSetup();
    } catch (e) {
      call.log.error({ err: e }, 'could not end the call whose set-up failed');
    }
  }

  /**
   * Handling an INVITE threw. A call already created for it is ended (it answers 500 itself
   * unless a final response went out): nothing else might ever end it, so it would stay in the
   * registry for ever, holding its ports and never getting a CDR. Then 500 here for the case
   * without a call; ServerInvite.reject is a no-op once a final response was sent, so the
   * INVITE is never answered twice.
   */
  private inviteFailed(inv: ServerInvite, call: InboundCall | null, err: unknown): void {
    this.opts.logger.error({ err, sipCallId: inv.callId, callId: call?.id }, 'inbound INVITE handling failed');
    if (call) this.endFailedSetup(call);
    try { inv.reject(500, 'Server Internal Error'); } catch { /* transport error: nothing more to do */ }
  }

  /** `setup.call` is set as soon as a call exists, for inviteFailed. */
  private async onInvite(inv: ServerInvite, setup: InviteSetup): Promise<void> {
    const req = inv.request;
    const log = this.opts.logger.child({ sipCallId: inv.callId });
    if (this.draining) { inv.reject(503, 'Service Unavailable'); return; }
    if (!this.opts.routing.trustedSource(req.source.host)) {
      // Unknown source: refused, unless digest credentials are configured for such peers.
      const auth = this.opts.inboundAuth;
      if (!auth) {
        log.warn({ source: req.source.host }, 'INVITE from an untrusted source refused');
        inv.reject(403, 'Forbidden');
        return;
      }
      const verdict = auth.verify(req);
      if (!verdict.ok) {
        // 'missing' is the normal first round; anything else is worth a line in the log.
        if (verdict.reason !== 'missing' && verdict.reason !== 'stale') log.warn({ source: req.source.host, reason: verdict.reason }, 'INVITE digest authentication failed');
        inv.reject(401, 'Unauthorized', auth.challenges(verdict.reason === 'stale').map((c) => ['WWW-Authenticate', c] as [string, string]));
        return;
      }
      log.info({ source: req.source.host, user: verdict.username }, 'INVITE authenticated by digest');
    }
    const attempt = (cause: EndCause, sipStatus: number, sipReason: string, user?: string) => {
      inv.reject(sipStatus, sipReason);
      const callId = this.recordRefused({ direction: 'inbound', from: userPart(req.header('from') ?? '') || 'anonymous', to: userPart(req.uri), identity: user, cause, sipStatus, sipReason });
      log.info({ callId, sipStatus }, 'inbound call refused');
    };
    if (this.calls.size >= this.opts.maxCallsGlobal) { attempt('unavailable', 503, 'Service Unavailable'); return; }
    // No SDP at all: a delayed offer (RFC 3261 §13.2.1; Cisco CUCM's default): we offer in the
    // 200 — not with 100rel required, where the offer would belong in our reliable 18x (RFC 3262
    // §5), which carries none.
    if (!req.body.trim() && /(^|,)\s*100rel\s*(,|$)/i.test(req.headers('require').join(','))) {
      log.warn('inbound INVITE without SDP that requires 100rel: refused');
      attempt('failed', 488, 'Not Acceptable Here');
      return;
    }
    const offer = req.body.trim() ? parseSipOffer(req.body) : null;
    if (offer && 'error' in offer) {
      log.warn({ error: offer.error }, 'inbound INVITE with unusable SDP');
      attempt('failed', 488, 'Not Acceptable Here');
      return;
    }
    const toUser = userPart(req.header('to') ?? '');
    const reqUser = userPart(req.uri);
    const user = this.opts.routing.inboundUser(reqUser, toUser);
    const targets = user ? this.opts.directory.ringTargets(user) : [];
    if (!user || targets.length === 0) {
      log.info({ reqUser, user }, user ? 'inbound call for a user who is not online: 480' : 'inbound call for no known user: 404');
      if (user) attempt('unavailable', 480, 'Temporarily Unavailable', user);
      else attempt('not-found', 404, 'Not Found');
      return;
    }
    const fromHeader = req.header('from') ?? '';
    // A call from the trunk may have its in-dialog requests challenged by it (BYE): answered
    // with the trunk's credentials. A peer let in by our digest check gets none of them.
    const credentials = this.opts.routing.trustedSource(req.source.host) ? this.opts.routing.trunkCredentials?.(req.source.host) : undefined;
    const call = new InboundCall(userPart(fromHeader) || 'anonymous', displayName(fromHeader), reqUser, user, this.opts.ctx, inv, offer, this.opts.ringTimeoutMs, credentials);
    setup.call = call;
    this.track(call);
    // The gateway's callId (in call.log) and the SIP Call-ID together: a call is followed from the trunk's traces to the tab's.
    call.log.info({ from: call.from, to: reqUser, user, tabs: targets.length, sipCallId: inv.callId }, 'inbound call ringing');
    await call.ring(targets);
  }

  /**
   * Hands a refused attempt's record to the callRefused hook; returns its call id. At most
   * REFUSED_RECORDS_PER_SEC a second: each is a synchronous fsync on the thread that may carry
   * the media, and "trusted" is a UDP source address anyone can forge — past the budget the
   * attempts are counted and one warning a second says how many went unrecorded.
   */
  private recordRefused(r: Omit<CallRecord, 'callId' | 'startTime' | 'endTime' | 'durationSec'>): string {
    const callId = randomUUID();
    const nowMs = Date.now();
    const second = Math.floor(nowMs / 1000);
    // One budget per direction: a forged SIP flood must not push the browsers' (authenticated)
    // dial-plan refusals, the toll-fraud evidence, out of the record.
    const budget = this.refusedBudget[r.direction];
    if (second !== budget.second) {
      budget.second = second;
      budget.used = 0;
    }
    if (++budget.used > REFUSED_RECORDS_PER_SEC) {
      // Said once the second is over, whether or not another attempt comes.
      if (budget.unrecorded++ === 0) {
        setTimeout(() => {
          this.opts.logger.warn({ direction: r.direction, unrecorded: budget.unrecorded }, 'refused call attempts over the record budget: not in the CDR');
          budget.unrecorded = 0;
        }, 1000 - (nowMs % 1000)).unref();
      }
      return callId;
    }
    const now = new Date(nowMs).toISOString();
    // A peer's From and Request-URI user parts may be long: a record keeps what identifies them.
    const record: CallRecord = { callId, ...r, from: r.from.slice(0, 64), to: r.to.slice(0, 64), startTime: now, endTime: now, durationSec: 0 };
    try {
      this.opts.hooks?.callRefused?.(record);
    } catch (err) {
      this.opts.logger.error({ err, callId }, 'callRefused hook failed');
    }
    return callId;
  }

  /** Per direction: the second whose refused attempts are being counted, and the counts (recordRefused). */
  private readonly refusedBudget = {
    inbound: { second: 0, used: 0, unrecorded: 0 },
    outbound: { second: 0, used: 0, unrecorded: 0 },
  };

  private track(call: CallBase): void {
    this.calls.set(call.id, call);
    // Before the hook: should it throw, ending the call still takes it out of the registry.
    call.once('ended', () => {
      this.calls.delete(call.id);
      this.opts.hooks?.callEnded?.(call);
    });
    this.opts.hooks?.callStarted?.(call);
  }

  /**
   * Stop taking calls, let the live ones finish for up to `timeoutMs`, then hang up the rest.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    const deadline = Date.now() + timeoutMs;
    while (this.calls.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    this.hangupAll();
    // Give BYEs a moment to leave before the UA stops.
    if (this.calls.size === 0) await new Promise((r) => setTimeout(r, 50));
  }

  hangupAll(): void {
    this.draining = true;
    for (const c of [...this.calls.values()]) {
      if (c instanceof OutboundCall || c instanceof InboundCall) c.hangup('shutdown');
    }
  }
}


function displayName(value: string): string | undefined {
  const m = /^\s*"((?:[^"\\]|\\.)*)"/.exec(value) ?? /^\s*([^<"]+?)\s*</.exec(value);
  return m ? m[1].replace(/\\(.)/g, '$1') : undefined;
}
