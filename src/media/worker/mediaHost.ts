import type { Logger } from 'pino';
import { MediaEngine, type LocalBridge } from '../mediaEngine';
import { RtpPortsExhaustedError } from '../portAllocator';
import type { BrowserMediaPort, ReceptionReport } from '../mediaBridge';
import type { SipLegRemote, SipRtpLeg } from '../sipRtpLeg';
import type { SdesCrypto } from '../srtp';
import type { RtpPacketView } from '../rtp';
import type { BridgeStats } from '../plane';
import { FailedBridges, readPacketBatch } from './packetBatch';
import { RtpOutbox, RtpReadAcks } from './rtpFlow';
import type { BrowserPortDescription, MediaCommand, MediaEvent, MediaWorkerData } from './protocol';

type Post = (ev: MediaEvent, transfer?: ArrayBuffer[]) => void;

/**
 * The worker side of the media plane: runs a MediaEngine on the commands from the main thread
 * and posts its events back. Browser legs stay on the main thread (werift owns their sockets),
 * so each bridge gets a RemoteBrowserPort that takes the browser's audio from the batches the
 * main thread posts and batches the audio for the browser the other way.
 */
export class MediaHost {
  private readonly engine: MediaEngine;
  private readonly legs = new Map<number, SipRtpLeg>();
  private readonly bridges = new Map<number, { handle: LocalBridge; port: RemoteBrowserPort }>();
  /** Audio for the browsers, capped at what the main thread has not read yet. */
  private readonly toBrowser: RtpOutbox;
  /** Tells the main thread how much of its audio was read (its cap). */
  private readonly fromBrowser: RtpReadAcks;
  private readonly reportTimer: NodeJS.Timeout;
  /** debug command: createLeg answers this late. */
  private delayLegsMs = 0;

  constructor(private readonly data: MediaWorkerData, private readonly logger: Logger, private readonly post: Post) {
    this.engine = new MediaEngine({ ...data, logger });
    this.toBrowser = new RtpOutbox((batch, packets) => this.post({ t: 'rtp', batch, packets }, [batch]), () => this.bridges.size);
    this.fromBrowser = new RtpReadAcks((packets) => this.post({ t: 'rtpAck', packets }));
    // Lives as long as the thread: the main thread ends a worker by terminating it (its calls'
    // legs are closed by then; a dead thread's sockets close with it).
    this.reportTimer = setInterval(() => this.pushReports(), data.reportIntervalMs);
    this.reportTimer.unref();
  }

  /**
   * One command. A command that throws must not take the worker (and every call on it) down, as
   * it would in an uncaught handler: the call it was for fails instead, as it would in-thread.
   */
  handle(cmd: MediaCommand): void {
    try {
      this.dispatch(cmd);
    } catch (err) {
      this.logger.error({ err, command: cmd.t }, 'media command failed');
      if ('leg' in cmd) this.post({ t: 'legFailed', leg: cmd.leg, message: `${cmd.t}: ${(err as Error).message}` });
      if ('bridge' in cmd) {
        const b = this.bridges.get(cmd.bridge);
        this.bridges.delete(cmd.bridge);
        try { b?.handle.closeNow(); } catch { /* already failing */ }
        this.post({ t: 'bridgeFailed', bridge: cmd.bridge, message: `${cmd.t}: ${(err as Error).message}` });
      }
    }
  }

  /** Bridges whose packet delivery threw (logged once each; the rest of their batches went on). */
  private readonly deliveryFailures = new FailedBridges();

  private deliveryFailed(bridgeId: number, err: unknown): void {
    if (this.deliveryFailures.first(bridgeId)) this.logger.error({ err, bridge: bridgeId }, 'a browser packet could not be delivered to its bridge');
  }

  private dispatch(cmd: MediaCommand): void {
    switch (cmd.t) {
      case 'rtp':
        readPacketBatch(cmd.batch, (id, pkt) => this.bridges.get(id)?.port.deliver(pkt), (id, err) => this.deliveryFailed(id, err));
        this.fromBrowser.consumed(cmd.packets);
        return;
      case 'rtpAck':
        this.toBrowser.acked(cmd.packets);
        return;
      case 'ping':
        this.post({ t: 'pong', dropped: this.toBrowser.dropped });
        return;
      case 'debug':
        this.debug(cmd);
        return;
      case 'createLeg':
        void this.createLeg(cmd.leg, cmd.callId);
        return;
      case 'heap':
        // gc exists when node runs with --expose-gc (workers inherit the process's flags).
        if (cmd.gc) (globalThis as { gc?: () => void }).gc?.();
        this.post({ t: 'heap', used: process.memoryUsage().heapUsed, id: cmd.id });
        return;
      case 'setRemote':
        this.legs.get(cmd.leg)?.setRemote(withBufferKeys(cmd.remote));
        return;
      case 'closeLeg':
        this.legs.get(cmd.leg)?.close();
        return;
      case 'createBridge':
        this.createBridge(cmd.bridge, cmd.leg, cmd.callId, cmd.browser);
        return;
      case 'tone':
        this.bridges.get(cmd.bridge)?.handle.setBrowserTone(cmd.kind);
        return;
      case 'hold':
        this.bridges.get(cmd.bridge)?.handle.setHold(cmd.byBrowser, cmd.bySip);
        return;
      case 'dtmf':
        if (cmd.to === 'browser') this.bridges.get(cmd.bridge)?.handle.sendDtmfToBrowser(cmd.digit, cmd.durationMs);
        else this.bridges.get(cmd.bridge)?.handle.sendDtmfToSip(cmd.digit, cmd.durationMs);
        return;
      case 'closeBridge': {
        const b = this.bridges.get(cmd.bridge);
        this.bridges.delete(cmd.bridge);
        let stats: BridgeStats | undefined;
        try {
          stats = b?.handle.closeNow();
          // The main thread adds its own toWorker count to these.
          if (stats && b!.port.dropped > 0) stats.queueDropped = { toWorker: 0, toBrowser: b!.port.dropped };
        } finally {
          // Always answered: the main thread's CDR waits for it.
          this.post({ t: 'bridgeClosed', bridge: cmd.bridge, stats });
        }
        return;
      }
    }
  }

