/**
 * Inbound calls (SIP INVITE → ring the user's browser tabs) that fail while being set up or
 * ringing. A whole gateway in this process on loopback, WebSocket clients as the tabs (they only
 * read the `incoming` offer; ICE never needs to connect) and our SIP user agent as the trunk
 * sending INVITEs over real UDP.
 *
 * - No RTP port free for the SIP leg: the INVITE gets 503 at once and the call is ended and
 *   gone from the registry; the call that holds the port is untouched.
 * - The tab that would ring closes after the INVITE arrived but before it is rung: the call is
 *   refused at once with 480 (not after the ring timeout, and not 603: a tab that goes away has
 *   not declined — RFC 3261 §21.6.2) and holds no WebRTC port; with another tab still open, that
 *   tab rings alone and its explicit decline ends the call at once with 603.
 * - A ringing tab closes: 480 as well, and with two tabs only once the last one is gone.
 * - One of two ringing tabs declines explicitly: 603 at once, without waiting for the other tab,
 *   which stops ringing (`ended` with cause `declined-elsewhere`). A `hangup` from a ringing tab
 *   is its decline. But `reject` with reason `busy` (486, a 4xx) only takes that tab out: the
 *   others ring on, and with no decline from any of them it ends as 486 once none rings.
 * - Handling the INVITE throws after the call was registered: 500, and the call is ended (out of
 *   the registry, CDR written, ports released) rather than left behind.
 *
 * Ports: 21600-21699, a block of 30 per test from its BASE: http BASE, SIP BASE+1, trunk BASE+3,
 * the trunk's SDP media port BASE+4 (nothing listens: no RTP flows before an answer), RTP
 * BASE+10.., WebRTC BASE+20..BASE+29 (test 1: RTP one pair, WebRTC +12..+19). Tests 4-6 use
 * 21700-21749 in blocks of 17/16, the same layout squeezed: RTP BASE+6..BASE+9, WebRTC BASE+10..;
 * the busy and hangup tests likewise 21800-21817 and 21818-21833, the held caller 22860-22875.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import WebSocket from 'ws';
import { DigestServer, SipUserAgent, type ClientInvite, type Dialog, type SipResponse } from '../../src/sip';
import type { MediaEngine } from '../../src/media';
import type { CallManager } from '../../src/calls/callManager';
import type { SignalingServer } from '../../src/signaling/signalingServer';
import type { IcePortPool } from '../../src/webrtc/icePortPool';
import { startGateway } from '../support/gateway';
import { browserPeers, openTab, until, type Msg, type Tab } from '../support/tabs';
import { RTCPeerConnection, RTCRtpCodecParameters } from 'werift';

/** A STUN server on loopback for the werift peers: without one werift asks stun.l.google.com. */
const browsers = browserPeers();

const SECRET = 'inbound-setup-failures-secret-0123456789';
/** Bound on "at once": set-up takes well under a second; the ring timeout below is 120 s. */
const PROMPT_MS = 30_000;


interface Rig {
  gw: Awaited<ReturnType<typeof startGateway>>;
  trunk: SipUserAgent;
  tab(user: string): Promise<Tab>;
  invite(user: string, fromNumber: string): { inv: ClientInvite; progress: number[]; final: Promise<SipResponse> };
  media(): MediaEngine;
  manager(): CallManager;
  signaling(): SignalingServer;
  icePool(): IcePortPool;
  cdr(): Msg[];
}

/** A gateway on `base` with a trunk UA on base+3 and helpers; everything stopped after the test. */
async function rig(t: TestContext, base: number, overrides: Parameters<typeof startGateway>[1], trunkSip?: string[]): Promise<Rig> {
  const sockets: WebSocket[] = [];
  // trunkSip: every SIP message the trunk sends or receives, as text (its debug log lines).
  const trunkLogger = trunkSip ? pino({ level: 'debug' }, { write: (l: string) => { const j = JSON.parse(l); if (j.sip) trunkSip.push(`${j.msg}: ${j.sip}`); } }) : pino({ level: 'silent' });
  const trunk = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: base + 3 }], logger: trunkLogger });
  const gw = await startGateway(base, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: false },
    trunk: { uri: `sip:127.0.0.1:${base + 3}`, srtp: 'off', codecs: ['PCMU'], sourceCidrs: ['127.0.0.1/32'] },
    ...overrides,
    // These tests look inside the in-thread MediaEngine (GW_TEST_MEDIA_WORKERS does not apply).
    media: { ...overrides?.media, workers: 0 },
  });
  t.after(async () => {
    for (const ws of sockets) ws.terminate();
    await gw.stop();
    await trunk.stop();
  });
  await trunk.start();

  // The gateway's internals the leak checks look at (private members, read-only here).
  const r: Rig = {
    gw,
    trunk,
    media: () => gw.gateway['media'] as MediaEngine,
    manager: () => gw.gateway['manager']!,
    signaling: () => gw.gateway['signaling']!,
    icePool: () => (gw.gateway['manager'] as unknown as { opts: { ctx: { ice: { portPool: IcePortPool } } } }).opts.ctx.ice.portPool,
    cdr: () => readFileSync(gw.cdrPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)),

    tab: (user) => openTab(base, user, SECRET, sockets),

    invite(user, fromNumber) {
      const inv = trunk.invite({
        requestUri: `sip:${user}@127.0.0.1:${base + 1}`,
        from: { uri: `sip:${fromNumber}@127.0.0.1` },
        sdp: `v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${base + 4} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n`,
      });
      const progress: number[] = [];
      inv.on('progress', (res) => progress.push(res.status));
      const final = new Promise<SipResponse>((resolve, reject) => {
        inv.once('rejected', resolve);
        inv.once('accepted', () => reject(new Error('the inbound call was answered')));
        inv.once('failed', reject);
      });
      final.catch(() => undefined); // awaited by the test; never an unhandled rejection
      return { inv, progress, final };
    },
  };
  return r;
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** A werift peer connection answers the tab's `incoming` offer (closed after the test); returns its answer SDP. */
async function weriftAnswer(t: TestContext, incoming: Msg, codecs?: RTCRtpCodecParameters[]): Promise<string> {
  const pc = new RTCPeerConnection({ iceServers: [{ urls: `stun:127.0.0.1:${await browsers.stunPort()}` }], iceUseIpv6: false, iceInterfaceAddresses: { udp4: '127.0.0.1' }, ...(codecs ? { codecs: { audio: codecs } } : {}) });
  t.after(() => pc.close());
  await pc.setRemoteDescription({ type: 'offer', sdp: String(incoming.sdp) });
  await pc.setLocalDescription(await pc.createAnswer());
  return pc.localDescription!.sdp;
}

