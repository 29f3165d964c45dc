/**
 * Blind transfer from the browser (docs/protocol.md, `transfer`; RFC 3515, RFC 5589 §6): a whole
 * gateway in this process on loopback, werift peer connections as the tabs' browsers (ICE and
 * DTLS up, Opus flowing), and our own SIP user agent as the trunk, scripted per test: what it
 * answers the REFER, which NOTIFYs (message/sipfrag) it sends, whether it hangs up.
 *
 * Asserted: the REFER on the wire (Refer-To exactly the Request-URI a call to the number would
 * take, Referred-By, Contact, in the call's dialog); success by NOTIFY 200 (our BYE, `ended`
 * transferred, the CDR's cause and transferTo) and by the trunk's BYE after its 202; failures
 * that leave the call up (REFER 403/501, sipfrag 486, no NOTIFY within the timeout) — audio,
 * DTMF and hold still working after; the tab hanging up mid-transfer; a target the dial plan or
 * the token forbids (no REFER sent); a second transfer while one is out; an incoming call
 * transferred. After each: no call, leg, port or transfer timer left.
 *
 * Ports 28720-28744: http 28720, SIP 28721, trunk SIP 28723, trunk RTP 28724, RTP 28726-28733,
 * WebRTC 28734-28741 (the werift browsers and the loopback STUN responder take ephemeral ports).
 */
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import WebSocket from 'ws';
import { MediaStreamTrack, RTCPeerConnection, RTCRtpCodecParameters, RtpHeader, RtpPacket } from 'werift';
import { SipUserAgent, type Dialog, type ServerInvite, type SipRequest, type SipResponse } from '../../src/sip';
import { mintToken } from '../../src/edge';
import type { CallBase } from '../../src/calls/callBase';
import type { BlindTransfer } from '../../src/calls/transfer';
import { heldResources, startGateway } from '../support/gateway';
import { browserPeers, until, type Msg, type Tab } from '../support/tabs';

const BASE = 28720;
const TRUNK_PORT = BASE + 3;
const TRUNK_RTP = BASE + 4;
const SECRET = 'transfer-test-secret-0123456789abcdefgh';
const browsers = browserPeers();
const sockets: WebSocket[] = [];
let gw: Awaited<ReturnType<typeof startGateway>>;
let trunk: SipUserAgent;
let trunkRtp: dgram.Socket;
/** What reached the trunk's RTP port: packets by payload type. */
const rtpByPt = new Map<number, number>();

/** The trunk's side of the current call, and the test's script for REFERs. */
let trunkDialog: Dialog | null = null;
let onRefer: (req: SipRequest, respond: (status: number, reason?: string) => void) => void = (_req, respond) => respond(405);
const refers: SipRequest[] = [];
/** The trunk only rings (180) instead of answering. */
let ringOnly = false;
const byeAtTrunk: string[] = [];

const trunkSdp = (direction = 'sendrecv') => `v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${TRUNK_RTP} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=${direction}\r\n`;

/** The trunk's dialog answers re-INVITEs (holds) and REFERs (the test's script), and notes our BYE. */
function scriptTrunkDialog(d: Dialog): void {
  trunkDialog = d;
  d.on('reinvite', (req, reply) => {
    const dir = /a=sendonly/.test(req.body) ? 'recvonly' : /a=inactive/.test(req.body) ? 'inactive' : 'sendrecv';
    reply(200, trunkSdp(dir));
  });
  d.on('refer', (req, respond) => { refers.push(req); onRefer(req, respond); });
  d.on('terminated', (reason) => byeAtTrunk.push(reason));
}

