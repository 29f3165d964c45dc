/**
 * Bad SDP from SIP peers and browsers, generated: real offers and answers (Asterisk with SDES,
 * FreeSWITCH with Opus, a carrier SBC, audio + video, IPv6, hold, an answer; a Chrome and a
 * Firefox offer) cut at every offset and mutated thousands of times — lines duplicated, dropped
 * and swapped, numbers made huge, negative, empty or not numbers, words made numbers (what
 * sdp-transform then hands back as a number, not a string), line ends changed, NULs and bad
 * UTF-8, very long lines, broken attributes — fed to everything in src/sdp that reads peer SDP:
 * parseSipOffer / parseSipAnswer (a SIP INVITE, re-INVITE, 200, ACK), buildSipAnswer (what we
 * answer with), and checkBrowserOffer (a tab's offer or answer).
 *
 * Nothing may throw. A description parseSipOffer returns must be one the media layer can use as
 * it is: an IP address, a port of 1-65535, numbers that are numbers, a codec list; else it must
 * return { error } with a short, clear reason (the INVITE is then refused with 488 —
 * callManager.ts, callBase.ts). Our answer to anything we accepted must be well-formed SDP with
 * one m-line per offered one (RFC 3264 §6) that parses back. Fixed seeds: a failure names the
 * input, and the same run reproduces it.
 *
 * Found here and fixed (the targeted tests below): sdp-transform hands back any field that reads
 * as a number as a number — an all-digit codec name threw in parseSipOffer and in
 * checkBrowserOffer, an all-digit c= address threw, an all-digit proto threw in buildSipAnswer;
 * m=audio and a=rtcp ports out of 1-65535 (or empty, or "0001" as a string) went to the media
 * leg; "a=ptime:1.2.3" was answered "a=ptime:NaN"; an empty or huge rtpmap rate became the clock
 * rate; and the answer refusing our stream had one m-line whatever the offer had.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import {
  buildSipAnswer, checkBrowserOffer, chooseSipCodec, parseSipAnswer, parseSipOffer, telephoneEventFor,
  type SipMediaDescription, type SipSdpOptions,
} from '../../src/sdp';
import { chooseCrypto, type SdesCrypto } from '../../src/media/srtp';
import { usableEventClock } from '../../src/media/dtmf';
import { explain, prng, timeOf } from '../support/fuzz';

const sdp = (...lines: string[]) => `${lines.join('\r\n')}\r\n`;
const KEY = 'WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz'; // 30 bytes, base64

const SIP_BASES: Record<string, string> = {
  asteriskSrtp: sdp(
    'v=0', 'o=- 1795422637 1795422637 IN IP4 192.0.2.10', 's=Asterisk', 'c=IN IP4 192.0.2.10', 't=0 0',
    'm=audio 10000 RTP/SAVP 8 0 3 18 101', 'a=rtpmap:8 PCMA/8000', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:3 GSM/8000',
    'a=rtpmap:18 G729/8000', 'a=fmtp:18 annexb=no', 'a=rtpmap:101 telephone-event/8000', 'a=fmtp:101 0-16',
    'a=ptime:20', 'a=maxptime:150', 'a=rtcp:10001',
    `a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:${KEY}|2^20|1:4 KDR=0`,
    `a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:${KEY}|2^20|1:32`,
    'a=sendrecv',
  ),
  freeswitchOpus: sdp(
    'v=0', 'o=FreeSWITCH 1700000000 1700000001 IN IP4 198.51.100.7', 's=FreeSWITCH', 'c=IN IP4 198.51.100.7', 't=0 0',
    'm=audio 24680 RTP/AVP 102 9 0 8 100 101 13', 'a=rtpmap:102 opus/48000/2',
    'a=fmtp:102 useinbandfec=1; maxaveragebitrate=30000; maxplaybackrate=48000; ptime=20; minptime=10; maxptime=40',
    'a=rtpmap:9 G722/8000', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:8 PCMA/8000', 'a=rtpmap:100 telephone-event/48000',
    'a=fmtp:100 0-16', 'a=rtpmap:101 telephone-event/8000', 'a=fmtp:101 0-16', 'a=rtpmap:13 CN/8000',
    'a=ptime:20', 'a=sendrecv', 'a=rtcp:24681 IN IP4 198.51.100.7',
  ),
  carrier: sdp(
    'v=0', 'o=Sonus_UAC 26345 7890 IN IP4 203.0.113.1', 's=SIP Media Capabilities', 'c=IN IP4 203.0.113.1', 't=0 0',
    'm=audio 33000 RTP/AVP 18 0 8 96', 'c=IN IP4 203.0.113.77', 'a=rtpmap:96 telephone-event/8000', 'a=fmtp:96 0-15',
    'a=rtcp-mux', 'a=ptime:30', 'a=sendrecv',
  ),
  audioVideo: sdp(
    'v=0', 'o=- 1 1 IN IP4 192.0.2.30', 's=-', 'c=IN IP4 192.0.2.30', 't=0 0',
    'm=video 5002 RTP/AVP 96', 'a=rtpmap:96 H264/90000', 'a=fmtp:96 profile-level-id=42e01f',
    'm=audio 5000 RTP/AVP 0 101', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:101 telephone-event/8000',
    'm=audio 5004 RTP/AVP 8', 'a=rtpmap:8 PCMA/8000',
  ),
  ipv6Hold: sdp(
    'v=0', 'o=- 2 2 IN IP6 2001:db8::30', 's=-', 'c=IN IP6 2001:db8::30', 't=0 0',
    'm=audio 6000 RTP/AVP 0 8 101', 'a=rtpmap:101 telephone-event/8000', 'a=sendonly', 'a=ptime:40',
  ),
  rfc2543Hold: sdp(
    'v=0', 'o=- 3 3 IN IP4 192.0.2.40', 's=-', 'c=IN IP4 0.0.0.0', 't=0 0', 'm=audio 7000 RTP/AVP 0', 'a=recvonly',
  ),
  answer: sdp(
    'v=0', 'o=- 4 5 IN IP4 192.0.2.50', 's=-', 't=0 0', 'm=audio 8000 RTP/AVP 0 101',
    'c=IN IP4 192.0.2.50', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:101 telephone-event/8000', 'a=fmtp:101 0-16', 'a=rtcp-mux',
  ),
};

const BROWSER_BASES: Record<string, string> = {
  chrome: sdp(
    'v=0', 'o=- 4611731400430051336 2 IN IP4 127.0.0.1', 's=-', 't=0 0', 'a=group:BUNDLE 0', 'a=msid-semantic: WMS',
    'm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126', 'c=IN IP4 0.0.0.0', 'a=rtcp:9 IN IP4 0.0.0.0',
    'a=candidate:1467250027 1 udp 2122260223 192.168.0.196 46243 typ host generation 0 network-id 1',
    'a=ice-ufrag:Xq3L', 'a=ice-pwd:1uQ5Yb3yZk0XKq3cW6pOjcZD', 'a=ice-options:trickle',
    'a=fingerprint:sha-256 8A:4F:0C:1B:9E:6D:22:31:7A:5E:90:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23',
    'a=setup:actpass', 'a=mid:0', 'a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level', 'a=sendrecv',
    'a=msid:- 3a4c8f5e-9d1b-4c1e-8f1a-2b3c4d5e6f70', 'a=rtcp-mux', 'a=rtcp-rsize',
    'a=rtpmap:111 opus/48000/2', 'a=rtcp-fb:111 transport-cc', 'a=fmtp:111 minptime=10;useinbandfec=1',
    'a=rtpmap:63 red/48000/2', 'a=fmtp:63 111/111', 'a=rtpmap:9 G722/8000', 'a=rtpmap:0 PCMU/8000',
    'a=rtpmap:8 PCMA/8000', 'a=rtpmap:13 CN/8000', 'a=rtpmap:110 telephone-event/48000', 'a=rtpmap:126 telephone-event/8000',
    'a=ssrc:1001 cname:abcdEFGHijkl', 'a=ssrc:1001 msid:- 3a4c8f5e-9d1b-4c1e-8f1a-2b3c4d5e6f70',
  ),
  firefox: sdp(
    'v=0', 'o=mozilla...THIS_IS_SDPARTA-99.0 7390566347018387000 0 IN IP4 0.0.0.0', 's=-', 't=0 0',
    'a=fingerprint:sha-256 6D:A0:BD:1E:F0:7C:2B:8F:9E:55:40:1B:DE:12:98:33:7C:A6:51:31:5A:7E:19:24:9B:7E:DD:0E:80:44:A9:16',
    'a=group:BUNDLE 0', 'a=ice-options:trickle', 'a=msid-semantic:WMS *',
    'm=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101', 'c=IN IP4 0.0.0.0', 'a=sendrecv',
    'a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level', 'a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1',
    'a=fmtp:101 0-15', 'a=ice-pwd:6a1d6c5f0e2b4f4c9a3e8d7b1c2f3e4d', 'a=ice-ufrag:2d9e1f0a', 'a=mid:0',
    'a=msid:{1e2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b} {7f8e9d0c-1b2a-4394-8576-a7b8c9d0e1f2}',
    'a=rtcp-mux', 'a=rtpmap:109 opus/48000/2', 'a=rtpmap:9 G722/8000/1', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:8 PCMA/8000',
    'a=rtpmap:101 telephone-event/8000', 'a=setup:actpass', 'a=ssrc:3242356357 cname:{a1b2c3d4-e5f6-4789-8abc-def012345678}',
  ),
};

const NUMBERS = ['', '0', '00000', '0001', '1', '65535', '65536', '99999', '4294967296', '99999999999999999999', '-1', '1e3', '0x10', '1.5', '1.2.3', 'NaN', 'Infinity', '٣'];
/** Attribute and field lines with the faults peers send (or could). */
const BAD_LINES = [
  'a=rtpmap:96 1234/8000', 'a=rtpmap:0 PCMU/99999999999999999999', 'a=rtpmap:0', 'a=rtpmap: PCMU/8000', 'a=rtpmap:0 PCMU/8000/x',
  'a=rtpmap:101 telephone-event/0', 'a=rtpmap:101 telephone-event/7', 'a=rtpmap:8 0/8000',
  'a=ptime:1.2.3', 'a=ptime:', 'a=ptime:0', 'a=ptime:99999999999', 'a=ptime:.', 'a=maxptime:x',
  'a=rtcp:', 'a=rtcp:99999', 'a=rtcp:0', 'a=rtcp:5 IN IP4 1234', 'a=rtcp-mux', 'a=rtcp-mux:x',
  'a=crypto:', 'a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:', 'a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA|2^20|1:999', 'a=crypto:x y z',
  `a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:${KEY}|2^20|${'9'.repeat(40)}:128`, `a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:${KEY}|${'9'.repeat(300)}`,
  `a=crypto:99999999999 AES_CM_128_HMAC_SHA1_80 inline:${KEY} WSH=99999999999999999999`, `a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:${KEY} KDR=`,
  'c=IN IP4 1234', 'c=IN IP6 ::ffff:1.2.3.4', 'c=IN IP4 999.1.1.1', 'c=IN IP4 192.0.2.1/127', 'c=IN IP4 ', 'c=', 'c=IN IP4 host.example.com',
  'm=audio 0 RTP/AVP 0', 'm=123 5 6 7', 'm=audio 5 123 0', 'm=audio 9 UDP/TLS/RTP/SAVPF', 'm=audio', 'm=', 'm=audio 70000 RTP/AVP 0', 'm=audio 0000 RTP/AVP 0',
  'a=sendonly', 'a=inactive', 'a=recvonly', 'a=fmtp:101 0-16', 'a=fmtp:', 'a=ice-ufrag:0', 'a=ice-pwd:1', 'a=fingerprint:sha-256', 'a=setup:',
  'a=candidate:1 1 udp 1 1.2.3.4 99999999999 typ host', 'a=ssrc:99999999999999999999 cname:x', 'a=mid:', 'a=group:BUNDLE', 'a=extmap:99999 x',
  'a=simulcast:send 1;2 recv 3', 'a=imageattr:* send * recv *', 'a=rid:1 send', 'a=msid-semantic: WMS', 'b=AS:', 'b=AS:99999999999999999999',
  'o=- x y IN IP4 1.2.3.4', 's=', 't=x y', 'v=1', 'v=0', 'a=', 'a=:', 'x=unknown', '=', 'a=rtpmap:96 opus/48000/2', 'a=rtpmap:96 PCMU/8000',
];
const BAD_UTF8 = ['\ufffd', '\ufffd\ufffd', '\u0000', '\u2028', '\u00a0', '\ufeff', '\ud800'];