/** An answer to the tab's `incoming` offer from a werift peer closed at once: its ICE checks never come. */
async function answerFromAGonePeer(incoming: Msg): Promise<string> {
  const pc = new RTCPeerConnection({ iceServers: [{ urls: `stun:127.0.0.1:${await browsers.stunPort()}` }], iceUseIpv6: false, iceInterfaceAddresses: { udp4: '127.0.0.1' } });
  await pc.setRemoteDescription({ type: 'offer', sdp: String(incoming.sdp) });
  await pc.setLocalDescription(await pc.createAnswer());
  const answer = pc.localDescription!.sdp;
  await pc.close();
  return answer;
}

/** The first message of `type` from index `from` on. */
async function message(tab: Tab, type: string, from = 0): Promise<Msg> {
  await until(() => tab.messages.slice(from).some((m) => m.type === type), `${type} on the tab`);
  return tab.messages.slice(from).find((m) => m.type === type)!;
}

/** An INVITE for `user` from `fromNumber`, once every tab shows the same incoming call and 180 went out. */
async function ringTabs(r: Rig, tabs: Tab[], user: string, fromNumber: string): Promise<{ call: ReturnType<Rig['invite']>; incoming: Msg }> {
  const call = r.invite(user, fromNumber);
  const incoming = await message(tabs[0], 'incoming');
  for (const tab of tabs.slice(1)) assert.equal((await message(tab, 'incoming')).callId, incoming.callId);
  await until(() => call.progress.includes(180), '180 Ringing');
  return { call, incoming };
}

/** The inbound call from `fromNumber` left its CDR line, with this cause and SIP status. */
function assertCdr(r: Rig, fromNumber: string, cause: string, sipStatus: number): void {
  const rec = r.cdr().find((c) => c.from === fromNumber);
  assert.ok(rec, `a CDR for the call from ${fromNumber}`);
  assert.equal(rec.direction, 'inbound');
  assert.equal(rec.cause, cause);
  assert.equal(rec.sipStatus, sipStatus);
}

/**
 * Holds every SIP RTP leg allocation until `release()`: the INVITE has arrived and its ring
 * targets are chosen, nothing is rung yet. The set-up window where a tab can close.
 * `abort()` (cleanup after a failed test) fails a held allocation instead, so nothing binds late.
 */
function holdSipLegAllocation(media: MediaEngine): { reached: Promise<void>; release(): void; abort(): void } {
  const original = media.createSipLeg;
  let reachedNow!: () => void;
  const reached = new Promise<void>((r) => { reachedNow = r; });
  let go!: (proceed: boolean) => void;
  const decided = new Promise<boolean>((r) => { go = r; });
  media.createSipLeg = async (o) => {
    reachedNow();
    if (!(await decided)) throw new Error('test over');
    return original.call(media, o);
  };
  const restore = () => { Reflect.deleteProperty(media, 'createSipLeg'); };
  return { reached, release: () => { restore(); go(true); }, abort: () => { restore(); go(false); } };
}

const idle = { legs: 0, bridges: 0, portsAllocated: 0 };

test('no RTP port free for an inbound call: 503 at once, the call ended and gone from the registry, nothing leaked', async (t) => {
  const BASE = 21600;
  const r = await rig(t, BASE, {
    media: { host: '127.0.0.1', portRange: [BASE + 10, BASE + 11], inactivityTimeoutSec: 60 }, // one RTP/RTCP pair
    webrtc: { portRange: [BASE + 12, BASE + 19], connectTimeoutSec: 60 },
    inbound: { ringTimeoutSec: 120 },
  });
  const alice = await r.tab('alice');

  // Call 1 rings alice and holds the only RTP pair.
  const call1 = r.invite('alice', '+15550000001');
  const incoming1 = await message(alice, 'incoming');
  assert.equal(incoming1.from, '+15550000001');
  await until(() => call1.progress.includes(180), '180 Ringing for call 1');
  assert.equal(r.gw.gateway.activeCalls, 1);
  assert.deepEqual(r.media().usage, { legs: 1, bridges: 0, portsAllocated: 1 });
  assert.equal(r.icePool().used, 1);

  // Call 2: no RTP port left. Refused with 503 (not the catch-all 500), and nothing stays behind.
  const from = alice.messages.length;
  const call2 = r.invite('alice', '+15550000002');
  const res = await within(call2.final, PROMPT_MS, 'the final response to call 2');
  assert.equal(res.status, 503, `call 2 refused for capacity: got ${res.status} ${res.reason}`);
  assert.equal(res.reason, 'Service Unavailable');
  assert.equal(r.gw.gateway.activeCalls, 1, 'the refused call is not left in the call registry');
  assert.equal(r.manager().get(incoming1.callId)?.state, 'ringing', 'call 1 still rings');
  assert.deepEqual(r.media().usage, { legs: 1, bridges: 0, portsAllocated: 1 }, 'no RTP port or leg taken by call 2');
  assert.equal(r.icePool().used, 1, 'no WebRTC port taken by call 2');
  assertCdr(r, '+15550000002', 'unavailable', 503); // written as call 2 left the registry
  assert.ok(!alice.messages.slice(from).some((m) => m.type === 'incoming'), 'alice was not rung for call 2');

  // The trunk gives up on call 1: everything goes back.
  call1.inv.cancel();
  assert.equal((await within(call1.final, PROMPT_MS, 'the final response to call 1')).status, 487);
  assert.equal((await message(alice, 'ended', from)).cause, 'cancelled');
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0 && r.media().usage.portsAllocated === 0, 'call 1 released');
  assert.deepEqual(r.media().usage, idle);

  // With the pair free again a new call rings normally.
  const from3 = alice.messages.length;
  const call3 = r.invite('alice', '+15550000003');
  assert.equal((await message(alice, 'incoming', from3)).from, '+15550000003');
  call3.inv.cancel();
  assert.equal((await within(call3.final, PROMPT_MS, 'the final response to call 3')).status, 487);
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0 && r.media().usage.portsAllocated === 0, 'call 3 released');
});

