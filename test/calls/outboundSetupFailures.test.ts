/**
 * Outbound calls (a tab's `call` → INVITE to the trunk) whose set-up throws after the call was
 * registered, ends before the tab's session attached to it, or finds no free RTP port. A whole
 * gateway in this process on loopback, a WebSocket client with a werift peer connection's offer
 * as the tab (ICE never needs to connect) and our SIP user agent as the trunk. Failures are
 * provoked by wrapping the gateway's media engine (or its metrics hook, SIP user agent or call
 * manager), as a bug in a dependency would show up, or by a one-pair RTP range. In every case
 * the call must end: out of the registry, its RTP and WebRTC ports released, the tab told (an
 * error before the `calling` answer, `ended` after it), an INVITE already sent CANCELled or
 * BYE'd, and for a set-up that threw cause `failed` in the CDR.
 *
 * - The call-started hook throws as the call is registered: error `internal`, no INVITE.
 * - Building the INVITE's SDP throws (after the SIP leg was allocated): `ended` failed, no INVITE.
 * - The trunk's 183 with SDP cannot be applied: CANCEL to the trunk, `ended` failed.
 * - The trunk's 200 OK cannot be applied: BYE to the trunk, `ended` failed; the next call works.
 * - The INVITE cannot be sent at all (the UA throws at once): the call ends before the tab's
 *   session has attached to it, and the tab still gets `calling` and then `ended` failed.
 * - Likewise for a call the gateway's shutdown ends in that window: `calling`, then `ended`
 *   shutdown (not a set-up failure; the same rig, with the manager wrapped).
 * - No RTP port pair free for the SIP leg: refused like a call without a WebRTC port
 *   (icePortExhaustion.test.ts): error `too-many-calls` before any `calling`, CDR cause
 *   `unavailable` (as an inbound call refused 503 for the same reason), no INVITE, nothing leaked.
 * - And once set up: the trunk re-offers other codecs and PTs, and our 200 answers its offer;
 *   a re-INVITE without SDP gets our offer, and the answer in its ACK is applied.
 *
 * Ports: 21750-21797 and 21860-21883, a block of 12 per test from its BASE: http BASE, SIP
 * BASE+1, (demo BASE+2), trunk BASE+3, the trunk's SDP media port BASE+4 (nothing listens), RTP
 * BASE+6..BASE+9 (two pairs), WebRTC BASE+10..BASE+11 (one pair). The RTP exhaustion test uses
 * 21884-21899: RTP BASE+6..BASE+7 (one pair), WebRTC BASE+10..BASE+15 (three pairs). The
 * re-offer test uses 22840-22851, the delayed-offer one 22880-22891, the hold-answer one 22920-22931,
 * the answer-timeout one 25960-25971, the dial-plan record one 26100-26111.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import WebSocket from 'ws';
import { SipUserAgent, type Dialog, type ServerInvite } from '../../src/sip';
import { SipRequest } from '../../src/sip/message';
import type { MediaEngine, SipRtpLeg } from '../../src/media';
import type { IcePortPool } from '../../src/webrtc/icePortPool';
import { startGateway } from '../support/gateway';
import { browserPeers, openTab, until, type Msg, type Tab } from '../support/tabs';
import { OpusEncoder } from '../../src/media/codecs';
import { parseRtp } from '../../src/media/rtp';

const SECRET = 'outbound-setup-failures-secret-0123456789';
const browsers = browserPeers();


interface Rig {
  gw: Awaited<ReturnType<typeof startGateway>>;
  /** INVITEs that reached the trunk, in order. */
  invites: ServerInvite[];
  tab(user: string): Promise<Tab>;
  media(): MediaEngine;
  icePool(): IcePortPool;
  cdr(): Msg[];
}

/**
 * A gateway on `base` whose trunk (a UA on base+3) answers each INVITE with `answer`; `ports`
 * replaces the RTP and WebRTC ranges.
 */
