/**
 * A media worker whose event loop is blocked (a bug's endless loop, a pathological input) or
 * merely slow, and the queues of audio between it and the main thread. Workers are started
 * with `debugCommands`, which lets a test make one busy-loop (`hangMs`) or answer createLeg
 * late while staying responsive (`delayLegsMs`); a production worker refuses those commands.
 *
 * - Hung: its heartbeat finds it within the deadline, its calls fail, it stops counting as
 *   running (so /readyz, which watches runningWorkers, goes unready with one worker), it is
 *   replaced and the replacement takes calls. Browser audio toward it is capped, the rest
 *   dropped and counted.
 * - Slow but answering heartbeats: not stopped; a leg it is too slow to create fails alone.
 * - The main thread not reading the worker's audio: the worker caps what it posts, counts the
 *   rest in the bridge's figures and the plane's, and is not taken for hung meanwhile.
 *
 * Ports: RTP 26250-26261 (two pairs per test).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import pino from 'pino';
import type { BrowserMediaPort } from '../../src/media';
import { WorkerMediaPlane } from '../../src/media/worker/workerMediaPlane';
import type { MediaCommand } from '../../src/media/worker/protocol';
import type { RtpPacketView } from '../../src/media/rtp';
import { Readiness } from '../../src/observability/health';
import { until } from '../support/tabs';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const idle = { legs: 0, bridges: 0, portsAllocated: 0 };

function capturingLogger(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  return { lines, logger: pino({ level: 'debug' }, { write: (l: string) => { lines.push(JSON.parse(l)); } }) };
}

/** A PCMU browser leg on this thread: what it was sent, and a way to push its audio. */
function pcmuBrowser(): BrowserMediaPort & { got: RtpPacketView[]; push(p: RtpPacketView): void } {
  let listener: ((p: RtpPacketView) => void) | null = null;
  const got: RtpPacketView[] = [];
  return {
    got,
    opusPayloadType: null,
    pcmuPayloadType: 0,
    telephoneEventPayloadType: null,
    sendCodec: 'pcmu',
    onRtp: (l) => { listener = l; return () => { listener = null; }; },
    sendRtp: (p) => got.push({ ...p, payload: Buffer.from(p.payload) }),
    push: (p) => listener?.(p),
  };
}

const pcmu = (i: number): RtpPacketView => ({ payloadType: 0, sequenceNumber: i & 0xffff, timestamp: i * 160, marker: false, ssrc: 0xb0b0, payload: Buffer.alloc(160, 0xff) });

/** A debug command, straight into the worker's port (the plane has no API for it, on purpose). */
function debug(plane: WorkerMediaPlane, cmd: { hangMs?: number; delayLegsMs?: number }): void {
  plane.threads[0].postMessage({ t: 'debug', ...cmd } satisfies MediaCommand);
}

