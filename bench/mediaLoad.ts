/**
 * Media plane under load, the whole way through: N calls through a real gateway in this
 * process — WebSocket signaling, werift browser legs (ICE-lite, DTLS-SRTP), the media bridge
 * and the SIP RTP legs — with both far ends in a separate load-generator process
 * (bench/loadGen.ts: werift browsers sending real Opus, or PCMU for the relay case, and a SIP
 * trunk sending PCMU). Reports this process's CPU per call-second, event-loop delay, packets
 * lost inside the gateway, the end-to-end trip of a packet through the gateway, and memory
 * per call.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance as nodePerformance } from 'node:perf_hooks';
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import pino from 'pino';
import { validateConfig } from '../src/config';
import { Gateway } from '../src/gateway';
import { WorkerMediaPlane } from '../src/media/worker/workerMediaPlane';
import { readRtpPackets, WireCapture, type CallPorts, type Percentiles, type WirePacket } from './wireLatency';

export interface MediaLoadResult {
  mode: 'transcode' | 'passthrough';
  calls: number;
  /** Media worker threads (0: the media plane in the gateway's main thread). */
  workers: number;
  setupSec: number;
  cpuMsPerCallSecond: number;
  /** Share of that CPU spent in the kernel (system calls: mostly UDP send and receive). */
  kernelShare: number;
  coreShare: number;
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
  /**
   * Share of the measured window each event loop was busy (performance.eventLoopUtilization):
   * the main thread's, and each media worker's (none without workers).
   */
  busyShare: { main: number; workers: number[] };
  /** The load generator's worst event-loop stall: trip time the gateway did not add. */
  loadGenLoopDelayMaxMs: number;
  /**
   * How late the load generator's sender thread sent its packets against their due times: the
   * smoothness of the gateway's input (a late millisecond's packets leave with the next one's).
   */
  loadGenSendLateMs: { p99: number; max: number };
  /** The load generator's CPU in the measured window, as a share of one core (it shares the machine). */
  loadGenCoreShare: number;
  /**
   * Share of the packets lost inside the gateway per direction: the larger of what the far end
   * missed (sent − received) and what the kernel dropped at the gateway's receiving sockets (full
   * buffers: it read too slowly). Both are needed: a transcoding bridge fills every gap (PLC,
   * FEC or silence), so the far ends see no shortfall for packets it never read; pass-through
   * forwards packet by packet, so there a socket drop is also a shortfall.
   */
  lostToSip: number;
  lostToBrowser: number;
  /** Datagrams the kernel dropped at the gateway's sockets in the window: its browser-side (WebRTC) and its SIP-side ports. */
  socketDrops: { browserSide: number; sipSide: number };
  sentPerDirection: number;
  latencyToSipMs: { p50: number; p99: number };
  latencyToBrowserMs: { p50: number; p99: number };
  /**
   * What the gateway added to a packet: from its arrival at one leg to the departure of what
   * became of it from the other, timed on the wire (bench/wireLatency.ts). n = packets timed;
   * NaN when packets were lost that way or the capture missed some.
   */
  addedToSipMs: Percentiles;
  addedToBrowserMs: Percentiles;
  /** Why there is no wire timing (tcpdump missing, no capture rights), if there is none. */
  addedUnavailable?: string;
  memoryPerCallMB: { rss: number; heap: number };
  /** allAtOnce: from the moment all browsers send their offers to each one connected (ICE + DTLS + SIP answered). */
  connectAllMs?: { p50: number; p99: number; last: number; phasesP50: { answered: number; iceConnected: number; dtlsConnected: number } };
}

const BASE = 19500;