async function rig(t: TestContext, base: number, answer: (inv: ServerInvite) => void, ports?: { rtp: [number, number]; webrtc: [number, number] }, trunkCodecs: Array<'PCMU' | 'PCMA' | 'opus'> = ['PCMU'], trunkExtra: { answerTimeoutSec?: number } = {}): Promise<Rig> {
  const sockets: WebSocket[] = [];
  const invites: ServerInvite[] = [];
  const trunk = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: base + 3 }], logger: pino({ level: 'silent' }) });
  trunk.on('invite', (inv: ServerInvite) => { invites.push(inv); answer(inv); });
  const gw = await startGateway(base, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: false },
    trunk: { uri: `sip:127.0.0.1:${base + 3}`, srtp: 'off', codecs: trunkCodecs, sourceCidrs: ['127.0.0.1/32'], ...trunkExtra },
    dialplan: { allow: ['+1555*'] },
    // workers: 0, whatever GW_TEST_MEDIA_WORKERS says: these tests look inside the in-thread MediaEngine.
    media: { host: '127.0.0.1', portRange: ports?.rtp ?? [base + 6, base + 9], inactivityTimeoutSec: 60, workers: 0 },
    // The tab never connects ICE: the connect timeout must not end a call mid-test.
    webrtc: { portRange: ports?.webrtc ?? [base + 10, base + 11], connectTimeoutSec: 60 },
  });
  t.after(async () => {
    for (const ws of sockets) ws.terminate();
    await gw.stop();
    await trunk.stop();
  });
  await trunk.start();

  return {
    gw,
    invites,
    // The gateway's internals the leak checks look at (private members, read-only here).
    media: () => gw.gateway['media'] as MediaEngine,
    icePool: () => (gw.gateway['manager'] as unknown as { opts: { ctx: { ice: { portPool: IcePortPool } } } }).opts.ctx.ice.portPool,
    cdr: () => readFileSync(gw.cdrPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)),
    tab: (user) => openTab(base, user, SECRET, sockets),
  };
}

/** The first message of one of `types` from index `from` on. */
async function message(tab: Tab, types: string[], from = 0): Promise<Msg> {
  await until(() => tab.messages.slice(from).some((m) => types.includes(m.type)), `${types.join(' or ')} on the tab`);
  return tab.messages.slice(from).find((m) => types.includes(m.type))!;
}

const offer = (): Promise<string> => browsers.offer();

/** The tab places a call the trunk answers: resolves with the tab's `calling` and the gateway's call. */
async function answeredCall(r: Rig, tab: Tab, to: string, ref: string): Promise<{ calling: Msg; call: any }> {
  tab.ws.send(JSON.stringify({ type: 'call', to, ref, sdp: await offer() }));
  const calling = await message(tab, ['calling', 'error', 'ended']);
  assert.equal(calling.type, 'calling', JSON.stringify(calling));
  await message(tab, ['answered']);
  return { calling, call: [...(r.gw.gateway['manager'] as unknown as { calls: Map<string, any> }).calls.values()][0] };
}

/** Every SIP RTP leg the gateway allocates from now on goes through `spoil` first. */
function spoilSipLegs(t: TestContext, media: MediaEngine, spoil: (leg: SipRtpLeg) => void): () => void {
  const original = media.createSipLeg;
  media.createSipLeg = async (o) => {
    const leg = await original.call(media, o);
    spoil(leg);
    return leg;
  };
  const restore = () => { Reflect.deleteProperty(media, 'createSipLeg'); };
  t.after(restore);
  return restore;
}

/** The trunk's SDP (PCMU on base+4, where nothing listens: no RTP needs to flow). */
function trunkSdp(base: number): string {
  return `v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${base + 4} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n`;
}

const idle = { legs: 0, bridges: 0, portsAllocated: 0 };

/** The tab places a call to `to`: it is answered with `calling`, then `ended` with `cause`. Returns both messages. */
async function callThenEnded(tab: Tab, to: string, ref: string, cause: string): Promise<{ calling: Msg; ended: Msg }> {
  tab.ws.send(JSON.stringify({ type: 'call', to, ref, sdp: await offer() }));
  const calling = await message(tab, ['calling', 'error', 'ended']);
  assert.equal(calling.type, 'calling', `the browser offer was answered: ${JSON.stringify(calling)}`);
  assert.equal(calling.ref, ref);
  const ended = await message(tab, ['ended']);
  assert.equal(ended.callId, calling.callId);
  assert.equal(ended.cause, cause, JSON.stringify(ended));
  return { calling, ended };
}

/** The call is gone: out of the registry, RTP and WebRTC ports back, one CDR with cause `failed`. */
async function assertEndedCleanly(r: Rig, to: string): Promise<Msg> {
  await until(() => r.gw.gateway.activeCalls === 0, 'the failed call out of the registry');
  await until(() => r.icePool().used === 0 && r.media().usage.portsAllocated === 0, 'the failed call\'s ports released');
  assert.deepEqual(r.media().usage, idle, 'no SIP leg or bridge left');
  const recs = r.cdr().filter((c) => c.to === to);
  assert.equal(recs.length, 1, `one CDR for the call: ${JSON.stringify(recs)}`);
  assert.equal(recs[0].direction, 'outbound');
  assert.equal(recs[0].cause, 'failed');
  return recs[0];
}

