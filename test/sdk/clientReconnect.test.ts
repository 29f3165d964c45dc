/**
 * The browser SDK's reconnecting (web/src/sdk/client.ts) as a state machine, against a fake
 * WebSocket and fake timers: orders of events and timers a real browser makes hard to reach —
 * a listener that closes the client mid-reconnect, sessions dropped right after their welcome,
 * slow token functions, refused tokens. The end-to-end behaviour with Chromium and a gateway is
 * in test/e2e/stayConnected.test.ts and signalingResume.test.ts.
 */
import { afterEach, beforeEach, mock, test } from 'node:test';
import assert from 'node:assert/strict';
// The SDK reads the browser's globals (set below) only when used, not when loaded.
import { GatewayClient } from '../../web/src/sdk/client';

/** A WebSocket whose server side the test plays. */
class FakeSocket {
  static readonly CONNECTING = 0; static readonly OPEN = 1; static readonly CLOSING = 2; static readonly CLOSED = 3;
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: Array<Record<string, any>> = [];
  closedWith: number | undefined;
  onopen: ((e: unknown) => void) | null = null;
  onmessage: ((e: { data: string }) => void) | null = null;
  onclose: ((e: { code: number }) => void) | null = null;
  onerror: ((e: unknown) => void) | null = null;
  constructor(readonly url: string) { FakeSocket.all.push(this); }
  send(data: string): void {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    this.sent.push(JSON.parse(data));
  }
  close(code?: number): void {
    if (this.readyState >= 2) return;
    this.closedWith = code ?? 1005;
    this.readyState = 3;
    const onclose = this.onclose;
    queueMicrotask(() => onclose?.({ code: code ?? 1005 }));
  }
  // The gateway's side:
  accept(): void { this.readyState = 1; this.onopen?.({}); }
  deliver(msg: Record<string, unknown>): void { this.onmessage?.({ data: JSON.stringify(msg) }); }
  drop(code = 1006): void { this.readyState = 3; this.onclose?.({ code }); }
  types(): string[] { return this.sent.map((m) => m.type + (m.resume ? '(resume)' : '')); }
}

class FakePeerConnection {
  iceGatheringState = 'complete'; connectionState = 'new'; iceConnectionState = 'new';
  localDescription: { type: string; sdp: string } | null = null;
  addTrack(): void {}
  async createOffer() { return { type: 'offer', sdp: 'v=0 offer' }; }
  async createAnswer() { return { type: 'answer', sdp: 'v=0 answer' }; }
  async setLocalDescription(d: { type: string; sdp: string }) { this.localDescription = d; }
  async setRemoteDescription() {}
  addEventListener(): void {}
  removeEventListener(): void {}
  getReceivers() { return []; }
  close(): void {}
}

const g = globalThis as any;
g.WebSocket = FakeSocket;
g.RTCPeerConnection = FakePeerConnection;
g.location = { protocol: 'http:', host: 'gateway.test' };
g.document = { createElement: () => ({ play: () => Promise.resolve() }) };
Object.defineProperty(globalThis, 'navigator', {
  value: { mediaDevices: { getUserMedia: async () => ({ getTracks: () => [{ stop() {} }], getAudioTracks: () => [] }) } },
  configurable: true,
});

type Client = GatewayClient;

let sessions = 0;
const welcome = (extra: Record<string, unknown> = {}) => ({ type: 'welcome', version: 1, sessionId: `s${++sessions}`, identity: 'alice', demo: false, iceServers: [], resumeToken: `rt${sessions}`, resumeGraceMs: 20_000, ...extra });
/** Lets promise chains (token functions, a call's start) run. */
const settle = async () => { for (let i = 0; i < 20; i++) await Promise.resolve(); };
const tick = async (ms: number) => { mock.timers.tick(ms); await settle(); };
const last = () => FakeSocket.all[FakeSocket.all.length - 1];

beforeEach(() => {
  FakeSocket.all = [];
  mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: 1_000_000 });
});
afterEach(() => mock.timers.reset());

/** A connected client and the log of its events. */
async function connect(opts: Record<string, unknown> = {}): Promise<{ client: Client; events: string[] }> {
  const p = GatewayClient.connect({ url: 'ws://gateway.test/ws', ...opts });
  const ws = last();
  ws.accept();
  await settle();
  ws.deliver(welcome());
  const client = await p;
  const events: string[] = [];
  client.on('reconnecting', () => events.push('reconnecting'));
  client.on('reconnected', (info) => events.push(`reconnected:${info.resumed ? 'resumed' : 'new'}`));
  client.on('disconnected', () => events.push('disconnected'));
  return { client, events };
}

/** An answered outbound call on the client's current socket. */
async function answeredCall(client: Client) {
  const call = client.call('1000');
  await settle();
  const ws = last();
  const req = ws.sent.find((m) => m.type === 'call')!;
  ws.deliver({ type: 'calling', ref: req.ref, callId: `c-${req.ref}`, sdp: 'v=0' });
  ws.deliver({ type: 'answered', callId: `c-${req.ref}` });
  assert.equal(call.state, 'answered');
  return call;
}

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
  assert.equal(client.sessionId, `s${sessions}`);
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
  assert.deepEqual(last().sent, [{ type: 'hello', version: 1, token: 't0', resume: { sessionId: client.sessionId, token: `rt${sessions}` } }]);
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
  assert.equal(client.call('1000').state, 'connecting'); // ends a microtask later
  await settle();
});
