import { EventEmitter } from 'node:events';
import { randomBytes, randomInt } from 'node:crypto';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import {
  formatVia, parseNameAddr, parseUri, parseVia, SipRequest, SipResponse, type SipParseError, type SipSource,
} from './message';
import { createTransport, type SipProtocol, type SipTransport, type SipTransportConfig } from './transport';
import {
  DEFAULT_TIMERS, InviteClientTransaction, InviteServerTransaction, NonInviteClientTransaction,
  NonInviteServerTransaction, realClock, type Clock, type Timers,
} from './transactions';
import { Dialog } from './dialog';
import { locateSipServers, sipDns, type SipDns, type SipTarget, type TransportChoice } from './serverLocator';
import type { UaCore } from './uaCore';
import { DigestAuth, sendWithCredentials, type Credentials } from './digest';
import { Registration, type RegisterOptions } from './registration';
import { DEFAULT_SESSION_TIMER, negotiateAsUas, readMinSe, readSessionExpires, type SessionTimerSettings } from './sessionTimer';

export const ALLOW = 'INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY, PRACK';
/** Whether a message names 100rel in its Require (RFC 3262: reliable provisional responses). */
function requires100rel(msg: SipRequest | SipResponse): boolean {
  return msg.headers('require').some((h) => /(^|,)\s*100rel\s*(,|$)/i.test(h));
}
/** Option tags a Require may name without a 420: session timers (RFC 4028) and 100rel (RFC 3262). */
const SUPPORTED_EXTENSIONS = new Set(['timer', '100rel']);
const KNOWN_METHODS = new Set(['INVITE', 'ACK', 'CANCEL', 'BYE', 'OPTIONS', 'INFO', 'UPDATE', 'NOTIFY', 'REGISTER', 'SUBSCRIBE', 'MESSAGE', 'REFER', 'PRACK', 'PUBLISH']);

export interface SipUserAgentOptions {
  transports: SipTransportConfig[];
  logger: Logger;
  userAgent?: string;
  timers?: Partial<Timers>;
  clock?: Clock;
  /** RFC 4028 session timers (defaults: Min-SE 90 s, 1800 s asked on our INVITEs). */
  sessionTimers?: Partial<SessionTimerSettings>;
  /** Called when one of our client transactions gets no final response in time (Timer B/F): for a metric. */
  onTransactionTimeout?: (method: string) => void;
  /** DNS servers for NAPTR, SRV and address lookups ("ip" or "ip:port"); the system's when absent. */
  dnsServers?: string[];
}

export type { Credentials };

export interface InviteOptions {
  requestUri: string;
  from: { uri: string; displayName?: string };
  to?: { uri: string; displayName?: string };
  outboundProxy?: string;
  sdp: string;
  headers?: Array<[string, string]>;
  credentials?: Credentials;
  /** Session-Expires to ask for (RFC 4028); 0 = no session timer; default from the UA. */
  sessionExpires?: number;
}

interface Destination { transport: SipTransport; host: string; port: number }

export function newTag(): string { return randomBytes(6).toString('hex'); }

/** A host as SIP writes it in a URI or Via (RFC 3261 §25.1): an IPv6 address in brackets. */
export function hostForUri(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host;
}

/**
 * An out-of-dialog request sent through an outbound proxy carries it as a pre-loaded Route
 * (RFC 3261 §8.1.2, loose routing: `;lr` is added when missing, as we do not strict-route), so
 * the proxy knows the request is meant for it to forward by the Request-URI. The request's
 * CANCEL and non-2xx ACK copy it (§9.1, §17.1.1.3); requests inside the dialog follow the
 * dialog's route set, which is the Record-Route of the answer (§12.1.2).
 */
export function addOutboundRoute(req: SipRequest, proxyUri: string | undefined): void {
  if (!proxyUri) return;
  const uri = proxyUri.replace(/^<|>$/g, '');
  req.addHeader('Route', `<${/;lr(=|;|$)/i.test(uri) ? uri : `${uri};lr`}>`);
}
export function newBranch(): string { return `z9hG4bK${randomBytes(9).toString('base64url')}`; }
export function newCallId(): string { return randomBytes(12).toString('hex'); }

/**
 * A SIP user agent (RFC 3261): transports, the transaction layer, dialogs and the UAC/UAS
 * cores. It knows nothing about media or browsers.
 */
export class SipUserAgent extends EventEmitter<{ invite: [ServerInvite] }> implements UaCore {
  readonly log: Logger;
  readonly timers: Timers;
  readonly clock: Clock;
  readonly sessionTimerSettings: SessionTimerSettings;
  private readonly transports: SipTransport[] = [];
  private readonly clientTx = new Map<string, InviteClientTransaction | NonInviteClientTransaction>();
  private readonly serverTx = new Map<string, InviteServerTransaction | NonInviteServerTransaction>();
  private readonly serverInvites = new Map<string, ServerInvite>();
  private readonly dialogs = new Map<string, Dialog>();
  /** UAC INVITEs by Call-ID, to re-ACK retransmitted 2xx (§13.2.2.4). */
  readonly clientInvites = new Map<string, ClientInvite>();
  /**
   * 2xx responses to INVITEs waiting for their ACK, per dialog and CSeq: a re-INVITE can be
   * answered while the INVITE's 2xx still waits (its ACK lost), and each wait stops on its own.
   */
  private readonly awaitingAck = new Map<Dialog, Map<number, () => void>>();
  private started = false;
  private stopped = false;
  /** NAPTR, SRV and address lookups (RFC 3263), the system's or `dnsServers`. */
  private readonly dns: SipDns;
  /** Where host names were found lately (locate). */
  private readonly located = new Map<string, { targets: SipTarget[]; until: number }>();
  /** Places that failed lately (noteTargetFailed), by targetKey: until when (clock ms). */
  private readonly failedTargets = new Map<string, number>();

  constructor(readonly opts: SipUserAgentOptions) {
    super();
    this.log = opts.logger;
    this.timers = { ...DEFAULT_TIMERS, ...opts.timers };
    this.clock = opts.clock ?? realClock;
    this.sessionTimerSettings = { ...DEFAULT_SESSION_TIMER, ...opts.sessionTimers };
    this.dns = {
      ...sipDns(opts.dnsServers),
      onSrvFailure: (host, why) => this.log.warn({ host, why }, 'SRV lookup failed: taken as no SRV record (RFC 3263: the next step, in the end the name\'s own address)'),
      onNaptrFailure: (host, why) => this.log.warn({ host, why }, 'NAPTR lookup failed: taken as no NAPTR record (SRV for each transport follows, RFC 3263 §4.1)'),
    };
  }

