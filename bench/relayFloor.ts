/**
 * The machine's own floor under the "added latency" figure: what a plain Node UDP relay adds
 * to a packet at the same load, timed on the wire the same way (bench/wireLatency.ts).
 *
 * Why: the gateway's p99 at 100 transcoded calls moves 5–40 ms from one run to the next on this
 * VM, and a figure alone cannot say how much of it is the gateway and how much is Node's UDP path,
 * the kernel and the hypervisor under that much CPU. The relay here does nothing but compute a
 * fixed amount per packet, copy the datagram and send it on from the call's other port, with the
 * amount chosen so that it uses as much of a core as the gateway did — the same packet rate, the
 * same twenty 1 ms phases, the same ports per call and the same capture.
 * The difference between the two p99s, in one run, is what the gateway (and its werift far
 * ends) add beyond the machine: garbage collection, work in lumps rather than evenly, bursts.
 *
 * Its far ends are plain sockets in this process (the gateway is stopped by then), given work
 * per packet sent so that they use as much of a core as the media bench's load generator did.
 *
 * Steps toward the gateway, each computing only the rest of the gateway's CPU:
 * - `media`: the relay also does the gateway's per-packet media work with the gateway's own
 *   code — browser side: SRTP unprotect, Opus decode to 8 kHz, PCMU out; trunk side: PCMU
 *   decode, Opus encode, SRTP protect;
 * - `engine`: the gateway's media engine itself (SIP RTP legs from its port allocator, bridges,
 *   the send batch) behind a browser side of our SRTP on a plain unconnected socket, as the
 *   direct SRTP path sends on werift's. What is left between it and the gateway is werift (its
 *   ICE sockets and peer connections), the call layer, and the werift load generator.
 */
