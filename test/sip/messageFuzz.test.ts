/**
 * Bad input from SIP peers, generated: realistic messages (an INVITE with SDP, a 200 OK with
 * several Vias and Record-Routes, REGISTER, BYE, compact forms, folded headers, IPv6 hosts, and
 * the RFC 4475 messages that parse) cut at every offset and mutated thousands of times — bytes
 * flipped, headers duplicated or removed, Content-Length and CSeq rewritten, the blank line
 * taken out, NULs, very long lines, invalid UTF-8 — fed to the parser (src/sip/message.ts).
 *
 * For every input the parser must return a message or a SipParseError (its documented way:
 * it never throws), quickly; a message it returns must serialize and parse back to the same
 * message, or — when the canonical text grows past a parser limit (compact names written out
 * long, a Content-Length added) — be refused for exactly that limit. The header-value helpers
 * the user agent applies to what a peer sent (parseVia, parseNameAddr, parseUri) must not throw
 * either. Growth tests time 10x larger inputs of adversarial shapes and report the ratio.
 *
 * Then the same over real UDP: a SipUserAgent on 127.0.0.1:27950 gets a few hundred mutated
 * requests from a plain socket on 27951 (ports 27950-27969 only). Nothing may throw (process
 * 'uncaughtException'/'unhandledRejection' and the UA's own error log are watched); a request
 * the parser refuses but whose Via can be answered gets exactly the parser's status (400, 505,
 * 513) with the problem as reason phrase (RFC 3261 §8.2, §21.4.1); one without a usable Via, an
 * ACK and any response get nothing (§18.2.2, §17.1.1.3, §18.1.2); every request that parses gets
 * a final response. Afterwards the UA answers OPTIONS and every transaction has ended. A table
 * of hand-made requests pins what RFC 3261 asks for each kind of fault (missing Call-ID, CSeq,
 * From, To → 400 naming it; no usable Via → nothing), independent of the parser's own verdicts.
 *
 * Found here and fixed (each with its own test below): the 400's reason phrase carried the
 * peer's control characters (a CR in a status line); a broken header line ended the reading, so
 * the 400 lacked the From, To, Call-ID and CSeq after it and its sender could not match it; a
 * reason phrase holding U+2028/U+2029 (valid UTF-8) was refused as a malformed status line.
 *
 * Ports: 127.0.0.1 27950-27955 (two per live test: the UA, the raw peer). Fixed seeds: a failure names the input (hex), and the same run reproduces it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import dgram from 'node:dgram';
import { Writable } from 'node:stream';
import pino from 'pino';
import {
  parseNameAddr, parseSipMessage, parseUri, parseVia, PARSE_LIMITS, SipRequest, SipResponse, type SipParseError,
} from '../../src/sip/message';
import { SipUserAgent } from '../../src/sip';
import { until } from '../support/tabs';
import { explain, prng, timeOf } from '../support/fuzz';

type Parsed = ReturnType<typeof parseSipMessage>;
const isError = (p: Parsed): p is SipParseError => 'error' in p;

const SDP = [
  'v=0', 'o=- 4711 1 IN IP4 192.0.2.10', 's=-', 'c=IN IP4 192.0.2.10', 't=0 0',
  'm=audio 40000 RTP/AVP 0 8 101', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:8 PCMA/8000',
  'a=rtpmap:101 telephone-event/8000', 'a=fmtp:101 0-16', 'a=ptime:20', 'a=sendrecv', '',
].join('\r\n');

const wire = (lines: string[], body = '') => `${lines.join('\r\n')}\r\n\r\n${body}`;

/** Realistic messages, as trunks, phones and proxies send them. */
const BASES: Record<string, string> = {
  invite: wire([
    'INVITE sip:+4930123456@gw.example.net;user=phone SIP/2.0',
    'Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9;rport',
    'Max-Forwards: 70',
    'From: "Alice Example" <sip:alice@example.com>;tag=9fxced76sl',
    'To: <sip:+4930123456@gw.example.net;user=phone>',
    'Call-ID: 3848276298220188511@192.0.2.10',
    'CSeq: 1 INVITE',
    'Contact: <sip:alice@192.0.2.10:5060>',
    'Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK',
    'Supported: timer, 100rel, replaces',
    'Session-Expires: 1800;refresher=uac',
    'User-Agent: FuzzPhone/1.0',
    'Content-Type: application/sdp',
    `Content-Length: ${Buffer.byteLength(SDP)}`,
  ], SDP),
  ok200: wire([
    'SIP/2.0 200 OK',
    'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds8;received=192.0.2.1',
    'Via: SIP/2.0/TCP proxy.example.net;branch=z9hG4bK77ef4c2312983.1, SIP/2.0/UDP 198.51.100.7:5080;branch=z9hG4bKx',
    'Record-Route: <sip:proxy.example.net;lr>, <sip:edge.example.net;lr;transport=tcp>',
    'From: <sip:gw@192.0.2.1>;tag=1928301774',
    'To: "Bob" <sip:bob@example.com>;tag=a6c85cf',
    'Call-ID: a84b4c76e66710@pc33.example.com',
    'CSeq: 314159 INVITE',
    'Contact: <sip:bob@198.51.100.7:5080>',
    'Content-Type: application/sdp',
    `Content-Length: ${Buffer.byteLength(SDP)}`,
  ], SDP),
  register: wire([
    'REGISTER sip:registrar.example.com SIP/2.0',
    'Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKnashds7;rport',
    'Max-Forwards: 70',
    'From: <sip:1001@registrar.example.com>;tag=456248',
    'To: <sip:1001@registrar.example.com>',
    'Call-ID: 843817637684230@998sdasdh09',
    'CSeq: 1826 REGISTER',
    'Contact: <sip:1001@192.0.2.20:5060>;expires=3600;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"',
    'Authorization: Digest username="1001", realm="example.com", nonce="84a4cc6f3082121f32b42a2187831a9e", uri="sip:registrar.example.com", response="7587245234b3434cc3412213e5f113a5432", algorithm=MD5',
    'Expires: 3600',
    'Content-Length: 0',
  ]),
  bye: wire([
    'BYE sip:alice@192.0.2.10:5060 SIP/2.0',
    'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbye1;rport',
    'Route: <sip:proxy.example.net;lr>',
    'Max-Forwards: 70',
    'From: <sip:gw@192.0.2.1>;tag=1928301774',
    'To: "Alice" <sip:alice@example.com>;tag=9fxced76sl',
    'Call-ID: 3848276298220188511@192.0.2.10',
    'CSeq: 2 BYE',
    'Reason: Q.850;cause=16;text="Normal call clearing"',
    'Content-Length: 0',
  ]),
  // Compact forms (RFC 3261 §7.3.3), no spaces after colons, and the body without Content-Length.
  compact: wire([
    'MESSAGE sip:bob@example.com SIP/2.0',
    'v:SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKcmp1',
    'f:<sip:alice@example.com>;tag=c1',
    't:sip:bob@example.com',
    'i:compact-1@192.0.2.4',
    'CSeq:7 MESSAGE',
    'c:text/plain',
    'k:path',
    'Max-Forwards:10',
  ], 'hello'),
  // Folded header values (§7.3.1), tabs and LWS around colons.
  folded: wire([
    'OPTIONS sip:gw.example.net SIP/2.0',
    'Via: SIP/2.0/UDP 192.0.2.5:5060;\r\n branch=z9hG4bKfold;\r\n\trport',
    'From: "Folded\r\n Name" <sip:f@example.com>\r\n ;tag=f1',
    'To  :\t<sip:gw.example.net>',
    'Call-ID: folded@192.0.2.5',
    'CSeq: 11\r\n OPTIONS',
    'Subject: a long\r\n\t subject',
    'Max-Forwards: 70',
    'Accept: application/sdp,\r\n application/pkcs7-mime',
    'Content-Length: 0',
  ]),
  // IPv6 everywhere: Via sent-by, URIs, SDP.
  ipv6: wire([
    'INVITE sip:bob@[2001:db8::10]:5070;transport=udp SIP/2.0',
    'Via: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKv6;received=[2001:db8::9];rport',
    'Max-Forwards: 70',
    'From: <sip:alice@[2001:db8::9]>;tag=v6',
    'To: <sip:bob@[2001:db8::10]:5070>',
    'Call-ID: ipv6-call@[2001:db8::9]',
    'CSeq: 1 INVITE',
    'Contact: <sip:alice@[2001:db8::9]:5060;transport=udp>',
    'Content-Type: application/sdp',
    `Content-Length: ${Buffer.byteLength(SDP.replace(/IP4 192\.0\.2\.10/g, 'IP6 2001:db8::9'))}`,
  ], SDP.replace(/IP4 192\.0\.2\.10/g, 'IP6 2001:db8::9')),
  // A provisional response with no reason phrase and a 100rel RSeq.
  ringing: wire([
    'SIP/2.0 183',
    'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKring;received=192.0.2.1;rport=5060',
    'From: <sip:gw@192.0.2.1>;tag=1',
    'To: <sip:bob@example.com>;tag=2',
    'Call-ID: ring@192.0.2.1',
    'CSeq: 1 INVITE',
    'Require: 100rel',
    'RSeq: 989',
    'Content-Length: 0',
  ]),
};

