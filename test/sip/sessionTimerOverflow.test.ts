/**
 * A Session-Expires from a peer is any number of up to 9 digits (readSessionExpires), and the
 * session timer waits half of it (as refresher) or nearly all of it (RFC 4028 §10). setTimeout
 * takes at most 2^31-1 ms (24.8 days): Node runs a longer timer after 1 ms. A peer asking for a
 * month ("Session-Expires: 2678400;refresher=uac") had its call BYE'd 1 ms after we answered it;
 * one asking us to refresh had us re-INVITE it in a loop. Found reading what the UA does with
 * the header values the parser fuzz (messageFuzz.test.ts) lets through.
 *
 * Ports: 127.0.0.1 27956-27957 only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import pino from 'pino';
import { SessionTimer } from '../../src/sip/sessionTimer';
import { realClock, type Clock } from '../../src/sip/transactions';
import { SipUserAgent, type Dialog } from '../../src/sip';
import { until } from '../support/tabs';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a session interval past setTimeout\'s 24.8 days neither expires nor refreshes at once', async () => {
  const warnings: string[] = [];
  const onWarning = (w: Error) => { if (w.name === 'TimeoutOverflowWarning') warnings.push(w.message); };
  process.on('warning', onWarning);
  const fired: string[] = [];
  const timers = [false, true].map((weRefresh) => {
    const t = new SessionTimer(realClock, () => fired.push('refresh'), () => fired.push('expired'), 90);
    t.start(999_999_999, weRefresh); // the largest readSessionExpires takes: 31.7 years
    return t;
  });
  const month = new SessionTimer(realClock, () => fired.push('refresh'), () => fired.push('expired'), 90);
  month.start(31 * 86400, false);
  try {
    await sleep(100);
    assert.deepEqual(fired, [], 'nothing fired within 100 ms');
    assert.ok(timers.every((t) => t.running) && month.running);
  } finally {
    for (const t of [...timers, month]) t.stop();
    process.off('warning', onWarning);
  }
  assert.deepEqual(warnings, [], 'no timer was given more than setTimeout takes');
});

test('a long interval is waited out in steps, to the millisecond it was due (a clock that counts)', () => {
  let now = 0;
  const pending: Array<{ at: number; fn: () => void; ms: number }> = [];
  const clock: Clock = {
    setTimeout: (fn, ms) => { const t = { at: now + ms, fn, ms }; pending.push(t); return t; },
    clearTimeout: (h) => { const i = pending.indexOf(h as (typeof pending)[number]); if (i >= 0) pending.splice(i, 1); },
  };
  const fired: number[] = [];
  const t = new SessionTimer(clock, () => fired.push(now), () => fired.push(-now), 90);
  t.start(10_000_000, true); // 115 days: refresh due after 5e9 ms
  while (pending.length > 0) {
    pending.sort((a, b) => a.at - b.at);
    const next = pending.shift()!;
    assert.ok(next.ms <= 0x7fffffff, `a delay of ${next.ms} ms`);
    now = next.at;
    next.fn();
  }
  assert.deepEqual(fired, [5_000_000_000], 'refreshed once, at half the interval');
  assert.equal(t.running, false);
});

test('an INVITE asking a month-long session is answered and the call stays up (no BYE at once)', async () => {
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 27956 }], logger: pino({ level: 'silent' }), timers: { T1: 20, T2: 80, T4: 100 } });
  await ua.start();
  const peer = dgram.createSocket('udp4');
  await new Promise<void>((r) => peer.bind(27957, '127.0.0.1', () => r()));
  const got: string[] = [];
  peer.on('message', (m) => got.push(m.toString('utf8')));
  const sdp = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n';
  let dialog: Dialog | null = null;
  ua.on('invite', (inv) => { dialog = inv.accept(sdp); });
  const headers = (method: string, cseq: number, toTag = '') => [
    `Via: SIP/2.0/UDP 127.0.0.1:27957;branch=z9hG4bKse${method}${cseq};rport`, 'Max-Forwards: 70',
    'From: <sip:caller@127.0.0.1>;tag=caller1', `To: <sip:gw@127.0.0.1:27956>${toTag}`, 'Call-ID: month-long@127.0.0.1',
    `CSeq: ${cseq} ${method}`, 'Contact: <sip:caller@127.0.0.1:27957>',
  ];
  try {
    peer.send([
      'INVITE sip:gw@127.0.0.1:27956 SIP/2.0', ...headers('INVITE', 1), 'Supported: timer',
      'Session-Expires: 2678400;refresher=uac', 'Content-Type: application/sdp', `Content-Length: ${sdp.length}`, '', sdp,
    ].join('\r\n'), 27956, '127.0.0.1');
    await until(() => got.some((t) => t.startsWith('SIP/2.0 200 ')), 'the 200 OK');
    const ok = got.find((t) => t.startsWith('SIP/2.0 200 '))!;
    assert.match(ok, /\r\nSession-Expires: 2678400;refresher=uac\r\n/);
    const toTag = /\r\nTo: [^\r\n]*(;tag=[^\r\n;]+)/.exec(ok)![1];
    peer.send(['ACK sip:gw@127.0.0.1:27956 SIP/2.0', ...headers('ACK', 1, toTag), 'Content-Length: 0', '', ''].join('\r\n'), 27956, '127.0.0.1');
    await sleep(200);
    assert.deepEqual(got.filter((t) => /^[A-Z]+ /.test(t)).map((t) => t.split(' ')[0]), [], 'no BYE (nor anything else) from the gateway');
    assert.equal(dialog!.state, 'confirmed');
    assert.ok(dialog!.sessionTimer.running);
  } finally {
    peer.close();
    await ua.stop();
  }
});