test('the call-started hook throws as the outbound call is registered: error internal, the call ended with a CDR, no INVITE, nothing leaked', async (t) => {
  const BASE = 21750; // 21750-21761
  const r = await rig(t, BASE, (inv) => inv.progress(180));
  const alice = await r.tab('alice');
  const metrics = r.gw.gateway.metrics;
  metrics.callStarted = () => { throw new Error('test: callStarted fails'); };
  t.after(() => { Reflect.deleteProperty(metrics, 'callStarted'); });

  alice.ws.send(JSON.stringify({ type: 'call', to: '+15551000001', ref: 'r1', sdp: await offer() }));
  const res = await message(alice, ['calling', 'error', 'ended']);
  assert.equal(res.type, 'error', `refused before the answer: ${JSON.stringify(res)}`);
  assert.equal(res.code, 'internal');
  await assertEndedCleanly(r, '+15551000001');
  await new Promise((res) => setTimeout(res, 300));
  assert.equal(r.invites.length, 0, 'no INVITE for the failed call');
  assert.ok(!alice.messages.some((m) => m.type === 'calling'), 'no `calling` for the failed call');
  // The gauge never counted the call, so its end does not take it below zero.
  const active = (await metrics.registry.getSingleMetric('gateway_active_calls')!.get()).values;
  assert.ok(active.every((v) => v.value === 0), `gateway_active_calls: ${JSON.stringify(active)}`);
  const failed = (await metrics.registry.getSingleMetric('gateway_calls_total')!.get()).values.find((v) => v.labels.cause === 'failed');
  assert.equal(failed?.value, 1, 'the failed attempt is still counted by cause');
});

test('building the INVITE throws once the SIP leg is allocated: ended with cause failed, no INVITE, nothing leaked', async (t) => {
  const BASE = 21762; // 21762-21773
  const r = await rig(t, BASE, (inv) => inv.progress(180));
  const bob = await r.tab('bob');
  // The leg's address is read for the INVITE's SDP, after `calling` went to the tab.
  spoilSipLegs(t, r.media(), (leg) => {
    Object.defineProperty(leg, 'localAddress', { get() { throw new Error('test: localAddress fails'); } });
  });

  await callThenEnded(bob, '+15551000002', 'r2', 'failed');
  await assertEndedCleanly(r, '+15551000002');
  await new Promise((res) => setTimeout(res, 300));
  assert.equal(r.invites.length, 0, 'no INVITE for the failed call');
  assert.equal(bob.messages.filter((m) => m.type === 'ended').length, 1, 'ended exactly once');
});

test('the trunk\'s 183 with SDP cannot be applied: the INVITE is CANCELled, ended with cause failed, nothing leaked', async (t) => {
  const BASE = 21774; // 21774-21785
  let cancelled = false;
  const r = await rig(t, BASE, (inv) => {
    inv.on('cancelled', () => { cancelled = true; });
    inv.progress(183, { sdp: trunkSdp(BASE) });
  });
  const carol = await r.tab('carol');
  spoilSipLegs(t, r.media(), (leg) => { leg.setRemote = () => { throw new Error('test: setRemote fails'); }; });

  await callThenEnded(carol, '+15551000003', 'r3', 'failed');
  await until(() => cancelled, 'CANCEL at the trunk');
  assert.equal(r.invites.length, 1, 'the failed call was not dialled again');
  await assertEndedCleanly(r, '+15551000003');
  assert.equal(carol.messages.filter((m) => m.type === 'ended').length, 1, 'ended exactly once');
});

test('the trunk\'s 200 OK cannot be applied: the dialog is BYE\'d, ended with cause failed, nothing leaked; the next call works', async (t) => {
  const BASE = 21786; // 21786-21797
  const terminated: string[] = [];
  const r = await rig(t, BASE, (inv) => {
    const dialog = inv.accept(trunkSdp(BASE));
    dialog.on('terminated', (reason: string) => terminated.push(reason));
  });
  const dave = await r.tab('dave');
  const restore = spoilSipLegs(t, r.media(), (leg) => { leg.setRemote = () => { throw new Error('test: setRemote fails'); }; });

  await callThenEnded(dave, '+15551000004', 'r4', 'failed');
  assert.ok(!dave.messages.some((m) => m.type === 'answered'), 'never reported answered');
  await until(() => terminated.length === 1, 'BYE at the trunk');
  assert.equal(terminated[0], 'bye', 'the trunk\'s dialog was ended by our BYE');
  await assertEndedCleanly(r, '+15551000004');

  // The gateway goes on: the next call is answered normally and hangs up as usual.
  restore();
  const from = dave.messages.length;
  dave.ws.send(JSON.stringify({ type: 'call', to: '+15551000005', ref: 'r5', sdp: await offer() }));
  const calling2 = await message(dave, ['calling', 'error', 'ended'], from);
  assert.equal(calling2.type, 'calling', JSON.stringify(calling2));
  assert.equal((await message(dave, ['answered', 'ended'], from)).type, 'answered');
  dave.ws.send(JSON.stringify({ type: 'hangup', callId: calling2.callId }));
  assert.equal((await message(dave, ['ended'], from)).cause, 'local-hangup');
  await until(() => terminated.length === 2, 'BYE for the second call');
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0 && r.media().usage.portsAllocated === 0, 'the second call released');
});

