import { createHash, randomBytes } from 'node:crypto';
import { splitList, type SipRequest, type SipResponse } from './message';

export interface Credentials { username: string; password: string }

/**
 * HTTP Digest for SIP as a client (RFC 3261 §22.4, RFC 2617, RFC 8760 for SHA-256).
 */
export interface DigestChallenge {
  realm: string;
  nonce: string;
  opaque?: string;
  algorithm: 'MD5' | 'SHA-256' | 'MD5-sess' | 'SHA-256-sess';
  qop?: string[];
  stale: boolean;
}

/**
 * A value inside a quoted-string (RFC 3261 §25.1): '"' and '\' escaped, as parseChallenge
 * unescapes them — a realm or user name holding either would otherwise end the string early
 * (the server then reads another realm, or parameters we never sent). Line breaks, which no
 * quoted-string may hold, are left out.
 */
function quotedStringBody(value: string): string {
  return value.replace(/[\r\n]/g, '').replace(/["\\]/g, '\\$&');
}

export function parseChallenge(value: string): DigestChallenge | null {
  const m = /^\s*Digest\s+(.*)$/is.exec(value);
  if (!m) return null;
  const params: Record<string, string> = {};
  for (const part of splitList(m[1])) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const k = part.slice(0, eq).trim().toLowerCase();
    let v = part.slice(eq + 1).trim();
    if (v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    params[k] = v;
  }
  if (params.realm === undefined || !params.nonce) return null;
  const alg = (params.algorithm ?? 'MD5').toUpperCase();
  const algorithm = alg === 'MD5' ? 'MD5' : alg === 'SHA-256' ? 'SHA-256' : alg === 'MD5-SESS' ? 'MD5-sess' : alg === 'SHA-256-SESS' ? 'SHA-256-sess' : null;
  if (!algorithm) return null;
  return {
    realm: params.realm,
    nonce: params.nonce,
    opaque: params.opaque,
    algorithm,
    qop: params.qop ? params.qop.split(',').map((q) => q.trim().toLowerCase()) : undefined,
    stale: (params.stale ?? '').toLowerCase() === 'true',
  };
}

/** Prefer SHA-256 over MD5 when a server offers both (RFC 8760 §2.4). */
export function pickChallenge(values: string[]): DigestChallenge | null {
  const parsed = values.map(parseChallenge).filter((c): c is DigestChallenge => c !== null);
  return parsed.find((c) => c.algorithm.startsWith('SHA-256')) ?? parsed[0] ?? null;
}

/**
 * Answers one challenge. Keep the instance for as long as the nonce is good and call
 * authorization() once per request sent: each call counts nc up and draws a new cnonce
 * (RFC 7616 §3.4), so a re-sent request never repeats an earlier Authorization.
 */
export class DigestClient {
  private nc = 0;
  constructor(
    readonly challenge: DigestChallenge,
    private readonly username: string,
    private readonly password: string,
    /** Client nonce source; tests pin it to check published vectors. */
    private readonly makeCnonce: () => string = () => randomBytes(8).toString('hex'),
  ) {}

  authorization(method: string, uri: string, body = ''): string {
    const c = this.challenge;
    const hashName = c.algorithm.startsWith('SHA-256') ? 'sha256' : 'md5';
    const h = (s: string) => createHash(hashName).update(s).digest('hex');
    const cnonce = this.makeCnonce();
    let ha1 = h(`${this.username}:${c.realm}:${this.password}`);
    if (c.algorithm.endsWith('-sess')) ha1 = h(`${ha1}:${c.nonce}:${cnonce}`);
    const qop = c.qop?.includes('auth') ? 'auth' : c.qop?.includes('auth-int') ? 'auth-int' : undefined;
    const ha2 = qop === 'auth-int' ? h(`${method}:${uri}:${h(body)}`) : h(`${method}:${uri}`);
    const parts = [`username="${quotedStringBody(this.username)}"`, `realm="${quotedStringBody(c.realm)}"`, `nonce="${quotedStringBody(c.nonce)}"`, `uri="${uri}"`];
    let response: string;
    if (qop) {
      this.nc++;
      const nc = this.nc.toString(16).padStart(8, '0');
      response = h(`${ha1}:${c.nonce}:${nc}:${cnonce}:${qop}:${ha2}`);
      parts.push(`response="${response}"`, `algorithm=${c.algorithm}`, `cnonce="${cnonce}"`, `qop=${qop}`, `nc=${nc}`);
    } else {
      response = h(`${ha1}:${c.nonce}:${ha2}`);
      parts.push(`response="${response}"`, `algorithm=${c.algorithm}`);
    }
    if (c.opaque !== undefined) parts.push(`opaque="${quotedStringBody(c.opaque)}"`);
    return `Digest ${parts.join(', ')}`;
  }
}

/**
 * The digest answers one call holds, by header and realm (a proxy's 407 and the callee's 401
 * can both apply), for every request of the call: the INVITE, its 422/401 retries and the
 * requests later sent in the dialog. Each request gets Authorization values computed afresh
 * (same nonce, nc one higher, new cnonce; RFC 7616 §3.4): copying an earlier request's header
 * would repeat its nc, which a strict server refuses as a replay. This is what SIP.js
 * (DigestAuthentication.authenticate) and pjsip (PJSIP_AUTH_AUTO_SEND_NEXT with qop) do.
 */
export class DigestAuth {
  private readonly digests = new Map<string, { header: 'Authorization' | 'Proxy-Authorization'; client: DigestClient }>();

  constructor(private readonly credentials: Credentials) {}

  /** Adds an Authorization/Proxy-Authorization per challenge held; call once the body is set. */
  authorize(req: SipRequest): void {
    for (const { header, client } of this.digests.values()) req.addHeader(header, client.authorization(req.method, req.uri, req.body));
  }

  /**
   * Takes the challenge of a 401/407; true when it is one to answer with a new request. A
   * realm's first challenge is answered, and a new one after ours was used: stale=true, or a
   * different nonce (a server with one-time nonces; pjsip counts that as stale too). The same
   * nonce refused again means the password is wrong: false, give up.
   */
  accept(res: SipResponse): boolean {
    if (res.status !== 401 && res.status !== 407) return false;
    const header = res.status === 401 ? 'Authorization' : 'Proxy-Authorization';
    const challenge = pickChallenge(res.headers(res.status === 401 ? 'www-authenticate' : 'proxy-authenticate'));
    if (!challenge) return false;
    const key = `${header} ${challenge.realm}`;
    const held = this.digests.get(key)?.client.challenge;
    if (held && !challenge.stale && challenge.nonce === held.nonce) return false;
    this.digests.set(key, { header, client: new DigestClient(challenge, this.credentials.username, this.credentials.password) });
    return true;
  }
}

/**
 * Sends the request `build` makes (each call a new one: its next CSeq) with the credentials
 * `auth` holds, computed afresh. A 401/407 is answered with a new request, once per new
 * challenge and at most 3 times; without credentials, or once `goOn` says the request no longer
 * matters, the challenge is the answer. For requests other than the INVITE, whose challenges
 * the INVITE transaction's own handling answers (it must also watch CANCEL).
 */
export async function sendWithCredentials(
  auth: DigestAuth | null | undefined,
  build: () => SipRequest,
  send: (req: SipRequest) => Promise<SipResponse>,
  goOn: () => boolean = () => true,
): Promise<SipResponse> {
  for (let attempt = 0; ; attempt++) {
    const req = build();
    auth?.authorize(req);
    const res = await send(req);
    // The challenge is taken even when we stop here: the next request (the dialog's first, say)
    // answers it at once instead of being challenged again.
    if (!auth || attempt >= 3 || !auth.accept(res) || !goOn()) return res;
  }
}
