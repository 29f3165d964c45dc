/**
 * The gateway's browser leg against a werift peer connection playing the browser, over real
 * ICE, DTLS and SRTP on loopback: audio RTP both ways on the direct SRTP path (and on werift's
 * own path when that is switched off), in both offer directions, forged packets dropped, the
 * port returned on close; the browser asked for Opus in-band FEC, and told of the loss on
 * its stream by our receiver reports.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { dirname, join } from 'node:path';
import pino from 'pino';
import { MediaStreamTrack, RTCPeerConnection, RTCRtpCodecParameters, RtcpRrPacket, RtcpSourceDescriptionPacket, RtcpSrPacket, RtpHeader, RtpPacket, type RtcpPacket } from 'werift';
import { BrowserLeg } from '../../src/webrtc/browserLeg';
import { dtlsTransportOf } from '../../src/webrtc/weriftInternals';
import { IcePortPool, IcePortsExhaustedError } from '../../src/webrtc/icePortPool';
import { MediaEngine, type RtpPacketView } from '../../src/media';
import { OpusEncoder } from '../../src/media/codecs';
import { SrtpSession } from '../../src/media/srtp';
import { buildRtp } from '../../src/media/rtp';
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

function leg(directSrtp?: boolean, opusMaxPlaybackRate?: number): BrowserLeg {
  return new BrowserLeg({ callId: 'test', logger, opusMaxPlaybackRate, ice: { bindAddress: '127.0.0.1', announcedAddresses: ['127.0.0.1'], portRange: [20600, 20639], portPool: pool, directSrtp } });
}

/** Resolves when the leg connects; rejects when it fails or has not connected within 10 s. */
const connected = (l: BrowserLeg) => new Promise<void>((resolve, reject) => {
  if (l.state === 'connected') { resolve(); return; }
  const timer = setTimeout(() => reject(new Error(`not connected after 10 s (state ${l.state})`)), 10_000);
  l.once('connected', () => { clearTimeout(timer); resolve(); });
  l.once('failed', (r) => { clearTimeout(timer); reject(new Error(r)); });
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
  try {
    b.pc.addTransceiver(b.track, { direction: 'sendrecv' });
    await b.pc.setLocalDescription(await b.pc.createOffer());
    let offer = b.pc.localDescription!.sdp;
    if (offeredSetup) offer = offer.replace(/a=setup:actpass/g, `a=setup:${offeredSetup}`);
    const answer = await l.answer(offer);
    await b.pc.setRemoteDescription({ type: 'answer', sdp: answer });
    await connected(l);
    return { l, b, answer };
  } catch (err) {
    // Not connected: nobody else will close these (their ICE port would stay taken).
    await l.close();
    await b.pc.close();
    throw err;
  }
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
    assert.equal(l.mediaDropped, 5, 'the forged ones are the leg\'s drops; the genuine RTP and RTCP none (their compound lengths add up)');
    await l.close();
    assert.equal(l.mediaPath, null);
    assert.equal(l.mediaDropped, 5, 'kept after close, for the call\'s record');
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

/** What Chrome offers for audio (trimmed to what matters here: codecs, fmtp, rtcp-mux). */
function chromeLikeOffer(opusFmtp: string): string {
  return [
    'v=0', 'o=- 4611731400430051336 2 IN IP4 127.0.0.1', 's=-', 't=0 0', 'a=group:BUNDLE 0', 'a=msid-semantic: WMS',
    'm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126', 'c=IN IP4 0.0.0.0', 'a=rtcp:9 IN IP4 0.0.0.0',
    'a=ice-ufrag:abcd', 'a=ice-pwd:abcdefghijklmnopqrstuvwx', 'a=ice-options:trickle',
    'a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99',
    'a=setup:actpass', 'a=mid:0', 'a=sendrecv', 'a=msid:- 1b1b', 'a=rtcp-mux', 'a=rtcp-rsize',
    'a=rtpmap:111 opus/48000/2', 'a=rtcp-fb:111 transport-cc', `a=fmtp:111 ${opusFmtp}`,
    'a=rtpmap:63 red/48000/2', 'a=fmtp:63 111/111', 'a=rtpmap:9 G722/8000', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:8 PCMA/8000',
    'a=rtpmap:13 CN/8000', 'a=rtpmap:110 telephone-event/48000', 'a=rtpmap:126 telephone-event/8000', 'a=ssrc:1234 cname:abc', '',
  ].join('\r\n');
}

test('a narrowband call asks the browser for narrowband Opus (maxplaybackrate=8000) at a rate with room for FEC, in answers and offers', async () => {
  const want = 'minptime=10;useinbandfec=1;maxplaybackrate=8000;sprop-maxcapturerate=8000;maxaveragebitrate=20000';
  const a = leg(undefined, 8000);
  try {
    const answer = await a.answer(chromeLikeOffer('minptime=10;useinbandfec=1'));
    assert.deepEqual(answer.match(/^a=fmtp:.*$/gm), [`a=fmtp:111 ${want}`]);
  } finally {
    await a.close();
  }
  const o = leg(undefined, 8000);
  try {
    const offer = await o.createOffer();
    const pt = /^a=rtpmap:(\d+) opus\/48000\/2/im.exec(offer)![1];
    assert.match(offer, new RegExp(`^a=fmtp:${pt} ${want}\\r?$`, 'm'));
  } finally {
    await o.close();
  }
});

test('our SDP asks for Opus in-band FEC (RFC 7587 useinbandfec=1), whatever the offer said', async () => {
  // werift would echo the offer's fmtp; ours states what we want to receive, on the offer's PT.
  for (const offered of ['minptime=10;useinbandfec=1', 'stereo=1;sprop-stereo=1;useinbandfec=0', 'maxplaybackrate=48000']) {
    const l = leg();
    try {
      const answer = await l.answer(chromeLikeOffer(offered));
      assert.deepEqual(answer.match(/^a=fmtp:.*$/gm), ['a=fmtp:111 minptime=10;useinbandfec=1'], `offer fmtp ${offered}`);
      assert.match(answer, /^a=rtcp-fb:111 transport-cc\r?$/m, 'the rest of the codec entry unchanged');
    } finally {
      await l.close();
    }
  }
  const l = leg();
  try {
    const offer = await l.createOffer();
    const pt = /^a=rtpmap:(\d+) opus\/48000\/2/im.exec(offer)![1];
    assert.match(offer, new RegExp(`^a=fmtp:${pt} minptime=10;useinbandfec=1\\r?$`, 'm'));
  } finally {
    await l.close();
  }
});

test('direct path: the browser gets receiver reports from the bridge\'s statistics, with the loss on its stream, LSR/DLSR from its sender reports', async (t) => {
  const pair = await outboundCall();
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [20640, 20649], logger });
  const trunk = dgram.createSocket('udp4');
  const enc = new OpusEncoder({ sampleRate: 48000, fec: true, packetLossPercent: 10 });
  await withPair(pair, async () => {
    const { l, b } = pair;
    assert.equal(l.mediaPath, 'direct');
    await new Promise<void>((r) => trunk.bind(0, '127.0.0.1', () => r()));
    const sipLeg = await engine.createSipLeg({ callId: 'rr' });
    sipLeg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const bridge = engine.createBridge(l, sipLeg, { callId: 'rr' }).bridge;
    assert.equal(bridge.isTranscoding, true);

    const sender = b.pc.getTransceivers()[0].sender;
    const rtt = () => (sender as unknown as { rtt?: number }).rtt; // werift's RTT from our LSR/DLSR
    const reports: RtcpRrPacket[] = [];
    const gatewaySrs: RtcpSrPacket[] = [];
    sender.onRtcp.subscribe((p: RtcpPacket) => { if (p instanceof RtcpRrPacket) reports.push(p); });
    const cnames: string[] = [];
    (b.pc as unknown as { dtlsTransports: Array<{ onRtcp: { subscribe(f: (p: RtcpPacket) => void): void } }> }).dtlsTransports[0].onRtcp.subscribe((p) => {
      if (p instanceof RtcpSourceDescriptionPacket) for (const c of p.chunks) cnames.push(`${c.source}:${c.items.find((i) => i.type === 1)?.text}`);
    });
    b.pc.getTransceivers()[0].receiver.onRtcp.subscribe((p: RtcpPacket) => { if (p instanceof RtcpSrPacket) gatewaySrs.push(p); });
    const seen: number[] = [];
    l.onRtp((p) => seen.push(p.sequenceNumber));

    // 50 packets, 5 of them lost on the way (never sent).
    const lost = (i: number) => i % 10 === 3;
    await until(() => b.pc.connectionState === 'connected', 'the browser side connected');
    for (let i = 0; i < 50; i++) {
      const payload = enc.encode(new Int16Array(960).map((_, k) => Math.round(3000 * Math.sin((2 * Math.PI * 300 * (i * 960 + k)) / 48000))));
      if (!lost(i)) b.track.writeRtp(new RtpPacket(new RtpHeader({ payloadType: 111, sequenceNumber: 1000 + i, timestamp: i * 960, ssrc: 42 }), payload));
      await new Promise((r) => setTimeout(r, 4));
    }
    await until(() => seen.length === 45, 'the browser\'s audio at the gateway');
    const last = seen[seen.length - 1];
    const block = (p: RtcpRrPacket) => p.reports.find((r) => r.ssrc === sender.ssrc)!;
    const lsrOf = (p: RtcpRrPacket) => block(p).lsr;
    // The report that covers every packet, then one whose LSR echoes a sender report of the browser.
    await until(() => reports.some((p) => (block(p).highestSequence & 0xffff) === last), 'a receiver report covering the whole stream', 8000);
    await until(() => reports.some((p) => lsrOf(p) !== 0) && rtt() !== undefined, 'a receiver report with LSR/DLSR', 8000);

    const blocks = reports.map(block);
    t.diagnostic(`reports (fraction/256, cumulative, highest seq, jitter, dlsr): ${blocks.map((r) => `${r.fractionLost}/${r.packetsLost}/${r.highestSequence & 0xffff}/${r.jitter}/${r.dlsr}`).join(' ')}; rtt ${rtt()} s`);
    const full = blocks.find((r) => (r.highestSequence & 0xffff) === last)!;
    assert.equal(full.packetsLost, 5);
    assert.equal(bridge.stats().browser.packetsLost, 5);
    // RFC 3550 A.3: each report's fraction lost is the loss over the packets expected since the previous one.
    let prevHighest = seen[0] - 1, prevLost = 0;
    for (const r of blocks) {
      const expected = r.highestSequence - prevHighest, lostNow = r.packetsLost - prevLost;
      assert.equal(r.fractionLost, expected > 0 && lostNow > 0 ? Math.floor((lostNow * 256) / expected) : 0);
      prevHighest = r.highestSequence; prevLost = r.packetsLost;
    }
    assert.ok(blocks.some((r) => r.fractionLost > 0), 'the loss was reported as a fraction too');
    // werift computed the round trip from our LSR/DLSR: loopback, so under a second even on a
    // loaded machine (a DLSR in the wrong unit would be off by seconds or more).
    assert.ok(Math.abs(rtt()!) < 1, `rtt ${rtt()}`);
    // One reporter, the gateway's SSRC the answer announced (werift's own report loops are
    // stopped); compound RR + SDES with the answer's CNAME. No SR yet: no audio sent.
    const gatewaySsrc = Number(/^a=ssrc:(\d+) cname:/m.exec(pair.answer)![1]);
    assert.deepEqual([...new Set(reports.map((p) => p.ssrc))], [gatewaySsrc]);
    assert.equal(gatewaySrs.length, 0);
    const cname = /^a=ssrc:\d+ cname:(\S+)/m.exec(pair.answer)![1];
    assert.ok(cnames.includes(`${gatewaySsrc}:${cname}`), `${cnames} has ${gatewaySsrc}:${cname}`);
    assert.ok((l.directCounts?.rtcpSent ?? 0) >= reports.length);

    // Once the gateway sends audio (the trunk's PCMU, transcoded), its reports are SRs from the
    // same SSRC: sender info with what it sent, and the report block about the browser's audio.
    for (let i = 0; i < 25; i++) {
      const rtp = Buffer.alloc(172, 0xff);
      rtp[0] = 0x80; rtp[1] = 0; rtp.writeUInt16BE(500 + i, 2); rtp.writeUInt32BE(i * 160, 4); rtp.writeUInt32BE(0x7777, 8);
      trunk.send(rtp, sipLeg.localPort, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 20));
    }
    await until(() => gatewaySrs.some((p) => p.senderInfo.packetCount > 0), 'a sender report after the gateway sent audio', 8000);
    const sr = gatewaySrs.find((p) => p.senderInfo.packetCount > 0)!;
    assert.equal(sr.ssrc, gatewaySsrc);
    assert.ok(sr.senderInfo.packetCount <= l.directCounts!.sent && sr.senderInfo.octetCount > 0, `SR ${sr.senderInfo.packetCount} packets, ${sr.senderInfo.octetCount} octets; sent ${l.directCounts!.sent}`);
    assert.deepEqual(sr.reports.map((b) => b.ssrc), [sender.ssrc]);
    bridge.close();
    sipLeg.close();
  }).finally(async () => {
    enc.delete();
    trunk.close();
    await engine.close();
  });
});

