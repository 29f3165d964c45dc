/**
 * Requests that are not URLs, and upgrades refused then reset by the client: answered or
 * dropped, never the end of the process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { HttpServer } from '../../src/http/httpServer';
import { startGateway } from '../support/gateway';

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
