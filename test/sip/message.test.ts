/**
 * SIP parser and serializer: the RFC 4475 torture messages (stored byte-exact under
 * fixtures/rfc4475), the parser's limits, robustness, and canonical serialization.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import dgram from 'node:dgram';
import pino from 'pino';
import {
  canonicalHeaderName, formatNameAddr, formatUri, formatVia, parseNameAddr, parseSipMessage, parseUri, parseVia,
  PARSE_LIMITS, SipRequest, SipResponse, splitList, type NameAddr, type SipParseError,
} from '../../src/sip/message';
import { SipUserAgent } from '../../src/sip';

const FIXTURES = path.join(__dirname, 'fixtures', 'rfc4475');
const fixture = (name: string): Buffer => readFileSync(path.join(FIXTURES, `${name}.sip`));

type Parsed = ReturnType<typeof parseSipMessage>;
const isError = (p: Parsed): p is SipParseError => 'error' in p;

function request(name: string): SipRequest {
  const p = parseSipMessage(fixture(name));
  assert.ok(!isError(p), `${name} must parse, got: ${isError(p) ? p.error : ''}`);
  assert.ok(p instanceof SipRequest, `${name} is a request`);
  return p;
}

function response(name: string): SipResponse {
  const p = parseSipMessage(fixture(name));
  assert.ok(!isError(p), `${name} must parse, got: ${isError(p) ? p.error : ''}`);
  assert.ok(p instanceof SipResponse, `${name} is a response`);
  return p;
}

/** The bytes after the blank line that ends the header block. */
function bodyBytes(raw: Buffer): Buffer {
  return raw.subarray(raw.indexOf('\r\n\r\n') + 4);
}

// RFC 4475 §3.1.1 (valid), §3.1.2 (invalid) and the §3.3 messages whose meaning the parser decides.
const VALID = ['wsinv', 'intmeth', 'esc01', 'escnull', 'esc02', 'lwsdisp', 'longreq', 'dblreq', 'semiuri', 'transports', 'mpart01', 'unreason', 'noreason'];
const VALID_33 = ['unkscm', 'novelsc', 'unksm2', 'zeromf', 'cparam01', 'cparam02', 'regescrt'];
const INVALID = ['badinv01', 'clerr', 'ncl', 'scalar02', 'scalarlg', 'quotbal', 'ltgtruri', 'lwsruri', 'lwsstart', 'trws', 'escruri', 'baddate', 'regbadct', 'badaspec', 'baddn', 'badvers', 'mismatch01', 'mismatch02', 'bigcode'];
const INVALID_33 = ['insuf', 'multi01', 'mcl01'];

test('RFC 4475 fixtures: all present, stored byte-exact with CRLF line ends', () => {
  const files = readdirSync(FIXTURES).filter((f) => f.endsWith('.sip')).map((f) => f.replace(/\.sip$/, '')).sort();
  assert.deepEqual(files, [...VALID, ...VALID_33, ...INVALID, ...INVALID_33].sort());
  for (const name of files) {
    const raw = fixture(name);
    const head = raw.subarray(0, raw.indexOf('\r\n\r\n'));
    assert.ok(head.length > 0, `${name} has an end of headers`);
    for (let i = 0; i < head.length; i++) if (head[i] === 0x0a) assert.equal(head[i - 1], 0x0d, `${name}: bare LF at ${i}`);
  }
  // The non-printables RFC 4475 §2.2 spells as <hex> must be real bytes.
  const intmeth = fixture('intmeth');
  for (const b of [0x00, 0x07, 0x7f]) assert.ok(intmeth.includes(b), `intmeth holds byte ${b}`);
  assert.equal(bodyBytes(fixture('mpart01')).length, 553, 'mpart01 body, binary part included');
  assert.equal(fixture('longreq').length, 3515);
});

// ------------------------------------------------------------------ 3.1.1 valid messages

test('3.1.1.1 wsinv: line folding, LWS around colons, mixed compact and long forms, escaped quotes, leading zeros', () => {
  const m = request('wsinv');
  assert.equal(m.method, 'INVITE');
  assert.equal(m.uri, 'sip:vivekg@chair-dnrc.example.com;unknownparam');
  assert.equal(m.callId, 'wsinv.ndaksdj@192.0.2.1');
  assert.deepEqual(m.cseq, { seq: 9, method: 'INVITE' }, 'folded "cseq: 0009 / INVITE"');
  assert.equal(m.header('Max-Forwards'), '0068');
  const to = parseNameAddr(m.header('to')!)!;
  assert.equal(to.uri, 'sip:vivekg@chair-dnrc.example.com');
  assert.deepEqual(to.params, { tag: '1918181833n' });
  const from = parseNameAddr(m.header('from')!)!;
  assert.equal(from.displayName, 'J Rosenberg \\"', 'quoted-pairs \\\\ and \\" unescaped');
  assert.equal(from.uri, 'sip:jdrosen@example.com');
  assert.deepEqual(from.params, { tag: '98asjd8' }, 'parameter folded onto later lines');
  const vias = m.headers('via').map((v) => parseVia(v)!);
  assert.deepEqual(vias.map((v) => [v.transport, v.host, v.params.branch]), [
    ['UDP', '192.0.2.2', '390skdjuw'],
    ['TCP', 'spindle.example.com', 'z9hG4bK9ikj8'],
    ['UDP', '192.168.255.111', 'z9hG4bK30239'],
  ], 'Via then the two comma-separated values of the compact "v"');
  assert.equal(m.header('subject'), '', 'empty Subject ("s :")');
  assert.equal(m.header('newfangledheader'), 'newfangled value continued newfangled value');
  assert.equal(m.header('UnknownHeaderWithUnusualValue'), ';;,,;;,;', 'an unknown header is one opaque value');
  assert.deepEqual(m.headers('route'), ['<sip:services.example.com;lr;unknownwith=value;unknown-no-value>']);
  const contacts = m.headers('contact');
  assert.equal(contacts.length, 1);
  const contact = parseNameAddr(contacts[0])!;
  assert.equal(contact.displayName, 'Quoted string ""');
  assert.equal(contact.uri, 'sip:jdrosen@example.com');
  assert.deepEqual(contact.params, { newparam: 'newvalue', secondparam: null, q: '0.33' });
  assert.equal(m.header('content-type'), 'application/sdp');
  assert.equal(m.header('content-length'), '150');
  assert.equal(Buffer.byteLength(m.body), 150);
  assert.ok(m.body.startsWith('v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\n') && m.body.endsWith('a=rtpmap:31 LPC\r\n'));
});

