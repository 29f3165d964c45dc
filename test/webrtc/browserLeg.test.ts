/**
 * The gateway's browser leg against a werift peer connection playing the browser, over real
 * ICE, DTLS and SRTP on loopback: audio RTP both ways on the direct SRTP path (and on werift's
 * own path when that is switched off), in both offer directions, forged packets dropped, the
 * port returned on close.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import pino from 'pino';
import { MediaStreamTrack, RTCPeerConnection, RTCRtpCodecParameters, RtpHeader, RtpPacket } from 'werift';
import { BrowserLeg } from '../../src/webrtc/browserLeg';
import { IcePortPool, IcePortsExhaustedError } from '../../src/webrtc/icePortPool';
import type { RtpPacketView } from '../../src/media';
import { startStunResponder } from '../../bench/stunResponder';

const logger = pino({ level: 'silent' });
const pool = new IcePortPool([20600, 20639]);
const stun = startStunResponder();
after(async () => (await stun).close());

interface Browser { pc: RTCPeerConnection; track: MediaStreamTrack; received: RtpPacket[] }

/** A werift peer as the browser: Opus only, pointed at a loopback STUN responder (never Google's). */
async function browser(): Promise<Browser> {
  const pc = new RTCPeerConnection({
    iceServers: [{ urls: `stun:127.0.0.1:${(await stun).port}` }],
    iceUseIpv6: false,
    iceInterfaceAddresses: { udp4: '127.0.0.1' },
    codecs: { audio: [new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111 })] },
  });
  const track = new MediaStreamTrack({ kind: 'audio' });
  const received: RtpPacket[] = [];
  pc.onTrack.subscribe((t) => t.onReceiveRtp.subscribe((p) => received.push(p)));
  return { pc, track, received };
}

function leg(directSrtp?: boolean): BrowserLeg {
  return new BrowserLeg({ callId: 'test', logger, ice: { bindAddress: '127.0.0.1', announcedAddresses: ['127.0.0.1'], portRange: [20600, 20639], portPool: pool, directSrtp } });
}

const connected = (l: BrowserLeg) => new Promise<void>((resolve, reject) => {
  if (l.state === 'connected') resolve();
  l.once('connected', resolve);
  l.once('failed', (r) => reject(new Error(r)));
});

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Both directions: 20 packets each way, checked by payload, sequence number and timestamp. */
async function exchangeAudio(l: BrowserLeg, b: Browser): Promise<void> {
  await until(() => b.pc.connectionState === 'connected', 'the browser side connected');
  const fromBrowser: RtpPacketView[] = [];
  l.onRtp((p) => fromBrowser.push(p));
  for (let i = 0; i < 20; i++) {
    b.track.writeRtp(new RtpPacket(new RtpHeader({ payloadType: 111, sequenceNumber: 1000 + i, timestamp: 48000 + i * 960, ssrc: 42 }), Buffer.from(`browser-${i}`)));
    l.sendRtp({ payloadType: l.opusPayloadType!, sequenceNumber: 500 + i, timestamp: 9600 + i * 960, marker: i === 0, ssrc: 7, payload: Buffer.from(`gateway-${i}`) });
    await new Promise((r) => setTimeout(r, 5));
  }
  await until(() => fromBrowser.length >= 20 && b.received.length >= 20, `audio both ways (${fromBrowser.length} from the browser, ${b.received.length} to it)`);
  assert.deepEqual(fromBrowser.map((p) => p.payload.toString()), Array.from({ length: 20 }, (_, i) => `browser-${i}`));
  assert.equal(fromBrowser[0].payloadType, l.opusPayloadType, "the negotiated Opus payload type");
  // werift's sender adds an offset of its own to sequence numbers and timestamps; steps survive.
  assert.deepEqual(fromBrowser.map((p) => (p.sequenceNumber - fromBrowser[0].sequenceNumber) & 0xffff), Array.from({ length: 20 }, (_, i) => i));
  assert.deepEqual(b.received.map((p) => p.payload.toString()), Array.from({ length: 20 }, (_, i) => `gateway-${i}`));
  const got = b.received.map((p) => p.header);
  assert.equal(got[0].payloadType, l.opusPayloadType);
  if (l.mediaPath === 'direct') {
    // Ours carries the bridge's numbering as is.
    assert.deepEqual(got.map((h) => h.sequenceNumber), Array.from({ length: 20 }, (_, i) => 500 + i));
    assert.deepEqual(got.map((h) => h.timestamp), Array.from({ length: 20 }, (_, i) => 9600 + i * 960));
    assert.equal(got[0].marker, true);
  }
}

