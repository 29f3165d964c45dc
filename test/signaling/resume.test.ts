/**
 * A tab whose WebSocket drops without a close frame keeps its calls for limits.wsResumeGraceSec
 * and takes them over from a new connection (docs/protocol.md, "Resuming after a dropped
 * connection"): tabs are ws clients, the trunk is our SIP user agent answering on loopback.
 *
 * Ports 27800-27819: http BASE, SIP BASE+1, trunk BASE+3, RTP BASE+10..13, WebRTC BASE+14..17.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import WebSocket from 'ws';
import { readFileSync } from 'node:fs';
import { SipUserAgent, type Dialog, type ServerInvite } from '../../src/sip';
import { startGateway } from '../support/gateway';
import { browserPeers, openTab, until, type Msg, type Tab } from '../support/tabs';
import { mintToken } from '../../src/edge';
import type { CallManager } from '../../src/calls/callManager';

const SECRET = 'resume-test-secret-0123456789abcdefghijk';
const BASE = 27800;
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 27819 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';
const browsers = browserPeers();
const sockets: WebSocket[] = [];
const dialogs: Dialog[] = [];
let trunk: SipUserAgent;
let gw: Awaited<ReturnType<typeof startGateway>> | null = null;

before(async () => {
  trunk = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: BASE + 3 }], logger: pino({ level: 'silent' }) });
  trunk.on('invite', (inv: ServerInvite) => { dialogs.push(inv.accept(SDP)); });
  await trunk.start();
});
after(async () => {
  for (const ws of sockets) ws.terminate();
  await gw?.stop();
  await trunk.stop();
});

async function gateway(graceSec: number): Promise<void> {
  await gw?.stop();
  gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: false },
    trunk: { uri: `sip:127.0.0.1:${BASE + 3}`, fromDomain: '127.0.0.1', srtp: 'off', codecs: ['PCMU'] },
    dialplan: { allow: ['+1555*'] },
    limits: { wsResumeGraceSec: graceSec },
    media: { host: '127.0.0.1', portRange: [BASE + 10, BASE + 13], inactivityTimeoutSec: 60 },
    webrtc: { portRange: [BASE + 14, BASE + 17], connectTimeoutSec: 60 },
  });
}

/** A tab with an answered call to the trunk: the tab, its welcome and the call's id. */
async function answeredCall(): Promise<{ tab: Tab; welcome: Msg; callId: string; dialog: Dialog }> {
  const tab = await openTab(BASE, 'alice', SECRET, sockets);
  const before = dialogs.length;
  tab.ws.send(JSON.stringify({ type: 'call', to: '+15551000100', ref: 'r', sdp: await browsers.offer() }));
  await until(() => tab.messages.some((m) => m.type === 'answered' || m.type === 'ended'), 'the call answered');
  const callId = tab.messages.find((m) => m.type === 'calling')!.callId;
  assert.ok(tab.messages.some((m) => m.type === 'answered'), JSON.stringify(tab.messages));
  return { tab, welcome: tab.messages.find((m) => m.type === 'welcome')!, callId, dialog: dialogs[before] };
}

/** The network goes: the socket is cut without a close frame (the gateway sees 1006). */
async function drop(tab: Tab): Promise<void> {
  const closed = new Promise((r) => tab.ws.once('close', r));
  tab.ws.terminate();
  await closed;
}

