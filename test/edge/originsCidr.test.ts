import { test } from 'node:test';
import assert from 'node:assert/strict';
import { originAllowed, originMatches } from '../../src/edge/origins';
import { ipInCidrs } from '../../src/edge/cidr';

// ---- origins ----

test('origins: exact match', () => {
  assert.equal(originMatches('https://app.example.com', 'https://app.example.com'), true);
  assert.equal(originMatches('http://localhost:8080', 'http://localhost:8080'), true);
  assert.equal(originMatches('https://app.example.com', 'https://other.example.com'), false);
  assert.equal(originMatches('https://app.example.com.evil.net', 'https://app.example.com'), false);
  assert.equal(originMatches('https://evilapp.example.com', 'https://app.example.com'), false);
  assert.equal(originMatches('https://example.com', 'https://app.example.com'), false);
});

test('origins: scheme and port must match', () => {
  assert.equal(originMatches('http://app.example.com', 'https://app.example.com'), false);
  assert.equal(originMatches('https://app.example.com', 'http://app.example.com'), false);
  assert.equal(originMatches('https://app.example.com:8443', 'https://app.example.com'), false);
  assert.equal(originMatches('https://app.example.com', 'https://app.example.com:8443'), false);
  assert.equal(originMatches('http://localhost:8081', 'http://localhost:8080'), false);
  assert.equal(originMatches('wss://app.example.com', 'https://app.example.com'), false);
});

test('origins: a configured origin is compared as an origin (default port, case, trailing slash)', () => {
  // Browsers never send a default port, so "https://host:443" in config must still match.
  assert.equal(originMatches('https://app.example.com', 'https://app.example.com:443'), true);
  assert.equal(originMatches('http://app.example.com', 'http://app.example.com:80'), true);
  assert.equal(originMatches('https://app.example.com', 'https://App.Example.COM/'), true);
  assert.equal(originMatches('http://app.example.com', 'https://app.example.com:443'), false);
  // But a pattern with a path or credentials is not an origin and matches nothing.
  assert.equal(originMatches('https://app.example.com', 'https://app.example.com/app'), false);
  assert.equal(originMatches('https://app.example.com', 'https://user@app.example.com'), false);
  // The presented origin must be exactly as browsers serialise it.
  assert.equal(originMatches('https://app.example.com/', 'https://app.example.com'), false);
  assert.equal(originMatches('https://app.example.com:443', 'https://app.example.com'), false);
});

test('origins: wildcard matches subdomains only, with the same scheme and port', () => {
  const p = 'https://*.example.com';
  assert.equal(originMatches('https://app.example.com', p), true);
  assert.equal(originMatches('https://a.b.example.com', p), true);
  assert.equal(originMatches('https://example.com', p), false, 'apex');
  assert.equal(originMatches('https://.example.com', p), false, 'empty label');
  assert.equal(originMatches('https://evilexample.com', p), false);
  assert.equal(originMatches('https://example.com.evil.net', p), false);
  assert.equal(originMatches('https://app.example.com.evil.net', p), false);
  assert.equal(originMatches('http://app.example.com', p), false, 'scheme');
  assert.equal(originMatches('https://app.example.com:8443', p), false, 'port');
  assert.equal(originMatches('https://app.example.com/.example.com', p), false, 'path');
  assert.equal(originMatches('https://evil.net?.example.com', p), false, 'query');
  assert.equal(originMatches('https://evil.net#.example.com', p), false, 'fragment');
  assert.equal(originMatches('https://app.example.com@evil.net', p), false, 'userinfo');
  assert.equal(originMatches('https://evil.net\\.example.com', p), false, 'backslash');
  // Ported wildcard patterns.
  assert.equal(originMatches('https://app.example.com:8443', 'https://*.example.com:8443'), true);
  assert.equal(originMatches('https://app.example.com', 'https://*.example.com:8443'), false);
  assert.equal(originMatches('https://app.example.com', 'https://*.example.com:443'), true);
  assert.equal(originMatches('http://app.example.com', 'http://*.example.com'), true);
});

test('origins: junk never matches and never throws', () => {
  for (const o of ['null', '', 'not a url', 'https://', 'file://', 'javascript:alert(1)', 'https://[::1', '*']) {
    assert.equal(originMatches(o, 'https://*.example.com'), false, o);
    assert.equal(originMatches(o, 'https://app.example.com'), false, o);
  }
  assert.equal(originMatches('https://app.example.com', ''), false);
  assert.equal(originMatches('https://app.example.com', '*'), false);
  assert.equal(originMatches('https://app.example.com', 'https://*.'), false);
  assert.equal(originMatches('https://app.example.com', 'not a pattern'), false);
});

