/**
 * A browser for the SDK's unit tests (web/src/sdk under Node): a WebSocket whose gateway side the
 * test plays, a peer connection that records what it is given, a microphone, and mock timers.
 * Installed on globalThis when imported; the SDK reads these only when used, not when loaded.
 */
import { afterEach, beforeEach, mock } from 'node:test';
import assert from 'node:assert/strict';
import { GatewayClient } from '../../web/src/sdk/client';

/** A WebSocket whose server side the test plays. */
export class FakeSocket {
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

export class FakePeerConnection {
  static all: FakePeerConnection[] = [];
  remoteDescriptions: Array<{ type: string; sdp: string }> = [];
  constructor() { FakePeerConnection.all.push(this); }
  iceGatheringState = 'complete'; connectionState = 'new'; iceConnectionState = 'new';
  localDescription: { type: string; sdp: string } | null = null;
  addTrack(): void {}
  async createOffer() { return { type: 'offer', sdp: 'v=0 offer' }; }
  async createAnswer() { return { type: 'answer', sdp: 'v=0 answer' }; }
  async setLocalDescription(d: { type: string; sdp: string }) { this.localDescription = d; }
  async setRemoteDescription(d: { type: string; sdp: string }) { this.remoteDescriptions.push(d); }
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

export type Client = GatewayClient;

let sessions = 0;
export const sessionCount = () => sessions;
export const welcome = (extra: Record<string, unknown> = {}) => ({ type: 'welcome', version: 1, sessionId: `s${++sessions}`, identity: 'alice', demo: false, iceServers: [], resumeToken: `rt${sessions}`, resumeGraceMs: 20_000, ...extra });
/** Lets promise chains (token functions, a call's start) run. */
export const settle = async () => { for (let i = 0; i < 20; i++) await Promise.resolve(); };
export const tick = async (ms: number) => { mock.timers.tick(ms); await settle(); };
export const last = () => FakeSocket.all[FakeSocket.all.length - 1];

beforeEach(() => {
  FakeSocket.all = [];
  FakePeerConnection.all = [];
  mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: 1_000_000 });
});
afterEach(() => mock.timers.reset());

/** A connected client and the log of its events. */
export async function connect(opts: Record<string, unknown> = {}): Promise<{ client: Client; events: string[] }> {
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
export async function answeredCall(client: Client) {
  const call = client.call('1000');
  await settle();
  const ws = last();
  const req = ws.sent.find((m) => m.type === 'call')!;
  ws.deliver({ type: 'calling', ref: req.ref, callId: `c-${req.ref}`, sdp: 'v=0' });
  ws.deliver({ type: 'answered', callId: `c-${req.ref}` });
  assert.equal(call.state, 'answered');
  return call;
}
