import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocketServer, type WebSocket } from 'ws';
import type { CallManager, UserDirectory } from '../calls/callManager';
import type { RingTarget } from '../calls/inboundCall';
import { BrowserSession, type Authenticator } from './browserSession';
import { requestUrl } from '../http/httpServer';
import type { IceServer } from './protocol';

export interface SignalingOptions {
  manager: CallManager;
  authenticate: Authenticator;
  iceServers: IceServer[];
  demo: boolean;
  logger: Logger;
  maxMessageBytes: number;
  messagesPerSec: number;
  /** Ping every this long; a tab that has not answered the previous ping is terminated. */
  heartbeatMs?: number;
  /** A connection that has not said hello within this is closed (4408). */
  helloTimeoutMs?: number;
  /** A tab whose connection dropped keeps its calls this long, for a new connection to resume them (0: off). */
  resumeGraceMs?: number;
  /** Origin check for the upgrade: true = allowed. */
  originAllowed(origin: string | undefined): boolean;
  /** Per-IP connect limit: ms to wait, 0 = allowed. */
  connectAttempt(ip: string): number;
  callAttempt(identity: string): number;
  /** Connection counters for /metrics. */
  onConnectionChange?(open: number): void;
  /** For /metrics: a dropped tab's calls kept for it, and what became of that wait (or of a resume asked for). */
  onResumeEvent?(event: 'dropped' | 'resumed' | 'refused' | 'expired'): void;
  /** A user's first tab became ready (true) or their last tab went away (false). */
  onUserPresence?(user: string, online: boolean): void;
}

/**
 * The WebSocket endpoint (`/ws`) on the gateway's HTTP server, and the directory of which
 * browser tabs each user has open (inbound calls ring all of them).
 */
export class SignalingServer implements UserDirectory {
  private readonly wss: WebSocketServer;
  private readonly sessions = new Set<BrowserSession>();
  private readonly byUser = new Map<string, Set<BrowserSession>>();
  private accepting = true;
  /**
   * Draining: a tab whose connection dropped may still come back for its calls (resume); a
   * fresh session is refused (`draining`): it could only place calls we would not take.
   */
  private draining = false;
  /** Clients that answered the last ping (ws's pong); the others are gone at the next beat. */
  private readonly alive = new WeakSet<WebSocket>();
  /** The session of each socket, for lines logged about the socket (they carry its sessionId). */
  private readonly sessionOf = new WeakMap<WebSocket, BrowserSession>();
  private readonly heartbeat: NodeJS.Timeout;