test('webrtc.preferPcmu puts PCMU first in the answer to a Chrome offer (Opus first); the browser\'s DTMF is read on the telephone-event of its send codec\'s clock', async () => {
  for (const preferPcmu of [false, true]) {
    const l = new BrowserLeg({ callId: 'te', logger, preferPcmu, ice: { bindAddress: '127.0.0.1', announcedAddresses: ['127.0.0.1'], portRange: [20600, 20639], portPool: pool } });
    try {
      const answer = await l.answer(chromeLikeOffer('minptime=10;useinbandfec=1'));
      assert.match(answer, preferPcmu ? /^m=audio \d+ \S+ 0 111 /m : /^m=audio \d+ \S+ 111 0 /m, 'the browser sends the first codec of the answer');
      assert.equal(l.sendCodec, preferPcmu ? 'pcmu' : 'opus');
      // Chrome's offer: 110 telephone-event/48000, 126 telephone-event/8000.
      assert.equal(l.telephoneEventPayloadType, preferPcmu ? 126 : 110);
    } finally {
      await l.close();
    }
  }
});

test('a telephone-event format at a clock no audio runs on (telephone-event/1) is not used: its durations would read as hours', async () => {
  const l = new BrowserLeg({ callId: 'te1', logger, ice: { bindAddress: '127.0.0.1', announcedAddresses: ['127.0.0.1'], portRange: [20600, 20639], portPool: pool } });
  try {
    const offer = chromeLikeOffer('minptime=10;useinbandfec=1').replace(' 110 126', ' 126').replace('a=rtpmap:110 telephone-event/48000\r\n', '').replace('telephone-event/8000', 'telephone-event/1');
    assert.match(offer, /a=rtpmap:126 telephone-event\/1\r\n/);
    await l.answer(offer);
    assert.deepEqual(l.telephoneEvents, [], 'not read');
    assert.equal(l.telephoneEventPayloadType, null, 'and no digits sent on it');
  } finally {
    await l.close();
  }
});

