/**
 * Bad input from the network, generated: thousands of datagrams made from valid RTP, RTCP, SRTP
 * and SRTCP packets by cutting them short, flipping bytes and rewriting header fields (CSRC
 * count, extension and padding bits, lengths), plus plain random bytes, fed to everything that
 * parses what a trunk or a browser sends: the RTP parser, the SRTP session (both suites), a SIP
 * leg (plain, SDES-SRTP, rtcp-mux), the bridge's Opus path and the telephone-event decoder.
 * Nothing may throw; the leg and the bridge must still work afterwards; the drops are counted.
 * A fixed seed: a failure names the datagram, and the same run reproduces it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import pino from 'pino';
import { MediaEngine, type BrowserMediaPort, type SipRtpLeg } from '../../src/media';
import { OpusEncoder, pcmuDecode } from '../../src/media/codecs';
import { buildRtp, parseRtp, type RtpPacketView } from '../../src/media/rtp';
import { decodeTelephoneEvent, DtmfReceiver, encodeTelephoneEvent } from '../../src/media/dtmf';
import { generateSdesCrypto, SrtpSession, type SdesCrypto } from '../../src/media/srtp';
import { until } from '../support/tabs';
import { toneRatio } from '../support/audio';
import { prng } from '../support/fuzz';

const logger = pino({ level: 'silent' });
const ROUNDS = 3000;

/** An RTCP compound: SR with one report block, then an SDES CNAME chunk (what trunks send). */
function rtcpCompound(ssrc: number): Buffer {
  const sr = Buffer.alloc(52);
  sr[0] = 0x81; sr[1] = 200; sr.writeUInt16BE(52 / 4 - 1, 2); sr.writeUInt32BE(ssrc, 4);
  sr.writeUInt32BE(0xe0000000, 8); sr.writeUInt32BE(1234, 16); sr.writeUInt32BE(10, 20); sr.writeUInt32BE(1600, 24);
  sr.writeUInt32BE(0x5555, 28); sr.writeUInt32BE(0x01000002, 32); sr.writeUInt32BE(100, 36); sr.writeUInt32BE(3, 40);
  const sdes = Buffer.from([0x81, 202, 0, 3, 0, 0, 0, 0, 1, 3, 0x61, 0x62, 0x63, 0, 0, 0]);
  sdes.writeUInt32BE(ssrc, 4);
  return Buffer.concat([sr, sdes]);
}

/** One bad datagram made from `base`: cut, flipped, header fields rewritten, or plain noise. */
function mutate(r: ReturnType<typeof prng>, base: Buffer): Buffer {
  switch (r.int(6)) {
    case 0: return Buffer.from(base.subarray(0, r.int(base.length)));              // cut short
    case 1: { const b = Buffer.from(base); for (let k = 1 + r.int(4); k > 0; k--) b[r.int(b.length)] ^= 1 << r.int(8); return b; }
    case 2: { const b = Buffer.from(base); b[0] = (b[0] & 0xc0) | r.int(64); return b; } // CC, X, P bits
    case 3: { const b = Buffer.from(base); if (b.length > 4) b.writeUInt16BE(r.int(0x10000), 2); return b; } // seq / RTCP length
    case 4: { const b = Buffer.from(base); b[b.length - 1] = r.int(256); return b; }  // padding count
    default: return r.bytes(r.int(300));                                            // noise
  }
}

