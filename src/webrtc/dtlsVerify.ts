import { createHash, createHmac, timingSafeEqual, verify, X509Certificate, type KeyObject } from 'node:crypto';
import { dirname, join } from 'node:path';

/**
 * werift 0.24's DTLS checks the peer's certificate against the SDP fingerprint, and nothing
 * else: as server it logs the client's CertificateVerify and never checks its signature, as
 * client it never checks the ServerKeyExchange signature, and neither side checks the peer's
 * Finished (the client takes any Finished as "connected"). The certificate travels in clear, so
 * anyone on the path could present the browser's certificate, sign with a key of their own and
 * complete the handshake: the call's SRTP keys would then be theirs (audit finding, probed).
 *
 * This adds the missing checks to werift's handshake, with node:crypto:
 * - as DTLS server, before our Finished goes out (Flight6.exec): the client's CertificateVerify
 *   signature over the handshake messages before it, with the key of the certificate it sent
 *   (RFC 5246 §7.4.8), and its Finished verify_data (RFC 5246 §7.4.9);
 * - as DTLS client, before our key exchange goes out (Flight5.exec): the ServerKeyExchange
 *   signature over client_random + server_random + ServerECDHParams (RFC 8422 §5.4), with the
 *   server certificate's key, and that those are the parameters werift does the ECDHE with;
 * - as DTLS client, when the server's Finished arrives (DtlsSocket.handleFragmentHandshake, the
 *   one per-socket step every received handshake message passes): its verify_data;
 * - at the end, where werift compares the certificate with the SDP fingerprint
 *   (RTCDtlsTransport.verifyRemoteCertificateFingerprint): that the handshake was verified and
 *   that the certificate compared is the very one whose key made the verified signature.
 *   (werift takes every Certificate message it receives as the peer's certificate, even after the
 *   signature was checked; a certificate swapped in later must not pass the fingerprint check.)
 *
 * The handshake transcript is werift's own: its handshake cache, messages serialized with their
 * 12-byte DTLS headers as single fragments (RFC 6347 §4.2.6), ordered by flight then message_seq —
 * the bytes werift hashes for its own Finished and CertificateVerify, which browsers accept.
 *
 * A failed check fails the handshake the way werift fails it on any error: a fatal alert to the
 * peer (decrypt_error or bad_certificate), and an error on the socket's onError (werift's
 * RTCDtlsTransport sets itself 'failed', the peer connection goes 'failed', the leg fails at
 * once). Nothing throws out of a socket handler: werift's UDP handler catches its handshake
 * handlers' errors, and the alert is best effort.
 *
 * Patched next to werift's entry point, like dtlsCrypto.ts. If any of the pieces is not where or
 * what this expects (another werift version), nothing is patched, and a process warning says once
 * that DTLS handshake signatures are NOT verified. Idempotent.
 */

// Handshake message types (RFC 5246 §7.4).
const CERTIFICATE = 11;
const SERVER_KEY_EXCHANGE = 12;
const CERTIFICATE_VERIFY = 15;
const CLIENT_KEY_EXCHANGE = 16;
const FINISHED = 20;
/** werift's SessionType.CLIENT (checked against werift's constant at install). */
const SESSION_CLIENT = 1;
/** ECCurveType named_curve (RFC 8422 §5.4), the only kind werift sends or reads. */
const NAMED_CURVE = 3;
const ALERT = 21;
const ALERT_FATAL = 2;
const BAD_CERTIFICATE = 42;
const DECRYPT_ERROR = 51;

/** TLS 1.2 HashAlgorithm code points we accept (RFC 5246 §7.4.1.4.1); no MD5, no SHA-1. */
const HASHES: Record<number, string> = { 4: 'sha256', 5: 'sha384', 6: 'sha512' };
/** SignatureAlgorithm code points: rsa (PKCS#1 v1.5) and ecdsa, with the key type each needs. */
const SIG_RSA = 1;
const SIG_ECDSA = 3;
const KEY_TYPES: Record<number, string> = { [SIG_RSA]: 'rsa', [SIG_ECDSA]: 'ec' };
/** The signature an ECDHE cipher suite's server signs with (werift's two, and their kin). */
const SUITE_SIGNATURE: Record<number, number> = {
  0xc02b: SIG_ECDSA, 0xc02c: SIG_ECDSA, 0xcca9: SIG_ECDSA, 0xc009: SIG_ECDSA, 0xc00a: SIG_ECDSA,
  0xc02f: SIG_RSA, 0xc030: SIG_RSA, 0xcca8: SIG_RSA, 0xc013: SIG_RSA, 0xc014: SIG_RSA,
};

