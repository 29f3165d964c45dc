import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { createHash } from 'node:crypto';
import pino from 'pino';
import { SipUserAgent, parseNameAddr, parseUri, type Registration, type RegistrationState } from '../../src/sip';
import { grantedExpires } from '../../src/sip/registration';
import { parseSipMessage, type SipResponse } from '../../src/sip/message';
import { UserRegistrations, sipUserPart } from '../../src/userRegistrations';
import { userPart } from '../../src/calls/sipUser';
import { startKamailio } from '../peers/kamailio';

/**
 * Our REGISTER client against a registrar played by hand over UDP on loopback: every status
 * code and Contact list is exactly the one written here, and every REGISTER we send is seen.
 */
const logger = pino({ level: process.env.GW_TEST_LOG ?? 'silent' });
const cleanups: Array<() => Promise<unknown> | void> = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

/** A header's value in a raw SIP message (first of its name), '' when absent. */
function hdr(text: string, name: string): string {
  return text.match(new RegExp(`^${name}: *(.*)$`, 'mi'))?.[1].trim() ?? '';
}
function allHdr(text: string, name: string): string[] {
  return [...text.matchAll(new RegExp(`^${name}: *(.*)$`, 'gmi'))].map((m) => m[1].trim());
}

/**
 * A registrar by hand: each new REGISTER (by Call-ID and CSeq: UDP retransmissions of one are counted once)
 * is queued for `next`, and `reply` answers it with any status and headers.
 */
async function rawRegistrar() {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => sock.close(() => r())));
  const seen = new Set<string>();
  const queue: Array<{ text: string; port: number }> = [];
  let wake: (() => void) | null = null;
  sock.on('message', (m, rinfo) => {
    const text = m.toString();
    const key = `${hdr(text, 'Call-ID')} ${hdr(text, 'CSeq')}`; // a new registration numbers from 1 again
    if (!text.startsWith('REGISTER ') || seen.has(key)) return;
    seen.add(key);
    queue.push({ text, port: rinfo.port });
    wake?.();
  });
  type Req = { text: string; port: number };
  /** The next REGISTER we send; fails the test when none comes within `ms`. */
  async function next(ms = 3000, what = 'a REGISTER'): Promise<Req> {
    const end = Date.now() + ms;
    while (!queue.length) {
      const left = end - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${ms} ms`);
      await new Promise<void>((r) => { const t = setTimeout(r, left); wake = () => { clearTimeout(t); r(); }; });
      wake = null;
    }
    return queue.shift()!;
  }
  /** Asserts that we send no REGISTER for `ms`. */
  async function none(ms: number, why: string): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
    assert.equal(queue.length, 0, `${why}; got:\n${queue.map((q) => q.text.split('\r\n')[0] + ' Expires: ' + hdr(q.text, 'Expires')).join('\n')}`);
  }
  function reply(req: Req, status: string, extra: string[] = []): void {
    const to = hdr(req.text, 'To');
    const res = [
      `SIP/2.0 ${status}`, ...allHdr(req.text, 'Via').map((v) => `Via: ${v}`), `From: ${hdr(req.text, 'From')}`,
      `To: ${to}${/tag=/.test(to) ? '' : ';tag=reg1'}`, `Call-ID: ${hdr(req.text, 'Call-ID')}`, `CSeq: ${hdr(req.text, 'CSeq')}`,
      ...extra, 'Content-Length: 0', '', '',
    ].join('\r\n');
    sock.send(res, req.port, '127.0.0.1');
  }
  /** 200 with our Contact granted `expires` seconds. */
  const ok = (req: Req, expires: number, more: string[] = []) => reply(req, '200 OK', [...more, `Contact: ${hdr(req.text, 'Contact')};expires=${expires}`]);
  return { port: sock.address().port, next, none, reply, ok };
}

async function startUa(): Promise<SipUserAgent> {
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger });
  await ua.start();
  cleanups.push(() => ua.stop());
  return ua;
}

function waitState(reg: Registration, want: RegistrationState, ms = 3000): Promise<void> {
  if (reg.state === want) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { reg.off('state', on); reject(new Error(`state ${reg.state}, not ${want}, after ${ms} ms`)); }, ms);
    const on = (s: RegistrationState) => { if (s === want) { clearTimeout(t); reg.off('state', on); resolve(); } };
    reg.on('state', on);
  });
}

async function setUp(o: { expires?: number; credentials?: { username: string; password: string } } = {}) {
  const registrar = await rawRegistrar();
  const ua = await startUa();
  const reg = ua.register({ registrar: `sip:127.0.0.1:${registrar.port}`, aor: 'sip:alice@127.0.0.1', expires: o.expires ?? 60, credentials: o.credentials });
  cleanups.push(() => reg.stop());
  return { registrar, ua, reg };
}

const md5 = (s: string) => createHash('md5').update(s).digest('hex');
const field = (auth: string, name: string) => new RegExp(`${name}="?([^",]+)"?`).exec(auth)?.[1];
/** Whether an Authorization value answers realm/nonce with the right MD5 digest (no qop). */
function answers(auth: string | undefined, realm: string, nonce: string, password: string): boolean {
  if (!auth) return false;
  const ha1 = md5(`${field(auth, 'username')}:${realm}:${password}`);
  return field(auth, 'realm') === realm && field(auth, 'nonce') === nonce && field(auth, 'response') === md5(`${ha1}:${nonce}:${md5(`REGISTER:${field(auth, 'uri')}`)}`);
}

