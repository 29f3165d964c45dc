import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { authenticBindingRequest, isStunBindingRequest } from '../../src/webrtc/stunAuth';
import { guardIceReceive, guardSockets, newGuardState, type DatagramHandler } from '../../src/webrtc/iceSocketGuard';

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

/** werift's STUN message class with a chosen transaction id: a retransmission or replay of a check. */
function signedCheck(o: { password: string; tid?: Buffer; method?: number }): Buffer {
  const m = new Message(o.method ?? methods.BINDING, classes.REQUEST, o.tid);
  m.setAttribute('USERNAME', 'ours:theirs').setAttribute('PRIORITY', 0x6e0001ff).setAttribute('ICE-CONTROLLING', 5n);
  m.addMessageIntegrity(Buffer.from(o.password, 'utf8'));
  m.addFingerprint();
  return Buffer.from(m.bytes);
}

/** DTLS records (type, 2 version bytes, epoch, sequence, length, fragment) back to back in one datagram. */
function dtls(...records: Array<[type: number, fragment: Buffer]>): Buffer {
  return Buffer.concat(records.map(([type, fragment]) => {
    const h = Buffer.alloc(13);
    h[0] = type;
    h.writeUInt16BE(0xfefd, 1);
    h.writeUInt16BE(fragment.length, 11);
    return Buffer.concat([h, fragment]);
  }));
}

test('the ICE socket guard: werift gets signed checks only, DTLS only from an address a signed check came from, RTP from anyone; the 64 most recently checked addresses are remembered', () => {
  const got: string[] = [];
  const guard = guardIceReceive((d, a) => got.push(`${d[0]}@${a[1]}`), () => ({ ufrag: 'ours', password: 'pw' }), newGuardState());
  const signed = () => signedCheck({ password: 'pw' });
  const hs = dtls([22, Buffer.alloc(30)]);
  const rtp = Buffer.concat([Buffer.from([0x80, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 42]), Buffer.alloc(20)]);
  guard(hs, ['127.0.0.1', 1]);
  guard(request({ username: 'ours:theirs', password: 'not ours' }), ['127.0.0.1', 1]);
  guard(hs, ['127.0.0.1', 1]);
  guard(rtp, ['127.0.0.1', 1]);
  assert.deepEqual(got, ['128@1'], 'a forged check and DTLS from where none came are dropped; RTP passes (SRTP judges it)');
  guard(signed(), ['127.0.0.1', 1]);
  guard(hs, ['127.0.0.1', 1]);
  guard(hs, ['127.0.0.2', 1]);
  assert.deepEqual(got.slice(1), ['0@1', '22@1'], 'same port, other host: not the checked address');
  // Port 1 keeps checking (consent freshness) while the browser checks from 70 other ports.
  for (let port = 100; port < 170; port++) { guard(signed(), ['127.0.0.1', port]); guard(signed(), ['127.0.0.1', 1]); }
  got.length = 0;
  for (const port of [1, 100, 106, 107, 169]) guard(hs, ['127.0.0.1', port]);
  assert.deepEqual(got, ['22@1', '22@107', '22@169'], 'the oldest checked ones were forgotten, never the one still checking');
});

test('the ICE socket guard: a signed check replayed from another address is dropped and lets nothing in; the browser\'s own retransmission passes', () => {
  const got: string[] = [];
  const guard = guardIceReceive((d, a) => got.push(`${d[0]}@${a[1]}`), () => ({ ufrag: 'ours', password: 'pw' }), newGuardState());
  const check = signedCheck({ password: 'pw', tid: Buffer.from('000102030405060708090a0b', 'hex') });
  guard(check, ['127.0.0.1', 1]);
  guard(check, ['127.0.0.1', 1]); // its retransmission
  guard(check, ['127.0.0.1', 666]); // seen on the wire, sent again from elsewhere
  guard(dtls([21, Buffer.from([1, 0])]), ['127.0.0.1', 666]);
  guard(dtls([22, Buffer.alloc(8)]), ['127.0.0.1', 666]);
  assert.deepEqual(got, ['0@1', '0@1']);
});