  get boundAddresses(): Array<{ protocol: SipProtocol; host: string; port: number }> {
    return this.transports.map((t) => ({ protocol: t.protocol, host: t.local.host, port: t.local.port }));
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    try {
      for (const cfg of this.opts.transports) {
        const t = createTransport(cfg, (msg, src) => this.onInbound(msg, src), this.log);
        await t.start();
        this.transports.push(t);
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    // BYEs held back for an ACK go first, and get a moment to leave before the transports close.
    if ([...this.dialogs.values()].filter((d) => d.byeHeldBackNow()).length > 0) await new Promise((r) => setTimeout(r, 50));
    for (const waits of this.awaitingAck.values()) for (const stop of waits.values()) stop();
    this.awaitingAck.clear();
    for (const d of [...this.dialogs.values()]) d.terminate('shutdown');
    for (const inv of this.serverInvites.values()) inv.dispose();
    for (const tx of this.clientTx.values()) tx.terminate();
    for (const tx of this.serverTx.values()) tx.terminate();
    this.clientTx.clear();
    this.serverTx.clear();
    this.serverInvites.clear();
    this.clientInvites.clear();
    await Promise.all(this.transports.map((t) => t.close()));
  }

  /** Live transactions and dialogs: a leak check for tests. */
  get counts(): { clientTx: number; serverTx: number; dialogs: number; serverInvites: number } {
    return { clientTx: this.clientTx.size, serverTx: this.serverTx.size, dialogs: this.dialogs.size, serverInvites: this.serverInvites.size };
  }

  // ---------------------------------------------------------------- UAC side

  invite(opts: InviteOptions): ClientInvite {
    return new ClientInvite(this, opts);
  }

  register(opts: RegisterOptions): Registration {
    return new Registration(this, opts);
  }

  async options(targetUri: string, opts: { outboundProxy?: string } = {}): Promise<SipResponse> {
    const dest = await this.resolve(opts.outboundProxy ?? targetUri);
    const req = this.newRequest('OPTIONS', targetUri, { uri: this.contactUri(dest.transport).replace(/^<|>$/g, '') }, { uri: targetUri }, newCallId(), 1, dest.transport);
    addOutboundRoute(req, opts.outboundProxy);
    req.setHeader('Accept', 'application/sdp');
    return this.sendRequest(req, dest);
  }

  /** Out-of-dialog request skeleton with our Via, From tag, Contact. */
  newRequest(method: string, uri: string, from: { uri: string; displayName?: string; tag?: string }, to: { uri: string; displayName?: string }, callId: string, cseq: number, transport: SipTransport): SipRequest {
    const req = new SipRequest(method, uri);
    req.addHeader('Via', this.viaFor(transport));
    req.addHeader('Max-Forwards', '70');
    req.addHeader('From', `${from.displayName ? `"${from.displayName.replace(/(["\\])/g, '\\$1')}" ` : ''}<${from.uri}>;tag=${from.tag ?? newTag()}`);
    req.addHeader('To', `${to.displayName ? `"${to.displayName.replace(/(["\\])/g, '\\$1')}" ` : ''}<${to.uri}>`);
    req.addHeader('Call-ID', callId);
    req.addHeader('CSeq', `${cseq} ${method}`);
    if (method !== 'CANCEL' && method !== 'ACK') req.addHeader('Contact', this.contactUri(transport));
    if (this.opts.userAgent) req.addHeader('User-Agent', this.opts.userAgent);
    return req;
  }

  viaFor(transport: SipTransport, branch = newBranch()): string {
    return `SIP/2.0/${transport.protocol.toUpperCase()} ${hostForUri(transport.advertised.host)}:${transport.advertised.port};branch=${branch};rport`;
  }

  /**
   * Our Contact on `transport`: sip:…;transport=tls over TLS, also in requests to (and answers
   * for) a sips: URI, where RFC 3261 §8.1.1.8 asks for a sips: one. Tried: baresip 1.0 (libre)
   * then never sends its BYE (silently, with an IP or a host name and a certificate it trusts),
   * while the sip:;transport=tls form reaches us over TLS from it and is what it sends itself.
   */
  contactUri(transport: SipTransport, user = 'gw'): string {
    const tp = transport.protocol === 'udp' ? '' : `;transport=${transport.protocol}`;
    return `<sip:${user}@${hostForUri(transport.advertised.host)}:${transport.advertised.port}${tp}>`;
  }

  /** Where a URI's requests go: the first of resolveAll's places. */
  async resolve(uri: string): Promise<Destination> {
    return (await this.resolveAll(uri))[0];
  }

  /**
   * Every place a URI's requests may go, best first, each on its transport (RFC 3263 §4: a
   * literal address; a name's NAPTR and SRV records, then its address records;
   * serverLocator.ts). One place per address and transport.
   */
  async resolveAll(uri: string): Promise<Destination[]> {
    const u = parseUri(uri.replace(/^<|>$/g, ''));
    if (!u) throw new Error(`cannot route to "${uri}": not a SIP URI`);
    const secure = u.scheme === 'sips';
    const named = u.params.transport?.toLowerCase();
    const wanted: SipProtocol = secure ? 'tls' : ((named ?? 'udp') as SipProtocol);
    // A transport we do not run: another one will do (a Contact saying TCP usually takes UDP
    // too), but never for TLS — a sips: URI (or transport=tls) asks for it, and sending in the
    // clear instead would be a silent downgrade (RFC 3261 §26.2.2).
    const fallback = this.transports.find((t) => t.protocol === wanted) ?? (wanted === 'tls' ? undefined : this.transports[0]);
    if (!fallback) throw new Error(wanted === 'tls' ? `cannot route to "${uri}": it needs TLS, and sip.transports has no tls` : 'no SIP transport is running');
    const host = u.host.replace(/^\[|\]$/g, '');
    const port = u.port ?? undefined;
    // RFC 3263 §4.1: DNS picks the transport (NAPTR, then SRV for each) only for a name with
    // neither a port nor a transport= parameter; otherwise it is `fallback`.
    const choice = named === undefined && port === undefined && !isIP(host) ? { running: this.transports.map((t) => t.protocol), secure } : undefined;
    const found = (await this.locate(host, port, fallback.protocol, choice)).flatMap((t) => {
      // Only transports we run come back; a sips: URI gets TLS only (checked here again, as a
      // clear transport there would be the downgrade refused above).
      const transport = this.transports.find((tp) => tp.protocol === t.protocol);
      return transport && (!secure || t.protocol === 'tls') ? [{ transport, host: t.address, port: t.port }] : [];
    });
    if (found.length === 0) throw new Error(`cannot route to "${uri}": no server found on a transport we run`);
    // Places that failed lately go last, in their order (RFC 3263 §4.3: the next request tries
    // the next server; without this every call would wait out a dead first one again).
    const now = Date.now();
    const isDown = (d: Destination) => (this.failedTargets.get(targetKey(d.transport.protocol, d.host, d.port)) ?? 0) > now;
    const targets = [...found.filter((d) => !isDown(d)), ...found.filter(isDown)];
    if (!isIP(host)) {
      // TLS checks the trunk's certificate against the name we were given (and sends it as
      // SNI) — for servers found by NAPTR and SRV too (RFC 5922 §4) — not against the address we
      // connect to. The connection itself is to the address, so that requests the trunk sends
      // on it are answered on it.
      for (const d of targets) d.transport.knowAs?.(d.host, d.port, host);
    }
    return targets;
  }

  /**
   * locateSipServers, its answers kept LOCATE_CACHE_MS: in-dialog requests to a host name
   * (an ACK, a BYE) resolve it each time, and NAPTR and SRV answers carry no TTL we can read.
   * Keyed by whether DNS chose the transport: a URI naming one finds other servers.
   */
  private async locate(host: string, port: number | undefined, protocol: SipProtocol, choice: TransportChoice | undefined): Promise<SipTarget[]> {
    if (isIP(host)) return locateSipServers(host, port, protocol, this.dns);
    const key = `${choice ? `dns-chosen${choice.secure ? ' sips' : ''} (else ${protocol})` : protocol} ${host} ${port ?? ''}`;
    const now = Date.now();
    const hit = this.located.get(key);
    if (hit && hit.until > now) return hit.targets;
    const targets = await locateSipServers(host, port, protocol, this.dns, choice);
    for (const [k, v] of this.located) if (v.until <= now) this.located.delete(k);
    this.located.set(key, { targets, until: now + LOCATE_CACHE_MS });
    return targets;
  }

  /**
   * A place that did not answer a request (timeout, transport error) or answered 503: tried last
   * for a while by resolveAll (for Retry-After's seconds when the 503 gave some).
   */
  noteTargetFailed(dest: Destination, forMs = FAILED_TARGET_MS): void {
    const now = Date.now();
    for (const [k, until] of this.failedTargets) if (until <= now) this.failedTargets.delete(k); // stays small
    this.failedTargets.set(targetKey(dest.transport.protocol, dest.host, dest.port), now + Math.min(forMs, MAX_FAILED_TARGET_MS));
  }

  /** Non-INVITE client transaction; resolves with the final response (or 408 on timeout). */
  sendRequest(req: SipRequest, dest: Destination): Promise<SipResponse> {
    return new Promise((resolve) => {
      const branch = parseVia(req.header('via')!)!.params.branch!;
      const key = `${branch}|${req.method}`;
      // TCP/TLS: a timeout closes the connection if it stayed silent (transport.ts silenceCheck).
      let dropIfSilent: (() => void) | undefined;
      const tx: NonInviteClientTransaction = new NonInviteClientTransaction(req, {
        clock: this.clock, timers: this.timers, reliable: dest.transport.reliable,
        send: (d) => dest.transport.send(d, dest.host, dest.port, (err) => {
          if (tx.state !== 'trying' && tx.state !== 'proceeding') return;
          this.noteTargetFailed(dest);
          tx.receive(transportErrorResponse(req, err));
        }),
        terminated: () => this.clientTx.delete(key),
      }, {
        onResponse: (res) => {
          if (res.status === 503 && res.source.host) this.noteTargetFailed(dest, unavailableFor(res)); // not our own (transport error)
          if (res.status >= 200) resolve(res);
        },
        onTimeout: () => { dropIfSilent?.(); this.noteTargetFailed(dest); this.opts.onTransactionTimeout?.(req.method); resolve(timeoutResponse(req)); },
      });
      dropIfSilent = dest.transport.silenceCheck?.(dest.host, dest.port);
      this.clientTx.set(key, tx);
    });
  }

  startInviteTransaction(req: SipRequest, dest: Destination, user: { onResponse(r: SipResponse): void; onTimeout(): void }): InviteClientTransaction {
    const branch = parseVia(req.header('via')!)!.params.branch!;
    const key = `${branch}|INVITE`;
    let dropIfSilent: (() => void) | undefined; // as in sendRequest
    const tx: InviteClientTransaction = new InviteClientTransaction(req, {
      clock: this.clock, timers: this.timers, reliable: dest.transport.reliable,
      // Only while waiting for a final response: the ACK of the resulting 503 may fail the same way.
      send: (d) => dest.transport.send(d, dest.host, dest.port, (err) => { if (tx.state === 'calling' || tx.state === 'proceeding') tx.receive(transportErrorResponse(req, err)); }),
      terminated: () => this.clientTx.delete(key),
    }, { onResponse: (r) => user.onResponse(r), onTimeout: () => { dropIfSilent?.(); this.opts.onTransactionTimeout?.('INVITE'); user.onTimeout(); } });
    dropIfSilent = dest.transport.silenceCheck?.(dest.host, dest.port);
    this.clientTx.set(key, tx);
    return tx;
  }

  async sendInDialog(dialog: Dialog, req: SipRequest): Promise<SipResponse> {
    const dest = await this.resolve(dialog.routeSet.length ? parseNameAddr(dialog.routeSet[0])?.uri ?? dialog.remoteTarget : dialog.remoteTarget);
    req.addHeader('Via', this.viaFor(dest.transport), true);
    // Target refresh requests carry our Contact (RFC 3261 §12.2.1.1); so do REFER and NOTIFY,
    // which must (the header tables of RFC 3515 and RFC 6665).
    if (['INVITE', 'UPDATE', 'REFER', 'NOTIFY', 'SUBSCRIBE'].includes(req.method)) req.setHeader('Contact', this.contactUri(dest.transport));
    if (this.opts.userAgent) req.setHeader('User-Agent', this.opts.userAgent);
    if (req.method === 'ACK') {
      dest.transport.send(req.toString(), dest.host, dest.port);
      return new SipResponse(200, 'OK');
    }
    if (req.method !== 'INVITE') return this.sendRequest(req, dest);
    // re-INVITE: the UAC core ACKs a 2xx itself (§13.2.2.4).
    return new Promise((resolve) => {
      // After a provisional response the transaction waits for the final one without limit
      // (§17.1.1.2), and the dialog can make no other offer meanwhile (a hold or a refresh would
      // wait for ever): a re-INVITE still unanswered 64·T1 after its first provisional response
      // is CANCELled (the peer answers 487; with no answer at all the transaction times out).
      let giveUp: unknown = null;
      const tx = this.startInviteTransaction(req, dest, {
        onResponse: (res) => {
          if (res.status < 200) {
            giveUp ??= this.clock.setTimeout(() => this.sendCancel(req, dest, tx), 64 * this.timers.T1);
            return;
          }
          if (giveUp !== null) this.clock.clearTimeout(giveUp);
          if (res.status < 300) {
            const ack = dialog.createRequest('ACK');
            ack.setHeader('CSeq', `${req.cseq.seq} ACK`);
            copyCredentials(req, ack);
            ack.addHeader('Via', this.viaFor(dest.transport), true);
            dest.transport.send(ack.toString(), dest.host, dest.port);
          }
          resolve(res);
        },
        onTimeout: () => { if (giveUp !== null) this.clock.clearTimeout(giveUp); resolve(timeoutResponse(req)); }, // counted by startInviteTransaction
      });
    });
  }

  /**
   * CANCEL for an INVITE we sent (§9.1): its Request-URI, Via (so its branch), Route, From, To,
   * Call-ID and CSeq number. A peer that never answers the INVITE with 487 then does not keep
   * the transaction for ever.
   */
  sendCancel(inv: SipRequest, dest: Destination, tx: InviteClientTransaction | null): void {
    const cancel = new SipRequest('CANCEL', inv.uri);
    cancel.addHeader('Via', inv.header('via')!);
    for (const r of inv.headers('route')) cancel.addHeader('Route', r);
    cancel.addHeader('Max-Forwards', '70');
    cancel.addHeader('From', inv.header('from')!);
    cancel.addHeader('To', inv.header('to')!);
    cancel.addHeader('Call-ID', inv.callId);
    cancel.addHeader('CSeq', `${inv.cseq.seq} CANCEL`);
    this.sendRequest(cancel, dest).catch(() => undefined);
    tx?.cancelSent();
  }

  registerDialog(d: Dialog): void { this.dialogs.set(d.id, d); }
  forgetDialog(d: Dialog): void { this.dialogs.delete(d.id); }
  findDialog(callId: string, localTag: string, remoteTag: string): Dialog | undefined {
    return this.dialogs.get(`${callId};${localTag};${remoteTag}`);
  }

  /** An INVITE we have not answered finally whose early dialog these tags name. */
  private earlyInvite(callId: string, localTag: string, remoteTag: string): ServerInvite | undefined {
    for (const inv of this.serverInvites.values()) {
      if (inv.finalSent || inv.localTag !== localTag || inv.request.callId !== callId) continue;
      if ((parseNameAddr(inv.request.header('from') ?? '')?.params.tag ?? '') === remoteTag) return inv;
    }
    return undefined;
  }

  // ---------------------------------------------------------------- inbound

  private onInbound(msg: SipRequest | SipResponse | SipParseError, source: SipSource): void {
    if (this.stopped) return;
    try {
      if ('error' in msg) { this.onParseError(msg, source); return; }
      msg.source = source;
      if (msg instanceof SipResponse) this.onResponse(msg);
      else this.onRequest(msg);
    } catch (err) {
      // Nothing a peer sends may take the UA down.
      this.log.error({ err, source }, 'error handling SIP message');
    }
  }

  private onParseError(e: SipParseError, source: SipSource): void {
    const req = e.partial;
    if (!req || req.method === 'ACK' || !req.header('via') || !parseVia(req.header('via')!)) {
      this.log.info({ source, error: e.error }, 'malformed SIP message dropped');
      return;
    }
    this.log.info({ source, error: e.error }, 'malformed SIP request: 400');
    req.source = source;
    // The error quotes the peer's bytes (a broken header line): control characters are no part
    // of a Reason-Phrase (RFC 3261 §25.1), and a CR in the status line breaks the response.
    this.respondStateless(req, e.status ?? (e.error === 'Message Too Large' ? 513 : 400), e.error.slice(0, 120).replace(/[\x00-\x08\x0a-\x1f\x7f]/g, '?'));
  }

  /** Where a response to `req` goes (RFC 3261 §18.2.2 with RFC 3581 rport). */
  private responseDestination(req: SipRequest): Destination | null {
    const transport = this.transports.find((t) => t.protocol === req.source.protocol) ?? this.transports[0];
    if (!transport) return null;
    const via = parseVia(req.header('via') ?? '');
    if (!via) return null;
    // A Via port nothing can be sent to (0, past 65535: refused with 400) is answered where the
    // request came from, as with rport.
    const unusablePort = via.port !== undefined && (via.port < 1 || via.port > 65535);
    if (transport.reliable && transport.hasConnection?.(req.source.host, req.source.port) === false && !unusablePort) {
      // The connection the request came on has closed (RFC 3261 §18.2.2): the response goes to
      // the Via's sent-by — at the address the request came from (received) — over a new one.
      const host = via.params.received ?? req.source.host;
      return { transport, host, port: via.port ?? (transport.protocol === 'tls' ? 5061 : 5060) };
    }
    const port = transport.reliable || via.params.rport !== undefined || unusablePort ? req.source.port : via.port ?? 5060;
    return { transport, host: req.source.host, port };
  }

  /** A response skeleton copying Via/From/To/Call-ID/CSeq (§8.2.6.2), with received/rport. */
  makeResponse(req: SipRequest, status: number, reason: string, toTag?: string): SipResponse {
    const res = new SipResponse(status, reason);
    const vias = req.headers('via');
    vias.forEach((v, i) => {
      if (i === 0) {
        const via = parseVia(v);
        if (via) {
          via.params.received = req.source.host;
          if (via.params.rport !== undefined) via.params.rport = String(req.source.port);
          v = formatVia(via);
        }
      }
      res.addHeader('Via', v);
    });
    // A 400 for a request missing some of these copies what there is (never "undefined").
    const from = req.header('from');
    if (from) res.addHeader('From', from);
    let to = req.header('to');
    if (to !== undefined) {
      if (toTag && !/;\s*tag=/i.test(to)) to = `${to};tag=${toTag}`;
      res.addHeader('To', to);
    }
    if (req.callId) res.addHeader('Call-ID', req.callId);
    const cseq = req.header('cseq');
    if (cseq) res.addHeader('CSeq', cseq);
    if (this.opts.userAgent) res.addHeader('Server', this.opts.userAgent);
    return res;
  }

  private respondStateless(req: SipRequest, status: number, reason: string, extra: Array<[string, string]> = []): void {
    const dest = this.responseDestination(req);
    if (!dest) return;
    const res = this.makeResponse(req, status, reason, status > 100 ? newTag() : undefined);
    for (const [k, v] of extra) res.addHeader(k, v);
    dest.transport.send(res.toString(), dest.host, dest.port);
  }

  /**
   * The server transaction a request belongs to (RFC 3261 §17.2.3). A branch with the magic
   * cookie is unique; an RFC 2543 peer's branch (or none) is not, so its requests are told apart
   * by Call-ID, CSeq number and From tag as well — else two calls without a branch were one
   * transaction, and the second INVITE was answered as a retransmission of the first.
   */
  private serverKey(req: SipRequest, method = req.method): string {
    const via = parseVia(req.header('via')!)!;
    const branch = via.params.branch ?? '';
    const sentBy = `${via.host}:${via.port ?? ''}`;
    if (branch.startsWith('z9hG4bK')) return `${branch}|${sentBy}|${method}`;
    const cseq = /^\s*(\d+)/.exec(req.header('cseq') ?? '')?.[1] ?? '';
    const fromTag = /;\s*tag=([^;\s]+)/i.exec(req.header('from') ?? '')?.[1] ?? '';
    return `2543|${branch}|${req.header('call-id') ?? ''}|${cseq}|${fromTag}|${sentBy}|${method}`;
  }

  /**
   * A new INVITE (no To tag) with the Request-URI, Call-ID, From tag and CSeq of one we are
   * already handling, under another transaction: a merged request (RFC 3261 §8.2.2.2).
   */
  private isMerged(req: SipRequest): boolean {
    const fromTag = parseNameAddr(req.header('from') ?? '')?.params.tag;
    if (!fromTag) return false;
    for (const inv of this.serverInvites.values()) {
      const r = inv.request;
      // The same Request-URI too: a proxy forking one INVITE in parallel to two users whose
      // contacts are both this gateway (registerUsers) sends two copies that must both ring.
      if (r.callId === req.callId && r.cseq.seq === req.cseq.seq && r.uri === req.uri && parseNameAddr(r.header('from') ?? '')?.params.tag === fromTag) return true;
    }
    return false;
  }

  private onRequest(req: SipRequest): void {
    // Method names are case-sensitive (RFC 3261 §7.1): "invite" is an unknown method (501), not
    // an INVITE handled with a non-INVITE transaction.
    const method = req.method;
    if (method === 'ACK') { this.onAck(req); return; }
    if (method === 'CANCEL') { this.onCancel(req); return; }
    const existing = this.serverTx.get(this.serverKey(req));
    if (existing) { existing.retransmission(); return; }
    const mf = req.header('max-forwards');
    if (mf !== undefined && Number(mf) === 0 && method !== 'OPTIONS') { this.respondStateless(req, 483, 'Too Many Hops'); return; }
    // An extension the request requires and we do not do (e.g. 100rel): 420 naming it (§8.2.2.3).
    const unsupported = req.headers('require').flatMap((h) => h.split(',')).map((e) => e.trim()).filter((e) => e && !SUPPORTED_EXTENSIONS.has(e.toLowerCase()));
    if (unsupported.length > 0) {
      const res = this.makeResponse(req, 420, 'Bad Extension', newTag()); // a tag on every final response (§8.2.6.2)
      res.addHeader('Unsupported', unsupported.join(', '));
      this.newServerTx(req).respond(res);
      return;
    }

    const toTag = parseNameAddr(req.header('to')!)?.params.tag;
    if (toTag) {
      const fromTag = parseNameAddr(req.header('from')!)?.params.tag ?? '';
      const dialog = this.findDialog(req.callId, toTag, fromTag);
      const tx = this.newServerTx(req);
      if (!dialog) {
        // A BYE on an early dialog (after our 1xx, before the final response; RFC 3261 §15) ends
        // the call like a CANCEL: 200 to the BYE, 487 to the INVITE, the call told 'cancelled'.
        const early = method === 'BYE' || method === 'PRACK' ? this.earlyInvite(req.callId, toTag, fromTag) : undefined;
        if (early && method === 'PRACK') { const status = early.prack(req); tx.respond(this.makeResponse(req, status, defaultReason(status))); return; }
        if (early) { tx.respond(this.makeResponse(req, 200, 'OK')); early.cancelByPeer(); return; }
        if (method === 'UPDATE' && this.clientInvites.get(req.callId)?.isEarlyDialogOf(toTag)) {
          // The callee's UPDATE while our INVITE rings (RFC 3311 §5.1; Asterisk sends them for
          // connected-line updates): without SDP it changes nothing of ours, 200; an offer to
          // change the early media we do not take, 488 — the early session stays as it was.
          const res = req.body.trim() ? this.makeResponse(req, 488, 'Not Acceptable Here') : this.makeResponse(req, 200, 'OK');
          if (res.status === 200) res.addHeader('Contact', this.contactUri(this.transportFor(req)));
          tx.respond(res);
          return;
        }
        tx.respond(this.makeResponse(req, 481, 'Call/Transaction Does Not Exist'));
        return;
      }
      dialog.receive(req, (status, reason, opts) => {
        const res = this.makeResponse(req, status, reason ?? defaultReason(status));
        // A 2xx to a REFER sets up a subscription usage: it carries our Contact as a 2xx to SUBSCRIBE does (RFC 6665 §4.2.1.1).
        if (status >= 200 && status < 300 && (method === 'INVITE' || method === 'REFER')) res.addHeader('Contact', this.contactUri(this.transportFor(req)));
        if (status === 405) res.addHeader('Allow', ALLOW);
        for (const [k, v] of opts?.headers ?? []) res.addHeader(k, v);
        if (opts?.body) { res.addHeader('Content-Type', 'application/sdp'); res.body = opts.body; }
        if (tx instanceof InviteServerTransaction && status >= 200 && status < 300) {
          // re-INVITE 2xx: retransmit until the ACK (§13.3.1.4), handled like an initial INVITE.
          // Given up without one, an offer it carried is no longer waited for.
          this.retransmit2xx(tx, res, dialog, () => dialog.ackNeverCame(req.cseq.seq));
        }
        tx.respond(res);
      });
      return;
    }

    if (!KNOWN_METHODS.has(method)) { this.newServerTx(req).respond(this.makeResponse(req, 501, 'Not Implemented')); return; }
    switch (method) {
      case 'INVITE': {
        if (this.isMerged(req)) {
          // The same INVITE again by another path (a forking proxy's two branches both reaching
          // us): a second call for one caller would ring every tab twice (§8.2.2.2).
          this.newServerTx(req).respond(this.makeResponse(req, 482, 'Loop Detected', newTag()));
          return;
        }
        const tx = this.newServerTx(req) as InviteServerTransaction;
        const inv = new ServerInvite(this, req, tx);
        this.serverInvites.set(this.serverKey(req), inv);
        tx.respond(this.makeResponse(req, 100, 'Trying'));
        const timer = negotiateAsUas(req, this.sessionTimerSettings);
        if (timer && 'reject422' in timer) { inv.reject(422, 'Session Interval Too Small', [['Min-SE', String(timer.reject422)]]); return; }
        if (this.listenerCount('invite') === 0) { inv.reject(480, 'Temporarily Unavailable'); return; }
        this.emit('invite', inv);
        return;
      }
      case 'OPTIONS': {
        const res = this.makeResponse(req, 200, 'OK', newTag());
        res.addHeader('Allow', ALLOW);
        res.addHeader('Accept', 'application/sdp');
        res.addHeader('Supported', 'timer, 100rel');
        this.newServerTx(req).respond(res);
        return;
      }
      case 'BYE': case 'INFO': case 'UPDATE': case 'NOTIFY': case 'PRACK':
        this.newServerTx(req).respond(this.makeResponse(req, 481, 'Call/Transaction Does Not Exist', newTag()));
        return;
      default: {
        const res = this.makeResponse(req, 405, 'Method Not Allowed', newTag());
        res.addHeader('Allow', ALLOW);
        this.newServerTx(req).respond(res);
      }
    }
  }

  transportFor(req: SipRequest): SipTransport {
    return this.transports.find((t) => t.protocol === req.source.protocol) ?? this.transports[0];
  }

  private newServerTx(req: SipRequest): InviteServerTransaction | NonInviteServerTransaction {
    const key = this.serverKey(req);
    const dest = this.responseDestination(req);
    const ctx = {
      clock: this.clock, timers: this.timers, reliable: dest?.transport.reliable ?? false,
      // Where to is decided per response: over TCP/TLS the request's connection may have closed
      // since (then the Via's address, responseDestination).
      send: (d: string) => {
        const to = dest?.transport.reliable ? this.responseDestination(req) : dest;
        if (to) to.transport.send(d, to.host, to.port);
      },
      terminated: () => { this.serverTx.delete(key); this.serverInvites.delete(key); },
    };
    const tx = req.method === 'INVITE'
      ? new InviteServerTransaction(req, ctx, () => this.log.info({ callId: req.callId }, 'no ACK for a final response'))
      : new NonInviteServerTransaction(req, ctx);
    this.serverTx.set(key, tx);
    return tx;
  }

  /** Retransmit a 2xx to INVITE until its ACK arrives or 64*T1 passes (§13.3.1.4). */
  retransmit2xx(tx: InviteServerTransaction, res: SipResponse, dialog: Dialog, onNoAck?: () => void): void {
    const wire = res.toString();
    const dest = this.responseDestination(tx.request);
    if (!dest) return;
    const cseq = tx.request.cseq.seq;
    if (dest.transport.reliable) {
      // Reliable transports deliver the 2xx; still give up when no ACK comes (§13.3.1.4).
      const h = this.clock.setTimeout(() => { this.awaitingAck.get(dialog)?.delete(cseq); onNoAck?.(); }, 64 * this.timers.T1);
      this.waitForAck(dialog, cseq, () => this.clock.clearTimeout(h));
      return;
    }
    let interval = this.timers.T1;
    let elapsed = 0;
    let handle: unknown;
    const tick = () => {
      elapsed += interval;
      if (elapsed >= 64 * this.timers.T1) { this.awaitingAck.get(dialog)?.delete(cseq); onNoAck?.(); return; }
      dest.transport.send(wire, dest.host, dest.port);
      interval = Math.min(interval * 2, this.timers.T2);
      handle = this.clock.setTimeout(tick, interval);
    };
    handle = this.clock.setTimeout(tick, interval);
    this.waitForAck(dialog, cseq, () => this.clock.clearTimeout(handle));
  }

  private waitForAck(dialog: Dialog, cseq: number, stop: () => void): void {
    let waits = this.awaitingAck.get(dialog);
    if (!waits) {
      waits = new Map();
      this.awaitingAck.set(dialog, waits);
      dialog.once('terminated', () => { this.stopAckWaits(dialog, Infinity); this.awaitingAck.delete(dialog); });
    }
    waits.get(cseq)?.();
    waits.set(cseq, stop);
  }

  /**
   * An ACK arrived for CSeq `upTo`: the waits for it and for any earlier 2xx stop (a peer that
   * sends a later request in the dialog had the earlier 2xx, whatever became of its ACK).
   */
  private stopAckWaits(dialog: Dialog, upTo: number): void {
    const waits = this.awaitingAck.get(dialog);
    if (!waits) return;
    for (const [cseq, stop] of waits) if (cseq <= upTo) { stop(); waits.delete(cseq); }
  }

  private onAck(req: SipRequest): void {
    const inviteKey = this.serverKey(req, 'INVITE');
    const tx = this.serverTx.get(inviteKey);
    if (tx instanceof InviteServerTransaction && tx.state === 'completed') { tx.ack(); return; }
    const toTag = parseNameAddr(req.header('to') ?? '')?.params.tag;
    const fromTag = parseNameAddr(req.header('from') ?? '')?.params.tag ?? '';
    if (!toTag) return;
    const dialog = this.findDialog(req.callId, toTag, fromTag);
    if (!dialog) return;
    this.stopAckWaits(dialog, req.cseq.seq);
    dialog.acked(req);
  }

  private onCancel(req: SipRequest): void {
    const existing = this.serverTx.get(this.serverKey(req));
    if (existing) { existing.retransmission(); return; }
    const tx = this.newServerTx(req);
    const inv = this.serverInvites.get(this.serverKey(req, 'INVITE'));
    if (!inv) {
      tx.respond(this.makeResponse(req, 481, 'Call/Transaction Does Not Exist', newTag()));
      return;
    }
    // §9.2: 200 while the INVITE transaction exists; after its final response it has no effect.
    tx.respond(this.makeResponse(req, 200, 'OK', inv.localTag));
    if (!inv.finalSent) inv.cancelByPeer();
  }

  private onResponse(res: SipResponse): void {
    const via = res.topVia;
    const branch = via?.params.branch;
    if (!branch) return;
    const tx = this.clientTx.get(`${branch}|${res.cseq.method}`);
    if (tx) { tx.receive(res); return; }
    if (res.cseq.method === 'INVITE' && res.status >= 200 && res.status < 300) {
      // A 2xx retransmission after the transaction is gone: ACK it again (§13.2.2.4).
      this.clientInvites.get(res.callId)?.reAck(res);
      return;
    }
    this.log.debug({ status: res.status, callId: res.callId }, 'response matches no transaction: dropped');
  }

  ensureRunning(): void {
    if (!this.started || this.stopped) throw new Error('SIP user agent is not running');
  }
}