test('3.1.1.2 intmeth: every token character in method and header names, unusual URIs, NUL/BEL/DEL in a quoted display name', () => {
  const method = "!interesting-Method0123456789_*+`.%indeed'~";
  const m = request('intmeth');
  assert.equal(m.method, method);
  assert.equal(m.header('cseq'), `139122385 ${method}`);
  assert.equal(m.cseq.seq, 139122385);
  const ruri = parseUri(m.uri)!;
  assert.equal(ruri.user, "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*", 'the user part may hold ? , / ;');
  assert.equal(ruri.password, "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)");
  assert.equal(ruri.host, 'example.com');
  assert.equal(ruri.headers, undefined);
  assert.equal(parseVia(m.header('via')!)!.params.branch, "z9hG4bK-.!%66*_+`'~");
  const to = parseNameAddr(m.header('to')!)!;
  assert.equal(to.displayName, 'BEL:\x07 NUL:\x00 DEL:\x7f');
  assert.equal(parseUri(to.uri)!.user, "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*");
  const from = parseNameAddr(m.header('from')!)!;
  assert.equal(from.displayName, "token1~` token2'+_ token3*%!.-");
  assert.equal(from.uri, 'sip:mundane@example.com');
  assert.deepEqual(from.params, { "fromparam''~+*_!.-%": '"работающий"', tag: "_token~1'+`*%!-." });
  assert.equal(m.callId, "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{");
  assert.equal(m.header('max-forwards'), '255');
  assert.equal(m.header("extensionHeader-!.%*+_`'~"), '\ufeff大停電', 'UTF-8 value (with a BOM) of a token-named header');
  assert.equal(m.body, '');
});

test('3.1.1.3 esc01: %-escapes in URIs are kept on the wire and decoded in the user part; compact i and C', () => {
  const m = request('esc01');
  assert.equal(m.uri, 'sip:sips%3Auser%40example.com@example.net');
  const ruri = parseUri(m.uri)!;
  assert.equal(ruri.user, 'sips:user@example.com');
  assert.equal(ruri.host, 'example.net');
  assert.equal(parseUri(parseNameAddr(m.header('to')!)!.uri)!.user, 'user');
  const from = parseNameAddr(m.header('from')!)!;
  assert.equal(from.displayName, undefined);
  assert.equal(parseUri(from.uri)!.user, 'I have spaces');
  assert.equal(m.callId, 'esc01.239409asdfakjkn23onasd0-3234');
  assert.equal(m.header('content-type'), 'application/sdp');
  const contact = parseNameAddr(m.header('contact')!)!;
  assert.equal(contact.uri, 'sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31');
  assert.equal(parseUri(contact.uri)!.user, 'caller');
  assert.equal(Buffer.byteLength(m.body), 150);
});

test('3.1.1.4 escnull: escaped NULs in URIs; two Contact header fields; compact "L:0" without a space', () => {
  const m = request('escnull');
  assert.equal(m.method, 'REGISTER');
  assert.equal(parseUri(parseNameAddr(m.header('to')!)!.uri)!.user, 'null-\x00-null');
  assert.deepEqual(m.headers('contact').map((c) => parseUri(parseNameAddr(c)!.uri)!.user), ['\x00', '\x00\x00']);
  assert.equal(m.header('content-length'), '0');
  assert.equal(m.body, '');
});

test('3.1.1.5 esc02: an escaped method is an unknown method; "C%6Fntact" is not Contact', () => {
  const m = request('esc02');
  assert.equal(m.method, 'RE%47IST%45R');
  assert.notEqual(m.method, 'REGISTER');
  assert.equal(m.header('cseq'), '29344 RE%47IST%45R');
  assert.equal(parseNameAddr(m.header('to')!)!.displayName, '%Z%45');
  assert.equal(parseVia(m.header('via')!)!.params.branch, 'z9hG4bK209%fzsnel234');
  assert.deepEqual(m.headers('contact'), ['<sip:alias1@host1.example.com>', '<sip:alias3@host3.example.com>']);
  assert.deepEqual(m.headers('C%6Fntact'), ['<sip:alias2@host2.example.com>']);
});