/** One bad SDP made from `base`. */
function mutate(r: ReturnType<typeof prng>, base: string): string {
  const lines = base.split('\r\n');
  const line = () => r.int(lines.length);
  const joined = () => lines.join('\r\n');
  switch (r.int(14)) {
    case 0: { // flip bits (an SDP body is bytes on the wire, decoded as UTF-8)
      const b = Buffer.from(base);
      for (let k = 1 + r.int(6); k > 0; k--) b[r.int(b.length)] ^= 1 << r.int(8);
      return b.toString('utf8');
    }
    case 1: return base.slice(0, r.int(base.length)); // cut short
    case 2: { const i = line(); lines.splice(line(), 0, lines[i]); return joined(); } // a line twice
    case 3: { for (let k = 1 + r.int(3); k > 0; k--) lines.splice(line(), 1); return joined(); } // lines gone
    case 4: { const i = line(); const j = line(); [lines[i], lines[j]] = [lines[j], lines[i]]; return joined(); } // out of order
    case 5: { // a number replaced
      const i = line();
      let n = 0;
      const digits = lines[i].match(/\d+/g)?.length ?? 0;
      const which = digits ? r.int(digits) : -1;
      lines[i] = lines[i].replace(/\d+/g, (m) => (n++ === which ? r.pick(NUMBERS) : m));
      return joined();
    }
    case 6: { // a word replaced by a number: sdp-transform then hands back a number, not a string
      const i = line();
      const words = lines[i].slice(2).split(' ');
      words[r.int(words.length)] = r.pick(['0', '1234', '8000', '1', '65535']);
      lines[i] = lines[i].slice(0, 2) + words.join(' ');
      return joined();
    }
    case 7: { // line ends: LF, CR, mixed, blank lines, trailing spaces
      const variant = r.int(4);
      if (variant === 0) return base.replace(/\r\n/g, '\n');
      if (variant === 1) return base.replace(/\r\n/g, '\r');
      if (variant === 2) return base.replace(/\r\n/g, () => r.pick(['\r\n', '\n', '\r', '\r\n\r\n', ' \r\n', '\n\r']));
      return base.replace(/\r\n/g, '\t \r\n');
    }
    case 8: { // NUL, replacement characters (bad UTF-8 decoded), line and paragraph separators, a lone surrogate
      const at = r.int(base.length + 1);
      return base.slice(0, at) + r.pick(BAD_UTF8) + base.slice(at);
    }
    case 9: { // a very long line
      const i = line();
      const fill = r.pick(['a', ' ', '0', '9', '/', ':', ';', '=', '[', ']', '.']).repeat(500 + r.int(8000));
      lines[i] = r.int(2) ? lines[i] + fill : `a=${r.pick(['rtpmap:96 ', 'fmtp:96 ', 'crypto:1 ', 'candidate:', 'ssrc:1 ', 'simulcast:send ', 'imageattr:97 send ', 'ptime:', 'rtcp:', 'x-'])}${fill}`;
      return joined();
    }
    case 10: { lines.splice(line(), 0, r.pick(BAD_LINES)); return joined(); } // a broken attribute or field
    case 11: { // the same m-section many times, or many m-sections of payload types
      const m = lines.findIndex((l) => l.startsWith('m='));
      if (m < 0) return base;
      const section = lines.slice(m).filter(Boolean);
      const copies = Array.from({ length: 2 + r.int(30) }, () => section.join('\r\n'));
      return `${lines.slice(0, m).join('\r\n')}\r\n${copies.join('\r\n')}\r\n`;
    }
    case 12: { // a long m-line format list
      const m = lines.findIndex((l) => l.startsWith('m='));
      if (m < 0) return base;
      lines[m] += Array.from({ length: 1 + r.int(300) }, () => ` ${r.int(200)}`).join('');
      return joined();
    }
    default: return r.bytes(r.int(400)).toString('utf8'); // noise
  }
}

