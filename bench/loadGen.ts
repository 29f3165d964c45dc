/**
 * Load generator for the media benchmark, in its own process so its CPU is not the gateway's.
 * It plays both far ends of N calls: N browsers (werift peer connections sending real Opus —
 * or PCMU for the relay case — over DTLS-SRTP, through the gateway's WebSocket signaling; once
 * connected their audio goes through our DirectSrtpPath, as cheap per packet as the gateway's:
 * with werift's own path this process became the bottleneck at 100 calls, which real browsers,
 * one per machine, never are) and
 * the SIP trunk (our SIP user agent answering the gateway's INVITEs, one RTP socket per call
 * sending 20 ms PCMU). Both ends share this process's clock, so a packet's trip through the
 * gateway is timed end to end. Driven over IPC by bench/mediaLoad.ts.
 *
 * The audio is sent by a worker thread (bench/loadGenSender.ts, which says why): this thread
 * sets the calls up, keeps ICE and DTLS, and receives what the gateway sends the browsers.
 *
 * The trip includes this process's own pauses (a packet waiting in our socket while we are
 * busy looks slow though the gateway was not): what the gateway itself added is timed on the
 * wire instead (bench/wireLatency.ts), for which this process reports each call's ports.
 */
import type dgram from 'node:dgram';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import pino from 'pino';
import WebSocket from 'ws';
import { MediaStreamTrack, RTCPeerConnection, RTCRtpCodecParameters } from 'werift';
import { SipUserAgent, type ServerInvite } from '../src/sip';
import { OpusEncoder } from '../src/media/codecs';
import { startStunResponder } from './stunResponder';
import { installNativeDtlsCrypto } from '../src/webrtc/dtlsCrypto';
import { DirectSrtpPath } from '../src/webrtc/directSrtpPath';
import { dtlsTransportOf, restrictSrtpProfile } from '../src/webrtc/weriftInternals';
import type { SenderCommand, SenderReply } from './loadGenSender';

type Mode = 'transcode' | 'passthrough';
interface BenchCall {
  id: number;
  ws: WebSocket;
  pc: RTCPeerConnection;
  track: MediaStreamTrack;
  audio: DirectSrtpPath | null;
  /** The gateway's RTP address for this call (from its INVITE), and the trunk's port (the sender thread's socket). */
  gwRtp: { host: string; port: number } | null;
  trunkPort: number;
  /** How far set-up got (for the error when it does not finish). */
  step: string;
  /** This browser's ICE socket port (where the gateway's audio for it arrives), and the sender thread's port its audio leaves from. */
  browserPort: number;
  browserSendPort: number;
  recvB: number;
}

const calls = new Map<number, BenchCall>();
/** This process's own event-loop stalls, which would show up as trip time the gateway did not add. */
const genLag = monitorEventLoopDelay({ resolution: 5 });
const latTB: number[] = [];
let counting = false;
/** This process's CPU from 'mark' (the figure it reports: how much of the machine the far ends took). */
let genCpu0 = process.cpuUsage();
let genWall0 = 0;
let mode: Mode = 'transcode';
const now = () => performance.now();

/** The sending thread, and its replies awaited by type and call. */
const sender = new Worker(join(__dirname, 'loadGenSender.js'));
const waiting = new Map<string, (r: SenderReply) => void>();
sender.on('message', (r: SenderReply) => {
  const key = 'id' in r ? `${r.type}/${r.id}` : r.type;
  waiting.get(key)?.(r);
  waiting.delete(key);
});
sender.on('error', (err) => { console.error('load generator sender thread:', err); process.exit(1); });
function ask<T extends SenderReply['type']>(cmd: SenderCommand, reply: T, id?: number): Promise<Extract<SenderReply, { type: T }>> {
  return new Promise((resolve) => {
    waiting.set(id === undefined ? reply : `${reply}/${id}`, resolve as (r: SenderReply) => void);
    sender.postMessage(cmd);
  });
}
/**
 * When the sender thread sent each call's trunk packets (epoch ms), so that this thread can time
 * their trip when the gateway's packet for the browser arrives: the k-th arrival pairs with the
 * k-th send (nothing lost, in order — as before, a trip figure only without losses).
 */
const SEND_TIMES_PER_CALL = 256;
let sentToBrowser = new Float64Array(new SharedArrayBuffer(0));
const epochMs = () => performance.timeOrigin + performance.now();

