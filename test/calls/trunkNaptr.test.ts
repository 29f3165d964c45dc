/**
 * A trunk named by a bare domain whose servers and transport only its NAPTR records say (RFC
 * 3263 §4.1): the gateway, running UDP and TCP, finds them through a real DNS server (dnsmasq,
 * `sip.dnsServers`) — NAPTR → SRV (a `_sip._tcp` name no SRV-for-each-transport lookup would
 * ask) → address — and calls over TCP though `trunk.uri` says nothing of a transport; the BYE
 * follows on TCP. A gateway running UDP only, for a domain whose NAPTR offers SIPS alone, does
 * not try the domain's address over UDP: the call ends with a reason naming the host and what
 * DNS offered, and nothing is left behind.
 *
 * Ports 28650-28661: http BASE, SIP BASE+1 (UDP and TCP), trunk BASE+3 (TCP), DNS BASE+4, RTP
 * BASE+5..8, WebRTC BASE+9..10, the trunk's SDP media port BASE+11 (nothing listens).
 */
import { existsSync, readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import WebSocket from 'ws';
import { SipUserAgent, type Dialog, type ServerInvite } from '../../src/sip';
import { heldResources, startGateway } from '../support/gateway';
import { browserPeers, openTab, until } from '../support/tabs';
import { startDnsmasq } from '../peers/dnsmasq';

const SECRET = 'trunk-naptr-test-secret-0123456789abcdef';
const BASE = 28650;
const SDP = `v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 11} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n`;
const browsers = browserPeers();
let dns: Awaited<ReturnType<typeof startDnsmasq>>;

before(async () => {
  dns = await startDnsmasq({
    port: BASE + 4,
    naptr: [
      { name: 'carrier.test', order: 10, preference: 10, flags: 's', service: 'SIP+D2T', replacement: '_sip._tcp.sbc-pool.carrier.test' },
      { name: 'tlsonly.test', order: 10, preference: 10, flags: 's', service: 'SIPS+D2T', replacement: '_sips._tcp.tlsonly.test' },
    ],
    srv: [
      { service: '_sip._tcp.sbc-pool.carrier.test', target: 'sbc.carrier.test', port: BASE + 3 },
      { service: '_sips._tcp.tlsonly.test', target: 'sbc.tlsonly.test', port: BASE + 3 },
    ],
    // The bare domains' addresses are their web sites: never where calls go.
    hosts: [['sbc.carrier.test', '127.0.0.1'], ['sbc.tlsonly.test', '127.0.0.1'], ['carrier.test', '127.0.0.77'], ['tlsonly.test', '127.0.0.77']],
  });
});
after(() => dns?.stop());

async function gateway(transports: Array<'udp' | 'tcp'>, trunkUri: string, sockets: WebSocket[]) {
  return startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: false },
    sip: { host: '127.0.0.1', port: BASE + 1, transports, dnsServers: [`127.0.0.1:${BASE + 4}`] },
    trunk: { uri: trunkUri, fromDomain: '127.0.0.1', srtp: 'off', codecs: ['PCMU'], sourceCidrs: ['127.0.0.1/32'] },
    dialplan: { allow: ['+1555*'] },
    media: { host: '127.0.0.1', portRange: [BASE + 5, BASE + 8], inactivityTimeoutSec: 60 },
    webrtc: { portRange: [BASE + 9, BASE + 10], connectTimeoutSec: 60 },
  });
}

test('a trunk found only through NAPTR → SRV: the call goes over TCP though the URI names no transport, and its BYE too', async (t) => {
  const stops: Array<() => Promise<unknown>> = [];
  t.after(async () => { for (const stop of stops.reverse()) await stop(); });
  const trunk = new SipUserAgent({ transports: [{ protocol: 'tcp', host: '127.0.0.1', port: BASE + 3 }], logger: pino({ level: 'silent' }) });
  const invites: ServerInvite[] = [];
  const dialogs: Dialog[] = [];
  trunk.on('invite', (inv: ServerInvite) => { invites.push(inv); dialogs.push(inv.accept(SDP)); });
  await trunk.start();
  stops.push(() => trunk.stop());

  const sockets: WebSocket[] = [];
  const gw = await gateway(['udp', 'tcp'], 'sip:carrier.test', sockets);
  stops.push(async () => { for (const ws of sockets) ws.terminate(); await gw.stop(); });

  const tab = await openTab(BASE, 'alice', SECRET, sockets);
  tab.ws.send(JSON.stringify({ type: 'call', to: '+15551000100', ref: 'naptr', sdp: await browsers.offer() }));
  await until(() => tab.messages.some((m) => m.type === 'answered' || m.type === 'ended' || m.type === 'error'), 'the call answered');
  assert.ok(tab.messages.some((m) => m.type === 'answered'), JSON.stringify(tab.messages));
  assert.equal(invites.length, 1);
  assert.equal(invites[0].request.source.protocol, 'tcp', 'the INVITE came over TCP');
  assert.match(invites[0].request.header('via') ?? '', /^SIP\/2\.0\/TCP /, 'and says so in its Via');
  assert.match(invites[0].request.uri, /^sip:\+15551000100@carrier\.test$/, 'the Request-URI keeps the domain');
  assert.match(dns.output(), /query\[NAPTR\] carrier\.test/);

  const callId = tab.messages.find((m) => m.type === 'calling')!.callId;
  const ended = new Promise<string>((r) => dialogs[0].once('terminated', r));
  tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
  assert.equal(await ended, 'bye', 'the BYE reached the trunk (over its TCP transport, the only one it runs)');
  await until(() => gw.gateway.activeCalls === 0, 'the call ended');
});

