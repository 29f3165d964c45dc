import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import type { Page } from 'playwright-core';
import { openPhone as openPhoneAt, remotePeakHz, closePages } from '../support/page';
import { startDemoRig, type DemoRig } from '../support/demoRig';
import { until } from '../support/tabs';
import type { WorkerMediaPlane } from '../../src/media/worker/workerMediaPlane';

/**
 * The media plane in worker threads (`media.workers`), with a real Chromium tab and the demo
 * endpoint: the same calls work unchanged, the CDR still gets the bridge's final figures (a
 * message round trip away now), and a worker that dies ends its call cleanly.
 */
const BASE = 22400;
let rig: DemoRig;
let gw: DemoRig['gw'];
let browser: DemoRig['browser'];

before(async () => {
  rig = await startDemoRig(BASE, { media: { portRange: [BASE + 100, BASE + 199], workers: 2 } });
  ({ gw, browser } = rig);
});

afterEach(() => closePages(rig?.browser));
after(() => rig?.stop());

const plane = (): WorkerMediaPlane => gw.gateway['media'] as WorkerMediaPlane;
/** The demo endpoint's open dialogs: 0 once our BYE reached it. */
const demoDialogs = (): number => (gw.gateway['demo'] as unknown as { dialogs: Set<unknown> }).dialogs.size;
const cdr = (): Array<Record<string, any>> => readFileSync(gw.cdrPath, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));

async function answeredEchoCall() {
  const page = await openPhoneAt(browser, gw.url);
  await page.getByTestId('dial-input').fill('1000');
  await page.getByTestId('call-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 10000 });
  return page;
}

test('media in two worker threads: the echo call is heard, and its CDR carries the figures the worker sent back', async () => {
  // Readiness includes the workers: ready while at least one can take a call.
  const readyz = await fetch(`${gw.url}/readyz`);
  assert.equal(readyz.status, 200);
  assert.equal((await readyz.json()).checks.mediaWorkers, true);
  const page = await answeredEchoCall();
  try {
    const heard = await remotePeakHz(page);
    assert.ok(Math.abs(heard.peakHz - 700) < 30, `echo peak ${heard.peakHz} Hz (${heard.peakDb} dB)`);
    assert.equal(plane().usage.legs, 1);
    // Forged SRTP at the call's ICE port (the browser leg's SRTP stays in the main thread): it
    // counts in the CDR's browser figures with what the worker's bridge dropped.
    const sdp: string = await page.evaluate(() => (window as any).__gw.currentCall.pc.remoteDescription.sdp);
    const icePort = Number(/a=candidate:\S+ 1 udp \d+ \S+ (\d+) typ host/.exec(sdp)![1]);
    const forger = dgram.createSocket('udp4');
    const forged = Buffer.alloc(60, 0x55);
    forged[0] = 0x80; forged[1] = 111;
    for (let i = 0; i < 4; i++) forger.send(forged, icePort, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 200));
    forger.close();
    await page.getByTestId('hangup-button').click();
    await page.getByTestId('call-status').filter({ hasText: 'ended' }).waitFor({ timeout: 5000 });
  } finally {
    await page.close(); // a failure above must not leave the call up for the next test
  }
  await until(() => plane().usage.portsAllocated === 0 && gw.gateway.activeCalls === 0, 'RTP port released by the worker');
  await until(() => cdr().length === 1, 'CDR written');
  const rec = cdr()[0];
  assert.equal(rec.cause, 'local-hangup');
  assert.equal(rec.quality.mode, 'transcode');
  assert.ok(rec.quality.browser.packetsReceived > 50, `browser packets in the CDR: ${rec.quality.browser.packetsReceived}`);
  assert.ok(rec.quality.sip.packetsReceived > 50, `trunk packets in the CDR: ${rec.quality.sip.packetsReceived}`);
  assert.equal(rec.quality.browser.dropped, 4, 'the forged packets, refused by SRTP, are the browser leg\'s drops');
  // The same figures feed /metrics once they arrive.
  const metrics = await (await fetch(`${gw.url}/metrics`)).text();
  assert.match(metrics, /^gateway_leg_packet_loss_ratio_count\{leg="browser"\} 1$/m);
  assert.match(metrics, /^gateway_leg_jitter_ms_count\{leg="sip"\} 1$/m);
  const cpu = Number(/^gateway_transcoder_cpu_seconds_total (\S+)$/m.exec(metrics)?.[1]);
  assert.ok(cpu > 0, `transcoder CPU counted: ${cpu}`);
});

test('a media worker that dies mid-call ends the call it carried (cause failed, BYE to the trunk, CDR written); the call on the other worker goes on, and the next call works', async () => {
  const pages: Page[] = [];
  try {
    // Two calls: the plane puts them on different workers (fewest legs first).
    const a = await answeredEchoCall();
    pages.push(a);
    const b = await answeredEchoCall();
    pages.push(b);
    const before = cdr().length;
    assert.equal(demoDialogs(), 2);
    const workers = plane()['workers'] as unknown as Array<{ portsAllocated: number; thread: { terminate(): Promise<number> } }>;
    assert.deepEqual(workers.map((w) => w.portsAllocated), [1, 1], 'one call on each worker');

    await workers[0].thread.terminate();
    // One of the two pages ends with cause failed; the other call stays up and still echoes.
    await until(async () => (await Promise.all(pages.map((p) => p.getByTestId('call-status').textContent()))).some((t) => t?.includes('ended (failed)')), 'a call ended (failed)', 5000);
    const statuses = await Promise.all(pages.map((p) => p.getByTestId('call-status').textContent()));
    const survivor = pages[statuses.findIndex((t) => !t?.includes('ended'))];
    assert.ok(survivor, `the other call is still up: ${JSON.stringify(statuses)}`);
    await until(() => cdr().length === before + 1, 'CDR of the failed call');
    assert.equal(cdr()[before].cause, 'failed');
    assert.equal(cdr()[before].quality, undefined, 'no figures from a dead worker');
    await until(() => gw.gateway.activeCalls === 1 && demoDialogs() === 1, 'the failed call left the registry, its BYE reached the demo endpoint');
    const heard = await remotePeakHz(survivor);
    assert.ok(Math.abs(heard.peakHz - 700) < 30, `the call on the other worker still echoes: ${heard.peakHz} Hz`);
    await until(() => plane().runningWorkers === 2, 'the dead worker replaced');
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    assert.match(metrics, /^gateway_media_worker_exits_total 1$/m);
    assert.match(metrics, /^gateway_media_workers_running 2$/m);
    assert.match(metrics, /^gateway_media_worker_hangs_total 0$/m, 'a crash, not a hang');
    await survivor.getByTestId('hangup-button').click();
    await until(() => gw.gateway.activeCalls === 0 && plane().usage.portsAllocated === 0, 'the surviving call released');
    assert.deepEqual(plane().usage, { legs: 0, bridges: 0, portsAllocated: 0 });

    // The replacement worker carries calls too (the next call goes to one of the two).
    const next = await answeredEchoCall();
    pages.push(next);
    const again = await remotePeakHz(next);
    assert.ok(Math.abs(again.peakHz - 700) < 30, `echo after the restart: ${again.peakHz} Hz`);
  } finally {
    for (const p of pages) await p.close();
    await until(() => gw.gateway.activeCalls === 0, 'every call of this test ended');
  }
});
