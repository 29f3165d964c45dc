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
  /** Browser audio for the worker's bridges; `packets` in the batch, for the worker's rtpAck. */
  | { t: 'rtp'; batch: ArrayBuffer; packets: number }
  /** Packets of the worker's rtp batches this thread has read in all (flow control, rtpFlow.ts). */
  | { t: 'rtpAck'; packets: number }
  /** Asks for the worker's heap in use (after a full GC when `gc` and the process allows it). */
  | { t: 'heap'; gc: boolean; id: number }
  /** Heartbeat: answered with a pong at once; a worker that answers nothing for a while is hung. */
  | { t: 'ping' }
  /**
   * Tests only, refused unless the worker was started with debugCommands: block the event loop
   * for hangMs (a hung worker), or answer each createLeg delayLegsMs late (a slow one).
   */
  | { t: 'debug'; hangMs?: number; delayLegsMs?: number };

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
  /** Audio for the browsers; `packets` in the batch, for the main thread's rtpAck. */
  | { t: 'rtp'; batch: ArrayBuffer; packets: number }
  /** Packets of the main thread's rtp batches this worker has read in all (flow control, rtpFlow.ts). */
  | { t: 'rtpAck'; packets: number }
  /** The answer to a ping, with the packets toward the browsers this worker dropped in all (its queue was full). */
  | { t: 'pong'; dropped: number }
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
  /** Accept the test-only `debug` command (never set in production). */
  debugCommands?: boolean;
}