test('the INVITE cannot be sent (the UA throws at once): the call ends before the tab is attached, and the tab still gets calling then ended failed', async (t) => {
  const BASE = 21860; // 21860-21871
  const r = await rig(t, BASE, (inv) => inv.progress(180));
  const erin = await r.tab('erin');
  // Dialing runs on after startOutbound returned; a failure with no wait in between ends the
  // call within the same turn, before the session's continuation attaches to the call.
  const ua = r.gw.gateway['ua']!;
  ua.invite = () => { throw new Error('test: the INVITE cannot be sent'); };
  t.after(() => { Reflect.deleteProperty(ua, 'invite'); });

  const { calling } = await callThenEnded(erin, '+15551000006', 'r6', 'failed');
  await assertEndedCleanly(r, '+15551000006');
  await new Promise((res) => setTimeout(res, 300));
  assert.equal(r.invites.length, 0, 'no INVITE for the failed call');
  assert.equal(erin.messages.filter((m) => m.type === 'ended').length, 1, 'ended exactly once');
  // The call is gone for the tab: a hangup for it is an unknown call, not a second end.
  const from = erin.messages.length;
  erin.ws.send(JSON.stringify({ type: 'hangup', callId: calling.callId }));
  assert.equal((await message(erin, ['error', 'ended'], from)).code, 'unknown-call');
});

test('the gateway shuts down between the call\'s set-up and the tab\'s session attaching to it: the tab gets calling then ended shutdown', async (t) => {
  const BASE = 21872; // 21872-21883
  const r = await rig(t, BASE, (inv) => inv.progress(180));
  const fay = await r.tab('fay');
  // Whatever the set-up does inside, the call is over by the time the session gets it back.
  const manager = r.gw.gateway['manager']!;
  const startOutbound = manager.startOutbound;
  manager.startOutbound = async (...args) => {
    const res = await startOutbound.apply(manager, args);
    manager.hangupAll();
    return res;
  };
  t.after(() => { Reflect.deleteProperty(manager, 'startOutbound'); });

  await callThenEnded(fay, '+15551000007', 'r7', 'shutdown');
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0 && r.media().usage.portsAllocated === 0, 'the call released');
  await new Promise((res) => setTimeout(res, 300));
  assert.equal(fay.messages.filter((m) => m.type === 'ended').length, 1, 'ended exactly once');
  const recs = r.cdr().filter((c) => c.to === '+15551000007');
  assert.equal(recs.length, 1);
  assert.equal(recs[0].cause, 'shutdown');
});