test('the only tab closes while the inbound call is set up: refused at once with 480 (gone, not declined), nothing leaked', async (t) => {
  const BASE = 21630;
  const r = await rig(t, BASE, {
    media: { host: '127.0.0.1', portRange: [BASE + 10, BASE + 19], inactivityTimeoutSec: 60 },
    webrtc: { portRange: [BASE + 20, BASE + 29], connectTimeoutSec: 60 },
    inbound: { ringTimeoutSec: 120 }, // far beyond PROMPT_MS: a call left ringing shows up as a timeout
  });
  const bob = await r.tab('bob');
  const gate = holdSipLegAllocation(r.media());
  t.after(() => gate.abort()); // no-op once released

  const call = r.invite('bob', '+15550000011');
  await within(gate.reached, PROMPT_MS, 'the INVITE to reach call set-up');
  assert.equal(r.gw.gateway.activeCalls, 1, 'the call exists and is being set up');
  // The tab goes away now; the gateway has seen it close before set-up goes on.
  bob.ws.close();
  await until(() => r.signaling().connectionCount === 0, 'the gateway to see the tab close');
  gate.release();

  const res = await within(call.final, PROMPT_MS, 'a final response (the call must not ring on until the ring timeout)');
  // The user never saw the call: 480, like "no tab open", so the PBX may still try voicemail.
  assert.equal(res.status, 480, `unavailable, not declined: got ${res.status} ${res.reason}`);
  assert.equal(res.reason, 'Temporarily Unavailable');
  await until(() => r.gw.gateway.activeCalls === 0, 'the call out of the registry');
  await until(() => r.icePool().used === 0, 'the browser leg\'s WebRTC port released');
  assert.deepEqual(r.media().usage, idle, 'the SIP leg\'s RTP port released');
  assertCdr(r, '+15550000011', 'unavailable', 480);
});

test('one of two tabs closes while the inbound call is set up: the other rings alone, and its decline ends the call at once', async (t) => {
  const BASE = 21660;
  const r = await rig(t, BASE, {
    media: { host: '127.0.0.1', portRange: [BASE + 10, BASE + 19], inactivityTimeoutSec: 60 },
    webrtc: { portRange: [BASE + 20, BASE + 29], connectTimeoutSec: 60 },
    inbound: { ringTimeoutSec: 120 },
  });
  const closing = await r.tab('carol');
  const staying = await r.tab('carol');
  const gate = holdSipLegAllocation(r.media());
  t.after(() => gate.abort()); // no-op once released

  const call = r.invite('carol', '+15550000021');
  await within(gate.reached, PROMPT_MS, 'the INVITE to reach call set-up');
  closing.ws.close();
  await until(() => r.signaling().connectionCount === 1, 'the gateway to see the first tab close');
  gate.release();

  // The remaining tab rings; the closed one holds no fork, so only one WebRTC port is in use.
  const incoming = await message(staying, 'incoming');
  assert.equal(incoming.from, '+15550000021');
  await until(() => call.progress.includes(180), '180 Ringing');
  const live = r.manager().get(incoming.callId);
  assert.equal(live?.state, 'ringing', 'the call goes on for the tab that is still open');
  await until(() => r.icePool().used === 1, 'the closed tab\'s browser leg released (one WebRTC port, the open tab\'s)');

  // The open tab declines explicitly: nobody is left ringing, so the caller hears it at once, as
  // 603 (the closed tab's vanishing does not turn the user's decline into a 480).
  const from = staying.messages.length;
  staying.ws.send(JSON.stringify({ type: 'reject', callId: incoming.callId }));
  const res = await within(call.final, PROMPT_MS, 'a final response after the last open tab declined');
  assert.equal(res.status, 603, `declined: got ${res.status} ${res.reason}`);
  const ended = await message(staying, 'ended', from);
  assert.equal(ended.callId, incoming.callId);
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0, 'the call and its ports released');
  assert.deepEqual(r.media().usage, idle);
});

/** Gateway options for the squeezed blocks: RTP BASE+6..BASE+9 (two pairs), WebRTC BASE+10..webrtcLast. */
function smallBlock(base: number, webrtcLast: number): Parameters<typeof startGateway>[1] {
  return {
    media: { host: '127.0.0.1', portRange: [base + 6, base + 9], inactivityTimeoutSec: 60 },
    webrtc: { portRange: [base + 10, webrtcLast], connectTimeoutSec: 60 },
    inbound: { ringTimeoutSec: 120 }, // far beyond PROMPT_MS: a call left ringing shows up as a timeout
  };
}

test('a ringing tab closes its WebSocket: 480 Temporarily Unavailable (not 603), CDR unavailable, nothing leaked; with two tabs only when the last one goes', async (t) => {
  const BASE = 21700; // 21700-21717
  const r = await rig(t, BASE, smallBlock(BASE, BASE + 17));

  // One tab, ringing (it has the `incoming` offer and the trunk heard 180), closes.
  const dave = await r.tab('dave');
  const call = r.invite('dave', '+15550000031');
  const incoming = await message(dave, 'incoming');
  await until(() => call.progress.includes(180), '180 Ringing');
  assert.equal(r.manager().get(incoming.callId)?.state, 'ringing');
  dave.ws.close();
  const res = await within(call.final, PROMPT_MS, 'a final response once the ringing tab closed');
  assert.equal(res.status, 480, `the tab went away, it did not decline: got ${res.status} ${res.reason}`);
  assert.equal(res.reason, 'Temporarily Unavailable');
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0, 'the call and its WebRTC port released');
  assert.deepEqual(r.media().usage, idle, 'the SIP leg\'s RTP port released');
  await until(() => r.signaling().connectionCount === 0, 'the gateway to see the tab close');
  assertCdr(r, '+15550000031', 'unavailable', 480);

  // Two ringing tabs: the first closing leaves the call ringing on the second; the second
  // closing too, with no decline from either, is again 480.
  const first = await r.tab('dave');
  const second = await r.tab('dave');
  const { call: call2, incoming: incoming2 } = await ringTabs(r, [first, second], 'dave', '+15550000032');
  let answered2 = false;
  call2.final.then(() => { answered2 = true; }, () => { answered2 = true; });
  first.ws.close();
  await until(() => r.signaling().connectionCount === 1, 'the gateway to see the first tab close');
  await until(() => r.icePool().used === 1, 'the closed tab\'s browser leg released');
  // Time for a wrong final response (480 at the first tab's close) to cross the wire.
  await new Promise((res) => setTimeout(res, 200));
  assert.equal(r.manager().get(incoming2.callId)?.state, 'ringing', 'the call still rings on the other tab');
  assert.equal(answered2, false, 'no final response while a tab still rings');
  assert.ok(!second.messages.some((m) => m.type === 'ended'), 'the open tab is still rung');
  second.ws.close();
  const res2 = await within(call2.final, PROMPT_MS, 'a final response once the last ringing tab closed');
  assert.equal(res2.status, 480, `got ${res2.status} ${res2.reason}`);
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0, 'the second call and its WebRTC ports released');
  assert.deepEqual(r.media().usage, idle);
  assertCdr(r, '+15550000032', 'unavailable', 480);
});

