/**
 * werift's DTLS must refuse a peer that presents a certificate without holding its key (the
 * audit's probe: the browser's certificate, the attacker's signature) or whose Finished is wrong,
 * in both roles. The peer here is werift itself, driven in the test: its signing (or Finished)
 * replaced for its role only, while the other side runs werift as patched by dtlsVerify.ts.
 * End to end against a BrowserLeg (gateway as DTLS server and as client), and DTLS to DTLS in
 * memory for the certificate kinds a browser may use (ECDSA P-256, RSA PKCS#1).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { createHash, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import pino from 'pino';
import { MediaStreamTrack, RTCDtlsTransport, RTCPeerConnection, RTCRtpCodecParameters } from 'werift';
import { BrowserLeg } from '../../src/webrtc/browserLeg';
import { IcePortPool } from '../../src/webrtc/icePortPool';
import { installNativeDtlsCrypto } from '../../src/webrtc/dtlsCrypto';
import {
  dtlsVerificationFailures, finishedVerifyData, installDtlsVerification, leafCertificate, parseCertificateVerify,
  parseServerKeyExchange, tls12Prf, verifyHandshakeSignature,
} from '../../src/webrtc/dtlsVerify';
import { startStunResponder } from '../../bench/stunResponder';

const logger = pino({ level: 'silent' });
const dtlsDir = join(dirname(require.resolve('werift')), '../../dtls/src');
const pool = new IcePortPool([26200, 26249]);
const stun = startStunResponder();
after(async () => (await stun).close());
// A refused handshake leaves werift retransmitting its last flight into the closed socket for
// ~27 s (its own schedule, as after any failed handshake); that would only keep this test
// process alive: once the tests are done, their loops end at their next wake-up.
after(() => { require(join(dtlsDir, 'flight/flight.js')).Flight.RetransmitCount = 0; });

const { CipherContext } = require(join(dtlsDir, 'context/cipher.js'));
const { DtlsServer } = require(join(dtlsDir, 'server.js'));
const { DtlsClient } = require(join(dtlsDir, 'client.js'));
const prf = require(join(dtlsDir, 'cipher/prf.js'));
const cipherProto = CipherContext.prototype as Record<string, (this: { sessionType: number } & Record<string, any>, ...args: any[]) => any>;

/** werift's SessionType. */
const CLIENT = 1;
const SERVER = 2;

type Fault = 'none' | 'signature' | 'finished';

/** A P-256 key that is not the certificate's: what an attacker holding only the certificate signs with. */
const attackerKey: KeyObject = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;

/**
 * Runs `body` with werift's `side` (CLIENT or SERVER) misbehaving: 'signature' — its
 * CertificateVerify (client) or ServerKeyExchange (server) signed with a key other than its
 * certificate's; 'finished' — one bit of its Finished verify_data flipped. The other side is
 * untouched: it is the one under test.
 */
async function withFault<T>(fault: Fault, side: number, body: () => Promise<T>): Promise<T> {
  const saved = { signatureData: cipherProto.signatureData, generateKeySignature: cipherProto.generateKeySignature, verifyData: cipherProto.verifyData };
  if (fault === 'signature' && side === CLIENT) {
    cipherProto.signatureData = function (data: Buffer, hash: string) {
      return this.sessionType === CLIENT ? sign(hash, data, attackerKey) : saved.signatureData.call(this, data, hash);
    };
  } else if (fault === 'signature') {
    cipherProto.generateKeySignature = function (hash: string) {
      if (this.sessionType !== SERVER) return saved.generateKeySignature.call(this, hash);
      const signed = this.valueKeySignature(this.remoteRandom.serialize(), this.localRandom.serialize(), this.localKeyPair.publicKey, this.namedCurve);
      return sign(hash, signed, attackerKey);
    };
  } else if (fault === 'finished') {
    cipherProto.verifyData = function (buf: Buffer) {
      const v = Buffer.from(saved.verifyData.call(this, buf));
      if (this.sessionType === side) v[0] ^= 1;
      return v;
    };
  }
  try {
    return await body();
  } finally {
    Object.assign(cipherProto, saved);
  }
}