before(async () => {
  trunkRtp = dgram.createSocket('udp4');
  trunkRtp.on('message', (m) => { if (m.length >= 12) rtpByPt.set(m[1] & 0x7f, (rtpByPt.get(m[1] & 0x7f) ?? 0) + 1); });
  await new Promise<void>((r) => trunkRtp.bind(TRUNK_RTP, '127.0.0.1', () => r()));
  trunk = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: TRUNK_PORT }], logger: pino({ level: 'silent' }) });
  trunk.on('invite', (inv: ServerInvite) => { if (ringOnly) inv.progress(180); else scriptTrunkDialog(inv.accept(trunkSdp())); });
  await trunk.start();
  gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: false, sipPort: BASE + 2 },
    trunk: { uri: `sip:127.0.0.1:${TRUNK_PORT}`, srtp: 'off', codecs: ['PCMU'], sourceCidrs: ['127.0.0.1/32'] },
    dialplan: { allow: ['+1555*'] },
    inbound: { routeByUserPart: true },
    // workers: 0: the leak checks look inside the in-thread engine.
    media: { host: '127.0.0.1', portRange: [BASE + 6, BASE + 13], inactivityTimeoutSec: 60, workers: 0 },
    webrtc: { portRange: [BASE + 14, BASE + 21], connectTimeoutSec: 10 },
  });
});
after(async () => {
  for (const ws of sockets) ws.terminate();
  await gw.stop();
  await trunk.stop();
  trunkRtp.close();
});
beforeEach(() => {
  trunkDialog = null;
  refers.length = 0;
  byeAtTrunk.length = 0;
  rtpByPt.clear();
  ringOnly = false;
  onRefer = (_req, respond) => respond(405);
  ctx().transferTimeoutMs = undefined;
});

const manager = () => gw.gateway['manager'] as unknown as { calls: Map<string, CallBase>; opts: { ctx: { transferTimeoutMs?: number } } };
const ctx = () => manager().opts.ctx;
const cdr = (): Msg[] => readFileSync(gw.cdrPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));

/** A tab signed in as `user`, its token with `dest` patterns when given. */
async function openTab(user: string, dest?: string[]): Promise<Tab> {
  const ws = new WebSocket(`ws://127.0.0.1:${BASE}/ws`, { headers: { Origin: `http://127.0.0.1:${BASE}` } });
  sockets.push(ws);
  const messages: Msg[] = [];
  ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  ws.send(JSON.stringify({ type: 'hello', version: 1, token: await mintToken({ sub: user, ...(dest ? { dest } : {}) }, { hs256Secret: SECRET }, { ttlSec: 300 }) }));
  await until(() => messages.some((m) => m.type === 'welcome'), `welcome for ${user}`);
  return { ws, messages };
}

/** A werift browser sending Opus frames every 20 ms once started. */
async function browser() {
  const pc = new RTCPeerConnection({
    iceServers: [{ urls: `stun:127.0.0.1:${await browsers.stunPort()}` }], iceUseIpv6: false, iceInterfaceAddresses: { udp4: '127.0.0.1' },
    codecs: { audio: [new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111 })] },
  });
  browsers.keep(pc);
  const track = new MediaStreamTrack({ kind: 'audio' });
  pc.addTransceiver(track, { direction: 'sendrecv' });
  let seq = 0;
  const timer = setInterval(() => {
    if (pc.connectionState !== 'connected') return;
    track.writeRtp(new RtpPacket(new RtpHeader({ payloadType: 111, sequenceNumber: seq & 0xffff, timestamp: seq * 960, ssrc: 4242 }), Buffer.from([0xf8, 0xff, 0xfe])));
    seq++;
  }, 20);
  after(() => clearInterval(timer));
  return { pc, stop: () => clearInterval(timer) };
}

/** The first message from index `from` on that `match` accepts. */
async function next(tab: Tab, match: (m: Msg) => boolean, what: string, from = 0, ms = 10_000): Promise<Msg> {
  await until(() => tab.messages.slice(from).some(match), what, ms);
  return tab.messages.slice(from).find(match)!;
}