// ---------------------------------------------------------------- 423 Interval Too Brief

test('423 Interval Too Brief: sent again at once with the Min-Expires, which the refresh keeps', async () => {
  const { registrar, reg } = await setUp({ expires: 1 });
  reg.start();
  const first = await registrar.next();
  assert.equal(hdr(first.text, 'Expires'), '1');
  registrar.reply(first, '423 Interval Too Brief', ['Min-Expires: 2']);
  // Not after the 2 s backoff of a failure: at once.
  const second = await registrar.next(1000, 'REGISTER re-sent after the 423');
  assert.equal(hdr(second.text, 'Expires'), '2');
  assert.notEqual(reg.state, 'failed');
  registrar.ok(second, 2);
  await waitState(reg, 'registered');
  // Granted 2 s: the refresh comes after 1 s and asks for 2 s again, not for a second 423.
  const refresh = await registrar.next(2500, 'the refresh');
  assert.equal(hdr(refresh.text, 'Expires'), '2');
  registrar.ok(refresh, 2);
  const stopped = reg.stop();
  const bye = await registrar.next(1000, 'the unregister');
  assert.equal(hdr(bye.text, 'Expires'), '0');
  registrar.ok(bye, 0);
  await stopped;
});

test('a second 423 (or one without a Min-Expires) is a failure, retried only after the backoff', async () => {
  const { registrar, reg } = await setUp({ expires: 60 });
  reg.start();
  registrar.reply(await registrar.next(), '423 Interval Too Brief', ['Min-Expires: 120']);
  const again = await registrar.next(1000, 'REGISTER re-sent after the 423');
  assert.equal(hdr(again.text, 'Expires'), '120');
  registrar.reply(again, '423 Interval Too Brief', ['Min-Expires: 240']);
  await waitState(reg, 'failed');
  assert.equal(reg.lastStatus, 423);
  await registrar.none(1000, 'no third REGISTER before the backoff');
  await reg.stop();

  const { registrar: r2, reg: reg2 } = await setUp({ expires: 60 });
  reg2.start();
  r2.reply(await r2.next(), '423 Interval Too Brief');
  await waitState(reg2, 'failed');
  await r2.none(1000, 'a 423 without Min-Expires is not re-sent at once');
  await reg2.stop();
});

// ---------------------------------------------------------------- the expiry granted to us