const FIXTURES = path.join(__dirname, 'fixtures', 'rfc4475');
/** The RFC 4475 messages, as bytes (some hold NUL, BEL, DEL and non-UTF-8 octets). */
const TORTURE: Array<[string, Buffer]> = readdirSync(FIXTURES).filter((f) => f.endsWith('.sip')).sort()
  .map((f) => [f.replace(/\.sip$/, ''), readFileSync(path.join(FIXTURES, f))]);

const ALL_BASES: Array<[string, Buffer]> = [
  ...Object.entries(BASES).map(([k, v]) => [k, Buffer.from(v, 'utf8')] as [string, Buffer]),
  ...TORTURE,
];

const INTERESTING = [0x00, 0x09, 0x0a, 0x0d, 0x20, 0x22, 0x2c, 0x2f, 0x3a, 0x3b, 0x3c, 0x3e, 0x3f, 0x40, 0x5b, 0x5c, 0x5d, 0x25, 0x7f, 0x80, 0xc0, 0xc3, 0xe2, 0xff];
/** Byte sequences that are not UTF-8: a lone continuation, an overlong NUL, a cut 3-byte char, a surrogate, 0xFF. */
const BAD_UTF8 = [[0x80], [0xc0, 0x80], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xff, 0xfe], [0xf4, 0x90, 0x80, 0x80]].map((b) => Buffer.from(b));