const KEYS: SdesCrypto[] = [
  { tag: 1, suite: 'AES_CM_128_HMAC_SHA1_80', key: Buffer.alloc(16, 0x11), salt: Buffer.alloc(14, 0x22) },
  { tag: 2, suite: 'AES_CM_128_HMAC_SHA1_32', key: Buffer.alloc(16, 0x33), salt: Buffer.alloc(14, 0x44) },
];
/** What a call answers with (callBase localSdpOptions): plain, SDES, Opus too, IPv6, mid-call codec kept. */
const ANSWER_OPTIONS: SipSdpOptions[] = [
  { advertisedHost: '198.51.100.20', port: 40000, srtp: 'off', codecs: ['PCMU', 'PCMA'] },
  { advertisedHost: '198.51.100.20', port: 40002, srtp: 'optional', localCrypto: KEYS, codecs: ['PCMA', 'PCMU', 'opus'], keepCodec: 'PCMA', direction: 'sendonly' },
  { advertisedHost: '2001:db8::20', port: 40004, srtp: 'mandatory', localCrypto: [KEYS[0]], codecs: ['opus', 'PCMU'], ptime: 30 },
];

const DIRECTIONS = new Set(['sendrecv', 'sendonly', 'recvonly', 'inactive']);
const isPort = (p: unknown) => typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535;
const isPt = (p: unknown) => typeof p === 'number' && Number.isInteger(p) && p >= 0 && p <= 127;
/** A reason to log and put in a 488's warning: a sentence, not the peer's SDP echoed back. */
const MAX_ERROR_CHARS = 200;

