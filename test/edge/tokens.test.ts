import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, createSign, generateKeyPairSync } from 'node:crypto';
import { loadEs256PublicKey, mintToken, redactToken, verifyToken, type TokenKeys, type VerifyResult } from '../../src/edge/tokens';

const SECRET = 'an-hs256-secret-of-at-least-32-characters!';
const OTHER_SECRET = 'a-different-secret-of-at-least-32-characters';
const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const PUBLIC_PEM = publicKey.export({ type: 'spki', format: 'pem' }).toString();
const PRIVATE_PEM = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const OTHER_PRIVATE_PEM = other.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

const hsKeys: TokenKeys = { hs256Secret: SECRET };
const esKeys: TokenKeys = { es256PublicKey: loadEs256PublicKey(PUBLIC_PEM) };
const bothKeys: TokenKeys = { ...hsKeys, ...esKeys };
const opts = { maxLifetimeSec: 3600 };
const now = () => Math.floor(Date.now() / 1000);

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** A hand-made HS256 JWT with any header and payload, HMAC'd with `secret` (string or raw bytes). */
function hs256(payload: unknown, secret: string | Buffer = SECRET, header: Record<string, unknown> = { alg: 'HS256', typ: 'JWT' }): string {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

/** A hand-made ES256 JWT (raw r||s signature, as JWS requires). */
function es256(payload: unknown, pem = PRIVATE_PEM): string {
  const input = `${b64({ alg: 'ES256', typ: 'JWT' })}.${b64(payload)}`;
  const sig = createSign('SHA256').update(input).sign({ key: pem, dsaEncoding: 'ieee-p1363' });
  return `${input}.${sig.toString('base64url')}`;
}

function expectError(r: VerifyResult, code: string | string[]): void {
  assert.equal(r.ok, false, `expected a rejection, got ${JSON.stringify(r)}`);
  if (r.ok) return;
  const codes = Array.isArray(code) ? code : [code];
  assert.ok(codes.includes(r.code), `expected ${codes.join(' or ')}, got ${r.code} (${r.message})`);
  assert.equal(typeof r.message, 'string');
  assert.ok(r.message.length > 0);
}

test('a valid HS256 token minted by mintToken is accepted with its claims', async () => {
  const token = await mintToken({ sub: 'alice', callerId: '+15551230000', dest: ['+1555*'], origins: ['https://app.example.com'], maxCalls: 3 }, { hs256Secret: SECRET }, { ttlSec: 300 });
  assert.equal(token.split('.').length, 3);
  assert.equal(JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString()).alg, 'HS256');
  const before = now();
  const r = await verifyToken(token, hsKeys, opts);
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(r.claims.sub, 'alice');
  assert.equal(r.claims.callerId, '+15551230000');
  assert.deepEqual(r.claims.dest, ['+1555*']);
  assert.deepEqual(r.claims.origins, ['https://app.example.com']);
  assert.equal(r.claims.maxCalls, 3);
  assert.equal(typeof r.claims.iat, 'number');
  assert.ok(Math.abs(r.claims.iat! - before) <= 2);
  assert.equal(r.claims.exp, r.claims.iat! + 300);
  // Also accepted when both key kinds are configured.
  assert.equal((await verifyToken(token, bothKeys, opts)).ok, true);
});

test('a valid ES256 token (P-256 key pair, PEM) is accepted with its claims', async () => {
  const token = await mintToken({ sub: 'bob@example.com', dest: ['+44*'] }, { es256PrivateKeyPem: PRIVATE_PEM }, { ttlSec: 600 });
  assert.equal(JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString()).alg, 'ES256');
  const r = await verifyToken(token, esKeys, opts);
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(r.claims.sub, 'bob@example.com');
  assert.deepEqual(r.claims.dest, ['+44*']);
  assert.equal(r.claims.callerId, undefined);
  assert.equal(r.claims.origins, undefined);
  assert.equal(r.claims.maxCalls, undefined);
  assert.equal(r.claims.exp - r.claims.iat!, 600);
  assert.equal((await verifyToken(token, bothKeys, opts)).ok, true);
  // A hand-signed ES256 token verifies too (interoperability, not just our own minting).
  const hand = await verifyToken(es256({ sub: 'carol', exp: now() + 60, iat: now() }), esKeys, opts);
  assert.ok(hand.ok, JSON.stringify(hand));
  assert.equal(hand.claims.sub, 'carol');
});

