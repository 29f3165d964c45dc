/**
 * WebRTC port exhaustion through the call layer: a whole gateway in this process whose WebRTC
 * range holds one port pair, a WebSocket client with werift peer connections as the browser
 * (offers only; ICE never needs to connect) and our SIP user agent as the trunk. With the one
 * pair held by a call, another outbound call is refused without an INVITE, and an inbound INVITE
 * is refused with 503 (the gateway is at capacity); neither leaves a call, an RTP port or an ICE port behind. An
 * offer the browser leg cannot answer is refused before anything is allocated; one that fails
 * to be answered for a reason of ours is reported as `internal`, not as the browser's SDP.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import WebSocket from 'ws';
import { RTCPeerConnection as RTCPeerConnectionClass, type RTCPeerConnection } from 'werift';
import { SipUserAgent, type ServerInvite, type SipResponse } from '../../src/sip';
import { mintToken } from '../../src/edge';
import type { MediaEngine } from '../../src/media';
import type { IcePortPool } from '../../src/webrtc/icePortPool';
import { startGateway } from '../support/gateway';
import { startStunResponder } from '../../bench/stunResponder';
import { browserOffer, until } from '../support/tabs';

const BASE = 20700; // http 20700, SIP 20701, trunk 20703, RTP 20740-20759, WebRTC 20760-20761
const TRUNK_PORT = BASE + 3;
const SECRET = 'ice-port-exhaustion-test-secret-0123456789';
const stun = startStunResponder();
let gw: Awaited<ReturnType<typeof startGateway>>;
let trunk: SipUserAgent;
const invites: ServerInvite[] = [];
const peers: RTCPeerConnection[] = [];
const offer = async (): Promise<string> => browserOffer((await stun).port, peers);
const sockets: WebSocket[] = [];

before(async () => {
  trunk = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: TRUNK_PORT }], logger: pino({ level: 'silent' }) });
  await trunk.start();
  // The trunk rings and never answers: the call holds its ports until the browser hangs up (CANCEL).
  trunk.on('invite', (inv) => { invites.push(inv); inv.progress(180); });
  gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: false },
    trunk: { uri: `sip:127.0.0.1:${TRUNK_PORT}`, codecs: ['PCMU'], sourceCidrs: ['127.0.0.1/32'] },
    dialplan: { allow: ['+1555*'] },
    media: { portRange: [BASE + 40, BASE + 59], inactivityTimeoutSec: 60, workers: 0 }, // in-thread: the test looks inside it
    // One pair; the browsers never connect, so the connect timeout must not end call 1 mid-test.
    webrtc: { portRange: [BASE + 60, BASE + 61], connectTimeoutSec: 60 },
  });
});

after(async () => {
  for (const ws of sockets) ws.close();
  await Promise.all(peers.map((pc) => pc.close().catch(() => undefined)));
  await gw?.stop();
  await trunk?.stop();
  (await stun).close();
});

// The gateway's internals the leak checks look at (private members, read-only here).
const media = (): MediaEngine => gw.gateway['media'] as MediaEngine;
const icePool = (): IcePortPool => (gw.gateway['manager'] as unknown as { opts: { ctx: { ice: { portPool: IcePortPool } } } }).opts.ctx.ice.portPool;
const cdr = (): Array<Record<string, any>> => readFileSync(gw.cdrPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));

/** A browser tab for `user`: hello with a token, messages kept in order. */
async function tab(user: string): Promise<{ ws: WebSocket; messages: Array<Record<string, any>>; next(type: string, from: number): Promise<Record<string, any>> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${BASE}/ws`, { headers: { Origin: `http://127.0.0.1:${BASE}` } });
  sockets.push(ws);
  const messages: Array<Record<string, any>> = [];
  ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ type: 'hello', version: 1, token: await mintToken({ sub: user }, { hs256Secret: SECRET }, { ttlSec: 120 }) }));
  const next = async (type: string, from: number) => {
    await until(() => messages.slice(from).some((m) => m.type === type || m.type === 'error'), `${type} from the gateway`);
    return messages.slice(from).find((m) => m.type === type || m.type === 'error')!;
  };
  await next('welcome', 0);
  return { ws, messages, next };
}

