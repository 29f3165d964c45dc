/**
 * Moving a call to a new peer connection (docs/protocol.md, "Moving a call to a new peer
 * connection"), end to end: Chromium's demo page and its SDK (Call.restartMedia, and the
 * automatic restart when the connection's ICE goes away) against a whole gateway; the far end is
 * the demo echo (1000), which plays the page's 700 Hz microphone tone back.
 *
 * Ports 27500-27799: http BASE, SIP BASE+1, demo BASE+2, media BASE+100..199, WebRTC BASE+200..203
 * — two ICE port pairs only: a call and its restart's new connection, or two calls (the third
 * connection is refused). The gateway's media timeout is 40 s: a broken path must be ended by the
 * page (Chromium's ICE fails ~18 s after the break), not by the gateway's 20 s of silence.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Page } from 'playwright-core';
import type { RTCRtpTransceiver } from 'werift';
import { openPhone, closePages, expectEcho } from '../support/page';
import { startDemoRig, cdrOf, type DemoRig } from '../support/demoRig';
import { until } from '../support/tabs';
import { heldResources } from '../support/gateway';
import { dtlsTransportOf } from '../../src/webrtc/weriftInternals';

const BASE = 27500;
const NOTHING_HELD = JSON.stringify({ legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 });

type Gateway = DemoRig['gw']['gateway'];
/** The slice of a gateway call these tests read (private members, read-only). */
interface GatewayCallLike { ended: boolean; browser: { transceiver: RTCRtpTransceiver | null } | null }

const gatewayCalls = (gateway: Gateway) => (gateway['manager'] as unknown as { calls: Map<string, GatewayCallLike> }).calls;
/** The gateway's browser leg of a call now (a media restart replaces it). */
const browserLegOf = (gateway: Gateway, callId: string) => {
  const call = gatewayCalls(gateway).get(callId);
  assert.ok(call?.browser, `the gateway's call ${callId} and its browser leg`);
  return call.browser;
};

/**
 * Breaks the media path of a call's current browser leg at the gateway: its ICE socket drops
 * everything, both ways (what arrives is not read, what would be sent is not) — to Chromium the
 * gateway has gone, as when a network goes away. The leg itself stays as it is. Returns what
 * mends it (the network is back).
 */
function breakMediaPath(gateway: Gateway, callId: string): () => void {
  const leg = browserLegOf(gateway, callId);
  const dtls = leg.transceiver ? dtlsTransportOf(leg.transceiver) : null;
  assert.ok(dtls, 'the leg\'s werift DTLS transport');
  const protocols = dtls.iceTransport.connection.protocols;
  assert.ok(protocols.length > 0 && protocols.every((p) => p.transport), 'the leg\'s ICE sockets');
  const mends: Array<() => void> = [];
  for (const p of protocols) {
    const t = p.transport!;
    const { onData } = t;
    const { send } = t.socket;
    mends.push(() => { t.onData = onData; t.socket.send = send; });
    t.onData = () => undefined;
    t.socket.send = () => undefined;
  }
  return () => mends.forEach((mend) => mend());
}

/** Cuts the gateway's side of a tab's signaling connection without a close frame: 1006 at both ends. */
function dropConnection(gateway: Gateway, sessionId: string): void {
  const signaling = gateway['signaling'] as unknown as { findSession(id: string): { ws: { _socket: { destroy(): void } } } | undefined };
  const session = signaling.findSession(sessionId);
  assert.ok(session, `session ${sessionId} on the gateway`);
  session.ws._socket.destroy();
}

/**
 * Logs what the page's call does (`window.__events`: names and Date.now() times), the states of
 * the peer connection it has now (`ice:…`), the client's reconnecting/reconnected, and every
 * status text the page shows (`window.__statuses`). Every frame the page sends is logged
 * (`window.__sent`: type, time, whether it went nowhere): a socket marked `__silent` sends
 * nothing (its network went, the socket does not know yet), and with `window.__oldGateway` a
 * `restart` goes out under a type the gateway does not know (as to a gateway older than it).
 */
