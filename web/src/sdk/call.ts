import { Emitter } from './emitter';

export type EndCause = 'busy' | 'no-answer' | 'rejected' | 'not-found' | 'unavailable' | 'cancelled' | 'remote-hangup' | 'local-hangup' | 'connection-lost' | 'answered-elsewhere' | 'declined-elsewhere' | 'forbidden' | 'media-timeout' | 'ice-failed' | 'shutdown' | 'failed';
export type CallState = 'connecting' | 'ringing' | 'incoming' | 'answered' | 'ended';

/**
 * An `error` from the gateway (docs/protocol.md): `request` is the type of the message it
 * refused; `ref` (a refused `call`) or `callId` names the call.
 */
export interface GatewayError { code: string; message: string; request?: string; ref?: string; callId?: string; retryAfterMs?: number }

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
   * hold, resume or DTMF leaves the call as it was.
   */
  error: [err: GatewayError];
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
}

/**
 * One call, outbound or incoming. Owns its RTCPeerConnection, microphone track and the
 * <audio> element that plays the far end; all are released when the call ends.
 */
export class Call extends Emitter<CallEvents> {
  id: string | null = null;
  state: CallState;
  readonly direction: 'outbound' | 'inbound';
  readonly pc: RTCPeerConnection;
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

  constructor(private readonly transport: CallTransport, opts: { direction: 'outbound' | 'inbound'; iceServers: RTCIceServer[]; id?: string; offer?: string; from?: string; fromName?: string }) {
    super();
    this.direction = opts.direction;
    this.state = opts.direction === 'inbound' ? 'incoming' : 'connecting';
    this.id = opts.id ?? null;
    this.incomingOffer = opts.offer;
    this.from = opts.from;
    this.fromName = opts.fromName;
    this.pc = new RTCPeerConnection({ iceServers: opts.iceServers });
    this.audio = document.createElement('audio');
    this.audio.autoplay = true;
    this.pc.ontrack = (e) => {
      this.remoteStream = e.streams[0] ?? new MediaStream([e.track]);
      this.audio.srcObject = this.remoteStream;
      this.audio.play().catch(() => undefined);
    };
    this.pc.onconnectionstatechange = () => {
      if (this.pc.connectionState === 'failed' && this.state !== 'ended') this.hangup();
    };
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
    this.pc.onicecandidate = (e) => {
      if (this.id) this.transport.send({ type: 'candidate', callId: this.id, candidate: e.candidate ? e.candidate.candidate : null, sdpMid: e.candidate?.sdpMid ?? null, sdpMLineIndex: e.candidate?.sdpMLineIndex ?? null });
    };
    // The gateway answers with `calling`, `ended` or `error`; should none come (a gateway that
    // lost the request, or predates the ref in errors), the call must not stay connecting with
    // the microphone open. Set before sending: the call may end while it is being sent.
    this.setupTimer = setTimeout(() => {
      this.finish({ cause: 'failed', sipReason: `the gateway did not answer the call request within ${Math.round(opts.setupTimeoutMs / 1000)} s` });
    }, opts.setupTimeoutMs);
    if (!this.transport.send({ type: 'call', to, sdp: this.pc.localDescription!.sdp, ref: opts.ref, headers: opts.headers })) {
      this.finish({ cause: 'connection-lost', sipReason: 'not connected to the gateway' });
    }
  }

  /**
   * Accepts an incoming call: microphone, answer, `accept` message. Resolves quietly when the
   * call ended meanwhile. Should the gateway refuse the answer, the call ends (cause `failed`,
   * the refusal in `error` and the `error` event) and this tab is taken out of it as busy; other
   * tabs of the user go on ringing.
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
    if (this.state === 'ended') return;
    if (this.id) this.transport.send({ type: 'hangup', callId: this.id });
    this.finish({ cause: 'local-hangup' });
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
      case 'held': this.onHold = msg.by === 'local' ? true : this.onHold; this.emit('held', msg.by); return;
      case 'resumed': this.onHold = msg.by === 'local' ? false : this.onHold; this.emit('resumed', msg.by); return;
      case 'dtmf': this.emit('dtmf', msg.digit); return;
      case 'ended': this.finish({ cause: msg.cause, sipStatus: msg.sipStatus, sipReason: msg.sipReason }); return;
      case 'error': this.onGatewayError(msg as GatewayError); return;
    }
  }

  /** An `error` the client routed here: by this call's request ref, or by its callId. */
  private onGatewayError(err: GatewayError): void {
    this.emit('error', err);
    if (this.state === 'ended') return;
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

  /** Local end (connection lost, refusal before dialing, hangup). */
  finish(info: CallEndInfo): void {
    if (this.state === 'ended') return;
    this.clearSetupTimer();
    this.endInfo = info;
    this.setState('ended');
    for (const t of this.localStream?.getTracks() ?? []) t.stop();
    this.pc.close();
    this.audio.srcObject = null;
    this.transport.forget(this);
    this.emit('ended', info);
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
    const t = setTimeout(resolve, maxMs);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
    });
  });
}