/** Asks the load generator and waits for its reply; a bench that waits for ever helps nobody. */
function request<T>(child: ChildProcess, msg: object, reply: string, timeoutMs = 60_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const done = () => { clearTimeout(timer); child.off('message', onMsg); child.off('exit', onExit); };
    const onMsg = (m: { type: string }) => { if (m.type === reply) { done(); resolve(m as T); } };
    const onExit = (code: number) => { done(); reject(new Error(`load generator exited (${code}) while waiting for ${reply}`)); };
    const timer = setTimeout(() => { done(); reject(new Error(`load generator: no ${reply} within ${timeoutMs / 1000} s`)); }, timeoutMs);
    child.on('message', onMsg);
    child.once('exit', onExit);
    // A generator that already exited (it does after a failed set-up) cannot be asked anything:
    // an error for the caller, not an unhandled 'error' event that ends the bench.
    if (!child.connected) { done(); reject(new Error(`load generator gone before ${reply}`)); return; }
    child.send(msg, (err) => { if (err) { done(); reject(err); } });
  });
}

/**
 * Datagrams the kernel dropped at the UDP sockets bound to ports in `range` (the `drops` column of
 * /proc/net/udp: receive buffer full). 0 where /proc is not Linux's.
 */
function udpSocketDrops(range: [number, number]): number {
  let text: string;
  try { text = readFileSync('/proc/net/udp', 'utf8'); } catch { return 0; }
  let drops = 0;
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 13) continue;
    const port = parseInt(cols[1].split(':')[1] ?? '', 16);
    if (port >= range[0] && port <= range[1]) drops += Number(cols[cols.length - 1]) || 0;
  }
  return drops;
}

function post(session: Session, method: string): Promise<unknown> {
  return new Promise((resolve, reject) => session.post(method, (err, res) => (err ? reject(err) : resolve(res))));
}

async function startProfile(): Promise<Session> {
  const s = new Session();
  s.connect();
  await post(s, 'Profiler.enable');
  await post(s, 'Profiler.start');
  return s;
}

/** Writes a CPU profile (open it in Chrome DevTools). */
async function stopProfile(s: Session, file: string): Promise<void> {
  const { profile } = (await post(s, 'Profiler.stop')) as { profile: unknown };
  writeFileSync(file, JSON.stringify(profile));
  s.disconnect();
}

/** IPC carries a NaN (a figure withheld) as JSON's null: back to NaN. */
function fromIpc(p: { p50: number | null; p99: number | null }): { p50: number; p99: number } {
  return { p50: p.p50 ?? NaN, p99: p.p99 ?? NaN };
}
function fromIpcLate(p: { p99: number | null; max: number | null }): { p99: number; max: number } {
  return { p99: p.p99 ?? NaN, max: p.max ?? NaN };
}

/** RSS (the whole process) and heap in use: this thread's plus the media workers' (after a full GC in each). */
async function memory(gateway: Gateway): Promise<{ rss: number; heap: number }> {
  (globalThis as { gc?: () => void }).gc?.();
  const plane = gateway['media'];
  const workersHeap = plane instanceof WorkerMediaPlane ? await plane.heapUsed({ gc: true }) : 0;
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed + workersHeap };
}

/** The gateway's port ranges in the media bench: its SIP RTP legs', and its browser legs' (ICE). */
function gatewayMediaPorts(calls: number): { mediaPorts: [number, number]; webrtcPorts: [number, number] } {
  return { mediaPorts: [31000, 31000 + calls * 2 + 40], webrtcPorts: [33000, 33000 + calls * 2 + 40] };
}

/** The gateway under test, with the load generator's SIP user agent as its trunk; stopped again if its start fails. */
async function startBenchGateway(gen: ChildProcess, calls: number, o: { mediaPorts: [number, number]; webrtcPorts: [number, number]; cdrDir: string; workers?: number; directSrtp?: boolean }): Promise<Gateway> {
  const { sipPort } = await request<{ sipPort: number }>(gen, { type: 'noop' }, 'ready');
  const cfg = validateConfig({
    http: { host: '127.0.0.1', port: BASE },
    sip: { host: '127.0.0.1', port: BASE + 1, sessionExpiresSec: 0 },
    demo: { enabled: true, sipPort: BASE + 2 },
    auth: { mode: 'demo' },
    trunk: { uri: `sip:127.0.0.1:${sipPort}`, codecs: ['PCMU'], sourceCidrs: ['127.0.0.1/32'] },
    dialplan: { allow: ['+1555*'] },
    media: { portRange: o.mediaPorts, inactivityTimeoutSec: 60, workers: o.workers ?? 0 },
    webrtc: { portRange: o.webrtcPorts },
    limits: { connectsPerIpPerMin: 10000, maxCallsGlobal: calls + 10 },
    cdr: { path: join(o.cdrDir, 'cdr.jsonl') },
    drain: { timeoutSec: 0 },
  });
  if (!cfg.ok) throw new Error(cfg.errors.join('\n'));
  const gateway = new Gateway(cfg.config, pino({ level: 'silent' }), { directSrtp: o.directSrtp });
  await gateway.start().catch(async (err) => { await gateway.stop().catch(() => undefined); throw err; });
  return gateway;
}

