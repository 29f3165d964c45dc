import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Dialog, SipRequest } from '../sip';
import type { BridgeHandle, BridgeStats, MediaPlane, SipLegHandle } from '../media';
import { chooseCrypto, generateSdesCrypto, type SdesCrypto } from '../media/srtp';
import { buildSipAnswer, checkBrowserOffer, chooseSipCodec, parseSipAnswer, parseSipOffer, telephoneEventFor, type MediaDirection, type SipCodecName, type SipMediaDescription, type SipSdpOptions } from '../sdp';
import type { BrowserIceConfig } from '../webrtc/browserLeg';
import { BrowserLeg } from '../webrtc/browserLeg';
import { tabSafeReason, type EndCause } from './causes';
import { BrowserLegSwitch } from './browserLegSwitch';
import { BlindTransfer, DEFAULT_TRANSFER_TIMEOUT_MS, type TransferTarget } from './transfer';
import { referEventId } from '../sip/refer';

export type CallDirection = 'outbound' | 'inbound';
/** trying → early (ringing / early media) → answered → ended; inbound starts at ringing. */
export type CallState = 'trying' | 'early' | 'ringing' | 'answered' | 'ended';
export type SrtpPolicy = 'off' | 'optional' | 'mandatory';
/** Why we end a call from our side (the browser hung up, media died, the gateway stops). */
export type HangupCause = 'local-hangup' | 'connection-lost' | 'ice-failed' | 'shutdown' | 'media-timeout' | 'failed';

export interface Identity {
  id: string;
  callerId?: string;
  /** Destination patterns from the token; undefined = config rules only. */
  dest?: string[];
  maxCalls?: number;
}

export interface CallEvents {
  progress: [info: { status: number; earlyMedia: boolean }];
  answered: [];
  ended: [info: CallEndInfo];
  held: [by: 'local' | 'remote'];
  resumed: [by: 'local' | 'remote'];
  dtmf: [digit: string];
  /** A provisional status the transfer target gave the transferee (a NOTIFY's sipfrag: 100, 180, 183). */
  transferProgress: [status: number];
}

export interface CallEndInfo {
  cause: EndCause;
  sipStatus?: number;
  sipReason?: string;
  /**
   * What the tab is told instead of `sipReason` (which the log and the CDR keep), when that is
   * the gateway's own account of a failure that names the trunk's network: a host name, an
   * address, a certificate, our transports. A web page's user has no use for them, and an
   * anonymous widget caller should not learn them.
   */
  tabReason?: string;
}

/** What a call needs from the gateway around it; the manager builds one and shares it. */
export interface CallContext {
  logger: Logger;
  media: MediaPlane;
  ice: BrowserIceConfig;
  srtp: SrtpPolicy;
  sipCodecs: Array<'PCMU' | 'PCMA' | 'opus'>;
  preferPcmuToBrowser?: boolean;
  /**
   * An answered call whose browser sent no RTP or RTCP for this long ends (media-timeout):
   * ICE-lite does no consent checks, so a browser whose UDP path died would otherwise hold the
   * call until the far end hung up. 0 or unset: no check.
   */
  browserMediaTimeoutMs?: number;
  /**
   * An outbound call the far end has not answered after this long is CANCELled (cause
   * no-answer): a trunk that sent 100 or 183 and then went quiet would otherwise keep it, and
   * its ports, for ever (the INVITE transaction stops timing out at the first provisional
   * response, RFC 3261 §17.1.1.2). 0 or unset: no limit.
   */
  answerTimeoutMs?: number;
  /**
   * An accepted REFER (a blind transfer) with no final report after this long counts as failed
   * and the call goes on (calls/transfer.ts). Unset: DEFAULT_TRANSFER_TIMEOUT_MS (32 s).
   */
  transferTimeoutMs?: number;
}

export interface CallRecord {
  callId: string;
  direction: CallDirection;
  from: string;
  to: string;
  identity?: string;
  startTime: string;
  answerTime?: string;
  endTime: string;
  durationSec: number;
  cause: EndCause;
  sipStatus?: number;
  sipReason?: string;
  /** Outbound: the numbers a redirect (3xx) took the call to, in order; the last one answered or failed. */
  redirectedTo?: string[];
  /** Times the browser's audio moved to a new peer connection (a media restart that took over). */
  mediaRestarts?: number;
  /** Cause `transferred`: the number the far end was transferred to (our REFER's target). */
  transferTo?: string;
  /**
   * Every transfer the tab asked for, in order (the first MAX_TRANSFER_ATTEMPTS_RECORDED; the
   * count of all in transferAttemptsTotal when there were more): a transfer places a call on
   * the trunk, so a refused one is recorded as a refused call is (how toll fraud shows).
   */
  transferAttempts?: TransferAttempt[];
  transferAttemptsTotal?: number;
  /** Times the tab's signaling connection dropped and was resumed while this call was up. */
  signalingResumes?: number;
  quality?: BridgeStats;
}

/**
 * The part every call shares: identity, state, the resources it owns and their one-time
 * release. A call owns its browser leg(s), its SIP RTP leg, the media bridge between them and
 * its SIP dialog; `end()` releases all of them exactly once, whatever ended the call.
 */
