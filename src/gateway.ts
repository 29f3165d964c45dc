import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { DigestServer, OptionsPing, parseUri, SipUserAgent, type Registration, type SipTransportConfig } from './sip';
import { trustedCas } from './sip/trustedCas';
import { hostForUri } from './sip/userAgent';
import { MediaEngine, type MediaPlane } from './media';
import { WorkerMediaPlane } from './media/worker/workerMediaPlane';
import type { GatewayConfig } from './config';
import { DEFAULT_ANSWER_TIMEOUT_SEC } from './config/schema';
import { GatewayMetrics } from './observability/metrics';
import { CdrWriter } from './observability/cdr';
import { Readiness } from './observability/health';
import { CallManager } from './calls/callManager';
import type { CallContext } from './calls/callBase';
import { HttpServer, sendJson } from './http/httpServer';
import { SignalingServer } from './signaling/signalingServer';
import { DemoEndpoint } from './demo/demoEndpoint';
import { buildRouting } from './routing';
import { UserRegistrations } from './userRegistrations';
import { IcePortPool } from './webrtc/icePortPool';
import { buildAuthenticator, buildEdgeGuards } from './edgeSetup';

export type GatewayState = 'created' | 'starting' | 'running' | 'draining' | 'stopped';

/**
 * The composition root: builds every part from the validated configuration, starts them in
 * dependency order and stops them in reverse. Each resource has exactly one owner here.
 */
export class Gateway {
  state: GatewayState = 'created';
  readonly metrics = new GatewayMetrics();
  private ua: SipUserAgent | null = null;
  private media: MediaPlane | null = null;
  /** CDR lines waiting for their call's final media statistics (written before the CDR file closes). */
  private readonly pendingCdr = new Set<Promise<void>>();
  private demo: DemoEndpoint | null = null;
  private trunkPing: OptionsPing | null = null;
  private userRegistrations: UserRegistrations | null = null;
  private http: HttpServer | null = null;
  private signaling: SignalingServer | null = null;
  private manager: CallManager | null = null;
  private cdr: CdrWriter | null = null;
  private readonly registrations: Registration[] = [];
  private readonly readiness = new Readiness();
  httpAddress: { host: string; port: number } | null = null;
  sipAddress: { host: string; port: number } | null = null;

  constructor(private readonly config: GatewayConfig, private readonly logger: Logger, private readonly opts: {
    webRoot?: string;
    /** false: browser audio on werift's own RTP path (the benchmark's comparison). */
    directSrtp?: boolean;
  } = {}) {}

  async start(): Promise<void> {
    if (this.state !== 'created') throw new Error(`gateway cannot start from state ${this.state}`);
    this.state = 'starting';
    try {
      await this.startParts();
      this.state = 'running';
    } catch (err) {
      await this.stopParts();
      this.state = 'stopped';
      throw err;
    }
  }

