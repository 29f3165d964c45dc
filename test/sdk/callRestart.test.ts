/**
 * A call's media restart (web/src/sdk/call.ts) against late answers: each `restart` carries a
 * ref of its own, and an answer or refusal naming another (an earlier restart, given up on here
 * or replaced at the gateway) is not taken for the current one. Fake WebSocket and timers
 * (./fakeBrowser.ts); the end-to-end behaviour is in test/e2e/mediaRestart.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakePeerConnection, answeredCall, connect, last, settle, tick } from './fakeBrowser';

/** A client with an answered call, its restart events logged. */
async function callWithLog() {
  const { client } = await connect();
  const call = await answeredCall(client);
  const events: string[] = [];
  call.on('mediaRestarting', () => events.push('restarting'));
  call.on('mediaRestartFailed', ({ reason }) => events.push(`failed: ${reason}`));
  return { client, call, events };
}
const restartsSent = () => last().sent.filter((m) => m.type === 'restart');

test('each restart names itself; the answer to an earlier one (late, after ours timed out) is not applied to the next', async () => {
  const { client, call, events } = await callWithLog();
  void call.restartMedia().catch(() => undefined);
  await settle();
  const [first] = restartsSent();
  assert.equal(typeof first.ref, 'string');
  await tick(15_000); // no answer: given up
  assert.deepEqual(events, ['restarting', 'failed: the new connection did not connect within 15 s']);
  void call.restartMedia().catch(() => undefined);
  await settle();
  const second = restartsSent()[1];
  assert.notEqual(second.ref, first.ref);
  const pc = FakePeerConnection.all.at(-1)!;
  last().deliver({ type: 'restarted', callId: call.id, sdp: 'v=0 late answer', ref: first.ref });
  await settle();
  assert.equal(pc.remoteDescriptions.length, 0, 'the late answer was not taken');
  last().deliver({ type: 'restarted', callId: call.id, sdp: 'v=0 its answer', ref: second.ref });
  await settle();
  assert.deepEqual(pc.remoteDescriptions.map((d) => d.sdp), ['v=0 its answer']);
  client.close();
});

test('the refusal of an earlier restart (replaced at the gateway) does not fail the current one; its own refusal does', async () => {
  const { client, call, events } = await callWithLog();
  void call.restartMedia().catch(() => undefined);
  await settle();
  const [current] = restartsSent();
  last().deliver({ type: 'error', code: 'invalid-state', message: 'the call ended, or a newer restart replaced this one', request: 'restart', callId: call.id, ref: 'm0' });
  await settle();
  assert.deepEqual(events, ['restarting'], 'still waiting for its own answer');
  last().deliver({ type: 'error', code: 'too-many-calls', message: 'no WebRTC port free for the new connection', request: 'restart', callId: call.id, ref: current.ref });
  await settle();
  assert.deepEqual(events, ['restarting', 'failed: the gateway refused the media restart: no WebRTC port free for the new connection']);
  client.close();
});

test('a gateway that names no ref (older): its answer still reaches the restart in progress', async () => {
  const { client, call } = await callWithLog();
  void call.restartMedia().catch(() => undefined);
  await settle();
  const pc = FakePeerConnection.all.at(-1)!;
  last().deliver({ type: 'restarted', callId: call.id, sdp: 'v=0 answer' });
  await settle();
  assert.deepEqual(pc.remoteDescriptions.map((d) => d.sdp), ['v=0 answer']);
  client.close();
});
