import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import pino from 'pino';
import { RtpPortsExhaustedError, type BrowserMediaPort } from '../../src/media';
import { WorkerMediaPlane } from '../../src/media/worker/workerMediaPlane';
import { OpusDecoder, OpusEncoder, pcmuDecode, pcmuEncode } from '../../src/media/codecs';
import { buildRtp, parseRtp, type RtpPacketView } from '../../src/media/rtp';
import { SrtpSession, type SdesCrypto } from '../../src/media/srtp';
import { generateSdesCrypto } from '../../src/media/srtp/sdes';
import { dtmfPacketTrain } from '../../src/media/dtmf';
import type { ReceptionReport } from '../../src/media/mediaBridge';
import { toneRatio } from '../support/audio';
import { until } from '../support/tabs';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const idle = { legs: 0, bridges: 0, portsAllocated: 0 };

function capturingLogger(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  return { lines, logger: pino({ level: 'debug' }, { write: (l: string) => { lines.push(JSON.parse(l)); } }) };
}

/** The browser side as the media plane sees it (an Opus browser leg on this thread). */
function opusBrowser(): BrowserMediaPort & { got: RtpPacketView[]; push(p: RtpPacketView): void; report(): ReceptionReport | null } {
  let listener: ((p: RtpPacketView) => void) | null = null;
  let source: (() => ReceptionReport | null) | null = null;
  const got: RtpPacketView[] = [];
  return {
    got,
    opusPayloadType: 111,
    pcmuPayloadType: 0,
    telephoneEventPayloadType: 126,
    sendCodec: 'opus',
    onRtp: (l) => { listener = l; return () => { listener = null; }; },
    sendRtp: (p) => got.push({ ...p, payload: Buffer.from(p.payload) }),
    receptionReports: (s) => { source = s; return () => { source = null; }; },
    push: (p) => listener?.(p),
    report: () => source?.() ?? null,
  };
}

function tone(hz: number, rate: number, n: number, start: number): Int16Array {
  return Int16Array.from({ length: n }, (_, i) => Math.round(8000 * Math.sin((2 * Math.PI * hz * (start + i)) / rate)));
}