// ---- against a BrowserLeg ----

/** A werift peer connection as the browser: Opus only, on loopback, ephemeral ports. */
async function browserPeer(): Promise<RTCPeerConnection> {
  return new RTCPeerConnection({
    iceServers: [{ urls: `stun:127.0.0.1:${(await stun).port}` }],
    iceUseIpv6: false,
    iceInterfaceAddresses: { udp4: '127.0.0.1' },
    codecs: { audio: [new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111 })] },
  });
}

/**
 * An outbound call from the peer to a BrowserLeg, the gateway in `gatewayRole` (server: the
 * peer offers actpass as browsers do; client: the peer offers passive). Resolves with what the
 * leg did first — connected, or failed and why — and how long it took from the answer.
 */
async function callLeg(gatewayRole: 'server' | 'client', connectTimeoutMs = 10_000): Promise<{ outcome: string; ms: number; connectedEver: boolean }> {
  const leg = new BrowserLeg({ callId: `verify-${gatewayRole}`, logger, connectTimeoutMs, ice: { bindAddress: '127.0.0.1', announcedAddresses: ['127.0.0.1'], portRange: [26200, 26249], portPool: pool } });
  const pc = await browserPeer();
  let connectedEver = false;
  leg.on('connected', () => { connectedEver = true; });
  try {
    pc.addTransceiver(new MediaStreamTrack({ kind: 'audio' }), { direction: 'sendrecv' });
    await pc.setLocalDescription(await pc.createOffer());
    let offer = pc.localDescription!.sdp;
    if (gatewayRole === 'client') offer = offer.replace(/a=setup:actpass/g, 'a=setup:passive');
    const answer = await leg.answer(offer);
    assert.match(answer, gatewayRole === 'server' ? /a=setup:passive/ : /a=setup:active/);
    const start = Date.now();
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    const outcome = await new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve(`still ${leg.state} after 12 s`), 12_000);
      leg.once('connected', () => { clearTimeout(timer); resolve('connected'); });
      leg.once('failed', (reason) => { clearTimeout(timer); resolve(`failed: ${reason}`); });
    });
    return { outcome, ms: Date.now() - start, connectedEver };
  } finally {
    await leg.close();
    await pc.close();
  }
}

for (const gatewayRole of ['server', 'client'] as const) {
  const peerSide = gatewayRole === 'server' ? CLIENT : SERVER;
  const what = gatewayRole === 'server' ? 'CertificateVerify' : 'ServerKeyExchange';

  test(`gateway as DTLS ${gatewayRole}: an honest peer connects`, async () => {
    const r = await callLeg(gatewayRole);
    assert.equal(r.outcome, 'connected');
  });

  test(`gateway as DTLS ${gatewayRole}: a peer with the certificate but another key (${what} signed by it) does not connect, and the leg fails at once`, async () => {
    const before = dtlsVerificationFailures();
    const r = await withFault('signature', peerSide, () => callLeg(gatewayRole));
    assert.equal(r.connectedEver, false, 'never connected');
    assert.equal(r.outcome, 'failed: peer connection failed');
    assert.ok(r.ms < 5000, `failed after ${r.ms} ms, not by the 10 s connect timeout`);
    assert.ok(dtlsVerificationFailures() > before, 'counted');
  });

  test(`gateway as DTLS ${gatewayRole}: a peer whose Finished is wrong does not connect`, async () => {
    const r = await withFault('finished', peerSide, () => callLeg(gatewayRole, 3000));
    assert.equal(r.connectedEver, false, 'never connected');
    if (gatewayRole === 'server') {
      assert.equal(r.outcome, 'failed: peer connection failed');
      assert.ok(r.ms < 2500, `failed after ${r.ms} ms`);
    } else {
      // As client, a wrong server Finished is dropped (an unencrypted one can come from anyone):
      // the leg waits for a right one, and gives up at its connect timeout.
      assert.match(r.outcome, /^failed: ICE\/DTLS did not connect within 3000 ms/);
    }
  });
}

// ---- DTLS to DTLS in memory: both certificate kinds, both directions ----

