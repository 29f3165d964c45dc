import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { DigestClient, parseChallenge, pickChallenge } from '../../src/sip/digest';
import { parseDigestParams } from '../../src/sip/digestServer';

const field = (auth: string, name: string) => new RegExp(`${name}="?([^",]+)"?`).exec(auth)?.[1];

test('RFC 2617 §3.5 example: MD5 with qop=auth gives the published response', () => {
  const ch = parseChallenge('Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')!;
  const auth = new DigestClient(ch, 'Mufasa', 'Circle Of Life', () => '0a4f113b').authorization('GET', '/dir/index.html');
  assert.equal(field(auth, 'response'), '6629fae49393a05397450978507c4ef1');
  assert.equal(field(auth, 'nc'), '00000001');
  assert.equal(field(auth, 'qop'), 'auth');
  assert.equal(field(auth, 'opaque'), '5ccc069c403ebaf9f0171e9517f40e41');
});

test('RFC 7616 §3.9.1 example: SHA-256 and MD5 responses', () => {
  const base = 'realm="http-auth@example.org", qop="auth, auth-int", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"';
  const cnonce = () => 'f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ';
  const sha = new DigestClient(parseChallenge(`Digest ${base}, algorithm=SHA-256`)!, 'Mufasa', 'Circle of Life', cnonce).authorization('GET', '/dir/index.html');
  assert.equal(field(sha, 'response'), '753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1');
  const md5 = new DigestClient(parseChallenge(`Digest ${base}, algorithm=MD5`)!, 'Mufasa', 'Circle of Life', cnonce).authorization('GET', '/dir/index.html');
  assert.equal(field(md5, 'response'), '8ca523f5e9506fed4657c9700eebdbec');
});

test('nonce count increments per request; SHA-256 is preferred; stale and junk are handled', () => {
  const ch = parseChallenge('Digest realm="r", nonce="n", qop="auth"')!;
  const c = new DigestClient(ch, 'u', 'p');
  c.authorization('INVITE', 'sip:a@b');
  assert.equal(field(c.authorization('INVITE', 'sip:a@b'), 'nc'), '00000002');
  const picked = pickChallenge(['Digest realm="r", nonce="1", algorithm=MD5', 'Digest realm="r", nonce="2", algorithm=SHA-256']);
  assert.equal(picked?.algorithm, 'SHA-256');
  assert.equal(parseChallenge('Digest realm="r", nonce="n", stale=TRUE')?.stale, true);
  assert.equal(parseChallenge('Basic realm="r"'), null);
  assert.equal(parseChallenge('Digest realm="r"'), null, 'no nonce');
  assert.equal(parseChallenge('Digest realm="r", nonce="n", algorithm=SHA-512-256'), null, 'unsupported algorithm');
});

test('quotes and backslashes in the user name, realm, nonce or opaque are escaped in our Authorization: a server reads back exactly those values, and the response hashes them', () => {
  const ch = parseChallenge('Digest realm="pbx \\"main\\"", nonce="n\\\\1", opaque="o\\"p", algorithm=MD5')!;
  assert.equal(ch.realm, 'pbx "main"');
  const header = new DigestClient(ch, 'we"ird\\user', 'pw').authorization('REGISTER', 'sip:pbx.example');
  const p = parseDigestParams(header)!;
  assert.equal(p.username, 'we"ird\\user');
  assert.equal(p.realm, 'pbx "main"');
  assert.equal(p.nonce, 'n\\1');
  assert.equal(p.opaque, 'o"p');
  const md5 = (s: string) => createHash('md5').update(s).digest('hex');
  assert.equal(p.response, md5(`${md5('we"ird\\user:pbx "main":pw')}:n\\1:${md5('REGISTER:sip:pbx.example')}`));
});