/** An outbound call the trunk answers, its browser connected: the callId and the gateway's call. */
async function answeredCall(tab: Tab): Promise<{ callId: string; call: CallBase; stop(): void }> {
  const b = await browser();
  await b.pc.setLocalDescription(await b.pc.createOffer());
  await until(() => b.pc.iceGatheringState === 'complete', 'gathering');
  tab.ws.send(JSON.stringify({ type: 'call', to: '+15550001000', ref: 'c1', sdp: b.pc.localDescription!.sdp }));
  const calling = await next(tab, (m) => m.type === 'calling' || m.type === 'error' || m.type === 'ended', 'calling');
  assert.equal(calling.type, 'calling', JSON.stringify(calling));
  await b.pc.setRemoteDescription({ type: 'answer', sdp: calling.sdp });
  await next(tab, (m) => m.type === 'answered' && m.callId === calling.callId, 'answered');
  await until(() => b.pc.connectionState === 'connected' && trunkDialog?.state === 'confirmed', 'the browser connected and the trunk\'s dialog confirmed');
  return { callId: calling.callId, call: manager().calls.get(calling.callId)!, stop: b.stop };
}

/** The trunk's NOTIFY for the REFER `refer` (Event refer;id=its CSeq): its response status. */
async function notifyFromTrunk(refer: SipRequest, sipfrag: string, state: string): Promise<number> {
  const req = trunkDialog!.createRequest('NOTIFY', `${sipfrag}\r\n`, 'message/sipfrag;version=2.0');
  req.addHeader('Event', `refer;id=${refer.cseq.seq}`);
  req.addHeader('Subscription-State', state);
  return (await trunk.sendInDialog(trunkDialog!, req)).status;
}

/** Nothing of the call is left: out of the registry, no media leg, bridge, port; its transfers' timers gone. */
async function assertNothingLeft(call: CallBase, transfers: BlindTransfer[]): Promise<void> {
  await until(() => manager().calls.size === 0, 'the call out of the registry');
  await until(() => JSON.stringify(heldResources(gw.gateway)) === JSON.stringify({ legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 }), `nothing held: ${JSON.stringify(heldResources(gw.gateway))}`);
  const internals = call as unknown as { transferInProgress: BlindTransfer | null; transfers: BlindTransfer[] };
  assert.equal(internals.transferInProgress, null, 'no transfer in progress');
  assert.equal(internals.transfers.length, 0, 'its subscriptions forgotten');
  for (const t of transfers) {
    assert.ok(t.done, `transfer settled: ${t.state}`);
    assert.equal((t as unknown as { timer: unknown }).timer, null, 'its timer cleared');
  }
}

const transfersOf = (call: CallBase) => [...(call as unknown as { transfers: BlindTransfer[] }).transfers];

test('success: REFER accepted 202, NOTIFY 100 then NOTIFY 200 — both answered 200, our BYE, `ended` transferred, the CDR says so, nothing left', async () => {
  let ok!: () => void;
  const gotRefer = new Promise<void>((r) => { ok = r; });
  onRefer = (_req, respond) => { respond(202, 'Accepted'); ok(); };
  const tab = await openTab('alice');
  const { callId, call, stop } = await answeredCall(tab);
  const from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'transfer', callId, to: '555-000-2222', ref: 'x1' }));
  await gotRefer;
  const refer = refers[0];
  assert.equal(refer.header('refer-to'), `<sip:+15550002222@127.0.0.1:${TRUNK_PORT}>`, 'Refer-To: the Request-URI a call to the number takes');
  assert.equal(refer.header('referred-by'), `<${/<([^>]+)>/.exec(trunkDialog!.remoteAddr)![1]}>`, 'Referred-By: our URI in the dialog');
  assert.match(refer.header('contact') ?? '', /^<sip:gw@127\.0\.0\.1:28721/, 'our Contact');
  assert.equal(refer.callId, trunkDialog!.callId, 'in the call\'s dialog');
  const transfers = transfersOf(call);
  assert.equal(await notifyFromTrunk(refer, 'SIP/2.0 100 Trying', 'active;expires=60'), 200);
  const progress = await next(tab, (m) => m.type === 'transfer-progress', 'transfer-progress', from);
  assert.deepEqual(progress, { type: 'transfer-progress', callId, status: 100, ref: 'x1' });
  assert.equal(await notifyFromTrunk(refer, 'SIP/2.0 200 OK', 'terminated;reason=noresource'), 200);
  const ended = await next(tab, (m) => m.type === 'ended', 'ended', from);
  assert.equal(ended.cause, 'transferred', JSON.stringify(ended));
  await until(() => byeAtTrunk.includes('bye'), 'our BYE at the trunk');
  assert.ok(!tab.messages.slice(from).some((m) => m.type === 'error'), 'no error');
  stop();
  await assertNothingLeft(call, transfers);
  await until(() => cdr().some((r) => r.callId === callId), 'the CDR line');
  const rec = cdr().find((r) => r.callId === callId)!;
  assert.equal(rec.cause, 'transferred');
  assert.equal(rec.transferTo, '+15550002222');
  const metric = (await gw.gateway.metrics.registry.getSingleMetric('gateway_calls_total')!.get()).values.find((v) => v.labels.cause === 'transferred');
  assert.ok((metric?.value ?? 0) >= 1, 'counted by cause');
});