/**
 * One second of Opus as Chrome would send it for the gateway's answer: Chrome caps its encoder's
 * bandwidth at the answer's `maxplaybackrate` (RFC 7587 §6.1) and encodes at its
 * `maxaveragebitrate`, else at its own defaults (about 8 kb/s narrowband as measured, 20 / 32
 * kb/s wide / full band). Encoding from a capture at that rate gives the same kind of stream
 * (SILK NB, WB, or hybrid fullband), which is what decides the gateway's decoding cost.
 */
function opusFrames(rate: 8000 | 16000 | 48000, bitrate: number): Buffer[] {
  const enc = new OpusEncoder({ sampleRate: rate, bitrate, complexity: 5, fec: true, packetLossPercent: 5 });
  const n = rate / 50;
  const out: Buffer[] = [];
  for (let f = 0; f < 50; f++) {
    const pcm = new Int16Array(n);
    for (let i = 0; i < n; i++) { const t = (f * n + i) / rate; pcm[i] = 6000 * Math.sin(2 * Math.PI * 440 * t) + 4000 * Math.sin(2 * Math.PI * 660 * t); }
    out.push(enc.encode(pcm));
  }
  enc.delete();
  return out;
}
/** Streams by "rate/bitrate"; libopus is loaded at start-up, never in the middle of a set-up burst (that takes tens of ms). */
const framesByKind = new Map<string, Buffer[]>();
/** What the browser sends for this answer (the Opus fmtp of its first payload type). */
function framesFor(answerSdp: string): Buffer[] {
  const pt = /^m=audio \S+ \S+ (\d+)/m.exec(answerSdp)?.[1];
  const fmtp = (pt ? new RegExp(`^a=fmtp:${pt} (.*)$`, 'm').exec(answerSdp)?.[1] : undefined) ?? '';
  const playback = Number(/maxplaybackrate=(\d+)/.exec(fmtp)?.[1] ?? 48000);
  const rate = playback <= 8000 ? 8000 : playback <= 16000 ? 16000 : 48000;
  const bitrate = Number(/maxaveragebitrate=(\d+)/.exec(fmtp)?.[1] ?? (rate === 8000 ? 8000 : rate === 16000 ? 20000 : 32000));
  const key = `${rate}/${bitrate}`;
  let frames = framesByKind.get(key);
  if (!frames) { frames = opusFrames(rate, bitrate); framesByKind.set(key, frames); }
  return frames;
}

