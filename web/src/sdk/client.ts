import { Call, refusedUnknownType, type CallEndInfo, type CallTransport, type GatewayError } from './call';
import { Emitter } from './emitter';

export interface ConnectOptions {
  /** ws(s)://host/ws; defaults to the page's own gateway. */
  url?: string;
  /**
   * The token of every `hello`; a function is asked again for each new connection (tokens are
   * short-lived: a reconnection an hour later needs a fresh one).
   */
  token?: string | (() => string | undefined | Promise<string | undefined>);
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
   * During calls the client pings the gateway every 10 s (and at once when a call's audio path
   * goes); a connection that does not answer within 5 s counts as dropped.
   */
  resume?: boolean;
  /**
   * Stay connected: when the connection is lost with no calls to take over (or they could not
   * be), or the gateway closes it to restart, a new connection and session follow — at once and
   * then with growing, randomized waits (up to 30 s) until one is had or the gateway refuses the
   * token — so that a tab waiting for incoming calls goes on receiving them across network
   * changes and gateway restarts. Idle, the client pings the gateway every 30 s to notice a dead
   * link. Calls placed meanwhile wait for the connection (up to `callSetupTimeoutMs`). true by
   * default; false: `disconnected` at once, calls placed then end `connection-lost`.
   */
  stayConnected?: boolean;
}

export interface ClientEvents extends Record<string, unknown[]> {
  incoming: [call: Call];
  /** Every `error` from the gateway; those about a call also reach that Call (its `error` event). */
  error: [err: GatewayError];
  /**
   * The connection is gone for good (no reconnecting: `stayConnected` off, or the gateway
   * refused the token); calls still up ended `connection-lost`. Not after close().
   */
  disconnected: [];
  /**
   * The connection dropped (or stopped answering), or the gateway closed it to restart: the
   * client reconnects. Calls stay up meanwhile while the gateway keeps them (a drop); otherwise
   * they have ended already.
   */
  reconnecting: [];
  /**
   * Reconnected. `resumed`: the session was taken over — the calls the gateway still had go on;
   * those it no longer had have ended; calls it had that this client does not hold (given up
   * on, or their `calling` lost in the drop) are hung up. Not resumed: a new session
   * (`sessionId` changed); calls of the old one have ended (`connection-lost`).
   */
  reconnected: [info: { resumed: boolean }];
}

/** Waits between reconnect attempts (the last one repeats), and how long a new socket may take to open. */
const RECONNECT_DELAYS_MS = [0, 250, 500, 1000, 2000];
/**
 * The same for a new session (nothing to take over): slower, and each wait randomized (0.5–1.5x;
 * the first one 0–1 s) so that the tabs of a restarted gateway do not all come back at once.
 */
const FRESH_DELAYS_MS = [500, 1000, 2000, 5000, 10_000, 30_000];
/**
 * Close codes after which a new connection may do (docs/protocol.md): a drop, the gateway going
 * away or restarting (1001, 1012), draining or overloaded (1013), an error of its own (1011),
 * a proxy's bad gateway (1014). Not after its refusals (1008 flood, 4401 refused hellos).
 */
const RECONNECT_CLOSE_CODES = new Set([1001, 1006, 1011, 1012, 1013, 1014]);
/** Refusals of a `hello` that another try later may get past; any other (the token) is final. */
const RETRY_HELLO_ERRORS = new Set(['draining', 'rate-limited', 'internal']);
const RECONNECT_OPEN_TIMEOUT_MS = 5000;
/** How long a new session's hello may wait for its welcome before the attempt is given up. */
const WELCOME_TIMEOUT_MS = 10_000;
/** How long a `token` function may take (before the socket opens) for a reconnect attempt. */
const TOKEN_TIMEOUT_MS = 10_000;
/**
 * A session that lasted less than this before it was lost again does not restart the waits
 * between attempts (a gateway or proxy that drops connections right after their welcome).
 */
const STABLE_SESSION_MS = 30_000;
const AWAY_REASON = 'the call ended while the connection to the gateway was away';
/**
 * The close code of a socket given up on while reconnecting (docs/protocol.md): the gateway
 * keeps the calls as on a drop. Any other close frame would make it hang them up.
 */