test('the trunk hangs up right after its 202 (no NOTIFY): the call ends as transferred', async () => {
  onRefer = (_req, respond) => {
    respond(202, 'Accepted');
    setTimeout(() => { void trunkDialog!.bye(); }, 20);
  };
  const tab = await openTab('bob');
  const { callId, call, stop } = await answeredCall(tab);
  const from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'transfer', callId, to: '+15550002223', ref: 'x2' }));
  const transfers = await (async () => { await until(() => refers.length === 1, 'REFER'); return transfersOf(call); })();
  const ended = await next(tab, (m) => m.type === 'ended', 'ended', from);
  assert.equal(ended.cause, 'transferred');
  assert.ok(!tab.messages.slice(from).some((m) => m.type === 'error'), 'no error');
  stop();
  await assertNothingLeft(call, transfers);
  await until(() => cdr().some((r) => r.callId === callId), 'the CDR line');
  assert.deepEqual([cdr().find((r) => r.callId === callId)!.cause, cdr().find((r) => r.callId === callId)!.transferTo], ['transferred', '+15550002223']);
});

test('REFER refused 403, then 501: `transfer-failed` with the status each time; the call stays up — audio, DTMF and hold still work', async () => {
  let status = 403;
  onRefer = (_req, respond) => respond(status);
  const tab = await openTab('carol');
  const { callId, call, stop } = await answeredCall(tab);
  for (const s of [403, 501]) {
    status = s;
    const from = tab.messages.length;
    tab.ws.send(JSON.stringify({ type: 'transfer', callId, to: '+15550002224', ref: `r${s}` }));
    const err = await next(tab, (m) => m.type === 'error', 'the refusal', from);
    assert.equal(err.code, 'transfer-failed');
    assert.equal(err.request, 'transfer');
    assert.equal(err.callId, callId);
    assert.equal(err.ref, `r${s}`);
    assert.equal(err.sipStatus, s);
  }
  assert.equal(refers.length, 2);
  assert.equal(call.state, 'answered');
  // Audio from the browser still reaches the trunk.
  const pcmu = rtpByPt.get(0) ?? 0;
  await until(() => (rtpByPt.get(0) ?? 0) > pcmu + 20, 'the browser\'s audio at the trunk');
  // DTMF: RFC 4733 events at the trunk.
  tab.ws.send(JSON.stringify({ type: 'dtmf', callId, digits: '5' }));
  await until(() => (rtpByPt.get(101) ?? 0) > 0, 'telephone-event packets at the trunk');
  // Hold and resume.
  let from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'hold', callId }));
  assert.equal((await next(tab, (m) => m.type === 'held' || m.type === 'error', 'held', from)).type, 'held');
  from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'unhold', callId }));
  assert.equal((await next(tab, (m) => m.type === 'resumed' || m.type === 'error', 'resumed', from)).type, 'resumed');
  const transfers = transfersOf(call);
  tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
  assert.equal((await next(tab, (m) => m.type === 'ended', 'ended')).cause, 'local-hangup');
  stop();
  await assertNothingLeft(call, transfers);
  const rec = () => cdr().find((r) => r.callId === callId);
  await until(() => rec() !== undefined, 'the CDR line');
  assert.equal(rec()!.transferTo, undefined, 'not transferred');
  assert.deepEqual(rec()!.transferAttempts, [{ to: '+15550002224', outcome: 'failed', sipStatus: 403 }, { to: '+15550002224', outcome: 'failed', sipStatus: 501 }]);
});