async function main(): Promise<void> {
  // A plain exit on SIGTERM, so that --cpu-prof (BENCH_PROFILE) gets to write its profile.
  process.on('SIGTERM', () => process.exit(0));
  // Browsers do their DTLS key exchange natively (BoringSSL); so do these stand-ins.
  installNativeDtlsCrypto();
  const stun = await startStunResponder();
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger: pino({ level: 'silent' }), sessionTimers: { expires: 0 } });
  await ua.start();
  ua.on('invite', (inv: ServerInvite) => void answerInvite(inv));
  framesByKind.set('8000/20000', opusFrames(8000, 20000)); // what the gateway asks for on G.711 calls
  process.send!({ type: 'ready', sipPort: ua.boundAddresses[0].port });

  process.on('message', async (m: { type: string; wsUrl?: string; calls?: number; mode?: Mode; batch?: number }) => {
    if (m.type === 'connect') {
      mode = m.mode!;
      sentToBrowser = new Float64Array(new SharedArrayBuffer(8 * SEND_TIMES_PER_CALL * m.calls!));
      sender.postMessage({ type: 'sendTimes', buffer: sentToBrowser.buffer, perCall: SEND_TIMES_PER_CALL } satisfies SenderCommand);
      const t0 = now();
      const ids = Array.from({ length: m.calls! }, (_, i) => i);
      // batch = how many browsers offer at the same moment (all of them for the setup figure).
      const batch = m.batch ?? 10;
      const done: number[] = [];
      phases = { answered: [], iceConnected: [], dtlsConnected: [] };
      // A burst (batch = all): every browser prepares its offer, then all offers leave together;
      // the figures then run from that moment, as "N browsers offering at the same moment".
      offerGate = batch >= ids.length ? makeOfferGate(ids.length) : null;
      for (let i = 0; i < ids.length; i += batch) {
        try {
          await Promise.all(ids.slice(i, i + batch).map(async (id) => { await withTimeout(connectCall(id, m.wsUrl!, stun.port), CONNECT_TIMEOUT_MS, () => `browser ${id} not connected after ${CONNECT_TIMEOUT_MS / 1000} s (at: ${calls.get(id)?.step})`); done.push(now()); }));
        } catch (err) {
          console.error('load generator:', (err as Error).message);
          process.exit(1); // the bench sees the exit and reports it
        }
      }
      const from = offerGate?.releasedAt ?? t0;
      offerGate = null;
      const since = (ts: number[]) => pct(ts.map((t) => t - from)).p50;
      process.send!({ type: 'connected', ms: now() - from, perCall: pct(done.map((t) => t - from)), phasesP50: { answered: since(phases.answered), iceConnected: since(phases.iceConnected), dtlsConnected: since(phases.dtlsConnected) } });
    } else if (m.type === 'start') {
      for (const c of calls.values()) c.recvB = 0;
      sentToBrowser.fill(0);
      latTB.length = 0;
      counting = true;
      sender.postMessage({ type: 'start' } satisfies SenderCommand);
    } else if (m.type === 'mark') {
      // End of the warm-up: trip times from here on (loss counts from 'start').
      latTB.length = 0;
      sender.postMessage({ type: 'mark' } satisfies SenderCommand);
      genLag.reset(); genLag.enable();
      genCpu0 = process.cpuUsage(); genWall0 = now();
    } else if (m.type === 'stop') {
      // This process's CPU, the sender thread's included.
      const cpu = process.cpuUsage(genCpu0);
      const genCoreShare = (cpu.user + cpu.system) / 1000 / (now() - genWall0);
      // The sender stops, then gives the last packets a second to arrive: one still queued in a
      // stalled gateway is late, not lost.
      const sent = await ask({ type: 'stop' }, 'stats');
      counting = false;
      let recvB = 0;
      for (const c of calls.values()) recvB += c.recvB;
      process.send!({
        type: 'stats', sentB: sent.sentB, recvT: sent.recvT, sentT: sent.sentT, recvB,
        latBT: paired(sent.latBT, sent.sentB, sent.recvT), latTB: paired(latTB, sent.sentT, recvB),
        ports: [...calls.values()].map((c) => ({ browserPort: c.browserPort, browserSendPort: c.browserSendPort, trunkPort: c.trunkPort })),
        genLoopMaxMs: Math.max(0, genLag.max / 1e6 - 5), // the histogram records whole 5 ms ticks
        genSendLateMs: sent.lateMs,
        genCoreShare,
      });
    } else if (m.type === 'hangup') {
      for (const c of calls.values()) { c.audio?.close(); c.ws.close(); await c.pc.close().catch(() => undefined); }
      await ask({ type: 'close' }, 'closed');
      await sender.terminate();
      await ua.stop();
      stun.close();
      process.send!({ type: 'done' });
      setTimeout(() => process.exit(0), 50);
    }
  });
}

/**
 * Trip times pair each arrival with the oldest packet sent: right only when nothing was lost
 * in that direction (one loss would shift every later pair by 20 ms). With losses, no figure.
 */
function paired(a: number[], sent: number, received: number): { p50: number; p99: number; n: number } {
  return sent === received ? pct(a) : { p50: NaN, p99: NaN, n: 0 };
}

function pct(a: number[]): { p50: number; p99: number; n: number } {
  const s = [...a].sort((x, y) => x - y);
  const at = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : NaN);
  return { p50: at(0.5), p99: at(0.99), n: s.length };
}

/** The trunk: answer with PCMU toward a fresh RTP socket for this call. */
async function answerInvite(inv: ServerInvite): Promise<void> {
  const id = Number(inv.request.header('x-bench-call'));
  const call = calls.get(id);
  const sdp = inv.request.body;
  const c = /c=IN IP4 (\S+)/.exec(sdp)?.[1];
  const port = Number(/m=audio (\d+)/.exec(sdp)?.[1]);
  if (!call || !c || !port) { inv.reject(404); return; }
  const { port: p } = await ask({ type: 'trunk', id }, 'trunk', id);
  call.trunkPort = p;
  call.gwRtp = { host: c, port };
  inv.accept(`v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${p} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n`);
}

/** One browser: WebSocket hello/call, werift offer, the gateway's answer, ICE/DTLS. */
/** Holds prepared browsers until all are ready, then lets every offer go at once (and notes when). */
let offerGate: { ready(): Promise<void>; releasedAt: number } | null = null;
/** When each browser got the gateway's answer, and when its ICE and then DTLS were up. */
let phases: { answered: number[]; iceConnected: number[]; dtlsConnected: number[] } = { answered: [], iceConnected: [], dtlsConnected: [] };
function makeOfferGate(n: number): NonNullable<typeof offerGate> {
  let waiting = 0;
  let release!: () => void;
  const all = new Promise<void>((r) => { release = r; });
  const gate = {
    releasedAt: 0,
    ready(): Promise<void> {
      if (++waiting === n) { gate.releasedAt = now(); release(); }
      return all;
    },
  };
  return gate;
}

