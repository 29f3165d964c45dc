import { Emitter } from './emitter';

export type EndCause = 'busy' | 'no-answer' | 'rejected' | 'not-found' | 'unavailable' | 'cancelled' | 'remote-hangup' | 'local-hangup' | 'connection-lost' | 'answered-elsewhere' | 'declined-elsewhere' | 'forbidden' | 'media-timeout' | 'ice-failed' | 'shutdown' | 'failed' | 'transferred';
export type CallState = 'connecting' | 'ringing' | 'incoming' | 'answered' | 'ended';

/**
 * An `error` from the gateway (docs/protocol.md): `request` is the type of the message it
 * refused; `ref` (a refused `call` or `restart`) or `callId` names the call.
 */
export interface GatewayError { code: string; message: string; request?: string; ref?: string; callId?: string; retryAfterMs?: number; sipStatus?: number }

/**
 * Why call.transfer() failed: the gateway's error `code` (`forbidden`, `invalid-state`,
 * `transfer-failed`, `unknown-type` from a gateway without transfers…), or `ended` when the call
 * ended otherwise first, `not-connected` when the request could not be sent. `sipStatus`: the SIP
 * status that ended the transfer, when there was one.
 */
export type TransferError = Error & { code: string; sipStatus?: number };

export interface CallEndInfo {
  cause: EndCause;
  sipStatus?: number;
  sipReason?: string;
  /**
   * The gateway's refusal that ended the call (cause `failed`): of its request (`too-many-calls`,
   * `rate-limited` with `retryAfterMs`, `draining`, `bad-sdp`, `bad-message`, `internal`, …) or
   * of its answer to an incoming call.
   */
  error?: GatewayError;
}

export interface CallEvents extends Record<string, unknown[]> {
  progress: [info: { status: number; earlyMedia: boolean }];
  answered: [];
  ended: [info: CallEndInfo];
  held: [by: 'local' | 'remote'];
  resumed: [by: 'local' | 'remote'];
  dtmf: [digit: string];
  state: [state: CallState];
  /**
   * The gateway refused something for this call. A refused request to place it, or to answer
   * it (`request: 'accept'`), also ends the call (`ended` follows, cause `failed`); a refused
   * hold, resume, DTMF or media restart (`request: 'restart'`) leaves the call as it was.
   */
  error: [err: GatewayError];
  /**
   * The call's audio is moving to a new peer connection (restartMedia): asked for, or
   * `automatic` — the connection's audio path went away (ICE disconnected for 2 s, or failed),
   * or the link to the gateway came back after a drop while the audio had gone. The call goes
   * on meanwhile; `mediaRestarted` or `mediaRestartFailed` follows (or `ended`).
   */
  mediaRestarting: [info: { automatic: boolean }];
  /** The new peer connection is up and carries the call's audio; the old one is closed. */
  mediaRestarted: [];
  /**
   * The new peer connection was refused by the gateway (`error` set, also in the `error`
   * event), failed, or did not connect within 15 s. The call goes on with its connection.
   */
  mediaRestartFailed: [info: { reason: string; error?: GatewayError }];
  /** A transfer in progress: the status the target gave so far (100 trying, 180 ringing…). */
  transferProgress: [info: { status: number }];
}

export interface CallStats {
  codec?: string;
  packetsSent: number;
  packetsReceived: number;
  packetsLost: number;
  jitterMs: number;
  rttMs?: number;
  audioLevel?: number;
}

/** What a Call needs from its client: sending protocol messages. */
export interface CallTransport {
  /** false: not connected, nothing was sent. */
  send(msg: Record<string, unknown>): boolean;
  forget(call: Call): void;
  /** Whether a message sent now would go out (false while the connection is away). */
  online?(): boolean;
  /**
   * The call's audio path has just gone (ICE `disconnected`): whatever took it may have taken
   * the link to the gateway too, and the client checks that link now (a `ping`).
   */
  checkLink?(): void;
}

/** Automatic media restarts a call makes in a row; one that succeeds makes them available again. */
const AUTO_RESTARTS = 3;
/** How long ICE may stay `disconnected` (it often comes back by itself) before a restart. */
const DISCONNECTED_GRACE_MS = 2000;
/** How long a media restart's new peer connection has to connect. */
const RESTART_TIMEOUT_MS = 15_000;

