/**
 * Requests that are not URLs, and upgrades refused then reset by the client: answered or
 * dropped, never the end of the process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
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
