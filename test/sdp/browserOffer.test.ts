import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkBrowserOffer } from '../../src/sdp';

/** The shape of a Chrome audio offer (trimmed: the attributes the check looks at, and some it ignores). */
const chromeOffer = [
  'v=0', 'o=- 4611731400430051336 2 IN IP4 127.0.0.1', 's=-', 't=0 0', 'a=group:BUNDLE 0', 'a=msid-semantic: WMS',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126', 'c=IN IP4 0.0.0.0', 'a=rtcp:9 IN IP4 0.0.0.0',
  'a=ice-ufrag:Xq3L', 'a=ice-pwd:1uQ5Yb3yZk0XKq3cW6pOjcZD', 'a=ice-options:trickle',
  'a=fingerprint:sha-256 8A:4F:0C:1B:9E:6D:22:31:7A:5E:90:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23',
  'a=setup:actpass', 'a=mid:0', 'a=sendrecv', 'a=rtcp-mux',
  'a=rtpmap:111 opus/48000/2', 'a=fmtp:111 minptime=10;useinbandfec=1', 'a=rtpmap:63 red/48000/2',
  'a=rtpmap:9 G722/8000', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:8 PCMA/8000', 'a=rtpmap:13 CN/8000',
  'a=rtpmap:110 telephone-event/48000', 'a=rtpmap:126 telephone-event/8000', '',
].join('\r\n');

test('a browser\'s DTLS-SRTP audio offer passes', () => {
  assert.equal(checkBrowserOffer(chromeOffer), null);
  // PCMU alone is enough; ICE credentials and fingerprint may sit at session level.
  const pcmuOnly = chromeOffer
    .replace('m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126', 'm=audio 9 UDP/TLS/RTP/SAVPF 0')
    .replace(/a=rtpmap:(111|63|9|8|13|110|126) .*\r\n/g, '').replace(/a=fmtp:111 .*\r\n/, '');
  assert.equal(checkBrowserOffer(pcmuOnly), null);
  const sessionLevel = chromeOffer.replace(/(a=ice-ufrag:.*\r\n)(a=ice-pwd:.*\r\n)/, '').replace('t=0 0\r\n', 't=0 0\r\na=ice-ufrag:Xq3L\r\na=ice-pwd:1uQ5Yb3yZk0XKq3cW6pOjcZD\r\n');
  assert.equal(checkBrowserOffer(sessionLevel), null);
});

test('offers the browser leg cannot answer are refused with the reason', () => {
  const cases: Array<[string, RegExp]> = [
    ['hello', /not an SDP offer/],
    [chromeOffer.replace(/m=audio[^]*$/, ''), /no active audio section/],
    [chromeOffer.replace('m=audio 9 ', 'm=audio 0 '), /no active audio section/],
    [chromeOffer.replace('UDP/TLS/RTP/SAVPF', 'RTP/AVP'), /DTLS-SRTP/],
    [chromeOffer.replace(/a=ice-pwd:.*\r\n/, ''), /ICE credentials/],
    [chromeOffer.replace(/a=fingerprint:.*\r\n/, ''), /fingerprint/],
    [chromeOffer.replace(/a=rtpmap:(111|0) .*\r\n/g, ''), /no codec in common/],
  ];
  for (const [sdp, reason] of cases) assert.match(checkBrowserOffer(sdp) ?? 'passed', reason, sdp.slice(0, 60));
  assert.match(checkBrowserOffer(undefined as unknown as string) ?? 'passed', /not an SDP offer/);
});

test('more than one active media section passes only when one BUNDLE group holds them all (werift gives any other its own, unguarded, transport)', () => {
  const second = (mid: string) => `m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:${mid}\r\na=rtpmap:111 opus/48000/2\r\n`;
  const dataChannel = 'm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sctp-port:5000\r\n';
  assert.equal(checkBrowserOffer(chromeOffer.replace('a=group:BUNDLE 0', 'a=group:BUNDLE 0 1') + dataChannel), null, 'bundled data channel');
  assert.equal(checkBrowserOffer(chromeOffer.replace('a=group:BUNDLE 0', 'a=group:BUNDLE 0 1') + second('1')), null, 'bundled second audio');
  assert.equal(checkBrowserOffer(chromeOffer + second('1').replace('m=audio 9 ', 'm=audio 0 ')), null, 'a refused (port 0) section needs no transport');
  for (const [sdp, what] of [
    [chromeOffer + second('1'), 'a second audio outside the group'],
    [chromeOffer.replace('a=group:BUNDLE 0\r\n', '') + dataChannel, 'no BUNDLE at all'],
    [chromeOffer.replace('a=group:BUNDLE 0', 'a=group:BUNDLE 0 1') + second('1').replace('a=mid:1\r\n', ''), 'a section without a mid'],
  ]) assert.match(checkBrowserOffer(sdp) ?? 'passed', /not all in one BUNDLE group/, what);
});
