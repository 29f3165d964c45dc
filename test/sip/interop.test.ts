import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { SipUserAgent, type Dialog, type ServerInvite } from '../../src/sip';
import { runSipp, udpPortBound } from '../peers/sipp';
import { startKamailio, type Kamailio } from '../peers/kamailio';
import { tempDir } from '../support/tempDir';

/**
 * The SIP core against real SIP implementations on loopback: sipp as UAS and UAC over UDP and
 * TCP, and Kamailio as a registrar with digest auth that routes an INVITE back to us.
 */
const BASE = 19000;
const logger = pino({ level: process.env.GW_TEST_LOG ?? 'silent' });
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 19900 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => { for (const c of cleanups.reverse()) await c().catch(() => undefined); });

async function startUa(protocol: 'udp' | 'tcp', port: number): Promise<SipUserAgent> {
  const ua = new SipUserAgent({ transports: [{ protocol, host: '127.0.0.1', port }], logger, userAgent: 'gateway-test' });
  await ua.start();
  cleanups.push(() => ua.stop());
  return ua;
}

function once<T extends unknown[]>(em: { once(ev: string, fn: (...a: T) => void): unknown }, ev: string, timeoutMs = 10000): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${ev} within ${timeoutMs} ms`)), timeoutMs);
    em.once(ev, (...a: T) => { clearTimeout(t); resolve(a); });
  });
}

for (const [transport, sippT, i] of [['udp', 'u1', 0], ['tcp', 't1', 1]] as const) {
  test(`our INVITE to sipp (UAS) over ${transport.toUpperCase()}: 200, ACK, BYE — sipp counts a successful call`, async () => {
    const sippPort = BASE + 10 + i * 2;
    const sipp = runSipp({ scenario: 'uas', port: sippPort, mediaPort: BASE + 100 + i * 10, transport: sippT });
    const ua = await startUa(transport, BASE + 30 + i * 2);
    if (transport === 'udp') await udpPortBound(sippPort);
    else await new Promise((r) => setTimeout(r, 300)); // sipp's TCP listener
    const inv = ua.invite({ requestUri: `sip:service@127.0.0.1:${sippPort}${transport === 'tcp' ? ';transport=tcp' : ''}`, from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP });
    const [res, dialog] = await once<[{ status: number; body: string }, Dialog]>(inv, 'accepted');
    assert.equal(res.status, 200);
    assert.match(res.body, /m=audio \d+ RTP\/AVP/);
    await new Promise((r) => setTimeout(r, 200));
    await dialog.bye();
    const r = await sipp.done;
    assert.equal(r.code, 0, `sipp failed:\n${r.output.slice(-1500)}\n${r.errors}`);
  });

  test(`sipp (UAC) calls us over ${transport.toUpperCase()}: we answer, sipp ACKs and BYEs, nothing is left behind`, async () => {
    const ourPort = BASE + 40 + i * 2;
    const ua = await startUa(transport, ourPort);
    let dialog: Dialog | undefined;
    ua.on('invite', (inv: ServerInvite) => { inv.progress(180); dialog = inv.accept(SDP); });
    const sipp = runSipp({ scenario: 'uac', port: BASE + 50 + i * 2, mediaPort: BASE + 120 + i * 10, transport: sippT, remote: `127.0.0.1:${ourPort}`, extra: ['-d', '300', '-s', 'gw'] });
    const r = await sipp.done;
    assert.equal(r.code, 0, `sipp failed:\n${r.output.slice(-1500)}\n${r.errors}`);
    assert.ok(dialog, 'an INVITE arrived');
    assert.equal(dialog!.state, 'terminated');
    await new Promise((r2) => setTimeout(r2, 100));
    assert.equal(ua.counts.dialogs, 0);
  });
}

test('sipp sends 20 calls in a row at 10 calls/s over UDP; every one is answered and torn down', async () => {
  const ourPort = BASE + 60;
  const ua = await startUa('udp', ourPort);
  let invites = 0;
  ua.on('invite', (inv: ServerInvite) => { invites++; inv.accept(SDP); });
  const r = await runSipp({ scenario: 'uac', port: BASE + 62, mediaPort: BASE + 140, remote: `127.0.0.1:${ourPort}`, calls: 20, rate: 10, extra: ['-d', '100', '-l', '5'] }).done;
  assert.equal(r.code, 0, `sipp failed:\n${r.output.slice(-1500)}\n${r.errors}`);
  assert.equal(invites, 20);
  await new Promise((r2) => setTimeout(r2, 100));
  assert.equal(ua.counts.dialogs, 0);
});

test('Kamailio registrar: REGISTER with digest, refresh, an INVITE routed back to our contact, unregister', async () => {
  const kam: Kamailio = await startKamailio({ port: BASE + 70, users: { gw: 'gwsecret', alice: 'alicepw' } });
  cleanups.push(() => kam.stop());
  const ua = await startUa('udp', BASE + 72);

  // A wrong password ends in 'failed', not a loop.
  const bad = ua.register({ registrar: `sip:127.0.0.1:${BASE + 70}`, aor: 'sip:alice@127.0.0.1', credentials: { username: 'alice', password: 'wrong' }, expires: 60 });
  bad.start();
  assert.equal(bad.state, 'registering');
  assert.equal((await once<[string]>(bad, 'state'))[0], 'failed');
  assert.equal(bad.lastStatus, 401);
  await bad.stop();

  const reg = ua.register({ registrar: `sip:127.0.0.1:${BASE + 70}`, aor: 'sip:gw@127.0.0.1', credentials: { username: 'gw', password: 'gwsecret' }, expires: 3 });
  reg.start();
  while (reg.state !== 'registered') await once(reg, 'state');
  assert.match(kam.registrations(), new RegExp(`sip:gw@127\\.0\\.0\\.1:${BASE + 72}`));
  // Granted 3 s: the client refreshes well before expiry.
  const t0 = Date.now();
  while (reg.successes < 2) await new Promise((r) => setTimeout(r, 100));
  assert.ok(Date.now() - t0 < 3000, 'refreshed before expiry');

  // Someone calls gw through Kamailio: the INVITE reaches us, we answer, they hang up.
  const caller = await startUa('udp', BASE + 74);
  let recordRoute = '';
  const answered = new Promise<Dialog>((resolve) => ua.once('invite', (inv: ServerInvite) => {
    recordRoute = inv.request.header('record-route') ?? '';
    resolve(inv.accept(SDP));
  }));
  const inv = caller.invite({ requestUri: `sip:gw@127.0.0.1:${BASE + 70}`, from: { uri: 'sip:alice@127.0.0.1' }, sdp: SDP });
  const [res, callerDialog] = await once<[{ status: number }, Dialog]>(inv, 'accepted');
  assert.equal(res.status, 200);
  const ourDialog = await answered;
  // Asserted here, not in the handler: a failure there surfaced as a timeout, not as this.
  assert.match(recordRoute, new RegExp(`127\\.0\\.0\\.1:${BASE + 70}`));
  const ended = once<[string]>(ourDialog, 'terminated');
  await callerDialog.bye();
  assert.equal((await ended)[0], 'bye', 'BYE came through the record-routed proxy');

  await reg.stop();
  assert.equal(reg.state, 'unregistered');
  assert.doesNotMatch(kam.registrations(), /AoR: gw/);
});

/**
 * sipp as a UAS that sends its 18x reliably (RFC 3262), as Asterisk and carriers do for a UAC
 * that lists 100rel: a 183 with SDP (sent again after its PRACK, as a retransmission that
 * crossed it would arrive), then a 180, each with Require: 100rel and the next RSeq, and the 200 only after both are PRACKed — without SDP,
 * as pjsip (Asterisk) sends it: the 183's answer stays in force (RFC 3262 §5). sipp fails
 * the call on a missing PRACK, a second PRACK for the retransmission, a wrong RAck, or a BYE
 * whose CSeq does not continue above the PRACKs'.
 */
function prackScenario(): string {
  // A response to the request just received (a PRACK or the BYE: its To has our tag already).
  const reply = (status: string, extra = '') => `<send><![CDATA[
SIP/2.0 ${status}
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
${extra}Content-Length: [len]
]]></send>`;
  // The INVITE's headers, saved: after a PRACK, sipp's [last_*] would be the PRACK's.
  const reliable = (status: string, rseq: number, sdp: boolean) => `<send><![CDATA[
SIP/2.0 ${status}
Via:[$via]
From:[$caller]
To:[$callee];tag=[pid]SIPpTag[call_number]
[last_Call-ID:]
CSeq:[$cseq]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Require: 100rel
RSeq: ${rseq}
${sdp ? 'Content-Type: application/sdp\n' : ''}Content-Length: [len]
${sdp ? '\nv=0\no=sipp 1 1 IN IP4 [local_ip]\ns=-\nc=IN IP4 [media_ip]\nt=0 0\nm=audio [media_port] RTP/AVP 0\na=rtpmap:0 PCMU/8000\n' : ''}]]></send>`;
  return `<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="reliable provisionals">
  <recv request="INVITE">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Via:" assign_to="via"/>
      <ereg regexp=".*" search_in="hdr" header="CSeq:" assign_to="cseq"/>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="caller"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="callee"/>
      <ereg regexp="100rel" search_in="hdr" header="Supported:" check_it="true" assign_to="sup"/>
    </action>
  </recv>
  ${reliable('183 Session Progress', 1, true)}
  <recv request="PRACK">
    <action><ereg regexp="^ *1 1 INVITE" search_in="hdr" header="RAck:" check_it="true" assign_to="rack1"/></action>
  </recv>
  ${reply('200 OK')}
  ${reliable('183 Session Progress', 1, true)}
  <pause milliseconds="100"/>
  ${reliable('180 Ringing', 2, false)}
  <recv request="PRACK">
    <action><ereg regexp="^ *2 1 INVITE" search_in="hdr" header="RAck:" check_it="true" assign_to="rack2"/></action>
  </recv>
  ${reply('200 OK')}
  <pause milliseconds="200"/>
  <send><![CDATA[
SIP/2.0 200 OK
Via:[$via]
From:[$caller]
To:[$callee];tag=[pid]SIPpTag[call_number]
[last_Call-ID:]
CSeq:[$cseq]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0
]]></send>
  <recv request="ACK"/>
  <recv request="BYE">
    <action><ereg regexp="^ *4 BYE" search_in="hdr" header="CSeq:" check_it="true" assign_to="byeseq"/></action>
  </recv>
  ${reply('200 OK')}
  <Reference variables="sup,rack1,rack2,byeseq"/>
