import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import { traceSip } from './trace';
import { PARSE_LIMITS, parseSipMessage, SipRequest, SipResponse, type SipParseError, type SipSource } from './message';

export type SipProtocol = 'udp' | 'tcp' | 'tls';

export interface SipTransportConfig {
  protocol: SipProtocol;
  host: string;
  port: number;
  advertisedHost?: string;
  advertisedPort?: number;
  tls?: { cert: string; key: string; ca?: string; rejectUnauthorized?: boolean };
}

export type InboundHandler = (msg: SipRequest | SipResponse | SipParseError, source: SipSource, raw: Buffer) => void;

/**
 * One listening SIP transport. UDP sends datagrams; TCP/TLS keep one connection per remote
 * address, reuse it for every message to that address (RFC 3261 §18.1.1), frame the stream by
 * Content-Length (§18.3) and close idle connections.
 */
export interface SipTransport {
  readonly protocol: SipProtocol;
  readonly reliable: boolean;
  readonly local: { host: string; port: number };
  readonly advertised: { host: string; port: number };
  start(): Promise<void>;
  /**
   * Sends one message. `onError` is called if it cannot be delivered on a connection
   * (TCP/TLS connect refused, handshake or certificate failure, connection reset before the
   * write): the transaction layer then fails at once instead of waiting for its timers.
   */
  send(data: string, host: string, port: number, onError?: (err: Error) => void): void;
  /**
   * TLS: `host:port` (an address) was looked up from `name`; a connection opened to it checks
   * the peer's certificate against that name and sends it as SNI. Other transports ignore it.
   */
  knowAs?(host: string, port: number, name: string): void;
  close(): Promise<void>;
}

export class UdpTransport implements SipTransport {
  readonly protocol = 'udp' as const;
  readonly reliable = false;
  local = { host: '', port: 0 };
  advertised = { host: '', port: 0 };
  private socket: dgram.Socket | null = null;

  constructor(private readonly cfg: SipTransportConfig, private readonly onMessage: InboundHandler, private readonly log: Logger) {}

  async start(): Promise<void> {
    const socket = dgram.createSocket({ type: net.isIPv6(this.cfg.host) ? 'udp6' : 'udp4' });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (err: NodeJS.ErrnoException) => reject(new Error(`cannot bind SIP UDP ${this.cfg.host}:${this.cfg.port}: ${err.code ?? err.message}`)));
      socket.bind(this.cfg.port, this.cfg.host, () => resolve());
    });
    socket.removeAllListeners('error');
    socket.on('error', (err) => this.log.warn({ err: err.message }, 'SIP UDP socket error'));
    socket.on('message', (buf, rinfo) => {
      // Keepalives (RFC 5626 CRLF) and stray bytes are not messages.
      if (buf.length < 8) return;
      const source: SipSource = { protocol: 'udp', host: rinfo.address, port: rinfo.port };
      traceSip(this.log, 'in', 'udp', rinfo.address, rinfo.port, buf);
      this.onMessage(parseSipMessage(buf), source, buf);
    });
    this.socket = socket;
    const a = socket.address();
    this.local = { host: a.address, port: a.port };
    this.advertised = { host: this.cfg.advertisedHost ?? a.address, port: this.cfg.advertisedPort ?? a.port };
  }

  send(data: string, host: string, port: number): void {
    traceSip(this.log, 'out', 'udp', host, port, data);
    try {
      this.socket?.send(data, port, host, (err) => {
        if (err) this.log.debug({ err: err.message, host, port }, 'SIP UDP send failed');
      });
    } catch (err) {
      // dgram throws at once for an address it cannot use (a bad port): never into the caller,
      // which would be left half-way through answering or sending.
      this.log.debug({ err: (err as Error).message, host, port }, 'SIP UDP send refused');
    }
  }

  async close(): Promise<void> {
    const s = this.socket;
    this.socket = null;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}

const IDLE_MS = 5 * 60_000;

/**
 * TCP or TLS: framed by Content-Length; one connection per remote address:port, reused both
 * ways (a TLS peer's certificate is checked against the name its address was looked up from).
 */
