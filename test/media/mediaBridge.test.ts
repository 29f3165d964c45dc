import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { MediaEngine, type BrowserMediaPort } from '../../src/media';
import { OpusDecoder, OpusEncoder, pcmaDecode, pcmaEncode, pcmuDecode, pcmuEncode } from '../../src/media/codecs';
import { liveOpusCoders } from '../../src/media/codecs/opus';
import { modeFor, type ReceptionReport } from '../../src/media/mediaBridge';
import { dtmfToneFrames } from '../../src/media/dtmf';
import { sipFrameSamplesFor } from '../../src/media/sipRtpLeg';
import { buildRtp, parseRtp, type RtpPacketView } from '../../src/media/rtp';
import { CdrWriter } from '../../src/observability/cdr';
import { GatewayMetrics } from '../../src/observability/metrics';
import { until } from '../support/tabs';
import { toneRatio } from '../support/audio';

const logger = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A browser side that negotiated PCMU, so the bridge passes trunk audio through unchanged. */
function fakeBrowser(): BrowserMediaPort & { got: RtpPacketView[] } {
  const got: RtpPacketView[] = [];
  return {
    got,
    opusPayloadType: null,
    pcmuPayloadType: 0,
    telephoneEventPayloadType: null,
    sendCodec: 'pcmu',
    onRtp: () => () => {},
    sendRtp: (pkt) => got.push({ ...pkt, payload: Buffer.from(pkt.payload) }),
  };
}

test('trunk packets out of order, duplicated and missing: the browser gets them in order, stats() and the CDR line count them', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [19780, 19799], logger });
  const leg = await engine.createSipLeg({ callId: 'r1' });
  const trunk = dgram.createSocket('udp4');
  await new Promise<void>((r) => trunk.bind(0, '127.0.0.1', () => r()));
  const browser = fakeBrowser();
  const dir = mkdtempSync(join(tmpdir(), 'cdr-'));
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const bridge = engine.createBridge(browser, leg, { callId: 'r1' }).bridge;
    assert.equal(bridge.isTranscoding, false);
    // 3 overtaken by 4, then a duplicate 3; 6 missing while 7..10 arrive (more than the reorder
    // depth of 3, so the gap is given up), then 6 comes too late; 12 overtaken by 13.
    const order = [1, 2, 4, 3, 3, 5, 7, 8, 9, 10, 6, 11, 13, 12];
    for (const seq of order) trunk.send(buildRtp(0, seq, seq * 160, 0x1234, Buffer.alloc(160, seq)), leg.localPort, '127.0.0.1');
    for (let i = 0; i < 50 && browser.got.length < 12; i++) await sleep(10);
    await sleep(60); // anything wrongly still held would be given up by now

    // Payload byte = trunk sequence number: in order, each once, 6 absent.
    assert.deepEqual(browser.got.map((p) => p.payload[0]), [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13]);
    // The given-up packet leaves a hole in the browser-bound numbering for its jitter buffer to conceal.
    const steps = browser.got.slice(1).map((p, i) => (p.sequenceNumber - browser.got[i].sequenceNumber) & 0xffff);
    assert.deepEqual(steps, [1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1]);

    const sip = bridge.stats().sip;
    assert.deepEqual(sip.reorder, { reordered: 2, duplicateOrLate: 2, givenUp: 1 });
    // Socket-level counters are unchanged in meaning: every well-formed datagram was received.
    assert.equal(sip.packetsReceived, order.length);
    assert.equal(sip.dropped, 0);
    assert.equal(bridge.stats().browser.reorder, undefined, 'the browser leg has no reorder stage');

    // The CDR carries bridge.stats() as `quality` (CallBase.record()): the counters reach the JSON line.
    const path = join(dir, 'cdr.jsonl');
    const cdr = new CdrWriter(path);
    cdr.write({ callId: 'r1', quality: bridge.stats() });
    cdr.close();
    const line = JSON.parse(readFileSync(path, 'utf8').trim());
    assert.deepEqual(line.quality.sip.reorder, { reordered: 2, duplicateOrLate: 2, givenUp: 1 });
    bridge.close();
  } finally {
    leg.close();
    trunk.close();
    rmSync(dir, { recursive: true, force: true });
    await engine.close();
  }
});

test('comfort noise and DTMF events from the trunk take sequence numbers: the audio after them is neither held nor counted lost', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22760, 22779], logger });
  const leg = await engine.createSipLeg({ callId: 'cn' });
  const trunk = dgram.createSocket('udp4');
  await new Promise<void>((r) => trunk.bind(0, '127.0.0.1', () => r()));
  const browser = fakeBrowser();
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
    const bridge = engine.createBridge(browser, leg, { callId: 'cn' }).bridge;
    const send = (pt: number, seq: number, payload: Buffer) => trunk.send(buildRtp(pt, seq, seq * 160, 0x77, payload), leg.localPort, '127.0.0.1');
    send(0, 1, Buffer.alloc(160, 1));
    send(13, 2, Buffer.from([40]));                                        // comfort noise
    send(0, 3, Buffer.alloc(160, 3));
    send(101, 4, Buffer.from([5, 0x0a, 0, 160]));                          // a DTMF event
    send(0, 5, Buffer.alloc(160, 5));
    await until(() => browser.got.length === 3, 'the three audio packets');
    await sleep(80); // past the reorder stage's wait: a packet wrongly held would be given up by now
    assert.deepEqual(browser.got.map((p) => p.payload[0]), [1, 3, 5]);
    assert.deepEqual(bridge.stats().sip.reorder, { reordered: 0, duplicateOrLate: 0, givenUp: 0 });
  } finally {
    leg.close();
    trunk.close();
  }
});

/** A browser side that sends Opus (the bridge transcodes); the test plays its RTP into the bridge. */
function opusBrowser(): BrowserMediaPort & { deliver(pkt: RtpPacketView): void; report(): ReceptionReport | null } {
  let listener: ((pkt: RtpPacketView) => void) | null = null;
  let source: (() => ReceptionReport | null) | null = null;
  return {
    opusPayloadType: 111,
    pcmuPayloadType: null,
    telephoneEventPayloadType: 126,
    sendCodec: 'opus',
    onRtp: (l) => { listener = l; return () => { listener = null; }; },
    sendRtp: () => {},
    receptionReports: (s) => { source = s; return () => { source = null; }; },
    deliver: (pkt) => listener?.(pkt),
    report: () => source?.() ?? null,
  };
}

/** 20 ms of a voiced, vowel-like sound at 48 kHz (active speech, so the encoder adds LBRR). */
function voiced(frame: number): Int16Array {
  const pcm = new Int16Array(960);
  for (let i = 0; i < 960; i++) {
    const t = (frame * 960 + i) / 48000;
    let v = 0;
    for (let k = 1; k <= 20; k++) v += Math.sin(2 * Math.PI * 140 * k * t) / (1 + ((140 * k - 700) / 200) ** 2);
    pcm[i] = Math.round(6000 * v);
  }
  return pcm;
}

test('a gap in the browser\'s Opus: PLC for all but the last lost frame, FEC from the next packet for that one; stats() and the reception report count them', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [19780, 19799], logger });
  const leg = await engine.createSipLeg({ callId: 'fec' });
  const trunk = dgram.createSocket('udp4');
  await new Promise<void>((r) => trunk.bind(0, '127.0.0.1', () => r()));
  const atTrunk: RtpPacketView[] = [];
  trunk.on('message', (m) => { const p = parseRtp(m); if (p) atTrunk.push({ ...p, payload: Buffer.from(p.payload) }); });
  const browser = opusBrowser();
  const enc = new OpusEncoder({ sampleRate: 48000, complexity: 5, bitrate: 32000, fec: true, packetLossPercent: 20 });
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const bridge = engine.createBridge(browser, leg, { callId: 'fec' }).bridge;
    assert.equal(bridge.isTranscoding, true);
    assert.equal(browser.report(), null, 'nothing to report before the first packet');
    const packets = Array.from({ length: 30 }, (_, f) => enc.encode(voiced(f)));
    // Lost: 10 (alone), 20-22 (three in a row). 15-17 are telephone-events in the same stream,
    // not audio: a hook flash (event 16), which is no digit, so nothing goes to the trunk for it
    // (a digit would go there as tones, replacing the audio while it plays).
    const lost = new Set([10, 20, 21, 22]);
    for (let seq = 0; seq < 30; seq++) {
      if (lost.has(seq)) continue;
      const event = seq >= 15 && seq <= 17;
      browser.deliver({ payloadType: event ? 126 : 111, sequenceNumber: 5000 + seq, timestamp: seq * 960, marker: false, ssrc: 0xb0b, payload: event ? Buffer.from([16, 10, 0, 160]) : packets[seq] });
    }
    const browserStats = bridge.stats().browser;
    // Rebuilt from FEC: 10 (from 11), 22 (from 23); PLC: 20 and 21. The three frames the
    // events took are filled in the same way (15 and 16 PLC, 17 from 18's FEC) to keep the
    // trunk's timeline, but they are not losses.
    assert.equal(browserStats.fecRecovered, 3);
    assert.equal(browserStats.concealed, 4);
    assert.equal(browserStats.packetsLost, 4, 'DTMF events are packets of the stream');
    const report = browser.report()!;
    assert.deepEqual({ ...report, jitter: 0 }, { ssrc: 0xb0b, fractionLost: Math.floor((4 * 256) / 30), cumulativeLost: 4, extendedHighestSeq: 5029, jitter: 0, expected: 30 });
    // The 30 packets came in one burst with timestamps 20 ms apart: the jitter cannot be 0.
    assert.ok(Number.isInteger(report.jitter) && report.jitter > 0, `jitter ${report.jitter}`);
    assert.equal(browser.report()!.fractionLost, 0, 'a new interval starts with each report');

    // What reached the trunk for the frame lost before 11 is libopus' FEC decode of 11.
    await until(() => atTrunk.length >= 30, 'every 20 ms of the timeline at the trunk');
    await sleep(50); // nothing more should come
    assert.equal(atTrunk.length, 30, 'every 20 ms of the timeline reached the trunk, once');
    atTrunk.sort((a, b) => a.sequenceNumber - b.sequenceNumber);
    const twin = new OpusDecoder({ sampleRate: 8000 });
    for (let f = 0; f < 10; f++) twin.decode(packets[f]);
    assert.deepEqual(atTrunk[10].payload, Buffer.from(pcmuEncode(twin.decodeFec(packets[11]))));
    assert.deepEqual(atTrunk[11].payload, Buffer.from(pcmuEncode(twin.decode(packets[11]))));
    twin.delete();
    bridge.close();
  } finally {
    enc.delete();
    leg.close();
    trunk.close();
    await engine.close();
  }
});