test('browser candidates: only IP-address ones reach werift (no mDNS or other names, which it would look up on the LAN), from the offer or trickled, at most 16 in all', async () => {
  const l = leg();
  try {
    const offer = chromeLikeOffer('minptime=10;useinbandfec=1').replace('a=ssrc:1234', [
      'a=candidate:1 1 udp 2122260223 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0.local 50000 typ host generation 0',
      'a=candidate:2 1 udp 2122260223 127.0.0.1 50002 typ host generation 0',
      // Names werift sends to multicast DNS too (it looks for ".local" anywhere in the host).
      'a=candidate:4 1 udp 2122260223 a.localhost 50006 typ host generation 0',
      'a=candidate:5 1 udp 2122260223 b.local.example.com 50008 typ host generation 0',
      'a=ssrc:1234',
    ].join('\r\n'));
    await l.answer(offer);
    const ice = dtlsTransportOf(l['transceiver']!)!.iceTransport.connection as unknown as { remoteCandidates: Array<{ host: string }>; lookup?: unknown };
    await l.addIceCandidate('candidate:3 1 udp 2122260223 aaaa-bbbb.local 50004 typ host generation 0', '0', 0);
    await l.addIceCandidate('candidate:6 1 udp 2122260223 x.localdomain 50012 typ host generation 0', '0', 0);
    await l.addIceCandidate('a=candidate:7 1 udp 2122260223 gateway.example.com 50014 typ host generation 0', '0', 0);
    for (let i = 0; i < 20; i++) await l.addIceCandidate(`candidate:${10 + i} 1 udp 2122260223 127.0.0.${10 + i} 50010 typ host generation 0`, '0', 0);
    const hosts = ice.remoteCandidates.map((c) => c.host);
    assert.ok(hosts.every((h) => /^127\.0\.0\.\d+$/.test(h)), hosts.join(' '));
    assert.equal(hosts.length, 16, 'the offer\'s address candidate and 15 trickled ones');
    assert.equal(ice.lookup, undefined, 'werift never started a multicast-DNS lookup');
  } finally {
    await l.close();
  }
});