test('one of two ringing tabs declines: 603 at once (rejected), the other tab stops ringing (declined-elsewhere), nothing leaked', async (t) => {
  const BASE = 21718; // 21718-21733
  const r = await rig(t, BASE, smallBlock(BASE, BASE + 15));
  const declining = await r.tab('erin');
  const other = await r.tab('erin');
  const { call, incoming } = await ringTabs(r, [declining, other], 'erin', '+15550000041');

  // The decline alone settles it: the other tab is still open and ringing, and does nothing.
  const from = declining.messages.length;
  const fromOther = other.messages.length;
  declining.ws.send(JSON.stringify({ type: 'reject', callId: incoming.callId }));
  const res = await within(call.final, PROMPT_MS, 'a final response once one tab declined');
  assert.equal(res.status, 603, `the user declined in one tab: got ${res.status} ${res.reason}`);
  assert.equal(res.reason, 'Decline');
  const ended = await message(declining, 'ended', from);
  assert.equal(ended.callId, incoming.callId);
  assert.equal(ended.cause, 'rejected', 'the declining tab is out of the call');
  const endedOther = await message(other, 'ended', fromOther);
  assert.equal(endedOther.callId, incoming.callId);
  assert.equal(endedOther.cause, 'declined-elsewhere', `the other tab is told why it stopped ringing: ${JSON.stringify(endedOther)}`);
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0, 'the call and both tabs\' WebRTC ports released');
  assert.deepEqual(r.media().usage, idle);
  assertCdr(r, '+15550000041', 'rejected', 603);

  // Each tab heard of the end once; the other tab closing afterwards changes nothing.
  other.ws.close();
  await until(() => r.signaling().connectionCount === 1, 'the gateway to see the other tab close');
  assert.equal(declining.messages.filter((m) => m.type === 'ended').length, 1);
  assert.equal(other.messages.filter((m) => m.type === 'ended').length, 1);
  assert.equal(r.cdr().filter((c) => c.from === '+15550000041').length, 1, 'one CDR for the call');
});

test('handling an INVITE throws after the call was registered: 500, the call ended, out of the registry, with a CDR, nothing leaked', async (t) => {
  const BASE = 21734; // 21734-21749
  const r = await rig(t, BASE, smallBlock(BASE, BASE + 15));
  const frank = await r.tab('frank');

  // The SIP RTP leg the call gets throws when the trunk's media is applied to it: an exception
  // from a dependency after the call is in the registry, that nothing in the call catches.
  const media = r.media();
  const original = media.createSipLeg;
  media.createSipLeg = async (o) => {
    const leg = await original.call(media, o);
    leg.setRemote = () => { throw new Error('test: setRemote fails'); };
    return leg;
  };
  const restore = () => { Reflect.deleteProperty(media, 'createSipLeg'); };
  t.after(restore);

  const call = r.invite('frank', '+15550000051');
  const res = await within(call.final, PROMPT_MS, 'the final response to the failing INVITE');
  assert.equal(res.status, 500, `got ${res.status} ${res.reason}`);
  assert.equal(res.reason, 'Server Internal Error');
  await until(() => r.gw.gateway.activeCalls === 0, 'the failed call out of the registry');
  await until(() => r.media().usage.portsAllocated === 0, 'the failed call\'s RTP port released');
  assert.deepEqual(r.media().usage, idle);
  assert.equal(r.icePool().used, 0);
  assertCdr(r, '+15550000051', 'failed', 500);
  assert.ok(!frank.messages.some((m) => m.type === 'incoming'), 'the tab was never rung');

  assert.equal(r.cdr().filter((c) => c.from === '+15550000051').length, 1, 'one CDR for the call');

  // The gateway goes on: the next call rings normally.
  restore();
  const next = r.invite('frank', '+15550000052');
  assert.equal((await message(frank, 'incoming')).from, '+15550000052');
  next.inv.cancel();
  assert.equal((await within(next.final, PROMPT_MS, 'the final response to the next call')).status, 487);
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0 && r.media().usage.portsAllocated === 0, 'the next call released');
});

test('busy in one tab keeps the others ringing; a decline in another then ends the call at once (603); a busy tab with the others gone makes it 486', async (t) => {
  const BASE = 21800; // 21800-21817: WebRTC four pairs, one per tab
  const r = await rig(t, BASE, smallBlock(BASE, BASE + 17));
  const busy = await r.tab('gina');
  const declining = await r.tab('gina');
  const third = await r.tab('gina');

  // Call 1 rings all three tabs. One is busy: only that tab is out of the call.
  const call = r.invite('gina', '+15550000061');
  let settled = false;
  call.final.then(() => { settled = true; }, () => { settled = true; });
  const incoming = await message(busy, 'incoming');
  for (const tab of [declining, third]) assert.equal((await message(tab, 'incoming')).callId, incoming.callId);
  await until(() => call.progress.includes(180), '180 Ringing');
  busy.ws.send(JSON.stringify({ type: 'reject', callId: incoming.callId, reason: 'busy' }));
  assert.equal((await message(busy, 'ended')).cause, 'rejected', 'the busy tab is out of the call');
  await until(() => r.icePool().used === 2, 'the busy tab\'s browser leg released');
  await new Promise((res) => setTimeout(res, 200));
  assert.equal(r.manager().get(incoming.callId)?.state, 'ringing', 'the other tabs still ring');
  assert.equal(settled, false, 'no final response while tabs still ring');
  for (const tab of [declining, third]) assert.ok(!tab.messages.some((m) => m.type === 'ended'), 'the other tabs are still rung');

  // Another tab declines: 603 at once, though the third still rings; it is told why it stopped.
  declining.ws.send(JSON.stringify({ type: 'reject', callId: incoming.callId, reason: 'declined' }));
  const res = await within(call.final, PROMPT_MS, 'a final response once a tab declined');
  assert.equal(res.status, 603, `a decline stops the call everywhere: got ${res.status} ${res.reason}`);
  assert.equal((await message(declining, 'ended')).cause, 'rejected');
  assert.equal((await message(third, 'ended')).cause, 'declined-elsewhere');
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0 && r.media().usage.portsAllocated === 0, 'call 1 released');
  assert.equal(busy.messages.filter((m) => m.type === 'ended').length, 1, 'the busy tab heard of call 1 once, when it refused');
  assertCdr(r, '+15550000061', 'rejected', 603);

  // Call 2: one tab busy, then the other two close without a word: 486, the busy answer stands.
  const from = busy.messages.length;
  const call2 = r.invite('gina', '+15550000062');
  let settled2 = false;
  call2.final.then(() => { settled2 = true; }, () => { settled2 = true; });
  const incoming2 = await message(busy, 'incoming', from);
  await until(() => call2.progress.includes(180), '180 Ringing for call 2');
  busy.ws.send(JSON.stringify({ type: 'reject', callId: incoming2.callId, reason: 'busy' }));
  await message(busy, 'ended', from);
  await new Promise((res) => setTimeout(res, 200));
  assert.equal(settled2, false, 'still ringing on the other tabs');
  declining.ws.close();
  third.ws.close();
  const res2 = await within(call2.final, PROMPT_MS, 'a final response once no tab rings');
  assert.equal(res2.status, 486, `got ${res2.status} ${res2.reason}`);
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0 && r.media().usage.portsAllocated === 0, 'call 2 released');
  assertCdr(r, '+15550000062', 'busy', 486);
});

