import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import { traceSip } from './trace';
import { parseSipMessage, SipRequest, type SipParseError, type SipSource } from './message';
import { StreamFramer, type FramingError } from './streamFramer';
import type { InboundHandler, SipTransport, SipTransportConfig } from './transport';

/** Bounds on the connections peers open to a TCP or TLS transport. */
export interface StreamLimits {
  /**
   * Inbound connections open at once on this transport, TLS ones counted from accept (before
   * their handshake). Each holds a file descriptor: without a cap, idle connections from
   * anyone could use up the process's and leave none for RTP sockets or our own connects.
   */
  maxConnections: number;
  /** Inbound connections open at once from one source address. */
  maxConnectionsPerIp: number;
  /**
   * An inbound connection whose first complete SIP message (after the TLS handshake, which
   * this also bounds) has not arrived this long after accept is closed. Counted from accept,
   * not from the last byte: a peer trickling bytes gains nothing. After the first message
   * the idle timeout applies.
   */
  firstMessageTimeoutMs: number;
}

export const DEFAULT_STREAM_LIMITS: StreamLimits = { maxConnections: 1000, maxConnectionsPerIp: 50, firstMessageTimeoutMs: 10_000 };

/** A connection with no traffic either way for this long is closed. */
const IDLE_MS = 5 * 60_000;
/**
 * After a message we could not read, the connection is ended (FIN after our 400) and the
 * peer given this long to read the 400 and close its side before we destroy the socket.
 */
const LINGER_MS = 2_000;
/** Refused connections are logged at most this often (a flood would flood the log). */
const REFUSAL_LOG_MS = 10_000;
/**
 * TCP keepalive on every connection, first probe after this long without traffic. A peer
 * behind a NAT, or one that vanished without a FIN or RST (power loss, a dropped NAT binding,
 * a cable), is otherwise only found out when a write finally fails, ~15 minutes after it: the
 * probes keep the NAT binding alive and let the kernel notice a dead peer and close the
 * connection (the calls on it then fail at once instead of waiting out their timers).
 */
const TCP_KEEPALIVE_MS = 30_000;

interface Conn {
  /** The socket SIP is read from and written to (TLS: the TLSSocket over `raw`). */
  readonly sock: net.Socket;
  /** The TCP socket: what holds the file descriptor. */
  readonly raw: net.Socket;
  /** Remote address:port: connections are reused by it both ways (RFC 3261 §18.1.1, §18.2.2). */
  readonly key: string;
  readonly host: string;
  readonly port: number;
  readonly framer: StreamFramer;
  /** Chunks received so far: `silenceCheck` compares it. */
  received: number;
  /** The chunk being read held a keepalive ping: answered (`pong`) once it has been read. */
  pinged: boolean;
  firstMessageTimer: NodeJS.Timeout | null;
  lingerTimer: NodeJS.Timeout | null;
}

/**
 * TCP or TLS: framed by Content-Length (streamFramer.ts); one connection per remote
 * address:port, reused both ways (a TLS peer's certificate is checked against the name its
 * address was looked up from). Every connection, accepted or opened, is tracked from its
 * first moment so that close() ends all of them.
 */
export class StreamTransport implements SipTransport {
  readonly reliable = true;
  local = { host: '', port: 0 };
  advertised = { host: '', port: 0 };
  private server: net.Server | null = null;
  private secureContext: tls.SecureContext | null = null;
  private closed = false;
  private readonly limits: StreamLimits;
  /** Connections by remote address:port, for reuse. One being closed is no longer here. */
  private readonly connections = new Map<string, Conn>();
  /** Every open connection, including ones being closed. */
  private readonly all = new Set<Conn>();
  private inbound = 0;
  private readonly inboundPerIp = new Map<string, number>();
  private refusedSinceLog = 0;
  private lastRefusalLog = 0;
  /** TLS peers' names by the address:port they were looked up to (knowAs). */
  private readonly names = new Map<string, string>();

  /** The TLS context of connections we open, when `tls.ca` is set (see clientContext). */
  private tlsClientContext: tls.SecureContext | undefined;

  constructor(readonly protocol: 'tcp' | 'tls', private readonly cfg: SipTransportConfig, private readonly onMessage: InboundHandler, private readonly log: Logger) {
    this.limits = { ...DEFAULT_STREAM_LIMITS, ...cfg.limits };
  }