  private async startParts(): Promise<void> {
    const c = this.config;
    const log = this.logger;
    this.cdr = new CdrWriter(c.cdr.path);

    this.ua = new SipUserAgent({
      transports: sipTransports(c),
      logger: log.child({ component: 'sip' }),
      userAgent: 'webrtc-sip-gateway',
      sessionTimers: { expires: c.sip.sessionExpiresSec, minSe: c.sip.minSessionExpiresSec },
      onTransactionTimeout: () => this.metrics.sipTimeout(),
      dnsServers: c.sip.dnsServers,
    });
    await this.ua.start();
    const udp = this.ua.boundAddresses.find((a) => a.protocol === 'udp') ?? this.ua.boundAddresses[0];
    this.sipAddress = { host: c.sip.advertisedHost ?? udp.host, port: udp.port };
    this.readiness.set('sipBound', true);

    const mediaOpts = {
      bindHost: c.media.host,
      advertisedHost: c.media.advertisedHost ?? c.media.host,
      portRange: c.media.portRange,
      opusComplexity: c.media.opusComplexity,
      logger: log.child({ component: 'media' }),
      inactivityTimeoutMs: c.media.inactivityTimeoutSec * 1000,
    };
    if (c.media.workers > 0) {
      const plane = new WorkerMediaPlane({ ...mediaOpts, workers: c.media.workers });
      this.media = plane;
      await plane.start();
      // Not ready while no media worker can take a call (all dead and waiting to be restarted).
      this.readiness.watch('mediaWorkers', () => plane.runningWorkers > 0);
      this.metrics.mediaWorkers(() => ({ running: plane.runningWorkers, exits: plane.workerExits, hangs: plane.workerHangs, rtpDropped: plane.rtpDropped }));
    } else {
      this.media = new MediaEngine(mediaOpts);
    }

    if (c.demo.enabled) {
      this.demo = new DemoEndpoint({ host: '127.0.0.1', port: c.demo.sipPort, gatewayUri: `${this.sipAddress.host}:${this.sipAddress.port}`, logger: log });
      await this.demo.start();
    }

    const ctx: CallContext = {
      logger: log,
      media: this.media,
      ice: {
        bindAddress: c.webrtc.bindAddress ?? c.webrtc.hostAddresses[0],
        announcedAddresses: c.webrtc.advertisedAddress ? [c.webrtc.advertisedAddress] : c.webrtc.hostAddresses,
        portRange: c.webrtc.portRange,
        portPool: new IcePortPool(c.webrtc.portRange),
        connectTimeoutMs: c.webrtc.connectTimeoutSec * 1000,
        directSrtp: this.opts.directSrtp,
      },
      srtp: c.trunk?.srtp ?? 'off',
      sipCodecs: c.trunk?.codecs ?? ['PCMU', 'PCMA'],
      preferPcmuToBrowser: c.webrtc.preferPcmu,
      browserMediaTimeoutMs: c.media.inactivityTimeoutSec * 1000,
      answerTimeoutMs: (c.trunk?.answerTimeoutSec ?? DEFAULT_ANSWER_TIMEOUT_SEC) * 1000,
    };

    const guards = buildEdgeGuards(c);
    this.http = new HttpServer({
      webRoot: this.opts.webRoot ?? join(projectRoot(), 'web'),
      logger: log.child({ component: 'http' }),
      tls: c.http.tls ? { cert: readFileSync(c.http.tls.certFile, 'utf8'), key: readFileSync(c.http.tls.keyFile, 'utf8') } : undefined,
    });
    // The directory is the signaling server; the manager needs it, and it needs the manager.
    let signaling: SignalingServer | null = null;
    // Calls the active-calls gauge counted: one whose callStarted threw is not taken off it.
    const countedActive = new Set<string>();
    this.manager = new CallManager({
      ua: this.ua,
      ctx,
      routing: buildRouting(c, this.demo ? this.demo.sipUri : null),
      directory: { ringTargets: (user) => signaling?.ringTargets(user) ?? [] },
      logger: log,
      maxCallsGlobal: c.limits.maxCallsGlobal,
      ringTimeoutMs: c.inbound.ringTimeoutSec * 1000,
      inboundAuth: c.inbound.digest ? new DigestServer(c.inbound.digest.realm, (u) => c.inbound.digest!.users[u]) : undefined,
      hooks: {
        callStarted: (call) => {
          this.metrics.callStarted(call.direction);
          countedActive.add(call.id);
        },
        callEnded: (call) => {
          const rec = call.record();
          this.metrics.callEnded(call.direction, rec.cause, call.answeredAt ? call.answeredAt.getTime() - call.startedAt.getTime() : undefined, countedActive.delete(call.id));
          guards.releaseCall(call.id);
          // The record waits for the bridge's final figures (a message round trip when the media
          // runs in a worker thread); stop() writes the waiting ones before closing the file.
          const pending = call.mediaReleased.then(() => {
            const final = call.record();
            if (final.quality) this.metrics.callQuality(final.quality);
            try {
              this.cdr?.write(final);
            } catch (err) {
              // Not lost: the record goes to the log whole (a CDR holds no secret), for recovery.
              call.log.error({ err, cdr: final }, 'CDR write failed: the record is in this log line');
            }
          });
          this.pendingCdr.add(pending);
          void pending.finally(() => this.pendingCdr.delete(pending));
        },
        callRefused: (record) => {
          this.metrics.callEnded(record.direction, record.cause, undefined, false);
          try {
            this.cdr?.write(record);
          } catch (err) {
            log.error({ err, cdr: record }, 'CDR write failed: the record is in this log line');
          }
        },
      },
    });
    if (c.inbound.registerUsers) this.userRegistrations = new UserRegistrations(this.ua, c.inbound.registerUsers, log.child({ component: 'user-registrations' }));
    signaling = new SignalingServer(this.http.server, {
      manager: this.manager,
      authenticate: buildAuthenticator(c),
      iceServers: c.webrtc.turnServers.concat(c.webrtc.stunServers.map((u) => ({ urls: u }))),
      demo: c.auth.mode === 'demo',
      logger: log.child({ component: 'signaling' }),
      maxMessageBytes: c.limits.wsMaxMessageBytes,
      messagesPerSec: c.limits.wsMessagesPerSec,
      heartbeatMs: c.limits.wsHeartbeatSec * 1000,
      helloTimeoutMs: c.limits.wsHelloTimeoutSec * 1000,
      resumeGraceMs: c.limits.wsResumeGraceSec * 1000,
      originAllowed: guards.originAllowed,
      connectAttempt: guards.connectAttempt,
      callAttempt: guards.callAttempt,
      onConnectionChange: (n) => this.metrics.wsConnections(n),
      onResumeEvent: (event) => this.metrics.wsResume(event),
      onUserPresence: (user, online) => {
        if (!this.userRegistrations) return;
        if (online) this.userRegistrations.online(user);
        else this.userRegistrations.offline(user);
      },
    });
    this.signaling = signaling;
    this.addRoutes(this.http, signaling);
    this.httpAddress = await this.http.listen(c.http.host, c.http.port);

    if (c.trunk && c.trunk.optionsKeepaliveSec > 0) {
      // /readyz reports the trunk only when we watch it; until the first answer it is "not yet".
      this.readiness.set('trunkReachable', false);
      this.metrics.trunkReachable(false);
      const ping = new OptionsPing(this.ua, c.trunk.uri, c.trunk.optionsKeepaliveSec, c.trunk.outboundProxy);
      ping.on('change', (ok) => { this.readiness.set('trunkReachable', ok); this.metrics.trunkReachable(ok); });
      ping.start();
      this.trunkPing = ping;
    }
    for (const reg of c.trunk?.register ? [c.trunk] : []) {
      const r = this.ua.register({
        registrar: reg.uri,
        aor: `sip:${reg.username}@${reg.fromDomain ? hostForUri(reg.fromDomain) : hostOf(reg.uri)}`,
        credentials: reg.username && reg.password ? { username: reg.username, password: reg.password } : undefined,
        outboundProxy: reg.outboundProxy,
      });
      r.on('state', (s: string) => this.metrics.registrationState('trunk', s));
      r.start();
      this.registrations.push(r);
    }
    this.readiness.set('notDraining', true);
    log.info({ http: this.httpAddress, sip: this.sipAddress, demo: !!this.demo, trunk: c.trunk ? c.trunk.uri : null }, 'gateway started');
  }