function checkError(e: { error: string }): void {
  assert.equal(typeof e.error, 'string');
  assert.ok(e.error.length > 0 && e.error.length <= MAX_ERROR_CHARS, `error ${JSON.stringify(e.error.slice(0, 300))}`);
}

/** A description the media layer can take as it is (SipLegRemote), every field of its type. */
function checkDescription(d: SipMediaDescription, what: () => string): void {
  explain(() => `${what()}\n  → ${JSON.stringify(d).slice(0, 600)}`, () => {
    assert.equal(typeof d.address, 'string', 'address');
    assert.notEqual(isIP(d.address), 0, 'address');
    assert.ok(isPort(d.port), 'port');
    assert.ok(d.rtcpPort === undefined || isPort(d.rtcpPort), 'rtcpPort');
    assert.equal(typeof d.rtcpMux, 'boolean', 'rtcpMux');
    assert.ok(d.codecs.length > 0, 'codecs');
    for (const c of d.codecs) {
      assert.ok(typeof c.name === 'string' && c.name.length > 0, 'codec name');
      assert.ok(isPt(c.payloadType), 'payload type');
      assert.ok(typeof c.clockRate === 'number' && Number.isFinite(c.clockRate) && c.clockRate > 0, 'clock rate');
    }
    for (const t of d.telephoneEvents ?? []) assert.ok(isPt(t.payloadType) && usableEventClock(t.clockRate), 'telephone-event');
    assert.ok(d.telephoneEventPayloadType === undefined || isPt(d.telephoneEventPayloadType), 'telephoneEventPayloadType');
    assert.ok(d.ptime === undefined || (typeof d.ptime === 'number' && Number.isFinite(d.ptime) && d.ptime > 0), 'ptime');
    assert.ok(DIRECTIONS.has(d.direction), 'direction');
    assert.ok(Array.isArray(d.crypto) && d.crypto.every((c) => typeof c === 'string'), 'crypto');
    assert.equal(typeof d.profile, 'string', 'profile');
    const s = d.streams!;
    assert.ok(s.sections.every((m) => typeof m.type === 'string' && typeof m.protocol === 'string' && typeof m.fmt === 'string'), 'streams');
    assert.equal(s.sections[s.audioIndex]?.type, 'audio', 'streams.audioIndex');
  });
}