  async start(): Promise<void> {
    if (this.protocol === 'tls') this.secureContext = tls.createSecureContext({ cert: this.cfg.tls?.cert, key: this.cfg.tls?.key });
    // A plain TCP server for TLS too: tls.Server would only hand us the connection after its
    // handshake (up to 120 s by default), so it could neither be counted, timed out nor
    // closed by us before that. We wrap each accepted socket ourselves.
    const server = net.createServer((raw) => this.accept(raw));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(new Error(`cannot bind SIP ${this.protocol.toUpperCase()} ${this.cfg.host}:${this.cfg.port}: ${err.code ?? err.message}`)));
      server.listen(this.cfg.port, this.cfg.host, () => resolve());
    });
    server.removeAllListeners('error');
    server.on('error', (err) => this.log.warn({ err: err.message }, `SIP ${this.protocol} server error`));
    this.server = server;
    const a = server.address() as net.AddressInfo;
    this.local = { host: a.address, port: a.port };
    this.advertised = { host: this.cfg.advertisedHost ?? a.address, port: this.cfg.advertisedPort ?? a.port };
  }

  knowAs(host: string, port: number, name: string): void {
    if (this.protocol === 'tls') this.names.set(`${host}:${port}`, name);
  }

  hasConnection(host: string, port: number): boolean {
    return this.connections.has(`${host}:${port}`);
  }

  send(data: string, host: string, port: number, onError?: (err: Error) => void): void {
    if (this.closed) {
      if (onError) queueMicrotask(() => onError(new Error(`SIP ${this.protocol} transport closed`)));
      return;
    }
    traceSip(this.log, 'out', this.protocol, host, port, data);
    // Keyed by address: a request the peer sends on a connection we opened is answered on it.
    const key = `${host}:${port}`;
    let sock = this.connections.get(key)?.sock;
    if (!sock) {
      // The certificate is checked against the name the address was looked up from (and that
      // name sent as SNI); an address given as such is checked against itself.
      const servername = this.names.get(key) ?? (net.isIP(host) ? undefined : host);
      try {
        sock = this.protocol === 'tls'
          ? tls.connect({ host, port, secureContext: this.clientContext(), rejectUnauthorized: this.cfg.tls?.rejectUnauthorized ?? true, servername })
          : net.connect({ host, port });
      } catch (err) {
        // A bad port or address throws at once: reported like a failed connection, never thrown.
        this.log.debug({ err: (err as Error).message, host, port }, `SIP ${this.protocol} connect refused`);
        if (onError) queueMicrotask(() => onError(err as Error));
        return;
      }
      this.track(sock, sock, host, port);
    }
    if (onError) {
      // Report a failure of this write (or of the connection before it completes) once.
      const s = sock;
      let settled = false;
      const fail = (err: Error) => { if (!settled) { settled = true; onError(err); } };
      s.once('error', fail);
      s.write(data, (err) => { settled = true; s.off('error', fail); if (err) onError(err); });
    } else {
      sock.write(data);
    }
  }

  /**
   * Called just after a request went to host:port (the UA does, for its client transactions).
   * The function returned is called if that transaction times out (Timer B/F): it closes the
   * connection the request went on when nothing at all has arrived on it since, so the next
   * request opens a new connection instead of writing into one whose peer or path is gone
   * (lost NAT state, a peer that stopped reading) until the kernel gives up, ~15 minutes.
   *
   * Only that one connection, and only if silent. This holds for a connection the peer opened
   * to us too (RFC 5626 flows, a trunk connecting in): one that carried our request and has
   * brought nothing back for a whole transaction timeout is no longer a usable flow, and
   * keeping it only makes every later request wait for its own timeout; the peer opens a new
   * one when it next needs to. A peer that still sends anything on it (other responses,
   * requests, CRLF keepalives) keeps it: the one unanswered request says nothing about the
   * connection, and closing it would cut the calls it carries.
   */
  silenceCheck(host: string, port: number): (() => void) | undefined {
    const conn = this.connections.get(`${host}:${port}`);
    if (!conn) return undefined;
    const heard = conn.received;
    return () => {
      if (conn.received !== heard || !this.all.has(conn)) return;
      this.log.info({ remote: conn.key }, `SIP ${this.protocol}: no answer and nothing received on the connection: closing it`);
      this.destroy(conn);
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    // Every connection, including TLS ones still in their handshake and ones lingering after
    // a 400: the server's close waits for all of them.
    for (const conn of [...this.all]) this.destroy(conn);
    const srv = this.server;
    this.server = null;
    if (srv) await new Promise<void>((r) => srv.close(() => r()));
  }

  /** An inbound TCP connection: counted against the limits, then read as SIP. */
  private accept(raw: net.Socket): void {
    const ip = raw.remoteAddress;
    if (this.closed || !ip) { raw.destroy(); return; }
    const fromIp = this.inboundPerIp.get(ip) ?? 0;
    if (this.inbound >= this.limits.maxConnections || fromIp >= this.limits.maxConnectionsPerIp) {
      this.noteRefused(ip, this.inbound >= this.limits.maxConnections ? 'maxConnections' : 'maxConnectionsPerIp');
      raw.destroy();
      return;
    }
    this.inbound++;
    this.inboundPerIp.set(ip, fromIp + 1);
    raw.once('close', () => {
      this.inbound--;
      const n = (this.inboundPerIp.get(ip) ?? 1) - 1;
      if (n > 0) this.inboundPerIp.set(ip, n);
      else this.inboundPerIp.delete(ip);
    });
    const sock = this.protocol === 'tls' ? new tls.TLSSocket(raw, { isServer: true, secureContext: this.secureContext! }) : raw;
    if (sock !== raw) raw.on('error', (err) => this.log.debug({ err: err.message, ip }, 'SIP tls socket error'));
    const conn = this.track(sock, raw, ip, raw.remotePort ?? 0);
    conn.firstMessageTimer = setTimeout(() => {
      this.log.info({ remote: conn.key }, `SIP ${this.protocol}: no complete message within ${this.limits.firstMessageTimeoutMs} ms of connecting: closing`);
      this.destroy(conn);
    }, this.limits.firstMessageTimeoutMs);
    conn.firstMessageTimer.unref();
  }

  private noteRefused(ip: string, limit: string): void {
    this.refusedSinceLog++;
    const now = Date.now();
    if (now - this.lastRefusalLog < REFUSAL_LOG_MS) return;
    this.log.warn({ ip, limit, refused: this.refusedSinceLog, open: this.inbound }, `SIP ${this.protocol}: connection limit reached, refusing connections`);
    this.lastRefusalLog = now;
    this.refusedSinceLog = 0;
  }

  private track(sock: net.Socket, raw: net.Socket, host: string, port: number): Conn {
    const conn: Conn = {
      sock, raw, key: `${host}:${port}`, host, port, received: 0, pinged: false, firstMessageTimer: null, lingerTimer: null,
      framer: new StreamFramer({
        message: (m, cl) => this.onFrame(conn, m, cl),
        error: (e) => this.onFramingError(conn, e),
        ping: () => { conn.pinged = true; },
      }),
    };
    this.all.add(conn);
    this.connections.set(conn.key, conn);
    sock.setTimeout(IDLE_MS, () => this.destroy(conn));
    // On the TCP socket (for a TLS one we opened, the TLSSocket passes it on to its TCP handle);
    // before the connection is up, Node applies it once connected.
    raw.setKeepAlive(true, TCP_KEEPALIVE_MS);
    sock.on('data', (chunk: Buffer) => {
      conn.received++;
      conn.framer.push(chunk);
      if (conn.pinged) this.pong(conn);
    });
    sock.on('error', (err) => this.log.debug({ err: err.message, remote: conn.key }, 'SIP stream error'));
    sock.on('close', () => this.forget(conn));
    return conn;
  }

  /**
   * Answers the keepalive pings of one received chunk with a single CRLF (RFC 5626 §4.4.1). A
   * peer doing keepalives waits for each pong before its next ping, so it has one outstanding:
   * more CRLFs would answer nothing more, and two together would read as a ping to the peer. So a
   * flood of pings gets at most one 2-byte write per chunk (never more than it sent), and none
   * on a connection being closed (ended after a 400, or destroyed) or to a peer that is not
   * reading what we already wrote (they would only pile up in our memory).
   */
  private pong(conn: Conn): void {
    conn.pinged = false;
    if (!conn.sock.writable || conn.sock.writableNeedDrain) return;
    conn.sock.write('\r\n');
  }

  private source(conn: Conn): SipSource {
    return { protocol: this.protocol, host: conn.host, port: conn.port };
  }

  private onFrame(conn: Conn, raw: Buffer, contentLength: number): void {
    if (conn.firstMessageTimer) { clearTimeout(conn.firstMessageTimer); conn.firstMessageTimer = null; }
    traceSip(this.log, 'in', this.protocol, conn.host, conn.port, raw);
    let msg = parseSipMessage(raw);
    // The framer reads Content-Length as the parser does, so the two cannot disagree; were
    // they ever to drift apart, closing beats reading on out of step.
    if (!('error' in msg) && Number(msg.header('content-length')) !== contentLength) {
      msg = { error: 'Content-Length could not be read consistently', ...(msg instanceof SipRequest ? { partial: msg } : {}) };
    }
    this.onMessage(msg, this.source(conn), raw);
    // A message that does not parse may be the remains of one whose Content-Length was shorter
    // than its body, glued to the start of the next: nothing after it can be trusted to start
    // on a message boundary. The 400 (sent by the handler just now, if the request could be
    // routed) goes out first.
    if ('error' in msg) this.closeAfterReply(conn, msg.error);
  }

  private onFramingError(conn: Conn, e: FramingError): void {
    if (e.kind === 'header-too-large') {
      this.log.warn({ remote: conn.key }, `SIP ${this.protocol}: no end of headers within the limit: closing`);
      this.destroy(conn);
      return;
    }
    traceSip(this.log, 'in', this.protocol, conn.host, conn.port, e.head);
    // The headers were readable: the request they start is answered (400, or 513) if its Via
    // allows, as the parser's errors are; the body is never read.
    const head = parseSipMessage(e.head);
    const partial = 'error' in head ? head.partial : head instanceof SipRequest ? head : undefined;
    const err: SipParseError = { error: e.error };
    if (partial) err.partial = partial;
    if (e.status !== undefined) err.status = e.status;
    this.onMessage(err, this.source(conn), e.head);
    this.closeAfterReply(conn, e.error);
  }

  /**
   * Ends the connection after what was just written to it (a 400): FIN, then destroy once the
   * peer closes its side or after LINGER_MS. What still arrives is read and thrown away, so
   * that unread data does not turn our close into a reset that could lose the 400.
   */
  private closeAfterReply(conn: Conn, why: string): void {
    if (!this.all.has(conn)) return; // already gone (the handler may have closed the transport)
    this.log.info({ remote: conn.key, why }, `SIP ${this.protocol}: closing the connection after a message that could not be read`);
    conn.framer.stop();
    this.unmap(conn);
    if (conn.firstMessageTimer) { clearTimeout(conn.firstMessageTimer); conn.firstMessageTimer = null; }
    conn.sock.end();
    conn.lingerTimer = setTimeout(() => this.destroy(conn), LINGER_MS);
    conn.lingerTimer.unref();
  }

  private destroy(conn: Conn): void {
    this.forget(conn);
    conn.sock.destroy();
    if (conn.raw !== conn.sock) conn.raw.destroy();
  }

  /** The connection is gone (or going): no timers, no reuse. */
  private forget(conn: Conn): void {
    conn.framer.stop();
    if (conn.firstMessageTimer) clearTimeout(conn.firstMessageTimer);
    if (conn.lingerTimer) clearTimeout(conn.lingerTimer);
    conn.firstMessageTimer = null;
    conn.lingerTimer = null;
    this.unmap(conn);
    this.all.delete(conn);
  }

  private unmap(conn: Conn): void {
    if (this.connections.get(conn.key) === conn) this.connections.delete(conn.key);
  }

  /**
   * Built once: given a `ca` list (sip.tls.caFile with the public roots) tls.connect would build
   * a context from ~150 certificates for every connection (~19 ms of blocked event loop here).
   * Undefined without one: Node's cached default store.
   */
  private clientContext(): tls.SecureContext | undefined {
    const ca = this.cfg.tls?.ca;
    if (!ca) return undefined;
    this.tlsClientContext ??= tls.createSecureContext({ ca });
    return this.tlsClientContext;
  }
}