test('ES256 token signed by another private key is token-invalid', async () => {
  const token = await mintToken({ sub: 'mallory' }, { es256PrivateKeyPem: OTHER_PRIVATE_PEM }, { ttlSec: 60 });
  expectError(await verifyToken(token, esKeys, opts), 'token-invalid');
});

test('issuer and audience are enforced when configured', async () => {
  const token = await mintToken({ sub: 'alice' }, { hs256Secret: SECRET }, { ttlSec: 60, issuer: 'https://site.example', audience: 'gateway' });
  assert.equal((await verifyToken(token, hsKeys, { ...opts, issuer: 'https://site.example', audience: 'gateway' })).ok, true);
  expectError(await verifyToken(token, hsKeys, { ...opts, issuer: 'https://evil.example', audience: 'gateway' }), 'token-bad-claims');
  expectError(await verifyToken(token, hsKeys, { ...opts, issuer: 'https://site.example', audience: 'other' }), 'token-bad-claims');
  const noIss = await mintToken({ sub: 'alice' }, { hs256Secret: SECRET }, { ttlSec: 60 });
  expectError(await verifyToken(noIss, hsKeys, { ...opts, issuer: 'https://site.example' }), 'token-bad-claims');
});

test('a missing token is token-missing', async () => {
  expectError(await verifyToken(undefined, hsKeys, opts), 'token-missing');
  expectError(await verifyToken('', hsKeys, opts), 'token-missing');
});

test('malformed tokens are token-invalid and never throw', async () => {
  for (const t of ['abc', 'a.b', 'a.b.c.d', '!!!.@@@.###', `${b64('not json')}.${b64({ sub: 'x' })}.sig`, `${b64('null')}.${b64({})}.sig`, 'x'.repeat(9000) + '.a.b']) {
    expectError(await verifyToken(t, bothKeys, opts), ['token-invalid', 'token-wrong-algorithm']);
  }
  // Valid header, payload that is not JSON.
  const header = b64({ alg: 'HS256' });
  const body = Buffer.from('not json').toString('base64url');
  const sig = createHmac('sha256', SECRET).update(`${header}.${body}`).digest('base64url');
  expectError(await verifyToken(`${header}.${body}.${sig}`, hsKeys, opts), 'token-invalid');
});

test('an expired token is token-expired', async () => {
  const t = now();
  expectError(await verifyToken(hs256({ sub: 'alice', iat: t - 120, exp: t - 60 }), hsKeys, opts), 'token-expired');
  // Same token with the verifier's clock set back: valid then.
  const token = hs256({ sub: 'alice', iat: 1_000_000, exp: 1_000_060 });
  assert.equal((await verifyToken(token, hsKeys, { ...opts, now: 1_000_030 })).ok, true);
  expectError(await verifyToken(token, hsKeys, { ...opts, now: 1_000_061 }), 'token-expired');
});

test('a token with nbf in the future is token-not-yet-valid', async () => {
  const t = now();
  expectError(await verifyToken(hs256({ sub: 'alice', iat: t, nbf: t + 120, exp: t + 300 }), hsKeys, opts), 'token-not-yet-valid');
  assert.equal((await verifyToken(hs256({ sub: 'alice', iat: t, nbf: t - 1, exp: t + 300 }), hsKeys, opts)).ok, true);
});