test('a call in a worker thread: Opus from the browser reaches the trunk as PCMU, SRTP-PCMU from the trunk reaches the browser as Opus, DTMF, reports and final figures come back', async () => {
  const { logger, lines } = capturingLogger();
  const plane = new WorkerMediaPlane({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22300, 22319], logger, workers: 2 });
  await plane.start();
  const trunk = dgram.createSocket('udp4');
  await new Promise<void>((r) => trunk.bind(0, '127.0.0.1', () => r()));
  const ours: SdesCrypto = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const theirs: SdesCrypto = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const trunkSrtp = new SrtpSession({ local: theirs, remote: ours });
  const atTrunk: RtpPacketView[] = [];
  trunk.on('message', (m) => {
    const plain = trunkSrtp.unprotectRtp(m);
    const p = plain && parseRtp(plain);
    if (p) atTrunk.push({ ...p, payload: Buffer.from(p.payload) });
  });
  const encoder = new OpusEncoder({ sampleRate: 48000 });
  const decoder = new OpusDecoder({ sampleRate: 8000 });
  try {
    const leg = await plane.createSipLeg({ callId: 'w1' });
    assert.ok(leg.localPort >= 22300 && leg.localPort <= 22318 && leg.localPort % 2 === 0, `even port from the range: ${leg.localPort}`);
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101, srtp: { local: ours, remote: theirs } });
    const browser = opusBrowser();
    const bridge = plane.createBridge(browser, leg, { callId: 'w1' });
    const digits: Array<{ digit: string; from: string }> = [];
    bridge.onDtmf((ev) => digits.push(ev));
    assert.deepEqual(plane.usage, { legs: 1, bridges: 1, portsAllocated: 1 });

    // One second of 700 Hz from the browser and 440 Hz from the trunk, 20 ms apart; the
    // browser's packet 20 is lost on the way.
    const seq0 = 1000;
    for (let i = 0; i < 50; i++) {
      if (i !== 20) browser.push({ payloadType: 111, sequenceNumber: seq0 + i, timestamp: i * 960, marker: i === 0, ssrc: 0xb0b0, payload: encoder.encode(tone(700, 48000, 960, i * 960)) });
      trunk.send(trunkSrtp.protectRtp(buildRtp(0, seq0 + i, i * 160, 0x7777, pcmuEncode(tone(440, 8000, 160, i * 160)))), leg.localPort, '127.0.0.1');
      await sleep(20);
    }
    for (const p of dtmfPacketTrain('5', 100, 8000)) {
      trunk.send(trunkSrtp.protectRtp(buildRtp(101, seq0 + 50, 50 * 160, 0x7777, p.payload, p.marker)), leg.localPort, '127.0.0.1');
    }
    await until(() => atTrunk.length >= 45 && browser.got.length >= 45 && digits.length === 1, 'audio both ways and the digit');
    const reports: ReceptionReport[] = [];

    const pcmAtTrunk = Int16Array.from(atTrunk.slice(10).flatMap((p) => Array.from(pcmuDecode(p.payload))));
    assert.ok(atTrunk.every((p) => p.payloadType === 0 && p.payload.length === 160), 'PCMU 20 ms frames, SRTP-protected with our key');
    assert.ok(toneRatio(pcmAtTrunk, 8000, 700) > 0.8, `700 Hz at the trunk: ${toneRatio(pcmAtTrunk, 8000, 700).toFixed(3)}`);
    const pcmAtBrowser = Int16Array.from(browser.got.filter((p) => p.payloadType === 111).slice(10).flatMap((p) => Array.from(decoder.decode(p.payload))));
    assert.ok(toneRatio(pcmAtBrowser, 8000, 440) > 0.8, `440 Hz at the browser: ${toneRatio(pcmAtBrowser, 8000, 440).toFixed(3)}`);
    assert.deepEqual(digits, [{ digit: '5', from: 'sip' }]);
    // The trunk's digit also reaches the browser as events on its stream, and one can be injected there.
    await until(() => browser.got.filter((p) => p.payloadType === 126 && p.payload[0] === 5 && (p.payload[1] & 0x80)).length === 3, 'the trunk\'s digit as events toward the browser');
    bridge.sendDtmfToBrowser('#', 60);
    await until(() => browser.got.filter((p) => p.payloadType === 126 && p.payload[0] === 11 && (p.payload[1] & 0x80)).length === 3, 'an injected digit toward the browser');

    // The bridge's reception figures about the browser's stream reach this thread for its RTCP.
    // (pushed once a second, so the one covering the last packet may take that long)
    // Each report the browser leg sends gets the fraction lost since the previous one it sent,
    // worked out here from the worker's cumulative counts (RFC 3550 A.3).
    await until(() => {
      const r = browser.report();
      if (r) reports.push(r);
      return r?.extendedHighestSeq === seq0 + 49;
    }, 'a reception report covering the last packet');
    const last = reports[reports.length - 1];
    assert.equal(last.ssrc, 0xb0b0);
    assert.equal(last.cumulativeLost, 1);
    assert.equal(last.expected, 50);
    const withLoss = reports.filter((r) => r.fractionLost > 0);
    assert.equal(withLoss.length, 1, `the loss is reported once: ${JSON.stringify(reports.map((r) => r.fractionLost))}`);
    const before = reports[reports.indexOf(withLoss[0]) - 1];
    const expectedSince = withLoss[0].expected - (before?.expected ?? 0);
    assert.equal(withLoss[0].fractionLost, Math.floor(256 / expectedSince));
    assert.equal(browser.report()!.fractionLost, 0, 'nothing lost since the last report');

    const stats = await bridge.close();
    assert.ok(stats, 'final statistics from the worker');
    assert.equal(stats.mode, 'transcode');
    assert.equal(stats.browser.packetsReceived, 49);
    assert.equal(stats.browser.packetsLost, 1);
    assert.ok(stats.sip.packetsReceived >= 50, `trunk packets counted: ${stats.sip.packetsReceived}`);
    assert.ok(stats.transcodeCpuMs > 0);
    leg.close();
    await until(() => plane.usage.portsAllocated === 0, 'the worker released the port');
    assert.deepEqual(plane.usage, idle);
    // The worker's log lines reach this thread's destination, with the call's id.
    assert.ok(lines.some((l) => l.callId === 'w1' && l.mediaWorker !== undefined), 'a worker log line with callId');
  } finally {
    await plane.close();
    trunk.close();
    encoder.delete();
    decoder.delete();
  }
});