/** A fresh engine on `ports`, one SIP leg, and a trunk socket keeping every RTP packet that reaches it. */
async function trunkRig(callId: string, ports: [number, number]) {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: ports, logger });
  const leg = await engine.createSipLeg({ callId });
  const trunk = dgram.createSocket('udp4');
  await new Promise<void>((r) => trunk.bind(0, '127.0.0.1', () => r()));
  const atTrunk: RtpPacketView[] = [];
  trunk.on('message', (m) => { const p = parseRtp(m); if (p) atTrunk.push({ ...p, payload: Buffer.from(p.payload) }); });
  return { engine, leg, trunk, atTrunk, close: async () => { leg.close(); trunk.close(); await engine.close(); } };
}

/** A PCMU browser whose RTP the test plays into the bridge. */
function pcmuBrowser(): ReturnType<typeof fakeBrowser> & { deliver(pkt: RtpPacketView): void } {
  let listener: ((pkt: RtpPacketView) => void) | null = null;
  const b = fakeBrowser();
  return { ...b, telephoneEventPayloadType: 126, onRtp: (l) => { listener = l; return () => { listener = null; }; }, deliver: (pkt) => listener?.(pkt) };
}

test('duplicated and reordered packets on each leg: counted in its stats (duplicates, late), the CDR line and the metrics', async () => {
  const { engine, leg, trunk, close } = await trunkRig('dup-late', [26340, 26343]);
  const browser = pcmuBrowser();
  const dir = mkdtempSync(join(tmpdir(), 'cdr-'));
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const handle = engine.createBridge(browser, leg, { callId: 'dup-late' });
    // Trunk, over UDP: 3 overtaken by 4 (late), then 2 again (a duplicate of an older packet:
    // the old count saw only a repeat of the highest), then 6 twice.
    const fromTrunk = [1, 2, 4, 3, 2, 5, 6, 6];
    for (const seq of fromTrunk) trunk.send(buildRtp(0, seq, seq * 160, 0x5151, Buffer.alloc(160, seq)), leg.localPort, '127.0.0.1');
    await until(() => handle.bridge.stats().sip.packetsReceived === fromTrunk.length, 'every trunk packet at the leg');
    // Browser: 12 overtaken by 13, then 12 again, then 11 again.
    const fromBrowser = [10, 11, 13, 12, 12, 14, 11];
    for (const seq of fromBrowser) browser.deliver({ payloadType: 0, sequenceNumber: seq, timestamp: seq * 160, marker: false, ssrc: 0xb0b, payload: Buffer.alloc(160, seq) });

    const stats = (await handle.close())!;
    assert.deepEqual(pick(stats.sip), { packetsReceived: 8, packetsLost: 0, duplicates: 2, late: 1, dropped: 0 });
    // The bridge drops the browser's late and duplicate audio: those are in `dropped` as well.
    assert.deepEqual(pick(stats.browser), { packetsReceived: 7, packetsLost: 0, duplicates: 2, late: 1, dropped: 3 });

    // Both reach the CDR line (CallBase.record() writes the bridge's stats as `quality`)...
    const path = join(dir, 'cdr.jsonl');
    const cdr = new CdrWriter(path);
    cdr.write({ callId: 'dup-late', quality: stats });
    cdr.close();
    const line = JSON.parse(readFileSync(path, 'utf8').trim());
    assert.deepEqual([line.quality.sip.duplicates, line.quality.sip.late, line.quality.browser.duplicates, line.quality.browser.late], [2, 1, 2, 1]);
    // ...and the metrics, per leg, as running totals over calls.
    const metrics = new GatewayMetrics();
    metrics.callQuality(stats);
    metrics.callQuality(stats);
    const text = await metrics.render();
    for (const leg of ['sip', 'browser']) {
      assert.match(text, new RegExp(`^gateway_leg_duplicate_packets_total\\{leg="${leg}"\\} 4$`, 'm'));
      assert.match(text, new RegExp(`^gateway_leg_late_packets_total\\{leg="${leg}"\\} 2$`, 'm'));
    }
  } finally {
    await close();
    rmSync(dir, { recursive: true, force: true });
  }
});

function pick(s: { packetsReceived: number; packetsLost: number; duplicates: number; late: number; dropped: number }) {
  return { packetsReceived: s.packetsReceived, packetsLost: s.packetsLost, duplicates: s.duplicates, late: s.late, dropped: s.dropped };
}

test('a trunk with a=ptime:30: 30 ms PCMU packets to it, its 30 ms frames re-framed into 20 ms Opus for the browser, both timelines continuous', async () => {
  assert.deepEqual([undefined, 10, 20, 30, 40, 60, 0, 1000].map((p) => sipFrameSamplesFor(p)), [160, 80, 160, 240, 320, 480, 160, 960]);
  const { engine, leg, trunk, atTrunk, close } = await trunkRig('ptime30', [22920, 22929]);
  const browser = opusBrowser();
  const toBrowser: RtpPacketView[] = [];
  browser.sendRtp = (pkt) => toBrowser.push({ ...pkt, payload: Buffer.from(pkt.payload) });
  const enc = new OpusEncoder({ sampleRate: 48000, complexity: 1, bitrate: 24000 });
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, ptime: 30 });
    const bridge = engine.createBridge(browser, leg, { callId: 'ptime30' }).bridge;
    assert.equal(bridge.isTranscoding, true);
    // Browser → trunk: 12 Opus frames of 20 ms = 240 ms = 8 packets of 30 ms.
    for (let f = 0; f < 12; f++) browser.deliver({ payloadType: 111, sequenceNumber: 100 + f, timestamp: f * 960, marker: false, ssrc: 0xb0b, payload: enc.encode(voiced(f)) });
    await until(() => atTrunk.length >= 8, 'eight 30 ms packets at the trunk');
    assert.ok(atTrunk.every((p) => p.payload.length === 240), `sizes ${atTrunk.map((p) => p.payload.length).join(',')}`);
    const ts = atTrunk.map((p) => p.timestamp);
    assert.deepEqual(ts.slice(1).map((t, i) => (t - ts[i]) >>> 0), Array(7).fill(240));
    // Trunk → browser: 6 packets of 30 ms = 180 ms = 9 Opus frames of 20 ms.
    for (let i = 0; i < 6; i++) trunk.send(buildRtp(0, 1 + i, i * 240, 0x3030, pcmuEncode(voiced(i).subarray(0, 240))), leg.localPort, '127.0.0.1');
    await until(() => toBrowser.length >= 9, 'nine 20 ms Opus frames for the browser');
    await sleep(60);
    assert.equal(toBrowser.length, 9);
    assert.deepEqual(toBrowser.slice(1).map((p, i) => [(p.sequenceNumber - toBrowser[i].sequenceNumber) & 0xffff, (p.timestamp - toBrowser[i].timestamp) >>> 0]), Array(8).fill([1, 960]));
    const dec = new OpusDecoder({ sampleRate: 48000 });
    try { for (const p of toBrowser) assert.equal(dec.decode(p.payload).length, 960, 'each Opus packet holds 20 ms'); } finally { dec.delete(); }
    bridge.close();
  } finally {
    enc.delete();
    await close();
  }
});

test('modes: pass-through for one codec both sides, Opus transcoded to G.711 and back, PCMU converted to PCMA', () => {
  assert.equal(modeFor(true, 'PCMU'), 'passthrough');
  assert.equal(modeFor(true, 'PCMA'), 'lawConvert');
  assert.equal(modeFor(true, 'opus'), 'transcodeOpusTrunk');
  assert.equal(modeFor(false, 'opus'), 'passthrough');
  assert.equal(modeFor(false, 'PCMU'), 'transcode');
  assert.equal(modeFor(false, 'PCMA'), 'transcode');
});

