import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { MediaRestartRefused, type CallBase, type CallEndInfo, type Identity } from '../calls/callBase';
import { IcePortsExhaustedError } from '../webrtc/icePortPool';
import type { CallManager } from '../calls/callManager';
import { InboundCall, type RingTarget } from '../calls/inboundCall';
import { OutboundCall } from '../calls/outboundCall';
import { parseClientMessage, PROTOCOL_VERSION, type ClientMessage, type ErrorCode, type IceServer, type ResumedCallState, type ServerMessage } from './protocol';

/** Authenticates a hello; the signaling server decides between demo mode and tokens. */
export type Authenticator = (token: string | undefined) => Promise<
  { ok: true; identity: Identity; origins?: string[] } | { ok: false; code: 'token-missing' | 'token-invalid' | 'token-expired' | 'token-wrong-algorithm'; message: string }
>;

export interface SessionLimits {
  /** Frames a second before the session is refused (closed 1008 after a warning). */
  messagesPerSec: number;
  /** Call attempts: returns ms to wait when over the limit, 0 when allowed. */
  callAttempt(identity: string): number;
  /** A connection that has not authenticated within this is closed. */
  helloTimeoutMs: number;
}

/** Hellos refused in a row before the connection is closed (a client looping on a bad token). */
const MAX_FAILED_HELLOS = 5;

/**
 * The close code a tab gives a connection it no longer trusts (no pong in time, a resume attempt
 * it gave up on) while it reconnects: its calls wait for the resume as on a drop (1006).
 */
export const CLOSE_RECONNECTING = 4000;

/** Messages kept for a dropped tab while it may come back (the oldest go first past this). */
const MAX_MISSED = 100;

/**
 * 'detached': the connection dropped (no close frame) while the tab had calls up; they go on,
 * and a new connection may take the session over (resume) until the grace time runs out.
 */
type SessionState = 'awaiting-hello' | 'authenticating' | 'ready' | 'detached' | 'closed';

/**
 * One browser tab: its WebSocket (replaced when the tab resumes after a drop), validating every
 * frame, turning requests into calls on the CallManager and call events into messages. A
 * closed socket ends every call of this tab; a dropped one, after the resume grace time.
 */
export class BrowserSession implements RingTarget {
  readonly sessionId = randomUUID();
  /** Every line this session logs carries its sessionId (the signaling server's too). */
  readonly log: Logger;
  private state: SessionState = 'awaiting-hello';
  identity: Identity | null = null;
  private readonly calls = new Map<string, CallBase>();
  /** Per call of this tab: takes this session's listeners off it (see attach). */
  private readonly listenersOff = new Map<string, () => void>();
  /** Why the calls of a closed connection ended: a call set up after the close ends so too. */
  private closeCause: 'connection-lost' | 'local-hangup' = 'local-hangup';
  /** `call` requests still being set up (startOutbound not back yet). */
  private callsBeingPlaced = 0;
  private frameWindowStart = Date.now();
  private framesInWindow = 0;
  private warnedFlood = false;
  private failedHellos = 0;
  /** Being closed by us (flood, no hello, refused hellos): frames still arriving are ignored. */
  private closing = false;
  private helloTimer: NodeJS.Timeout | null = null;
  /** The secret a new connection shows to take this session over (hello.resume); one per welcome. */
  private resumeToken = '';
  /** Detached: what the tab is missing, and when its calls end if it does not come back. */
  private missed: ServerMessage[] = [];
  private graceTimer: NodeJS.Timeout | null = null;
  /** Calls with a transfer of this tab's in progress, and that request's ref (transfer-progress names it). */
  private readonly transferRefs = new Map<string, string | undefined>();
  /** This socket's listeners, taken off when another session adopts the socket (resume). */
  private readonly socketListeners: Array<[event: string, fn: (...args: any[]) => void]> = [];

