import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';

/**
 * The CAs a TLS connection we open trusts when sip.tls.caFile is set: Node's `ca` option replaces
 * its whole default store, so the private CA comes with the public roots and the CAs of
 * NODE_EXTRA_CA_CERTS (which Node adds to that store only, and which an operator may have relied
 * on so far) — besides them, not instead.
 */
export function trustedCas(caFile: string, env: NodeJS.ProcessEnv = process.env): string[] {
  return [...rootCertificates, ...extraCaCerts(env), readFileSync(caFile, 'utf8')];
}

function extraCaCerts(env: NodeJS.ProcessEnv): string[] {
  const file = env.NODE_EXTRA_CA_CERTS;
  if (!file) return [];
  try {
    return [readFileSync(file, 'utf8')];
  } catch {
    return []; // Node itself only warns about an unreadable one
  }
}