import { fork, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pino from 'pino';
import { OpusDecoder, OpusEncoder } from '../src/media/codecs/opus';
import { pcmuDecode, pcmuEncode } from '../src/media/codecs/g711';
import { MediaEngine } from '../src/media/mediaEngine';
import type { BrowserMediaPort } from '../src/media/mediaBridge';
import { buildRtp, parseRtp, writeRtpHeader, type RtpPacketView } from '../src/media/rtp';
import { threadSendBatch } from '../src/media/udpSendBatch';
import { generateSdesCrypto, type SdesCrypto } from '../src/media/srtp/sdes';
import { SrtpSession } from '../src/media/srtp/srtpSession';
import { WireCapture, type CallPorts, type Percentiles } from './wireLatency';
import { PhaseClock } from './phaseClock';

export interface RelayFloorResult {
  calls: number;
  /** What the relay did per packet besides its fixed computation (see the steps above). */
  step: RelayStep;
  /** Work per packet in the relay, in µs as estimated when it started: what it takes to reach the gateway's share of a core. */
  spinUs: number;
  /** The relay's CPU in the window, as a share of one core. */
  relayCoreShare: number;
  /** The relay's event-loop delay in the window beyond the monitor's 5 ms tick, as the media bench reports the gateway's. */
  relayLoopDelayMs: { p99: number; max: number };
  /** The far ends' (this process's) CPU in the window, as a share of one core. */
  farEndsCoreShare: number;
  /** How late the far ends sent their packets against their due times in the window (the media bench reports its load generator's the same way). */
  farEndsSendLateMs: { p99: number; max: number };
  addedToSipMs: Percentiles;
  addedToBrowserMs: Percentiles;
  /** Why there is no figure (no tcpdump, packets lost), if there is none. */
  unavailable?: string;
}

/** plain: copy; media: the gateway's SRTP and codec work; engine: the gateway's media engine. */
export type RelayStep = 'plain' | 'media' | 'engine';

const BASE = 27000;
/** The engine step's SIP legs take their ports from here (its own allocator). */
const ENGINE_PORTS: [number, number] = [29000, 29499];
const PHASES = 20;

type ToRelay = { type: 'spin'; us: number } | { type: 'cpu' } | { type: 'sinks'; ports: Array<[number, number]> };
/** The relay's answer to `sinks`: with the engine, the SIP legs' ports the trunks send to. */
type SinksReply = { type: 'sinks'; trunkPorts?: number[] };

/**
 * A fixed amount of computation, sized in µs once at start: when the VM runs slower, the
 * gateway's work takes longer, and so must the stand-in's (a spin on the clock would not).
 */
function fixedWork(): (us: number) => void {
  let sink = 1;
  // 16-bit values: small integers in every V8 tier, so the cost per iteration is the same cold or hot.
  const run = (n: number) => { let x = sink; for (let i = 0; i < n; i++) x = (Math.imul(x ^ i, 40503) + 1) & 0xffff; sink = x; };
  const rate = () => { const n = 2_000_000; const t = performance.now(); run(n); return n / ((performance.now() - t) * 1000); };
  rate(); // compiled first
  const perUs = rate();
  return (us) => run(Math.round(us * perUs));
}

/**
 * `calls` calls through the relay for `seconds`, the relay and the far ends each made to cost
 * what the gateway and its load generator cost in the media bench (shares of one core): the CPU
 * of each is measured over a second and the work per packet corrected, four times.
 */
export async function relayFloor(calls: number, target: { relayCoreShare: number; farEndsCoreShare: number }, seconds = 8, step: RelayStep = 'plain'): Promise<RelayFloorResult> {
  // Past the plain step, the browsers' SRTP keys (toBrowser protects what the relay sends them).
  const keys = step !== 'plain' ? { fromBrowser: generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80'), toBrowser: generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80') } : null;
  const relay = fork(__filename, ['relay', String(calls), step, keys ? JSON.stringify(keys, (_, v) => (v?.type === 'Buffer' ? Buffer.from(v.data).toString('base64') : v)) : ''], { stdio: 'inherit' });
  const sockets: dgram.Socket[] = [];
  const clock = new PhaseClock(PHASES, 20 / PHASES);
  let capture: WireCapture | string = 'not started';
  try {
    await reply(relay, null, 'ready');
    // Per call: the browser's socket and the trunk's, each sending to its side of the relay.
    const ends: Array<{ browser: dgram.Socket; trunk: dgram.Socket }> = [];
    for (let i = 0; i < calls; i++) {
      const browser = await boundTo(BASE + 2 * i);
      const trunk = await boundTo(BASE + 2 * i + 1);
      sockets.push(browser, trunk);
      ends.push({ browser, trunk });
    }
    const ports: CallPorts[] = ends.map((e) => ({ browserPort: e.browser.address().port, trunkPort: e.trunk.address().port }));
    const sinks = await reply<SinksReply>(relay, { type: 'sinks', ports: ports.map((p) => [p.browserPort, p.trunkPort]) }, 'sinks');
    const trunkSide = (i: number) => sinks.trunkPorts?.[i] ?? relayPort(2 * i + 1);
    capture = await WireCapture.start([[relayPort(0), relayPort(2 * calls)], ENGINE_PORTS]);
    const none = { p50: NaN, p99: NaN, n: 0 };
    if (typeof capture === 'string') {
      return { calls, step, spinUs: NaN, relayCoreShare: NaN, relayLoopDelayMs: { p99: NaN, max: NaN }, farEndsCoreShare: NaN, farEndsSendLateMs: { p99: NaN, max: NaN }, addedToSipMs: none, addedToBrowserMs: none, unavailable: capture };
    }

    // As on the gateway's wire: narrowband 20 kb/s Opus in SRTP from the browser (real frames of
    // a tone with media, else bytes of their size), 20 ms of PCMU from the trunk.
    const opusFrames = keys ? toneOpusFrames() : [Buffer.alloc(50)];
    const pcmu = Buffer.alloc(160, 0xff);
    const browserSrtp = keys ? ends.map(() => new SrtpSession({ local: keys.fromBrowser, remote: keys.toBrowser })) : null;
    const seq = new Array<number>(calls).fill(0);
    const work = fixedWork();
    let farUs = 0; // work per packet sent, standing in for the load generator's SRTP and werift
    const send = (phase: number) => {
      for (let i = phase; i < calls; i += PHASES) {
        const n = seq[i] = (seq[i] + 1) & 0xffff;
        work(farUs);
        const rtp = buildRtp(111, n, n * 960, 1000 + i, opusFrames[n % opusFrames.length]);
        ends[i].browser.send(browserSrtp ? browserSrtp[i].protectRtp(rtp) : Buffer.concat([rtp, Buffer.alloc(10)]), relayPort(2 * i), '127.0.0.1');
        work(farUs);
        ends[i].trunk.send(buildRtp(0, n, n * 160, 5000 + i, pcmu), trunkSide(i), '127.0.0.1');
      }
    };
    clock.start(send);

    // Calibration: after a warm-up second (JIT, first packets), each round adds to the work per
    // packet what the last second's CPU fell short of the target (or takes off its excess).
    const packetsPerSecond = calls * 100; // into the relay, and out of the far ends
    const measure = async () => {
      const far0 = process.cpuUsage();
      const t0 = performance.now();
      await reply(relay, { type: 'cpu' }, 'cpu');
      await sleep(1000);
      const farShare = cpuMs(process.cpuUsage(far0)) / (performance.now() - t0);
      const r = await reply<{ coreShare: number }>(relay, { type: 'cpu' }, 'cpu');
      return { relay: r.coreShare, far: farShare };
    };
    await sleep(1000);
    const corrected = (us: number, want: number, got: number) => Math.max(0, us + ((want - got) * 1e6) / packetsPerSecond);
    let spinUs = 0;
    for (let i = 0; i < 4; i++) {
      await reply(relay, { type: 'spin', us: spinUs }, 'spin');
      const m = await measure();
      spinUs = corrected(spinUs, target.relayCoreShare, m.relay);
      farUs = corrected(farUs, target.farEndsCoreShare, m.far);
    }
    await reply(relay, { type: 'spin', us: spinUs }, 'spin');
    await sleep(500);
    await reply(relay, { type: 'cpu' }, 'cpu');
    const from = Date.now();
    clock.record();
    const cpu0 = process.cpuUsage();
    await sleep(seconds * 1000);
    const r = await reply<{ coreShare: number; lagP99: number; lagMax: number }>(relay, { type: 'cpu' }, 'cpu');
    const to = Date.now();
    const farCpu = process.cpuUsage(cpu0);
    clock.stop();
    await sleep(100); // the last packets through
    const result = { calls, step, spinUs, relayCoreShare: r.coreShare, relayLoopDelayMs: { p99: r.lagP99, max: r.lagMax }, farEndsCoreShare: cpuMs(farCpu) / (to - from), farEndsSendLateMs: clock.lateness(), addedToSipMs: none, addedToBrowserMs: none };
    const dropped = await capture.stop();
    if (dropped) return { ...result, unavailable: `the capture missed ${dropped} datagrams` };
    const added = capture.latency(ports, from, to);
    return { ...result, addedToSipMs: added.toSip, addedToBrowserMs: added.toBrowser };
  } finally {
    clock.stop();
    if (capture instanceof WireCapture) { await capture.stop(); capture.remove(); }
    for (const s of sockets) s.close();
    relay.kill();
  }
}

