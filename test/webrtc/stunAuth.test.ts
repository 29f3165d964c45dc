import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { authenticBindingRequest, isStunBindingRequest } from '../../src/webrtc/stunAuth';
import { guardIceReceive } from '../../src/webrtc/iceSocketGuard';

// werift's STUN message class (not exported: found next to its entry point) as the signer.
const stunDir = join(dirname(require.resolve('werift')), '..', '..', 'ice', 'src', 'stun');
const { Message } = require(join(stunDir, 'message.js'));
const { methods, classes } = require(join(stunDir, 'const.js'));

function request(o: { username?: string; password?: string; useCandidate?: boolean; fingerprint?: boolean }): Buffer {
  const m = new Message(methods.BINDING, classes.REQUEST);
  if (o.username !== undefined) m.setAttribute('USERNAME', o.username);
  m.setAttribute('PRIORITY', 0x6e0001ff).setAttribute('ICE-CONTROLLING', 5n);
  if (o.useCandidate) m.setAttribute('USE-CANDIDATE', null);
  if (o.password !== undefined) m.addMessageIntegrity(Buffer.from(o.password, 'utf8'));
  if (o.fingerprint !== false) m.addFingerprint();
  return Buffer.from(m.bytes);
}

test('a connectivity check signed with our ICE password and naming our ufrag first is authentic, with or without USE-CANDIDATE', () => {
  assert.deepEqual(authenticBindingRequest(request({ username: 'ours:theirs', password: 'our-ice-password-0123', useCandidate: true }), 'ours', 'our-ice-password-0123'), { useCandidate: true });
  assert.deepEqual(authenticBindingRequest(request({ username: 'ours:theirs', password: 'our-ice-password-0123', fingerprint: false }), 'ours', 'our-ice-password-0123'), { useCandidate: false });
});

test('forged checks are not: no MESSAGE-INTEGRITY, another password, another ufrag, no USERNAME, a truncated or altered message, not a Binding request', () => {
  const pw = 'our-ice-password-0123';
  assert.equal(authenticBindingRequest(request({ username: 'ours:theirs', useCandidate: true }), 'ours', pw), null, 'no MESSAGE-INTEGRITY');
  assert.equal(authenticBindingRequest(request({ username: 'ours:theirs', password: 'guessed', useCandidate: true }), 'ours', pw), null, 'wrong password');
  assert.equal(authenticBindingRequest(request({ username: 'other:theirs', password: pw, useCandidate: true }), 'ours', pw), null, 'another ufrag');
  assert.equal(authenticBindingRequest(request({ username: 'oursX:theirs', password: pw }), 'ours', pw), null, 'a ufrag that only starts like ours');
  assert.equal(authenticBindingRequest(request({ password: pw }), 'ours', pw), null, 'no USERNAME');
  const good = request({ username: 'ours:theirs', password: pw, useCandidate: true });
  assert.equal(authenticBindingRequest(good.subarray(0, good.length - 12), 'ours', pw), null, 'truncated');
  const altered = Buffer.from(good);
  altered[28] ^= 1; // inside the USERNAME value
  assert.equal(authenticBindingRequest(altered, 'ours', pw), null, 'altered');
  const response = Buffer.from(good);
  response.writeUInt16BE(0x0101, 0);
  assert.equal(isStunBindingRequest(response), false);
  assert.equal(authenticBindingRequest(response, 'ours', pw), null, 'a response is no request');
  assert.equal(authenticBindingRequest(Buffer.alloc(10), 'ours', pw), null);
});

test('an attribute past MESSAGE-INTEGRITY (other than a final FINGERPRINT), or bytes past the STUN length, makes a check inauthentic: the MAC does not cover them, and werift would read them', () => {
  const pw = 'our-ice-password-0123';
  const signed = request({ username: 'ours:theirs', password: pw, fingerprint: false });
  // Someone who saw a check appends USE-CANDIDATE after its MESSAGE-INTEGRITY (and fixes the length).
  const appended = Buffer.concat([signed, Buffer.from([0x00, 0x25, 0x00, 0x00])]);
  appended.writeUInt16BE(appended.length - 20, 2);
  assert.equal(authenticBindingRequest(appended, 'ours', pw), null);
  assert.equal(authenticBindingRequest(Buffer.concat([signed, Buffer.alloc(4)]), 'ours', pw), null, 'trailing bytes past the length');
  assert.deepEqual(authenticBindingRequest(signed, 'ours', pw), { useCandidate: false });
});

test('the ICE socket guard: werift gets signed checks, DTLS only from an address a signed check came from, RTP from anyone; the 16 most recently checked addresses are remembered', () => {
  const got: string[] = [];
  const guard = guardIceReceive((d, a) => got.push(`${d[0]}@${a[1]}`), 'ours', 'pw', new Set());
  const signed = request({ username: 'ours:theirs', password: 'pw' });
  const dtls = Buffer.from([22, 0xfe, 0xfd]);
  const rtp = Buffer.from([0x80, 111]);
  guard(dtls, ['127.0.0.1', 1]);
  guard(request({ username: 'ours:theirs', password: 'not ours' }), ['127.0.0.1', 1]);
  guard(dtls, ['127.0.0.1', 1]);
  guard(rtp, ['127.0.0.1', 1]);
  assert.deepEqual(got, ['128@1'], 'a forged check and DTLS from where none came are dropped; RTP passes (SRTP judges it)');
  guard(signed, ['127.0.0.1', 1]);
  guard(dtls, ['127.0.0.1', 1]);
  guard(dtls, ['127.0.0.2', 1]);
  assert.deepEqual(got.slice(1), ['0@1', '22@1'], 'same port, other host: not the checked address');
  // Port 1 keeps checking (consent freshness) while the browser checks from 20 other ports.
  got.length = 0;
  for (let port = 100; port < 120; port++) { guard(signed, ['127.0.0.1', port]); guard(signed, ['127.0.0.1', 1]); }
  got.length = 0;
  for (const port of [1, 100, 104, 105, 119]) guard(dtls, ['127.0.0.1', port]);
  assert.deepEqual(got, ['22@1', '22@105', '22@119'], 'the oldest checked ones were forgotten, never the one still checking');
});