test('3.1.1.6 lwsdisp: no LWS between a token display name and <', () => {
  const m = request('lwsdisp');
  const from = parseNameAddr(m.header('from')!)!;
  assert.deepEqual(from, { displayName: 'caller', uri: 'sip:caller@example.com', params: { tag: '323' } });
});

test('3.1.1.7 longreq: long values and names, 34 Via fields in every case of name and compact form', () => {
  const m = request('longreq');
  const to = parseNameAddr(m.header('to')!)!;
  assert.equal(to.displayName, `I have a user name of ${'extreme'.repeat(10)} proportion`);
  const toUri = parseUri(to.uri)!;
  assert.equal(toUri.port, 6000);
  assert.equal(toUri.params.unknownparam1, `very${'long'.repeat(20)}value`);
  assert.equal(toUri.params[`longparam${'name'.repeat(25)}`], 'shortvalue');
  assert.equal(toUri.params[`very${'long'.repeat(25)}parameternamewithnovalue`], null);
  const from = parseNameAddr(m.header('f')!)!;
  assert.equal(parseUri(from.uri)!.user, 'amazinglylongcallername'.repeat(5));
  assert.equal(from.params.tag, `1${'298'.repeat(50)}2424`);
  assert.equal(from.params[`unknownheaderparam${'name'.repeat(20)}`], `unknowheaderparam${'value'.repeat(15)}`);
  assert.equal(from.params[`unknownvalueless${'paramname'.repeat(10)}`], null);
  assert.equal(m.callId, `longreq.one${'really'.repeat(20)}longcallid`);
  const vias = m.headers('via').map((v) => parseVia(v)!);
  assert.equal(vias.length, 34);
  assert.deepEqual(vias.slice(0, 33).map((v) => v.host), Array.from({ length: 33 }, (_, i) => `sip${33 - i}.example.com`));
  assert.equal(vias[33].params.branch, `very${'long'.repeat(50)}branchvalue`);
  assert.equal(vias[33].params.received, '192.0.2.5');
  const long = 'long'.repeat(20);
  assert.equal(m.header(`Unknown-${'Long'.repeat(20)}-Name`), `unknown-${long}-value; unknown-${long}-parameter-name = unknown-${long}-parameter-value`);
  assert.equal(parseUri(parseNameAddr(m.header('contact')!)!.uri)!.user, 'amazinglylongcallername'.repeat(5));
  assert.equal(Buffer.byteLength(m.body), 150);
});

test('3.1.1.8 dblreq: a REGISTER with Content-Length 0 followed by an INVITE in one datagram — only the REGISTER counts', () => {
  const m = request('dblreq');
  assert.equal(m.method, 'REGISTER');
  assert.equal(m.callId, 'dblreq.0ha0isndaksdj99sdfafnl3lk233412', 'compact "I"');
  assert.equal(m.body, '');
  assert.deepEqual(m.headers('to'), ['sip:j.user@example.com']);
  assert.equal(m.headers('call-id').length, 1);
});

test('3.1.1.9 semiuri: a ";" in the user part of the Request-URI; a folded comma-separated Accept', () => {
  const m = request('semiuri');
  const u = parseUri(m.uri)!;
  assert.equal(u.user, 'user;par=u@example.net');
  assert.equal(u.host, 'example.com');
  assert.deepEqual(u.params, {});
  assert.deepEqual(m.headers('accept'), ['application/sdp', 'application/pkcs7-mime', 'multipart/mixed', 'multipart/signed', 'message/sip', 'message/sipfrag']);
});

test('3.1.1.10 transports: Via transports the parser does not know are still Vias', () => {
  const m = request('transports');
  assert.deepEqual(m.headers('via').map((v) => parseVia(v)!.transport), ['UDP', 'SCTP', 'TLS', 'UNKNOWN', 'TCP']);
  assert.equal(m.callId, 'transports.kijh4akdnaqjkwendsasfdj');
});

test('3.1.1.11 mpart01: the body is cut by octets, binary part and all', () => {
  const raw = fixture('mpart01');
  const m = request('mpart01');
  assert.equal(m.method, 'MESSAGE');
  assert.equal(m.header('content-type'), 'multipart/mixed;boundary=7a9cbec02ceef655');
  assert.equal(m.header('content-length'), '553');
  assert.equal(m.callId, '3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..');
  assert.ok(m.header('identity')!.startsWith('r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2') && m.header('identity')!.endsWith('hkMWYUA='));
  assert.equal(m.body, bodyBytes(raw).toString('utf8'), 'exactly the 553 octets after the header block');
  assert.ok(m.body.startsWith('--7a9cbec02ceef655\r\nContent-Type: text/plain\r\n'));
  assert.ok(m.body.endsWith('\r\n--7a9cbec02ceef655--\r\n'), 'the closing boundary is inside the body');
});

test('3.1.1.12 unreason: a UTF-8 reason phrase with "*" and "=" in it', () => {
  const m = response('unreason');
  assert.equal(m.status, 200);
  assert.equal(m.reason, '= 2**3 * 5**2 но сто девяносто девять - простое');
  assert.deepEqual(m.cseq, { seq: 35, method: 'INVITE' });
  assert.equal(Buffer.byteLength(m.body), 154);
});