/** A media restart in progress (restartMedia). */
interface MediaRestart {
  pc: RTCPeerConnection;
  automatic: boolean;
  promise: Promise<void>;
  /** Resolves the promise, or rejects it with `err`. */
  settle(err?: Error): void;
  timer: ReturnType<typeof setTimeout>;
  /** What the new connection receives: played once it connects. */
  stream: MediaStream | null;
  /** Names its `restart` request: an answer or refusal of an earlier one (late) is not this one's. */
  ref: string;
  /** The `restart` request went out; its answer (`restarted` or an error) is due. */
  sent: boolean;
  answered: boolean;
}

/** A refusal of `restart` that says the gateway cannot restart this call's media at all. */
const RESTART_UNSUPPORTED = new Set(['invalid-state', 'unknown-type']);

/**
 * The `error` a gateway older than `restart` answers it with: `unknown-type`, naming neither the
 * request nor the call (the client routes it to the call whose restart is out).
 */
function isUnknownTypeError(err: GatewayError): boolean {
  return err.code === 'unknown-type' && err.request === undefined;
}

/**
 * The request type an `unknown-type` error refuses: the gateway's message names it
 * (`unknown message type "transfer"`); undefined when it does not say.
 */
export function refusedUnknownType(err: { message?: unknown }): string | undefined {
  return typeof err.message === 'string' ? /unknown message type "([^"]*)"/.exec(err.message)?.[1] : undefined;
}

/**
 * How long a transfer may wait for its outcome from the gateway: its REFER's transaction (32 s)
 * and its wait for the final report (32 s), and some. Past it the outcome was lost (a connection
 * that dropped and was resumed after the gateway had sent it): transfer() rejects, `timeout`.
 */
const TRANSFER_OUTCOME_TIMEOUT_MS = 75_000;

/**
 * One call, outbound or incoming. Owns its RTCPeerConnection, microphone track and the
 * <audio> element that plays the far end; all are released when the call ends. The peer
 * connection may be replaced during the call (restartMedia): `pc` is always the current one.
 */
export class Call extends Emitter<CallEvents> {
  id: string | null = null;
  state: CallState;
  readonly direction: 'outbound' | 'inbound';
  remoteStream: MediaStream | null = null;
  localStream: MediaStream | null = null;
  readonly audio: HTMLAudioElement;
  muted = false;
  onHold = false;
  endInfo: CallEndInfo | null = null;
  /** Incoming calls: who is calling. */
  from?: string;
  fromName?: string;
  private incomingOffer?: string;
  /** Outbound: runs until the gateway answers the request (see start). */
  private setupTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly iceServers: RTCIceServer[];
  private currentPc: RTCPeerConnection;
  private restart: MediaRestart | null = null;
  /** Media restarts of this call so far (their refs). */
  private restartCount = 0;
  /** Automatic restarts since the last one that succeeded (or since ICE came back by itself). */
  private autoRestarts = 0;
  /**
   * The gateway refused a restart of this call as impossible (`invalid-state`, or `unknown-type`
   * from a gateway without `restart`): automatic ones would only be refused again.
   */
  private autoRestartsOff = false;
  /** Runs while the current connection's ICE is `disconnected` (see watchMedia). */
  private disconnectedTimer: ReturnType<typeof setTimeout> | null = null;
  /** The transfer in progress (transfer()): its request's ref and how to settle its promise. */
  private pendingTransfer: { ref: string; resolve(): void; reject(err: TransferError): void; timer: ReturnType<typeof setTimeout> } | null = null;
  /** Transfers of this call so far (their refs). */
  private transferCount = 0;

  constructor(private readonly transport: CallTransport, opts: { direction: 'outbound' | 'inbound'; iceServers: RTCIceServer[]; id?: string; offer?: string; from?: string; fromName?: string }) {
    super();
    this.direction = opts.direction;
    this.state = opts.direction === 'inbound' ? 'incoming' : 'connecting';
    this.id = opts.id ?? null;
    this.incomingOffer = opts.offer;
    this.from = opts.from;
    this.fromName = opts.fromName;
    this.iceServers = opts.iceServers;
    this.currentPc = new RTCPeerConnection({ iceServers: opts.iceServers });
    this.audio = document.createElement('audio');
    this.audio.autoplay = true;
    this.adopt(this.currentPc);
  }