test('a hung media worker is found by its heartbeat within the deadline: its calls fail, it stops counting as running (not ready), a new one takes calls; browser audio toward it is capped and the drops counted', async () => {
  const { logger, lines } = capturingLogger();
  const hangTimeoutMs = 1000;
  const heartbeatIntervalMs = 200;
  const plane = new WorkerMediaPlane({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [26250, 26253], logger, workers: 1, heartbeatIntervalMs, hangTimeoutMs, debugCommands: true });
  await plane.start();
  // The gateway's readiness check, as gateway.ts makes it.
  const readiness = new Readiness();
  readiness.watch('mediaWorkers', () => plane.runningWorkers > 0);
  const trunk = dgram.createSocket('udp4');
  await new Promise<void>((r) => trunk.bind(0, '127.0.0.1', () => r()));
  try {
    const leg = await plane.createSipLeg({ callId: 'h1' });
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const browser = pcmuBrowser();
    const bridge = plane.createBridge(browser, leg, { callId: 'h1' });
    // What the call layer sees when the leg fails, and the plane's state at that moment.
    const failed: Array<{ reason: string; at: number; running: number; ready: boolean }> = [];
    leg.onFailed((reason) => failed.push({ reason, at: performance.now(), running: plane.runningWorkers, ready: readiness.report().ready }));
    let atTrunk = 0;
    trunk.on('message', () => atTrunk++);
    for (let i = 0; i < 10; i++) { browser.push(pcmu(i)); await sleep(20); }
    await until(() => atTrunk >= 5, 'browser audio reaches the trunk through the worker');
    await sleep(300); // the worker has said it read all of it
    assert.equal(readiness.report().ready, true);

    const hungAt = performance.now();
    debug(plane, { hangMs: 30_000 });
    // 4 s of audio at once toward a worker that reads nothing: 1 s of it (50 packets, one call)
    // waits for the worker, the rest is dropped here.
    for (let i = 10; i < 210; i++) browser.push(pcmu(i));
    await new Promise((r) => setImmediate(r));
    // (up to 10 more should the worker not yet have said it read the 10 packets before)
    const { toWorkers, toBrowsers } = plane.rtpDropped;
    assert.ok(toWorkers >= 150 && toWorkers <= 160, `dropped toward the hung worker: ${toWorkers}`);
    assert.equal(toBrowsers, 0);

    await until(() => failed.length === 1, 'the hung worker\'s call fails', hangTimeoutMs + 3000);
    const f = failed[0];
    const tookMs = f.at - hungAt;
    // Silence counts from its last answer, up to one heartbeat before it hung; the verdict comes
    // at the first heartbeat past the deadline.
    assert.ok(tookMs >= hangTimeoutMs - heartbeatIntervalMs - 50 && tookMs <= hangTimeoutMs + heartbeatIntervalMs + 1000, `found ${Math.round(tookMs)} ms after it hung`);
    assert.match(f.reason, /^media worker 0 stopped answering \(no heartbeat for \d+ ms\)/);
    assert.equal(f.running, 0, 'not counted as running');
    assert.equal(f.ready, false, 'not ready: no worker can take a call');
    const hungLine = lines.find((l) => l.msg === 'media worker not answering heartbeats: stopping it');
    assert.ok(hungLine, 'an error logged');
    assert.equal(hungLine.level, 50);
    assert.equal(hungLine.calls, 1);
    assert.equal(plane.workerHangs, 1);
    assert.equal(plane.workerExits, 1);
    // The dead worker's bridge answers close at once (no figures), and nothing is held for it.
    assert.equal(await bridge.close(), undefined);
    leg.close();
    assert.deepEqual(plane.usage, idle);

    await until(() => plane.runningWorkers === 1, 'a new worker');
    assert.equal(readiness.report().ready, true);
    const next = await plane.createSipLeg({ callId: 'h2' });
    assert.equal(next.localPort, 26250, 'the replacement has the port range (the hung thread\'s sockets went with it)');
    next.close();
    await until(() => plane.usage.portsAllocated === 0, 'released');
    assert.deepEqual(plane.usage, idle);
  } finally {
    await plane.close();
    trunk.close();
  }
});

