/**
 * A media restart (docs/protocol.md, `restart`): a browser whose network path changed offers
 * again from a new peer connection; the gateway answers from a new leg and moves the call's
 * audio there once it connects, closing the old one — the call, its bridge and its SIP side go
 * on. Browsers are werift peer connections, the far end the demo echo (1000).
 *
 * Ports 27200-27499: http BASE, SIP BASE+1, demo BASE+2, media BASE+100..199, WebRTC BASE+200..299.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type WebSocket from 'ws';
import { MediaStreamTrack, RTCPeerConnection, RTCRtpCodecParameters, RtpHeader, RtpPacket } from 'werift';
import { heldResources, startGateway } from '../support/gateway';
import { browserPeers, openTab, until, type Tab } from '../support/tabs';

const BASE = 27200;
const SECRET = 'media-restart-secret-0123456789abcdefgh';
const browsers = browserPeers();
let gw: Awaited<ReturnType<typeof startGateway>>;
const sockets: WebSocket[] = [];

before(async () => {
  gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: true, sipPort: BASE + 2 },
    media: { portRange: [BASE + 100, BASE + 199], inactivityTimeoutSec: 20 },
    webrtc: { portRange: [BASE + 200, BASE + 299], connectTimeoutSec: 2 },
  });
});
after(async () => {
  for (const ws of sockets) ws.terminate();
  await gw.stop();
});

/** A werift peer connection as the browser: its offer, and what it receives. */
async function browser(codec: 'opus' | 'pcmu' = 'opus') {
  const pc = new RTCPeerConnection({
    iceServers: [{ urls: `stun:127.0.0.1:${await browsers.stunPort()}` }],
    iceUseIpv6: false,
    iceInterfaceAddresses: { udp4: '127.0.0.1' },
    codecs: { audio: [codec === 'opus'
      ? new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111 })
      : new RTCRtpCodecParameters({ mimeType: 'audio/PCMU', clockRate: 8000, channels: 1, payloadType: 0 })] },
  });
  browsers.keep(pc);
  const track = new MediaStreamTrack({ kind: 'audio' });
  pc.addTransceiver(track, { direction: 'sendrecv' });
  let received = 0;
  pc.onTrack.subscribe((t) => t.onReceiveRtp.subscribe(() => { received++; }));
  await pc.setLocalDescription(await pc.createOffer());
  await until(() => pc.iceGatheringState === 'complete', 'gathering');
  let seq = 0;
  let timer: NodeJS.Timeout | undefined;
  return {
    pc,
    offer: pc.localDescription!.sdp,
    received: () => received,
    /** Opus silence-ish frames every 20 ms, as a microphone would (the echo sends them back). */
    startSending: () => { timer = setInterval(() => { track.writeRtp(new RtpPacket(new RtpHeader({ payloadType: codec === 'opus' ? 111 : 0, sequenceNumber: seq, timestamp: seq * 960, ssrc: 4242 }), codec === 'opus' ? Buffer.from([0xf8, 0xff, 0xfe]) : Buffer.alloc(160, 0xff))); seq++; }, 20); },
    stopSending: () => clearInterval(timer),
  };
}

const callsOf = () => (gw.gateway['manager'] as unknown as { calls: Map<string, unknown> }).calls;

async function echoCall(user: string): Promise<{ tab: Tab; callId: string; first: Awaited<ReturnType<typeof browser>> }> {
  const first = await browser();
  const tab = await openTab(BASE, user, SECRET, sockets);
  tab.ws.send(JSON.stringify({ type: 'call', to: '1000', ref: 'echo', sdp: first.offer }));
  await until(() => tab.messages.some((m) => m.type === 'calling'), 'the gateway\'s answer');
  const calling = tab.messages.find((m) => m.type === 'calling')!;
  await first.pc.setRemoteDescription({ type: 'answer', sdp: calling.sdp });
  await until(() => first.pc.connectionState === 'connected' && tab.messages.some((m) => m.type === 'answered'), 'connected and answered');
  first.startSending();
  await until(() => first.received() > 20, 'the echo on the first connection');
  return { tab, callId: calling.callId, first };
}