const CLOSE_RECONNECTING = 4000;
/** During calls the client pings the gateway this often; a `pong` must come within PONG_TIMEOUT_MS. */
const PING_INTERVAL_MS = 10_000;
const PONG_TIMEOUT_MS = 5000;
/** Without calls (stayConnected), a ping once nothing was heard from the gateway this long. */
const IDLE_PING_AFTER_MS = 30_000;

/** A reconnection in progress (see onClose). */
interface Reconnect {
  /**
   * A new session (nothing kept by the gateway to take over), rather than a resume of this one.
   * A resume becomes one when the gateway stops keeping the calls (stayConnected).
   */
  fresh: boolean;
  /** A resume: gives up when the gateway has stopped keeping the calls (its resumeGraceMs after the drop). */
  deadline?: ReturnType<typeof setTimeout>;
  /** The next attempt, or the current attempt's timeout. */
  timer?: ReturnType<typeof setTimeout>;
  /** The current attempt's socket: one at a time. */
  socket?: WebSocket;
  /** Gives the current attempt up (its socket discarded) and schedules the next one. */
  fail?: () => void;
  /** The current attempt's socket sent its hello (from then on the gateway may have taken it). */
  helloSent: boolean;
  attempts: number;
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
  /** Call requests made while reconnecting, by ref: each sends its request once connected. */
  private readonly queued = new Map<string, () => void>();
  private refCounter = 0;
  private closed = false;
  /** From the latest `welcome`: what takes this session's calls over after a drop. */
  private resumeToken = '';
  private resumeGraceMs = 0;
  private reconnect: Reconnect | null = null;
  /** Pings during calls (see ping); runs from the welcome until the connection is gone for good. */
  private heartbeat: ReturnType<typeof setInterval> | null = null;
  /** Runs from a ping until its pong. */
  private pongTimer: ReturnType<typeof setTimeout> | null = null;
  /** When the current connection last brought a message (see tick). */
  private lastHeard = 0;
  /** When the current session was had (welcome or resume), for STABLE_SESSION_MS. */
  private sessionSince = 0;
  /** Sessions lost in a row before they were STABLE_SESSION_MS old. */
  private quickDrops = 0;
  /** The token of the last hello: what a resume sends (a token function is not asked for one). */
  private lastToken: string | undefined;

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
      ws.onopen = () => {
        tokenOf(opts).then((token) => { client.lastToken = token; ws.send(JSON.stringify({ type: 'hello', version: 1, token })); }, (err: Error) => {
          clearTimeout(timer);
          ws.close();
          reject(err);
        });
      };
      ws.onmessage = (ev) => {
        const msg = JSON.parse(String(ev.data));
        if (msg.type === 'welcome') {
          clearTimeout(timer);
          client.takeSession(ws, msg);
          client.heartbeat = setInterval(() => client.tick(), PING_INTERVAL_MS);
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
    // While reconnecting, the request waits for the new connection (see transport).
    if (this.ws.readyState !== WebSocket.OPEN && !this.reconnect) {
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
    this.stopHeartbeat();
    if (this.reconnect) {
      // The dropped socket's close is past: nothing else will end the calls. An attempt's socket
      // the gateway may have adopted gets a normal close: the calls are hung up there too.
      this.stopReconnecting(1000);
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

  /** A new session's welcome came on `ws`: it becomes the client's connection. */
  private takeSession(ws: WebSocket, welcome: Record<string, any>): void {
    this.ws = ws;
    ws.onmessage = (e) => this.onMessage(String(e.data));
    ws.onclose = (ev) => this.onClose(ev.code);
    this.sessionId = welcome.sessionId;
    this.identity = welcome.identity;
    this.demo = welcome.demo;
    this.iceServers = this.opts.iceServers ?? welcome.iceServers ?? [];
    this.noteResume(welcome);
    this.lastHeard = this.sessionSince = Date.now();
  }

  /** Every `welcome` carries a new resume token (each works once). */
  private noteResume(welcome: Record<string, any>): void {
    this.resumeToken = typeof welcome.resumeToken === 'string' ? welcome.resumeToken : '';
    this.resumeGraceMs = typeof welcome.resumeGraceMs === 'number' ? welcome.resumeGraceMs : 0;
  }

  /** `ref`: an outbound call's, whose request is tracked until the gateway answers it. */
  private transport(ref?: string): CallTransport {
    let requested = false;
    const send = (msg: Record<string, unknown>): boolean => {
      if (msg.type === 'call' && ref !== undefined && this.reconnect && this.pending.get(ref)) {
        // The link is coming back: the request goes once it has (the call's setup time runs).
        this.queued.set(ref, () => send(msg));
        return true;
      }
      // Noted before sending: the call may end while its request is being sent.
      if (msg.type === 'call') requested = this.ws.readyState === WebSocket.OPEN;
      const sent = this.send(msg);
      const call = ref === undefined ? undefined : this.pending.get(ref);
      if (sent && msg.type === 'call' && call) this.requested.add(call);
      // (A hangup that could not be sent while away is sent once back: see hangUpOrphans.)
      return sent;
    };
    return {
      send,
      online: () => this.ws.readyState === WebSocket.OPEN && !this.reconnect,
      checkLink: () => this.ping(),
      forget: (call) => {
        if (call.id) this.calls.delete(call.id);
        if (ref === undefined || this.pending.get(ref) !== call) return;
        this.queued.delete(ref);
        // Still waiting for the gateway's answer: if its request went out, the call may be dialing.
        this.pending.delete(ref);
        if (requested) this.abandoned.add(ref);
      },
    };
  }

  private onMessage(text: string): void {
    this.lastHeard = Date.now();
    let msg: Record<string, any>;
    try { msg = JSON.parse(text); } catch { return; }
    if (msg.type === 'pong') this.clearPongTimer();
    else this.dispatch(msg);
  }

  private dispatch(msg: Record<string, any>): void {
    // A refused `restart` or `transfer` names its ref too: it goes to its call by callId, below.
    const callRef = msg.type === 'error' && (msg.request === 'restart' || msg.request === 'transfer') ? undefined : msg.ref;
    // The answer to a `call` request (by its ref): `calling`, `ended` (refused before dialing) or `error`.
    const answersRequest = msg.type === 'calling' || (msg.type === 'ended' && msg.ref !== undefined && !this.calls.has(msg.callId)) || (msg.type === 'error' && callRef !== undefined);
    if (answersRequest && this.abandoned.delete(msg.ref)) {
      // Given up here before the gateway answered: a call it is dialing all the same is hung up now.
      if (msg.type === 'calling') this.send({ type: 'hangup', callId: msg.callId });
      if (msg.type === 'error') this.emit('error', msg as GatewayError);
      return;
    }
    if (msg.type === 'calling' || (msg.type === 'ended' && answersRequest)) {
      const call = this.pending.get(msg.ref);
      if (!call) {
        // A call no request here waits for: nobody would ever end it.
        if (msg.type === 'calling') this.send({ type: 'hangup', callId: msg.callId });
        return;
      }
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
      if (callRef !== undefined) {
        const call = this.pending.get(msg.ref);
        if (!call) return;
        this.pending.delete(msg.ref); // answered: not abandoned when it ends now
        call.handle(msg);
      } else if (msg.callId) {
        this.calls.get(msg.callId)?.handle(msg);
      } else if (msg.code === 'unknown-type' && msg.request === undefined) {
        this.routeUnknownType(msg);
      }
      return;
    }
    if (msg.callId) this.calls.get(msg.callId)?.handle(msg);
  }

  /**
   * A gateway older than `restart` or `transfer` answers it with `unknown-type`, naming neither
   * the request nor the call, only the type in its message: it goes to a call whose request of
   * that type is out — the refusal, which fails it at once rather than at its timeout. (With
   * several waiting, any: they are all refused alike.) A message naming no type goes to a
   * restart first, then a transfer.
   */
  private routeUnknownType(err: Record<string, any>): void {
    const calls = [...this.calls.values()];
    // The message names the type refused: a gateway that knows `restart` but not `transfer`
    // must not fail a restart out at the same time.
    const type = refusedUnknownType(err);
    const call = type === 'transfer' ? calls.find((c) => c.awaitsTransferOutcome)
      : type === 'restart' ? calls.find((c) => c.awaitsRestartAnswer)
      : calls.find((c) => c.awaitsRestartAnswer) ?? calls.find((c) => c.awaitsTransferOutcome);
    call?.handle(err);
  }

  /**
   * Calls still up when the connection goes: hung up by our own close(); lost when it dropped
   * without a close frame (1006: the network, a sleeping machine, the gateway's heartbeat);
   * failed when the gateway closed it (its close code in sipReason). A drop during calls, when
   * the gateway keeps them for a while (resumeGraceMs), is first a reconnection (resume).
   */
  private onClose(code: number): void {
    this.clearPongTimer();
    if (code === 1006 && this.mayResume()) {
      this.startReconnecting(false);
      return;
    }
    const end = this.closed ? { cause: 'local-hangup' as const }
      : code === 1006 ? { cause: 'connection-lost' as const, sipReason: 'connection to the gateway lost' }
        : { cause: 'failed' as const, sipReason: `connection closed by the gateway (${code})` };
    if (this.mayReconnect(code)) {
      this.startReconnecting(true, end);
      return;
    }
    this.stopHeartbeat();
    this.endCalls(end);
    if (!this.closed) this.emit('disconnected');
  }

  /** Whether a connection closed with `code` is followed by a new one (stayConnected). */
  private mayReconnect(code: number): boolean {
    return !this.closed && this.opts.stayConnected !== false && RECONNECT_CLOSE_CODES.has(code);
  }

  /**
   * Whether the gateway keeps something for this session after a drop that a resume should take
   * over: calls, or a call request given up on here whose call it may be dialing (hung up once
   * back, or it would ring, or talk to nobody, until it times out).
   */
  private mayResume(): boolean {
    if (this.closed || this.opts.resume === false || this.resumeGraceMs <= 0) return false;
    return this.hasCalls() || this.abandoned.size > 0;
  }

  private hasCalls(): boolean {
    return this.activeCalls.some((c) => c.state !== 'ended');
  }

  /**
   * Every PING_INTERVAL_MS: a ping during calls; without calls only to stay connected, once
   * nothing was heard for IDLE_PING_AFTER_MS (an idle tab waiting for incoming calls must notice
   * a dead link: the gateway's own heartbeat cuts its end, but the tab's socket can look open
   * for minutes).
   */
  private tick(): void {
    if (this.hasCalls() || (this.opts.stayConnected !== false && Date.now() - this.lastHeard >= IDLE_PING_AFTER_MS)) this.ping();
  }

  /**
   * From the heartbeat (tick) and when a call's audio path goes (Call's checkLink): a socket
   * whose network went away can look open for minutes, and what is sent into it is lost —
   * hangups, media restarts. No `pong` within PONG_TIMEOUT_MS: it is taken for dropped. Not
   * while reconnecting, nor with a ping already waiting for its pong.
   */
  private ping(): void {
    if (this.closed || this.reconnect || this.pongTimer) return;
    const ws = this.ws;
    if (!this.send({ type: 'ping' })) return;
    this.pongTimer = setTimeout(() => {
      this.pongTimer = null;
      if (this.ws === ws && !this.reconnect && !this.closed) this.silent(ws);
    }, PONG_TIMEOUT_MS);
  }

  /**
   * The socket did not answer a ping: as dropped (1006), and so reconnecting when the calls may
   * be resumed. It is closed with CLOSE_RECONNECTING: a plain close frame would hang them up.
   */
  private silent(ws: WebSocket): void {
    this.discard(ws, CLOSE_RECONNECTING);
    this.onClose(1006);
  }

  private clearPongTimer(): void {
    if (this.pongTimer) clearTimeout(this.pongTimer);
    this.pongTimer = null;
  }

  private stopHeartbeat(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    this.clearPongTimer();
  }

  private endCalls(end: CallEndInfo): void {
    for (const call of this.activeCalls) call.finish(end);
    this.calls.clear();
    this.pending.clear();
    this.queued.clear();
    // The gateway ended every call of this connection: there is nothing left to hang up.
    this.abandoned.clear();
  }

  /**
   * The session is gone (a new one follows): its calls end. Calls whose request has not gone out
   * (getting the microphone, or waiting for the connection) go on, into the next session.
   */
  private endSessionCalls(end: CallEndInfo): void {
    const sent = [...this.pending].filter(([, call]) => this.requested.has(call));
    for (const call of [...this.calls.values(), ...sent.map(([, call]) => call)]) call.finish(end);
    this.calls.clear();
    for (const [ref] of sent) this.pending.delete(ref);
    this.abandoned.clear();
  }

  /**
   * New connections, one at a time. A resume (`fresh` false): the calls stay up here (their audio
   * does not go through this socket) while new connections try to take them over — at once,
   * then with growing waits, until the gateway has stopped keeping them. A new session: after a
   * randomized wait, then growing ones, until one is had or the token is refused; `endSession`:
   * the calls of the lost one end first.
   */
  private startReconnecting(fresh: boolean, endSession?: CallEndInfo): void {
    // A session lost again soon after it was had: the waits go on growing from where they were,
    // or every tab of a gateway that drops connections at once would reconnect in a tight loop.
    const quick = Date.now() - this.sessionSince < STABLE_SESSION_MS;
    this.quickDrops = quick ? this.quickDrops + 1 : 0;
    const r: Reconnect = { fresh, attempts: this.quickDrops, helloSent: false };
    if (!fresh) r.deadline = setTimeout(() => this.resumeExpired(), this.resumeGraceMs);
    // Set before the calls end: their listeners may place a call (it waits for the connection)
    // or close() the client (which stops this reconnection).
    this.reconnect = r;
    if (endSession) this.endSessionCalls(endSession);
    if (this.reconnect !== r) return;
    this.emit('reconnecting');
    if (this.reconnect !== r) return;
    const first = this.quickDrops > 0 ? this.nextWait(r) : fresh ? Math.random() * FRESH_DELAYS_MS[0] * 2 : 0;
    if (first > 0) r.timer = setTimeout(() => this.attempt(), first);
    else this.attempt();
  }

  /**
   * The gateway no longer keeps the calls (its grace time is over): they have ended there.
   * Staying connected, the reconnection goes on for a new session.
   */
  private resumeExpired(): void {
    const r = this.reconnect;
    if (!r || r.fresh) return;
    if (this.opts.stayConnected === false) {
      this.giveUp();
      return;
    }
    r.fresh = true;
    r.attempts = 0;
    clearTimeout(r.deadline);
    r.deadline = undefined;
    this.endSessionCalls({ cause: 'connection-lost', sipReason: 'connection to the gateway lost' });
    if (this.reconnect !== r) return; // closed by a listener
    // An attempt waiting for its welcome had no deadline but this one: it gets its own now.
    if (r.socket && r.helloSent) {
      clearTimeout(r.timer);
      r.timer = setTimeout(() => r.fail?.(), WELCOME_TIMEOUT_MS);
    }
  }

  /**
   * One attempt. A new session needs a token the gateway takes: a token function is asked first
   * (within TOKEN_TIMEOUT_MS, before the socket opens). A resume sends the last token: the
   * gateway reads it only if the session is gone, and the calls must not wait for a token
   * endpoint to come back.
   */
  private attempt(): void {
    const r = this.reconnect;
    if (!r || this.closed) return;
    r.attempts++;
    if (!r.fresh || typeof this.opts.token !== 'function') {
      this.open(r, this.lastToken, false);
      return;
    }
    let settled = false;
    const noToken = () => {
      if (settled || this.reconnect !== r) return;
      settled = true;
      clearTimeout(r.timer);
      r.timer = setTimeout(() => this.attempt(), this.nextWait(r));
    };
    r.timer = setTimeout(noToken, TOKEN_TIMEOUT_MS);
    tokenOf(this.opts).then((token) => {
      if (settled || this.reconnect !== r) return;
      settled = true;
      clearTimeout(r.timer);
      this.lastToken = token;
      this.open(r, token, true);
    }, noToken);
  }

  /** `askedNow`: `token` came from the token function for this attempt. */
  private open(r: Reconnect, token: string | undefined, askedNow: boolean): void {
    const ws = new WebSocket(this.url);
    r.socket = ws;
    r.helloSent = false;
    // Failed (refused, closed, not open in time): the next attempt after a wait, never two
    // sockets at once.
    const failed = () => {
      if (r !== this.reconnect || r.socket !== ws) return;
      clearTimeout(r.timer);
      this.discard(ws, CLOSE_RECONNECTING);
      r.socket = undefined;
      r.fail = undefined;
      r.timer = setTimeout(() => this.attempt(), this.nextWait(r));
    };
    r.fail = failed;
    r.timer = setTimeout(failed, RECONNECT_OPEN_TIMEOUT_MS);
    ws.onclose = failed;
    ws.onopen = () => {
      if (r !== this.reconnect || r.socket !== ws) return;
      // From its hello on, the gateway may take this socket over (the calls, and the resume
      // token we hold, go to it) before its welcome reaches us over a slow link: only this
      // socket can bring the calls back then. So a resume's socket is not given up on: its
      // welcome is awaited until the deadline (or it closes). A new session's is, after a while.
      clearTimeout(r.timer);
      r.helloSent = true;
      if (r.fresh) r.timer = setTimeout(failed, WELCOME_TIMEOUT_MS);
      const resume = r.fresh ? undefined : { sessionId: this.sessionId, token: this.resumeToken };
      ws.send(JSON.stringify({ type: 'hello', version: 1, token, resume }));
    };
    ws.onmessage = (ev) => {
      let msg: Record<string, any>;
      try { msg = JSON.parse(String(ev.data)); } catch { return; }
      if (msg.type === 'welcome' && msg.resumed === true) this.resumed(ws, msg);
      // A fresh session: ours is gone (too late, unknown: the gateway restarted), or none was asked for.
      else if (msg.type === 'welcome') this.freshSession(ws, msg);
      else if (msg.type === 'error') this.helloRefused(msg, failed, askedNow);
    };
  }

  /** The wait before the next attempt: randomized for a new session (see FRESH_DELAYS_MS). */
  private nextWait(r: Reconnect): number {
    if (!r.fresh) return RECONNECT_DELAYS_MS[Math.min(r.attempts, RECONNECT_DELAYS_MS.length - 1)];
    return FRESH_DELAYS_MS[Math.min(Math.max(r.attempts - 1, 0), FRESH_DELAYS_MS.length - 1)] * (0.5 + Math.random());
  }

  /**
   * A reconnection's hello was refused. A resume refused means our session is gone (the gateway
   * answers the resume before anything else), so its calls with it. Staying connected, a refusal
   * that may pass later (draining, …) is tried again, and so is a refused token that the token
   * function was not asked for (the last one, expired since); any other is final.
   */
  private helloRefused(err: Record<string, any>, retry: () => void, askedNow: boolean): void {
    const mayPass = RETRY_HELLO_ERRORS.has(err.code) || (typeof this.opts.token === 'function' && !askedNow);
    if (this.opts.stayConnected === false || !mayPass) {
      this.giveUp();
      return;
    }
    this.resumeExpired();
    retry();
  }

  /** A new session's welcome came while reconnecting: the client goes on in it. */
  private freshSession(ws: WebSocket, welcome: Record<string, any>): void {
    if (this.opts.stayConnected === false) {
      this.giveUp();
      return;
    }
    this.reconnect!.socket = undefined; // taken, not discarded
    this.stopReconnecting();
    // Taken before the old session's calls end: their listeners may place a call, or close().
    this.takeSession(ws, welcome);
    this.endSessionCalls({ cause: 'connection-lost', sipReason: AWAY_REASON });
    if (this.closed) return;
    this.sendQueued();
    this.emit('reconnected', { resumed: false });
  }

  /** Call requests made while reconnecting go now, in order. */
  private sendQueued(): void {
    const queued = [...this.queued.values()];
    this.queued.clear();
    for (const send of queued) send();
  }

  private resumed(ws: WebSocket, welcome: Record<string, any>): void {
    this.reconnect!.socket = undefined; // adopted, not discarded
    this.stopReconnecting();
    this.ws = ws;
    ws.onmessage = (e) => this.onMessage(String(e.data));
    ws.onclose = (ev) => this.onClose(ev.code);
    this.noteResume(welcome);
    this.lastHeard = this.sessionSince = Date.now();
    // What the gateway would have sent meanwhile, in order (a call that ended has its `ended`).
    const missed: Array<Record<string, any>> = Array.isArray(welcome.missed) ? welcome.missed : [];
    for (const msg of missed) this.dispatch(msg);
    const up = new Map<string, string>((Array.isArray(welcome.calls) ? welcome.calls : []).map((c: { callId: string; state: string }) => [c.callId, c.state]));
    // Messages sent into the dropped connection may have been lost both ways: a call the gateway
    // no longer has is over, one it lists further on than here gets there (`answered`,
    // `ringing`), and a call request it never answered is over (one still getting its
    // microphone has sent nothing yet, and goes on).
    const lost = { cause: 'connection-lost' as const, sipReason: AWAY_REASON };
    for (const [id, call] of [...this.calls]) {
      const state = up.get(id);
      if (state === undefined) call.finish(lost);
      else call.catchUp(state);
    }
    for (const call of [...this.pending.values()]) if (this.requested.has(call)) call.finish(lost);
    if (this.closed) return; // by a listener of those calls
    this.hangUpOrphans(up, missed);
    this.sendQueued();
    this.emit('reconnected', { resumed: true });
    // The network that dropped the link may have taken the calls' audio paths too.
    for (const call of [...this.calls.values()]) call.afterReconnect();
  }

  /**
   * Calls the gateway still has for this session that no Call here holds: hung up while away,
   * given up on before their `calling` came, or whose `calling` went into the dead connection
   * (their id never reached us). Each is hung up now; it would ring, or talk to nobody, until it
   * timed out. (A `calling` that came in `missed` was dealt with there.)
   */
  private hangUpOrphans(up: Map<string, string>, missed: Array<Record<string, any>>): void {
    const dealtWith = new Set(missed.filter((m) => m.type === 'calling').map((m) => m.callId));
    for (const id of up.keys()) {
      if (!this.calls.has(id) && !dealtWith.has(id)) this.send({ type: 'hangup', callId: id });
    }
  }

  /** No more reconnecting (not staying connected, or the token refused): as a plain drop. */
  private giveUp(): void {
    if (!this.reconnect) return;
    this.stopReconnecting();
    this.stopHeartbeat();
    this.endCalls({ cause: 'connection-lost', sipReason: 'connection to the gateway lost' });
    if (!this.closed) this.emit('disconnected');
  }

  /** `closeCode` for the current attempt's socket, if any (see discard). */
  private stopReconnecting(closeCode = CLOSE_RECONNECTING): void {
    const r = this.reconnect;
    if (!r) return;
    this.reconnect = null;
    clearTimeout(r.deadline);
    clearTimeout(r.timer);
    if (r.socket) this.discard(r.socket, closeCode);
  }

  /**
   * A socket we no longer want: closed, and nothing it still does reaches us. With
   * CLOSE_RECONNECTING, a socket the gateway may have made this session's (a resume attempt, one
   * that went silent) leaves the calls kept there, as a drop would.
   */
  private discard(ws: WebSocket, code: number): void {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    ws.close(code, code === CLOSE_RECONNECTING ? 'reconnecting' : undefined);
  }
}

/** The token for a `hello`: the option's, or what its function gives now. */
async function tokenOf(opts: ConnectOptions): Promise<string | undefined> {
  return typeof opts.token === 'function' ? opts.token() : opts.token;
}