test('originAllowed: list and missing origin with allowMissing true/false', () => {
  const list = ['https://app.example.com', 'https://*.partner.net', 'http://localhost:8080'];
  assert.equal(originAllowed('https://app.example.com', list, { allowMissing: false }), true);
  assert.equal(originAllowed('https://x.partner.net', list, { allowMissing: false }), true);
  assert.equal(originAllowed('http://localhost:8080', list, { allowMissing: false }), true);
  assert.equal(originAllowed('https://evil.net', list, { allowMissing: false }), false);
  assert.equal(originAllowed('https://evil.net', list, { allowMissing: true }), false, 'allowMissing does not open present origins');
  assert.equal(originAllowed('null', list, { allowMissing: true }), false, '"null" origin is present, not missing');
  assert.equal(originAllowed(undefined, list, { allowMissing: false }), false);
  assert.equal(originAllowed(undefined, list, { allowMissing: true }), true);
  assert.equal(originAllowed('', list, { allowMissing: false }), false);
  assert.equal(originAllowed('', list, { allowMissing: true }), true);
  assert.equal(originAllowed('https://app.example.com', [], { allowMissing: true }), false);
});

// ---- CIDR ----

test('cidr: IPv4 /32, bare address, /24, /8, /0', () => {
  assert.equal(ipInCidrs('192.0.2.10', ['192.0.2.10/32']), true);
  assert.equal(ipInCidrs('192.0.2.11', ['192.0.2.10/32']), false);
  assert.equal(ipInCidrs('192.0.2.10', ['192.0.2.10']), true);
  assert.equal(ipInCidrs('192.0.2.11', ['192.0.2.10']), false);
  assert.equal(ipInCidrs('192.0.2.255', ['192.0.2.0/24']), true);
  assert.equal(ipInCidrs('192.0.2.0', ['192.0.2.0/24']), true);
  assert.equal(ipInCidrs('192.0.3.0', ['192.0.2.0/24']), false);
  assert.equal(ipInCidrs('192.0.1.255', ['192.0.2.0/24']), false);
  assert.equal(ipInCidrs('10.255.255.255', ['10.0.0.0/8']), true);
  assert.equal(ipInCidrs('11.0.0.0', ['10.0.0.0/8']), false);
  // Host bits set in the network address are ignored.
  assert.equal(ipInCidrs('192.0.2.77', ['192.0.2.99/24']), true);
  assert.equal(ipInCidrs('203.0.113.7', ['0.0.0.0/0']), true);
  assert.equal(ipInCidrs('255.255.255.255', ['0.0.0.0/0']), true);
  // Odd prefix lengths.
  assert.equal(ipInCidrs('172.31.255.255', ['172.16.0.0/12']), true);
  assert.equal(ipInCidrs('172.32.0.0', ['172.16.0.0/12']), false);
  assert.equal(ipInCidrs('198.51.100.129', ['198.51.100.128/25']), true);
  assert.equal(ipInCidrs('198.51.100.127', ['198.51.100.128/25']), false);
});

test('cidr: any of several CIDRs; empty list matches nothing', () => {
  const list = ['10.0.0.0/8', '2001:db8::/32', '198.51.100.7'];
  assert.equal(ipInCidrs('10.1.2.3', list), true);
  assert.equal(ipInCidrs('2001:db8::1', list), true);
  assert.equal(ipInCidrs('198.51.100.7', list), true);
  assert.equal(ipInCidrs('198.51.100.8', list), false);
  assert.equal(ipInCidrs('10.1.2.3', []), false);
});

test('cidr: IPv6', () => {
  assert.equal(ipInCidrs('2001:db8::1', ['2001:db8::/32']), true);
  assert.equal(ipInCidrs('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', ['2001:db8::/32']), true);
  assert.equal(ipInCidrs('2001:db9::1', ['2001:db8::/32']), false);
  assert.equal(ipInCidrs('2001:0db8:0000:0000:0000:0000:0000:0001', ['2001:db8::1/128']), true);
  assert.equal(ipInCidrs('2001:DB8::1', ['2001:db8::1']), true);
  assert.equal(ipInCidrs('2001:db8::2', ['2001:db8::1']), false);
  assert.equal(ipInCidrs('::1', ['::1/128']), true);
  assert.equal(ipInCidrs('::1', ['::/0']), true);
  assert.equal(ipInCidrs('fe80::1234', ['fe80::/10']), true);
  assert.equal(ipInCidrs('febf::1', ['fe80::/10']), true);
  assert.equal(ipInCidrs('fec0::1', ['fe80::/10']), false);
  assert.equal(ipInCidrs('2001:db8:0:1::5', ['2001:db8:0:1::/64']), true);
  assert.equal(ipInCidrs('2001:db8:0:2::5', ['2001:db8:0:1::/64']), false);
  assert.equal(ipInCidrs('1::', ['1::/16']), true);
  // Families never mix: v6 /0 does not hold v4 addresses and v4 /0 holds no v6 ones.
  assert.equal(ipInCidrs('192.0.2.1', ['::/0']), false);
  assert.equal(ipInCidrs('2001:db8::1', ['0.0.0.0/0']), false);
  assert.equal(ipInCidrs('::', ['0.0.0.0/0']), false);
});