const settle = () => new Promise((r) => setTimeout(r, 300));

test('with every WebRTC port pair in use, a new outbound call is refused cleanly and inbound INVITEs get 503 (capacity, as for RTP ports)', async () => {
  const alice = await tab('alice');

  // Call 1 takes the only port pair and rings the trunk.
  let from = alice.messages.length;
  alice.ws.send(JSON.stringify({ type: 'call', to: '+15551230000', sdp: await offer() }));
  const calling = await alice.next('calling', from);
  assert.equal(calling.type, 'calling', `call 1 set up: ${JSON.stringify(calling)}`);
  await until(() => invites.length === 1, 'the INVITE of call 1 at the trunk');
  await until(() => alice.messages.some((m) => m.type === 'progress' && m.callId === calling.callId), 'call 1 ringing (its bridge plays ringback)');
  assert.equal(icePool().used, 1);
  assert.equal(gw.gateway.activeCalls, 1);
  const withOneCall = media().usage;
  assert.deepEqual(withOneCall, { legs: 1, bridges: 1, portsAllocated: 1 });

  // Call 2: no port pair left. The browser is told why, and nothing is left behind.
  from = alice.messages.length;
  alice.ws.send(JSON.stringify({ type: 'call', to: '+15551230001', sdp: await offer() }));
  const refused = await alice.next('calling', from);
  assert.equal(refused.type, 'error', `call 2 refused: ${JSON.stringify(refused)}`);
  assert.equal(refused.code, 'too-many-calls', 'out of WebRTC ports is the gateway\'s capacity, not a bad offer');
  assert.match(refused.message, /WebRTC port/);
  await settle();
  assert.equal(invites.length, 1, 'no INVITE for the refused call');
  assert.equal(gw.gateway.activeCalls, 1, 'the refused call is not tracked');
  assert.deepEqual(media().usage, withOneCall, 'no RTP port allocated for the refused call');
  assert.equal(icePool().used, 1);
  const rec2 = cdr().find((r) => r.to === '+15551230001');
  assert.ok(rec2, 'the refused call has its CDR');
  assert.equal(rec2.cause, 'unavailable', 'the CDR does not claim the browser hung up');

  // An inbound call for alice: her tab cannot get a port, so the caller is refused with 503:
  // the gateway is full (a proxy may try another), not the user unavailable.
  from = alice.messages.length;
  const inv = trunk.invite({
    requestUri: `sip:alice@127.0.0.1:${BASE + 1}`,
    from: { uri: 'sip:+15550001111@127.0.0.1' },
    sdp: `v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 4} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n`,
  });
  const res = await new Promise<SipResponse>((resolve, reject) => {
    inv.once('rejected', resolve);
    inv.once('accepted', () => reject(new Error('the inbound call was answered')));
    inv.once('failed', reject);
  });
  assert.equal(res.status, 503);
  await settle();
  assert.ok(!alice.messages.slice(from).some((m) => m.type === 'incoming'), 'the tab never rang');
  assert.equal(gw.gateway.activeCalls, 1, 'the refused inbound call is not tracked');
  assert.deepEqual(media().usage, withOneCall, 'the inbound call\'s RTP port went back');
  assert.equal(icePool().used, 1);
  const recIn = cdr().find((r) => r.direction === 'inbound');
  assert.equal(recIn?.cause, 'unavailable');
  assert.equal(recIn?.sipStatus, 503);

  // Call 1 hangs up: its pair comes back, and the next call gets it.
  from = alice.messages.length;
  alice.ws.send(JSON.stringify({ type: 'hangup', callId: calling.callId }));
  assert.equal((await alice.next('ended', from)).cause, 'local-hangup');
  await until(() => icePool().used === 0 && media().usage.portsAllocated === 0, 'call 1\'s ports released');
  assert.equal(gw.gateway.activeCalls, 0);
  from = alice.messages.length;
  alice.ws.send(JSON.stringify({ type: 'call', to: '+15551230002', sdp: await offer() }));
  const again = await alice.next('calling', from);
  assert.equal(again.type, 'calling', `a call after the release: ${JSON.stringify(again)}`);
  await until(() => invites.length === 2, 'the INVITE of call 3');
  from = alice.messages.length;
  alice.ws.send(JSON.stringify({ type: 'hangup', callId: again.callId }));
  await alice.next('ended', from);
  await until(() => icePool().used === 0 && media().usage.portsAllocated === 0 && gw.gateway.activeCalls === 0, 'everything released');
});