/** The header-block lines of a message (the start line first), and its body. */
function splitMessage(b: Buffer): { lines: Buffer[]; body: Buffer } {
  const end = b.indexOf('\r\n\r\n');
  const head = end < 0 ? b : b.subarray(0, end);
  const lines: Buffer[] = [];
  let at = 0;
  for (let i = head.indexOf('\r\n'); i >= 0; i = head.indexOf('\r\n', at)) { lines.push(head.subarray(at, i)); at = i + 2; }
  lines.push(head.subarray(at));
  return { lines, body: end < 0 ? Buffer.alloc(0) : b.subarray(end + 4) };
}
const joinMessage = (lines: Buffer[], body: Buffer) => Buffer.concat([Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\r\n')])), Buffer.from('\r\n'), body]);

/** Replace the value of the first header named (long or compact) `names`, or add the header. */
function rewriteHeader(b: Buffer, names: RegExp, value: string, fallbackName: string): Buffer {
  const { lines, body } = splitMessage(b);
  const i = lines.findIndex((l, n) => n > 0 && names.test(l.toString('latin1')));
  const line = Buffer.from(`${i > 0 ? lines[i].toString('latin1').split(':')[0] : fallbackName}: ${value}`, 'latin1');
  if (i > 0) lines[i] = line; else lines.splice(1, 0, line);
  return joinMessage(lines, body);
}

const HUGE_LENGTHS = ['99999999999999999999', '4294967296', '65536', '-1', '-0', '1e3', '0x10', '', ' ', '5 5', '+5', '0000000000000000000000', '１２'];
const BAD_CSEQ = ['-1 INVITE', '4294967296 INVITE', '99999999999999999999999 INVITE', 'x INVITE', '1', '1 ', '', '1.5 INVITE', '1 INVITE extra', '0x1 INVITE', '-0 BYE', '1\tINVITE', ' 1  INVITE'];

/** One bad message made from `base`. */
function mutate(r: ReturnType<typeof prng>, base: Buffer): Buffer {
  const { lines, body } = splitMessage(base);
  switch (r.int(16)) {
    case 0: { // flip bits
      const b = Buffer.from(base);
      for (let k = 1 + r.int(6); k > 0; k--) b[r.int(b.length)] ^= 1 << r.int(8);
      return b;
    }
    case 1: { // interesting bytes
      const b = Buffer.from(base);
      for (let k = 1 + r.int(4); k > 0; k--) b[r.int(b.length)] = r.pick(INTERESTING);
      return b;
    }
    case 2: return Buffer.from(base.subarray(0, r.int(base.length))); // cut short
    case 3: { // duplicate a header line (single-valued ones must then be refused)
      if (lines.length < 2) return base;
      const i = 1 + r.int(lines.length - 1);
      lines.splice(1 + r.int(lines.length - 1), 0, lines[i]);
      return joinMessage(lines, body);
    }
    case 4: { // remove header lines
      for (let k = 1 + r.int(2); k > 0 && lines.length > 1; k--) lines.splice(1 + r.int(lines.length - 1), 1);
      return joinMessage(lines, body);
    }
    case 5: return rewriteHeader(base, /^(content-length|l)[ \t]*:/i, r.pick(HUGE_LENGTHS), 'Content-Length');
    case 6: return rewriteHeader(base, /^cseq[ \t]*:/i, r.pick(BAD_CSEQ), 'CSeq');
    case 7: { // no end of headers: the blank line goes (or becomes a bare CR, LF, or LWS)
      const end = base.indexOf('\r\n\r\n');
      if (end < 0) return Buffer.concat([base, Buffer.from('\r\n')]);
      return Buffer.concat([base.subarray(0, end), Buffer.from(r.pick(['\r\n', '\r\n \r\n', '\r\r', '\n\r\n'])), base.subarray(end + 4)]);
    }
    case 8: { // NUL bytes
      const b = Buffer.from(base);
      for (let k = 1 + r.int(3); k > 0; k--) b[r.int(b.length)] = 0;
      return b;
    }
    case 9: { // a very long line: around the line limit, in a header value, a header name, or the start line
      const n = PARSE_LIMITS.maxLineLength - 64 + r.int(128);
      const fill = r.pick(['a', ' ', ';', ',', '"', '\\', '<', 'é', ':', '%']).repeat(n);
      const at = lines.length > 1 ? 1 + r.int(lines.length - 1) : 0;
      const kind = r.int(3);
      if (kind === 0 && at > 0) lines[at] = Buffer.concat([lines[at], Buffer.from(fill)]);
      else if (kind === 1) lines.splice(at || 1, 0, Buffer.from(`X-${fill}: v`));
      else lines[0] = Buffer.concat([lines[0], Buffer.from(fill)]);
      return joinMessage(lines, body);
    }
    case 10: { // invalid UTF-8 inserted somewhere
      const at = r.int(base.length + 1);
      return Buffer.concat([base.subarray(0, at), r.pick(BAD_UTF8), base.subarray(at)]);
    }
    case 11: { // line ends changed: bare LF, bare CR, CRLF + SP (a fold where none was)
      const b = base.toString('latin1');
      const variant = r.int(3);
      if (variant === 0) return Buffer.from(b.replace(/\r\n/g, '\n'), 'latin1');
      if (variant === 1) return Buffer.from(b.replace(/\r\n/g, '\r'), 'latin1');
      let n = r.int(lines.length);
      return Buffer.from(b.replace(/\r\n/g, (m) => (n-- === 0 ? '\r\n ' : m)), 'latin1');
    }
    case 12: { // a header value swapped for one from another header (a Via as From, a URI as CSeq …)
      if (lines.length < 3) return base;
      const i = 1 + r.int(lines.length - 1);
      const j = 1 + r.int(lines.length - 1);
      const vi = lines[i].toString('latin1');
      const vj = lines[j].toString('latin1');
      lines[i] = Buffer.from(`${vi.split(':')[0]}:${vj.slice(vj.indexOf(':') + 1)}`, 'latin1');
      return joinMessage(lines, body);
    }
    case 13: { // two messages in one datagram, or one message and some noise
      return r.int(2) ? Buffer.concat([base, base]) : Buffer.concat([base, r.bytes(r.int(200))]);
    }
    case 14: { // many list values, many parameters, deep angle brackets
      const at = lines.length > 1 ? 1 + r.int(lines.length - 1) : 1;
      const unit = r.pick([', <sip:a@b>', ';p', ';p=1', ',', '<', '>', ' , ', '"', '\\"', ';lr=']);
      lines.splice(at, 0, Buffer.from(`${r.pick(['Via', 'Contact', 'Route', 'Record-Route', 'From', 'Supported', 'Require', 'X-Y'])}: ${r.pick(['SIP/2.0/UDP h', '<sip:x@y>', 'sip:x@y', '"d" <sip:x@y>', ''])}${unit.repeat(1 + r.int(Math.floor(4000 / unit.length)))}`));
      return joinMessage(lines, body);
    }
    default: return r.bytes(r.int(600)); // noise
  }
}

/** Parses `data`, failing on a throw or an answer that is neither a message nor a parse error. */
function parseChecked(data: Buffer | string, what: () => string): Parsed {
  const p = explain(() => `${what()}: the parser`, () => parseSipMessage(data));
  explain(what, () => {
    if (isError(p)) {
      assert.equal(typeof p.error, 'string');
      assert.ok(p.error.length > 0, 'an empty error');
      assert.ok(p.partial === undefined || p.partial instanceof SipRequest, 'partial must be a request');
      assert.ok(p.status === undefined || p.status === 505 || p.status === 513, `status ${p.status}`);
    } else {
      assert.ok(p instanceof SipRequest || p instanceof SipResponse, Object.prototype.toString.call(p));
      for (const [k, v] of p.headerList) assert.ok(typeof k === 'string' && typeof v === 'string');
    }
  });
  return p;
}

/** What the user agent does with a peer's headers: none of it may throw. */
function useLikeTheUa(m: SipRequest | SipResponse): void {
  void m.cseq;
  void m.callId;
  for (const v of m.headers('via')) parseVia(v);
  for (const h of ['from', 'to', 'contact', 'record-route', 'route', 'refer-to']) for (const v of m.headers(h)) { const na = parseNameAddr(v); if (na) parseUri(na.uri); }
  if (m instanceof SipRequest) parseUri(m.uri);
}

/**
 * The canonical text of `m` parses back to the same message, and is a fixed point — unless it
 * grew past a limit (a compact name written out long, ": " after every name, a Content-Length
 * added): then it is refused for exactly that limit. Returns whether it round-tripped.
 */
function roundTrip(m: SipRequest | SipResponse, what: () => string): boolean {
  const text = m.toString();
  return explain(() => `${what()}\n  canonical text: ${JSON.stringify(text.slice(0, 2000))}`, () => {
    const lines = text.slice(0, text.indexOf('\r\n\r\n')).split('\r\n');
    const again = parseSipMessage(text);
    const overLimit = Buffer.byteLength(text) > PARSE_LIMITS.maxMessageBytes ? 'Message Too Large'
      : lines[0].length > PARSE_LIMITS.maxLineLength ? 'start line too long'
        : lines.length - 1 > PARSE_LIMITS.maxHeaders ? 'too many headers'
          : lines.some((l) => l.length > PARSE_LIMITS.maxLineLength) ? 'header line too long' : null;
    if (overLimit) {
      assert.ok(isError(again), `canonical text over a limit (${overLimit}) was accepted`);
      assert.equal(again.error, overLimit);
      return false;
    }
    assert.ok(!isError(again), `the canonical text does not parse (${isError(again) ? again.error : ''})`);
    assert.equal(again.constructor, m.constructor);
    if (m instanceof SipRequest && again instanceof SipRequest) {
      assert.equal(again.method, m.method);
      assert.equal(again.uri, m.uri);
    } else if (m instanceof SipResponse && again instanceof SipResponse) {
      assert.equal(again.status, m.status);
      assert.equal(again.reason, m.reason);
    }
    const withoutLength = (x: SipRequest | SipResponse) => x.headerList.filter(([k]) => k !== 'Content-Length');
    assert.deepEqual(withoutLength(again), withoutLength(m));
    assert.equal(again.body, m.body);
    assert.equal(again.toString(), text, 'canonical text is not a fixed point');
    return true;
  });
}

/** A parse that took longer than this is timed again (a GC pause is not the parser's). */
const SLOW_MS = 5;
/** Slower than this even at its best is a failure. */
const TOO_SLOW_MS = 20;

function checkOne(data: Buffer, what: () => string, stats: { inputs: number; messages: number; roundTrips: number; slowest: number; slowestWhat: string }): void {
  const t0 = process.hrtime.bigint();
  const p = parseChecked(data, what);
  let ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (ms > SLOW_MS) {
    ms = timeOf(() => parseSipMessage(data));
    if (ms >= TOO_SLOW_MS) assert.fail(`${what()}: ${ms.toFixed(2)} ms to parse ${data.length} bytes`);
  }
  if (ms > stats.slowest) { stats.slowest = ms; stats.slowestWhat = what().slice(0, 60); }
  stats.inputs++;
  if (isError(p)) {
    if (p.partial) explain(what, () => useLikeTheUa(p.partial!));
    return;
  }
  stats.messages++;
  explain(what, () => useLikeTheUa(p));
  if (roundTrip(p, what)) stats.roundTrips++;
}

const newStats = () => ({ inputs: 0, messages: 0, roundTrips: 0, slowest: 0, slowestWhat: '' });
const report = (name: string, s: ReturnType<typeof newStats>, t0: number) =>
  console.log(`${name}: ${s.inputs} inputs, ${s.messages} parsed (${s.roundTrips} round-tripped), the rest refused; slowest ${s.slowest.toFixed(2)} ms (${s.slowestWhat}); ${Date.now() - t0} ms in all`);

test('every base message parses and round-trips (the fuzz starts from valid input)', () => {
  for (const [name, raw] of Object.entries(BASES)) {
    const p = parseSipMessage(raw);
    assert.ok(!isError(p), `${name}: ${isError(p) ? p.error : ''}`);
    assert.ok(roundTrip(p, () => name), name);
  }
  const ipv6 = parseSipMessage(BASES.ipv6);
  assert.ok(ipv6 instanceof SipRequest);
  assert.deepEqual([ipv6.topVia?.host, ipv6.topVia?.port], ['[2001:db8::9]', 5060]);
  assert.equal(parseUri(ipv6.uri)?.host, '[2001:db8::10]');
  const folded = parseSipMessage(BASES.folded);
  assert.ok(folded instanceof SipRequest);
  assert.deepEqual(folded.cseq, { seq: 11, method: 'OPTIONS' });
  assert.equal(parseNameAddr(folded.header('from')!)?.displayName, 'Folded Name');
  const compact = parseSipMessage(BASES.compact);
  assert.ok(compact instanceof SipRequest);
  assert.equal(compact.body, 'hello');
  assert.equal(compact.header('Supported'), 'path');
});

test('the parser takes every prefix of every message: a message or a parse error, never a throw', () => {
  const t0 = Date.now();
  const stats = newStats();
  for (const [name, raw] of ALL_BASES) {
    for (let n = 0; n <= raw.length; n++) checkOne(raw.subarray(0, n), () => `${name}[0..${n}]: ${raw.subarray(0, n).toString('hex')}`, stats);
  }
  report('prefixes', stats, t0);
  // A prefix that ends inside the body is refused (Content-Length larger than the body): a
  // few prefixes must have parsed (those ending past the last byte of a body-less message's
  // header block), and most must not.
  assert.ok(stats.messages > 0 && stats.messages < stats.inputs / 4, JSON.stringify(stats));
});

test('the parser takes 20000 seeded mutations of realistic messages: never throws, stays fast, round-trips what it accepts', () => {
  const t0 = Date.now();
  const stats = newStats();
  const refusals = new Map<string, number>();
  for (const seed of [0x51f0001, 0x51f0002, 0x51f0003, 0x51f0004]) {
    const r = prng(seed);
    for (let i = 0; i < 5000; i++) {
      const [name, base] = ALL_BASES[i % ALL_BASES.length];
      // Mutations pile up now and then: a message already broken, broken again.
      let data = mutate(r, base);
      for (let k = r.int(4) === 0 ? 1 + r.int(3) : 0; k > 0; k--) data = mutate(r, data);
      const what = () => `seed ${seed.toString(16)} round ${i} (${name}): ${data.toString('hex')}`;
      checkOne(data, what, stats);
      const p = parseSipMessage(data);
      if (isError(p)) { const kind = p.error.replace(/ "[^]*$|: [^]*$| \d[^]*$/, ''); refusals.set(kind, (refusals.get(kind) ?? 0) + 1); }
    }
  }
  report('mutations', stats, t0);
  console.log(`  refusals: ${[...refusals].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ')}`);
  // The mutations reach both outcomes and many distinct refusals (a fuzz that only ever made
  // noise, or only valid messages, would test nothing).
  assert.ok(stats.messages > 2000 && stats.messages < stats.inputs - 5000, JSON.stringify(stats));
  assert.ok(stats.roundTrips > 1500, JSON.stringify(stats));
  assert.ok(refusals.size >= 25, `only ${refusals.size} kinds of refusal: ${[...refusals.keys()].join('; ')}`);
});

test('targeted bad fields: huge or negative Content-Length, bad CSeq, duplicated single headers, no blank line', () => {
  const base = Buffer.from(BASES.invite);
  const verdict = (b: Buffer) => { const p = parseChecked(b, () => b.toString('latin1')); return isError(p) ? p.error : 'ok'; };
  for (const v of HUGE_LENGTHS) {
    const got = verdict(rewriteHeader(base, /^content-length:/i, v, 'Content-Length'));
    assert.ok(got === 'invalid Content-Length' || got === 'Content-Length larger than the body', `Content-Length "${v}": ${got}`);
  }
  for (const v of BAD_CSEQ) {
    const got = verdict(rewriteHeader(base, /^cseq:/i, v, 'CSeq'));
    // "1\tINVITE" and " 1  INVITE" are LWS (§7.3.1, §25.1): those are fine.
    if (v === '1\tINVITE' || v === ' 1  INVITE') assert.equal(got, 'ok', v);
    else assert.ok(/^(malformed CSeq|CSeq number too large|missing CSeq header)$/.test(got), `CSeq "${v}": ${got}`);
  }
  for (const h of ['From', 'To', 'Call-ID', 'CSeq', 'Max-Forwards', 'Content-Length']) {
    const { lines, body } = splitMessage(base);
    const i = lines.findIndex((l) => l.toString().startsWith(`${h}:`));
    lines.splice(i, 0, lines[i]);
    assert.equal(verdict(joinMessage(lines, body)), `more than one ${h} header`);
  }
  for (const h of ['Via', 'From', 'To', 'Call-ID', 'CSeq']) {
    const { lines, body } = splitMessage(base);
    const i = lines.findIndex((l) => l.toString().startsWith(`${h}:`));
    lines.splice(i, 1);
    const p = parseChecked(joinMessage(lines, body), () => h);
    assert.ok(isError(p));
    assert.equal(p.error, `missing ${h} header`);
    assert.ok(p.partial, `missing ${h}: the request is kept, to answer 400 where its Via allows`);
  }
  assert.deepEqual(parseSipMessage(BASES.invite.replace('\r\n\r\n', '\r\n')), { error: 'no end of headers' });
  const nul = verdict(Buffer.from(BASES.invite.replace('Call-ID: ', 'Call-ID: \0')));
  assert.equal(nul, 'ok', 'a NUL inside a header value is an octet of the value (RFC 4475 escnull-like)');
  const nulName = verdict(Buffer.from(BASES.invite.replace('Call-ID: ', 'Call\0ID: ')));
  assert.equal(nulName, 'invalid header name "Call\0ID"');
});

test('a reason phrase is any UTF-8 but CR and LF (RFC 3261 §25.1): U+2028 and U+2029 in it are not line ends', () => {
  for (const reason of ['Ringing \u2028 now', 'Ringing\u2029', '\u00a0\u0085\ufeff', 'Se\u00f1al']) {
    const p = parseSipMessage(BASES.ringing.replace('SIP/2.0 183', `SIP/2.0 183 ${reason}`));
    assert.ok(p instanceof SipResponse, `${JSON.stringify(reason)}: ${isError(p) ? p.error : ''}`);
    assert.equal(p.reason, reason);
    assert.ok(roundTrip(p, () => reason));
  }
  // A lone CR is no part of a start line (it would be a line end to many peers).
  assert.deepEqual(parseSipMessage(BASES.ringing.replace('SIP/2.0 183', 'SIP/2.0 183 Ses\rsion')), { error: 'malformed status line' });
});

/**
 * Adversarial shapes of size `n` (roughly bytes): the ones a regex with nested or adjacent
 * quantifiers chokes on, spread over one line (up to the line limit) or over the message.
 */
const GROWTH: Array<[string, (n: number) => string]> = [
  ['Via of spaces', (n) => BASES.bye.replace(/^Via: .*$/m, `Via: SIP/2.0/UDP h${' '.repeat(n)}x`)],
  ['Via "SIP / 2.0 /" spaced out', (n) => BASES.bye.replace(/^Via: .*$/m, `Via: SIP${' / 2.0'.repeat(n / 6)} /UDP h`)],
  ['Via host of colons', (n) => BASES.bye.replace(/^Via: .*$/m, `Via: SIP/2.0/UDP h${' :'.repeat(n / 2)}`)],
  ['From display name of words', (n) => BASES.bye.replace(/^From: .*$/m, `From: ${'a '.repeat(n / 2)}"<sip:a@b>`)],
  ['From escaped quotes', (n) => BASES.bye.replace(/^From: .*$/m, `From: "${'\\"'.repeat(n / 2)}`)],
  ['To params without values', (n) => BASES.bye.replace(/^To: .*$/m, `To: <sip:a@b>${' ;x'.repeat(n / 3)}=`)],
  ['Contact of commas', (n) => BASES.invite.replace(/^Contact: .*$/m, `Contact: ${'<sip:a@b>,'.repeat(n / 10)}<`)],
  ['Contact of semicolons', (n) => BASES.invite.replace(/^Contact: .*$/m, `Contact: <sip:a@b>${';'.repeat(n)}`)],
  ['Request-Line of " SIP/1"', (n) => BASES.bye.replace(/^.*/, `BYE sip:a@b${' SIP/1'.repeat(n / 6)}.x`)],
  ['Request-URI of @ and :', (n) => BASES.bye.replace(/^.*/, `BYE sip:${'a:@'.repeat(n / 3)}b SIP/2.0`)],
  ['CSeq of digits', (n) => BASES.bye.replace(/^CSeq: .*$/m, `CSeq: ${'1'.repeat(n)} BYE`)],
  ['Status line reason', (n) => BASES.ok200.replace(/^.*/, `SIP/2.0 200 ${'O'.repeat(n)}`)],
];
/** Shapes of a whole message: what the line and header limits do not bound. */
const WHOLE: Array<[string, (n: number) => Buffer]> = [
  ['leading CRLFs', (n) => Buffer.from('\r\n'.repeat(n / 2) + BASES.bye)],
  ['no blank line, LF after LF', (n) => Buffer.from(`BYE sip:a@b SIP/2.0${'\r\nX: \n'.repeat(n / 7)}`)],
  ['a big body without Content-Length', (n) => Buffer.from(BASES.bye.replace('Content-Length: 0\r\n', '') + 'b'.repeat(n))],
  ['many short headers', (n) => Buffer.from(BASES.bye.replace('Max-Forwards: 70', `Max-Forwards: 70${'\r\nX: 1'.repeat(n / 6)}`))],
  ['many folds', (n) => Buffer.from(BASES.bye.replace('Max-Forwards: 70', `Max-Forwards: 70${'\r\n 0'.repeat(n / 4)}`))],
  // (Without CR and LF: a blank line found early would end the scan early, whatever the size.)
  ['noise', (n) => Buffer.from(prng(7).bytes(n).map((b) => (b === 0x0a || b === 0x0d ? 0x20 : b)))],
  ['NULs', (n) => Buffer.alloc(n)],
  ['invalid UTF-8 in a header block', (n) => Buffer.concat([Buffer.from('BYE sip:a@b SIP/2.0\r\nX: '), Buffer.alloc(n, 0xff), Buffer.from('\r\n\r\n')])],
];

test('no super-linear blow-up: a 10x larger adversarial input takes well under 50x the time', () => {
  const rows: string[] = [];
  const check = (name: string, small: Buffer | string, large: Buffer | string) => {
    // Warm both up first: the first calls of a shape compile regexes and code paths.
    for (let i = 0; i < 3; i++) { parseSipMessage(small); parseSipMessage(large); }
    const a = timeOf(() => parseSipMessage(small));
    const b = timeOf(() => parseSipMessage(large));
    // Below 10 µs a call is mostly fixed cost and timer noise: the ratio is taken against at least that.
    const ratio = b / Math.max(a, 0.01);
    rows.push(`${name.padEnd(36)} ${Buffer.byteLength(small).toString().padStart(6)} B ${(a * 1000).toFixed(1).padStart(8)} µs  ${Buffer.byteLength(large).toString().padStart(6)} B ${(b * 1000).toFixed(1).padStart(8)} µs  ${ratio.toFixed(1)}x`);
    assert.ok(ratio < 50, `${name}: ${ratio.toFixed(1)}x the time for 10x the input (${a.toFixed(3)} ms → ${b.toFixed(3)} ms)`);
    assert.ok(b < TOO_SLOW_MS, `${name}: ${b.toFixed(2)} ms for ${Buffer.byteLength(large)} bytes`);
  };
  // One line, up to the line limit (past it the line is refused unread).
  const lineMax = PARSE_LIMITS.maxLineLength - 200;
  for (const [name, make] of GROWTH) check(name, make(lineMax / 10), make(lineMax));
  // A whole message of 10 KB and of 100 KB (past the 64 KB limit: refused, but only after the
  // parser looked for the blank line) and of 6.4 KB against 64 KB (inside it: read in full).
  for (const [name, make] of WHOLE) {
    check(`${name} (10K/100K)`, make(10_000), make(100_000));
    check(`${name} (6K/64K)`, make(6_400), make(64_000));
  }
  console.log(rows.join('\n'));
});

// ---------------------------------------------------------------- the live user agent

const UA_PORT = 27950;
const PEER_PORT = 27951;
const OPTIONS_ALIVE = (n: number) => [
  'OPTIONS sip:gw@127.0.0.1:27950 SIP/2.0',
  `Via: SIP/2.0/UDP 127.0.0.1:${PEER_PORT};branch=z9hG4bKalive${n};rport`,
  'Max-Forwards: 70',
  'From: <sip:fuzz@127.0.0.1>;tag=alive',
  'To: <sip:gw@127.0.0.1>',
  `Call-ID: alive-${n}@127.0.0.1`,
  'CSeq: 1 OPTIONS',
  'Content-Length: 0',
  '', '',
].join('\r\n');

/** The live bases: requests whose Via names the peer socket (with rport), one branch each. */
function liveBases(i: number): Array<[string, Buffer]> {
  const via = `Via: SIP/2.0/UDP 127.0.0.1:${PEER_PORT};branch=z9hG4bKfz${i};rport`;
  const fix = (s: string) => s
    .replace(/^(Via|v)[ \t]*:.*(\r\n[ \t].*)*$/m, via)
    .replace(/^(Call-ID|i)[ \t]*:.*$/m, `Call-ID: fz${i}@127.0.0.1`);
  return ['invite', 'register', 'bye', 'compact', 'folded', 'ipv6'].map((k) => [k, Buffer.from(fix(BASES[k]))] as [string, Buffer])
    .concat([['options', Buffer.from(fix(OPTIONS_ALIVE(i)))], ['ack', Buffer.from(fix(BASES.bye).replace(/^BYE (\S+)/, 'ACK $1').replace('CSeq: 2 BYE', 'CSeq: 2 ACK'))], ['response', Buffer.from(fix(BASES.ringing))]]);
}

/** Reason-Phrase (RFC 3261 §25.1): no CR, LF or other control characters. */
const STATUS_LINE = /^SIP\/2\.0 (\d{3}) ([^\x00-\x08\x0a-\x1f\x7f]*)$/;

test('a live user agent takes a few hundred mutated requests over UDP: no throw, 400s where the Via allows, silence where not, still answering after', async () => {
  const t0 = Date.now();
  const problems: string[] = [];
  const onUncaught = (err: unknown) => problems.push(`uncaughtException: ${(err as Error)?.stack ?? String(err)}`);
  const onRejection = (err: unknown) => problems.push(`unhandledRejection: ${(err as Error)?.stack ?? String(err)}`);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onRejection);
  // The UA logs what it caught at error level ("error handling SIP message"): a throw it survived is still a throw.
  const errorLog: string[] = [];
  const logger = pino({ level: 'error' }, new Writable({ write(chunk, _enc, cb) { errorLog.push(String(chunk)); cb(); } }));
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: UA_PORT }], logger, timers: { T1: 20, T2: 80, T4: 100 } });
  await ua.start();
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(PEER_PORT, '127.0.0.1', () => r()));
  /** Every reply, by the branch of its top Via. */
  const replies = new Map<string, string[]>();
  const unattributed: string[] = [];
  let waiting: { branch: string; done: () => void } | null = null;
  sock.on('message', (m) => {
    const text = m.toString('utf8');
    const via = /^(?:Via|v)[ \t]*:[ \t]*(.*)$/im.exec(text)?.[1];
    const branch = via ? parseVia(via)?.params.branch : undefined;
    if (branch === undefined || branch === null) { unattributed.push(text); return; }
    const list = replies.get(branch) ?? [];
    list.push(text);
    replies.set(branch, list);
    if (waiting?.branch === branch && Number(text.slice(8, 11)) >= 200) waiting.done();
  });
  /** Until `branch` has a final response, or 2 s. */
  const finalFor = (branch: string) => new Promise<void>((done) => {
    if ((replies.get(branch) ?? []).some((t) => Number(t.slice(8, 11)) >= 200)) { done(); return; }
    const timer = setTimeout(done, 2000);
    waiting = { branch, done: () => { clearTimeout(timer); waiting = null; done(); } };
  });
  const send = (b: Buffer) => new Promise<void>((r) => sock.send(b, UA_PORT, '127.0.0.1', () => r()));

  interface Expectation { what: string; branch: string; expect: { status: number; reason: string; callId: string; cseq?: string } | 'final' | 'nothing' }
  const expectations: Expectation[] = [];
  const branches = new Set<string>();
  const r = prng(0x11fe5ee);
  let skipped = 0;
  try {
    for (let i = 0; expectations.length < 400; i++) {
      const bases = liveBases(i);
      const [name, base] = bases[i % bases.length];
      let data = mutate(r, base);
      if (r.int(3) === 0) data = mutate(r, data);
      if (data.length < 8) continue; // the transport ignores these (keepalives), as it should
      // What the UA will make of it: our parser is the oracle (its own verdicts are checked
      // above). Only what is answerable at this socket, or not at all, is sent: a mutated Via
      // port must not make the UA send to a port outside this test's range.
      const p = parseSipMessage(data);
      const req = isError(p) ? p.partial : p instanceof SipRequest ? p : undefined;
      const via = req ? parseVia(req.header('via') ?? '') : null;
      const what = `round ${i} (${name}): ${data.toString('hex')}`;
      let expect: Expectation['expect'];
      if (!req || req.method === 'ACK' || !via) expect = 'nothing';
      else if (isError(p)) expect = { status: p.status ?? (p.error === 'Message Too Large' ? 513 : 400), reason: p.error.slice(0, 120), callId: req.callId, cseq: req.header('cseq') };
      else expect = 'final';
      if (expect !== 'nothing') {
        const port = via!.params.rport !== undefined || (via!.port !== undefined && (via!.port < 1 || via!.port > 65535)) ? PEER_PORT : via!.port ?? 5060;
        const branch = via!.params.branch;
        if (port !== PEER_PORT || !branch || branches.has(branch)) { skipped++; continue; }
        branches.add(branch);
        expectations.push({ what, branch, expect });
      } else {
        expectations.push({ what, branch: '', expect });
      }
      await send(data);
      // One at a time (a burst of 8 KB datagrams could overrun the socket buffer, and a lost
      // one would look like a request left unanswered): an answerable request's final response
      // is waited for; the checks below name what is missing.
      const branch = expectations[expectations.length - 1].branch;
      if (branch) await finalFor(branch);
      else if (i % 10 === 9) await new Promise((res) => setTimeout(res, 2));
    }
    await new Promise((res) => setTimeout(res, 300)); // stray replies to what should get none
    const counts = { refusedWith400Class: 0, answered: 0, silent: 0 };
    for (const e of expectations) {
      const got = e.branch ? replies.get(e.branch) ?? [] : [];
      const statusLines = got.map((t) => t.slice(0, t.indexOf('\r\n')));
      for (const s of statusLines) assert.match(s, STATUS_LINE, `${e.what}: a status line peers can parse`);
      const finals = statusLines.map((s) => Number(s.slice(8, 11))).filter((s) => s >= 200);
      if (e.expect === 'nothing') { counts.silent++; continue; }
      assert.ok(finals.length > 0, `${e.what}: no final response (got ${JSON.stringify(statusLines)})`);
      if (e.expect === 'final') {
        counts.answered++;
        // No 500: a request that parsed is answered for what it asks (480, 481, 501 …), not by an internal error.
        assert.ok(finals.every((s) => s < 500 || s === 501 || s === 503), `${e.what}: ${statusLines.join(' | ')}`);
      } else {
        counts.refusedWith400Class++;
        // One stateless answer (no retransmissions), with the parser's status and its words:
        // control characters of the peer's bytes quoted in them made printable (§25.1).
        assert.equal(statusLines.length, 1, `${e.what}: ${JSON.stringify(statusLines)}`);
        const reason = Buffer.from(e.expect.reason.replace(/[\x00-\x08\x0a-\x1f\x7f]/g, '?')).toString('utf8'); // a cut surrogate pair goes out as U+FFFD
        assert.equal(statusLines[0], `SIP/2.0 ${e.expect.status} ${reason}`, e.what);
        // It copies what the request had of Call-ID and CSeq (§8.2.6.2): the sender matches it by them (§17.1.3).
        // (Lines end at CRLF only: a lone CR the peer put in a value is copied back as it came.)
        const header = (name: string) => got[0].slice(0, got[0].indexOf('\r\n\r\n')).split('\r\n').find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2);
        assert.equal(header('Call-ID'), e.expect.callId || undefined, `${e.what}: Call-ID`);
        assert.equal(header('CSeq'), e.expect.cseq || undefined, `${e.what}: CSeq`);
      }
    }
    assert.deepEqual(unattributed, [], 'replies to requests that had no usable Via (or no branch)');
    // A reply to a datagram that should have had none names a branch no expectation has.
    assert.deepEqual([...replies.keys()].filter((b) => !branches.has(b)), [], 'replies to requests that should have had none');
    console.log(`live: ${expectations.length} datagrams sent (${skipped} mutants skipped: their Via named another port or a branch already used): ${counts.refusedWith400Class} refused by the parser and answered with its status, ${counts.answered} parsed and answered, ${counts.silent} expected silent; ${Date.now() - t0} ms`);
    assert.ok(counts.refusedWith400Class > 50 && counts.answered > 50 && counts.silent > 20, JSON.stringify(counts));

    // Still answering, and nothing left running once the transactions' timers (64·T1 = 1.28 s) ran out.
    const before = replies.get('z9hG4bKalive-final')?.length ?? 0;
    await send(Buffer.from(OPTIONS_ALIVE(-1).replace('z9hG4bKalive-1', 'z9hG4bKalive-final')));
    await until(() => (replies.get('z9hG4bKalive-final')?.length ?? 0) > before, 'the 200 to OPTIONS after the fuzz', 2000);
    assert.match(replies.get('z9hG4bKalive-final')![0], /^SIP\/2\.0 200 OK\r\n/);
    await until(() => { const c = ua.counts; return c.serverTx + c.clientTx + c.dialogs + c.serverInvites === 0; }, `every transaction ended (${JSON.stringify(ua.counts)})`, 5000);
  } finally {
    sock.close();
    await ua.stop();
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onRejection);
  }
  assert.deepEqual(problems, [], 'nothing escaped');
  assert.deepEqual(errorLog, [], 'the UA caught no exception of its own');
});