test('a REFER refused, then one accepted: the second one\'s NOTIFY 200 completes it (the refused one made no subscription and takes no NOTIFY); a NOTIFY naming no REFER of ours gets 481', async () => {
  let status = 403;
  onRefer = (_req, respond) => respond(status);
  const tab = await openTab('eve');
  const { callId, call, stop } = await answeredCall(tab);
  let from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'transfer', callId, to: '+15550002230', ref: 'first' }));
  assert.equal((await next(tab, (m) => m.type === 'error', 'the refusal', from)).sipStatus, 403);
  status = 202;
  from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'transfer', callId, to: '+15550002231', ref: 'second' }));
  await until(() => refers.length === 2, 'the second REFER');
  const transfers = transfersOf(call);
  await until(() => transfers[1]?.state === 'accepted', 'the second REFER accepted');
  assert.equal(await notifyFromTrunk(refers[0], 'SIP/2.0 200 OK', 'terminated;reason=noresource'), 481, 'the refused REFER has no subscription');
  assert.equal(call.state, 'answered', 'that NOTIFY did not end the call');
  assert.equal(await notifyFromTrunk(refers[1], 'SIP/2.0 200 OK', 'terminated;reason=noresource'), 200);
  const ended = await next(tab, (m) => m.type === 'ended', 'ended', from);
  assert.equal(ended.cause, 'transferred');
  assert.ok(!tab.messages.slice(from).some((m) => m.type === 'error'), 'no error for the second transfer');
  stop();
  await assertNothingLeft(call, transfers);
  await until(() => cdr().some((r) => r.callId === callId), 'the CDR line');
  assert.equal(cdr().find((r) => r.callId === callId)!.transferTo, '+15550002231');
});

test('transfers count against the call-attempt limit (limits.callsPerIdentityPerMin, 10): a tab cannot try numbers as fast as they fail', async () => {
  onRefer = (_req, respond) => respond(486);
  const tab = await openTab('fred');
  const { callId, call, stop } = await answeredCall(tab); // one attempt
  let refused: Msg | undefined;
  for (let i = 0; i < 12 && !refused; i++) {
    const from = tab.messages.length;
    tab.ws.send(JSON.stringify({ type: 'transfer', callId, to: `+1555000${3000 + i}`, ref: `t${i}` }));
    const err = await next(tab, (m) => m.type === 'error', 'the refusal', from);
    if (err.code === 'rate-limited') refused = err;
    else assert.equal(err.code, 'transfer-failed');
  }
  assert.ok(refused, 'rate-limited at last');
  assert.equal(refers.length, 9, 'the call and nine transfers were attempts; the tenth transfer sent no REFER');
  assert.ok((refused.retryAfterMs ?? 0) > 0);
  assert.equal(call.state, 'answered', 'the call goes on');
  // Fifteen more, all refused: the CDR line keeps the first 20 attempts and counts them all.
  for (let i = 0; i < 15; i++) {
    const from = tab.messages.length;
    tab.ws.send(JSON.stringify({ type: 'transfer', callId, to: `+1555000${3100 + i}`, ref: `more${i}` }));
    assert.equal((await next(tab, (m) => m.type === 'error', 'the refusal', from)).code, 'rate-limited');
  }
  const transfers = transfersOf(call);
  tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
  await next(tab, (m) => m.type === 'ended', 'ended');
  stop();
  await assertNothingLeft(call, transfers);
  await until(() => cdr().some((r) => r.callId === callId), 'the CDR line');
  const rec = cdr().find((r) => r.callId === callId)!;
  const attempts = rec.transferAttempts as Array<{ outcome: string; sipStatus?: number }>;
  assert.deepEqual(attempts.map((a) => `${a.outcome} ${a.sipStatus ?? ''}`.trim()), [...Array(9).fill('failed 486'), ...Array(11).fill('rate-limited')], 'the refused ones recorded too, the first 20');
  assert.equal(rec.transferAttemptsTotal, 25);
});

