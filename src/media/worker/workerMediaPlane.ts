import { Worker } from 'node:worker_threads';
import { extname, join } from 'node:path';
import pino, { type Logger } from 'pino';
import type { BrowserMediaPort, ReceptionReport } from '../mediaBridge';
import type { SipLegRemote } from '../sipRtpLeg';
import type { RtpPacketView } from '../rtp';
import { RtpPortsExhaustedError } from '../portAllocator';
import type { BridgeHandle, BridgeStats, MediaPlane, MediaUsage, SipLegHandle } from '../plane';
import type { MediaEngineOptions } from '../mediaEngine';
import { FailedBridges, readPacketBatch } from './packetBatch';
import { RtpOutbox, RtpReadAcks } from './rtpFlow';
import type { MediaCommand, MediaEvent, MediaWorkerData } from './protocol';

/** The worker entry next to this file: .ts when run from source (tsx), .js when built. */
const WORKER_FILE = join(__dirname, `mediaWorker${extname(__filename)}`);
const START_TIMEOUT_MS = 10_000;

export interface WorkerMediaPlaneOptions extends MediaEngineOptions {
  workers: number;
  /** How often each worker is pinged (default 1000 ms). */
  heartbeatIntervalMs?: number;
  /**
   * A running worker from which nothing (pong or anything else) has come for this long is hung:
   * it is stopped and its calls fail, as if it had crashed (default 5000 ms).
   */
  hangTimeoutMs?: number;
  /**
   * How long a command that expects a reply (a leg, a bridge's final statistics) may wait
   * (default 5000 ms). Running out fails that one command, not the worker: the heartbeat alone
   * decides that a worker is hung.
   */
  replyTimeoutMs?: number;
  /** Tests only: the workers accept the `debug` command (hang, slow legs). */
  debugCommands?: boolean;
}

type WorkerOptions = WorkerMediaPlaneOptions & { heartbeatIntervalMs: number; hangTimeoutMs: number; replyTimeoutMs: number };

/**
 * The media plane in worker threads: each worker runs a MediaEngine (mediaHost.ts) on its own
 * share of the RTP port range, so SIP legs, codecs and SRTP toward the trunk use other cores.
 * Browser legs stay here (werift owns their ICE/DTLS sockets): their audio crosses to the
 * worker in batches, one message per event-loop turn and direction. A call's leg and bridge
 * live on the worker with the fewest legs. A worker that dies fails its calls (the legs'
 * `failed` event) and is replaced; so does one that stops answering its heartbeat (hung), which
 * is stopped first. The audio queued toward a thread that does not read it is capped (rtpFlow.ts).
 */
export class WorkerMediaPlane implements MediaPlane {
  private readonly workers: MediaWorker[];
  private closing = false;

  constructor(opts: WorkerMediaPlaneOptions) {
    const o: WorkerOptions = { heartbeatIntervalMs: 1000, hangTimeoutMs: 5000, replyTimeoutMs: 5000, ...opts };
    if (!(o.hangTimeoutMs > o.heartbeatIntervalMs)) throw new Error(`media worker hangTimeoutMs (${o.hangTimeoutMs}) must be longer than heartbeatIntervalMs (${o.heartbeatIntervalMs})`);
    const ranges = splitPortRange(o.portRange, o.workers);
    this.workers = ranges.map((range, i) => new MediaWorker(i, { ...o, portRange: range }, () => this.closing));
  }