export abstract class CallBase extends EventEmitter<CallEvents> {
  readonly id = randomUUID();
  state: CallState;
  readonly startedAt = new Date();
  answeredAt: Date | undefined;
  endedAt: Date | undefined;
  endInfo: CallEndInfo | undefined;
  readonly log: Logger;
  private mediaRestarts = 0;
  private signalingResumes = 0;

  protected sipLeg: SipLegHandle | null = null;
  protected bridge: BridgeHandle | null = null;
  protected dialog: Dialog | null = null;
  protected localCrypto: SdesCrypto[] = [];
  /** The SDES key pair in use toward the SIP side (null = plain RTP). */
  protected activeSrtp: { local: SdesCrypto; remote: SdesCrypto } | null = null;
  /** The codec the SIP leg runs now (none before the first SDP exchange). */
  protected sipCodec: 'PCMU' | 'PCMA' | 'opus' | null = null;
  /**
   * Whether the browser sends PCMU (else Opus): null until its SDP is settled (outbound: before
   * our INVITE; inbound: when a tab answers).
   */
  protected browserSendsPcmu: boolean | null = null;
  /** Our 2xx to a re-INVITE without SDP carried an offer: its answer comes in the ACK. */
  private awaitingAckAnswer = false;
  /**
   * That offer let the far end say whether it holds us (it was sendrecv). Our sendonly (we
   * hold) leaves it only recvonly or inactive, which say nothing of that: as for the answers to
   * our own re-INVITEs (changeHold), the hold stays as its last offer set it.
   */
  private ackAnswerSaysHold = true;
  protected heldLocally = false;
  protected heldRemotely = false;
  private lastQuality: BridgeStats | undefined;
  /** A hold or resume of ours is on its way (setLocalHold). */
  private holdChanging = false;
  /** The browser side of the bridge: the leg carrying the call's audio now (media restarts replace it). */
  private legSwitch: BrowserLegSwitch | null = null;
  /** A media restart's new leg while it connects (restartBrowserMedia). */
  private restartLeg: BrowserLeg | null = null;
  /** Packets the legs replaced by media restarts had dropped (they join the call's quality figures). */
  private retiredLegsDropped = 0;
  /**
   * Settles once the media plane has given back the bridge's final statistics (at once in this
   * thread, after a message round trip when the media runs in a worker): the CDR waits for it.
   */
  mediaReleased: Promise<void> = Promise.resolve();
  private readonly timers = new Set<NodeJS.Timeout>();
  /** o= version of our next SDP toward the SIP side. */
  private sdpVersion = 0;
  /** Every transfer of this call so far: their subscriptions' NOTIFYs are known (forgotten at the end). */
  private readonly transfers: BlindTransfer[] = [];
  /** The call ended because its far end was transferred, to this number. */
  private transferredTo: string | undefined;
  /** For the CDR (CallRecord.transferAttempts). */
  private readonly transferAttempts: TransferAttempt[] = [];
  private transferAttemptsTotal = 0;

  constructor(
    readonly direction: CallDirection,
    readonly from: string,
    readonly to: string,
    readonly identity: Identity | undefined,
    protected readonly ctx: CallContext,
    initialState: CallState,
  ) {
    super();
    this.state = initialState;
    this.log = ctx.logger.child({ callId: this.id, direction });
  }

  get ended(): boolean {
    return this.state === 'ended';
  }

  /** End the call for `info.cause`; signalling toward the far end is the subclass's job. */
  protected finish(info: CallEndInfo): void {
    if (this.state === 'ended') return;
    this.state = 'ended';
    this.endedAt = new Date();
    this.endInfo = info;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.abandonRestart();
    // A transfer still waiting stops waiting (its timer goes); its subscription is forgotten.
    this.transferInProgress?.abandon();
    this.transfers.length = 0;
    if (this.bridge) {
      const browser = this.legSwitch?.current;
      const retired = this.retiredLegsDropped;
      this.mediaReleased = this.bridge.close().then(
        (q) => {
          // The browser legs' drops before their audio reached the bridge (SRTP refusals,
          // malformed packets) count with the bridge's own: read once the leg has closed.
          if (q && browser) q.browser.dropped += browser.mediaDropped + retired;
          this.lastQuality = q;
        },
        (err) => { this.log.warn({ err }, 'no final media statistics'); },
      );
    }
    this.bridge = null;
    this.sipLeg?.close();
    this.sipLeg = null;
    this.closeBrowserLegs();
    this.log.info({ cause: info.cause, sipStatus: info.sipStatus, sipReason: info.sipReason }, 'call ended');
    this.emit('ended', info);
  }

  protected abstract closeBrowserLegs(): void;

  /**
   * End the call from our side, telling the SIP side. Each direction has its own: before the
   * answer an outbound call (UAC) CANCELs its INVITE, an inbound one (UAS) answers it with a
   * final error response; once there is a dialog both BYE it (byeAndFinish).
   */
  abstract hangup(cause?: HangupCause): void;

  /** End the call with BYE on its dialog (if any), then release everything. */
  protected byeAndFinish(info: CallEndInfo): void {
    this.dialog?.bye().catch((err) => this.log.debug({ err }, 'BYE failed'));
    this.finish(info);
  }