  private addRoutes(http: HttpServer, signaling: SignalingServer): void {
    http.route('GET', '/healthz', (_q, res) => sendJson(res, 200, { ok: true }));
    http.route('GET', '/readyz', (_q, res) => {
      const r = this.readiness.report();
      sendJson(res, r.ready ? 200 : 503, r);
    });
    http.route('GET', '/metrics', async (_q, res) => {
      res.writeHead(200, { 'content-type': this.metrics.contentType });
      res.end(await this.metrics.render());
    });
    if (this.demo) {
      const demo = this.demo;
      http.route('POST', '/api/demo/callback', async (_q, res, body) => {
        let sessionId: unknown;
        try { sessionId = JSON.parse(body).sessionId; } catch { /* below */ }
        const session = typeof sessionId === 'string' ? signaling.findSession(sessionId) : undefined;
        if (!session?.identity) { sendJson(res, 400, { error: 'unknown sessionId: connect first' }); return; }
        const user = session.identity.id;
        let started: boolean;
        try {
          started = await demo.callback(user);
        } catch (err) {
          this.logger.warn({ err }, 'demo callback failed');
          sendJson(res, 503, { error: 'the demo callback could not be placed' });
          return;
        }
        if (started) sendJson(res, 202, { ok: true, calling: user });
        else sendJson(res, 429, { error: 'a callback to you is already ringing or up' });
      });
    }
    if (this.config.auth.mode === 'demo') {
      // The widget always fetches a token from its site; in demo mode any token is accepted,
      // so widget-demo.html points its data-token-url here.
      http.route('GET', '/api/demo/token', (_q, res) => sendJson(res, 200, { token: 'demo-mode' }));
    }
  }