test('3.1.1.13 noreason: an empty reason phrase', () => {
  const m = response('noreason');
  assert.equal(m.status, 100);
  assert.equal(m.reason, '');
  assert.equal(m.callId, 'noreason.asndj203insdf99223ndf');
});

test('3.3: unknown URI schemes parse; Max-Forwards 0 parses; a parameter after an addr-spec belongs to the header', () => {
  assert.equal(request('unkscm').uri, 'nobodyKnowsThisScheme:totallyopaquecontent');
  assert.equal(request('novelsc').uri, 'soap.beep://192.0.2.103:3002');
  const unksm2 = request('unksm2');
  assert.equal(parseNameAddr(unksm2.header('to')!)!.uri, 'isbn:2983792873');
  assert.equal(parseNameAddr(unksm2.header('from')!)!.uri, 'http://www.example.com');
  assert.equal(parseNameAddr(unksm2.header('contact')!)!.uri, 'name:John_Smith');
  assert.equal(request('zeromf').header('max-forwards'), '0');
  // cparam01: "unknownparam" is a Contact header parameter; cparam02: inside <> it is a URI parameter.
  const c1 = parseNameAddr(request('cparam01').header('contact')!)!;
  assert.deepEqual(c1, { uri: 'sip:+19725552222@gw1.example.net', params: { unknownparam: null } });
  const c2 = parseNameAddr(request('cparam02').header('contact')!)!;
  assert.deepEqual(c2, { displayName: undefined, uri: 'sip:+19725552222@gw1.example.net;unknownparam', params: {} });
  // regescrt: escaped headers are fine in a Contact name-addr.
  const c3 = parseUri(parseNameAddr(request('regescrt').header('m')!)!.uri)!;
  assert.equal(c3.headers, 'Route=%3Csip:sip.example.com%3E');
});

test('3.1.2.12 baddate: the Date header is never interpreted here, so a non-GMT Date is accepted as is (RFC 4475 allows it)', () => {
  const m = request('baddate');
  assert.equal(m.header('date'), 'Fri, 01 Jan 2010 16:00:00 EST');
  assert.equal(Buffer.byteLength(m.body), 150);
});

// ------------------------------------------------------------------ 3.1.2 invalid messages

interface Rejection { name: string; error: string; partial: boolean; status?: number }
const REJECTED: Rejection[] = [
  { name: 'badinv01', error: 'malformed Via header', partial: true },
  { name: 'clerr', error: 'Content-Length larger than the body', partial: true },
  { name: 'ncl', error: 'invalid Content-Length', partial: true },
  { name: 'scalar02', error: 'CSeq number too large', partial: true },
  { name: 'scalarlg', error: 'CSeq number too large', partial: false },
  { name: 'quotbal', error: 'malformed To header: unterminated quoted display name', partial: true },
  { name: 'ltgtruri', error: 'malformed Request-URI: enclosed in <>', partial: true },
  { name: 'lwsruri', error: 'malformed Request-URI: contains whitespace', partial: true },
  { name: 'lwsstart', error: 'malformed Request-Line: extra whitespace between elements', partial: true },
  { name: 'trws', error: 'malformed Request-Line: extra whitespace between elements', partial: true },
  { name: 'escruri', error: 'malformed Request-URI: headers are not allowed', partial: true },
  { name: 'regbadct', error: 'malformed Contact header: a URI with headers must be enclosed in <>', partial: true },
  { name: 'badaspec', error: 'malformed To header: whitespace inside <>', partial: true },
  { name: 'baddn', error: 'malformed From header: display name must be quoted', partial: true },
  { name: 'badvers', error: 'unsupported SIP version 7.0', partial: true, status: 505 },
  { name: 'mismatch01', error: 'CSeq method does not match the request method', partial: true },
  { name: 'mismatch02', error: 'CSeq method does not match the request method', partial: true },
  { name: 'bigcode', error: 'status code out of range', partial: false },
  // §3.3 messages that are syntactically broken for a parser that knows RFC 3261's header rules.
  { name: 'insuf', error: 'missing From header', partial: true },
  { name: 'multi01', error: 'more than one From header', partial: true },
  { name: 'mcl01', error: 'more than one Content-Length header', partial: true },
];

for (const r of REJECTED) {
  test(`RFC 4475 ${r.name} is rejected: "${r.error}"`, () => {
    const raw = fixture(r.name);
    const p = parseSipMessage(raw);
    assert.ok(isError(p), `${r.name} must be rejected`);
    assert.equal(p.error, r.error);
    assert.equal(p.status, r.status);
    assert.equal(p.partial !== undefined, r.partial, r.partial ? 'a request keeps what was read, to answer 400' : 'nothing to answer');
    if (p.partial) {
      // What was read is the request's own header block, so the 400 reaches the sender.
      const callId = /^(?:Call-ID|i): *(.*)$/im.exec(raw.toString('latin1'))?.[1];
      assert.equal(p.partial.callId, callId ?? '');
      assert.equal(p.partial.method, raw.toString('latin1').split(/[ \t]/, 1)[0]);
      assert.ok(p.partial.header('via'), 'the partial request has its Via');
    }
  });
}

