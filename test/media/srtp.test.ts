import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RtpHeader, SrtpSession as WeriftSrtp } from 'werift';
import { chooseCrypto, deriveKeys, formatCryptoAttribute, generateSdesCrypto, parseCryptoAttribute, SrtpSession } from '../../src/media/srtp';
import { AesCtr, counterIv } from '../../src/media/srtp/srtpSession';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('RFC 3711 Appendix B.3: key derivation test vectors', () => {
  const k = deriveKeys(hex('E1F97A0D3E018BE0D64FA32C06DE4139'), hex('0EC675AD498AFEEBB6960B3AABE6'));
  assert.equal(k.rtpEnc.toString('hex'), 'c61e7a93744f39ee10734afe3ff7a087');
  assert.equal(k.rtpSalt.toString('hex'), '30cbbc08863d8c85d49db34a9ae1');
  assert.equal(k.rtpAuth.toString('hex'), 'cebe321f6ff7716b6fd4ab49af256a156d38baa4');
});

test('RFC 3711 Appendix B.2: AES-CM keystream, its counter block built from the salt for SSRC 0 and index 0', () => {
  const iv = counterIv(Buffer.alloc(16, 0xaa), hex('F0F1F2F3F4F5F6F7F8F9FAFBFCFD'), 0, 0, 0);
  assert.equal(iv.toString('hex'), 'f0f1f2f3f4f5f6f7f8f9fafbfcfd0000');
  // The whole segment of 65282 blocks: its last three are the RFC's too.
  const ks = Buffer.alloc(65282 * 16);
  new AesCtr(hex('2B7E151628AED2A6ABF7158809CF4F3C')).xor(iv, new Uint8Array(ks.length), ks, 0);
  assert.equal(ks.subarray(0, 48).toString('hex').toUpperCase(), 'E03EAD0935C95E80E166B16DD92B4EB4' + 'D23513162B02D0F72A43A2FE4A5F97AB' + '41E95B3BB0A2E8DD477901E4FCA894C0');
  assert.equal(ks.subarray(ks.length - 48).toString('hex').toUpperCase(), 'EC8CDF7398607CB0F2D21675EA9EA1E4' + '362B7C3C6773516318A077D7FC5073AE' + '6A2CC3787889374FBEB4C81B17BA6C44');
});

function rtp(seq: number, ssrc = 0x11223344, payload = Buffer.from('hello srtp payload, twenty ms of audio')): Buffer {
  const h = Buffer.alloc(12);
  h[0] = 0x80; h[1] = 0; h.writeUInt16BE(seq, 2); h.writeUInt32BE(seq * 160, 4); h.writeUInt32BE(ssrc, 8);
  return Buffer.concat([h, payload]);
}

test('_80 interoperates with werift SrtpSession both ways', () => {
  const a = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const b = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const ours = new SrtpSession({ local: a, remote: b });
  const theirs = new WeriftSrtp({ keys: { localMasterKey: b.key, localMasterSalt: b.salt, remoteMasterKey: a.key, remoteMasterSalt: a.salt }, profile: 1 });
  const plain = rtp(1000);
  const decoded = theirs.decrypt(ours.protectRtp(plain));
  assert.deepEqual(Buffer.from(decoded), plain);
  const header = new RtpHeader({ sequenceNumber: 7, timestamp: 1120, ssrc: 0x55667788, payloadType: 0 });
  const payload = Buffer.from('from werift to us');
  const back = ours.unprotectRtp(Buffer.from(theirs.encrypt(payload, header)));
  assert.ok(back);
  assert.deepEqual(back.subarray(12), payload);
});