const cpuMs = (c: NodeJS.CpuUsage) => (c.user + c.system) / 1000;

/** The relay's port for a call's browser side (2i) or trunk side (2i + 1). */
const relayPort = (k: number) => BASE + 1000 + k;

function boundTo(port: number): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.once('error', reject);
    s.on('message', () => undefined);
    s.bind(port, '127.0.0.1', () => resolve(s));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function reply<T = unknown>(child: ChildProcess, msg: ToRelay | null, type: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.off('message', onMsg); reject(new Error(`relay: no ${type} within 10 s`)); }, 10_000);
    const onMsg = (m: { type: string }) => { if (m.type === type) { clearTimeout(timer); child.off('message', onMsg); resolve(m as T); } };
    child.on('message', onMsg);
    if (msg) child.send(msg);
  });
}

/** Opus frames of a 440 Hz tone, as a browser asked for narrowband sends them (20 kb/s, 20 ms). */
function toneOpusFrames(): Buffer[] {
  const enc = new OpusEncoder({ sampleRate: 8000, bitrate: 20000, complexity: 1 });
  const frames: Buffer[] = [];
  for (let f = 0; f < 50; f++) {
    const pcm = new Int16Array(160);
    for (let k = 0; k < 160; k++) pcm[k] = Math.round(8000 * Math.sin((2 * Math.PI * 440 * (f * 160 + k)) / 8000));
    frames.push(Buffer.from(enc.encode(pcm)));
  }
  enc.delete();
  return frames;
}

