import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { SipUserAgent, type Dialog, type ServerInvite } from '../../src/sip';
import { tempDir } from '../support/tempDir';

/**
 * SIP over TLS between two user agents, with the certificate made by certs/make-self-signed.sh:
 * a call set up and torn down over one verified TLS connection, and a client that does not
 * trust the certificate refusing to talk. Inbound TLS connections are bounded from accept, not
 * from the end of their handshake: counted, timed out, and ended by stop(). CRLF keepalive
 * pings inside TLS are answered, on connections accepted and opened.
 */
const logger = pino({ level: 'silent' });
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';
let cert = '';
let key = '';

before(() => {
  const dir = tempDir('sip-tls-');
  execFileSync('bash', [join(__dirname, '../../certs/make-self-signed.sh'), dir], { stdio: 'ignore' });
  cert = readFileSync(join(dir, 'server.cert.pem'), 'utf8');
  key = readFileSync(join(dir, 'server.key.pem'), 'utf8');
});

test('INVITE, 200, ACK and BYE over TLS with the server certificate verified', async () => {
  const server = new SipUserAgent({ transports: [{ protocol: 'tls', host: '127.0.0.1', port: 0, tls: { cert, key } }], logger });
  const client = new SipUserAgent({ transports: [{ protocol: 'tls', host: '127.0.0.1', port: 0, tls: { cert, key, ca: cert } }], logger });
  await server.start(); await client.start();
  try {
    const port = server.boundAddresses[0].port;
    const answered = new Promise<Dialog>((resolve) => server.once('invite', (inv: ServerInvite) => {
      assert.equal(inv.request.source.protocol, 'tls');
      resolve(inv.accept(SDP));
    }));
    const inv = client.invite({ requestUri: `sip:svc@127.0.0.1:${port};transport=tls`, from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP });
    const [res, dialog] = await new Promise<[any, Dialog]>((resolve, reject) => { inv.once('accepted', (r, d) => resolve([r, d])); inv.once('failed', reject); });
    assert.equal(res.status, 200);
    assert.match(res.header('contact'), /transport=tls/);
    const serverDialog = await answered;
    const ended = new Promise<string>((r) => serverDialog.once('terminated', r));
    await dialog.bye();
    assert.equal(await ended, 'bye');
  } finally {
    await client.stop(); await server.stop();
  }
});

test('a trunk named by host name: the TLS certificate is checked against that name (a certificate for the name only, no address in it, is accepted)', async () => {
  // A certificate for DNS:localhost alone: checked against 127.0.0.1 it would be refused.
  const dir = tempDir('sip-tls-name-');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost'], { stdio: 'ignore' });
  const nameCert = readFileSync(join(dir, 'c.pem'), 'utf8');
  const nameKey = readFileSync(join(dir, 'k.pem'), 'utf8');
  const server = new SipUserAgent({ transports: [{ protocol: 'tls', host: '127.0.0.1', port: 0, tls: { cert: nameCert, key: nameKey } }], logger });
  const client = new SipUserAgent({ transports: [{ protocol: 'tls', host: '127.0.0.1', port: 0, tls: { cert, key, ca: nameCert } }], logger });
  await server.start(); await client.start();
  try {
    const serverDialog = new Promise<Dialog>((resolve) => server.once('invite', (inv: ServerInvite) => resolve(inv.accept(SDP))));
    const inv = client.invite({ requestUri: `sips:svc@localhost:${server.boundAddresses[0].port}`, from: { uri: 'sips:gw@127.0.0.1' }, sdp: SDP });
    const res = await new Promise<any>((resolve) => { inv.once('accepted', resolve); inv.once('rejected', resolve); inv.once('failed', (e) => resolve({ status: String(e) })); });
    assert.equal(res.status, 200, 'answered over a connection verified for the name');
    // The ACK goes to the server's Contact, an address: on the same connection (kept by its
    // address), not a new one that would check the certificate against the address.
    const d = await serverDialog;
    const acked = d.state === 'confirmed' ? true : await Promise.race([new Promise<boolean>((r) => d.once('confirmed', () => r(true))), new Promise<boolean>((r) => setTimeout(() => r(false), 2000))]);
    assert.ok(acked, 'the server got the ACK');
  } finally {
    await client.stop(); await server.stop();
  }
});

