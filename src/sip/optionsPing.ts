import { EventEmitter } from 'node:events';
import type { SipUserAgent } from './userAgent';

/**
 * OPTIONS keepalive toward a peer (typically the trunk): a request every `intervalSec`; any
 * final response — even 404 or 405 — proves the peer is there, a timeout proves it is not.
 * Emits 'change' when reachability flips, so /readyz and metrics can follow it.
 */
export class OptionsPing extends EventEmitter<{ change: [reachable: boolean] }> {
  reachable: boolean | null = null;
  lastStatus = 0;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(private readonly ua: SipUserAgent, private readonly target: string, private readonly intervalSec: number, private readonly outboundProxy?: string) {
    super();
  }

  start(): void {
    this.stopped = false;
    void this.ping();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private async ping(): Promise<void> {
    if (this.stopped) return;
    let status = 408;
    // Do not wait for Timer F (32 s) to call a silent trunk unreachable: give it one interval
    // (at most 5 s). The transaction itself still ends on its own timers.
    const waitMs = Math.min(this.intervalSec * 1000, 5000);
    let giveUp: NodeJS.Timeout | undefined;
    try {
      status = await Promise.race([
        this.ua.options(this.target, { outboundProxy: this.outboundProxy }).then((r) => r.status),
        new Promise<number>((r) => { giveUp = setTimeout(() => r(408), waitMs); }),
      ]);
    } catch (err) {
      this.ua.log.warn({ err: (err as Error).message, target: this.target }, 'OPTIONS keepalive could not be sent');
    } finally {
      clearTimeout(giveUp);
    }
    if (this.stopped) return;
    this.lastStatus = status;
    // 408 is also what the transaction layer reports on a timeout (Timer F).
    const reachable = status !== 408 && status !== 503;
    if (reachable !== this.reachable) {
      this.reachable = reachable;
      this.ua.log[reachable ? 'info' : 'warn']({ target: this.target, status }, reachable ? 'trunk reachable' : 'trunk unreachable');
      this.emit('change', reachable);
    }
    this.timer = setTimeout(() => void this.ping(), this.intervalSec * 1000);
    this.timer.unref();
  }
}
