/**
 * The load generator's sending side, in a worker thread of its own (bench/loadGen.ts starts it).
 *
 * Why a thread: one process plays a hundred browsers and a trunk, so every pause of its main
 * thread (a garbage collection in a heap full of werift peer connections, a long turn reading
 * what the gateway sent back) held back every call's next packet at once, and the late timer
 * tick then sent them together: 20–160 datagrams within half a millisecond where the calls send
 * 5. The gateway queues such a burst, and the bench counts that queue as latency it added:
 * at 100 transcoded calls 17 of 20 backlogs of over 40 packets began with one (bench/queueTrace.ts). A hundred real
 * callers on their own machines do not pause together. This thread holds only the packets'
 * state (a small heap, short collections) and sends on its own clock. Measured in runs
 * interleaved on the 2-core VM: its packets left late by p99 2.6–4.3 ms (max 10–14), against
 * 4.1–6.9 ms (max 13–19) from the main thread; the gateway's p99 did not move visibly with it
 * (8–12 ms either way in quiet runs). The bench prints the lateness with each row.
 *
 * Per call it sends the browser's SRTP (keys that call's DTLS exported) from a socket of its
 * own to the gateway's ICE port — the gateway's direct SRTP path takes audio on that socket from
 * any source that authenticates, and sends back to the ICE pair the main thread keeps — and
 * owns the trunk's RTP socket, sending and receiving (the gateway latches onto the source of
 * the trunk's RTP, so the trunk sends and receives on the one socket its SDP announced).
 */
import dgram from 'node:dgram';
import { parentPort } from 'node:worker_threads';
import { SrtpSession } from '../src/media/srtp';
import { writeRtpHeader } from '../src/media/rtp';
import { PhaseClock } from './phaseClock';

/** Messages from the main thread. */
export type SenderCommand =
  | { type: 'sendTimes'; buffer: SharedArrayBuffer; perCall: number } // where to note SIP→browser send times
  | { type: 'trunk'; id: number } // open this call's trunk RTP socket; reply 'trunk' with its port
  | { type: 'call'; id: number; key: Uint8Array; salt: Uint8Array; gwIce: { host: string; port: number }; gwRtp: { host: string; port: number }; frames: Uint8Array[]; payloadType: number; timestampStep: number }
  | { type: 'start' }
  | { type: 'mark' }
  | { type: 'stop' }
  | { type: 'close' };

/** Replies to the main thread. */
export type SenderReply =
  | { type: 'trunk'; id: number; port: number }
  | { type: 'call'; id: number; browserSendPort: number }
  | { type: 'stats'; sentB: number; sentT: number; recvT: number; latBT: number[]; lateMs: { p99: number; max: number } }
  | { type: 'closed' };

interface SenderCall {
  id: number;
  trunk: dgram.Socket;
  browser?: dgram.Socket;
  srtp?: SrtpSession;
  gwIce?: { host: string; port: number };
  gwRtp?: { host: string; port: number };
  frames: Buffer[];
  payloadType: number;
  timestampStep: number;
  seq: number; ts: number; tSeq: number; tTs: number;
  sentB: number; sentT: number; recvT: number;
  /** Send times (epoch ms) of the browser's packets not yet seen at the trunk. */
  toTrunk: number[];
}

/** Every 20 ms one packet from each browser and one from the trunk, per call, over twenty 1 ms phases. */
const PHASES = 20;
const clock = new PhaseClock(PHASES, 20 / PHASES);
const calls = new Map<number, SenderCall>();
const pcmu = Buffer.alloc(160, 0xd5);
const header = Buffer.alloc(12);
/** Epoch milliseconds: comparable with the main thread's (each thread has its own performance.timeOrigin). */
const epochMs = () => performance.timeOrigin + performance.now();
/** SIP→browser send times shared with the main thread, which sees those packets arrive (see loadGen.ts). */
let sentToBrowser: { times: Float64Array; perCall: number } | null = null;
let counting = false;
const latBT: number[] = [];

function udpSocket(): dgram.Socket {
  return dgram.createSocket('udp4');
}

async function bound(sock: dgram.Socket): Promise<number> {
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  return sock.address().port;
}

