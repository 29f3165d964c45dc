import type { Credentials, ServerInvite } from '../sip';
import { DigestAuth } from '../sip/digest';
import { RtpPortsExhaustedError } from '../media';
import { buildSipOffer, checkBrowserOffer, type SipMediaDescription } from '../sdp';
import type { BrowserLeg } from '../webrtc/browserLeg';
import { IcePortsExhaustedError } from '../webrtc/icePortPool';
import { CallBase, type CallContext, type HangupCause } from './callBase';
import { sipStatusForRefusal } from './causes';

/** A browser tab that can take a call: implemented by the signaling layer. */
export interface RingTarget {
  readonly sessionId: string;
  /** Offer the call to this tab with the gateway's SDP offer for it. */
  ring(call: InboundCall, offerSdp: string): void;
}

/**
 * Where one tab's ringing ended up: still ringing; refused by the user ('declined' / 'busy');
 * gone without an answer ('gone': the tab closed; 'failed': it could not be offered the call);
 * once a tab accepted, 'won' / 'lost'; or, once another tab declined, 'declined-elsewhere'.
 */
type ForkState = 'ringing' | 'declined' | 'busy' | 'gone' | 'failed' | 'won' | 'lost' | 'declined-elsewhere';

interface Fork {
  target: RingTarget;
  leg: BrowserLeg;
  state: ForkState;
}

/**
 * SIP → browser. Every tab of the called user rings with its own peer connection; the first
 * tab to accept wins, the others are told "answered elsewhere". A decline in any tab refuses
 * the call at once with 603, and the other tabs are told "declined elsewhere" (see reject).
 * CANCEL stops the ringing, and an unanswered call is refused with 480 after the ring timeout.
 * When no tab is left ringing the call is refused at once: 486 if a tab was busy, else 480 (see
 * settleIfNobodyRinging).
 */
export class InboundCall extends CallBase {
  /** By tab (sessionId); the tab that answered is the one fork in state 'won'. */
  private readonly forks = new Map<string, Fork>();

  constructor(
    from: string,
    readonly fromName: string | undefined,
    to: string,
    readonly user: string,
    ctx: CallContext,
    private readonly invite: ServerInvite,
    /** null: the INVITE had no SDP (a delayed offer); our 200 offers and the ACK answers. */
    private remoteOffer: SipMediaDescription | null,
    private readonly ringTimeoutMs: number,
    /** The trunk's, when it placed the call: for its challenges to our requests in the dialog. */
    private readonly credentials?: Credentials,
  ) {
    super('inbound', from, to, { id: user }, ctx, 'ringing');
    invite.on('cancelled', () => this.finish({ cause: 'cancelled', sipStatus: 487, sipReason: 'Request Terminated' }));
    // A caller that required 100rel never PRACKed our 180: the SIP core refused the INVITE (500).
    invite.on('unacknowledged', () => this.finish({ cause: 'failed', sipStatus: 500, sipReason: 'Provisional Response Not Acknowledged' }));
  }