test('a leg closed while werift still gathers (an inbound call cancelled as its offer is made) leaves no ICE socket open', async () => {
  const racePool = new IcePortPool([23950, 23959]);
  const bindable = (port: number) => new Promise<boolean>((r) => { const s = dgram.createSocket('udp4'); s.once('error', () => r(false)); s.bind(port, '127.0.0.1', () => s.close(() => r(true))); });
  for (let i = 0; i < 10; i++) {
    const l = new BrowserLeg({ callId: 'race', logger, ice: { bindAddress: '127.0.0.1', announcedAddresses: ['127.0.0.1'], portRange: [23950, 23959], portPool: racePool } });
    const port = l['icePort']!;
    const offer = l.createOffer().catch(() => undefined);
    await new Promise((r) => setImmediate(r)); // werift is binding its socket now
    await l.close();
    await offer;
    assert.equal(await bindable(port), true, `round ${i}: port ${port} free once close() resolved`);
  }
  assert.equal(racePool.used, 0);
});

// werift's STUN message class (not exported: found next to its entry point, lib/webrtc/src).
const stunDir = join(dirname(require.resolve('werift')), '..', '..', 'ice', 'src', 'stun');
const { Message: StunMessage } = require(join(stunDir, 'message.js'));
const { methods: stunMethods, classes: stunClasses } = require(join(stunDir, 'const.js'));