/** A new connection saying hello with `resume` (and `token` when given): every message it gets. */
async function reconnect(resume: { sessionId: string; token: string }, withToken = false, origin = `http://127.0.0.1:${BASE}`): Promise<{ ws: WebSocket; messages: Msg[]; closed: Promise<number> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${BASE}/ws`, { headers: { Origin: origin } });
  sockets.push(ws);
  const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
  const messages: Msg[] = [];
  ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  ws.send(JSON.stringify({ type: 'hello', version: 1, resume, token: withToken ? await mintToken({ sub: 'alice' }, { hs256Secret: SECRET }, { ttlSec: 300 }) : undefined }));
  await until(() => messages.some((m) => m.type === 'welcome' || m.type === 'error'), 'the answer to the resuming hello');
  return { ws, messages, closed };
}

/** The gateway's resume counters from /metrics: drops, and resumes by result. */
async function resumeMetrics(): Promise<Record<string, number>> {
  const text = await (await fetch(`${gw!.url}/metrics`)).text();
  const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? 0);
  return {
    dropped: value(/^gateway_websocket_drops_total (\d+)/m),
    resumed: value(/^gateway_websocket_resumes_total\{result="resumed"\} (\d+)/m),
    refused: value(/^gateway_websocket_resumes_total\{result="refused"\} (\d+)/m),
    expired: value(/^gateway_websocket_resumes_total\{result="expired"\} (\d+)/m),
  };
}

const terminated = (d: Dialog) => new Promise<void>((r) => { if (d.state === 'terminated') r(); else d.once('terminated', () => r()); });

test('a dropped tab resumes with its session\'s resume token: the same session, its answered call listed, and the call is its to hang up', async () => {
  await gateway(20);
  const { tab, welcome, callId, dialog } = await answeredCall();
  assert.equal(typeof welcome.resumeToken, 'string');
  assert.equal(welcome.resumeGraceMs, 20_000);
  await drop(tab);
  await new Promise((r) => setTimeout(r, 200));
  assert.notEqual(dialog.state, 'terminated', 'the call goes on while the tab is away');
  assert.equal((gw!.gateway as unknown as { signaling: { connectionCount: number } }).signaling.connectionCount, 0, 'a waiting session has no connection');
  const back = await reconnect({ sessionId: welcome.sessionId, token: welcome.resumeToken });
  const w = back.messages[0];
  assert.equal(w.type, 'welcome');
  assert.equal(w.resumed, true);
  assert.equal(w.sessionId, welcome.sessionId);
  assert.equal(w.identity, 'alice');
  assert.deepEqual(w.calls, [{ callId, state: 'answered' }]);
  assert.deepEqual(w.missed, []);
  assert.notEqual(w.resumeToken, welcome.resumeToken, 'a new token for the next drop');
  // The used token is spent: another connection showing it gets a fresh session (its JWT), the
  // resumed one keeps the call.
  const thief = await reconnect({ sessionId: welcome.sessionId, token: welcome.resumeToken }, true);
  assert.equal(thief.messages[0].resumed, false);
  assert.notEqual(thief.messages[0].sessionId, welcome.sessionId);
  thief.ws.close();
  const open = () => (gw!.gateway as unknown as { signaling: { connectionCount: number } }).signaling.connectionCount;
  await until(() => open() === 1, `one open connection counted: the resumed one (${open()})`);
  back.ws.send(JSON.stringify({ type: 'hangup', callId }));
  await terminated(dialog);
  await until(() => back.messages.some((m) => m.type === 'ended' && m.callId === callId), 'ended on the resumed connection');
  back.ws.close();
  // For operators: one drop, resumed; the spent token's reuse refused. The call's record says so.
  assert.deepEqual(await resumeMetrics(), { dropped: 1, resumed: 1, refused: 1, expired: 0 });
  const cdrOf = () => readFileSync(gw!.cdrPath, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((l) => l.callId === callId);
  await until(() => cdrOf() !== undefined, 'the call\'s CDR line');
  assert.equal(cdrOf().signalingResumes, 1, JSON.stringify(cdrOf()));
});

test('what happens while the tab is away reaches it in `missed`: the far end hung up, the call is no longer listed', async () => {
  await gateway(20);
  const { tab, welcome, callId, dialog } = await answeredCall();
  await drop(tab);
  await dialog.bye();
  await new Promise((r) => setTimeout(r, 200));
  const back = await reconnect({ sessionId: welcome.sessionId, token: welcome.resumeToken });
  const w = back.messages[0];
  assert.equal(w.resumed, true);
  assert.deepEqual(w.calls, []);
  assert.deepEqual(w.missed.map((m: Msg) => [m.type, m.callId, m.cause]), [['ended', callId, 'remote-hangup']]);
  back.ws.close();
});

test('a tab that does not come back, whose call the far end hung up meanwhile: the drop cost no call, and is not counted expired', async () => {
  await gateway(1);
  const { tab, dialog } = await answeredCall();
  await drop(tab);
  await dialog.bye();
  await new Promise((r) => setTimeout(r, 1500)); // past the grace time
  assert.deepEqual(await resumeMetrics(), { dropped: 1, resumed: 0, refused: 0, expired: 0 });
});

test('a tab that does not come back within the grace time: its call ends (BYE to the trunk); resuming then gets a fresh session', async () => {
  await gateway(1);
  const { tab, welcome, dialog } = await answeredCall();
  const started = Date.now();
  await drop(tab);
  await terminated(dialog);
  const waited = Date.now() - started;
  assert.ok(waited >= 900, `ended after the grace (${waited} ms), not at the drop`);
  const late = await reconnect({ sessionId: welcome.sessionId, token: welcome.resumeToken }, true);
  assert.equal(late.messages[0].type, 'welcome');
  assert.equal(late.messages[0].resumed, false);
  assert.equal(late.messages[0].calls, undefined);
  late.ws.close();
  // The late resume names a session that is gone: it tells nothing more (not counted refused).
  assert.deepEqual(await resumeMetrics(), { dropped: 1, resumed: 0, refused: 0, expired: 1 });
});

test('a wrong resume token, or none, gets a fresh session (and without a JWT, the usual error); the waiting calls are not touched', async () => {
  await gateway(20);
  const { tab, welcome, dialog } = await answeredCall();
  await drop(tab);
  const wrong = await reconnect({ sessionId: welcome.sessionId, token: 'x'.repeat(welcome.resumeToken.length) });
  assert.deepEqual([wrong.messages[0].type, wrong.messages[0].code], ['error', 'token-missing'], 'no JWT to fall back on');
  const wrongWithJwt = await reconnect({ sessionId: welcome.sessionId, token: 'nope' }, true);
  assert.equal(wrongWithJwt.messages[0].resumed, false);
  // The right token from a page of another origin (one the gateway allows): not the tab's page.
  const otherOrigin = await reconnect({ sessionId: welcome.sessionId, token: welcome.resumeToken }, true, `http://localhost:${BASE}`);
  assert.equal(otherOrigin.messages[0].resumed, false);
  assert.notEqual(dialog.state, 'terminated');
  const right = await reconnect({ sessionId: welcome.sessionId, token: welcome.resumeToken });
  assert.equal(right.messages[0].resumed, true);
  for (const c of [wrong, wrongWithJwt, otherOrigin, right]) c.ws.close();
  await terminated(dialog); // the resumed tab closed properly: its call is hung up
});

