import { createPublicKey, type KeyObject } from 'node:crypto';
import { errors as joseErrors, jwtVerify, SignJWT, importPKCS8, type JWTPayload } from 'jose';

/** What a site's backend puts in the token it mints for a browser (docs/tokens.md). */
export interface TokenClaims {
  sub: string;
  callerId?: string;
  dest?: string[];
  origins?: string[];
  maxCalls?: number;
  exp: number;
  iat?: number;
}

export interface TokenKeys {
  hs256Secret?: string;
  es256PublicKey?: KeyObject;
}

export type TokenError = 'token-missing' | 'token-expired' | 'token-invalid' | 'token-wrong-algorithm' | 'token-not-yet-valid' | 'token-bad-claims';
export type VerifyResult = { ok: true; claims: TokenClaims } | { ok: false; code: TokenError; message: string };

export function loadEs256PublicKey(pem: string): KeyObject {
  return createPublicKey(pem);
}

/**
 * Verifies a JWT (HS256 or ES256, whichever keys are configured). Only the algorithms that
 * match a configured key are accepted, so "none", algorithm confusion (an HS256 token signed
 * with the ES256 public key) and unexpected algorithms fail with token-wrong-algorithm.
 * Never throws.
 */
export async function verifyToken(token: string | undefined, keys: TokenKeys, opts: { issuer?: string; audience?: string; maxLifetimeSec: number; now?: number }): Promise<VerifyResult> {
  if (!token) return { ok: false, code: 'token-missing', message: 'a token is required' };
  if (token.length > 8192 || token.split('.').length !== 3) return { ok: false, code: 'token-invalid', message: 'malformed token' };
  let alg: string | undefined;
  try {
    alg = JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString('utf8')).alg;
  } catch {
    return { ok: false, code: 'token-invalid', message: 'malformed token header' };
  }
  const key = alg === 'HS256' && keys.hs256Secret ? new TextEncoder().encode(keys.hs256Secret) : alg === 'ES256' && keys.es256PublicKey ? keys.es256PublicKey : null;
  if (!key) return { ok: false, code: 'token-wrong-algorithm', message: `algorithm ${String(alg).slice(0, 16)} is not accepted` };
  let payload: JWTPayload;
  try {
    const currentDate = opts.now !== undefined ? new Date(opts.now * 1000) : undefined;
    ({ payload } = await jwtVerify(token, key, { algorithms: [alg!], issuer: opts.issuer, audience: opts.audience, currentDate, requiredClaims: ['exp', 'sub'] }));
  } catch (e) {
    if (e instanceof joseErrors.JWTExpired) return { ok: false, code: 'token-expired', message: 'the token has expired' };
    if (e instanceof joseErrors.JWTClaimValidationFailed) {
      if (e.claim === 'nbf') return { ok: false, code: 'token-not-yet-valid', message: 'the token is not valid yet' };
      return { ok: false, code: 'token-bad-claims', message: `claim ${e.claim} is not acceptable` };
    }
    return { ok: false, code: 'token-invalid', message: 'the token signature or format is invalid' };
  }
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const issued = typeof payload.iat === 'number' ? payload.iat : now;
  if ((payload.exp ?? 0) - Math.min(issued, now) > opts.maxLifetimeSec) return { ok: false, code: 'token-bad-claims', message: `token lifetime exceeds ${opts.maxLifetimeSec} s` };
  const c = payload as Record<string, unknown>;
  const strArray = (v: unknown) => v === undefined || (Array.isArray(v) && v.every((x) => typeof x === 'string' && x.length <= 128));
  if (typeof c.sub !== 'string' || !/^[A-Za-z0-9_.@+-]{1,64}$/.test(c.sub)) return { ok: false, code: 'token-bad-claims', message: 'sub must be 1-64 characters [A-Za-z0-9_.@+-]' };
  if (!strArray(c.dest) || !strArray(c.origins)) return { ok: false, code: 'token-bad-claims', message: 'dest and origins must be arrays of strings' };
  if (c.callerId !== undefined && (typeof c.callerId !== 'string' || !/^\+?[A-Za-z0-9_.-]{1,32}$/.test(c.callerId))) return { ok: false, code: 'token-bad-claims', message: 'callerId is malformed' };
  if (c.maxCalls !== undefined && (!Number.isInteger(c.maxCalls) || (c.maxCalls as number) < 1)) return { ok: false, code: 'token-bad-claims', message: 'maxCalls must be a positive integer' };
  return { ok: true, claims: { sub: c.sub, callerId: c.callerId as string | undefined, dest: c.dest as string[] | undefined, origins: c.origins as string[] | undefined, maxCalls: c.maxCalls as number | undefined, exp: payload.exp!, iat: payload.iat } };
}

/** Mints a token (for a site's backend, the CLI and tests). */
export async function mintToken(claims: Omit<TokenClaims, 'exp' | 'iat'>, key: { hs256Secret: string } | { es256PrivateKeyPem: string }, opts: { ttlSec: number; issuer?: string; audience?: string }): Promise<string> {
  const { sub, ...rest } = claims;
  let jwt = new SignJWT({ ...rest }).setSubject(sub).setIssuedAt().setExpirationTime(`${opts.ttlSec}s`);
  if (opts.issuer) jwt = jwt.setIssuer(opts.issuer);
  if (opts.audience) jwt = jwt.setAudience(opts.audience);
  if ('hs256Secret' in key) return jwt.setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(new TextEncoder().encode(key.hs256Secret));
  return jwt.setProtectedHeader({ alg: 'ES256', typ: 'JWT' }).sign(await importPKCS8(key.es256PrivateKeyPem, 'ES256'));
}

/** For logs: never the token, only enough to correlate. */
export function redactToken(token: string | undefined): string {
  if (!token) return '(none)';
  const dot = token.indexOf('.');
  return `${token.slice(0, Math.min(6, dot < 0 ? 6 : dot))}…(${token.length} chars)`;
}