test('a PCMU browser and a PCMA trunk (webrtc.preferPcmu on a European trunk): audio converted both ways; a re-INVITE to PCMU makes it pass-through, one to ptime 30 resizes the packets', async () => {
  const { engine, leg, trunk, atTrunk, close } = await trunkRig('law', [22950, 22959]);
  const browser = pcmuBrowser();
  const pcm = Int16Array.from({ length: 160 }, (_, i) => Math.round(9000 * Math.sin((2 * Math.PI * 700 * i) / 8000)));
  const similar = (a: Int16Array, b: Int16Array) => a.every((v, i) => Math.abs(v - b[i]) <= Math.max(64, Math.abs(v) / 8));
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMA', payloadType: 8 });
    const bridge = engine.createBridge(browser, leg, { callId: 'law' }).bridge;
    assert.equal(bridge.stats().mode, 'lawConvert');
    // Browser → trunk: PCMU in, PCMA out, the same sound.
    browser.deliver({ payloadType: 0, sequenceNumber: 1, timestamp: 160, marker: false, ssrc: 0xb0b, payload: pcmuEncode(pcm) });
    await until(() => atTrunk.length === 1, 'a packet at the trunk');
    assert.equal(atTrunk[0].payloadType, 8);
    assert.ok(similar(pcmaDecode(atTrunk[0].payload), pcm), 'the trunk gets the browser\'s audio in A-law');
    // Trunk → browser: PCMA in, PCMU out.
    trunk.send(buildRtp(8, 1, 160, 0x8888, pcmaEncode(pcm)), leg.localPort, '127.0.0.1');
    await until(() => browser.got.length === 1, 'a packet for the browser');
    assert.equal(browser.got[0].payloadType, 0);
    assert.ok(similar(pcmuDecode(browser.got[0].payload), pcm), 'the browser gets the trunk\'s audio in µ-law');
    // A re-INVITE moves the trunk to PCMU: bytes pass through untouched.
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    assert.equal(bridge.stats().mode, 'passthrough');
    const mu = pcmuEncode(pcm);
    browser.deliver({ payloadType: 0, sequenceNumber: 2, timestamp: 320, marker: false, ssrc: 0xb0b, payload: mu });
    await until(() => atTrunk.length === 2, 'the second packet at the trunk');
    assert.deepEqual(atTrunk[1].payload, mu);
    // And to PCMA with ptime 30: browser 20 ms frames leave as 30 ms A-law packets.
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMA', payloadType: 8, ptime: 30 });
    for (let s = 3; s <= 5; s++) browser.deliver({ payloadType: 0, sequenceNumber: s, timestamp: s * 160, marker: false, ssrc: 0xb0b, payload: mu });
    await until(() => atTrunk.length === 4, 'two 30 ms packets from three 20 ms frames');
    assert.deepEqual(atTrunk.slice(2).map((p) => [p.payloadType, p.payload.length]), [[8, 240], [8, 240]]);
    bridge.close();
  } finally {
    await close();
  }
});

test('a PCMU browser and an Opus trunk: transcoded both ways (tones checked), trunk losses concealed, a lost browser frame left as a gap; a re-INVITE to PCMU passes through and frees the coders', async () => {
  const { engine, leg, trunk, atTrunk, close } = await trunkRig('opus-trunk', [25000, 25009]);
  const browser = pcmuBrowser();
  const tone = (hz: number, from: number, n: number, rate: number) => Int16Array.from({ length: n }, (_, i) => Math.round(8000 * Math.sin((2 * Math.PI * hz * (from + i)) / rate)));
  const before = liveOpusCoders;
  const enc = new OpusEncoder({ sampleRate: 48000, complexity: 1, bitrate: 32000 });
  const dec = new OpusDecoder({ sampleRate: 8000 });
  const coders = liveOpusCoders; // the test's own two
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'opus', payloadType: 111 });
    const bridge = engine.createBridge(browser, leg, { callId: 'opus-trunk' }).bridge;
    assert.equal(bridge.stats().mode, 'transcodeOpusTrunk');
    assert.equal(bridge.isTranscoding, true);
    assert.equal(liveOpusCoders, coders + 2, 'an Opus decoder and encoder for the trunk');
    // Browser → trunk: 700 Hz in 20 ms PCMU packets; packet 6 lost on the way.
    for (let seq = 1; seq <= 12; seq++) {
      if (seq === 6) continue;
      browser.deliver({ payloadType: 0, sequenceNumber: seq, timestamp: seq * 160, marker: false, ssrc: 0xb0b, payload: pcmuEncode(tone(700, seq * 160, 160, 8000)) });
    }
    await until(() => atTrunk.length === 11, 'eleven Opus packets at the trunk');
    assert.ok(atTrunk.every((p) => p.payloadType === 111), 'Opus toward the trunk');
    const steps = atTrunk.slice(1).map((p, i) => [(p.sequenceNumber - atTrunk[i].sequenceNumber) & 0xffff, (p.timestamp - atTrunk[i].timestamp) >>> 0]);
    assert.deepEqual(steps, [[1, 960], [1, 960], [1, 960], [1, 960], [2, 1920], [1, 960], [1, 960], [1, 960], [1, 960], [1, 960]], 'the lost frame\'s number and 20 ms left for the trunk\'s PLC');
    const heard = new Int16Array(atTrunk.length * 160);
    atTrunk.forEach((p, i) => heard.set(dec.decode(p.payload), i * 160));
    const settled = heard.subarray(480);
    assert.ok(toneRatio(settled, 8000, 700) > 0.8, `700 Hz at the trunk (ratio ${toneRatio(settled, 8000, 700).toFixed(2)})`);
    // Trunk → browser: 1 kHz Opus in 20 ms packets at 48 kHz; packet 5 lost (concealed).
    for (let seq = 1; seq <= 12; seq++) {
      const payload = enc.encode(tone(1000, seq * 960, 960, 48000));
      if (seq !== 5) trunk.send(buildRtp(111, seq, seq * 960, 0x0b05, payload), leg.localPort, '127.0.0.1');
    }
    await until(() => browser.got.length === 12, 'twelve PCMU packets for the browser (the lost one concealed)');
    assert.ok(browser.got.every((p) => p.payloadType === 0 && p.payload.length === 160), 'PCMU, 20 ms each');
    assert.deepEqual(browser.got.slice(1).map((p, i) => [(p.sequenceNumber - browser.got[i].sequenceNumber) & 0xffff, (p.timestamp - browser.got[i].timestamp) >>> 0]), Array(11).fill([1, 160]));
    const pcm = new Int16Array(12 * 160);
    browser.got.forEach((p, i) => pcm.set(pcmuDecode(p.payload), i * 160));
    // Per 20 ms frame (a concealed frame shifts the phase of what follows): the decoder's first
    // frame ramps up; the concealed one (seq 5) carries the tone on instead of a hole.
    const ratios = browser.got.map((_, i) => toneRatio(pcm.subarray(i * 160, i * 160 + 160), 8000, 1000));
    assert.ok(ratios.slice(1).every((r, i) => r > (i + 1 === 4 ? 0.5 : 0.9)), `1 kHz in the browser (per frame ${ratios.map((r) => r.toFixed(2)).join(' ')})`);
    // The SIP leg's stats say so (these packets carry no FEC: concealed, not rebuilt).
    assert.deepEqual([bridge.stats().sip.concealed, bridge.stats().sip.fecRecovered], [1, 0]);
    // Malformed Opus from the trunk is concealed and counted, not thrown.
    trunk.send(buildRtp(111, 13, 13 * 960, 0x0b05, Buffer.from([0xff, 0xff, 0xff])), leg.localPort, '127.0.0.1');
    await until(() => bridge.stats().sip.dropped >= 1, 'the malformed packet counted');
    assert.equal(bridge.stats().sip.concealed, 2);
    // A re-INVITE to PCMU: bytes pass through, the Opus coders are freed.
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    assert.equal(bridge.stats().mode, 'passthrough');
    assert.equal(liveOpusCoders, coders);
    assert.deepEqual([bridge.stats().sip.concealed, bridge.stats().sip.fecRecovered], [2, 0], 'the freed decoder\'s counts kept');
    const mu = pcmuEncode(tone(700, 0, 160, 8000));
    const n = atTrunk.length;
    browser.deliver({ payloadType: 0, sequenceNumber: 13, timestamp: 13 * 160, marker: false, ssrc: 0xb0b, payload: mu });
    await until(() => atTrunk.length === n + 1, 'the PCMU packet at the trunk');
    assert.deepEqual([atTrunk[n].payloadType, Buffer.from(atTrunk[n].payload)], [0, mu]);
    bridge.close();
  } finally {
    enc.delete();
    dec.delete();
    await close();
  }
  assert.equal(liveOpusCoders, before, 'nothing left after close');
});