test('a client that does not trust the certificate does not send the INVITE, and fails at once (503)', async () => {
  const server = new SipUserAgent({ transports: [{ protocol: 'tls', host: '127.0.0.1', port: 0, tls: { cert, key } }], logger });
  const client = new SipUserAgent({ transports: [{ protocol: 'tls', host: '127.0.0.1', port: 0, tls: { cert, key } }], logger });
  await server.start(); await client.start();
  let invites = 0;
  server.on('invite', () => invites++);
  try {
    const t0 = Date.now();
    const inv = client.invite({ requestUri: `sip:svc@127.0.0.1:${server.boundAddresses[0].port};transport=tls`, from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP });
    const res = await new Promise<any>((resolve, reject) => { inv.once('rejected', resolve); inv.once('failed', reject); });
    assert.equal(res.status, 503, 'a transport error counts as 503 (RFC 3261 8.1.3.1)');
    assert.match(res.reason, /transport/);
    assert.ok(Date.now() - t0 < 2000, 'without waiting for Timer B');
    assert.equal(invites, 0);
  } finally {
    await client.stop(); await server.stop();
  }
});

test('a TCP peer that refuses the connection fails the INVITE and the OPTIONS at once', async () => {
  const client = new SipUserAgent({ transports: [{ protocol: 'tcp', host: '127.0.0.1', port: 0 }], logger });
  await client.start();
  try {
    // A port nobody listens on (bound and closed just before).
    const probe = net.createServer();
    const port = await new Promise<number>((r) => probe.listen(0, '127.0.0.1', () => r((probe.address() as net.AddressInfo).port)));
    await new Promise((r) => probe.close(r));
    const t0 = Date.now();
    const inv = client.invite({ requestUri: `sip:svc@127.0.0.1:${port};transport=tcp`, from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP });
    const res = await new Promise<any>((resolve, reject) => { inv.once('rejected', resolve); inv.once('failed', reject); });
    assert.equal(res.status, 503);
    assert.match(res.reason, /ECONNREFUSED/);
    const opt = await client.options(`sip:svc@127.0.0.1:${port};transport=tcp`);
    assert.equal(opt.status, 503);
    assert.ok(Date.now() - t0 < 2000);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(client.counts.clientTx, 0, 'no transaction left behind');
  } finally {
    await client.stop();
  }
});

/** A bare TCP client of the TLS port that never starts a handshake; `closed()` once the server closed it. */
async function silentClient(port: number): Promise<{ sock: net.Socket; closed: () => boolean }> {
  const sock = net.connect({ port, host: '127.0.0.1' });
  await new Promise<void>((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  sock.on('error', () => undefined);
  let closed = false;
  sock.once('close', () => { closed = true; });
  return { sock, closed: () => closed };
}

async function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_r, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms); })]);
  } finally { clearTimeout(timer); }
}

test('stop() ends TLS connections still in their handshake at once (three silent clients do not hold it for 120 s)', async () => {
  const server = new SipUserAgent({ transports: [{ protocol: 'tls', host: '127.0.0.1', port: 0, tls: { cert, key } }], logger });
  await server.start();
  const clients = await Promise.all([0, 1, 2].map(() => silentClient(server.boundAddresses[0].port)));
  try {
    await new Promise((r) => setTimeout(r, 100)); // accepted by the server
    await within(2000, server.stop(), 'stop()');
    await within(1000, (async () => { while (!clients.every((c) => c.closed())) await new Promise((r) => setTimeout(r, 10)); })(), 'the clients seeing the close');
  } finally {
    for (const c of clients) c.sock.destroy();
    await server.stop();
  }
});

test('a TLS connection is bounded from accept: no handshake within firstMessageTimeoutMs closes it, and it counts against maxConnectionsPerIp before any handshake', async () => {
  const server = new SipUserAgent({ transports: [{ protocol: 'tls', host: '127.0.0.1', port: 0, tls: { cert, key }, limits: { firstMessageTimeoutMs: 400, maxConnectionsPerIp: 2 } }], logger });
  const client = new SipUserAgent({ transports: [{ protocol: 'tls', host: '127.0.0.1', port: 0, tls: { cert, key, ca: cert } }], logger });
  await server.start(); await client.start();
  const port = server.boundAddresses[0].port;
  const silent: Array<{ sock: net.Socket; closed: () => boolean }> = [];
  try {
    const t0 = Date.now();
    silent.push(await silentClient(port), await silentClient(port));
    const third = await silentClient(port);
    silent.push(third);
    await within(1000, (async () => { while (!third.closed()) await new Promise((r) => setTimeout(r, 10)); })(), 'the third connection from the address refused');
    assert.ok(!silent[0].closed() && !silent[1].closed(), 'the first two wait for their handshake');
    await within(2000, (async () => { while (!silent.every((c) => c.closed())) await new Promise((r) => setTimeout(r, 10)); })(), 'the silent connections closed');
    assert.ok(Date.now() - t0 >= 350, 'not before the timeout');
    // Their places are free again: a real TLS client gets through.
    const res = await client.options(`sip:svc@127.0.0.1:${port};transport=tls`);
    assert.equal(res.status, 200);
  } finally {
    for (const c of silent) c.sock.destroy();
    await client.stop(); await server.stop();
  }
});

