import { test } from 'node:test';
import assert from 'node:assert/strict';
import { redactSipTrace } from '../../src/sip';

test('SIP traces hide digest credentials and SDES keys, and keep everything else', () => {
  const msg = [
    'INVITE sip:+15551230000@trunk.example SIP/2.0',
    'Authorization: Digest username="gw", realm="trunk", nonce="abc", response="0123456789abcdef"',
    'proxy-authorization : Digest username="gw", response="fedcba"',
    'Call-ID: x1',
    '',
    'm=audio 30000 RTP/SAVP 0',
    'a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4',
    'a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk',
  ].join('\r\n');
  const out = redactSipTrace(msg);
  assert.doesNotMatch(out, /0123456789abcdef|fedcba|WVNfX19z|QUJDREVG/);
  assert.match(out, /^Authorization: \[redacted\]\r$/m);
  assert.match(out, /^proxy-authorization : \[redacted\]\r$/m);
  assert.match(out, /a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:\[redacted\]\|2\^20\|1:4/);
  assert.match(out, /^Call-ID: x1\r$/m);
  assert.match(out, /^m=audio 30000 RTP\/SAVP 0\r$/m);
});