test('a trunk packet held for reordering when the codec changes is dropped, not played in the new codec; a coder that cannot be made leaves the bridge without audio instead of throwing', async () => {
  const { engine, leg, trunk, close } = await trunkRig('stale', [25010, 25019]);
  const browser = pcmuBrowser();
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const bridge = engine.createBridge(browser, leg, { callId: 'stale' }).bridge;
    const send = (pt: number, seq: number, fill: number) => trunk.send(buildRtp(pt, seq, seq * 160, 0x5151, Buffer.alloc(160, fill)), leg.localPort, '127.0.0.1');
    send(0, 1, 0x11);
    await until(() => browser.got.length === 1, 'the first packet');
    send(0, 3, 0x33); // held: 2 is missing
    await until(() => bridge.stats().sip.packetsReceived === 2, 'the held packet at the leg');
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMA', payloadType: 8 });
    assert.equal(bridge.stats().mode, 'lawConvert');
    send(8, 2, 0xd5);
    await until(() => browser.got.length === 2, 'the PCMA packet converted');
    await sleep(60); // past the reorder stage's wait
    assert.equal(browser.got.length, 2, 'the held PCMU packet was not played as PCMA');
    assert.equal(bridge.stats().sip.dropped, 1, 'counted with the trunk\'s packets');
    assert.equal(bridge.stats().browser.dropped, 0);
    bridge.close();
  } finally {
    await close();
  }
  // A coder that cannot be made (an Opus trunk for a PCMU browser, its encoder refused as on
  // a heap out of memory): the bridge is made without audio, nothing left allocated.
  const logs: string[] = [];
  const engine2 = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [25020, 25029], logger: pino({ level: 'error' }, { write: (l: string) => { logs.push(l); } }) });
  const leg2 = await engine2.createSipLeg({ callId: 'nocoder' });
  const encoderProto = OpusEncoder.prototype as unknown as { ctl: (code: number, value: number) => void };
  const ctl = encoderProto.ctl;
  const coders = liveOpusCoders;
  try {
    leg2.setRemote({ address: '127.0.0.1', port: 9, codec: 'opus', payloadType: 111 });
    encoderProto.ctl = () => { throw new Error('allocation failed (test)'); };
    const bridge = engine2.createBridge(pcmuBrowser(), leg2, { callId: 'nocoder' }).bridge;
    assert.equal(bridge.stats().mode, 'unsupported');
    assert.equal(liveOpusCoders, coders, 'the decoder made before the encoder failed is freed');
    assert.ok(logs.some((l) => l.includes('cannot set up for the trunk')), 'an error logged');
    bridge.close();
  } finally {
    encoderProto.ctl = ctl;
    leg2.close();
    await engine2.close();
  }
});

test('pass-through toward the trunk: a duplicate and a late browser packet are dropped, a lost one leaves its gap in the numbering and the timeline', async () => {
  const { engine, leg, trunk, atTrunk, close } = await trunkRig('gaps', [22960, 22969]);
  const browser = pcmuBrowser();
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const bridge = engine.createBridge(browser, leg, { callId: 'gaps' }).bridge;
    // 3 lost; 4 overtakes a late 3... which then never counts; 4 again (duplicate).
    for (const seq of [1, 2, 4, 3, 4, 5]) browser.deliver({ payloadType: 0, sequenceNumber: seq, timestamp: seq * 160, marker: false, ssrc: 0xb0b, payload: Buffer.alloc(160, seq) });
    await until(() => atTrunk.length === 4, 'four packets at the trunk');
    await sleep(50);
    assert.deepEqual(atTrunk.map((p) => p.payload[0]), [1, 2, 4, 5]);
    const steps = atTrunk.slice(1).map((p, i) => [(p.sequenceNumber - atTrunk[i].sequenceNumber) & 0xffff, (p.timestamp - atTrunk[i].timestamp) >>> 0]);
    assert.deepEqual(steps, [[1, 160], [2, 320], [1, 160]], 'the lost packet\'s number and 20 ms left out');
    assert.equal(bridge.stats().browser.dropped, 2, 'the late and the duplicate packet');
    bridge.close();
  } finally {
    await close();
  }
});

test('a bridge started before the trunk\'s SDP (180 without SDP) takes the mode of its answer: Opus both sides passes through', async () => {
  const { engine, leg, trunk, atTrunk, close } = await trunkRig('early', [23030, 23039]);
  const browser = opusBrowser();
  const enc = new OpusEncoder({ sampleRate: 48000, complexity: 1, bitrate: 24000 });
  try {
    const bridge = engine.createBridge(browser, leg, { callId: 'early' }).bridge;
    assert.equal(bridge.stats().mode, 'transcode', 'PCMU assumed until the answer');
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'opus', payloadType: 111 });
    assert.equal(bridge.stats().mode, 'passthrough');
    const frame = enc.encode(voiced(0));
    browser.deliver({ payloadType: 111, sequenceNumber: 1, timestamp: 960, marker: false, ssrc: 0xb0b, payload: frame });
    await until(() => atTrunk.length === 1, 'the Opus packet at the trunk');
    assert.equal(atTrunk[0].payloadType, 111);
    assert.deepEqual(atTrunk[0].payload, frame);
    bridge.close();
  } finally {
    enc.delete();
    await close();
  }
});

test('pass-through: the browser\'s DTMF events between its audio leave no gap toward the trunk (the digit goes as our own event train)', async () => {
  const { engine, leg, trunk, atTrunk, close } = await trunkRig('pt-dtmf', [23040, 23049]);
  const browser = pcmuBrowser();
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
    const bridge = engine.createBridge(browser, leg, { callId: 'pt-dtmf' }).bridge;
    const audio = (seq: number) => browser.deliver({ payloadType: 0, sequenceNumber: seq, timestamp: seq * 160, marker: false, ssrc: 0xb0b, payload: Buffer.alloc(160, seq) });
    const event = (seq: number, end: boolean) => browser.deliver({ payloadType: 126, sequenceNumber: seq, timestamp: 2 * 160, marker: seq === 2, ssrc: 0xb0b, payload: Buffer.from([5, end ? 0x8a : 0x0a, 0, 160]) });
    audio(1);
    event(2, false); event(3, false); event(4, true);
    await until(() => atTrunk.filter((p) => p.payloadType === 101 && (p.payload[1] & 0x80)).length === 3, 'our event train for the digit');
    await sleep(40);
    audio(5);
    await until(() => atTrunk.filter((p) => p.payloadType === 0).length === 2, 'the audio after the digit');
    const seqSteps = atTrunk.slice(1).map((p, i) => (p.sequenceNumber - atTrunk[i].sequenceNumber) & 0xffff);
    assert.ok(seqSteps.every((d) => d === 1), `no gap toward the trunk: steps ${seqSteps.join(',')}`);
    assert.equal(bridge.stats().browser.dropped, 0);
    bridge.close();
  } finally {
    await close();
  }
});

test('pass-through without telephone-event toward the trunk: the browser\'s digit goes as tones in the audio, its events leave no gap', async () => {
  const { engine, leg, atTrunk, trunk, close } = await trunkRig('pt-no-te', [23050, 23059]);
  const browser = pcmuBrowser();
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const bridge = engine.createBridge(browser, leg, { callId: 'pt-no-te' }).bridge;
    const digits: string[] = [];
    bridge.on('dtmf', (ev) => digits.push(ev.digit));
    browser.deliver({ payloadType: 0, sequenceNumber: 1, timestamp: 160, marker: false, ssrc: 0xb0b, payload: Buffer.alloc(160, 1) });
    // A 100 ms digit (800 ticks at the PCMU browser's 8 kHz): its tones once its length is known.
    for (const [s, ticks] of [[2, 160], [3, 480], [4, 800]]) browser.deliver({ payloadType: 126, sequenceNumber: s, timestamp: 320, marker: s === 2, ssrc: 0xb0b, payload: Buffer.from([5, s === 4 ? 0x8a : 0x0a, ticks >> 8, ticks & 0xff]) });
    await until(() => atTrunk.length === 9, 'the audio packet, five of the digit\'s tones and three of pause');
    assert.deepEqual(digits, ['5']);
    assert.ok(atTrunk.every((p) => p.payloadType === 0), 'all audio, no events');
    const steps = atTrunk.slice(1).map((p, i) => (p.sequenceNumber - atTrunk[i].sequenceNumber) & 0xffff);
    assert.deepEqual(steps, Array(8).fill(1), 'no gap for the event packets: the tones took their place');
    const tone = pcmuDecode(atTrunk[2].payload);
    assert.ok(toneRatio(tone, 8000, 770) > 0.3 && toneRatio(tone, 8000, 1336) > 0.3, 'digit 5: 770 + 1336 Hz');
    // After the pause the browser's audio goes on where the digit's stretch ended.
    await sleep(40);
    browser.deliver({ payloadType: 0, sequenceNumber: 5, timestamp: 800, marker: false, ssrc: 0xb0b, payload: Buffer.alloc(160, 5) });
    await until(() => atTrunk.length === 10, 'the audio after the digit');
    assert.deepEqual([(atTrunk[9].sequenceNumber - atTrunk[8].sequenceNumber) & 0xffff, (atTrunk[9].timestamp - atTrunk[8].timestamp) >>> 0], [1, 160]);
    assert.deepEqual(atTrunk[9].payload, Buffer.alloc(160, 5), 'and it is the browser\'s packet');
    bridge.close();
  } finally {
    await close();
  }
});