/** A connectivity check to our ICE port from `from`, signed with `password` (none: unsigned). Returns its bytes. */
function check(from: dgram.Socket, to: { ufrag: string; port: number }, theirUfrag: string, o: { password?: string; nominate: boolean }): Buffer {
  const req = new StunMessage(stunMethods.BINDING, stunClasses.REQUEST);
  req.setAttribute('USERNAME', `${to.ufrag}:${theirUfrag}`).setAttribute('PRIORITY', 0x7e0000ff).setAttribute('ICE-CONTROLLING', 1n);
  if (o.nominate) req.setAttribute('USE-CANDIDATE', null);
  if (o.password) req.addMessageIntegrity(Buffer.from(o.password, 'utf8'));
  req.addFingerprint();
  from.send(req.bytes, to.port, '127.0.0.1');
  return Buffer.from(req.bytes);
}

async function udpSocket(): Promise<dgram.Socket & { media: number }> {
  const s = dgram.createSocket('udp4') as dgram.Socket & { media: number };
  s.media = 0;
  s.on('message', (m) => { if ((m[0] & 0xc0) === 0x80) s.media++; });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return s;
}

test('a browser that nominates a new ICE pair (its network changed) and sends its audio from there gets ours there; a forged (unsigned) or replayed nomination, or a later plain check from an older pair, moves nothing', async () => {
  const l = leg(true);
  const b = await browser();
  const [moved, again, forger, replayer] = await Promise.all([udpSocket(), udpSocket(), udpSocket(), udpSocket()]);
  try {
    const bt = b.pc.addTransceiver(b.track, { direction: 'sendrecv' });
    await b.pc.setLocalDescription(await b.pc.createOffer());
    const offer = b.pc.localDescription!.sdp;
    const answer = await l.answer(offer);
    await b.pc.setRemoteDescription({ type: 'answer', sdp: answer });
    await connected(l);
    assert.equal(l.mediaPath, 'direct');
    const ours = { ufrag: /a=ice-ufrag:(\S+)/.exec(answer)![1], port: Number(/a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+)/.exec(answer)![1]) };
    const pwd = /a=ice-pwd:(\S+)/.exec(answer)![1];
    const theirUfrag = /a=ice-ufrag:(\S+)/.exec(offer)![1];
    // The browser's SRTP keys (its own send direction), to send its audio from a new address.
    await until(() => !!dtlsTransportOf(bt)?.dtls, 'the browser\'s DTLS');
    const keys = dtlsTransportOf(bt)!.dtls!.extractSessionKeys(16, 14);
    const suite = 'AES_CM_128_HMAC_SHA1_80' as const;
    const browserSrtp = new SrtpSession({ local: { tag: 1, suite, key: keys.localKey, salt: keys.localSalt }, remote: { tag: 1, suite, key: keys.remoteKey, salt: keys.remoteSalt } });
    let seq = 100;
    const audioFrom = (s: dgram.Socket) => { seq++; s.send(browserSrtp.protectRtp(buildRtp(111, seq, seq * 960, 0x5eed, Buffer.alloc(40, 7))), ours.port, '127.0.0.1'); };
    const burst = async () => {
      for (let i = 0; i < 10; i++) l.sendRtp({ payloadType: l.opusPayloadType!, sequenceNumber: i, timestamp: i * 960, marker: false, ssrc: 1, payload: Buffer.alloc(40) });
      await new Promise((r) => setTimeout(r, 150));
    };
    // Anyone who knows the port, without our ICE password: dropped before werift sees it.
    check(forger, ours, theirUfrag, { nominate: true });
    await new Promise((r) => setTimeout(r, 100));
    await burst();
    assert.equal(forger.media, 0, 'no audio to an unsigned nomination');
    assert.ok(l.directCounts!.sent > 0);
    // The browser moves: a signed nomination from the new address, and its audio from there.
    const nomination = check(moved, ours, theirUfrag, { password: pwd, nominate: true });
    await new Promise((r) => setTimeout(r, 50));
    audioFrom(moved);
    await new Promise((r) => setTimeout(r, 50));
    await b.pc.close();
    await burst();
    assert.ok(moved.media >= 10, `audio at the browser's new address: ${moved.media}`);
    // Its nomination replayed from elsewhere (who saw it can resend it; no audio from there).
    replayer.send(nomination, ours.port, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 100));
    const before1 = moved.media;
    await burst();
    assert.equal(replayer.media, 0, 'a replayed nomination does not move our audio');
    assert.ok(moved.media >= before1 + 10);
    // It moves once more; a plain (consent) check from the previous pair then moves nothing back.
    check(again, ours, theirUfrag, { password: pwd, nominate: true });
    await new Promise((r) => setTimeout(r, 50));
    audioFrom(again);
    await new Promise((r) => setTimeout(r, 50));
    const before2 = { moved: moved.media, again: again.media };
    check(moved, ours, theirUfrag, { password: pwd, nominate: false });
    await new Promise((r) => setTimeout(r, 100));
    await burst();
    assert.equal(moved.media, before2.moved, 'not back to the older pair');
    assert.ok(again.media >= before2.again + 10, 'audio stays on the latest nomination');
  } finally {
    for (const s of [moved, again, forger, replayer]) s.close();
    await l.close();
    await b.pc.close().catch(() => undefined);
  }
});

