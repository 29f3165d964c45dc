import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import pino from 'pino';
import { MediaEngine } from '../../src/media';
import { buildRtp, parseRtp, type RtpPacketView } from '../../src/media/rtp';
import { generateSdesCrypto, SrtpSession } from '../../src/media/srtp';
import { threadSendBatch } from '../../src/media/udpSendBatch';
import { until } from '../support/tabs';
import { toneRatio } from '../support/audio';
import { pcmaDecode, pcmaEncode, pcmuDecode, pcmuEncode } from '../../src/media/codecs';

const logger = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function socket(): Promise<dgram.Socket & { got: Buffer[] }> {
  const s = dgram.createSocket('udp4') as dgram.Socket & { got: Buffer[] };
  s.got = [];
  s.on('message', (m) => s.got.push(m));
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return s;
}

test('bad RTP is dropped and counted, never thrown; CN is tolerated; valid audio goes through', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [19700, 19719], logger });
  const leg = await engine.createSipLeg({ callId: 't1' });
  const trunk = await socket();
  leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
  let audio = 0;
  leg.on('audio', () => audio++);
  const send = (b: Buffer) => trunk.send(b, leg.localPort, '127.0.0.1');
  send(Buffer.from([0x80, 0, 1]));                                   // too short
  send(Buffer.alloc(40, 0));                                         // version 0
  const pad = buildRtp(0, 1, 160, 7, Buffer.alloc(10)); pad[0] |= 0x20; pad[pad.length - 1] = 200;
  send(pad);                                                         // padding longer than the packet
  send(buildRtp(99, 2, 320, 7, Buffer.alloc(160)));                  // payload type not negotiated
  send(buildRtp(13, 3, 480, 7, Buffer.alloc(1)));                    // comfort noise: tolerated, not counted
  send(buildRtp(0, 4, 640, 7, Buffer.alloc(160, 0xff)));             // valid PCMU
  await sleep(100);
  assert.equal(audio, 1);
  assert.equal(leg.stats().dropped, 4);
  assert.equal(leg.stats().packetsReceived, 2, 'the packets of formats the SDP gave (CN tolerated) count as received; one of another format is only dropped');
  leg.close();
  trunk.close();
  assert.equal(engine.usage.portsAllocated, 0, 'the port pair went back to the allocator');
});

// Found with Linphone (test/e2e/linphoneTrunk.test.ts): mediastreamer2 sends STUN Binding
// Requests from its RTP and RTCP ports to ours until our first RTP and RTCP reach it (on RTCP every
// 500 ms, and our first report goes 5 s after the answer), and every one of them was counted as a
// dropped (malformed) packet: 10-20 in the CDR of each clean call, as SRTP failures with SRTP.
for (const srtp of [false, true]) {
  test(`STUN checks and empty keep-alives on the RTP and RTCP ports are neither counted as dropped nor latched onto (${srtp ? 'SRTP' : 'plain RTP'})`, async () => {
    const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: srtp ? [28718, 28719] : [28716, 28717], logger });
    const leg = await engine.createSipLeg({ callId: 'stun' });
    const trunk = await socket();
    const elsewhere = await socket();
    const ours = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
    const theirs = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, ...(srtp ? { srtp: { local: ours, remote: theirs } } : {}) });
    const far = new SrtpSession({ local: theirs, remote: ours });
    let audio = 0;
    leg.on('audio', () => audio++);
    try {
      // Linphone's: a Binding Request (type 0x0001, no attributes, RFC 5389 magic cookie), as seen on the wire.
      const bindingRequest = Buffer.from('000100002112a4423a1549309dfa63de9549a48b', 'hex');
      const withAttribute = Buffer.concat([Buffer.from('000100082112a442', 'hex'), Buffer.alloc(12, 7), Buffer.from('8022000461626364', 'hex')]);
      for (const port of [leg.localPort, leg.localPort + 1]) {
        for (const from of [trunk, elsewhere]) {
          from.send(bindingRequest, port, '127.0.0.1');
          from.send(withAttribute, port, '127.0.0.1');
          from.send(Buffer.alloc(0), port, '127.0.0.1');
        }
      }
      // Not STUN after all (its length field does not fit the datagram): refused as before.
      trunk.send(Buffer.concat([bindingRequest, Buffer.alloc(4)]), leg.localPort, '127.0.0.1');
      await sleep(100);
      assert.equal(leg.stats().dropped, 1, 'only the datagram that is not STUN is counted');
      assert.equal(leg.stats().packetsReceived, 0);
      assert.equal(audio, 0);
      // No latching on the STUN from elsewhere: the first audio, from the signalled port, is answered there.
      const rtp = buildRtp(0, 1, 160, 5, Buffer.alloc(160, 0x55));
      trunk.send(srtp ? far.protectRtp(rtp) : rtp, leg.localPort, '127.0.0.1');
      await until(() => audio === 1, 'the far end\'s audio');
      leg.sendAudio(Buffer.alloc(160, 0x42), 160);
      await until(() => trunk.got.length === 1, 'our audio at the signalled port');
      assert.equal(elsewhere.got.length, 0);
      assert.equal(leg.stats().dropped, 1);
    } finally {
      leg.close();
      trunk.close();
      elsewhere.close();
    }
  });
}

test('latching: media from a NATed port is answered there; a stranger cannot take the stream over', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [19720, 19739], logger });
  const leg = await engine.createSipLeg({ callId: 't2' });
  const signalled = await socket();
  const real = await socket();
  const stranger = await socket();
  leg.setRemote({ address: '127.0.0.1', port: signalled.address().port, codec: 'PCMU', payloadType: 0 });
  real.send(buildRtp(0, 1, 160, 5, Buffer.alloc(160)), leg.localPort, '127.0.0.1');
  await sleep(50);
  leg.sendAudio(Buffer.alloc(160, 1), 160);
  await sleep(50);
  assert.equal(real.got.length, 1, 'answered where the media came from');
  assert.equal(signalled.got.length, 0);
  stranger.send(buildRtp(0, 2, 320, 9, Buffer.alloc(160)), leg.localPort, '127.0.0.1');
  await sleep(50);
  leg.sendAudio(Buffer.alloc(160, 1), 160);
  await sleep(50);
  assert.equal(stranger.got.length, 0, 'no audio to the stranger');
  assert.equal(real.got.length, 2);
  // The stranger's packet never became audio (dropped by us, or by the kernel once the socket is
  // connected to the latched source).
  assert.equal(leg.stats().packetsReceived, 1);
  // A re-INVITE that moves the far end allows a new latch.
  leg.setRemote({ address: '127.0.0.1', port: stranger.address().port, codec: 'PCMU', payloadType: 0 });
  leg.sendAudio(Buffer.alloc(160, 1), 160);
  await sleep(50);
  assert.equal(stranger.got.length, 1);
  leg.close();
  for (const s of [signalled, real, stranger]) s.close();
});