test('every RFC 4475 invalid message the UA can answer gets a 400 whose reason names the problem', async () => {
  const logger = pino({ level: 'silent' });
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger });
  await ua.start();
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const replies: string[] = [];
  let waiter: (() => void) | null = null;
  sock.on('message', (m) => { replies.push(m.toString('utf8')); waiter?.(); });
  const uaPort = ua.boundAddresses[0].port;
  const exchange = async (data: Buffer): Promise<string | null> => {
    const before = replies.length;
    const got = new Promise<void>((r) => { waiter = r; setTimeout(r, 500); });
    sock.send(data, uaPort, '127.0.0.1');
    await got;
    waiter = null;
    return replies.length > before ? replies[replies.length - 1] : null;
  };
  try {
    // Responses are never answered; badvers' Via says SIP/7.0, so there is no usable Via to
    // answer through (RFC 4475 would have a 505: the parser reports status 505 for it).
    for (const r of REJECTED.filter((x) => x.partial && x.name !== 'badvers')) {
      // The fixtures' Vias name hosts of RFC 5737 space: add rport (RFC 3581) so the answer comes back here.
      const raw = fixture(r.name).toString('latin1').replace(/^(Via|v)([ \t]*:[ \t]*SIP[ \t]*\/[ \t]*2\.0[ \t]*\/[ \t]*\w+[ \t]+[^\s;,]+)/im, '$1$2;rport');
      const reply = await exchange(Buffer.from(raw, 'latin1'));
      assert.ok(reply, `${r.name}: answered`);
      assert.equal(reply.split('\r\n')[0], `SIP/2.0 400 ${r.error}`, r.name);
    }
    for (const name of ['scalarlg', 'bigcode']) assert.equal(await exchange(fixture(name)), null, `${name} (a response) is dropped`);
    const options = `OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${sock.address().port};branch=z9hG4bKalive;rport\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: alive\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n`;
    assert.match((await exchange(Buffer.from(options)))!, /^SIP\/2\.0 200 OK\r\n/, 'the UA still answers after the torture');
  } finally {
    sock.close();
    await ua.stop();
  }
});

// ------------------------------------------------------------------ limits

const BASE_HEADERS = [
  'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKlimits',
  'From: <sip:alice@example.com>;tag=1',
  'To: <sip:bob@example.com>',
  'Call-ID: limits@example.com',
  'CSeq: 1 MESSAGE',
  'Max-Forwards: 70',
];

function message(extra: string[] = [], body = '', startLine = 'MESSAGE sip:bob@example.com SIP/2.0'): string {
  return [startLine, ...BASE_HEADERS, ...extra, `Content-Length: ${Buffer.byteLength(body)}`, '', body].join('\r\n');
}

test('limit: a message of exactly maxMessageBytes octets parses; one more octet is 513 Message Too Large with the request kept', () => {
  const empty = Buffer.byteLength(message([], ''));
  const fill = (n: number) => 'x'.repeat(n);
  // Content-Length grows by digits as the body grows: solve for the exact size.
  let body = fill(PARSE_LIMITS.maxMessageBytes - empty - 4);
  while (Buffer.byteLength(message([], body)) < PARSE_LIMITS.maxMessageBytes) body += 'x';
  const exact = message([], body);
  assert.equal(Buffer.byteLength(exact), PARSE_LIMITS.maxMessageBytes);
  const ok = parseSipMessage(exact);
  assert.ok(!isError(ok), 'at the limit');
  assert.equal(ok.body.length, body.length);
  const over = parseSipMessage(message([], `${body}x`));
  assert.ok(isError(over));
  assert.equal(over.error, 'Message Too Large');
  assert.equal(over.status, 513);
  assert.equal(over.partial?.callId, 'limits@example.com', 'enough is read to route the 513');
});

test('limit: message size counts octets, also for string input with multi-byte characters', () => {
  const chars = Math.floor(PARSE_LIMITS.maxMessageBytes / 2); // 'é' is two octets in UTF-8
  const text = message([], 'é'.repeat(chars));
  assert.ok(text.length < PARSE_LIMITS.maxMessageBytes && Buffer.byteLength(text) > PARSE_LIMITS.maxMessageBytes);
  const p = parseSipMessage(text);
  assert.ok(isError(p));
  assert.equal(p.error, 'Message Too Large');
});

test('limit: a header block that does not end within maxMessageBytes is rejected without being read', () => {
  const p = parseSipMessage(`${message([`X-Big: ${'a'.repeat(PARSE_LIMITS.maxMessageBytes)}`])}`);
  assert.ok(isError(p));
  assert.equal(p.error, 'Message Too Large');
  assert.equal(p.partial, undefined);
});

test('limit: header count — maxHeaders header fields parse, one more is rejected', () => {
  const count = (n: number) => Array.from({ length: n - BASE_HEADERS.length - 1 }, (_, i) => `X-H${i}: ${i}`);
  const ok = parseSipMessage(message(count(PARSE_LIMITS.maxHeaders)));
  assert.ok(!isError(ok), 'exactly at the limit');
  assert.equal(ok.headerList.length, PARSE_LIMITS.maxHeaders);
  const over = parseSipMessage(message(count(PARSE_LIMITS.maxHeaders + 1)));
  assert.ok(isError(over));
  assert.equal(over.error, 'too many headers');
  assert.ok(over.partial, 'still answerable');
});