test('hangup from a ringing tab is its decline: 603 at once, and the other tab is told declined-elsewhere', async (t) => {
  const BASE = 21818; // 21818-21833
  const r = await rig(t, BASE, smallBlock(BASE, BASE + 15));
  const hanging = await r.tab('hank');
  const other = await r.tab('hank');
  const { call, incoming } = await ringTabs(r, [hanging, other], 'hank', '+15550000071');
  hanging.ws.send(JSON.stringify({ type: 'hangup', callId: incoming.callId }));
  const res = await within(call.final, PROMPT_MS, 'a final response once a tab hung up');
  assert.equal(res.status, 603, `got ${res.status} ${res.reason}`);
  assert.equal((await message(hanging, 'ended')).cause, 'rejected');
  assert.equal((await message(other, 'ended')).cause, 'declined-elsewhere');
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0 && r.media().usage.portsAllocated === 0, 'the call released');
  assertCdr(r, '+15550000071', 'rejected', 603);
});

test('a caller that starts on hold (a=sendonly, e.g. a queue playing music) is answered a=recvonly, not sendrecv', async (t) => {
  const BASE = 22860; // 22860-22875
  const r = await rig(t, BASE, smallBlock(BASE, BASE + 15));
  const tab = await r.tab('hold');
  const inv = r.trunk.invite({
    requestUri: `sip:hold@127.0.0.1:${BASE + 1}`,
    from: { uri: 'sip:+15550000090@127.0.0.1' },
    sdp: `v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 4} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n`,
  });
  const answered = new Promise<SipResponse>((resolve, reject) => { inv.once('accepted', resolve); inv.once('rejected', (res) => reject(new Error(`rejected ${res.status}`))); inv.once('failed', reject); });
  const incoming = await message(tab, 'incoming');
  tab.ws.send(JSON.stringify({ type: 'accept', callId: incoming.callId, sdp: await weriftAnswer(t, incoming) }));
  const res = await within(answered, PROMPT_MS, 'the 200 OK');
  assert.match(res.body, /^a=recvonly\r$/m, res.body);
  tab.ws.send(JSON.stringify({ type: 'hangup', callId: incoming.callId }));
  await until(() => r.gw.gateway.activeCalls === 0, 'the call ended');
});

test('an answer from the tab without usable audio (no DTLS fingerprint) is refused before any 200 OK; the tab can answer again', async (t) => {
  const BASE = 23600; // 23600-23615
  const r = await rig(t, BASE, smallBlock(BASE, BASE + 15));
  const tab = await r.tab('fix');
  const inv = r.trunk.invite({
    requestUri: `sip:fix@127.0.0.1:${BASE + 1}`,
    from: { uri: 'sip:+15550000095@127.0.0.1' },
    sdp: `v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 4} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n`,
  });
  let final = false;
  const answered = new Promise<SipResponse>((resolve, reject) => { inv.once('accepted', (res) => { final = true; resolve(res); }); inv.once('rejected', (res) => { final = true; reject(new Error(`rejected ${res.status}`)); }); inv.once('failed', reject); });
  const incoming = await message(tab, 'incoming');
  const good = await weriftAnswer(t, incoming);
  const from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'accept', callId: incoming.callId, sdp: good.replace(/^a=fingerprint:.*\r\n/m, '') }));
  await until(() => tab.messages.slice(from).some((m) => m.type === 'error'), 'the refusal');
  const err = tab.messages.slice(from).find((m) => m.type === 'error')!;
  assert.match(String(err.message), /bad answer SDP: no DTLS fingerprint/);
  await new Promise((res) => setTimeout(res, 200));
  assert.equal(final, false, 'no final response to the INVITE: the call still rings');
  tab.ws.send(JSON.stringify({ type: 'accept', callId: incoming.callId, sdp: good }));
  const res = await within(answered, PROMPT_MS, 'the 200 OK');
  assert.equal(res.status, 200);
  tab.ws.send(JSON.stringify({ type: 'hangup', callId: incoming.callId }));
  await until(() => r.gw.gateway.activeCalls === 0, 'the call ended');
});

/**
 * A trunk that offers Opus first, and a tab that sends PCMU: with webrtc.preferPcmu the trunk is
 * answered G.711 (passed through, no coder); a tab that answers PCMU unasked, after the trunk
 * was answered Opus, gets the call transcoded (before, its audio was dropped).
 */
