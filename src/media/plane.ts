import type { BridgeMode, BrowserLegStats, BrowserMediaPort } from './mediaBridge';
import type { SipLegRemote } from './sipRtpLeg';
import type { LegStats } from './stats';

/**
 * What the call layer may do with the media plane. Everything here is a command (a method that
 * returns nothing, or a promise of one reply) or an event, so the plane can live in this thread
 * (MediaEngine) or in worker threads (WorkerMediaPlane) without calls/ knowing which: the same
 * split as mediasoup's Worker/Router, where the JavaScript side holds handles and the media
 * lives elsewhere.
 */
export interface MediaPlane {
  /** Allocates an RTP/RTCP port pair; rejects with RtpPortsExhaustedError when none is free. */
  createSipLeg(opts: { callId: string }): Promise<SipLegHandle>;
  /** Bridges a browser leg (on this thread) with a SIP leg this plane created; call after the leg's setRemote. */
  createBridge(browser: BrowserMediaPort, leg: SipLegHandle, opts: { callId: string }): BridgeHandle;
  /** Legs, bridges and RTP ports in use: a leak check for tests and metrics. */
  readonly usage: MediaUsage;
  close(): Promise<void>;
}

export interface MediaUsage {
  legs: number;
  bridges: number;
  portsAllocated: number;
}

export interface SipLegHandle {
  /** Advertised address and RTP port, for our SDP. */
  readonly localAddress: string;
  readonly localPort: number;
  /** The far end's media parameters, from its SDP; may be sent again (re-INVITE). */
  setRemote(remote: SipLegRemote): void;
  close(): void;
  /** No RTP from the SIP side for the configured time. */
  onInactive(listener: () => void): void;
  /** The media plane behind this leg is gone (its worker thread died): the call has no audio any more. */
  onFailed(listener: (reason: string) => void): void;
}

export interface BridgeStats {
  browser: BrowserLegStats;
  sip: LegStats;
  transcodeCpuMs: number;
  mode: BridgeMode;
  /**
   * Media in worker threads only, and only when there were any: packets of this call dropped
   * because the thread they were going to was too far behind reading them (a hung or
   * overloaded worker, or a stalled main thread) — the browser's audio toward the worker, and
   * the audio toward the browser.
   */
  queueDropped?: { toWorker: number; toBrowser: number };
}

export interface BridgeHandle {
  setBrowserTone(kind: 'ringback' | 'none'): void;
  setHold(holdByBrowser: boolean, holdBySip: boolean): void;
  /** A digit toward the trunk (RFC 4733 events, or tones in G.711 where it has none). */
  sendDtmfToSip(digit: string, durationMs?: number): void;
  /** A digit toward the browser, as RFC 4733 events on its stream (it plays them as tones). */
  sendDtmfToBrowser(digit: string, durationMs?: number): void;
  /** Stops the bridge; resolves with its final statistics (undefined when the plane could not give them). */
  close(): Promise<BridgeStats | undefined>;
  /** Digits received from either side. */
  onDtmf(listener: (ev: { digit: string; from: 'browser' | 'sip' }) => void): void;
}