test('_32 round trip uses a 4-byte tag; tampering and replays are rejected and counted', () => {
  const a = generateSdesCrypto(2, 'AES_CM_128_HMAC_SHA1_32');
  const b = generateSdesCrypto(2, 'AES_CM_128_HMAC_SHA1_32');
  const tx = new SrtpSession({ local: a, remote: b });
  const rx = new SrtpSession({ local: b, remote: a });
  const p = rtp(5);
  const s = tx.protectRtp(p);
  assert.equal(s.length, p.length + 4);
  assert.deepEqual(rx.unprotectRtp(s), p);
  assert.equal(rx.unprotectRtp(s), null);
  assert.equal(rx.stats.replays, 1);
  const bad = Buffer.from(tx.protectRtp(rtp(6)));
  bad[20] ^= 1;
  assert.equal(rx.unprotectRtp(bad), null);
  assert.equal(rx.stats.authFailures, 1);
  assert.equal(rx.unprotectRtp(Buffer.alloc(5)), null);
  assert.equal(rx.stats.malformed, 1);
});

test('rollover counter across a sequence wrap, and reordering inside the window', () => {
  const a = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const b = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const tx = new SrtpSession({ local: a, remote: b });
  const rx = new SrtpSession({ local: b, remote: a });
  const seqs = [65533, 65534, 65535, 0, 1, 2];
  const prot = seqs.map((s) => tx.protectRtp(rtp(s)));
  // deliver 65535 after 0 (reordered across the wrap)
  for (const i of [0, 1, 3, 2, 4, 5]) assert.deepEqual(rx.unprotectRtp(prot[i]), rtp(seqs[i]), `seq ${seqs[i]}`);
});

test('re-key on a re-INVITE: only the direction whose key changed starts over (our rollover counter and SRTCP index survive the far end\'s new key)', () => {
  const ours = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const theirs = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_32');
  const us = new SrtpSession({ local: ours, remote: theirs });
  const far = new SrtpSession({ local: theirs, remote: ours });
  const rtcp = Buffer.from('80c80006112233440000000000000000000000000000000000000000', 'hex');
  // Our stream wraps (ROC 1), and our SRTCP index moves on.
  for (const seq of [65534, 65535, 0, 1]) assert.ok(far.unprotectRtp(us.protectRtp(rtp(seq))), `seq ${seq}`);
  for (let i = 0; i < 3; i++) assert.ok(far.unprotectRtcp(us.protectRtcp(rtcp)), `SRTCP ${i}`);
  // The far end re-keys its own stream; ours is unchanged, so its context for our key stays.
  const theirsNew = generateSdesCrypto(2, 'AES_CM_128_HMAC_SHA1_80');
  us.updateKeys({ local: ours, remote: theirsNew });
  far.updateKeys({ local: theirsNew, remote: ours });
  assert.ok(far.unprotectRtp(us.protectRtp(rtp(2))), 'our next packet (ROC 1) still authenticates at the far end');
  assert.ok(far.unprotectRtcp(us.protectRtcp(rtcp)), 'our next SRTCP is not taken for a replay');
  assert.ok(us.unprotectRtp(far.protectRtp(rtp(7, 0x55))), 'the far end\'s packets under its new key');
  // Our own new key: a new context on both sides, from ROC 0.
  const oursNew = generateSdesCrypto(3, 'AES_CM_128_HMAC_SHA1_80');
  us.updateKeys({ local: oursNew, remote: theirsNew });
  far.updateKeys({ local: theirsNew, remote: oursNew });
  assert.ok(far.unprotectRtp(us.protectRtp(rtp(3))));
  assert.equal(far.stats.authFailures + far.stats.replays, 0);
});

test('protectRtpParts (header and payload held apart) gives the same packets as protectRtp, across a sequence wrap', () => {
  const a = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const b = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const whole = new SrtpSession({ local: a, remote: b });
  const parts = new SrtpSession({ local: a, remote: b });
  for (const seq of [65534, 65535, 0, 1]) {
    const plain = rtp(seq);
    assert.deepEqual(parts.protectRtpParts(plain.subarray(0, 12), 12, plain.subarray(12)), whole.protectRtp(plain), `seq ${seq}`);
  }
});

