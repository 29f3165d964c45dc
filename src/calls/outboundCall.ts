import { parseNameAddr, type ClientInvite, type SipResponse, type SipUserAgent } from '../sip';
import { splitList } from '../sip/message';
import { buildSipOffer, parseSipAnswer } from '../sdp';
import { BrowserLeg } from '../webrtc/browserLeg';
import { CallBase, type CallContext, type CallEndInfo, type CallRecord, type HangupCause, type Identity } from './callBase';
import { causeFromSipStatus } from './causes';
import { userPart } from './sipUser';

/**
 * Where a redirect (3xx) may take the call: the number's target through our own routing (the
 * dial plan and the caller's token applied, as to any number the browser dials), or why not.
 */
export type RedirectPolicy = (number: string) => { target: OutboundTarget; number: string } | { refused: string };

/** Redirects followed per call at most (a loop of 302s ends there). */
const MAX_REDIRECTS = 3;

export interface OutboundTarget {
  /** Request-URI toward the trunk or demo endpoint. */
  requestUri: string;
  fromUri: string;
  fromDisplay?: string;
  outboundProxy?: string;
  credentials?: { username: string; password: string };
  headers?: Array<[string, string]>;
  /** The built-in demo endpoint's number (on loopback), not the trunk's. */
  demo?: boolean;
}

/**
 * Browser → SIP (click-to-call). The browser's offer is answered at once, so ICE and DTLS run
 * while the INVITE is in flight and the far end rings; early media (183) and the answer are
 * then only a matter of wiring the bridge.
 */
export class OutboundCall extends CallBase {
  private browser: BrowserLeg | null = null;
  private invite: ClientInvite | null = null;
  private answerTimer: NodeJS.Timeout | null = null;
  /** Numbers this call was redirected to (3xx), in order: each one once. */
  private readonly redirectedTo: string[] = [];

  constructor(
    from: string,
    to: string,
    identity: Identity | undefined,
    ctx: CallContext,
    private readonly ua: SipUserAgent,
    private target: OutboundTarget,
    /** Absent: a 3xx ends the call, as any final failure does. */
    private readonly redirect?: RedirectPolicy,
  ) {
    super('outbound', from, to, identity, ctx, 'trying');
  }

  /** Answer the browser's offer; returns the answer SDP for the `calling` message. */
  async answerBrowser(offerSdp: string): Promise<string> {
    const leg = this.newBrowserLeg();
    this.browser = leg;
    leg.on('failed', (reason) => { if (this.browser === leg) this.browserMediaFailed(reason); });
    const answer = await leg.answer(offerSdp);
    // Our INVITE then offers the trunk no Opus when the browser will send PCMU.
    this.browserSendsPcmu = leg.sendCodec === 'pcmu';
    return answer;
  }

  protected candidateLeg(): BrowserLeg | null {
    return this.browser;
  }

  protected browserLegReplaced(_old: BrowserLeg, next: BrowserLeg): void {
    this.browser = next;
  }

  /**
   * Take the SIP side's RTP/RTCP port pair, before the call is reported to the tab: rejects with
   * RtpPortsExhaustedError when none is free. False when the call ended meanwhile.
   */
  reserveSipMedia(): Promise<boolean> {
    return this.allocateSipLeg();
  }

