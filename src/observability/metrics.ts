import type { BridgeStats } from '../media/plane';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics for /metrics (prom-client), behind typed methods. */
export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly activeCalls = new Gauge({ name: 'gateway_active_calls', help: 'Calls in progress', labelNames: ['direction'], registers: [this.registry] });
  private readonly callsTotal = new Counter({ name: 'gateway_calls_total', help: 'Call attempts by outcome cause', labelNames: ['direction', 'cause'], registers: [this.registry] });
  private readonly setupSeconds = new Histogram({ name: 'gateway_call_setup_seconds', help: 'Time from call start to answer', labelNames: ['direction'], buckets: [0.25, 0.5, 1, 2, 4, 8, 16, 32, 64], registers: [this.registry] });
  private readonly lossRatio = new Histogram({ name: 'gateway_leg_packet_loss_ratio', help: 'Per-leg packet loss at call end', labelNames: ['leg'], buckets: [0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2], registers: [this.registry] });
  private readonly jitterMs = new Histogram({ name: 'gateway_leg_jitter_ms', help: 'Per-leg interarrival jitter at call end', labelNames: ['leg'], buckets: [1, 2, 5, 10, 20, 40, 80], registers: [this.registry] });
  private readonly duplicatePackets = new Counter({ name: 'gateway_leg_duplicate_packets_total', help: 'RTP packets received twice (same sequence number), per leg, added at call end', labelNames: ['leg'], registers: [this.registry] });
  private readonly latePackets = new Counter({ name: 'gateway_leg_late_packets_total', help: 'RTP packets received after a higher-numbered one (reordered), per leg, added at call end', labelNames: ['leg'], registers: [this.registry] });
  private readonly transcodeCpu = new Counter({ name: 'gateway_transcoder_cpu_seconds_total', help: 'CPU time spent transcoding', registers: [this.registry] });
  private readonly wsConnectionsGauge = new Gauge({ name: 'gateway_websocket_connections', help: 'Open signaling WebSockets', registers: [this.registry] });
  private readonly wsDrops = new Counter({ name: 'gateway_websocket_drops_total', help: 'Signaling connections of tabs with calls that dropped (no close frame, or seen dead only when the tab resumed), their calls kept for it', registers: [this.registry] });
  private readonly wsResumes = new Counter({ name: 'gateway_websocket_resumes_total', help: 'What became of kept sessions, by result: resumed (the tab took its calls back), refused (a resume with a wrong token or from another origin), expired (the tab did not come back in time: its calls ended)', labelNames: ['result'], registers: [this.registry] });
  private readonly sipTimeouts = new Counter({ name: 'gateway_sip_transaction_timeouts_total', help: 'SIP client transactions that timed out', registers: [this.registry] });
  private readonly registrations = new Gauge({ name: 'gateway_sip_registration_state', help: '1 for the current state of each registration', labelNames: ['registration', 'state'], registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'gateway_process_' });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  callStarted(direction: string): void {
    this.activeCalls.inc({ direction });
  }

  /** `wasCounted`: callStarted counted this call (false when it threw: no decrement, no drift). */
  callEnded(direction: string, cause: string, setupMs: number | undefined, wasCounted: boolean): void {
    if (wasCounted) this.activeCalls.dec({ direction });
    this.callsTotal.inc({ direction, cause });
    if (setupMs !== undefined) this.setupSeconds.observe({ direction }, setupMs / 1000);
  }

  /** A call's media figures, once the media plane has given them (after the call ended). */
  callQuality(quality: BridgeStats): void {
    for (const [leg, s] of [['browser', quality.browser], ['sip', quality.sip]] as const) {
      const expected = s.packetsReceived - s.duplicates + s.packetsLost; // each packet sent once
      this.lossRatio.observe({ leg }, expected > 0 ? s.packetsLost / expected : 0);
      this.jitterMs.observe({ leg }, s.jitterMs);
      // Each call's counts go into running totals, as its transcoder CPU does.
      this.duplicatePackets.inc({ leg }, s.duplicates);
      this.latePackets.inc({ leg }, s.late);
    }
    if (quality.transcodeCpuMs > 0) this.transcodeCpu.inc(quality.transcodeCpuMs / 1000);
  }

  wsConnections(n: number): void {
    this.wsConnectionsGauge.set(n);
  }

  /** A tab's connection dropped with its calls kept, or what became of such a wait. */
  wsResume(event: 'dropped' | 'resumed' | 'refused' | 'expired'): void {
    if (event === 'dropped') this.wsDrops.inc();
    else this.wsResumes.inc({ result: event });
  }

  sipTimeout(): void {
    this.sipTimeouts.inc();
  }

  /** Made when the trunk is first watched: without OPTIONS keepalives there is no figure (a 0 would read "down"). */
  private trunkReachableGauge: Gauge | null = null;

  trunkReachable(ok: boolean): void {
    this.trunkReachableGauge ??= new Gauge({ name: 'gateway_trunk_reachable', help: '1 when the trunk answers OPTIONS keepalives, 0 when not (absent when keepalives are off)', registers: [this.registry] });
    this.trunkReachableGauge.set(ok ? 1 : 0);
  }

  registrationState(name: string, state: string): void {
    for (const s of ['unregistered', 'registering', 'registered', 'failed']) this.registrations.set({ registration: name, state: s }, s === state ? 1 : 0);
  }

  /** With media workers: how many take calls, and how many times one exited (read at each scrape). */
  mediaWorkers(source: () => { running: number; exits: number; hangs: number; rtpDropped: { toWorkers: number; toBrowsers: number } }): void {
    new Gauge({ name: 'gateway_media_workers_running', help: 'Media worker threads taking calls', registers: [this.registry], collect() { this.set(source().running); } });
    // The plane keeps running totals; each counter adds what is new since its last collection.
    const fromTotal = (name: string, help: string, total: () => number) => {
      let counted = 0;
      new Counter({
        name, help, registers: [this.registry],
        collect() {
          const n = total();
          if (n > counted) this.inc(n - counted);
          counted = n;
        },
      });
    };
    fromTotal('gateway_media_worker_exits_total', 'Media worker threads that exited (their calls ended with cause failed)', () => source().exits);
    fromTotal('gateway_media_worker_hangs_total', 'Media worker threads stopped for not answering heartbeats (also counted as exits)', () => source().hangs);
    let dropped = { toWorker: 0, toBrowser: 0 };
    new Counter({
      name: 'gateway_media_rtp_queue_dropped_total',
      help: 'Audio packets dropped because the thread they were for was too far behind reading them',
      labelNames: ['direction'],
      registers: [this.registry],
      collect() {
        const d = source().rtpDropped;
        if (d.toWorkers > dropped.toWorker) this.inc({ direction: 'toWorker' }, d.toWorkers - dropped.toWorker);
        if (d.toBrowsers > dropped.toBrowser) this.inc({ direction: 'toBrowser' }, d.toBrowsers - dropped.toBrowser);
        dropped = { toWorker: d.toWorkers, toBrowser: d.toBrowsers };
      },
    });
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }
}