  /** Resolves when every worker is up; rejects (clearly) when one cannot start. */
  async start(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.ready()));
  }

  async createSipLeg(o: { callId: string }): Promise<SipLegHandle> {
    // Fewest legs first; a worker whose share of the range is used up, or that fails to answer,
    // passes to the next; one not ready (starting, or waiting to be restarted) takes no calls.
    const order = this.workers.filter((w) => w.running).sort((a, b) => a.legCount - b.legCount);
    if (order.length === 0) throw new Error('no media worker is running');
    let lastError: Error | null = null;
    for (const w of order) {
      try {
        return await w.createLeg(o.callId);
      } catch (err) {
        lastError = err as Error;
      }
    }
    // Exhausted only when every worker said so; any other failure is the plane's.
    throw lastError!;
  }

  createBridge(browser: BrowserMediaPort, leg: SipLegHandle, o: { callId: string }): BridgeHandle {
    if (!(leg instanceof WorkerSipLeg)) throw new Error('createBridge: the SIP leg is not one of this plane\'s legs');
    return leg.worker.createBridge(browser, leg, o.callId);
  }

  get usage(): MediaUsage {
    const u = { legs: 0, bridges: 0, portsAllocated: 0 };
    for (const w of this.workers) {
      u.legs += w.legCount;
      u.bridges += w.bridgeCount;
      u.portsAllocated += w.portsAllocated;
    }
    return u;
  }

  /** Workers taking calls (the others are starting or waiting to be restarted). */
  get runningWorkers(): number {
    return this.workers.filter((w) => w.running).length;
  }

  /** Worker threads that exited on their own since the plane started (not counting close()), hung ones included. */
  get workerExits(): number {
    return this.workers.reduce((n, w) => n + w.exits, 0);
  }

  /** Worker threads stopped because they stopped answering heartbeats (also counted in workerExits). */
  get workerHangs(): number {
    return this.workers.reduce((n, w) => n + w.hangs, 0);
  }

  /**
   * RTP packets dropped because the thread they were for was too far behind reading them: the
   * browsers' audio toward the workers, and the workers' audio toward the browsers (as of each
   * worker's last heartbeat answer). Per call in its BridgeStats.queueDropped.
   */
  get rtpDropped(): { toWorkers: number; toBrowsers: number } {
    return {
      toWorkers: this.workers.reduce((n, w) => n + w.droppedToWorker, 0),
      toBrowsers: this.workers.reduce((n, w) => n + w.droppedToBrowsers, 0),
    };
  }

  /**
   * Heap in use in the worker threads together (each is an isolate of its own, outside
   * process.memoryUsage().heapUsed), after a full GC in each when `gc` (node --expose-gc).
   * NaN when a worker does not answer within 2 s or is not running.
   */
  async heapUsed(opts: { gc: boolean }): Promise<number> {
    const each = await Promise.all(this.workers.map((w) => w.heapUsed(opts.gc)));
    return each.reduce((a, b) => a + b, 0);
  }

  /** The worker threads, for diagnostics and the tests that stop one. */
  get threads(): Worker[] {
    return this.workers.map((w) => w.thread);
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.workers.map((w) => w.close()));
  }
}

/** A worker that dies within this long of its start counts as failing to start: restarts back off. */
const QUICK_EXIT_MS = 5000;
const MAX_RESTART_DELAY_MS = 30_000;

/** Splits [lo, hi] into n ranges that each hold at least one even/odd pair. */
export function splitPortRange(range: [number, number], n: number): Array<[number, number]> {
  const first = range[0] % 2 === 0 ? range[0] : range[0] + 1;
  const pairs = Math.floor((range[1] - first + 1) / 2);
  if (n < 1 || pairs < n) throw new Error(`media port range ${range[0]}-${range[1]} holds ${pairs} RTP/RTCP pairs: too few for ${n} media workers`);
  const out: Array<[number, number]> = [];
  let start = first;
  for (let i = 0; i < n; i++) {
    const share = Math.floor(pairs / n) + (i < pairs % n ? 1 : 0);
    out.push([start, start + share * 2 - 1]);
    start += share * 2;
  }
  return out;
}