test('limit: line length — a header line of maxLineLength characters parses, one more is rejected (also when folded)', () => {
  const line = (n: number) => `X-Long: ${'a'.repeat(n - 'X-Long: '.length)}`;
  const ok = parseSipMessage(message([line(PARSE_LIMITS.maxLineLength)]));
  assert.ok(!isError(ok));
  assert.equal(ok.header('x-long')!.length, PARSE_LIMITS.maxLineLength - 'X-Long: '.length);
  const over = parseSipMessage(message([line(PARSE_LIMITS.maxLineLength + 1)]));
  assert.ok(isError(over));
  assert.equal(over.error, 'header line too long');
  const half = 'a'.repeat(PARSE_LIMITS.maxLineLength / 2);
  const folded = parseSipMessage(message([`X-Folded: ${half}\r\n ${half}`]));
  assert.ok(isError(folded), 'the limit applies to the unfolded line');
  assert.equal(folded.error, 'header line too long');
  const start = parseSipMessage(message([], '', `MESSAGE sip:${'u'.repeat(PARSE_LIMITS.maxLineLength)}@example.com SIP/2.0`));
  assert.ok(isError(start));
  assert.equal(start.error, 'start line too long');
});

test('framing: Content-Length counts octets; extra datagram bytes are ignored; a short body is an error', () => {
  const utf8 = parseSipMessage(message(['Content-Type: text/plain'], 'héllo wörld'));
  assert.ok(!isError(utf8));
  assert.equal(utf8.header('content-length'), '13');
  assert.equal(utf8.body, 'héllo wörld');
  const extra = parseSipMessage(`${message([], 'hello')}GARBAGE`);
  assert.ok(!isError(extra));
  assert.equal(extra.body, 'hello');
  const short = parseSipMessage(message([], 'hello').replace('Content-Length: 5', 'Content-Length: 6'));
  assert.ok(isError(short));
  assert.equal(short.error, 'Content-Length larger than the body');
  const huge = parseSipMessage(message([], 'hello').replace('Content-Length: 5', 'Content-Length: 99999999999999999999'));
  assert.ok(isError(huge));
  assert.equal(huge.error, 'Content-Length larger than the body');
  const noLength = parseSipMessage(message([], 'hello').replace('Content-Length: 5\r\n', ''));
  assert.ok(!isError(noLength));
  assert.equal(noLength.body, 'hello', 'without Content-Length (UDP) the body is the rest of the datagram');
});

test('framing: leading CRLF keepalives are skipped; empty input and a missing blank line are errors', () => {
  const ok = parseSipMessage(`\r\n\r\n${message()}`);
  assert.ok(ok instanceof SipRequest);
  assert.deepEqual(parseSipMessage('\r\n\r\n'), { error: 'empty message' });
  assert.deepEqual(parseSipMessage(''), { error: 'empty message' });
  assert.deepEqual(parseSipMessage(message().replace(/\r\n\r\n$/, '\r\n')), { error: 'no end of headers' });
  const lfOnly = parseSipMessage(message([], 'hi').replace(/\r\n/g, '\n'));
  assert.ok(lfOnly instanceof SipRequest, 'bare-LF messages from sloppy peers are read too');
  assert.equal(lfOnly.body, 'hi');
});

test('Max-Forwards: leading zeros are fine, above 255 or non-numeric is rejected; CSeq up to 2^32-1', () => {
  const mf = (v: string) => parseSipMessage(message().replace('Max-Forwards: 70', `Max-Forwards: ${v}`));
  assert.ok(!isError(mf('0255')));
  assert.deepEqual([mf('256'), mf('7a')].map((p) => (isError(p) ? p.error : 'ok')), ['Max-Forwards out of range', 'malformed Max-Forwards']);
  const cseq = (v: string) => parseSipMessage(message().replace('CSeq: 1 MESSAGE', `CSeq: ${v}`));
  assert.ok(!isError(cseq('4294967295 MESSAGE')));
  assert.ok(!isError(cseq('00000000001 MESSAGE')), 'leading zeros do not count against the size');
  assert.deepEqual([cseq('4294967296 MESSAGE'), cseq('1'), cseq('x MESSAGE')].map((p) => (isError(p) ? p.error : 'ok')), ['CSeq number too large', 'malformed CSeq', 'malformed CSeq']);
});

