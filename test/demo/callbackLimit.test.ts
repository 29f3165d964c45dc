/**
 * The demo endpoint's "call me back" (POST /api/demo/callback): one callback per user at a
 * time. A whole gateway in this process with the demo endpoint, a plain WebSocket tab.
 * Ports 26300-26315: http BASE, SIP BASE+1, demo BASE+2, RTP BASE+4..BASE+9, WebRTC BASE+10..BASE+15.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startGateway } from '../support/gateway';
import { openTab, until } from '../support/tabs';

const SECRET = 'demo-callback-limit-secret-0123456789abcd';
const BASE = 26300;

test('call me back: a second request while the first callback rings is refused 429 (one session could ring its tabs up to the gateway\'s call limit); once that call ends, a new one is placed', async (t) => {
  const sockets: WebSocket[] = [];
  const gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: true, sipPort: BASE + 2 },
    media: { host: '127.0.0.1', portRange: [BASE + 4, BASE + 9], inactivityTimeoutSec: 60 },
    webrtc: { portRange: [BASE + 10, BASE + 15], connectTimeoutSec: 60 },
  });
  t.after(async () => { for (const ws of sockets) ws.terminate(); await gw.stop(); });
  const tab = await openTab(BASE, 'carol', SECRET, sockets);
  const sessionId = tab.messages.find((m) => m.type === 'welcome')!.sessionId;
  const ask = () => fetch(`${gw.url}/api/demo/callback`, { method: 'POST', body: JSON.stringify({ sessionId }) });

  assert.equal((await ask()).status, 202);
  await until(() => tab.messages.some((m) => m.type === 'incoming'), 'the callback rings the tab');
  const second = await ask();
  assert.equal(second.status, 429);
  assert.match((await second.json()).error, /already ringing or up/);
  assert.equal(tab.messages.filter((m) => m.type === 'incoming').length, 1, 'rang once');

  const incoming = tab.messages.find((m) => m.type === 'incoming')!;
  tab.ws.send(JSON.stringify({ type: 'reject', callId: incoming.callId, reason: 'declined' }));
  await until(() => gw.gateway.activeCalls === 0, 'the first callback ended');
  let again = 0;
  await until(async () => { again = (await ask()).status; return again !== 429; }, 'a new callback once the first is over');
  assert.equal(again, 202);
  await until(() => tab.messages.filter((m) => m.type === 'incoming').length === 2, 'it rings again');
});
