/**
 * What the WebSocket endpoint does with clients that misbehave or vanish: no hello in time,
 * hellos refused again and again, a flood of frames, a tab that stops answering pings (a
 * laptop gone to sleep sends no FIN) with a call up.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { heldResources, startGateway } from '../support/gateway';
import { browserPeers, openTab, until, type Msg } from '../support/tabs';

const BASE = 23300; // 23300-23599
const SECRET = 'websocket-limits-secret-0123456789abcdef';
const browsers = browserPeers();

async function connect(): Promise<{ ws: WebSocket; messages: Msg[]; closed: Promise<number> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${BASE}/ws`, { headers: { Origin: `http://127.0.0.1:${BASE}` } });
  const messages: Msg[] = [];
  ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
  const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  return { ws, messages, closed };
}

test('WebSocket limits: no hello in time, refused hellos again and again, a flood, a tab that stops answering pings with a call up', async () => {
  const gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: true, sipPort: BASE + 2 },
    limits: { wsHeartbeatSec: 1, wsHelloTimeoutSec: 1, wsMessagesPerSec: 20, wsResumeGraceSec: 1 },
    webrtc: { portRange: [BASE + 200, BASE + 299], connectTimeoutSec: 60 },
  });
  const sockets: WebSocket[] = [];
  try {
    // 1. Silent after connecting: closed 4408 once the hello deadline passes.
    const silent = await connect();
    sockets.push(silent.ws);
    const t0 = Date.now();
    assert.equal(await silent.closed, 4408);
    assert.ok(Date.now() - t0 >= 900, 'not before the deadline');

    // 2. A bad token five times: closed 4401 (each refusal answered first).
    const looping = await connect();
    sockets.push(looping.ws);
    for (let i = 1; i <= 5; i++) {
      looping.ws.send(JSON.stringify({ type: 'hello', version: 1, token: 'not.a.token' }));
      await until(() => looping.messages.length === i, `refusal ${i}`);
    }
    assert.equal(await looping.closed, 4401);
    assert.equal(looping.messages.filter((m) => m.type === 'error').length, 5);

    // 3. A flood: one warning, then closed 1008, nothing more handled.
    const flood = await connect();
    sockets.push(flood.ws);
    for (let i = 0; i < 200; i++) flood.ws.send(JSON.stringify({ type: 'ping' }));
    assert.equal(await flood.closed, 1008);
    assert.equal(flood.messages.filter((m) => m.type === 'error' && m.code === 'rate-limited').length, 1);
    assert.ok(flood.messages.filter((m) => m.type === 'pong').length <= 20, 'frames past the limit were not handled');

    // 4. A tab with a call up stops answering pings: terminated within two beats, its call ended
    // once the resume grace time (1 s here) has passed without the tab coming back.
    const tab = await openTab(BASE, 'alice', SECRET, sockets);
    tab.ws.send(JSON.stringify({ type: 'call', to: '1000', ref: 'asleep', sdp: await browsers.offer() }));
    await until(() => tab.messages.some((m) => m.type === 'answered'), 'the demo endpoint answered');
    assert.equal(gw.gateway.activeCalls, 1);
    const signaling = () => (gw.gateway as unknown as { signaling: { connectionCount: number } }).signaling.connectionCount;
    const open = signaling();
    (tab.ws as unknown as { _socket: { pause(): void } })._socket.pause(); // reads nothing, answers no ping
    await until(() => signaling() === open - 1, 'the gateway dropped the silent tab', 5000);
    await until(() => gw.gateway.activeCalls === 0, 'the call of the vanished tab ended');
    await until(() => JSON.stringify(heldResources(gw.gateway)) === JSON.stringify({ legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 }), 'its media released');
    // The CDR line is written once the call's media is released: wait for it, not for activeCalls.
    const cdrs = () => readFileSync(gw.cdrPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { cause: string });
    await until(() => cdrs().length === 1, 'the vanished tab\'s CDR line');
    assert.equal(cdrs()[0].cause, 'connection-lost', 'a tab gone without a close frame: its call is recorded as a lost connection');

    // A live tab answers pings by itself and stays; when it closes properly (tab closed), its
    // call ends as its own hang-up.
    const live = await openTab(BASE, 'bob', SECRET, sockets);
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(live.ws.readyState, WebSocket.OPEN);
    live.ws.send(JSON.stringify({ type: 'call', to: '1000', ref: 'closing', sdp: await browsers.offer() }));
    await until(() => live.messages.some((m) => m.type === 'answered'), 'the demo endpoint answered bob');
    live.ws.close(1001);
    await until(() => cdrs().length === 2, 'the closed tab\'s CDR line');
    assert.equal(cdrs()[1].cause, 'local-hangup');
  } finally {
    for (const ws of sockets) ws.terminate();
    await gw.stop();
  }
});
