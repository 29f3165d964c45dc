import type { Logger } from 'pino';
import type { Registration, SipUserAgent } from './sip';

export interface UserRegistrationConfig {
  /** Registrar URI, e.g. sip:pbx.example.com:5060. */
  registrar: string;
  /** Domain of the users' addresses of record: sip:<user>@<domain>. */
  domain: string;
  expiresSec: number;
  /** Digest password for every user (the registrar's account for browser users), if it asks. */
  password?: string;
}

/**
 * A browser identity (a token's `sub`, which may hold '@', '|', ':' …) as the user part of a
 * SIP URI: RFC 3261 §25.1 `user` = unreserved / escaped / user-unreserved, every other octet of
 * its UTF-8 form %-escaped. ';' and '?' are user-unreserved too, but escaped all the same: a
 * loose reader of URIs (a PBX, or our own inbound routing's userPart, which decodes the user of
 * the Request-URI that calls the user back) takes them for the start of parameters or headers,
 * and the escaped form is as valid.
 */
export function sipUserPart(user: string): string {
  let out = '';
  // Buffer, not encodeURIComponent: a lone surrogate becomes U+FFFD instead of a URIError.
  for (const byte of Buffer.from(user, 'utf8')) {
    const ch = String.fromCharCode(byte);
    out += /^[A-Za-z0-9\-_.!~*'()&=+$,/]$/.test(ch) ? ch : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** See UserRegistrations' offlineGraceMs. */
const OFFLINE_GRACE_MS = 5000;

/**
 * Makes browser users reachable through an upstream registrar (a PBX or Kamailio): while a user
 * has at least one tab open, the gateway REGISTERs sip:<user>@<domain> with itself as the
 * contact, so calls to that user are routed to the gateway and ring the tabs. The registration
 * is removed (Expires: 0) a few seconds after the last tab goes (OFFLINE_GRACE_MS), and on
 * shutdown.
 */
export class UserRegistrations {
  private readonly active = new Map<string, Registration>();
  /** Users whose last tab went: their unregister, unless a tab comes back first. */
  private readonly leaving = new Map<string, NodeJS.Timeout>();
  /** Users being unregistered (Expires: 0 on its way), until the registrar answered or we gave up. */
  private readonly unregistering = new Map<string, Promise<void>>();
  /**
   * Users with a tab again while their unregister is on its way: registered anew only once it
   * is done. Sent meanwhile, a new REGISTER (another Call-ID, the same Contact) taken before the
   * unregister would be removed by it (RFC 3261 §10.3).
   */
  private readonly comeBack = new Set<string>();
  private stopped = false;

  constructor(
    private readonly ua: SipUserAgent,
    private readonly cfg: UserRegistrationConfig,
    private readonly log: Logger,
    /**
     * How long a user stays registered after the last tab went. A page reload closes the old
     * tab and opens a new one at once: unregistering then, the unregister (Expires: 0 for the
     * same Contact) and the new tab's REGISTER race, and should the registrar take them in the
     * other order the user is unreachable until the next refresh. Kept instead.
     */
    private readonly offlineGraceMs = OFFLINE_GRACE_MS,
  ) {}

  online(user: string): void {
    const leaving = this.leaving.get(user);
    if (leaving) { clearTimeout(leaving); this.leaving.delete(user); }
    if (this.stopped || this.active.has(user)) return;
    if (this.unregistering.has(user)) { this.comeBack.add(user); return; }
    const sipUser = sipUserPart(user);
    const reg = this.ua.register({
      registrar: this.cfg.registrar,
      aor: `sip:${sipUser}@${this.cfg.domain}`,
      contactUser: sipUser,
      expires: this.cfg.expiresSec,
      credentials: this.cfg.password ? { username: user, password: this.cfg.password } : undefined,
    });
    reg.on('state', (state) => this.log.info({ user, state }, 'user registration'));
    this.active.set(user, reg);
    reg.start();
  }

  offline(user: string): void {
    if (this.comeBack.delete(user)) return; // back and gone again while the unregister was on its way
    if (!this.active.has(user) || this.leaving.has(user)) return;
    const timer = setTimeout(() => {
      this.leaving.delete(user);
      const reg = this.active.get(user);
      this.active.delete(user);
      if (!reg) return;
      const done = reg.stop().catch(() => undefined).finally(() => {
        this.unregistering.delete(user);
        if (this.comeBack.delete(user)) this.online(user);
      });
      this.unregistering.set(user, done);
    }, this.offlineGraceMs);
    timer.unref();
    this.leaving.set(user, timer);
  }

  /** Unregisters everyone (and takes no new users); a silent registrar gets 2 s, not Timer F's 32 s. */
  async stopAll(): Promise<void> {
    this.stopped = true;
    for (const t of this.leaving.values()) clearTimeout(t);
    this.leaving.clear();
    this.comeBack.clear();
    const regs = [...this.active.values()];
    this.active.clear();
    let timer: NodeJS.Timeout | undefined;
    const giveUp = new Promise<void>((res) => { timer = setTimeout(res, 2000); });
    await Promise.race([Promise.all([...regs.map((r) => r.stop().catch(() => undefined)), ...this.unregistering.values()]), giveUp]);
    clearTimeout(timer);
  }
}
