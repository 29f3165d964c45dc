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
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import type WebSocket from 'ws';
import { SipUserAgent } from '../../src/sip';
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
  tab.ws.send(JSON.stringify({ type: 'restart', callId, sdp: second.offer, ref: 'm7' }));
  await until(() => tab.messages.some((m) => m.type === 'restarted' || m.type === 'error'), 'the answer to the restart');
  const restarted = tab.messages.find((m) => m.type === 'restarted');
  assert.ok(restarted, JSON.stringify(tab.messages.at(-1)));
  assert.equal(restarted.callId, callId);
  assert.equal(restarted.ref, 'm7', 'the answer names the restart it answers');
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
  tab.ws.send(JSON.stringify({ type: 'restart', callId, sdp: pcmu.offer, ref: 'm3' }));
  await until(() => tab.messages.some((m) => m.type === 'error' && m.request === 'restart'), 'the refusal');
  const refusal = tab.messages.find((m) => m.type === 'error' && m.request === 'restart')!;
  assert.equal(refusal.code, 'invalid-state');
  assert.equal(refusal.callId, callId);
  assert.equal(refusal.ref, 'm3', 'the refusal names the restart it refuses');
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

test('an incoming call moves to a new peer connection whose offer numbers the codecs otherwise (the first numbers were our offer\'s): packets are renumbered both ways, none dropped', async () => {
  const trunkRtp = dgram.createSocket('udp4');
  await new Promise<void>((r) => trunkRtp.bind(BASE + 4, '127.0.0.1', () => r()));
  const trunk = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: BASE + 3 }], logger: pino({ level: 'silent' }) });
  await trunk.start();
  const tab = await openTab(BASE, 'dana', SECRET, sockets);
  let pcmuTimer: NodeJS.Timeout | undefined;
  try {
    const inv = trunk.invite({
      requestUri: `sip:dana@127.0.0.1:${BASE + 1}`, from: { uri: 'sip:5550100@127.0.0.1' },
      sdp: `v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 4} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n`,
    });
    const answered = new Promise<string>((resolve, reject) => { inv.once('accepted', (res) => resolve(res.body)); inv.once('rejected', (res) => reject(new Error(`rejected ${res.status}`))); });
    await until(() => tab.messages.some((m) => m.type === 'incoming'), 'the call ringing the tab');
    const incoming = tab.messages.find((m) => m.type === 'incoming')!;
    const ourOpusPt = Number(/a=rtpmap:(\d+) opus\//i.exec(incoming.sdp)![1]);
    // The first connection answers our offer.
    const first = new RTCPeerConnection({ iceServers: [{ urls: `stun:127.0.0.1:${await browsers.stunPort()}` }], iceUseIpv6: false, iceInterfaceAddresses: { udp4: '127.0.0.1' } });
    browsers.keep(first);
    await first.setRemoteDescription({ type: 'offer', sdp: incoming.sdp });
    await first.setLocalDescription(await first.createAnswer());
    tab.ws.send(JSON.stringify({ type: 'accept', callId: incoming.callId, sdp: first.localDescription!.sdp }));
    const trunkAnswer = await answered;
    const gwRtpPort = Number(/m=audio (\d+)/.exec(trunkAnswer)![1]);
    await until(() => tab.messages.some((m) => m.type === 'answered'), 'answered');
    // The far end's audio flows all along.
    let seq = 0;
    pcmuTimer = setInterval(() => { const p = Buffer.alloc(172, 0xff); p[0] = 0x80; p[1] = 0; p.writeUInt16BE(seq, 2); p.writeUInt32BE(seq * 160, 4); p.writeUInt32BE(77, 8); seq++; trunkRtp.send(p, gwRtpPort, '127.0.0.1'); }, 20);
    // The browser's new connection offers Opus under another number.
    const newPt = ourOpusPt === 100 ? 101 : 100;
    const second = new RTCPeerConnection({
      iceServers: [{ urls: `stun:127.0.0.1:${await browsers.stunPort()}` }], iceUseIpv6: false, iceInterfaceAddresses: { udp4: '127.0.0.1' },
      codecs: { audio: [new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: newPt })] },
    });
    browsers.keep(second);
    const track = new MediaStreamTrack({ kind: 'audio' });
    second.addTransceiver(track, { direction: 'sendrecv' });
    const receivedPts: number[] = [];
    second.onTrack.subscribe((t) => t.onReceiveRtp.subscribe((p) => receivedPts.push(p.header.payloadType)));
    await second.setLocalDescription(await second.createOffer());
    await until(() => second.iceGatheringState === 'complete', 'gathering');
    tab.ws.send(JSON.stringify({ type: 'restart', callId: incoming.callId, sdp: second.localDescription!.sdp }));
    await until(() => tab.messages.some((m) => m.type === 'restarted' || (m.type === 'error' && m.request === 'restart')), 'the answer to the restart');
    const restarted = tab.messages.find((m) => m.type === 'restarted');
    assert.ok(restarted, JSON.stringify(tab.messages.at(-1)));
    await second.setRemoteDescription({ type: 'answer', sdp: restarted.sdp });
    await until(() => second.connectionState === 'connected' && heldResources(gw.gateway).icePorts === 1, 'the new connection carries the call');
    await until(() => receivedPts.length >= 20, 'the far end\'s audio on the new connection');
    assert.deepEqual([...new Set(receivedPts)], [newPt], `sent under the new connection's number (ours was ${ourOpusPt})`);
    for (let i = 0; i < 50; i++) {
      track.writeRtp(new RtpPacket(new RtpHeader({ payloadType: newPt, sequenceNumber: i, timestamp: i * 960, ssrc: 99 }), Buffer.from([0xf8, 0xff, 0xfe])));
      await new Promise((r) => setTimeout(r, 20));
    }
    tab.ws.send(JSON.stringify({ type: 'hangup', callId: incoming.callId }));
    const cdr = () => readFileSync(gw.cdrPath, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((l) => l.callId === incoming.callId);
    await until(() => cdr() !== undefined, 'the CDR line');
    const browserSide = cdr().quality.browser;
    assert.ok(browserSide.packetsReceived >= 45, `the new connection's audio reached the bridge: ${JSON.stringify(browserSide)}`);
    assert.equal(browserSide.dropped, 0, 'none dropped for its payload type');
    assert.equal(cdr().mediaRestarts, 1, 'the record says the audio moved once');
    assert.equal(cdr().signalingResumes, undefined, 'and no resume happened');
  } finally {
    clearInterval(pcmuTimer);
    trunkRtp.close();
    await trunk.stop();
  }
});
