import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import pino from 'pino';
import { MediaEngine } from '../../src/media';
import { buildRtp } from '../../src/media/rtp';
import { generateSdesCrypto, SrtpSession } from '../../src/media/srtp';

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
  assert.equal(leg.stats().packetsReceived, 3, 'the three well-formed RTP packets count as received');
  leg.close();
  trunk.close();
  assert.equal(engine.usage.portsAllocated, 0, 'the port pair went back to the allocator');
});

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

test('SRTP leg: forged, replayed and unprotected packets are dropped and counted', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [19740, 19759], logger });
  const leg = await engine.createSipLeg({ callId: 't3' });
  const trunk = await socket();
  const ours = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const theirs = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0, srtp: { local: ours, remote: theirs } });
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
  } finally {
    leg.close();
    trunk.close();
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
