/**
 * Resuming after a dropped signaling connection (docs/protocol.md, "Resuming after a dropped
 * connection"), end to end: Chromium's demo page, its SDK and a whole gateway. The gateway side
 * of the page's WebSocket is cut without a close frame (its TCP socket destroyed: 1006 at both
 * ends, as when a network goes away for a moment); the page's call must go on.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Page } from 'playwright-core';
import { openPhone, closePages, expectEcho } from '../support/page';
import { startDemoRig, cdrOf, type DemoRig } from '../support/demoRig';
import { until } from '../support/tabs';
import { heldResources } from '../support/gateway';

const BASE = 26800;
/** Nothing listens here (a TCP port of this file's range): where a blocked page's sockets go. */
const DEAD_WS = `ws://127.0.0.1:${BASE + 299}/ws`;
const NOTHING_HELD = JSON.stringify({ legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 });

type Gateway = DemoRig['gw']['gateway'];
interface SessionLike { sessionId: string; state: string; ws: { _socket: { destroy(): void } } }

/** The gateway's live calls (read-only). */
const gatewayCalls = (gateway: Gateway) => (gateway['manager'] as unknown as { calls: Map<string, { ended: boolean }> }).calls;

/** The gateway's session of a tab (read-only). */
function sessionOf(gateway: Gateway, sessionId: string): SessionLike {
  const signaling = gateway['signaling'] as unknown as { findSession(id: string): SessionLike | undefined };
  const session = signaling.findSession(sessionId);
  assert.ok(session, `session ${sessionId} on the gateway`);
  return session;
}

/** Cuts the gateway's side of a tab's connection without a close frame: 1006 at both ends. */
function dropConnection(gateway: Gateway, sessionId: string): void {
  sessionOf(gateway, sessionId).ws._socket.destroy();
}

/**
 * Logs what the page's client and call do (`window.__events`), and wraps WebSocket: while
 * `window.__blockWs` is set, new sockets go to a port where nothing listens (the network is still
 * away for new connections); while `window.__slowWs` is a number of ms, new sockets hand what
 * they receive to the page that much later (a slow link); `window.__wsStats` counts the sockets
 * opened since, and the most open at once. Every frame the page sends is logged
 * (`window.__sent`: types), and a socket marked `__silent` sends nothing (the network went, the
 * socket does not know yet). `where`: the demo page's client and call (window.__gw), or those an
 * SDK page keeps in window.client and window.call.
 */
async function instrument(page: Page, where: 'demo' | 'sdk'): Promise<{ callId: string; sessionId: string }> {
  return page.evaluate(([deadWs, where]) => {
    const w = window as any;
    const client = where === 'demo' ? w.__gw.client : w.client;
    const call = where === 'demo' ? w.__gw.currentCall : w.call;
    w.__events = [] as string[];
    for (const e of ['reconnecting', 'reconnected', 'disconnected']) client.on(e, () => w.__events.push(e));
    call.on('ended', (info: { cause: string }) => w.__events.push(`ended:${info.cause}`));
    w.__blockWs = false;
    const stats = { opened: 0, open: 0, maxOpen: 0 };
    w.__wsStats = stats;
    const Native = w.WebSocket;
    w.__sent = [] as string[];
    const nativeSend = Native.prototype.send;
    Native.prototype.send = function (this: WebSocket & { __silent?: boolean }, data: string) {
      w.__sent.push(JSON.parse(data).type);
      if (!this.__silent) nativeSend.call(this, data);
    };
    w.WebSocket = class extends Native {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(w.__blockWs ? deadWs : url, protocols);
        stats.opened++; stats.open++; stats.maxOpen = Math.max(stats.maxOpen, stats.open);
        const sock = this as unknown as WebSocket;
        sock.addEventListener('close', () => { stats.open--; });
        const delayMs: number | undefined = w.__slowWs;
        if (delayMs) {
          // Registered before the client's onmessage: each frame is held back, then dispatched again.
          const late = new WeakSet<Event>();
          sock.addEventListener('message', (e: MessageEvent) => {
            if (late.has(e)) return;
            e.stopImmediatePropagation();
            setTimeout(() => { const again = new MessageEvent('message', { data: e.data }); late.add(again); sock.dispatchEvent(again); }, delayMs);
          });
        }
      }
    };
    return { callId: call.id as string, sessionId: client.sessionId as string };
  }, [DEAD_WS, where] as const);
}