export class StreamTransport implements SipTransport {
  readonly reliable = true;
  local = { host: '', port: 0 };
  advertised = { host: '', port: 0 };
  private server: net.Server | null = null;
  private readonly connections = new Map<string, net.Socket>();
  /** TLS peers' names by the address:port they were looked up to (knowAs). */
  private readonly names = new Map<string, string>();

  constructor(readonly protocol: 'tcp' | 'tls', private readonly cfg: SipTransportConfig, private readonly onMessage: InboundHandler, private readonly log: Logger) {}

  async start(): Promise<void> {
    const onConn = (sock: net.Socket) => this.adopt(sock, `${sock.remoteAddress}:${sock.remotePort}`);
    const server = this.protocol === 'tls'
      ? tls.createServer({ cert: this.cfg.tls?.cert, key: this.cfg.tls?.key }, onConn)
      : net.createServer(onConn);
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

  send(data: string, host: string, port: number, onError?: (err: Error) => void): void {
    traceSip(this.log, 'out', this.protocol, host, port, data);
    // Keyed by address: a request the peer sends on a connection we opened is answered on it.
    const key = `${host}:${port}`;
    let sock = this.connections.get(key);
    if (!sock) {
      // The certificate is checked against the name the address was looked up from (and that
      // name sent as SNI); an address given as such is checked against itself.
      const servername = this.names.get(key) ?? (net.isIP(host) ? undefined : host);
      try {
        sock = this.protocol === 'tls'
          ? tls.connect({ host, port, ca: this.cfg.tls?.ca, rejectUnauthorized: this.cfg.tls?.rejectUnauthorized ?? true, servername })
          : net.connect({ host, port });
      } catch (err) {
        // A bad port or address throws at once: reported like a failed connection, never thrown.
        this.log.debug({ err: (err as Error).message, host, port }, `SIP ${this.protocol} connect refused`);
        if (onError) queueMicrotask(() => onError(err as Error));
        return;
      }
      this.adopt(sock, key);
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

  private adopt(sock: net.Socket, key: string): void {
    this.connections.set(key, sock);
    sock.setTimeout(IDLE_MS, () => sock.destroy());
    let buf: Buffer = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      for (;;) {
        // Skip CRLF keepalives between messages (RFC 5626 §3.5.1).
        let skip = 0;
        while (skip < buf.length && (buf[skip] === 0x0d || buf[skip] === 0x0a)) skip++;
        if (skip) buf = buf.subarray(skip);
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) {
          if (buf.length > PARSE_LIMITS.maxMessageBytes) { this.log.warn({ key }, 'SIP stream header too large: closing'); sock.destroy(); }
          return;
        }
        const head = buf.subarray(0, end).toString('utf8');
        const m = /\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)/i.exec(head);
        const len = m ? Number(m[1]) : 0;
        if (len > PARSE_LIMITS.maxMessageBytes) { this.log.warn({ key }, 'SIP stream message too large: closing'); sock.destroy(); return; }
        const total = end + 4 + len;
        if (buf.length < total) return;
        const raw = buf.subarray(0, total);
        buf = buf.subarray(total);
        const source: SipSource = { protocol: this.protocol, host: sock.remoteAddress ?? '', port: sock.remotePort ?? 0 };
        traceSip(this.log, 'in', this.protocol, source.host, source.port, raw);
        this.onMessage(parseSipMessage(raw), source, raw);
      }
    });
    sock.on('error', (err) => this.log.debug({ err: err.message, key }, 'SIP stream error'));
    sock.on('close', () => { if (this.connections.get(key) === sock) this.connections.delete(key); });
  }

  async close(): Promise<void> {
    for (const s of this.connections.values()) s.destroy();
    this.connections.clear();
    const srv = this.server;
    this.server = null;
    if (srv) await new Promise<void>((r) => srv.close(() => r()));
  }
}

export function createTransport(cfg: SipTransportConfig, onMessage: InboundHandler, log: Logger): SipTransport {
  return cfg.protocol === 'udp' ? new UdpTransport(cfg, onMessage, log) : new StreamTransport(cfg.protocol, cfg, onMessage, log);
}