test('no RTP port pair free for the SIP leg: refused like a call without a WebRTC port (error too-many-calls, CDR unavailable), no INVITE, nothing leaked', async (t) => {
  const BASE = 21884; // 21884-21899
  const r = await rig(t, BASE, (inv) => inv.progress(180), { rtp: [BASE + 6, BASE + 7], webrtc: [BASE + 10, BASE + 15] });
  const gus = await r.tab('gus');

  // Call 1 takes the only RTP pair and rings at the trunk.
  gus.ws.send(JSON.stringify({ type: 'call', to: '+15551000008', ref: 'r8', sdp: await offer() }));
  const calling = await message(gus, ['calling', 'error', 'ended']);
  assert.equal(calling.type, 'calling', JSON.stringify(calling));
  await until(() => r.invites.length === 1, 'the INVITE of call 1');
  const withOneCall = { legs: 1, bridges: 1, portsAllocated: 1 };
  await until(() => r.media().usage.bridges === 1, 'call 1 ringing (its bridge plays ringback)');
  assert.deepEqual(r.media().usage, withOneCall);
  assert.equal(r.icePool().used, 1);

  // Call 2: no RTP pair left. The tab is told the gateway is at capacity, before any `calling`.
  let from = gus.messages.length;
  gus.ws.send(JSON.stringify({ type: 'call', to: '+15551000009', ref: 'r9', sdp: await offer() }));
  const refused = await message(gus, ['calling', 'error', 'ended'], from);
  assert.equal(refused.type, 'error', `call 2 refused: ${JSON.stringify(refused)}`);
  assert.equal(refused.code, 'too-many-calls', 'out of RTP ports is the gateway\'s capacity, as out of WebRTC ports');
  assert.match(refused.message, /RTP port/);
  await until(() => r.gw.gateway.activeCalls === 1 && r.icePool().used === 1, 'the refused call out of the registry, its WebRTC port back');
  await new Promise((res) => setTimeout(res, 300));
  assert.ok(!gus.messages.slice(from).some((m) => m.type === 'calling' || m.type === 'ended'), 'neither `calling` nor `ended` for the refused call');
  assert.equal(r.invites.length, 1, 'no INVITE for the refused call');
  assert.deepEqual(r.media().usage, withOneCall, 'no RTP port or leg left by the refused call');
  const recs = r.cdr().filter((c) => c.to === '+15551000009');
  assert.equal(recs.length, 1, 'the refused call has its CDR');
  assert.equal(recs[0].cause, 'unavailable', 'the CDR cause of a call refused for want of a WebRTC port');
  assert.equal(recs[0].sipStatus, undefined, 'nothing was sent toward SIP');

  // Call 1 hangs up: its pair comes back, and the next call gets it.
  from = gus.messages.length;
  gus.ws.send(JSON.stringify({ type: 'hangup', callId: calling.callId }));
  assert.equal((await message(gus, ['ended'], from)).cause, 'local-hangup');
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0 && r.media().usage.portsAllocated === 0, 'call 1 released');
  from = gus.messages.length;
  gus.ws.send(JSON.stringify({ type: 'call', to: '+15551000010', ref: 'r10', sdp: await offer() }));
  const again = await message(gus, ['calling', 'error', 'ended'], from);
  assert.equal(again.type, 'calling', `a call after the release: ${JSON.stringify(again)}`);
  await until(() => r.invites.length === 2, 'the INVITE of call 3');
  gus.ws.send(JSON.stringify({ type: 'hangup', callId: again.callId }));
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0 && r.media().usage.portsAllocated === 0, 'everything released');
});

test('the trunk re-offers other codecs and payload types on an answered outbound call: our 200 answers that offer (its PTs), not with an offer of our own', async (t) => {
  const BASE = 22840; // 22840-22851
  let trunkDialog: import('../../src/sip').Dialog | null = null;
  const r = await rig(t, BASE, (inv) => { trunkDialog = inv.accept(trunkSdp(BASE)); });
  const alice = await r.tab('alice');
  const { calling } = await answeredCall(r, alice, '+15551000090', 'reoffer');
  await until(() => trunkDialog?.state === 'confirmed', 'the trunk\'s dialog confirmed');
  const reoffer = `v=0\r\no=- 2 3 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 4} RTP/AVP 8 0 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16\r\na=sendrecv\r\n`;
  const res = await trunkDialog!.reinvite(reoffer);
  assert.equal(res.status, 200);
  // We support PCMU only (trunk.codecs): the answer takes PCMU at the offered PT 0 and the
  // trunk's telephone-event PT 96, in the offer's terms.
  assert.match(res.body, /^m=audio \d+ RTP\/AVP 0 96\r$/m, res.body);
  assert.match(res.body, /^a=rtpmap:96 telephone-event\/8000\r$/m);
  assert.doesNotMatch(res.body, / 101\b/, 'not our own telephone-event PT from a fresh offer');
  // A re-offer that only receives (recvonly) is answered sendonly (RFC 3264 §6.1), not sendrecv.
  const onlyReceives = await trunkDialog!.reinvite(reoffer.replace('a=sendrecv', 'a=recvonly'));
  assert.match(onlyReceives.body, /^a=sendonly\r$/m, onlyReceives.body);
  alice.ws.send(JSON.stringify({ type: 'hangup', callId: calling.callId }));
  await until(() => r.gw.gateway.activeCalls === 0, 'the call ended');
});