  /** Graceful drain: no new calls, live calls get `timeoutMs` to finish, then BYE. */
  async drain(timeoutMs: number): Promise<void> {
    if (this.state !== 'running') return;
    this.state = 'draining';
    this.readiness.set('notDraining', false);
    this.signaling?.stopAccepting();
    this.logger.info({ activeCalls: this.manager?.size ?? 0, timeoutMs }, 'draining');
    await this.manager?.drain(timeoutMs);
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.manager?.hangupAll();
    await this.stopParts();
    this.state = 'stopped';
    this.logger.info('gateway stopped');
  }

  private async stopParts(): Promise<void> {
    this.trunkPing?.stop();
    await this.userRegistrations?.stopAll();
    await Promise.all(this.registrations.map((r) => r.stop().catch(() => undefined)));
    await this.signaling?.close().catch(() => undefined);
    await this.http?.close().catch(() => undefined);
    // Let the BYEs of hung-up calls leave before the transports close.
    await new Promise((r) => setTimeout(r, 100));
    await this.demo?.stop().catch(() => undefined);
    await this.media?.close().catch(() => undefined);
    await Promise.all(this.pendingCdr);
    await this.ua?.stop().catch(() => undefined);
    this.cdr?.close();
  }

  get activeCalls(): number {
    return this.manager?.size ?? 0;
  }
}

function sipTransports(c: GatewayConfig): SipTransportConfig[] {
  return c.sip.transports.map((protocol) => ({
    protocol,
    host: c.sip.host,
    port: protocol === 'tls' ? c.sip.tlsPort ?? c.sip.port + 1 : c.sip.port,
    advertisedHost: c.sip.advertisedHost,
    limits: { maxConnections: c.sip.maxConnections, maxConnectionsPerIp: c.sip.maxConnectionsPerIp, firstMessageTimeoutMs: c.sip.firstMessageTimeoutSec * 1000 },
    tls: protocol === 'tls' && c.sip.tls ? {
      cert: readFileSync(c.sip.tls.certFile, 'utf8'),
      key: readFileSync(c.sip.tls.keyFile, 'utf8'),
      // Node's `ca` replaces its whole default store: a private CA is trusted besides the public
      // roots and NODE_EXTRA_CA_CERTS (which an operator may have relied on so far), not instead.
      ca: c.sip.tls.caFile ? trustedCas(c.sip.tls.caFile) : undefined,
    } : undefined,
  }));
}

function hostOf(uri: string): string {
  return parseUri(uri)?.host ?? uri; // an IPv6 host keeps its brackets, as a URI needs them
}

/** The directory holding package.json (works from src/ under tsx and from dist/src/). */
function projectRoot(): string {
  let dir = __dirname;
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}