/** What one call's relay needs for the gateway's media work: SRTP toward its browser, and (media step) its coders. */
interface MediaWork { srtp: SrtpSession; coders: { decoder: OpusDecoder; encoder: OpusEncoder; pcm: Int16Array } | null }

/**
 * The relay process: each datagram in on one of a call's ports goes out, after the spin, from
 * the other — copied (plain), or made into what the gateway would send (media); or the
 * gateway's media engine between a browser side on port 2i and a SIP leg of its own (engine).
 */
function runRelay(calls: number, step: RelayStep, keysJson: string): void {
  const keys = keysJson ? (JSON.parse(keysJson, (k, v) => (k === 'key' || k === 'salt' ? Buffer.from(v, 'base64') : v)) as { fromBrowser: SdesCrypto; toBrowser: SdesCrypto }) : null;
  const mediaWork: MediaWork[] = keys ? Array.from({ length: calls }, () => ({
    srtp: new SrtpSession({ local: keys.toBrowser, remote: keys.fromBrowser }),
    // The engine step's bridges have their own coders.
    coders: step === 'media' ? { decoder: new OpusDecoder({ sampleRate: 8000 }), encoder: new OpusEncoder({ sampleRate: 8000, bitrate: 24000, complexity: 1 }), pcm: new Int16Array(160) } : null,
  })) : [];
  let packets = 0;
  let cpu0 = process.cpuUsage();
  let t0 = performance.now();
  const lag = monitorEventLoopDelay({ resolution: 5 });
  lag.enable();
  const work = fixedWork();
  let spinUs = 0;
  const spin = () => work(spinUs);
  const socks: dgram.Socket[] = [];
  let bound = 0;
  for (let k = 0; k < 2 * calls; k++) {
    const s = dgram.createSocket('udp4');
    if (step !== 'engine') {
      s.on('message', (msg) => {
        packets++;
        spin();
        const out = step === 'media' ? mediaOut(mediaWork[k >> 1], k, msg) : Buffer.from(msg);
        if (out) socks[k ^ 1].send(out); // the other port of the call, connected to its far end
      });
    }
    s.bind(relayPort(k), '127.0.0.1', () => { if (++bound === 2 * calls) process.send!({ type: 'ready' }); });
    socks.push(s);
  }
  process.on('message', (m: ToRelay) => {
    if (m.type === 'sinks' && step === 'engine') {
      startEngine(m.ports, socks, mediaWork, () => { packets++; spin(); spin(); }).then(
        (trunkPorts) => process.send!({ type: 'sinks', trunkPorts } satisfies SinksReply),
        (err) => { console.error('relay floor: engine set-up failed', err); process.exit(1); },
      );
    } else if (m.type === 'sinks') {
      // Port 2i sends to the browser, 2i + 1 to the trunk.
      let connected = 0;
      m.ports.forEach(([browser, trunk], i) => {
        socks[2 * i].connect(browser, '127.0.0.1', () => { if (++connected === 2 * calls) process.send!({ type: 'sinks' }); });
        socks[2 * i + 1].connect(trunk, '127.0.0.1', () => { if (++connected === 2 * calls) process.send!({ type: 'sinks' }); });
      });
    } else if (m.type === 'spin') {
      spinUs = m.us;
      process.send!({ type: 'spin' });
    } else {
      const c = process.cpuUsage(cpu0);
      const ms = cpuMs(c);
      process.send!({ type: 'cpu', usPerPacket: (ms * 1000) / Math.max(1, packets), coreShare: ms / (performance.now() - t0), lagP99: Math.max(0, lag.percentile(99) / 1e6 - 5), lagMax: Math.max(0, lag.max / 1e6 - 5) });
      lag.reset();
      packets = 0;
      cpu0 = process.cpuUsage();
      t0 = performance.now();
    }
  });
  process.on('disconnect', () => process.exit(0));
}