  /** The far end or a tab answered: the call is up (answer time for the CDR; 'answered' to the tab). */
  protected markAnswered(logMsg: string, logFields: object = {}): void {
    this.state = 'answered';
    this.answeredAt = new Date();
    this.log.info(logFields, logMsg);
    this.emit('answered');
  }

  /**
   * Allocate the SIP-side RTP leg. False when the call ended meanwhile: finish() ran before there
   * was a leg to release, so it is closed here and the caller stops setting up.
   */
  protected async allocateSipLeg(): Promise<boolean> {
    const leg = await this.ctx.media.createSipLeg({ callId: this.id });
    if (this.ended) {
      leg.close();
      return false;
    }
    this.sipLeg = leg;
    leg.onFailed((reason) => {
      if (this.ended) return;
      this.log.error({ reason }, 'media plane failed: ending the call');
      this.hangup('failed');
    });
    return true;
  }

  record(): CallRecord {
    const end = this.endedAt ?? new Date();
    return {
      callId: this.id,
      direction: this.direction,
      from: this.from,
      to: this.to,
      identity: this.identity?.id,
      startTime: this.startedAt.toISOString(),
      answerTime: this.answeredAt?.toISOString(),
      endTime: end.toISOString(),
      durationSec: this.answeredAt ? Math.round((end.getTime() - this.answeredAt.getTime()) / 100) / 10 : 0,
      cause: this.endInfo?.cause ?? 'failed',
      sipStatus: this.endInfo?.sipStatus,
      sipReason: this.endInfo?.sipReason,
      // Only when it happened: how often the browser's network changed under the call, for
      // whoever reads the record of a call that sounded bad.
      ...(this.mediaRestarts > 0 ? { mediaRestarts: this.mediaRestarts } : {}),
      ...(this.signalingResumes > 0 ? { signalingResumes: this.signalingResumes } : {}),
      ...(this.transferredTo !== undefined ? { transferTo: this.transferredTo } : {}),
      ...(this.transferAttemptsTotal > 0 ? { transferAttempts: [...this.transferAttempts] } : {}),
      ...(this.transferAttemptsTotal > this.transferAttempts.length ? { transferAttemptsTotal: this.transferAttemptsTotal } : {}),
      quality: this.lastQuality,
    };
  }

  /** The tab's connection was resumed while this call was up (BrowserSession.adopt). */
  noteSignalingResume(): void {
    if (!this.ended) this.signalingResumes++;
  }

