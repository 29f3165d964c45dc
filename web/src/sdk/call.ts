import { Emitter } from './emitter';

export type EndCause = 'busy' | 'no-answer' | 'rejected' | 'not-found' | 'unavailable' | 'cancelled' | 'remote-hangup' | 'local-hangup' | 'connection-lost' | 'answered-elsewhere' | 'declined-elsewhere' | 'forbidden' | 'media-timeout' | 'ice-failed' | 'shutdown' | 'failed';
export type CallState = 'connecting' | 'ringing' | 'incoming' | 'answered' | 'ended';

export interface CallEvents extends Record<string, unknown[]> {
  progress: [info: { status: number; earlyMedia: boolean }];
  answered: [];
  ended: [info: { cause: EndCause; sipStatus?: number; sipReason?: string }];
  held: [by: 'local' | 'remote'];
  resumed: [by: 'local' | 'remote'];
  dtmf: [digit: string];
  state: [state: CallState];
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
  send(msg: Record<string, unknown>): void;
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
  endInfo: CallEvents['ended'][0] | null = null;
  /** Incoming calls: who is calling. */
  from?: string;
  fromName?: string;
  private incomingOffer?: string;

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

  /** Starts an outbound call: microphone, offer, `call` message. */
  async start(to: string | undefined, opts: { headers?: Record<string, string>; ref: string; audio: MediaTrackConstraints | boolean }): Promise<void> {
    await this.attachMicrophone(opts.audio);
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await waitForIceGathering(this.pc, 1000);
    if (this.state === 'ended') return;
    this.transport.send({ type: 'call', to, sdp: this.pc.localDescription!.sdp, ref: opts.ref, headers: opts.headers });
    this.pc.onicecandidate = (e) => {
      if (this.id) this.transport.send({ type: 'candidate', callId: this.id, candidate: e.candidate ? e.candidate.candidate : null, sdpMid: e.candidate?.sdpMid ?? null, sdpMLineIndex: e.candidate?.sdpMLineIndex ?? null });
    };
  }

  /** Accepts an incoming call: microphone, answer, `accept` message. */
  async accept(opts: { audio?: MediaTrackConstraints | boolean } = {}): Promise<void> {
    if (this.state !== 'incoming' || !this.incomingOffer) throw new Error('this call is not ringing');
    this.setState('connecting');
    await this.pc.setRemoteDescription({ type: 'offer', sdp: this.incomingOffer });
    await this.attachMicrophone(opts.audio ?? true);
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    await waitForIceGathering(this.pc, 1000);
    if ((this.state as CallState) === 'ended') return;
    this.transport.send({ type: 'accept', callId: this.id, sdp: this.pc.localDescription!.sdp });
  }

  reject(reason: 'busy' | 'declined' = 'declined'): void {
    if (this.state !== 'incoming' || !this.id) return;
    this.transport.send({ type: 'reject', callId: this.id, reason });
    this.finish({ cause: 'rejected' });
  }

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
    }
  }

  /** Local end (connection lost, refusal before dialing, hangup). */
  finish(info: CallEvents['ended'][0]): void {
    if (this.state === 'ended') return;
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

  private async attachMicrophone(audio: MediaTrackConstraints | boolean): Promise<void> {
    this.localStream = await navigator.mediaDevices.getUserMedia({ audio });
    for (const t of this.localStream.getTracks()) this.pc.addTrack(t, this.localStream);
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
