/**
 * Staying connected (the SDK's `stayConnected`, on by default): a tab waiting for incoming calls
 * keeps receiving them when its connection drops with no call to take over, when the gateway
 * restarts, and when its link dies silently; calls placed while it reconnects wait for the
 * connection; a token the gateway refuses ends the reconnecting. End to end: Chromium's demo
 * page (and an SDK page), a whole gateway with token auth, and a SIP caller ringing alice.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import type { Page } from 'playwright-core';
import { SipUserAgent, type SipResponse } from '../../src/sip';
import { mintToken } from '../../src/edge';
import { launchChromium } from '../peers/chromium';
import { startGateway, heldResources } from '../support/gateway';
import { closePages, expectEcho } from '../support/page';
import { writeToneWav } from '../support/audio';
import { tempDir } from '../support/tempDir';
import { until } from '../support/tabs';
import { join } from 'node:path';

const BASE = 27850;
const SECRET = 'stay-connected-test-secret-0123456789abc';
/** Nothing listens here (a TCP port of this file's range): where a blocked page's sockets go. */
const DEAD_WS = `ws://127.0.0.1:${BASE + 99}/ws`;
const CALLER_PORT = BASE + 60;
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';
const NOTHING_HELD = JSON.stringify({ legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 });

type Gw = Awaited<ReturnType<typeof startGateway>>;
let gw: Gw;
let browser: Awaited<ReturnType<typeof launchChromium>>;
let caller: SipUserAgent;

/** Token auth, and the demo endpoint for outbound calls (1000 echoes). */
const startGw = () => startGateway(BASE, { auth: { mode: 'token', hs256Secret: SECRET }, demo: { enabled: true } } as Parameters<typeof startGateway>[1]);

before(async () => {
  gw = await startGw();
  const wav = join(tempDir('gw-e2e-'), 'mic-700hz.wav');
  writeToneWav(wav, { hz: 700, sampleRate: 48000, seconds: 30 });
  browser = await launchChromium({ fakeMicWav: wav });
  caller = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: CALLER_PORT }], logger: pino({ level: 'silent' }) });
  await caller.start();
});
afterEach(() => closePages(browser));
after(async () => {
  await caller?.stop();
  await browser?.close();
  await gw?.stop();
});

/**
 * Before the page's scripts: logs the client's events (`window.__events`; `reconnected:resumed`
 * or `reconnected:new`), the types of the frames sent (`__sent`, with `__pingTimes`) and the
 * sockets opened (`__opened`); while `__blockWs` is set new sockets go where nothing listens; a
 * socket marked `__silent` sends nothing (its network went, it does not know yet).
 */
async function instrumentedPage(): Promise<Page> {
  const page = await browser.newPage();
  await page.addInitScript((deadWs) => {
    const w = window as any;
    w.__events = []; w.__sent = []; w.__pingTimes = []; w.__opened = 0; w.__blockWs = false;
    const Native = WebSocket;
    const nativeSend = Native.prototype.send;
    Native.prototype.send = function (this: WebSocket & { __silent?: boolean }, data: string) {
      const type = JSON.parse(data).type;
      w.__sent.push(type);
      if (type === 'ping') w.__pingTimes.push(Date.now());
      if (!this.__silent) nativeSend.call(this, data);
    };
    w.WebSocket = class extends Native {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(w.__blockWs ? deadWs : url, protocols);
        w.__opened++;
      }
    };
  }, DEAD_WS);
  return page;
}

/** The demo page as alice (token for `ttlSec`), ready, its client's events logged. */
async function alicePhone(ttlSec = 300): Promise<Page> {
  const page = await instrumentedPage();
  const token = await mintToken({ sub: 'alice' }, { hs256Secret: SECRET }, { ttlSec });
  await page.goto(`${gw.url}/?token=${token}`);
  await page.getByTestId('call-status').filter({ hasText: 'ready (alice)' }).waitFor({ timeout: 10000 });
  await page.evaluate(() => {
    const w = window as any;
    const client = w.__gw.client;
    client.on('reconnecting', () => w.__events.push('reconnecting'));
    client.on('reconnected', (info: { resumed: boolean }) => w.__events.push(`reconnected:${info.resumed ? 'resumed' : 'new'}`));
    client.on('disconnected', () => w.__events.push('disconnected'));
  });
  return page;
}

