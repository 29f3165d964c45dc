/**
 * What a tab's session tells it and logs: every `error` answering a request names the request
 * and the call (a `call`'s ref, or the callId), a tab out of a call that goes on elsewhere hears
 * nothing more of it, a connection that drops while a call is being set up ends that call as
 * lost (once the resume grace is over: resume.test.ts), and every log line of a session carries
 * its sessionId.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import WebSocket from 'ws';
import { RTCPeerConnection } from 'werift';
import { mintToken } from '../../src/edge';
import { SipUserAgent, type Dialog, type SipResponse } from '../../src/sip';
import type { CallManager } from '../../src/calls/callManager';
import { startGateway } from '../support/gateway';
import { browserPeers, openTab, until, type Msg, type Tab } from '../support/tabs';

const BASE = 25800; // 25800-25849: http, SIP, demo SIP, the trunk (+3), its RTP (+4), media 25810-25829, WebRTC 25830-25849
const SECRET = 'browser-session-secret-0123456789abcdef';
const browsers = browserPeers();
let gw: Awaited<ReturnType<typeof startGateway>>;
let trunk: SipUserAgent;
let trunkRtp: dgram.Socket;
const sockets: WebSocket[] = [];

before(async () => {
  gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: true, sipPort: BASE + 2 },
    limits: { wsHeartbeatSec: 1, callsPerIdentityPerMin: 5, wsResumeGraceSec: 1 },
    media: { portRange: [BASE + 10, BASE + 29] },
    webrtc: { portRange: [BASE + 30, BASE + 49] },
  }, { captureLogs: true });
  // A SIP peer calling the browser users (loopback is trusted while the demo endpoint is on).
  trunk = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: BASE + 3 }], logger: pino({ level: 'silent' }) });
  await trunk.start();
  // Its RTP port: the gateway's audio lands somewhere, not on a closed port.
  trunkRtp = dgram.createSocket('udp4');
  await new Promise<void>((r) => trunkRtp.bind(BASE + 4, '127.0.0.1', () => r()));
});

after(async () => {
  for (const ws of sockets) ws.terminate();
  await gw?.stop();
  await trunk?.stop();
  trunkRtp?.close();
});

const token = (claims: Record<string, unknown> & { sub: string }) => mintToken(claims, { hs256Secret: SECRET }, { ttlSec: 300 });
const cdrs = () => readFileSync(gw.cdrPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Msg);
const manager = () => gw.gateway['manager'] as unknown as CallManager;

/** A tab signed in with the given claims (openTab signs in with `sub` alone). */
async function tabWith(claims: Record<string, unknown> & { sub: string }): Promise<Tab> {
  const ws = new WebSocket(`ws://127.0.0.1:${BASE}/ws`, { headers: { Origin: `http://127.0.0.1:${BASE}` } });
  sockets.push(ws);
  const messages: Msg[] = [];
  ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  ws.send(JSON.stringify({ type: 'hello', version: 1, token: await token(claims) }));
  await until(() => messages.some((m) => m.type === 'welcome' || m.type === 'error'), `welcome for ${claims.sub}`);
  assert.ok(messages.some((m) => m.type === 'welcome'), JSON.stringify(messages));
  return { ws, messages };
}

/** The first message after index `from` that `match` accepts. */
async function next(tab: Tab, match: (m: Msg) => boolean, what: string, from = 0): Promise<Msg> {
  await until(() => tab.messages.slice(from).some(match), what);
  return tab.messages.slice(from).find(match)!;
}