test('a tab resuming while its old connection still looks alive here (its network changed, no FIN reached us): the old one is cut, the call moves', async () => {
  await gateway(20);
  const { tab, welcome, callId, dialog } = await answeredCall();
  const oldClosed = new Promise<number>((r) => tab.ws.once('close', (code) => r(code)));
  const back = await reconnect({ sessionId: welcome.sessionId, token: welcome.resumeToken });
  assert.equal(back.messages[0].resumed, true);
  assert.deepEqual(back.messages[0].calls, [{ callId, state: 'answered' }]);
  assert.equal(await oldClosed, 1006, 'the old socket was cut, without a close frame');
  await new Promise((r) => setTimeout(r, 200));
  assert.notEqual(dialog.state, 'terminated', 'cutting the old connection did not end the call');
  back.ws.send(JSON.stringify({ type: 'hangup', callId }));
  await terminated(dialog);
  await until(() => back.messages.some((m) => m.type === 'ended' && m.callId === callId && m.cause === 'local-hangup'), 'the resumed tab hung the call up');
  back.ws.close();
  // The unseen drop is counted with its resume; a made-up session id is not counted at all.
  const madeUp = await reconnect({ sessionId: 'no-such-session', token: 'x' }, true);
  madeUp.ws.close();
  assert.deepEqual(await resumeMetrics(), { dropped: 1, resumed: 1, refused: 0, expired: 0 });
});

test('a connection we close ourselves (a flood) that does not finish its close handshake is no drop: its call ends at once, not after the grace time', async () => {
  await gateway(20);
  const { tab, dialog } = await answeredCall();
  for (let i = 0; i < 200; i++) tab.ws.send(JSON.stringify({ type: 'ping' }));
  (tab.ws as unknown as { _socket: { pause(): void } })._socket.pause(); // reads nothing more: no close frame back
  const t0 = Date.now();
  await terminated(dialog);
  assert.ok(Date.now() - t0 < 5000, `ended ${Date.now() - t0} ms after the flood`);
});