test('a held call can be transferred; the target busy (sipfrag 486): `transfer-failed` 486, the call goes on; a late NOTIFY of it is answered 200, one of no transfer 481', async () => {
  onRefer = (req, respond) => {
    respond(202);
    setTimeout(() => { void notifyFromTrunk(req, 'SIP/2.0 486 Busy Here', 'active;expires=60'); }, 20);
  };
  const tab = await openTab('dave');
  const { callId, call, stop } = await answeredCall(tab);
  let from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'hold', callId }));
  await next(tab, (m) => m.type === 'held', 'held', from);
  from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'transfer', callId, to: '+15550002225', ref: 'busy' }));
  const err = await next(tab, (m) => m.type === 'error', 'the failure', from);
  assert.deepEqual([err.code, err.sipStatus, err.ref], ['transfer-failed', 486, 'busy']);
  assert.match(err.message, /486 Busy Here/);
  assert.equal(call.state, 'answered');
  assert.equal(await notifyFromTrunk(refers[0], 'SIP/2.0 486 Busy Here', 'terminated;reason=noresource'), 200, 'the ending subscription is still known');
  const stray = trunkDialog!.createRequest('NOTIFY', 'SIP/2.0 200 OK\r\n', 'message/sipfrag');
  stray.addHeader('Event', 'refer;id=999');
  stray.addHeader('Subscription-State', 'active');
  assert.equal((await trunk.sendInDialog(trunkDialog!, stray)).status, 481, 'a subscription we never had');
  const other = trunkDialog!.createRequest('NOTIFY', '', 'text/plain');
  other.addHeader('Event', 'talk');
  assert.equal((await trunk.sendInDialog(trunkDialog!, other)).status, 200, 'another package: dropped, as before');
  from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'unhold', callId }));
  assert.equal((await next(tab, (m) => m.type === 'resumed' || m.type === 'error', 'resumed', from)).type, 'resumed', 'the call is usable');
  const transfers = transfersOf(call);
  tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
  await next(tab, (m) => m.type === 'ended', 'ended');
  stop();
  await assertNothingLeft(call, transfers);
});

test('no NOTIFY after the 202: `transfer-failed` at the timeout, the call goes on; a bent NOTIFY on the way is answered 200 and changes nothing', async () => {
  ctx().transferTimeoutMs = 700;
  onRefer = (req, respond) => {
    respond(202);
    setTimeout(async () => {
      // Not message/sipfrag, no status line: no news, not a crash, not an error answer.
      const bent = trunkDialog!.createRequest('NOTIFY', '<html>hi</html>', 'text/html');
      bent.addHeader('Event', `refer;id=${req.cseq.seq}`);
      bent.addHeader('Subscription-State', 'active');
      bentStatus = (await trunk.sendInDialog(trunkDialog!, bent)).status;
    }, 20);
  };
  let bentStatus = 0;
  const tab = await openTab('erin');
  const { callId, call, stop } = await answeredCall(tab);
  const from = tab.messages.length;
  const t0 = Date.now();
  tab.ws.send(JSON.stringify({ type: 'transfer', callId, to: '+15550002226' }));
  const err = await next(tab, (m) => m.type === 'error', 'the timeout', from);
  assert.ok(Date.now() - t0 >= 650, `after the timeout (${Date.now() - t0} ms)`);
  assert.equal(err.code, 'transfer-failed');
  assert.equal(err.sipStatus, undefined);
  assert.match(err.message, /no final report/);
  assert.equal(bentStatus, 200);
  assert.equal(call.state, 'answered');
  const transfers = transfersOf(call);
  tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
  await next(tab, (m) => m.type === 'ended', 'ended');
  stop();
  await assertNothingLeft(call, transfers);
});