test('From/To/Contact validation: what RFC 3261 §20.10/§25.1 allows is accepted, the rest is named', () => {
  const verdict = (header: string, value: string) => {
    const p = parseSipMessage(message().replace(/^(From|To): .*$/gm, (line) => (line.startsWith(`${header}:`) ? `${header}: ${value}` : line)).replace('Max-Forwards: 70', header === 'Contact' ? `Max-Forwards: 70\r\nContact: ${value}` : 'Max-Forwards: 70'));
    return isError(p) ? p.error : 'ok';
  };
  const table: Array<[string, string, string]> = [
    ['From', '"Alice \\"A\\"" <sip:alice@example.com>;tag=1', 'ok'],
    ['From', 'Alice Smith<sip:alice@example.com>;tag=1', 'ok'],
    ['From', 'Jöhn Åberg <sip:john@example.com>;tag=1', 'ok'], // non-ASCII letters: no ambiguity, so tolerated
    ['From', 'sip:alice@example.com ; tag = 1', 'ok'],
    ['To', '<sip:bob@example.com;transport=tcp>', 'ok'],
    ['Contact', '*', 'malformed Contact header: bad URI'], // "*" is for REGISTER only (below)
    ['Contact', 'sip:a@192.0.2.1;+sip.instance="<urn:uuid:1>";q=0.5', 'ok'],
    ['From', 'Al"ice <sip:alice@example.com>;tag=1', 'malformed From header: misplaced quote'],
    ['To', 'sip:bob@example.com"', 'malformed To header: misplaced quote'],
    ['Contact', '<sip:a@192.0.2.1>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";expires=60, <sip:b@h>;q=0.1', 'ok'],
    ['From', 'Alice (mobile) <sip:alice@example.com>;tag=1', 'malformed From header: display name must be quoted'],
    ['From', '"Alice <sip:alice@example.com>;tag=1', 'malformed From header: unterminated quoted display name'],
    ['From', '"Alice" sip:alice@example.com;tag=1', 'malformed From header: quoted display name without <URI>'],
    ['From', '<sip:alice@example.com;tag=1', 'malformed From header: missing >'],
    ['From', '<sip:alice@example.com>;tag=1;', 'malformed From header: empty parameter'],
    ['From', '<sip:alice@example.com>;tag=', 'malformed From header: empty value for parameter "tag"'],
    ['From', '<sip:alice@example.com> junk;tag=1', 'malformed From header: text before the parameters'],
    ['To', '<alice@example.com>', 'malformed To header: bad URI'],
    ['To', 'sip:bob@example.com?subject=x', 'malformed To header: a URI with headers must be enclosed in <>'],
    ['Contact', '<sip:a@h>;q=0.1;;', 'malformed Contact header: empty parameter'],
    ['Contact', '*, <sip:a@h>', 'malformed Contact header: bad URI'],
  ];
  const register = parseSipMessage(message(['Contact: *', 'Expires: 0'], '', 'REGISTER sip:example.com SIP/2.0').replace('CSeq: 1 MESSAGE', 'CSeq: 1 REGISTER'));
  assert.ok(!isError(register), `Contact: * in a REGISTER (remove all bindings): ${isError(register) ? register.error : ''}`);
  for (const [header, value, expected] of table) assert.equal(verdict(header, value), expected, `${header}: ${value}`);
});

// ------------------------------------------------------------------ robustness

test('the parser never throws: every prefix and 3000 seeded byte mutations of every fixture', () => {
  let seed = 4475;
  const rand = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff; };
  const check = (data: Buffer, what: string) => {
    let p: Parsed;
    try { p = parseSipMessage(data); } catch (err) { assert.fail(`${what}: threw ${String(err)}`); }
    assert.ok(isError(p) ? typeof p.error === 'string' && p.error.length > 0 : p instanceof SipRequest || p instanceof SipResponse, what);
  };
  const names = readdirSync(FIXTURES).filter((f) => f.endsWith('.sip')).map((f) => f.replace(/\.sip$/, ''));
  const interesting = [0x00, 0x0a, 0x0d, 0x20, 0x22, 0x2c, 0x3a, 0x3b, 0x3c, 0x3e, 0x40, 0x5c, 0x25, 0xff, 0xc3];
  for (const name of names) {
    const raw = fixture(name);
    for (let n = 0; n <= raw.length; n += 7) check(raw.subarray(0, n), `${name}[0..${n}]`);
    for (let i = 0; i < 3000 / names.length; i++) {
      const copy = Buffer.from(raw);
      for (let k = 1 + Math.floor(rand() * 4); k > 0; k--) copy[Math.floor(rand() * copy.length)] = interesting[Math.floor(rand() * interesting.length)];
      check(copy, `${name} mutation ${i}`);
    }
  }
});

test('the parser stays linear on adversarial whitespace (no catastrophic regex backtracking)', () => {
  const ws = ' '.repeat(PARSE_LIMITS.maxLineLength - 20);
  const base = message();
  const cases = [
    base.replace(/^.*/, `INVITE${ws}x`),
    base.replace(/^.*/, `INVITE ${ws.slice(0, 4000)}sip:a@b${ws.slice(0, 4000)}SIP/2.0x`),
    base.replace(/^.*/, `INVITE sip:a@b${' SIP/1'.repeat(1300)}.x`),
    base.replace(/^Via: .*$/m, `Via: SIP/2.0/UDP h${ws}x`),
    base.replace(/^Via: .*$/m, `Via: SIP / 2.0 / UDP h${ws.slice(0, 4000)}:${ws.slice(0, 4000)}x`),
    base.replace(/^From: .*$/m, `From: a${ws}b${ws.slice(0, 10)}<sip:a@b>`),
    base.replace(/^To: .*$/m, `To: "${'\\"'.repeat(3000)}`),
    base.replace(/^To: .*$/m, `To: <sip:a@b>${' ;x'.repeat(2500)}=`),
    base.replace(/^Call-ID: .*$/m, `Contact: <sip:a@b>${';'.repeat(8000)}\r\nCall-ID: x`),
  ];
  for (const c of cases) {
    const t0 = process.hrtime.bigint();
    const p = parseSipMessage(c);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.ok(isError(p), 'all of these are malformed');
    assert.ok(ms < 1000, `parsed in ${ms.toFixed(1)} ms: ${c.slice(0, 40)}…`);
  }
});

// ------------------------------------------------------------------ serializer

