import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { GatewayConfig } from './config';
import type { Authenticator } from './signaling/browserSession';
import { loadEs256PublicKey, originAllowed, RateLimiter, verifyToken, type TokenKeys } from './edge';

/** Builds the hello authenticator: demo identities on localhost, or verified tokens. */
export function buildAuthenticator(c: GatewayConfig): Authenticator {
  const maxCalls = c.limits.maxCallsPerIdentity;
  if (c.auth.mode === 'demo') {
    return async () => ({ ok: true, identity: { id: `guest-${randomBytes(3).toString('hex')}`, maxCalls } });
  }
  const keys: TokenKeys = {
    hs256Secret: c.auth.hs256Secret,
    es256PublicKey: c.auth.es256PublicKeyFile ? loadEs256PublicKey(readFileSync(c.auth.es256PublicKeyFile, 'utf8')) : undefined,
  };
  return async (token) => {
    const r = await verifyToken(token, keys, { issuer: c.auth.issuer, audience: c.auth.audience, maxLifetimeSec: c.auth.maxTokenLifetimeSec });
    if (!r.ok) {
      const code = r.code === 'token-not-yet-valid' || r.code === 'token-bad-claims' ? 'token-invalid' : r.code;
      return { ok: false, code, message: r.message };
    }
    const cl = r.claims;
    return {
      ok: true,
      identity: { id: cl.sub, callerId: cl.callerId, dest: cl.dest, maxCalls: Math.min(cl.maxCalls ?? maxCalls, maxCalls) },
      origins: cl.origins,
    };
  };
}

/** Origin checks and rate limits at the WebSocket edge. */
export function buildEdgeGuards(c: GatewayConfig) {
  const connects = new RateLimiter({ perMinute: c.limits.connectsPerIpPerMin });
  const calls = new RateLimiter({ perMinute: c.limits.callsPerIdentityPerMin });
  const httpOrigin = `http${c.http.tls ? 's' : ''}://`;
  const own = [`${httpOrigin}localhost:${c.http.port}`, `${httpOrigin}127.0.0.1:${c.http.port}`, `${httpOrigin}${c.http.host}:${c.http.port}`];
  return {
    originAllowed: (origin: string | undefined) => {
      // Configured allow-list; with none, only the gateway's own pages (and, in demo mode on
      // loopback, non-browser clients that send no Origin).
      const list = c.edge.allowedOrigins.length ? [...c.edge.allowedOrigins, ...own] : own;
      return originAllowed(origin, list, { allowMissing: c.auth.mode === 'demo' });
    },
    connectAttempt: (ip: string) => connects.take(ip),
    callAttempt: (identity: string) => calls.take(identity),
    releaseCall: (_callId: string) => undefined,
  };
}