test('a TLS client that completes its handshake but sends no SIP message is closed after firstMessageTimeoutMs', async () => {
  const server = new SipUserAgent({ transports: [{ protocol: 'tls', host: '127.0.0.1', port: 0, tls: { cert, key }, limits: { firstMessageTimeoutMs: 300 } }], logger });
  await server.start();
  const sock = tls.connect({ port: server.boundAddresses[0].port, host: '127.0.0.1', ca: cert, servername: 'localhost', checkServerIdentity: () => undefined });
  sock.on('error', () => undefined);
  let closed = false;
  sock.once('close', () => { closed = true; });
  try {
    await within(2000, new Promise((r) => sock.once('secureConnect', r)), 'the handshake');
    await within(2000, (async () => { while (!closed) await new Promise((r) => setTimeout(r, 10)); })(), 'the idle TLS connection closed');
  } finally {
    sock.destroy();
    await server.stop();
  }
});

// ------------------------------------------------------------------ keepalives (RFC 5626 §3.5.1, §4.4.1); ports 26325-26327

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await pause(10);
  }
}

/** A 200 to a request (its Via, From, To, Call-ID and CSeq), as a trunk would answer. */
function ok200(request: string): string {
  const keep = request.split('\r\n').filter((l) => /^(Via|From|To|Call-ID|CSeq|[vftik]) *:/i.test(l));
  return `SIP/2.0 200 OK\r\n${keep.join('\r\n')}\r\nContent-Length: 0\r\n\r\n`;
}

test('a ping inside an inbound TLS connection is answered with exactly one CRLF; a lone CRLF is not; a request still works after', async () => {
  const server = new SipUserAgent({ transports: [{ protocol: 'tls', host: '127.0.0.1', port: 26325, tls: { cert, key } }], logger });
  await server.start();
  const sock = tls.connect({ port: 26325, host: '127.0.0.1', ca: cert, servername: 'localhost', checkServerIdentity: () => undefined });
  sock.on('error', () => undefined);
  let got = '';
  sock.on('data', (d: Buffer) => { got += d.toString('latin1'); });
  try {
    await within(2000, new Promise((r) => sock.once('secureConnect', r)), 'the handshake');
    sock.write('\r\n\r\n');
    await until(() => got.length > 0, 'the pong');
    await pause(300);
    assert.equal(got, '\r\n', 'one pong');
    sock.write('\r\n');
    await pause(300);
    assert.equal(got, '\r\n', 'a lone CRLF gets nothing');
    sock.write([
      'OPTIONS sip:gw@127.0.0.1 SIP/2.0', 'Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-tls-ka;rport', 'Max-Forwards: 70',
      'From: <sip:peer@127.0.0.1>;tag=p1', 'To: <sip:gw@127.0.0.1>', 'Call-ID: tls-ka@test', 'CSeq: 1 OPTIONS', 'Content-Length: 0', '', '',
    ].join('\r\n'));
    await until(() => /\r\n\r\n$/.test(got.slice(2)), 'the answer');
    assert.match(got, /^\r\nSIP\/2\.0 200 [^]*CSeq: 1 OPTIONS/);
  } finally {
    sock.destroy();
    await server.stop();
  }
});

test('a ping inside a TLS connection we opened (to a trunk) is answered with one CRLF', async () => {
  const client = new SipUserAgent({ transports: [{ protocol: 'tls', host: '127.0.0.1', port: 26326, tls: { cert, key, ca: cert } }], logger });
  let got = '';
  let peer: tls.TLSSocket | undefined;
  const trunk = tls.createServer({ cert, key }, (s) => { peer = s; s.on('error', () => undefined); s.on('data', (d: Buffer) => { got += d.toString('latin1'); }); });
  await new Promise<void>((r) => trunk.listen(26327, '127.0.0.1', () => r()));
  await client.start();
  try {
    const res = client.options('sip:trunk@127.0.0.1:26327;transport=tls');
    await until(() => got.endsWith('\r\n\r\n'), 'the OPTIONS');
    const request = got;
    peer!.write('\r\n\r\n');
    await until(() => got.length > request.length, 'the pong');
    await pause(300);
    assert.equal(got.slice(request.length), '\r\n', 'one pong');
    peer!.write(ok200(request));
    assert.equal((await res).status, 200);
  } finally {
    peer?.destroy();
    await client.stop();
    await new Promise((r) => trunk.close(r));
  }
});
