import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { openPhone as openPhoneAt, remotePeakHz, closePages } from '../support/page';
import { startDemoRig, type DemoRig } from '../support/demoRig';
import { until } from '../support/tabs';
import { heldResources } from '../support/gateway';

let rig: DemoRig;
let gw: DemoRig['gw'];
let browser: DemoRig['browser'];

before(async () => {
  // A dropped tab's calls wait 2 s for it to come back (20 s by default).
  rig = await startDemoRig(18100, { limits: { wsResumeGraceSec: 2 } } as Parameters<typeof startDemoRig>[1]);
  ({ gw, browser } = rig);
});

afterEach(() => closePages(rig?.browser));
after(() => rig?.stop());

const openPhone = () => openPhoneAt(browser, gw.url);
const cdrLines = () => readFileSync(gw.cdrPath, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));

/** A page that called `number` and got it answered. */
async function answeredCall(number: string): Promise<Awaited<ReturnType<typeof openPhone>>> {
  const page = await openPhone();
  await page.getByTestId('dial-input').fill(number);
  await page.getByTestId('call-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 10000 });
  return page;
}

test('call 1000 (echo): ringing, answered, and the browser hears its own 700 Hz tone back', async () => {
  const page = await openPhone();
  await page.getByTestId('dial-input').fill('1000');
  await page.getByTestId('call-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'ringing' }).waitFor({ timeout: 10000 });
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 10000 });
  const heard = await remotePeakHz(page);
  assert.ok(Math.abs(heard.peakHz - 700) < 30, `echo peak ${heard.peakHz} Hz (${heard.peakDb} dB)`);
  await page.getByTestId('hangup-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'ended' }).waitFor({ timeout: 5000 });
  await page.close();
  // The call's media figures reach /metrics (per-leg loss and jitter histograms) once the media
  // plane gave them back (a message round trip later when it runs in worker threads).
  await until(async () => /^gateway_leg_packet_loss_ratio_count\{leg="browser"\} 1$/m.test(await (await fetch(`${gw.url}/metrics`)).text()), 'loss ratio observed for the call');
});

test('the browser sends narrowband Opus when the call can only go on as G.711 (our maxplaybackrate=8000)', async () => {
  const page = await openPhone();
  await page.getByTestId('dial-input').fill('1000');
  await page.getByTestId('call-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 10000 });
  // The call's browser leg, as the gateway's bridge sees it: collect the Opus TOC bytes.
  const calls = [...(gw.gateway['manager'] as unknown as { calls: Map<string, { browser: { onRtp(l: (p: { payload: Buffer }) => void): () => void } | null }> }).calls.values()];
  assert.equal(calls.length, 1);
  const tocs: number[] = [];
  const off = calls[0].browser!.onRtp((p) => { if (p.payload.length > 0) tocs.push(p.payload[0]); });
  await until(() => tocs.length >= 40, '40 packets from the browser');
  off();
  // RFC 6716 §3.1: configurations 0-3 are SILK narrowband, 16-19 CELT narrowband.
  const wide = tocs.map((t) => t >> 3).filter((c) => !(c <= 3 || (c >= 16 && c <= 19)));
  assert.equal(wide.length, 0, `configurations above narrowband: ${[...new Set(wide)].join(', ')}`);
  await page.getByTestId('hangup-button').click();
  await page.close();
});

test('call 1001 (tone): the browser hears 440 Hz from the SIP side', async () => {
  const page = await openPhone();
  await page.getByTestId('dial-input').fill('1001');
  await page.getByTestId('call-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 10000 });
  const heard = await remotePeakHz(page);
  assert.ok(Math.abs(heard.peakHz - 440) < 30, `tone peak ${heard.peakHz} Hz`);
  await page.getByTestId('hangup-button').click();
  await page.close();
});

test('call 1002: ended with cause busy (SIP 486)', async () => {
  const page = await openPhone();
  await page.getByTestId('dial-input').fill('1002');
  await page.getByTestId('call-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'ended (busy 486)' }).waitFor({ timeout: 10000 });
  await page.close();
});

test('a number outside the dial plan ends as forbidden before any SIP is sent', async () => {
  const page = await openPhone();
  await page.getByTestId('dial-input').fill('+19005551234');
  await page.getByTestId('call-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'ended (forbidden)' }).waitFor({ timeout: 10000 });
  await page.close();
});

test('"call me back": the page rings, is answered there, and hears the demo tone; its CDR is written and nothing is left held', async () => {
  const before = cdrLines().length;
  const page = await openPhone();
  await page.getByTestId('callback-button').click();
  await page.getByTestId('incoming-accept').waitFor({ state: 'visible', timeout: 10000 });
  await page.getByTestId('incoming-accept').click();
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 10000 });
  const heard = await remotePeakHz(page);
  assert.ok(Math.abs(heard.peakHz - 440) < 30, `callback tone peak ${heard.peakHz} Hz`);
  await page.getByTestId('hangup-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'ended' }).waitFor({ timeout: 5000 });
  await page.close();
  // This call's CDR, once, and everything it held back (media legs, bridges, RTP and ICE ports).
  await until(() => cdrLines().length > before, 'the callback\'s CDR line');
  await new Promise((r) => setTimeout(r, 300));
  const added = cdrLines().slice(before);
  assert.equal(added.length, 1, JSON.stringify(added));
  assert.equal(added[0].direction, 'inbound');
  assert.ok(added[0].answerTime && added[0].endTime, JSON.stringify(added[0]));
  assert.equal(gw.gateway.activeCalls, 0);
  await until(() => JSON.stringify(heldResources(gw.gateway)) === JSON.stringify({ legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 }), `nothing held: ${JSON.stringify(heldResources(gw.gateway))}`);
});

test('the connection to a tab drops mid-call (no close frame) and the tab cannot reconnect: after the resume grace time the page shows ended (connection-lost), so does the CDR, and nothing is held', async () => {
  const before = cdrLines().length;
  const page = await answeredCall('1001');
  // The page's network lets no new connection through (its SDK tries to resume the call)...
  await page.routeWebSocket(/\/ws$/, (ws) => ws.close({ code: 1011 }));
  // ...and the gateway drops the TCP connection as its heartbeat does (terminate: no close
  // frame), so both ends see 1006, as when a network goes away.
  const wss = (gw.gateway['signaling'] as unknown as { wss: { clients: Set<{ terminate(): void }> } }).wss;
  for (const client of wss.clients) client.terminate();
  await page.getByTestId('call-status').filter({ hasText: 'ended (connection-lost)' }).waitFor({ timeout: 8000 });
  await page.close();
  await until(() => cdrLines().length > before, 'the call\'s CDR line');
  assert.equal(cdrLines().at(-1).cause, 'connection-lost');
  await until(() => JSON.stringify(heldResources(gw.gateway)) === JSON.stringify({ legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 }), `nothing held: ${JSON.stringify(heldResources(gw.gateway))}`);
});

test('the page closes its connection mid-call (client.close()): its call ends as its own hang-up on both sides', async () => {
  const before = cdrLines().length;
  const page = await answeredCall('1001');
  await page.evaluate(() => (window as unknown as { __gw: { client: { close(): void } } }).__gw.client.close());
  await page.getByTestId('call-status').filter({ hasText: 'ended (local-hangup)' }).waitFor({ timeout: 5000 });
  await page.close();
  await until(() => cdrLines().length > before, 'the call\'s CDR line');
  assert.equal(cdrLines().at(-1).cause, 'local-hangup');
});

test('widget-demo.html: the widget works in demo mode out of the box and calls the echo test', async () => {
  const page = await browser.newPage();
  await page.goto(`${gw.url}/widget-demo.html`);
  await page.getByTestId('widget-call').click();
  await page.getByTestId('widget-status').filter({ hasText: 'Connected' }).waitFor({ timeout: 15000 });
  const heard = await remotePeakHz(page, 1500, 'widget');
  assert.ok(Math.abs(heard.peakHz - 700) < 30, `the demo widget hears the echo: ${heard.peakHz} Hz`);
  await page.getByTestId('widget-hangup').click();
  await page.getByTestId('widget-message').filter({ hasText: 'Call ended' }).waitFor({ timeout: 5000 });
  await page.close();
});