test('a gateway running UDP only, a trunk domain whose NAPTR offers SIPS+D2T alone: the call fails, its CDR naming the host and what DNS offered (the tab is told only that the trunk could not be reached) — no INVITE over UDP to its address — and nothing is left', async (t) => {
  const stops: Array<() => Promise<unknown>> = [];
  t.after(async () => { for (const stop of stops.reverse()) await stop(); });
  const sockets: WebSocket[] = [];
  const gw = await gateway(['udp'], 'sip:tlsonly.test', sockets);
  stops.push(async () => { for (const ws of sockets) ws.terminate(); await gw.stop(); });

  const tab = await openTab(BASE, 'bob', SECRET, sockets);
  tab.ws.send(JSON.stringify({ type: 'call', to: '+15551000101', ref: 'tls-only', sdp: await browsers.offer() }));
  await until(() => tab.messages.some((m) => m.type === 'ended' || m.type === 'error' || m.type === 'answered'), 'the call ended');
  const ended = tab.messages.find((m) => m.type === 'ended');
  assert.ok(ended, JSON.stringify(tab.messages));
  assert.equal(ended.cause, 'unavailable');
  // The tab is told the trunk could not be reached; the CDR (for the operator) says why.
  assert.equal(ended.sipReason, 'the trunk could not be reached');
  const why = 'cannot reach "tlsonly.test": its DNS (NAPTR) offers SIP only as SIPS+D2T (tls), and the transports we run are udp';
  assert.doesNotMatch(JSON.stringify(tab.messages), /tlsonly|NAPTR|SIPS|transports we run/, 'nothing of the trunk\'s DNS or our transports reaches the tab');
  await until(() => existsSync(gw.cdrPath) && readFileSync(gw.cdrPath, 'utf8').includes(ended.callId), 'the CDR written');
  const cdr = readFileSync(gw.cdrPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).find((r) => r.callId === ended.callId);
  assert.equal(cdr.sipReason, why);
  assert.doesNotMatch(dns.output(), /query\[A\] tlsonly\.test/, 'the bare name\'s address was not even looked up');
  await until(() => gw.gateway.activeCalls === 0, 'the call out of the registry');
  assert.deepEqual(heldResources(gw.gateway), { legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 });
  const ua = (gw.gateway as unknown as { ua: SipUserAgent }).ua;
  assert.deepEqual(ua.counts, { clientTx: 0, serverTx: 0, dialogs: 0, serverInvites: 0 });
  assert.equal(ua.clientInvites.size, 0);
});

test('a trunk that refuses the connection (TCP, nothing listening): the tab is told only that the trunk could not be reached; the CDR keeps the transport error', async (t) => {
  const stops: Array<() => Promise<unknown>> = [];
  t.after(async () => { for (const stop of stops.reverse()) await stop(); });
  const sockets: WebSocket[] = [];
  const gw = await gateway(['udp', 'tcp'], `sip:127.0.0.1:${BASE + 12};transport=tcp`, sockets); // nothing listens on TCP 28662
  stops.push(async () => { for (const ws of sockets) ws.terminate(); await gw.stop(); });
  const tab = await openTab(BASE, 'carol', SECRET, sockets);
  tab.ws.send(JSON.stringify({ type: 'call', to: '+15551000102', ref: 'refused', sdp: await browsers.offer() }));
  await until(() => tab.messages.some((m) => m.type === 'ended'), 'the call ended');
  const ended = tab.messages.find((m) => m.type === 'ended')!;
  assert.equal(ended.cause, 'unavailable');
  assert.equal(ended.sipReason, 'the trunk could not be reached');
  assert.doesNotMatch(JSON.stringify(tab.messages.filter((m) => m.type !== 'calling')), /ECONNREFUSED|transport:|28662/, 'no transport detail reaches the tab');
  await until(() => existsSync(gw.cdrPath) && readFileSync(gw.cdrPath, 'utf8').includes(ended.callId), 'the CDR written');
  const cdr = readFileSync(gw.cdrPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).find((r) => r.callId === ended.callId);
  assert.match(String(cdr.sipReason), /ECONNREFUSED/, 'the operator sees why');
  await until(() => gw.gateway.activeCalls === 0, 'the call out of the registry');
});
