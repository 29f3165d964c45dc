/**
 * call.transfer() in the SDK (web/src/sdk/call.ts): the `transfer` request it sends, resolving
 * when the call ends as transferred, rejecting with the gateway's code and SIP status (the call
 * stays up), ignoring another transfer's refusal, and what an older gateway's `unknown-type`
 * does. Fake WebSocket and timers (./fakeBrowser.ts); the gateway's side is in
 * test/calls/transfer.test.ts and test/e2e/transferBaresip.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { answeredCall, connect, last, settle, tick } from './fakeBrowser';
import type { TransferError } from '../../web/src/sdk/call';

const transfersSent = () => last().sent.filter((m) => m.type === 'transfer');

/** Settles `p` into a string: 'resolved', or the error's code/sipStatus/message. */
const outcome = (p: Promise<void>) => p.then(() => 'resolved', (e: TransferError) => `${e.code}/${e.sipStatus ?? '-'}: ${e.message}`);

/** An answered call with a restart and a transfer both out, unanswered: what an old gateway's `unknown-type` may refuse. */
async function restartAndTransferOut() {
  const { client } = await connect();
  const call = await answeredCall(client);
  const restartFailures: string[] = [];
  call.on('mediaRestartFailed', ({ reason }) => restartFailures.push(reason));
  void call.restartMedia().catch(() => undefined);
  await settle();
  const transfer = outcome(call.transfer('+15550002222'));
  await settle();
  return { client, call, restartFailures, transfer };
}

test('transfer() sends `transfer` with a ref, reports progress, and resolves once the call ended as transferred', async () => {
  const { client } = await connect();
  const call = await answeredCall(client);
  const progress: number[] = [];
  call.on('transferProgress', ({ status }) => progress.push(status));
  const result = outcome(call.transfer('+15550002222'));
  await settle();
  const [req] = transfersSent();
  assert.deepEqual(req, { type: 'transfer', callId: call.id, to: '+15550002222', ref: req.ref });
  assert.equal(typeof req.ref, 'string');
  last().deliver({ type: 'transfer-progress', callId: call.id, status: 100, ref: req.ref });
  last().deliver({ type: 'transfer-progress', callId: call.id, status: 180, ref: 'another' });
  last().deliver({ type: 'ended', callId: call.id, cause: 'transferred' });
  assert.equal(await result, 'resolved');
  assert.deepEqual(progress, [100], 'only its own transfer\'s progress');
  assert.equal(call.state, 'ended');
  assert.equal(call.endInfo?.cause, 'transferred');
  client.close();
});

test('transfer() rejects with the code and SIP status of the refusal; the call stays up and may transfer again', async () => {
  const { client } = await connect();
  const call = await answeredCall(client);
  const errors: string[] = [];
  call.on('error', (e) => errors.push(e.code));
  const first = outcome(call.transfer('+15550002222'));
  await settle();
  const ref1 = transfersSent()[0].ref;
  // Another transfer's refusal (an earlier one) does not settle this one.
  last().deliver({ type: 'error', code: 'transfer-failed', message: 'old', request: 'transfer', callId: call.id, ref: 'old-ref', sipStatus: 500 });
  await settle();
  last().deliver({ type: 'error', code: 'transfer-failed', message: 'REFER refused: 403 Forbidden', request: 'transfer', callId: call.id, ref: ref1, sipStatus: 403 });
  assert.equal(await first, 'transfer-failed/403: REFER refused: 403 Forbidden');
  assert.equal(call.state, 'answered', 'the call goes on');
  assert.deepEqual(errors, ['transfer-failed', 'transfer-failed'], 'each refusal is an error event');
  const second = outcome(call.transfer('+442071234567'));
  await settle();
  const ref2 = transfersSent()[1].ref;
  assert.notEqual(ref2, ref1);
  last().deliver({ type: 'error', code: 'forbidden', message: '+442071234567 is international', request: 'transfer', callId: call.id, ref: ref2 });
  assert.equal(await second, 'forbidden/-: +442071234567 is international');
  assert.equal(call.state, 'answered');
  client.close();
});

test('transfer() of a call not answered, a second while one is out, a call that ends otherwise, a gateway without transfers', async () => {
  const early = await connect();
  const ringing = early.client.call('+15550001111');
  assert.equal(await outcome(ringing.transfer('+15550002222')), 'invalid-state/-: only an answered call can be transferred');
  ringing.hangup();
  early.client.close();
  const { client } = await connect();
  const call = await answeredCall(client);
  const first = outcome(call.transfer('+15550002222'));
  assert.equal(await outcome(call.transfer('+15550003333')), 'invalid-state/-: a transfer of this call is in progress');
  await settle();
  assert.equal(transfersSent().length, 1, 'the second was not sent');
  last().deliver({ type: 'ended', callId: call.id, cause: 'remote-hangup' });
  assert.equal(await first, 'ended/-: the call ended (remote-hangup) before the transfer was done');

  const second = await connect();
  const other = await answeredCall(second.client);
  const old = outcome(other.transfer('+15550002222'));
  await settle();
  // A gateway older than `transfer`: unknown-type, naming neither request nor call.
  last().deliver({ type: 'error', code: 'unknown-type', message: 'unknown message type "transfer"' });
  assert.equal(await old, 'unknown-type/-: unknown message type "transfer"');
  assert.equal(other.state, 'answered');
  client.close();
  second.client.close();
});

test('an `unknown-type` naming `transfer` (a gateway that knows `restart` but not `transfer`) settles the transfer, not a restart out at the same time; one naming `restart` the restart', async () => {
  const { client, call, restartFailures, transfer } = await restartAndTransferOut();
  last().deliver({ type: 'error', code: 'unknown-type', message: 'unknown message type "transfer"' });
  assert.equal(await transfer, 'unknown-type/-: unknown message type "transfer"');
  assert.deepEqual(restartFailures, [], 'the restart still waits for its answer');
  assert.ok(call.awaitsRestartAnswer);
  last().deliver({ type: 'error', code: 'unknown-type', message: 'unknown message type "restart"' });
  await settle();
  assert.equal(restartFailures.length, 1, 'the restart\'s own refusal fails it');
  client.close();
});

test('a transfer whose outcome never comes (lost with a dropped connection) rejects with `timeout` after 75 s; the call goes on and may transfer again', async () => {
  const { client } = await connect();
  const call = await answeredCall(client);
  const lost = outcome(call.transfer('+15550002222'));
  await settle();
  await tick(74_000);
  let settled = false;
  void lost.then(() => { settled = true; });
  await settle();
  assert.equal(settled, false, 'still waiting at 74 s');
  await tick(1_000);
  assert.equal(await lost, 'timeout/-: no outcome of the transfer came from the gateway');
  assert.equal(call.state, 'answered');
  const again = outcome(call.transfer('+15550003333'));
  await settle();
  last().deliver({ type: 'ended', callId: call.id, cause: 'transferred' });
  assert.equal(await again, 'resolved');
  client.close();
});

test('an `unknown-type` naming neither `transfer` nor `restart` goes to a restart waiting for its answer, as before transfers existed', async () => {
  const { client, call, restartFailures, transfer } = await restartAndTransferOut();
  last().deliver({ type: 'error', code: 'unknown-type', message: 'unknown message type "restartX"' });
  await settle();
  assert.equal(restartFailures.length, 1, 'the restart is refused');
  last().deliver({ type: 'ended', callId: call.id, cause: 'transferred' });
  assert.equal(await transfer, 'resolved', 'the transfer was not taken for refused');
  client.close();
});