test('audio queued on a connected socket still leaves when a re-INVITE moves the far end in the same turn (sends are batched per turn)', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22700, 22719], logger });
  const leg = await engine.createSipLeg({ callId: 't2b' });
  const before = await socket();
  const after = await socket();
  const refusedBefore = threadSendBatch.refused;
  try {
    leg.setRemote({ address: '127.0.0.1', port: before.address().port, codec: 'PCMU', payloadType: 0 });
    before.send(buildRtp(0, 1, 160, 5, Buffer.alloc(160)), leg.localPort, '127.0.0.1'); // latches: the socket connects
    await sleep(50);
    assert.equal(leg['rtpConnected'], 'yes', 'latched and connected');
    // One turn: audio is queued for the connected socket (no address), then a re-INVITE moves
    // the far end, which disconnects the socket before the turn's batch leaves.
    leg.sendAudio(Buffer.alloc(160, 1), 160);
    leg.setRemote({ address: '127.0.0.1', port: after.address().port, codec: 'PCMU', payloadType: 0 });
    leg.sendAudio(Buffer.alloc(160, 2), 160);
    await sleep(50);
    assert.equal(threadSendBatch.refused, refusedBefore, 'no datagram refused by dgram');
    assert.equal(before.got.length, 1, 'the packet sent before the move reached the old far end');
    assert.equal(after.got.length, 1, 'the one after it, the new far end');
  } finally {
    leg.close();
    before.close();
    after.close();
  }
});

test('SRTP leg: forged, replayed and unprotected packets are dropped and counted', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [19740, 19759], logger });
  const leg = await engine.createSipLeg({ callId: 't3' });
  const trunk = await socket();
  const ours = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const theirs = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, srtp: { local: ours, remote: theirs } });
  leg['seq'] = 0xfffd; // our packets below cross the sequence wrap
  const far = new SrtpSession({ local: theirs, remote: ours });
  let audio = 0;
  leg.on('audio', () => audio++);
  try {
    const good = far.protectRtp(buildRtp(0, 10, 1600, 3, Buffer.alloc(160, 0x55)));
    const forged = Buffer.from(good); forged[20] ^= 1;
    trunk.send(good, leg.localPort, '127.0.0.1');
    trunk.send(good, leg.localPort, '127.0.0.1');                                     // replay
    trunk.send(forged, leg.localPort, '127.0.0.1');                                   // tampered
    trunk.send(buildRtp(0, 11, 1760, 3, Buffer.alloc(160)), leg.localPort, '127.0.0.1'); // plain RTP
    await sleep(100);
    assert.equal(audio, 1);
    assert.equal(leg.stats().dropped, 3);
    // What we send decrypts at the far end.
    leg.sendAudio(Buffer.alloc(160, 0x42), 160);
    await sleep(50);
    const plain = far.unprotectRtp(trunk.got[trunk.got.length - 1]);
    assert.ok(plain && plain.subarray(12).every((b) => b === 0x42));
    // Our stream wraps (rollover counter 1); then a re-INVITE brings the far end's new key while
    // ours stays: what we send next must still authenticate under the context it holds for us.
    for (let i = 0; i < 3; i++) leg.sendAudio(Buffer.alloc(160, 0x42), 160);
    const theirsNew = generateSdesCrypto(2, 'AES_CM_128_HMAC_SHA1_80');
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, srtp: { local: ours, remote: theirsNew } });
    leg.sendAudio(Buffer.alloc(160, 0x43), 160);
    await until(() => trunk.got.length === 5, 'five packets at the far end');
    for (const p of trunk.got.slice(1)) assert.ok(far.unprotectRtp(p), `seq ${p.readUInt16BE(2)} authenticates at the far end`);
    far.updateKeys({ local: theirsNew, remote: ours });
    trunk.send(far.protectRtp(buildRtp(0, 12, 1920, 3, Buffer.alloc(160, 0x55))), leg.localPort, '127.0.0.1');
    await until(() => audio === 2, 'the far end\'s audio under its new key');
    // A re-INVITE to plain RTP keeps what SRTP refused in the counts.
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    assert.equal(leg.stats().dropped, 3);
  } finally {
    leg.close();
    trunk.close();
  }
});

test('a digit sent while audio flows: no sequence gaps, the end packet three times at the update interval, the timeline advanced once; held, time goes on but numbers do not', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22780, 22799], logger });
  const leg = await engine.createSipLeg({ callId: 'dtmf-tx' });
  const far = await socket();
  let timer: NodeJS.Timeout | undefined;
  try {
    leg.setRemote({ address: '127.0.0.1', port: far.address().port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
    const frame = () => leg.sendAudio(Buffer.alloc(160, 0xff), 160);
    for (let i = 0; i < 3; i++) frame();
    assert.ok(leg.sendDtmf('5', 100));
    // Audio keeps coming every 20 ms while the tone plays (the bridge does not stop it).
    timer = setInterval(frame, 20);
    await until(() => far.got.filter((p) => (p[1] & 0x7f) === 101).length === 7, 'the seven telephone-event packets');
    await sleep(80);
    clearInterval(timer);
    frame();
    await sleep(50);
    const pkts = far.got.map((b) => parseRtp(b)!);
    const seqSteps = pkts.slice(1).map((p, i) => (p.sequenceNumber - pkts[i].sequenceNumber) & 0xffff);
    assert.ok(seqSteps.every((d) => d === 1), `consecutive sequence numbers: steps ${seqSteps.join(',')}`);
    const events = pkts.filter((p) => p.payloadType === 101);
    const ends = events.filter((p) => (p.payload[1] & 0x80) !== 0);
    assert.equal(ends.length, 3);
    const firstAfter = pkts.find((p, i) => p.payloadType === 0 && i > pkts.indexOf(events[events.length - 1]))!;
    // The event ran 100 ms plus two repeats of its end packet 20 ms apart: 140 ms = 1120 ts.
    assert.equal((firstAfter.timestamp - events[0].timestamp) >>> 0, 1120, 'audio resumes where the event ends on the timeline');
    // Held by the far end (it sends only): frames are not sent and take no numbers, but time passes.
    const last = pkts[pkts.length - 1];
    leg.setRemote({ address: '127.0.0.1', port: far.address().port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101, direction: 'sendonly' });
    for (let i = 0; i < 5; i++) frame();
    leg.setRemote({ address: '127.0.0.1', port: far.address().port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
    frame();
    await until(() => far.got.length === pkts.length + 1, 'the packet after the hold');
    const resumed = parseRtp(far.got[far.got.length - 1])!;
    assert.equal((resumed.sequenceNumber - last.sequenceNumber) & 0xffff, 1, 'no sequence gap across the hold');
    assert.equal((resumed.timestamp - last.timestamp) >>> 0, 6 * 160, 'the timeline counts the held frames');
    // A re-INVITE to Opus: the leg's statistics and timeline run on 48 kHz from then on.
    leg.setRemote({ address: '127.0.0.1', port: far.address().port, codec: 'opus', payloadType: 111, telephoneEventPayloadType: 101 });
    assert.equal(leg['rx']['clockRate'], 48000);
  } finally {
    clearInterval(timer);
    leg.close();
    far.close();
  }
});

test('RTCP: an RR while held (not silence), RTCP on the RTP port never taken for RTP; malformed events and empty frames counted', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22800, 22819], logger });
  const leg = await engine.createSipLeg({ callId: 'rtcp' });
  const far = await socket();
  const from: dgram.RemoteInfo = { address: '127.0.0.1', family: 'IPv4', port: far.address().port, size: 0 };
  try {
    const remote = { address: '127.0.0.1', port: far.address().port, codec: 'PCMU' as const, payloadType: 0, telephoneEventPayloadType: 101, rtcpMux: true };
    leg.setRemote(remote);
    for (let seq = 1; seq <= 3; seq++) leg['onRtpDatagram'](buildRtp(0, seq, seq * 160, 0x99, Buffer.alloc(160)), from);
    await until(() => leg['rtpConnected'] === 'yes', 'the RTP socket connected to the latched far end');
    // Held by the far end: we send no RTP, but RTCP goes on, as a receiver report.
    leg.setRemote({ ...remote, direction: 'sendonly' });
    leg['sendReport']();
    await until(() => far.got.length === 1, 'a report while held');
    assert.equal(far.got[0][1], 201, 'an RR (we are not sending)');
    assert.equal(far.got[0].readUInt32BE(8), 0x99, 'its report block is about the far end\'s stream');
    leg.setRemote(remote);
    leg['sendReport']();
    await until(() => far.got.length === 2, 'the next report');
    assert.equal(far.got[1][1], 200, 'an SR once we send again');
    // An SR from the far end on the RTP port, without rtcp-mux signalled: read as RTCP, and the
    // receive statistics of the RTP stream stay as they were.
    leg.setRemote({ ...remote, rtcpMux: false });
    const sr = Buffer.alloc(28); sr[0] = 0x80; sr[1] = 200; sr.writeUInt16BE(6, 2); sr.writeUInt32BE(0x99, 4); sr.writeUInt32BE(0xe1000000, 8);
    leg['onRtpDatagram'](sr, from);
    assert.equal(leg['rx'].extendedHighestSeq, 3);
    assert.equal(leg.stats().packetsReceived, 3);
    const droppedBefore = leg.stats().dropped;
    leg['onRtpDatagram'](buildRtp(101, 4, 640, 0x99, Buffer.from([5])), from);       // telephone-event, 1 byte
    leg['onRtpDatagram'](buildRtp(0, 5, 800, 0x99, Buffer.alloc(0)), from);          // an empty PCMU frame
    assert.equal(leg.stats().dropped, droppedBefore + 2);
  } finally {
    leg.close();
    far.close();
  }
});

