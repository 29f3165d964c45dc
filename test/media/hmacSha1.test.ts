import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes, randomInt } from 'node:crypto';
import { HmacSha1 } from '../../src/media/srtp/hmacSha1';

const hex = (u: Uint8Array) => Buffer.from(u).toString('hex');

test('HMAC-SHA1: RFC 2202 test cases 1-7', () => {
  const cases: Array<[Buffer, Buffer, string]> = [
    [Buffer.alloc(20, 0x0b), Buffer.from('Hi There'), 'b617318655057264e28bc0b6fb378c8ef146be00'],
    [Buffer.from('Jefe'), Buffer.from('what do ya want for nothing?'), 'effcdf6ae5eb2fa2d27416d5f184df9c259a7c79'],
    [Buffer.alloc(20, 0xaa), Buffer.alloc(50, 0xdd), '125d7342b9ac11cd91a39af48aa17b4f63f175d3'],
    [Buffer.from('0102030405060708090a0b0c0d0e0f10111213141516171819', 'hex'), Buffer.alloc(50, 0xcd), '4c9007f4026250c6bc8414f9bf50c86c2d7235da'],
    [Buffer.alloc(20, 0x0c), Buffer.from('Test With Truncation'), '4c1a03424b55e07fe7f27be1d58bb9324a9a5a04'],
    [Buffer.alloc(80, 0xaa), Buffer.from('Test Using Larger Than Block-Size Key - Hash Key First'), 'aa4ae5e15272d00e95705637ce8a3b55ed402112'],
    [Buffer.alloc(80, 0xaa), Buffer.from('Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data'), 'e8e99d0f45237d786d6bbaa7965c7808bbff1a91'],
  ];
  for (const [key, data, want] of cases) assert.equal(hex(new HmacSha1(key).mac(data, data.length)), want);
});

test('HMAC-SHA1: equals node:crypto for every message length 0-300, with and without a 32-bit suffix', () => {
  for (const keyLen of [20, 1, 64, 65, 100]) {
    const key = randomBytes(keyLen);
    const mac = new HmacSha1(key); // one instance: state must not leak from one message to the next
    for (let len = 0; len <= 300; len++) {
      const data = randomBytes(len + 7); // only the first `len` bytes count
      const want = createHmac('sha1', key).update(data.subarray(0, len)).digest('hex');
      assert.equal(hex(mac.mac(data, len)), want, `key ${keyLen} length ${len}`);
      const suffix = randomInt(0, 2 ** 32 - 1) >>> 0;
      const s = Buffer.alloc(4);
      s.writeUInt32BE(suffix);
      const wantS = createHmac('sha1', key).update(data.subarray(0, len)).update(s).digest('hex');
      assert.equal(hex(mac.mac(data, len, suffix)), wantS, `key ${keyLen} length ${len} + suffix`);
    }
  }
});

test('HMAC-SHA1: matches() compares the truncated tag', () => {
  const mac = new HmacSha1(randomBytes(20));
  const data = randomBytes(60);
  const tag = Buffer.from(mac.mac(data, 50)).subarray(0, 10);
  const pkt = Buffer.concat([data.subarray(0, 50), tag]);
  mac.mac(pkt, 50);
  assert.equal(mac.matches(pkt, 50, 10), true);
  assert.equal(mac.matches(pkt, 50, 4), true);
  pkt[55] ^= 1;
  assert.equal(mac.matches(pkt, 50, 10), false);
  assert.equal(mac.matches(pkt, 50, 4), true); // byte 5 of the tag is beyond a 32-bit tag
});