test('a slow media worker that still answers heartbeats is not stopped: a leg it is too slow to create fails alone (and is given back when it comes), its calls go on', async () => {
  const { logger, lines } = capturingLogger();
  const plane = new WorkerMediaPlane({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [26254, 26257], logger, workers: 1, heartbeatIntervalMs: 200, hangTimeoutMs: 1500, debugCommands: true });
  await plane.start();
  try {
    const leg = await plane.createSipLeg({ callId: 's1' });
    leg.setRemote({ address: '127.0.0.1', port: 9, codec: 'PCMU', payloadType: 0 });
    const browser = pcmuBrowser();
    const bridge = plane.createBridge(browser, leg, { callId: 's1' });
    const failed: string[] = [];
    leg.onFailed((r) => failed.push(r));

    // Busy 600 ms of every 800 for 3 s: slow, but it answers between the stalls, never silent
    // as long as the deadline. Its call's audio waits and is not dropped (within the cap).
    for (let i = 0; i < 150; i++) {
      if (i % 40 === 0) debug(plane, { hangMs: 600 });
      browser.push(pcmu(i));
      await sleep(20);
    }
    // A createLeg it answers after the default 5 s reply timeout (its port allocation is slow,
    // say), while it goes on answering heartbeats.
    debug(plane, { delayLegsMs: 5600 });
    await assert.rejects(plane.createSipLeg({ callId: 's2' }), /^Error: media worker 0 gave no RTP leg within 5000 ms$/);
    assert.equal(plane.runningWorkers, 1, 'the worker still runs');
    assert.equal(plane.workerExits, 0);
    assert.equal(plane.workerHangs, 0);
    assert.deepEqual(failed, [], 'its call was not failed');
    assert.ok(lines.some((l) => l.msg === 'media worker slow to create an RTP leg: giving up on it' && l.callId === 's2'));
    // The late leg has no owner: given back as soon as it comes.
    await until(() => plane.usage.legs === 1 && plane.usage.portsAllocated === 1, 'the late leg given back');
    debug(plane, { delayLegsMs: 0 });
    const next = await plane.createSipLeg({ callId: 's3' });
    next.close();
    const stats = await bridge.close();
    assert.ok(stats, 'final figures from the live worker');
    assert.equal(stats.browser.packetsReceived, 150, 'all the browser\'s audio reached the bridge');
    assert.equal(stats.queueDropped, undefined, 'nothing dropped');
    assert.deepEqual(plane.rtpDropped, { toWorkers: 0, toBrowsers: 0 });
    leg.close();
    await until(() => plane.usage.portsAllocated === 0, 'released');
    assert.deepEqual(plane.usage, idle);
  } finally {
    await plane.close();
  }
});

test('audio toward the browser that the main thread does not read is capped in the worker, the drops counted in the bridge\'s figures and the plane\'s; a stalled main thread does not take the worker for hung', async () => {
  const plane = new WorkerMediaPlane({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [26258, 26261], logger: pino({ level: 'silent' }), workers: 1, heartbeatIntervalMs: 200, hangTimeoutMs: 1000 });
  await plane.start();
  try {
    const leg = await plane.createSipLeg({ callId: 'm1' });
    leg.setRemote({ address: '127.0.0.1', port: 9, codec: 'PCMU', payloadType: 0 });
    const failed: string[] = [];
    leg.onFailed((r) => failed.push(r));
    const browser = pcmuBrowser();
    const bridge = plane.createBridge(browser, leg, { callId: 'm1' });
    bridge.setBrowserTone('ringback'); // a packet toward the browser every 20 ms
    await until(() => browser.got.length >= 10, 'ringback reaches the browser');
    await sleep(200); // this thread has said it read all of it

    // This thread busy for 2.5 s (longer than the worker's hang deadline): the worker makes
    // ~125 packets meanwhile, 1 s of them (50, one call) wait to be read, the rest are dropped.
    // Busy in a setImmediate callback, so that the next turn runs the overdue heartbeat timer
    // before it reads the worker's messages (which are what show the worker alive).
    const before = browser.got.length;
    await new Promise<void>((r) => setImmediate(() => {
      const end = performance.now() + 2500;
      while (performance.now() < end) { /* stalled */ }
      r();
    }));
    await new Promise((r) => setImmediate(r)); // the messages waiting meanwhile are read
    const burst = browser.got.length - before;
    assert.ok(burst <= 50, `at most 1 s of audio waited for this thread: ${burst} packets`);
    await sleep(1500); // heartbeats go on after the stall: the worker answers them
    assert.deepEqual(failed, [], 'the worker was not taken for hung');
    assert.equal(plane.workerHangs, 0);
    assert.equal(plane.runningWorkers, 1);
    const dropped = plane.rtpDropped.toBrowsers;
    assert.ok(dropped >= 50, `drops counted by the plane: ${dropped}`);
    assert.equal(plane.rtpDropped.toWorkers, 0);

    const stats = await bridge.close();
    assert.ok(stats);
    assert.deepEqual(stats.queueDropped, { toWorker: 0, toBrowser: dropped }, 'the call\'s figures count them too');
    leg.close();
    await until(() => plane.usage.portsAllocated === 0, 'released');
    // A production worker (no debugCommands) refuses the test-only hang: it answers at once.
    debug(plane, { hangMs: 60_000 });
    assert.ok(Number.isFinite(await plane.heapUsed({ gc: false })), 'the worker still answers');
  } finally {
    await plane.close();
  }
});