const events = (page: Page): Promise<string[]> => page.evaluate(() => (window as any).__events);
const waitForEvent = (page: Page, e: string, timeout = 10000) => page.waitForFunction((ev) => (window as any).__events.includes(ev), e, { timeout });
const sessionIdOf = (page: Page): Promise<string> => page.evaluate(() => (window as any).__gw.client.sessionId);
/** Sockets the page opened after its first. */
const reopened = (page: Page): Promise<number> => page.evaluate(() => (window as any).__opened - 1);

interface SessionLike { ws: { _socket: { destroy(): void } } }
/** Cuts the gateway's side of a tab's connection without a close frame: 1006 at both ends. */
function dropConnection(sessionId: string): void {
  const signaling = gw.gateway['signaling'] as unknown as { findSession(id: string): SessionLike | undefined };
  const session = signaling.findSession(sessionId);
  assert.ok(session, `session ${sessionId} on the gateway`);
  session.ws._socket.destroy();
}

/**
 * A SIP call to alice through the gateway: it must ring the page, which answers (the caller gets
 * 200) and hangs up.
 */
async function ringAlice(page: Page): Promise<void> {
  const inv = caller.invite({ requestUri: `sip:alice@127.0.0.1:${gw.sipPort}`, from: { uri: `sip:+15550001111@127.0.0.1:${CALLER_PORT}`, displayName: 'Caller' }, sdp: SDP });
  const answered = new Promise<SipResponse>((resolve, reject) => {
    inv.once('accepted', resolve);
    inv.once('rejected', (res: SipResponse) => reject(new Error(`the call to alice was refused: ${res.status} ${res.reason}`)));
    inv.once('failed', reject);
  });
  await page.getByTestId('incoming-accept').waitFor({ state: 'visible', timeout: 10000 });
  await page.getByTestId('incoming-accept').click();
  assert.equal((await answered).status, 200);
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 10000 });
  await page.getByTestId('hangup-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'ended (local-hangup)' }).waitFor({ timeout: 5000 });
  await until(() => JSON.stringify(heldResources(gw.gateway)) === NOTHING_HELD, `nothing held: ${JSON.stringify(heldResources(gw.gateway))}`);
}