/**
 * The ACK of a 2xx carries the credentials of the INVITE it acknowledges (RFC 3261 §13.2.2.4):
 * a proxy that challenged the INVITE may check the ACK too.
 */
function copyCredentials(invite: SipRequest, ack: SipRequest): void {
  for (const name of ['Authorization', 'Proxy-Authorization']) for (const value of invite.headers(name)) ack.addHeader(name, value);
}

/** How long a place that failed is tried last (noteTargetFailed), and at most for a Retry-After. */
const FAILED_TARGET_MS = 30_000;
/** How long a host name's servers are taken as found (locate). */
const LOCATE_CACHE_MS = 30_000;
const MAX_FAILED_TARGET_MS = 300_000;

function targetKey(protocol: SipProtocol, host: string, port: number): string {
  return `${protocol} ${host} ${port}`;
}

/** How long a 503 from a place says it is out of service (RFC 3263 §4.3; Retry-After's seconds). */
function unavailableFor(res: SipResponse): number {
  const retryAfter = Number.parseInt(res.header('retry-after') ?? '', 10);
  return Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : FAILED_TARGET_MS;
}

/** RFC 3261 §8.1.3.1: a transport error counts as a 503 from the far end. */
function transportErrorResponse(req: SipRequest, err: Error): SipResponse {
  return localResponse(req, 503, `Service Unavailable (transport: ${(err as NodeJS.ErrnoException).code ?? err.message})`.slice(0, 120));
}