const CONNECT_TIMEOUT_MS = 20_000;
function withTimeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(what())), ms); })]).finally(() => clearTimeout(timer));
}

async function connectCall(id: number, wsUrl: string, stunPort: number): Promise<void> {
  const codec = mode === 'transcode'
    ? new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111 })
    : new RTCRtpCodecParameters({ mimeType: 'audio/PCMU', clockRate: 8000, channels: 1, payloadType: 0 });
  const pc = new RTCPeerConnection({
    iceServers: [{ urls: `stun:127.0.0.1:${stunPort}` }],
    iceUseIpv6: false,
    iceInterfaceAddresses: { udp4: '127.0.0.1' },
    codecs: { audio: [codec] },
  });
  const track = new MediaStreamTrack({ kind: 'audio' });
  const transceiver = pc.addTransceiver(track, { direction: 'sendrecv' });
  restrictSrtpProfile(transceiver); // the profile DirectSrtpPath implements, whatever the gateway offers
  const ws = new WebSocket(wsUrl);
  const call: BenchCall = { id, ws, pc, track, audio: null, gwRtp: null, trunkPort: 0, step: 'websocket', browserPort: 0, browserSendPort: 0, recvB: 0 };
  calls.set(id, call);
  const onAudio = () => {
    if (!counting) return;
    const sent = sentToBrowser[id * SEND_TIMES_PER_CALL + (call.recvB % SEND_TIMES_PER_CALL)];
    call.recvB++;
    if (sent > 0) latTB.push(epochMs() - sent);
  };
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); });
  const next = () => new Promise<any>((resolve) => ws.once('message', (d) => resolve(JSON.parse(d.toString()))));
  call.step = 'hello';
  ws.send(JSON.stringify({ type: 'hello', version: 1 }));
  const welcome = await next();
  if (welcome.type !== 'welcome') throw new Error(`hello refused: ${JSON.stringify(welcome)}`);
  call.step = 'offer';
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise<void>((r) => { if (pc.iceGatheringState === 'complete') r(); else pc.iceGatheringStateChange.subscribe((s) => { if (s === 'complete') r(); }); });
  const connected = new Promise<void>((r) => pc.connectionStateChange.subscribe((s) => { if (s === 'connected') { phases.dtlsConnected.push(now()); r(); } }));
  pc.iceConnectionStateChange.subscribe((s) => { if (s === 'connected') phases.iceConnected.push(now()); });
  // The browser is ready to offer: in a burst, every browser waits here so all offers leave together.
  if (offerGate) await offerGate.ready();
  ws.send(JSON.stringify({ type: 'call', to: '+15551230000', sdp: pc.localDescription!.sdp, headers: { 'X-Bench-Call': String(id) } }));
  call.step = 'waiting for calling';
  let msg = await next();
  while (msg.type !== 'calling') {
    if (msg.type === 'ended' || msg.type === 'error') throw new Error(`call ${id} refused: ${JSON.stringify(msg)}`);
    msg = await next();
  }
  phases.answered.push(now());
  await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
  const frames = mode === 'transcode' ? framesFor(msg.sdp) : [Buffer.alloc(160, 0xd5)];
  call.step = 'ICE/DTLS';
  await connected;
  const direct = DirectSrtpPath.attach(transceiver, onAudio, pino({ level: 'silent' }));
  if (!(direct instanceof DirectSrtpPath)) throw new Error(`browser ${id}: no direct audio path: ${direct.reason}`);
  call.audio = direct;
  const transport = dtlsTransportOf(transceiver)!;
  const nominated = transport.iceTransport.connection.nominated!;
  call.browserPort = (nominated.protocol.transport?.socket as unknown as dgram.Socket).address().port;
  // Wait for the SIP side to be up too (the INVITE is answered at once).
  call.step = 'SIP answer';
  while (!call.gwRtp) await new Promise((r) => setTimeout(r, 10));
  // The browser's audio leaves from the sender thread, protected with this DTLS's keys (RFC 5764 §4.2).
  call.step = 'sender';
  const keys = transport.dtls!.extractSessionKeys(16, 14);
  const { browserSendPort } = await ask({
    type: 'call', id, key: keys.localKey, salt: keys.localSalt,
    gwIce: { host: nominated.remoteAddr[0], port: nominated.remoteAddr[1] }, gwRtp: call.gwRtp,
    frames, payloadType: mode === 'transcode' ? 111 : 0, timestampStep: mode === 'transcode' ? 960 : 160,
  }, 'call', id);
  call.browserSendPort = browserSendPort;
}

main().catch((err) => { console.error('load generator failed:', err); process.exit(1); });
