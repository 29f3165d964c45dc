import type { Logger } from 'pino';
import { PortAllocator } from './portAllocator';
import { SipRtpLeg } from './sipRtpLeg';
import { MediaBridge, type BrowserMediaPort } from './mediaBridge';

/**
 * The media plane's front door. The call layer only issues commands (create a leg, bridge,
 * close) and listens to events, so this can move behind a worker-thread message channel
 * without the call layer changing.
 */
export class MediaEngine {
  private readonly ports: PortAllocator;
  private readonly legs = new Set<SipRtpLeg>();
  private readonly bridges = new Set<MediaBridge>();

  constructor(private readonly opts: { bindHost: string; advertisedHost: string; portRange: [number, number]; logger: Logger; inactivityTimeoutMs?: number; opusComplexity?: number }) {
    this.ports = new PortAllocator(opts.portRange, opts.bindHost);
  }

  async createSipLeg(o: { callId: string }): Promise<SipRtpLeg> {
    const { port, rtp, rtcp } = await this.ports.allocate();
    const leg = new SipRtpLeg(this.opts.advertisedHost, port, rtp, rtcp, {
      logger: this.opts.logger.child({ callId: o.callId }),
      inactivityTimeoutMs: this.opts.inactivityTimeoutMs ?? 30_000,
      onClose: () => { this.ports.release(port); this.legs.delete(leg); },
    });
    this.legs.add(leg);
    return leg;
  }

  createBridge(browser: BrowserMediaPort, sip: SipRtpLeg, o: { callId: string }): MediaBridge {
    const bridge = new MediaBridge(browser, sip, { callId: o.callId, logger: this.opts.logger.child({ callId: o.callId }), opusComplexity: this.opts.opusComplexity });
    this.bridges.add(bridge);
    const origClose = bridge.close.bind(bridge);
    bridge.close = () => { this.bridges.delete(bridge); origClose(); };
    return bridge;
  }

  /** Ports and objects in use: a leak check for tests and /metrics. */
  get usage(): { legs: number; bridges: number; portsAllocated: number } {
    return { legs: this.legs.size, bridges: this.bridges.size, portsAllocated: this.ports.allocated };
  }

  async close(): Promise<void> {
    for (const b of [...this.bridges]) b.close();
    for (const l of [...this.legs]) l.close();
  }
}