test('mid-call codec changes: a re-offer listing PCMA first keeps PCMU; one with PCMA only switches the bridge\'s law (PCMA on the wire); one with Opus only makes it pass the browser\'s Opus through', async (t) => {
  const BASE = 22930; // 22930-22941
  let trunkDialog: import('../../src/sip').Dialog | null = null;
  const r = await rig(t, BASE, (inv) => { trunkDialog = inv.accept(trunkSdp(BASE)); }, undefined, ['PCMU', 'PCMA', 'opus']);
  const wire = dgram.createSocket('udp4'); // the trunk's RTP address in its SDP
  const got: Buffer[] = [];
  wire.on('message', (m) => got.push(m));
  await new Promise<void>((res) => wire.bind(BASE + 4, '127.0.0.1', () => res()));
  t.after(() => wire.close());
  const alice = await r.tab('alice');
  const { calling } = await answeredCall(r, alice, '+15551000091', 'codecs');
  await until(() => trunkDialog?.state === 'confirmed', 'the trunk\'s dialog confirmed');
  const sdpWith = (fmts: string, maps: string[], v: number) => `v=0\r\no=- 2 ${v} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 4} RTP/AVP ${fmts}\r\n${maps.map((m) => `a=rtpmap:${m}\r\n`).join('')}a=sendrecv\r\n`;
  const kept = await trunkDialog!.reinvite(sdpWith('8 0', ['8 PCMA/8000', '0 PCMU/8000'], 3));
  assert.equal(kept.status, 200);
  assert.match(kept.body, /^m=audio \d+ RTP\/AVP 0\r$/m, `PCMU kept: ${kept.body}`);
  // The bridge (Opus from the browser, G.711 to the trunk) as the calls layer made it.
  const bridges = [...(r.media()['bridges'] as Set<{ bridge: unknown }>)];
  assert.equal(bridges.length, 1);
  const bridge = bridges[0].bridge as { fromBrowser(pkt: unknown): void };
  const enc = new OpusEncoder({ sampleRate: 48000, complexity: 1, bitrate: 24000 });
  t.after(() => enc.delete());
  let seq = 1;
  // Silence from the browser: G.711 says it as 0xFF/0x7F in PCMU, 0xD5/0x55 in PCMA.
  const speak = () => bridge.fromBrowser({ payloadType: 111, sequenceNumber: seq, timestamp: seq++ * 960, marker: false, ssrc: 0xabc, payload: enc.encode(new Int16Array(960)) });
  const lastPayload = async () => { const n = got.length; speak(); await until(() => got.length > n, 'a packet at the trunk'); return parseRtp(got[got.length - 1])!; };
  const before = await lastPayload();
  assert.equal(before.payloadType, 0);
  assert.ok(before.payload.every((b) => b === 0xff || b === 0x7f), 'PCMU silence');
  const switched = await trunkDialog!.reinvite(sdpWith('8', ['8 PCMA/8000'], 4));
  assert.equal(switched.status, 200);
  assert.match(switched.body, /^m=audio \d+ RTP\/AVP 8\r$/m, switched.body);
  const after = await lastPayload();
  assert.equal(after.payloadType, 8);
  assert.ok(after.payload.every((b) => b === 0xd5 || b === 0x55), `PCMA silence, got ${after.payload.subarray(0, 8).toString('hex')}`);
  // Opus only: the browser's Opus goes through as it is (no coder in between).
  const opus = await trunkDialog!.reinvite(sdpWith('111', ['111 opus/48000/2'], 5));
  assert.equal(opus.status, 200);
  assert.match(opus.body, /^m=audio \d+ RTP\/AVP 111\r$/m, opus.body);
  const n = got.length;
  const frame = enc.encode(new Int16Array(960));
  bridge.fromBrowser({ payloadType: 111, sequenceNumber: seq, timestamp: seq++ * 960, marker: false, ssrc: 0xabc, payload: frame });
  await until(() => got.length > n, 'the Opus packet at the trunk');
  const passed = parseRtp(got[got.length - 1])!;
  assert.equal(passed.payloadType, 111);
  assert.deepEqual(Buffer.from(passed.payload), frame, 'the browser\'s Opus, untouched');
  // And back to PCMA: transcoding again, with fresh coders.
  const back = await trunkDialog!.reinvite(sdpWith('8', ['8 PCMA/8000'], 6));
  assert.equal(back.status, 200);
  const again = await lastPayload();
  assert.equal(again.payloadType, 8);
  assert.ok(again.payload.every((b) => b === 0xd5 || b === 0x55), 'PCMA silence again');
  alice.ws.send(JSON.stringify({ type: 'hangup', callId: calling.callId }));
  await until(() => r.gw.gateway.activeCalls === 0, 'the call ended');
});

