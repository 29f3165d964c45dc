import type { ReceptionReport } from '../mediaBridge';
import type { SipLegRemote } from '../sipRtpLeg';
import type { BridgeStats } from '../plane';

/**
 * The messages between the main thread (WorkerMediaPlane) and a media worker (MediaHost).
 * Ids are chosen by the main thread, so a command never waits for an id to come back.
 * RTP crosses as packed batches (packetBatch.ts), one message per event-loop turn.
 */
export type MediaCommand =
  | { t: 'createLeg'; leg: number; callId: string }
  | { t: 'setRemote'; leg: number; remote: SipLegRemote }
  | { t: 'closeLeg'; leg: number }
  | { t: 'createBridge'; bridge: number; leg: number; callId: string; browser: BrowserPortDescription }
  | { t: 'tone'; bridge: number; kind: 'ringback' | 'none' }
  | { t: 'hold'; bridge: number; byBrowser: boolean; bySip: boolean }
  | { t: 'dtmf'; bridge: number; to: 'sip' | 'browser'; digit: string; durationMs?: number }
  | { t: 'closeBridge'; bridge: number }
  /** Browser audio for the worker's bridges. */
  | { t: 'rtp'; batch: ArrayBuffer }
  /** Asks for the worker's heap in use (after a full GC when `gc` and the process allows it). */
  | { t: 'heap'; gc: boolean; id: number };

export type MediaEvent =
  | { t: 'ready' }
  | { t: 'legCreated'; leg: number; localAddress: string; localPort: number; portsAllocated: number }
  | { t: 'legRefused'; leg: number; exhausted: boolean; message: string }
  | { t: 'legInactive'; leg: number }
  | { t: 'legClosed'; leg: number; portsAllocated: number }
  /** A command for this leg failed in the worker: the call has no working media. */
  | { t: 'legFailed'; leg: number; message: string }
  | { t: 'bridgeFailed'; bridge: number; message: string }
  | { t: 'bridgeClosed'; bridge: number; stats: BridgeStats | undefined }
  | { t: 'dtmf'; bridge: number; digit: string; from: 'browser' | 'sip' }
  /**
   * The bridges' receive statistics of the browsers' audio, for the RTCP reports sent from the
   * main thread. Their fractionLost covers the push interval, not the reports' own: the main
   * thread works the fraction out again from the cumulative counts for each report it sends.
   */
  | { t: 'reports'; items: Array<[bridge: number, report: ReceptionReport | null]> }
  /** Audio for the browsers. */
  | { t: 'rtp'; batch: ArrayBuffer }
  /** One pino JSON line, written to the main thread's log destination. */
  | { t: 'log'; line: string }
  /** The answer to a heap command: this worker isolate's heap in use, bytes. */
  | { t: 'heap'; used: number; id: number };

/** The parts of a BrowserMediaPort the bridge reads when it is created. */
export interface BrowserPortDescription {
  opusPayloadType: number | null;
  pcmuPayloadType: number | null;
  telephoneEventPayloadType: number | null;
  telephoneEventClockRate?: number;
  telephoneEvents?: Array<{ payloadType: number; clockRate: number }>;
  sendCodec: 'opus' | 'pcmu' | 'pcma';
  /** The browser leg sends our RTCP reports and wants the bridge's reception figures. */
  wantsReports: boolean;
}

/** What the worker is started with (workerData). */
export interface MediaWorkerData {
  bindHost: string;
  advertisedHost: string;
  portRange: [number, number];
  inactivityTimeoutMs: number;
  opusComplexity?: number;
  logLevel: string;
  logBindings: Record<string, unknown>;
  /** Milliseconds between pushes of the bridges' reception reports. */
  reportIntervalMs: number;
}