test('the refresh follows the expiry of our own Contact, not of the first one the 200 lists', async () => {
  const { registrar, reg } = await setUp({ expires: 60 });
  reg.start();
  const first = await registrar.next();
  const ours = parseUri(parseNameAddr(hdr(first.text, 'Contact'))!.uri)!;
  // Every binding of the AoR, a desk phone's first; ours with its parameters reordered and more.
  registrar.reply(first, '200 OK', [
    'Contact: <sip:alice@192.0.2.7:5060>;expires=3600',
    `Contact: <sip:alice@127.0.0.1:${ours.port};ob;transport=UDP>;q=0.5;expires=2`,
  ]);
  await waitState(reg, 'registered');
  const refresh = await registrar.next(2500, 'a refresh after 80 % of our 2 s (not of the desk phone\'s 3600 s)');
  // No expires on our Contact: the Expires header, not the desk phone's binding.
  registrar.reply(refresh, '200 OK', ['Contact: <sip:alice@192.0.2.7>;expires=3600', `Contact: <sip:alice@127.0.0.1:${ours.port}>`, 'Expires: 2']);
  registrar.ok(await registrar.next(2500, 'a refresh after 80 % of the Expires header\'s 2 s'), 60);
  const stopped = reg.stop();
  registrar.ok(await registrar.next(1000, 'the unregister'), 0);
  await stopped;
});

test('grantedExpires compares Contact URIs by scheme, user, host, port and transport', () => {
  const res = (...headers: string[]) => parseSipMessage(['SIP/2.0 200 OK', 'Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx', 'From: <sip:a@h>;tag=1', 'To: <sip:a@h>;tag=2', 'Call-ID: c', 'CSeq: 1 REGISTER', ...headers, 'Content-Length: 0', '', ''].join('\r\n')) as SipResponse;
  const ours = '<sip:alice@127.0.0.1:5060>';
  assert.equal(grantedExpires(res('Contact: <sip:bob@127.0.0.1:5060>;expires=3600', 'Contact: <sip:alice@127.0.0.1>;expires=90'), ours, 600), 90, 'port 5060 written out or not');
  assert.equal(grantedExpires(res('Contact: <sip:alice@127.0.0.1:5070>;expires=3600, <sip:alice@127.0.0.1:5060;transport=tcp>;expires=3600, <SIP:alice@127.0.0.1:5060>;expires=45'), ours, 600), 45, 'other port, other transport; scheme case');
  assert.equal(grantedExpires(res('Contact: sip:alice@127.0.0.1:5060;expires=30'), ours, 600), 30, 'addr-spec form');
  assert.equal(grantedExpires(res('Contact: <sip:bob@127.0.0.1:5060>;expires=3600', 'Expires: 120'), ours, 600), 120, 'ours not listed: the Expires header');
  assert.equal(grantedExpires(res('Contact: <sip:bob@127.0.0.1:5060>;expires=3600'), ours, 600), 600, 'nothing for us: what we asked');
  assert.equal(grantedExpires(res('Contact: <sip:alice@127.0.0.1:5060;transport=tls>;expires=3600'), '<sip:alice@127.0.0.1:5061;transport=tls>', 600), 600, 'other port');
  assert.equal(grantedExpires(res('Contact: <sip:alice%40corp@127.0.0.1:5060>;expires=70'), '<sip:alice%40corp@127.0.0.1:5060>', 600), 70, 'escaped user');
});

test('Kamailio: its 200 lists a desk phone\'s 3600 s binding before ours, and we refresh by our own 3 s', async () => {
  const kam = await startKamailio({ port: 25900, users: { alice: 'alicepw' } });
  cleanups.push(() => kam.stop());
  const credentials = { username: 'alice', password: 'alicepw' };
  const registrar = `sip:127.0.0.1:${kam.port}`;
  const desk = (await startUa()).register({ registrar, aor: 'sip:alice@127.0.0.1', contactUser: 'desk', credentials, expires: 3600 });
  cleanups.push(() => desk.stop());
  desk.start();
  await waitState(desk, 'registered');
  const ua = await startUa();
  const reg = ua.register({ registrar, aor: 'sip:alice@127.0.0.1', credentials, expires: 3 });
  cleanups.push(() => reg.stop());
  reg.start();
  await waitState(reg, 'registered');
  const t0 = Date.now();
  while (reg.successes < 2) {
    assert.ok(Date.now() - t0 < 2500, 'refreshed within 80 % of our 3 s');
    await new Promise((r) => setTimeout(r, 50));
  }
  const ourContact = new RegExp(`sip:alice@127\\.0\\.0\\.1:${ua.boundAddresses[0].port}`);
  assert.match(kam.registrations(), ourContact);
  await reg.stop();
  // Our unregister took our binding away, and only ours.
  assert.doesNotMatch(kam.registrations(), ourContact);
  assert.match(kam.registrations(), /sip:desk@127\.0\.0\.1/);
  await desk.stop();
});