/** TLS 1.2 PRF with SHA-256 (RFC 5246 §5): P_SHA256(secret, label + seed), `length` bytes. */
export function tls12Prf(secret: Buffer, label: string, seed: Buffer, length: number): Buffer {
  const labelSeed = Buffer.concat([Buffer.from(label, 'latin1'), seed]);
  const out: Buffer[] = [];
  let a = labelSeed;
  let produced = 0;
  while (produced < length) {
    a = createHmac('sha256', secret).update(a).digest();
    const block = createHmac('sha256', secret).update(a).update(labelSeed).digest();
    out.push(block);
    produced += block.length;
  }
  return Buffer.concat(out).subarray(0, length);
}

/** A Finished message's verify_data (RFC 5246 §7.4.9): 12 bytes from the master secret and the transcript. */
export function finishedVerifyData(masterSecret: Buffer, handshakeMessages: Buffer, sender: 'client' | 'server'): Buffer {
  // SHA-256: the PRF hash of both cipher suites werift offers (ECDHE-ECDSA/RSA-AES128-GCM-SHA256).
  return tls12Prf(masterSecret, `${sender} finished`, createHash('sha256').update(handshakeMessages).digest(), 12);
}

/** The leaf (first) certificate of a Certificate message body (RFC 5246 §7.4.2), or null. */
export function leafCertificate(body: Buffer): Buffer | null {
  if (body.length < 6) return null;
  const listLength = body.readUIntBE(0, 3);
  if (listLength + 3 !== body.length) return null;
  const certLength = body.readUIntBE(3, 3);
  if (certLength === 0 || 6 + certLength > body.length) return null;
  return body.subarray(6, 6 + certLength);
}

export interface SignedBlock { hash: number; signature: number; value: Buffer }

/** A CertificateVerify body: SignatureAndHashAlgorithm, then the signature (RFC 5246 §7.4.8). */
export function parseCertificateVerify(body: Buffer): SignedBlock | null {
  if (body.length < 4) return null;
  const length = body.readUInt16BE(2);
  if (4 + length !== body.length) return null;
  return { hash: body[0], signature: body[1], value: body.subarray(4) };
}

/** A ServerKeyExchange body for ECDHE (RFC 8422 §5.4): the signed ServerECDHParams, and the signature. */
export function parseServerKeyExchange(body: Buffer): { params: Buffer; namedCurve: number; publicKey: Buffer; signed: SignedBlock } | null {
  if (body.length < 4 || body[0] !== NAMED_CURVE) return null;
  const publicKeyLength = body[3];
  const paramsEnd = 4 + publicKeyLength;
  if (publicKeyLength === 0 || paramsEnd + 4 > body.length) return null;
  const signatureLength = body.readUInt16BE(paramsEnd + 2);
  if (paramsEnd + 4 + signatureLength !== body.length) return null;
  return {
    params: body.subarray(0, paramsEnd),
    namedCurve: body.readUInt16BE(1),
    publicKey: body.subarray(4, paramsEnd),
    signed: { hash: body[paramsEnd], signature: body[paramsEnd + 1], value: body.subarray(paramsEnd + 4) },
  };
}

/**
 * Checks a handshake signature made with the key of `certificateDer`: null when it verifies,
 * else why not. Accepts rsa_pkcs1 and ecdsa with SHA-256/384/512 (werift offers, and browsers
 * use, SHA-256 with either), the signature algorithm matching the certificate's key. Never throws.
 */
export function verifyHandshakeSignature(certificateDer: Buffer, signed: SignedBlock, data: Buffer, expectedSignature?: number): string | null {
  const hash = HASHES[signed.hash];
  const keyType = KEY_TYPES[signed.signature];
  if (!hash || !keyType) return `unsupported signature algorithm ${signed.hash}/${signed.signature}`;
  if (expectedSignature !== undefined && signed.signature !== expectedSignature) return `signature algorithm ${signed.signature} does not fit the cipher suite`;
  let key: KeyObject;
  try {
    key = new X509Certificate(certificateDer).publicKey;
  } catch {
    return 'unreadable certificate';
  }
  if (key.asymmetricKeyType !== keyType) return `a ${keyType} signature from a ${key.asymmetricKeyType} key`;
  try {
    return verify(hash, data, key, signed.value) ? null : 'bad signature';
  } catch {
    return 'malformed signature';
  }
}