/** One worker thread and the handles of the legs and bridges it carries. */
class MediaWorker {
  thread!: Worker;
  private started!: Promise<void>;
  private readonly legs = new Map<number, WorkerSipLeg>();
  private readonly pendingLegs = new Map<number, { resolve(l: WorkerSipLeg): void; reject(e: Error): void; callId: string }>();
  private readonly bridges = new Map<number, WorkerBridge>();
  /** Bridges whose packets to the browser threw (logged once each). */
  private readonly sendFailures = new FailedBridges();
  /** The browsers' audio, capped at what the thread has not read yet. */
  private readonly toWorker: RtpOutbox;
  /** Tells the thread how much of its audio was read (its own cap). */
  private readonly fromWorker: RtpReadAcks;
  /** Packets the current thread dropped toward the browsers, as of its last pong. */
  private reportedDrops = 0;
  /** Packets dropped toward the browsers by this worker's threads, in all. */
  droppedToBrowsers = 0;
  /** heapUsed() calls waiting for the thread's answer, by request id (a late answer finds none). */
  private readonly heapWaiters = new Map<number, (bytes: number) => void>();
  private nextHeapId = 1;
  private nextId = 1;
  portsAllocated = 0;
  /** The thread has not exited: commands may be posted. */
  private alive = false;
  private onReady: () => void = () => undefined;
  /** The thread said it is ready (and has not exited since). */
  private ready_ = false;
  private spawnedAt = 0;
  /** Consecutive exits soon after a start: a worker that cannot run is not restarted in a tight loop. */
  private quickExits = 0;
  private restartTimer: NodeJS.Timeout | null = null;
  /** Times this worker's thread exited while the plane was open. */
  exits = 0;
  /** Times this worker's thread was stopped for not answering heartbeats. */
  hangs = 0;
  /** When anything last came from the thread (performance.now()). */
  private lastHeard = 0;
  /** When the heartbeat last ran: a late run means this thread stalled, not the worker. */
  private lastBeat = performance.now();
  private readonly heartbeat: NodeJS.Timeout;
  /** Why the current thread is being stopped (hung), for its calls' failure. */
  private stopReason: string | null = null;
  private readonly log: Logger;

  constructor(private readonly index: number, private readonly opts: WorkerOptions, private readonly closing: () => boolean) {
    this.log = opts.logger.child({ mediaWorker: index });
    this.toWorker = new RtpOutbox((batch, packets) => this.send({ t: 'rtp', batch, packets }, [batch]), () => this.bridges.size);
    this.fromWorker = new RtpReadAcks((packets) => this.send({ t: 'rtpAck', packets }));
    this.heartbeat = setInterval(() => this.beat(), opts.heartbeatIntervalMs);
    this.heartbeat.unref();
    this.spawn();
  }

  get droppedToWorker(): number {
    return this.toWorker.dropped;
  }

  get legCount(): number {
    return this.legs.size + this.pendingLegs.size;
  }

  get bridgeCount(): number {
    return this.bridges.size;
  }

  heapUsed(gc: boolean): Promise<number> {
    if (!this.running) return Promise.resolve(NaN);
    return new Promise((resolve) => {
      const id = this.nextHeapId++;
      const timer = setTimeout(() => settle(NaN), 2000);
      const settle = (bytes: number) => {
        clearTimeout(timer);
        this.heapWaiters.delete(id);
        resolve(bytes);
      };
      this.heapWaiters.set(id, settle);
      this.send({ t: 'heap', gc, id });
    });
  }

  ready(): Promise<void> {
    return this.started;
  }

  /** The thread is there to take calls (started, not dead, hung or waiting for its restart). */
  get running(): boolean {
    return this.alive && this.ready_;
  }

  /**
   * Pings the thread, or stops it when nothing has come from it for hangTimeoutMs. A worker
   * stuck in a loop keeps its calls up without audio, takes queued audio for ever and holds
   * its legs (so the least-loaded choice may never pick it and find out): only a check that
   * runs whether or not calls are made finds it. Stopping it goes through the exit path, as a
   * crash does: its calls fail (cause failed) and a new thread starts.
   */
  private beat(): void {
    const now = performance.now();
    // Timers late by far more than the interval: this thread was not running (a long GC, a
    // synchronous burst), so the worker's answers may be sitting unread in its port. Judge
    // at the next beat, once they have been read.
    const stalled = now - this.lastBeat > 2 * this.opts.heartbeatIntervalMs;
    this.lastBeat = now;
    if (!this.running) return;
    const silentMs = now - this.lastHeard;
    if (silentMs > this.opts.hangTimeoutMs && !stalled) {
      this.hangs++;
      this.ready_ = false; // no new calls while it is being stopped
      this.stopReason = `media worker ${this.index} stopped answering (no heartbeat for ${Math.round(silentMs)} ms)`;
      this.log.error({ silentMs: Math.round(silentMs), calls: this.legs.size }, 'media worker not answering heartbeats: stopping it');
      void this.thread.terminate(); // its exit fails its calls and restarts it
      return;
    }
    this.send({ t: 'ping' });
  }