/** Our answer: well-formed lines, one m-line per offered one, and it parses back (our stream, or refused). */
function checkAnswer(d: SipMediaDescription, o: SipSdpOptions, what: () => string): 'accepted' | 'refused' {
  let answer = '';
  return explain(() => `${what()}\n  answer (${o.srtp}, ${o.codecs.join(' ')}): ${JSON.stringify(answer.slice(0, 600))}`, () => {
    answer = buildSipAnswer(d, o);
    assert.ok(answer.endsWith('\r\n'), 'ends with CRLF');
    const lines = answer.slice(0, -2).split('\r\n');
    for (const l of lines) assert.match(l, /^[a-z]=[^\r\n]*$/);
    assert.equal(lines.filter((l) => l.startsWith('m=')).length, Math.max(1, d.streams!.sections.length), 'one m-line per offered one');
    const back = parseSipAnswer(answer);
    if ('error' in back) {
      assert.equal(back.error, 'audio stream rejected (port 0)');
      return 'refused';
    }
    assert.equal(back.port, o.port);
    assert.equal(back.address, o.advertisedHost);
    assert.equal(back.codecs.length, 1);
    assert.ok(o.codecs.some((c) => c.toLowerCase() === back.codecs[0].name.toLowerCase()), 'one of our codecs');
    assert.ok(back.ptime !== undefined && Number.isFinite(back.ptime), 'a=ptime');
    return 'accepted';
  });
}

const SLOW_MS = 5;
const TOO_SLOW_MS = 50;
/** More than a SIP message (PARSE_LIMITS.maxMessageBytes) or a signaling message (limits.wsMaxMessageBytes) can carry. */
const MAX_SDP_CHARS = 70_000;

interface Stats { inputs: number; parsed: number; accepted: number; refused: number; browserOk: number; slowest: number; slowestWhat: string; errors: Map<string, number> }
const newStats = (): Stats => ({ inputs: 0, parsed: 0, accepted: 0, refused: 0, browserOk: 0, slowest: 0, slowestWhat: '', errors: new Map() });