interface Cert { certPem: string; keyPem: string; signatureHash: { hash: number; signature: number } }
const ecdsaCert = CipherContext.createSelfSignedCertificateWithKey({ hash: 4, signature: 3 }, 23) as Promise<Cert>;
const rsaCert = CipherContext.createSelfSignedCertificateWithKey({ hash: 4, signature: 1 }, 23) as Promise<Cert>;

interface Endpoint { onData?: (buf: Buffer) => void; send(buf: Buffer): Promise<void>; close(): void }

/** What an on-path attacker does to the server's datagrams to the client: the datagrams delivered instead. */
type Tap = (datagram: Buffer) => Buffer[];

/** Two datagram endpoints wired to each other (each datagram delivered on a later turn). */
function wire(toClient: Tap = (d) => [d]): [Endpoint, Endpoint] {
  let open = true;
  const deliver = (to: Endpoint, buf: Buffer) => setImmediate(() => open && to.onData?.(buf));
  const a: Endpoint = { send: async (buf) => { if (open) for (const d of toClient(Buffer.from(buf))) deliver(b, d); }, close: () => { open = false; } };
  const b: Endpoint = { send: async (buf) => { if (open) deliver(a, Buffer.from(buf)); }, close: () => { open = false; } };
  return [a, b];
}

/** A werift DTLS handshake in memory: what each side ended with (connected, or its error). */
async function handshake(serverCert: Cert, clientCert: Cert, toClient?: Tap): Promise<{ server: string; client: string; serverSocket: any; clientSocket: any }> {
  const [s, c] = wire(toClient);
  const common = { srtpProfiles: [1], extendedMasterSecret: true };
  const server = new DtlsServer({ ...common, cert: serverCert.certPem, key: serverCert.keyPem, signatureHash: serverCert.signatureHash, transport: s, certificateRequest: true });
  const client = new DtlsClient({ ...common, cert: clientCert.certPem, key: clientCert.keyPem, signatureHash: clientCert.signatureHash, transport: c });
  // Each side's outcome; once one side has one, the other gets 300 ms more (a side that refused
  // the handshake leaves the other waiting for a flight that never comes).
  let first: () => void = () => {};
  const firstOutcome = new Promise<void>((r) => { first = r; });
  const outcome = (sock: any) => new Promise<string>((resolve) => {
    const done = (what: string) => { clearTimeout(timer); first(); resolve(what); };
    const timer = setTimeout(() => resolve('no outcome in 3 s'), 3000);
    firstOutcome.then(() => setTimeout(() => done('no outcome'), 300));
    sock.onConnect.once(() => done('connected'));
    sock.onError.once((e: unknown) => done(`error: ${e instanceof Error ? e.message : String(e)}`));
  });
  const results = Promise.all([outcome(server), outcome(client)]);
  client.connect().catch(() => {});
  const [so, co] = await results;
  s.close();
  return { server: so, client: co, serverSocket: server, clientSocket: client };
}

const kinds = { ECDSA: ecdsaCert, RSA: rsaCert } as const;
for (const [serverKind, clientKind] of [['ECDSA', 'ECDSA'], ['RSA', 'RSA'], ['ECDSA', 'RSA'], ['RSA', 'ECDSA']] as const) {
  test(`DTLS in memory, ${serverKind} server / ${clientKind} client: honest peers connect, with the same keys both sides`, async () => {
    const r = await handshake(await kinds[serverKind], await kinds[clientKind]);
    assert.deepEqual([r.server, r.client], ['connected', 'connected']);
    assert.deepEqual(r.serverSocket.extractSessionKeys(16, 14).localKey, r.clientSocket.extractSessionKeys(16, 14).remoteKey);
  });

  test(`DTLS in memory, ${serverKind} server / ${clientKind} client: a client signing with another key is refused by the server`, async () => {
    const r = await withFault('signature', CLIENT, async () => handshake(await kinds[serverKind], await kinds[clientKind]));
    assert.match(r.server, /^error: DTLS handshake rejected: client CertificateVerify: (bad signature|a \w+ signature from a \w+ key)/);
  });

  test(`DTLS in memory, ${serverKind} server / ${clientKind} client: a server signing with another key is refused by the client`, async () => {
    const r = await withFault('signature', SERVER, async () => handshake(await kinds[serverKind], await kinds[clientKind]));
    assert.match(r.client, /^error: DTLS handshake rejected: ServerKeyExchange: (bad signature|a \w+ signature from a \w+ key)/);
    assert.notEqual(r.server, 'connected');
  });
}