  private spawn(): void {
    const o = this.opts;
    const data: MediaWorkerData = {
      bindHost: o.bindHost,
      advertisedHost: o.advertisedHost,
      portRange: o.portRange,
      inactivityTimeoutMs: o.inactivityTimeoutMs ?? 30_000,
      opusComplexity: o.opusComplexity,
      logLevel: o.logger.level,
      logBindings: { ...o.logger.bindings(), mediaWorker: this.index },
      reportIntervalMs: 250,
      debugCommands: o.debugCommands,
    };
    // Run from source (tsx), Node's Worker would load a .ts entry through the ES module loader,
    // which does not know the extension; a require() goes through tsx's CommonJS hook instead.
    const thread = WORKER_FILE.endsWith('.ts')
      ? new Worker(`require(${JSON.stringify(require.resolve('tsx/cjs'))}); require(${JSON.stringify(WORKER_FILE)})`, { eval: true, workerData: data })
      : new Worker(WORKER_FILE, { workerData: data });
    this.thread = thread;
    this.spawnedAt = performance.now();
    this.portsAllocated = 0;
    this.stopReason = null;
    this.toWorker.reset();
    this.fromWorker.reset();
    this.reportedDrops = 0;
    // Commands posted before the thread runs wait in its port; only the ready signal is awaited
    // (createLeg waits, so that a worker that cannot start fails calls clearly).
    this.alive = true;
    this.ready_ = false;
    this.started = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`media worker ${this.index} did not start within ${START_TIMEOUT_MS} ms`));
        void thread.terminate(); // stuck: its exit restarts it (backing off)
      }, START_TIMEOUT_MS);
      this.onReady = () => { clearTimeout(timer); this.ready_ = true; this.lastHeard = performance.now(); resolve(); };
      let error = '';
      thread.once('error', (err) => { error = `: ${err.message}`; });
      thread.once('exit', (code) => { clearTimeout(timer); reject(new Error(`media worker ${this.index} exited (code ${code}) before it was ready${error}`)); });
    });
    this.started.catch(() => undefined); // reported by start(), or by the first createLeg
    thread.on('message', (ev: MediaEvent) => {
      // Any message shows the thread's event loop turns (a busy worker's answer to the ping
      // may wait behind its audio).
      this.lastHeard = performance.now();
      this.onEvent(ev);
    });
    thread.on('error', (err) => this.log.error({ err }, 'media worker crashed'));
    thread.on('exit', (code) => this.onExit(thread, code));
  }

  private onExit(thread: Worker, code: number): void {
    if (thread !== this.thread) return;
    this.alive = false;
    this.ready_ = false;
    const reason = this.stopReason ?? `media worker ${this.index} exited (code ${code})`;
    const pending = [...this.pendingLegs.values()];
    this.pendingLegs.clear();
    const bridges = [...this.bridges.values()];
    this.bridges.clear();
    const legs = [...this.legs.values()];
    this.legs.clear();
    this.portsAllocated = 0;
    // The restart is arranged before the calls hear of it: their hang-ups run call code here.
    if (!this.closing()) {
      this.exits++;
      this.quickExits = performance.now() - this.spawnedAt < QUICK_EXIT_MS ? this.quickExits + 1 : 0;
      const delayMs = this.quickExits === 0 ? 0 : Math.min(MAX_RESTART_DELAY_MS, 100 * 2 ** this.quickExits);
      this.log.error({ code, hung: this.stopReason !== null, callsFailed: legs.length, restartInMs: delayMs }, 'media worker exited: starting a new one');
      this.restartTimer = setTimeout(() => {
        this.restartTimer = null;
        if (!this.closing()) this.spawn();
      }, delayMs);
    }
    for (const p of pending) p.reject(new Error(reason));
    for (const w of [...this.heapWaiters.values()]) w(NaN);
    for (const b of bridges) b.settle(undefined);
    for (const l of legs) guarded(this.log, () => l.fail(reason));
  }

  private onEvent(ev: MediaEvent): void {
    switch (ev.t) {
      case 'heap':
        this.heapWaiters.get(ev.id)?.(ev.used);
        return;
      case 'rtp':
        readPacketBatch(ev.batch, (id, pkt) => this.bridges.get(id)?.browser.sendRtp(pkt), (id, err) => {
          // Logged once per bridge: the rest of the batch (other calls' packets) went on.
          if (this.sendFailures.first(id)) this.log.error({ err, bridge: id }, 'a packet could not be sent to the browser');
        });
        this.fromWorker.consumed(ev.packets);
        return;
      case 'rtpAck':
        this.toWorker.acked(ev.packets);
        return;
      case 'pong':
        this.droppedToBrowsers += ev.dropped - this.reportedDrops;
        this.reportedDrops = ev.dropped;
        return;
      case 'log':
        writeLine(this.opts.logger, ev.line);
        return;
      case 'ready':
        this.onReady();
        return;
      case 'legCreated': {
        const p = this.pendingLegs.get(ev.leg);
        this.pendingLegs.delete(ev.leg);
        this.portsAllocated = ev.portsAllocated;
        const leg = new WorkerSipLeg(this, ev.leg, ev.localAddress, ev.localPort);
        this.legs.set(ev.leg, leg);
        // The caller gave up waiting (timeout): the leg has no owner, give it back.
        if (!p) leg.close();
        else p.resolve(leg);
        return;
      }
      case 'legRefused': {
        const p = this.pendingLegs.get(ev.leg);
        this.pendingLegs.delete(ev.leg);
        p?.reject(ev.exhausted ? new RtpPortsExhaustedError(ev.message) : new Error(ev.message));
        return;
      }
      case 'legInactive':
        this.legs.get(ev.leg)?.emitInactive();
        return;
      case 'legFailed': {
        const leg = this.legs.get(ev.leg);
        if (leg) guarded(this.log, () => leg.fail(ev.message));
        return;
      }
      case 'legClosed':
        this.legs.delete(ev.leg);
        this.portsAllocated = ev.portsAllocated;
        return;
      case 'dtmf':
        this.bridges.get(ev.bridge)?.emitDtmf(ev.digit, ev.from);
        return;
      case 'reports':
        for (const [id, report] of ev.items) this.bridges.get(id)?.setReport(report);
        return;
      case 'bridgeFailed': {
        // The call cannot have audio: its leg fails, which ends the call (cause failed).
        this.log.error({ bridge: ev.bridge, reason: ev.message }, 'media worker could not create a bridge');
        const bridge = this.bridges.get(ev.bridge);
        this.bridges.delete(ev.bridge);
        bridge?.settle(undefined);
        const leg = bridge && this.legs.get(bridge.legId);
        if (leg) guarded(this.log, () => leg.fail(`no media bridge: ${ev.message}`));
        return;
      }
      case 'bridgeClosed':
        this.bridges.get(ev.bridge)?.settle(ev.stats);
        this.bridges.delete(ev.bridge);
        return;
    }
  }

  send(cmd: MediaCommand, transfer?: ArrayBuffer[]): void {
    if (this.alive) this.thread.postMessage(cmd, transfer);
  }

  get replyTimeoutMs(): number {
    return this.opts.replyTimeoutMs;
  }

  createLeg(callId: string): Promise<WorkerSipLeg> {
    const id = this.nextId++;
    const waitMs = this.opts.replyTimeoutMs;
    return new Promise<WorkerSipLeg>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!this.pendingLegs.delete(id)) return;
        // Slow is not stuck: whether the worker is hung (and all its calls lost) is the
        // heartbeat's call; a late answer fails this call alone, and its leg, should it still
        // come, is given back (legCreated without a waiter).
        this.log.warn({ callId, waitedMs: waitMs }, 'media worker slow to create an RTP leg: giving up on it');
        reject(new Error(`media worker ${this.index} gave no RTP leg within ${waitMs} ms`));
      }, waitMs);
      const done = { resolve: (l: WorkerSipLeg) => { clearTimeout(timer); resolve(l); }, reject: (e: Error) => { clearTimeout(timer); reject(e); }, callId };
      this.pendingLegs.set(id, done);
      this.started.then(() => this.thread.postMessage({ t: 'createLeg', leg: id, callId } satisfies MediaCommand), (err: Error) => {
        this.pendingLegs.delete(id);
        done.reject(err);
      });
    });
  }

  createBridge(browser: BrowserMediaPort, leg: WorkerSipLeg, callId: string): WorkerBridge {
    const id = this.nextId++;
    const bridge = new WorkerBridge(this, id, leg.id, browser);
    this.bridges.set(id, bridge);
    this.send({
      t: 'createBridge', bridge: id, leg: leg.id, callId,
      browser: {
        opusPayloadType: browser.opusPayloadType,
        pcmuPayloadType: browser.pcmuPayloadType,
        telephoneEventPayloadType: browser.telephoneEventPayloadType,
        telephoneEventClockRate: browser.telephoneEventClockRate,
        telephoneEvents: browser.telephoneEvents ? [...browser.telephoneEvents] : undefined,
        sendCodec: browser.sendCodec,
        wantsReports: typeof browser.receptionReports === 'function',
      },
    });
    return bridge;
  }

  /** A bridge whose close went unanswered: no longer counted (the worker gives it up with its thread). */
  forgetBridge(id: number): void {
    this.bridges.delete(id);
  }

  /**
   * Browser audio for bridge `id`, posted with everything else queued in this event-loop turn;
   * false when dropped (the thread is too far behind reading).
   */
  queueRtp(id: number, pkt: RtpPacketView): boolean {
    if (!this.alive) return true; // a dead thread's calls are failing: nothing to count
    return this.toWorker.add(id, pkt);
  }

  async close(): Promise<void> {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    clearInterval(this.heartbeat);
    // Bridges still open give their figures first (their calls' CDRs wait for them).
    const open = [...this.bridges.values()].map((b) => b.close());
    await Promise.all(open);
    this.alive = false;
    await this.thread.terminate();
  }
}