async function instrument(page: Page): Promise<{ callId: string; sessionId: string }> {
  return page.evaluate(() => {
    const w = window as any;
    const call = w.__gw.currentCall;
    w.__events = [] as Array<{ e: string; t: number }>;
    // (No named functions in here: the test runner's transform would name them with a helper the page lacks.)
    w.__log = (e: string) => w.__events.push({ e, t: Date.now() });
    const log = w.__log as (e: string) => void;
    call.on('mediaRestarting', (i: { automatic: boolean }) => log(i.automatic ? 'mediaRestarting:auto' : 'mediaRestarting'));
    call.on('mediaRestarted', () => log('mediaRestarted'));
    call.on('mediaRestartFailed', () => log('mediaRestartFailed'));
    call.on('error', (err: { request?: string; code: string }) => log(`error:${err.request}:${err.code}`));
    call.on('ended', (info: { cause: string }) => log(`ended:${info.cause}`));
    for (const e of ['reconnecting', 'reconnected']) w.__gw.client.on(e, () => log(e));
    w.__sent = [] as Array<{ type: string; t: number; silent: boolean }>;
    const nativeSend = WebSocket.prototype.send;
    WebSocket.prototype.send = function (this: WebSocket & { __silent?: boolean }, data: string) {
      const type: string = JSON.parse(data).type;
      w.__sent.push({ type, t: Date.now(), silent: !!this.__silent });
      if (this.__silent) return;
      nativeSend.call(this, w.__oldGateway && type === 'restart' ? data.replace('"type":"restart"', '"type":"restartX"') : data);
    };
    const pc: RTCPeerConnection = call.pc;
    w.__firstPc = pc;
    pc.addEventListener('iceconnectionstatechange', () => log(`ice:${pc.iceConnectionState}`));
    const status = document.querySelector('[data-testid="call-status"]')!;
    w.__statuses = [status.textContent];
    new MutationObserver(() => w.__statuses.push(status.textContent)).observe(status, { childList: true, characterData: true, subtree: true });
    return { callId: call.id as string, sessionId: w.__gw.client.sessionId as string };
  });
}

