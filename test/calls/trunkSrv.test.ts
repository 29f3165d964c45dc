/**
 * A trunk named by a domain that publishes SRV records (RFC 3263), as carriers do: the gateway
 * finds its servers through a real DNS server (dnsmasq, `sip.dnsServers`), calls the first, and
 * when that one answers 503 (out of service) the call goes on at the next — the tab sees one
 * call, answered.
 *
 * Ports 26770-26789: http BASE, SIP BASE+1, trunk servers BASE+3 and BASE+4, DNS BASE+6, RTP
 * BASE+10..13, WebRTC BASE+14..15.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import WebSocket from 'ws';
import { SipUserAgent, type ServerInvite } from '../../src/sip';
import { startGateway } from '../support/gateway';
import { browserPeers, openTab, until } from '../support/tabs';
import { startDnsmasq } from '../peers/dnsmasq';

const SECRET = 'trunk-srv-test-secret-0123456789abcdefgh';
const BASE = 26770;
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 26789 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';
const browsers = browserPeers();

test('a trunk found by SRV: the call goes to the first server, and on its 503 to the next; the tab sees it answered', async (t) => {
  const stops: Array<() => Promise<unknown>> = [];
  t.after(async () => { for (const stop of stops.reverse()) await stop(); });
  const dns = await startDnsmasq({
    port: BASE + 6,
    srv: [
      { service: '_sip._udp.carrier.test', target: 'sbc1.carrier.test', port: BASE + 3, priority: 10, weight: 50 },
      { service: '_sip._udp.carrier.test', target: 'sbc2.carrier.test', port: BASE + 4, priority: 20, weight: 50 },
    ],
    // The bare domain's address is its web site: never where calls go.
    hosts: [['sbc1.carrier.test', '127.0.0.1'], ['sbc2.carrier.test', '127.0.0.1'], ['carrier.test', '127.0.0.77']],
  });
  stops.push(() => dns.stop());
  const servers = await Promise.all([BASE + 3, BASE + 4].map(async (port, i) => {
    const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port }], logger: pino({ level: 'silent' }) });
    const invites: ServerInvite[] = [];
    ua.on('invite', (inv: ServerInvite) => {
      invites.push(inv);
      if (i === 0) inv.reject(503, 'Service Unavailable');
      else inv.accept(SDP);
    });
    await ua.start();
    stops.push(() => ua.stop());
    return { invites };
  }));

  const sockets: WebSocket[] = [];
  const gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: false },
    sip: { host: '127.0.0.1', port: BASE + 1, dnsServers: [`127.0.0.1:${BASE + 6}`] },
    trunk: { uri: 'sip:carrier.test', fromDomain: '127.0.0.1', srtp: 'off', codecs: ['PCMU'], sourceCidrs: ['127.0.0.1/32'] },
    dialplan: { allow: ['+1555*'] },
    media: { host: '127.0.0.1', portRange: [BASE + 10, BASE + 13], inactivityTimeoutSec: 60 },
    webrtc: { portRange: [BASE + 14, BASE + 15], connectTimeoutSec: 60 },
  });
  stops.push(async () => { for (const ws of sockets) ws.terminate(); await gw.stop(); });

  const tab = await openTab(BASE, 'alice', SECRET, sockets);
  tab.ws.send(JSON.stringify({ type: 'call', to: '+15551000100', ref: 'srv', sdp: await browsers.offer() }));
  await until(() => tab.messages.some((m) => m.type === 'answered' || m.type === 'ended' || m.type === 'error'), 'the call answered');
  assert.ok(tab.messages.some((m) => m.type === 'answered'), JSON.stringify(tab.messages));
  assert.equal(servers[0].invites.length, 1, 'the first SRV server was asked first');
  assert.equal(servers[1].invites.length, 1, 'then the next');
  assert.match(servers[1].invites[0].request.uri, /^sip:\+15551000100@carrier\.test$/, 'the Request-URI keeps the domain');
  assert.equal(servers[0].invites[0].request.callId, servers[1].invites[0].request.callId, 'one call');
  assert.equal(tab.messages.filter((m) => m.type === 'calling').length, 1);
});