test('a failed SRTCP packet is counted once', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22820, 22839], logger });
  const leg = await engine.createSipLeg({ callId: 'srtcp' });
  try {
    const ours = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
    const theirs = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
    leg.setRemote({ address: '127.0.0.1', port: 9, codec: 'PCMU', payloadType: 0, srtp: { local: ours, remote: theirs } });
    const forged = new SrtpSession({ local: generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80'), remote: ours }).protectRtcp(Buffer.from('80c8000600000099e100000000000000000000000000000000000000', 'hex'));
    leg['onRtcpDatagram'](forged, '127.0.0.1');
    leg['onRtcpDatagram'](Buffer.alloc(10), '127.0.0.1'); // too short to be SRTCP
    assert.equal(leg.stats().dropped, 2);
  } finally {
    leg.close();
  }
});

test('no RTP for the configured time raises inactive once per period', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [19760, 19779], logger, inactivityTimeoutMs: 300 });
  const leg = await engine.createSipLeg({ callId: 't4' });
  const trunk = await socket();
  leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
  const t0 = Date.now();
  await new Promise<void>((r) => leg.once('inactive', () => r()));
  assert.ok(Date.now() - t0 >= 250);
  leg.close();
  trunk.close();
});

/**
 * Makes connect() on this real dgram socket fail the way the kernel would (EACCES from the
 * libuv handle), so Node's own dgram code reports it: a failed connect() cannot be produced on
 * loopback, where every address the leg latches onto is routable.
 */
function failConnects(sock: dgram.Socket): { attempts: number } {
  const stateSym = Object.getOwnPropertySymbols(sock).find((s) => s.description === 'state symbol');
  assert.ok(stateSym, 'dgram internals changed: no state symbol on the socket');
  const handle = (sock as unknown as Record<symbol, { handle: { connect(ip: string, port: number): number } }>)[stateSym].handle;
  const seen = { attempts: 0 };
  handle.connect = () => { seen.attempts++; return -13; }; // UV_EACCES
  return seen;
}

test('a failed connect() of the RTP socket: the leg keeps sending unconnected, latching still holds, nothing throws', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [20780, 20783], logger });
  const leg = await engine.createSipLeg({ callId: 't5' });
  const far = await socket();
  const stranger = await socket();
  const connects = failConnects(leg['rtpSocket']);
  let audio = 0;
  leg.on('audio', () => audio++);
  try {
    leg.setRemote({ address: '127.0.0.1', port: far.address().port, codec: 'PCMU', payloadType: 0, rtcpMux: true });
    far.send(buildRtp(0, 1, 160, 5, Buffer.alloc(160)), leg.localPort, '127.0.0.1'); // latches: connect() is tried
    await sleep(50);
    assert.equal(connects.attempts, 1, 'the leg tried to connect once media latched');
    assert.throws(() => leg['rtpSocket'].remoteAddress(), { code: 'ERR_SOCKET_DGRAM_NOT_CONNECTED' });
    for (let i = 0; i < 5; i++) {
      assert.doesNotThrow(() => leg.sendAudio(Buffer.alloc(160, 1), 160));
      await sleep(5);
    }
    await sleep(50);
    assert.equal(far.got.length, 5, 'every frame reached the far end, sent with its address');
    assert.equal(leg.stats().packetsSent, 5);
    // Unconnected, the latch is enforced by the leg itself: the far end is heard, a stranger is not.
    far.send(buildRtp(0, 2, 320, 5, Buffer.alloc(160)), leg.localPort, '127.0.0.1');
    stranger.send(buildRtp(0, 9, 320, 9, Buffer.alloc(160)), leg.localPort, '127.0.0.1');
    await sleep(50);
    assert.equal(audio, 2);
    assert.equal(leg.stats().dropped, 1);
    assert.equal(connects.attempts, 1, 'no second attempt per packet');
    assert.doesNotThrow(() => leg.close(), 'close (RTCP BYE over the unconnected socket) does not throw');
    assert.equal(engine.usage.portsAllocated, 0);
  } finally {
    leg.close();
    far.close();
    stranger.close();
  }
});

