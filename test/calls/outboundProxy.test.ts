/**
 * `trunk.outboundProxy`: a gateway whose trunk sits behind an SBC sends everything toward the
 * trunk through it. A real Kamailio is the SBC (test/peers/kamailio.ts, `outboundProxy`: it
 * refuses a request for the trunk that does not carry its pre-loaded Route, record-routes
 * INVITEs and registers the gateway itself); our SIP user agent is the trunk behind it; a
 * WebSocket client with a werift offer is the tab (ICE never needs to connect).
 *
 * - The trunk registration reaches the SBC (Kamailio lists the gateway's contact; the trunk
 *   would have answered a REGISTER 405).
 * - The OPTIONS keepalive reaches the trunk through the SBC (two Vias), and /readyz follows it.
 * - A tab's call reaches the trunk through the SBC; its BYE, when the tab hangs up, follows the
 *   SBC's Record-Route.
 *
 * Ports 25780-25795: http BASE, SIP BASE+1, trunk BASE+3, Kamailio BASE+4, RTP BASE+10..13,
 * WebRTC BASE+14..15.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import WebSocket from 'ws';
import { SipUserAgent, type Dialog, type ServerInvite } from '../../src/sip';
import type { SipRequest, SipResponse, SipParseError } from '../../src/sip/message';
import { startGateway } from '../support/gateway';
import { browserPeers, openTab, until } from '../support/tabs';
import { startKamailio } from '../peers/kamailio';

const SECRET = 'outbound-proxy-test-secret-0123456789abc';
const BASE = 25780;
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 25796 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';
const browsers = browserPeers();

test('trunk.outboundProxy: REGISTER, the OPTIONS keepalive, a call and its BYE go through the SBC', async (t) => {
  // Stopped last to first (the gateway unregisters through the SBC as it stops).
  const stops: Array<() => Promise<unknown>> = [];
  t.after(async () => { for (const stop of stops.reverse()) await stop(); });
  const kam = await startKamailio({ port: BASE + 4, users: { gwtrunk: 'trunk-secret' }, outboundProxy: true });
  stops.push(() => kam.stop());
  const trunk = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: BASE + 3 }], logger: pino({ level: 'silent' }) });
  // What reached the trunk, with the number of Vias on it (two: the gateway's and the SBC's).
  const seen: Array<{ method: string; vias: number }> = [];
  const ua = trunk as unknown as { onInbound(m: SipRequest | SipResponse | SipParseError, s: unknown): void };
  const onInbound = ua.onInbound.bind(trunk);
  ua.onInbound = (m, s) => {
    if ('method' in m) seen.push({ method: m.method, vias: m.headers('via').length });
    onInbound(m, s);
  };
  const invites: ServerInvite[] = [];
  const dialogs: Dialog[] = [];
  trunk.on('invite', (inv: ServerInvite) => { invites.push(inv); dialogs.push(inv.accept(SDP)); });
  await trunk.start();
  stops.push(() => trunk.stop());

  const sockets: WebSocket[] = [];
  const gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: false },
    trunk: {
      uri: `sip:127.0.0.1:${BASE + 3}`, outboundProxy: `sip:127.0.0.1:${BASE + 4}`,
      username: 'gwtrunk', password: 'trunk-secret', fromDomain: '127.0.0.1', register: true, optionsKeepaliveSec: 1,
      srtp: 'off', codecs: ['PCMU'],
    },
    dialplan: { allow: ['+1555*'] },
    media: { host: '127.0.0.1', portRange: [BASE + 10, BASE + 13], inactivityTimeoutSec: 60 },
    webrtc: { portRange: [BASE + 14, BASE + 15], connectTimeoutSec: 60 },
  });
  stops.push(async () => { for (const ws of sockets) ws.terminate(); await gw.stop(); });

  await until(() => kam.registrations().includes(`sip:gwtrunk@127.0.0.1:${BASE + 1}`), 'the gateway registered at the SBC');
  await until(() => seen.some((r) => r.method === 'OPTIONS'), 'an OPTIONS keepalive at the trunk');
  assert.ok(seen.filter((r) => r.method === 'OPTIONS').every((r) => r.vias === 2), JSON.stringify(seen));
  await until(async () => (await fetch(`${gw.url}/readyz`)).status === 200, '/readyz with the trunk reachable through the SBC');

  const tab = await openTab(BASE, 'alice', SECRET, sockets);
  tab.ws.send(JSON.stringify({ type: 'call', to: '+15551000100', ref: 'proxy', sdp: await browsers.offer() }));
  await until(() => tab.messages.some((m) => m.type === 'answered' || m.type === 'ended' || m.type === 'error'), 'the call answered');
  const calling = tab.messages.find((m) => m.type === 'calling');
  assert.ok(tab.messages.some((m) => m.type === 'answered'), JSON.stringify(tab.messages));
  assert.equal(invites.length, 1);
  assert.equal(invites[0].request.headers('via').length, 2, 'the INVITE came through the SBC');
  assert.match(invites[0].request.uri, new RegExp(`^sip:\\+15551000100@127\\.0\\.0\\.1:${BASE + 3}`));

  const ended = new Promise<SipRequest | undefined>((resolve) => dialogs[0].once('terminated', (_r, req) => resolve(req)));
  tab.ws.send(JSON.stringify({ type: 'hangup', callId: calling!.callId }));
  const bye = await ended;
  assert.equal(bye?.method, 'BYE');
  assert.equal(bye?.headers('via').length, 2, 'the BYE followed the SBC\'s Record-Route');
});