test('a forged signature is token-invalid: altered payload, other secret, stripped or garbage signature', async () => {
  const token = await mintToken({ sub: 'alice', dest: ['+1555*'] }, { hs256Secret: SECRET }, { ttlSec: 300 });
  const [h, p, s] = token.split('.');
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
  const altered = `${h}.${b64({ ...claims, dest: ['*'] })}.${s}`;
  expectError(await verifyToken(altered, hsKeys, opts), 'token-invalid');
  const otherSecret = await mintToken({ sub: 'alice' }, { hs256Secret: OTHER_SECRET }, { ttlSec: 300 });
  expectError(await verifyToken(otherSecret, hsKeys, opts), 'token-invalid');
  expectError(await verifyToken(`${h}.${p}.`, hsKeys, opts), 'token-invalid');
  expectError(await verifyToken(`${h}.${p}.${'A'.repeat(43)}`, hsKeys, opts), 'token-invalid');
  // Flip one signature byte.
  const sig = Buffer.from(s, 'base64url');
  sig[0] ^= 1;
  expectError(await verifyToken(`${h}.${p}.${sig.toString('base64url')}`, hsKeys, opts), 'token-invalid');
  // The untouched token still verifies (so the rejections above are about the forgery).
  assert.equal((await verifyToken(token, hsKeys, opts)).ok, true);
});

test('alg "none" (unsigned) tokens are rejected', async () => {
  const t = now();
  const payload = b64({ sub: 'alice', iat: t, exp: t + 60 });
  for (const alg of ['none', 'None', 'NONE']) {
    for (const keys of [hsKeys, esKeys, bothKeys]) {
      expectError(await verifyToken(`${b64({ alg, typ: 'JWT' })}.${payload}.`, keys, opts), ['token-wrong-algorithm', 'token-invalid']);
    }
  }
  // No alg at all, and algorithms we do not accept.
  expectError(await verifyToken(`${b64({ typ: 'JWT' })}.${payload}.`, bothKeys, opts), ['token-wrong-algorithm', 'token-invalid']);
  expectError(await verifyToken(hs256({ sub: 'alice', exp: t + 60 }, SECRET, { alg: 'HS512' }), bothKeys, opts), 'token-wrong-algorithm');
  expectError(await verifyToken(hs256({ sub: 'alice', exp: t + 60 }, SECRET, { alg: 'RS256' }), bothKeys, opts), 'token-wrong-algorithm');
});

test('a token whose algorithm has no configured key is token-wrong-algorithm', async () => {
  const hs = await mintToken({ sub: 'alice' }, { hs256Secret: SECRET }, { ttlSec: 60 });
  const es = await mintToken({ sub: 'alice' }, { es256PrivateKeyPem: PRIVATE_PEM }, { ttlSec: 60 });
  expectError(await verifyToken(hs, esKeys, opts), 'token-wrong-algorithm');
  expectError(await verifyToken(es, hsKeys, opts), 'token-wrong-algorithm');
  expectError(await verifyToken(hs, {}, opts), 'token-wrong-algorithm');
});

test('algorithm confusion: HS256 signed with the ES256 public key PEM as HMAC secret is rejected', async () => {
  const t = now();
  const payload = { sub: 'mallory', dest: ['*'], iat: t, exp: t + 60 };
  const spkiDer = publicKey.export({ type: 'spki', format: 'der' });
  for (const secret of [PUBLIC_PEM, PUBLIC_PEM.trim(), spkiDer]) {
    const forged = hs256(payload, secret);
    expectError(await verifyToken(forged, esKeys, opts), ['token-wrong-algorithm', 'token-invalid']);
    expectError(await verifyToken(forged, bothKeys, opts), ['token-wrong-algorithm', 'token-invalid']);
  }
  // Control: the same hand-made HS256 construction with the real secret is accepted.
  assert.equal((await verifyToken(hs256(payload, SECRET), bothKeys, opts)).ok, true);
});

