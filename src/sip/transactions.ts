/**
 * RFC 3261 §17 transaction state machines, with the RFC 6026 "Accepted" state for INVITE.
 * Timers run on an injectable clock so tests can drive them. Retransmissions only happen on
 * unreliable transports; Timers D, I, J, K are zero on reliable ones (§17.1.2.2, §17.2.2).
 */
import type { SipRequest, SipResponse } from './message';

export interface Clock {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: Clock = {
  setTimeout: (fn, ms) => { const t = setTimeout(fn, ms); t.unref?.(); return t; },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface Timers { T1: number; T2: number; T4: number }
export const DEFAULT_TIMERS: Timers = { T1: 500, T2: 4000, T4: 5000 };

export interface TxContext {
  clock: Clock;
  timers: Timers;
  reliable: boolean;
  /** Sends raw text to the transaction's peer. */
  send(data: string): void;
  /** The transaction ended (remove it from the table). */
  terminated(): void;
}

/** A small timer set owned by one transaction; all cleared on termination. */
class TimerSet {
  private readonly handles = new Map<string, unknown>();
  constructor(private readonly clock: Clock) {}
  start(name: string, ms: number, fn: () => void): void {
    this.stop(name);
    this.handles.set(name, this.clock.setTimeout(() => { this.handles.delete(name); fn(); }, ms));
  }
  stop(name: string): void {
    const h = this.handles.get(name);
    if (h !== undefined) { this.clock.clearTimeout(h); this.handles.delete(name); }
  }
  clear(): void {
    for (const h of this.handles.values()) this.clock.clearTimeout(h);
    this.handles.clear();
  }
  get size(): number { return this.handles.size; }
}

export type ClientTxState = 'calling' | 'trying' | 'proceeding' | 'accepted' | 'completed' | 'terminated';

export interface ClientTxUser {
  onResponse(res: SipResponse): void;
  /** Timer B/F fired or the transport failed: no final response will come. */
  onTimeout(): void;
}

/**
 * INVITE client transaction (§17.1.1) — Timers A, B, D, and RFC 6026 Timer M. Timer B only
 * guards the Calling state: once a provisional response arrives the call may ring for as long
 * as the callee likes, and only a CANCEL (see `cancelSent`) bounds the wait.
 */
export class InviteClientTransaction {
  state: ClientTxState = 'calling';
  private readonly timers: TimerSet;
  private ack: string | null = null;

  constructor(readonly request: SipRequest, private readonly ctx: TxContext, private readonly user: ClientTxUser) {
    this.timers = new TimerSet(ctx.clock);
    const wire = request.toString();
    ctx.send(wire);
    if (!ctx.reliable) this.scheduleA(wire, ctx.timers.T1);
    this.timers.start('B', 64 * ctx.timers.T1, () => this.timeout());
  }

  private scheduleA(wire: string, interval: number): void {
    this.timers.start('A', interval, () => {
      if (this.state !== 'calling') return;
      this.ctx.send(wire);
      this.scheduleA(wire, interval * 2);
    });
  }

  private timeout(): void {
    if (this.state !== 'calling' && this.state !== 'proceeding') return;
    this.terminate();
    this.user.onTimeout();
  }

  /**
   * The TU sent a CANCEL for this INVITE (§9.1): if no final response arrives within 64*T1,
   * consider the INVITE cancelled and destroy the transaction (the user sees a timeout).
   */
  cancelSent(): void {
    if (this.state !== 'calling' && this.state !== 'proceeding') return;
    this.timers.start('cancel', 64 * this.ctx.timers.T1, () => this.timeout());
  }

  receive(res: SipResponse): void {
    const s = res.status;
    switch (this.state) {
      case 'calling':
      case 'proceeding':
        if (s < 200) {
          this.state = 'proceeding';
          this.timers.stop('A');
          this.timers.stop('B'); // §17.1.1.2: Timer B fires only in Calling
          this.user.onResponse(res);
        } else if (s < 300) {
          // RFC 6026 §7.2: stay "Accepted" for 64*T1 so 2xx retransmissions reach the core.
          this.state = 'accepted';
          this.timers.stop('A');
          this.timers.stop('B');
          this.timers.stop('cancel');
          this.timers.start('M', 64 * this.ctx.timers.T1, () => this.terminate());
          this.user.onResponse(res);
        } else {
          this.state = 'completed';
          this.timers.stop('A');
          this.timers.stop('B');
          this.timers.stop('cancel');
          this.ack = buildNon2xxAck(this.request, res);
          this.ctx.send(this.ack);
          this.timers.start('D', this.ctx.reliable ? 0 : 32000, () => this.terminate());
          this.user.onResponse(res);
        }
        return;
      case 'accepted':
        if (s >= 200 && s < 300) this.user.onResponse(res); // core re-sends its ACK
        return;
      case 'completed':
        if (s >= 300 && this.ack) this.ctx.send(this.ack);
        return;
      default:
    }
  }

  terminate(): void {
    if (this.state === 'terminated') return;
    this.state = 'terminated';
    this.timers.clear();
    this.ctx.terminated();
  }
}

/** Non-INVITE client transaction (§17.1.2) — Timers E, F, K. */
export class NonInviteClientTransaction {
  state: ClientTxState = 'trying';
  private readonly timers: TimerSet;