test('replay window: 128 indexes; late packets inside it accepted once, older ones refused', () => {
  const a = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const b = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const tx = new SrtpSession({ local: a, remote: b });
  const rx = new SrtpSession({ local: b, remote: a });
  const prot = new Map<number, Buffer>();
  for (let seq = 1000; seq <= 1400; seq++) prot.set(seq, tx.protectRtp(rtp(seq)));
  const ok = (seq: number) => rx.unprotectRtp(prot.get(seq)!) !== null;
  assert.ok(ok(1000));
  assert.ok(ok(1200), 'a jump forward (packets 1001-1199 missing)');
  assert.ok(ok(1073), '127 behind the highest: inside the window');
  assert.ok(!ok(1073), 'and only once');
  assert.ok(!ok(1072), '128 behind: outside the window');
  assert.ok(!ok(1000), 'seen, and outside the window anyway');
  assert.ok(ok(1250), 'forward by 50: the slots passed over are free again');
  assert.ok(ok(1210), 'one of them, missing until now');
  assert.ok(!ok(1200), 'seen before the move');
  assert.ok(ok(1400), 'forward by more than the window');
  assert.ok(!ok(1250), 'now outside it');
  assert.ok(ok(1300), 'inside it, not seen');
  assert.equal(rx.stats.replays, 5);
  assert.equal(rx.stats.authFailures, 0);
});

test('SRTCP round trip with the 80-bit tag for both suites', () => {
  for (const suite of ['AES_CM_128_HMAC_SHA1_80', 'AES_CM_128_HMAC_SHA1_32'] as const) {
    const a = generateSdesCrypto(1, suite); const b = generateSdesCrypto(1, suite);
    const tx = new SrtpSession({ local: a, remote: b }); const rx = new SrtpSession({ local: b, remote: a });
    const rr = Buffer.from('81c90007deadbeef' + '00'.repeat(24), 'hex');
    const s = tx.protectRtcp(rr);
    assert.equal(s.length, rr.length + 14);
    assert.deepEqual(rx.unprotectRtcp(s), rr);
    assert.equal(rx.unprotectRtcp(s), null, 'replayed SRTCP is rejected');
  }
});

test('a=crypto parsing tolerates lifetime, MKI, several keys; rejects what we cannot do', () => {
  const c = generateSdesCrypto(3, 'AES_CM_128_HMAC_SHA1_80');
  const key = Buffer.concat([c.key, c.salt]).toString('base64');
  assert.equal(formatCryptoAttribute(c), `3 AES_CM_128_HMAC_SHA1_80 inline:${key}`);
  const p = parseCryptoAttribute(`1 AES_CM_128_HMAC_SHA1_32 inline:${key}|2^31|1:4;inline:${key}|2^20 KDR=0`);
  assert.ok(!('error' in p));
  assert.equal(p.suite, 'AES_CM_128_HMAC_SHA1_32');
  assert.deepEqual(p.key, c.key);
  assert.equal(p.mki, '00000001', 'MKI 1 in 4 bytes');
  assert.equal((parseCryptoAttribute(`1 AES_CM_128_HMAC_SHA1_80 inline:${key}|258:2`) as { mki: string }).mki, '0102', 'MKI without a lifetime');
  assert.equal((parseCryptoAttribute(`1 AES_CM_128_HMAC_SHA1_80 inline:${key}|2^20`) as { mki?: string }).mki, undefined);
  assert.match((parseCryptoAttribute(`1 AES_CM_128_HMAC_SHA1_80 inline:${key}|65536:2`) as { error: string }).error, /does not fit in 2 bytes/);
  assert.match((parseCryptoAttribute(`1 AES_CM_128_HMAC_SHA1_80 inline:${key}|1:0`) as { error: string }).error, /length of 1 to 128/);
  assert.match((parseCryptoAttribute(`1 AEAD_AES_256_GCM inline:${key}`) as { error: string }).error, /unsupported crypto suite/);
  assert.match((parseCryptoAttribute(`1 AES_CM_128_HMAC_SHA1_80 inline:${key} UNENCRYPTED_SRTP`) as { error: string }).error, /session parameter/);
  assert.match((parseCryptoAttribute(`1 AES_CM_128_HMAC_SHA1_80 inline:${key} FEC_KEY=inline:${key}`) as { error: string }).error, /session parameter/);
  // A replay window hint our 128-packet window meets, and FEC_ORDER without an FEC stream, are fine.
  assert.ok(!('error' in parseCryptoAttribute(`1 AES_CM_128_HMAC_SHA1_80 inline:${key} WSH=64 FEC_ORDER=FEC_SRTP`)));
  assert.ok(!('error' in parseCryptoAttribute(`1 AES_CM_128_HMAC_SHA1_80 inline:${key} WSH=128`)));
  assert.match((parseCryptoAttribute(`1 AES_CM_128_HMAC_SHA1_80 inline:${key} WSH=256`) as { error: string }).error, /replay window of 256/);
  assert.match((parseCryptoAttribute('garbage') as { error: string }).error, /needs a tag/);
  assert.match((parseCryptoAttribute('1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=') as { error: string }).error, /no usable inline key/);
  const chosen = chooseCrypto([`1 AES_256_CM_HMAC_SHA1_80 inline:${key}`, `2 AES_CM_128_HMAC_SHA1_32 inline:${key}`]);
  assert.equal(chosen?.remote.tag, 2);
  assert.equal(chosen?.localSuite, 'AES_CM_128_HMAC_SHA1_32');
});