test('DTLS in memory: a wrong Finished is refused by the server and dropped by the client (neither connects)', async () => {
  const cert = await ecdsaCert;
  const fromClient = await withFault('finished', CLIENT, () => handshake(cert, cert));
  assert.equal(fromClient.server, 'error: DTLS handshake rejected: client Finished: wrong verify_data');
  const fromServer = await withFault('finished', SERVER, () => handshake(cert, cert));
  assert.notEqual(fromServer.client, 'connected', 'the client drops a wrong server Finished (anyone could send an unencrypted one)');
});

/** A DTLS 1.2 plaintext record (epoch 0) carrying a Certificate handshake message with `der`. */
function certificateRecord(der: Buffer): Buffer {
  const u24 = (n: number) => Buffer.from([n >> 16, (n >> 8) & 0xff, n & 0xff]);
  const body = Buffer.concat([u24(der.length + 3), u24(der.length), der]);
  const handshakeMessage = Buffer.concat([Buffer.from([11]), u24(body.length), Buffer.from([0, 1]), u24(0), u24(body.length), body]);
  const header = Buffer.from([22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 99, 0, 0]);
  header.writeUInt16BE(handshakeMessage.length, 11);
  return Buffer.concat([header, handshakeMessage]);
}
/** The server's Finished: the handshake record of epoch 1. */
const isServerFinished = (d: Buffer) => d[0] === 22 && d.readUInt16BE(3) === 1;
const sha256Fingerprint = (der: Buffer) => createHash('sha256').update(der).digest('hex').toUpperCase().match(/../g)!.join(':');

test('DTLS in memory: a server certificate swapped in after the ServerKeyExchange was verified is refused (werift takes any later Certificate as the peer\'s)', async () => {
  // The attacker is a real DTLS server with a certificate of its own (its signatures are fine),
  // and wants the fingerprint check to see the victim's certificate instead.
  const [attacker, victim] = [await ecdsaCert, await rsaCert];
  const victimDer = new X509Certificate(victim.certPem).raw;
  const check = (RTCDtlsTransport.prototype as unknown as { verifyRemoteCertificateFingerprint(this: unknown): void }).verifyRemoteCertificateFingerprint;
  const fingerprints = [{ algorithm: 'sha-256', value: sha256Fingerprint(victimDer) }];

  // In a datagram of its own before the Finished: the client sees the change at the Finished,
  // which it drops (as any Finished it cannot verify): it never connects.
  const apart = await handshake(attacker, attacker, (d) => (isServerFinished(d) ? [certificateRecord(victimDer), d] : [d]));
  assert.notEqual(apart.client, 'connected');
  assert.doesNotMatch(apart.client, /^connected/);

  // In the Finished's own datagram, werift only takes it once the Finished made it "connected";
  // the fingerprint check, next, must not compare the certificate swapped in.
  const together = await handshake(attacker, attacker, (d) => (isServerFinished(d) ? [Buffer.concat([certificateRecord(victimDer), d])] : [d]));
  assert.equal(together.client, 'connected', 'werift\'s DTLS client itself does not notice');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(Buffer.from(together.clientSocket.remoteCertificate), victimDer, 'werift now names the victim\'s certificate as the peer\'s');
  assert.throws(() => check.call({ dtls: together.clientSocket, remoteParameters: { fingerprints } }), /not the one whose key signed the handshake/);
  // The honest case passes that same check (the attacker's own fingerprint, its own certificate).
  const honest = await handshake(attacker, attacker);
  const attackerFingerprint = [{ algorithm: 'sha-256', value: sha256Fingerprint(new X509Certificate(attacker.certPem).raw) }];
  assert.doesNotThrow(() => check.call({ dtls: honest.clientSocket, remoteParameters: { fingerprints: attackerFingerprint } }));
  assert.throws(() => check.call({ dtls: honest.clientSocket, remoteParameters: { fingerprints } }), /fingerprint mismatch/);
});

