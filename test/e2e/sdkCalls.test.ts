/**
 * The browser SDK in a real headless Chromium against a whole gateway (demo endpoint on): how a
 * call ends when it is given up, refused or cut off before it got going — and that nothing is
 * left behind, neither a SIP call at the gateway nor a live microphone in the page.
 */
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Page } from 'playwright-core';
import { mintToken } from '../../src/edge';
import type { CallManager } from '../../src/calls/callManager';
import { startDemoRig, type DemoRig } from '../support/demoRig';
import { closePages } from '../support/page';
import { until } from '../support/tabs';

const BASE = 25850; // 25850-25899: http, SIP, demo SIP, media 25860-25879, WebRTC 25880-25899
const SECRET = 'sdk-calls-test-secret-0123456789abcdef';
let rig: DemoRig;

before(async () => {
  rig = await startDemoRig(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: true, sipPort: BASE + 2 },
    media: { portRange: [BASE + 10, BASE + 29] },
    // Long enough that a call left to it is told apart from one hung up at once.
    webrtc: { portRange: [BASE + 30, BASE + 49], connectTimeoutSec: 10 },
  });
});
afterEach(() => closePages(rig?.browser));
after(() => rig?.stop());

const cdrLines = () => readFileSync(rig.gw.cdrPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
const manager = () => rig.gw.gateway['manager'] as unknown as CallManager;

/**
 * A page of the gateway's with the SDK (/sdk.js) loaded and signed in as `claims.sub`.
 * Instrumented (window): `__streams` every microphone stream getUserMedia gave, `__gum` how often
 * it was asked, `__micGate` a promise getUserMedia waits for first (a permission prompt the user
 * takes time over); `__sent` every frame sent, `__afterSend(msg)` run just after one went out,
 * `__rewrite(msg)` may change one before, and with `__holdCalls` set `call` frames wait in
 * `__held` until `__releaseCalls()` (then they go in the order of their refs).
 */
async function sdkPage(claims: Record<string, unknown> & { sub: string }, opts: Record<string, unknown> = {}): Promise<Page> {
  const page = await rig.browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log(`[page] ${m.text()}`); });
  await page.addInitScript(() => {
    const w = window as any;
    w.__streams = []; w.__gum = 0; w.__sent = []; w.__held = [];
    const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = async (c?: MediaStreamConstraints) => {
      w.__gum++;
      await w.__micGate;
      const s = await gum(c);
      w.__streams.push(s);
      return s;
    };
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (this: WebSocket, data: string) {
      let msg = JSON.parse(String(data));
      if (w.__rewrite) { msg = w.__rewrite(msg); data = JSON.stringify(msg); }
      if (w.__holdCalls && msg.type === 'call') { w.__held.push({ ws: this, data, ref: msg.ref }); return; }
      send.call(this, data);
      w.__sent.push(msg);
      w.__afterSend?.(msg);
    };
    w.__releaseCalls = () => {
      w.__holdCalls = false;
      for (const h of w.__held.sort((a: any, b: any) => a.ref.localeCompare(b.ref))) { send.call(h.ws, h.data); w.__sent.push(JSON.parse(h.data)); }
    };
  });
  // A page the gateway serves (a page Playwright made up would be "public" to Chromium, which
  // then refuses it a connection to 127.0.0.1); its widget stays idle until clicked.
  await page.goto(`${rig.gw.url}/widget-demo.html`);
  await page.addScriptTag({ url: '/sdk.js' });
  const token = await mintToken(claims, { hs256Secret: SECRET }, { ttlSec: 300 });
  await page.evaluate(async ([token, opts]) => {
    const w = window as any;
    w.client = await w.GatewaySDK.GatewayClient.connect({ token, ...opts });
    w.clientErrors = [];
    w.client.on('error', (e: unknown) => w.clientErrors.push(e));
  }, [token, opts] as const);
  return page;
}

/** The page's microphone tracks that are still live. */
const liveMicTracks = (page: Page) => page.evaluate(() => (window as any).__streams.flatMap((s: MediaStream) => s.getTracks()).filter((t: MediaStreamTrack) => t.readyState === 'live').length);

