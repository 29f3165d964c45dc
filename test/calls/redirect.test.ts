/**
 * A trunk answering our INVITE with a redirect (3xx): the call goes on to the number in the
 * Contact — through our own trunk and routing, never to the host the Contact names — when the
 * dial plan lets the caller dial that number; otherwise the call ends on the 3xx and says why.
 * The trunk is our SIP user agent on loopback; tabs are ws clients with werift offers.
 *
 * Ports 27830-27849: http BASE, SIP BASE+1, trunk BASE+3, RTP BASE+10..13, WebRTC BASE+14..17.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import type WebSocket from 'ws';
import { SipUserAgent, type ServerInvite } from '../../src/sip';
import { startGateway } from '../support/gateway';
import { browserPeers, openTab, until, type Tab } from '../support/tabs';

const SECRET = 'redirect-test-secret-0123456789abcdefghij';
const BASE = 27830;
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 27849 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';
const browsers = browserPeers();
const sockets: WebSocket[] = [];
let trunk: SipUserAgent;
let gw: Awaited<ReturnType<typeof startGateway>>;
/** What the trunk does with an INVITE for each number: 'answer', or a 3xx with Contacts. */
const plan = new Map<string, 'answer' | { status: number; contacts: string[] }>();
const invites: ServerInvite[] = [];

before(async () => {
  trunk = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: BASE + 3 }], logger: pino({ level: 'silent' }) });
  trunk.on('invite', (inv: ServerInvite) => {
    invites.push(inv);
    const number = decodeURIComponent(/^sips?:([^@;]+)@/.exec(inv.request.uri)?.[1] ?? '');
    const what = plan.get(number);
    if (what === 'answer') { inv.accept(SDP); return; }
    if (what) { inv.reject(what.status, undefined, what.contacts.map((c) => ['Contact', c])); return; }
    inv.reject(404);
  });
  await trunk.start();
  gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: false },
    trunk: { uri: `sip:127.0.0.1:${BASE + 3}`, fromDomain: '127.0.0.1', srtp: 'off', codecs: ['PCMU'] },
    dialplan: { allow: ['+1555*'] },
    media: { host: '127.0.0.1', portRange: [BASE + 10, BASE + 13], inactivityTimeoutSec: 60 },
    webrtc: { portRange: [BASE + 14, BASE + 17], connectTimeoutSec: 60 },
  });
});
after(async () => {
  for (const ws of sockets) ws.terminate();
  await gw.stop();
  await trunk.stop();
});

const cdr = (callId: string) => readFileSync(gw.cdrPath, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((l) => l.callId === callId);

async function call(tab: Tab, to: string): Promise<{ callId: string; outcome: Record<string, any> }> {
  const ref = `r${tab.messages.length}`;
  tab.ws.send(JSON.stringify({ type: 'call', to, ref, sdp: await browsers.offer() }));
  await until(() => tab.messages.some((m) => m.ref === ref && m.type === 'calling'), 'calling');
  const callId = tab.messages.find((m) => m.ref === ref && m.type === 'calling')!.callId;
  await until(() => tab.messages.some((m) => m.callId === callId && (m.type === 'answered' || m.type === 'ended')), 'the outcome');
  return { callId, outcome: tab.messages.find((m) => m.callId === callId && (m.type === 'answered' || m.type === 'ended'))! };
}

test('a 302 to a number the dial plan allows: the call goes on there through our trunk (not the host in the Contact), answered; the CDR names the new number', async () => {
  plan.set('+15551000100', { status: 302, contacts: ['<sip:+15551000200@redirect-target.invalid:5099>;q=0.5', '<sip:+15559990000@127.0.0.1>;q=0.9'] });
  plan.set('+15559990000', 'answer');
  const before = invites.length;
  const tab = await openTab(BASE, 'alice', SECRET, sockets);
  const { callId, outcome } = await call(tab, '+15551000100');
  assert.equal(outcome.type, 'answered', JSON.stringify(outcome));
  const ours = invites.slice(before);
  assert.deepEqual(ours.map((i) => i.request.uri), [`sip:+15551000100@127.0.0.1:${BASE + 3}`, `sip:+15559990000@127.0.0.1:${BASE + 3}`], 'the higher-q Contact first, sent to our trunk');
  tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
  await until(() => cdr(callId) !== undefined, 'the CDR line');
  assert.deepEqual(cdr(callId).redirectedTo, ['+15559990000']);
  assert.equal(cdr(callId).to, '+15551000100', 'the number dialed stays the record\'s');
});

test('a redirect the dial plan would not let the caller dial (a premium number), a loop back to itself, or a chain longer than 3: not followed; the call ends on the 3xx, saying why', async () => {
  const tab = await openTab(BASE, 'bob', SECRET, sockets);
  plan.set('+15551000300', { status: 302, contacts: ['<sip:+19005551234@127.0.0.1>'] });
  let before = invites.length;
  const premium = await call(tab, '+15551000300');
  assert.equal(premium.outcome.type, 'ended');
  assert.equal(premium.outcome.sipStatus, 302);
  assert.match(premium.outcome.sipReason, /redirect not followed: \+19005551234: /);
  assert.equal(invites.length - before, 1, 'no INVITE for the premium number');

  plan.set('+15551000400', { status: 301, contacts: ['<sip:+15551000400@127.0.0.1>'] });
  const loop = await call(tab, '+15551000400');
  assert.equal(loop.outcome.type, 'ended');
  assert.match(loop.outcome.sipReason, /already tried/);

  for (let i = 0; i < 5; i++) plan.set(`+1555100050${i}`, { status: 302, contacts: [`<sip:+1555100050${i + 1}@127.0.0.1>`] });
  before = invites.length;
  const chain = await call(tab, '+15551000500');
  assert.equal(chain.outcome.type, 'ended');
  assert.match(chain.outcome.sipReason, /more than 3 redirects/);
  assert.equal(invites.length - before, 4, 'the number dialed and 3 redirects');
});