test('a browser digit toward a trunk without telephone-event sounds while the key is down: its tones start at its first event packet, last its length, then audio goes on', async () => {
  const { engine, leg, atTrunk, trunk, close } = await trunkRig('live-tones', [25680, 25689]);
  const browser = pcmuBrowser();
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const bridge = engine.createBridge(browser, leg, { callId: 'live-tones' }).bridge;
    browser.deliver({ payloadType: 0, sequenceNumber: 1, timestamp: 160, marker: false, ssrc: 0xb0b, payload: Buffer.alloc(160, 1) });
    // The key goes down: only the digit's first event packet has come.
    browser.deliver({ payloadType: 126, sequenceNumber: 2, timestamp: 320, marker: true, ssrc: 0xb0b, payload: Buffer.from([3, 0x0a, 0, 160]) });
    await sleep(100);
    const whilePressed = atTrunk.length - 1;
    assert.ok(whilePressed >= 4, `the tones go to the trunk while the key is down: ${whilePressed} frames`);
    const first = pcmuDecode(atTrunk[1].payload);
    assert.ok(toneRatio(first, 8000, 697) > 0.3 && toneRatio(first, 8000, 1477) > 0.3, 'digit 3: 697 + 1477 Hz');
    assert.equal(atTrunk[1].marker, true);
    // Released after 180 ms (1440 ticks): updates, then the end three times.
    for (const [s, ticks, end] of [[3, 800, false], [4, 1440, true], [5, 1440, true]] as const) {
      browser.deliver({ payloadType: 126, sequenceNumber: s, timestamp: 320, marker: false, ssrc: 0xb0b, payload: Buffer.from([3, end ? 0x8a : 0x0a, ticks >> 8, ticks & 0xff]) });
    }
    await until(() => atTrunk.length >= 1 + 9 + 3, 'nine frames of tone (180 ms) and three of pause');
    await sleep(60);
    assert.equal(atTrunk.length, 13, 'nothing more while the browser sends nothing');
    const tone = atTrunk.slice(1, 10).map((p) => pcmuDecode(p.payload));
    assert.ok(tone.every((pcm) => toneRatio(pcm, 8000, 697) > 0.3), 'the digit for its whole length');
    assert.ok(atTrunk.slice(10).every((p) => pcmuDecode(p.payload).every((v) => Math.abs(v) < 16)), 'then silence');
    const steps = atTrunk.slice(1).map((p, i) => [(p.sequenceNumber - atTrunk[i].sequenceNumber) & 0xffff, (p.timestamp - atTrunk[i].timestamp) >>> 0]);
    assert.ok(steps.every(([n, t]) => n === 1 && t === 160), `continuous: ${JSON.stringify(steps)}`);
    browser.deliver({ payloadType: 0, sequenceNumber: 6, timestamp: 1760, marker: false, ssrc: 0xb0b, payload: Buffer.alloc(160, 6) });
    await until(() => atTrunk.length === 14, 'the audio after the digit');
    assert.deepEqual(atTrunk[13].payload, Buffer.alloc(160, 6));
    assert.equal((atTrunk[13].timestamp - atTrunk[12].timestamp) >>> 0, 160, 'on the timeline right after the pause');
    bridge.close();
  } finally {
    await close();
  }
});

test('a fast dialler toward a trunk without telephone-event: a key pressed in the previous digit\'s pause sounds right after it, one released before its turn plays after it with its length', async () => {
  const { engine, leg, atTrunk, trunk, close } = await trunkRig('fast-tones', [25690, 25699]);
  const browser = pcmuBrowser();
  // What each packet toward the trunk carries: a digit's tones, silence (-) or other audio (?).
  const KEYS: Record<string, [number, number]> = { 1: [697, 1209], 2: [697, 1336], 3: [697, 1477] };
  const heard = (p: RtpPacketView) => {
    const pcm = pcmuDecode(p.payload);
    if (pcm.every((v) => Math.abs(v) < 16)) return '-';
    return Object.keys(KEYS).find((k) => toneRatio(pcm, 8000, KEYS[k][0]) > 0.3 && toneRatio(pcm, 8000, KEYS[k][1]) > 0.3) ?? '?';
  };
  const sequence = () => atTrunk.map(heard).join('');
  let seq = 1;
  const event = (key: number, ts: number, ticks: number, end: boolean) =>
    browser.deliver({ payloadType: 126, sequenceNumber: seq++, timestamp: ts, marker: ticks === 0, ssrc: 0xb0b, payload: Buffer.from([key, end ? 0x8a : 0x0a, ticks >> 8, ticks & 0xff]) });
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const bridge = engine.createBridge(browser, leg, { callId: 'fast-tones' }).bridge;
    event(1, 1000, 0, false);
    await until(() => atTrunk.length >= 4, 'the first digit sounding');
    event(1, 1000, 800, true); // released after 100 ms
    await until(() => sequence().endsWith('-'), 'its pause');
    event(2, 2000, 0, false); // the next key, inside the pause: it waits for the pause to end
    await until(() => sequence().includes('2222'), 'the second digit sounding');
    event(2, 2000, 800, true);
    await until(() => /2-$/.test(sequence()), 'its pause');
    // A third key pressed and released (80 ms) while the second's pause plays: it follows with its length.
    event(3, 3000, 0, false);
    event(3, 3000, 640, true);
    await until(() => /3-{3}$/.test(sequence()), 'the third digit and its pause');
    await sleep(60);
    const heardAll = sequence();
    assert.match(heardAll, /^1{5,6}-{3}2{5,6}-{3}3{4}-{3}$/, `three digits, each with its pause, none lost or merged: ${heardAll}`);
    const steps = atTrunk.slice(1).map((p, i) => [(p.sequenceNumber - atTrunk[i].sequenceNumber) & 0xffff, (p.timestamp - atTrunk[i].timestamp) >>> 0]);
    assert.ok(steps.every(([n, t]) => n === 1 && t === 160), `one continuous timeline: ${JSON.stringify(steps)}`);
    const starts = atTrunk.map((p, i) => (p.marker ? i : -1)).filter((i) => i >= 0);
    assert.deepEqual(starts.map((i) => heardAll[i]), ['1', '2', '3'], 'each digit\'s first frame marked');
    bridge.close();
  } finally {
    await close();
  }
});

test('a browser digit that cannot go live (a digit of sendDtmfToSip playing on a trunk with events) goes in full once it ended, after that digit', async () => {
  const { engine, leg, atTrunk, trunk, close } = await trunkRig('dtmf-fallback', [25700, 25709]);
  const browser = pcmuBrowser();
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
    const bridge = engine.createBridge(browser, leg, { callId: 'dtmf-fallback' }).bridge;
    bridge.sendDtmfToSip('9', 200);
    await sleep(30);
    // The browser's digit 4, 60 ms long, while 9 plays: not live, its events only at its end.
    for (const [s, ticks, end] of [[1, 0, false], [2, 480, true], [3, 480, true]] as const) {
      browser.deliver({ payloadType: 126, sequenceNumber: s, timestamp: 320, marker: s === 1, ssrc: 0xb0b, payload: Buffer.from([4, end ? 0x8a : 0x0a, ticks >> 8, ticks & 0xff]) });
    }
    await until(() => atTrunk.filter((p) => p.payload[0] === 4 && p.payload[1] & 0x80).length === 3, 'the end packets of 4');
    const nine = atTrunk.filter((p) => p.payload[0] === 9);
    const four = atTrunk.filter((p) => p.payload[0] === 4);
    assert.ok(atTrunk.every((p) => p.payloadType === 101), 'only events meanwhile');
    assert.ok(atTrunk.indexOf(four[0]) > atTrunk.lastIndexOf(nine[nine.length - 1]), '4 after the whole of 9');
    assert.equal(four[0].timestamp, (nine[0].timestamp + (200 + 40) * 8) >>> 0, '4 starts where 9\'s stretch (with its end packets) ended');
    assert.deepEqual(four.filter((p) => p.payload[1] & 0x80).map((p) => p.payload.readUInt16BE(2)), [480, 480, 480], 'with the browser\'s length');
    bridge.close();
  } finally {
    await close();
  }
});

test('ringback started before the trunk\'s SDP goes on when its Opus answer frees the transcoder', async () => {
  const { engine, leg, trunk, close } = await trunkRig('ring-opus', [23060, 23069]);
  const browser = opusBrowser();
  const toBrowser: RtpPacketView[] = [];
  browser.sendRtp = (pkt) => toBrowser.push({ ...pkt, payload: Buffer.from(pkt.payload) });
  try {
    const bridge = engine.createBridge(browser, leg, { callId: 'ring-opus' }).bridge;
    bridge.setBrowserTone('ringback');
    await until(() => toBrowser.length >= 3, 'ringback frames');
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'opus', payloadType: 111 });
    assert.equal(bridge.stats().mode, 'passthrough');
    const n = toBrowser.length;
    await until(() => toBrowser.length >= n + 3, 'ringback frames after the answer');
    const dec = new OpusDecoder({ sampleRate: 48000 });
    try { assert.equal(dec.decode(toBrowser[toBrowser.length - 1].payload).length, 960, 'still Opus for the browser'); } finally { dec.delete(); }
    bridge.setBrowserTone('none');
    bridge.close();
  } finally {
    await close();
  }
});

