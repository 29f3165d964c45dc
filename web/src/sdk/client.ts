import { Call, type CallEndInfo, type CallTransport, type GatewayError } from './call';
import { Emitter } from './emitter';

export interface ConnectOptions {
  /** ws(s)://host/ws; defaults to the page's own gateway. */
  url?: string;
  token?: string;
  /** Overrides the ICE servers the gateway hands out. */
  iceServers?: RTCIceServer[];
  /** getUserMedia audio constraints (defaults keep the browser's echo cancellation on). */
  audio?: MediaTrackConstraints | boolean;
  /**
   * How long a call waits for the gateway to take or refuse its request once it is sent
   * (30 s by default); then it ends as `failed`, rather than stay `connecting` for ever.
   */
  callSetupTimeoutMs?: number;
  /**
   * When the connection drops (no close frame) during calls, reconnect and take them over while
   * the gateway keeps them (its `resumeGraceMs`); true by default. false: they end at once.
   */
  resume?: boolean;
}

export interface ClientEvents extends Record<string, unknown[]> {
  incoming: [call: Call];
  /** Every `error` from the gateway; those about a call also reach that Call (its `error` event). */
  error: [err: GatewayError];
  /**
   * The connection is gone for good; calls still up ended `connection-lost`. Not after close().
   */
  disconnected: [];
  /** The connection dropped during calls: they stay up while the client reconnects. */
  reconnecting: [];
  /** Reconnected: the calls the gateway still had go on; those it no longer had have ended. */
  reconnected: [];
}

/** Waits between reconnect attempts (the last one repeats), and how long one attempt may take. */
const RECONNECT_DELAYS_MS = [0, 250, 500, 1000, 2000];
const RECONNECT_ATTEMPT_TIMEOUT_MS = 5000;
const AWAY_REASON = 'the call ended while the connection to the gateway was away';

/** A reconnection in progress (see onClose). */
interface Reconnect {
  /** Gives up when the gateway has stopped keeping the calls (its resumeGraceMs after the drop). */
  deadline: ReturnType<typeof setTimeout>;
  /** The next attempt, or the current attempt's timeout. */
  timer?: ReturnType<typeof setTimeout>;
  /** The current attempt's socket: one at a time. */
  socket?: WebSocket;
  attempts: number;
  /** Calls hung up while away: the gateway may still have them, and is told once back. */
  hangups: Set<string>;
}

/**
 * Connection to the gateway: one WebSocket, any number of calls.
 *
 *   const client = await GatewayClient.connect({ token });
 *   const call = client.call('+15551234567');
 *   call.on('answered', () => …); call.on('ended', ({ cause }) => …);
 */
export class GatewayClient extends Emitter<ClientEvents> {
  sessionId = '';
  identity = '';
  demo = false;
  private iceServers: RTCIceServer[] = [];
  private readonly calls = new Map<string, Call>();
  /** Outbound calls without their callId yet, by the `ref` of their request. */
  private readonly pending = new Map<string, Call>();
  /**
   * Refs of requests whose call ended here (hung up, timed out) before the gateway's answer: it
   * may already be dialing, so a `calling` for one of them is answered with `hangup` at once.
   */
  private readonly abandoned = new Set<string>();
  /** Outbound calls whose request went out (to the connection of that time). */
  private readonly requested = new WeakSet<Call>();
  private refCounter = 0;
  private closed = false;
  /** From the latest `welcome`: what takes this session's calls over after a drop. */
  private resumeToken = '';
  private resumeGraceMs = 0;
  private reconnect: Reconnect | null = null;

  private constructor(private ws: WebSocket, private readonly url: string, private readonly opts: ConnectOptions) {
    super();
  }