test('the 400 for a request whose broken header line holds control characters has a status line peers can parse (§25.1)', async () => {
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: UA_PORT + 2 }], logger: pino({ level: 'silent' }) });
  await ua.start();
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(PEER_PORT + 2, '127.0.0.1', () => r()));
  const got: string[] = [];
  sock.on('message', (m) => got.push(m.toString('utf8')));
  try {
    // The parser quotes the broken line in its error ("malformed header line \"…\""), and the
    // UA used that as the reason phrase: a BEL, an ESC, a lone CR went out in the status line.
    const bad = OPTIONS_ALIVE(0).replace('Max-Forwards: 70', 'Max-Forwards\x07\x1b[2J\r70').replace(`:${PEER_PORT};`, `:${PEER_PORT + 2};`);
    const p = parseSipMessage(bad);
    assert.ok(isError(p) && p.partial, 'refused, with the request kept');
    assert.equal(p.error, 'malformed header line "Max-Forwards\x07\x1b[2J\r70"');
    sock.send(bad, UA_PORT + 2, '127.0.0.1');
    await until(() => got.length > 0, 'the 400', 2000);
    const statusLine = got[0].slice(0, got[0].indexOf('\r\n'));
    assert.match(statusLine, STATUS_LINE);
    assert.equal(statusLine, 'SIP/2.0 400 malformed header line "Max-Forwards??[2J?70"');
    // The header fields after the broken line are read too: the 400 copies From, To, Call-ID
    // and CSeq (§8.2.6.2), without which the sender cannot match it to its transaction (§17.1.3).
    const reply = parseSipMessage(got[0]);
    assert.ok(reply instanceof SipResponse, `our own parser reads the 400: ${isError(reply) ? reply.error : ''}`);
    assert.deepEqual([reply.callId, reply.cseq, reply.topVia?.params.branch], ['alive-0@127.0.0.1', { seq: 1, method: 'OPTIONS' }, 'z9hG4bKalive0']);
    assert.equal(reply.header('from'), '<sip:fuzz@127.0.0.1>;tag=alive');
  } finally {
    sock.close();
    await ua.stop();
  }
});

