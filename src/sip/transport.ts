import dgram from 'node:dgram';
import net from 'node:net';
import type { Logger } from 'pino';
import { traceSip } from './trace';
import { parseSipMessage, type SipRequest, type SipResponse, type SipParseError, type SipSource } from './message';
import { StreamTransport, type StreamLimits } from './streamTransport';

export { StreamTransport, DEFAULT_STREAM_LIMITS, type StreamLimits } from './streamTransport';

export type SipProtocol = 'udp' | 'tcp' | 'tls';

export interface SipTransportConfig {
  protocol: SipProtocol;
  host: string;
  port: number;
  advertisedHost?: string;
  advertisedPort?: number;
  tls?: { cert: string; key: string; ca?: string | string[]; rejectUnauthorized?: boolean };
  /** TCP/TLS: bounds on inbound connections (defaults: DEFAULT_STREAM_LIMITS). UDP ignores them. */
  limits?: Partial<StreamLimits>;
}

export type InboundHandler = (msg: SipRequest | SipResponse | SipParseError, source: SipSource, raw: Buffer) => void;

/**
 * One listening SIP transport. UDP sends datagrams; TCP/TLS (streamTransport.ts) keep one
 * connection per remote address, reuse it for every message to that address (RFC 3261
 * §18.1.1), frame the stream by Content-Length (§18.3), bound and close idle connections.
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
  /**
   * TCP/TLS: called just after a request was sent to host:port; the function returned, called
   * when that request's transaction times out, closes the connection it went on if nothing has
   * arrived on it since (so the next request opens a new one). UDP has no connection.
   */
  silenceCheck?(host: string, port: number): (() => void) | undefined;
  /** TCP/TLS: whether a connection to or from host:port is open (a response can go on it). */
  hasConnection?(host: string, port: number): boolean;
  /** Stops listening and ends every connection, accepted or opened, at once. */
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

export function createTransport(cfg: SipTransportConfig, onMessage: InboundHandler, log: Logger): SipTransport {
  return cfg.protocol === 'udp' ? new UdpTransport(cfg, onMessage, log) : new StreamTransport(cfg.protocol, cfg, onMessage, log);
}