test('a lifetime longer than maxLifetimeSec is rejected; exactly the maximum is accepted', async () => {
  const long = await mintToken({ sub: 'alice' }, { hs256Secret: SECRET }, { ttlSec: 7200 });
  expectError(await verifyToken(long, hsKeys, opts), 'token-bad-claims');
  const t = 2_000_000_000;
  const at = { ...opts, now: t };
  assert.equal((await verifyToken(hs256({ sub: 'a', iat: t, exp: t + 3600 }), hsKeys, at)).ok, true);
  expectError(await verifyToken(hs256({ sub: 'a', iat: t, exp: t + 3601 }), hsKeys, at), 'token-bad-claims');
  // Without iat the lifetime counts from now.
  assert.equal((await verifyToken(hs256({ sub: 'a', exp: t + 3600 }), hsKeys, at)).ok, true);
  expectError(await verifyToken(hs256({ sub: 'a', exp: t + 3601 }), hsKeys, at), 'token-bad-claims');
  // A future iat does not shorten the measured lifetime; a backdated one does not hide it.
  expectError(await verifyToken(hs256({ sub: 'a', iat: t + 3000, exp: t + 3700 }), hsKeys, at), 'token-bad-claims');
  expectError(await verifyToken(hs256({ sub: 'a', iat: t - 7200, exp: t + 60 }), hsKeys, at), 'token-bad-claims');
});

test('bad claim shapes are token-bad-claims', async () => {
  const t = now();
  const base = { sub: 'alice', iat: t, exp: t + 60 };
  const bad: Array<[string, Record<string, unknown>]> = [
    ['no sub', { iat: t, exp: t + 60 }],
    ['sub not a string', { ...base, sub: 42 }],
    ['empty sub', { ...base, sub: '' }],
    ['sub too long', { ...base, sub: 'a'.repeat(65) }],
    ['sub with spaces', { ...base, sub: 'alice smith' }],
    ['sub with a slash', { ...base, sub: 'a/../b' }],
    ['dest a string', { ...base, dest: '+1555*' }],
    ['dest with numbers', { ...base, dest: [15551230000] }],
    ['dest entry too long', { ...base, dest: ['1'.repeat(129)] }],
    ['origins an object', { ...base, origins: { a: 1 } }],
    ['callerId with spaces', { ...base, callerId: 'Alice Smith' }],
    ['callerId a number', { ...base, callerId: 15551230000 }],
    ['callerId too long', { ...base, callerId: '1'.repeat(33) }],
    ['maxCalls zero', { ...base, maxCalls: 0 }],
    ['maxCalls fractional', { ...base, maxCalls: 1.5 }],
    ['maxCalls a string', { ...base, maxCalls: '2' }],
    ['exp a string', { ...base, exp: String(t + 60) }],
  ];
  for (const [what, claims] of bad) {
    const r = await verifyToken(hs256(claims), hsKeys, opts);
    assert.equal(r.ok, false, what);
    if (!r.ok) assert.equal(r.code, 'token-bad-claims', `${what}: ${r.code} ${r.message}`);
  }
  // No exp at all: rejected too (required claim).
  expectError(await verifyToken(hs256({ sub: 'alice', iat: t }), hsKeys, opts), 'token-bad-claims');
  // Boundary values that are fine.
  const ok = await verifyToken(hs256({ ...base, sub: 'a'.repeat(64), dest: ['1'.repeat(128)], callerId: '+1'.padEnd(32, '5'), maxCalls: 1, origins: [] }), hsKeys, opts);
  assert.ok(ok.ok, JSON.stringify(ok));
  assert.deepEqual(ok.claims.origins, []);
});

test('redactToken never returns the signature (or the payload)', async () => {
  const tokens = [
    await mintToken({ sub: 'alice', dest: ['+1555*'] }, { hs256Secret: SECRET }, { ttlSec: 60 }),
    await mintToken({ sub: 'bob' }, { es256PrivateKeyPem: PRIVATE_PEM }, { ttlSec: 60 }),
    'a.b.signature',
    'ab.cd.ef',
    '..secretsig',
  ];
  for (const token of tokens) {
    const [, payload, sig] = token.split('.');
    const r = redactToken(token);
    assert.ok(!r.includes(sig), `${r} contains the signature of ${token}`);
    if (payload.length > 0) assert.ok(!r.includes(payload), `${r} contains the payload of ${token}`);
    assert.ok(r.length < 40, r);
    assert.ok(r.includes(`${token.length} chars`), r);
    assert.ok(!r.includes('.'), r);
  }
  const long = tokens[0];
  assert.ok(redactToken(long).startsWith(long.slice(0, 6)));
  assert.equal(redactToken(undefined), '(none)');
  assert.equal(redactToken(''), '(none)');
});