test('serializer: canonical output — long header names, one value per line, unfolded, Content-Length last and recomputed', () => {
  const wire = [
    'INVITE sip:bob@example.com SIP/2.0',
    'v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1 , SIP/2.0/UDP b.example.com;branch=z9hG4bK2',
    'f: "Alice \\"A\\"" <sip:alice@example.com>;tag=1',
    'l: 5',
    't:   <sip:bob@example.com>',
    'i: abc@x',
    'CSEQ: 1',
    '  INVITE',
    'max-forwards: 70',
    'c: text/plain',
    'x-custom-header: v',
    '',
    'hello',
  ].join('\r\n');
  const m = parseSipMessage(wire);
  assert.ok(m instanceof SipRequest);
  assert.equal(m.toString(), [
    'INVITE sip:bob@example.com SIP/2.0',
    'Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1',
    'Via: SIP/2.0/UDP b.example.com;branch=z9hG4bK2',
    'From: "Alice \\"A\\"" <sip:alice@example.com>;tag=1',
    'To: <sip:bob@example.com>',
    'Call-ID: abc@x',
    'CSeq: 1 INVITE',
    'Max-Forwards: 70',
    'Content-Type: text/plain',
    'X-Custom-Header: v',
    'Content-Length: 5',
    '',
    'hello',
  ].join('\r\n'));
  m.body = 'héllo';
  assert.match(m.toString(), /\r\nContent-Length: 6\r\n\r\nhéllo$/, 'octets, not characters');
  const res = new SipResponse(100, '');
  assert.ok(res.toString().startsWith('SIP/2.0 100 \r\n'), 'the SP before an empty reason phrase stays (§7.2)');
});

const ROUND_TRIP = [...VALID, ...VALID_33, 'baddate'];
for (const name of ROUND_TRIP) {
  test(`serializer round trip: ${name} → canonical text → the same message, and canonical text is a fixed point`, () => {
    const first = parseSipMessage(fixture(name));
    assert.ok(!isError(first));
    const text = first.toString();
    const second = parseSipMessage(text);
    assert.ok(!isError(second), `canonical ${name} must parse: ${isError(second) ? second.error : ''}`);
    assert.equal(second.constructor, first.constructor);
    if (first instanceof SipRequest && second instanceof SipRequest) {
      assert.equal(second.method, first.method);
      assert.equal(second.uri, first.uri);
    } else if (first instanceof SipResponse && second instanceof SipResponse) {
      assert.equal(second.status, first.status);
      assert.equal(second.reason, first.reason);
    }
    const withoutLength = (m: SipRequest | SipResponse) => m.headerList.filter(([k]) => k !== 'Content-Length');
    assert.deepEqual(withoutLength(second), withoutLength(first));
    assert.equal(second.body, first.body);
    assert.equal(second.header('content-length'), String(Buffer.byteLength(first.body)));
    assert.equal(second.toString(), text);
    assert.ok(!/\r\n[ \t]/.test(text.slice(0, text.indexOf('\r\n\r\n'))), 'no folded lines in canonical output');
  });
}

test('compact header names expand to their long forms (RFC 3261 §7.3.3 and extensions)', () => {
  const table: Record<string, string> = {
    i: 'Call-ID', m: 'Contact', f: 'From', t: 'To', v: 'Via', l: 'Content-Length', c: 'Content-Type', k: 'Supported',
    s: 'Subject', e: 'Content-Encoding', o: 'Event', u: 'Allow-Events', r: 'Refer-To', b: 'Referred-By', x: 'Session-Expires',
    a: 'Accept-Contact', j: 'Reject-Contact', d: 'Request-Disposition', y: 'Identity', n: 'Identity-Info',
  };
  for (const [short, long] of Object.entries(table)) {
    assert.equal(canonicalHeaderName(short), long);
    assert.equal(canonicalHeaderName(short.toUpperCase()), long);
  }
  assert.equal(canonicalHeaderName('CALL-ID'), 'Call-ID');
  assert.equal(canonicalHeaderName('www-authenticate'), 'WWW-Authenticate');
  assert.equal(canonicalHeaderName('cseq'), 'CSeq');
});

test('URI, name-addr and Via helpers round-trip what they parse', () => {
  for (const uri of [
    'sip:user;par=u%40example.net@example.com',
    'sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=hi',
    "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
    'tel:+1-201-555-0123;phone-context=example.com',
  ]) {
    const u = parseUri(uri);
    assert.ok(u, uri);
    assert.deepEqual(parseUri(formatUri(u)), u, uri);
  }
  assert.equal(parseUri('sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=hi')!.host, '[2001:db8::1]');
  assert.equal(parseUri('http://example.com'), null);
  for (const na of [
    { displayName: 'Alice "A" \\ B', uri: 'sip:alice@example.com', params: { tag: '1' } },
    { displayName: undefined, uri: 'sip:x@example.com;lr', params: { expires: '60', q: '0.5' } },
  ] as NameAddr[]) assert.deepEqual(parseNameAddr(formatNameAddr(na)), na);
  const via = parseVia('SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKx;received=192.0.2.1;rport')!;
  assert.deepEqual(via, { protocol: 'SIP/2.0', transport: 'TLS', host: '[2001:db8::9]', port: 5061, params: { branch: 'z9hG4bKx', received: '192.0.2.1', rport: null } });
  assert.deepEqual(parseVia(formatVia(via)), via);
  assert.deepEqual(splitList('"a\\", b" <sip:x@y>;q=1, <sip:z@w;p=1,2>'), ['"a\\", b" <sip:x@y>;q=1', '<sip:z@w;p=1,2>']);
});