// ---- werift's DTLS, as far as this touches it ----

interface HandshakeLike { msg_type: number; length: number; fragment_offset: number; fragment_length: number; fragment: Buffer; serialize(): Buffer }
interface RandomLike { serialize(): Buffer }
interface DtlsContextLike {
  flight: number;
  epoch: number;
  recordSequenceNumber: number;
  sortedHandshakeCache: HandshakeLike[];
  options?: { certificateRequest?: boolean };
}
interface PlaintextLike { serialize(): Buffer }
interface CipherContextLike {
  sessionType: number;
  remoteCertificate?: Uint8Array;
  masterSecret?: Buffer;
  localRandom?: RandomLike;
  remoteRandom?: RandomLike;
  remoteKeyPair?: { curve?: number; publicKey?: Buffer };
  cipherSuite?: number;
  cipher?: unknown;
  encryptPacket(pkt: PlaintextLike): PlaintextLike;
}
interface TransportContextLike { send(buf: Buffer): unknown }
/** A werift Flight5 or Flight6, and a DtlsSocket: each has these three. */
interface HandshakeSide { dtls: DtlsContextLike; cipher: CipherContextLike; transport: TransportContextLike }
interface SocketLike extends HandshakeSide { sessionType: number; connected: boolean; onError: { execute(error: Error): void } }
type CreatePlaintext = (dtls: DtlsContextLike) => (fragments: Array<{ type: number; fragment: Buffer }>, recordSequenceNumber: number) => PlaintextLike[];

/** What was verified for one handshake (one werift CipherContext). */
interface Verified { certificate: Buffer | null; peerFinished: boolean }
const verified = new WeakMap<CipherContextLike, Verified>();

class DtlsVerificationError extends Error {
  constructor(message: string, readonly alert: number) {
    super(`DTLS handshake rejected: ${message}`);
    this.name = 'DtlsVerificationError';
  }
}

let failures = 0;
/**
 * Handshake checks that failed in this process since start (a peer's fault, or an attack; a peer
 * retransmitting a refused flight counts again).
 */
export function dtlsVerificationFailures(): number {
  return failures;
}

let createPlaintext: CreatePlaintext | null = null;

/** A fatal alert to the peer (RFC 5246 §7.2.2), best effort: encrypted once our epoch is 1. */
function sendFatalAlert(side: HandshakeSide, description: number): void {
  try {
    if (!createPlaintext) return;
    const [pkt] = createPlaintext(side.dtls)([{ type: ALERT, fragment: Buffer.from([ALERT_FATAL, description]) }], ++side.dtls.recordSequenceNumber);
    const out = side.dtls.epoch > 0 ? (side.cipher.cipher ? side.cipher.encryptPacket(pkt) : null) : pkt;
    if (!out) return;
    const sent = side.transport.send(out.serialize());
    if (sent && typeof (sent as Promise<unknown>).catch === 'function') (sent as Promise<unknown>).catch(() => {});
  } catch {
    /* the handshake fails anyway */
  }
}

function refuse(reason: string, alert: number): DtlsVerificationError {
  failures++;
  return new DtlsVerificationError(reason, alert);
}

const serialized = (messages: HandshakeLike[]): Buffer => Buffer.concat(messages.map((m) => m.serialize()));
const asBuffer = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

/** Checks a Finished body against the transcript before it. */
function finishedMatches(masterSecret: Buffer | undefined, transcript: Buffer, body: Buffer, sender: 'client' | 'server'): boolean {
  if (!masterSecret) return false;
  const expected = finishedVerifyData(masterSecret, transcript, sender);
  return body.length === expected.length && timingSafeEqual(body, expected);
}

/**
 * As DTLS server, once the client's flight 5 is all in: its certificate, CertificateVerify and
 * Finished. Throws a DtlsVerificationError; on success records what was verified.
 */