test('every error answering a `call` carries its ref and names the request; errors about a call carry its callId', async () => {
  const sdp = await browsers.offer();

  // Before hello.
  const early = new WebSocket(`ws://127.0.0.1:${BASE}/ws`, { headers: { Origin: `http://127.0.0.1:${BASE}` } });
  sockets.push(early);
  const earlyMsgs: Msg[] = [];
  early.on('message', (d) => earlyMsgs.push(JSON.parse(d.toString())));
  await new Promise((r) => early.once('open', r));
  early.send(JSON.stringify({ type: 'call', to: '1000', sdp, ref: 'too-soon' }));
  await until(() => earlyMsgs.length === 1, 'the answer to a call before hello');
  assert.deepEqual(earlyMsgs[0], { type: 'error', code: 'not-authenticated', message: 'send hello first', request: 'call', ref: 'too-soon' });

  // A call the schema refuses (a header that is not X-…): its ref is still read.
  // Any number (the demo ones included), but no single one: a call must name its destination.
  const tab = await tabWith({ sub: 'refs', dest: ['*'], maxCalls: 1 });
  tab.ws.send(JSON.stringify({ type: 'call', to: '1000', sdp, ref: 'bad-header', headers: { 'P-Asserted-Identity': 'x' } }));
  const badHeader = await next(tab, (m) => m.type === 'error', 'the refusal of a bad header');
  assert.equal(badHeader.code, 'bad-message');
  assert.equal(badHeader.ref, 'bad-header');
  assert.equal(badHeader.request, 'call');

  // A restart the schema refuses (its SDP missing): its callId and ref are still read, so the
  // tab fails that restart now rather than at its 15 s timeout.
  tab.ws.send(JSON.stringify({ type: 'restart', callId: 'c-1', ref: 'm4' }));
  const badRestart = await next(tab, (m) => m.type === 'error' && m.request === 'restart', 'the refusal of a bad restart');
  assert.deepEqual([badRestart.code, badRestart.callId, badRestart.ref], ['bad-message', 'c-1', 'm4']);

  // No destination, and the token names no single one.
  let from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'call', sdp, ref: 'nowhere' }));
  const nowhere = await next(tab, (m) => m.type === 'error', 'the refusal of a call without a destination', from);
  assert.equal(nowhere.code, 'bad-message');
  assert.equal(nowhere.ref, 'nowhere');

  // One call allowed: the second is refused with its own ref, the first goes on.
  from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'call', to: '1000', sdp, ref: 'first' }));
  const calling = await next(tab, (m) => m.type === 'calling', 'the first call dialing', from);
  assert.equal(calling.ref, 'first');
  from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'call', to: '1001', sdp: await browsers.offer(), ref: 'second' }));
  const refused = await next(tab, (m) => m.type === 'error', 'the refusal of the second call', from);
  assert.equal(refused.code, 'too-many-calls');
  assert.equal(refused.ref, 'second');
  assert.equal(refused.request, 'call');

  // Requests about a call name it.
  from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'hold', callId: 'no-such-call' }));
  const unknown = await next(tab, (m) => m.type === 'error', 'the refusal of a hold for an unknown call', from);
  assert.deepEqual({ code: unknown.code, callId: unknown.callId, request: unknown.request, ref: unknown.ref }, { code: 'unknown-call', callId: 'no-such-call', request: 'hold', ref: undefined });
  tab.ws.send(JSON.stringify({ type: 'hangup', callId: calling.callId }));
  await next(tab, (m) => m.type === 'ended' && m.callId === calling.callId, 'the first call ended');

  // Call attempts over the limit (5 a minute here, this identity made 3): refused with their ref too.
  from = tab.messages.length;
  for (let i = 0; i < 5; i++) tab.ws.send(JSON.stringify({ type: 'call', sdp, ref: `hasty-${i}` }));
  await until(() => tab.messages.length - from === 5, 'the answers to five call attempts');
  const answers = tab.messages.slice(from);
  assert.deepEqual(answers.map((m) => m.ref), ['hasty-0', 'hasty-1', 'hasty-2', 'hasty-3', 'hasty-4']);
  const limited = answers.filter((m) => m.code === 'rate-limited');
  assert.ok(limited.length >= 2 && limited.every((m) => m.request === 'call' && m.retryAfterMs > 0), JSON.stringify(answers));
});