</scenario>
`;
}

test('sipp sends reliable 183 (with SDP, retransmitted) and 180: each PRACKed once with its RAck; its 200 without SDP leaves the 183\'s answer in force; BYE follows', async (t) => {
  const dir = tempDir('sipp-prack-');
  const file = join(dir, 'prack.xml');
  writeFileSync(file, prackScenario());
  const sippPort = BASE + 80;
  const sipp = runSipp({ scenario: { file }, port: sippPort, mediaPort: BASE + 180 });
  t.after(() => sipp.kill()); // also when an assertion fails before sipp's scenario ends
  const ua = await startUa('udp', BASE + 82);
  await udpPortBound(sippPort);
  const inv = ua.invite({ requestUri: `sip:service@127.0.0.1:${sippPort}`, from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP });
  const progress: number[] = [];
  inv.on('progress', (res) => progress.push(res.status));
  const [res, dialog, answer] = await once<[{ status: number; body: string }, Dialog, string]>(inv, 'accepted').catch(async (err) => {
    sipp.kill();
    const r = await sipp.done;
    throw new Error(`${err.message}; sipp:\n${r.output.slice(-1500)}\n${r.errors}`);
  });
  assert.equal(res.status, 200);
  assert.equal(res.body, '', 'the 200 has no SDP');
  assert.match(answer, /^o=sipp 1 1 IN IP4/m, 'the answer in force is the reliable 183\'s');
  assert.deepEqual(progress, [183, 180], 'each reliable provisional passed on once (not its retransmission)');
  await dialog.bye();
  const r = await sipp.done;
  assert.equal(r.code, 0, `sipp failed:\n${r.output.slice(-1500)}\n${r.errors}`);
});

/** sipp as a caller that requires 100rel: it PRACKs our 180 (RAck from its RSeq) before our 200. */
function requires100relScenario(): string {
  return `<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="caller requiring 100rel">
  <send retrans="500"><![CDATA[
INVITE sip:gw@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
To: <sip:gw@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:sipp@[local_ip]:[local_port]>
Require: 100rel
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" rrs="true">
    <action>
      <ereg regexp="[0-9]+" search_in="hdr" header="RSeq:" check_it="true" assign_to="rseq"/>
      <ereg regexp="100rel" search_in="hdr" header="Require:" check_it="true" assign_to="req"/>
    </action>
  </recv>
  <send><![CDATA[
PRACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: 2 PRACK
RAck: [$rseq] 1 INVITE
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200" crlf="true">
    <action><ereg regexp="PRACK" search_in="hdr" header="CSeq:" check_it="true" assign_to="prackok"/></action>
  </recv>
  <recv response="200" rrs="true">
    <action><ereg regexp="INVITE" search_in="hdr" header="CSeq:" check_it="true" assign_to="inviteok"/></action>
  </recv>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
  <pause milliseconds="200"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: 3 BYE
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200"/>
  <Reference variables="req,prackok,inviteok"/>
</scenario>
`;
}

test('sipp calls requiring 100rel: our 180 carries Require: 100rel and an RSeq, sipp PRACKs it and gets our 200 before the INVITE\'s (the PRACK ends the 180\'s retransmissions); the call ends cleanly', async () => {
  const dir = tempDir('sipp-100rel-');
  const file = join(dir, 'uac100rel.xml');
  writeFileSync(file, requires100relScenario());
  const ourPort = BASE + 84;
  const ua = await startUa('udp', ourPort);
  let dialog: Dialog | undefined;
  let prackedBeforeAnswer = false;
  ua.on('invite', (inv: ServerInvite) => {
    inv.progress(180);
    // Answer once the PRACK came (or after 3 s without it, which the assertion below catches).
    const started = Date.now();
    const poll = setInterval(() => {
      if (!inv.awaitingPrack || Date.now() - started > 3000) {
        clearInterval(poll);
        prackedBeforeAnswer = !inv.awaitingPrack;
        dialog = inv.accept(SDP);
      }
    }, 10);
  });
  const r = await runSipp({ scenario: { file }, port: BASE + 86, mediaPort: BASE + 190, remote: `127.0.0.1:${ourPort}` }).done;
  assert.equal(r.code, 0, `sipp failed:\n${r.output.slice(-1500)}\n${r.errors}`);
  assert.ok(prackedBeforeAnswer, 'the PRACK arrived (and ended the retransmissions) before we answered');
  assert.equal(dialog?.state, 'terminated');
});

test('Kamailio as outbound proxy: INVITE, CANCEL, OPTIONS and REGISTER go through it with a pre-loaded Route; the dialog follows its Record-Route', async () => {
  const kam = await startKamailio({ port: BASE + 90, users: { gw: 'gwsecret' }, outboundProxy: true });
  cleanups.push(() => kam.stop());
  const proxy = `sip:127.0.0.1:${BASE + 90}`;
  const ua = await startUa('udp', BASE + 92);
  const trunk = await startUa('udp', BASE + 94);
  const trunkUri = `sip:+15551230000@127.0.0.1:${BASE + 94}`;

  // The proxy refuses a request for the trunk without its Route: what the checks below rely on.
  const dest = await ua.resolve(proxy);
  const bare = ua.newRequest('OPTIONS', trunkUri, { uri: 'sip:gw@127.0.0.1' }, { uri: trunkUri }, 'no-route-test', 1, dest.transport);
  assert.equal((await ua.sendRequest(bare, dest)).status, 400);
  assert.equal((await ua.options(trunkUri, { outboundProxy: proxy })).status, 200, 'relayed to the trunk, which answers OPTIONS');

  // A call: the trunk sees it come through the proxy, record-routed; our BYE takes that route.
  const arrived = new Promise<{ vias: number; route: string | undefined; recordRoute: string; dialog: Dialog }>((resolve) => trunk.once('invite', (inv: ServerInvite) => {
    resolve({ vias: inv.request.headers('via').length, route: inv.request.header('route'), recordRoute: inv.request.header('record-route') ?? '', dialog: inv.accept(SDP) });
  }));
  const call = ua.invite({ requestUri: trunkUri, from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP, outboundProxy: proxy });
  const [res, dialog] = await once<[{ status: number }, Dialog]>(call, 'accepted');
  assert.equal(res.status, 200);
  const atTrunk = await arrived;
  assert.equal(atTrunk.vias, 2, 'our Via and the proxy\'s');
  assert.equal(atTrunk.route, undefined, 'the proxy took its Route off');
  assert.match(atTrunk.recordRoute, new RegExp(`127\\.0\\.0\\.1:${BASE + 90}`));
  assert.deepEqual(dialog.routeSet.map((r) => /127\.0\.0\.1:(\d+)/.exec(r)?.[1]), [String(BASE + 90)]);
  const byeVias = new Promise<number>((resolve) => atTrunk.dialog.once('terminated', (_reason, req) => resolve(req?.headers('via').length ?? 0)));
  await dialog.bye();
  assert.equal(await byeVias, 2, 'the BYE came through the proxy');

  // A call cancelled while ringing: the CANCEL follows the INVITE to the proxy.
  const ringing = new Promise<ServerInvite>((resolve) => trunk.once('invite', (inv: ServerInvite) => { inv.progress(180); resolve(inv); }));
  const cancelled = ua.invite({ requestUri: trunkUri, from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP, outboundProxy: proxy });
  const progress = once(cancelled, 'progress');
  const atTrunk2 = await ringing;
  await progress;
  const trunkHeardCancel = once(atTrunk2, 'cancelled');
  const rejected = once<[{ status: number }]>(cancelled, 'rejected');
  cancelled.cancel();
  await trunkHeardCancel;
  assert.equal((await rejected)[0].status, 487);

  // REGISTER toward the trunk's address, through the proxy (which registers it itself here).
  const reg = ua.register({ registrar: `sip:127.0.0.1:${BASE + 94}`, aor: 'sip:gw@127.0.0.1', credentials: { username: 'gw', password: 'gwsecret' }, expires: 60, outboundProxy: proxy });
  reg.start();
  while (reg.state !== 'registered' && reg.state !== 'failed') await once(reg, 'state');
  assert.equal(reg.state, 'registered', `status ${reg.lastStatus}`);
  assert.match(kam.registrations(), new RegExp(`sip:gw@127\\.0\\.0\\.1:${BASE + 92}`));
  // The proxy goes away: stopping (a gateway's shutdown) does not wait out Timer F (32 s) for
  // an answer to the unregister.
  await kam.stop();
  const t0 = Date.now();
  await reg.stop();
  assert.ok(Date.now() - t0 < 10_000, `stop() took ${Date.now() - t0} ms`);
  assert.equal(reg.state, 'unregistered');
});