/** Every SDP reader on one input. */
function checkOne(text: string, what: () => string, stats: Stats): void {
  stats.inputs++;
  const t0 = process.hrtime.bigint();
  const offer = explain(() => `${what()}: parseSipOffer`, () => parseSipOffer(text));
  const browser = explain(() => `${what()}: checkBrowserOffer`, () => checkBrowserOffer(text));
  let ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (ms > SLOW_MS) {
    ms = timeOf(() => { parseSipOffer(text); checkBrowserOffer(text); });
    if (ms >= TOO_SLOW_MS) assert.fail(`${what()}: ${ms.toFixed(2)} ms for ${text.length} characters`);
  }
  if (ms > stats.slowest) { stats.slowest = ms; stats.slowestWhat = what().slice(0, 50); }
  if (browser === null) stats.browserOk++;
  explain(what, () => {
    assert.ok(browser === null || (typeof browser === 'string' && browser.length > 0 && browser.length <= MAX_ERROR_CHARS), `checkBrowserOffer said ${JSON.stringify(browser)}`);
    // parseSipAnswer is the same reader today; an answer is checked as an answer all the same.
    assert.deepEqual(parseSipAnswer(text), offer, 'parseSipAnswer');
    if ('error' in offer) checkError(offer);
  });
  if ('error' in offer) {
    const kind = offer.error.replace(/ "[^]*$|: [^]*$| \d[^]*$/, '');
    stats.errors.set(kind, (stats.errors.get(kind) ?? 0) + 1);
    return;
  }
  stats.parsed++;
  checkDescription(offer, what);
  explain(what, () => {
    chooseSipCodec(offer.codecs, ['PCMU', 'PCMA', 'opus'], { preferG711: true });
    telephoneEventFor(offer, 8000);
    telephoneEventFor(offer, 48000);
    chooseCrypto(offer.crypto);
  });
  for (const o of ANSWER_OPTIONS) stats[checkAnswer(offer, o, what)]++;
}

const report = (name: string, s: Stats, t0: number) => {
  console.log(`${name}: ${s.inputs} inputs, ${s.parsed} parsed into a description (${s.accepted} answers with our stream, ${s.refused} refusing it, over ${ANSWER_OPTIONS.length} answer settings), ${s.browserOk} passed checkBrowserOffer; slowest ${s.slowest.toFixed(2)} ms (${s.slowestWhat}); ${Date.now() - t0} ms in all`);
  console.log(`  errors: ${[...s.errors].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ')}`);
};

const ALL_BASES = Object.entries({ ...SIP_BASES, ...BROWSER_BASES });

// ---------------------------------------------------------------- targeted: what the fuzz found

const PLAIN = SIP_BASES.carrier;
const offerWith = (from: string | RegExp, to: string) => PLAIN.replace(from, to);

test('an a=rtpmap whose encoding name is all digits is a name, not a crash (sdp-transform hands it back as a number)', () => {
  const offer = offerWith('a=rtpmap:96 telephone-event/8000', 'a=rtpmap:96 1234/8000\r\na=rtpmap:97 telephone-event/8000').replace('18 0 8 96', '18 0 8 96 97');
  const d = parseSipOffer(offer);
  assert.ok(!('error' in d), JSON.stringify(d));
  assert.deepEqual(d.codecs.map((c) => c.name), ['G729', 'PCMU', 'PCMA', '1234']);
  assert.equal(d.telephoneEventPayloadType, 97);
  // And a tab's offer whose only rtpmap names are digits is refused with the reason, not thrown on.
  const tab = BROWSER_BASES.chrome.replace(/a=rtpmap:(\d+) [^/\r\n]+/g, 'a=rtpmap:$1 123');
  assert.equal(checkBrowserOffer(tab), 'no codec in common: the gateway needs Opus or PCMU');
});

test('a c= address of digits only is refused as not an IP address, not thrown on', () => {
  const d = parseSipOffer(offerWith('c=IN IP4 203.0.113.77', 'c=IN IP4 1234'));
  assert.deepEqual(d, { error: 'connection address "1234" is not an IP address (host names in c= are not supported)' });
});

test('an m=audio port that is not 1-65535 is refused; leading zeros are a number; "0000" is port 0 (a refused stream)', () => {
  const port = (p: string) => parseSipOffer(offerWith('m=audio 33000 ', `m=audio ${p} `));
  for (const p of ['65536', '99999', '4294967296', '99999999999999999999']) {
    assert.deepEqual(port(p), { error: `m=audio port ${p} is not a port number` }, p);
  }
  assert.deepEqual(parseSipOffer(offerWith('m=audio 33000 ', 'm=audio  ')), { error: 'm=audio port "" is not a port number' });
  const zeros = port('0001');
  assert.ok(!('error' in zeros));
  assert.equal(zeros.port, 1, 'a number, not the string "0001" (whose RTCP port would be "00011")');
  assert.deepEqual(port('0000'), { error: 'audio stream rejected (port 0)' });
  assert.equal(port('65535').hasOwnProperty('error'), false);
});

test('an a=rtcp port that is not 1-65535 is ignored (RTCP to the RTP port + 1), not passed on; a good one is a number', () => {
  for (const v of ['', '99999', '0']) {
    const ignored = parseSipOffer(offerWith('a=rtcp-mux', `a=rtcp:${v}`));
    assert.ok(!('error' in ignored), v);
    assert.equal(ignored.rtcpPort, undefined, v);
  }
  const d = parseSipOffer(offerWith('a=rtcp-mux', 'a=rtcp:00033001'));
  assert.ok(!('error' in d));
  assert.equal(d.rtcpPort, 33001);
});

test('a proto field of digits is a string: our answer refusing it is built, not thrown on', () => {
  const d = parseSipOffer(offerWith('RTP/AVP', '123'));
  assert.ok(!('error' in d), JSON.stringify(d));
  assert.equal(d.profile, '123');
  assert.match(buildSipAnswer(d, ANSWER_OPTIONS[0]), /\r\nm=audio 40000 RTP\/AVP 18\r\n|\r\nm=audio 40000 RTP\/AVP 0 /);
});

test('an a=ptime that is not a number is ignored, never answered as "a=ptime:NaN"', () => {
  for (const v of ['1.2.3', '.', '0']) {
    const d = parseSipOffer(offerWith('a=ptime:30', `a=ptime:${v}`));
    assert.ok(!('error' in d));
    assert.equal(d.ptime, undefined, v);
    assert.match(buildSipAnswer(d, ANSWER_OPTIONS[0]), /\r\na=ptime:20\r\n/, v);
  }
  const rate = parseSipOffer(offerWith('a=rtpmap:96 telephone-event/8000', 'a=rtpmap:0 PCMU/99999999999999999999\r\na=rtpmap:96 telephone-event/8000'));
  assert.ok(!('error' in rate));
  assert.equal(rate.codecs.find((c) => c.name === 'PCMU')?.clockRate, 8000, 'a clock rate past a safe integer (a string from sdp-transform) is the codec\'s usual one');
  const empty = parseSipOffer(offerWith('a=rtpmap:96 telephone-event/8000', 'a=rtpmap:8 PCMA/\r\na=rtpmap:96 telephone-event/8000'));
  assert.ok(!('error' in empty));
  assert.equal(empty.codecs.find((c) => c.name === 'PCMA')?.clockRate, 8000, '"PCMA/" (an empty rate, the string "")');
});

// ---------------------------------------------------------------- the fuzz

test('every base SDP is read as it should be (the fuzz starts from valid input)', () => {
  for (const [name, text] of Object.entries(SIP_BASES)) {
    const d = parseSipOffer(text);
    assert.ok(!('error' in d), `${name}: ${JSON.stringify(d)}`);
    checkDescription(d, () => name);
    for (const o of ANSWER_OPTIONS) checkAnswer(d, o, () => name);
  }
  for (const [name, text] of Object.entries(BROWSER_BASES)) assert.equal(checkBrowserOffer(text), null, name);
  const av = parseSipOffer(SIP_BASES.audioVideo);
  assert.ok(!('error' in av));
  assert.deepEqual([av.port, av.streams?.audioIndex, av.streams?.sections.length], [5000, 1, 3]);
  const hold = parseSipOffer(SIP_BASES.rfc2543Hold);
  assert.ok(!('error' in hold));
  assert.equal(hold.direction, 'inactive');
});

test('every prefix of every SDP: a description or a clear error, never a throw', () => {
  const t0 = Date.now();
  const stats = newStats();
  for (const [name, text] of ALL_BASES) {
    for (let n = 0; n <= text.length; n++) checkOne(text.slice(0, n), () => `${name}[0..${n}]: ${JSON.stringify(text.slice(0, n))}`, stats);
  }
  report('prefixes', stats, t0);
  assert.ok(stats.parsed > 500 && stats.parsed < stats.inputs, JSON.stringify({ ...stats, errors: undefined }));
});

test('12000 seeded mutations of real offers and answers: a usable description or a clear error, an answer that parses, never a throw', () => {
  const t0 = Date.now();
  const stats = newStats();
  for (const seed of [0x5dbf001, 0x5dbf002, 0x5dbf003]) {
    const r = prng(seed);
    for (let i = 0; i < 4000; i++) {
      const [name, base] = ALL_BASES[i % ALL_BASES.length];
      let text = mutate(r, base);
      for (let k = r.int(3) === 0 ? 1 + r.int(3) : 0; k > 0; k--) text = mutate(r, text);
      // No peer gets more to us: a SIP body fits in a 64 KB message, a tab's offer in a 64 KB WebSocket message.
      text = text.slice(0, MAX_SDP_CHARS);
      checkOne(text, () => `seed ${seed.toString(16)} round ${i} (${name}): ${JSON.stringify(text.slice(0, 3000))}`, stats);
    }
  }
  report('mutations', stats, t0);
  // Both outcomes, and many kinds of refusal: a fuzz that only made noise would test nothing.
  assert.ok(stats.parsed > 3000 && stats.parsed < stats.inputs - 2000, JSON.stringify({ ...stats, errors: undefined }));
  assert.ok(stats.accepted > 3000 && stats.refused > 500, JSON.stringify({ ...stats, errors: undefined }));
  assert.ok(stats.browserOk > 500, `${stats.browserOk} mutated offers passed checkBrowserOffer`);
  assert.ok(stats.errors.size >= 7, [...stats.errors.keys()].join('; '));
});

/** Adversarial shapes of about `n` characters, for the growth test. */
const GROWTH: Array<[string, (n: number) => string]> = [
  ['many attribute lines', (n) => PLAIN + 'a=x-y:z\r\n'.repeat(n / 9)],
  ['many m-sections', (n) => PLAIN + 'm=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n'.repeat(n / 44)],
  ['a long m-line format list', (n) => PLAIN.replace('18 0 8 96', `${'18 '.repeat(n / 3)}0`)],
  ['many a=rtpmap', (n) => PLAIN.replace('a=rtcp-mux', 'a=rtpmap:96 telephone-event/8000\r\n'.repeat(n / 34))],
  ['many a=crypto', (n) => PLAIN.replace('a=rtcp-mux', `a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:${KEY}\r\n`.repeat(n / 80))],
  ['one long fmtp', (n) => PLAIN.replace('a=fmtp:96 0-15', `a=fmtp:96 ${'a=b;'.repeat(n / 4)}`)],
  ['one long a=crypto of pipes', (n) => PLAIN.replace('a=rtcp-mux', `a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:${KEY}${'|'.repeat(n)}`)],
  ['one long a=crypto of key params', (n) => PLAIN.replace('a=rtcp-mux', `a=crypto:1 AES_CM_128_HMAC_SHA1_80 ${'inline:AAAA;'.repeat(n / 12)}`)],
  ['one long candidate', (n) => BROWSER_BASES.chrome.replace('typ host', `typ host${' generation 0'.repeat(n / 13)}`)],
  ['simulcast of recv', (n) => BROWSER_BASES.chrome.replace('a=rtcp-mux', `a=simulcast:send ${'recv'.repeat(n / 4)}!`)],
  ['imageattr of brackets', (n) => BROWSER_BASES.chrome.replace('a=rtcp-mux', `a=imageattr:97 send ${'[a] '.repeat(n / 4)}x`)],
  ['ptime of dots', (n) => PLAIN.replace('a=ptime:30', `a=ptime:1${'.'.repeat(n)}x`)],
  ['floorid of spaces', (n) => PLAIN.replace('a=rtcp-mux', `a=floorid:${'a '.repeat(n / 2)}`)],
  ['blank lines', (n) => PLAIN.replace('t=0 0', `t=0 0${'\r\n'.repeat(n / 2)}`)],
  ['line of spaces', (n) => PLAIN.replace('a=rtcp-mux', `a=${' '.repeat(n)}`)],
];

test('no super-linear blow-up: a 10x larger adversarial SDP (10 KB → 100 KB) takes well under 50x the time', () => {
  const rows: string[] = [];
  for (const [name, make] of GROWTH) {
    const small = make(10_000);
    const large = make(100_000);
    const run = (s: string) => () => { parseSipOffer(s); checkBrowserOffer(s); };
    for (let i = 0; i < 3; i++) { run(small)(); run(large)(); }
    const a = timeOf(run(small));
    const b = timeOf(run(large));
    const ratio = b / Math.max(a, 0.01);
    rows.push(`${name.padEnd(34)} ${small.length.toString().padStart(6)} ch ${(a * 1000).toFixed(0).padStart(7)} µs  ${large.length.toString().padStart(6)} ch ${(b * 1000).toFixed(0).padStart(7)} µs  ${ratio.toFixed(1)}x`);
    assert.ok(ratio < 50, `${name}: ${ratio.toFixed(1)}x the time for 10x the input (${a.toFixed(3)} ms → ${b.toFixed(3)} ms)`);
    assert.ok(b < 200, `${name}: ${b.toFixed(1)} ms for ${large.length} characters`);
  }
  console.log(rows.join('\n'));
});
