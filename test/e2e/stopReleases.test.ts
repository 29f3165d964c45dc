/**
 * Gateway.stop() with a call up, in this process: every socket it bound is closed. (A test on a
 * gateway process cannot show this: the kernel closes a dead process's sockets whatever it did.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { createServer } from 'node:net';
import type WebSocket from 'ws';
import { startGateway } from '../support/gateway';
import { browserPeers, openTab, until } from '../support/tabs';

const BASE = 23000; // 23000-23299: HTTP, SIP, demo; media 23100-23199; WebRTC 23200-23299
const SECRET = 'stop-releases-secret-0123456789abcdef';
const browsers = browserPeers();

function bindable(port: number, kind: 'tcp' | 'udp'): Promise<boolean> {
  return new Promise((resolve) => {
    if (kind === 'tcp') {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    } else {
      const s = dgram.createSocket('udp4');
      s.once('error', () => resolve(false));
      s.bind(port, '127.0.0.1', () => s.close(() => resolve(true)));
    }
  });
}

async function busyPorts(from: number, to: number): Promise<number[]> {
  const busy: number[] = [];
  for (let p = from; p <= to; p++) if (!(await bindable(p, 'udp'))) busy.push(p);
  return busy;
}

test('stop() with an answered call up closes every socket: HTTP, SIP, the demo endpoint, the call\'s RTP pair and its ICE port', async () => {
  const gw = await startGateway(BASE, { auth: { mode: 'token', hs256Secret: SECRET }, demo: { enabled: true, sipPort: BASE + 2 }, webrtc: { portRange: [BASE + 200, BASE + 299], connectTimeoutSec: 60 } });
  const sockets: WebSocket[] = [];
  let stopped = false;
  try {
    const tab = await openTab(BASE, 'alice', SECRET, sockets);
    tab.ws.send(JSON.stringify({ type: 'call', to: '1000', ref: 'stop', sdp: await browsers.offer() }));
    await until(() => tab.messages.some((m) => m.type === 'answered' || m.type === 'ended' || m.type === 'error'), 'the demo endpoint\'s answer');
    assert.ok(tab.messages.some((m) => m.type === 'answered'), JSON.stringify(tab.messages));
    // The probe sees what is held: HTTP, SIP and the demo endpoint's port, the gateway's RTP pair
    // toward the demo endpoint, and the browser leg's ICE port.
    assert.equal(await bindable(BASE, 'tcp'), false);
    assert.equal(await bindable(BASE + 1, 'udp'), false);
    assert.equal(await bindable(BASE + 2, 'udp'), false);
    const mediaBusy = await busyPorts(BASE + 100, BASE + 199);
    assert.ok(mediaBusy.length >= 2, `RTP and RTCP of the call's SIP leg bound: ${mediaBusy}`);
    assert.equal((await busyPorts(BASE + 200, BASE + 299)).length, 1, 'the ICE port of the browser leg');

    await gw.stop();
    stopped = true;
    for (const ws of sockets) ws.terminate();
    assert.equal(await bindable(BASE, 'tcp'), true, 'HTTP released');
    assert.equal(await bindable(BASE + 1, 'udp'), true, 'SIP released');
    assert.equal(await bindable(BASE + 2, 'udp'), true, 'demo endpoint released');
    assert.deepEqual(await busyPorts(BASE + 100, BASE + 199), [], 'no RTP/RTCP socket left');
    assert.deepEqual(await busyPorts(BASE + 200, BASE + 299), [], 'no ICE socket left');
  } finally {
    for (const ws of sockets) ws.terminate();
    if (!stopped) await gw.stop();
  }
});

test('a start that fails on a port in use (HTTP, bound last) closes what it had bound: SIP and the demo endpoint', async () => {
  const base = BASE + 10; // 23010-23012
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(base, '127.0.0.1', () => r()));
  try {
    await assert.rejects(startGateway(base, { demo: { enabled: true, sipPort: base + 2 }, media: { portRange: [BASE + 100, BASE + 199] }, webrtc: { portRange: [BASE + 200, BASE + 299] } }), /EADDRINUSE/);
    assert.equal(await bindable(base + 1, 'udp'), true, 'SIP released');
    assert.equal(await bindable(base + 2, 'udp'), true, 'demo endpoint released');
  } finally {
    blocker.close();
  }
});