function timeoutResponse(req: SipRequest): SipResponse {
  return localResponse(req, 408, 'Request Timeout');
}

/** A final response the transaction layer makes up itself (no peer sent it). */
function localResponse(req: SipRequest, status: number, reason: string): SipResponse {
  const r = new SipResponse(status, reason);
  r.addHeader('Call-ID', req.callId);
  r.addHeader('CSeq', req.header('cseq')!);
  return r;
}

export function defaultReason(status: number): string {
  const reasons: Record<number, string> = {
    100: 'Trying', 180: 'Ringing', 183: 'Session Progress', 200: 'OK', 202: 'Accepted', 400: 'Bad Request', 401: 'Unauthorized',
    403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 407: 'Proxy Authentication Required', 408: 'Request Timeout',
    422: 'Session Interval Too Small', 480: 'Temporarily Unavailable', 481: 'Call/Transaction Does Not Exist', 486: 'Busy Here',
    487: 'Request Terminated', 488: 'Not Acceptable Here', 491: 'Request Pending', 500: 'Server Internal Error', 501: 'Not Implemented',
    503: 'Service Unavailable', 603: 'Decline',
  };
  return reasons[status] ?? (status < 300 ? 'OK' : 'Error');
}

// ------------------------------------------------------------------ ClientInvite