/** A demo page that called `number` and got it answered, instrumented. */
async function answeredCall(rig: DemoRig, number: string): Promise<{ page: Page; callId: string; sessionId: string }> {
  const page = await openPhone(rig.browser, rig.gw.url);
  await page.getByTestId('dial-input').fill(number);
  await page.getByTestId('call-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 10000 });
  const { callId, sessionId } = await instrument(page, 'demo');
  assert.ok(callId && sessionId);
  return { page, callId, sessionId };
}

const events = (page: Page): Promise<string[]> => page.evaluate(() => (window as any).__events);
const waitForEvent = (page: Page, e: string, timeout = 10000) =>
  page.waitForFunction((ev) => (window as any).__events.includes(ev), e, { timeout });
const callInPage = (page: Page): Promise<{ id: string; state: string; endInfo: { cause: string } | null }> =>
  page.evaluate(() => { const c = (window as any).__gw.currentCall; return { id: c.id, state: c.state, endInfo: c.endInfo }; });
const setBlocked = (page: Page, on: boolean) => page.evaluate((b) => { (window as any).__blockWs = b; }, on);
const sentPings = (page: Page): Promise<number> => page.evaluate(() => (window as any).__sent.filter((t: string) => t === 'ping').length);

/**
 * A demo page whose client places a call to `number` itself (`window.call`; it is not the demo
 * page's current call), its client and call logged in `window.__events` (`states`: the call's
 * state events too). Messages of the types in `lose` that reach the page's current socket are
 * lost (`lost:<type>`; their callId in `window.__lostCallId`): as if sent into a connection that
 * had dropped without either end knowing yet.
 */
async function placeCall(rig: DemoRig, number: string, lose: string[], states = false): Promise<{ page: Page; sessionId: string }> {
  const page = await openPhone(rig.browser, rig.gw.url);
  const sessionId = await page.evaluate(([number, lose, states]) => {
    const w = window as any;
    const client = w.__gw.client;
    w.__events = [] as string[];
    for (const e of ['reconnecting', 'reconnected', 'disconnected']) client.on(e, () => w.__events.push(e));
    const ws: WebSocket = client.ws;
    const deliver = ws.onmessage!;
    ws.onmessage = (ev: MessageEvent) => {
      const m = JSON.parse(String(ev.data));
      if (!lose.includes(m.type)) { deliver.call(ws, ev); return; }
      w.__events.push(`lost:${m.type}`);
      w.__lostCallId = m.callId;
    };
    w.call = client.call(number);
    w.call.on('ended', (info: { cause: string }) => w.__events.push(`ended:${info.cause}`));
    if (states) w.call.on('state', (st: string) => w.__events.push(`state:${st}`));
    return client.sessionId as string;
  }, [number, lose, states] as const);
  return { page, sessionId };
}

async function expectNothingHeld(gw: DemoRig['gw']): Promise<void> {
  await until(() => gatewayCalls(gw.gateway).size === 0, 'no call left on the gateway');
  await until(() => JSON.stringify(heldResources(gw.gateway)) === NOTHING_HELD, `nothing held: ${JSON.stringify(heldResources(gw.gateway))}`);
}



describe('resume on (the default grace time, 20 s)', () => {
  let rig: DemoRig;
  before(async () => { rig = await startDemoRig(BASE); });
  afterEach(() => closePages(rig?.browser));
  after(() => rig?.stop());

  test('a dropped connection mid-call: the page reconnects, the call goes on (same call, echo heard), and ends normally later', async () => {
    const { gw } = rig;
    const { page, callId, sessionId } = await answeredCall(rig, '1000');
    await expectEcho(page);
    assert.deepEqual([...gatewayCalls(gw.gateway).keys()], [callId]);

    dropConnection(gw.gateway, sessionId);
    await waitForEvent(page, 'reconnected');
    assert.deepEqual(await events(page), ['reconnecting', 'reconnected']);
    assert.deepEqual(await callInPage(page), { id: callId, state: 'answered', endInfo: null });
    assert.equal(await page.evaluate(() => (window as any).__gw.client.sessionId), sessionId, 'the same session');
    assert.deepEqual([...gatewayCalls(gw.gateway).keys()], [callId], 'the gateway still has exactly this call');
    await expectEcho(page);
    const status = await page.getByTestId('call-status').textContent();
    assert.ok(status?.startsWith('answered') && !status.includes('reconnecting'), status ?? '');

    // Again: the welcome of the resume carried a new resume token (each works once).
    dropConnection(gw.gateway, sessionId);
    await page.waitForFunction(() => (window as any).__events.filter((e: string) => e === 'reconnected').length === 2, null, { timeout: 10000 });
    assert.deepEqual(await events(page), ['reconnecting', 'reconnected', 'reconnecting', 'reconnected']);
    assert.deepEqual([...gatewayCalls(gw.gateway).keys()], [callId]);
    await expectEcho(page);

    await page.getByTestId('hangup-button').click();
    await page.getByTestId('call-status').filter({ hasText: 'ended (local-hangup)' }).waitFor({ timeout: 5000 });
    assert.equal((await cdrOf(gw, callId)).cause, 'local-hangup');
    await until(() => gatewayCalls(gw.gateway).size === 0, 'no call left on the gateway');
    await until(() => JSON.stringify(heldResources(gw.gateway)) === NOTHING_HELD, `nothing held: ${JSON.stringify(heldResources(gw.gateway))}`);
  });

  test('the far end hangs up while the connection is away: after reconnecting the call ends with that cause (from missed), not connection-lost', async () => {
    const { gw } = rig;
    const { page, callId, sessionId } = await answeredCall(rig, '1000');
    // New connections fail until the far end has hung up: the page retries meanwhile.
    await setBlocked(page, true);
    dropConnection(gw.gateway, sessionId);
    await waitForEvent(page, 'reconnecting');
    assert.deepEqual(await callInPage(page), { id: callId, state: 'answered', endInfo: null });
    await page.getByTestId('call-status').filter({ hasText: 'reconnecting…' }).waitFor({ timeout: 3000 });
    const dialogs = (gw.gateway['demo'] as unknown as { dialogs: Set<{ bye(): Promise<void> }> }).dialogs;
    assert.equal(dialogs.size, 1);
    for (const d of dialogs) await d.bye();
    await until(() => gatewayCalls(gw.gateway).size === 0, 'the call ended on the gateway');
    assert.equal((await cdrOf(gw, callId)).cause, 'remote-hangup');
    assert.equal((await callInPage(page)).state, 'answered', 'the page does not know yet');
    await page.waitForFunction(() => (window as any).__wsStats.opened >= 2, null, { timeout: 5000 });
    await setBlocked(page, false);

    await waitForEvent(page, 'reconnected');
    assert.deepEqual(await events(page), ['reconnecting', 'ended:remote-hangup', 'reconnected']);
    await page.getByTestId('call-status').filter({ hasText: 'ended (remote-hangup)' }).waitFor({ timeout: 5000 });
    const ws = await page.evaluate(() => (window as any).__wsStats);
    assert.equal(ws.maxOpen, 1, `never two sockets at once: ${JSON.stringify(ws)}`);
    await until(() => JSON.stringify(heldResources(gw.gateway)) === NOTHING_HELD, `nothing held: ${JSON.stringify(heldResources(gw.gateway))}`);
  });

  test('the page hangs up while the connection is away: the call ends there at once, and on the gateway once the page is back (local-hangup)', async () => {
    const { gw } = rig;
    const { page, callId, sessionId } = await answeredCall(rig, '1000');
    await setBlocked(page, true);
    dropConnection(gw.gateway, sessionId);
    await waitForEvent(page, 'reconnecting');
    await page.getByTestId('hangup-button').click();
    await page.getByTestId('call-status').filter({ hasText: 'ended (local-hangup)' }).waitFor({ timeout: 5000 });
    assert.deepEqual([...gatewayCalls(gw.gateway).keys()], [callId], 'the gateway keeps the call while the page is away');
    await setBlocked(page, false);
    await waitForEvent(page, 'reconnected');
    assert.deepEqual(await events(page), ['reconnecting', 'ended:local-hangup', 'reconnected']);
    assert.equal((await cdrOf(gw, callId)).cause, 'local-hangup');
    await until(() => gatewayCalls(gw.gateway).size === 0, 'no call left on the gateway');
    await until(() => JSON.stringify(heldResources(gw.gateway)) === NOTHING_HELD, `nothing held: ${JSON.stringify(heldResources(gw.gateway))}`);
  });

  test('a call whose `calling` went into the dead connection: after the resume the page ends it (connection-lost) and hangs up the call the gateway had dialed', async () => {
    const { gw } = rig;
    const { page, sessionId } = await placeCall(rig, '1000', ['calling']);
    await page.waitForFunction(() => !!(window as any).__lostCallId, null, { timeout: 10000 });
    const callId: string = await page.evaluate(() => (window as any).__lostCallId);
    assert.ok(gatewayCalls(gw.gateway).has(callId), 'the gateway is dialing the call');
    dropConnection(gw.gateway, sessionId);
    await waitForEvent(page, 'reconnected');
    assert.deepEqual(await events(page), ['lost:calling', 'reconnecting', 'ended:connection-lost', 'reconnected']);
    // Listed in the welcome's calls, held by no Call of the page: hung up at once (it would have
    // gone on with nobody at the browser end).
    await until(() => !gatewayCalls(gw.gateway).has(callId), 'the orphan call hung up on the gateway', 3000);
    assert.equal((await cdrOf(gw, callId)).cause, 'local-hangup');
    await expectNothingHeld(gw);
  });

  test('a call hung up before its `calling` came, which then went into the dead connection: the drop is reconnected (no call left in the page) and the gateway\'s call hung up', async () => {
    const { gw } = rig;
    const { page, sessionId } = await placeCall(rig, '1000', ['calling']);
    await page.waitForFunction(() => !!(window as any).__lostCallId, null, { timeout: 10000 });
    const callId: string = await page.evaluate(() => (window as any).__lostCallId);
    await page.evaluate(() => (window as any).call.hangup());
    assert.ok(gatewayCalls(gw.gateway).has(callId), 'the gateway still has the call (its id never reached the page)');
    dropConnection(gw.gateway, sessionId);
    await page.waitForFunction(() => (window as any).__events.some((e: string) => e === 'reconnected' || e === 'disconnected'), null, { timeout: 10000 });
    assert.deepEqual(await events(page), ['lost:calling', 'ended:local-hangup', 'reconnecting', 'reconnected']);
    await until(() => !gatewayCalls(gw.gateway).has(callId), 'the orphan call hung up on the gateway', 3000);
    assert.equal((await cdrOf(gw, callId)).cause, 'local-hangup');
    await expectNothingHeld(gw);
  });

  test('a resume whose welcome is slow (6 s, over the attempt\'s 5 s to open): the page waits for it on the socket the gateway adopted — the call goes on', async () => {
    const { gw } = rig;
    const { page, callId, sessionId } = await answeredCall(rig, '1000');
    await page.evaluate(() => { (window as any).__slowWs = 6000; });
    const dropped = Date.now();
    dropConnection(gw.gateway, sessionId);
    await waitForEvent(page, 'reconnected', 15000);
    const tookMs = Date.now() - dropped;
    assert.ok(tookMs >= 6000, `the welcome came after 6 s (${tookMs} ms)`);
    assert.deepEqual(await events(page), ['reconnecting', 'reconnected']);
    assert.deepEqual(await page.evaluate(() => (window as any).__wsStats), { opened: 1, open: 1, maxOpen: 1 }, 'one attempt, never given up on');
    assert.deepEqual(await callInPage(page), { id: callId, state: 'answered', endInfo: null });
    assert.deepEqual([...gatewayCalls(gw.gateway).keys()], [callId], 'the gateway still has the call');
    await expectEcho(page);
    await page.getByTestId('hangup-button').click();
    await page.getByTestId('call-status').filter({ hasText: 'ended (local-hangup)' }).waitFor({ timeout: 5000 });
    assert.equal((await cdrOf(gw, callId)).cause, 'local-hangup');
    await expectNothingHeld(gw);
  });

  test('a socket that goes silent mid-call (what the page sends goes nowhere, the gateway sees nothing wrong): no pong to the page\'s ping, the page closes it with 4000 — the gateway keeps the call — and resumes; no pings once idle', async () => {
    const { gw } = rig;
    const { page, callId, sessionId } = await answeredCall(rig, '1000');
    await setBlocked(page, true);
    await page.evaluate(() => { (window as any).__gw.client.ws.__silent = true; });
    // A ping within 10 s, then 5 s without its pong.
    await waitForEvent(page, 'reconnecting', 20000);
    assert.ok(await sentPings(page) >= 1, 'a ping went out (into the silent socket)');
    // Closed with 4000: waiting for the page as on a drop (a plain close frame would have hung
    // the call up; no close at all would have left the session as it was).
    await until(() => sessionOf(gw.gateway, sessionId).state === 'detached', 'the gateway\'s session waiting for the page', 3000);
    assert.deepEqual([...gatewayCalls(gw.gateway).keys()], [callId]);
    await setBlocked(page, false);
    await waitForEvent(page, 'reconnected');
    assert.deepEqual(await events(page), ['reconnecting', 'reconnected']);
    assert.deepEqual(await callInPage(page), { id: callId, state: 'answered', endInfo: null });
    await expectEcho(page);
    await page.getByTestId('hangup-button').click();
    await page.getByTestId('call-status').filter({ hasText: 'ended (local-hangup)' }).waitFor({ timeout: 5000 });
    assert.equal((await cdrOf(gw, callId)).cause, 'local-hangup');
    await expectNothingHeld(gw);

    // Idle: the page pings no more (over one interval).
    const pings = await sentPings(page);
    await new Promise((r) => setTimeout(r, 10500));
    assert.equal(await sentPings(page), pings, 'no ping without a call');
  });

  test('a call whose `progress` went into the dead connection: the gateway lists it ringing, and the page\'s call moves to ringing after the resume', async () => {
    const { gw } = rig;
    // The far end rings until the page hangs up (the demo endpoint would answer after 800 ms).
    const demo = gw.gateway['demo'] as unknown as { onInvite(inv: { progress(status: number): void }): void };
    const answering = demo.onInvite;
    demo.onInvite = (inv) => inv.progress(180);
    try {
      const { page, sessionId } = await placeCall(rig, '1000', ['progress'], true);
      await page.waitForFunction(() => !!(window as any).__lostCallId, null, { timeout: 10000 });
      const callId: string = await page.evaluate(() => (window as any).__lostCallId);
      assert.equal(await page.evaluate(() => (window as any).call.state), 'connecting');
      dropConnection(gw.gateway, sessionId);
      await waitForEvent(page, 'reconnected');
      assert.deepEqual(await events(page), ['lost:progress', 'reconnecting', 'state:ringing', 'reconnected']);
      assert.deepEqual(await page.evaluate(() => { const c = (window as any).call; return { id: c.id, state: c.state }; }), { id: callId, state: 'ringing' });
      await page.evaluate(() => (window as any).call.hangup());
      await until(() => !gatewayCalls(gw.gateway).has(callId), 'the call ended on the gateway');
      await expectNothingHeld(gw);
    } finally {
      demo.onInvite = answering;
    }
  });

  // The last two of this rig: the gateway keeps their calls for its grace time (the page does not
  // come back), and the rig's stop ends them.
  test('client.close() while reconnecting: the attempts stop, the call ends as the page\'s own hang-up, nothing more is emitted', async () => {
    const { gw } = rig;
    const { page, sessionId } = await answeredCall(rig, '1000');
    await setBlocked(page, true);
    dropConnection(gw.gateway, sessionId);
    await waitForEvent(page, 'reconnecting');
    await page.evaluate(() => (window as any).__gw.client.close());
    await page.getByTestId('call-status').filter({ hasText: 'ended (local-hangup)' }).waitFor({ timeout: 2000 });
    const opened = (await page.evaluate(() => (window as any).__wsStats)).opened;
    await new Promise((r) => setTimeout(r, 2500)); // past the next attempts' waits
    const ws = await page.evaluate(() => (window as any).__wsStats);
    assert.deepEqual({ opened: ws.opened, open: ws.open }, { opened, open: 0 }, 'no attempt after close()');
    assert.deepEqual(await events(page), ['reconnecting', 'ended:local-hangup']);
  });

  test('an SDK client connected with resume: false and stayConnected: false ends its calls at a drop (connection-lost) and does not reconnect', async () => {
    const { gw } = rig;
    const page = await rig.browser.newPage();
    // A page the gateway serves (Chromium refuses a page Playwright made up a connection to 127.0.0.1).
    await page.goto(`${gw.url}/widget-demo.html`);
    await page.addScriptTag({ url: '/sdk.js' });
    await page.evaluate(async () => {
      const w = window as any;
      w.client = await w.GatewaySDK.GatewayClient.connect({ resume: false, stayConnected: false });
      w.call = w.client.call('1000');
      await new Promise((resolve, reject) => { w.call.on('answered', resolve); w.call.on('ended', reject); });
    });
    const { sessionId } = await instrument(page, 'sdk');
    assert.ok(await page.evaluate(() => (window as any).client.resumeGraceMs > 0), 'the gateway offers resuming');
    dropConnection(gw.gateway, sessionId);
    await waitForEvent(page, 'disconnected', 5000);
    assert.deepEqual(await events(page), ['ended:connection-lost', 'disconnected']);
    assert.equal((await page.evaluate(() => (window as any).__wsStats)).opened, 0, 'no reconnect attempt');
  });
});

describe('resume off (limits.wsResumeGraceSec: 0)', () => {
  let rig: DemoRig;
  // The same ports: the rig above has stopped by now.
  before(async () => { rig = await startDemoRig(BASE, { limits: { wsResumeGraceSec: 0 } } as Parameters<typeof startDemoRig>[1]); });
  afterEach(() => closePages(rig?.browser));
  after(() => rig?.stop());

  test('a dropped connection mid-call ends the call at once (connection-lost) on both sides, as before resuming existed; the page then connects a new session', async () => {
    const { gw } = rig;
    const { page, callId, sessionId } = await answeredCall(rig, '1000');
    assert.equal(await page.evaluate(() => (window as any).__gw.client.resumeGraceMs), 0, 'the welcome said so');
    dropConnection(gw.gateway, sessionId);
    await waitForEvent(page, 'reconnected', 5000);
    assert.deepEqual(await events(page), ['ended:connection-lost', 'reconnecting', 'reconnected']);
    assert.equal((await page.evaluate(() => (window as any).__wsStats)).opened, 1, 'one new connection');
    assert.notEqual(await page.evaluate(() => (window as any).__gw.client.sessionId), sessionId, 'a new session, not a resume');
    // How the call ended stays in view, before the page says it is ready again.
    await page.getByTestId('call-status').filter({ hasText: /^ended \(connection-lost\) — ready/ }).waitFor({ timeout: 2000 });
    assert.equal((await cdrOf(gw, callId)).cause, 'connection-lost');
    await until(() => JSON.stringify(heldResources(gw.gateway)) === NOTHING_HELD, `nothing held: ${JSON.stringify(heldResources(gw.gateway))}`);
  });
});