function checkClientFlight(dtls: DtlsContextLike, cipher: CipherContextLike): void {
  const messages = dtls.sortedHandshakeCache;
  const remote = cipher.remoteCertificate ? Buffer.from(cipher.remoteCertificate) : null;
  const cv = messages.findIndex((m) => m.msg_type === CERTIFICATE_VERIFY);
  const fin = messages.findIndex((m) => m.msg_type === FINISHED);
  if (fin < 0) throw refuse('no Finished from the client', DECRYPT_ERROR);
  // The ECDHE key werift did the key exchange with must be the one in the transcript the
  // client signed: werift caches the first ClientKeyExchange but re-derives its master secret
  // from every later one, so a second, injected ClientKeyExchange (the attacker's key) would
  // otherwise go with the browser's genuine CertificateVerify.
  const cke = messages.find((m) => m.msg_type === CLIENT_KEY_EXCHANGE);
  const point = cke && cke.fragment.length >= 1 && cke.fragment.length === 1 + cke.fragment[0] ? cke.fragment.subarray(1) : null;
  const used = cipher.remoteKeyPair?.publicKey;
  if (!point || !used || !point.equals(asBuffer(used))) throw refuse('the ECDHE key werift took is not the one in the client\'s ClientKeyExchange', DECRYPT_ERROR);
  if (remote || cv >= 0 || dtls.options?.certificateRequest) {
    if (!remote) throw refuse('the client sent no certificate', BAD_CERTIFICATE);
    if (cv < 0 || cv > fin) throw refuse('the client sent no CertificateVerify', BAD_CERTIFICATE);
    // The client's Certificate is the last one before its CertificateVerify (ours, in flight 4, comes first).
    const certificate = messages.slice(0, cv).filter((m) => m.msg_type === CERTIFICATE).pop();
    const leaf = certificate && leafCertificate(certificate.fragment);
    if (!leaf || !leaf.equals(remote)) throw refuse('the certificate werift took is not the one the client sent before its CertificateVerify', BAD_CERTIFICATE);
    const block = parseCertificateVerify(messages[cv].fragment);
    if (!block) throw refuse('malformed CertificateVerify', DECRYPT_ERROR);
    const why = verifyHandshakeSignature(remote, block, serialized(messages.slice(0, cv)));
    if (why) throw refuse(`client CertificateVerify: ${why}`, DECRYPT_ERROR);
  }
  if (!finishedMatches(cipher.masterSecret, serialized(messages.slice(0, fin)), messages[fin].fragment, 'client')) {
    throw refuse('client Finished: wrong verify_data', DECRYPT_ERROR);
  }
  verified.set(cipher, { certificate: remote, peerFinished: true });
}

/**
 * As DTLS client, once flight 4 is in and before ours goes out: the ServerKeyExchange signature,
 * with the key of the server's certificate, over what werift will really use. Throws a
 * DtlsVerificationError; on success records the certificate.
 */
function checkServerKeyExchange(dtls: DtlsContextLike, cipher: CipherContextLike): void {
  const messages = dtls.sortedHandshakeCache;
  const remote = cipher.remoteCertificate ? Buffer.from(cipher.remoteCertificate) : null;
  if (!remote) throw refuse('the server sent no certificate', BAD_CERTIFICATE);
  // The server's Certificate is the first one (flight 4; ours, if any, is not cached before flight 5).
  const certificate = messages.find((m) => m.msg_type === CERTIFICATE);
  const leaf = certificate && leafCertificate(certificate.fragment);
  if (!leaf || !leaf.equals(remote)) throw refuse('the certificate werift took is not the one in the server\'s flight', BAD_CERTIFICATE);
  const ske = messages.find((m) => m.msg_type === SERVER_KEY_EXCHANGE);
  const parsed = ske && parseServerKeyExchange(ske.fragment);
  if (!parsed) throw refuse('malformed or missing ServerKeyExchange', DECRYPT_ERROR);
  const used = cipher.remoteKeyPair;
  if (!used?.publicKey || used.curve !== parsed.namedCurve || !parsed.publicKey.equals(used.publicKey)) {
    throw refuse('the ECDHE key werift took is not the one the server signed', DECRYPT_ERROR);
  }
  if (!cipher.localRandom || !cipher.remoteRandom) throw refuse('no hello randoms', DECRYPT_ERROR);
  // We are the client: client_random is ours, server_random theirs.
  const data = Buffer.concat([cipher.localRandom.serialize(), cipher.remoteRandom.serialize(), parsed.params]);
  const why = verifyHandshakeSignature(remote, parsed.signed, data, cipher.cipherSuite !== undefined ? SUITE_SIGNATURE[cipher.cipherSuite] : undefined);
  if (why) throw refuse(`ServerKeyExchange: ${why}`, DECRYPT_ERROR);
  verified.set(cipher, { certificate: remote, peerFinished: false });
}