  /** Test-only commands: a production worker (no debugCommands) refuses them. */
  private debug(cmd: Extract<MediaCommand, { t: 'debug' }>): void {
    if (!this.data.debugCommands) throw new Error('debug commands are not enabled in this worker');
    if (cmd.delayLegsMs !== undefined) this.delayLegsMs = cmd.delayLegsMs;
    if (cmd.hangMs) {
      const end = performance.now() + cmd.hangMs;
      while (performance.now() < end) { /* hung: nothing else runs in this thread */ }
    }
  }

  private async createLeg(id: number, callId: string): Promise<void> {
    let leg: SipRtpLeg;
    if (this.delayLegsMs > 0) await new Promise((r) => setTimeout(r, this.delayLegsMs));
    try {
      leg = await this.engine.createSipLeg({ callId });
    } catch (err) {
      this.post({ t: 'legRefused', leg: id, exhausted: err instanceof RtpPortsExhaustedError, message: (err as Error).message });
      return;
    }
    this.legs.set(id, leg);
    leg.onInactive(() => this.post({ t: 'legInactive', leg: id }));
    leg.once('closed', () => {
      this.legs.delete(id);
      this.post({ t: 'legClosed', leg: id, portsAllocated: this.engine.usage.portsAllocated });
    });
    this.post({ t: 'legCreated', leg: id, localAddress: leg.localAddress, localPort: leg.localPort, portsAllocated: this.engine.usage.portsAllocated });
  }

  private createBridge(id: number, legId: number, callId: string, desc: BrowserPortDescription): void {
    const leg = this.legs.get(legId);
    if (!leg) {
      this.post({ t: 'bridgeFailed', bridge: id, message: 'the SIP leg is closed' });
      return;
    }
    const port = new RemoteBrowserPort(desc, (pkt) => { if (!this.toBrowser.add(id, pkt)) port.dropped++; });
    let handle: LocalBridge;
    try {
      handle = this.engine.createBridge(port, leg, { callId });
    } catch (err) {
      this.post({ t: 'bridgeFailed', bridge: id, message: (err as Error).message });
      return;
    }
    handle.onDtmf((ev) => this.post({ t: 'dtmf', bridge: id, digit: ev.digit, from: ev.from }));
    this.bridges.set(id, { handle, port });
  }

  private pushReports(): void {
    const items: Array<[number, ReceptionReport | null]> = [];
    for (const [id, b] of this.bridges) if (b.port.reportSource) items.push([id, b.port.reportSource()]);
    if (items.length > 0) this.post({ t: 'reports', items });
  }
}

/** The browser leg as a bridge in the worker sees it: fed from the main thread's batches. */
class RemoteBrowserPort implements BrowserMediaPort {
  readonly opusPayloadType: number | null;
  readonly pcmuPayloadType: number | null;
  readonly telephoneEventPayloadType: number | null;
  readonly telephoneEventClockRate?: number;
  readonly telephoneEvents?: ReadonlyArray<{ payloadType: number; clockRate: number }>;
  readonly sendCodec: 'opus' | 'pcmu' | 'pcma';
  private listener: ((pkt: RtpPacketView) => void) | null = null;
  reportSource: (() => ReceptionReport | null) | null = null;
  /** Packets for the browser dropped because the main thread was too far behind reading them. */
  dropped = 0;
  readonly receptionReports?: (source: () => ReceptionReport | null) => () => void;

  constructor(desc: BrowserPortDescription, readonly sendRtp: (pkt: RtpPacketView) => void) {
    this.opusPayloadType = desc.opusPayloadType;
    this.pcmuPayloadType = desc.pcmuPayloadType;
    this.telephoneEventPayloadType = desc.telephoneEventPayloadType;
    this.telephoneEventClockRate = desc.telephoneEventClockRate;
    this.telephoneEvents = desc.telephoneEvents;
    this.sendCodec = desc.sendCodec;
    // Offered only when the main-thread leg reports by itself, as BrowserMediaPort has it.
    if (desc.wantsReports) {
      this.receptionReports = (source) => {
        this.reportSource = source;
        return () => { if (this.reportSource === source) this.reportSource = null; };
      };
    }
  }

  onRtp(listener: (pkt: RtpPacketView) => void): () => void {
    this.listener = listener;
    return () => { if (this.listener === listener) this.listener = null; };
  }

  deliver(pkt: RtpPacketView): void {
    this.listener?.(pkt);
  }
}

/** Keys arrive as Uint8Array (structured clone drops Buffer's prototype); the SRTP code wants Buffers. */
function withBufferKeys(remote: SipLegRemote): SipLegRemote {
  if (!remote.srtp) return remote;
  const fix = (c: SdesCrypto): SdesCrypto => ({ ...c, key: Buffer.from(c.key.buffer, c.key.byteOffset, c.key.length), salt: Buffer.from(c.salt.buffer, c.salt.byteOffset, c.salt.length) });
  return { ...remote, srtp: { local: fix(remote.srtp.local), remote: fix(remote.srtp.remote) } };
}