test('the tab hangs up while the transfer waits for its NOTIFY: the call ends local-hangup, the transfer with it, nothing left; no error', async () => {
  onRefer = (_req, respond) => respond(202);
  const tab = await openTab('frank');
  const { callId, call, stop } = await answeredCall(tab);
  const from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'transfer', callId, to: '+15550002227', ref: 'gone' }));
  await until(() => transfersOf(call)[0]?.state === 'accepted', 'the REFER accepted');
  const transfers = transfersOf(call);
  tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
  assert.equal((await next(tab, (m) => m.type === 'ended', 'ended', from)).cause, 'local-hangup');
  await until(() => byeAtTrunk.includes('bye'), 'our BYE at the trunk');
  stop();
  await assertNothingLeft(call, transfers);
  assert.equal(transfers[0].state, 'abandoned');
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(!tab.messages.slice(from).some((m) => m.type === 'error'), 'the ended says it all');
});

test('forbidden targets — international with allowInternational off, outside the token\'s dest — get `forbidden` and no REFER goes; a second transfer while one is out: invalid-state', async () => {
  onRefer = (_req, respond) => respond(202);
  // Token patterns naming a country allow its numbers, but never lift the international or
  // premium blocks; the config's allow (+1555*) is narrowed by the token.
  const tab = await openTab('gina', ['+1555000*', '+44*', '+1900*']);
  const { callId, call, stop } = await answeredCall(tab);
  for (const [to, ref, why] of [['+442071234567', 'intl', /international/], ['+15551112222', 'tok', /token/], ['+19005550000', 'prem', /premium/], ['junk;x', 'junk', /not a dialable/]] as const) {
    const from = tab.messages.length;
    tab.ws.send(JSON.stringify({ type: 'transfer', callId, to, ref }));
    const err = await next(tab, (m) => m.type === 'error', `refusal of ${to}`, from);
    assert.deepEqual([err.code, err.request, err.callId, err.ref], ['forbidden', 'transfer', callId, ref], JSON.stringify(err));
    assert.match(err.message, why);
  }
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(refers.length, 0, 'no REFER on the wire');
  // Now an allowed one, and a second while it is out.
  let from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'transfer', callId, to: '+15550002228', ref: 'first' }));
  await until(() => transfersOf(call)[0]?.state === 'accepted', 'the first REFER accepted');
  tab.ws.send(JSON.stringify({ type: 'transfer', callId, to: '+15550002229', ref: 'second' }));
  const err = await next(tab, (m) => m.type === 'error', 'the second refused', from);
  assert.deepEqual([err.code, err.ref], ['invalid-state', 'second']);
  assert.equal(refers.length, 1, 'one REFER');
  from = tab.messages.length;
  assert.equal(await notifyFromTrunk(refers[0], 'SIP/2.0 200 OK', 'terminated'), 200);
  assert.equal((await next(tab, (m) => m.type === 'ended', 'ended', from)).cause, 'transferred');
  stop();
  await assertNothingLeft(call, []);
  await until(() => cdr().some((r) => r.callId === callId), 'the CDR line');
  const rec = cdr().find((r) => r.callId === callId)!;
  assert.equal(rec.transferTo, '+15550002228');
  // Every attempt is on the call's CDR line, the refused ones as the tab sent them (how toll fraud shows).
  assert.deepEqual(rec.transferAttempts, [
    { to: '+442071234567', outcome: 'forbidden' }, { to: '+15551112222', outcome: 'forbidden' }, { to: '+19005550000', outcome: 'forbidden' }, { to: 'junk;x', outcome: 'forbidden' },
    { to: '+15550002228', outcome: 'transferred', sipStatus: 200 },
  ]);
  assert.equal(rec.transferAttemptsTotal, undefined, 'all of them kept');
});

