import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { heldResources, startGateway } from '../support/gateway';
import { until } from '../support/tabs';

/**
 * A browser that offers but never completes ICE/DTLS (blocked UDP, closed laptop): the gateway
 * gives up after webrtc.connectTimeoutSec, ends the call with cause ice-failed, hangs up the SIP
 * side and keeps nothing.
 */
const BASE = 20200;
let gw: Awaited<ReturnType<typeof startGateway>>;

before(async () => {
  gw = await startGateway(BASE, { demo: { enabled: true, sipPort: BASE + 2 }, webrtc: { portRange: [BASE + 200, BASE + 299], connectTimeoutSec: 2 } });
});
after(async () => { await gw?.stop(); });

const fingerprint = Array.from({ length: 32 }, (_, i) => (i * 7 % 256).toString(16).padStart(2, '0').toUpperCase()).join(':');
const OFFER = [
  'v=0', 'o=- 4611731400430051336 2 IN IP4 127.0.0.1', 's=-', 't=0 0', 'a=group:BUNDLE 0', 'a=msid-semantic: WMS',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111 0', 'c=IN IP4 0.0.0.0', 'a=rtcp:9 IN IP4 0.0.0.0',
  'a=ice-ufrag:abcd', 'a=ice-pwd:abcdefghijklmnopqrstuvwx', 'a=ice-options:trickle',
  `a=fingerprint:sha-256 ${fingerprint}`, 'a=setup:actpass', 'a=mid:0', 'a=sendrecv', 'a=rtcp-mux',
  'a=rtpmap:111 opus/48000/2', 'a=fmtp:111 minptime=10;useinbandfec=1', 'a=rtpmap:0 PCMU/8000', '',
].join('\r\n');

test('no ICE/DTLS within connectTimeoutSec: ended ice-failed, SIP side hung up, nothing left', async () => {
  const ws = new WebSocket(`ws://127.0.0.1:${BASE}/ws`, { headers: { Origin: `http://127.0.0.1:${BASE}` } });
  const messages: Array<Record<string, any>> = [];
  ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
  await new Promise((r) => ws.once('open', r));
  const waitFor = async (pred: (m: Record<string, any>) => boolean, ms: number) => {
    const end = Date.now() + ms;
    for (;;) {
      const m = messages.find(pred);
      if (m) return m;
      if (Date.now() > end) throw new Error(`timed out; saw ${messages.map((x) => x.type).join(', ')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  ws.send(JSON.stringify({ type: 'hello', version: 1 }));
  await waitFor((m) => m.type === 'welcome', 5000);
  ws.send(JSON.stringify({ type: 'call', to: '1000', sdp: OFFER }));
  const t0 = Date.now();
  const calling = await waitFor((m) => m.type === 'calling', 5000);
  assert.match(calling.sdp, /a=ice-lite/);
  // The demo endpoint answers at once: it holds a dialog, which our BYE must end.
  const demoDialogs = (): number => (gw.gateway['demo'] as unknown as { dialogs: Set<unknown> }).dialogs.size;
  await until(() => demoDialogs() === 1, 'the demo endpoint\'s dialog for the call');
  const ended = await waitFor((m) => m.type === 'ended', 8000);
  assert.equal(ended.cause, 'ice-failed');
  const took = Date.now() - t0;
  assert.ok(took >= 1800 && took < 6000, `gave up after ${took} ms`);
  await until(() => demoDialogs() === 0, 'the SIP side hung up (the demo endpoint got our BYE)');
  assert.equal(gw.gateway.activeCalls, 0);
  await until(() => JSON.stringify(heldResources(gw.gateway)) === JSON.stringify({ legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 }), 'media legs, bridges, RTP and ICE ports released');
  const cdr = JSON.parse(readFileSync(gw.cdrPath, 'utf8').trim().split('\n').pop()!);
  assert.equal(cdr.cause, 'ice-failed');
  ws.close();
});
