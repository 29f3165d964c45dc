import { createECDH, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync } from 'node:crypto';
import { dirname, join } from 'node:path';

/**
 * werift's DTLS does its ECDHE key exchange in pure JavaScript — X25519 with tweetnacl and P-256
 * with @noble/curves — about 1.5 ms of main-thread CPU per handshake side here, the largest
 * single cost when many browsers connect at once (the "50 browsers offering together" figure in
 * README "Performance"). This swaps those two functions of werift's DTLS for OpenSSL's through
 * node:crypto, with the same inputs and outputs: raw 32-byte X25519 keys, uncompressed P-256
 * points, and the shared secret as the x coordinate (RFC 8422 §5.10, RFC 7748 §6.1).
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

export function generateKeyPair(curve: number): KeyPair {
  if (curve === X25519) {
    const { privateKey, publicKey } = generateKeyPairSync('x25519');
    const priv = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(X25519_PKCS8_PREFIX.length);
    const pub = publicKey.export({ format: 'der', type: 'spki' }).subarray(X25519_SPKI_PREFIX.length);
    return { curve, privateKey: Buffer.from(priv), publicKey: Buffer.from(pub) };
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
      privateKey: createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, privateKey]), format: 'der', type: 'pkcs8' }),
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

let installed: boolean | null = null;

/**
 * Points werift's DTLS at the functions above. Returns whether werift now uses them (false:
 * werift's layout was not recognised and its own code stays in place).
 */
export function installNativeDtlsKeyExchange(): boolean {
  if (installed !== null) return installed;
  installed = false;
  try {
    const cipherDir = join(dirname(require.resolve('werift')), '../../dtls/src/cipher');
    const namedCurve = require(join(cipherDir, 'namedCurve.js')) as { generateKeyPair?: unknown };
    const prf = require(join(cipherDir, 'prf.js')) as { prfPreMasterSecret?: unknown };
    if (typeof namedCurve.generateKeyPair !== 'function' || typeof prf.prfPreMasterSecret !== 'function') return false;
    // werift's compiled modules call these through the module object, so replacing the export
    // replaces the function every handshake uses.
    namedCurve.generateKeyPair = generateKeyPair;
    prf.prfPreMasterSecret = preMasterSecret;
    installed = true;
  } catch {
    installed = false;
  }
  return installed;
}
