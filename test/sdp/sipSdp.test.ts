import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { buildSipAnswer, buildSipOffer, chooseSipCodec, parseSipAnswer, parseSipOffer, telephoneEventFor, type SipMediaDescription, type SipSdpOptions } from '../../src/sdp/sipSdp';
import { chooseCrypto, parseCryptoAttribute, type SdesCrypto } from '../../src/media/srtp';

const CRLF = '\r\n';
const sdp = (...lines: string[]) => `${lines.join(CRLF)}${CRLF}`;
const linesOf = (s: string) => s.split(CRLF).filter(Boolean);
const attr = (s: string, name: string) => linesOf(s).filter((l) => l.startsWith(`a=${name}`));
const mLine = (s: string) => linesOf(s).find((l) => l.startsWith('m='));

/** Fixed keys so the expected a=crypto text can be written out. */
const crypto80: SdesCrypto = { tag: 1, suite: 'AES_CM_128_HMAC_SHA1_80', key: Buffer.alloc(16, 0x11), salt: Buffer.alloc(14, 0x22) };
const crypto32: SdesCrypto = { tag: 2, suite: 'AES_CM_128_HMAC_SHA1_32', key: Buffer.alloc(16, 0x33), salt: Buffer.alloc(14, 0x44) };
const inline = (c: SdesCrypto) => Buffer.concat([c.key, c.salt]).toString('base64');

const offerOpts = (over: Partial<SipSdpOptions> = {}): SipSdpOptions => ({
  advertisedHost: '198.51.100.20',
  port: 40000,
  srtp: 'off',
  localCrypto: [crypto80, crypto32],
  codecs: ['PCMU', 'PCMA'],
  ...over,
});

function ok(r: SipMediaDescription | { error: string }): SipMediaDescription {
  if ('error' in r) assert.fail(`expected a media description, got error: ${r.error}`);
  return r;
}

function err(r: SipMediaDescription | { error: string }): string {
  assert.ok('error' in r, `expected {error}, got ${JSON.stringify(r)}`);
  assert.equal(typeof r.error, 'string');
  assert.ok(r.error.length > 0);
  return r.error;
}

// --- Real-world offers, as trunks send them -------------------------------------------------

/** Asterisk (chan_pjsip) with media_encryption=sdes: MKI on the keys, session params on the first. */
const ASTERISK_SRTP_OFFER = sdp(
  'v=0',
  'o=- 1795422637 1795422637 IN IP4 192.0.2.10',
  's=Asterisk',
  'c=IN IP4 192.0.2.10',
  't=0 0',
  'm=audio 10000 RTP/SAVP 8 0 3 18 101',
  'a=rtpmap:8 PCMA/8000',
  'a=rtpmap:0 PCMU/8000',
  'a=rtpmap:3 GSM/8000',
  'a=rtpmap:18 G729/8000',
  'a=fmtp:18 annexb=no',
  'a=rtpmap:101 telephone-event/8000',
  'a=fmtp:101 0-16',
  'a=ptime:20',
  'a=maxptime:150',
  'a=rtcp:10001',
  'a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 KDR=0 UNENCRYPTED_SRTCP',
  'a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32 KDR=0',
  'a=sendrecv',
);

/** FreeSWITCH: G722 first, Opus on a dynamic PT, CN, two telephone-events, AES-256 suites we cannot do first. */
const FREESWITCH_OFFER = sdp(
  'v=0',
  'o=FreeSWITCH 1700000000 1700000001 IN IP4 198.51.100.7',
  's=FreeSWITCH',
  'c=IN IP4 198.51.100.7',
  't=0 0',
  'm=audio 24680 RTP/SAVP 9 102 0 8 100 101 13',
  'a=rtpmap:9 G722/8000',
  'a=rtpmap:102 opus/48000/2',
  'a=fmtp:102 useinbandfec=1; maxaveragebitrate=30000; maxplaybackrate=48000; ptime=20; minptime=10; maxptime=40',
  'a=rtpmap:0 PCMU/8000',
  'a=rtpmap:8 PCMA/8000',
  'a=rtpmap:100 telephone-event/48000',
  'a=fmtp:100 0-16',
  'a=rtpmap:101 telephone-event/8000',
  'a=fmtp:101 0-16',
  'a=rtpmap:13 CN/8000',
  'a=crypto:1 AEAD_AES_256_GCM_8 inline:ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZm',
  'a=crypto:2 AES_256_CM_HMAC_SHA1_80 inline:ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZm',
  'a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz',
  'a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj',
  'a=ptime:20',
  'a=sendrecv',
  'a=rtcp:24681 IN IP4 198.51.100.7',
);

/** A plain carrier offer (e.g. a Sonus/Ribbon SBC): media-level c=, rtcp-mux, no a=rtpmap for static PTs. */
const CARRIER_OFFER = sdp(
  'v=0',
  'o=Sonus_UAC 26345 7890 IN IP4 203.0.113.1',
  's=SIP Media Capabilities',
  'c=IN IP4 203.0.113.1',
  't=0 0',
  'm=audio 33000 RTP/AVP 18 0 8 96',
  'c=IN IP4 203.0.113.77',
  'a=rtpmap:96 telephone-event/8000',
  'a=fmtp:96 0-15',
  'a=rtcp-mux',
  'a=ptime:30',
  'a=sendrecv',
);