  constructor(readonly request: SipRequest, private readonly ctx: TxContext, private readonly user: ClientTxUser) {
    this.timers = new TimerSet(ctx.clock);
    const wire = request.toString();
    ctx.send(wire);
    if (!ctx.reliable) this.scheduleE(wire, ctx.timers.T1);
    this.timers.start('F', 64 * ctx.timers.T1, () => {
      if (this.state === 'trying' || this.state === 'proceeding') { this.terminate(); this.user.onTimeout(); }
    });
  }

  private scheduleE(wire: string, interval: number): void {
    this.timers.start('E', interval, () => {
      if (this.state !== 'trying' && this.state !== 'proceeding') return;
      this.ctx.send(wire);
      // In Proceeding the interval stays at T2 (§17.1.2.2).
      this.scheduleE(wire, this.state === 'proceeding' ? this.ctx.timers.T2 : Math.min(interval * 2, this.ctx.timers.T2));
    });
  }

  receive(res: SipResponse): void {
    if (this.state !== 'trying' && this.state !== 'proceeding') return;
    if (res.status < 200) {
      this.state = 'proceeding';
      this.user.onResponse(res);
      return;
    }
    this.state = 'completed';
    this.timers.stop('E');
    this.timers.stop('F');
    this.timers.start('K', this.ctx.reliable ? 0 : this.ctx.timers.T4, () => this.terminate());
    this.user.onResponse(res);
  }

  terminate(): void {
    if (this.state === 'terminated') return;
    this.state = 'terminated';
    this.timers.clear();
    this.ctx.terminated();
  }
}

export type ServerTxState = 'trying' | 'proceeding' | 'accepted' | 'completed' | 'confirmed' | 'terminated';

/** INVITE server transaction (§17.2.1) — Timers G, H, I, and RFC 6026 Timer L. */
export class InviteServerTransaction {
  state: ServerTxState = 'proceeding';
  private readonly timers: TimerSet;
  private lastResponse: string | null = null;
  lastStatus = 0;

  constructor(readonly request: SipRequest, private readonly ctx: TxContext, private readonly onNoAck: () => void) {
    this.timers = new TimerSet(ctx.clock);
  }

  respond(res: SipResponse): void {
    if (this.state !== 'proceeding') return;
    const wire = res.toString();
    this.lastResponse = wire;
    this.lastStatus = res.status;
    this.ctx.send(wire);
    if (res.status < 200) return;
    if (res.status < 300) {
      // RFC 6026 §7.1: "Accepted": the core retransmits 2xx; we absorb retransmitted INVITEs.
      this.state = 'accepted';
      this.timers.start('L', 64 * this.ctx.timers.T1, () => this.terminate());
      return;
    }
    this.state = 'completed';
    if (!this.ctx.reliable) this.scheduleG(wire, this.ctx.timers.T1);
    this.timers.start('H', 64 * this.ctx.timers.T1, () => {
      if (this.state === 'completed') { this.terminate(); this.onNoAck(); }
    });
  }

  private scheduleG(wire: string, interval: number): void {
    this.timers.start('G', interval, () => {
      if (this.state !== 'completed') return;
      this.ctx.send(wire);
      this.scheduleG(wire, Math.min(interval * 2, this.ctx.timers.T2));
    });
  }

  /** A retransmitted INVITE: answer with the last response (§17.2.1). */
  retransmission(): void {
    if ((this.state === 'proceeding' || this.state === 'completed') && this.lastResponse) this.ctx.send(this.lastResponse);
  }

  /** ACK for a non-2xx final response. */
  ack(): void {
    if (this.state !== 'completed') return;
    this.state = 'confirmed';
    this.timers.stop('G');
    this.timers.stop('H');
    this.timers.start('I', this.ctx.reliable ? 0 : this.ctx.timers.T4, () => this.terminate());
  }

  terminate(): void {
    if (this.state === 'terminated') return;
    this.state = 'terminated';
    this.timers.clear();
    this.ctx.terminated();
  }
}

/** Non-INVITE server transaction (§17.2.2) — Timer J. */
export class NonInviteServerTransaction {
  state: ServerTxState = 'trying';
  private readonly timers: TimerSet;
  private lastResponse: string | null = null;

  constructor(readonly request: SipRequest, private readonly ctx: TxContext) {
    this.timers = new TimerSet(ctx.clock);
  }

  respond(res: SipResponse): void {
    if (this.state === 'completed' || this.state === 'terminated') return;
    const wire = res.toString();
    this.lastResponse = wire;
    this.ctx.send(wire);
    if (res.status < 200) { this.state = 'proceeding'; return; }
    this.state = 'completed';
    this.timers.start('J', this.ctx.reliable ? 0 : 64 * this.ctx.timers.T1, () => this.terminate());
  }

  retransmission(): void {
    if (this.lastResponse && (this.state === 'proceeding' || this.state === 'completed')) this.ctx.send(this.lastResponse);
  }

  terminate(): void {
    if (this.state === 'terminated') return;
    this.state = 'terminated';
    this.timers.clear();
    this.ctx.terminated();
  }
}

/** ACK for a non-2xx final response: same branch, To with the response's tag (§17.1.1.3). */
function buildNon2xxAck(invite: SipRequest, res: SipResponse): string {
  const lines = [`ACK ${invite.uri} SIP/2.0`, `Via: ${invite.header('via')}`];
  for (const r of invite.headers('route')) lines.push(`Route: ${r}`);
  lines.push(`Max-Forwards: 70`, `From: ${invite.header('from')}`, `To: ${res.header('to')}`, `Call-ID: ${invite.callId}`, `CSeq: ${invite.cseq.seq} ACK`, 'Content-Length: 0');
  return `${lines.join('\r\n')}\r\n\r\n`;
}