test('transfer of a call not answered yet, of an unknown call, or a malformed one: refused without REFER', async () => {
  ringOnly = true;
  const tab = await openTab('hank');
  const b = await browser();
  await b.pc.setLocalDescription(await b.pc.createOffer());
  await until(() => b.pc.iceGatheringState === 'complete', 'gathering');
  tab.ws.send(JSON.stringify({ type: 'call', to: '+15550001000', ref: 'c1', sdp: b.pc.localDescription!.sdp }));
  const calling = await next(tab, (m) => m.type === 'calling', 'calling');
  await next(tab, (m) => m.type === 'progress', 'ringing');
  tab.ws.send(JSON.stringify({ type: 'transfer', callId: calling.callId, to: '+15550002230', ref: 'early' }));
  const early = await next(tab, (m) => m.type === 'error' && m.ref === 'early', 'refused');
  assert.deepEqual([early.code, early.callId], ['invalid-state', calling.callId]);
  tab.ws.send(JSON.stringify({ type: 'hangup', callId: calling.callId }));
  assert.equal((await next(tab, (m) => m.type === 'ended', 'ended')).cause, 'local-hangup');
  b.stop();
  tab.ws.send(JSON.stringify({ type: 'transfer', callId: 'nope', to: '+15550002230', ref: 'u' }));
  const err = await next(tab, (m) => m.type === 'error' && m.ref === 'u', 'unknown-call');
  assert.deepEqual([err.code, err.ref], ['unknown-call', 'u']);
  tab.ws.send(JSON.stringify({ type: 'transfer', callId: 'x', to: '', ref: 'v' }));
  const bad = await next(tab, (m) => m.type === 'error' && m.ref === 'v', 'bad-message');
  assert.deepEqual([bad.code, bad.request, bad.callId], ['bad-message', 'transfer', 'x']);
  assert.equal(refers.length, 0);
});

test('an incoming call answered in the tab is transferred: REFER in the dialog the trunk set up, NOTIFY 200, our BYE, ended transferred', async () => {
  onRefer = (req, respond) => {
    respond(202);
    setTimeout(() => { void notifyFromTrunk(req, 'SIP/2.0 200 OK', 'terminated;reason=noresource'); }, 20);
  };
  const tab = await openTab('ivy');
  const inv = trunk.invite({ requestUri: `sip:ivy@127.0.0.1:${BASE + 1}`, from: { uri: 'sip:+15550009999@127.0.0.1' }, sdp: trunkSdp() });
  const accepted = new Promise<void>((resolve, reject) => {
    inv.once('accepted', (_res: SipResponse, dialog: Dialog) => { scriptTrunkDialog(dialog); resolve(); });
    inv.once('rejected', (res: SipResponse) => reject(new Error(`rejected ${res.status}`)));
  });
  const incoming = await next(tab, (m) => m.type === 'incoming', 'incoming');
  const b = await browser();
  await b.pc.setRemoteDescription({ type: 'offer', sdp: incoming.sdp });
  await b.pc.setLocalDescription(await b.pc.createAnswer());
  await until(() => b.pc.iceGatheringState === 'complete', 'gathering');
  tab.ws.send(JSON.stringify({ type: 'accept', callId: incoming.callId, sdp: b.pc.localDescription!.sdp }));
  await accepted;
  await next(tab, (m) => m.type === 'answered', 'answered');
  const call = manager().calls.get(incoming.callId)!;
  await until(() => (call as unknown as { dialog: Dialog | null }).dialog?.state === 'confirmed', 'the gateway\'s dialog confirmed by the ACK');
  const from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'transfer', callId: incoming.callId, to: '+15550002231', ref: 'in' }));
  assert.equal((await next(tab, (m) => m.type === 'ended' || m.type === 'error', 'ended', from)).cause, 'transferred');
  assert.equal(refers[0].header('refer-to'), `<sip:+15550002231@127.0.0.1:${TRUNK_PORT}>`);
  await until(() => byeAtTrunk.includes('bye'), 'our BYE at the trunk');
  b.stop();
  await assertNothingLeft(call, []);
  await until(() => cdr().some((r) => r.callId === incoming.callId), 'the CDR line');
  const rec = cdr().find((r) => r.callId === incoming.callId)!;
  assert.deepEqual([rec.direction, rec.cause, rec.transferTo], ['inbound', 'transferred', '+15550002231']);
});
