import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import type { Page } from 'playwright-core';
import { launchChromium } from '../peers/chromium';
import { startGateway } from '../support/gateway';
import { writeToneWav } from '../support/audio';
import { remotePeakHz, closePages } from '../support/page';
import { mintToken } from '../../src/edge';
import { tempDir } from '../support/tempDir';

/**
 * The embeddable widget on a customer site: the site (one origin) serves its page and mints
 * tokens; the gateway (another origin) serves widget.js and takes the call. The token fixes the
 * destination (the demo echo test, 1000); forged, expired and wrong-origin attempts are refused.
 */
const BASE = 18700;
const SECRET = 'widget-test-secret-0123456789abcdef';
const gwOrigin = `http://127.0.0.1:${BASE}`;
const siteOrigin = `http://127.0.0.1:${BASE + 50}`;
const strangerOrigin = `http://127.0.0.1:${BASE + 51}`;
const work = tempDir('gw-widget-');
let gw: Awaited<ReturnType<typeof startGateway>>;
let browser: Awaited<ReturnType<typeof launchChromium>>;
const sites: Server[] = [];
/** Every token the sites handed out: none may appear in the gateway's logs. */
const issued: string[] = [];
/** Token requests the sites never answer (`/token-hang`), ended after the tests. */
const hanging: ServerResponse[] = [];