  /**
   * Send the INVITE (the SIP-side RTP leg is allocated: reserveSipMedia). Async although it does
   * not wait: what it throws reaches the caller as a rejection (CallManager.outboundFailed).
   */
  async dial(): Promise<void> {
    if (this.ended) return;
    const offer = this.currentLocalSdp('sendrecv', true);
    const inv = this.ua.invite({
      requestUri: this.target.requestUri,
      from: { uri: this.target.fromUri, displayName: this.target.fromDisplay },
      to: { uri: this.target.requestUri },
      outboundProxy: this.target.outboundProxy,
      sdp: offer,
      headers: this.target.headers,
      credentials: this.target.credentials,
    });
    this.invite = inv;
    this.log.info({ requestUri: this.target.requestUri, sipCallId: inv.callId }, 'INVITE sent');
    const answerTimeoutMs = this.ctx.answerTimeoutMs ?? 0;
    if (answerTimeoutMs > 0 && !this.answerTimer) { // a redirected call keeps its first deadline
      this.answerTimer = this.after(answerTimeoutMs, () => {
        if (this.state === 'answered') return;
        this.log.info({ answerTimeoutMs }, 'no answer in time: cancelling the INVITE');
        this.endTowardSip({ cause: 'no-answer' });
      });
    }
    // Through setUpStep: the UA only logs what its listeners throw, and the call would stay.
    inv.on('progress', (res: SipResponse) => this.setUpStep(() => this.onProgress(res)));
    inv.on('accepted', (_res: SipResponse, dialog, answer) => this.setUpStep(() => this.onAccepted(answer, dialog)));
    inv.on('rejected', (res: SipResponse) => {
      if (this.ended || inv !== this.invite) return;
      if (res.status >= 300 && res.status < 400 && this.followRedirect(res)) return;
      if (res.status === 488 && this.offerSrtpOnly()) return;
      // A response our transaction layer made up (a refused connection, a TLS failure: 503 with
      // the error's code) tells the tab no more than that; the CDR keeps the detail.
      const madeUp = !res.source.host;
      this.finish({ cause: causeFromSipStatus(res.status), sipStatus: res.status, sipReason: res.reason, ...(madeUp ? { tabReason: 'the trunk could not be reached' } : {}) });
    });
    inv.on('failed', (err: Error) => {
      if (this.ended) return;
      this.log.warn({ err: err.message }, 'INVITE failed without a response');
      this.finish({ cause: 'unavailable', sipStatus: 408, sipReason: err.message, tabReason: 'the trunk could not be reached' });
    });
  }

  /**
   * A 3xx (RFC 3261 §8.1.3.4): the call goes on to the first Contact (by q) whose number our
   * routing takes — the dial plan and the caller's token decide, and the call goes through our
   * trunk, never to the host the Contact names: a redirect must not be a way around the dial
   * plan (a premium number) or to send our INVITE anywhere. Each number once, MAX_REDIRECTS in
   * all. False when none is taken (the call ends on the 3xx, with the reason).
   */
  private followRedirect(res: SipResponse): boolean {
    if (!this.redirect) return false;
    if (this.redirectedTo.length >= MAX_REDIRECTS) { res.reason = `${res.reason} (more than ${MAX_REDIRECTS} redirects)`; return false; }
    const contacts = res.headers('contact').flatMap(splitList).map((c) => parseNameAddr(c)).filter((c) => c !== null)
      .map((c) => ({ number: userPart(c.uri), q: Number(c.params.q ?? 1) }))
      .filter((c) => c.number !== '')
      .sort((a, b) => (Number.isFinite(b.q) ? b.q : 0) - (Number.isFinite(a.q) ? a.q : 0));
    const refusals: string[] = [];
    for (const { number } of contacts) {
      if (number === this.to || this.redirectedTo.includes(number)) { refusals.push(`${number.slice(0, 32)}: already tried`); continue; }
      const r = this.redirect(number);
      if ('refused' in r) { refusals.push(`${number.slice(0, 32)}: ${r.refused}`); continue; }
      this.redirectedTo.push(r.number);
      this.target = r.target;
      this.log.info({ status: res.status, to: r.number, redirects: this.redirectedTo.length }, 'redirected: calling the new number');
      this.dial().catch((err) => { this.log.warn({ err }, 'redirected INVITE could not be sent'); this.failSetup(); });
      return true;
    }
    this.log.info({ status: res.status, refusals }, 'redirect not followed');
    if (refusals.length > 0) res.reason = `${res.reason} (redirect not followed: ${refusals.join('; ')})`.slice(0, 200);
    return false;
  }

  /**
   * trunk.srtp `optional` offers RTP/AVP with a=crypto, which a far end taking SRTP only refuses
   * with 488 whatever the keys (Linphone with SRTP mandatory does; RFC 4568 defines a=crypto for
   * RTP/SAVP only). Once per call, the INVITE is sent again offering RTP/SAVP with fresh keys (a
   * new transaction, as after a redirect); the call is SRTP-only from then on. False when that
   * was tried already, or the policy is not `optional`.
   */
  private offerSrtpOnly(): boolean {
    if (this.ctx.srtp !== 'optional' || this.srtpRequired) return false;
    this.srtpRequired = true;
    this.log.info('488 to our RTP/AVP offer with SDES keys: offering RTP/SAVP instead');
    this.dial().catch((err) => { this.log.warn({ err }, 'the RTP/SAVP INVITE could not be sent'); this.failSetup(); });
    return true;
  }