/** As DTLS client, the server's Finished (its fragments as werift received them): throws, or records it. */
function checkServerFinished(dtls: DtlsContextLike, cipher: CipherContextLike, fragments: HandshakeLike[]): void {
  const state = verified.get(cipher);
  if (!state) throw refuse('server Finished before a verified ServerKeyExchange', DECRYPT_ERROR);
  const remote = cipher.remoteCertificate;
  if (!remote || !state.certificate || !asBuffer(remote).equals(state.certificate)) {
    throw refuse('the server\'s certificate changed after its signature was verified', BAD_CERTIFICATE);
  }
  const length = fragments[0].length;
  if (fragments.some((f) => f.length !== length)) throw refuse('inconsistent Finished fragments', DECRYPT_ERROR);
  const body = Buffer.alloc(length);
  let covered = 0;
  for (const f of [...fragments].sort((a, b) => a.fragment_offset - b.fragment_offset)) {
    if (f.fragment_offset > covered || f.fragment_offset + f.fragment.length > length) throw refuse('incomplete Finished', DECRYPT_ERROR);
    f.fragment.copy(body, f.fragment_offset);
    covered = Math.max(covered, f.fragment_offset + f.fragment.length);
  }
  if (covered !== length) throw refuse('incomplete Finished', DECRYPT_ERROR);
  // Everything up to and including our own Finished (werift's client does not cache the server's).
  const messages = dtls.sortedHandshakeCache;
  const ours = messages.findIndex((m) => m.msg_type === FINISHED);
  if (ours < 0) throw refuse('server Finished before ours', DECRYPT_ERROR);
  if (!finishedMatches(cipher.masterSecret, serialized(messages.slice(0, ours + 1)), body, 'server')) {
    throw refuse('server Finished: wrong verify_data', DECRYPT_ERROR); // dropped (handleFragmentHandshake)
  }
  state.peerFinished = true;
}

const MARK = Symbol.for('webrtc-sip-gateway.dtlsVerify');
type Marked<F> = F & { [MARK]?: true };
function mark<F extends object>(f: F): F {
  (f as Marked<F>)[MARK] = true;
  return f;
}

let installed: boolean | null = null;
let warned = false;

/**
 * Makes werift's DTLS verify the peer's handshake signatures and Finished (see above). Returns
 * whether it does now; false (werift's layout not recognised: nothing changed) also emits a
 * process warning, once.
 */
export function installDtlsVerification(): boolean {
  if (installed !== null) return installed;
  installed = false;
  try {
    installed = patch();
  } catch {
    installed = false;
  }
  if (!installed && !warned) {
    warned = true;
    process.emitWarning('werift\'s DTLS layout was not recognised: the peer\'s DTLS handshake signatures and Finished are NOT verified (only its certificate fingerprint is)', { code: 'GATEWAY_DTLS_UNVERIFIED' });
  }
  return installed;
}

type Proto = Record<string | symbol, unknown>;