test('DTLS in memory: a client certificate swapped in after the client\'s CertificateVerify is refused by the server', async () => {
  const [attacker, victim] = [await ecdsaCert, await rsaCert];
  const victimDer = new X509Certificate(victim.certPem).raw;
  // The client's flight 5 reaches the server with a second Certificate (the victim's) right
  // after its ClientKeyExchange, before its CertificateVerify and Finished.
  const [s, c] = wire();
  const clientSend = c.send;
  let injected = false;
  c.send = (buf) => {
    const sent = clientSend(buf);
    if (!injected && buf[0] === 22 && buf.readUInt16BE(3) === 0 && buf[13] === 16) { injected = true; void clientSend(certificateRecord(victimDer)); }
    return sent;
  };
  const server = new DtlsServer({ srtpProfiles: [1], extendedMasterSecret: true, cert: attacker.certPem, key: attacker.keyPem, signatureHash: attacker.signatureHash, transport: s, certificateRequest: true });
  const client = new DtlsClient({ srtpProfiles: [1], extendedMasterSecret: true, cert: attacker.certPem, key: attacker.keyPem, signatureHash: attacker.signatureHash, transport: c });
  const outcome = new Promise<string>((resolve) => {
    const timer = setTimeout(() => resolve('no outcome'), 3000);
    server.onConnect.once(() => { clearTimeout(timer); resolve('connected'); });
    server.onError.once((e: Error) => { clearTimeout(timer); resolve(`error: ${e.message}`); });
  });
  client.connect().catch(() => {});
  const r = await outcome;
  s.close();
  assert.ok(injected, 'the Certificate was injected after the ClientKeyExchange');
  assert.equal(r, "error: DTLS handshake rejected: the certificate werift took is not the one the client sent before its CertificateVerify");
});

// ---- the pieces ----

test('installed once, in every werift class it needs; installNativeDtlsCrypto installs it too', () => {
  assert.equal(installNativeDtlsCrypto(), true);
  assert.equal(installDtlsVerification(), true);
  const marked = (f: unknown) => (f as Record<symbol, unknown>)[Symbol.for('webrtc-sip-gateway.dtlsVerify')] === true;
  const proto = (file: string, name: string) => require(join(dtlsDir, file))[name].prototype;
  assert.ok(marked(proto('flight/server/flight6.js', 'Flight6').exec));
  assert.ok(marked(proto('flight/client/flight5.js', 'Flight5').exec));
  assert.ok(marked(proto('socket.js', 'DtlsSocket').handleFragmentHandshake));
  assert.ok(marked((RTCDtlsTransport.prototype as unknown as Record<string, unknown>).verifyRemoteCertificateFingerprint));
  const exec = proto('flight/server/flight6.js', 'Flight6').exec;
  assert.equal(installDtlsVerification(), true);
  assert.equal(proto('flight/server/flight6.js', 'Flight6').exec, exec, 'not wrapped twice');
});

test('the fingerprint check refuses a handshake not verified, or a certificate other than the verified one', () => {
  const check = (RTCDtlsTransport.prototype as unknown as { verifyRemoteCertificateFingerprint(this: unknown): void }).verifyRemoteCertificateFingerprint;
  assert.throws(() => check.call({ dtls: { cipher: {}, remoteCertificate: Buffer.alloc(10) } }), /not verified/);
  assert.throws(() => check.call({}), /not verified/);
});

test('the TLS 1.2 PRF and Finished verify_data agree with werift\'s own', () => {
  for (let i = 0; i < 20; i++) {
    const secret = randomBytes(48);
    const seed = randomBytes(1 + i * 7);
    assert.deepEqual(tls12Prf(secret, 'test label', seed, 13 + i * 9), prf.prfPHash(secret, Buffer.concat([Buffer.from('test label'), seed]), 13 + i * 9));
    const transcript = randomBytes(500 + i);
    assert.deepEqual(finishedVerifyData(secret, transcript, 'client'), prf.prfVerifyDataClient(secret, transcript));
    assert.deepEqual(finishedVerifyData(secret, transcript, 'server'), prf.prfVerifyDataServer(secret, transcript));
  }
});