test('a browser that sends PCMU: our INVITE offers G.711 before Opus; a trunk re-offer of Opus and PCMA is answered PCMA (no transcoding), one of Opus only is taken and transcoded', async (t) => {
  const BASE = 23070; // 23070-23081
  let trunkDialog: import('../../src/sip').Dialog | null = null;
  const r = await rig(t, BASE, (inv) => { trunkDialog = inv.accept(trunkSdp(BASE)); }, undefined, ['opus', 'PCMU', 'PCMA']);
  const alice = await r.tab('alice');
  alice.ws.send(JSON.stringify({ type: 'call', to: '+15551000092', ref: 'pcmu', sdp: await browsers.offer('pcmu') }));
  await until(() => r.invites.length === 1, 'the INVITE');
  assert.match(r.invites[0].request.body, /^m=audio \d+ RTP\/AVP 0 8 111 /m, 'PCMU and PCMA before Opus (trunk.codecs puts Opus first)');
  const calling = await message(alice, ['calling', 'error', 'ended']);
  assert.equal(calling.type, 'calling', JSON.stringify(calling));
  assert.match(String(calling.sdp), /^m=audio \d+ \S+ 0[ \r]/m, 'the browser was answered PCMU');
  await message(alice, ['answered']);
  await until(() => trunkDialog?.state === 'confirmed', 'the trunk\'s dialog confirmed');
  const reoffer = (version: number, pts: string, maps: string[]) => `v=0\r\no=- 2 ${version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 4} RTP/AVP ${pts}\r\n${maps.map((m) => `a=rtpmap:${m}\r\n`).join('')}a=sendrecv\r\n`;
  const bridges = [...(r.media()['bridges'] as Set<{ bridge: { stats(): { mode: string } } }>)];
  const res = await trunkDialog!.reinvite(reoffer(3, '111 8', ['111 opus/48000/2', '8 PCMA/8000']));
  assert.equal(res.status, 200);
  assert.match(res.body, /^m=audio \d+ RTP\/AVP 8\r$/m, res.body);
  assert.equal(bridges[0].bridge.stats().mode, 'lawConvert');
  const opusOnly = await trunkDialog!.reinvite(reoffer(4, '111', ['111 opus/48000/2']));
  assert.equal(opusOnly.status, 200);
  assert.match(opusOnly.body, /^m=audio \d+ RTP\/AVP 111\r$/m, opusOnly.body);
  assert.equal(bridges[0].bridge.stats().mode, 'transcodeOpusTrunk');
  alice.ws.send(JSON.stringify({ type: 'hangup', callId: calling.callId }));
  await until(() => r.gw.gateway.activeCalls === 0, 'the call ended');
});

test('a re-INVITE without SDP (delayed offer): our 200 offers, keeping our direction, and the answer in the ACK moves the media; an unusable one ends the call (failed)', async (t) => {
  const BASE = 22880; // 22880-22891
  const r = await rig(t, BASE, (inv) => { inv.accept(trunkSdp(BASE)); });
  const alice = await r.tab('alice');
  const { call } = await answeredCall(r, alice, '+15551000091', 'delayed');
  const dialog = call['dialog'];
  let offered = '';
  dialog.emit('reinvite', new SipRequest('INVITE', 'sip:gw@127.0.0.1'), (status: number, sdp?: string) => { assert.equal(status, 200); offered = sdp ?? ''; });
  assert.match(offered, /^m=audio \d+ RTP\/AVP /m, 'an offer in the 200');
  assert.match(offered, /^a=sendrecv\r$/m);
  // The far end's answer comes in the ACK, with its media on a new port.
  dialog.emit('ackAnswer', trunkSdp(BASE).replace(`m=audio ${BASE + 4}`, `m=audio ${BASE + 5}`));
  assert.equal(call['sipLeg']['dest'].port, BASE + 5, 'media goes where the answer says');
  // Once more, and this time the ACK's answer is unusable: the call cannot follow the media, and ends.
  dialog.emit('reinvite', new SipRequest('INVITE', 'sip:gw@127.0.0.1'), () => undefined);
  dialog.emit('ackAnswer', 'v=0\r\nnot an answer');
  const ended = await message(alice, ['ended']);
  assert.equal(ended.cause, 'failed', JSON.stringify(ended));
  await until(() => r.gw.gateway.activeCalls === 0, 'the call ended');
});