test('the far end\'s port closes under a connected RTP socket: ECONNREFUSED is handled, sending goes on, close is clean', async () => {
  const lines: Array<Record<string, unknown>> = [];
  const debugLogger = pino({ level: 'debug' }, { write: (l: string) => { lines.push(JSON.parse(l)); } });
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [20784, 20787], logger: debugLogger });
  const leg = await engine.createSipLeg({ callId: 't6' });
  const FAR_PORT = 20790;
  const bindFar = async () => {
    const s = dgram.createSocket('udp4') as dgram.Socket & { got: Buffer[] };
    s.got = [];
    s.on('message', (m) => s.got.push(m));
    await new Promise<void>((r) => s.bind(FAR_PORT, '127.0.0.1', () => r()));
    return s;
  };
  let far = await bindFar();
  try {
    leg.setRemote({ address: '127.0.0.1', port: FAR_PORT, codec: 'PCMU', payloadType: 0 });
    far.send(buildRtp(0, 1, 160, 5, Buffer.alloc(160)), leg.localPort, '127.0.0.1');
    await sleep(50);
    assert.equal(leg['rtpSocket'].remoteAddress().port, FAR_PORT, 'latched and connected');
    far.close();
    // Each packet to the closed port draws ICMP port unreachable; the connected socket then
    // fails a recvmsg with ECONNREFUSED, emitted as 'error' (fatal to the process if unhandled).
    const refused = () => lines.some((l) => l.msg === 'RTP socket error' && /ECONNREFUSED/.test(String(l.err)));
    for (let i = 0; i < 100 && !refused(); i++) {
      assert.doesNotThrow(() => leg.sendAudio(Buffer.alloc(160, 1), 160));
      await sleep(20);
    }
    assert.ok(refused(), 'the leg\'s error handler saw ECONNREFUSED');
    // The far end comes back on the same port: the leg, still connected, reaches it again.
    far = await bindFar();
    for (let i = 0; i < 5; i++) {
      assert.doesNotThrow(() => leg.sendAudio(Buffer.alloc(160, 2), 160));
      await sleep(10);
    }
    await sleep(50);
    assert.equal(far.got.length, 5);
    assert.equal(leg['rtpSocket'].remoteAddress().port, FAR_PORT, 'still connected');
  } finally {
    far.close(); // gone again before close(): the RTCP BYE draws one more refusal
    assert.doesNotThrow(() => leg.close());
  }
  await sleep(100); // any late error event would surface here
  assert.equal(engine.usage.portsAllocated, 0);
  assert.equal(engine.usage.legs, 0);
});

test('close() sends an RTCP BYE that reaches the far end, on its own RTCP socket and with rtcp-mux', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [20900, 20919], logger });
  // Separate RTCP: the far end's RTCP port is RTP + 1 (bound here as a pair).
  let farRtp = await socket();
  let farRtcp = dgram.createSocket('udp4') as dgram.Socket & { got: Buffer[] };
  for (let tries = 0; tries < 20; tries++) {
    try {
      await new Promise<void>((resolve, reject) => { farRtcp.once('error', reject); farRtcp.bind(farRtp.address().port + 1, '127.0.0.1', () => resolve()); });
      break;
    } catch {
      farRtp.close();
      farRtp = await socket();
      farRtcp = dgram.createSocket('udp4') as dgram.Socket & { got: Buffer[] };
    }
  }
  farRtcp.got = [];
  farRtcp.on('message', (m) => farRtcp.got.push(m));
  const leg = await engine.createSipLeg({ callId: 'bye1' });
  leg.setRemote({ address: '127.0.0.1', port: farRtp.address().port, codec: 'PCMU', payloadType: 0 });
  leg.close();
  assert.equal(engine.usage.portsAllocated, 0, 'the port pair goes back at once');
  await sleep(100);
  const bye = farRtcp.got.find((m) => m[1] === 203);
  assert.ok(bye, `an RTCP BYE arrived on the far end's RTCP port (got ${farRtcp.got.length} packets)`);

  // rtcp-mux, not latched yet (the RTP socket is not connected): the BYE comes on the RTP port.
  const mux = await socket();
  const leg2 = await engine.createSipLeg({ callId: 'bye2' });
  leg2.setRemote({ address: '127.0.0.1', port: mux.address().port, codec: 'PCMU', payloadType: 0, rtcpMux: true });
  leg2.close();
  await sleep(100);
  assert.ok(mux.got.some((m) => m[1] === 203), 'an RTCP BYE arrived with rtcp-mux');
  farRtp.close(); farRtcp.close(); mux.close();
  assert.equal(engine.usage.portsAllocated, 0);
});

test('telephone-event at 48 kHz (beside Opus): durations sent and read in 48 kHz ticks', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22900, 22909], logger });
  const leg = await engine.createSipLeg({ callId: 'dtmf-48k' });
  const far = await socket();
  const digits: Array<{ digit: string; durationMs: number }> = [];
  leg.on('dtmf', (d) => digits.push(d));
  try {
    // The far end's answer kept both formats we offered: we send on the audio's clock, and
    // read digits from either.
    leg.setRemote({ address: '127.0.0.1', port: far.address().port, codec: 'opus', payloadType: 111, telephoneEventPayloadType: 110, telephoneEventClockRate: 48000, telephoneEvents: [{ payloadType: 101, clockRate: 8000 }, { payloadType: 110, clockRate: 48000 }] });
    assert.ok(leg.sendDtmf('7', 100));
    await until(() => far.got.filter((p) => (p[1] & 0x7f) === 110 && (p[13] & 0x80) !== 0).length === 3, 'the three end packets');
    const end = parseRtp(far.got[far.got.length - 1])!;
    assert.equal(end.payload[0], 7);
    assert.equal(end.payload.readUInt16BE(2), 100 * 48, '100 ms = 4800 ticks of the 48 kHz clock');
    // The far end's digit, 160 ms long on the same clock.
    const ev = Buffer.from([1, 0x80 | 10, 0, 0]);
    ev.writeUInt16BE(160 * 48, 2);
    far.send(buildRtp(110, 1, 48000, 77, ev), leg.localPort, '127.0.0.1');
    await until(() => digits.length === 1, 'the far end\'s digit');
    assert.deepEqual(digits[0], { digit: '1', durationMs: 160 });
    // A digit on its 8 kHz format: 80 ms = 640 ticks of that clock.
    const ev8 = Buffer.from([9, 0x80 | 10, 0, 0]);
    ev8.writeUInt16BE(80 * 8, 2);
    far.send(buildRtp(101, 2, 96000, 77, ev8), leg.localPort, '127.0.0.1');
    await until(() => digits.length === 2, 'the digit on the 8 kHz format');
    assert.deepEqual(digits[1], { digit: '9', durationMs: 80 });
    assert.equal(leg.stats().dropped, 0);
  } finally {
    leg.close();
    far.close();
  }
});

test('a leg closed in the turn it sent audio: the packet still leaves (the send batch is flushed first), none refused', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22910, 22919], logger });
  const far = await socket();
  const refusedBefore = threadSendBatch.refused;
  try {
    for (const connected of [false, true]) {
      const leg = await engine.createSipLeg({ callId: `close-${connected}` });
      try {
        leg.setRemote({ address: '127.0.0.1', port: far.address().port, codec: 'PCMU', payloadType: 0 });
        if (connected) {
          // Latch (the leg connects its socket to the far end), then wait for the connect.
          far.send(buildRtp(0, 1, 160, 5, Buffer.alloc(160)), leg.localPort, '127.0.0.1');
          await until(() => leg['rtpConnected'] === 'yes', 'the RTP socket connected');
        }
        const before = far.got.filter((p) => (p[1] & 0x7f) === 0).length;
        leg.sendAudio(Buffer.alloc(160, 0xff), 160);
        assert.equal(threadSendBatch.queued, 1, 'the packet waits for the end of the turn');
        leg.close();
        await until(() => far.got.filter((p) => (p[1] & 0x7f) === 0).length === before + 1, `the audio packet (${connected ? 'connected' : 'unconnected'} socket)`, 2000);
        assert.equal(leg.stats().packetsSent, 1);
      } finally {
        leg.close();
      }
    }
    assert.equal(threadSendBatch.refused, refusedBefore, 'nothing dropped at a flush');
    assert.equal(engine.usage.portsAllocated, 0);
  } finally {
    far.close();
  }
});

