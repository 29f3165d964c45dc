import type { Logger } from 'pino';
import { PortAllocator } from './portAllocator';
import { SipRtpLeg } from './sipRtpLeg';
import { MediaBridge, type BrowserMediaPort } from './mediaBridge';
import type { BridgeHandle, BridgeStats, MediaPlane, MediaUsage, SipLegHandle } from './plane';

export interface MediaEngineOptions {
  bindHost: string;
  advertisedHost: string;
  portRange: [number, number];
  logger: Logger;
  inactivityTimeoutMs?: number;
  opusComplexity?: number;
}

/**
 * The media plane in this thread: SIP legs from a port range, bridges between them and browser
 * legs. It is what a media worker thread runs too (mediaWorker.ts); the call layer sees it only
 * through the MediaPlane commands and events.
 */
export class MediaEngine implements MediaPlane {
  private readonly ports: PortAllocator;
  private readonly legs = new Set<SipRtpLeg>();
  private readonly bridges = new Set<LocalBridge>();

  constructor(private readonly opts: MediaEngineOptions) {
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

  createBridge(browser: BrowserMediaPort, leg: SipLegHandle, o: { callId: string }): LocalBridge {
    if (!(leg instanceof SipRtpLeg) || !this.legs.has(leg)) throw new Error('createBridge: the SIP leg is not one of this engine\'s open legs');
    const bridge = new MediaBridge(browser, leg, { callId: o.callId, logger: this.opts.logger.child({ callId: o.callId }), opusComplexity: this.opts.opusComplexity });
    const handle = new LocalBridge(bridge, () => this.bridges.delete(handle));
    this.bridges.add(handle);
    return handle;
  }

  get usage(): MediaUsage {
    return { legs: this.legs.size, bridges: this.bridges.size, portsAllocated: this.ports.allocated };
  }

  async close(): Promise<void> {
    for (const b of [...this.bridges]) void b.close();
    for (const l of [...this.legs]) l.close();
  }
}

/** A bridge in this thread behind the BridgeHandle commands; `bridge` is there for the worker host and tests. */
export class LocalBridge implements BridgeHandle {
  private closed = false;

  constructor(readonly bridge: MediaBridge, private readonly onClose: () => void) {}

  setBrowserTone(kind: 'ringback' | 'none'): void { this.bridge.setBrowserTone(kind); }
  setHold(holdByBrowser: boolean, holdBySip: boolean): void { this.bridge.setHold(holdByBrowser, holdBySip); }
  sendDtmfToSip(digit: string, durationMs?: number): void { this.bridge.sendDtmfToSip(digit, durationMs); }
  sendDtmfToBrowser(digit: string, durationMs?: number): void { this.bridge.sendDtmfToBrowser(digit, durationMs); }

  onDtmf(listener: (ev: { digit: string; from: 'browser' | 'sip' }) => void): void {
    this.bridge.on('dtmf', listener);
  }

  /** Final figures taken just before the bridge stops (synchronously: the worker host needs them at once). */
  closeNow(): BridgeStats | undefined {
    if (this.closed) return undefined;
    this.closed = true;
    let stats: BridgeStats | undefined;
    try {
      stats = this.bridge.stats();
    } catch {
      /* statistics are best effort at teardown */
    }
    this.bridge.close();
    this.onClose();
    return stats;
  }

  close(): Promise<BridgeStats | undefined> {
    return Promise.resolve(this.closeNow());
  }
}