parentPort!.on('message', async (m: SenderCommand) => {
  const reply = (r: SenderReply) => parentPort!.postMessage(r);
  if (m.type === 'sendTimes') {
    sentToBrowser = { times: new Float64Array(m.buffer), perCall: m.perCall };
  } else if (m.type === 'trunk') {
    const trunk = udpSocket();
    const p = await bound(trunk);
    const call: SenderCall = { id: m.id, trunk, frames: [], payloadType: 0, timestampStep: 160, seq: 0, ts: 0, tSeq: 0, tTs: 0, sentB: 0, sentT: 0, recvT: 0, toTrunk: [] };
    calls.set(m.id, call);
    trunk.on('message', (msg) => {
      if (!counting || msg.length < 12 || (msg[1] & 0x7f) !== 0) return;
      call.recvT++;
      const sent = call.toTrunk.shift();
      if (sent !== undefined) latBT.push(epochMs() - sent);
    });
    reply({ type: 'trunk', id: m.id, port: p });
  } else if (m.type === 'call') {
    const call = calls.get(m.id);
    if (!call) throw new Error(`sender: call ${m.id} has no trunk socket`);
    const crypto = { tag: 1, suite: 'AES_CM_128_HMAC_SHA1_80' as const, key: Buffer.from(m.key), salt: Buffer.from(m.salt) };
    call.srtp = new SrtpSession({ local: crypto, remote: crypto });
    call.browser = udpSocket();
    const browserSendPort = await bound(call.browser);
    call.gwIce = m.gwIce;
    call.gwRtp = m.gwRtp;
    call.frames = m.frames.map((f) => Buffer.from(f));
    call.payloadType = m.payloadType;
    call.timestampStep = m.timestampStep;
    reply({ type: 'call', id: m.id, browserSendPort });
  } else if (m.type === 'start') {
    for (const c of calls.values()) { c.sentB = c.sentT = c.recvT = 0; c.toTrunk.length = 0; }
    latBT.length = 0;
    counting = true;
    clock.start(sendPhase);
  } else if (m.type === 'mark') {
    latBT.length = 0;
    clock.record();
  } else if (m.type === 'stop') {
    clock.stop();
    const lateMs = clock.lateness();
    // The last packets' way back: one still queued in a stalled gateway is late, not lost.
    await new Promise((r) => setTimeout(r, 1000));
    counting = false;
    let sentB = 0, sentT = 0, recvT = 0;
    for (const c of calls.values()) { sentB += c.sentB; sentT += c.sentT; recvT += c.recvT; }
    reply({ type: 'stats', sentB, sentT, recvT, latBT, lateMs });
  } else if (m.type === 'close') {
    for (const c of calls.values()) { c.trunk.close(); c.browser?.close(); }
    calls.clear();
    reply({ type: 'closed' });
  }
});

function sendPhase(phase: number): void {
  for (const c of calls.values()) {
    if (c.id % PHASES !== phase || !c.srtp || !c.browser || !c.gwIce || !c.gwRtp) continue;
    const payload = c.frames[c.seq % c.frames.length];
    c.seq = (c.seq + 1) & 0xffff;
    c.ts = (c.ts + c.timestampStep) >>> 0;
    writeRtpHeader(header, c.payloadType, c.seq, c.ts, 1000 + c.id, false);
    c.browser.send(c.srtp.protectRtpParts(header, 12, payload), c.gwIce.port, c.gwIce.host);
    c.toTrunk.push(epochMs());
    c.sentB++;
    const b = Buffer.allocUnsafe(172);
    b[0] = 0x80; b[1] = 0;
    b.writeUInt16BE(c.tSeq = (c.tSeq + 1) & 0xffff, 2);
    b.writeUInt32BE(c.tTs = (c.tTs + 160) >>> 0, 4);
    b.writeUInt32BE(0x5000 + c.id, 8);
    pcmu.copy(b, 12);
    c.trunk.send(b, c.gwRtp.port, c.gwRtp.host);
    if (sentToBrowser) sentToBrowser.times[c.id * sentToBrowser.perCall + (c.sentT % sentToBrowser.perCall)] = epochMs();
    c.sentT++;
  }
}