test('two digits asked for 70 ms apart: the second waits for the first to end (no interleaved events), and starts where it ended on the timeline', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22970, 22979], logger });
  const leg = await engine.createSipLeg({ callId: 'dtmf-queue' });
  const far = await socket();
  try {
    leg.setRemote({ address: '127.0.0.1', port: far.address().port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
    assert.throws(() => leg.sendDtmf('x'), /not a DTMF digit/);
    assert.ok(leg.sendDtmf('1', 100));
    await sleep(70);
    assert.ok(leg.sendDtmf('2', 100));
    await until(() => far.got.filter((p) => (p[1] & 0x7f) === 101).length === 14, 'both digits\' 7 packets each');
    const events = far.got.map((b) => parseRtp(b)!).filter((p) => p.payloadType === 101);
    assert.deepEqual(events.map((p) => `${p.payload[0]}${p.payload[1] & 0x80 ? 'E' : ''}`), ['1', '1', '1', '1', '1E', '1E', '1E', '2', '2', '2', '2', '2E', '2E', '2E']);
    assert.equal((events[7].timestamp - events[0].timestamp) >>> 0, 1120, 'the second event starts 140 ms (100 + two end repeats) after the first');
    assert.ok(events[7].marker && !events[1].marker, 'each event\'s first packet has the marker');
  } finally {
    leg.close();
    far.close();
  }
});

test('resumed after a hold: the timestamp moves on by the time held and the first packet has the marker', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22980, 22989], logger });
  const leg = await engine.createSipLeg({ callId: 'hold-ts' });
  const far = await socket();
  try {
    leg.setRemote({ address: '127.0.0.1', port: far.address().port, codec: 'PCMU', payloadType: 0 });
    leg.sendAudio(Buffer.alloc(160, 0xff), 160);
    leg.paused = true; // the bridge holds: no frames reach the leg meanwhile
    const t0 = performance.now();
    await sleep(300);
    leg.paused = false;
    const held = performance.now() - t0;
    leg.sendAudio(Buffer.alloc(160, 0xff), 160);
    leg.sendAudio(Buffer.alloc(160, 0xff), 160);
    await until(() => far.got.length === 3, 'three packets');
    const [a, b, c] = far.got.map((p) => parseRtp(p)!);
    const step = (b.timestamp - a.timestamp) >>> 0;
    assert.ok(Math.abs(step - (160 + held * 8)) <= 16, `timestamp step ${step} for ${held.toFixed(0)} ms held`);
    assert.equal((b.sequenceNumber - a.sequenceNumber) & 0xffff, 1, 'no sequence gap');
    assert.deepEqual([a.marker, b.marker, c.marker], [false, true, false]);
  } finally {
    leg.close();
    far.close();
  }
});

test('latched while a re-INVITE moves the far end: the packet made while the socket connected is sent, not lost, and the new far end gets the audio after', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [22990, 22999], logger });
  const leg = await engine.createSipLeg({ callId: 'connecting' });
  const first = await socket();
  const second = await socket();
  const refusedBefore = threadSendBatch.refused;
  try {
    leg.setRemote({ address: '127.0.0.1', port: first.address().port, codec: 'PCMU', payloadType: 0 });
    // Media from the signalled address: the leg latches and starts connecting its socket.
    let state = '';
    await new Promise<void>((res) => {
      leg.once('audio', () => {
        state = leg['rtpConnected'];
        leg.sendAudio(Buffer.alloc(160, 1), 160); // made while connecting: waits for the outcome
        res();
      });
      first.send(buildRtp(0, 1, 160, 5, Buffer.alloc(160)), leg.localPort, '127.0.0.1');
    });
    assert.equal(state, 'connecting');
    await until(() => first.got.length === 1, 'the packet made while connecting');
    assert.equal(leg['rtpConnected'], 'yes');
    assert.equal(leg.stats().packetsSent, 1);
    // Now the race: latch anew (a re-INVITE to `second`, its media right away), and move again
    // while that connect is under way.
    leg.setRemote({ address: '127.0.0.1', port: second.address().port, codec: 'PCMU', payloadType: 0 });
    await new Promise<void>((res) => {
      leg.once('audio', () => {
        state = leg['rtpConnected'];
        leg.setRemote({ address: '127.0.0.1', port: first.address().port, codec: 'PCMU', payloadType: 0 });
        leg.sendAudio(Buffer.alloc(160, 2), 160);
        res();
      });
      second.send(buildRtp(0, 2, 320, 5, Buffer.alloc(160)), leg.localPort, '127.0.0.1');
    });
    assert.equal(state, 'connecting');
    await sleep(50);
    leg.sendAudio(Buffer.alloc(160, 3), 160);
    await until(() => first.got.length === 3, 'both packets at the far end signalled last');
    assert.deepEqual(first.got.slice(1).map((b) => parseRtp(b)!.payload[0]), [2, 3]);
    assert.equal(threadSendBatch.refused, refusedBefore, 'nothing refused by a socket left connected to the old far end');
  } finally {
    leg.close();
    first.close();
    second.close();
  }
});

test('a re-INVITE that changes only a=rtcp moves our RTCP; a far end on hold with c=0.0.0.0 that keeps sending is not latched onto (we stay silent)', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [23020, 23029], logger });
  const leg = await engine.createSipLeg({ callId: 'rtcp-move' });
  const rtp = await socket();
  const rtcpA = await socket();
  const rtcpB = await socket();
  try {
    leg.setRemote({ address: '127.0.0.1', port: rtp.address().port, rtcpPort: rtcpA.address().port, codec: 'PCMU', payloadType: 0 });
    leg.setRemote({ address: '127.0.0.1', port: rtp.address().port, rtcpPort: rtcpB.address().port, codec: 'PCMU', payloadType: 0 });
    // Old-style hold: c=0.0.0.0. Its music on hold still comes from the real address.
    leg.setRemote({ address: '0.0.0.0', port: rtp.address().port, rtcpPort: rtcpB.address().port, codec: 'PCMU', payloadType: 0 });
    await new Promise<void>((res) => { leg.once('audio', () => res()); rtp.send(buildRtp(0, 1, 160, 5, Buffer.alloc(160)), leg.localPort, '127.0.0.1'); });
    assert.equal(leg.sendingAllowed, false, 'not latched: still no address to send to');
    leg.sendAudio(Buffer.alloc(160, 1), 160);
    // Resume at the real address: audio goes there, and RTCP to the port of the last a=rtcp.
    leg.setRemote({ address: '127.0.0.1', port: rtp.address().port, rtcpPort: rtcpB.address().port, codec: 'PCMU', payloadType: 0 });
    leg.sendAudio(Buffer.alloc(160, 2), 160);
    await until(() => rtp.got.length === 1, 'the audio after the resume');
    assert.equal(parseRtp(rtp.got[0])!.payload[0], 2, 'nothing was sent while held');
    leg.close();
    await until(() => rtcpB.got.length === 1, 'the RTCP BYE on the new RTCP port');
    assert.equal(rtcpA.got.length, 0);
  } finally {
    leg.close();
    for (const s of [rtp, rtcpA, rtcpB]) s.close();
  }
});