  override record(): CallRecord {
    const r = super.record();
    return this.redirectedTo.length > 0 ? { ...r, redirectedTo: [...this.redirectedTo] } : r;
  }

  /** A step of set-up run from a SIP response: should it throw, the call ends (failSetup). */
  private setUpStep(step: () => void): void {
    try {
      step();
    } catch (err) {
      this.log.error({ err }, 'handling the response to our INVITE failed');
      this.failSetup();
    }
  }

  private onProgress(res: SipResponse): void {
    if (this.ended || this.state === 'answered') return;
    const hasSdp = res.body.trim().length > 0 && (res.status === 183 || res.status === 180);
    let earlyMedia = false;
    if (hasSdp) {
      const desc = parseSipAnswer(res.body);
      if (!('error' in desc) && !this.applyRemoteMedia(desc, 'answer')) {
        earlyMedia = true;
        this.startBridge(this.browser!);
        this.bridge?.setBrowserTone('none');
      }
    }
    if (!earlyMedia && res.status === 180) {
      // 180 without SDP: the far end plays nothing, so the browser hears our ringback.
      if (!this.bridge && this.sipLeg && this.browser) this.startBridge(this.browser);
      this.bridge?.setBrowserTone('ringback');
    }
    this.state = 'early';
    this.emit('progress', { status: res.status, earlyMedia });
  }

  /** `answer`: the 2xx's SDP, or that of the reliable 18x before it when the 2xx carries none (RFC 3262 §5). */
  private onAccepted(answer: string, dialog: import('../sip').Dialog): void {
    if (this.ended) {
      // Ended first (our CANCEL crossed the 200 OK, RFC 3261 §9.1): the dialog exists now, BYE it.
      dialog.bye().catch(() => undefined);
      return;
    }
    this.watchDialog(dialog);
    const desc = parseSipAnswer(answer);
    const err = 'error' in desc ? desc.error : this.applyRemoteMedia(desc, 'answer');
    if (err) {
      this.log.warn({ err }, 'unusable SDP answer: hanging up');
      this.byeAndFinish({ cause: 'failed', sipStatus: 488, sipReason: err });
      return;
    }
    this.cancelTimer(this.answerTimer);
    this.startBridge(this.browser!);
    this.bridge?.setBrowserTone('none');
    this.markAnswered('call answered');
  }

  /** Browser-initiated end (hangup, tab closed, ICE failure, shutdown). */
  hangup(cause: HangupCause = 'local-hangup'): void {
    this.endTowardSip({ cause });
  }

  /**
   * Setting the call up threw after it was registered (CallManager's catch-all, or a SIP
   * response handler): end it with cause `failed`, CANCELling or BYEing an INVITE already sent
   * as hangup does, so that it leaves the registry with its CDR instead of staying there for
   * ever. An answered call is left alone: it is fully set up and ends as usual.
   */
  failSetup(): void {
    if (this.state === 'answered') return;
    this.endTowardSip({ cause: 'failed' });
  }

  /** End the call from our side, telling the far end: BYE once a dialog exists, else CANCEL. */
  private endTowardSip(info: CallEndInfo): void {
    if (this.ended) return;
    if (this.dialog) {
      // Also before `answered`: a 2xx whose handling threw still left a dialog to end.
      this.byeAndFinish(info);
    } else {
      // Before the answer: CANCEL (the UA sends it once a provisional response arrived).
      this.invite?.cancel();
      this.finish(info);
    }
  }

  /**
   * Set-up failed on our side before the INVITE (no free WebRTC or RTP port): end the call with
   * the real cause, so the CDR and metrics do not record it as a hangup by the browser.
   */
  failBeforeDial(info: CallEndInfo): void {
    this.finish(info);
  }

  protected closeBrowserLegs(): void {
    this.browser?.close().catch(() => undefined);
    this.browser = null;
  }

  protected currentLocalSdp(direction: 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive', fresh = false): string {
    return buildSipOffer({ ...this.localSdpOptions(direction), localCrypto: fresh ? this.makeLocalCrypto() : this.localCrypto, ptime: 20 });
  }
}