describe('buildSipOffer', () => {
  test('srtp off: RTP/AVP, no a=crypto even with keys at hand', () => {
    const o = buildSipOffer(offerOpts({ srtp: 'off' }));
    assert.equal(mLine(o), 'm=audio 40000 RTP/AVP 0 8 101');
    assert.deepEqual(attr(o, 'crypto'), []);
  });

  test('srtp optional: best-effort SRTP is RTP/AVP carrying both a=crypto suites', () => {
    const o = buildSipOffer(offerOpts({ srtp: 'optional' }));
    assert.equal(mLine(o), 'm=audio 40000 RTP/AVP 0 8 101');
    assert.deepEqual(attr(o, 'crypto'), [
      `a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:${inline(crypto80)}`,
      `a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:${inline(crypto32)}`,
    ]);
  });

  test('srtp mandatory: RTP/SAVP with a=crypto lines that parse back to the same keys', () => {
    const o = buildSipOffer(offerOpts({ srtp: 'mandatory' }));
    assert.equal(mLine(o), 'm=audio 40000 RTP/SAVP 0 8 101');
    const lines = attr(o, 'crypto');
    assert.equal(lines.length, 2);
    const parsed = lines.map((l) => parseCryptoAttribute(l.slice('a=crypto:'.length)));
    for (const [i, want] of [crypto80, crypto32].entries()) {
      const p = parsed[i];
      if ('error' in p) assert.fail(p.error);
      assert.equal(p.tag, want.tag);
      assert.equal(p.suite, want.suite);
      assert.deepEqual(Buffer.from(p.key), want.key);
      assert.deepEqual(Buffer.from(p.salt), want.salt);
    }
    const desc = ok(parseSipOffer(o));
    assert.equal(desc.profile, 'RTP/SAVP');
    assert.equal(desc.crypto.length, 2);
  });

  test('codecs: PCMU, PCMA and telephone-event with rtpmap/fmtp; opus on 111 at 48000/2', () => {
    const o = buildSipOffer(offerOpts({ codecs: ['opus', 'PCMA', 'PCMU'] }));
    // With Opus offered, telephone-event on its 48 kHz clock too (RFC 4733 §2.1), as Chrome does.
    assert.equal(mLine(o), 'm=audio 40000 RTP/AVP 111 8 0 101 110');
    assert.deepEqual(attr(o, 'rtpmap'), [
      'a=rtpmap:111 opus/48000/2',
      'a=rtpmap:8 PCMA/8000',
      'a=rtpmap:0 PCMU/8000',
      'a=rtpmap:101 telephone-event/8000',
      'a=rtpmap:110 telephone-event/48000',
    ]);
    assert.ok(attr(o, 'fmtp').includes('a=fmtp:101 0-16'));
    assert.ok(attr(o, 'fmtp').includes('a=fmtp:110 0-16'));
    assert.equal(mLine(buildSipOffer(offerOpts({ codecs: ['PCMU'] }))), 'm=audio 40000 RTP/AVP 0 101', 'no 48 kHz events without Opus');
    assert.ok(attr(o, 'fmtp').some((l) => l.startsWith('a=fmtp:111 ')));
    const desc = ok(parseSipOffer(o));
    assert.deepEqual(desc.codecs.map((c) => [c.name, c.payloadType, c.clockRate]), [['opus', 111, 48000], ['PCMA', 8, 8000], ['PCMU', 0, 8000]]);
    assert.equal(desc.codecs[0].channels, 2);
    assert.equal(desc.telephoneEventPayloadType, 101);
    assert.deepEqual(desc.telephoneEvents, [{ payloadType: 101, clockRate: 8000 }, { payloadType: 110, clockRate: 48000 }]);
    assert.deepEqual(telephoneEventFor(desc, 48000), { payloadType: 110, clockRate: 48000 });
    assert.deepEqual(telephoneEventFor(desc, 8000), { payloadType: 101, clockRate: 8000 });
  });

  test('c= and o= use the advertised address; a=ptime defaults to 20 and honours the option', () => {
    const o = buildSipOffer(offerOpts({ advertisedHost: '203.0.113.99', port: 41000 }));
    assert.ok(linesOf(o).includes('c=IN IP4 203.0.113.99'));
    assert.match(linesOf(o)[1], /^o=- \S+ \d+ IN IP4 203\.0\.113\.99$/);
    assert.deepEqual(attr(o, 'ptime'), ['a=ptime:20']);
    assert.deepEqual(attr(o, 'rtcp:'), ['a=rtcp:41001']);
    const desc = ok(parseSipOffer(o));
    assert.equal(desc.address, '203.0.113.99');
    assert.equal(desc.port, 41000);
    assert.equal(desc.rtcpPort, 41001);
    assert.deepEqual(attr(buildSipOffer(offerOpts({ ptime: 30 })), 'ptime'), ['a=ptime:30']);
  });

  test('IPv6 advertised address gives IN IP6', () => {
    const o = buildSipOffer(offerOpts({ advertisedHost: '2001:db8::20' }));
    assert.ok(linesOf(o).includes('c=IN IP6 2001:db8::20'));
    assert.equal(ok(parseSipOffer(o)).address, '2001:db8::20');
  });

  test('direction and session id/version are written; default is sendrecv', () => {
    assert.deepEqual(attr(buildSipOffer(offerOpts()), 'sendrecv'), ['a=sendrecv']);
    const held = buildSipOffer(offerOpts({ direction: 'sendonly', sessionId: '4242', sessionVersion: 7 }));
    assert.deepEqual(attr(held, 'sendonly'), ['a=sendonly']);
    assert.deepEqual(attr(held, 'sendrecv'), []);
    assert.equal(linesOf(held)[1], 'o=- 4242 7 IN IP4 198.51.100.20');
    assert.equal(ok(parseSipOffer(held)).direction, 'sendonly');
  });

  test('is well-formed SDP: v= first, CRLF line ends, trailing CRLF', () => {
    const o = buildSipOffer(offerOpts({ srtp: 'optional' }));
    assert.ok(o.startsWith('v=0\r\n'));
    assert.ok(o.endsWith('\r\n'));
    assert.ok(!/[^\r]\n/.test(o), 'bare LF in SDP');
    for (const l of linesOf(o)) assert.match(l, /^[a-z]=\S/);
  });
});