test('ringback when the Opus answer frees the transcoder and no encoder can be made for the tone: silence and an error logged, no exception into the SIP handling', async () => {
  const logs: string[] = [];
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [25628, 25631], logger: pino({ level: 'error' }, { write: (l: string) => { logs.push(l); } }) });
  const leg = await engine.createSipLeg({ callId: 'ring-nocoder' });
  const browser = opusBrowser();
  const toBrowser: RtpPacketView[] = [];
  browser.sendRtp = (pkt) => toBrowser.push(pkt);
  const encoderProto = OpusEncoder.prototype as unknown as { ctl: (code: number, value: number) => void };
  const ctl = encoderProto.ctl;
  try {
    const bridge = engine.createBridge(browser, leg, { callId: 'ring-nocoder' }).bridge;
    bridge.setBrowserTone('ringback');
    await until(() => toBrowser.length >= 2, 'ringback frames');
    encoderProto.ctl = () => { throw new Error('allocation failed (test)'); };
    const coders = liveOpusCoders;
    leg.setRemote({ address: '127.0.0.1', port: 9, codec: 'opus', payloadType: 111 });
    assert.equal(bridge.stats().mode, 'passthrough');
    assert.ok(liveOpusCoders < coders, 'the transcoder was freed');
    const n = toBrowser.length;
    await sleep(80);
    assert.equal(toBrowser.length, n, 'no ringback frames without an encoder');
    assert.ok(logs.some((l) => l.includes('no Opus encoder for the ringback')), 'an error logged');
    bridge.close();
  } finally {
    encoderProto.ctl = ctl;
    leg.close();
    await engine.close();
  }
});

test('the trunk\'s digit reaches the browser as RFC 4733 events on its stream: its PT, its 48 kHz clock, the trunk\'s length, audio held back meanwhile, the timeline continuous', async () => {
  const { engine, leg, trunk, close } = await trunkRig('dtmf-to-browser', [25636, 25639]);
  const browser = opusBrowser();
  const toBrowser: RtpPacketView[] = [];
  browser.sendRtp = (pkt) => toBrowser.push({ ...pkt, payload: Buffer.from(pkt.payload) });
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
    const bridge = engine.createBridge(browser, leg, { callId: 'dtmf-to-browser' }).bridge;
    const digits: string[] = [];
    bridge.on('dtmf', (ev) => digits.push(`${ev.from}:${ev.digit}`));
    const send = (pt: number, seq: number, ts: number, payload: Buffer) => trunk.send(buildRtp(pt, seq, ts, 0x7e1, payload, seq === 2), leg.localPort, '127.0.0.1');
    send(0, 1, 160, Buffer.alloc(160, 0xff));
    await until(() => toBrowser.length === 1, 'the audio before the digit');
    // Digit 7 from the trunk: 100 ms (800 ticks at 8 kHz), updated once, ended three times.
    send(101, 2, 320, Buffer.from([7, 0x0a, 0, 160]));
    await until(() => toBrowser.length === 2, 'the event toward the browser at once');
    send(101, 3, 320, Buffer.from([7, 0x0a, 480 >> 8, 480 & 0xff]));
    for (const seq of [4, 5, 6]) send(101, seq, 320, Buffer.from([7, 0x8a, 800 >> 8, 800 & 0xff]));
    await until(() => toBrowser.filter((p) => p.payloadType === 126 && (p.payload[1] & 0x80)).length === 3, 'three end packets');
    await sleep(60);
    send(0, 7, 1120, Buffer.alloc(160, 0xff));
    await until(() => toBrowser.length >= 1 && toBrowser[toBrowser.length - 1].payloadType === 111 && toBrowser.length > 2, 'the audio after the digit');
    assert.deepEqual(digits, ['sip:7']);
    const events = toBrowser.filter((p) => p.payloadType === 126);
    const eventTs = events[0].timestamp;
    assert.equal(events[0].marker, true);
    assert.ok(events.every((p) => p.timestamp === eventTs && p.payload[0] === 7), 'one event, its own timestamp, digit 7');
    assert.deepEqual(events.filter((p) => p.payload[1] & 0x80).map((p) => p.payload.readUInt16BE(2)), [4800, 4800, 4800], '100 ms in the browser\'s 48 kHz ticks');
    assert.equal(eventTs, (toBrowser[0].timestamp + 960) >>> 0, 'the event starts where the audio before it ended');
    const after = toBrowser[toBrowser.length - 1];
    assert.equal(after.timestamp, (eventTs + 4800 + 1920) >>> 0, 'the audio goes on where the event ended, after the 40 ms of its end packets');
    const steps = toBrowser.slice(1).map((p, i) => (p.sequenceNumber - toBrowser[i].sequenceNumber) & 0xffff);
    assert.ok(steps.every((d) => d === 1), `no gap in the numbering: ${steps.join(',')}`);
    // Injected digits toward the browser: the second waits for the first.
    const n = toBrowser.length;
    bridge.sendDtmfToBrowser('4', 100);
    bridge.sendDtmfToBrowser('#', 60);
    await until(() => toBrowser.slice(n).filter((p) => p.payload[1] & 0x80).length === 6, 'both digits\' end packets');
    const injected = toBrowser.slice(n);
    const four = injected.filter((p) => p.payload[0] === 4);
    const hash = injected.filter((p) => p.payload[0] === 11);
    assert.ok(four.length > 0 && hash.length > 0);
    assert.ok(four.every((p) => p.timestamp === four[0].timestamp) && hash.every((p) => p.timestamp === hash[0].timestamp));
    assert.equal(hash[0].timestamp, (four[0].timestamp + 4800 + 1920) >>> 0, '# starts where 4 ended on the timeline (with its end packets\' 40 ms)');
    assert.ok(injected.indexOf(hash[0]) > injected.lastIndexOf(four[four.length - 1]), 'not interleaved');
    assert.throws(() => bridge.sendDtmfToBrowser('x'), /not a DTMF digit/);
    // A browser that holds the call gets nothing, and is not told it did.
    bridge.setHold(true, false);
    assert.equal(bridge.sendDtmfToBrowser('1', 60), false, 'refused while the browser holds the call');
    bridge.setHold(false, false);
    assert.equal(bridge.sendDtmfToBrowser('1', 60), true, 'and taken once it resumes');
    bridge.close();
  } finally {
    await close();
  }
});

test('the browser\'s digit goes to the trunk while it is pressed: events start at its first packet and end with its length', async () => {
  const { engine, leg, trunk, atTrunk, close } = await trunkRig('dtmf-live', [25640, 25643]);
  const browser = pcmuBrowser();
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
    const bridge = engine.createBridge(browser, leg, { callId: 'dtmf-live' }).bridge;
    const ev = (seq: number, end: boolean, ticks: number) => browser.deliver({ payloadType: 126, sequenceNumber: seq, timestamp: 320, marker: seq === 2, ssrc: 0xb0b, payload: Buffer.from([3, end ? 0x8a : 0x0a, ticks >> 8, ticks & 0xff]) });
    browser.deliver({ payloadType: 0, sequenceNumber: 1, timestamp: 160, marker: false, ssrc: 0xb0b, payload: Buffer.alloc(160, 1) });
    ev(2, false, 160);
    await until(() => atTrunk.some((p) => p.payloadType === 101), 'the event at the trunk before the browser ended it');
    const first = atTrunk.find((p) => p.payloadType === 101)!;
    assert.equal(first.marker, true);
    for (let i = 3; i <= 6; i++) { await sleep(50); ev(i, false, 160 * (i - 1)); }
    const updates = atTrunk.filter((p) => p.payloadType === 101 && !(p.payload[1] & 0x80)).length;
    assert.ok(updates >= 3, `${updates} updates while it lasted`);
    // A 300 ms press (2400 ticks at 8 kHz).
    for (const seq of [7, 8, 9]) ev(seq, true, 2400);
    await until(() => atTrunk.filter((p) => p.payloadType === 101 && (p.payload[1] & 0x80)).length === 3, 'three end packets');
    const events = atTrunk.filter((p) => p.payloadType === 101);
    assert.ok(events.every((p) => p.timestamp === first.timestamp && p.payload[0] === 3));
    assert.deepEqual(events.filter((p) => p.payload[1] & 0x80).map((p) => p.payload.readUInt16BE(2)), [2400, 2400, 2400], 'the browser\'s length');
    await sleep(60);
    browser.deliver({ payloadType: 0, sequenceNumber: 10, timestamp: 2880, marker: false, ssrc: 0xb0b, payload: Buffer.alloc(160, 10) });
    await until(() => atTrunk[atTrunk.length - 1].payloadType === 0 && atTrunk.length > events.length + 1, 'the audio after');
    assert.equal(atTrunk[atTrunk.length - 1].timestamp, (first.timestamp + 2400 + 320) >>> 0, 'the audio goes on where the digit ended, after the 40 ms of its end packets');
    const steps = atTrunk.slice(1).map((p, i) => (p.sequenceNumber - atTrunk[i].sequenceNumber) & 0xffff);
    assert.ok(steps.every((d) => d === 1), `no gap: ${steps.join(',')}`);
    bridge.close();
  } finally {
    await close();
  }
});