// ---------------------------------------------------------------- stop() and the binding

test('stop() during the first REGISTER\'s 401 round: the answer comes first, then the unregister', async () => {
  const { registrar, reg } = await setUp({ credentials: { username: 'alice', password: 'pw' } });
  reg.start();
  registrar.reply(await registrar.next(), '401 Unauthorized', ['WWW-Authenticate: Digest realm="pbx", nonce="n1"']);
  const authed = await registrar.next();
  assert.ok(answers(hdr(authed.text, 'Authorization'), 'pbx', 'n1', 'pw'));
  // The tab closes while the authenticated REGISTER is on its way.
  let done = false;
  const stopped = reg.stop().then(() => { done = true; });
  await registrar.none(300, 'no Expires: 0 alongside the REGISTER still in flight');
  assert.equal(done, false, 'stop() waits for it');
  registrar.ok(authed, 60);
  const bye = await registrar.next(1000, 'the unregister after the REGISTER was answered');
  assert.equal(hdr(bye.text, 'Expires'), '0');
  assert.ok(answers(hdr(bye.text, 'Authorization'), 'pbx', 'n1', 'pw'), 'carries the credentials at once');
  registrar.ok(bye, 0);
  await stopped;
  assert.equal(reg.state, 'unregistered');
  await registrar.none(1500, 'no refresh after stop()');
});

test('stop() while the first REGISTER is in flight: its 200 is followed by the unregister; a 401 after stop() is not answered', async () => {
  const { registrar, reg } = await setUp();
  reg.start();
  const first = await registrar.next();
  const states: RegistrationState[] = [];
  reg.on('state', (s) => states.push(s));
  const stopped = reg.stop();
  registrar.ok(first, 60);
  const bye = await registrar.next(1000, 'the unregister');
  assert.equal(hdr(bye.text, 'Expires'), '0');
  registrar.ok(bye, 0);
  await stopped;
  assert.deepEqual(states, ['unregistered'], 'not registered after stop()');

  // Refused (here challenged) after stop(): no binding was made, none to remove, no new round.
  const { registrar: r2, reg: reg2 } = await setUp({ credentials: { username: 'alice', password: 'pw' } });
  reg2.start();
  const req = await r2.next();
  const stopped2 = reg2.stop();
  r2.reply(req, '401 Unauthorized', ['WWW-Authenticate: Digest realm="pbx", nonce="n1"']);
  await stopped2;
  await r2.none(500, 'nothing sent once a stop()ped REGISTER was challenged');
});

test('stop() after a failed refresh still unregisters: the registrar keeps the binding until it expires', async () => {
  const { registrar, reg } = await setUp({ expires: 2 });
  reg.start();
  registrar.ok(await registrar.next(), 2);
  await waitState(reg, 'registered');
  registrar.reply(await registrar.next(2500, 'the refresh'), '500 Server Internal Error');
  await waitState(reg, 'failed');
  const stopped = reg.stop();
  const bye = await registrar.next(1000, 'the unregister');
  assert.equal(hdr(bye.text, 'Expires'), '0');
  registrar.ok(bye, 0);
  await stopped;
});

test('a refresh answered after stop(): the unregister follows it, and no further refresh is scheduled', async () => {
  const { registrar, reg } = await setUp({ expires: 2 });
  reg.start();
  registrar.ok(await registrar.next(), 2);
  await waitState(reg, 'registered');
  const refresh = await registrar.next(2500, 'the refresh');
  const stopped = reg.stop();
  await registrar.none(300, 'no Expires: 0 while the refresh is in flight');
  registrar.ok(refresh, 2);
  const bye = await registrar.next(1000, 'the unregister');
  assert.equal(hdr(bye.text, 'Expires'), '0');
  assert.ok(Number(hdr(bye.text, 'CSeq').split(' ')[0]) > Number(hdr(refresh.text, 'CSeq').split(' ')[0]));
  registrar.ok(bye, 0);
  await stopped;
  // Read-only look at a private member: no timer left behind to fire a REGISTER later.
  assert.equal((reg as unknown as { timer: unknown }).timer, null, 'no refresh timer left');
  await registrar.none(2000, 'the answered refresh scheduled no other (it would come after 1 s)');
  assert.equal(reg.state, 'unregistered');
});