test('signature checks: right key and algorithm only; malformed input refused without throwing', async () => {
  const ec = await ecdsaCert;
  const rsa = await rsaCert;
  const der = (pem: string) => new X509Certificate(pem).raw;
  const data = Buffer.from('handshake messages');
  const ecSig = sign('sha256', data, ec.keyPem);
  const rsaSig = sign('sha256', data, rsa.keyPem);
  assert.equal(verifyHandshakeSignature(der(ec.certPem), { hash: 4, signature: 3, value: ecSig }, data), null);
  assert.equal(verifyHandshakeSignature(der(rsa.certPem), { hash: 4, signature: 1, value: rsaSig }, data), null);
  assert.equal(verifyHandshakeSignature(der(ec.certPem), { hash: 4, signature: 3, value: sign('sha256', data, attackerKey) }, data), 'bad signature');
  assert.equal(verifyHandshakeSignature(der(ec.certPem), { hash: 4, signature: 3, value: ecSig }, Buffer.from('other')), 'bad signature');
  assert.equal(verifyHandshakeSignature(der(ec.certPem), { hash: 4, signature: 1, value: ecSig }, data), 'a rsa signature from a ec key');
  assert.equal(verifyHandshakeSignature(der(rsa.certPem), { hash: 4, signature: 3, value: rsaSig }, data), 'a ec signature from a rsa key');
  assert.equal(verifyHandshakeSignature(der(ec.certPem), { hash: 2, signature: 3, value: ecSig }, data), 'unsupported signature algorithm 2/3', 'no SHA-1');
  assert.equal(verifyHandshakeSignature(der(ec.certPem), { hash: 4, signature: 3, value: ecSig }, data, 1), 'signature algorithm 3 does not fit the cipher suite');
  assert.equal(verifyHandshakeSignature(Buffer.from('not a certificate'), { hash: 4, signature: 3, value: ecSig }, data), 'unreadable certificate');
  assert.equal(verifyHandshakeSignature(der(ec.certPem), { hash: 4, signature: 3, value: randomBytes(70) }, data), 'bad signature');
  assert.equal(verifyHandshakeSignature(der(ec.certPem), { hash: 4, signature: 3, value: Buffer.alloc(0) }, data), 'bad signature');
});

test('message parsers: Certificate, CertificateVerify, ServerKeyExchange; truncated ones are null', async () => {
  const cert = new X509Certificate((await ecdsaCert).certPem).raw;
  const u24 = (n: number) => Buffer.from([n >> 16, (n >> 8) & 0xff, n & 0xff]);
  const body = Buffer.concat([u24(cert.length + 3), u24(cert.length), cert]);
  assert.deepEqual(leafCertificate(body), cert);
  assert.equal(leafCertificate(body.subarray(0, body.length - 1)), null);
  assert.deepEqual(parseCertificateVerify(Buffer.from([4, 3, 0, 2, 0xaa, 0xbb])), { hash: 4, signature: 3, value: Buffer.from([0xaa, 0xbb]) });
  assert.equal(parseCertificateVerify(Buffer.from([4, 3, 0, 3, 0xaa, 0xbb])), null);
  const pub = randomBytes(32);
  const ske = Buffer.concat([Buffer.from([3, 0, 29, 32]), pub, Buffer.from([4, 3, 0, 2, 1, 2])]);
  const parsed = parseServerKeyExchange(ske)!;
  assert.deepEqual(parsed.params, ske.subarray(0, 36));
  assert.equal(parsed.namedCurve, 29);
  assert.deepEqual(parsed.publicKey, pub);
  assert.deepEqual(parsed.signed, { hash: 4, signature: 3, value: Buffer.from([1, 2]) });
  assert.equal(parseServerKeyExchange(ske.subarray(0, ske.length - 1)), null);
  assert.equal(parseServerKeyExchange(Buffer.concat([Buffer.from([1]), ske.subarray(1)])), null, 'explicit curves: refused');
});