type ClientInviteState = 'calling' | 'proceeding' | 'accepted' | 'rejected' | 'failed' | 'cancelled';

export interface ClientInviteEvents {
  progress: [res: SipResponse];
  /** `answer`: the SDP answer in force: the 2xx's, or that of a reliable 18x before it when the 2xx has none. */
  accepted: [res: SipResponse, dialog: Dialog, answer: string];
  rejected: [res: SipResponse];
  failed: [err: Error];
}

/**
 * An outgoing INVITE (UAC core, §13.2): provisional responses, digest challenges, the ACK for
 * 2xx and CANCEL.
 */
export class ClientInvite extends EventEmitter<ClientInviteEvents> {
  readonly callId = newCallId();
  private readonly fromTag = newTag();
  private cseq = 1;
  state: ClientInviteState = 'calling';
  private request: SipRequest | null = null;
  /** Where the INVITE may go, best first (resolveAll), and the one it went to last. */
  private dests: Destination[] | null = null;
  private destIndex = 0;
  private dest: Destination | null = null;
  /** Anything came back from `dest` for the INVITE sent last; a provisional above 100 did. */
  private heard = false;
  private progressed = false;
  private failoverTimer: unknown = null;
  /** Transactions to servers failed over from that have been CANCELled (fromAbandonedServer). */
  private readonly abandonedCancelled = new WeakSet<InviteClientTransaction>();
  private cancelWanted = false;
  private cancelSent = false;
  private authAttempts = 0;
  private dialog: Dialog | null = null;
  private lastAck: string | null = null;
  /** Branches of a forked INVITE that answered after the one we took, by To-tag (dropForkedAnswer). */
  private readonly forksDropped = new Map<string, { ack(res: SipResponse): void }>();
  private sessionExpires: number;
  private retried422 = false;
  /**
   * Per early dialog of the INVITE being sent (by the To tag of its 18x): the RSeq PRACKed last
   * and whether that PRACK failed (it is sent again when the 18x comes again), and the SDP
   * answer of its first reliable 18x, which a 2xx without SDP leaves in force (RFC 3262 §5,
   * RFC 6337 §3.1.1: pjsip and so Asterisk send such 2xx).
   */
  private readonly earlyDialogs = new Map<string, { rseq: number; prackFailed: boolean; answer: string | null }>();
  /** The SDP of unreliable 18x by To-tag: the answer when that branch's 200 carries none. */
  private readonly unreliableEarlySdp = new Map<string, string>();
  /** CSeq of our last PRACK: the dialog's requests continue above it. */
  private prackSeq = 0;
  /**
   * Digest answers we hold (null without credentials). Every INVITE we send, a retry after
   * 401/407 or 422 alike, gets Authorization values computed afresh from them (nc + 1); the
   * dialog inherits them for its re-INVITEs and UPDATEs.
   */
  private readonly auth: DigestAuth | null;
  private tx: InviteClientTransaction | null = null;