test('a digit toward a G.711 trunk without telephone-event goes in-band: the two tones of the digit in the audio, then a pause, the timeline continuous; an Opus trunk without events refuses', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [25040, 25059], logger });
  const leg = await engine.createSipLeg({ callId: 'dtmf-inband' });
  const far = await socket();
  let timer: NodeJS.Timeout | undefined;
  try {
    for (const [codec, pt, decode] of [['PCMA', 8, pcmaDecode], ['PCMU', 0, pcmuDecode]] as const) {
      far.got.length = 0;
      leg.setRemote({ address: '127.0.0.1', port: far.address().port, codec, payloadType: pt });
      // The bridge's audio: a byte pattern neither the tones nor the pause can be mistaken for.
      const audio = Buffer.alloc(160, 0x42);
      const frame = () => leg.sendAudio(audio, 160);
      frame();
      assert.ok(leg.sendDtmf('8', 100), 'in-band toward G.711');
      timer = setInterval(frame, 20); // the bridge's audio goes on meanwhile
      await sleep(260);
      clearInterval(timer);
      await sleep(30);
      const pkts = far.got.map((b) => parseRtp(b)!);
      assert.ok(pkts.every((p) => p.payloadType === pt), 'all of it audio in the trunk\'s codec');
      const steps = pkts.slice(1).map((p, i) => [(p.sequenceNumber - pkts[i].sequenceNumber) & 0xffff, (p.timestamp - pkts[i].timestamp) >>> 0]);
      assert.ok(steps.every(([s, t]) => s === 1 && t === 160), `continuous: ${JSON.stringify(steps)}`);
      // Packets 1..5 carry the digit (852 + 1336 Hz), then three of silence, then the bridge's audio.
      const pcm = pkts.map((p) => decode(p.payload));
      for (const i of [1, 2, 3, 4, 5]) {
        assert.ok(toneRatio(pcm[i], 8000, 852) > 0.3 && toneRatio(pcm[i], 8000, 1336) > 0.3, `packet ${i}: ${toneRatio(pcm[i], 8000, 852).toFixed(2)} / ${toneRatio(pcm[i], 8000, 1336).toFixed(2)}`);
        assert.ok(toneRatio(pcm[i], 8000, 1209) < 0.05, 'not the neighbouring column');
      }
      assert.equal(pkts[1].marker, true, 'the digit starts with a marker');
      for (const i of [6, 7, 8]) assert.ok(pcm[i].every((v) => Math.abs(v) < 16), `packet ${i} silent`);
      assert.ok(pkts.length > 9, 'the bridge\'s audio resumes after the digit');
      assert.deepEqual([pkts[0].payload, pkts[9].payload], [audio, audio], 'audio before the digit and right after its pause');
    }
    // A trunk with a=ptime:30: the digit in 30 ms frames like the audio around it; a loss the
    // bridge reports meanwhile opens no hole inside the digit.
    far.got.length = 0;
    leg.setRemote({ address: '127.0.0.1', port: far.address().port, codec: 'PCMU', payloadType: 0, ptime: 30 });
    leg.sendAudio(Buffer.alloc(240, 0xff), 240);
    assert.ok(leg.sendDtmf('#', 100));
    leg.skipFrames(2, 240);
    await sleep(260);
    const p30 = far.got.map((b) => parseRtp(b)!);
    assert.equal(p30.length, 1 + 3 + 2, 'the audio frame, 90 ms of tone and 60 ms of pause in 30 ms packets: none cut by the loss');
    assert.ok(p30.every((p) => p.payload.length === 240), `30 ms packets: ${p30.map((p) => p.payload.length).join(',')}`);
    assert.ok(p30.slice(1).every((p, i) => ((p.sequenceNumber - p30[i].sequenceNumber) & 0xffff) === 1 && ((p.timestamp - p30[i].timestamp) >>> 0) === 240), 'continuous, in 30 ms steps');
    assert.ok(toneRatio(pcmuDecode(p30[1].payload), 8000, 941) > 0.3 && toneRatio(pcmuDecode(p30[1].payload), 8000, 1477) > 0.3, '#: 941 + 1477 Hz');
    leg.setRemote({ address: '127.0.0.1', port: far.address().port, codec: 'opus', payloadType: 111 });
    assert.equal(leg.sendDtmf('1', 100), false, 'no events and no G.711 to carry tones');
  } finally {
    clearInterval(timer);
    leg.close();
    far.close();
    await engine.close();
  }
});

test('a call held while a digit\'s tones play: nothing goes while held, and the timeline after it moves on by the time held, once', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [25710, 25719], logger });
  const leg = await engine.createSipLeg({ callId: 'dtmf-hold' });
  const far = await socket();
  try {
    leg.setRemote({ address: '127.0.0.1', port: far.address().port, codec: 'PCMU', payloadType: 0 });
    assert.ok(leg.sendDtmf('5', 300));
    await sleep(70);
    leg.paused = true; // the browser holds (the trunk could still be sent to)
    const heldFrom = far.got.length;
    const heldAt = performance.now();
    await sleep(100);
    assert.equal(far.got.length, heldFrom, 'no tone frames while held');
    leg.paused = false;
    const heldMs = performance.now() - heldAt;
    await sleep(320);
    const pkts = far.got.map((b) => parseRtp(b)!);
    assert.ok(pkts.length > heldFrom, 'the digit goes on after the resume');
    const jump = (pkts[heldFrom].timestamp - pkts[heldFrom - 1].timestamp) >>> 0;
    // One frame, plus the time held (the frames due meanwhile took none of it themselves).
    assert.ok(Math.abs(jump - (160 + heldMs * 8)) <= 2 * 160, `timestamp step over the hold ${jump}, held ${heldMs.toFixed(0)} ms`);
    assert.equal(pkts[heldFrom].marker, true, 'the first packet after the hold is marked');
  } finally {
    leg.close();
    far.close();
    await engine.close();
  }
});

