/**
 * Requests that are not URLs, and upgrades refused then reset by the client: answered or
 * dropped, never the end of the process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { HttpServer, sendJson } from '../../src/http/httpServer';
import { startGateway } from '../support/gateway';
import { tempDir } from '../support/tempDir';

const BASE = 24000; // 24000-24299

function raw(port: number, request: string, reset = false): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.write(request);
      if (reset) { s.resetAndDestroy(); resolve(''); }
    });
    let got = '';
    s.on('data', (d) => { got += d.toString(); });
    s.on('error', () => resolve(got));
    s.on('close', () => resolve(got));
    setTimeout(() => { s.destroy(); resolve(got); }, 2000);
  });
}

test('GET // and an upgrade to // get 400; upgrades refused and reset at once by the client leave the gateway serving; /metrics has no trunk figure without keepalives', async () => {
  const gw = await startGateway(BASE, { edge: { allowedOrigins: ['https://app.example.com'] }, auth: { mode: 'token', hs256Secret: 'http-bad-input-secret-0123456789abcdef' } });
  try {
    for (const target of ['//', '//a:b', '//[']) {
      assert.match(await raw(BASE, `GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`), /^HTTP\/1\.1 400 /, `GET ${target}`);
      assert.match(await raw(BASE, `GET ${target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`), /^HTTP\/1\.1 400 /, `upgrade ${target}`);
    }
    // Refused for its origin, and the client resets before reading the refusal.
    for (let i = 0; i < 20; i++) await raw(BASE, `GET /ws HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`, true);
    const health = await fetch(`http://127.0.0.1:${BASE}/healthz`);
    assert.equal(health.status, 200, 'still serving');
    // No trunk watched (no OPTIONS keepalives): no reachability figure, rather than a 0 that reads "down".
    assert.doesNotMatch(await (await fetch(`http://127.0.0.1:${BASE}/metrics`)).text(), /^gateway_trunk_reachable/m);
  } finally {
    await gw.stop();
  }
});

test('static files: a symbolic link under the web root that leads out of it is not served; a real file is', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'webroot-'));
  const root = join(dir, 'web');
  mkdirSync(join(root, 'dist'), { recursive: true });
  writeFileSync(join(root, 'dist', 'ok.js'), 'ok');
  writeFileSync(join(dir, 'secret.txt'), 'secret');
  symlinkSync(join(dir, 'secret.txt'), join(root, 'dist', 'leak.js'));
  const http = new HttpServer({ webRoot: root, logger: pino({ level: 'silent' }) });
  try {
    const { port } = await http.listen('127.0.0.1', BASE + 10);
    assert.equal(await (await fetch(`http://127.0.0.1:${port}/dist/ok.js`)).text(), 'ok');
    const leak = await fetch(`http://127.0.0.1:${port}/dist/leak.js`);
    assert.equal(leak.status, 404);
    assert.doesNotMatch(await leak.text(), /secret/);
  } finally {
    await http.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** An HttpServer on an ephemeral loopback port, its log lines kept as parsed JSON. */
async function server(opts: { webRoot?: string; tls?: { cert: string; key: string } } = {}) {
  const logs: Array<Record<string, unknown>> = [];
  const http = new HttpServer({ webRoot: opts.webRoot ?? tempDir('webroot-'), logger: pino({ level: 'debug' }, { write: (l: string) => { logs.push(JSON.parse(l)); } }), tls: opts.tls });
  const { port } = await http.listen('127.0.0.1', 0);
  return { http, port, logs };
}

test('a POST body over the limit gets 413 and the connection closed, not a reset; a body within it reaches the route', async () => {
  const { http, port } = await server();
  http.route('POST', '/api/echo', (_q, res, body) => sendJson(res, 200, { bytes: body.length }));
  try {
    const small = await fetch(`http://127.0.0.1:${port}/api/echo`, { method: 'POST', body: 'x'.repeat(1000) });
    assert.deepEqual(await small.json(), { bytes: 1000 });
    const big = await fetch(`http://127.0.0.1:${port}/api/echo`, { method: 'POST', body: 'x'.repeat(64 * 1024) });
    assert.equal(big.status, 413);
    assert.equal(big.headers.get('connection'), 'close');
    assert.deepEqual(await big.json(), { error: 'request body too large' });
    // A client still sending (a declared 1 MB body, 100 KB of it written) reads the 413 too.
    const got = await new Promise<string>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.write(`POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: ${1024 * 1024}\r\n\r\n`);
        for (let i = 0; i < 100; i++) s.write('y'.repeat(1024));
      });
      let text = '';
      s.on('data', (d) => { text += d.toString(); });
      s.on('error', () => resolve(`${text}[error]`));
      s.on('close', () => resolve(text));
      setTimeout(() => { s.destroy(); resolve(`${text}[timeout]`); }, 5000);
    });
    assert.match(got, /^HTTP\/1\.1 413 /);
    assert.match(got, /request body too large/);
    assert.doesNotMatch(got, /\[(error|timeout)\]/, 'closed, not reset or left open');
  } finally {
    await http.close();
  }
});