test('a tab out of an inbound call that goes on in another tab (it refused busy, or another answered) hears nothing more of it', async () => {
  const [busy, answering, ringing] = [await openTab(BASE, 'carol', SECRET, sockets), await openTab(BASE, 'carol', SECRET, sockets), await openTab(BASE, 'carol', SECRET, sockets)];
  const logsBefore = gw.logs.length;
  const inv = trunk.invite({
    requestUri: `sip:carol@127.0.0.1:${BASE + 1}`,
    from: { uri: 'sip:5550100@127.0.0.1' },
    sdp: `v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 4} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n`,
  });
  const accepted = new Promise<{ res: SipResponse; dialog: Dialog }>((resolve, reject) => {
    inv.once('accepted', (res, dialog) => resolve({ res, dialog }));
    inv.once('rejected', (res) => reject(new Error(`rejected ${res.status}`)));
    inv.once('failed', reject);
  });
  const incoming = await next(busy, (m) => m.type === 'incoming', 'the call ringing the first tab');
  await next(answering, (m) => m.type === 'incoming', 'the call ringing the second tab');
  await next(ringing, (m) => m.type === 'incoming', 'the call ringing the third tab');
  const callId = incoming.callId as string;

  busy.ws.send(JSON.stringify({ type: 'reject', callId, reason: 'busy' }));
  await next(busy, (m) => m.type === 'ended' && m.callId === callId, 'the busy tab\'s ended');
  const pc = new RTCPeerConnection({ iceServers: [{ urls: `stun:127.0.0.1:${await browsers.stunPort()}` }], iceUseIpv6: false, iceInterfaceAddresses: { udp4: '127.0.0.1' } });
  browsers.keep(pc);
  await pc.setRemoteDescription({ type: 'offer', sdp: String((await next(answering, (m) => m.type === 'incoming', 'the offer')).sdp) });
  await pc.setLocalDescription(await pc.createAnswer());
  answering.ws.send(JSON.stringify({ type: 'accept', callId, sdp: pc.localDescription!.sdp }));
  const { dialog } = await accepted;
  assert.equal((await next(ringing, (m) => m.type === 'ended' && m.callId === callId, 'answered elsewhere')).cause, 'answered-elsewhere');

  // The far end holds, sends a digit (SIP INFO) and resumes: the answering tab hears all of it.
  const remoteSdp = (direction: string, v: number) => `v=0\r\no=- 1 ${v} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 4} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=${direction}\r\n`;
  assert.equal((await dialog.reinvite(remoteSdp('sendonly', 2))).status, 200);
  await dialog.request('INFO', 'Signal=5\r\nDuration=160\r\n', 'application/dtmf-relay');
  assert.equal((await dialog.reinvite(remoteSdp('sendrecv', 3))).status, 200);
  await next(answering, (m) => m.type === 'resumed', 'resumed in the answering tab');
  assert.deepEqual(answering.messages.filter((m) => ['held', 'dtmf', 'resumed'].includes(m.type)).map((m) => m.type), ['held', 'dtmf', 'resumed']);

  // The other two were told the call ended for them, and nothing after that.
  for (const [name, tab] of [['busy', busy], ['answered elsewhere', ringing]] as const) {
    const ended = tab.messages.findIndex((m) => m.type === 'ended' && m.callId === callId);
    assert.deepEqual(tab.messages.slice(ended + 1).filter((m) => m.callId === callId), [], `the ${name} tab heard more of the call`);
  }
  // Nor does the call keep their listeners.
  const call = (manager() as unknown as { calls: Map<string, import('node:events').EventEmitter> }).calls.get(callId)!;
  for (const event of ['progress', 'answered', 'held', 'resumed', 'dtmf']) assert.equal(call.listenerCount(event), 1, `${event} listeners`);

  // The gateway's call and the SIP Call-ID are tied in the log.
  const ringingLine = gw.logs.slice(logsBefore).find((l) => l.msg === 'inbound call ringing');
  assert.equal(ringingLine?.sipCallId, inv.callId);
  assert.equal(ringingLine?.callId, callId);

  await dialog.bye();
  await next(answering, (m) => m.type === 'ended' && m.callId === callId, 'the call ended');
});

for (const [how, code, cause] of [['drops without a close frame', 1006, 'connection-lost'], ['is closed by the page', 1000, 'local-hangup']] as const) {
  test(`a tab whose connection ${how} while its call is still being set up: the call ends as ${cause}`, async () => {
    const tab = await openTab(BASE, `setup-${code}`, SECRET, sockets);
    const signaling = () => (gw.gateway as unknown as { signaling: { connectionCount: number } }).signaling.connectionCount;
    const open = signaling();
    // startOutbound returns only once the tab is gone: the connection went while it ran.
    const m = manager();
    const startOutbound = m.startOutbound;
    m.startOutbound = async function (this: CallManager, ...args: Parameters<CallManager['startOutbound']>) {
      const r = await startOutbound.apply(this, args);
      await until(() => signaling() === open - 1, 'the tab gone');
      return r;
    };
    try {
      const before = cdrs().length;
      tab.ws.send(JSON.stringify({ type: 'call', to: '1000', ref: 'going', sdp: await browsers.offer() }));
      await until(() => gw.gateway.activeCalls === 1, 'the call being set up');
      if (code === 1006) tab.ws.terminate(); else tab.ws.close(1000);
      await until(() => cdrs().length > before, 'the call\'s CDR line');
      assert.equal(cdrs().at(-1)!.cause, cause);
    } finally {
      m.startOutbound = startOutbound;
    }
  });
}