test('as DTLS server: a second ClientKeyExchange injected on the path (the attacker\'s ECDHE key, with the browser\'s genuine CertificateVerify and a Finished of its own) is refused', async () => {
  assert.equal(installDtlsVerification(), true);
  const { createCipher } = require(join(dtlsDir, 'cipher/create.js'));
  const { generateKeyPair } = require(join(dtlsDir, 'cipher/namedCurve.js'));
  const { createPlaintext } = require(join(dtlsDir, 'record/builder.js'));
  const { FragmentedHandshake } = require(join(dtlsDir, 'record/message/fragment.js'));
  const cert = await CipherContext.createSelfSignedCertificateWithKey({ hash: 4, signature: 3 }, 23);
  let client: any;
  let server: any;
  const deliver = (to: () => any, b: Buffer) => setImmediate(() => to().transport.socket.onData?.(b));
  let attacked = false;
  const toClient: any = { send: async (b: Buffer) => deliver(() => client, Buffer.from(b)), close() {} };
  const toServer: any = {
    send: async (buf: Buffer) => {
      const b = Buffer.from(buf);
      const isFinished = b[0] === 22 && b.readUInt16BE(3) === 1; // handshake, epoch 1: the client's Finished
      if (!isFinished) { deliver(() => server, b); return; }
      if (attacked) return;
      attacked = true;
      // All of this is on the wire in clear (randoms, the server's ECDHE key, every handshake
      // message before the Finished); read from the client here for brevity.
      const before = client.dtls.sortedHandshakeCache.filter((m: any) => m.msg_type !== 20);
      const transcript = Buffer.concat(before.map((m: any) => m.serialize()));
      const cke = before.find((m: any) => m.msg_type === 16);
      const fin = client.dtls.sortedHandshakeCache.find((m: any) => m.msg_type === 20);
      const curve = client.cipher.remoteKeyPair.curve;
      const mine = generateKeyPair(curve);
      const pms = prf.prfPreMasterSecret(client.cipher.remoteKeyPair.publicKey, mine.privateKey, curve);
      const cr = client.cipher.localRandom.serialize();
      const sr = client.cipher.remoteRandom.serialize();
      const master = client.dtls.remoteExtendedMasterSecret ? prf.prfExtendedMasterSecret(pms, transcript) : prf.prfMasterSecret(pms, cr, sr);
      const body = Buffer.concat([Buffer.from([mine.publicKey.length]), mine.publicKey]);
      const ckeFrag = new FragmentedHandshake(16, body.length, cke.message_seq, 0, body.length, body);
      const [ckeRec] = createPlaintext({ version: { major: 254, minor: 253 }, epoch: 0 })([{ type: 22, fragment: ckeFrag.serialize() }], 50);
      deliver(() => server, ckeRec.serialize());
      const finFrag = new FragmentedHandshake(20, 12, fin.message_seq, 0, 12, prf.prfVerifyDataClient(master, transcript));
      const ctx = new CipherContext(1);
      ctx.cipher = createCipher(client.cipher.cipherSuite);
      ctx.cipher.init(master, sr, cr);
      const [finRec] = createPlaintext({ version: { major: 254, minor: 253 }, epoch: 1 })([{ type: 22, fragment: finFrag.serialize() }], 1);
      setTimeout(() => deliver(() => server, ctx.encryptPacket(finRec).serialize()), 20);
    },
    close() {},
  };
  const common = { srtpProfiles: [1], extendedMasterSecret: true };
  server = new DtlsServer({ ...common, cert: cert.certPem, key: cert.keyPem, signatureHash: cert.signatureHash, transport: toClient, certificateRequest: true });
  client = new DtlsClient({ ...common, cert: cert.certPem, key: cert.keyPem, signatureHash: cert.signatureHash, transport: toServer });
  const outcome = new Promise<string>((resolve) => {
    setTimeout(() => resolve('no outcome in 3 s'), 3000).unref();
    server.onConnect.once(() => resolve('connected'));
    server.onError.once((e: Error) => resolve(`refused: ${e.message}`));
  });
  client.connect().catch(() => undefined);
  const result = await outcome;
  assert.ok(attacked, 'the attack ran');
  assert.notEqual(result, 'connected', 'the server must not connect with the injected key');
});