test('before the browser connects, an unsigned nomination racing its checks does not become the call\'s path', async () => {
  const l = leg(true);
  const b = await browser();
  const forger = await udpSocket();
  try {
    b.pc.addTransceiver(b.track, { direction: 'sendrecv' });
    await b.pc.setLocalDescription(await b.pc.createOffer());
    const offer = b.pc.localDescription!.sdp;
    const answer = await l.answer(offer);
    const ours = { ufrag: /a=ice-ufrag:(\S+)/.exec(answer)![1], port: Number(/a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+)/.exec(answer)![1]) };
    check(forger, ours, /a=ice-ufrag:(\S+)/.exec(offer)![1], { nominate: true });
    await new Promise((r) => setTimeout(r, 150));
    const nominatedPort = () => dtlsTransportOf(l['transceiver']!)!.iceTransport.connection.nominated?.remoteAddr[1];
    assert.equal(nominatedPort(), undefined, 'werift never saw it');
    await b.pc.setRemoteDescription({ type: 'answer', sdp: answer });
    await connected(l);
    assert.notEqual(nominatedPort(), forger.address().port);
  } finally {
    forger.close();
    await l.close();
    await b.pc.close().catch(() => undefined);
  }
});

test('a leg closed while werift applies the browser\'s offer or answer: answer() and acceptAnswer() reject (werift left them pending for ever); close() twice resolves only once the port is back', async () => {
  const b = await browser();
  try {
    b.pc.addTransceiver(b.track, { direction: 'sendrecv' });
    await b.pc.setLocalDescription(await b.pc.createOffer());
    const offer = b.pc.localDescription!.sdp;
    for (let i = 0; i < 5; i++) {
      const l = leg(true);
      const answering = l.answer(offer);
      await new Promise((r) => setImmediate(r));
      const first = l.close();
      const second = l.close();
      assert.equal(first, second, 'one close, one promise');
      const outcome = await Promise.race([answering.then(() => 'answered', (e: Error) => e.constructor.name), new Promise((r) => setTimeout(() => r('still pending after 3 s'), 3000))]);
      assert.ok(outcome === 'LegClosedError' || outcome === 'OfferRefusedError', `round ${i}: ${outcome}`);
      await second;
    }
    // The inbound side: the browser's answer being applied when the leg closes.
    const l = leg(true);
    const ours = await l.createOffer();
    const pc = new RTCPeerConnection({ iceServers: [{ urls: `stun:127.0.0.1:${(await stun).port}` }], iceUseIpv6: false, iceInterfaceAddresses: { udp4: '127.0.0.1' } });
    await pc.setRemoteDescription({ type: 'offer', sdp: ours });
    await pc.setLocalDescription(await pc.createAnswer());
    const accepting = l.acceptAnswer(pc.localDescription!.sdp);
    await l.close();
    const outcome = await Promise.race([accepting.then(() => 'accepted', (e: Error) => e.constructor.name), new Promise((r) => setTimeout(() => r('still pending after 3 s'), 3000))]);
    assert.notEqual(outcome, 'still pending after 3 s');
    await pc.close();
  } finally {
    await b.pc.close();
  }
});