/** A SIP leg in a worker, as the call layer holds it. */
class WorkerSipLeg implements SipLegHandle {
  private inactive: Array<() => void> = [];
  private failed: Array<(reason: string) => void> = [];
  private closed = false;
  private hasFailed = false;

  constructor(readonly worker: MediaWorker, readonly id: number, readonly localAddress: string, readonly localPort: number) {}

  setRemote(remote: SipLegRemote): void {
    if (this.closed) return;
    this.worker.send({ t: 'setRemote', leg: this.id, remote: withPlainKeys(remote) });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.worker.send({ t: 'closeLeg', leg: this.id });
  }

  onInactive(listener: () => void): void { this.inactive.push(listener); }
  onFailed(listener: (reason: string) => void): void { this.failed.push(listener); }

  emitInactive(): void { for (const l of this.inactive) l(); }

  /** Tell the call its audio is gone; its close() still follows (a no-op when the worker died). */
  fail(reason: string): void {
    if (this.closed || this.hasFailed) return;
    this.hasFailed = true;
    for (const l of this.failed) l(reason);
  }
}

/** A bridge in a worker: forwards the browser's audio there and the worker's audio to the browser. */
class WorkerBridge implements BridgeHandle {
  private readonly unsubscribe: () => void;
  private readonly unsubscribeReports: () => void;
  /** The latest figures the worker pushed, and the counts at the last report the browser leg sent. */
  private report: ReceptionReport | null = null;
  private reported = { expected: 0, lost: 0 };
  private dtmf: Array<(ev: { digit: string; from: 'browser' | 'sip' }) => void> = [];
  private closing: Promise<BridgeStats | undefined> | null = null;
  private resolveClose: ((s: BridgeStats | undefined) => void) | null = null;
  private detached = false;
  /** The browser's packets dropped here because the worker was too far behind reading them. */
  private droppedToWorker = 0;

