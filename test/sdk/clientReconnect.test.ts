/**
 * The browser SDK's reconnecting (web/src/sdk/client.ts) as a state machine, against a fake
 * WebSocket and fake timers: orders of events and timers a real browser makes hard to reach —
 * a listener that closes the client mid-reconnect, sessions dropped right after their welcome,
 * slow token functions, refused tokens. The end-to-end behaviour with Chromium and a gateway is
 * in test/e2e/stayConnected.test.ts and signalingResume.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeSocket, answeredCall, connect, last, sessionCount, settle, tick, welcome, type Client } from './fakeBrowser';

test('the gateway closes 1012 (restarting): a new session follows after a randomized wait under 1 s; an idle client gets `reconnected` (not resumed)', async () => {
  const { client, events } = await connect();
  await tick(60_000); // a session that lasted: the waits start from the beginning
  last().drop(1012);
  await settle();
  assert.deepEqual(events, ['reconnecting']);
  assert.equal(FakeSocket.all.length, 1, 'not at once');
  await tick(1000);
  assert.equal(FakeSocket.all.length, 2, 'within 1 s');
  last().accept();
  assert.deepEqual(last().types(), ['hello'], 'a fresh hello, no resume');
  last().deliver(welcome());
  assert.deepEqual(events, ['reconnecting', 'reconnected:new']);
  assert.equal(client.sessionId, `s${sessionCount()}`);
  client.close();
});

test('close() from a call\'s `ended` listener while the gateway\'s close ends it: no reconnect follows, nothing is emitted after', async () => {
  const { client, events } = await connect();
  const call = await answeredCall(client);
  call.on('ended', () => client.close());
  last().drop(1012);
  await tick(120_000);
  assert.equal(FakeSocket.all.length, 1, 'no new socket');
  assert.deepEqual(events, []);
  assert.equal(call.endInfo?.cause, 'failed');
});

test('close() from a call\'s `ended` listener when a resume finds a new session: that socket is closed, nothing more is sent or emitted', async () => {
  const { client, events } = await connect();
  const call = await answeredCall(client);
  call.on('ended', () => client.close());
  last().drop(1006);
  await tick(2000);
  const ws = last();
  ws.accept();
  assert.deepEqual(ws.types(), ['hello(resume)']);
  ws.deliver(welcome()); // the gateway restarted: a new session
  await settle();
  assert.equal(ws.readyState, FakeSocket.CLOSED, 'the new session\'s socket is closed');
  assert.deepEqual(events, ['reconnecting']);
  assert.deepEqual(call.endInfo?.cause, 'connection-lost');
});

test('a call placed from a call\'s `ended` listener as the gateway restarts waits for the new session, then goes out', async () => {
  const { client } = await connect();
  const first = await answeredCall(client);
  let again: ReturnType<Client['call']> | null = null;
  first.on('ended', () => { again = client.call('1000'); });
  last().drop(1012);
  await settle();
  assert.equal(again!.state, 'connecting', 'not ended at once');
  await tick(1000);
  last().accept();
  last().deliver(welcome());
  await settle();
  assert.deepEqual(last().types(), ['hello', 'call']);
  client.close();
});

test('sessions dropped right after their welcome: the waits between attempts keep growing (no tight loop against a failing gateway)', async () => {
  const { client } = await connect();
  const waits: number[] = [];
  last().drop(1011);
  for (let i = 0; i < 6; i++) {
    const n = FakeSocket.all.length;
    const since = Date.now();
    while (FakeSocket.all.length === n) await tick(50);
    waits.push(Date.now() - since);
    last().accept();
    last().deliver(welcome());
    last().drop(1011);
  }
  // Randomized (0.5–1.5x of 0.5, 1, 2, 5, 10, 30 s): each step's range is above the first's.
  assert.ok(waits[0] <= 800, `first ${waits}`);
  assert.ok(waits[3] >= 2500 && waits[4] >= 5000 && waits[5] >= 15_000, `growing: ${waits}`);
  client.close();
});

test('a token function slower than the socket\'s open timeout (6 s) still connects: the token is asked before the socket opens', async () => {
  let asked = 0;
  const { client, events } = await connect({ token: () => (asked++ === 0 ? 'first' : new Promise((r) => setTimeout(() => r('later'), 6000))) });
  await tick(60_000);
  last().drop(1006);
  await tick(1000);
  assert.equal(asked, 2);
  assert.equal(FakeSocket.all.length, 1, 'no socket while the token is coming');
  await tick(6000);
  assert.equal(FakeSocket.all.length, 2);
  last().accept();
  assert.deepEqual(last().sent.map((m) => m.token), ['later']);
  last().deliver(welcome());
  assert.deepEqual(events, ['reconnecting', 'reconnected:new']);
  client.close();
});

test('a token function that never answers: the attempt is given up after 10 s and the next one asks again', async () => {
  let asked = 0;
  const { client } = await connect({ token: () => (asked++ === 0 ? 'first' : new Promise(() => undefined)) });
  await tick(60_000);
  last().drop(1006);
  await tick(1000);
  assert.equal(asked, 2);
  await tick(10_000);
  await tick(1500);
  assert.equal(asked, 3);
  assert.equal(FakeSocket.all.length, 1);
  client.close();
});

test('a resume sends the last token without asking the function; that token refused (the session gone, the token expired) → the function is asked once more; its token refused too → disconnected', async () => {
  let asked = 0;
  const { client, events } = await connect({ token: () => `t${asked++}` });
  const call = await answeredCall(client);
  last().drop(1006);
  await tick(300);
  last().accept();
  assert.deepEqual(last().sent, [{ type: 'hello', version: 1, token: 't0', resume: { sessionId: client.sessionId, token: `rt${sessionCount()}` } }]);
  assert.equal(asked, 1, 'not asked for a resume');
  last().deliver({ type: 'error', code: 'token-expired', message: 'token expired', request: 'hello' });
  await settle();
  assert.equal(call.endInfo?.cause, 'connection-lost', 'the refused resume means the session is gone');
  await tick(1000);
  assert.equal(asked, 2);
  last().accept();
  assert.deepEqual(last().types(), ['hello']);
  assert.equal(last().sent[0].token, 't1');
  last().deliver({ type: 'error', code: 'token-expired', message: 'token expired', request: 'hello' });
  await tick(60_000);
  assert.deepEqual(events, ['reconnecting', 'disconnected']);
  assert.equal(FakeSocket.all.length, 3, 'no attempt after the final refusal');
});

test('a hello refused as draining is tried again later (another gateway may take it)', async () => {
  const { client, events } = await connect();
  await tick(60_000);
  last().drop(1001);
  await tick(1000);
  last().accept();
  last().deliver({ type: 'error', code: 'draining', message: 'the gateway is shutting down', request: 'hello' });
  await tick(2000);
  assert.equal(FakeSocket.all.length, 3);
  last().accept();
  last().deliver(welcome());
  assert.deepEqual(events, ['reconnecting', 'reconnected:new']);
  client.close();
});

test('idle, the client pings once nothing came for 30 s; no pong within 5 s → the socket is given up (4000) and a new session follows', async () => {
  const { client, events } = await connect();
  const ws = last();
  await tick(25_000);
  assert.deepEqual(ws.types(), ['hello'], 'no ping before 30 s of quiet');
  ws.deliver({ type: 'pong' }); // anything heard counts as quiet's end
  await tick(29_000);
  assert.deepEqual(ws.types(), ['hello']);
  await tick(11_000);
  assert.deepEqual(ws.types(), ['hello', 'ping']);
  await tick(5000);
  assert.equal(ws.closedWith, 4000);
  assert.deepEqual(events, ['reconnecting']);
  await tick(1000);
  last().accept();
  last().deliver(welcome());
  assert.deepEqual(events, ['reconnecting', 'reconnected:new']);
  client.close();
});

test('stayConnected: false — a drop with nothing to resume is `disconnected` at once, and no socket is opened', async () => {
  const { client, events } = await connect({ stayConnected: false });
  last().drop(1006);
  await tick(60_000);
  assert.deepEqual(events, ['disconnected']);
  assert.equal(FakeSocket.all.length, 1);
  // A call placed now ends at once (a microtask later), without waiting for a connection.
  const call = client.call('1000');
  await settle();
  assert.deepEqual(call.endInfo, { cause: 'connection-lost', sipReason: 'not connected to the gateway' });
});
