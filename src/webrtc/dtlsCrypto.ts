import { createECDH, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { dirname, join } from 'node:path';
import { installDtlsVerification } from './dtlsVerify';

/**
 * werift's DTLS does its ECDHE key exchange in pure JavaScript — X25519 with tweetnacl and P-256
 * with @noble/curves — about 1.5 ms of main-thread CPU per handshake side here, the largest
 * single cost when many browsers connect at once (the "50 browsers offering together" figure in
 * README "Performance"). This swaps those two functions of werift's DTLS for OpenSSL's through
 * node:crypto, with the same inputs and outputs: raw 32-byte X25519 keys, uncompressed P-256
 * points, and the shared secret as the x coordinate (RFC 8422 §5.10, RFC 7748 §6.1).
 * It also signs the handshake (ServerKeyExchange, CertificateVerify) with a key object parsed
 * once, where werift re-parsed the certificate's PEM key for every signature (0.45 ms → 0.03).
 *
 * werift does not export these modules, so they are found next to its entry point; when the
 * files or functions are not where this expects (another werift version), nothing is changed
 * and werift's own code keeps working. Idempotent.
 */

/** werift's NamedCurveAlgorithm values (the TLS named-group code points). */
const SECP256R1 = 23;
const X25519 = 29;

// DER wrappers around a raw X25519 key (RFC 8410): fixed prefixes, then the 32 key bytes.
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

interface KeyPair { curve: number; privateKey: Buffer; publicKey: Buffer }

/**
 * Our X25519 private keys as OpenSSL key objects, by the raw buffer werift hands back to
 * preMasterSecret(): importing a PKCS#8 key costs ~0.4 ms here, ten times the key agreement.
 */
const x25519KeyObjects = new WeakMap<Buffer, KeyObject>();

export function generateKeyPair(curve: number): KeyPair {
  if (curve === X25519) {
    const { privateKey, publicKey } = generateKeyPairSync('x25519');
    const jwk = privateKey.export({ format: 'jwk' });
    const raw = Buffer.from(jwk.d!, 'base64url');
    x25519KeyObjects.set(raw, privateKey);
    return { curve, privateKey: raw, publicKey: Buffer.from(jwk.x!, 'base64url') };
  }
  if (curve === SECP256R1) {
    const ecdh = createECDH('prime256v1');
    const publicKey = ecdh.generateKeys();
    return { curve, privateKey: ecdh.getPrivateKey(), publicKey };
  }
  throw new Error(`unsupported DTLS named curve ${curve}`);
}

/** The ECDHE pre-master secret from the peer's public key and our private key. */
export function preMasterSecret(publicKey: Buffer, privateKey: Buffer, curve: number): Buffer {
  if (curve === X25519) {
    if (publicKey.length !== 32 || privateKey.length !== 32) throw new Error('X25519 keys are 32 bytes');
    return diffieHellman({
      privateKey: x25519KeyObjects.get(privateKey) ?? createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, privateKey]), format: 'der', type: 'pkcs8' }),
      publicKey: createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' }),
    });
  }
  if (curve === SECP256R1) {
    const ecdh = createECDH('prime256v1');
    ecdh.setPrivateKey(privateKey);
    return ecdh.computeSecret(publicKey);
  }
  throw new Error(`unsupported DTLS named curve ${curve}`);
}

/** The certificate keys werift signs with, parsed once (werift keeps them as PKCS#8 DER). */
const signingKeys = new Map<string, KeyObject>();
function signingKey(pkcs8Der: Buffer): KeyObject {
  const id = pkcs8Der.toString('base64');
  let key = signingKeys.get(id);
  if (!key) {
    if (signingKeys.size >= 16) signingKeys.clear(); // one certificate per process in practice
    key = createPrivateKey({ key: pkcs8Der, format: 'der', type: 'pkcs8' });
    signingKeys.set(id, key);
  }
  return key;
}

/** What werift's CipherContext gives the two signing methods (its @fidm/x509 private key). */
interface CipherContextLike {
  localPrivateKey: { toDER(): Buffer };
  localRandom: { serialize(): Buffer };
  remoteRandom: { serialize(): Buffer };
  localKeyPair: KeyPair;
  namedCurve: number;
  sessionType: number;
  valueKeySignature(clientRandom: Buffer, serverRandom: Buffer, publicKey: Buffer, namedCurve: number): Buffer;
}

/** werift's SessionType.CLIENT (checked against werift's own constant at install). */
const SESSION_CLIENT = 1;

/** CertificateVerify: a signature over the handshake messages (RFC 5246 §7.4.8). */
export function signatureData(this: CipherContextLike, data: Buffer, hash: string): Buffer {
  return sign(hash, data, signingKey(this.localPrivateKey.toDER()));
}

/** ServerKeyExchange: a signature over the randoms and our ECDHE parameters (RFC 8422 §5.4). */
export function generateKeySignature(this: CipherContextLike, hashAlgorithm: string): Buffer {
  const client = this.sessionType === SESSION_CLIENT ? this.localRandom : this.remoteRandom;
  const server = this.sessionType === SESSION_CLIENT ? this.remoteRandom : this.localRandom;
  const signed = this.valueKeySignature(client.serialize(), server.serialize(), this.localKeyPair.publicKey, this.namedCurve);
  return sign(hashAlgorithm, signed, signingKey(this.localPrivateKey.toDER()));
}

let installed: boolean | null = null;

/**
 * Points werift's DTLS at the functions above. Returns whether werift now uses them (false:
 * werift's layout was not recognised and its own code stays in place).
 * Also makes werift verify the peer's handshake signatures and Finished (dtlsVerify.ts), which
 * werift 0.24 does not: every leg gets both through this one call.
 */
export function installNativeDtlsCrypto(): boolean {
  installDtlsVerification(); // idempotent; warns once when it cannot
  if (installed !== null) return installed;
  installed = false;
  try {
    const cipherDir = join(dirname(require.resolve('werift')), '../../dtls/src/cipher');
    const namedCurve = require(join(cipherDir, 'namedCurve.js')) as { generateKeyPair?: unknown };
    const prf = require(join(cipherDir, 'prf.js')) as { prfPreMasterSecret?: unknown };
    const cipherContext = (require(join(cipherDir, '../context/cipher.js')) as { CipherContext?: { prototype: Record<string, unknown> } }).CipherContext?.prototype;
    const sessionType = (require(join(cipherDir, 'suites/abstract.js')) as { SessionType?: { CLIENT?: unknown } }).SessionType;
    if (typeof namedCurve.generateKeyPair !== 'function' || typeof prf.prfPreMasterSecret !== 'function') return false;
    // werift's compiled modules call these through the module object, so replacing the export
    // replaces the function every handshake uses.
    namedCurve.generateKeyPair = generateKeyPair;
    prf.prfPreMasterSecret = preMasterSecret;
    if (cipherContext && sessionType?.CLIENT === SESSION_CLIENT && typeof cipherContext.signatureData === 'function' && typeof cipherContext.generateKeySignature === 'function' && typeof cipherContext.valueKeySignature === 'function') {
      cipherContext.signatureData = signatureData;
      cipherContext.generateKeySignature = generateKeySignature;
    }
    installed = true;
  } catch {
    installed = false;
  }
  return installed;
}
