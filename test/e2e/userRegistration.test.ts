import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import WebSocket from 'ws';
import { SipUserAgent, type SipResponse } from '../../src/sip';
import { mintToken } from '../../src/edge';
import { startKamailio, type Kamailio } from '../peers/kamailio';
import { startGateway } from '../support/gateway';

/**
 * Browser users reachable through an upstream registrar: while alice has a tab open the gateway
 * keeps sip:alice@… REGISTERed at Kamailio (digest), so a call to alice routed by Kamailio rings
 * her tab; when the tab closes the registration goes away.
 */
const BASE = 19400;
const SECRET = 'user-registration-test-secret-0123456789';
let kam: Kamailio;
let gw: Awaited<ReturnType<typeof startGateway>>;
let caller: SipUserAgent;
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';

before(async () => {
  kam = await startKamailio({ port: BASE + 70, users: { alice: 'users-pw-123', bob: 'users-pw-123' } });
  gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: false },
    trunk: { uri: `sip:127.0.0.1:${BASE + 70}`, sourceCidrs: ['127.0.0.1/32'] },
    inbound: { registerUsers: { registrar: `sip:127.0.0.1:${BASE + 70}`, domain: '127.0.0.1', expiresSec: 60, password: 'users-pw-123' } },
  });
  caller = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: BASE + 74 }], logger: pino({ level: 'silent' }) });
  await caller.start();
});

after(async () => {
  await caller?.stop();
  await gw?.stop();
  await kam?.stop();
});

async function waitFor(check: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a tab for alice registers her at Kamailio; a call to alice through Kamailio rings the tab; closing it unregisters', async () => {
  const token = await mintToken({ sub: 'alice' }, { hs256Secret: SECRET }, { ttlSec: 60 });
  const ws = new WebSocket(`ws://127.0.0.1:${BASE}/ws`, { headers: { Origin: `http://127.0.0.1:${BASE}` } });
  const messages: Array<Record<string, any>> = [];
  ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ type: 'hello', version: 1, token }));
  await waitFor(() => messages.some((m) => m.type === 'welcome'), 5000, 'welcome');

  await waitFor(() => /AoR: alice/.test(kam.registrations()), 5000, 'alice registered at Kamailio');
  assert.match(kam.registrations(), new RegExp(`sip:alice@127\\.0\\.0\\.1:${BASE + 1}`), 'the contact is the gateway');

  const inv = caller.invite({ requestUri: `sip:alice@127.0.0.1:${BASE + 70}`, from: { uri: 'sip:+15550001111@127.0.0.1', displayName: 'Caller' }, sdp: SDP });
  const final = new Promise<SipResponse>((resolve) => inv.once('rejected', resolve));
  await waitFor(() => messages.some((m) => m.type === 'incoming'), 5000, 'the tab rings');
  const incoming = messages.find((m) => m.type === 'incoming')!;
  assert.equal(incoming.from, '+15550001111');
  ws.send(JSON.stringify({ type: 'reject', callId: incoming.callId, reason: 'busy' }));
  assert.equal((await final).status, 486, 'the caller hears busy through Kamailio');

  ws.close();
  // Kept for a few seconds (a page reload opens a new tab at once), then unregistered.
  await waitFor(() => !/AoR: alice/.test(kam.registrations()), 10_000, 'alice unregistered when her last tab closed');
});