function patch(): boolean {
  const entry = require.resolve('werift');
  const dtlsDir = join(dirname(entry), '../../dtls/src');
  const load = (file: string): Record<string, unknown> => require(join(dtlsDir, file)) as Record<string, unknown>;
  const flight5 = (load('flight/client/flight5.js').Flight5 as { prototype: Proto } | undefined)?.prototype;
  const flight6 = (load('flight/server/flight6.js').Flight6 as { prototype: Proto } | undefined)?.prototype;
  const socket = (load('socket.js').DtlsSocket as { prototype: Proto } | undefined)?.prototype;
  const sessionType = load('cipher/suites/abstract.js').SessionType as { CLIENT?: unknown } | undefined;
  const builder = load('record/builder.js');
  const contextDtls = (load('context/dtls.js').DtlsContext as { prototype: object } | undefined)?.prototype;
  const transport = ((require('werift') as Record<string, unknown>).RTCDtlsTransport as { prototype: Proto } | undefined)?.prototype;
  if (!flight5 || !flight6 || !socket || !transport || !contextDtls) return false;
  if (sessionType?.CLIENT !== SESSION_CLIENT) return false;
  if (typeof flight5.exec !== 'function' || typeof flight6.exec !== 'function') return false;
  if (typeof socket.handleFragmentHandshake !== 'function' || typeof transport.verifyRemoteCertificateFingerprint !== 'function') return false;
  if (typeof builder.createPlaintext !== 'function') return false;
  // The transcript comes from here: a getter on werift's DtlsContext.
  if (typeof Object.getOwnPropertyDescriptor(contextDtls, 'sortedHandshakeCache')?.get !== 'function') return false;

  if ((flight6.exec as Marked<object>)[MARK]) return true; // patched by another copy of this module
  if (typeof flight6.handleHandshake !== 'function') return false;
  createPlaintext = builder.createPlaintext as CreatePlaintext;

  // werift re-derives its master secret from every ClientKeyExchange that comes before
  // "connected", while its transcript keeps the first: one injected later (or a retransmission,
  // derived over a transcript that has grown meanwhile) would change the keys under a verified
  // handshake. Only the first is taken; checkClientFlight still pins the key to it.
  const flight6Handle = flight6.handleHandshake as (this: HandshakeSide, handshake: HandshakeLike) => unknown;
  flight6.handleHandshake = mark(function firstClientKeyExchange(this: HandshakeSide, handshake: HandshakeLike) {
    if (handshake.msg_type === CLIENT_KEY_EXCHANGE && this.dtls.sortedHandshakeCache.some((m) => m.msg_type === CLIENT_KEY_EXCHANGE)) return undefined;
    return flight6Handle.call(this, handshake);
  });

  const flight6Exec = flight6.exec as (this: HandshakeSide, ...args: unknown[]) => Promise<unknown>;
  flight6.exec = mark(async function verifiedFlight6(this: HandshakeSide, ...args: unknown[]) {
    if (this.dtls.flight !== 6) { // (6: a retransmission of a flight already verified and answered)
      try {
        checkClientFlight(this.dtls, this.cipher);
      } catch (err) {
        if (err instanceof DtlsVerificationError) sendFatalAlert(this, err.alert);
        throw err; // werift's handshake handler rejects: onError, the transport fails
      }
    }
    return flight6Exec.apply(this, args);
  });

  const flight5Exec = flight5.exec as (this: HandshakeSide, ...args: unknown[]) => Promise<unknown>;
  flight5.exec = mark(async function verifiedFlight5(this: HandshakeSide, ...args: unknown[]) {
    if (this.dtls.flight !== 5) { // (5: werift resends the flight it already sent)
      try {
        checkServerKeyExchange(this.dtls, this.cipher);
      } catch (err) {
        if (err instanceof DtlsVerificationError) sendFatalAlert(this, err.alert);
        throw err;
      }
    }
    return flight5Exec.apply(this, args);
  });

  const handleFragments = socket.handleFragmentHandshake as (this: SocketLike, messages: HandshakeLike[]) => HandshakeLike[];
  socket.handleFragmentHandshake = mark(function verifiedFragments(this: SocketLike, messages: HandshakeLike[]): HandshakeLike[] {
    const handshakes = handleFragments.call(this, messages);
    if (this.sessionType !== SESSION_CLIENT || this.connected || !Array.isArray(handshakes)) return handshakes;
    const finished = handshakes.filter((h) => h.msg_type === FINISHED);
    if (finished.length === 0) return handshakes;
    try {
      checkServerFinished(this.dtls, this.cipher, finished);
      return handshakes;
    } catch {
      // Whatever is wrong with it, a Finished werift read may be one anyone sent (werift takes
      // unencrypted ones, from any address): dropped, never failing the leg, and never letting
      // werift call the handshake connected. The server's real Finished still comes; a server
      // that never sends a right one meets the leg's connect timeout.
      return handshakes.filter((h) => h.msg_type !== FINISHED);
    }
  });

  const fingerprintCheck = transport.verifyRemoteCertificateFingerprint as (this: { dtls?: { cipher?: CipherContextLike; remoteCertificate?: Uint8Array } }) => unknown;
  transport.verifyRemoteCertificateFingerprint = mark(function verifiedHandshakeFingerprint(this: { dtls?: { cipher?: CipherContextLike; remoteCertificate?: Uint8Array } }) {
    const cipher = this.dtls?.cipher;
    const state = cipher ? verified.get(cipher) : undefined;
    if (!state?.peerFinished) throw refuse('the peer\'s handshake signature and Finished were not verified', BAD_CERTIFICATE);
    const remote = this.dtls?.remoteCertificate;
    if (!remote || !state.certificate || !asBuffer(remote).equals(state.certificate)) {
      throw refuse('the peer\'s certificate is not the one whose key signed the handshake', BAD_CERTIFICATE);
    }
    return fingerprintCheck.call(this);
  });
  return true;
}