  constructor(private readonly ua: SipUserAgent, private readonly opts: InviteOptions) {
    super();
    this.sessionExpires = opts.sessionExpires ?? ua.sessionTimerSettings.expires;
    this.auth = opts.credentials ? new DigestAuth(opts.credentials) : null;
    ua.clientInvites.set(this.callId, this);
    // Start on the next tick so callers can attach listeners.
    setImmediate(() => this.send().catch((err: Error) => this.fail(err)));
  }

  private async send(): Promise<void> {
    if (this.state !== 'calling' && this.state !== 'proceeding') return;
    this.ua.ensureRunning();
    this.dests ??= await this.ua.resolveAll(this.opts.outboundProxy ?? this.opts.requestUri);
    this.dest = this.dests[this.destIndex];
    const o = this.opts;
    const req = this.ua.newRequest('INVITE', o.requestUri, { ...o.from, tag: this.fromTag }, o.to ?? { uri: o.requestUri }, this.callId, this.cseq, this.dest.transport);
    req.addHeader('Allow', ALLOW);
    // 100rel (RFC 3262): carriers and PBXs (Asterisk's default) send their 18x reliably to a
    // UAC that supports it, and hold back a 200 after a 183 with SDP until it is PRACKed;
    // some refuse a UAC without it (421).
    req.addHeader('Supported', 'timer, 100rel');
    if (this.sessionExpires > 0) {
      req.addHeader('Session-Expires', String(this.sessionExpires));
      req.addHeader('Min-SE', String(Math.min(this.sessionExpires, this.ua.sessionTimerSettings.minSe)));
    }
    addOutboundRoute(req, o.outboundProxy);
    for (const [k, v] of o.headers ?? []) req.addHeader(k, v);
    req.addHeader('Content-Type', 'application/sdp');
    req.body = o.sdp;
    this.auth?.authorize(req);
    this.request = req;
    this.cancelSent = false;
    this.earlyDialogs.clear(); // RSeq spaces and early answers belong to one INVITE transaction
    this.unreliableEarlySdp.clear();
    const dest = this.dest;
    const tx = this.ua.startInviteTransaction(req, dest, {
      onResponse: (res) => { if (tx === this.tx) this.onResponse(res); else this.fromAbandonedServer(res, req, dest, tx); },
      onTimeout: () => { if (tx === this.tx && !this.failOver()) this.fail(new Error('no response to INVITE (Timer B)')); },
    });
    this.tx = tx;
    this.heard = false;
    this.progressed = false;
    this.clearFailoverTimer();
    // A server that has not even said 100 Trying (due within 200 ms, RFC 3261 §8.2.6.1) after
    // 10·T1 is taken for dead when another remains: waiting out Timer B (64·T1, 32 s) would
    // leave the caller in silence that long (RFC 3263 §4.3 fails over only at Timer B).
    if (this.dests.length > this.destIndex + 1) {
      this.failoverTimer = this.ua.clock.setTimeout(() => {
        this.failoverTimer = null;
        if (tx === this.tx && !this.heard) this.failOver();
      }, 10 * this.ua.timers.T1);
    }
  }

  private clearFailoverTimer(): void {
    if (this.failoverTimer !== null) this.ua.clock.clearTimeout(this.failoverTimer);
    this.failoverTimer = null;
  }

  /**
   * RFC 3263 §4.3: the server we sent to failed (no answer, a transport error, 503) before
   * anything came of the INVITE there: the same INVITE (a new transaction, CSeq + 1) goes to
   * the next place the URI resolved to. False when there is none, or it is too late (an early
   * dialog, a CANCEL asked for).
   */
  private failOver(unavailableMs?: number): boolean {
    if (!this.dests || !this.dest || this.destIndex + 1 >= this.dests.length) return false;
    if (this.cancelWanted || this.earlyDialogs.size > 0 || this.progressed || (this.state !== 'calling' && this.state !== 'proceeding')) return false;
    this.ua.noteTargetFailed(this.dest, unavailableMs);
    // Its transaction lives on (retransmitting, or absorbing the retransmissions of the 503):
    // should that server answer after all, fromAbandonedServer winds its call up.
    this.ua.log.info({ sipCallId: this.callId, failed: `${this.dest.host}:${this.dest.port}`, next: `${this.dests[this.destIndex + 1].host}:${this.dests[this.destIndex + 1].port}` }, 'INVITE: server failed, trying the next one (RFC 3263)');
    this.destIndex++;
    this.cseq = Math.max(this.cseq, this.prackSeq) + 1;
    // Nothing heard from the next server yet: a CANCEL waits for its provisional (§9.1).
    this.state = 'calling';
    this.send().catch((err: Error) => this.fail(err));
    return true;
  }

  /**
   * A server we failed over from answers after all (it was slow, or its answers were lost): it
   * must not be left ringing or answered into silence. Its ringing is CANCELled; its answer is
   * ACKed and ended with BYE, as a second branch of a fork is (RFC 3261 §13.2.2.4).
   */
  private fromAbandonedServer(res: SipResponse, req: SipRequest, dest: Destination, tx: InviteClientTransaction): void {
    if (res.status < 200) {
      if (this.abandonedCancelled.has(tx)) return;
      this.abandonedCancelled.add(tx);
      this.ua.sendCancel(req, dest, tx);
      return;
    }
    if (res.status < 300) this.dropForkedAnswer(res, parseNameAddr(res.header('to') ?? '')?.params.tag ?? '', req);
    // A final error is ACKed by its transaction.
  }

  private onResponse(res: SipResponse): void {
    const s = res.status;
    if (res.source.host) this.heard = true; // not one the transaction made up (transport error)
    if (s > 100 && s < 200) this.progressed = true;
    if (s === 503 && this.failOver(res.source.host ? unavailableFor(res) : undefined)) return;
    if (s < 200) {
      if (this.state === 'calling') this.state = 'proceeding';
      if (this.cancelWanted && !this.cancelSent) this.sendCancel();
      if (s > 100 && this.acknowledgeReliable(res)) {
        // An unreliable 18x's SDP is no answer (RFC 3261 §13.2.1), but a 200 without SDP after
        // it means that one to the peer that sent it: kept per early dialog, as a fallback.
        const toTag = parseNameAddr(res.header('to') ?? '')?.params.tag ?? '';
        if (res.body.trim() && /application\/sdp/i.test(res.header('content-type') ?? '') && !this.earlyDialogs.has(toTag)) this.unreliableEarlySdp.set(toTag, res.body);
        this.emit('progress', res);
      }
      return;
    }
    if (s < 300) { this.onSuccess(res); return; }
    if (s === 422 && !this.retried422 && !this.cancelWanted && this.sessionExpires > 0) {
      // Our interval was below the peer's Min-SE (RFC 4028 §7.3): ask again with theirs.
      const minSe = readMinSe(res);
      if (minSe && minSe > this.sessionExpires) {
        this.retried422 = true;
        this.sessionExpires = minSe;
        this.cseq = Math.max(this.cseq, this.prackSeq) + 1;
        // send() recomputes any credentials we hold for the new request (nc + 1).
        this.send().catch((err: Error) => this.fail(err));
        return;
      }
    }
    if ((s === 401 || s === 407) && this.auth && !this.cancelWanted && this.authAttempts < 3 && this.auth.accept(res)) {
      this.authAttempts++;
      this.cseq = Math.max(this.cseq, this.prackSeq) + 1;
      this.send().catch((err: Error) => this.fail(err));
      return;
    }
    if (this.state === 'accepted') return;
    this.state = this.cancelWanted && s === 487 ? 'cancelled' : 'rejected';
    this.done();
    this.emit('rejected', res);
  }