  constructor(server: Server, private readonly opts: SignalingOptions) {
    this.wss = new WebSocketServer({ noServer: true, maxPayload: opts.maxMessageBytes });
    server.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket, head));
    // A tab whose machine went to sleep or lost its network sends no FIN: without this its
    // socket (and its calls: ICE-lite does no consent checks) would stay up until the far end
    // hung up. Browsers answer pings by themselves.
    this.heartbeat = setInterval(() => this.beat(), opts.heartbeatMs ?? 20_000);
    this.heartbeat.unref();
  }

  private beat(): void {
    for (const ws of this.wss.clients) {
      if (!this.alive.has(ws)) {
        (this.sessionOf.get(ws)?.log ?? this.opts.logger).info('websocket did not answer a ping: closing it');
        ws.terminate(); // 'close' follows: the session ends its calls
        continue;
      }
      this.alive.delete(ws);
      try { ws.ping(); } catch { /* closing already */ }
    }
  }

  /** Open WebSockets: sessions waiting for a dropped tab to resume have none. */
  get connectionCount(): number {
    let n = 0;
    for (const s of this.sessions) if (!s.isDetached) n++;
    return n;
  }

  ringTargets(user: string): RingTarget[] {
    return [...(this.byUser.get(user) ?? [])].filter((s) => s.isReady);
  }

  /** Tabs by session id (the demo callback uses it to find whom to call). */
  findSession(sessionId: string): BrowserSession | undefined {
    for (const s of this.sessions) if (s.sessionId === sessionId) return s;
    return undefined;
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    // Node takes its own error listener off a socket it hands to 'upgrade': a peer resetting
    // the connection while we refuse it would otherwise be an uncaught error (process exit).
    socket.on('error', (err) => this.opts.logger.debug({ err: err.message }, 'websocket upgrade socket error'));
    const refuse = (status: number, text: string, headers: Record<string, string> = {}) => {
      const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
      // Closed once the answer is out: nobody reads this socket any more, so one whose peer
      // sent more after its request never saw the FIN and stayed open for good (and over TLS the
      // HTTP server only sees the TCP socket under it).
      socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n${extra}\r\n`, () => socket.destroy());
    };
    const url = requestUrl(req.url);
    if (!url) { refuse(400, 'Bad Request'); return; }
    if (url.pathname !== '/ws') { refuse(404, 'Not Found'); return; }
    if (!this.accepting) { refuse(503, 'Service Unavailable'); return; }
    const origin = req.headers.origin;
    const ip = req.socket.remoteAddress ?? 'unknown';
    if (!this.opts.originAllowed(origin)) {
      this.opts.logger.info({ origin, ip }, 'websocket upgrade refused: origin not allowed');
      refuse(403, 'Forbidden');
      return;
    }
    const wait = this.opts.connectAttempt(ip);
    if (wait > 0) {
      this.opts.logger.info({ ip }, 'websocket upgrade refused: connect rate limit');
      refuse(429, 'Too Many Requests', { 'Retry-After': String(Math.ceil(wait / 1000)) });
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, origin, ip));
  }

  private onConnection(ws: WebSocket, origin: string | undefined, ip: string): void {
    this.alive.add(ws);
    ws.on('pong', () => this.alive.add(ws));
    const session: BrowserSession = new BrowserSession(ws, {
      manager: this.opts.manager,
      authenticate: this.opts.authenticate,
      iceServers: this.opts.iceServers,
      demo: this.opts.demo,
      logger: this.opts.logger,
      origin,
      limits: { messagesPerSec: this.opts.messagesPerSec, callAttempt: (id) => this.opts.callAttempt(id), helloTimeoutMs: this.opts.helloTimeoutMs ?? 10_000 },
      resumeGraceMs: this.opts.resumeGraceMs ?? 0,
      draining: () => this.draining,
      onDetached: () => {
        this.opts.onConnectionChange?.(this.connectionCount);
        this.opts.onResumeEvent?.('dropped');
      },
      onGraceExpired: () => this.opts.onResumeEvent?.('expired'),
      resume: (sessionId, token) => {
        const waiting = this.findSession(sessionId);
        if (!waiting?.resumableWith(token, origin)) {
          // Counted for a session we hold (a wrong token or origin): what became of one of its
          // drops. An unknown id (made up, or from before a restart) tells nothing about them.
          if (waiting) this.opts.onResumeEvent?.('refused');
          return null;
        }
        this.sessionOf.set(ws, waiting);
        // A session still 'ready' here dropped too, unseen (no FIN reached us; the tab gave up on
        // it): its drop is counted now, so that every resume has one.
        if (waiting.isReady) this.opts.onResumeEvent?.('dropped');
        this.opts.onResumeEvent?.('resumed');
        return waiting;
      },
      onReady: (s) => {
        const user = s.identity!.id;
        let set = this.byUser.get(user);
        if (!set) {
          this.byUser.set(user, (set = new Set()));
          this.opts.onUserPresence?.(user, true);
        }
        set.add(s);
      },
      onClosed: (s) => {
        this.sessions.delete(s);
        const user = s.identity?.id;
        if (user) {
          const set = this.byUser.get(user);
          set?.delete(s);
          if (set && set.size === 0) {
            this.byUser.delete(user);
            this.opts.onUserPresence?.(user, false);
          }
        }
        this.opts.onConnectionChange?.(this.connectionCount);
      },
    });
    this.sessions.add(session);
    this.sessionOf.set(ws, session);
    session.log.debug({ ip }, 'websocket connected');
    this.opts.onConnectionChange?.(this.connectionCount);
  }

  /** Drain: no new sessions (a dropped tab may still resume its calls); existing ones stay until their calls end. */
  stopAccepting(): void {
    this.draining = true;
  }

  async close(): Promise<void> {
    this.accepting = false;
    clearInterval(this.heartbeat);
    // Tabs that dropped and may come back cannot any more: their calls end now.
    for (const s of [...this.sessions]) s.endDetached();
    // Wait for each closing handshake (at most 1 s), so the last messages — the `ended` of a
    // call hung up by the shutdown — reach the browser before the process exits.
    await Promise.all([...this.wss.clients].map((client) => new Promise<void>((resolve) => {
      const t = setTimeout(() => { client.terminate(); resolve(); }, 1000);
      client.once('close', () => { clearTimeout(t); resolve(); });
      client.close(1001, 'gateway shutting down');
    })));
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}
