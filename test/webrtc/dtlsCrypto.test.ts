/**
 * The native ECDHE functions given to werift's DTLS must agree, byte for byte, with the
 * pure-JS ones they replace (tweetnacl for X25519, @noble/curves for P-256 — both already
 * installed as werift's dependencies), and werift must really call them once installed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { createPublicKey, verify, X509Certificate } from 'node:crypto';
import nacl from 'tweetnacl';
import { p256 } from '@noble/curves/p256';
import { generateKeyPair, generateKeySignature, preMasterSecret, signatureData, installNativeDtlsCrypto } from '../../src/webrtc/dtlsCrypto';

test('X25519: our keys and tweetnacl\'s reach the same secret both ways; RFC 7748 §6.1 vector', () => {
  for (let i = 0; i < 20; i++) {
    const ours = generateKeyPair(29);
    assert.equal(ours.publicKey.length, 32);
    const theirs = nacl.box.keyPair();
    const a = preMasterSecret(Buffer.from(theirs.publicKey), ours.privateKey, 29);
    const b = Buffer.from(nacl.scalarMult(theirs.secretKey, ours.publicKey));
    assert.deepEqual(a, b);
    // Our public key is what tweetnacl derives from our private key.
    assert.deepEqual(Buffer.from(nacl.scalarMult.base(ours.privateKey)), ours.publicKey);
  }
  const alicePriv = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex');
  const bobPub = Buffer.from('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f', 'hex');
  assert.equal(preMasterSecret(bobPub, alicePriv, 29).toString('hex'), '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742');
});

test('P-256: uncompressed points; the secret is the shared x coordinate, as @noble/curves computes it', () => {
  for (let i = 0; i < 20; i++) {
    const ours = generateKeyPair(23);
    assert.equal(ours.publicKey.length, 65);
    assert.equal(ours.publicKey[0], 0x04);
    const theirPriv = p256.utils.randomPrivateKey();
    const theirPub = Buffer.from(p256.getPublicKey(theirPriv, false));
    const a = preMasterSecret(theirPub, ours.privateKey, 23);
    const b = Buffer.from(p256.getSharedSecret(theirPriv, ours.publicKey)).subarray(1);
    assert.deepEqual(a, b);
  }
});

test('bad keys and unknown curves throw (werift turns that into a failed handshake)', () => {
  assert.throws(() => preMasterSecret(Buffer.alloc(31), Buffer.alloc(32), 29), /32 bytes/);
  assert.throws(() => preMasterSecret(Buffer.alloc(65, 1), generateKeyPair(23).privateKey, 23));
  assert.throws(() => generateKeyPair(24), /unsupported DTLS named curve 24/);
});

test('once installed, werift\'s DTLS flights call ours', () => {
  assert.equal(installNativeDtlsCrypto(), true);
  const cipherDir = join(dirname(require.resolve('werift')), '../../dtls/src/cipher');
  assert.equal(require(join(cipherDir, 'namedCurve.js')).generateKeyPair, generateKeyPair);
  assert.equal(require(join(cipherDir, 'prf.js')).prfPreMasterSecret, preMasterSecret);
  const cipherContext = require(join(cipherDir, '../context/cipher.js')).CipherContext.prototype;
  assert.equal(cipherContext.signatureData, signatureData);
  assert.equal(cipherContext.generateKeySignature, generateKeySignature);
  assert.equal(installNativeDtlsCrypto(), true, 'a second call changes nothing');
});

test('handshake signatures (ServerKeyExchange, CertificateVerify) are made with the certificate key and verify', async () => {
  assert.equal(installNativeDtlsCrypto(), true);
  const { CipherContext } = require(join(dirname(require.resolve('werift')), '../../dtls/src/context/cipher.js'));
  const { certPem, keyPem, signatureHash } = await CipherContext.createSelfSignedCertificateWithKey({ hash: 4, signature: 3 }, 23);
  const publicKey = createPublicKey(new X509Certificate(certPem).publicKey.export({ format: 'pem', type: 'spki' }));
  for (const sessionType of [1, 2]) {
    const ctx = new CipherContext(sessionType, certPem, keyPem, signatureHash);
    ctx.localRandom = { serialize: () => Buffer.alloc(32, sessionType) };
    ctx.remoteRandom = { serialize: () => Buffer.alloc(32, 9) };
    ctx.namedCurve = 29;
    ctx.localKeyPair = generateKeyPair(29);
    // What the peer checks: the client random, the server random, then our ECDHE parameters.
    const [client, server] = sessionType === 1 ? [ctx.localRandom, ctx.remoteRandom] : [ctx.remoteRandom, ctx.localRandom];
    const signed = ctx.valueKeySignature(client.serialize(), server.serialize(), ctx.localKeyPair.publicKey, 29);
    assert.ok(verify('sha256', signed, publicKey, ctx.generateKeySignature('sha256')), 'ServerKeyExchange signature');
    const transcript = Buffer.from('handshake messages so far');
    assert.ok(verify('sha256', transcript, publicKey, ctx.signatureData(transcript, 'sha256')), 'CertificateVerify signature');
    assert.ok(!verify('sha256', Buffer.from('something else'), publicKey, ctx.signatureData(transcript, 'sha256')));
  }
});