  static connect(opts: ConnectOptions = {}): Promise<GatewayClient> {
    const url = opts.url ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
    const ws = new WebSocket(url);
    const client = new GatewayClient(ws, url, opts);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error('gateway did not answer in time')); ws.close(); }, 10000);
      ws.onerror = () => { clearTimeout(timer); reject(new Error(`cannot connect to ${url}`)); };
      ws.onopen = () => ws.send(JSON.stringify({ type: 'hello', version: 1, token: opts.token }));
      ws.onmessage = (ev) => {
        const msg = JSON.parse(String(ev.data));
        if (msg.type === 'welcome') {
          clearTimeout(timer);
          client.sessionId = msg.sessionId;
          client.identity = msg.identity;
          client.demo = msg.demo;
          client.iceServers = opts.iceServers ?? msg.iceServers ?? [];
          client.noteResume(msg);
          ws.onmessage = (e) => client.onMessage(String(e.data));
          ws.onclose = (ev) => client.onClose(ev.code);
          resolve(client);
        } else if (msg.type === 'error') {
          clearTimeout(timer);
          ws.close();
          reject(Object.assign(new Error(msg.message), { code: msg.code }));
        }
      };
    });
  }

  /**
   * Places a call; listen on the returned Call for progress/answered/ended. Without `to`, the
   * call goes to the destination fixed by the token (the embeddable widget's case).
   *
   * The call always ends with an `ended` event, also when it never got going: refused by the
   * gateway (cause `failed`, the refusal in `error`), no answer to its request within
   * `callSetupTimeoutMs` (`failed`), or no connection to the gateway (`connection-lost`, at once).
   */
  call(to?: string, opts: { headers?: Record<string, string> } = {}): Call {
    const ref = `r${++this.refCounter}`;
    const call = new Call(this.transport(ref), { direction: 'outbound', iceServers: this.iceServers });
    if (this.ws.readyState !== WebSocket.OPEN) {
      // The request could not be sent. A microtask later, so that the caller's listeners are on.
      void Promise.resolve().then(() => call.finish({ cause: 'connection-lost', sipReason: 'not connected to the gateway' }));
      return call;
    }
    this.pending.set(ref, call);
    call.start(to, { headers: opts.headers, ref, audio: this.opts.audio ?? true, setupTimeoutMs: this.opts.callSetupTimeoutMs ?? 30_000 }).catch((err: Error) => {
      if (call.state === 'ended') return; // ended while starting: nothing went wrong
      console.warn('call could not start:', err);
      call.finish({ cause: 'failed', sipReason: err.name === 'NotAllowedError' ? 'microphone permission denied' : err.message });
    });
    return call;
  }

  get activeCalls(): Call[] {
    return [...this.calls.values(), ...this.pending.values()];
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.reconnect) {
      // The dropped socket's close is past: nothing else will end the calls.
      this.stopReconnecting();
      this.endCalls({ cause: 'local-hangup' });
      return;
    }
    this.ws.close();
  }

  private send(msg: Record<string, unknown>): boolean {
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Every `welcome` carries a new resume token (each works once). */
  private noteResume(welcome: Record<string, any>): void {
    this.resumeToken = typeof welcome.resumeToken === 'string' ? welcome.resumeToken : '';
    this.resumeGraceMs = typeof welcome.resumeGraceMs === 'number' ? welcome.resumeGraceMs : 0;
  }

  /** `ref`: an outbound call's, whose request is tracked until the gateway answers it. */
  private transport(ref?: string): CallTransport {
    let requested = false;
    return {
      send: (msg) => {
        // Noted before sending: the call may end while its request is being sent.
        if (msg.type === 'call') requested = this.ws.readyState === WebSocket.OPEN;
        const sent = this.send(msg);
        const call = ref === undefined ? undefined : this.pending.get(ref);
        if (sent && msg.type === 'call' && call) this.requested.add(call);
        // Hung up while away (the call ends here at once): the gateway, still keeping the call,
        // is told once back.
        if (!sent && msg.type === 'hangup' && this.reconnect) this.reconnect.hangups.add(String(msg.callId));
        return sent;
      },
      online: () => this.ws.readyState === WebSocket.OPEN,
      forget: (call) => {
        if (call.id) this.calls.delete(call.id);
        if (ref === undefined || this.pending.get(ref) !== call) return;
        // Still waiting for the gateway's answer: if its request went out, the call may be dialing.
        this.pending.delete(ref);
        if (requested) this.abandoned.add(ref);
      },
    };
  }

  private onMessage(text: string): void {
    let msg: Record<string, any>;
    try { msg = JSON.parse(text); } catch { return; }
    this.dispatch(msg);
  }

  private dispatch(msg: Record<string, any>): void {
    // The answer to a `call` request (by its ref): `calling`, `ended` (refused before dialing) or `error`.
    const answersRequest = msg.type === 'calling' || (msg.type === 'ended' && msg.ref !== undefined && !this.calls.has(msg.callId)) || (msg.type === 'error' && msg.ref !== undefined);
    if (answersRequest && this.abandoned.delete(msg.ref)) {
      // Given up here before the gateway answered: a call it is dialing all the same is hung up now.
      if (msg.type === 'calling') this.send({ type: 'hangup', callId: msg.callId });
      if (msg.type === 'error') this.emit('error', msg as GatewayError);
      return;
    }
    if (msg.type === 'calling' || (msg.type === 'ended' && answersRequest)) {
      const call = this.pending.get(msg.ref);
      if (!call) return;
      this.pending.delete(msg.ref);
      call.id = msg.callId;
      this.calls.set(msg.callId, call);
      call.handle(msg);
      return;
    }
    if (msg.type === 'incoming') {
      const call = new Call(this.transport(), { direction: 'inbound', iceServers: this.iceServers, id: msg.callId, offer: msg.sdp, from: msg.from, fromName: msg.fromName });
      this.calls.set(msg.callId, call);
      this.emit('incoming', call);
      return;
    }
    if (msg.type === 'error') {
      this.emit('error', msg as GatewayError);
      // A refused request names its call: the `ref` of a `call` (that call ends), or a callId.
      // (A gateway older than the `ref` in errors leaves a refused call to callSetupTimeoutMs.)
      if (msg.ref !== undefined) {
        const call = this.pending.get(msg.ref);
        if (!call) return;
        this.pending.delete(msg.ref); // answered: not abandoned when it ends now
        call.handle(msg);
      } else if (msg.callId) {
        this.calls.get(msg.callId)?.handle(msg);
      }
      return;
    }
    if (msg.callId) this.calls.get(msg.callId)?.handle(msg);
  }

  /**
   * Calls still up when the connection goes: hung up by our own close(); lost when it dropped
   * without a close frame (1006: the network, a sleeping machine, the gateway's heartbeat);
   * failed when the gateway closed it (its close code in sipReason). A drop during calls, when
   * the gateway keeps them for a while (resumeGraceMs), is first a reconnection (resume).
   */
  private onClose(code: number): void {
    if (code === 1006 && !this.closed && this.opts.resume !== false && this.resumeGraceMs > 0 && this.activeCalls.some((c) => c.state !== 'ended')) {
      this.startReconnecting();
      return;
    }
    const end = this.closed ? { cause: 'local-hangup' as const }
      : code === 1006 ? { cause: 'connection-lost' as const, sipReason: 'connection to the gateway lost' }
        : { cause: 'failed' as const, sipReason: `connection closed by the gateway (${code})` };
    this.endCalls(end);
    if (!this.closed) this.emit('disconnected');
  }

  private endCalls(end: CallEndInfo): void {
    for (const call of this.activeCalls) call.finish(end);
    this.calls.clear();
    this.pending.clear();
    // The gateway ended every call of this connection: there is nothing left to hang up.
    this.abandoned.clear();
  }

  /**
   * The calls stay up here (their audio does not go through this socket) while new connections
   * try to take them over: at once, then with growing waits, until the gateway has stopped
   * keeping them.
   */
  private startReconnecting(): void {
    this.reconnect = {
      deadline: setTimeout(() => this.giveUp(), this.resumeGraceMs),
      attempts: 0,
      hangups: new Set(),
    };
    this.emit('reconnecting');
    this.attempt();
  }

  private attempt(): void {
    const r = this.reconnect;
    if (!r) return;
    r.attempts++;
    const ws = new WebSocket(this.url);
    r.socket = ws;
    // Failed (refused, closed, silent): the next attempt after a wait, never two sockets at once.
    const failed = () => {
      if (r !== this.reconnect || r.socket !== ws) return;
      clearTimeout(r.timer);
      this.discard(ws);
      r.socket = undefined;
      r.timer = setTimeout(() => this.attempt(), RECONNECT_DELAYS_MS[Math.min(r.attempts, RECONNECT_DELAYS_MS.length - 1)]);
    };
    r.timer = setTimeout(failed, RECONNECT_ATTEMPT_TIMEOUT_MS);
    ws.onclose = failed;
    ws.onopen = () => ws.send(JSON.stringify({ type: 'hello', version: 1, token: this.opts.token, resume: { sessionId: this.sessionId, token: this.resumeToken } }));
    ws.onmessage = (ev) => {
      let msg: Record<string, any>;
      try { msg = JSON.parse(String(ev.data)); } catch { return; }
      if (msg.type === 'welcome' && msg.resumed === true) this.resumed(ws, msg);
      // A fresh session (ours is gone: too late, unknown) or a refused hello: the calls are over.
      else if (msg.type === 'welcome' || msg.type === 'error') this.giveUp();
    };
  }

  private resumed(ws: WebSocket, welcome: Record<string, any>): void {
    const hangups = this.reconnect!.hangups;
    this.reconnect!.socket = undefined; // adopted, not discarded
    this.stopReconnecting();
    this.ws = ws;
    ws.onmessage = (e) => this.onMessage(String(e.data));
    ws.onclose = (ev) => this.onClose(ev.code);
    this.noteResume(welcome);
    // What the gateway would have sent meanwhile, in order (a call that ended has its `ended`).
    for (const msg of Array.isArray(welcome.missed) ? welcome.missed : []) this.dispatch(msg);
    const up = new Map<string, string>((Array.isArray(welcome.calls) ? welcome.calls : []).map((c: { callId: string; state: string }) => [c.callId, c.state]));
    // Requests sent into the dropped connection may have been lost: a call the gateway no longer
    // has is over, and so is a call request it never answered (one still getting its microphone
    // has sent nothing yet, and goes on).
    const lost = { cause: 'connection-lost' as const, sipReason: AWAY_REASON };
    for (const [id, call] of [...this.calls]) {
      if (!up.has(id)) call.finish(lost);
      else if (up.get(id) === 'answered' && call.state !== 'answered' && call.state !== 'ended') call.handle({ type: 'answered', callId: id });
    }
    for (const call of [...this.pending.values()]) if (this.requested.has(call)) call.finish(lost);
    for (const id of hangups) if (up.has(id)) this.send({ type: 'hangup', callId: id });
    this.emit('reconnected');
    // The network that dropped the link may have taken the calls' audio paths too.
    for (const call of [...this.calls.values()]) call.afterReconnect();
  }

  /** The gateway no longer keeps the calls (or will not give them back): as a plain drop. */
  private giveUp(): void {
    if (!this.reconnect) return;
    this.stopReconnecting();
    this.endCalls({ cause: 'connection-lost', sipReason: 'connection to the gateway lost' });
    this.emit('disconnected');
  }

  private stopReconnecting(): void {
    const r = this.reconnect;
    if (!r) return;
    this.reconnect = null;
    clearTimeout(r.deadline);
    clearTimeout(r.timer);
    if (r.socket) this.discard(r.socket);
  }

  /** A socket we no longer want: closed, and nothing it still does reaches us. */
  private discard(ws: WebSocket): void {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    ws.close();
  }
}