/** A DTLS record as anyone could send it: plaintext (epoch 0), DTLS 1.2. */
function plainDtlsRecord(contentType: number, fragment: Buffer): Buffer {
  const header = Buffer.alloc(13);
  header[0] = contentType;
  header.writeUInt16BE(0xfefd, 1);
  header.writeUInt16BE(fragment.length, 11);
  return Buffer.concat([header, fragment]);
}

test('a stranger\'s plaintext DTLS alert or record of an unknown type to the leg\'s port ends nothing (werift closed its DTLS transport on one from anywhere: on its own path the audio to the browser stopped); DTLS reaches werift only from an address a signed check came from', async () => {
  const records = { 'warning alert close_notify': plainDtlsRecord(21, Buffer.from([1, 0])), 'fatal alert': plainDtlsRecord(21, Buffer.from([2, 40])), 'content type 25': plainDtlsRecord(25, Buffer.from([0])) };
  for (const direct of [true, false]) {
    for (const [name, record] of Object.entries(records)) {
      const pair = await outboundCall(direct);
      const stranger = await udpSocket();
      await withPair(pair, async () => {
        const port = Number(/a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+)/.exec(pair.answer)![1]);
        const dtls = dtlsTransportOf(pair.l['transceiver']!)! as unknown as { state: string; iceTransport: { connection: { onData: { subscribe(f: (d: Buffer) => void): void } } } };
        let strangers = 0;
        dtls.iceTransport.connection.onData.subscribe((d) => { if (d.equals(record)) strangers++; });
        for (let i = 0; i < 3; i++) stranger.send(record, port, '127.0.0.1');
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(strangers, 0, `${name}, ${direct ? 'direct' : 'werift'} path: werift never saw it`);
        assert.equal(dtls.state, 'connected', `${name}: werift's DTLS transport is still up`);
        assert.equal(pair.l.state, 'connected');
        await exchangeAudio(pair.l, pair.b);
      }).finally(() => stranger.close());
    }
  }
});