test('an offer the browser leg cannot answer gets error bad-sdp: no call, no INVITE, no port', async () => {
  const bob = await tab('bob');
  const invitesBefore = invites.length;
  const usageBefore = media().usage;
  const usedBefore = icePool().used;
  const callsBefore = gw.gateway.activeCalls;
  const plain = (await offer()).replace(/UDP\/TLS\/RTP\/SAVPF/g, 'RTP/AVP');
  for (const sdp of ['v=0\r\nthis is not SDP', plain]) {
    const from = bob.messages.length;
    bob.ws.send(JSON.stringify({ type: 'call', to: '+15551230003', sdp }));
    const refused = await bob.next('calling', from);
    assert.equal(refused.type, 'error', JSON.stringify(refused));
    assert.equal(refused.code, 'bad-sdp');
  }
  await settle();
  assert.equal(invites.length, invitesBefore, 'no INVITE');
  assert.equal(gw.gateway.activeCalls, callsBefore);
  assert.deepEqual(media().usage, usageBefore);
  assert.equal(icePool().used, usedBefore, 'no WebRTC port taken');
  // The connection stays usable: a good offer from the same tab goes through.
  const from = bob.messages.length;
  bob.ws.send(JSON.stringify({ type: 'call', to: '+15551230004', sdp: await offer() }));
  const ok = await bob.next('calling', from);
  assert.equal(ok.type, 'calling', JSON.stringify(ok));
  bob.ws.send(JSON.stringify({ type: 'hangup', callId: ok.callId }));
  await until(() => icePool().used === usedBefore && gw.gateway.activeCalls === callsBefore, 'the good call released');
});

test('answering an offer fails: werift refusing it is bad-sdp; a failure of ours is internal, the call ends failed; no INVITE, no port', async () => {
  const bob = await tab('bob');
  const invitesBefore = invites.length;
  const usedBefore = icePool().used;
  const callsBefore = gw.gateway.activeCalls;
  const cdrBefore = cdr().length;
  const cases: Array<{ patch: 'setRemoteDescription' | 'createAnswer'; code: string; cause: string }> = [
    // An offer our own check let through but werift cannot take: the browser's fault (bad-sdp);
    // the call is recorded failed, not as hung up by anyone.
    { patch: 'setRemoteDescription', code: 'bad-sdp', cause: 'failed' },
    // Answering failed after the offer was taken: ours. Not reported as the browser's SDP.
    { patch: 'createAnswer', code: 'internal', cause: 'failed' },
  ];
  for (const c of cases) {
    const proto = RTCPeerConnectionClass.prototype as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
    const original = proto[c.patch];
    proto[c.patch] = async function () { throw new Error(`${c.patch} failed (test)`); };
    try {
      const from = bob.messages.length;
      bob.ws.send(JSON.stringify({ type: 'call', to: '+15551230005', sdp: await offer() }));
      const refused = await bob.next('calling', from);
      assert.equal(refused.type, 'error', JSON.stringify(refused));
      assert.equal(refused.code, c.code, JSON.stringify(refused));
      if (c.code === 'internal') assert.ok(!String(refused.message).includes('(test)'), 'our internal error text stays in our log');
    } finally {
      proto[c.patch] = original;
    }
  }
  await until(() => cdr().length === cdrBefore + 2, 'a CDR line for each refused call');
  assert.deepEqual(cdr().slice(cdrBefore).map((l) => l.cause), cases.map((c) => c.cause));
  await settle();
  assert.equal(invites.length, invitesBefore, 'no INVITE');
  assert.equal(gw.gateway.activeCalls, callsBefore);
  assert.equal(icePool().used, usedBefore, 'no WebRTC port kept');
});