  /** Ring every tab; resolves once the offers are out (or the call could not ring anyone). */
  async ring(targets: RingTarget[]): Promise<void> {
    let allocated: boolean;
    try {
      allocated = await this.allocateSipLeg();
    } catch (e) {
      // Anything else is a set-up failure: CallManager's catch-all answers 500 (failSetup).
      if (!(e instanceof RtpPortsExhaustedError)) throw e;
      // No RTP port free: refuse now (503), or the call would sit in the registry unended.
      this.log.warn({ err: e.message }, 'no RTP port for the inbound call');
      if (!this.ended) this.refuse('capacity', 'unavailable');
      return;
    }
    if (!allocated) return;
    this.makeLocalCrypto();
    const err = this.remoteOffer ? this.applyRemoteMedia(this.remoteOffer, 'offer') : null;
    if (err) {
      this.log.warn({ err }, 'inbound offer not acceptable');
      this.refuse('media');
      return;
    }
    let withoutPort = 0;
    await Promise.all(targets.map(async (target) => {
      let leg: BrowserLeg;
      try {
        leg = this.newBrowserLeg();
      } catch (e) {
        // e.g. no free WebRTC port: this tab cannot ring; the others still may.
        if (e instanceof IcePortsExhaustedError) withoutPort++;
        this.log.warn({ err: (e as Error).message }, 'no browser leg for a ringing tab');
        return;
      }
      const fork: Fork = { target, leg, state: 'ringing' };
      this.forks.set(target.sessionId, fork);
      leg.on('failed', (reason) => {
        if (fork.state === 'won') this.browserMediaFailed(reason);
      });
      try {
        const offer = await leg.createOffer();
        if (!this.ended && fork.state === 'ringing') target.ring(this, offer);
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, 'could not create browser offer');
        if (fork.state === 'ringing') fork.state = 'failed';
        leg.close().catch(() => undefined);
      }
    }));
    // No tab could ring for want of a WebRTC port: the gateway is at capacity, as when it has no
    // RTP port (503, so that a proxy in front tries another gateway), not "user unavailable".
    if (withoutPort > 0 && withoutPort === targets.length) {
      this.refuse('capacity', 'unavailable');
      return;
    }
    // Nobody left ringing (every tab failed, went away or refused meanwhile): settled here.
    // Also stops here when a tab already accepted while other offers were still being made.
    this.settleIfNobodyRinging();
    if (this.state !== 'ringing') return;
    this.invite.progress(180);
    this.after(this.ringTimeoutMs, () => {
      // A tab that accepted is connecting: its own connect timeout decides.
      if (this.state === 'ringing' && !this.acceptedByATab()) this.refuse('timeout', 'no-answer');
    });
  }

  /** A tab accepted with its SDP answer. The first one wins. */
  async accept(sessionId: string, answerSdp: string): Promise<{ ok: true } | { ok: false; message: string }> {
    const fork = this.forks.get(sessionId);
    if (!fork || fork.state !== 'ringing' || this.state !== 'ringing') return { ok: false, message: 'call is no longer ringing for this tab' };
    // The checks an offer gets: an answer werift takes without usable audio would have us send
    // 200 OK, then end the call when ICE never comes up. The tab may answer again.
    const unusable = checkBrowserOffer(answerSdp);
    if (unusable) return { ok: false, message: `bad answer SDP: ${unusable}` };
    try {
      await fork.leg.acceptAnswer(answerSdp);
    } catch (e) {
      return { ok: false, message: `bad answer SDP: ${(e as Error).message}` };
    }
    if (this.state !== 'ringing') return { ok: false, message: 'call ended while accepting' };
    // The same tab may have closed or refused while its answer was applied: it cannot win.
    if (fork.state !== 'ringing') return { ok: false, message: 'call is no longer ringing for this tab' };
    fork.state = 'won';
    for (const other of this.forks.values()) {
      if (other !== fork && other.state === 'ringing') {
        other.state = 'lost';
        other.leg.close().catch(() => undefined);
      }
    }
    // The 200 OK waits for the tab's media (ICE + DTLS, usually well under a second): sent at
    // once, a browser whose UDP is blocked would have the caller answered — and billed — to
    // silence until the connect timeout. The caller hears ringing meanwhile; should the media
    // fail, the INVITE is refused 480 (browserMediaFailed, cause ice-failed). A CANCEL or the
    // tab hanging up meanwhile ends the call as while ringing.
    if (!(await this.mediaConnected(fork.leg))) return { ok: false, message: 'the call ended before its audio connected' };
    if (this.ended) return { ok: false, message: 'call ended while accepting' };
    this.startBridge(fork.leg);
    // The answer's direction follows the offer's (RFC 3264 §6.1): a caller that starts on hold
    // (sendonly, e.g. music from a queue) is answered recvonly, not sendrecv.
    const offered = this.remoteOffer?.direction ?? 'sendrecv';
    const dialog = this.invite.accept(this.currentLocalSdp(offered === 'sendonly' ? 'recvonly' : offered === 'recvonly' ? 'sendonly' : offered));
    if (this.credentials) dialog.auth = new DigestAuth(this.credentials);
    this.watchDialog(dialog);
    if (!this.remoteOffer) this.expectAnswerInAck(dialog);
    this.markAnswered('call answered in the browser', { sessionId });
    return { ok: true };
  }

  /** Resolves true once the leg's ICE and DTLS are up; false when it fails or closes first. */
  private mediaConnected(leg: BrowserLeg): Promise<boolean> {
    if (leg.state === 'connected') return Promise.resolve(true);
    if (leg.state === 'failed' || leg.state === 'closed') return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const done = (ok: boolean) => () => {
        leg.off('connected', onConnected);
        leg.off('failed', onFailed);
        leg.off('closed', onClosed);
        resolve(ok);
      };
      const onConnected = done(true);
      const onFailed = done(false);
      const onClosed = done(false);
      leg.once('connected', onConnected);
      leg.once('failed', onFailed);
      leg.once('closed', onClosed);
    });
  }

  /**
   * The user refused the call in this tab.
   *
   * - Declined: the user was reached and said no, so the call is refused at once with 603
   *   Decline (cause `rejected`) and stops ringing in every other tab too (told "declined
   *   elsewhere", see declinedElsewhere): a decline on one device stops the call everywhere, as a
   *   6xx ends every branch of a forking proxy (RFC 3261 §16.7). 603 also tells upstream proxies
   *   and PBXs to stop trying other routes (RFC 3261 §21.6.2).
   * - Busy (486, a 4xx): only this tab is busy; the others ring on (see settleIfNobodyRinging).
   */
  reject(sessionId: string, reason: 'busy' | 'declined' = 'declined'): void {
    if (!this.stopFork(sessionId, reason)) return;
    if (reason === 'busy') {
      this.settleIfNobodyRinging();
      return;
    }
    if (this.state !== 'ringing') return;
    for (const other of this.forks.values()) {
      if (other.state === 'ringing') other.state = 'declined-elsewhere';
    }
    this.refuse('declined', 'rejected');
  }

  /**
   * This tab went away (WebSocket closed) without answering. Not a refusal by the user: see
   * settleIfNobodyRinging.
   */
  tabGone(sessionId: string): void {
    if (this.forks.get(sessionId)?.state === 'won' && this.state === 'ringing') {
      // It accepted and went before its audio connected (the 200 waits for that): the user
      // was not reached after all — 480, as for a tab gone while ringing, not a decline.
      this.refuse('offline');
      return;
    }
    if (!this.stopFork(sessionId, 'gone')) return;
    this.settleIfNobodyRinging();
  }

  /** Ends a ringing fork's part in the call; false when it was not ringing. */
  private stopFork(sessionId: string, state: 'declined' | 'busy' | 'gone'): boolean {
    const fork = this.forks.get(sessionId);
    if (!fork || fork.state !== 'ringing') return false;
    fork.state = state;
    fork.leg.close().catch(() => undefined);
    return true;
  }

  /**
   * How the tabs' outcomes add up to the caller's answer once no tab is left ringing without
   * anyone having declined (a decline ends the call at once: see reject):
   *
   * - Some tab answered busy: 486 Busy Here (cause `busy`). The user was reached but is on
   *   another call.
   * - Otherwise every tab went away (closed, or could not be offered the call) without anyone
   *   answering: the user was never reached, so this is 480 Temporarily Unavailable (cause
   *   `unavailable`), the same answer as "no tab open". A 603 here would wrongly stop the PBX
   *   from going on to voicemail or another route just because a browser tab was closed.
   *
   * While any tab still rings, or once the call was answered or ended, there is nothing to do.
   */
  private settleIfNobodyRinging(): void {
    if (this.state !== 'ringing' || this.acceptedByATab()) return;
    if ([...this.forks.values()].some((f) => f.state === 'ringing')) return;
    if ([...this.forks.values()].some((f) => f.state === 'busy')) this.refuse('busy', 'busy');
    else this.refuse('offline', 'unavailable');
  }

  /**
   * Handling the INVITE threw after this call was created (CallManager's catch-all): answer 500
   * unless a final response already went out, and end the call so that it leaves the registry
   * with its CDR instead of staying there for ever. An answered call is left alone: it is fully
   * set up and its dialog ends it as usual.
   */
  failSetup(): void {
    if (this.ended || this.state === 'answered') return;
    const alreadyAnswered = this.invite.finalSent;
    if (!alreadyAnswered) {
      try {
        this.invite.reject(500, 'Server Internal Error');
      } catch (err) {
        this.log.warn({ err }, 'could not send 500 for the failed INVITE');
      }
    }
    this.finish(alreadyAnswered ? { cause: 'failed' } : { cause: 'failed', sipStatus: 500, sipReason: 'Server Internal Error' });
  }

  /** A tab accepted and its media is connecting (the 200 OK waits for it). */
  private acceptedByATab(): boolean {
    return [...this.forks.values()].some((f) => f.state === 'won');
  }

  /** Did this tab get the call? (Other tabs are told "answered elsewhere".) */
  wonBy(sessionId: string): boolean {
    return this.forks.get(sessionId)?.state === 'won';
  }

  /** Was this tab still ringing when another tab declined the call? (It is told so.) */
  declinedElsewhere(sessionId: string): boolean {
    return this.forks.get(sessionId)?.state === 'declined-elsewhere';
  }

  ringingFor(sessionId: string): boolean {
    return this.forks.get(sessionId)?.state === 'ringing';
  }

  hangup(cause: HangupCause = 'local-hangup'): void {
    if (this.ended) return;
    if (this.state === 'answered' && this.dialog) {
      this.byeAndFinish({ cause });
      return;
    }
    // Before the answer the INVITE is still ours to answer: refuse it (a UAS has nothing to
    // CANCEL, unlike OutboundCall's endTowardSip).
    // A tab whose media failed after it accepted (ice-failed) could not take the call: as one
    // that went away, 480, not the 603 of a user who said no.
    const reason = cause === 'shutdown' || cause === 'failed' ? 'shutdown' : cause === 'connection-lost' || cause === 'ice-failed' ? 'offline' : 'declined';
    this.refuse(reason, cause === 'local-hangup' ? 'rejected' : cause);
  }

  private refuse(reason: Parameters<typeof sipStatusForRefusal>[0], cause?: import('./causes').EndCause): void {
    if (this.ended) return;
    const [status, text] = sipStatusForRefusal(reason);
    this.invite.reject(status, text);
    this.finish({ cause: cause ?? (reason === 'offline' ? 'unavailable' : reason === 'media' ? 'failed' : 'rejected'), sipStatus: status, sipReason: text });
  }

  protected closeBrowserLegs(): void {
    for (const f of this.forks.values()) f.leg.close().catch(() => undefined);
  }

  /** The tabs answer with their candidates in the SDP: none trickled outside a media restart. */
  protected candidateLeg(): BrowserLeg | null {
    return null;
  }

  protected browserLegReplaced(old: BrowserLeg, next: BrowserLeg): void {
    for (const f of this.forks.values()) if (f.leg === old) f.leg = next;
  }

  /** Tabs that were offered the call (to tell them how it ended). */
  targets(): RingTarget[] {
    return [...this.forks.values()].map((f) => f.target);
  }

  protected override remoteReoffered(desc: SipMediaDescription): void {
    this.remoteOffer = desc;
  }

  /**
   * The answer to our offer (a delayed-offer call's ACK): what our SDP mirrors from now on — also
   * the SDP a session refresh re-sends, rather than our first offer of every codec and key.
   */
  protected override remoteAnswered(desc: SipMediaDescription): void {
    this.remoteOffer = desc;
    if (this.dialog) this.dialog.localSdp = this.currentLocalSdp(this.heldLocally ? 'sendonly' : 'sendrecv');
  }

  protected currentLocalSdp(direction: 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive'): string {
    // A caller that sent no offer gets ours (every codec and key we have), until its answer
    // gives us something to mirror.
    if (!this.remoteOffer) return buildSipOffer({ ...this.localSdpOptions(direction), localCrypto: this.localCrypto, ptime: 20 });
    return this.answerTo(this.remoteOffer, direction);
  }
}