test('cidr: IPv6 with an embedded dotted IPv4 tail is parsed exactly', () => {
  assert.equal(ipInCidrs('64:ff9b::192.0.2.1', ['64:ff9b::c000:201/128']), true);
  assert.equal(ipInCidrs('64:ff9b::192.0.2.1', ['64:ff9b::/96']), true);
  assert.equal(ipInCidrs('1::1.2.3.4', ['1::1/128']), false);
  assert.equal(ipInCidrs('1::1.2.3.4', ['1::102:304/128']), true);
  assert.equal(ipInCidrs('64:ff9b::c000:201', ['64:ff9b::192.0.2.1/128']), true);
});

test('cidr: IPv4-mapped IPv6 addresses count as their IPv4 address', () => {
  assert.equal(ipInCidrs('::ffff:127.0.0.1', ['127.0.0.0/8']), true);
  assert.equal(ipInCidrs('::FFFF:127.0.0.1', ['127.0.0.1/32']), true);
  assert.equal(ipInCidrs('::ffff:127.0.0.1', ['10.0.0.0/8']), false);
  assert.equal(ipInCidrs('::ffff:7f00:1', ['127.0.0.0/8']), true);
  assert.equal(ipInCidrs('0:0:0:0:0:ffff:127.0.0.1', ['127.0.0.1']), true);
  assert.equal(ipInCidrs('::ffff:192.0.2.10', ['0.0.0.0/0']), true);
  // A mapped network in config is the IPv4 network it maps.
  assert.equal(ipInCidrs('10.9.8.7', ['::ffff:10.0.0.0/104']), true);
  assert.equal(ipInCidrs('::ffff:10.9.8.7', ['::ffff:10.0.0.0/104']), true);
  assert.equal(ipInCidrs('11.0.0.1', ['::ffff:10.0.0.0/104']), false);
  // Not mapped: ::1.2.3.4 (deprecated IPv4-compatible) and ::fffe:... stay IPv6.
  assert.equal(ipInCidrs('::fffe:127.0.0.1', ['127.0.0.0/8']), false);
  assert.equal(ipInCidrs('::127.0.0.1', ['127.0.0.0/8']), false);
});

test('cidr: malformed CIDRs never match (a typo must not become /0)', () => {
  for (const c of ['10.0.0.0/', '10.0.0.0/ ', '10.0.0.0/8/8', '10.0.0.0/0x8', '10.0.0.0/1e1', '10.0.0.0/-1', '10.0.0.0/33', '10.0.0.0/8.5', '10.0.0/8', '10.0.0.256/8', '/8', '', 'garbage', '2001:db8::/129', '2001:db8::/', 'localhost', '10.0.0.0/abc']) {
    assert.equal(ipInCidrs('10.0.0.1', [c]), false, JSON.stringify(c));
    assert.equal(ipInCidrs('8.8.8.8', [c]), false, JSON.stringify(c));
    assert.equal(ipInCidrs('2001:db8::1', [c]), false, JSON.stringify(c));
  }
  // A malformed entry does not spoil the good ones next to it.
  assert.equal(ipInCidrs('10.0.0.1', ['10.0.0.0/', 'junk', '10.0.0.0/8']), true);
  // Surrounding whitespace in config is tolerated.
  assert.equal(ipInCidrs('10.0.0.1', [' 10.0.0.0/8 ']), true);
});

test('cidr: garbage input returns false rather than throwing', () => {
  const cidrs = ['0.0.0.0/0', '::/0'];
  for (const ip of ['', 'garbage', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.4/32', ' 1.2.3.4', '::ffff:', '::ffff:999.0.0.1', '1:2:3:4:5:6:7:8:9', ':::', 'gggg::1', '::ffff:1.2.3.4:5', '12345::1']) {
    assert.doesNotThrow(() => ipInCidrs(ip, cidrs), ip);
    assert.equal(ipInCidrs(ip, cidrs), false, JSON.stringify(ip));
  }
  for (const ip of [undefined, null, 42, {}, []]) {
    assert.doesNotThrow(() => ipInCidrs(ip as unknown as string, cidrs));
    assert.equal(ipInCidrs(ip as unknown as string, cidrs), false, String(ip));
  }
  assert.equal(ipInCidrs('1.2.3.4', [undefined, 7, null] as unknown as string[]), false);
  assert.equal(ipInCidrs('1.2.3.4', undefined as unknown as string[]), false);
});

test('cidr: IPv6 zone ids are ignored for matching', () => {
  assert.equal(ipInCidrs('fe80::1%eth0', ['fe80::/10']), true);
  assert.equal(ipInCidrs('fe80::1%eth0', ['fe80::1']), true);
  assert.equal(ipInCidrs('fe80::1%eth0', ['fe80::2']), false);
});
