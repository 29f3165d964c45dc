/**
 * A blind transfer carried out by a real SIP user agent: baresip 1.0 (Debian package) is the
 * far end of a tab's call and takes the gateway's REFER, calls the Refer-To target itself and
 * reports by NOTIFY (sipfrag); the target is our own SIP user agent, which answers. Asserted: the
 * target gets baresip's INVITE for the number the tab asked for, the tab's call ends as
 * `transferred`, the CDR says so, the gateway holds nothing.
 *
 * Set-up: the gateway's trunk URI is the target (sip:127.0.0.1:TARGET), reached through baresip
 * as the trunk's outbound proxy: our INVITE goes to baresip (which answers its user whatever the
 * host), and the Refer-To — the Request-URI a call to the number would take — names the
 * target, as it would name the carrier a real trunk routes through.
 *
 * Ports 28745-28769: http 28745, SIP 28746, baresip SIP 28748, its RTP 28750-28753, its ctrl
 * 28754, the target's SIP 28755, RTP 28757-28760, WebRTC 28761-28768 (the werift browser and the
 * loopback STUN responder take ephemeral ports).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import WebSocket from 'ws';
import { RTCPeerConnection, MediaStreamTrack, RTCRtpCodecParameters } from 'werift';
import { SipUserAgent, type ServerInvite } from '../../src/sip';
import { startBaresip, type Baresip } from '../peers/baresip';
import { heldResources, startGateway } from '../support/gateway';
import { writeToneWav } from '../support/audio';
import { tempDir } from '../support/tempDir';
import { browserPeers, openTab, until, type Msg } from '../support/tabs';

const BASE = 28745;
const BARESIP_SIP = BASE + 3;
const TARGET_SIP = BASE + 10;
const SECRET = 'transfer-baresip-secret-0123456789abcdef';
/** baresip answers its own user only: the tab's call goes to this number. */
const BARESIP_NUMBER = '+15551230000';
const browsers = browserPeers();
const sockets: WebSocket[] = [];
let gw: Awaited<ReturnType<typeof startGateway>>;
let baresip: Baresip;
let target: SipUserAgent;
const targetInvites: ServerInvite[] = [];

before(async () => {
  const wav = join(tempDir('transfer-baresip-'), 'tone.wav');
  writeToneWav(wav, { hz: 1000, sampleRate: 8000, seconds: 60 });
  baresip = await startBaresip({ sipPort: BARESIP_SIP, rtpPorts: [BASE + 5, BASE + 8], ctrlPort: BASE + 9, audioSourceWav: wav, user: BARESIP_NUMBER, sipTrace: true });
  target = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: TARGET_SIP }], logger: pino({ level: 'silent' }) });
  target.on('invite', (inv: ServerInvite) => {
    targetInvites.push(inv);
    // Where nothing listens: no audio needs to flow for the transfer to be reported.
    inv.accept(`v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 24} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n`);
  });
  await target.start();
  gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: false, sipPort: BASE + 2 },
    trunk: { uri: `sip:127.0.0.1:${TARGET_SIP}`, outboundProxy: `sip:127.0.0.1:${BARESIP_SIP}`, srtp: 'off', codecs: ['PCMU'], sourceCidrs: ['127.0.0.1/32'] },
    dialplan: { allow: ['+1555*'] },
    media: { host: '127.0.0.1', portRange: [BASE + 12, BASE + 15], inactivityTimeoutSec: 60 },
    webrtc: { portRange: [BASE + 16, BASE + 23], connectTimeoutSec: 10 },
  });
});
after(async () => {
  for (const ws of sockets) ws.terminate();
  await gw?.stop();
  await target?.stop();
  await baresip?.stop();
});