test('the ICE socket guard: no STUN but Binding requests (werift answered any other request with a signed error three times its size); no DTLS alert or unknown record, even from the browser; no RTP header werift would choke on', () => {
  const got: Buffer[] = [];
  const guard = guardIceReceive((d) => got.push(d), () => ({ ufrag: 'ours', password: 'pw' }), newGuardState());
  guard(signedCheck({ password: 'pw' }), ['127.0.0.1', 1]);
  got.length = 0;
  const from: [string, number] = ['127.0.0.1', 1];
  // STUN: an Allocate request (signed or not), a Binding indication, a Binding response.
  guard(signedCheck({ password: 'pw', method: 0x003 }), from);
  const indication = Buffer.from(new Message(methods.BINDING, classes.INDICATION).bytes);
  const response = Buffer.from(new Message(methods.BINDING, classes.RESPONSE).bytes);
  guard(indication, from);
  guard(response, from);
  // DTLS: alerts (plaintext, or an epoch-1 record werift reads as one), a record type werift
  // does not know, one hidden behind a handshake record, a truncated record.
  const epoch1Alert = dtls([21, Buffer.from([1, 0])]);
  epoch1Alert.writeUInt16BE(1, 3);
  for (const d of [dtls([21, Buffer.from([1, 0])]), epoch1Alert, dtls([25, Buffer.from([0])]), dtls([22, Buffer.alloc(20)], [21, Buffer.from([2, 40])]), dtls([22, Buffer.alloc(20)]).subarray(0, 20)]) guard(d, from);
  // RTP: an extension claiming 0xffff words; one longer than the packet; CSRCs past the end.
  const head = (b0: number) => Buffer.from([b0, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 42]);
  guard(Buffer.concat([head(0x90), Buffer.from([0xbe, 0xde, 0xff, 0xff]), Buffer.alloc(20)]), from);
  guard(Buffer.concat([head(0x90), Buffer.from([0xbe, 0xde, 0x00, 0x08]), Buffer.alloc(20)]), from);
  guard(Buffer.concat([head(0x8f), Buffer.alloc(30)]), from);
  assert.equal(got.length, 0, `passed: ${got.map((d) => d.subarray(0, 4).toString('hex')).join(' ')}`);
  // What does pass: the handshake, several records in one datagram, CCS + encrypted Finished,
  // application data; RTP with a short extension and its tag; RTCP (second byte 200).
  const fine = [
    dtls([22, Buffer.alloc(40)]), dtls([22, Buffer.alloc(10)], [22, Buffer.alloc(12)]), dtls([20, Buffer.from([1])], [22, Buffer.alloc(48)]), dtls([23, Buffer.alloc(30)]),
    Buffer.concat([head(0x90), Buffer.from([0xbe, 0xde, 0x00, 0x02]), Buffer.alloc(8), Buffer.alloc(30)]),
    Buffer.concat([Buffer.from([0x81, 200, 0, 6]), Buffer.alloc(40)]),
  ];
  for (const d of fine) guard(d, from);
  assert.equal(got.length, fine.length);
});

test('guardSockets guards werift\'s sockets already listed and each one it adds later (gathering past our SDP, an ICE restart), each once', () => {
  const pw = 'our-ice-password-0123';
  const seen: string[] = [];
  const socket = (name: string) => ({ transport: { onData: ((data: Buffer) => { seen.push(`${name}:${data[0] < 4 ? 'stun' : 'rtp'}`); }) as DatagramHandler | undefined } });
  const early = socket('early');
  const list: Array<ReturnType<typeof socket> | { transport?: undefined }> = [early, { transport: undefined }];
  const state = newGuardState();
  let wraps = 0;
  let unguardable = 0;
  guardSockets(list, (onData) => { wraps++; return guardIceReceive(onData, () => ({ ufrag: 'ours', password: pw }), state); }, () => { unguardable++; });
  assert.equal(unguardable, 1, 'the one without a receive handler is said');
  const late = socket('late');
  list.push(late);
  list.push(late); // the same socket again is not wrapped twice
  assert.equal(wraps, 2);
  list.push({ transport: undefined }); // as werift's TURN socket would be
  assert.equal(unguardable, 2);
  const unsigned = request({ username: 'ours:theirs', useCandidate: true });
  const signed = request({ username: 'ours:theirs', password: pw, useCandidate: true });
  const rtp = Buffer.alloc(172); rtp[0] = 0x80; rtp[1] = 111;
  for (const s of [early, late]) {
    s.transport.onData!(unsigned, ['192.0.2.9', 4000]);
    s.transport.onData!(signed, ['127.0.0.1', 5000]);
    s.transport.onData!(rtp, ['127.0.0.1', 5000]);
  }
  assert.deepEqual(seen, ['early:stun', 'early:rtp', 'late:stun', 'late:rtp'], 'unsigned checks dropped on both; signed checks and RTP pass on both');
});