test('a call hung up after its request went out but before `calling` came back: the gateway hangs it up at once, nothing rings on', async () => {
  const page = await sdkPage({ sub: 'quick-hangup' });
  const before = cdrLines().length;
  await page.evaluate(() => {
    const w = window as any;
    w.call = w.client.call('1000');
    // The user hangs up the moment the request is out: `calling` cannot have arrived yet (a
    // message from the socket is a task of its own, after this microtask).
    w.__afterSend = (m: { type: string }) => { if (m.type === 'call') queueMicrotask(() => w.call.hangup()); };
  });
  await page.waitForFunction(() => (window as any).call.state === 'ended');
  assert.equal(await page.evaluate(() => (window as any).call.endInfo.cause), 'local-hangup');
  // The gateway had started dialing; it was told to stop as soon as it said which call that was
  // (without that, the echo test answers after 800 ms and the call lasts until the WebRTC
  // connect timeout, 10 s here, ends it).
  await until(() => cdrLines().length > before, 'the given-up call ended at the gateway', 3000);
  const cdr = cdrLines().at(-1)!;
  assert.equal(cdr.cause, 'local-hangup', JSON.stringify(cdr));
  assert.equal(cdr.answerTime, undefined, 'the far end never answered');
  const hangups = await page.evaluate(() => (window as any).__sent.filter((m: { type: string }) => m.type === 'hangup'));
  assert.deepEqual(hangups, [{ type: 'hangup', callId: cdr.callId }]);
  assert.equal(rig.gw.gateway.activeCalls, 0);
  assert.equal(await liveMicTracks(page), 0);
});

test('with one call allowed, the refused second call ends (with the gateway\'s error) and the first goes on to be answered', async (t) => {
  const page = await sdkPage({ sub: 'one-line', maxCalls: 1 });
  // Both requests reach the gateway back to back, and the first one's `calling` is held back a
  // little: the second is refused while the first is still waiting for its `calling`.
  const m = manager();
  const startOutbound = m.startOutbound;
  m.startOutbound = async function (this: CallManager, ...args: Parameters<CallManager['startOutbound']>) {
    const r = await startOutbound.apply(this, args);
    if (r.ok) await new Promise((res) => setTimeout(res, 500));
    return r;
  };
  t.after(() => { m.startOutbound = startOutbound; });
  await page.evaluate(() => {
    const w = window as any;
    w.__holdCalls = true;
    w.first = w.client.call('1000');
    w.second = w.client.call('1001');
    w.secondErrors = [];
    w.second.on('error', (e: unknown) => w.secondErrors.push(e));
  });
  await page.waitForFunction(() => (window as any).__held.length === 2);
  await page.evaluate(() => (window as any).__releaseCalls());
  await page.waitForFunction(() => (window as any).second.state === 'ended', undefined, { timeout: 10000 });
  await page.waitForFunction(() => (window as any).first.state === 'answered', undefined, { timeout: 10000 });
  const second = await page.evaluate(() => ({ end: (window as any).second.endInfo, errors: (window as any).secondErrors }));
  assert.equal(second.end.cause, 'failed');
  assert.equal(second.end.error?.code, 'too-many-calls', JSON.stringify(second));
  assert.equal(second.errors.length, 1);
  assert.equal(rig.gw.gateway.activeCalls, 1);
  await page.evaluate(() => (window as any).first.hangup());
  await until(() => rig.gw.gateway.activeCalls === 0, 'the first call hung up');
  assert.equal(await liveMicTracks(page), 0, 'both microphones released');
});

test('a call the gateway refuses as a bad request (no destination, and the token fixes none) ends at once and releases the microphone', async () => {
  const page = await sdkPage({ sub: 'no-fixed-destination', dest: ['100*'] });
  await page.evaluate(() => { const w = window as any; w.call = w.client.call(); });
  await page.waitForFunction(() => (window as any).call.state === 'ended', undefined, { timeout: 5000 });
  const end = await page.evaluate(() => (window as any).call.endInfo);
  assert.equal(end.cause, 'failed');
  assert.equal(end.error?.code, 'bad-message');
  assert.match(end.sipReason, /to is required/);
  assert.equal(await liveMicTracks(page), 0);
});