export async function mediaLoad(calls: number, mode: 'transcode' | 'passthrough', seconds = 5, opts: { allAtOnce?: boolean; directSrtp?: boolean; workers?: number; onCapture?: (packets: WirePacket[], window: { fromMs: number; toMs: number }, calls: CallPorts[]) => void } = {}): Promise<MediaLoadResult> {
  // BENCH_PROFILE=dir also profiles the load generator (its own file, written when it exits).
  const profDir = process.env.BENCH_PROFILE;
  const genArgs = profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [];
  const gen = fork(join(__dirname, 'loadGen.js'), { stdio: 'inherit', execArgv: genArgs });
  const { mediaPorts, webrtcPorts } = gatewayMediaPorts(calls);
  const cdrDir = mkdtempSync(join(tmpdir(), 'bench-cdr-'));
  const gateway = await startBenchGateway(gen, calls, { mediaPorts, webrtcPorts, cdrDir, workers: opts.workers, directSrtp: opts.directSrtp }).catch((err) => {
    gen.kill();
    rmSync(cdrDir, { recursive: true, force: true });
    throw err;
  });
  let capture: WireCapture | string = 'not started';
  try {
    const mem0 = await memory(gateway);
    const setupProfiler = profDir ? await startProfile() : null;
    const t0 = performance.now();
    const conn = await request<{ ms: number; perCall: { p50: number; p99: number }; phasesP50: { answered: number; iceConnected: number; dtlsConnected: number } }>(gen, { type: 'connect', wsUrl: `ws://127.0.0.1:${BASE}/ws`, calls, mode, batch: opts.allAtOnce ? calls : 10 }, 'connected', 30_000 + calls * 500);
    const setupSec = (performance.now() - t0) / 1000;
    if (setupProfiler) await stopProfile(setupProfiler, join(profDir!, `setup-${mode}-${calls}${opts.allAtOnce ? '-burst' : ''}.cpuprofile`));
    if (gateway.activeCalls !== calls) throw new Error(`${gateway.activeCalls} of ${calls} calls up`);
    capture = await WireCapture.start([mediaPorts, webrtcPorts]);
    gen.send({ type: 'start' });
    await new Promise((r) => setTimeout(r, 1000)); // warm-up: JIT, jitter, first RTCP
    gen.send({ type: 'mark' });
    const windowFrom = Date.now(); // pcap timestamps are wall-clock
    // The histogram records whole intervals between its 5 ms ticks: an idle loop shows ~5 ms.
    // The delay reported is what exceeds the tick.
    const LAG_RESOLUTION_MS = 5;
    const lag = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
    lag.enable();
    // BENCH_PROFILE=dir: a CPU profile of exactly the measured window (open it in Chrome DevTools).
    const profiler = profDir ? await startProfile() : null;
    const workerThreads = gateway['media'] instanceof WorkerMediaPlane ? gateway['media'].threads : [];
    const elu0 = { main: nodePerformance.eventLoopUtilization(), workers: workerThreads.map((t) => t.performance.eventLoopUtilization()) };
    const drops0 = { browserSide: udpSocketDrops(webrtcPorts), sipSide: udpSocketDrops(mediaPorts) };
    const cpu0 = process.cpuUsage();
    const w0 = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const cpu = process.cpuUsage(cpu0);
    const windowTo = Date.now();
    const socketDrops = { browserSide: udpSocketDrops(webrtcPorts) - drops0.browserSide, sipSide: udpSocketDrops(mediaPorts) - drops0.sipSide };
    const busyShare = {
      main: nodePerformance.eventLoopUtilization(elu0.main).utilization,
      workers: workerThreads.map((t, i) => t.performance.eventLoopUtilization(elu0.workers[i]).utilization),
    };
    if (profiler) await stopProfile(profiler, join(profDir!, `media-${mode}-${calls}.cpuprofile`));
    const wallS = (performance.now() - w0) / 1000;
    lag.disable();
    const s = await request<{ sentB: number; recvT: number; sentT: number; recvB: number; latBT: { p50: number; p99: number }; latTB: { p50: number; p99: number }; ports: CallPorts[]; genLoopMaxMs: number; genSendLateMs: { p99: number | null; max: number | null }; genCoreShare: number }>(gen, { type: 'stop' }, 'stats');
    // After the generator stopped: a forced full GC with packets flowing would stall them
    // (tens of ms at 100 calls), which the bench then measured as latency the gateway added.
    const mem1 = await memory(gateway);
    let added: { toSip: Percentiles; toBrowser: Percentiles } | string;
    if (typeof capture === 'string') added = capture;
    else {
      const dropped = await capture.stop();
      added = dropped ? `the capture missed ${dropped} datagrams` : capture.latency(s.ports, windowFrom, windowTo);
      // For tools that look at every datagram (bench/queueTrace.ts).
      if (!dropped) opts.onCapture?.(readRtpPackets(readFileSync(capture.file)), { fromMs: windowFrom, toMs: windowTo }, s.ports);
    }
    const none = { p50: NaN, p99: NaN, n: 0 };
    const withheldIfLost = (p: Percentiles, lost: boolean) => (lost ? none : p);
    const lostToSip = Math.max(s.sentB - s.recvT, socketDrops.browserSide);
    const lostToBrowser = Math.max(s.sentT - s.recvB, socketDrops.sipSide);
    const cpuMs = (cpu.user + cpu.system) / 1000;
    return {
      mode,
      calls,
      workers: opts.workers ?? 0,
      setupSec,
      cpuMsPerCallSecond: cpuMs / (calls * wallS),
      kernelShare: cpu.system / Math.max(1, cpu.user + cpu.system),
      coreShare: cpuMs / (wallS * 1000),
      loopDelayP99Ms: Math.max(0, lag.percentile(99) / 1e6 - LAG_RESOLUTION_MS),
      loopDelayMaxMs: Math.max(0, lag.max / 1e6 - LAG_RESOLUTION_MS),
      busyShare,
      loadGenLoopDelayMaxMs: s.genLoopMaxMs,
      loadGenSendLateMs: fromIpcLate(s.genSendLateMs),
      loadGenCoreShare: s.genCoreShare,
      lostToSip: lostToSip / Math.max(1, s.sentB),
      lostToBrowser: lostToBrowser / Math.max(1, s.sentT),
      socketDrops,
      sentPerDirection: s.sentB,
      latencyToSipMs: fromIpc(s.latBT),
      latencyToBrowserMs: fromIpc(s.latTB),
      addedToSipMs: typeof added === 'string' ? none : withheldIfLost(added.toSip, lostToSip !== 0),
      addedToBrowserMs: typeof added === 'string' ? none : withheldIfLost(added.toBrowser, lostToBrowser !== 0),
      addedUnavailable: typeof added === 'string' ? added : undefined,
      memoryPerCallMB: { rss: (mem1.rss - mem0.rss) / calls / 1e6, heap: (mem1.heap - mem0.heap) / calls / 1e6 },
      connectAllMs: opts.allAtOnce ? { p50: conn.perCall.p50, p99: conn.perCall.p99, last: conn.ms, phasesP50: conn.phasesP50 } : undefined,
    };
  } finally {
    if (capture instanceof WireCapture) { await capture.stop(); capture.remove(); }
    await request(gen, { type: 'hangup' }, 'done').catch(() => undefined);
    gen.kill();
    try {
      await gateway.stop();
    } finally {
      rmSync(cdrDir, { recursive: true, force: true });
    }
  }
}