  constructor(
    private ws: WebSocket,
    private readonly opts: {
      manager: CallManager;
      authenticate: Authenticator;
      iceServers: IceServer[];
      demo: boolean;
      limits: SessionLimits;
      logger: Logger;
      onReady(session: BrowserSession): void;
      onClosed(session: BrowserSession): void;
      /** A waiting (detached) session this token may take over, or null. */
      resume(sessionId: string, token: string): BrowserSession | null;
      /** How long a dropped tab's calls wait for it (0: they end at once). */
      resumeGraceMs: number;
      /** The connection dropped and the session waits for the tab (it has no socket now). */
      onDetached?(session: BrowserSession): void;
      /** A detached session's grace time ran out: the tab did not come back, its calls end. */
      onGraceExpired?(session: BrowserSession): void;
      /** The gateway drains: only a resume is taken, no fresh session. */
      draining?(): boolean;
      origin?: string;
    },
  ) {
    this.log = opts.logger.child({ sessionId: this.sessionId });
    this.listen(ws);
    // Unauthenticated connections do not linger (each holds a socket and a session). A hello
    // that arrived in time but is still being checked gets its answer first.
    const helloDeadline = () => {
      this.helloTimer = null;
      if (this.state === 'authenticating') { this.helloTimer = setTimeout(helloDeadline, opts.limits.helloTimeoutMs); return; }
      if (this.state !== 'awaiting-hello') return;
      this.log.info('websocket closed: no hello in time');
      this.closeFor(4408, 'hello timeout');
    };
    this.helloTimer = setTimeout(helloDeadline, opts.limits.helloTimeoutMs);
  }

  /** Reads `ws` as this tab's connection. */
  private listen(ws: WebSocket): void {
    const on = (event: string, fn: (...args: any[]) => void) => { ws.on(event, fn); this.socketListeners.push([event, fn]); };
    on('message', (data: Buffer, isBinary: boolean) => {
      if (this.state === 'closed' || this.closing || ws !== this.ws) return;
      // Every frame counts toward the flood limit, binary ones too (else a flood of them would
      // get an endless stream of errors and never be cut).
      if (!this.admitFrame()) return;
      if (isBinary) { this.send({ type: 'error', code: 'bad-message', message: 'binary frames are not part of the protocol' }); return; }
      this.onFrame(data.toString());
    });
    on('close', (code: number) => { if (ws === this.ws) this.onClose(code); });
    on('error', (err: Error) => this.log.debug({ err: err.message }, 'websocket error'));
  }

  /** Takes this session's listeners off its socket. */
  private unlisten(): void {
    for (const [event, fn] of this.socketListeners) this.ws.off(event, fn);
    this.socketListeners.length = 0;
  }

  get isReady(): boolean {
    return this.state === 'ready';
  }

  get isDetached(): boolean {
    return this.state === 'detached';
  }