/** A customer site: a page with hostile CSS embedding the widget, and a token endpoint. */
function startSite(port: number): Promise<Server> {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/') {
      const tokenUrl = url.searchParams.get('token') ?? '/token';
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<!doctype html><html><head><style>
        * { font-size: 40px !important; color: red !important; }
        button { display: none !important; }
        </style></head><body><h1>Shop</h1><button id="host-button">host</button>
        <script src="${gwOrigin}/widget.js" data-token-url="${tokenUrl}" data-label="Call us" async></script></body></html>`);
      return;
    }
    // A site backend that hangs: the widget must give up on it.
    if (url.pathname === '/token-hang') { hanging.push(res); return; }
    const now = Math.floor(Date.now() / 1000);
    let token: string | null = null;
    if (url.pathname === '/token') token = await mintToken({ sub: 'visitor-1', dest: ['1000'], origins: [siteOrigin] }, { hs256Secret: SECRET }, { ttlSec: 120 });
    if (url.pathname === '/token-expired') token = await new SignJWT({ dest: ['1000'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('visitor-2').setIssuedAt(now - 600).setExpirationTime(now - 300).sign(new TextEncoder().encode(SECRET));
    // A pattern, not one number: the widget's call (which names none) cannot be placed.
    if (url.pathname === '/token-no-fixed-dest') token = await mintToken({ sub: 'visitor-4', dest: ['100*'], origins: [siteOrigin] }, { hs256Secret: SECRET }, { ttlSec: 120 });
    // One call at a time for this visitor (two pages of the site share the identity).
    if (url.pathname === '/token-one-line') token = await mintToken({ sub: 'visitor-5', dest: ['1000'], origins: [siteOrigin], maxCalls: 1 }, { hs256Secret: SECRET }, { ttlSec: 120 });
    if (url.pathname === '/token-forged') token = await mintToken({ sub: 'visitor-3', dest: ['1000'] }, { hs256Secret: 'someone-elses-secret-0123456789abcdef' }, { ttlSec: 120 });
    if (!token) { res.writeHead(404).end(); return; }
    issued.push(token);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token }));
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => { sites.push(server); resolve(server); }));
}

before(async () => {
  const micWav = join(work, 'mic-700hz.wav');
  writeToneWav(micWav, { hz: 700, sampleRate: 48000, seconds: 30 });
  gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: true, sipPort: BASE + 2 },
    edge: { allowedOrigins: [siteOrigin] },
  }, { captureLogs: true });
  await startSite(BASE + 50);
  await startSite(BASE + 51);
  browser = await launchChromium({ fakeMicWav: micWav });
});

afterEach(() => closePages(browser));
after(async () => {
  for (const res of hanging) res.destroy();
  await browser?.close();
  await gw?.stop();
  for (const s of sites) s.close();
});

async function openSite(origin: string, tokenPath = '/token'): Promise<Page> {
  const page = await browser.newPage();
  await page.goto(`${origin}/?token=${encodeURIComponent(tokenPath)}`);
  await page.getByTestId('widget-call').waitFor({ timeout: 10000 });
  return page;
}

test('a page on another origin embeds the widget, calls the token\'s destination and hears audio', async () => {
  const page = await openSite(siteOrigin);
  // The host page's CSS does not reach inside (its `button { display: none }` would hide ours)…
  assert.equal(await page.getByTestId('widget-call').isVisible(), true);
  assert.equal(await page.locator('#host-button').isVisible(), false);
  // …and ours does not leak out.
  assert.equal(await page.locator('h1').evaluate((h) => getComputedStyle(h).fontFamily.includes('system-ui')), false);
  assert.equal(await page.getByTestId('widget-call').getAttribute('aria-label'), 'Call us');

  await page.getByTestId('widget-call').click();
  await page.getByTestId('widget-status').filter({ hasText: 'Connected' }).waitFor({ timeout: 15000 });
  // The echo test sends the page's own 700 Hz microphone back.
  const heard = await remotePeakHz(page, 1500, 'widget');
  assert.ok(Math.abs(heard.peakHz - 700) < 30, `the widget hears the echo: ${heard.peakHz} Hz`);
  await page.getByTestId('widget-timer').filter({ hasText: /^0:0[1-9]$/ }).waitFor({ timeout: 5000 });

  await page.getByTestId('widget-mute').click();
  assert.equal(await page.getByTestId('widget-mute').getAttribute('aria-pressed'), 'true');
  await page.getByTestId('widget-keypad-toggle').click();
  assert.equal(await page.getByTestId('widget-key-5').isVisible(), true);

  await page.getByTestId('widget-hangup').click();
  await page.getByTestId('widget-message').filter({ hasText: 'Call ended' }).waitFor({ timeout: 5000 });
  assert.equal(await page.getByTestId('widget-call').isVisible(), true, 'the call button is back');
  await page.close();
  // The gateway recorded exactly that call, to the token's destination.
  const { readFileSync } = await import('node:fs');
  const cdrs = readFileSync(gw.cdrPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(cdrs.length, 1);
  assert.equal(cdrs[0].to, '1000');
  assert.equal(cdrs[0].cause, 'local-hangup', JSON.stringify(cdrs[0]));
});

for (const [name, path, expected] of [
  ['an expired token', '/token-expired', 'open too long'],
  ['a forged token', '/token-forged', 'unavailable'],
] as const) {
  test(`${name} is refused with a friendly message and no call`, async () => {
    const logsBefore = gw.logs.length;
    const page = await openSite(siteOrigin, path);
    await page.getByTestId('widget-call').click();
    await page.getByTestId('widget-message').filter({ hasText: expected }).waitFor({ timeout: 10000 });
    assert.equal(gw.gateway.activeCalls, 0);
    // Logged once, with the reason and without the token.
    const refusals = gw.logs.slice(logsBefore).filter((l) => l.msg === 'hello refused');
    assert.equal(refusals.length, 1, JSON.stringify(refusals));
    assert.equal(refusals[0].code, path === '/token-expired' ? 'token-expired' : 'token-invalid');
    await page.close();
  });
}

test('a site whose origin is not allowed cannot open the signaling socket', async () => {
  const page = await openSite(strangerOrigin);
  await page.getByTestId('widget-call').click();
  await page.getByTestId('widget-message').filter({ hasText: 'unavailable' }).waitFor({ timeout: 10000 });
  // The refusal happened at the WebSocket upgrade (HTTP 403), before any hello.
  const status = await new Promise<number>((resolve, reject) => {
    const req = request(`${gwOrigin}/ws`, { headers: { Origin: strangerOrigin, Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' } });
    req.on('response', (res) => { res.resume(); resolve(res.statusCode ?? 0); });
    req.on('upgrade', () => resolve(101));
    req.on('error', reject);
    req.end();
  });
  assert.equal(status, 403);
  await page.close();
});

test('a denied microphone is explained, not only logged', async () => {
  const page = await browser.newPage();
  await page.addInitScript(() => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('denied', 'NotAllowedError'));
  });
  await page.goto(`${siteOrigin}/`);
  await page.getByTestId('widget-call').click();
  await page.getByTestId('widget-message').filter({ hasText: 'Microphone access was blocked' }).waitFor({ timeout: 10000 });
  await page.close();
});

test('a token endpoint that never answers is given up after 10 s with a clear message, and the button works again', async () => {
  const page = await openSite(siteOrigin, '/token-hang');
  const t0 = Date.now();
  await page.getByTestId('widget-call').click();
  await page.getByTestId('widget-message').filter({ hasText: 'Connecting' }).waitFor({ timeout: 5000 });
  await page.getByTestId('widget-message').filter({ hasText: 'did not respond' }).waitFor({ timeout: 15000 });
  assert.ok(Date.now() - t0 >= 9000, `gave up after ${Date.now() - t0} ms`);
  assert.equal(await page.getByTestId('widget-call').isEnabled(), true, 'the call button can be pressed again');
  assert.equal(gw.gateway.activeCalls, 0);
  await page.close();
});

test('a call the gateway refuses outright (here: the token names no single number) ends the widget\'s call with a message, not an endless "Calling…"', async () => {
  const page = await openSite(siteOrigin, '/token-no-fixed-dest');
  await page.getByTestId('widget-call').click();
  await page.getByTestId('widget-message').filter({ hasText: 'unavailable' }).waitFor({ timeout: 10000 });
  assert.equal(await page.getByTestId('widget-call').isVisible(), true, 'the call button is back');
  assert.equal(await page.locator('gateway-call-widget').getAttribute('data-last-cause'), 'failed');
  assert.equal(await page.evaluate(() => (document.querySelector('gateway-call-widget') as unknown as { currentCall: unknown }).currentCall), null);
  await page.close();
});

test('a call refused for a limit (one line, in use) says so in plain words', async () => {
  const first = await openSite(siteOrigin, '/token-one-line');
  await first.getByTestId('widget-call').click();
  await first.getByTestId('widget-status').filter({ hasText: 'Connected' }).waitFor({ timeout: 15000 });
  const second = await openSite(siteOrigin, '/token-one-line');
  await second.getByTestId('widget-call').click();
  await second.getByTestId('widget-message').filter({ hasText: 'All lines are busy' }).waitFor({ timeout: 10000 });
  assert.equal(await second.getByTestId('widget-call').isVisible(), true, 'the call button is back');
  assert.equal(await first.getByTestId('widget-status').textContent(), 'Connected', 'the call in the other page goes on');
  await first.getByTestId('widget-hangup').click();
  await first.getByTestId('widget-message').filter({ hasText: 'Call ended' }).waitFor({ timeout: 5000 });
});

test('the connection drops mid-call: the widget says "Reconnecting…" while it is away, then "Connected" again on the same call, the echo still heard', async () => {
  const page = await browser.newPage();
  // While __blockWs is set, new sockets go where nothing listens (the network is still away).
  await page.addInitScript((dead) => {
    const w = window as any;
    const Native = WebSocket;
    w.__blockWs = false;
    w.WebSocket = class extends Native {
      constructor(url: string | URL, protocols?: string | string[]) { super(w.__blockWs ? dead : url, protocols); }
    };
  }, `ws://127.0.0.1:${BASE + 99}/ws`);
  await page.goto(`${siteOrigin}/?token=${encodeURIComponent('/token')}`);
  await page.getByTestId('widget-call').click();
  await page.getByTestId('widget-status').filter({ hasText: 'Connected' }).waitFor({ timeout: 15000 });
  const cdrsBefore = (await import('node:fs')).readFileSync(gw.cdrPath, 'utf8').trim().split('\n').filter(Boolean).length;
  await page.evaluate(() => { (window as any).__blockWs = true; });
  const wss = (gw.gateway['signaling'] as unknown as { wss: { clients: Set<{ terminate(): void }> } }).wss;
  for (const client of wss.clients) client.terminate(); // the network goes: 1006 at both ends
  await page.getByTestId('widget-status').filter({ hasText: 'Reconnecting…' }).waitFor({ timeout: 5000 });
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(await page.getByTestId('widget-status').textContent(), 'Reconnecting…', 'still away');
  await page.evaluate(() => { (window as any).__blockWs = false; });
  await page.getByTestId('widget-status').filter({ hasText: 'Connected' }).waitFor({ timeout: 10000 });
  const heard = await remotePeakHz(page, 1500, 'widget');
  assert.ok(Math.abs(heard.peakHz - 700) < 30, `the echo after reconnecting: ${heard.peakHz} Hz`);
  assert.equal(gw.gateway.activeCalls, 1, 'the same call, not a new one');
  await page.getByTestId('widget-hangup').click();
  await page.getByTestId('widget-message').filter({ hasText: 'Call ended' }).waitFor({ timeout: 5000 });
  const cdrs = (await import('node:fs')).readFileSync(gw.cdrPath, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.equal(cdrs.length, cdrsBefore + 1);
  assert.equal(cdrs.at(-1).cause, 'local-hangup');
});

test('no token handed out by the sites ever reached the gateway logs', () => {
  assert.ok(issued.length >= 3);
  const text = JSON.stringify(gw.logs);
  for (const t of issued) {
    assert.ok(!text.includes(t), 'a whole token was logged');
    assert.ok(!text.includes(t.split('.')[2]), 'a token signature was logged');
  }
});