async function outboundCall(directSrtp?: boolean, offeredSetup?: 'active' | 'passive'): Promise<{ l: BrowserLeg; b: Browser; answer: string }> {
  const l = leg(directSrtp);
  const b = await browser();
  b.pc.addTransceiver(b.track, { direction: 'sendrecv' });
  await b.pc.setLocalDescription(await b.pc.createOffer());
  let offer = b.pc.localDescription!.sdp;
  if (offeredSetup) offer = offer.replace(/a=setup:actpass/g, `a=setup:${offeredSetup}`);
  const answer = await l.answer(offer);
  await b.pc.setRemoteDescription({ type: 'answer', sdp: answer });
  await connected(l);
  return { l, b, answer };
}

/** Runs `body` on a connected pair and closes both ends whatever happens. */
async function withPair(pair: { l: BrowserLeg; b: Browser }, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } finally {
    await pair.l.close();
    await pair.b.pc.close();
  }
}

// actpass is what browsers offer: the outbound call as it really happens.
for (const [offered, answered] of [['actpass', 'passive'], ['active', 'passive'], ['passive', 'active']] as const) {
  test(`outbound, offer a=setup:${offered}: answered a=setup:${answered}, audio both ways on the direct SRTP path`, async () => {
    const pair = await outboundCall(undefined, offered === 'actpass' ? undefined : offered);
    await withPair(pair, async () => {
      assert.match(pair.answer, new RegExp(`a=setup:${answered}`));
      assert.equal(pair.l.mediaPath, 'direct');
      await exchangeAudio(pair.l, pair.b);
    });
  });
}

test('with the direct path off, werift carries the same audio', async () => {
  const pair = await outboundCall(false);
  await withPair(pair, async () => {
    assert.equal(pair.l.mediaPath, 'werift');
    await exchangeAudio(pair.l, pair.b);
  });
});

test('inbound: the gateway offers, the browser answers, audio both ways on the direct path', async () => {
  const l = leg();
  const b = await browser();
  await withPair({ l, b }, async () => {
    const offer = await l.createOffer();
    await b.pc.setRemoteDescription({ type: 'offer', sdp: offer });
    b.pc.getTransceivers()[0].sender.replaceTrack(b.track);
    b.pc.getTransceivers()[0].setDirection('sendrecv');
    await b.pc.setLocalDescription(await b.pc.createAnswer());
    await l.acceptAnswer(b.pc.localDescription!.sdp);
    await connected(l);
    assert.equal(l.mediaPath, 'direct');
    await exchangeAudio(l, b);
  });
});

test('forged SRTP from another address is dropped and counted; RTCP is authenticated; close frees the port', async () => {
  const { l, b } = await outboundCall();
  const port = Number(/a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host/.exec(b.pc.remoteDescription!.sdp)![1]);
  const attacker = dgram.createSocket('udp4');
  try {
    const usedBefore = pool.used;
    const forged = Buffer.alloc(60, 0x55);
    forged[0] = 0x80; forged[1] = 111;
    for (let i = 0; i < 5; i++) attacker.send(forged, port, '127.0.0.1');
    await until(() => (l.srtpDrops?.authFailures ?? 0) >= 5, 'forged packets counted');
    await exchangeAudio(l, b);
    // The browser's RTCP reports are ours too: authenticated and counted (werift sends them every 0.5-1.5 s).
    await until(() => (l.directCounts?.rtcpReceived ?? 0) >= 1, 'the browser\'s RTCP on the direct path');
    assert.equal(l.srtpDrops?.authFailures, 5, 'genuine RTP and RTCP all authenticated');
    await l.close();
    assert.equal(l.mediaPath, null);
    assert.equal(pool.used, usedBefore - 1, 'the port pair went back to the pool');
  } finally {
    attacker.close();
    await l.close();
    await b.pc.close();
  }
});

test('with the pool exhausted the constructor throws the pool\'s error and holds no port', () => {
  const full = new IcePortPool([20762, 20763]);
  const held = full.take(); // the one pair, as a live call would hold it (nothing is bound here)
  const ice = { bindAddress: '127.0.0.1', announcedAddresses: ['127.0.0.1'], portRange: [20762, 20763] as [number, number], portPool: full };
  assert.throws(() => new BrowserLeg({ callId: 'exhausted', logger, ice }), IcePortsExhaustedError);
  assert.equal(full.used, 1, 'the failed construction kept nothing');
  full.release(held);
  assert.equal(full.used, 0);
});