test('RFC 3261 §8.2 / §18.2.2 over UDP: a request missing a mandatory header gets 400 naming it; without a usable Via, an ACK or a response, nothing', async () => {
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: UA_PORT + 4 }], logger: pino({ level: 'silent' }), timers: { T1: 20, T2: 80, T4: 100 } });
  await ua.start();
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(PEER_PORT + 4, '127.0.0.1', () => r()));
  const got: string[] = [];
  sock.on('message', (m) => got.push(m.toString('utf8')));
  const base = OPTIONS_ALIVE(7).replace(`:${PEER_PORT};`, `:${PEER_PORT + 4};`);
  const without = (h: string) => base.replace(new RegExp(`^${h}: .*\\r\\n`, 'm'), '');
  const swap = (h: string, v: string) => base.replace(new RegExp(`^${h}: .*$`, 'm'), `${h}: ${v}`);
  // [what, datagram, the status line expected (null: no answer at all)]
  const cases: Array<[string, string, string | null]> = [
    ['no Call-ID', without('Call-ID'), 'SIP/2.0 400 missing Call-ID header'],
    ['no CSeq', without('CSeq'), 'SIP/2.0 400 missing CSeq header'],
    ['no From', without('From'), 'SIP/2.0 400 missing From header'],
    ['no To', without('To'), 'SIP/2.0 400 missing To header'],
    ['two Call-IDs', base.replace('Call-ID:', 'Call-ID: other\r\nCall-ID:'), 'SIP/2.0 400 more than one Call-ID header'],
    ['negative CSeq', swap('CSeq', '-1 OPTIONS'), 'SIP/2.0 400 malformed CSeq'],
    ['CSeq of another method', swap('CSeq', '1 INVITE'), 'SIP/2.0 400 CSeq method does not match the request method'],
    ['CSeq method in another case (methods are case-sensitive)', swap('CSeq', '1 options'), 'SIP/2.0 400 CSeq method does not match the request method'],
    ['Content-Length past the body', swap('Content-Length', '99999999999'), 'SIP/2.0 400 Content-Length larger than the body'],
    ['negative Content-Length', swap('Content-Length', '-1'), 'SIP/2.0 400 invalid Content-Length'],
    ['SIP/3.0', base.replace(' SIP/2.0\r\n', ' SIP/3.0\r\n'), 'SIP/2.0 505 unsupported SIP version 3.0'],
    ['SIP/3.0 and a bare CR in a header: the version says more', base.replace(' SIP/2.0\r\n', ' SIP/3.0\r\n').replace('Max-Forwards: 70', 'Max-Forwards: 7\r0'), 'SIP/2.0 505 unsupported SIP version 3.0'],
    ['a broken header line before From', base.replace('Max-Forwards: 70', 'Max-Forwards 70'), 'SIP/2.0 400 malformed header line "Max-Forwards 70"'],
    // Nowhere to send a response (§18.2.2): dropped.
    ['no Via', without('Via'), null],
    ['a Via that is no Via', swap('Via', 'garbage'), null],
    // Never a response to an ACK (§17.1.1.3), nor to a response (§18.1.2).
    ['an ACK without Call-ID', without('Call-ID').replace(/OPTIONS/g, 'ACK'), null],
    ['a response without Call-ID', without('Call-ID').replace(/^OPTIONS \S+ SIP\/2\.0/, 'SIP/2.0 200 OK'), null],
    // Well formed: answered for what they ask.
    ['an unknown method', base.replace(/OPTIONS/g, 'FROB'), 'SIP/2.0 501 Not Implemented'],
    ['Max-Forwards 0 on a MESSAGE', base.replace(/OPTIONS/g, 'MESSAGE').replace('Max-Forwards: 70', 'Max-Forwards: 0'), 'SIP/2.0 483 Too Many Hops'],
    ['an extension we do not do', base.replace('Max-Forwards: 70', 'Max-Forwards: 70\r\nRequire: frobnication'), 'SIP/2.0 420 Bad Extension'],
    ['no Max-Forwards (a SHOULD, §8.1.1)', without('Max-Forwards'), 'SIP/2.0 200 OK'],
    ['a NUL in the Call-ID', swap('Call-ID', 'nul\0here'), 'SIP/2.0 200 OK'],
  ];
  try {
    for (const [i, [what, text, expected]] of cases.entries()) {
      // Each case its own branch: none of them is a retransmission of another.
      const datagram = text.replace('z9hG4bKalive7', `z9hG4bKrfc${i}`);
      const before = got.length;
      sock.send(datagram, UA_PORT + 4, '127.0.0.1');
      if (expected === null) await new Promise((r) => setTimeout(r, 200));
      else await until(() => got.length > before, `the answer to ${what}`, 2000);
      const statusLines = got.slice(before).map((t) => t.slice(0, t.indexOf('\r\n')));
      assert.deepEqual(statusLines, expected === null ? [] : [expected], what);
    }
  } finally {
    sock.close();
    await ua.stop();
  }
});

test('a bare CR inside a header value is refused (400 naming the header), not kept to be copied into our responses', () => {
  const req = ['INVITE sip:bob@example.com SIP/2.0', 'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-cr1', 'From: <sip:a@example.com>;tag=1',
    'To: <sip:bob@example.com>', 'Call-ID: cr-1', 'CSeq: 1826\rContact: <sip:evil@192.0.2.66> INVITE', 'Max-Forwards: 70', 'Content-Length: 0', '', ''].join('\r\n');
  const r = parseSipMessage(Buffer.from(req));
  assert.ok('error' in r, 'refused');
  assert.match((r as { error: string }).error, /bare CR in the value of CSeq/);
});