  /**
   * A reliable provisional response (Require: 100rel with an RSeq, RFC 3262 §4) is PRACKed
   * once, in order, per early dialog; its retransmissions and any that skip ahead of one not yet
   * seen are neither PRACKed nor passed on (false) — except that a retransmission whose PRACK
   * failed is PRACKed again. Any other 1xx is passed on (true).
   */
  private acknowledgeReliable(res: SipResponse): boolean {
    const required = requires100rel(res);
    const rseqText = res.header('rseq')?.trim() ?? '';
    const rseq = Number(rseqText);
    if (!required || !/^\d{1,10}$/.test(rseqText) || rseq < 1 || rseq > 0xffffffff) return true;
    if (this.state !== 'proceeding' || !this.request) return false;
    const toTag = parseNameAddr(res.header('to') ?? '')?.params.tag ?? '';
    const early = this.earlyDialogs.get(toTag);
    if (early && rseq === early.rseq && early.prackFailed) { this.prack(res, early); return false; }
    if (early && rseq !== early.rseq + 1) return false;
    const sdp = res.body.trim() && /application\/sdp/i.test(res.header('content-type') ?? '') ? res.body : null;
    const state = { rseq, prackFailed: false, answer: early?.answer ?? sdp };
    this.earlyDialogs.set(toTag, state);
    this.prack(res, state);
    return true;
  }

  private prack(res: SipResponse, state: { rseq: number; prackFailed: boolean }): void {
    state.prackFailed = false;
    this.sendPrack(res, state.rseq)
      .then((ok) => { state.prackFailed = !ok; })
      .catch((err: Error) => {
        state.prackFailed = true;
        this.ua.log.warn({ err, sipCallId: this.callId }, 'PRACK not sent');
      });
  }

  /**
   * PRACK within the early dialog the 18x set up (§12.1.2: its Contact, its Record-Route
   * reversed); a digest challenge is answered as for our INVITE. Resolves whether it got a 2xx.
   */
  private async sendPrack(res: SipResponse, rseq: number): Promise<boolean> {
    const contact = parseNameAddr(res.header('contact') ?? '')?.uri ?? this.opts.requestUri;
    const routes = res.headers('record-route').reverse();
    const toTag = parseNameAddr(res.header('to') ?? '')?.params.tag ?? '';
    const dest = await this.ua.resolve(routes.length ? parseNameAddr(routes[0])?.uri ?? contact : contact);
    const answer = await sendWithCredentials(this.auth, () => {
      const req = new SipRequest('PRACK', contact);
      req.addHeader('Via', this.ua.viaFor(dest.transport));
      for (const r of routes) req.addHeader('Route', r);
      req.addHeader('Max-Forwards', '70');
      req.addHeader('From', this.request!.header('from')!);
      req.addHeader('To', res.header('to')!);
      req.addHeader('Call-ID', this.callId);
      // The 2xx of this early dialog came while the PRACK waited for its destination's address
      // (a DNS lookup): the PRACK is a request of the dialog now, numbered in its sequence —
      // else the dialog's next request took the same CSeq (§12.2.1.1).
      const answered = this.dialog?.remoteTag === toTag ? this.dialog : null;
      this.prackSeq = answered ? ++answered.localSeq : Math.max(this.prackSeq, this.cseq) + 1;
      req.addHeader('CSeq', `${this.prackSeq} PRACK`);
      req.addHeader('RAck', `${rseq} ${res.cseq.seq} INVITE`);
      if (this.ua.opts.userAgent) req.addHeader('User-Agent', this.ua.opts.userAgent);
      return req;
    }, (req) => this.ua.sendRequest(req, dest),
    // Answered meanwhile: the dialog's requests own the CSeq numbers from here on.
    () => this.state === 'proceeding');
    if (answer.status < 300) return true;
    // Challenged as the call was answered: the dialog takes over (with the challenge kept), not refused.
    if (this.state === 'proceeding') this.ua.log.warn({ sipCallId: this.callId, status: answer.status, rseq }, 'PRACK refused');
    return false;
  }

  private onSuccess(res: SipResponse): void {
    if (this.dialog) {
      const tag = parseNameAddr(res.header('to') ?? '')?.params.tag ?? '';
      if (tag === this.dialog.remoteTag) this.reAck(res);
      else this.dropForkedAnswer(res, tag);
      return;
    }
    if (this.state === 'rejected' || this.state === 'failed') return;
    const toTag = parseNameAddr(res.header('to') ?? '')?.params.tag ?? '';
    const contact = parseNameAddr(res.header('contact') ?? '')?.uri ?? this.opts.requestUri;
    // The route set is the Record-Route list in reverse for the UAC (§12.1.2).
    const routes = res.headers('record-route').reverse();
    const dialog = new Dialog(
      this.ua, this.callId, this.fromTag, toTag, this.request!.header('from')!, res.header('to')!, contact, routes,
      Math.max(this.cseq, this.prackSeq), 0, 'confirmed', this.ua.log.child({ sipCallId: this.callId }),
    );
    this.dialog = dialog;
    this.ua.registerDialog(dialog);
    dialog.ownsCallId = true;
    dialog.localSdp = this.opts.sdp;
    dialog.auth = this.auth;
    dialog.notePeerAllow(res);
    const se = this.sessionExpires > 0 ? readSessionExpires(res) : null;
    // refresher=uac (or none given) means us; no Session-Expires in the 2xx means no timer (RFC 4028 §7.2).
    if (se) dialog.sessionTimer.start(se.interval, se.refresher !== 'uas');
    this.state = 'accepted';
    this.sendAck(res);
    dialog.once('terminated', () => this.done());
    const answer = res.body.trim() ? res.body : this.earlyDialogs.get(toTag)?.answer ?? this.unreliableEarlySdp.get(toTag) ?? '';
    this.emit('accepted', res, dialog, answer);
  }

  private sendAck(res: SipResponse): void {
    const d = this.dialog!;
    const ack = d.createRequest('ACK');
    ack.setHeader('CSeq', `${res.cseq.seq} ACK`);
    copyCredentials(this.request!, ack);
    this.ua.sendInDialog(d, ack).catch(() => undefined);
    this.lastAck = ack.toString();
  }

  /** Re-send the ACK for a retransmitted 2xx (of the answer we took, or of a fork we dropped). */
  reAck(res: SipResponse): void {
    const tag = parseNameAddr(res.header('to') ?? '')?.params.tag ?? '';
    if (this.dialog && tag !== this.dialog.remoteTag) { this.dropForkedAnswer(res, tag); return; }
    if (!this.dialog || this.dialog.state === 'terminated') return;
    this.sendAck(res);
  }

  /**
   * A 2xx from a second branch of a forked INVITE, after we took the first (RFC 3261
   * §13.2.2.4): its dialog is ACKed and at once ended with BYE — unACKed, that phone would sit
   * answered and silent until its timers gave up. Its retransmissions are ACKed again.
   */
  /** `invite`: the INVITE `res` answers, whose credentials its ACK carries (a failover's may differ). */
  private dropForkedAnswer(res: SipResponse, tag: string, invite: SipRequest = this.request!): void {
    const known = this.forksDropped.get(tag);
    if (known) { known.ack(res); return; }
    const contact = parseNameAddr(res.header('contact') ?? '')?.uri ?? this.opts.requestUri;
    const fork = new Dialog(
      this.ua, this.callId, this.fromTag, tag, this.request!.header('from')!, res.header('to')!, contact, res.headers('record-route').reverse(),
      Math.max(this.cseq, this.prackSeq), 0, 'confirmed', this.ua.log.child({ sipCallId: this.callId, fork: tag }),
    );
    fork.auth = this.auth;
    fork.ownsCallId = true;
    const ack = (r: SipResponse) => {
      const req = fork.createRequest('ACK');
      req.setHeader('CSeq', `${r.cseq.seq} ACK`);
      copyCredentials(invite, req);
      this.ua.sendInDialog(fork, req).catch(() => undefined);
    };
    this.forksDropped.set(tag, { ack });
    ack(res);
    this.ua.log.info({ sipCallId: this.callId, toTag: tag }, 'a second branch of the fork answered: ACK and BYE');
    fork.bye().catch(() => undefined);
  }

  /** A request to our tag `localTag` belongs to this INVITE's early dialogs (not answered yet). */
  isEarlyDialogOf(localTag: string): boolean {
    return localTag === this.fromTag && this.state === 'proceeding';
  }