test('HEAD is answered like GET without a body: routes (/healthz) and static files; unknown paths stay 404, other methods on known ones get 405', async () => {
  const root = tempDir('webroot-');
  mkdirSync(join(root, 'dist'));
  writeFileSync(join(root, 'dist', 'ok.js'), 'ok();');
  const { http, port } = await server({ webRoot: root });
  http.route('GET', '/healthz', (_q, res) => sendJson(res, 200, { ok: true }));
  try {
    const get = await fetch(`http://127.0.0.1:${port}/healthz`);
    const head = await fetch(`http://127.0.0.1:${port}/healthz`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-type'), get.headers.get('content-type'));
    assert.equal(head.headers.get('content-length'), String((await get.text()).length));
    assert.equal(await head.text(), '');
    const file = await fetch(`http://127.0.0.1:${port}/dist/ok.js`, { method: 'HEAD' });
    assert.equal(file.status, 200);
    assert.equal(file.headers.get('content-length'), '5');
    assert.equal(await file.text(), '');
    assert.equal((await fetch(`http://127.0.0.1:${port}/nope`, { method: 'HEAD' })).status, 404);
    // HEAD stands in for GET only: a POST route is not reached by it.
    http.route('POST', '/api/act', () => assert.fail('a HEAD must not run a POST route'));
    const act = await fetch(`http://127.0.0.1:${port}/api/act`, { method: 'HEAD' });
    assert.deepEqual([act.status, act.headers.get('allow')], [405, 'POST']);
    // Another method on a page: 405 naming GET and HEAD.
    const put = await fetch(`http://127.0.0.1:${port}/healthz`, { method: 'PUT' });
    assert.deepEqual([put.status, put.headers.get('allow')], [405, 'GET, HEAD']);
  } finally {
    await http.close();
  }
});

test('a route that throws: the client gets a generic 500 with a request id, the log has the message under the same id', async () => {
  const { http, port, logs } = await server();
  http.route('GET', '/api/broken', () => { throw new Error('connect ECONNREFUSED db.internal:5432 as gw_admin'); });
  try {
    const res = await fetch(`http://127.0.0.1:${port}/api/broken`);
    assert.equal(res.status, 500);
    const text = await res.text();
    assert.doesNotMatch(text, /ECONNREFUSED|db\.internal|gw_admin/);
    const body = JSON.parse(text) as { error: string; requestId: string };
    assert.equal(body.error, 'internal error');
    assert.match(body.requestId, /^[\w-]{8,}$/);
    assert.equal(res.headers.get('x-request-id'), body.requestId);
    const line = logs.find((l) => l.requestId === body.requestId);
    assert.ok(line, JSON.stringify(logs));
    assert.match(JSON.stringify(line), /ECONNREFUSED db\.internal:5432/);
    assert.equal(line.path, '/api/broken');
  } finally {
    await http.close();
  }
});

test('HTTPS: close() ends a connection still in its TLS handshake (a silent client) at once', async () => {
  const dir = tempDir('https-certs-');
  execFileSync('bash', [join(__dirname, '../../certs/make-self-signed.sh'), dir], { stdio: 'ignore' });
  const { http, port } = await server({ tls: { cert: readFileSync(join(dir, 'server.cert.pem'), 'utf8'), key: readFileSync(join(dir, 'server.key.pem'), 'utf8') } });
  const accepted = new Promise((r) => http.server.once('connection', r));
  const silent = net.connect(port, '127.0.0.1'); // connects, never says a word
  const clientClosed = new Promise((r) => silent.once('close', r));
  silent.on('error', () => undefined);
  try {
    await accepted;
    const started = Date.now();
    const outcome = await Promise.race([http.close().then(() => 'closed'), new Promise((r) => setTimeout(() => r('still open after 3 s'), 3000))]);
    assert.equal(outcome, 'closed');
    assert.ok(Date.now() - started < 1000, `close took ${Date.now() - started} ms`);
    await clientClosed;
  } finally {
    silent.destroy();
  }
});
