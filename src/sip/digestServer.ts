import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { parseUri, splitList, type SipRequest, type SipUri } from './message';

/**
 * Digest authentication as a server (RFC 3261 §22.4, RFC 8760): challenges requests from
 * sources we do not otherwise trust and checks the answer. Nonces are a timestamp and random
 * bytes signed with a per-process secret, so nothing is stored per challenge; only the nonce-
 * counts of answers that verified are kept (replay protection). An expired nonce with a good
 * signature is answered `stale=true` and the client retries without asking its user.
 */
export type DigestVerdict = { ok: true; username: string } | { ok: false; reason: 'missing' | 'stale' | 'bad-nonce' | 'unknown-user' | 'bad-response' | 'malformed' | 'wrong-uri' | 'replay' };

export class DigestServer {
  private readonly secret = randomBytes(32);
  /**
   * The highest nonce-count accepted per nonce (while the nonce lives): an Authorization header
   * seen on the wire cannot be replayed, on this request or any other. Only answers that
   * verified are recorded, so the map holds no more than the genuine traffic of a nonce lifetime.
   */
  private readonly lastNc = new Map<string, { nc: number; at: number }>();
  private lastPurge = 0;

  constructor(
    readonly realm: string,
    private readonly passwordFor: (username: string) => string | undefined,
    private readonly nonceLifetimeMs = 5 * 60_000,
  ) {}

  /** A WWW-Authenticate value (SHA-256 first, MD5 for older peers, RFC 8760 §2.4). */
  challenges(stale = false): string[] {
    const nonce = this.newNonce();
    const common = `realm="${this.realm}", nonce="${nonce}", qop="auth"${stale ? ', stale=true' : ''}`;
    return [`Digest ${common}, algorithm=SHA-256`, `Digest ${common}, algorithm=MD5`];
  }

  verify(req: SipRequest, now = Date.now()): DigestVerdict {
    const header = req.header('authorization');
    if (!header) return { ok: false, reason: 'missing' };
    const p = parseDigestParams(header);
    if (!p || !p.username || !p.nonce || !p.response || p.uri === undefined) return { ok: false, reason: 'malformed' };
    // The answer covers the digest-uri, which must name this request's target (RFC 7616 §3.4.6):
    // else an answer captured for sip:100@gw would authorise an INVITE to any number.
    if (!sameTarget(p.uri, req.uri)) return { ok: false, reason: 'wrong-uri' };
    if (p.realm !== this.realm) return { ok: false, reason: 'malformed' };
    const nonceAge = this.nonceAge(p.nonce, now);
    if (nonceAge === null) return { ok: false, reason: 'bad-nonce' };
    const password = this.passwordFor(p.username);
    if (password === undefined) return { ok: false, reason: 'unknown-user' };
    const alg = (p.algorithm ?? 'MD5').toUpperCase();
    if (alg !== 'MD5' && alg !== 'SHA-256') return { ok: false, reason: 'malformed' };
    const h = (s: string) => createHash(alg === 'MD5' ? 'md5' : 'sha256').update(s).digest('hex');
    const ha1 = h(`${p.username}:${this.realm}:${password}`);
    const ha2 = h(`${req.method}:${p.uri}`);
    let expected: string;
    if (p.qop) {
      if (p.qop !== 'auth' || !p.nc || !p.cnonce) return { ok: false, reason: 'malformed' };
      expected = h(`${ha1}:${p.nonce}:${p.nc}:${p.cnonce}:auth:${ha2}`);
    } else {
      expected = h(`${ha1}:${p.nonce}:${ha2}`);
    }
    const a = Buffer.from(expected);
    const b = Buffer.from(p.response.toLowerCase());
    if (a.length !== b.length || !timingSafeEqual(a, b)) return { ok: false, reason: 'bad-response' };
    // Correct credentials on an old nonce: ask again with stale=true (no new password needed).
    if (nonceAge > this.nonceLifetimeMs) return { ok: false, reason: 'stale' };
    // Each use of a nonce must count up (qop=auth); without qop a nonce serves once.
    const nc = p.qop ? parseInt(p.nc!, 16) : 1;
    if (!Number.isFinite(nc)) return { ok: false, reason: 'malformed' };
    this.purge(now);
    const seen = this.lastNc.get(p.nonce);
    if (seen && nc <= seen.nc) return { ok: false, reason: 'replay' };
    this.lastNc.set(p.nonce, { nc, at: now });
    return { ok: true, username: p.username };
  }

  /** Forgets nonce counts of nonces past their lifetime (checked at most once a minute). */
  private purge(now: number): void {
    if (now - this.lastPurge < 60_000) return;
    this.lastPurge = now;
    for (const [nonce, e] of this.lastNc) if (now - e.at > this.nonceLifetimeMs * 2) this.lastNc.delete(nonce);
  }

  /** time.random.signature: unique per challenge (two in the same millisecond must not share a nonce-count). */
  private newNonce(now = Date.now()): string {
    const body = `${now.toString(36)}.${randomBytes(9).toString('base64url')}`;
    return `${body}.${createHmac('sha256', this.secret).update(body).digest('base64url').slice(0, 22)}`;
  }

  /** Milliseconds since a nonce of ours was made; null when it is not ours. */
  private nonceAge(nonce: string, now: number): number | null {
    const [ts, rand, sig] = nonce.split('.');
    if (!ts || !rand || !sig) return null;
    const good = createHmac('sha256', this.secret).update(`${ts}.${rand}`).digest('base64url').slice(0, 22);
    if (sig.length !== good.length || !timingSafeEqual(Buffer.from(sig), Buffer.from(good))) return null;
    const t = parseInt(ts, 36);
    return Number.isFinite(t) ? now - t : null;
  }
}

/**
 * Whether the digest-uri names the same target as the Request-URI: the same user (escapes
 * decoded), whatever the host, port and parameters — a proxy or SBC in front may rewrite those
 * (to our address), and a client may write them differently (case, default port). The user is
 * what a replayed answer would be stolen for. Unparseable URIs must match exactly.
 */
function sameTarget(digestUri: string, requestUri: string): boolean {
  if (digestUri === requestUri) return true;
  const a = parseUri(digestUri);
  const b = parseUri(requestUri);
  if (!a || !b) return false;
  const user = (u: SipUri) => { try { return decodeURIComponent(u.user ?? ''); } catch { return u.user ?? ''; } };
  return (a.scheme === 'tel') === (b.scheme === 'tel') && user(a) === user(b);
}

/** `Digest a="b", c=d` → { a: 'b', c: 'd' } (names lower-cased); null if not Digest. */
export function parseDigestParams(value: string): Record<string, string> | null {
  const m = /^\s*Digest\s+(.*)$/is.exec(value);
  if (!m) return null;
  const out: Record<string, string> = {};
  for (const part of splitList(m[1])) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    let v = part.slice(eq + 1).trim();
    if (v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    out[part.slice(0, eq).trim().toLowerCase()] = v;
  }
  return out;
}
