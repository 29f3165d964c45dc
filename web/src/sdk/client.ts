import { Call, type CallTransport, type GatewayError } from './call';
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
}

export interface ClientEvents extends Record<string, unknown[]> {
  incoming: [call: Call];
  /** Every `error` from the gateway; those about a call also reach that Call (its `error` event). */
  error: [err: GatewayError];
  disconnected: [];
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
  private refCounter = 0;
  private closed = false;

  private constructor(private readonly ws: WebSocket, private readonly opts: ConnectOptions) {
    super();
  }

  static connect(opts: ConnectOptions = {}): Promise<GatewayClient> {
    const url = opts.url ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
    const ws = new WebSocket(url);
    const client = new GatewayClient(ws, opts);
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
    this.closed = true;
    this.ws.close();
  }

  private send(msg: Record<string, unknown>): boolean {
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** `ref`: an outbound call's, whose request is tracked until the gateway answers it. */
  private transport(ref?: string): CallTransport {
    let requested = false;
    return {
      send: (msg) => {
        // Noted before sending: the call may end while its request is being sent.
        if (msg.type === 'call') requested = this.ws.readyState === WebSocket.OPEN;
        return this.send(msg);
      },
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
   * failed when the gateway closed it (its close code in sipReason).
   */
  private onClose(code: number): void {
    const end = this.closed ? { cause: 'local-hangup' as const }
      : code === 1006 ? { cause: 'connection-lost' as const, sipReason: 'connection to the gateway lost' }
        : { cause: 'failed' as const, sipReason: `connection closed by the gateway (${code})` };
    for (const call of this.activeCalls) call.finish(end);
    this.calls.clear();
    this.pending.clear();
    // The gateway ended every call of this connection: there is nothing left to hang up.
    this.abandoned.clear();
    if (!this.closed) this.emit('disconnected');
  }
}