test('the RTP parser and the SRTP session (both suites) never throw on bad datagrams, and count what they drop', () => {
  const r = prng(0x5eed1);
  for (const suite of ['AES_CM_128_HMAC_SHA1_80', 'AES_CM_128_HMAC_SHA1_32'] as const) {
    const a: SdesCrypto = generateSdesCrypto(1, suite);
    const b: SdesCrypto = generateSdesCrypto(1, suite);
    const sender = new SrtpSession({ local: a, remote: b });
    const receiver = new SrtpSession({ local: b, remote: a });
    const bases = [
      buildRtp(0, 1, 160, 0x1111, Buffer.alloc(160, 0xff)),
      buildRtp(101, 2, 320, 0x1111, encodeTelephoneEvent(5, false, 160)),
    ];
    const srtpBases = bases.map((p) => sender.protectRtp(p));
    const srtcpBase = sender.protectRtcp(rtcpCompound(0x1111));
    let accepted = 0;
    for (let i = 0; i < ROUNDS; i++) {
      const plain = mutate(r, bases[i % bases.length]);
      const what = () => `round ${i} (${suite}): ${plain.toString('hex')}`;
      assert.doesNotThrow(() => {
        const v = parseRtp(plain);
        if (v) assert.ok(v.payload.byteOffset + v.payload.length <= plain.byteOffset + plain.length, 'payload inside the datagram');
      }, what);
      const wire = mutate(r, srtpBases[i % srtpBases.length]);
      assert.doesNotThrow(() => {
        if (!receiver.unprotectRtp(wire)) return;
        // Only a "mutation" that left the packet as it was authenticates, and only once (replay).
        assert.ok(srtpBases.some((b) => b.equals(wire)), `a changed packet authenticated: ${wire.toString('hex')}`);
        accepted++;
      }, `round ${i} (${suite}) SRTP: ${wire.toString('hex')}`);
      const ctl = mutate(r, srtcpBase);
      assert.doesNotThrow(() => receiver.unprotectRtcp(ctl), `round ${i} (${suite}) SRTCP: ${ctl.toString('hex')}`);
    }
    assert.ok(accepted <= srtpBases.length, `each genuine packet accepted once at most: ${accepted}`);
    assert.ok(receiver.stats.authFailures + receiver.stats.malformed > ROUNDS / 2, JSON.stringify(receiver.stats));
    // The genuine packets still go through afterwards: nothing the noise did poisoned the session.
    assert.ok(receiver.unprotectRtp(sender.protectRtp(buildRtp(0, 3, 480, 0x1111, Buffer.alloc(160)))));
  }
});

test('telephone-event payloads of any length and content decode or are refused, never throw', () => {
  const r = prng(0x5eed2);
  const rx = new DtmfReceiver(() => undefined);
  for (let i = 0; i < ROUNDS; i++) {
    const p = mutate(r, encodeTelephoneEvent(r.int(20), r.int(2) === 1, r.int(3000)));
    assert.doesNotThrow(() => { decodeTelephoneEvent(p); rx.onPacket(r.int(1e6), p); }, `round ${i}: ${p.toString('hex')}`);
  }
});

async function sipLeg(engine: MediaEngine, mux: boolean, srtp: { local: SdesCrypto; remote: SdesCrypto } | undefined, farPort: number): Promise<SipRtpLeg> {
  const leg = await engine.createSipLeg({ callId: `fuzz-${mux}-${!!srtp}` });
  leg.setRemote({ address: '127.0.0.1', port: farPort, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101, rtcpMux: mux, srtp });
  return leg;
}

test('a SIP leg (plain, SDES-SRTP, rtcp-mux) takes thousands of bad RTP and RTCP datagrams without throwing, and still carries audio after', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22720, 22739], logger });
  const far = dgram.createSocket('udp4');
  await new Promise<void>((res) => far.bind(0, '127.0.0.1', () => res()));
  const r = prng(0x5eed3);
  const theirs = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const ours = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_32');
  const legs: SipRtpLeg[] = [];
  try {
    for (const [mux, keyed] of [[false, false], [true, false], [true, true]] as const) {
      const leg = await sipLeg(engine, mux, keyed ? { local: ours, remote: theirs } : undefined, far.address().port);
      legs.push(leg);
      const peer = keyed ? new SrtpSession({ local: theirs, remote: ours }) : null;
      const rtp = (seq: number, pt = 0, payload: Buffer = Buffer.alloc(160, 0xff)) => {
        const p = buildRtp(pt, seq, seq * 160, 0x2222, payload);
        return peer ? peer.protectRtp(p) : p;
      };
      const rtcp = () => (peer ? peer.protectRtcp(rtcpCompound(0x2222)) : rtcpCompound(0x2222));
      let audio = 0;
      leg.on('audio', () => audio++);
      leg.on('dtmf', () => undefined);
      const from: dgram.RemoteInfo = { address: '127.0.0.1', family: 'IPv4', port: far.address().port, size: 0 };
      for (let i = 0; i < ROUNDS; i++) {
        const base = i % 3 === 0 ? rtcp() : rtp(10 + i, i % 3 === 1 ? 0 : 101, i % 3 === 1 ? Buffer.alloc(160, 0xff) : encodeTelephoneEvent(1, false, 160));
        const bad = mutate(r, base);
        const what = `round ${i} (mux ${mux}, srtp ${keyed}): ${bad.toString('hex')}`;
        assert.doesNotThrow(() => leg['onRtpDatagram'](bad, from), what);
        assert.doesNotThrow(() => leg['onRtcpDatagram'](bad, '127.0.0.1'), what);
      }
      const before = audio;
      const s = leg.stats();
      // Every bad datagram went somewhere countable (SRTP failures are counted by the session).
      assert.ok(s.dropped > 0, JSON.stringify(s));
      // Genuine audio after the noise is still heard (a fresh sequence range, past what the noise used).
      for (let seq = 20000; seq < 20005; seq++) leg['onRtpDatagram'](rtp(seq), from);
      assert.equal(audio - before, 5, `mux ${mux}, srtp ${keyed}: audio after the noise`);
    }
  } finally {
    for (const l of legs) l.close();
    far.close();
  }
  assert.equal(engine.usage.portsAllocated, 0, 'every port pair back');
});