test('every log line of a session carries its sessionId; a closed socket is logged with its code and calls', async () => {
  const logsBefore = gw.logs.length;
  const raw = async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${BASE}/ws`, { headers: { Origin: `http://127.0.0.1:${BASE}` } });
    sockets.push(ws);
    const messages: Msg[] = [];
    ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
    ws.on('error', () => undefined);
    const closed = new Promise<number>((r) => ws.once('close', (c) => r(c)));
    await new Promise((r) => ws.once('open', r));
    return { ws, messages, closed };
  };
  const logs = () => gw.logs.slice(logsBefore);
  const closedLine = async (sessionId: string) => {
    await until(() => logs().some((l) => l.msg === 'websocket closed' && l.sessionId === sessionId), `the close of ${sessionId} logged`);
    return logs().find((l) => l.msg === 'websocket closed' && l.sessionId === sessionId)!;
  };

  // A refused hello, and a token for another site's pages.
  const refused = await raw();
  refused.ws.send(JSON.stringify({ type: 'hello', version: 1, token: 'not.a.token' }));
  await until(() => refused.messages.length === 1, 'the refusal');
  refused.ws.send(JSON.stringify({ type: 'hello', version: 1, token: await token({ sub: 'elsewhere', origins: ['https://shop.example'] }) }));
  await until(() => refused.messages.length === 2, 'the origin refusal');
  const helloRefused = logs().find((l) => l.msg === 'hello refused');
  const wrongOrigin = logs().find((l) => l.msg === 'token not valid for this origin');
  assert.ok(typeof helloRefused?.sessionId === 'string' && helloRefused.sessionId, JSON.stringify(helloRefused));
  assert.equal(wrongOrigin?.sessionId, helloRefused!.sessionId);
  refused.ws.close(1000);
  assert.deepEqual(pick(await closedLine(String(helloRefused!.sessionId)), ['code', 'calls']), { code: 1000, calls: 0 });

  // A frame over the size limit: the socket errs and is cut.
  const big = await openTab(BASE, 'big', SECRET, sockets);
  big.ws.on('error', () => undefined);
  const bigId = String(big.messages[0].sessionId);
  big.ws.send('x'.repeat(70 * 1024));
  await until(() => logs().some((l) => l.msg === 'websocket error' && l.sessionId === bigId), 'the socket error logged with its session');
  assert.equal((await closedLine(bigId)).calls, 0);

  // A tab with a call up that stops answering pings.
  const asleep = await openTab(BASE, 'asleep', SECRET, sockets);
  const asleepId = String(asleep.messages[0].sessionId);
  asleep.ws.send(JSON.stringify({ type: 'call', to: '1000', ref: 'zzz', sdp: await browsers.offer() }));
  await next(asleep, (m) => m.type === 'calling', 'the call dialing');
  (asleep.ws as unknown as { _socket: { pause(): void } })._socket.pause();
  await until(() => logs().some((l) => l.msg === 'websocket did not answer a ping: closing it' && l.sessionId === asleepId), 'the heartbeat kill logged with its session', 5000);
  // Its call waits for the tab to come back (1 s here), then ends with it.
  // (Logged when the socket's close comes, a turn after the heartbeat's kill.)
  await until(() => logs().some((l) => l.msg === 'websocket dropped: calls kept for the tab to resume' && l.sessionId === asleepId), 'the drop logged with its session');
  assert.deepEqual(pick(await closedLine(asleepId), ['code', 'calls', 'identity']), { code: 1006, calls: 1, identity: 'asleep' });

  // Nothing the sessions logged lacks its sessionId.
  const sessionLines = ['hello refused', 'token not valid for this origin', 'websocket error', 'websocket did not answer a ping: closing it', 'websocket dropped: calls kept for the tab to resume', 'the tab did not come back: its calls end', 'websocket closed', 'websocket connected'];
  const without = logs().filter((l) => sessionLines.includes(String(l.msg)) && !l.sessionId);
  assert.deepEqual(without, []);
});

function pick(o: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.map((k) => [k, o[k]]));
}
