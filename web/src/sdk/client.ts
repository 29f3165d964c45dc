import { Call } from './call';
import { Emitter } from './emitter';

export interface ConnectOptions {
  /** ws(s)://host/ws; defaults to the page's own gateway. */
  url?: string;
  token?: string;
  /** Overrides the ICE servers the gateway hands out. */
  iceServers?: RTCIceServer[];
  /** getUserMedia audio constraints (defaults keep the browser's echo cancellation on). */
  audio?: MediaTrackConstraints | boolean;
}

export interface ClientEvents extends Record<string, unknown[]> {
  incoming: [call: Call];
  error: [err: { code: string; message: string; callId?: string; retryAfterMs?: number }];
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
  private readonly pending = new Map<string, Call>();
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
   */
  call(to?: string, opts: { headers?: Record<string, string> } = {}): Call {
    const call = new Call(this.transport(), { direction: 'outbound', iceServers: this.iceServers });
    const ref = `r${++this.refCounter}`;
    this.pending.set(ref, call);
    call.start(to, { headers: opts.headers, ref, audio: this.opts.audio ?? true }).catch((err: Error) => {
      console.warn('call could not start:', err);
      this.pending.delete(ref);
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

  private transport() {
    return {
      send: (msg: Record<string, unknown>) => { if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg)); },
      forget: (call: Call) => {
        if (call.id) this.calls.delete(call.id);
        for (const [ref, c] of this.pending) if (c === call) this.pending.delete(ref);
      },
    };
  }

  private onMessage(text: string): void {
    let msg: Record<string, any>;
    try { msg = JSON.parse(text); } catch { return; }
    if (msg.type === 'calling' || (msg.type === 'ended' && msg.ref && !this.calls.has(msg.callId))) {
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
      this.emit('error', msg as ClientEvents['error'][0]);
      // A call request refused outright (limits, draining): end the oldest pending call.
      if (!msg.callId && ['rate-limited', 'too-many-calls', 'draining', 'bad-sdp', 'forbidden'].includes(msg.code)) {
        const first = this.pending.entries().next().value;
        if (first) { this.pending.delete(first[0]); first[1].finish({ cause: 'failed', sipReason: msg.message }); }
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
    if (!this.closed) this.emit('disconnected');
  }
}