test('a call whose request the gateway never answers ends after the set-up timeout; its late `calling` is hung up at once', async () => {
  const m = manager();
  const startOutbound = m.startOutbound;
  let release!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  m.startOutbound = async function (this: CallManager, ...args: Parameters<CallManager['startOutbound']>) {
    await held;
    return startOutbound.apply(this, args);
  };
  try {
    const page = await sdkPage({ sub: 'stuck-gateway' }, { callSetupTimeoutMs: 1500 });
    const t0 = Date.now();
    await page.evaluate(() => { const w = window as any; w.call = w.client.call('1000'); });
    await page.waitForFunction(() => (window as any).call.state === 'ended', undefined, { timeout: 6000 });
    assert.ok(Date.now() - t0 >= 1400, 'not before the timeout');
    const end = await page.evaluate(() => (window as any).call.endInfo);
    assert.equal(end.cause, 'failed');
    assert.match(end.sipReason, /did not answer/);
    assert.equal(await liveMicTracks(page), 0);

    // The gateway gets to it after all: the page hangs that call up as soon as it hears of it.
    const before = cdrLines().length;
    release();
    await until(() => cdrLines().length > before, 'the late call ended at the gateway', 3000);
    const cdr = cdrLines().at(-1)!;
    assert.equal(cdr.cause, 'local-hangup');
    assert.deepEqual(await page.evaluate(() => (window as any).__sent.filter((x: { type: string }) => x.type === 'hangup')), [{ type: 'hangup', callId: cdr.callId }]);
  } finally {
    m.startOutbound = startOutbound;
    release();
  }
});

test('client.call() on a closed connection (stayConnected: false) ends at once as connection-lost, without asking for the microphone', async () => {
  const page = await sdkPage({ sub: 'closed-connection' }, { stayConnected: false });
  await page.evaluate(() => { const w = window as any; w.disconnected = false; w.client.on('disconnected', () => { w.disconnected = true; }); });
  const wss = (rig.gw.gateway['signaling'] as unknown as { wss: { clients: Set<{ terminate(): void }> } }).wss;
  for (const client of wss.clients) client.terminate(); // the network goes: 1006
  await page.waitForFunction(() => (window as any).disconnected, undefined, { timeout: 5000 });
  await page.evaluate(() => {
    const w = window as any;
    w.call = w.client.call('1000');
    w.ended = null;
    w.call.on('ended', (e: unknown) => { w.ended = e; });
  });
  await page.waitForFunction(() => (window as any).ended !== null, undefined, { timeout: 2000 });
  const r = await page.evaluate(() => ({ ended: (window as any).ended, state: (window as any).call.state, gum: (window as any).__gum }));
  assert.equal(r.state, 'ended');
  assert.equal(r.ended.cause, 'connection-lost');
  assert.equal(r.gum, 0, 'the microphone was not asked for');
});

/** The demo endpoint calls the page's user ("call me back"); resolves once the page has the incoming call as `incoming`. */
async function ringPage(page: Page): Promise<void> {
  await page.evaluate(async () => {
    const w = window as any;
    const ringing = new Promise((r) => w.client.on('incoming', (c: unknown) => { w.incoming = c; r(undefined); }));
    const res = await fetch('/api/demo/callback', { method: 'POST', body: JSON.stringify({ sessionId: w.client.sessionId }) });
    if (!res.ok) throw new Error(`callback: ${res.status}`);
    await Promise.race([ringing, new Promise((_, reject) => setTimeout(() => reject(new Error('no incoming call within 10 s')), 10_000))]);
  });
}