/**
 * The engine step: per call a SIP leg toward the trunk's sink and a bridge to a browser side
 * that is our SRTP on the call's port 2i (unconnected, its sends in the engine's batch, as the
 * direct SRTP path sends on werift's socket). `onPacket` runs per browser packet, for the
 * relay's count and spin (the SIP leg's socket is the engine's own). Returns the legs' ports.
 */
async function startEngine(sinks: Array<[number, number]>, socks: dgram.Socket[], work: MediaWork[], onPacket: () => void): Promise<number[]> {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: ENGINE_PORTS, logger: pino({ level: 'silent' }), opusComplexity: 1 });
  const trunkPorts: number[] = [];
  for (const [i, [browserSink, trunkSink]] of sinks.entries()) {
    const leg = await engine.createSipLeg({ callId: `relay-${i}` });
    leg.setRemote({ address: '127.0.0.1', port: trunkSink, codec: 'PCMU', payloadType: 0 });
    const srtp = work[i].srtp;
    const socket = socks[2 * i];
    const listeners = new Set<(pkt: RtpPacketView) => void>();
    const header = Buffer.alloc(12); // written in place per packet, as DirectSrtpPath does (SRTP copies it out)
    socket.on('message', (msg) => {
      onPacket();
      const plain = srtp.unprotectRtp(msg);
      const pkt = plain && parseRtp(plain);
      if (pkt) for (const l of listeners) l(pkt);
    });
    const browser: BrowserMediaPort = {
      opusPayloadType: 111, pcmuPayloadType: null, telephoneEventPayloadType: null, sendCodec: 'opus',
      onRtp: (l) => { listeners.add(l); return () => listeners.delete(l); },
      sendRtp: (pkt) => {
        writeRtpHeader(header, pkt.payloadType, pkt.sequenceNumber, pkt.timestamp, 4242 + i, pkt.marker);
        threadSendBatch.send(socket, srtp.protectRtpParts(header, 12, pkt.payload), browserSink, '127.0.0.1');
      },
    };
    engine.createBridge(browser, leg, { callId: `relay-${i}` });
    trunkPorts.push(leg.localPort);
  }
  return trunkPorts;
}

/** The gateway's work on one packet (same sequence number out, for the wire timing to pair). */
function mediaOut(m: MediaWork, port: number, msg: Buffer): Buffer | null {
  const c = m.coders!;
  if (port % 2 === 0) { // from the browser
    const plain = m.srtp.unprotectRtp(msg);
    const p = plain && parseRtp(plain);
    if (!p) return null;
    return buildRtp(0, p.sequenceNumber, p.timestamp / 6, 7000 + port, pcmuEncode(c.decoder.decode(p.payload)));
  }
  const p = parseRtp(msg);
  if (!p) return null;
  return m.srtp.protectRtp(buildRtp(111, p.sequenceNumber, p.timestamp * 6, 9000 + port, c.encoder.encode(pcmuDecode(p.payload, c.pcm))));
}

if (require.main === module && process.argv[2] === 'relay') runRelay(Number(process.argv[3]), process.argv[4] as RelayStep, process.argv[5] ?? '');