test('a far end that holds with c=0.0.0.0 mid-digit gets no more of its events, and no RTCP BYE at the end (0.0.0.0 is this host on Linux)', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [25720, 25729], logger });
  const leg = await engine.createSipLeg({ callId: 'dtmf-hold0' });
  // The far end listens on every local address, as a socket of this host would get what goes to 0.0.0.0.
  const far = dgram.createSocket('udp4') as dgram.Socket & { got: Buffer[] };
  far.got = [];
  far.on('message', (m) => far.got.push(m));
  await new Promise<void>((r) => far.bind(0, '0.0.0.0', () => r()));
  const farRtcp = dgram.createSocket('udp4');
  const rtcpGot: Buffer[] = [];
  farRtcp.on('message', (m) => rtcpGot.push(m));
  await new Promise<void>((r) => farRtcp.bind(far.address().port + 1, '0.0.0.0', () => r()));
  try {
    const port = far.address().port;
    leg.setRemote({ address: '127.0.0.1', port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
    assert.ok(leg.sendDtmf('1', 400));
    await sleep(60);
    assert.ok(far.got.length >= 2, 'the digit\'s first packets came');
    leg.setRemote({ address: '0.0.0.0', port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
    await sleep(15); // what was already on its way
    const held = far.got.length;
    await sleep(450);
    assert.equal(far.got.length, held, 'nothing sent to 0.0.0.0 for the rest of the digit');
    leg.close();
    await sleep(50);
    assert.ok(!rtcpGot.some((b) => b[1] === 203), 'no BYE to 0.0.0.0');
  } finally {
    leg.close();
    far.close();
    farRtcp.close();
    await engine.close();
  }
});

test('a re-INVITE that renumbers telephone-event mid-digit: the rest of the digit goes on the new payload type; one that drops it: no more events', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [25734, 25737], logger });
  const leg = await engine.createSipLeg({ callId: 'te-renumber' });
  const far = await socket();
  try {
    const port = far.address().port;
    leg.setRemote({ address: '127.0.0.1', port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
    assert.ok(leg.beginLiveDtmf('6'));
    await sleep(60);
    leg.setRemote({ address: '127.0.0.1', port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 96 });
    await sleep(10);
    const at = far.got.length;
    leg.endLiveDtmf(150);
    await until(() => far.got.slice(at).filter((b) => b[13] & 0x80).length === 3, 'the end packets');
    const pts = far.got.map((b) => b[1] & 0x7f);
    assert.equal(pts[0], 101, 'begun on 101');
    assert.ok(pts.slice(at).every((pt) => pt === 96), `then on 96: ${pts.join(',')}`);
    // Dropped altogether mid-digit: nothing more on either number.
    await sleep(30);
    far.got.length = 0;
    assert.ok(leg.sendDtmf('6', 300));
    await sleep(50);
    leg.setRemote({ address: '127.0.0.1', port, codec: 'PCMU', payloadType: 0 });
    await sleep(15);
    const n = far.got.length;
    await sleep(350);
    assert.ok(far.got.slice(n).every((b) => (b[1] & 0x7f) === 0), 'no event packets once the far end has no telephone-event');
  } finally {
    leg.close();
    far.close();
    await engine.close();
  }
});

test('the other G.711 law the far end listed is taken and converted to the negotiated one (RFC 3264 §6.1); unlisted, it is dropped', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [25600, 25619], logger });
  const trunk = await socket();
  const legs: Array<Awaited<ReturnType<MediaEngine['createSipLeg']>>> = [];
  try {
    const pcm = new Int16Array(160).map((_, i) => Math.round(8000 * Math.sin((2 * Math.PI * 600 * i) / 8000)));
    const cases = [
      { codec: 'PCMU' as const, pt: 0, otherPt: 8, sent: pcmaEncode(pcm), decodeOwn: pcmuDecode, decodeSent: pcmaDecode },
      { codec: 'PCMA' as const, pt: 8, otherPt: 0, sent: pcmuEncode(pcm), decodeOwn: pcmaDecode, decodeSent: pcmuDecode },
    ];
    for (const c of cases) {
      const leg = await engine.createSipLeg({ callId: `law-${c.codec}` });
      legs.push(leg);
      leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: c.codec, payloadType: c.pt, otherLawPayloadType: c.otherPt });
      const got: RtpPacketView[] = [];
      leg.on('audio', (p) => got.push(p));
      const sentPacket = buildRtp(c.otherPt, 7, 1120, 9, c.sent);
      sentPacket[1] |= 0x80; // marker
      trunk.send(sentPacket, leg.localPort, '127.0.0.1');
      await until(() => got.length === 1, 'the converted packet', 2000);
      assert.equal(got[0].payloadType, c.pt, 'handed on as the negotiated payload type');
      assert.deepEqual([got[0].sequenceNumber, got[0].timestamp, got[0].ssrc, got[0].marker], [7, 1120, 9, true], 'its header otherwise as sent');
      assert.equal(leg.stats().packetsReceived, 1);
      const own = c.decodeOwn(got[0].payload);
      const sent = c.decodeSent(c.sent);
      // Each law quantizes on its own: the conversion stays within a quantization step of the sent audio.
      for (let i = 0; i < 160; i++) assert.ok(Math.abs(own[i] - sent[i]) <= Math.max(16, Math.abs(sent[i]) / 16), `sample ${i}: ${own[i]} vs ${sent[i]}`);
      assert.equal(leg.stats().dropped, 0);
    }
    // Not listed: the same packet is not audio.
    const plain = await engine.createSipLeg({ callId: 'law-unlisted' });
    legs.push(plain);
    plain.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    let audio = 0;
    plain.on('audio', () => audio++);
    trunk.send(buildRtp(8, 1, 160, 9, pcmaEncode(pcm)), plain.localPort, '127.0.0.1');
    await until(() => plain.stats().dropped === 1, 'the unlisted packet dropped', 2000);
    assert.equal(audio, 0);
  } finally {
    for (const l of legs) l.close();
    trunk.close();
  }
  assert.equal(engine.usage.portsAllocated, 0);
});

test('a packet of a format the SDP did not give neither latches the stream nor takes its source over', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [25620, 25623], logger });
  const leg = await engine.createSipLeg({ callId: 'unknown-pt' });
  const signalled = await socket();
  const stranger = await socket();
  try {
    leg.setRemote({ address: '127.0.0.1', port: signalled.address().port, codec: 'PCMU', payloadType: 0 });
    stranger.send(buildRtp(99, 1, 160, 5, Buffer.alloc(160)), leg.localPort, '127.0.0.1');
    await sleep(50);
    leg.sendAudio(Buffer.alloc(160, 1), 160);
    await sleep(50);
    assert.equal(stranger.got.length, 0, 'not latched onto the stranger');
    assert.equal(signalled.got.length, 1, 'audio still goes where the SDP said');
    // The real far end (another port: NAT) then latches as usual.
    let audio = 0;
    leg.on('audio', () => audio++);
    const real = await socket();
    real.send(buildRtp(0, 1, 160, 6, Buffer.alloc(160)), leg.localPort, '127.0.0.1');
    await sleep(50);
    leg.sendAudio(Buffer.alloc(160, 1), 160);
    await sleep(50);
    assert.equal(audio, 1);
    assert.equal(real.got.length, 1, 'latched to the source of the first packet of ours');
    real.close();
  } finally {
    leg.close();
    signalled.close();
    stranger.close();
  }
});

test('a second SSRC mixed into the stream is dropped and counted; a far end that changes its SSRC is followed from the new one\'s second packet', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [25624, 25627], logger });
  const leg = await engine.createSipLeg({ callId: 'ssrc' });
  const trunk = await socket();
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const heard: Array<{ ssrc: number; seq: number }> = [];
    leg.on('audio', (p: RtpPacketView) => heard.push({ ssrc: p.ssrc, seq: p.sequenceNumber }));
    const send = async (ssrc: number, seq: number) => { trunk.send(buildRtp(0, seq, seq * 160, ssrc, Buffer.alloc(160)), leg.localPort, '127.0.0.1'); await sleep(5); };
    // A and B interleaved, each in sequence: B never gets two in a row.
    for (let i = 0; i < 5; i++) { await send(0xa, 100 + i); await send(0xb, 500 + i); }
    await sleep(30);
    assert.deepEqual(heard.map((h) => h.ssrc), [0xa, 0xa, 0xa, 0xa, 0xa], 'only the first source is heard');
    assert.equal(leg.stats().dropped, 5, 'every packet of the second source counted as dropped');
    assert.equal(leg.stats().packetsReceived, 5);
    // A stops; C starts: its first packet is on probation, from its second on it is the source.
    heard.length = 0;
    for (let i = 0; i < 4; i++) await send(0xc, 900 + i);
    await sleep(30);
    assert.deepEqual(heard, [{ ssrc: 0xc, seq: 901 }, { ssrc: 0xc, seq: 902 }, { ssrc: 0xc, seq: 903 }]);
    assert.equal(leg.stats().dropped, 6);
    // A straggler from A is now the stranger.
    await send(0xa, 105);
    await sleep(30);
    assert.equal(heard.length, 3);
    assert.equal(leg.stats().dropped, 7);
  } finally {
    leg.close();
    trunk.close();
  }
});