  constructor(private readonly worker: MediaWorker, readonly id: number, readonly legId: number, readonly browser: BrowserMediaPort) {
    this.unsubscribe = browser.onRtp((pkt) => { if (!worker.queueRtp(id, pkt)) this.droppedToWorker++; });
    this.unsubscribeReports = browser.receptionReports?.(() => this.nextReport()) ?? (() => undefined);
  }

  setBrowserTone(kind: 'ringback' | 'none'): void { if (!this.detached) this.worker.send({ t: 'tone', bridge: this.id, kind }); }
  setHold(byBrowser: boolean, bySip: boolean): void { if (!this.detached) this.worker.send({ t: 'hold', bridge: this.id, byBrowser, bySip }); }
  sendDtmfToSip(digit: string, durationMs?: number): void { if (!this.detached) this.worker.send({ t: 'dtmf', bridge: this.id, to: 'sip', digit, durationMs }); }
  sendDtmfToBrowser(digit: string, durationMs?: number): void { if (!this.detached) this.worker.send({ t: 'dtmf', bridge: this.id, to: 'browser', digit, durationMs }); }
  onDtmf(listener: (ev: { digit: string; from: 'browser' | 'sip' }) => void): void { this.dtmf.push(listener); }

  emitDtmf(digit: string, from: 'browser' | 'sip'): void { for (const l of this.dtmf) l({ digit, from }); }
  setReport(r: ReceptionReport | null): void { this.report = r; }