test('our hold and resume re-INVITEs: the answer in the far end\'s 200 is followed (an SBC moving the media); a 491 (glare) is tried again; an unusable answer ends the call. A digit by SIP INFO reaches the tab', async (t) => {
  const BASE = 22920; // 22920-22931
  const answers: Array<(req: SipRequest, reply: (status: number, sdp?: string) => void) => void> = [];
  let trunkDialog: Dialog | undefined;
  const r = await rig(t, BASE, (inv) => {
    const d = inv.accept(trunkSdp(BASE));
    trunkDialog = d;
    d.on('reinvite', (req: SipRequest, reply: (status: number, sdp?: string) => void) => answers.shift()!(req, reply));
  });
  const alice = await r.tab('alice');
  const { calling, call } = await answeredCall(r, alice, '+15551000092', 'hold');
  // A PBX that sends its digits as SIP INFO (application/dtmf-relay).
  let from0 = alice.messages.length;
  const info = await trunkDialog!.request('INFO', 'Signal=7\r\nDuration=160\r\n', 'application/dtmf-relay');
  assert.equal(info.status, 200);
  assert.equal((await message(alice, ['dtmf'], from0)).digit, '7');
  from0 = alice.messages.length;
  assert.equal((await trunkDialog!.request('INFO', '#', 'application/dtmf')).status, 200);
  assert.equal((await message(alice, ['dtmf'], from0)).digit, '#');
  const moved = (port: number, dir: string) => trunkSdp(BASE).replace(`m=audio ${BASE + 4}`, `m=audio ${port}`) + `a=${dir}\r\n`;
  // Hold: first a 491 (the far end re-INVITEd at the same moment), then the 200, whose answer moves the media.
  const offers: string[] = [];
  answers.push((req, reply) => { offers.push(req.body); reply(491); });
  // Answered inactive (allowed for a sendonly offer, RFC 3264 §6.1): that is no hold by the far end.
  answers.push((req, reply) => { offers.push(req.body); reply(200, moved(BASE + 5, 'inactive')); });
  let from = alice.messages.length;
  alice.ws.send(JSON.stringify({ type: 'hold', callId: calling.callId }));
  const held = await message(alice, ['held', 'error'], from);
  assert.equal(held.type, 'held', JSON.stringify(held));
  assert.equal(offers.length, 2, 'the offer went again after the 491');
  assert.ok(offers.every((o) => /^a=sendonly\r$/m.test(o)));
  assert.equal(call['sipLeg']['dest'].port, BASE + 5, 'media goes where the hold answer says');
  // Resume: the answer moves it back; we offer sendrecv (not recvonly: nobody holds us) and send again.
  answers.push((req, reply) => { offers.push(req.body); reply(200, moved(BASE + 4, 'sendrecv')); });
  from = alice.messages.length;
  alice.ws.send(JSON.stringify({ type: 'unhold', callId: calling.callId }));
  assert.equal((await message(alice, ['resumed', 'error'], from)).type, 'resumed');
  assert.match(offers[2], /^a=sendrecv\r$/m);
  assert.equal(call['sipLeg']['dest'].port, BASE + 4, 'and back where the resume answer says');
  assert.equal(call['sipLeg'].sendingAllowed, true, 'audio goes to the trunk again');
  // An answer we cannot use: the call ends rather than staying up silent.
  answers.push((_req, reply) => reply(200, 'v=0\r\nnot an answer'));
  from = alice.messages.length;
  alice.ws.send(JSON.stringify({ type: 'hold', callId: calling.callId }));
  const ended = await message(alice, ['ended'], from);
  assert.equal(ended.cause, 'failed', JSON.stringify(ended));
  await until(() => r.gw.gateway.activeCalls === 0, 'the call ended');
});

test('a trunk that rings and then goes quiet: the call is CANCELled after trunk.answerTimeoutSec, the tab told no-answer, nothing left', async (t) => {
  const BASE = 25960; // 25960-25971
  let cancelled = false;
  // 180, then nothing: the INVITE transaction no longer times out on its own (RFC 3261 §17.1.1.2).
  const r = await rig(t, BASE, (inv) => { inv.progress(180); inv.once('cancelled', () => { cancelled = true; }); }, undefined, ['PCMU'], { answerTimeoutSec: 1 });
  const alice = await r.tab('alice');
  const t0 = Date.now();
  const { ended } = await callThenEnded(alice, '+15551000093', 'quiet', 'no-answer');
  assert.ok(Date.now() - t0 >= 900, `ended after ${Date.now() - t0} ms`);
  assert.equal(ended.type, 'ended');
  await until(() => cancelled, 'the trunk got the CANCEL');
  await until(() => r.gw.gateway.activeCalls === 0 && r.icePool().used === 0 && r.media().usage.portsAllocated === 0, 'the call released');
  const recs = r.cdr().filter((c) => c.to === '+15551000093');
  assert.equal(recs.length, 1);
  assert.equal(recs[0].cause, 'no-answer');
  assert.equal(recs[0].answerTime, undefined);
});

test('a call the dial plan forbids leaves a CDR line (cause forbidden) under the callId the tab was told; no INVITE', async (t) => {
  const BASE = 26100; // 26100-26111
  const r = await rig(t, BASE, (inv) => inv.reject(500));
  const alice = await r.tab('alice');
  alice.ws.send(JSON.stringify({ type: 'call', to: '+4419001234567', ref: 'premium', sdp: await offer() }));
  const ended = await message(alice, ['ended', 'calling', 'error']);
  assert.equal(ended.type, 'ended', JSON.stringify(ended));
  assert.equal(ended.cause, 'forbidden');
  await until(() => r.cdr().some((c) => c.callId === ended.callId), 'the refused attempt\'s CDR line');
  const rec = r.cdr().find((c) => c.callId === ended.callId)!;
  assert.equal(rec.direction, 'outbound');
  assert.equal(rec.cause, 'forbidden');
  assert.equal(rec.identity, 'alice');
  assert.equal(rec.durationSec, 0);
  assert.equal(r.invites.length, 0);
});