  /** The peer connection carrying the call now (a media restart replaces it). */
  get pc(): RTCPeerConnection {
    return this.currentPc;
  }

  /**
   * Starts an outbound call: microphone, offer, `call` message. Resolves quietly when the call
   * ended meanwhile (hung up during the microphone prompt, connection lost).
   */
  async start(to: string | undefined, opts: { headers?: Record<string, string>; ref: string; audio: MediaTrackConstraints | boolean; setupTimeoutMs: number }): Promise<void> {
    try {
      if (!(await this.attachMicrophone(opts.audio))) return;
      await this.pc.setLocalDescription(await this.pc.createOffer());
      await waitForIceGathering(this.pc, 1000);
    } catch (err) {
      if (this.isEnded()) return; // the closed peer connection refused the next step
      throw err;
    }
    if (this.isEnded()) return;
    this.pc.onicecandidate = (e) => this.sendCandidate(e);
    // The gateway answers with `calling`, `ended` or `error`; should none come (a gateway that
    // lost the request, or predates the ref in errors), the call must not stay connecting with
    // the microphone open. Set before sending: the call may end while it is being sent.
    // (While the client reconnects the request waits for the link: still away then, the call is lost.)
    this.setupTimer = setTimeout(() => {
      const seconds = Math.round(opts.setupTimeoutMs / 1000);
      this.finish(this.online()
        ? { cause: 'failed', sipReason: `the gateway did not answer the call request within ${seconds} s` }
        : { cause: 'connection-lost', sipReason: `no connection to the gateway within ${seconds} s` });
    }, opts.setupTimeoutMs);
    if (!this.transport.send({ type: 'call', to, sdp: this.pc.localDescription!.sdp, ref: opts.ref, headers: opts.headers })) {
      this.finish({ cause: 'connection-lost', sipReason: 'not connected to the gateway' });
    }
  }

  /**
   * Accepts an incoming call: microphone, answer, `accept` message. Resolves quietly when the
   * call ended meanwhile. Should the gateway refuse the answer, the call ends (cause `failed`,
   * the refusal in `error` and the `error` event) and this tab is taken out of it as busy; other
   * tabs of the user go on ringing. So is it when this tab cannot answer (the microphone refused,
   * the offer unusable to the browser): the call ends here (`failed`) and accept() rejects.
   */
  async accept(opts: { audio?: MediaTrackConstraints | boolean } = {}): Promise<void> {
    if (this.state !== 'incoming' || !this.incomingOffer) throw new Error('this call is not ringing');
    this.setState('connecting');
    try {
      await this.pc.setRemoteDescription({ type: 'offer', sdp: this.incomingOffer });
      if (!(await this.attachMicrophone(opts.audio ?? true))) return;
      await this.pc.setLocalDescription(await this.pc.createAnswer());
      await waitForIceGathering(this.pc, 1000);
    } catch (err) {
      if (this.isEnded()) return;
      // Left connecting, it would ring on at the gateway with nobody to answer it here.
      this.transport.send({ type: 'reject', callId: this.id, reason: 'busy' });
      const e = err as Error;
      this.finish({ cause: 'failed', sipReason: e.name === 'NotAllowedError' ? 'microphone permission denied' : `could not answer: ${e.message}` });
      throw err;
    }
    if (this.isEnded()) return;
    if (!this.transport.send({ type: 'accept', callId: this.id, sdp: this.pc.localDescription!.sdp })) {
      this.finish({ cause: 'connection-lost', sipReason: 'not connected to the gateway' });
    }
  }

  reject(reason: 'busy' | 'declined' = 'declined'): void {
    if (this.state !== 'incoming' || !this.id) return;
    this.transport.send({ type: 'reject', callId: this.id, reason });
    this.finish({ cause: 'rejected' });
  }

  /**
   * Ends the call. One whose request the gateway has not answered yet is hung up there as soon
   * as its `calling` arrives (the client does it): the gateway may be dialing already.
   */
  hangup(): void {
    this.hangUpWith({ cause: 'local-hangup' });
  }

  mute(on: boolean): void {
    this.muted = on;
    for (const t of this.localStream?.getAudioTracks() ?? []) t.enabled = !on;
  }