test('an Opus browser\'s digit in telephone-event/8000 (what Chromium sends beside Opus) is read on its own clock and relayed', async () => {
  const { engine, leg, trunk, atTrunk, close } = await trunkRig('dtmf-8k-opus', [25644, 25647]);
  const browser = { ...opusBrowser(), telephoneEventPayloadType: 110, telephoneEventClockRate: 48000, telephoneEvents: [{ payloadType: 110, clockRate: 48000 }, { payloadType: 126, clockRate: 8000 }] };
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
    const bridge = engine.createBridge(browser, leg, { callId: 'dtmf-8k-opus' }).bridge;
    const digits: string[] = [];
    bridge.on('dtmf', (ev) => digits.push(ev.digit));
    // 60 ms at 8 kHz = 480 ticks (read at 48 kHz it would be 10 ms).
    for (const [seq, end, ticks] of [[1, 0, 160], [2, 0, 320], [3, 1, 480], [4, 1, 480], [5, 1, 480]]) {
      browser.deliver({ payloadType: 126, sequenceNumber: seq, timestamp: 9600, marker: seq === 1, ssrc: 0xc4, payload: Buffer.from([8, end ? 0x8a : 0x0a, ticks >> 8, ticks & 0xff]) });
    }
    await until(() => atTrunk.filter((p) => p.payloadType === 101 && (p.payload[1] & 0x80)).length === 3, 'the digit\'s end packets at the trunk');
    assert.deepEqual(digits, ['8']);
    assert.deepEqual(atTrunk.filter((p) => p.payload[1] & 0x80).map((p) => p.payload.readUInt16BE(2)), [480, 480, 480], '60 ms, in the trunk\'s 8 kHz ticks');
    assert.equal(bridge.stats().browser.dropped, 0);
    bridge.close();
  } finally {
    await close();
  }
});

test('PCMU both ways toward a trunk with a=ptime:30: the browser\'s 20 ms packets are re-framed into 30 ms ones, bytes and timeline intact', async () => {
  const { engine, leg, trunk, atTrunk, close } = await trunkRig('pt-ptime30', [25648, 25651]);
  const browser = pcmuBrowser();
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, ptime: 30 });
    const bridge = engine.createBridge(browser, leg, { callId: 'pt-ptime30' }).bridge;
    assert.equal(bridge.stats().mode, 'passthrough');
    const sent: Buffer[] = [];
    for (let seq = 1; seq <= 6; seq++) {
      const payload = Buffer.alloc(160);
      for (let i = 0; i < 160; i++) payload[i] = (seq * 37 + i) % 256 === 0x7f ? 0x7e : (seq * 37 + i) % 256; // 0x7f (-0) would come back as 0xff (+0)
      sent.push(payload);
      browser.deliver({ payloadType: 0, sequenceNumber: seq, timestamp: seq * 160, marker: false, ssrc: 0xb0b, payload });
    }
    await until(() => atTrunk.length === 4, 'four 30 ms packets');
    assert.deepEqual(atTrunk.map((p) => p.payload.length), [240, 240, 240, 240]);
    assert.deepEqual(Buffer.concat(atTrunk.map((p) => p.payload)), Buffer.concat(sent), 'the same bytes');
    assert.deepEqual(atTrunk.slice(1).map((p, i) => [(p.sequenceNumber - atTrunk[i].sequenceNumber) & 0xffff, (p.timestamp - atTrunk[i].timestamp) >>> 0]), [[1, 240], [1, 240], [1, 240]]);
    bridge.close();
  } finally {
    await close();
  }
});

test('Opus both ways with 40 ms packets: timestamps step by what each packet carries, toward either side', async () => {
  const { engine, leg, trunk, atTrunk, close } = await trunkRig('opus-40ms', [25652, 25655]);
  const browser = opusBrowser();
  const toBrowser: RtpPacketView[] = [];
  browser.sendRtp = (pkt) => toBrowser.push({ ...pkt, payload: Buffer.from(pkt.payload) });
  const enc = new OpusEncoder({ sampleRate: 48000, frameMs: 40 });
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'opus', payloadType: 111 });
    const bridge = engine.createBridge(browser, leg, { callId: 'opus-40ms' }).bridge;
    assert.equal(bridge.stats().mode, 'passthrough');
    const frame = (i: number) => enc.encode(new Int16Array(1920).map((_, k) => Math.round(8000 * Math.sin((2 * Math.PI * 440 * (i * 1920 + k)) / 48000))));
    for (let i = 0; i < 3; i++) trunk.send(buildRtp(111, 10 + i, i * 1920, 0x40, frame(i)), leg.localPort, '127.0.0.1');
    for (let i = 0; i < 3; i++) browser.deliver({ payloadType: 111, sequenceNumber: 50 + i, timestamp: i * 1920, marker: false, ssrc: 0xb0b, payload: frame(10 + i) });
    await until(() => toBrowser.length === 3 && atTrunk.length === 3, 'three packets each way');
    for (const got of [toBrowser, atTrunk]) assert.deepEqual(got.slice(1).map((p, i) => (p.timestamp - got[i].timestamp) >>> 0), [1920, 1920]);
    bridge.close();
  } finally {
    enc.delete();
    await close();
  }
});

test('Opus DTX from the browser: the trunk\'s PCMU goes on through the pause (comfort noise every 20 ms), its timeline matching the browser\'s', async () => {
  const { engine, leg, trunk, atTrunk, close } = await trunkRig('dtx', [25656, 25659]);
  const browser = opusBrowser();
  const enc = new OpusEncoder({ sampleRate: 48000, complexity: 1, bitrate: 24000 });
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const coders = liveOpusCoders;
    const bridge = engine.createBridge(browser, leg, { callId: 'dtx' }).bridge;
    assert.equal(liveOpusCoders, coders + 2, 'a transcoding bridge: an Opus decoder and an encoder');
    const speech = (seq: number, ts: number) => browser.deliver({ payloadType: 111, sequenceNumber: seq, timestamp: ts, marker: false, ssrc: 0xd7, payload: enc.encode(voiced(seq)) });
    for (let seq = 1; seq <= 5; seq++) speech(seq, seq * 960);
    // A DTX frame (TOC only: SILK narrowband 20 ms), then nothing for 400 ms of the browser's clock.
    browser.deliver({ payloadType: 111, sequenceNumber: 6, timestamp: 6 * 960, marker: false, ssrc: 0xd7, payload: Buffer.from([0x08]) });
    await sleep(300);
    const duringPause = atTrunk.length;
    await sleep(100);
    speech(7, 26 * 960);
    await until(() => atTrunk.length >= 26, 'the whole pause at the trunk');
    await sleep(60);
    assert.ok(duringPause >= 6 + 8, `comfort noise went out during the pause (${duringPause - 6} frames in 300 ms), not all at its end`);
    assert.equal(atTrunk.length, 26, '5 + the DTX frame + 19 of pause + 1: as long as on the browser\'s clock');
    const steps = atTrunk.slice(1).map((p, i) => [(p.sequenceNumber - atTrunk[i].sequenceNumber) & 0xffff, (p.timestamp - atTrunk[i].timestamp) >>> 0]);
    assert.ok(steps.every(([s, t]) => s === 1 && t === 160), 'continuous numbering and timeline');
    assert.equal(bridge.stats().browser.dropped, 0);
    assert.equal(bridge.stats().browser.concealed, 0, 'a pause the browser chose is no loss: not counted as concealment');
    bridge.close();
    assert.equal(liveOpusCoders, coders, 'both freed when it closes');
  } finally {
    enc.delete();
    await close();
  }
});

test('a long outage of the browser\'s audio: the trunk\'s timeline skips its start and conceals its end, keeping up with the clock; a jump of thousands is no outage', async () => {
  const { engine, leg, trunk, atTrunk, close } = await trunkRig('outage', [25660, 25663]);
  const browser = opusBrowser();
  const enc = new OpusEncoder({ sampleRate: 48000, complexity: 1, bitrate: 24000 });
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const bridge = engine.createBridge(browser, leg, { callId: 'outage' }).bridge;
    const speech = (seq: number) => browser.deliver({ payloadType: 111, sequenceNumber: seq, timestamp: seq * 960, marker: false, ssrc: 0x0a, payload: enc.encode(voiced(seq)) });
    for (const seq of [1, 2, 3, 24]) speech(seq); // 20 lost: 400 ms
    await until(() => atTrunk.length === 9, 'three frames, five concealed, one decoded');
    const third = atTrunk[2];
    const last = atTrunk[8];
    assert.equal((last.timestamp - third.timestamp) >>> 0, 21 * 160, 'the outage\'s 400 ms are on the trunk\'s timeline');
    assert.equal((atTrunk[3].sequenceNumber - third.sequenceNumber) & 0xffff, 16, 'its first 15 frames left out of the numbering (the trunk sees them lost)');
    // 4 s lost (200 frames), the timestamps moving on as much: an outage too, skipped.
    speech(225);
    await until(() => atTrunk.length === 15, 'the packet after the 4 s outage');
    assert.equal((atTrunk[14].timestamp - last.timestamp) >>> 0, 201 * 160, 'the 4 s are on the trunk\'s timeline');
    // A jump of 2000 in the numbering whose timestamps say otherwise (a browser restarting its counter) moves nothing.
    const beforeJump = atTrunk[14];
    browser.deliver({ payloadType: 111, sequenceNumber: 2225, timestamp: 226 * 960, marker: false, ssrc: 0x0a, payload: enc.encode(voiced(3)) });
    await until(() => atTrunk.length === 16, 'the packet after the jump');
    assert.deepEqual([(atTrunk[15].sequenceNumber - beforeJump.sequenceNumber) & 0xffff, (atTrunk[15].timestamp - beforeJump.timestamp) >>> 0], [1, 160]);
    bridge.close();
  } finally {
    enc.delete();
    await close();
  }
});