test('stop() sends nothing when no binding was ever made, and returns within its bound when the registrar is silent', async () => {
  const { registrar, reg } = await setUp();
  reg.start();
  registrar.reply(await registrar.next(), '403 Forbidden');
  await waitState(reg, 'failed');
  await reg.stop();
  await registrar.none(500, 'no unregister for a registration that never succeeded');

  const { registrar: r2, reg: reg2 } = await setUp();
  reg2.start();
  await r2.next();
  const t0 = Date.now();
  await reg2.stop();
  assert.ok(Date.now() - t0 < 4000, `stop() took ${Date.now() - t0} ms`);
  assert.equal(reg2.state, 'unregistered');
  assert.equal(await Promise.race([reg2.stop().then(() => 'same'), new Promise((r) => setTimeout(() => r('hung'), 100))]), 'same', 'a second stop() does not start over');
});

// ---------------------------------------------------------------- digest: 407 then 401

test('a 407 from an outbound proxy, then a 401 from the registrar: both answers are sent together', async () => {
  const { registrar, reg } = await setUp({ credentials: { username: 'alice', password: 'pw' } });
  reg.start();
  registrar.reply(await registrar.next(), '407 Proxy Authentication Required', ['Proxy-Authenticate: Digest realm="sbc", nonce="p1"']);
  const second = await registrar.next();
  assert.ok(answers(hdr(second.text, 'Proxy-Authorization'), 'sbc', 'p1', 'pw'));
  registrar.reply(second, '401 Unauthorized', ['WWW-Authenticate: Digest realm="pbx", nonce="r1"']);
  const third = await registrar.next(1000, 'the REGISTER answering both challenges');
  assert.ok(answers(hdr(third.text, 'Proxy-Authorization'), 'sbc', 'p1', 'pw'), 'the proxy\'s answer is kept');
  assert.ok(answers(hdr(third.text, 'Authorization'), 'pbx', 'r1', 'pw'), 'and the registrar\'s added');
  registrar.ok(third, 60);
  await waitState(reg, 'registered');
  const stopped = reg.stop();
  const bye = await registrar.next(1000, 'the unregister');
  assert.ok(hdr(bye.text, 'Proxy-Authorization') && hdr(bye.text, 'Authorization'), 'the unregister carries both at once');
  registrar.ok(bye, 0);
  await stopped;
});

test('a wrong password ends in failed, not a loop, even when every challenge has a new nonce', async () => {
  const { registrar, reg } = await setUp({ credentials: { username: 'alice', password: 'wrong' } });
  reg.start();
  const failed = waitState(reg, 'failed');
  let sent = 0;
  while (reg.state !== 'failed') {
    const req = await Promise.race([registrar.next(1000, 'a REGISTER'), failed.then(() => null)]);
    if (!req) break;
    sent++;
    registrar.reply(req, '401 Unauthorized', [`WWW-Authenticate: Digest realm="pbx", nonce="n${sent}"`]);
  }
  assert.equal(reg.lastStatus, 401);
  assert.ok(sent >= 2 && sent <= 3, `${sent} REGISTERs`);
  await registrar.none(1000, 'no more REGISTERs before the backoff');
  await reg.stop();
});

// ---------------------------------------------------------------- browser users' user parts