async function opusFirstCall(t: TestContext, base: number, preferPcmu: boolean, tabCodecs?: RTCRtpCodecParameters[]): Promise<{ r: Rig; answer: SipResponse; mode: string }> {
  const block = smallBlock(base, base + 15);
  const r = await rig(t, base, { ...block, webrtc: { ...block!.webrtc, preferPcmu }, trunk: { uri: `sip:127.0.0.1:${base + 3}`, srtp: 'off', codecs: ['opus', 'PCMU'], sourceCidrs: ['127.0.0.1/32'] } });
  const tab = await r.tab('pcmu');
  const inv = r.trunk.invite({
    requestUri: `sip:pcmu@127.0.0.1:${base + 1}`,
    from: { uri: 'sip:+15550000096@127.0.0.1' },
    sdp: `v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${base + 4} RTP/AVP 111 0\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n`,
  });
  const answered = new Promise<SipResponse>((resolve, reject) => { inv.once('accepted', resolve); inv.once('rejected', (res) => reject(new Error(`rejected ${res.status}`))); inv.once('failed', reject); });
  const incoming = await message(tab, 'incoming');
  tab.ws.send(JSON.stringify({ type: 'accept', callId: incoming.callId, sdp: await weriftAnswer(t, incoming, tabCodecs) }));
  const answer = await within(answered, PROMPT_MS, 'the 200 OK');
  await until(() => r.media().usage.bridges === 1, 'the bridge');
  const [entry] = [...(r.media()['bridges'] as Set<{ bridge: { stats(): { mode: string } } }>)];
  const mode = entry.bridge.stats().mode;
  tab.ws.send(JSON.stringify({ type: 'hangup', callId: incoming.callId }));
  await until(() => r.gw.gateway.activeCalls === 0, 'the call ended');
  return { r, answer, mode };
}

test('inbound, trunk offers Opus first, webrtc.preferPcmu: answered PCMU, passed through to the PCMU tab', async (t) => {
  const { answer, mode } = await opusFirstCall(t, 25500, true); // 25500-25515
  assert.match(answer.body, /^m=audio \d+ RTP\/AVP 0\r$/m, answer.body);
  assert.equal(mode, 'passthrough');
});

test('inbound, trunk answered Opus, then the tab answers PCMU only: transcoded, not dropped', async (t) => {
  const { answer, mode } = await opusFirstCall(t, 25520, false, [new RTCRtpCodecParameters({ mimeType: 'audio/PCMU', clockRate: 8000, channels: 1 })]); // 25520-25535
  assert.match(answer.body, /^m=audio \d+ RTP\/AVP 111\r$/m, answer.body);
  assert.equal(mode, 'transcodeOpusTrunk');
});

test('inbound INVITE requiring 100rel: our 180 is reliable, the caller PRACKs it and gets 200, the tab answers and the call is up', async (t) => {
  const BASE = 25540; // 25540-25555
  const sip: string[] = [];
  const r = await rig(t, BASE, smallBlock(BASE, BASE + 15), sip);
  const tab = await r.tab('rel');
  const inv = r.trunk.invite({
    requestUri: `sip:rel@127.0.0.1:${BASE + 1}`,
    from: { uri: 'sip:+15550000097@127.0.0.1' },
    headers: [['Require', '100rel']],
    sdp: `v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 4} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n`,
  });
  const progress: Array<[number, string | undefined]> = [];
  inv.on('progress', (res) => progress.push([res.status, res.header('rseq')]));
  const answered = new Promise<SipResponse>((resolve, reject) => { inv.once('accepted', resolve); inv.once('rejected', (res) => reject(new Error(`rejected ${res.status}`))); inv.once('failed', reject); });
  const incoming = await message(tab, 'incoming');
  await until(() => progress.length === 1, 'the 180');
  assert.match(String(progress[0][1]), /^\d+$/, 'the 180 carries an RSeq');
  // The caller's PRACK names it, and the gateway answers it 200 (before the tab answers).
  await until(() => sip.some((m) => m.startsWith('SIP received: SIP/2.0 200') && /^CSeq: \d+ PRACK\r?$/m.test(m)), 'the 200 to the PRACK');
  const prack = sip.find((m) => m.startsWith('SIP sent: PRACK '))!;
  assert.match(prack, new RegExp(`^RAck: ${progress[0][1]} 1 INVITE\\r?$`, 'm'));
  tab.ws.send(JSON.stringify({ type: 'accept', callId: incoming.callId, sdp: await weriftAnswer(t, incoming) }));
  await within(answered, PROMPT_MS, 'the 200 OK');
  assert.deepEqual(progress.map((p) => p[0]), [180], 'the 180 passed on once, however often it was sent');
  tab.ws.send(JSON.stringify({ type: 'hangup', callId: incoming.callId }));
  await until(() => r.gw.gateway.activeCalls === 0, 'the call ended');
  await until(() => r.cdr().length === 1, 'the CDR');
  assert.equal(r.cdr()[0].cause, 'local-hangup');
});

test('an inbound call from the trunk: our BYE challenged by the trunk is sent again with the trunk\'s credentials', async (t) => {
  const BASE = 25740; // 25740-25755
  const r = await rig(t, BASE, { ...smallBlock(BASE, BASE + 15), trunk: { uri: `sip:127.0.0.1:${BASE + 3}`, srtp: 'off', codecs: ['PCMU'], sourceCidrs: ['127.0.0.1/32'], username: 'gw', password: 's3cret-trunk' } });
  const tab = await r.tab('byeauth');
  const inv = r.trunk.invite({
    requestUri: `sip:byeauth@127.0.0.1:${BASE + 1}`,
    from: { uri: 'sip:+15550000098@127.0.0.1' },
    sdp: `v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 4} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n`,
  });
  const answered = new Promise<Dialog>((resolve, reject) => { inv.once('accepted', (_res, d) => resolve(d)); inv.once('rejected', (res) => reject(new Error(`rejected ${res.status}`))); inv.once('failed', reject); });
  const incoming = await message(tab, 'incoming');
  tab.ws.send(JSON.stringify({ type: 'accept', callId: incoming.callId, sdp: await weriftAnswer(t, incoming) }));
  const dialog = await within(answered, PROMPT_MS, 'the 200 OK');
  // The trunk challenges every BYE without good credentials.
  const server = new DigestServer('trunk.example', (u) => (u === 'gw' ? 's3cret-trunk' : undefined));
  const byes: number[] = [];
  const ended = new Promise<string>((resolve) => dialog.once('terminated', resolve));
  const orig = dialog.receive.bind(dialog);
  dialog.receive = (req, respond) => {
    if (req.method === 'BYE' && !server.verify(req).ok) { byes.push(401); respond(401, 'Unauthorized', { headers: server.challenges().map((c) => ['WWW-Authenticate', c] as [string, string]) }); return; }
    if (req.method === 'BYE') byes.push(200);
    orig(req, respond);
  };
  tab.ws.send(JSON.stringify({ type: 'hangup', callId: incoming.callId }));
  assert.equal(await within(ended, PROMPT_MS, 'the trunk\'s dialog ended'), 'bye');
  assert.deepEqual(byes, [401, 200], 'challenged once, then accepted with the trunk\'s credentials');
});