test('a tab that closes a connection with code 4000 (it no longer trusts it and reconnects) keeps its calls as on a drop, and resumes them', async () => {
  await gateway(20);
  const { tab, welcome, callId, dialog } = await answeredCall();
  const closed = new Promise((r) => tab.ws.once('close', r));
  tab.ws.close(4000, 'reconnecting');
  await closed;
  await new Promise((r) => setTimeout(r, 200));
  assert.notEqual(dialog.state, 'terminated');
  const back = await reconnect({ sessionId: welcome.sessionId, token: welcome.resumeToken });
  assert.equal(back.messages[0].resumed, true);
  assert.deepEqual(back.messages[0].calls, [{ callId, state: 'answered' }]);
  back.ws.close(1000);
  await terminated(dialog); // a proper close: hung up
});

test('while the gateway drains, a dropped tab still takes its call back (a rolling restart must not cut calls on a network blip); a fresh session is refused (draining, closed 1013)', async () => {
  await gateway(20);
  const { tab, welcome, callId, dialog } = await answeredCall();
  const draining = gw!.gateway.drain(30_000);
  await drop(tab);
  const back = await reconnect({ sessionId: welcome.sessionId, token: welcome.resumeToken });
  assert.equal(back.messages[0].resumed, true);
  assert.deepEqual(back.messages[0].calls, [{ callId, state: 'answered' }]);
  const fresh = await reconnect({ sessionId: 'none', token: 'none' }, true);
  assert.deepEqual([fresh.messages[0].type, fresh.messages[0].code], ['error', 'draining']);
  assert.equal(await fresh.closed, 1013);
  back.ws.send(JSON.stringify({ type: 'hangup', callId }));
  await terminated(dialog);
  await draining; // the last call gone: the drain is over
});

test('with wsResumeGraceSec 0 a dropped tab\'s call ends at once, as before', async () => {
  await gateway(0);
  const { tab, welcome, dialog } = await answeredCall();
  assert.equal(welcome.resumeGraceMs, 0);
  await drop(tab);
  await terminated(dialog);
});

test('a tab that drops while its call is still being set up (no `calling` yet) keeps it: the resume gets its `calling`, and the call is its to hang up', async () => {
  await gateway(20);
  const tab = await openTab(BASE, 'alice', SECRET, sockets);
  const welcome = tab.messages.find((m) => m.type === 'welcome')!;
  const before = dialogs.length;
  // startOutbound returns only once the connection is gone: it dropped while the call was set up.
  const open = () => (gw!.gateway as unknown as { signaling: { connectionCount: number } }).signaling.connectionCount;
  const m = gw!.gateway['manager'] as unknown as CallManager;
  const startOutbound = m.startOutbound;
  m.startOutbound = async function (this: CallManager, ...args: Parameters<CallManager['startOutbound']>) {
    const r = await startOutbound.apply(this, args);
    await until(() => open() === 0, 'the tab gone');
    return r;
  };
  tab.ws.send(JSON.stringify({ type: 'call', to: '+15551000100', ref: 'early', sdp: await browsers.offer() }));
  await until(() => gw!.gateway.activeCalls === 1, 'the call being set up');
  m.startOutbound = startOutbound;
  await drop(tab);
  await new Promise((r) => setTimeout(r, 200));
  const back = await reconnect({ sessionId: welcome.sessionId, token: welcome.resumeToken });
  const w = back.messages[0];
  assert.equal(w.resumed, true, JSON.stringify(w));
  const calling = (w.missed as Msg[]).find((x) => x.type === 'calling');
  assert.equal(calling?.ref, 'early', JSON.stringify(w));
  assert.deepEqual((w.calls as Msg[]).map((c) => c.callId), [calling.callId]);
  await until(() => dialogs.length > before, 'the trunk answered');
  back.ws.send(JSON.stringify({ type: 'hangup', callId: calling.callId }));
  await terminated(dialogs[before]);
  await until(() => back.messages.some((x) => x.type === 'ended' && x.callId === calling.callId), 'ended on the resumed connection');
  back.ws.close();
});