test('the bridge takes random Opus payloads and unknown payload types from the browser without throwing, and its audio after them is right', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22740, 22759], logger });
  const trunk = dgram.createSocket('udp4');
  await new Promise<void>((res) => trunk.bind(0, '127.0.0.1', () => res()));
  const atTrunk: Buffer[] = [];
  trunk.on('message', (m) => { const p = parseRtp(m); if (p?.payloadType === 0) atTrunk.push(Buffer.from(p.payload)); });
  let listener: ((pkt: RtpPacketView) => void) | null = null;
  const browser: BrowserMediaPort = {
    opusPayloadType: 111, pcmuPayloadType: null, telephoneEventPayloadType: 126, sendCodec: 'opus',
    onRtp: (l) => { listener = l; return () => { listener = null; }; },
    sendRtp: () => {},
  };
  const leg = await engine.createSipLeg({ callId: 'fuzz-bridge' });
  const enc = new OpusEncoder({ sampleRate: 48000, bitrate: 32000 });
  const r = prng(0x5eed4);
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const bridge = engine.createBridge(browser, leg, { callId: 'fuzz-bridge' }).bridge;
    const good = enc.encode(new Int16Array(960));
    for (let i = 0; i < 600; i++) {
      const payload = i % 2 ? mutate(r, good) : r.bytes(r.int(400));
      const pt = [111, 111, 126, 0, 13, 96][r.int(6)];
      const pkt = { payloadType: pt, sequenceNumber: i, timestamp: i * 960, marker: false, ssrc: 0x3333, payload };
      assert.doesNotThrow(() => listener!(pkt), `packet ${i}: PT ${pt}, ${payload.toString('hex')}`);
    }
    // The noise itself yields PCMU too (concealment), and the digits its random events made are
    // sent to the trunk for 140 ms each (audio waits meanwhile): wait until the trunk has had
    // nothing new for 300 ms, then a 1 kHz tone must come out as a 1 kHz tone.
    let seen = -1;
    let quietSince = Date.now();
    await until(() => {
      if (atTrunk.length !== seen) { seen = atTrunk.length; quietSince = Date.now(); }
      return seen > 0 && Date.now() - quietSince >= 300;
    }, 'the PCMU made of the noise');
    const fromNoise = atTrunk.length;
    const tone = (f: number) => Int16Array.from({ length: 960 }, (_, i) => Math.round(8000 * Math.sin((2 * Math.PI * 1000 * (f * 960 + i)) / 48000)));
    for (let i = 600; i < 625; i++) listener!({ payloadType: 111, sequenceNumber: i, timestamp: i * 960, marker: false, ssrc: 0x3333, payload: enc.encode(tone(i)) });
    await until(() => atTrunk.length >= fromNoise + 25, 'PCMU at the trunk for the good packets after the noise');
    const last = pcmuDecode(Buffer.concat(atTrunk.slice(-10)));
    const ratio = toneRatio(last, 8000, 1000);
    assert.ok(ratio > 0.8, `the tone after the noise: 1 kHz ratio ${ratio.toFixed(3)}`);
    assert.ok(bridge.stats().browser.dropped > 0, 'unknown payload types were dropped and counted');
  } finally {
    enc.delete();
    leg.close();
    trunk.close();
  }
});