/** A demo page that called `number` and got it answered, instrumented. */
async function answeredCall(rig: DemoRig, number: string): Promise<{ page: Page; callId: string; sessionId: string }> {
  const page = await openPhone(rig.browser, rig.gw.url);
  await page.getByTestId('dial-input').fill(number);
  await page.getByTestId('call-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 10000 });
  const { callId, sessionId } = await instrument(page);
  assert.ok(callId && sessionId);
  return { page, callId, sessionId };
}

const events = async (page: Page): Promise<string[]> => (await page.evaluate(() => (window as any).__events as Array<{ e: string }>)).map((x) => x.e);
const eventTime = (page: Page, e: string): Promise<number | undefined> => page.evaluate((e) => (window as any).__events.find((x: { e: string }) => x.e === e)?.t, e);
const waitForEvent = (page: Page, e: string, timeout = 10000) =>
  page.waitForFunction((ev) => (window as any).__events.some((x: { e: string }) => x.e === ev), e, { timeout });
const sentFrames = (page: Page, type: string): Promise<Array<{ t: number; silent: boolean }>> =>
  page.evaluate((type) => (window as any).__sent.filter((x: { type: string }) => x.type === type), type);
/** The page's call, and its peer connection as it is now. */
const callInPage = (page: Page) => page.evaluate(() => {
  const w = window as any;
  const c = w.__gw.currentCall;
  const senderTrack = c.pc.getSenders().find((s: RTCRtpSender) => s.track?.kind === 'audio')?.track;
  return {
    id: c.id as string, state: c.state as string, endInfo: c.endInfo,
    newPc: c.pc !== w.__firstPc, pcState: c.pc.connectionState as string, firstPcState: w.__firstPc.connectionState as string,
    sendsTheMicrophone: !!senderTrack && senderTrack === c.localStream.getAudioTracks()[0],
    micEnabled: senderTrack?.enabled as boolean,
    playing: c.audio.srcObject === c.remoteStream && c.remoteStream.getAudioTracks().some((t: MediaStreamTrack) => t.readyState === 'live'),
  };
});



async function hangUp(rig: DemoRig, page: Page, callId: string): Promise<void> {
  await page.getByTestId('hangup-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'ended (local-hangup)' }).waitFor({ timeout: 5000 });
  assert.equal((await cdrOf(rig.gw, callId)).cause, 'local-hangup');
}

async function expectNothingHeld(gw: DemoRig['gw']): Promise<void> {
  await until(() => gatewayCalls(gw.gateway).size === 0, 'no call left on the gateway');
  await until(() => JSON.stringify(heldResources(gw.gateway)) === NOTHING_HELD, `nothing held: ${JSON.stringify(heldResources(gw.gateway))}`);
}

describe('media restart (Chromium, demo echo)', () => {
  let rig: DemoRig;
  before(async () => { rig = await startDemoRig(BASE, { webrtc: { portRange: [BASE + 200, BASE + 203] }, media: { inactivityTimeoutSec: 40 } } as Parameters<typeof startDemoRig>[1]); });
  afterEach(() => closePages(rig?.browser));
  after(() => rig?.stop());

  test('restartMedia(): the call moves to a new peer connection — same call, still answered, the echo heard on the new one, one ICE port held, one CDR line', async () => {
    const { gw } = rig;
    const { page, callId } = await answeredCall(rig, '1000');
    await expectEcho(page);
    assert.equal(heldResources(gw.gateway).icePorts, 1);
    const legBefore = browserLegOf(gw.gateway, callId);
    // Muted before: the new connection sends the same (muted) microphone track.
    await page.getByTestId('mute-button').click();

    const started = Date.now();
    await page.evaluate(() => (window as any).__gw.currentCall.restartMedia());
    const tookMs = Date.now() - started;
    assert.deepEqual(await events(page), ['mediaRestarting', 'mediaRestarted']);
    const after = await callInPage(page);
    assert.deepEqual(after, { id: callId, state: 'answered', endInfo: null, newPc: true, pcState: 'connected', firstPcState: 'closed', sendsTheMicrophone: true, micEnabled: false, playing: true });
    const statuses: string[] = await page.evaluate(() => (window as any).__statuses);
    assert.ok(statuses.some((s) => s.startsWith('answered') && s.endsWith(' — reconnecting…')), `'reconnecting…' shown during the restart: ${JSON.stringify(statuses)}`);
    await page.getByTestId('call-status').filter({ hasText: /^answered \d\d:\d\d$/ }).waitFor({ timeout: 3000 });

    await page.getByTestId('mute-button').click();
    await expectEcho(page);
    assert.deepEqual([...gatewayCalls(gw.gateway).keys()], [callId], 'the gateway still has exactly this call');
    assert.notEqual(browserLegOf(gw.gateway, callId), legBefore, 'the gateway\'s call has its new browser leg');
    await until(() => heldResources(gw.gateway).icePorts === 1, `one ICE port held: ${JSON.stringify(heldResources(gw.gateway))}`);
    console.log(`# restartMedia() resolved in ${tookMs} ms`);

    await hangUp(rig, page, callId);
    await expectNothingHeld(gw);
    assert.deepEqual(await events(page), ['mediaRestarting', 'mediaRestarted', 'ended:local-hangup']);
  });

  test('automatic: the gateway stops answering on the call\'s connection — Chromium\'s ICE goes disconnected, the SDK restarts the media, the echo comes back on the same call', async () => {
    const { gw } = rig;
    const { page, callId } = await answeredCall(rig, '1000');
    await expectEcho(page);

    const broken = Date.now();
    breakMediaPath(gw.gateway, callId);
    await waitForEvent(page, 'ice:disconnected', 20000);
    await waitForEvent(page, 'mediaRestarted', 20000);
    const recovered = Date.now();
    const log = await events(page);
    assert.deepEqual(log.filter((e) => !e.startsWith('ice:')), ['mediaRestarting:auto', 'mediaRestarted'], JSON.stringify(log));
    assert.ok(!log.includes('ice:failed'), JSON.stringify(log));
    const after = await callInPage(page);
    assert.deepEqual(after, { id: callId, state: 'answered', endInfo: null, newPc: true, pcState: 'connected', firstPcState: 'closed', sendsTheMicrophone: true, micEnabled: true, playing: true });
    await expectEcho(page);
    const heardAgain = Date.now();
    const statuses: string[] = await page.evaluate(() => (window as any).__statuses);
    assert.ok(statuses.some((s) => s.startsWith('answered') && s.endsWith(' — reconnecting…')), `'reconnecting…' shown during the restart: ${JSON.stringify(statuses)}`);
    await page.getByTestId('call-status').filter({ hasText: /^answered \d\d:\d\d$/ }).waitFor({ timeout: 3000 });
    assert.deepEqual([...gatewayCalls(gw.gateway).keys()], [callId], 'the gateway still has exactly this call');
    await until(() => heldResources(gw.gateway).icePorts === 1, `the broken leg released: ${JSON.stringify(heldResources(gw.gateway))}`);

    // The link to the gateway is checked as soon as the audio path goes (it may have gone too).
    const disconnectedAt = (await eventTime(page, 'ice:disconnected'))!;
    const pings = await sentFrames(page, 'ping');
    assert.ok(pings.some((p) => Math.abs(p.t - disconnectedAt) <= 200), `a ping at ICE disconnected (${disconnectedAt}): ${JSON.stringify(pings)}`);
    const noticed = disconnectedAt - broken;
    const restarting = (await eventTime(page, 'mediaRestarting:auto'))! - broken;
    const restarted = (await eventTime(page, 'mediaRestarted'))! - broken;
    assert.ok(restarting >= noticed + 1900, `the restart waits 2 s of disconnected ICE (noticed ${noticed} ms, restart at ${restarting} ms)`);
    console.log(`# broken at 0: Chromium ICE disconnected after ${noticed} ms, restart started at ${restarting} ms, new connection up at ${restarted} ms (test saw it at ${recovered - broken} ms), echo confirmed by ${heardAgain - broken} ms (1.5 s of listening)`);

    await hangUp(rig, page, callId);
    await expectNothingHeld(gw);
  });

  test('a restart the gateway refuses (no WebRTC port free: too-many-calls): error and mediaRestartFailed, the call goes on as it was, audible', async () => {
    const { gw } = rig;
    const a = await answeredCall(rig, '1000');
    const b = await answeredCall(rig, '1000');
    assert.equal(heldResources(gw.gateway).icePorts, 2, 'both ICE port pairs in use');

    const refusal = await a.page.evaluate(() => (window as any).__gw.currentCall.restartMedia().then(() => null, (e: Error & { error?: { code: string } }) => ({ message: e.message, code: e.error?.code })));
    assert.equal(refusal?.code, 'too-many-calls', JSON.stringify(refusal));
    assert.match(refusal.message, /refused/);
    assert.deepEqual(await events(a.page), ['mediaRestarting', 'error:restart:too-many-calls', 'mediaRestartFailed']);
    assert.deepEqual(await callInPage(a.page), { id: a.callId, state: 'answered', endInfo: null, newPc: false, pcState: 'connected', firstPcState: 'connected', sendsTheMicrophone: true, micEnabled: true, playing: true });
    await a.page.getByTestId('call-status').filter({ hasText: /^answered \d\d:\d\d$/ }).waitFor({ timeout: 3000 });
    await expectEcho(a.page);
    await expectEcho(b.page);
    assert.equal(heldResources(gw.gateway).icePorts, 2);
    assert.deepEqual(new Set(gatewayCalls(gw.gateway).keys()), new Set([a.callId, b.callId]));

    await hangUp(rig, a.page, a.callId);
    await hangUp(rig, b.page, b.callId);
    await expectNothingHeld(gw);
    assert.deepEqual(await events(b.page), ['ended:local-hangup']);
  });

  test('a restart sent into a dead signaling connection is sent again as soon as the page has reconnected — the same restart, no wait for its 15 s timeout', async () => {
    const { gw } = rig;
    const { page, callId, sessionId } = await answeredCall(rig, '1000');
    await expectEcho(page);
    // The link to the gateway goes silent as the restart starts: its `restart` goes nowhere.
    await page.evaluate(() => { const w = window as any; w.__gw.currentCall.on('mediaRestarting', () => { w.__gw.client.ws.__silent = true; }); });
    breakMediaPath(gw.gateway, callId);
    await page.waitForFunction(() => (window as any).__sent.some((x: { type: string; silent: boolean }) => x.type === 'restart' && x.silent), null, { timeout: 20000 });
    dropConnection(gw.gateway, sessionId); // the page notices its connection has gone
    await waitForEvent(page, 'reconnected');
    await waitForEvent(page, 'mediaRestarted', 8000);
    const log = await events(page);
    assert.deepEqual(log.filter((e) => !e.startsWith('ice:')), ['mediaRestarting:auto', 'reconnecting', 'reconnected', 'mediaRestarted'], JSON.stringify(log));
    assert.deepEqual((await sentFrames(page, 'restart')).map((x) => x.silent), [true, false], 'sent again, on the new connection');
    const sinceReconnected = (await eventTime(page, 'mediaRestarted'))! - (await eventTime(page, 'reconnected'))!;
    console.log(`# the new connection was up ${sinceReconnected} ms after the resume`);
    const after = await callInPage(page);
    assert.deepEqual(after, { id: callId, state: 'answered', endInfo: null, newPc: true, pcState: 'connected', firstPcState: 'closed', sendsTheMicrophone: true, micEnabled: true, playing: true });
    await expectEcho(page);
    assert.deepEqual([...gatewayCalls(gw.gateway).keys()], [callId], 'the gateway still has exactly this call');
    await until(() => heldResources(gw.gateway).icePorts === 1, `the broken leg released: ${JSON.stringify(heldResources(gw.gateway))}`);
    await hangUp(rig, page, callId);
    await expectNothingHeld(gw);
  });

  test('the automatic restarts are counted again once the connection comes back by itself: three refused (no port free), the path comes back, and the next outage is restarted', async () => {
    const { gw } = rig;
    const a = await answeredCall(rig, '1000');
    const b = await answeredCall(rig, '1000');
    assert.equal(heldResources(gw.gateway).icePorts, 2, 'both ICE port pairs in use');

    const mend = breakMediaPath(gw.gateway, a.callId);
    await a.page.waitForFunction(() => (window as any).__events.filter((x: { e: string }) => x.e === 'mediaRestartFailed').length === 3, null, { timeout: 30000 });
    mend(); // before Chromium gives the connection up (ICE failed)
    await waitForEvent(a.page, 'ice:connected', 15000);
    const refused = ['mediaRestarting:auto', 'error:restart:too-many-calls', 'mediaRestartFailed'];
    assert.deepEqual(await events(a.page), ['ice:disconnected', ...refused, ...refused, ...refused, 'ice:connected']);

    await hangUp(rig, b.page, b.callId);
    await until(() => heldResources(gw.gateway).icePorts === 1, 'a port pair free');
    breakMediaPath(gw.gateway, a.callId);
    await waitForEvent(a.page, 'mediaRestarted', 25000);
    const log = await events(a.page);
    assert.deepEqual(log.filter((e) => !e.startsWith('ice:')).slice(9), ['mediaRestarting:auto', 'mediaRestarted'], JSON.stringify(log));
    const after = await callInPage(a.page);
    assert.deepEqual(after, { id: a.callId, state: 'answered', endInfo: null, newPc: true, pcState: 'connected', firstPcState: 'closed', sendsTheMicrophone: true, micEnabled: true, playing: true });
    await expectEcho(a.page);
    await hangUp(rig, a.page, a.callId);
    await expectNothingHeld(gw);
  });

  test('a gateway without `restart` (it answers unknown-type, naming no call): restartMedia() fails at once, no automatic restart follows when the audio goes, and the failed connection ends the call as ice-failed (the gateway told)', async () => {
    const { gw } = rig;
    const { page, callId } = await answeredCall(rig, '1000');
    await page.evaluate(() => { (window as any).__oldGateway = true; });
    const started = Date.now();
    const refusal = await page.evaluate(() => (window as any).__gw.currentCall.restartMedia().then(() => null, (e: Error & { error?: { code: string } }) => ({ message: e.message, code: e.error?.code })));
    const tookMs = Date.now() - started;
    assert.equal(refusal?.code, 'unknown-type', JSON.stringify(refusal));
    assert.ok(tookMs < 3000, `refused at once, not at the 15 s timeout (${tookMs} ms)`);
    assert.deepEqual(await events(page), ['mediaRestarting', 'error:undefined:unknown-type', 'mediaRestartFailed']);
    assert.deepEqual(await callInPage(page), { id: callId, state: 'answered', endInfo: null, newPc: false, pcState: 'connected', firstPcState: 'connected', sendsTheMicrophone: true, micEnabled: true, playing: true });

    breakMediaPath(gw.gateway, callId);
    await waitForEvent(page, 'ended:ice-failed', 40000);
    const log = await events(page);
    assert.deepEqual(log.filter((e) => !e.startsWith('ice:')).slice(3), ['ended:ice-failed'], `no automatic restart: ${JSON.stringify(log)}`);
    await page.getByTestId('call-status').filter({ hasText: 'ended (ice-failed)' }).waitFor({ timeout: 3000 });
    assert.equal((await cdrOf(gw, callId)).cause, 'local-hangup', 'the page hung the call up at the gateway');
    await expectNothingHeld(gw);
  });
});
