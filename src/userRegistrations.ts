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
 * Makes browser users reachable through an upstream registrar (a PBX or Kamailio): while a user
 * has at least one tab open, the gateway REGISTERs sip:<user>@<domain> with itself as the
 * contact, so calls to that user are routed to the gateway and ring the tabs. The registration
 * is removed (Expires: 0) when the last tab goes, and on shutdown.
 */
export class UserRegistrations {
  private readonly active = new Map<string, Registration>();

  constructor(private readonly ua: SipUserAgent, private readonly cfg: UserRegistrationConfig, private readonly log: Logger) {}

  online(user: string): void {
    if (this.active.has(user)) return;
    const reg = this.ua.register({
      registrar: this.cfg.registrar,
      aor: `sip:${user}@${this.cfg.domain}`,
      contactUser: user,
      expires: this.cfg.expiresSec,
      credentials: this.cfg.password ? { username: user, password: this.cfg.password } : undefined,
    });
    reg.on('state', (state) => this.log.info({ user, state }, 'user registration'));
    this.active.set(user, reg);
    reg.start();
  }

  offline(user: string): void {
    const reg = this.active.get(user);
    if (!reg) return;
    this.active.delete(user);
    reg.stop().catch(() => undefined);
  }

  states(): Record<string, string> {
    return Object.fromEntries([...this.active].map(([u, r]) => [u, r.state]));
  }

  /** Unregisters everyone; a registrar that does not answer gets 2 s, not the 32 s of Timer F. */
  async stopAll(): Promise<void> {
    const regs = [...this.active.values()];
    this.active.clear();
    await Promise.all(regs.map((r) => Promise.race([r.stop().catch(() => undefined), new Promise((res) => setTimeout(res, 2000).unref())])));
  }
}