test('an inbound INVITE without SDP (delayed offer): our 200 offers, the answer in the ACK sets the media; an ACK without one ends the call (failed)', async (t) => {
  const BASE = 25760; // 25760-25775
  const r = await rig(t, BASE, smallBlock(BASE, BASE + 15));
  const tab = await r.tab('late');
  const caller = dgram.createSocket('udp4');
  const got: string[] = [];
  caller.on('message', (m) => got.push(m.toString()));
  await new Promise<void>((resolve) => caller.bind(0, '127.0.0.1', () => resolve()));
  t.after(() => caller.close());
  const port = caller.address().port;
  const send = (text: string) => caller.send(text, BASE + 1, '127.0.0.1');
  const hdr = (msg: string, name: string) => new RegExp(`^${name}:\\s*(.*)$`, 'mi').exec(msg)?.[1].trim() ?? '';
  const answerSdp = `v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 4} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n`;
  async function placeCall(id: string): Promise<{ ok: string; incoming: Msg }> {
    const from = tab.messages.length;
    send([`INVITE sip:late@127.0.0.1:${BASE + 1} SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK${id};rport`, `From: <sip:+15550000099@127.0.0.1>;tag=c${id}`,
      'To: <sip:late@127.0.0.1>', `Call-ID: ${id}@test`, 'CSeq: 1 INVITE', `Contact: <sip:caller@127.0.0.1:${port}>`, 'Max-Forwards: 70', 'Content-Length: 0', '', ''].join('\r\n'));
    const incoming = await message(tab, 'incoming', from);
    tab.ws.send(JSON.stringify({ type: 'accept', callId: incoming.callId, sdp: await weriftAnswer(t, incoming) }));
    await until(() => got.some((m) => m.startsWith('SIP/2.0 200') && m.includes(`Call-ID: ${id}@test`)), 'the 200 OK');
    return { ok: got.find((m) => m.startsWith('SIP/2.0 200') && m.includes(`Call-ID: ${id}@test`))!, incoming };
  }
  const ack = (ok: string, id: string, body: string) => send([`ACK ${/<([^>]+)>/.exec(hdr(ok, 'Contact'))![1]} SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK${id}ack`,
    `From: <sip:+15550000099@127.0.0.1>;tag=c${id}`, `To: ${hdr(ok, 'To')}`, `Call-ID: ${id}@test`, 'CSeq: 1 ACK', 'Max-Forwards: 70',
    ...(body ? ['Content-Type: application/sdp'] : []), `Content-Length: ${Buffer.byteLength(body)}`, '', body].join('\r\n'));

  // The answer comes in the ACK: the media goes where it says.
  const { ok, incoming } = await placeCall('d1');
  const offer = ok.slice(ok.indexOf('\r\n\r\n') + 4);
  assert.match(offer, /^m=audio \d+ RTP\/AVP 0( \d+)*\r$/m, 'our offer in the 200, PCMU among its codecs');
  assert.match(offer, /telephone-event/);
  const call = [...(r.manager() as unknown as { calls: Map<string, any> }).calls.values()][0];
  // Before the ACK our offer is outstanding: a hold (a second offer) waits for the answer
  // (RFC 3261 §14.1), then goes.
  const from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'hold', callId: incoming.callId }));
  const ourReinvites = () => got.filter((m) => m.startsWith('INVITE ') && m.includes('Call-ID: d1@test'));
  await new Promise((res) => setTimeout(res, 300));
  assert.equal(ourReinvites().length, 0, 'no second offer before the ACK');
  ack(ok, 'd1', answerSdp);
  await until(() => call['sipLeg']?.['dest']?.port === BASE + 4, 'the media set by the ACK\'s answer');
  assert.equal(call.state, 'answered');
  await until(() => ourReinvites().length > 0, 'the hold re-INVITE once the ACK came');
  const hold = ourReinvites()[0];
  assert.match(hold, /a=sendonly/);
  send(['SIP/2.0 200 OK', `Via: ${hdr(hold, 'Via')}`, `From: ${hdr(hold, 'From')}`, `To: ${hdr(hold, 'To')}`, 'Call-ID: d1@test', `CSeq: ${hdr(hold, 'CSeq')}`,
    `Contact: <sip:caller@127.0.0.1:${port}>`, 'Content-Type: application/sdp', `Content-Length: ${Buffer.byteLength(answerSdp)}`, '', answerSdp].join('\r\n'));
  assert.equal((await message(tab, 'held', from)).by, 'local');
  assert.doesNotMatch(call['dialog'].localSdp, /telephone-event/, 'a refresh re-sends what was agreed (PCMU alone), not our first offer');
  // The tab hangs up: our BYE reaches the caller.
  tab.ws.send(JSON.stringify({ type: 'hangup', callId: incoming.callId }));
  await until(() => got.some((m) => m.startsWith('BYE ') && m.includes('Call-ID: d1@test')), 'our BYE');
  const bye = got.find((m) => m.startsWith('BYE ') && m.includes('Call-ID: d1@test'))!;
  send(['SIP/2.0 200 OK', `Via: ${hdr(bye, 'Via')}`, `From: ${hdr(bye, 'From')}`, `To: ${hdr(bye, 'To')}`, 'Call-ID: d1@test', `CSeq: ${hdr(bye, 'CSeq')}`, 'Content-Length: 0', '', ''].join('\r\n'));
  await until(() => r.gw.gateway.activeCalls === 0, 'the first call ended');

  // An ACK without the answer: no media could be set, the call ends as failed.
  const second = await placeCall('d2');
  ack(second.ok, 'd2', '');
  await until(() => got.some((m) => m.startsWith('BYE ') && m.includes('Call-ID: d2@test')), 'our BYE for the call without an answer');
  await until(() => r.cdr().length === 2, 'both CDRs');
  assert.deepEqual(r.cdr().map((c) => c.cause), ['local-hangup', 'failed']);

  // Without SDP and requiring 100rel, the offer would belong in our reliable 180 (none there): 488.
  send([`INVITE sip:late@127.0.0.1:${BASE + 1} SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bKd3;rport`, 'From: <sip:+15550000099@127.0.0.1>;tag=cd3',
    'To: <sip:late@127.0.0.1>', 'Call-ID: d3@test', 'CSeq: 1 INVITE', `Contact: <sip:caller@127.0.0.1:${port}>`, 'Require: 100rel', 'Max-Forwards: 70', 'Content-Length: 0', '', ''].join('\r\n'));
  await until(() => got.some((m) => m.startsWith('SIP/2.0 488') && m.includes('Call-ID: d3@test')), 'a 488');
});

