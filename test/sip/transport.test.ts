import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pino from 'pino';
import { SipUserAgent } from '../../src/sip';
import { parseSipMessage } from '../../src/sip/message';
import { StreamFramer, type FramingError } from '../../src/sip/streamFramer';
import type { SipTransportConfig } from '../../src/sip/transport';

/**
 * SIP over TCP against hand-written bytes on real loopback sockets: how the stream is framed
 * (Content-Length read as the parser reads it, framing errors closing the connection), what
 * reading it costs, the bounds on inbound connections, a connection whose peer went silent
 * being given up, and keepalives (CRLF pings answered, TCP keepalive on).
 */
const logger = pino({ level: process.env.GW_TEST_LOG ?? 'silent' });
const cleanups: Array<() => unknown> = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

async function startUa(limits?: SipTransportConfig['limits'], timers?: { T1: number }, port = 0): Promise<{ ua: SipUserAgent; port: number }> {
  const ua = new SipUserAgent({ transports: [{ protocol: 'tcp', host: '127.0.0.1', port, limits }], logger, timers });
  await ua.start();
  cleanups.push(() => ua.stop());
  return { ua, port: ua.boundAddresses[0].port };
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A bare TCP client: everything it receives is kept as text; `isClosed()` once the connection has closed. */
interface RawClient { sock: net.Socket; text: () => string; statuses: () => string[]; isClosed: () => boolean }

async function rawClient(port: number, localAddress = '127.0.0.1'): Promise<RawClient> {
  const sock = net.connect({ port, host: '127.0.0.1', localAddress });
  await new Promise<void>((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  sock.on('error', () => undefined);
  let text = '';
  let isClosed = false;
  sock.on('data', (d) => { text += d.toString('latin1'); });
  sock.once('close', () => { isClosed = true; });
  cleanups.push(() => sock.destroy());
  return {
    sock, text: () => text, isClosed: () => isClosed,
    // "200 1" = status and CSeq number of each response, in order.
    statuses: () => [...text.matchAll(/^SIP\/2\.0 (\d{3})[^]*?^CSeq: *(\d+)/gm)].map((m) => `${m[1]} ${m[2]}`),
  };
}

/** An OPTIONS with CSeq `n`; `cl` replaces the Content-Length line (null: none), `extra` adds headers. */
function options(n: number, o: { body?: string; cl?: string | null; extra?: string[]; eol?: string } = {}): string {
  const body = o.body ?? '';
  const eol = o.eol ?? '\r\n';
  const lines = [
    'OPTIONS sip:gw@127.0.0.1 SIP/2.0', `Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-t${n}-${Math.random().toString(36).slice(2)};rport`,
    'Max-Forwards: 70', 'From: <sip:peer@127.0.0.1>;tag=p1', 'To: <sip:gw@127.0.0.1>', `Call-ID: call-${n}@test`, `CSeq: ${n} OPTIONS`,
    ...(o.extra ?? []),
  ];
  if (o.cl !== null) lines.push(o.cl ?? `Content-Length: ${Buffer.byteLength(body)}`);
  return `${lines.join(eol)}${eol}${eol}${body}`;
}

// ------------------------------------------------------------------ framing (audit item 4)

test('several messages in one write, one message over many writes split anywhere, CRLF keepalives between: all answered in order', async () => {
  const { port } = await startUa();
  const c = await rawClient(port);
  c.sock.write(options(1) + options(2, { body: 'hello', extra: ['Content-Type: text/plain'] }) + '\r\n\r\n');
  const third = options(3, { body: 'v=0\r\n\r\n', extra: ['Content-Type: application/sdp'] });
  // Cut between the CR and LF of the empty line, and in the body.
  const cuts = [5, third.indexOf('\r\n\r\n') + 1, third.indexOf('\r\n\r\n') + 3, third.length - 2];
  let at = 0;
  for (const cut of cuts) { c.sock.write(third.slice(at, cut)); at = cut; await sleep(15); }
  c.sock.write(third.slice(at) + '\r\n' + options(4));
  await until(() => c.statuses().length === 4, 'four answers');
  assert.deepEqual(c.statuses(), ['200 1', '200 2', '200 3', '200 4']);
  assert.equal(c.isClosed(), false);
});

test('a folded Content-Length (value on a continuation line) frames the body as the parser reads it: the next message is answered too', async () => {
  const { port } = await startUa();
  const c = await rawClient(port);
  c.sock.write(options(1, { body: 'hello', cl: 'Content-Length:\r\n 5', extra: ['Content-Type: text/plain'] }) + options(2));
  await until(() => c.statuses().length === 2, 'two answers');
  assert.deepEqual(c.statuses(), ['200 1', '200 2']);
});

test('compact "l" and any case are Content-Length to the framer as to the parser', async () => {
  const { port } = await startUa();
  const c = await rawClient(port);
  c.sock.write(options(1, { body: 'hello', cl: 'l: 5', extra: ['Content-Type: text/plain'] }) + options(2, { body: 'abc', cl: 'CONTENT-length :3' }) + options(3));
  await until(() => c.statuses().length === 3, 'three answers');
  assert.deepEqual(c.statuses(), ['200 1', '200 2', '200 3']);
});

test('LF-only line endings over TCP are read as over UDP: answered, not silently never delivered', async () => {
  const { port } = await startUa();
  const c = await rawClient(port);
  c.sock.write(options(1, { eol: '\n' }) + options(2, { eol: '\n', body: 'hi\n', extra: ['Content-Type: text/plain'] }) + options(3));
  await until(() => c.statuses().length === 3, 'three answers');
  assert.deepEqual(c.statuses(), ['200 1', '200 2', '200 3']);
});

/**
 * Messages whose length cannot be known for certain: answered 400 (the parser's words), then the
 * connection is closed; the message glued behind is never read out of step.
 */
for (const [name, cl, reason] of [
  ['a signed Content-Length (+5)', 'Content-Length: +5', /invalid Content-Length/],
  ['Content-Length: 0 and a compact l: 5', 'Content-Length: 0\r\nl: 5', /more than one Content-Length/],
  ['an 11-digit Content-Length', 'Content-Length: 10000000005', /more than 10 digits/],
  ['no Content-Length (mandatory over a stream, RFC 3261 §7.5)', null, /missing Content-Length/],
] as const) {
  test(`${name}: 400, then the connection is closed`, async () => {
    const { port } = await startUa();
    const c = await rawClient(port);
    c.sock.write(options(1, { body: 'hello', cl, extra: ['Content-Type: text/plain'] }) + options(2));
    await until(c.isClosed, 'the server closing the connection');
    assert.deepEqual(c.statuses(), ['400 1'], c.text());
    assert.match(c.text().split('\r\n')[0], reason);
  });
}

test('a Content-Length shorter than the body: the message is read with the body cut, the garbage behind it gets a 400 and the connection is closed', async () => {
  const { port } = await startUa();
  const c = await rawClient(port);
  c.sock.write(options(1, { body: 'hello', cl: 'Content-Length: 3', extra: ['Content-Type: text/plain'] }) + options(2));
  await until(c.isClosed, 'the server closing the connection');
  // "lo" + the second OPTIONS reads as a request "loOPTIONS" whose CSeq says OPTIONS.
  assert.deepEqual(c.statuses(), ['200 1', '400 2'], c.text());
});

test('a message over the parser\'s size limit: 513 from its headers, the body is never read, the connection is closed', async () => {
  const { port } = await startUa();
  const c = await rawClient(port);
  c.sock.write(options(1, { cl: 'Content-Length: 70000', extra: ['Content-Type: text/plain'] }));
  await until(c.isClosed, 'the server closing the connection');
  assert.deepEqual(c.statuses(), ['513 1'], c.text());
});

test('a header block past 16 KB without its empty line: closed with no response', async () => {
  const { port } = await startUa();
  const c = await rawClient(port);
  const head = options(1).replace(/\r\n\r\n$/, '\r\n');
  c.sock.write(head);
  for (let i = 0; i < 200; i++) c.sock.write(`X-Filler-${i}: ${'x'.repeat(100)}\r\n`); // ~22 KB, never ending
  await until(() => c.isClosed(), 'the connection closed', 3000);
  assert.equal(c.text(), '');
});

/** What the framer makes of `bytes` pushed in pieces of `piece` bytes (0: all at once). */
function frame(bytes: Buffer, piece: number): { messages: Buffer[]; error?: FramingError } {
  const out: { messages: Buffer[]; error?: FramingError } = { messages: [] };
  const framer = new StreamFramer({ message: (raw) => out.messages.push(raw), error: (e) => { out.error = e; }, ping: () => undefined });
  if (piece === 0) framer.push(bytes);
  else for (let at = 0; at < bytes.length; at += piece) framer.push(bytes.subarray(at, at + piece));
  return out;
}

test('the framer and the parser agree on every RFC 4475 torture message and the audit\'s cases, however the bytes are cut', () => {
  const dir = path.join(__dirname, 'fixtures', 'rfc4475');
  const cases = readdirSync(dir).map((f) => [f, readFileSync(path.join(dir, f))] as const);
  for (const [name, cl] of [['folded', 'Content-Length:\r\n 5'], ['compact', 'l: 5'], ['plus', 'Content-Length: +5'], ['two', 'Content-Length: 0\r\nl: 5'],
    ['eleven digits', 'Content-Length: 00000000005'], ['ten digits', 'Content-Length: 0000000005'], ['none', null], ['tab', 'content-LENGTH\t:\t5\t']] as const) {
    cases.push([name, Buffer.from(options(1, { body: 'hello', cl, extra: ['Content-Type: text/plain'] }))]);
  }
  cases.push(['lf-only', Buffer.from(options(1, { body: 'hello', eol: '\n', extra: ['Content-Type: text/plain'] }))]);
  for (const [name, bytes] of cases) {
    const parsed = parseSipMessage(bytes);
    for (const piece of [0, 1, 7]) {
      const { messages, error } = frame(bytes, piece);
      const framed = messages[0] ? parseSipMessage(messages[0]) : undefined;
      if (!('error' in parsed) && parsed.header('content-length') !== undefined) {
        // A message the parser takes: the framer delivers it first, with the same headers and
        // body (what follows it, as dblreq's second request, is the next message's business).
        assert.ok(framed, `${name} (pieces of ${piece}): not framed: ${error?.kind === 'length' ? error.error : error?.kind}`);
        assert.ok(!('error' in framed), `${name} (pieces of ${piece}): framed, then ${'error' in framed ? framed.error : ''}`);
        assert.equal(framed.body, parsed.body, `${name} (pieces of ${piece}): the same body`);
        assert.deepEqual(framed.headerList, parsed.headerList, `${name} (pieces of ${piece}): the same headers`);
      } else {
        // One the parser refuses (or without Content-Length, mandatory on a stream): the
        // framer refuses it or delivers something the parser refuses, which closes the connection.
        assert.ok(error || (framed && 'error' in framed) || messages.length === 0, `${name} (pieces of ${piece}): not taken as a good message`);
      }
    }
  }
});

// ------------------------------------------------------------------ reading cost (audit item 3)

test('a 60 KB message arriving in 600 pieces is framed with work linear in its size (no re-copy or re-scan of what was buffered per piece)', async () => {
  const { port } = await startUa();
  const c = await rawClient(port);
  c.sock.setNoDelay(true);
  const msg = options(1, { body: 'a'.repeat(60_000), extra: ['Content-Type: text/plain'] });
  // Work the framer can do on buffered bytes: copy them (Buffer.concat, copy) or scan them
  // (indexOf). Counted while the message is being received; the parser's own single pass is
  // in it too.
  let work = 0;
  const { concat } = Buffer;
  const { copy, indexOf } = Buffer.prototype;
  Buffer.concat = ((list: readonly Uint8Array[], total?: number) => { const r = concat.call(Buffer, list, total); work += r.length; return r; }) as typeof Buffer.concat;
  Buffer.prototype.copy = function (this: Buffer, ...a: Parameters<Buffer['copy']>): number { const n = copy.apply(this, a); work += n; return n; };
  Buffer.prototype.indexOf = function (this: Buffer, value: any, from?: any, enc?: any): number {
    const r = indexOf.call(this, value, from, enc);
    const start = typeof from === 'number' ? (from < 0 ? Math.max(0, this.length + from) : from) : 0;
    work += (r >= 0 ? r + 1 : this.length) - start;
    return r;
  };
  try {
    for (let at = 0; at < msg.length; at += 100) {
      c.sock.write(msg.slice(at, at + 100));
      await new Promise((r) => setImmediate(r)); // let the server read each piece on its own
    }
    await until(() => c.statuses().length === 1, 'the answer');
  } finally {
    Buffer.concat = concat;
    Buffer.prototype.copy = copy;
    Buffer.prototype.indexOf = indexOf;
  }
  assert.deepEqual(c.statuses(), ['200 1']);
  assert.ok(work < 10 * msg.length, `${work} bytes copied or scanned for a ${msg.length}-byte message`);
});

// ------------------------------------------------------------------ inbound connection bounds (audit item 1)

test('inbound connections are capped per source address and in total; a closed one frees its place', async () => {
  const { port } = await startUa({ maxConnections: 5, maxConnectionsPerIp: 3 });
  const ok = async (c: RawClient, n: number) => {
    c.sock.write(options(n));
    await until(() => c.statuses().length === 1 || c.isClosed(), `an answer on connection ${n}`);
    return c.statuses().length === 1;
  };
  const a = [await rawClient(port), await rawClient(port), await rawClient(port)];
  const a4 = await rawClient(port);
  await until(() => a4.isClosed(), 'the 4th connection from 127.0.0.1 closed');
  const b = [await rawClient(port, '127.0.0.2'), await rawClient(port, '127.0.0.2')];
  const c6 = await rawClient(port, '127.0.0.3');
  await until(() => c6.isClosed(), 'the 6th connection in all closed');
  for (const [i, c] of [...a, ...b].entries()) assert.ok(await ok(c, i + 1), `connection ${i + 1} kept and answered`);
  assert.equal(a4.text() + c6.text(), '', 'refused without a word');
  a[0].sock.destroy();
  await sleep(50);
  const again = await rawClient(port);
  assert.ok(await ok(again, 9), 'a new connection once one from that address has closed');
});

test('an inbound connection must bring a complete message within firstMessageTimeoutMs of connecting (trickling bytes does not extend it); after one, the idle timeout applies', async () => {
  const { port } = await startUa({ firstMessageTimeoutMs: 300 });
  const t0 = Date.now();
  const silent = await rawClient(port);
  const trickler = await rawClient(port);
  const talker = await rawClient(port);
  talker.sock.write(options(1));
  const msg = options(2);
  let i = 0;
  const drip = setInterval(() => { if (i < msg.length - 10) trickler.sock.write(msg[i++]); }, 50);
  try {
    await until(() => silent.isClosed() && trickler.isClosed(), 'the silent and trickling connections closed', 3000);
  } finally { clearInterval(drip); }
  assert.ok(Date.now() - t0 < 2000, `closed after ${Date.now() - t0} ms`);
  await sleep(400);
  assert.deepEqual(talker.statuses(), ['200 1']);
  assert.equal(talker.isClosed(), false, 'a connection that sent a message stays open past the first-message timeout');
});

// ------------------------------------------------------------------ a silent peer's connection (audit item 5)

/** A TCP "trunk" that reads everything and answers nothing; `keepalive` makes it send CRLF every 50 ms. */
async function silentTrunk(keepalive = false): Promise<{ port: number; accepted: net.Socket[]; open: () => number }> {
  const accepted: net.Socket[] = [];
  const timers: NodeJS.Timeout[] = [];
  const srv = net.createServer((s) => {
    accepted.push(s);
    s.on('error', () => undefined);
    s.resume();
    if (keepalive) timers.push(setInterval(() => { if (!s.destroyed) s.write('\r\n'); }, 50));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => { timers.forEach(clearInterval); accepted.forEach((s) => s.destroy()); return new Promise((r) => srv.close(r)); });
  return { port: (srv.address() as net.AddressInfo).port, accepted, open: () => accepted.filter((s) => !s.destroyed && s.readyState === 'open').length };
}

test('a request that times out on a connection where nothing came back closes it: the next request opens a new connection', async () => {
  const trunk = await silentTrunk();
  const { ua } = await startUa(undefined, { T1: 10 }); // Timer F: 640 ms
  const uri = `sip:trunk@127.0.0.1:${trunk.port};transport=tcp`;
  assert.equal((await ua.options(uri)).status, 408);
  await until(() => trunk.accepted[0]?.destroyed || trunk.accepted[0]?.readableEnded, 'the first connection closed');
  assert.equal((await ua.options(uri)).status, 408);
  assert.equal(trunk.accepted.length, 2, 'the second request went on a new connection');
  const inv = ua.invite({ requestUri: uri, from: { uri: 'sip:gw@127.0.0.1' }, sdp: 'v=0\r\n' });
  const err = await new Promise<Error>((r) => { inv.once('failed', r); inv.once('rejected', (res) => r(new Error(`rejected ${res.status}`))); });
  assert.match(err.message, /Timer B/);
  assert.equal(trunk.accepted.length, 3, 'the INVITE went on a new one');
  await until(() => trunk.open() === 0, 'every silent connection closed');
});

test('a timed-out request does not close a connection the peer is still sending on (keepalives)', async () => {
  const trunk = await silentTrunk(true);
  const { ua } = await startUa(undefined, { T1: 10 });
  const uri = `sip:trunk@127.0.0.1:${trunk.port};transport=tcp`;
  assert.equal((await ua.options(uri)).status, 408);
  assert.equal((await ua.options(uri)).status, 408);
  assert.equal(trunk.accepted.length, 1, 'both requests on the one connection');
  assert.equal(trunk.open(), 1);
});

// ------------------------------------------------------------------ keepalives (RFC 5626 §3.5.1, §4.4.1)

// Ports bound by these tests: 26320-26324 on 127.0.0.1.

/** The messages and pings the framer reports for `pieces`, each pushed on its own. */
function framePings(...pieces: string[]): { pings: number; messages: number } {
  const out = { pings: 0, messages: 0 };
  const framer = new StreamFramer({ message: () => { out.messages++; }, error: (e) => assert.fail(`framing error ${e.kind}`), ping: () => { out.pings++; } });
  for (const p of pieces) framer.push(Buffer.from(p, 'latin1'));
  return out;
}

test('the framer reports each CRLFCRLF between messages as one ping, however cut; a lone CRLF and CRLFs inside a message are no ping', () => {
  assert.deepEqual(framePings('\r\n\r\n'), { pings: 1, messages: 0 }, 'a ping');
  assert.deepEqual(framePings('\r\n'), { pings: 0, messages: 0 }, 'a lone CRLF (a pong)');
  assert.deepEqual(framePings('\r\n', '\r\n'), { pings: 1, messages: 0 }, 'a ping cut in two');
  assert.deepEqual(framePings('\r', '\n\r', '\n'), { pings: 1, messages: 0 }, 'a ping cut in three');
  assert.deepEqual(framePings('\r\n\r\n\r\n'), { pings: 1, messages: 0 }, 'a ping and a lone CRLF');
  assert.deepEqual(framePings('\r\n\r\n\r\n\r\n'), { pings: 2, messages: 0 }, 'two pings');
  assert.deepEqual(framePings('\n\n', '\r\r\n'), { pings: 0, messages: 0 }, 'stray line ends');
  // A header block's empty line and a body full of CRLFs belong to the message.
  const body = '\r\n\r\n\r\n\r\nv=0\r\n\r\n';
  const msg = options(1, { body, extra: ['Content-Type: application/sdp'] });
  assert.deepEqual(framePings(msg), { pings: 0, messages: 1 }, 'CRLFs within a message');
  assert.deepEqual(framePings(...msg), { pings: 0, messages: 1 }, 'CRLFs within a message cut byte by byte');
  assert.deepEqual(framePings(options(2, { body: '\r\n' })), { pings: 0, messages: 1 }, 'a body that is a CRLF');
  // Between messages, and a CRLF just before a message starting is not half a ping.
  assert.deepEqual(framePings(msg + '\r\n\r\n' + options(2)), { pings: 1, messages: 2 }, 'a ping between two messages');
  assert.deepEqual(framePings(msg, '\r\n', options(2), '\r\n', options(3)), { pings: 0, messages: 3 }, 'lone CRLFs between messages');
});

test('a ping on an inbound TCP connection is answered with exactly one CRLF; a lone CRLF is not answered; requests still work on the connection', async () => {
  const { port } = await startUa(undefined, undefined, 26320);
  const c = await rawClient(port);
  c.sock.setNoDelay(true);
  c.sock.write('\r\n\r\n');
  await until(() => c.text().length > 0, 'the pong');
  await sleep(300);
  assert.equal(c.text(), '\r\n', 'one pong');
  c.sock.write('\r\n');
  await sleep(300);
  assert.equal(c.text(), '\r\n', 'a lone CRLF gets nothing');
  // (On a stream a second lone CRLF would complete a ping: the request comes first here.)
  c.sock.write(options(1));
  await until(() => c.statuses().length === 1, 'the answer');
  assert.deepEqual(c.statuses(), ['200 1']);
  assert.match(c.text(), /^\r\nSIP\/2\.0 200 /);
  // A ping cut over two TCP segments: one pong.
  let before = c.text().length;
  c.sock.write('\r\n');
  await sleep(50);
  c.sock.write('\r\n');
  await sleep(300);
  assert.equal(c.text().slice(before), '\r\n', 'one pong for the cut ping');
  // A flood of pings in one write: one CRLF per chunk read (one, unless the kernel cut the
  // write), never one per ping.
  before = c.text().length;
  c.sock.write('\r\n\r\n'.repeat(1000));
  await sleep(300);
  const pongs = c.text().slice(before);
  assert.match(pongs, /^(\r\n)+$/);
  assert.ok(pongs.length <= 2 * 10, `${pongs.length / 2} pongs for 1000 pings`);
  c.sock.write(options(2));
  await until(() => c.statuses().length === 2, 'the second answer');
  assert.deepEqual(c.statuses(), ['200 1', '200 2']);
  assert.equal(c.isClosed(), false);
});

/** A 200 to a request (its Via, From, To, Call-ID and CSeq), as a trunk would answer. */
function ok200(request: string): string {
  const keep = request.split('\r\n').filter((l) => /^(Via|From|To|Call-ID|CSeq|[vftik]) *:/i.test(l));
  return `SIP/2.0 200 OK\r\n${keep.join('\r\n')}\r\nContent-Length: 0\r\n\r\n`;
}

test('a ping on a TCP connection we opened (to a trunk) is answered with one CRLF too, and the connection carries on', async () => {
  const { ua } = await startUa(undefined, undefined, 26321);
  let got = '';
  let peer: net.Socket | undefined;
  const srv = net.createServer((s) => { peer = s; s.on('error', () => undefined); s.on('data', (d) => { got += d.toString('latin1'); }); });
  await new Promise<void>((r) => srv.listen(26322, '127.0.0.1', () => r()));
  cleanups.push(() => { peer?.destroy(); return new Promise((r) => srv.close(r)); });
  const uri = 'sip:trunk@127.0.0.1:26322;transport=tcp';
  const first = ua.options(uri);
  await until(() => got.endsWith('\r\n\r\n'), 'the OPTIONS');
  const request = got;
  peer!.write('\r\n\r\n');
  await until(() => got.length > request.length, 'the pong');
  await sleep(300);
  assert.equal(got.slice(request.length), '\r\n', 'one pong');
  peer!.write(ok200(request));
  assert.equal((await first).status, 200);
  got = '';
  const second = ua.options(uri);
  await until(() => got.endsWith('\r\n\r\n'), 'the second OPTIONS');
  peer!.write(ok200(got));
  assert.equal((await second).status, 200);
  assert.equal(await new Promise<number>((r) => srv.getConnections((_e, n) => r(n))), 1, 'on the one connection');
});

test('TCP keepalive (30 s) is on for the connections we open and the ones we accept', async () => {
  const calls: Array<{ sock: net.Socket; enable?: boolean; delay?: number }> = [];
  const { setKeepAlive } = net.Socket.prototype;
  net.Socket.prototype.setKeepAlive = function (this: net.Socket, enable?: boolean, delay?: number) {
    calls.push({ sock: this, enable, delay });
    return setKeepAlive.call(this, enable, delay);
  };
  try {
    const trunk = net.createServer((s) => { s.on('error', () => undefined); s.on('data', (d) => s.write(ok200(d.toString('latin1')))); });
    await new Promise<void>((r) => trunk.listen(26324, '127.0.0.1', () => r()));
    const accepted: net.Socket[] = [];
    trunk.on('connection', (s) => accepted.push(s));
    cleanups.push(() => { accepted.forEach((s) => s.destroy()); return new Promise((r) => trunk.close(r)); });
    const { ua, port } = await startUa(undefined, undefined, 26323);
    assert.equal((await ua.options('sip:trunk@127.0.0.1:26324;transport=tcp')).status, 200);
    const c = await rawClient(port);
    c.sock.write(options(1));
    await until(() => c.statuses().length === 1, 'the answer');
    const on = (pred: (s: net.Socket) => boolean) => calls.some((k) => k.enable === true && k.delay === 30_000 && pred(k.sock));
    assert.ok(on((s) => s.remotePort === 26324), 'on the connection opened to the trunk');
    assert.ok(on((s) => s.localPort === port && s.remotePort === c.sock.localPort), 'on the accepted connection');
  } finally {
    net.Socket.prototype.setKeepAlive = setKeepAlive;
  }
});