test('RTT from RTCP: the far end\'s report on our SR (LSR, DLSR) gives the round trip; a report whose length runs past the datagram is counted', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [25632, 25635], logger });
  const leg = await engine.createSipLeg({ callId: 'rtt' });
  const far = await socket();
  try {
    leg.setRemote({ address: '127.0.0.1', port: far.address().port, codec: 'PCMU', payloadType: 0, rtcpMux: true });
    assert.equal(leg.stats().rttMs, null, 'no RTT before a report');
    leg['sendReport']();
    await until(() => far.got.length === 1, 'our SR');
    const sr = far.got[0];
    assert.equal(sr[1], 200);
    const ourSsrc = sr.readUInt32BE(4);
    const lsr = sr.readUInt32BE(10); // the middle 32 bits of its NTP timestamp
    await sleep(150);
    // The far end held our SR for 50 ms before answering (DLSR, 1/65536 s units).
    const rr = Buffer.alloc(32);
    rr[0] = 0x81; rr[1] = 201; rr.writeUInt16BE(7, 2); rr.writeUInt32BE(0x77, 4);
    rr.writeUInt32BE(ourSsrc, 8); rr.writeUInt32BE(lsr, 24); rr.writeUInt32BE(Math.round(0.05 * 65536), 28);
    // How long ago our SR left, by its own NTP time (not when this test noticed it: until() polls).
    const nowMs = Date.now();
    const nowMiddle = ((((Math.floor(nowMs / 1000) + 2208988800) & 0xffff) << 16) | Math.floor(((nowMs % 1000) / 1000) * 0x10000)) >>> 0;
    const held = (((nowMiddle - lsr) >>> 0) / 65536) * 1000;
    far.send(rr, leg.localPort, '127.0.0.1');
    await until(() => leg.stats().rttMs !== null, 'an RTT');
    const rtt = leg.stats().rttMs!;
    assert.ok(rtt >= held - 50 - 5 && rtt <= held - 50 + 60, `RTT ${rtt} ms, expected about ${held - 50} ms`);
    // A block about another source gives no RTT; a length field past the end is dropped and counted.
    const dropped = leg.stats().dropped;
    const bad = Buffer.from(rr); bad.writeUInt16BE(20, 2);
    far.send(bad, leg.localPort, '127.0.0.1');
    await until(() => leg.stats().dropped === dropped + 1, 'the bad report counted');
    // Not RTP version 2: dropped and counted.
    const v1 = Buffer.from(rr); v1[0] = 0x41;
    far.send(v1, leg.localPort, '127.0.0.1');
    await until(() => leg.stats().dropped === dropped + 2, 'the version-1 report counted');
    // Once the far end's audio gave its SSRC, only its own sender report sets the LSR we echo.
    far.send(buildRtp(0, 1, 160, 0xaaa, Buffer.alloc(160, 0xff)), leg.localPort, '127.0.0.1');
    await until(() => leg.stats().packetsReceived === 1, 'the far end\'s audio');
    const senderReport = (ssrc: number, ntpMiddle: number) => {
      const b = Buffer.alloc(28);
      b[0] = 0x80; b[1] = 200; b.writeUInt16BE(6, 2); b.writeUInt32BE(ssrc, 4); b.writeUInt32BE(ntpMiddle, 10);
      return b;
    };
    const ourLsr = async () => {
      far.got.length = 0;
      leg['sendReport']();
      await until(() => far.got.some((b) => b[1] === 200), 'our SR');
      const ours = far.got.find((b) => b[1] === 200)!;
      return ours.readUInt32BE(8 + 20 + 16); // its report block's LSR
    };
    far.send(senderReport(0xbbb, 0x12345678), leg.localPort, '127.0.0.1');
    await sleep(30);
    assert.equal(await ourLsr(), 0, 'an SR from another source is not echoed');
    // But its report block about us is read (an SBC's RTCP under its own SSRC): an RTT from it.
    const ours = far.got.find((b) => b[1] === 200)!;
    const sbc = Buffer.alloc(52);
    sbc[0] = 0x81; sbc[1] = 200; sbc.writeUInt16BE(12, 2); sbc.writeUInt32BE(0xbbb, 4);
    sbc.writeUInt32BE(ourSsrc, 28); sbc.writeUInt32BE(ours.readUInt32BE(10), 44); sbc.writeUInt32BE(0, 48);
    const rttBefore = leg.stats().rttMs;
    await sleep(40);
    far.send(sbc, leg.localPort, '127.0.0.1');
    await until(() => leg.stats().rttMs !== rttBefore, 'an RTT from the other source\'s block about us');
    assert.ok(leg.stats().rttMs! >= 30 && leg.stats().rttMs! < 1000, `RTT ${leg.stats().rttMs} ms`);
    far.send(senderReport(0xaaa, 0x12345678), leg.localPort, '127.0.0.1');
    await sleep(30);
    assert.equal(await ourLsr(), 0x12345678, 'the far end\'s own is');
  } finally {
    leg.close();
    far.close();
  }
});

test('telephone-events under an SSRC of their own (RFC 4733 allows it): the digit is read, the audio and its statistics are left alone', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [25672, 25675], logger });
  const leg = await engine.createSipLeg({ callId: 'te-ssrc' });
  const trunk = await socket();
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, telephoneEventPayloadType: 101 });
    const audio: number[] = [];
    const digits: string[] = [];
    leg.on('audio', (p: RtpPacketView) => audio.push(p.sequenceNumber));
    leg.on('dtmf', (ev: { digit: string }) => digits.push(ev.digit));
    const send = async (pt: number, seq: number, ts: number, ssrc: number, payload: Buffer) => { trunk.send(buildRtp(pt, seq, ts, ssrc, payload), leg.localPort, '127.0.0.1'); await sleep(3); };
    for (let i = 0; i < 6; i++) {
      await send(0, 100 + i, i * 160, 0xa0, Buffer.alloc(160));
      if (i >= 2 && i <= 4) await send(101, 700 + i, 5000, 0xe0, Buffer.from([6, i === 4 ? 0x8a : 0x0a, 0, 160 * i]));
    }
    await sleep(30);
    assert.deepEqual(digits, ['6']);
    assert.deepEqual(audio, [100, 101, 102, 103, 104, 105], 'every audio packet, none taken for a new source');
    assert.equal(leg.stats().packetsReceived, 6, 'the statistics are the audio source\'s');
    assert.equal(leg.stats().packetsLost, 0);
    assert.equal(leg.stats().dropped, 0);
  } finally {
    leg.close();
    trunk.close();
  }
});
