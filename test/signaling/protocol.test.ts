/**
 * The signaling schema's edges (src/signaling/protocol.ts): what a refusal names, and which header
 * values may go on toward SIP. The live behaviour is in signalingFuzz.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseClientMessage } from '../../src/signaling/protocol';

const SDP = 'v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n';
const call = (value: string) => parseClientMessage(JSON.stringify({ type: 'call', to: '1000', sdp: SDP, ref: 'a', headers: { 'X-Account': value } }));

test('header values: text, tab and non-ASCII pass; every other control character (C0, DEL, C1) is refused', () => {
  for (const ok of ['plain', 'a\tb', 'é☎', '\u2028', '\u00a0', '']) assert.equal(call(ok).ok, true, JSON.stringify(ok));
  for (const bad of ['a\rb', 'a\nb', '\u0000', 'a\u000bb', '\u001b[31m', '\u007f', '\u0085', '\u009f']) {
    const r = call(bad);
    assert.equal(r.ok, false, JSON.stringify(bad));
    if (!r.ok) assert.deepEqual([r.code, r.request, r.ref], ['bad-message', 'call', 'a']);
  }
});

test('a refused request about a call names that call when its callId is usable', () => {
  for (const msg of [
    { type: 'accept', callId: 'c1', sdp: 'v=0' },
    { type: 'dtmf', callId: 'c1', digits: 'x' },
    { type: 'reject', callId: 'c1', reason: 'maybe' },
    { type: 'restart', callId: 'c1', sdp: 1 },
  ]) {
    const r = parseClientMessage(JSON.stringify(msg));
    assert.equal(r.ok, false);
    if (!r.ok) assert.deepEqual([r.request, r.callId], [msg.type, 'c1'], JSON.stringify(msg));
  }
  // Not a usable callId (empty, too long, not a string): named nowhere.
  for (const callId of ['', 'x'.repeat(65), 7]) {
    const r = parseClientMessage(JSON.stringify({ type: 'dtmf', callId, digits: '1' }));
    assert.equal(r.ok, false);
    if (!r.ok) assert.equal(r.callId, undefined, JSON.stringify(callId));
  }
  // Requests that are not about a call name none, even with a callId field.
  const r = parseClientMessage(JSON.stringify({ type: 'call', callId: 'c1', sdp: 1 }));
  assert.equal(!r.ok && r.callId, undefined);
});