test('a tab that accepts but whose audio never connects: no 200 OK (the caller hears ringing on), then 480 with cause ice-failed at the connect timeout; nothing leaked', async (t) => {
  const BASE = 25972; // 25972-25987
  const block = smallBlock(BASE, BASE + 15);
  const r = await rig(t, BASE, { ...block, webrtc: { portRange: [BASE + 10, BASE + 15], connectTimeoutSec: 2 } });
  const tab = await r.tab('noaudio');
  const call = r.invite('noaudio', '+15550000097');
  const incoming = await message(tab, 'incoming');
  await until(() => call.progress.includes(180), '180 Ringing');
  // A peer that answers and is gone at once: its ICE checks never come (UDP blocked, say).
  const answer = await answerFromAGonePeer(incoming);
  const t0 = Date.now();
  tab.ws.send(JSON.stringify({ type: 'accept', callId: incoming.callId, sdp: answer }));
  // r.invite's final rejects should the INVITE be answered 200.
  const res = await within(call.final, 8000, 'the final response');
  assert.equal(res.status, 480);
  assert.ok(Date.now() - t0 >= 1500, `refused after ${Date.now() - t0} ms: at the connect timeout, not at once`);
  assert.equal((await message(tab, 'ended')).cause, 'ice-failed');
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0 && r.media().usage.portsAllocated === 0, 'everything released');
  const rec = r.cdr().find((c) => c.from === '+15550000097');
  assert.equal(rec?.cause, 'ice-failed');
  assert.equal(rec?.sipStatus, 480);
  assert.equal(rec?.answerTime, undefined, 'never answered');
});

test('INVITEs refused before any call exists leave CDR lines: a user with no tab open (480, unavailable), no such user (404, not-found)', async (t) => {
  const BASE = 26112; // 26112-26127
  const r = await rig(t, BASE, { ...smallBlock(BASE, BASE + 15), inbound: { ringTimeoutSec: 120, routeByUserPart: false, didMap: { '+15550009999': 'nobody-online' } } });
  const offline = r.invite('+15550009999', '+15550000051');
  assert.equal((await within(offline.final, PROMPT_MS, 'the 480')).status, 480);
  const unknown = r.invite('+15550008888', '+15550000052');
  assert.equal((await within(unknown.final, PROMPT_MS, 'the 404')).status, 404);
  await until(() => r.cdr().length === 2, 'two CDR lines');
  const [a, b] = r.cdr();
  assert.deepEqual([a.direction, a.from, a.to, a.identity, a.cause, a.sipStatus], ['inbound', '+15550000051', '+15550009999', 'nobody-online', 'unavailable', 480]);
  assert.deepEqual([b.direction, b.from, b.to, b.cause, b.sipStatus], ['inbound', '+15550000052', '+15550008888', 'not-found', 404]);
  assert.equal(r.gw.gateway.activeCalls, 0);
});

test('a tab that accepts and then closes (normally) before its audio connects: 480 like a tab gone while ringing, not 603', async (t) => {
  const BASE = 26128; // 26128-26143
  const r = await rig(t, BASE, smallBlock(BASE, BASE + 15));
  const tab = await r.tab('closing');
  const call = r.invite('closing', '+15550000096');
  const incoming = await message(tab, 'incoming');
  await until(() => call.progress.includes(180), '180 Ringing');
  const answer = await answerFromAGonePeer(incoming); // its ICE checks never come: the 200 waits
  tab.ws.send(JSON.stringify({ type: 'accept', callId: incoming.callId, sdp: answer }));
  await new Promise((res) => setTimeout(res, 300));
  tab.ws.close(1000);
  const res = await within(call.final, PROMPT_MS, 'the final response');
  assert.equal(res.status, 480);
  await until(() => r.cdr().some((c) => c.from === '+15550000096'), 'the CDR');
  assert.equal(r.cdr().find((c) => c.from === '+15550000096')!.cause, 'unavailable');
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0 && r.media().usage.portsAllocated === 0, 'everything released');
});

test('refused attempts are recorded at most 20 a second (a forged flood from a trusted address must not fsync without bound), with their From and To cut to 64 characters', async (t) => {
  const BASE = 26144; // 26144-26159
  const r = await rig(t, BASE, { ...smallBlock(BASE, BASE + 15), inbound: { ringTimeoutSec: 120, routeByUserPart: false } });
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((res) => sock.bind(0, '127.0.0.1', () => res()));
  t.after(() => sock.close());
  const answers: string[] = [];
  sock.on('message', (m) => { const s = m.toString(); if (/^SIP\/2\.0 404/.test(s)) answers.push(s); });
  const longUser = '9'.repeat(200);
  const port = sock.address().port;
  for (let i = 0; i < 40; i++) {
    sock.send(`INVITE sip:${longUser}@127.0.0.1:${BASE + 1} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK-flood-${i}\r\nFrom: <sip:+1555000${String(i).padStart(4, '0')}@127.0.0.1>;tag=f${i}\r\nTo: <sip:${longUser}@127.0.0.1>\r\nCall-ID: flood-${i}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n`, BASE + 1, '127.0.0.1');
  }
  await until(() => answers.length === 40, 'every INVITE answered 404', 10_000);
  const recs = r.cdr();
  assert.ok(recs.length >= 20 && recs.length <= 40, `${recs.length} records`);
  // All 40 arrive within a second or two: at most 20 recorded in any one second.
  const perSecond = new Map<string, number>();
  for (const rec of recs) perSecond.set(rec.startTime.slice(0, 19), (perSecond.get(rec.startTime.slice(0, 19)) ?? 0) + 1);
  assert.ok([...perSecond.values()].every((n) => n <= 20), JSON.stringify([...perSecond]));
  assert.ok(recs.every((rec) => rec.to.length === 64 && rec.cause === 'not-found'));
});