test('a far end whose a=crypto has an MKI: its SRTP and SRTCP carry it before the tag, and are read (the wrong MKI is refused)', () => {
  for (const suite of ['AES_CM_128_HMAC_SHA1_80', 'AES_CM_128_HMAC_SHA1_32'] as const) {
    const theirs = generateSdesCrypto(1, suite);
    const ours = generateSdesCrypto(1, suite);
    const sender = new SrtpSession({ local: theirs, remote: ours }); // the far end, as if without MKI
    const withMki = (packet: Buffer, tagLen: number, mki: Buffer) => Buffer.concat([packet.subarray(0, packet.length - tagLen), mki, packet.subarray(packet.length - tagLen)]);
    const tagLen = suite === 'AES_CM_128_HMAC_SHA1_80' ? 10 : 4;
    const rx = new SrtpSession({ local: ours, remote: { ...theirs, mki: '00000001' } });
    const rtp = (seq: number) => Buffer.concat([Buffer.from([0x80, 0, 0, seq, 0, 0, 0, 160, 0, 0, 0x12, 0x34]), Buffer.alloc(160, seq)]);
    const plain = rtp(7);
    assert.deepEqual(rx.unprotectRtp(withMki(sender.protectRtp(plain), tagLen, Buffer.from('00000001', 'hex'))), plain, `${suite}: SRTP with the MKI`);
    assert.equal(rx.unprotectRtp(withMki(sender.protectRtp(rtp(8)), tagLen, Buffer.from('00000002', 'hex'))), null, 'another MKI names a key we do not have');
    assert.equal(rx.stats.authFailures, 1);
    const rr = Buffer.from([0x80, 201, 0, 1, 0, 0, 0x12, 0x34]);
    assert.deepEqual(rx.unprotectRtcp(withMki(sender.protectRtcp(rr), 10, Buffer.from('00000001', 'hex'))), rr, `${suite}: SRTCP with the MKI`);
    // Without an MKI in the a=crypto, the same packets fail: the MKI bytes would be read as the tag's.
    const noMki = new SrtpSession({ local: ours, remote: theirs });
    assert.equal(noMki.unprotectRtp(withMki(sender.protectRtp(rtp(9)), tagLen, Buffer.from('00000001', 'hex'))), null);
    assert.equal(noMki.stats.authFailures, 1);
  }
});