test('a stranger who saw one of the browser\'s signed checks and replays it from its own address gets no DTLS in: the alert that follows ends nothing (both media paths)', async () => {
  for (const direct of [true, false]) {
    const pair = await outboundCall(direct);
    const stranger = await udpSocket();
    await withPair(pair, async () => {
      const port = Number(/a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+)/.exec(pair.answer)![1]);
      const dtlsT = dtlsTransportOf(pair.l['transceiver']!)! as unknown as { state: string; iceTransport: { connection: { protocols: Array<{ transport: { onData: (d: Buffer, a: [string, number]) => void } }> } } };
      // What an observer on the path sees: the browser's next check (consent, every few seconds).
      const udp = dtlsT.iceTransport.connection.protocols[0].transport;
      const inner = udp.onData;
      let seen: Buffer | null = null;
      udp.onData = (d, a) => { if (!seen && d.length >= 20 && d.readUInt16BE(0) === 0x0001) seen = Buffer.from(d); inner(d, a); };
      await until(() => seen !== null, 'a check from the browser', 15_000);
      stranger.send(seen!, port, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 50));
      stranger.send(plainDtlsRecord(21, Buffer.from([1, 0])), port, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(dtlsT.state, 'connected', `${direct ? 'direct' : 'werift'} path: werift's DTLS transport is still up`);
      await exchangeAudio(pair.l, pair.b);
    }).finally(() => stranger.close());
  }
});

test('on werift\'s media path, an RTP packet whose header extension claims 16384 words (werift\'s parser is quadratic in it: seconds of a frozen process) is dropped before werift; the call goes on', async () => {
  const pair = await outboundCall(false);
  const stranger = await udpSocket();
  await withPair(pair, async () => {
    const port = Number(/a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+)/.exec(pair.answer)![1]);
    const bomb = Buffer.concat([Buffer.from([0x90, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 42, 0xbe, 0xde, 0x40, 0x00]), Buffer.alloc(20)]);
    const t0 = performance.now();
    stranger.send(bomb, port, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 50));
    const lag = performance.now() - t0 - 50;
    assert.ok(lag < 500, `the process stalled ${Math.round(lag)} ms`);
    await exchangeAudio(pair.l, pair.b);
  }).finally(() => stranger.close());
});