  /** CANCEL (§9.1): only after a provisional response; a 2xx may still cross it. */
  cancel(): void {
    if (this.cancelWanted) return;
    this.cancelWanted = true;
    if (this.state === 'proceeding') this.sendCancel();
  }

  private sendCancel(): void {
    if (!this.request || !this.dest || this.cancelSent) return;
    this.cancelSent = true;
    this.ua.sendCancel(this.request, this.dest, this.tx);
  }

  private fail(err: Error): void {
    if (this.state === 'accepted' || this.state === 'rejected' || this.state === 'failed') return;
    this.state = 'failed';
    this.done();
    this.emit('failed', err);
  }

  private done(): void {
    this.clearFailoverTimer();
    // Keep the entry while a dialog lives so retransmitted 2xx are re-ACKed.
    if (!this.dialog || this.dialog.state === 'terminated') this.ua.clientInvites.delete(this.callId);
  }
}

// ------------------------------------------------------------------ ServerInvite

type ProgressOptions = { sdp?: string; headers?: Array<[string, string]> };

/**
 * An incoming out-of-dialog INVITE (UAS core, §13.3). 100 Trying is already sent; the owner
 * answers with progress/accept/reject. CANCEL is answered by the UA (487 to the INVITE).
 */
export class ServerInvite extends EventEmitter<{ cancelled: []; unacknowledged: [] }> {
  readonly localTag = newTag();
  finalSent = false;
  private dialog: Dialog | null = null;
  /**
   * RFC 3262 as UAS: our 18x go reliably to a caller that requires it (Require: 100rel). One
   * that only supports it gets them unreliable, which every UAC takes.
   */
  private readonly reliable: boolean;
  private nextRSeq = randomInt(1, 0x7fffffff);
  /** The reliable 18x retransmitted until its PRACK, and one waiting behind it (§3: one at a time). */
  private unacked: { res: SipResponse; rseq: number; timer: unknown } | null = null;
  private queued: { status: number; opts: ProgressOptions } | null = null;
  private lastAckedRSeq = 0;

  constructor(private readonly ua: SipUserAgent, readonly request: SipRequest, private readonly tx: InviteServerTransaction) {
    super();
    this.reliable = requires100rel(request);
  }

  get callId(): string { return this.request.callId; }

  /** A reliable 18x of ours waits for its PRACK (and is being sent again meanwhile). */
  get awaitingPrack(): boolean { return this.unacked !== null; }

  progress(status: number, opts: ProgressOptions = {}): void {
    if (this.finalSent) return;
    if (this.reliable && status > 100 && this.unacked) { this.queued = { status, opts }; return; }
    const res = this.ua.makeResponse(this.request, status, defaultReason(status), this.localTag);
    res.addHeader('Contact', this.ua.contactUri(this.ua.transportFor(this.request)));
    // An 18x with our tag sets up an early dialog: its route set comes from these (§12.1.1), and
    // the caller's PRACK (or early BYE) must take the proxies that asked to stay in the path.
    if (status > 100) for (const rr of this.request.headers('record-route')) res.addHeader('Record-Route', rr);
    for (const [k, v] of opts.headers ?? []) res.addHeader(k, v);
    if (opts.sdp) { res.addHeader('Content-Type', 'application/sdp'); res.body = opts.sdp; }
    if (this.reliable && status > 100) {
      res.addHeader('Require', '100rel');
      const rseq = this.nextRSeq++;
      res.addHeader('RSeq', String(rseq));
      this.unacked = { res, rseq, timer: null };
      this.resendUntilPrack(this.ua.timers.T1, 0);
    }
    this.tx.respond(res);
  }

  /**
   * Sends the reliable 18x again at T1, 2·T1, 4·T1 … (RFC 3262 §3) until its PRACK; after 64·T1
   * without one the INVITE is refused with 500 and the owner told ('unacknowledged').
   */
  private resendUntilPrack(interval: number, elapsed: number): void {
    const u = this.unacked!;
    u.timer = this.ua.clock.setTimeout(() => {
      if (this.unacked !== u || this.finalSent) return;
      const waited = elapsed + interval;
      if (waited >= 64 * this.ua.timers.T1) {
        this.unacked = null;
        this.ua.log.warn({ sipCallId: this.callId, rseq: u.rseq }, 'no PRACK for our reliable provisional response: refusing the INVITE');
        this.reject(500, 'Provisional Response Not Acknowledged');
        this.emit('unacknowledged');
        return;
      }
      this.tx.respond(u.res);
      this.resendUntilPrack(Math.min(interval * 2, 64 * this.ua.timers.T1 - waited), waited);
    }, interval);
  }

  /**
   * A PRACK in our early dialog: 200 when its RAck names the reliable 18x outstanding (or the
   * one acknowledged last: a PRACK sent again in a new transaction), 481 otherwise (§3).
   */
  prack(req: SipRequest): number {
    const [rseq, cseq, method] = (req.header('rack') ?? '').trim().split(/\s+/);
    if (Number(cseq) !== this.request.cseq.seq || method?.toUpperCase() !== 'INVITE') return 481;
    if (this.lastAckedRSeq && Number(rseq) === this.lastAckedRSeq) return 200;
    const u = this.unacked;
    if (!u || Number(rseq) !== u.rseq) return 481;
    this.ua.clock.clearTimeout(u.timer);
    this.unacked = null;
    this.lastAckedRSeq = u.rseq;
    const next = this.queued;
    this.queued = null;
    if (next) this.progress(next.status, next.opts);
    return 200;
  }

  /** A final response ends the reliable 18x's retransmissions (ours never carry SDP, so the 2xx need not wait for PRACK). */
  private stopReliable(): void {
    if (this.unacked) this.ua.clock.clearTimeout(this.unacked.timer);
    this.unacked = null;
    this.queued = null;
  }

  accept(sdp: string, headers: Array<[string, string]> = []): Dialog {
    if (this.finalSent) throw new Error('INVITE already answered');
    this.finalSent = true;
    this.stopReliable();
    const req = this.request;
    const res = this.ua.makeResponse(req, 200, 'OK', this.localTag);
    res.addHeader('Contact', this.ua.contactUri(this.ua.transportFor(req)));
    res.addHeader('Allow', ALLOW);
    for (const rr of req.headers('record-route')) res.addHeader('Record-Route', rr);
    res.addHeader('Supported', 'timer, 100rel');
    const timer = negotiateAsUas(req, this.ua.sessionTimerSettings);
    if (timer && 'agreed' in timer) for (const [k, v] of timer.headers) res.addHeader(k, v);
    for (const [k, v] of headers) res.addHeader(k, v);
    res.addHeader('Content-Type', 'application/sdp');
    res.body = sdp;
    const fromTag = parseNameAddr(req.header('from')!)?.params.tag ?? '';
    const contact = parseNameAddr(req.header('contact') ?? '')?.uri ?? parseNameAddr(req.header('from')!)!.uri;
    const dialog = new Dialog(
      this.ua, req.callId, this.localTag, fromTag, res.header('to')!, req.header('from')!, contact,
      req.headers('record-route'), Math.floor(Math.random() * 10000), req.cseq.seq, 'early',
      this.ua.log.child({ sipCallId: req.callId }),
    );
    this.dialog = dialog;
    this.ua.registerDialog(dialog);
    dialog.localSdp = sdp;
    // An INVITE without SDP (a delayed offer): ours is in this 200, its answer comes in the ACK.
    if (!req.body.trim()) dialog.awaitAnswerInAck(req.cseq.seq);
    dialog.notePeerAllow(req);
    if (timer && 'agreed' in timer) dialog.sessionTimer.start(timer.agreed.interval, timer.agreed.refresher === 'uas');
    this.ua.retransmit2xx(this.tx, res, dialog, () => {
      // No ACK within 64*T1 (§13.3.1.4): the session is not established; end it with BYE.
      this.ua.log.warn({ callId: req.callId }, 'no ACK for 200 OK: sending BYE');
      dialog.ackGivenUp();
    });
    this.tx.respond(res);
    return dialog;
  }

  reject(status: number, reason?: string, headers: Array<[string, string]> = []): void {
    if (this.finalSent) return;
    this.finalSent = true;
    this.stopReliable();
    const res = this.ua.makeResponse(this.request, status, reason ?? defaultReason(status), this.localTag);
    for (const [k, v] of headers) res.addHeader(k, v);
    this.tx.respond(res);
  }

  /** CANCEL arrived before a final response: 487 to the INVITE (§9.2). */
  cancelByPeer(): void {
    if (this.finalSent) return;
    this.reject(487, 'Request Terminated');
    this.emit('cancelled');
  }

  dispose(): void {
    if (!this.finalSent) this.reject(503, 'Service Unavailable');
    this.dialog = null;
  }
}
