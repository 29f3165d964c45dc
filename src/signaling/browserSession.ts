import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import type { CallBase, CallEndInfo, Identity } from '../calls/callBase';
import type { CallManager } from '../calls/callManager';
import { InboundCall, type RingTarget } from '../calls/inboundCall';
import { OutboundCall } from '../calls/outboundCall';
import { parseClientMessage, PROTOCOL_VERSION, type ClientMessage, type ErrorCode, type IceServer, type ServerMessage } from './protocol';

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

type SessionState = 'awaiting-hello' | 'authenticating' | 'ready' | 'closed';

/**
 * One WebSocket = one browser tab. Validates every frame, turns requests into calls on the
 * CallManager and call events into messages. A dropped socket ends every call of this tab.
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
  private frameWindowStart = Date.now();
  private framesInWindow = 0;
  private warnedFlood = false;
  private failedHellos = 0;
  /** Being closed by us (flood, no hello, refused hellos): frames still arriving are ignored. */
  private closing = false;
  private helloTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly ws: WebSocket,
    private readonly opts: {
      manager: CallManager;
      authenticate: Authenticator;
      iceServers: IceServer[];
      demo: boolean;
      limits: SessionLimits;
      logger: Logger;
      onReady(session: BrowserSession): void;
      onClosed(session: BrowserSession): void;
      origin?: string;
    },
  ) {
    this.log = opts.logger.child({ sessionId: this.sessionId });
    ws.on('message', (data, isBinary) => {
      if (this.state === 'closed' || this.closing) return;
      if (isBinary) { this.send({ type: 'error', code: 'bad-message', message: 'binary frames are not part of the protocol' }); return; }
      if (!this.admitFrame()) return;
      this.onFrame(data.toString());
    });
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
    ws.on('close', (code: number) => this.onClose(code));
    ws.on('error', (err) => this.log.debug({ err: err.message }, 'websocket error'));
  }

  get isReady(): boolean {
    return this.state === 'ready';
  }

  send(msg: ServerMessage): void {
    if (this.state === 'closed' || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(JSON.stringify(msg));
  }

  /** RingTarget: an inbound call rings this tab. */
  ring(call: InboundCall, offerSdp: string): void {
    // The tab closed while the call was being set up: it cannot ring (and must not hold a fork).
    // Gone, not declined: the user never saw the call.
    if (this.state === 'closed') { call.tabGone(this.sessionId); return; }
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
      this.send({ type: 'error', code: parsed.code, message: parsed.message, request: parsed.request, ref: parsed.ref });
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
  private refuse(req: ClientMessage, code: ErrorCode, message: string, retryAfterMs?: number): void {
    this.send({
      type: 'error', code, message, request: req.type,
      ref: req.type === 'call' ? req.ref : undefined,
      callId: 'callId' in req ? req.callId : undefined,
      retryAfterMs,
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
        if (call instanceof OutboundCall) call.addBrowserCandidate(msg.candidate, msg.sdpMid ?? undefined, msg.sdpMLineIndex ?? undefined);
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
        if (call instanceof InboundCall) {
          call.reject(this.sessionId, msg.reason ?? 'declined');
          if (!call.ended) this.detach(call, { cause: 'rejected' });
        }
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
    this.send({ type: 'welcome', version: PROTOCOL_VERSION, sessionId: this.sessionId, identity: auth.identity.id, iceServers: this.opts.iceServers, demo: this.opts.demo });
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
    const r = await this.opts.manager.startOutbound(identity, to, msg.sdp, msg.headers);
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
    const onEnded = (info: CallEndInfo) => this.callEnded(call, info);
    call.on('progress', onProgress);
    call.on('answered', onAnswered);
    call.on('held', onHeld);
    call.on('resumed', onResumed);
    call.on('dtmf', onDtmf);
    call.once('ended', onEnded);
    this.listenersOff.set(id, () => {
      call.off('progress', onProgress);
      call.off('answered', onAnswered);
      call.off('held', onHeld);
      call.off('resumed', onResumed);
      call.off('dtmf', onDtmf);
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
    this.send({ type: 'ended', callId: call.id, cause: info.cause, sipStatus: info.sipStatus, sipReason: info.sipReason });
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
   * The connection is gone: its calls end. 1006 (closed without a close frame: the network went,
   * the tab's machine slept, or our heartbeat gave up on it) is `connection-lost` in the CDR;
   * a tab that closed or navigated away sent its close frame and hung up (`local-hangup`).
   */
  private onClose(code: number): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = null;
    const cause = code === 1006 ? 'connection-lost' : 'local-hangup';
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