describe('parseSipAnswer', () => {
  test('picks codec, telephone-event PT, remote address/port, ptime, rtcp-mux from a carrier answer', () => {
    const d = ok(parseSipAnswer(CARRIER_OFFER));
    assert.equal(d.address, '203.0.113.77', 'media-level c= wins over session-level');
    assert.equal(d.port, 33000);
    assert.equal(d.rtcpMux, true);
    assert.equal(d.rtcpPort, undefined);
    assert.deepEqual(d.codecs.map((c) => [c.name, c.payloadType, c.clockRate]), [['G729', 18, 8000], ['PCMU', 0, 8000], ['PCMA', 8, 8000]]);
    assert.equal(d.telephoneEventPayloadType, 96);
    assert.equal(d.ptime, 30);
    assert.equal(d.direction, 'sendrecv');
    assert.equal(d.profile, 'RTP/AVP');
    assert.deepEqual(d.crypto, []);
  });

  test('a host name as the connection address is refused with a clear error (it would be looked up for every packet); IPv4 and IPv6 addresses are taken', () => {
    const named = ASTERISK_SRTP_OFFER.replace('c=IN IP4 192.0.2.10', 'c=IN IP4 media.example.net');
    assert.match(err(parseSipAnswer(named)), /media\.example\.net.*not an IP address/);
    assert.match(err(parseSipOffer(named)), /not an IP address/);
    assert.equal(ok(parseSipAnswer(ASTERISK_SRTP_OFFER.replace('c=IN IP4 192.0.2.10', 'c=IN IP6 2001:db8::10'))).address, '2001:db8::10');
  });

  test('a telephone-event at a clock no audio runs on (/1, /1000000) is left out as if not offered; /16000 is kept', () => {
    const odd = ASTERISK_SRTP_OFFER.replace('m=audio 10000 RTP/SAVP 8 0 3 18 101', 'm=audio 10000 RTP/SAVP 8 0 3 18 101 102 103')
      .replace('a=rtpmap:101 telephone-event/8000', 'a=rtpmap:101 telephone-event/1\r\na=rtpmap:102 telephone-event/1000000\r\na=rtpmap:103 telephone-event/16000');
    const d = ok(parseSipAnswer(odd));
    assert.deepEqual(d.telephoneEvents, [{ payloadType: 103, clockRate: 16000 }]);
    assert.equal(d.telephoneEventPayloadType, 103);
  });

  test('a single-codec SRTP answer: codec, PT, crypto line kept verbatim, direction', () => {
    const key = 'WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz';
    const d = ok(parseSipAnswer(sdp(
      'v=0', 'o=- 5 6 IN IP4 192.0.2.50', 's=-', 'c=IN IP4 192.0.2.50', 't=0 0',
      'm=audio 20002 RTP/SAVP 8 97', 'a=rtpmap:8 PCMA/8000', 'a=rtpmap:97 telephone-event/8000',
      `a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:${key}`, 'a=recvonly',
    )));
    assert.deepEqual(d.codecs.map((c) => c.name), ['PCMA']);
    assert.equal(d.codecs[0].payloadType, 8);
    assert.equal(d.telephoneEventPayloadType, 97);
    assert.equal(d.address, '192.0.2.50');
    assert.equal(d.port, 20002);
    assert.deepEqual(d.crypto, [`2 AES_CM_128_HMAC_SHA1_32 inline:${key}`]);
    assert.equal(d.direction, 'recvonly');
    assert.equal(d.ptime, undefined);
    const c = parseCryptoAttribute(d.crypto[0]);
    if ('error' in c) assert.fail(c.error);
    assert.equal(c.suite, 'AES_CM_128_HMAC_SHA1_32');
  });

  test('no telephone-event offered: PT undefined', () => {
    const d = ok(parseSipAnswer(sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', 'm=audio 5000 RTP/AVP 0')));
    assert.equal(d.telephoneEventPayloadType, undefined);
    assert.deepEqual(d.codecs.map((c) => c.name), ['PCMU']);
  });

  test('reads the answer to our own offer back (round trip)', () => {
    const d = ok(parseSipAnswer(buildSipOffer(offerOpts({ srtp: 'optional', codecs: ['PCMA'] }))));
    assert.deepEqual(d.codecs.map((c) => [c.name, c.payloadType]), [['PCMA', 8]]);
    assert.equal(d.telephoneEventPayloadType, 101);
    assert.equal(d.address, '198.51.100.20');
    assert.equal(d.port, 40000);
    assert.equal(d.ptime, 20);
    assert.equal(d.profile, 'RTP/AVP');
    assert.deepEqual(d.crypto, [`1 AES_CM_128_HMAC_SHA1_80 inline:${inline(crypto80)}`, `2 AES_CM_128_HMAC_SHA1_32 inline:${inline(crypto32)}`]);
  });
});

describe('hold detection', () => {
  const held = (opts: { media?: string[]; session?: string[]; c?: string }) => sdp(
    'v=0', 'o=- 1 2 IN IP4 203.0.113.5', 's=-', `c=IN IP4 ${opts.c ?? '203.0.113.5'}`, 't=0 0', ...(opts.session ?? []),
    'm=audio 4000 RTP/AVP 0 101', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:101 telephone-event/8000', ...(opts.media ?? []),
  );

  test('a=sendonly', () => assert.equal(ok(parseSipOffer(held({ media: ['a=sendonly'] }))).direction, 'sendonly'));
  test('a=inactive', () => assert.equal(ok(parseSipOffer(held({ media: ['a=inactive'] }))).direction, 'inactive'));
  test('a=recvonly is not hold of the far end', () => assert.equal(ok(parseSipOffer(held({ media: ['a=recvonly'] }))).direction, 'recvonly'));
  test('no direction attribute is sendrecv', () => assert.equal(ok(parseSipOffer(held({}))).direction, 'sendrecv'));
  test('session-level a=sendonly applies to the stream', () => assert.equal(ok(parseSipOffer(held({ session: ['a=sendonly'] }))).direction, 'sendonly'));
  test('media-level direction overrides session-level', () => assert.equal(ok(parseSipOffer(held({ session: ['a=inactive'], media: ['a=sendrecv'] }))).direction, 'sendrecv'));
  test('c=0.0.0.0 (RFC 2543 hold) with no direction is sendonly', () => {
    const d = ok(parseSipOffer(held({ c: '0.0.0.0' })));
    assert.equal(d.direction, 'sendonly');
    assert.equal(d.address, '0.0.0.0');
  });
  test('c=0.0.0.0 with a=inactive stays inactive', () => assert.equal(ok(parseSipOffer(held({ c: '0.0.0.0', media: ['a=inactive'] }))).direction, 'inactive'));
  test('c=0.0.0.0 with a=sendonly stays sendonly', () => assert.equal(ok(parseSipOffer(held({ c: '0.0.0.0', media: ['a=sendonly'] }))).direction, 'sendonly'));
  test('c=0.0.0.0 with a=recvonly: nothing may be sent either way, so inactive', () => {
    assert.equal(ok(parseSipOffer(held({ c: '0.0.0.0', media: ['a=recvonly'] }))).direction, 'inactive');
  });
  test('our own hold offer is detected as hold', () => {
    assert.equal(ok(parseSipOffer(buildSipOffer(offerOpts({ direction: 'inactive' })))).direction, 'inactive');
  });
});

describe('parseSipOffer: real-world trunk offers', () => {
  test('Asterisk SDES offer: codecs in order, rtcp, MKI kept, session params kept for the SRTP layer to judge', () => {
    const d = ok(parseSipOffer(ASTERISK_SRTP_OFFER));
    assert.equal(d.address, '192.0.2.10');
    assert.equal(d.port, 10000);
    assert.equal(d.rtcpPort, 10001);
    assert.equal(d.rtcpMux, false);
    assert.equal(d.profile, 'RTP/SAVP');
    assert.deepEqual(d.codecs.map((c) => [c.name, c.payloadType]), [['PCMA', 8], ['PCMU', 0], ['GSM', 3], ['G729', 18]]);
    assert.equal(d.telephoneEventPayloadType, 101);
    assert.equal(d.ptime, 20);
    assert.equal(d.direction, 'sendrecv');
    assert.deepEqual(d.crypto, [
      '1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 KDR=0 UNENCRYPTED_SRTCP',
      '2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32 KDR=0',
    ]);
  });

  test('Asterisk SDES offer: the key with UNENCRYPTED_SRTCP is refused, the next one is chosen', () => {
    const d = ok(parseSipOffer(ASTERISK_SRTP_OFFER));
    const first = parseCryptoAttribute(d.crypto[0]);
    assert.ok('error' in first, 'UNENCRYPTED_SRTCP must reach parseCryptoAttribute and be refused');
    assert.match(first.error, /UNENCRYPTED_SRTCP/);
    const chosen = chooseCrypto(d.crypto);
    assert.ok(chosen);
    assert.equal(chosen.remote.tag, 2);
    assert.equal(chosen.localSuite, 'AES_CM_128_HMAC_SHA1_32');
  });

  test('FreeSWITCH offer: dynamic opus PT, 8 kHz telephone-event preferred, CN not mistaken for DTMF, unsupported suites skipped', () => {
    const d = ok(parseSipOffer(FREESWITCH_OFFER));
    assert.equal(d.address, '198.51.100.7');
    assert.equal(d.port, 24680);
    assert.equal(d.rtcpPort, 24681);
    const opus = d.codecs.find((c) => c.name === 'opus');
    assert.ok(opus);
    assert.equal(opus.payloadType, 102);
    assert.equal(opus.clockRate, 48000);
    assert.equal(opus.channels, 2);
    assert.deepEqual(d.codecs.map((c) => c.name).filter((n) => n !== 'CN'), ['G722', 'opus', 'PCMU', 'PCMA']);
    assert.equal(d.telephoneEventPayloadType, 101);
    assert.equal(d.crypto.length, 4);
    const chosen = chooseCrypto(d.crypto);
    assert.ok(chosen);
    assert.equal(chosen.remote.tag, 3);
    assert.equal(chosen.localSuite, 'AES_CM_128_HMAC_SHA1_80');
  });

  test('telephone-event/8000 is preferred whichever order the clock rates come in', () => {
    const d = ok(parseSipOffer(sdp(
      'v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0',
      'm=audio 5000 RTP/AVP 0 101 100', 'a=rtpmap:101 telephone-event/8000', 'a=rtpmap:100 telephone-event/48000',
    )));
    assert.equal(d.telephoneEventPayloadType, 101);
  });

  test('LF-only line ends (some SBCs) parse as well', () => {
    const d = ok(parseSipOffer(CARRIER_OFFER.replace(/\r\n/g, '\n')));
    assert.equal(d.address, '203.0.113.77');
    assert.equal(d.telephoneEventPayloadType, 96);
  });

  test('video first, audio second: the audio stream is used', () => {
    const d = ok(parseSipOffer(sdp(
      'v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0',
      'm=video 6000 RTP/AVP 96', 'a=rtpmap:96 H264/90000', 'a=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj',
      'm=audio 5000 RTP/AVP 8', 'a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz',
    )));
    assert.equal(d.port, 5000);
    assert.deepEqual(d.codecs.map((c) => c.name), ['PCMA']);
    assert.deepEqual(d.crypto, ['1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz'], 'only the audio stream\'s keys');
  });

  test('a rejected audio stream followed by a live one: the live one is used', () => {
    const d = ok(parseSipOffer(sdp(
      'v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0',
      'm=audio 0 RTP/SAVP 0', 'a=crypto:5 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj',
      'm=audio 7000 RTP/AVP 0', 'a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz',
    )));
    assert.equal(d.port, 7000);
    assert.equal(d.profile, 'RTP/AVP');
    assert.deepEqual(d.crypto, ['1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz']);
  });
});

describe('parseSipOffer / parseSipAnswer: unusable SDP is an {error}, never a throw', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['empty string', '', /no SDP/],
    ['garbage', 'this is not SDP at all', /no SDP/],
    ['binary junk', '\u0000\u0001\u00ff\ufffd', /no SDP/],
    ['v=0 only', 'v=0\r\n', /no audio/],
    ['no audio m-line (video only)', sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', 'm=video 6000 RTP/AVP 96', 'a=rtpmap:96 VP8/90000'), /no audio/],
    ['audio port 0 (rejected)', sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', 'm=audio 0 RTP/AVP 0'), /port 0/],
    ['no c= anywhere', sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 't=0 0', 'm=audio 5000 RTP/AVP 0'), /connection/],
    ['m-line without formats', sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', 'm=audio 5000 RTP/AVP'), /codec/],
    ['only telephone-event', sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', 'm=audio 5000 RTP/AVP 101', 'a=rtpmap:101 telephone-event/8000'), /codec/],
    ['dynamic PT without rtpmap', sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', 'm=audio 5000 RTP/AVP 96'), /codec/],
    ['non-numeric port', sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', 'm=audio abc RTP/AVP 0'), /./],
    ['truncated', 'v=0\r\no=- 1 1 IN IP4\r\nm=aud', /./],
  ];
  for (const [name, body, re] of cases) {
    test(name, () => {
      for (const parse of [parseSipOffer, parseSipAnswer]) {
        let r: ReturnType<typeof parseSipOffer> | undefined;
        assert.doesNotThrow(() => { r = parse(body); });
        assert.match(err(r!), re);
      }
    });
  }

  test('undefined body (INVITE without SDP) is an error', () => {
    assert.match(err(parseSipOffer(undefined as unknown as string)), /no SDP/);
  });
});

describe('buildSipAnswer', () => {
  const answerOpts = (over: Partial<SipSdpOptions> = {}): SipSdpOptions => ({
    advertisedHost: '198.51.100.20',
    port: 42000,
    srtp: 'optional',
    localCrypto: [],
    codecs: ['PCMU', 'PCMA'],
    ...over,
  });

  test('answers the first offered codec we support with its PT, their telephone-event PT and ptime', () => {
    const offer = ok(parseSipOffer(CARRIER_OFFER)); // G729 18, PCMU 0, PCMA 8, te 96, ptime 30
    const a = buildSipAnswer(offer, answerOpts({ srtp: 'off' }));
    assert.equal(mLine(a), 'm=audio 42000 RTP/AVP 0 96');
    assert.deepEqual(attr(a, 'rtpmap'), ['a=rtpmap:0 PCMU/8000', 'a=rtpmap:96 telephone-event/8000']);
    assert.deepEqual(attr(a, 'ptime'), ['a=ptime:30']);
    assert.ok(linesOf(a).includes('c=IN IP4 198.51.100.20'));
    assert.deepEqual(attr(a, 'crypto'), []);
    const back = ok(parseSipAnswer(a));
    assert.equal(back.telephoneEventPayloadType, 96);
    assert.equal(back.port, 42000);
    // The offer has rtcp-mux: the answer takes it (RFC 5761 §5.1.1), as the leg will mux.
    assert.ok(linesOf(a).includes('a=rtcp-mux'));
    assert.equal(back.rtcpMux, true);
    assert.deepEqual(attr(a, 'rtcp:'), [], 'no separate RTCP port announced');
  });

  test('telephone-event on the chosen codec\'s clock: 48 kHz beside Opus, 8 kHz beside G.711, declared at the rate offered', () => {
    const offer = ok(parseSipOffer(sdp(
      'v=0', 'o=- 1 1 IN IP4 203.0.113.9', 's=-', 'c=IN IP4 203.0.113.9', 't=0 0',
      'm=audio 4000 RTP/AVP 96 0 101 97', 'a=rtpmap:96 opus/48000/2', 'a=rtpmap:101 telephone-event/48000', 'a=rtpmap:97 telephone-event/8000',
    )));
    const opus = buildSipAnswer(offer, answerOpts({ srtp: 'off', codecs: ['opus', 'PCMU'] }));
    assert.equal(mLine(opus), 'm=audio 42000 RTP/AVP 96 101');
    assert.ok(attr(opus, 'rtpmap').includes('a=rtpmap:101 telephone-event/48000'));
    const g711 = buildSipAnswer(offer, answerOpts({ srtp: 'off', codecs: ['PCMU'] }));
    assert.equal(mLine(g711), 'm=audio 42000 RTP/AVP 0 97');
    assert.ok(attr(g711, 'rtpmap').includes('a=rtpmap:97 telephone-event/8000'));
    // Only a 48 kHz event format offered beside PCMU: taken, and declared at its own rate (it
    // was answered "/8000" before, which made the far end misread every duration 6x).
    const only48 = ok(parseSipOffer(sdp(
      'v=0', 'o=- 1 1 IN IP4 203.0.113.9', 's=-', 'c=IN IP4 203.0.113.9', 't=0 0',
      'm=audio 4000 RTP/AVP 0 101', 'a=rtpmap:101 telephone-event/48000',
    )));
    const a = buildSipAnswer(only48, answerOpts({ srtp: 'off' }));
    assert.equal(mLine(a), 'm=audio 42000 RTP/AVP 0 101');
    assert.deepEqual(attr(a, 'rtpmap'), ['a=rtpmap:0 PCMU/8000', 'a=rtpmap:101 telephone-event/48000']);
  });

  test('an offer with video before audio: the answer has both m-lines in that order, video refused with port 0', () => {
    const offer = ok(parseSipOffer(sdp(
      'v=0', 'o=- 1 1 IN IP4 203.0.113.9', 's=-', 'c=IN IP4 203.0.113.9', 't=0 0',
      'm=video 5000 RTP/AVP 96', 'a=rtpmap:96 H264/90000',
      'm=audio 4000 RTP/AVP 8 0 101', 'a=rtpmap:101 telephone-event/8000', 'a=sendonly',
    )));
    assert.equal(offer.direction, 'sendonly');
    const a = buildSipAnswer(offer, answerOpts({ srtp: 'off', direction: 'recvonly' }));
    const ms = linesOf(a).filter((l) => l.startsWith('m='));
    assert.deepEqual(ms, ['m=video 0 RTP/AVP 96', 'm=audio 42000 RTP/AVP 8 101']);
    assert.ok(linesOf(a).indexOf('m=audio 42000 RTP/AVP 8 101') < linesOf(a).indexOf('a=rtpmap:8 PCMA/8000'), 'audio attributes stay with the audio m-line');
    const back = ok(parseSipAnswer(a));
    assert.equal(back.port, 42000);
    assert.equal(back.direction, 'recvonly');
  });

  test('an offered ptime is answered as the packet length we send: 10-120 ms in steps of 10 (20 stays, 25 → 30, 100000 → 120, 3 → 10)', () => {
    for (const [offered, answered] of [[20, 20], [30, 30], [25, 30], [100000, 120], [3, 10]]) {
      const offer = ok(parseSipOffer(sdp('v=0', 'o=- 1 1 IN IP4 203.0.113.9', 's=-', 'c=IN IP4 203.0.113.9', 't=0 0', 'm=audio 4000 RTP/AVP 0', `a=ptime:${offered}`)));
      assert.equal(offer.ptime, answered);
      assert.deepEqual(attr(buildSipAnswer(offer, answerOpts({ srtp: 'off' })), 'ptime'), [`a=ptime:${answered}`], `offered ${offered}`);
    }
  });

  test('an m-line sdp-transform cannot read (a port count, m=video 49170/2) is repeated as it was offered, refused: never "m= 0  0" or "m=undefined"', () => {
    const offer = ok(parseSipOffer(sdp(
      'v=0', 'o=- 1 1 IN IP4 203.0.113.9', 's=-', 'c=IN IP4 203.0.113.9', 't=0 0',
      'm=audio 4000 RTP/AVP 0', 'm=video 49170/2 RTP/AVP 31',
    )));
    for (const a of [buildSipAnswer(offer, answerOpts({ srtp: 'off' })), buildSipAnswer(offer, answerOpts({ srtp: 'off', codecs: ['PCMA'] }))]) {
      assert.deepEqual(linesOf(a).filter((l) => l.startsWith('m=')).slice(1), ['m=video 0 RTP/AVP 31'], a);
    }
  });

  test('an offer without rtcp-mux gets an answer without it, with the RTCP port', () => {
    const offer = ok(parseSipOffer(ASTERISK_SRTP_OFFER));
    const a = buildSipAnswer(offer, answerOpts({ localCrypto: [crypto80] }));
    assert.ok(!linesOf(a).includes('a=rtcp-mux'));
    assert.deepEqual(attr(a, 'rtcp:'), ['a=rtcp:42001']);
  });

  test('offer order decides among codecs we support', () => {
    const offer = ok(parseSipOffer(ASTERISK_SRTP_OFFER)); // PCMA before PCMU
    const a = buildSipAnswer(offer, answerOpts({ localCrypto: [{ ...crypto80, tag: 1 }] }));
    assert.deepEqual(ok(parseSipAnswer(a)).codecs.map((c) => c.name), ['PCMA']);
  });

  test('opus on the offer\'s dynamic PT when we do opus', () => {
    const offer = ok(parseSipOffer(FREESWITCH_OFFER));
    const a = buildSipAnswer(offer, answerOpts({ codecs: ['opus', 'PCMU'], localCrypto: [{ ...crypto80, tag: 3 }] }));
    // FreeSWITCH offers telephone-event at 48 kHz (100) and 8 kHz (101): beside Opus, the 48 kHz one.
    assert.equal(mLine(a), 'm=audio 42000 RTP/SAVP 102 100');
    assert.ok(attr(a, 'rtpmap').includes('a=rtpmap:102 opus/48000/2'));
    assert.ok(attr(a, 'rtpmap').includes('a=rtpmap:100 telephone-event/48000'));
  });

  test('SAVP offer: answers RTP/SAVP with exactly the one suite and tag we accepted', () => {
    const offer = ok(parseSipOffer(ASTERISK_SRTP_OFFER));
    const chosen = chooseCrypto(offer.crypto);
    assert.ok(chosen);
    const local: SdesCrypto = { ...crypto32, tag: chosen.remote.tag, suite: chosen.localSuite };
    const a = buildSipAnswer(offer, answerOpts({ localCrypto: [local] }));
    assert.match(mLine(a) ?? '', /^m=audio 42000 RTP\/SAVP /);
    assert.deepEqual(attr(a, 'crypto'), [`a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:${inline(crypto32)}`]);
    const back = ok(parseSipAnswer(a));
    const c = parseCryptoAttribute(back.crypto[0]);
    if ('error' in c) assert.fail(c.error);
    assert.equal(c.tag, 2);
    assert.deepEqual(Buffer.from(c.key), crypto32.key);
  });

  test('best-effort SRTP offer (RTP/AVP + a=crypto): answer stays RTP/AVP with our a=crypto', () => {
    const offer = ok(parseSipOffer(buildSipOffer(offerOpts({ srtp: 'optional' }))));
    const a = buildSipAnswer(offer, answerOpts({ localCrypto: [crypto80] }));
    assert.match(mLine(a) ?? '', /^m=audio 42000 RTP\/AVP /);
    assert.deepEqual(attr(a, 'crypto'), [`a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:${inline(crypto80)}`]);
  });

  test('srtp off: no a=crypto in the answer even if keys are passed', () => {
    const offer = ok(parseSipOffer(buildSipOffer(offerOpts({ srtp: 'optional' }))));
    const a = buildSipAnswer(offer, answerOpts({ srtp: 'off', localCrypto: [crypto80] }));
    assert.deepEqual(attr(a, 'crypto'), []);
    assert.match(mLine(a) ?? '', /^m=audio 42000 RTP\/AVP 0 /);
  });

  test('SAVP offer we cannot key: the stream is rejected (port 0, same profile), not answered as plain RTP', () => {
    const offer = ok(parseSipOffer(ASTERISK_SRTP_OFFER));
    const a = buildSipAnswer(offer, answerOpts({ srtp: 'off', localCrypto: [] }));
    const m = mLine(a) ?? '';
    assert.match(m, /^m=audio 0 RTP\/SAVP \d+/);
    assert.deepEqual(attr(a, 'crypto'), []);
    assert.match(err(parseSipAnswer(a)), /port 0/);
  });

  test('no codec in common: the stream is rejected with port 0 and a well-formed m-line', () => {
    const offer = ok(parseSipOffer(sdp(
      'v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0',
      'm=audio 5000 RTP/AVP 18 101', 'a=rtpmap:101 telephone-event/8000',
    )));
    const a = buildSipAnswer(offer, answerOpts({ srtp: 'off' }));
    assert.match(mLine(a) ?? '', /^m=audio 0 RTP\/AVP \d+( \d+)*$/);
    assert.match(err(parseSipAnswer(a)), /port 0/);
  });

  test('direction is echoed as given (hold answer)', () => {
    const offer = ok(parseSipOffer(CARRIER_OFFER));
    const a = buildSipAnswer(offer, answerOpts({ srtp: 'off', direction: 'recvonly' }));
    assert.deepEqual(attr(a, 'recvonly'), ['a=recvonly']);
    assert.equal(ok(parseSipAnswer(a)).direction, 'recvonly');
  });

  test('our ptime option wins over the offer\'s', () => {
    const offer = ok(parseSipOffer(CARRIER_OFFER));
    assert.deepEqual(attr(buildSipAnswer(offer, answerOpts({ srtp: 'off', ptime: 20 })), 'ptime'), ['a=ptime:20']);
  });
});

describe('chooseSipCodec', () => {
  const listed = (...names: string[]) => names.map((name, i) => ({ name, payloadType: name === 'PCMU' ? 0 : name === 'PCMA' ? 8 : 96 + i, clockRate: name === 'opus' ? 48000 : 8000 }));
  const pick = (l: ReturnType<typeof listed>, ours: Array<'PCMU' | 'PCMA' | 'opus'>, opts?: Parameters<typeof chooseSipCodec>[2]) => {
    const c = chooseSipCodec(l, ours, opts);
    return c && { name: c.name, pt: c.codec.payloadType, otherLawPt: c.otherLaw?.payloadType };
  };

  test('the first listed codec we do, whatever our own order', () => {
    assert.deepEqual(pick(listed('G729', 'PCMA', 'PCMU'), ['PCMU', 'PCMA']), { name: 'PCMA', pt: 8, otherLawPt: 0 });
    assert.deepEqual(pick(listed('opus', 'PCMU'), ['PCMU', 'opus']), { name: 'opus', pt: 96, otherLawPt: undefined });
    assert.equal(pick(listed('G729', 'G722'), ['PCMU', 'PCMA', 'opus']), undefined);
    assert.equal(pick([], ['PCMU']), undefined);
  });

  test('names match whatever their case (opus is written OPUS by some SBCs)', () => {
    assert.deepEqual(pick(listed('OPUS', 'pcmu'), ['PCMU', 'opus']), { name: 'opus', pt: 96, otherLawPt: undefined });
  });

  test('the codec in use is kept while listed, in any position; dropped from the list, the first we do', () => {
    assert.equal(pick(listed('PCMU', 'opus'), ['PCMU', 'opus'], { keep: 'opus' })?.name, 'opus');
    assert.equal(pick(listed('PCMA', 'PCMU'), ['PCMU', 'PCMA'], { keep: 'opus' })?.name, 'PCMA');
  });

  test('preferG711: a G.711 law before a first-listed Opus, and Opus when it is all there is', () => {
    assert.deepEqual(pick(listed('opus', 'PCMA'), ['opus', 'PCMU', 'PCMA'], { preferG711: true }), { name: 'PCMA', pt: 8, otherLawPt: undefined });
    assert.equal(pick(listed('opus', 'G729'), ['opus', 'PCMU'], { preferG711: true })?.name, 'opus');
    // A law we do not do is not preferred.
    assert.equal(pick(listed('opus', 'PCMA'), ['opus', 'PCMU'], { preferG711: true })?.name, 'opus');
  });

  test('the other G.711 law only when the far end lists it and we do it too', () => {
    assert.equal(pick(listed('PCMU', 'PCMA'), ['PCMU'])?.otherLawPt, undefined);
    assert.equal(pick(listed('PCMU'), ['PCMU', 'PCMA'])?.otherLawPt, undefined);
    assert.equal(pick(listed('PCMU', 'opus', 'PCMA'), ['PCMU', 'PCMA', 'opus'])?.otherLawPt, 8);
  });

  test('buildSipAnswer answers what chooseSipCodec keeps', () => {
    const offer = ok(parseSipOffer(sdp(
      'v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0',
      'm=audio 5000 RTP/AVP 0 8 101', 'a=rtpmap:101 telephone-event/8000',
    )));
    assert.match(mLine(buildSipAnswer(offer, offerOpts({ keepCodec: 'PCMA' }))) ?? '', /^m=audio 40000 RTP\/AVP 8 101$/);
    assert.match(mLine(buildSipAnswer(offer, offerOpts())) ?? '', /^m=audio 40000 RTP\/AVP 0 101$/);
  });
});
