import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { trustedCas } from '../../src/sip/trustedCas';
import { tempDir } from '../support/tempDir';

/**
 * sip.tls.caFile adds a CA to what the gateway's TLS connections trust; Node's `ca` replaces the
 * whole default store, so the public roots and NODE_EXTRA_CA_CERTS must come along. Checked with
 * real handshakes on loopback against a server whose self-signed certificate is its own CA.
 */
const certs = (name: string) => {
  const dir = tempDir(`trusted-cas-${name}-`);
  execFileSync('bash', [join(__dirname, '../../certs/make-self-signed.sh'), dir], { stdio: 'ignore' });
  return { cert: join(dir, 'server.cert.pem'), key: join(dir, 'server.key.pem') };
};
let server: tls.Server;
let served: ReturnType<typeof certs>;
let other: ReturnType<typeof certs>;

before(async () => {
  served = certs('served');
  other = certs('other');
  server = tls.createServer({ cert: readFileSync(served.cert), key: readFileSync(served.key) }, (s) => s.end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
});
after(() => server.close());

/** Whether a client trusting `ca` completes a verified handshake with the server. */
function handshake(ca: string[]): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, secureContext: tls.createSecureContext({ ca }) });
    s.once('secureConnect', () => { s.destroy(); resolve('verified'); });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

test('the CA file is trusted, besides the public roots', async () => {
  const ca = trustedCas(served.cert, {});
  assert.equal(ca.length, tls.rootCertificates.length + 1);
  assert.equal(await handshake(ca), 'verified');
});

test('another CA file does not make the server trusted (the check can fail)', async () => {
  assert.notEqual(await handshake(trustedCas(other.cert, {})), 'verified');
});

test("CAs an operator gave by NODE_EXTRA_CA_CERTS stay trusted when caFile is set (Node's ca would drop them)", async () => {
  assert.equal(await handshake(trustedCas(other.cert, { NODE_EXTRA_CA_CERTS: served.cert })), 'verified');
  // An unreadable NODE_EXTRA_CA_CERTS is left out, as Node leaves it out (with a warning).
  assert.equal(trustedCas(other.cert, { NODE_EXTRA_CA_CERTS: '/nonexistent/ca.pem' }).length, tls.rootCertificates.length + 1);
});