  /**
   * Whether a connection from a page of `origin` showing `token` may take this session over:
   * the session's resume token (compared in constant time), from the same origin (a token may
   * allow several). Also while it still looks connected: a tab whose network changed cannot
   * close its old connection, and we learn it is dead only from the heartbeat, up to two beats
   * later.
   */
  resumableWith(token: string, origin: string | undefined): boolean {
    if ((this.state !== 'detached' && this.state !== 'ready') || this.closing || !this.resumeToken || origin !== this.opts.origin) return false;
    const a = Buffer.from(token);
    const b = Buffer.from(this.resumeToken);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  send(msg: ServerMessage): void {
    if (this.state === 'detached') {
      // Kept for the tab, should it come back (it is told of the calls still up anyway).
      this.missed.push(msg);
      if (this.missed.length > MAX_MISSED) this.missed.shift();
      return;
    }
    if (this.state === 'closed' || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(JSON.stringify(msg));
  }

  /** RingTarget: an inbound call rings this tab. */
  ring(call: InboundCall, offerSdp: string): void {
    // The tab closed (or dropped) while the call was being set up: it cannot ring (and must not
    // hold a fork). Gone, not declined: the user never saw the call.
    if (this.state === 'closed' || this.state === 'detached') { call.tabGone(this.sessionId); return; }
    this.attach(call);
    this.send({ type: 'incoming', callId: call.id, from: call.from, fromName: call.fromName, to: call.to, sdp: offerSdp });
  }

  private admitFrame(): boolean {
    const now = Date.now();
    if (now - this.frameWindowStart >= 1000) { this.frameWindowStart = now; this.framesInWindow = 0; }
    this.framesInWindow++;
    if (this.framesInWindow <= this.opts.limits.messagesPerSec) return true;
    if (!this.warnedFlood) {
      this.warnedFlood = true;
      this.send({ type: 'error', code: 'rate-limited', message: `more than ${this.opts.limits.messagesPerSec} messages a second`, retryAfterMs: 1000 });
      return false;
    }
    this.log.warn('websocket flood: closing');
    this.closeFor(1008, 'message flood');
    return false;
  }

  private onFrame(text: string): void {
    const parsed = parseClientMessage(text);
    if (!parsed.ok) {
      this.send({ type: 'error', code: parsed.code, message: parsed.message, request: parsed.request, ref: parsed.ref, callId: parsed.callId });
      return;
    }
    this.handle(parsed.msg).catch((err) => {
      this.log.error({ err }, 'signaling handler failed');
      this.refuse(parsed.msg, 'internal', 'internal error');
    });
  }

  /**
   * The `error` answering `req`: it names the request, and the call concerned — a `call`'s ref,
   * or the callId — so that the tab can tell which of its calls was refused instead of guessing.
   */
  private refuse(req: ClientMessage, code: ErrorCode, message: string, retryAfterMs?: number, sipStatus?: number): void {
    this.send({
      type: 'error', code, message, request: req.type,
      // The `ref` of a refused `call`, `restart` or `transfer`: which attempt of the tab's it answers.
      ref: req.type === 'call' || req.type === 'restart' || req.type === 'transfer' ? req.ref : undefined,
      callId: 'callId' in req ? req.callId : undefined,
      retryAfterMs,
      ...(sipStatus !== undefined ? { sipStatus } : {}),
    });
  }

  private async handle(msg: ClientMessage): Promise<void> {
    if (msg.type === 'ping') { this.send({ type: 'pong' }); return; }
    if (msg.type === 'hello') { await this.onHello(msg); return; }
    if (this.state !== 'ready' || !this.identity) {
      this.refuse(msg, 'not-authenticated', 'send hello first');
      return;
    }
    switch (msg.type) {
      case 'call': return this.onCall(msg);
      case 'candidate': {
        const call = this.callFor(msg);
        if (call && this.isOwnCall(call)) call.addBrowserCandidate(msg.candidate, msg.sdpMid ?? undefined, msg.sdpMLineIndex ?? undefined);
        return;
      }
      case 'restart': {
        const call = this.callFor(msg);
        if (!call) return;
        if (!this.isOwnCall(call)) { this.refuse(msg, 'invalid-state', 'only a call this tab placed or answered can move to a new connection'); return; }
        let sdp: string;
        try {
          sdp = await call.restartBrowserMedia(msg.sdp);
        } catch (err) {
          if (err instanceof IcePortsExhaustedError) { this.refuse(msg, 'too-many-calls', 'no WebRTC port free for the new connection'); return; }
          if (!(err instanceof MediaRestartRefused)) throw err;
          this.refuse(msg, err.code, err.message);
          return;
        }
        this.send({ type: 'restarted', callId: call.id, sdp, ...(msg.ref !== undefined ? { ref: msg.ref } : {}) });
        return;
      }
      case 'accept': {
        const call = this.callFor(msg);
        if (!call) return;
        if (!(call instanceof InboundCall)) { this.refuse(msg, 'invalid-state', 'only incoming calls can be accepted'); return; }
        const r = await call.accept(this.sessionId, msg.sdp);
        // A call that ended meanwhile (CANCEL, the audio never connected) has said so in `ended`.
        if (!r.ok && !call.ended) this.refuse(msg, 'invalid-state', r.message);
        return;
      }
      case 'reject': {
        const call = this.callFor(msg);
        if (call instanceof OutboundCall) { this.refuse(msg, 'invalid-state', 'reject is for incoming calls: hang up a call this tab placed'); return; }
        if (!(call instanceof InboundCall)) return;
        // This tab already answered (the call is up, or its audio still connecting): it cannot
        // be declined any more, and the user wants it gone — end it as a hangup. Declining only
        // this tab's part would leave the call up with no tab to end it.
        if (call.wonBy(this.sessionId)) { call.hangup('local-hangup'); return; }
        call.reject(this.sessionId, msg.reason ?? 'declined');
        if (!call.ended) this.detach(call, { cause: 'rejected' });
        return;
      }
      case 'hangup': {
        const call = this.callFor(msg);
        if (call instanceof OutboundCall) call.hangup('local-hangup');
        else if (call instanceof InboundCall) {
          if (call.wonBy(this.sessionId)) call.hangup('local-hangup');
          else { call.reject(this.sessionId, 'declined'); if (!call.ended) this.detach(call, { cause: 'rejected' }); }
        }
        return;
      }
      case 'dtmf': {
        const call = this.callFor(msg);
        if (call && !call.sendDtmf(msg.digits)) this.refuse(msg, 'invalid-state', 'no media yet for DTMF');
        return;
      }
      case 'transfer': return this.onTransfer(msg);
      case 'hold':
      case 'unhold': {
        const call = this.callFor(msg);
        if (!call) return;
        const r = await call.setLocalHold(msg.type === 'hold');
        if (!r.ok) this.refuse(msg, 'invalid-state', r.message);
        return;
      }
    }
  }

  private async onHello(msg: Extract<ClientMessage, { type: 'hello' }>): Promise<void> {
    if (this.state !== 'awaiting-hello') {
      this.refuse(msg, 'invalid-state', 'hello was already received');
      return;
    }
    if (msg.resume) {
      const waiting = this.opts.resume(msg.resume.sessionId, msg.resume.token);
      if (waiting) {
        // That session takes this socket over, calls and all; this one was never more than a
        // connection and goes quietly.
        waiting.adopt(this.ws);
        this.retire();
        return;
      }
      this.log.info('resume refused (no such session waiting, or a wrong token): a fresh session');
    }
    if (this.opts.draining?.()) {
      // Going away: the tab should connect elsewhere (1013: try again later).
      this.refuse(msg, 'draining', 'the gateway is shutting down');
      this.closeFor(1013, 'draining');
      return;
    }
    this.state = 'authenticating';
    const auth = await this.opts.authenticate(msg.token);
    if (this.state !== 'authenticating' || this.closing) return; // socket closed meanwhile
    if (!auth.ok) {
      this.state = 'awaiting-hello';
      this.log.info({ code: auth.code }, 'hello refused');
      this.refuse(msg, auth.code, auth.message);
      this.helloRefused();
      return;
    }
    if (auth.origins && auth.origins.length > 0 && (!this.opts.origin || !auth.origins.includes(this.opts.origin))) {
      this.state = 'awaiting-hello';
      this.log.info({ origin: this.opts.origin }, 'token not valid for this origin');
      this.refuse(msg, 'token-invalid', 'the token does not allow this page origin');
      this.helloRefused();
      return;
    }
    this.identity = auth.identity;
    this.state = 'ready';
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = null;
    this.opts.onReady(this);
    this.send({ ...this.welcome(), ...(msg.resume ? { resumed: false } : {}) });
  }

  /** The welcome of this session; a new resume token with each (the last one is used up). */
  private welcome(): Extract<ServerMessage, { type: 'welcome' }> {
    this.resumeToken = randomBytes(24).toString('base64url');
    return {
      type: 'welcome', version: PROTOCOL_VERSION, sessionId: this.sessionId, identity: this.identity!.id, iceServers: this.opts.iceServers, demo: this.opts.demo,
      resumeToken: this.resumeToken, resumeGraceMs: this.opts.resumeGraceMs,
    };
  }

  /**
   * A new connection resumed this waiting session: it becomes the tab's connection, and is told
   * the calls still up and what it missed.
   */
  adopt(ws: WebSocket): void {
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
    // The old connection's listeners come off (they would keep it in memory); one that still
    // looks alive here is dead to the tab: cut, quietly.
    this.unlisten();
    if (this.state === 'ready') {
      this.ws.terminate();
      this.keepOnlyOwnCalls();
    }
    this.ws = ws;
    this.listen(ws);
    this.state = 'ready';
    this.frameWindowStart = Date.now();
    this.framesInWindow = 0;
    this.warnedFlood = false;
    const missed = this.missed;
    this.missed = [];
    const up = [...this.calls.values()].filter((c) => !c.ended);
    for (const c of up) c.noteSignalingResume();
    const calls = up.map((c) => ({ callId: c.id, state: resumedState(c) }));
    this.log.info({ calls: calls.length, missed: missed.length }, 'tab resumed its session');
    this.send({ ...this.welcome(), resumed: true, calls, missed });
  }

  /**
   * This connection's session ends unseen: another session adopted its socket. Its listeners
   * come off the socket (the adopter's stay); the signaling server forgets it.
   */
  private retire(): void {
    this.unlisten();
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = null;
    this.state = 'closed';
    this.opts.onClosed(this);
  }

  /** A page may fix its token and say hello again, a few times; a client looping on a bad one is closed. */
  private helloRefused(): void {
    if (++this.failedHellos < MAX_FAILED_HELLOS) return;
    this.log.info('websocket closed: too many refused hellos');
    this.closeFor(4401, 'too many refused hellos');
  }

  /**
   * Closes the socket with `code`. Nothing more it sends is read (ws goes on delivering frames
   * until the close handshake ends), and it is cut if the peer does not complete the handshake
   * within a second (ws would wait 30 s).
   */
  private closeFor(code: number, reason: string): void {
    if (this.closing) return;
    this.closing = true;
    this.ws.close(code, reason);
    setTimeout(() => this.ws.terminate(), 1000).unref();
  }

  private async onCall(msg: Extract<ClientMessage, { type: 'call' }>): Promise<void> {
    const identity = this.identity!;
    const wait = this.opts.limits.callAttempt(identity.id);
    if (wait > 0) {
      this.refuse(msg, 'rate-limited', 'too many call attempts', wait);
      return;
    }
    // Demo mode (no tokens): a call without a number goes to the echo test, so the widget works out of the box.
    const to = msg.to ?? fixedDestination(identity.dest) ?? (this.opts.demo ? '1000' : undefined);
    if (!to) {
      this.refuse(msg, 'bad-message', 'call: to is required (this token names no single destination)');
      return;
    }
    // Being placed, the call is already this tab's: a drop now keeps the session for a resume
    // (hasOwnCalls), and its `calling` waits in `missed`.
    this.callsBeingPlaced++;
    let r: Awaited<ReturnType<CallManager['startOutbound']>>;
    try {
      r = await this.opts.manager.startOutbound(identity, to, msg.sdp, msg.headers);
    } finally {
      this.callsBeingPlaced--;
    }
    if (!r.ok) {
      if (r.code === 'forbidden') {
        // Refused by the dial plan before any SIP: report it as an ended call, like any other outcome.
        this.send({ type: 'ended', callId: r.callId, ref: msg.ref, cause: r.cause, sipReason: r.message });
      } else {
        this.refuse(msg, r.code, r.message);
      }
      return;
    }
    // The tab went while the call was being set up: it ends as the tab's other calls did.
    if (this.state === 'closed') { r.call.hangup(this.closeCause); return; }
    this.attach(r.call);
    this.send({ type: 'calling', callId: r.call.id, ref: msg.ref, sdp: r.answerSdp });
    // Dialing runs on after startOutbound returned, and a failure there can end the call before
    // this continuation ran (e.g. an INVITE that could not be sent): its `ended` event is past,
    // so the tab is told now, or it would wait for the end of a call that is already over.
    if (r.call.ended) this.callEnded(r.call, r.call.endInfo ?? { cause: 'failed' });
  }

  /**
   * Blind transfer of a call this tab placed or answered (docs/protocol.md, `transfer`). The
   * target is checked by the call manager exactly as a `call` to it would be, for this tab's
   * identity and token — not the call's: an incoming call's identity is only its user, and the
   * tab's token may restrict where it may send calls. Success says itself in the call's `ended`
   * (cause `transferred`); a refusal or failure is an `error` naming the request's ref.
   */
  private async onTransfer(msg: Extract<ClientMessage, { type: 'transfer' }>): Promise<void> {
    const call = this.callFor(msg);
    if (!call) return;
    if (!this.isOwnCall(call)) { this.refuse(msg, 'invalid-state', 'only a call this tab placed or answered can be transferred'); return; }
    // A transfer places a call on the trunk as `call` does: it counts against the same limit,
    // so that a tab cannot try costly numbers as fast as the targets fail.
    const wait = this.opts.limits.callAttempt(this.identity!.id);
    // What the tab sent, printable and short, for the call's CDR line.
    const asked = msg.to.replace(/[\p{C}]/gu, '?').slice(0, 64);
    if (wait > 0) { call.noteTransferAttempt({ to: asked, outcome: 'rate-limited' }); this.refuse(msg, 'rate-limited', 'too many call attempts', wait); return; }
    const t = this.opts.manager.transferTarget(this.identity!, msg.to);
    if (!t.ok) { call.noteTransferAttempt({ to: asked, outcome: 'forbidden' }); this.refuse(msg, 'forbidden', t.message); return; }
    if (this.transferRefs.has(call.id)) { this.refuse(msg, 'invalid-state', 'a transfer of this call is in progress'); return; }
    this.transferRefs.set(call.id, msg.ref);
    let r: Awaited<ReturnType<CallBase['transfer']>>;
    try {
      r = await call.transfer(t.target);
    } finally {
      this.transferRefs.delete(call.id);
    }
    // Success, or the call's end for another reason: its `ended` says so. Also a refusal the call's
    // end overtook (a hangup read in the same tick, before this await resumed): the tab has its
    // `ended` already, and gets nothing about the call after it (docs/protocol.md).
    if (r.ok || 'ended' in r || call.ended) return;
    this.refuse(msg, r.code, r.message, undefined, r.sipStatus);
  }

  /**
   * The call is this tab's: its events become messages until the tab is out of it (forget). An
   * inbound call goes on without a tab that refused it busy or lost it to another tab, so its
   * listeners must come off then, or that tab would hear the rest of a call it was told ended.
   */
  private attach(call: CallBase): void {
    if (this.calls.has(call.id)) return;
    this.calls.set(call.id, call);
    const id = call.id;
    const onProgress = (p: { status: number; earlyMedia: boolean }) => this.send({ type: 'progress', callId: id, status: p.status, earlyMedia: p.earlyMedia });
    const onAnswered = () => {
      if (call instanceof InboundCall && !call.wonBy(this.sessionId)) {
        this.detach(call, { cause: 'answered-elsewhere' });
        return;
      }
      this.send({ type: 'answered', callId: id });
    };
    const onHeld = (by: 'local' | 'remote') => this.send({ type: 'held', callId: id, by });
    const onResumed = (by: 'local' | 'remote') => this.send({ type: 'resumed', callId: id, by });
    const onDtmf = (digit: string) => this.send({ type: 'dtmf', callId: id, digit });
    const onTransferProgress = (status: number) => {
      const ref = this.transferRefs.get(id);
      this.send({ type: 'transfer-progress', callId: id, status, ...(ref !== undefined ? { ref } : {}) });
    };
    const onEnded = (info: CallEndInfo) => this.callEnded(call, info);
    call.on('progress', onProgress);
    call.on('answered', onAnswered);
    call.on('held', onHeld);
    call.on('resumed', onResumed);
    call.on('dtmf', onDtmf);
    call.on('transferProgress', onTransferProgress);
    call.once('ended', onEnded);
    this.listenersOff.set(id, () => {
      call.off('progress', onProgress);
      call.off('answered', onAnswered);
      call.off('held', onHeld);
      call.off('resumed', onResumed);
      call.off('dtmf', onDtmf);
      call.off('transferProgress', onTransferProgress);
      call.off('ended', onEnded);
    });
  }

  /** This tab is out of the call: false when it already was. */
  private forget(call: CallBase): boolean {
    this.listenersOff.get(call.id)?.();
    this.listenersOff.delete(call.id);
    return this.calls.delete(call.id);
  }

  /** The call is over: tell this tab, once. A tab still ringing when another declined hears that. */
  private callEnded(call: CallBase, info: CallEndInfo): void {
    if (call instanceof InboundCall && call.declinedElsewhere(this.sessionId)) {
      this.detach(call, { cause: 'declined-elsewhere' });
      return;
    }
    if (!this.forget(call)) return;
    this.send({ type: 'ended', callId: call.id, cause: info.cause, sipStatus: info.sipStatus, sipReason: info.tabReason ?? info.sipReason });
  }

  /**
   * This tab is out of the call: it goes on elsewhere (this tab refused it busy, or another tab
   * answered it), or it is over because another tab declined it.
   */
  private detach(call: CallBase, info: { cause: 'answered-elsewhere' | 'declined-elsewhere' | 'rejected' }): void {
    if (!this.forget(call)) return;
    this.send({ type: 'ended', callId: call.id, cause: info.cause });
  }

  private callFor(msg: Extract<ClientMessage, { callId: string }>): CallBase | undefined {
    const call = this.calls.get(msg.callId);
    if (!call) this.refuse(msg, 'unknown-call', 'no such call on this connection');
    return call;
  }

  /**
   * The connection is gone: its calls end — after the resume grace time when it dropped without
   * a close frame (1006: the network went, the tab's machine slept, or our heartbeat gave up on
   * it; `connection-lost` in the CDR if the tab does not come back); at once when the tab closed
   * or navigated away (it sent its close frame and hung up: `local-hangup`).
   */
  private onClose(code: number): void {
    if (this.state === 'closed' || this.state === 'detached') return;
    // One we were closing (a flood, …) cut itself at the end of its close handshake: not a drop.
    const dropped = code === 1006 || code === CLOSE_RECONNECTING;
    if (dropped && this.state === 'ready' && !this.closing && this.opts.resumeGraceMs > 0 && this.waitForResume()) return;
    this.end(code);
  }

  /**
   * The connection dropped without a close frame (the network went for a moment, or changed):
   * the tab's calls — those it placed, and those it answered — go on for the resume grace time,
   * waiting for a new connection to take them over (docs/protocol.md). An incoming call still
   * ringing here stops ringing here, as on any close. False when there is nothing to keep.
   */
  private waitForResume(): boolean {
    if (!this.hasOwnCalls()) return false;
    this.state = 'detached';
    const kept = this.keepOnlyOwnCalls();
    this.log.info({ calls: kept, graceMs: this.opts.resumeGraceMs }, 'websocket dropped: calls kept for the tab to resume');
    this.opts.onDetached?.(this);
    this.graceTimer = setTimeout(() => {
      this.graceTimer = null;
      this.log.info('the tab did not come back: its calls end');
      // Counted only when it cost a call: calls all ended meanwhile (the far end hung up) lost
      // nothing to the drop.
      if (this.hasOwnCalls()) this.opts.onGraceExpired?.(this);
      this.end(1006);
    }, this.opts.resumeGraceMs);
    this.graceTimer.unref();
    return true;
  }

  /** Calls that are this tab's own: placed by it, or answered in it. */
  private isOwnCall(call: CallBase): boolean {
    return !call.ended && (call instanceof OutboundCall || (call instanceof InboundCall && call.wonBy(this.sessionId)));
  }

  private hasOwnCalls(): boolean {
    return this.callsBeingPlaced > 0 || [...this.calls.values()].some((c) => this.isOwnCall(c));
  }

  /**
   * The tab's connection dropped: an incoming call ringing in it stops ringing there (as on any
   * close; the user may never have seen it), its own calls stay. Returns how many stay.
   */
  private keepOnlyOwnCalls(): number {
    let kept = 0;
    for (const call of [...this.calls.values()]) {
      if (this.isOwnCall(call)) { kept++; continue; }
      this.forget(call);
      if (call instanceof InboundCall) call.tabGone(this.sessionId);
    }
    return kept;
  }

  /** Ends a waiting session now (the gateway is shutting down): its calls end as lost. */
  endDetached(): void {
    if (this.state !== 'detached') return;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
    this.end(1006);
  }

  /** The tab is gone for good: its calls end, the signaling server forgets it. */
  private end(code: number): void {
    this.state = 'closed';
    this.missed = [];
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = null;
    const cause = code === 1006 || code === CLOSE_RECONNECTING ? 'connection-lost' : 'local-hangup';
    this.closeCause = cause;
    this.log.info({ code, identity: this.identity?.id, calls: this.calls.size }, 'websocket closed');
    for (const call of [...this.calls.values()]) {
      // Nothing more is sent to a closed tab; a call that rang here goes on in other tabs.
      this.forget(call);
      if (call instanceof OutboundCall) call.hangup(cause);
      else if (call instanceof InboundCall) {
        if (call.wonBy(this.sessionId) && call.state === 'answered') call.hangup(cause);
        // A ringing tab that closes has not declined the call (that is the `reject` message),
        // nor has one that accepted and closed before its audio connected.
        else call.tabGone(this.sessionId);
      }
    }
    this.opts.onClosed(this);
  }
}

/** The destination a token fixes: its first `dest` entry when that is a number, not a pattern. */
function fixedDestination(dest: string[] | undefined): string | undefined {
  const first = dest?.[0];
  return first && /^\+?[0-9#]+$/.test(first) ? first : undefined; // '*' and '?' make it a pattern
}

/** A call's state in the SDK's words (a resumed tab is told where its calls are). */
function resumedState(call: CallBase): ResumedCallState {
  if (call.state === 'answered') return 'answered';
  return call.state === 'trying' ? 'connecting' : 'ringing';
}