test('baresip takes the REFER, calls the target, reports 200 by NOTIFY: the tab\'s call ends as transferred', { timeout: 60_000 }, async () => {
  const tab = await openTab(BASE, 'agent', SECRET, sockets);
  const pc = new RTCPeerConnection({
    iceServers: [{ urls: `stun:127.0.0.1:${await browsers.stunPort()}` }], iceUseIpv6: false, iceInterfaceAddresses: { udp4: '127.0.0.1' },
    codecs: { audio: [new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111 })] },
  });
  browsers.keep(pc);
  pc.addTransceiver(new MediaStreamTrack({ kind: 'audio' }), { direction: 'sendrecv' });
  await pc.setLocalDescription(await pc.createOffer());
  await until(() => pc.iceGatheringState === 'complete', 'gathering');
  tab.ws.send(JSON.stringify({ type: 'call', to: BARESIP_NUMBER, ref: 'c', sdp: pc.localDescription!.sdp }));
  await until(() => tab.messages.some((m) => m.type === 'calling' || m.type === 'ended' || m.type === 'error'), 'calling');
  const calling = tab.messages.find((m) => m.type === 'calling');
  assert.ok(calling, JSON.stringify(tab.messages.at(-1)));
  await pc.setRemoteDescription({ type: 'answer', sdp: calling.sdp });
  await until(() => tab.messages.some((m) => m.type === 'answered' || m.type === 'ended'), 'answered by baresip', 15_000);
  assert.ok(tab.messages.some((m) => m.type === 'answered'), `baresip answered: ${JSON.stringify(tab.messages.at(-1))}\n${baresip.output()}`);
  await baresip.waitForEvent('CALL_ESTABLISHED', 5000);
  await new Promise((r) => setTimeout(r, 300)); // the ACK reaches baresip
  const from = tab.messages.length;
  tab.ws.send(JSON.stringify({ type: 'transfer', callId: calling.callId, to: '+15550004444', ref: 't' }));
  const outcome = await until(() => tab.messages.slice(from).some((m) => m.type === 'ended' || m.type === 'error'), 'the transfer\'s outcome', 20_000)
    .then(() => tab.messages.slice(from).find((m) => m.type === 'ended' || m.type === 'error') as Msg)
    .catch((err: Error) => { throw new Error(`${err.message}\n--- baresip:\n${baresip.output()}`); });
  let trace = baresip.sipTrace().map((e) => `${e.from} -> ${e.to}: ${e.startLine}`).join('\n');
  assert.equal(outcome.type, 'ended', `${JSON.stringify(outcome)}\n--- baresip SIP:\n${trace}\n--- baresip:\n${baresip.output()}`);
  assert.equal(outcome.cause, 'transferred');
  assert.equal(targetInvites.length, 1, 'the target got baresip\'s INVITE');
  const inv = targetInvites[0].request;
  assert.match(inv.uri, /^sip:\+15550004444@127\.0\.0\.1:28755/, 'for the number the tab asked for');
  assert.equal(inv.source.port, BARESIP_SIP, 'from baresip');
  // On the wire (baresip's own trace): REFER → 202, its NOTIFYs (100, then 200 once the target
  // answered) each answered 200 by us, then our BYE (RFC 5589 §6).
  await until(() => baresip.sipTrace().some((e) => e.startLine.startsWith('BYE')), 'our BYE in baresip\'s trace', 5000);
  await new Promise((r) => setTimeout(r, 200)); // and its answer
  const entries = baresip.sipTrace();
  trace = entries.map((e) => `${e.from} -> ${e.to}: ${e.startLine}`).join('\n');
  const lines = entries.map((e) => `${e.from.endsWith(`:${BASE + 1}`) ? 'gw' : e.from.endsWith(`:${TARGET_SIP}`) ? 'target' : 'baresip'} ${e.startLine.replace(/ SIP\/2\.0$/, '').replace(/^SIP\/2\.0 /, '')}`);
  const notifies = entries.filter((e) => e.startLine.startsWith('NOTIFY'));
  assert.equal(notifies.length, 2, trace);
  assert.match(notifies[0].text, /^Event: refer/im);
  assert.match(notifies[0].text, /Content-Type: message\/sipfrag/i);
  assert.match(notifies[0].text, /\n\nSIP\/2\.0 1\d\d /, 'the first reports the target trying');
  assert.match(notifies[1].text, /\n\nSIP\/2\.0 200 /, 'the last reports its answer');
  const at = (line: string) => lines.findIndex((l) => l.startsWith(line));
  assert.ok(at('gw REFER') >= 0 && at('baresip 202') > at('gw REFER'), trace);
  assert.equal(lines.filter((l) => l.startsWith('gw 200 OK')).length, 2, `both NOTIFYs answered 200:\n${trace}`);
  assert.ok(at('gw BYE') > lines.lastIndexOf(lines.filter((l) => l.startsWith('baresip NOTIFY')).at(-1)!), `our BYE after the final NOTIFY:\n${trace}`);
  assert.ok(tab.messages.slice(from).some((m) => m.type === 'transfer-progress' && m.status === 100 && m.ref === 't'), 'the tab heard the target was tried');
  await until(() => gw.gateway.activeCalls === 0, 'the call out of the registry');
  await until(() => heldResources(gw.gateway).portsAllocated === 0 && heldResources(gw.gateway).icePorts === 0, 'nothing held');
  const rec = () => readFileSync(gw.cdrPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((r) => r.callId === calling.callId);
  await until(() => rec() !== undefined, 'the CDR line');
  assert.deepEqual([rec().cause, rec().transferTo], ['transferred', '+15550004444']);
});
