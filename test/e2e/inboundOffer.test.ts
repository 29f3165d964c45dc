import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import WebSocket from 'ws';
import { SipUserAgent, type SipResponse } from '../../src/sip';
import { mintToken } from '../../src/edge';
import { startGateway } from '../support/gateway';

/** Inbound offers the gateway cannot honour are refused with 488 before any tab rings. */
const BASE = 20100;
const SECRET = 'inbound-offer-test-secret-0123456789abcd';
let gw: Awaited<ReturnType<typeof startGateway>>;
let caller: SipUserAgent;
let ws: WebSocket;
const messages: Array<Record<string, any>> = [];

before(async () => {
  gw = await startGateway(BASE, { auth: { mode: 'token', hs256Secret: SECRET }, demo: { enabled: false }, trunk: { uri: `sip:127.0.0.1:${BASE + 60}`, srtp: 'off', codecs: ['PCMU'], sourceCidrs: ['127.0.0.1/32'] } });
  caller = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: BASE + 60 }], logger: pino({ level: 'silent' }) });
  await caller.start();
  ws = new WebSocket(`ws://127.0.0.1:${BASE}/ws`, { headers: { Origin: `http://127.0.0.1:${BASE}` } });
  ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ type: 'hello', version: 1, token: await mintToken({ sub: 'support' }, { hs256Secret: SECRET }, { ttlSec: 60 }) }));
  while (!messages.some((m) => m.type === 'welcome')) await new Promise((r) => setTimeout(r, 20));
});

after(async () => {
  ws?.close();
  await caller?.stop();
  await gw?.stop();
});

function call(sdp: string): Promise<SipResponse> {
  const inv = caller.invite({ requestUri: `sip:support@127.0.0.1:${BASE + 1}`, from: { uri: 'sip:+15550001111@127.0.0.1' }, sdp });
  return new Promise((resolve, reject) => { inv.once('rejected', resolve); inv.once('accepted', () => reject(new Error('accepted'))); });
}

const base = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n';

test('an RTP/SAVP offer while trunk.srtp is off gets 488, and the tab never rings', async () => {
  const res = await call(`${base}m=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n`);
  assert.equal(res.status, 488);
  assert.ok(!messages.some((m) => m.type === 'incoming'));
});

test('an offer with no codec in common gets 488', async () => {
  const res = await call(`${base}m=audio 4000 RTP/AVP 18 9\r\na=rtpmap:18 G729/8000\r\na=rtpmap:9 G722/8000\r\n`);
  assert.equal(res.status, 488);
  assert.ok(!messages.some((m) => m.type === 'incoming'));
  assert.equal(gw.gateway.activeCalls, 0);
});