describe('stay connected', () => {
  test('an idle tab whose connection drops connects a new session at once, and calls to alice ring it again', async () => {
    const page = await alicePhone();
    const sessionId = await sessionIdOf(page);
    dropConnection(sessionId);
    await waitForEvent(page, 'reconnected:new');
    assert.deepEqual(await events(page), ['reconnecting', 'reconnected:new']);
    assert.notEqual(await sessionIdOf(page), sessionId);
    assert.equal(await reopened(page), 1, 'one new connection');
    await page.getByTestId('call-status').filter({ hasText: 'ready (alice)' }).waitFor({ timeout: 2000 });
    await ringAlice(page);
  });

  test('a call placed while the page reconnects waits for the connection, then goes through (echo heard)', async () => {
    const page = await alicePhone();
    await page.evaluate(() => { (window as any).__blockWs = true; });
    dropConnection(await sessionIdOf(page));
    await waitForEvent(page, 'reconnecting');
    await page.getByTestId('dial-input').fill('1000');
    await page.getByTestId('call-button').click();
    // Its request is held while the new connections fail; the call is not ended for it.
    await page.waitForFunction(() => (window as any).__opened >= 2, null, { timeout: 10000 });
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await page.evaluate(() => (window as any).__gw.currentCall.state), 'connecting');
    assert.ok(!(await page.evaluate(() => (window as any).__sent as string[])).includes('call'), 'no call request sent while away');
    await page.evaluate(() => { (window as any).__blockWs = false; });
    await waitForEvent(page, 'reconnected:new', 15000);
    await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 10000 });
    await expectEcho(page);
    await page.getByTestId('hangup-button').click();
    await page.getByTestId('call-status').filter({ hasText: 'ended (local-hangup)' }).waitFor({ timeout: 5000 });
  });

  test('a token refused when reconnecting (expired) is final: disconnected, no more attempts', async () => {
    const page = await alicePhone(2);
    await new Promise((r) => setTimeout(r, 2500)); // the token expires; the session goes on
    dropConnection(await sessionIdOf(page));
    await waitForEvent(page, 'disconnected', 10000);
    assert.deepEqual(await events(page), ['reconnecting', 'disconnected']);
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(await reopened(page), 1, 'one attempt, refused');
    await page.getByTestId('call-status').filter({ hasText: 'disconnected from the gateway' }).waitFor({ timeout: 2000 });
  });

  test('an SDK client given a token function asks it for each new connection: an expired first token does not stop the reconnect', async () => {
    const page = await instrumentedPage();
    await page.goto(`${gw.url}/widget-demo.html`);
    await page.addScriptTag({ url: '/sdk.js' });
    const first = await mintToken({ sub: 'alice' }, { hs256Secret: SECRET }, { ttlSec: 2 });
    const later = await mintToken({ sub: 'alice' }, { hs256Secret: SECRET }, { ttlSec: 300 });
    // As a string: the test's transpiler would name a function passed in (a helper the page lacks).
    await page.evaluate(`(async () => {
      const w = window;
      w.tokensGiven = 0;
      w.client = await w.GatewaySDK.GatewayClient.connect({ token: () => (w.tokensGiven++ === 0 ? '${first}' : Promise.resolve('${later}')) });
      w.client.on('reconnected', (info) => w.__events.push('reconnected:' + (info.resumed ? 'resumed' : 'new')));
      w.client.on('disconnected', () => w.__events.push('disconnected'));
    })()`);
    await new Promise((r) => setTimeout(r, 2500));
    dropConnection(await page.evaluate(() => (window as any).client.sessionId));
    await waitForEvent(page, 'reconnected:new');
    assert.equal(await page.evaluate(() => (window as any).tokensGiven), 2);
    assert.equal(await page.evaluate(() => (window as any).client.identity), 'alice');
  });

  test('a link that dies silently while idle: the page pings after 30 s without a word from the gateway, gets no pong, and connects a new session', async () => {
    const page = await alicePhone();
    const sessionId = await sessionIdOf(page);
    const since = Date.now();
    await page.evaluate(() => { (window as any).__gw.client.ws.__silent = true; });
    await waitForEvent(page, 'reconnected:new', 60_000);
    const pings: number[] = await page.evaluate(() => (window as any).__pingTimes);
    assert.equal(pings.length, 1, 'one ping, unanswered');
    assert.ok(pings[0] - since >= 20_000, `no ping before ~30 s of quiet (${pings[0] - since} ms)`);
    assert.notEqual(await sessionIdOf(page), sessionId);
    // The silent socket was closed by the page (4000): the gateway forgot that session.
    await until(() => !(gw.gateway['signaling'] as unknown as { findSession(id: string): unknown }).findSession(sessionId), 'the old session gone on the gateway', 25_000);
    await ringAlice(page);
  });

  // The last two replace the gateway.
  test('mid-call the connection drops and the gateway restarts before the page is back: its resume gets a new session — the call ends (connection-lost), the page goes on, ready for calls', async () => {
    const page = await alicePhone();
    await page.getByTestId('dial-input').fill('1000');
    await page.getByTestId('call-button').click();
    await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 10000 });
    await page.evaluate(() => {
      const w = window as any;
      w.__gw.currentCall.on('ended', (e: { cause: string }) => w.__events.push(`ended:${e.cause}`));
      w.__blockWs = true;
    });
    dropConnection(await sessionIdOf(page));
    await waitForEvent(page, 'reconnecting', 5000);
    await gw.stop();
    gw = await startGw();
    assert.deepEqual(await events(page), ['reconnecting'], 'the call is kept in the page meanwhile');
    await page.evaluate(() => { (window as any).__blockWs = false; });
    await waitForEvent(page, 'reconnected:new', 10000);
    assert.deepEqual(await events(page), ['reconnecting', 'ended:connection-lost', 'reconnected:new']);
    await page.getByTestId('call-status').filter({ hasText: 'ready (alice)' }).waitFor({ timeout: 2000 });
    await ringAlice(page);
  });

  test('the gateway restarts (it closes the tab\'s connection 1001): the tab connects to the new one, which rings it for alice\'s calls', async () => {
    const page = await alicePhone();
    await gw.stop();
    await waitForEvent(page, 'reconnecting', 5000);
    await new Promise((r) => setTimeout(r, 1000)); // nothing listens: attempts fail meanwhile
    gw = await startGw();
    await waitForEvent(page, 'reconnected:new', 20000);
    assert.deepEqual(await events(page), ['reconnecting', 'reconnected:new']);
    await page.getByTestId('call-status').filter({ hasText: 'ready (alice)' }).waitFor({ timeout: 2000 });
    await ringAlice(page);
  });
});
