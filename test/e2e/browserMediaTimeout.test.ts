/**
 * An answered call whose browser sends nothing (its UDP path died; ICE-lite does no consent
 * checks) ends as media-timeout after media.inactivityTimeoutSec, while the SIP side keeps
 * sending (the demo tone, 1001): it is the browser side's silence that ends it.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type WebSocket from 'ws';
import type { RTCPeerConnection } from 'werift';
import { heldResources, startGateway } from '../support/gateway';
import { browserOffer, openTab, until } from '../support/tabs';
import { startStunResponder } from '../../bench/stunResponder';

const BASE = 23620; // 23620-23919: HTTP, SIP, demo; media 23720-23819; WebRTC 23820-23919
const SECRET = 'browser-media-timeout-secret-0123456789';
const stun = startStunResponder();
const peers: RTCPeerConnection[] = [];
after(async () => {
  await Promise.all(peers.map((pc) => pc.close().catch(() => undefined)));
  (await stun).close();
});

test('no RTP or RTCP from the browser of an answered call for inactivityTimeoutSec: ended media-timeout, CDR written, nothing held', async () => {
  const gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: true, sipPort: BASE + 2 },
    media: { portRange: [BASE + 100, BASE + 199], inactivityTimeoutSec: 2 },
    webrtc: { portRange: [BASE + 200, BASE + 299], connectTimeoutSec: 60 },
  });
  const sockets: WebSocket[] = [];
  try {
    const tab = await openTab(BASE, 'quiet', SECRET, sockets);
    // An offer from a peer that never connects: nothing reaches the gateway from it.
    tab.ws.send(JSON.stringify({ type: 'call', to: '1001', ref: 'quiet', sdp: await browserOffer((await stun).port, peers) }));
    await until(() => tab.messages.some((m) => m.type === 'answered'), 'the demo tone answered');
    const answeredAt = Date.now();
    await until(() => tab.messages.some((m) => m.type === 'ended'), 'the call ended', 15000);
    const ended = tab.messages.find((m) => m.type === 'ended')!;
    assert.equal(ended.cause, 'media-timeout');
    const after = Date.now() - answeredAt;
    assert.ok(after >= 1900 && after < 8000, `ended ${after} ms after the answer`);
    const cdr = JSON.parse(readFileSync(gw.cdrPath, 'utf8').trim().split('\n').pop()!);
    assert.equal(cdr.cause, 'media-timeout');
    await until(() => JSON.stringify(heldResources(gw.gateway)) === JSON.stringify({ legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 }), 'released');
  } finally {
    for (const ws of sockets) ws.terminate();
    await gw.stop();
  }
});