  sendDigits(digits: string): void {
    if (!this.id || this.state === 'ended') return;
    if (!/^[0-9*#A-Da-d]+$/.test(digits)) throw new Error('digits are 0-9 * # A-D');
    this.transport.send({ type: 'dtmf', callId: this.id, digits });
  }

  hold(): void {
    if (this.id && this.state === 'answered') this.transport.send({ type: 'hold', callId: this.id });
  }

  unhold(): void {
    if (this.id && this.state === 'answered') this.transport.send({ type: 'unhold', callId: this.id });
  }

  /**
   * Moves the call's audio to a new peer connection (docs/protocol.md, `restart`): for when the
   * network path changed and the current connection cannot carry it any more. The new one sends
   * the same microphone stream (muted or not, as now); the old one carries and plays the call
   * until the new one has connected, and is closed then (`mediaRestarted`). Rejects when the
   * gateway refuses (`error` event too), or the new connection fails or has not connected
   * within 15 s: it is dropped, and the call goes on with its connection. One at a time: while
   * one runs, this returns its promise. Only for a call that is ringing or answered. Resolves
   * quietly when the call ends meanwhile.
   *
   * The SDK restarts by itself when the connection's ICE stays `disconnected` for 2 s or
   * fails, and when the link to the gateway comes back after a drop while the audio had gone
   * (at most 3 times in a row, counted again once a restart succeeds or ICE comes back by
   * itself; none once the gateway refused one with `invalid-state` or does not know `restart`).
   * A call whose connection failed with none left is hung up (it ends `ice-failed`). A restart
   * whose request was lost with the link to the gateway is sent again, on a new connection, once
   * the link is back (the same restart: one `mediaRestarting`, one outcome).
   */
  restartMedia(): Promise<void> {
    return this.startRestart(false);
  }

  /**
   * Blind transfer (docs/protocol.md, `transfer`): the far end is handed over to `to`, checked
   * by the gateway as a call to it would be. Resolves when the call has ended as transferred
   * (`ended` with cause `transferred` comes too); rejects with a TransferError when the gateway
   * refuses it or it fails (`code`, `sipStatus`): the call then goes on as it was. One at a time,
   * only for an answered call.
   */
  transfer(to: string): Promise<void> {
    const fail = (code: string, message: string) => Promise.reject(Object.assign(new Error(message), { code }) as TransferError);
    if (!this.id || this.state !== 'answered') return fail('invalid-state', 'only an answered call can be transferred');
    if (this.pendingTransfer) return fail('invalid-state', 'a transfer of this call is in progress');
    const ref = `t${++this.transferCount}`;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.settleTransfer(Object.assign(new Error('no outcome of the transfer came from the gateway'), { code: 'timeout' }));
      }, TRANSFER_OUTCOME_TIMEOUT_MS);
      this.pendingTransfer = { ref, resolve, reject, timer };
      if (!this.transport.send({ type: 'transfer', callId: this.id, to, ref })) {
        this.settleTransfer(Object.assign(new Error('not connected to the gateway'), { code: 'not-connected' }));
      }
    });
  }

  /**
   * @internal A `transfer` of this call is out with no outcome yet: the client routes a gateway's
   * `unknown-type` (which names no call) here when it names `transfer`, or names neither type
   * and no restart waits for its answer.
   */
  get awaitsTransferOutcome(): boolean {
    return !!this.pendingTransfer;
  }

  /** The transfer in progress is over: resolved (no error) or rejected. */
  private settleTransfer(err?: TransferError): void {
    const t = this.pendingTransfer;
    if (!t) return;
    this.pendingTransfer = null;
    clearTimeout(t.timer);
    if (err) t.reject(err);
    else t.resolve();
  }

  async getStats(): Promise<CallStats> {
    const s: CallStats = { packetsSent: 0, packetsReceived: 0, packetsLost: 0, jitterMs: 0 };
    const report = await this.pc.getStats();
    const codecs = new Map<string, string>();
    report.forEach((r) => { if (r.type === 'codec') codecs.set(r.id, r.mimeType); });
    report.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        s.packetsReceived = r.packetsReceived ?? 0; s.packetsLost = r.packetsLost ?? 0; s.jitterMs = Math.round((r.jitter ?? 0) * 1000); s.audioLevel = r.audioLevel;
        s.codec = codecs.get(r.codecId);
      }
      if (r.type === 'outbound-rtp' && r.kind === 'audio') s.packetsSent = r.packetsSent ?? 0;
      if (r.type === 'candidate-pair' && r.nominated && r.currentRoundTripTime !== undefined) s.rttMs = Math.round(r.currentRoundTripTime * 1000);
    });
    return s;
  }

  /** Protocol messages for this call, routed by the client. */
  handle(msg: Record<string, any>): void {
    switch (msg.type) {
      case 'calling':
        this.clearSetupTimer();
        this.id = msg.callId;
        this.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp }).catch((err) => { console.error('bad answer from gateway', err); this.hangup(); });
        return;
      case 'progress':
        this.setState('ringing');
        this.emit('progress', { status: msg.status, earlyMedia: msg.earlyMedia });
        return;
      case 'answered':
        this.setState('answered');
        this.emit('answered');
        return;
      case 'restarted': {
        // The answer to our `restart` (one at a time; none due: a restart given up on already;
        // another ref: the late answer of an earlier one — a gateway without refs sends none).
        const r = this.restart;
        if (!r || !r.sent || r.answered || (msg.ref !== undefined && msg.ref !== r.ref)) return;
        r.answered = true;
        r.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp }).catch((err: Error) => this.restartFailed(r, `unusable answer from the gateway: ${err.message}`));
        return;
      }
      case 'held': this.onHold = msg.by === 'local' ? true : this.onHold; this.emit('held', msg.by); return;
      case 'resumed': this.onHold = msg.by === 'local' ? false : this.onHold; this.emit('resumed', msg.by); return;
      case 'dtmf': this.emit('dtmf', msg.digit); return;
      case 'transfer-progress':
        if (this.pendingTransfer && (msg.ref === undefined || msg.ref === this.pendingTransfer.ref)) this.emit('transferProgress', { status: msg.status });
        return;
      case 'ended': this.finish({ cause: msg.cause, sipStatus: msg.sipStatus, sipReason: msg.sipReason }); return;
      case 'error': this.onGatewayError(msg as GatewayError); return;
    }
  }

  /**
   * @internal A `restart` of this call is out, neither answered nor refused: the client routes
   * a gateway's `unknown-type` (which names no call) here.
   */
  get awaitsRestartAnswer(): boolean {
    return !!this.restart && this.restart.sent && !this.restart.answered;
  }

  /**
   * @internal After a resume, the state the gateway lists the call in: the message that said so
   * was lost in the drop (outbound calls; `ringing` is not a state of an incoming call here).
   */
  catchUp(state: string): void {
    if (this.isEnded()) return;
    if (state === 'answered' && this.state !== 'answered') this.handle({ type: 'answered', callId: this.id });
    else if (state === 'ringing' && this.state === 'connecting' && this.direction === 'outbound') this.setState('ringing');
  }

  /** An `error` the client routed here: by this call's request ref, or by its callId. */
  private onGatewayError(err: GatewayError): void {
    // The refusal of an earlier restart (given up on here, or replaced at the gateway) is old news.
    if (err.request === 'restart' && err.ref !== undefined && err.ref !== this.restart?.ref) return;
    this.emit('error', err);
    if (this.state === 'ended') return;
    // An `unknown-type` from a gateway older than `transfer` or `restart` names the type it
    // refuses: a transfer's goes to the transfer, a restart's to the restart; one that names
    // neither to the restart when one waits, else to the transfer.
    const unknown = isUnknownTypeError(err) ? refusedUnknownType(err) ?? '' : null;
    const refusesTransfer = err.request === 'transfer' || (unknown !== null && (unknown === 'transfer' || (unknown !== 'restart' && !this.awaitsRestartAnswer)));
    if (refusesTransfer) {
      // Another transfer's refusal (an earlier one, settled here already) is not this one's.
      if (this.pendingTransfer && (err.ref === undefined || err.ref === this.pendingTransfer.ref)) {
        this.settleTransfer(Object.assign(new Error(err.message), { code: err.code, sipStatus: err.sipStatus }));
      }
      return;
    }
    if (err.request === 'restart' || unknown !== null) {
      this.restartRefused(err);
      return;
    }
    if (err.ref !== undefined && !this.id) {
      // The gateway refused this call's request (limits, a bad request…): the attempt is over there.
      this.finish({ cause: 'failed', sipReason: err.message, error: err });
    } else if (err.request === 'accept' && this.direction === 'inbound' && this.id) {
      // Our answer was refused (e.g. its SDP). This peer connection cannot answer again, so the
      // call is over here; `busy` takes only this tab out, and other tabs of the user ring on
      // (a `hangup` would decline the call for all of them).
      this.transport.send({ type: 'reject', callId: this.id, reason: 'busy' });
      this.finish({ cause: 'failed', sipReason: err.message, error: err });
    }
  }

  /** Our media restart was refused: the call goes on with its connection. */
  private restartRefused(err: GatewayError): void {
    const r = this.restart;
    // The refusal of an earlier restart (one that timed out here, or that the gateway dropped for
    // a newer one): nothing to do with this one, nor with whether restarts work at all.
    if (err.ref !== undefined && err.ref !== r?.ref) return;
    // Set first: the failure below looks at the connection again, and may start the next attempt.
    if (RESTART_UNSUPPORTED.has(err.code)) this.autoRestartsOff = true;
    if (r && r.sent && !r.answered) this.restartFailed(r, `the gateway refused the media restart: ${err.message}`, err);
  }

  /** Ends the call here and at the gateway (told when it knows the call's id). */
  private hangUpWith(info: CallEndInfo): void {
    if (this.state === 'ended') return;
    if (this.id) this.transport.send({ type: 'hangup', callId: this.id });
    this.finish(info);
  }

  /** Local end (connection lost, refusal before dialing, hangup). */
  finish(info: CallEndInfo): void {
    if (this.state === 'ended') return;
    this.clearSetupTimer();
    this.clearDisconnectedTimer();
    this.endInfo = info;
    this.setState('ended');
    for (const t of this.localStream?.getTracks() ?? []) t.stop();
    const r = this.restart;
    this.restart = null;
    if (r) {
      clearTimeout(r.timer);
      release(r.pc);
      r.settle(); // quietly: `ended` says what happened
    }
    release(this.currentPc);
    this.audio.srcObject = null;
    // A transfer waiting for its outcome has it now: done, or overtaken by the call's end.
    this.settleTransfer(info.cause === 'transferred' ? undefined : Object.assign(new Error(`the call ended (${info.cause}) before the transfer was done`), { code: 'ended' }));
    this.transport.forget(this);
    this.emit('ended', info);
  }

  /**
   * @internal The client's connection came back after a drop (client.ts). A restart whose
   * request went into the dead connection is sent again; an answered call whose audio went away
   * too (its connection not `connected`) moves to a new peer connection.
   */
  afterReconnect(): void {
    const r = this.restart;
    if (r && r.sent && !r.answered) {
      this.resendRestart(r);
      return;
    }
    if (this.state !== 'answered' || r || this.currentPc.connectionState === 'connected') return;
    this.recoverMedia();
  }

  private startRestart(automatic: boolean): Promise<void> {
    if (this.restart) return this.restart.promise;
    if (!this.id || this.isEnded() || (this.state !== 'answered' && this.state !== 'ringing')) {
      return Promise.reject(new Error('only a call that is ringing or answered can move to a new connection'));
    }
    const stream = this.localStream;
    if (!stream) return Promise.reject(new Error('the call has no microphone stream'));
    if (!this.online()) return Promise.reject(new Error('not connected to the gateway'));
    let settle!: (err?: Error) => void;
    const promise = new Promise<void>((resolve, reject) => { settle = (err) => (err ? reject(err) : resolve()); });
    const r = this.newRestart(stream, automatic, promise, settle);
    this.emit('mediaRestarting', { automatic });
    void this.offerRestart(r);
    return promise;
  }

  /**
   * The `restart` of `old` went into a connection to the gateway that had dropped (what the
   * gateway answered after it saw the drop came with the resume, before this): neither its
   * answer nor a refusal will come. The same restart goes on — its promise, no new
   * `mediaRestarting`, not another automatic attempt — with a new peer connection (gathering on
   * the network as it is now) and a new request; should the gateway have the first one, the new
   * one replaces it.
   */
  private resendRestart(old: MediaRestart): void {
    const stream = this.localStream;
    if (!stream || !this.online()) {
      this.restartFailed(old, 'its request was lost with the connection to the gateway');
      return;
    }
    clearTimeout(old.timer);
    release(old.pc);
    void this.offerRestart(this.newRestart(stream, old.automatic, old.promise, old.settle));
  }

  /** A new peer connection for the call, sending `stream`; it becomes the restart in progress. */
  private newRestart(stream: MediaStream, automatic: boolean, promise: Promise<void>, settle: (err?: Error) => void): MediaRestart {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    const r: MediaRestart = {
      pc, automatic, promise, settle, stream: null, sent: false, answered: false, ref: `m${++this.restartCount}`,
      timer: setTimeout(() => this.restartFailed(r, `the new connection did not connect within ${RESTART_TIMEOUT_MS / 1000} s`), RESTART_TIMEOUT_MS),
    };
    this.restart = r;
    // Until it connects the old connection plays the call: what this one receives waits.
    pc.ontrack = (e) => { r.stream = e.streams[0] ?? new MediaStream([e.track]); };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'connected') this.restartConnected(r);
      else if (pc.connectionState === 'failed') this.restartFailed(r, 'the new connection failed');
    };
    for (const t of stream.getTracks()) pc.addTrack(t, stream);
    return r;
  }

  private async offerRestart(r: MediaRestart): Promise<void> {
    try {
      await r.pc.setLocalDescription(await r.pc.createOffer());
      await waitForIceGathering(r.pc, 1000);
    } catch (err) {
      this.restartFailed(r, `the new connection could not make its offer: ${(err as Error).message}`);
      return;
    }
    if (this.restart !== r) return; // given up, or the call ended, meanwhile
    // Candidates gathered so far are in the offer; later ones follow it.
    r.pc.onicecandidate = (e) => this.sendCandidate(e);
    r.sent = true;
    if (!this.transport.send({ type: 'restart', callId: this.id, sdp: r.pc.localDescription!.sdp, ref: r.ref })) {
      this.restartFailed(r, 'not connected to the gateway', undefined, true);
    }
  }

  /** The new connection is up: it plays and carries the call from now on. */
  private restartConnected(r: MediaRestart): void {
    if (this.restart !== r || this.isEnded()) return;
    this.restart = null;
    clearTimeout(r.timer);
    const old = this.currentPc;
    this.currentPc = r.pc;
    this.adopt(r.pc);
    this.remoteStream = r.stream ?? new MediaStream(r.pc.getReceivers().map((x) => x.track));
    this.audio.srcObject = this.remoteStream;
    this.audio.play().catch(() => undefined);
    release(old);
    this.clearDisconnectedTimer();
    this.autoRestarts = 0;
    this.emit('mediaRestarted');
    r.settle();
    this.watchMedia(r.pc); // in case it is already in trouble
  }

  /** `offline`: the request could not be sent (the link to the gateway is away). */
  private restartFailed(r: MediaRestart, reason: string, error?: GatewayError, offline = false): void {
    if (this.restart !== r) return;
    this.restart = null;
    clearTimeout(r.timer);
    release(r.pc);
    // Not an attempt: the client's `reconnected` tries again once the link is back.
    if (offline && r.automatic && this.autoRestarts > 0) this.autoRestarts--;
    this.emit('mediaRestartFailed', { reason, error });
    r.settle(Object.assign(new Error(reason), error ? { error } : {}));
    // The old connection may be in trouble still (or by now): the next attempt, or the end.
    if (!this.isEnded()) this.watchMedia(this.currentPc);
  }

  /** Makes `pc` the call's connection: it plays what it receives, and is watched. */
  private adopt(pc: RTCPeerConnection): void {
    pc.ontrack = (e) => {
      this.remoteStream = e.streams[0] ?? new MediaStream([e.track]);
      this.audio.srcObject = this.remoteStream;
      this.audio.play().catch(() => undefined);
    };
    pc.oniceconnectionstatechange = () => {
      if (pc === this.currentPc && pc.iceConnectionState === 'disconnected') this.transport.checkLink?.();
      this.watchMedia(pc);
    };
    pc.onconnectionstatechange = () => this.watchMedia(pc);
  }

  /**
   * The current connection's ICE: `disconnected` for DISCONNECTED_GRACE_MS, or `failed`, starts
   * a media restart (a call ringing or answered, while automatic attempts are left); a failed
   * connection with none left, or of a call not that far yet, ends the call.
   */
  private watchMedia(pc: RTCPeerConnection): void {
    if (pc !== this.currentPc || this.isEnded()) return;
    // Back by itself (the outage passed, restarts or not): the next outage has all its attempts
    // again — those of this one, refused or failed, say nothing about it.
    if (pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed') this.autoRestarts = 0;
    if (pc.iceConnectionState !== 'disconnected') this.clearDisconnectedTimer();
    else if (!this.disconnectedTimer) {
      this.disconnectedTimer = setTimeout(() => {
        this.disconnectedTimer = null;
        if (pc === this.currentPc && pc.iceConnectionState === 'disconnected') this.recoverMedia();
      }, DISCONNECTED_GRACE_MS);
    }
    if (pc.iceConnectionState === 'failed' || pc.connectionState === 'failed') this.recoverMedia();
  }

  /**
   * Restarts the call's media if it may (automatic attempts left); else a failed connection ends
   * the call — `ice-failed`, as the gateway ends a call whose audio never connected — and the
   * gateway is told (`hangup`).
   */
  private recoverMedia(): void {
    if (this.isEnded() || this.restart) return; // a running restart's end looks again
    if (this.autoRestart()) return;
    const pc = this.currentPc;
    const failed = pc.iceConnectionState === 'failed' || pc.connectionState === 'failed';
    // Away from the gateway with attempts left: the client's `reconnected` restarts it.
    const waitForLink = this.mayAutoRestart() && !this.online();
    if (failed && !waitForLink) this.hangUpWith({ cause: 'ice-failed', sipReason: 'the call\'s audio connection failed and could not be restarted' });
  }

  /** true: an automatic restart started. */
  private autoRestart(): boolean {
    if (!this.mayAutoRestart() || !this.online()) return false;
    this.autoRestarts++;
    this.startRestart(true).catch(() => undefined); // said in mediaRestartFailed
    return true;
  }

  /** Automatic attempts are left, and the gateway has not said it cannot restart this call. */
  private mayAutoRestart(): boolean {
    return this.canRestart() && !this.autoRestartsOff && this.autoRestarts < AUTO_RESTARTS;
  }

  private canRestart(): boolean {
    return !!this.id && !this.isEnded() && (this.state === 'answered' || this.state === 'ringing') && !!this.localStream;
  }

  private online(): boolean {
    return this.transport.online?.() ?? true;
  }

  private sendCandidate(e: RTCPeerConnectionIceEvent): void {
    if (this.id) this.transport.send({ type: 'candidate', callId: this.id, candidate: e.candidate ? e.candidate.candidate : null, sdpMid: e.candidate?.sdpMid ?? null, sdpMLineIndex: e.candidate?.sdpMLineIndex ?? null });
  }

  private clearDisconnectedTimer(): void {
    if (this.disconnectedTimer) clearTimeout(this.disconnectedTimer);
    this.disconnectedTimer = null;
  }

  private setState(s: CallState): void {
    if (this.state === s || this.state === 'ended') return;
    this.state = s;
    this.emit('state', s);
  }

  /**
   * false: the call ended while the browser asked for the microphone (a permission prompt can
   * stay up for as long as the user likes). The stream it gave is stopped at once, or the
   * microphone would stay on, its indicator lit, with no call.
   */
  private async attachMicrophone(audio: MediaTrackConstraints | boolean): Promise<boolean> {
    const stream = await navigator.mediaDevices.getUserMedia({ audio });
    if (this.isEnded()) {
      for (const t of stream.getTracks()) t.stop();
      return false;
    }
    this.localStream = stream;
    for (const t of stream.getTracks()) this.pc.addTrack(t, stream);
    return true;
  }

  /** A method, not `state === 'ended'`: TypeScript would keep the state it narrowed before an await. */
  private isEnded(): boolean {
    return this.state === 'ended';
  }

  private clearSetupTimer(): void {
    if (this.setupTimer) clearTimeout(this.setupTimer);
    this.setupTimer = null;
  }
}

function waitForIceGathering(pc: RTCPeerConnection, maxMs: number): Promise<void> {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(t); pc.removeEventListener('icegatheringstatechange', check); resolve(); };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const t = setTimeout(done, maxMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** A peer connection the call is done with: nothing it still does reaches the call. */
function release(pc: RTCPeerConnection): void {
  pc.ontrack = pc.onicecandidate = pc.oniceconnectionstatechange = pc.onconnectionstatechange = null;
  pc.close();
}