test('a browser that moves to a new peer connection keeps its call: the new one answers, the audio moves there once it is up, the old leg is closed', async () => {
  const { tab, callId, first } = await echoCall('mover');
  assert.equal(heldResources(gw.gateway).icePorts, 1);
  const second = await browser();
  tab.ws.send(JSON.stringify({ type: 'restart', callId, sdp: second.offer }));
  await until(() => tab.messages.some((m) => m.type === 'restarted' || m.type === 'error'), 'the answer to the restart');
  const restarted = tab.messages.find((m) => m.type === 'restarted');
  assert.ok(restarted, JSON.stringify(tab.messages.at(-1)));
  assert.equal(restarted.callId, callId);
  assert.equal(heldResources(gw.gateway).icePorts, 2, 'the old leg carries the call while the new one connects');
  // The old network is gone: nothing more from the first connection.
  first.stopSending();
  await second.pc.setRemoteDescription({ type: 'answer', sdp: restarted.sdp });
  await until(() => second.pc.connectionState === 'connected', 'the new connection up');
  await until(() => heldResources(gw.gateway).icePorts === 1, 'the old leg closed');
  second.startSending();
  await until(() => second.received() > 20, 'the echo on the new connection: audio both ways');
  const firstAfter = first.received();
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(first.received(), firstAfter, 'nothing more to the old connection');
  assert.equal(callsOf().size, 1, 'the same call');
  assert.ok(!tab.messages.some((m) => m.type === 'ended'));
  second.stopSending();
  tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
  await until(() => tab.messages.some((m) => m.type === 'ended'), 'ended');
  await until(() => JSON.stringify(heldResources(gw.gateway)) === JSON.stringify({ legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 }), 'nothing held');
});

test('a restart whose new connection never comes up is dropped after webrtc.connectTimeoutSec; the call goes on on the old one', async () => {
  const { tab, callId, first } = await echoCall('stuck');
  const second = await browser();
  tab.ws.send(JSON.stringify({ type: 'restart', callId, sdp: second.offer }));
  await until(() => tab.messages.some((m) => m.type === 'restarted'), 'the answer to the restart');
  assert.equal(heldResources(gw.gateway).icePorts, 2);
  // The browser never applies the answer: no ICE toward the new leg.
  await until(() => heldResources(gw.gateway).icePorts === 1, 'the new leg given up', 6000);
  const before = first.received();
  await until(() => first.received() > before + 20, 'the echo still on the old connection');
  assert.ok(!tab.messages.some((m) => m.type === 'ended'), 'the call goes on');
  first.stopSending();
  tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
  await until(() => tab.messages.some((m) => m.type === 'ended'), 'ended');
  await until(() => heldResources(gw.gateway).icePorts === 0, 'nothing held');
});

test('a restart that would change the codec the bridge was made with is refused; one for an unknown call too; the call goes on', async () => {
  const { tab, callId, first } = await echoCall('switcher');
  const pcmu = await browser('pcmu');
  tab.ws.send(JSON.stringify({ type: 'restart', callId, sdp: pcmu.offer }));
  await until(() => tab.messages.some((m) => m.type === 'error' && m.request === 'restart'), 'the refusal');
  const refusal = tab.messages.find((m) => m.type === 'error' && m.request === 'restart')!;
  assert.equal(refusal.code, 'invalid-state');
  assert.equal(refusal.callId, callId);
  assert.match(refusal.message, /pcmu/);
  assert.equal(heldResources(gw.gateway).icePorts, 1, 'the refused leg is closed');
  tab.ws.send(JSON.stringify({ type: 'restart', callId: 'no-such-call', sdp: pcmu.offer }));
  await until(() => tab.messages.some((m) => m.type === 'error' && m.code === 'unknown-call'), 'unknown call');
  const before = first.received();
  await until(() => first.received() > before + 20, 'the call still carries audio');
  first.stopSending();
  tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
  await until(() => heldResources(gw.gateway).icePorts === 0, 'nothing held');
});