test('RTP ports across workers: each worker has its share, the last free pair is found on whichever worker has it, then RtpPortsExhaustedError', async () => {
  const plane = new WorkerMediaPlane({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22320, 22325], logger: pino({ level: 'silent' }), workers: 2 });
  await plane.start();
  try {
    // 3 pairs: worker 0 has 22320 and 22322, worker 1 has 22324.
    const a = await plane.createSipLeg({ callId: 'a' });
    const b = await plane.createSipLeg({ callId: 'b' });
    const c = await plane.createSipLeg({ callId: 'c' });
    assert.deepEqual([a, b, c].map((l) => l.localPort).sort(), [22320, 22322, 22324]);
    // Each worker's isolate reports its own heap (the main thread's memoryUsage() leaves them out).
    const heap = await plane.heapUsed({ gc: false });
    assert.ok(Number.isFinite(heap) && heap > 2 * 1e6, `heap of the two workers: ${heap} bytes`);
    await assert.rejects(plane.createSipLeg({ callId: 'd' }), RtpPortsExhaustedError);
    assert.deepEqual(plane.usage, { legs: 3, bridges: 0, portsAllocated: 3 });
    b.close();
    await until(() => plane.usage.portsAllocated === 2, 'b released');
    const d = await plane.createSipLeg({ callId: 'd' });
    assert.equal(d.localPort, b.localPort);
    // A bridge the worker cannot make (its leg closed meanwhile): its failure comes back at
    // once, the handle's close() does not wait for a reply that will never come.
    d.close();
    const orphan = plane.createBridge(opusBrowser(), d, { callId: 'd' });
    await until(() => plane.usage.bridges === 0, 'the failed bridge is dropped');
    let answered = false;
    const closed = orphan.close().then((s) => { answered = true; return s; });
    await new Promise((r) => setImmediate(r));
    assert.ok(answered, 'close() answered without waiting for the worker');
    assert.equal(await closed, undefined);
    // A command that throws in the worker (a 5-byte SRTP key) fails that call only: the worker
    // and its other legs carry on, and the failed leg still gives its port back on close.
    const failures: string[] = [];
    a.onFailed((r) => failures.push(r));
    const bad = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
    a.setRemote({ address: '127.0.0.1', port: 9, codec: 'PCMU', payloadType: 0, srtp: { local: bad, remote: { ...bad, key: Buffer.alloc(5) } } });
    await until(() => failures.length === 1, 'the leg reports the failed command');
    assert.match(failures[0], /^setRemote: /);
    assert.equal(plane.runningWorkers, 2, 'no worker died');
    const e = await plane.createSipLeg({ callId: 'e' });
    for (const l of [a, c, e]) l.close();
    await until(() => plane.usage.portsAllocated === 0, 'all released');
    assert.deepEqual(plane.usage, idle);
  } finally {
    await plane.close();
  }
});

test('a worker that dies fails the calls it carried (their legs say so), gives nothing back late, and is replaced', async () => {
  const { logger, lines } = capturingLogger();
  const plane = new WorkerMediaPlane({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22326, 22329], logger, workers: 1 });
  await plane.start();
  try {
    const leg = await plane.createSipLeg({ callId: 'x' });
    leg.setRemote({ address: '127.0.0.1', port: 9, codec: 'PCMU', payloadType: 0 });
    const failed: string[] = [];
    leg.onFailed((r) => failed.push(r));
    const bridge = plane.createBridge(opusBrowser(), leg, { callId: 'x' });
    await sleep(100);
    const first = leg.localPort;
    await plane.threads[0].terminate();
    await until(() => failed.length === 1, 'the leg reports the failure');
    assert.match(failed[0], /media worker 0 exited/);
    assert.equal(await bridge.close(), undefined, 'no figures from a dead worker, and no hang');
    assert.deepEqual(plane.usage, idle);
    const linesOfX = () => lines.filter((l) => l.callId === 'x' && l.msg !== 'media worker exited: starting a new one').length;
    const xBefore = linesOfX();
    assert.ok(lines.some((l) => l.msg === 'media worker exited: starting a new one' && l.callsFailed === 1));
    // It died within seconds of its start: the restart is delayed (a worker that cannot run is
    // not restarted in a tight loop), and calls meanwhile are refused clearly.
    assert.equal(plane.runningWorkers, 0);
    await assert.rejects(plane.createSipLeg({ callId: 'early' }), /no media worker is running/);
    assert.ok(Number.isNaN(await plane.heapUsed({ gc: false })), 'no heap figure from a dead worker (and no wait)');
    await until(() => plane.runningWorkers === 1, 'the replacement worker');
    // The replacement serves calls; the dead thread's sockets were closed with it (same first port).
    const again = await plane.createSipLeg({ callId: 'y' });
    assert.equal(again.localPort, first);
    again.close();
    await until(() => plane.usage.portsAllocated === 0, 'released');
    await sleep(200);
    assert.equal(linesOfX(), xBefore, 'nothing about the failed call arrives after it was given up');
  } finally {
    await plane.close();
  }
});