test('sipUserPart escapes an identity per RFC 3261 user grammar, and decodes back to it', () => {
  const grammar = /^(?:[A-Za-z0-9\-_.!~*'()&=+$,/]|%[0-9A-F]{2})+$/;
  const cases: Array<[string, string]> = [
    ['alice', 'alice'],
    ['auth0|abc', 'auth0%7Cabc'],
    ['a;b?c:d@e', 'a%3Bb%3Fc%3Ad%40e'],
    ['+4930123456', '+4930123456'],
    ['100%', '100%25'],
    ['jürgen x', 'j%C3%BCrgen%20x'],
    ['<"#>', '%3C%22%23%3E'],
  ];
  for (const [id, want] of cases) {
    const got = sipUserPart(id);
    assert.equal(got, want, id);
    assert.match(got, grammar, id);
    assert.equal(parseUri(`sip:${got}@pbx.example`)?.user, id, `${id} parses back`);
    assert.equal(userPart(`<sip:${got}@gw.example:5060>`), id, `${id}: inbound routing finds the user again`);
  }
  assert.match(sipUserPart('\uD800x'), grammar, 'a lone surrogate does not throw');
});

test('UserRegistrations registers an identity with | ; ? : as a valid, escaped AoR and Contact', async () => {
  const registrar = await rawRegistrar();
  const ua = await startUa();
  const regs = new UserRegistrations(ua, { registrar: `sip:127.0.0.1:${registrar.port}`, domain: 'pbx.example', expiresSec: 60 }, logger, 200);
  cleanups.push(() => regs.stopAll());
  const id = 'auth0|a;b?c:d';
  regs.online(id);
  const req = await registrar.next();
  const escaped = 'auth0%7Ca%3Bb%3Fc%3Ad';
  for (const name of ['To', 'From']) {
    const uri = parseNameAddr(hdr(req.text, name))!.uri;
    assert.equal(uri, `sip:${escaped}@pbx.example`, name);
  }
  const contact = parseUri(parseNameAddr(hdr(req.text, 'Contact'))!.uri)!;
  assert.equal(contact.user, id);
  assert.equal(contact.host, '127.0.0.1');
  assert.match(hdr(req.text, 'Contact'), new RegExp(`^<sip:${escaped.replace(/[|?]/g, '\\$&')}@127\\.0\\.0\\.1:\\d+>$`));
  registrar.ok(req, 60);
  await new Promise((r) => setTimeout(r, 100));
  regs.offline(id);
  const bye = await registrar.next(1000, 'the unregister when the last tab closes');
  assert.equal(hdr(bye.text, 'Expires'), '0');
  registrar.ok(bye, 0);
});

test('userPart: a broken %-escape in a peer\'s URI is taken as written, not thrown', () => {
  assert.equal(userPart('<sip:%ZZalice@gw.example>'), '%ZZalice');
  assert.equal(userPart('sip:bob%40corp@gw.example;transport=udp'), 'bob@corp');
  assert.equal(userPart('<tel:+15551234>'), '+15551234');
});

test('UserRegistrations: a page reload (the last tab goes, a new one comes within the grace period) keeps the registration, no unregister; the last tab gone for good unregisters after it', async () => {
  const registrar = await rawRegistrar();
  const ua = await startUa();
  const regs = new UserRegistrations(ua, { registrar: `sip:127.0.0.1:${registrar.port}`, domain: 'pbx.example', expiresSec: 60 }, logger, 400);
  cleanups.push(() => regs.stopAll());
  regs.online('carol');
  registrar.ok(await registrar.next(), 60);
  regs.offline('carol');
  await new Promise((r) => setTimeout(r, 100));
  regs.online('carol'); // the reloaded page
  await registrar.none(700, 'no unregister and no new REGISTER across a reload');
  regs.offline('carol');
  const t0 = Date.now();
  const un = await registrar.next(2000, 'the unregister once the grace period passed');
  assert.equal(hdr(un.text, 'Expires'), '0');
  assert.ok(Date.now() - t0 >= 350, `unregistered after ${Date.now() - t0} ms`);
  registrar.ok(un, 0);
});

test('UserRegistrations: a tab back while the unregister is still on its way registers anew only once the registrar has answered it', async () => {
  const registrar = await rawRegistrar();
  const ua = await startUa();
  const regs = new UserRegistrations(ua, { registrar: `sip:127.0.0.1:${registrar.port}`, domain: 'pbx.example', expiresSec: 60 }, logger, 100);
  cleanups.push(() => regs.stopAll());
  regs.online('dave');
  registrar.ok(await registrar.next(), 60);
  regs.offline('dave');
  const un = await registrar.next(2000, 'the unregister');
  assert.equal(hdr(un.text, 'Expires'), '0');
  regs.online('dave'); // the unregister is not answered yet
  await registrar.none(400, 'no new REGISTER while the unregister is unanswered');
  registrar.ok(un, 0);
  const again = await registrar.next(2000, 'the new REGISTER once the unregister was answered');
  assert.equal(hdr(again.text, 'Expires'), '60');
  registrar.ok(again, 60);
});