test('transcoding: a browser digit\'s packets leave no gap to conceal; the audio after it goes on where the digit ended', async () => {
  const { engine, leg, trunk, atTrunk, close } = await trunkRig('tc-dtmf', [25664, 25667]);
  const browser = opusBrowser();
  const enc = new OpusEncoder({ sampleRate: 48000, complexity: 1, bitrate: 24000 });
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
    const bridge = engine.createBridge(browser, leg, { callId: 'tc-dtmf' }).bridge;
    const speech = (seq: number) => browser.deliver({ payloadType: 111, sequenceNumber: seq, timestamp: seq * 960, marker: false, ssrc: 0xe1, payload: enc.encode(voiced(seq)) });
    for (const seq of [1, 2, 3]) speech(seq);
    // Digit 2 for 100 ms (4800 ticks of the Opus browser's 48 kHz events).
    for (const [seq, end, ticks] of [[4, 0, 960], [5, 0, 2880], [6, 1, 4800]]) browser.deliver({ payloadType: 126, sequenceNumber: seq, timestamp: 4 * 960, marker: seq === 4, ssrc: 0xe1, payload: Buffer.from([2, end ? 0x8a : 0x0a, ticks >> 8, ticks & 0xff]) });
    await until(() => atTrunk.filter((p) => p.payloadType === 101 && (p.payload[1] & 0x80)).length === 3, 'the digit\'s end packets');
    await sleep(60);
    speech(7);
    await until(() => atTrunk.filter((p) => p.payloadType === 0).length >= 4, 'the audio after the digit');
    await sleep(30);
    const audio = atTrunk.filter((p) => p.payloadType === 0);
    const event = atTrunk.find((p) => p.payloadType === 101)!;
    assert.equal(audio.length, 4, 'three frames before, one after: nothing concealed for the digit\'s numbers');
    assert.equal(bridge.stats().browser.concealed, 0);
    assert.equal(event.timestamp, (audio[2].timestamp + 160) >>> 0, 'the digit starts where the audio before it ended');
    assert.equal(audio[3].timestamp, (event.timestamp + 800 + 320) >>> 0, 'and the audio after it goes on 100 ms later, after its end packets\' 40 ms');
    const steps = atTrunk.slice(1).map((p, i) => (p.sequenceNumber - atTrunk[i].sequenceNumber) & 0xffff);
    assert.ok(steps.every((d) => d === 1), `no gap in the numbering: ${steps.join(',')}`);
    bridge.close();
  } finally {
    enc.delete();
    await close();
  }
});

test('the browser resumes after holding the call: its stream\'s timestamp moves on by the time held, the first packet marked', async () => {
  const { engine, leg, trunk, close } = await trunkRig('hold-browser', [25668, 25671]);
  const browser = pcmuBrowser();
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const bridge = engine.createBridge(browser, leg, { callId: 'hold-browser' }).bridge;
    const send = (seq: number) => trunk.send(buildRtp(0, seq, seq * 160, 0x51, Buffer.alloc(160, 0xff)), leg.localPort, '127.0.0.1');
    send(1);
    await until(() => browser.got.length === 1, 'audio before the hold');
    bridge.setHold(true, false);
    send(2); // music from the trunk while the browser holds: not sent to it
    // A payload type the browser's SDP did not give, while held: a drop, as at any time.
    browser.deliver({ payloadType: 99, sequenceNumber: 7, timestamp: 1120, marker: false, ssrc: 0xb0b, payload: Buffer.alloc(160) });
    assert.equal(bridge.stats().browser.dropped, 1);
    await sleep(300);
    bridge.setHold(false, false);
    send(3);
    await until(() => browser.got.length === 2, 'audio after the resume');
    const [before, after] = browser.got;
    const jump = (after.timestamp - before.timestamp) >>> 0;
    assert.ok(jump >= 160 + 8 * 290 && jump <= 160 + 8 * 500, `timestamp moved on by the time held: ${jump} ticks`);
    assert.equal((after.sequenceNumber - before.sequenceNumber) & 0xffff, 1, 'numbers do not (nothing was lost)');
    assert.deepEqual([before.marker, after.marker], [false, true]);
    bridge.close();
  } finally {
    await close();
  }
});

test('a G.711 trunk without telephone-event: the digits in its audio are detected for the dtmf event (and heard as they are); with events negotiated, tones are not read', async () => {
  const { engine, leg, trunk, close } = await trunkRig('inband-rx', [25676, 25679]);
  const browser = pcmuBrowser();
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMA', payloadType: 8 });
    const bridge = engine.createBridge(browser, leg, { callId: 'inband-rx' }).bridge;
    const digits: string[] = [];
    bridge.on('dtmf', (ev) => digits.push(`${ev.from}:${ev.digit}`));
    let seq = 1;
    const play = async (digitsToSend: string) => {
      for (const d of digitsToSend) {
        for (const pcm of dtmfToneFrames(d, 100)) trunk.send(buildRtp(8, seq, seq++ * 160, 0x1b, pcmaEncode(pcm)), leg.localPort, '127.0.0.1');
        await sleep(30);
      }
    };
    await play('4#');
    await until(() => digits.length === 2, 'two digits');
    assert.deepEqual(digits, ['sip:4', 'sip:#']);
    await until(() => browser.got.length === seq - 1, 'every frame also reached the browser');
    // The trunk now says it has telephone-event: its digits come as events, tones are audio only.
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMA', payloadType: 8, telephoneEventPayloadType: 101 });
    await play('7');
    await sleep(100);
    assert.deepEqual(digits, ['sip:4', 'sip:#']);
    bridge.close();
  } finally {
    await close();
  }
});

test('a packet the bridge fails on (a bug) is dropped and counted on its side, not thrown into the socket handler that delivered it; the next packets go on', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [25988, 25991], logger });
  const leg = await engine.createSipLeg({ callId: 'bug' });
  const trunk = dgram.createSocket('udp4');
  await new Promise<void>((r) => trunk.bind(0, '127.0.0.1', () => r()));
  const browser = { ...fakeBrowser(), deliver: (_p: RtpPacketView) => {} };
  let listener: ((pkt: RtpPacketView) => void) | null = null;
  browser.onRtp = (l) => { listener = l; return () => { listener = null; }; };
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown) => uncaught.push(err);
  process.on('uncaughtException', onUncaught);
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const handle = engine.createBridge(browser, leg, { callId: 'bug' });
    const bridge = handle.bridge as unknown as Record<string, unknown>;
    // Stand-ins for a bug in each direction's handling, for the first packet only.
    const fromBrowser = bridge.fromBrowser as (p: RtpPacketView) => void;
    let browserCalls = 0;
    bridge.fromBrowser = function (this: unknown, p: RtpPacketView) { if (browserCalls++ === 0) throw new Error('browser-side bug'); return fromBrowser.call(this, p); };
    const reorder = bridge.sipReorder as { push(p: RtpPacketView, audio?: boolean): void };
    const push = reorder.push.bind(reorder);
    let sipCalls = 0;
    reorder.push = (p, audio) => { if (sipCalls++ === 0) throw new Error('sip-side bug'); push(p, audio); };

    const pcmu = (seq: number): RtpPacketView => ({ payloadType: 0, marker: false, sequenceNumber: seq, timestamp: seq * 160, ssrc: 5, payload: Buffer.alloc(160, 0xff) });
    assert.doesNotThrow(() => listener!(pcmu(1)));
    listener!(pcmu(2));
    trunk.send(buildRtp(0, 1, 160, 0x77, Buffer.alloc(160, 1)), leg.localPort, '127.0.0.1');
    trunk.send(buildRtp(0, 2, 320, 0x77, Buffer.alloc(160, 2)), leg.localPort, '127.0.0.1');
    await until(() => browser.got.length >= 1, 'the trunk\'s second packet reaches the browser');
    await sleep(50);
    assert.deepEqual(uncaught, []);
    const stats = handle.bridge.stats();
    assert.equal(stats.browser.dropped, 1, 'the browser packet that failed');
    assert.equal(stats.sip.dropped, 1, 'the trunk packet that failed');
    assert.ok(stats.browser.packetsReceived >= 1);
  } finally {
    process.off('uncaughtException', onUncaught);
    leg.close();
    trunk.close();
  }
});