  /**
   * The block for the report the browser leg is sending now: fraction lost since the previous
   * one it sent (RFC 3550 A.3), from the cumulative counts — not the worker's push interval.
   */
  private nextReport(): ReceptionReport | null {
    const r = this.report;
    if (!r) return null;
    const expected = r.expected - this.reported.expected;
    const lost = r.cumulativeLost - this.reported.lost;
    this.reported = { expected: r.expected, lost: r.cumulativeLost };
    return { ...r, fractionLost: expected > 0 && lost > 0 ? Math.min(255, Math.floor((lost * 256) / expected)) : 0 };
  }

  close(): Promise<BridgeStats | undefined> {
    if (this.closing) return this.closing;
    this.detach();
    this.closing = new Promise((resolve) => {
      const timer = setTimeout(() => { this.worker.forgetBridge(this.id); resolve(undefined); }, this.worker.replyTimeoutMs);
      timer.unref();
      this.resolveClose = (s) => { clearTimeout(timer); resolve(s); };
    });
    this.worker.send({ t: 'closeBridge', bridge: this.id });
    return this.closing;
  }

  /** The worker's answer to close (or undefined when the worker is gone). */
  settle(stats: BridgeStats | undefined): void {
    this.detach();
    if (stats && this.droppedToWorker > 0) stats.queueDropped = { toWorker: this.droppedToWorker, toBrowser: stats.queueDropped?.toBrowser ?? 0 };
    if (this.resolveClose) this.resolveClose(stats);
    else this.closing = Promise.resolve(stats);
  }

  /** Stop forwarding the browser's audio. */
  detach(): void {
    if (this.detached) return;
    this.detached = true;
    this.unsubscribe();
    this.unsubscribeReports();
  }
}

/** Keys as plain Uint8Arrays of their own: a Buffer from the pool would clone its whole 8 KB slab. */
function withPlainKeys(remote: SipLegRemote): SipLegRemote {
  if (!remote.srtp) return remote;
  const copy = <T extends { key: Buffer; salt: Buffer }>(c: T): T => ({ ...c, key: new Uint8Array(c.key) as Buffer, salt: new Uint8Array(c.salt) as Buffer });
  return { ...remote, srtp: { local: copy(remote.srtp.local), remote: copy(remote.srtp.remote) } };
}

/** Runs call code on the media plane's behalf: a throw there must not stop the plane's own bookkeeping. */
function guarded(log: Logger, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    log.error({ err }, 'ending a call after a media failure threw');
  }
}

/** A worker's log line goes to this thread's destination as it is (already JSON, already redacted). */
function writeLine(logger: Logger, line: string): void {
  const stream = (logger as unknown as Record<symbol, { write(s: string): void } | undefined>)[pino.symbols.streamSym];
  stream?.write(line);
}
