/**
 * Media plane under load: N concurrent calls through the real MediaEngine (UDP sockets on
 * loopback, SipRtpLeg, MediaBridge), transcoding Opus <-> PCMU or passing PCMU through.
 * The browser side is an in-process stand-in that emits real Opus packets every 20 ms (werift's
 * DTLS-SRTP cost is not included); the trunk side is a separate process. Reports the gateway
 * process's CPU per call-second, delivered packets, and event-loop delay.
 */
import { fork } from 'node:child_process';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pino from 'pino';
import { MediaEngine, type BrowserMediaPort, type RtpPacketView } from '../src/media';
import { OpusEncoder } from '../src/media/codecs';

export interface MediaLoadResult {
  mode: 'transcode' | 'passthrough';
  calls: number;
  cpuMsPerCallSecond: number;
  coreShare: number;
  toSipDelivered: number;
  toBrowserDelivered: number;
  loopDelayP99Ms: number;
}

class FakeBrowser implements BrowserMediaPort {
  readonly opusPayloadType = 111;
  readonly pcmuPayloadType = 0;
  readonly telephoneEventPayloadType = 126;
  listener: ((pkt: RtpPacketView) => void) | null = null;
  received = 0;
  seq = 0;
  ts = 0;
  constructor(readonly sendCodec: 'opus' | 'pcmu') {}
  onRtp(l: (pkt: RtpPacketView) => void) { this.listener = l; return () => { this.listener = null; }; }
  sendRtp(): void { this.received++; }
}

/** One second of a 440/660 Hz two-tone at 48 kHz as real 20 ms Opus packets. */
function opusFrames(): Buffer[] {
  const enc = new OpusEncoder({ sampleRate: 48000, bitrate: 32000, complexity: 5 });
  const frames: Buffer[] = [];
  for (let f = 0; f < 50; f++) {
    const pcm = new Int16Array(960);
    for (let i = 0; i < 960; i++) { const t = (f * 960 + i) / 48000; pcm[i] = 6000 * Math.sin(2 * Math.PI * 440 * t) + 4000 * Math.sin(2 * Math.PI * 660 * t); }
    frames.push(enc.encode(pcm));
  }
  enc.delete();
  return frames;
}

export async function mediaLoad(calls: number, mode: 'transcode' | 'passthrough', seconds = 5): Promise<MediaLoadResult> {
  const logger = pino({ level: 'silent' });
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [31000, 31000 + calls * 2 + 10], logger, inactivityTimeoutMs: 60_000 });
  const sim = fork(join(__dirname, 'trunkSim.js'), { stdio: 'inherit' });
  const simPort = await new Promise<number>((r) => sim.once('message', (m: { port: number }) => r(m.port)));
  const ask = <T>(msg: object) => new Promise<T>((r) => { sim.once('message', (m) => r(m as T)); sim.send(msg); });

  const frames = mode === 'transcode' ? opusFrames() : [Buffer.alloc(160, 0xd5)];
  const browsers: FakeBrowser[] = [];
  const ports: number[] = [];
  const closers: Array<() => void> = [];
  for (let i = 0; i < calls; i++) {
    const leg = await engine.createSipLeg({ callId: `bench-${i}` });
    leg.setRemote({ address: '127.0.0.1', port: simPort, codec: 'PCMU', payloadType: 0, ptime: 20 });
    const fb = new FakeBrowser(mode === 'transcode' ? 'opus' : 'pcmu');
    const bridge = engine.createBridge(fb, leg, { callId: `bench-${i}` });
    browsers.push(fb);
    ports.push(leg.localPort);
    closers.push(() => { bridge.close(); leg.close(); });
  }
  // The browser stand-in: every 20 ms each call gets its next packet.
  let frameNo = 0;
  const browserTimer = setInterval(() => {
    const payload = frames[frameNo++ % frames.length];
    for (const fb of browsers) {
      fb.seq = (fb.seq + 1) & 0xffff;
      fb.ts = (fb.ts + (mode === 'transcode' ? 960 : 160)) >>> 0;
      fb.listener?.({ payloadType: mode === 'transcode' ? 111 : 0, sequenceNumber: fb.seq, timestamp: fb.ts, marker: false, ssrc: 1234, payload });
    }
  }, 20);
  sim.send({ type: "start", ports });
  await new Promise((r) => setTimeout(r, 1000)); // warm-up

  for (const fb of browsers) fb.received = 0;
  await ask({ type: 'count' });
  const lag = monitorEventLoopDelay({ resolution: 5 });
  lag.enable();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const cpu = process.cpuUsage(cpu0);
  const wallS = (performance.now() - t0) / 1000;
  lag.disable();
  const simCount = await ask<{ received: number }>({ type: 'count' });
  const toBrowser = browsers.reduce((s, b) => s + b.received, 0);

  clearInterval(browserTimer);
  for (const c of closers) c();
  await engine.close();
  sim.send({ type: 'stop' });
  await new Promise((r) => { sim.once('exit', r); setTimeout(() => { sim.kill(); r(undefined); }, 1000); });

  const expected = calls * 50 * wallS;
  const cpuMs = (cpu.user + cpu.system) / 1000;
  return {
    mode,
    calls,
    cpuMsPerCallSecond: cpuMs / (calls * wallS),
    coreShare: cpuMs / (wallS * 1000),
    toSipDelivered: simCount.received / expected,
    toBrowserDelivered: toBrowser / expected,
    loopDelayP99Ms: lag.percentile(99) / 1e6,
  };
}