test('an answer the gateway refuses (its SDP) reaches the call as an error and ends it in this tab (the caller hears busy)', async () => {
  const page = await sdkPage({ sub: 'bad-answer' });
  const before = cdrLines().length;
  await ringPage(page);
  const r = await page.evaluate(async () => {
    const w = window as any;
    // An answer without its DTLS fingerprint: refused before any 200 OK.
    w.__rewrite = (m: { type: string; sdp?: string }) => (m.type === 'accept' ? { ...m, sdp: m.sdp!.replace(/^a=fingerprint:.*\r\n/gm, '') } : m);
    const errors: unknown[] = [];
    w.incoming.on('error', (e: unknown) => errors.push(e));
    const ended = new Promise((res) => w.incoming.on('ended', res));
    await w.incoming.accept();
    const end = await Promise.race([ended, new Promise((res) => setTimeout(() => res('still ' + w.incoming.state), 5000))]);
    return { errors, end, callId: w.incoming.id };
  });
  assert.equal((r.errors as Array<Record<string, unknown>>).length, 1, JSON.stringify(r));
  const err = (r.errors as Array<Record<string, unknown>>)[0];
  assert.equal(err.callId, r.callId);
  assert.equal(err.request, 'accept');
  assert.match(String(err.message), /bad answer SDP/);
  const end = r.end as Record<string, any>;
  assert.equal(end.cause, 'failed', JSON.stringify(r.end));
  assert.equal(end.error?.code, err.code);
  // The tab took itself out as busy; it was the only one, so the caller got 486.
  await until(() => cdrLines().length > before, 'the refused call\'s CDR line');
  assert.equal(cdrLines().at(-1)!.sipStatus, 486);
  assert.equal(await liveMicTracks(page), 0);
});

test('an incoming call this tab cannot answer (the microphone refused) ends here as failed and is refused at the gateway as busy, not left ringing', async () => {
  const page = await sdkPage({ sub: 'no-mic' });
  const before = cdrLines().length;
  await ringPage(page);
  const r = await page.evaluate(async () => {
    const w = window as any;
    w.__micGate = Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
    w.__micGate.catch(() => undefined);
    const accepted = await w.incoming.accept().then(() => 'resolved', (e: Error) => `rejected: ${e.name}`);
    return { accepted, state: w.incoming.state, end: w.incoming.endInfo };
  });
  assert.equal(r.accepted, 'rejected: NotAllowedError');
  assert.equal(r.state, 'ended');
  assert.deepEqual(r.end, { cause: 'failed', sipReason: 'microphone permission denied' });
  assert.deepEqual(await page.evaluate(() => (window as any).__sent.filter((m: { type: string }) => m.type === 'reject' || m.type === 'accept').map((m: { type: string; reason?: string }) => `${m.type}:${m.reason}`)), ['reject:busy']);
  // The only tab: the caller hears busy at once (not after the ringing timeout).
  await until(() => cdrLines().length > before, 'the refused call\'s CDR line', 5000);
  assert.equal(cdrLines().at(-1)!.sipStatus, 486);
});

test('a call that ends while the browser is still asking for the microphone releases it once given (outbound and incoming)', async () => {
  const page = await sdkPage({ sub: 'slow-prompt' });
  // Outbound: hung up during the prompt.
  await page.evaluate(() => {
    const w = window as any;
    w.__micGate = new Promise((r) => { w.__openMic = r; });
    w.call = w.client.call('1000');
  });
  await page.waitForFunction(() => (window as any).__gum === 1);
  await page.evaluate(() => { const w = window as any; w.call.hangup(); w.__openMic(); });
  await page.waitForFunction(() => (window as any).__streams.length === 1);
  await until(async () => (await liveMicTracks(page)) === 0, 'the outbound call\'s microphone stopped', 2000);
  assert.equal(await page.evaluate(() => (window as any).__sent.some((m: { type: string }) => m.type === 'call')), false, 'no request for a call already over');

  // Incoming: the user answers, then hangs up before allowing the microphone.
  await ringPage(page);
  const accepted = page.evaluate(() => {
    const w = window as any;
    w.__micGate = new Promise((r) => { w.__openMic = r; });
    return w.incoming.accept().then(() => 'resolved', (e: Error) => `rejected: ${e.message}`);
  });
  await page.waitForFunction(() => (window as any).__gum === 2);
  await page.evaluate(() => { const w = window as any; w.incoming.hangup(); w.__openMic(); });
  assert.equal(await accepted, 'resolved', 'accept() settles quietly for a call that ended meanwhile');
  await page.waitForFunction(() => (window as any).__streams.length === 2);
  await until(async () => (await liveMicTracks(page)) === 0, 'the incoming call\'s microphone stopped', 2000);
  assert.equal(await page.evaluate(() => (window as any).__sent.some((m: { type: string }) => m.type === 'accept')), false);
  await until(() => rig.gw.gateway.activeCalls === 0, 'the refused incoming call over');
});