  /** A timer the call owns: cleared when the call ends. */
  protected after(ms: number, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.ended) fn();
    }, ms);
    this.timers.add(t);
    return t;
  }

  protected cancelTimer(t: NodeJS.Timeout | null | undefined): void {
    if (!t) return;
    clearTimeout(t);
    this.timers.delete(t);
  }

  protected newBrowserLeg(): BrowserLeg {
    return new BrowserLeg({
      callId: this.id,
      logger: this.log,
      ice: this.ctx.ice,
      preferPcmu: this.ctx.preferPcmuToBrowser,
      // Audio that can only continue as G.711 needs nothing above narrowband from the browser.
      opusMaxPlaybackRate: this.ctx.sipCodecs.includes('opus') ? undefined : 8000,
    });
  }

  /**
   * The call's SRTP policy toward the trunk: trunk.srtp, or `mandatory` once an `optional` offer
   * (RTP/AVP with a=crypto) was refused and made again as RTP/SAVP (OutboundCall): the far end
   * then takes SRTP only, and every later offer and answer of the call says so.
   */
  protected get srtpPolicy(): SrtpPolicy {
    return this.srtpRequired ? 'mandatory' : this.ctx.srtp;
  }
  protected srtpRequired = false;

  /** Our SDES keys for an offer or answer toward the trunk (RFC 4568), one per suite. */
  protected makeLocalCrypto(): SdesCrypto[] {
    if (this.srtpPolicy === 'off') return [];
    this.localCrypto = [generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80'), generateSdesCrypto(2, 'AES_CM_128_HMAC_SHA1_32')];
    return this.localCrypto;
  }

  /**
   * Apply the far end's media description to the SIP RTP leg. Returns an error string when
   * the description cannot be used (no common codec, SRTP required but absent).
   */
  protected applyRemoteMedia(desc: SipMediaDescription, role: 'offer' | 'answer'): string | null {
    if (!this.sipLeg) return 'no SIP media leg';
    // chooseSipCodec says how (the codec in use kept; G.711 first from an offer for a browser
    // that sends PCMU, or will: webrtc.preferPcmu). Our answers keep what this chose.
    const choice = chooseSipCodec(desc.codecs, this.ctx.sipCodecs, { keep: this.sipCodec ?? undefined, preferG711: role === 'offer' && this.g711Browser });
    if (!choice) return `no common codec (far end offers ${desc.codecs.map((c) => c.name).join(', ') || 'none'})`;
    // A running bridge follows the change (mediaBridge.ts followSipRemote).
    const { codec, name: next, otherLaw } = choice;
    let srtp: { local: SdesCrypto; remote: SdesCrypto } | undefined;
    if (desc.crypto.length > 0 && this.srtpPolicy !== 'off') {
      // The first a=crypto we can do (RFC 4568 §7.1.2), keyed with our key of its suite (the
      // one of its tag when we offered it: our answer then repeats that tag).
      const chosen = chooseCrypto(desc.crypto, this.localCrypto.map((c) => c.suite));
      if (!chosen) return 'far end SRTP crypto suites are not supported';
      const { remote } = chosen;
      const local = this.localCrypto.find((c) => c.tag === remote.tag && c.suite === remote.suite) ?? this.localCrypto.find((c) => c.suite === remote.suite)!;
      srtp = { local, remote };
    }
    if (!srtp && this.srtpPolicy === 'mandatory') return 'SRTP is mandatory but the far end answered plain RTP';
    if (!srtp && /SAVP/i.test(desc.profile)) return this.srtpPolicy === 'off' ? `the far end requires SRTP (${desc.profile}) and trunk.srtp is off` : `the far end requires SRTP (${desc.profile}) but sent no usable key (a=crypto)`;
    this.activeSrtp = srtp ?? null;
    const te = telephoneEventFor(desc, codec.clockRate);
    // otherLaw: an offerer should not send it once we answered one law, but is heard if it does.
    this.heldRemotely = desc.direction === 'sendonly' || desc.direction === 'inactive';
    this.sipCodec = next;
    this.sipLeg.setRemote({
      address: desc.address,
      port: desc.port,
      rtcpPort: desc.rtcpPort,
      rtcpMux: desc.rtcpMux,
      codec: next,
      payloadType: codec.payloadType,
      ptime: desc.ptime,
      telephoneEventPayloadType: te?.payloadType,
      telephoneEventClockRate: te?.clockRate,
      telephoneEvents: desc.telephoneEvents,
      srtp,
      direction: desc.direction,
      otherLawPayloadType: otherLaw?.payloadType,
    });
    return null;
  }

  /** In-dialog requests from the far end, once a dialog exists. */
  protected watchDialog(dialog: Dialog): void {
    this.dialog = dialog;
    dialog.on('terminated', (reason: string) => {
      // Our own BYE: whoever sent it ends the call with the real cause (local-hangup, shutdown…).
      if (this.ended || reason === 'local-bye') return;
      // The far end hangs up once it took our REFER (many trunks do, before any NOTIFY): the
      // transfer went ahead (RFC 5589 §6 leaves ending the call to either side).
      const transfer = this.transferInProgress;
      if (reason === 'bye' && transfer?.peerHungUp()) {
        this.transferredTo = transfer.target.number;
        this.log.info('far end hung up after accepting the transfer');
        this.finish({ cause: 'transferred', sipReason: 'BYE after the REFER was accepted' });
        return;
      }
      const cause: EndCause = reason === 'bye' ? 'remote-hangup' : reason === 'shutdown' ? 'shutdown' : 'failed';
      this.log.info({ reason }, 'SIP dialog terminated');
      this.finish({ cause, sipReason: reason === 'bye' ? 'BYE' : reason });
    });
    dialog.on('reinvite', (req: SipRequest, reply: (status: number, sdp?: string) => void) => this.onReinvite(req, reply));
    dialog.on('ackAnswer', (sdp) => this.onAckAnswer(sdp));
    dialog.on('notify', (req, respond) => respond(this.onNotify(req)));
    // A digit the far end sent as SIP INFO: to the page as for RTP events (the dtmf message, and
    // the digit's events on its audio stream so it is heard).
    dialog.on('infoDtmf', (digit, durationMs) => {
      if (this.ended) return;
      this.emit('dtmf', digit);
      this.bridge?.sendDtmfToBrowser(digit, durationMs ?? 100);
    });
  }

  /** The blind transfer in progress (one at a time: the latest, until its outcome). */
  private get transferInProgress(): BlindTransfer | null {
    const latest = this.transfers.at(-1);
    return latest && !latest.done ? latest : null;
  }

  /**
   * A NOTIFY in the call's dialog: one of the refer package goes to the transfer whose
   * subscription it reports on; one naming no transfer of this call is answered 481 (RFC 6665
   * §4.1.3: no such subscription; the notifier drops it). Other packages are answered 200 and
   * dropped, as the gateway always did with NOTIFYs.
   */
  private onNotify(req: SipRequest): number {
    const id = referEventId(req);
    if (id === undefined) return 200;
    const transfer = id === null ? this.transfers.at(-1) : this.transfers.find((t) => t.matches(id));
    return transfer ? transfer.onNotify(req) : 481;
  }

  /** A transfer the tab asked for, for the CDR: refused before any REFER (by the signaling session) or how it ended. */
  noteTransferAttempt(attempt: TransferAttempt): void {
    this.transferAttemptsTotal++;
    if (this.transferAttempts.length < MAX_TRANSFER_ATTEMPTS_RECORDED) this.transferAttempts.push(attempt);
  }

  /**
   * Blind transfer (RFC 5589 §6): REFER the far end to `target` in this call's dialog. The caller
   * (CallManager.transferTarget) has checked the number against the dial plan and the tab's
   * token, as for a call. Resolves when the transfer is over: `ok` once the far end is
   * transferred — the call has then ended as `transferred` (our BYE after the final NOTIFY, or
   * the far end's own) —, else why not; the call goes on unless it `ended` meanwhile for another
   * reason (its `ended` says how).
   */
  async transfer(target: TransferTarget): Promise<TransferResult> {
    if (this.ended) return { ok: false, ended: true };
    if (this.state !== 'answered' || !this.dialog) return { ok: false, code: 'invalid-state', message: 'only an answered call can be transferred' };
    // (An inbound call's dialog is confirmed by the caller's ACK: until then no request of ours may go.)
    if (this.dialog.state !== 'confirmed') return { ok: false, code: 'invalid-state', message: 'the call is not confirmed yet (no ACK)' };
    if (this.transferInProgress) return { ok: false, code: 'invalid-state', message: 'a transfer of this call is in progress' };
    // As a hold refuses a second hold change: the REFER would cross the re-INVITE's outcome.
    if (this.holdChanging) return { ok: false, code: 'invalid-state', message: 'a hold change is in progress' };
    const transfer = new BlindTransfer(this.dialog, target, {
      timeoutMs: this.ctx.transferTimeoutMs ?? DEFAULT_TRANSFER_TIMEOUT_MS,
      log: this.log.child({ transferTo: target.number }),
      onProgress: (status) => { if (!this.ended) this.emit('transferProgress', status); },
    });
    this.transfers.push(transfer);
    const outcome = await transfer.run();
    this.noteTransferAttempt({
      to: target.number,
      outcome: outcome.kind === 'succeeded' ? 'transferred' : outcome.kind,
      ...(outcome.kind !== 'abandoned' && outcome.sipStatus !== undefined ? { sipStatus: outcome.sipStatus } : {}),
    });
    switch (outcome.kind) {
      case 'succeeded':
        if (!this.ended) {
          // RFC 5589 §6: the transferor ends its call with the transferee once told it worked.
          this.transferredTo = target.number;
          this.log.info({ sipStatus: outcome.sipStatus }, 'transfer succeeded: ending our call');
          this.byeAndFinish({ cause: 'transferred', sipReason: `transfer target answered: ${[outcome.sipStatus, outcome.reason].filter(Boolean).join(' ')}` });
        }
        return { ok: true };
      case 'failed':
        return this.ended ? { ok: false, ended: true } : { ok: false, code: 'transfer-failed', message: outcome.message, sipStatus: outcome.sipStatus };
      case 'abandoned':
        return { ok: false, ended: true };
    }
  }

  /** RFC 3264 re-offer from the far end: hold/resume, or media moved to a new address. */
  private onReinvite(req: SipRequest, reply: (status: number, sdp?: string) => void): void {
    // (An offer crossing ours in a 2xx not ACKed yet never gets here: the dialog answers 491.)
    if (!req.body) {
      // Delayed offer (a PBX re-anchoring media after a transfer): our offer goes in the 200,
      // keeping our hold if we hold; the far end's answer comes in the ACK (onAckAnswer).
      this.awaitingAckAnswer = true;
      this.ackAnswerSaysHold = !this.heldLocally;
      reply(200, this.currentLocalSdp(this.heldLocally ? 'sendonly' : 'sendrecv'));
      return;
    }
    // A new offer from the far end: an answer we were still waiting for in an ACK is moot.
    this.awaitingAckAnswer = false;
    const desc = parseSipOffer(req.body);
    if ('error' in desc) {
      this.log.warn({ error: desc.error }, 're-INVITE with unusable SDP');
      reply(488);
      return;
    }
    const wasHeld = this.heldRemotely;
    const err = this.applyRemoteMedia(desc, 'offer');
    if (err) {
      reply(488);
      return;
    }
    this.remoteReoffered(desc);
    const held = this.heldRemotely;
    this.bridge?.setHold(this.heldLocally, held);
    // RFC 3264 §6.1: our direction mirrors theirs (sendonly ↔ recvonly); our own hold stays
    // (holding, we send and do not receive: sendonly).
    const theyReceive = desc.direction === 'sendrecv' || desc.direction === 'recvonly';
    const theySend = desc.direction === 'sendrecv' || desc.direction === 'sendonly';
    const weSend = theyReceive;
    const weReceive = theySend && !this.heldLocally;
    const answerDir = weSend && weReceive ? 'sendrecv' : weSend ? 'sendonly' : weReceive ? 'recvonly' : 'inactive';
    reply(200, this.answerTo(desc, answerDir));
    if (held !== wasHeld) this.emit(held ? 'held' : 'resumed', 'remote');
  }

  /** The answer to the offer in our 2xx to a re-INVITE without SDP: where the media goes now. */
  private onAckAnswer(sdp: string): void {
    if (!this.awaitingAckAnswer) return;
    this.awaitingAckAnswer = false;
    // An answer we cannot use leaves no media we could follow (the far end moved it as it
    // answered): the call ends, as failed, rather than staying up silent.
    const desc = parseSipAnswer(sdp);
    if ('error' in desc) { this.log.warn({ error: desc.error }, 'unusable SDP answer in an ACK: ending the call'); this.hangup('failed'); return; }
    const wasHeld = this.heldRemotely;
    const err = this.applyRemoteMedia(desc, 'answer');
    if (err) { this.log.warn({ err }, 'SDP answer in an ACK not applicable: ending the call'); this.hangup('failed'); return; }
    if (!this.ackAnswerSaysHold) this.heldRemotely = wasHeld;
    this.remoteAnswered(desc);
    const held = this.heldRemotely;
    this.bridge?.setHold(this.heldLocally, held);
    if (held !== wasHeld) this.emit(held ? 'held' : 'resumed', 'remote');
  }

  /**
   * Our 2xx to the call's INVITE carried an offer (the INVITE had none: a delayed offer): its
   * answer must come in the ACK. One that comes without an answer leaves no media: the call ends.
   */
  protected expectAnswerInAck(dialog: Dialog): void {
    this.awaitingAckAnswer = true;
    // acked() confirms the dialog, then reports an answer at once if the ACK had one.
    dialog.once('confirmed', () => queueMicrotask(() => {
      if (!this.awaitingAckAnswer || this.ended) return;
      this.awaitingAckAnswer = false;
      this.log.warn('ACK without the answer to our offer: ending the call');
      this.hangup('failed');
    }));
  }

  /** An answer of the far end's (in an ACK) was applied. */
  protected remoteAnswered(_desc: SipMediaDescription): void {}

  /** A far-end re-offer was accepted: answers from now on mirror it (RFC 3264 §8). */
  protected remoteReoffered(_desc: SipMediaDescription): void {}

  /**
   * Our answer to an offer from the far end (RFC 3264 §6), for either direction of call: its
   * codec and payload types (the leg now expects exactly those), the crypto tag it offered keyed
   * with our key (RFC 4568 §7.1.2). An outbound call answered re-offers with a fresh offer of its
   * own before: other PTs than the leg accepted, so the far end's DTMF (or audio) was dropped.
   */
  protected answerTo(desc: SipMediaDescription, direction: 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive'): string {
    return buildSipAnswer(desc, {
      ...this.localSdpOptions(direction),
      localCrypto: this.activeSrtp ? [{ ...this.activeSrtp.local, tag: this.activeSrtp.remote.tag }] : [],
    });
  }

  /**
   * Our current SDP toward the SIP side with a given direction (for re-INVITEs). Differs by
   * direction on purpose: an outbound call offers (all our codecs and keys), an inbound one
   * answers the far end's offer (RFC 3264 §6); both build on localSdpOptions.
   */
  protected abstract currentLocalSdp(direction: 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive'): string;

  /** The browser sends PCMU, or is expected to (webrtc.preferPcmu) while no tab has answered yet. */
  private get g711Browser(): boolean {
    return this.browserSendsPcmu ?? this.ctx.preferPcmuToBrowser === true;
  }

  /**
   * Our codecs toward the trunk: the one in use first (see localSdpOptions), then — for a
   * browser that sends PCMU — G.711 before Opus, which that bridge would have to transcode.
   */
  private offeredCodecs(): SipCodecName[] {
    const rank = (c: SipCodecName) => (c === this.sipCodec ? 0 : this.g711Browser && c === 'opus' ? 2 : 1);
    return [...this.ctx.sipCodecs].sort((a, b) => rank(a) - rank(b)); // stable: config order within a rank
  }

  /**
   * What every SDP we send toward the SIP side shares: our RTP address, the trunk's SRTP policy
   * and codecs, and the o= line — one session id for the whole call and a version one up on
   * each SDP sent (the INVITE or 200 OK, then each re-offer or re-answer).
   */
  protected localSdpOptions(direction: MediaDirection): SipSdpOptions {
    if (!this.sipLeg) throw new Error('no SIP media leg');
    return {
      advertisedHost: this.sipLeg.localAddress,
      port: this.sipLeg.localPort,
      srtp: this.srtpPolicy,
      // Once a codec runs, our re-offers list it first and our answers keep it where offered;
      // a PCMU browser's call lists Opus last.
      codecs: this.offeredCodecs(),
      keepCodec: this.sipCodec ?? undefined,
      sessionId: this.id.replace(/\D/g, '').slice(0, 12) || '1',
      sessionVersion: this.sdpVersion++,
      direction,
    };
  }

  /** Browser asked to hold or resume the far end: re-INVITE with a=sendonly / a=sendrecv. */
  async setLocalHold(hold: boolean): Promise<{ ok: true } | { ok: false; message: string }> {
    if (this.state !== 'answered' || !this.dialog) return { ok: false, message: 'call is not answered' };
    // (While our offer in a 200 waits for its answer in the ACK, the dialog holds the re-INVITE
    // back until then: a second offer would cross it, RFC 3261 §14.1.)
    // One hold change at a time: a second one (the browser's resume) while ours waits out a 491
    // would cross it. Checked first: while a hold is out heldLocally still says "not held", so an
    // unhold then would look like nothing to do, be answered ok, and the call end up held.
    if (this.holdChanging) return { ok: false, message: 'a hold change is in progress' };
    if (this.heldLocally === hold) return { ok: true };
    this.holdChanging = true;
    try {
      return await this.changeHold(hold);
    } catch (err) {
      // The detail (a host, an address, our transports) is the operator's: logged, not told.
      this.log.warn({ err: (err as Error).message }, 're-INVITE could not be sent');
      return { ok: false, message: 're-INVITE failed: the far end could not be reached' };
    } finally {
      this.holdChanging = false;
    }
  }

  private async changeHold(hold: boolean): Promise<{ ok: true } | { ok: false; message: string }> {
    // Our direction now: the far end may hold us too (heldRemotely), and may change that while we wait.
    const offer = () => this.currentLocalSdp(hold ? (this.heldRemotely ? 'inactive' : 'sendonly') : this.heldRemotely ? 'recvonly' : 'sendrecv');
    // Given as a function, the offer is made again by the dialog after a 491 (glare, RFC 3261
    // §14.1) once the wait the RFC sets is over, built anew then: the far end's re-INVITE that
    // won may have changed its direction.
    const res = await this.dialog!.reinvite(offer);
    if (this.ended) return { ok: false, message: 'call ended' };
    if (res.status < 200 || res.status >= 300) return { ok: false, message: `far end refused: ${res.status} ${tabSafeReason(res)}` };
    // The answer may move the media (an SBC re-anchoring it, new keys, another codec): followed
    // as any answer is. One we cannot use leaves no media we could follow: the call ends. Its
    // direction says nothing of the far end holding us (an `inactive` answer to our sendonly is
    // allowed, RFC 3264 §6.1): that only an offer of theirs can say.
    if (res.body.trim()) {
      const heldRemotely = this.heldRemotely;
      const desc = parseSipAnswer(res.body);
      const err = 'error' in desc ? desc.error : this.applyRemoteMedia(desc, 'answer');
      this.heldRemotely = heldRemotely;
      if (err) {
        this.log.warn({ err }, 'SDP answer to our re-INVITE not applicable: ending the call');
        this.hangup('failed');
        return { ok: false, message: `far end's answer unusable: ${err}` };
      }
    }
    this.heldLocally = hold;
    this.bridge?.setHold(this.heldLocally, this.heldRemotely);
    this.emit(hold ? 'held' : 'resumed', 'local');
    return { ok: true };
  }

  sendDtmf(digits: string): boolean {
    if (!this.bridge || this.state === 'ended') return false;
    let delay = 0;
    for (const d of digits) {
      // Digits in sequence: 100 ms tone + 70 ms gap, the usual inter-digit spacing.
      if (delay === 0) this.bridge.sendDtmfToSip(d, 100);
      else this.after(delay, () => this.bridge?.sendDtmfToSip(d, 100));
      delay += 170;
    }
    return true;
  }

  /**
   * Ends the answered call when the browser's packets stop (see CallContext.browserMediaTimeoutMs).
   * Browsers send RTCP every few seconds whatever their RTP does (muted, held), so silence on
   * both means the path is gone.
   */
  private watchBrowserMedia(browser: BrowserLegSwitch): void {
    const timeoutMs = this.ctx.browserMediaTimeoutMs ?? 0;
    if (timeoutMs <= 0) return;
    const every = Math.min(5000, timeoutMs / 2);
    // The leg carrying the audio now: a media restart's new one counts from its own zero.
    let leg = browser.current;
    let seen = leg.mediaReceived;
    let quietSince = performance.now();
    const check = () => {
      if (browser.current !== leg) { leg = browser.current; seen = null; }
      const n = leg.mediaReceived;
      // Quiet time counts from the answer at the earliest (ringing is not a call yet); a leg
      // that cannot tell yet (not connected) is never called quiet.
      if (n === null || n !== seen || this.state !== 'answered' || !this.answeredAt) {
        seen = n;
        quietSince = performance.now();
        this.after(every, check);
        return;
      }
      const quietMs = Math.min(performance.now() - quietSince, Date.now() - this.answeredAt.getTime());
      if (quietMs >= timeoutMs) {
        this.log.warn({ quietMs: Math.round(quietMs) }, 'no RTP or RTCP from the browser: ending the call');
        this.hangup('media-timeout');
        return;
      }
      this.after(every, check);
    };
    this.after(every, check);
  }

  protected startBridge(browser: BrowserLeg): void {
    if (this.bridge || !this.sipLeg) return;
    this.legSwitch = new BrowserLegSwitch(browser);
    this.bridge = this.ctx.media.createBridge(this.legSwitch, this.sipLeg, { callId: this.id });
    this.browserSendsPcmu = browser.sendCodec === 'pcmu';
    this.watchBrowserMedia(this.legSwitch);
    this.bridge.onDtmf((ev) => {
      if (ev.from === 'sip') this.emit('dtmf', ev.digit);
    });
    this.sipLeg.onInactive(() => {
      if (this.state === 'answered' && !this.heldLocally && !this.heldRemotely) {
        this.log.warn('no RTP from the SIP side: ending the call');
        this.hangup('media-timeout');
      }
    });
  }

  /**
   * The browser's new peer connection for this call (its network changed: docs/protocol.md,
   * `restart`): a new leg answers its offer, and takes the call's audio over from the old one
   * once its ICE and DTLS are up; the old leg is closed then. Until then the old leg carries on,
   * and if the new one never connects it is dropped and the call goes on as it was (ended by
   * the media timeout if its audio is really gone). A newer restart replaces one still
   * connecting. Rejects with MediaRestartRefused when the call has no audio yet, the offer is
   * unusable, or it would change what the bridge was made with (the codec the browser sends, a
   * telephone-event clock; payload types may differ: BrowserLegSwitch renumbers).
   */
  async restartBrowserMedia(offerSdp: string): Promise<string> {
    if (this.ended || !this.legSwitch || !this.bridge) throw new MediaRestartRefused('the call has no audio to restart yet');
    // The same first look as a call's offer gets (callManager), before a leg or a port exists.
    const unusable = checkBrowserOffer(offerSdp);
    if (unusable) throw new MediaRestartRefused(`the new offer was refused: ${unusable}`, 'bad-sdp');
    this.abandonRestart();
    const leg = this.newBrowserLeg(); // IcePortsExhaustedError when no WebRTC port is free
    this.restartLeg = leg;
    leg.on('failed', (reason) => {
      if (this.restartLeg === leg) {
        this.log.warn({ reason }, 'media restart did not connect: the call goes on with its previous connection');
        this.abandonRestart();
      } else if (this.legSwitch?.current === leg) this.browserMediaFailed(reason);
    });
    leg.once('connected', () => this.takeRestartedLeg(leg));
    let answer: string;
    try {
      answer = await leg.answer(offerSdp);
    } catch (err) {
      // A leg closed under answer() (a newer restart, the call's end) is no fault of the offer.
      if (this.restartLeg !== leg || this.ended) throw new MediaRestartRefused('the call ended, or a newer restart replaced this one');
      this.abandonRestart();
      throw new MediaRestartRefused(`the new offer was refused: ${(err as Error).message}`, 'bad-sdp');
    }
    if (this.restartLeg !== leg || this.ended) throw new MediaRestartRefused('the call ended, or a newer restart replaced this one');
    const mismatch = this.legSwitch.incompatibility(leg);
    if (mismatch) {
      this.abandonRestart();
      throw new MediaRestartRefused(`the new connection cannot take this call's audio over: ${mismatch}`);
    }
    this.log.info('media restart: the browser\'s new connection answered');
    return answer;
  }

  /** Trickled candidates: a media restart's new leg takes them while it connects. */
  addBrowserCandidate(candidate: string | null, sdpMid?: string, sdpMLineIndex?: number): void {
    const leg = this.restartLeg ?? this.candidateLeg();
    leg?.addIceCandidate(candidate, sdpMid, sdpMLineIndex).catch((err) => this.log.debug({ err }, 'bad browser candidate'));
  }

  /** The leg the browser's trickled candidates are for outside a media restart (none: null). */
  protected abstract candidateLeg(): BrowserLeg | null;

  /** A media restart replaced the leg carrying the call: the subclass's own reference follows. */
  protected abstract browserLegReplaced(old: BrowserLeg, next: BrowserLeg): void;

  private takeRestartedLeg(leg: BrowserLeg): void {
    if (this.restartLeg !== leg || this.ended || !this.legSwitch) return;
    this.restartLeg = null;
    const old = this.legSwitch.switchTo(leg);
    this.retiredLegsDropped += old.mediaDropped;
    this.browserLegReplaced(old, leg);
    old.close().catch(() => undefined);
    this.mediaRestarts++;
    this.log.info({ path: leg.mediaPath }, 'media restart: the call\'s audio moved to the browser\'s new connection');
  }

  private abandonRestart(): void {
    const leg = this.restartLeg;
    if (!leg) return;
    this.restartLeg = null;
    leg.close().catch(() => undefined);
  }

  /** The browser leg carrying the call failed (ICE/DTLS): hang up toward the SIP side. */
  protected browserMediaFailed(reason: string): void {
    if (this.ended) return;
    this.log.warn({ reason }, 'browser media failed');
    this.hangup('ice-failed');
  }
}

/** One transfer the tab asked for, as the CDR keeps it (CallRecord.transferAttempts). */
export interface TransferAttempt {
  /** The number as the dial plan normalised it; for one refused by the dial plan, what the tab sent (printable, at most 64 characters). */
  to: string;
  /** forbidden / rate-limited: refused before any REFER; failed, transferred, abandoned (the call ended otherwise first): its outcome. */
  outcome: 'forbidden' | 'rate-limited' | 'failed' | 'transferred' | 'abandoned';
  sipStatus?: number;
}

/** A tab could ask for transfers all through a long call: the CDR line keeps the first ones. */
const MAX_TRANSFER_ATTEMPTS_RECORDED = 20;

/**
 * What became of a transfer (CallBase.transfer): done (the call ended as `transferred`), refused
 * or failed with the call still up, or overtaken by the call's end for another reason.
 */
export type TransferResult =
  | { ok: true }
  | { ok: false; code: 'invalid-state' | 'transfer-failed'; message: string; sipStatus?: number }
  | { ok: false; ended: true };

/** A media restart the call cannot take (docs/protocol.md, `restart`); the call goes on as it was. */
export class MediaRestartRefused extends Error {
  /** `bad-sdp`: the offer itself is unusable; `invalid-state`: the call cannot move now or so. */
  constructor(message: string, readonly code: 'bad-sdp' | 'invalid-state' = 'invalid-state') {
    super(message);
  }
}

