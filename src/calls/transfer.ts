import type { Logger } from 'pino';
import type { Dialog, SipRequest } from '../sip';
import { isSipfrag, parseSipfragStatus, readSubscriptionState, referHeaders } from '../sip/refer';
import { tabSafeReason } from './causes';

/**
 * How long an accepted REFER may go without a final report (a NOTIFY whose sipfrag is final, or
 * the far end's BYE) before the transfer counts as failed: 32 s, the life of a non-INVITE
 * transaction (64·T1), as long as the transferee's own INVITE may take to fail by timeout.
 */
export const DEFAULT_TRANSFER_TIMEOUT_MS = 32_000;

/**
 * referring: our REFER is out, no final response yet (a NOTIFY may come first, RFC 6665
 * §4.1.2.4). accepted: 2xx to the REFER; waiting for the NOTIFY with the final sipfrag.
 * Then one of the terminal states: succeeded (a 2xx sipfrag, or the far end hung up once it
 * had accepted), failed (the REFER refused or unanswered, a failure sipfrag, the subscription
 * ended without a final one, or the wait ran out) and abandoned (the call ended otherwise).
 */
export type TransferState = 'referring' | 'accepted' | 'succeeded' | 'failed' | 'abandoned';

export type TransferOutcome =
  | { kind: 'succeeded'; sipStatus?: number; reason?: string }
  | { kind: 'failed'; sipStatus?: number; message: string }
  | { kind: 'abandoned' };

export interface TransferTarget {
  /** The number as our dial plan normalised it (for the CDR). */
  number: string;
  /** The URI an outbound call to it would use as its Request-URI toward the trunk. */
  uri: string;
}

/**
 * One blind transfer of a call's far end (RFC 5589 §6): a REFER in the call's dialog, then the
 * implicit subscription's NOTIFYs (RFC 3515 §2.4.4) until a final status. Owns its one timer
 * (the wait for the final NOTIFY), cleared in every terminal state; `abandon()` is how the call
 * ending for another reason stops it. It never ends the call itself: the call reads the outcome
 * (run()) and sends its BYE on success.
 */
export class BlindTransfer {
  state: TransferState = 'referring';
  /** The REFER's CSeq number once answered: NOTIFYs name it in Event's id (RFC 3515 §2.4.6). */
  private referSeq = 0;
  /** The REFER's CSeq is at least this (a digest retry takes a higher one). */
  private readonly minSeq: number;
  private timer: NodeJS.Timeout | null = null;
  private settleOutcome!: (o: TransferOutcome) => void;
  private readonly outcome = new Promise<TransferOutcome>((resolve) => { this.settleOutcome = resolve; });

  constructor(
    private readonly dialog: Dialog,
    readonly target: TransferTarget,
    private readonly opts: { timeoutMs: number; log: Logger; onProgress(status: number): void },
  ) {
    this.minSeq = dialog.localSeq + 1;
  }

  get done(): boolean {
    return this.state === 'succeeded' || this.state === 'failed' || this.state === 'abandoned';
  }

  /** Sends the REFER; resolves with the outcome (exactly once, whatever ends the transfer). */
  run(): Promise<TransferOutcome> {
    let headers: Array<[string, string]>;
    try {
      headers = referHeaders(this.target.uri, this.dialog.localAddr);
    } catch (err) {
      this.fail(undefined, (err as Error).message);
      return this.outcome;
    }
    this.opts.log.info({ referTo: this.target.uri }, 'transfer: REFER sent');
    this.dialog.request('REFER', '', undefined, headers).then(
      (res) => {
        if (this.state !== 'referring') return; // settled meanwhile: the call ended, or a NOTIFY said
        if (res.status >= 200 && res.status < 300) {
          this.referSeq = res.cseq.seq;
          this.state = 'accepted';
          this.opts.log.info({ status: res.status }, 'transfer: REFER accepted, waiting for its NOTIFYs');
          this.timer = setTimeout(() => {
            this.timer = null;
            this.fail(undefined, `no final report of the transfer within ${Math.round(this.opts.timeoutMs / 1000)} s`);
          }, this.opts.timeoutMs);
          return;
        }
        this.fail(res.status, `REFER refused: ${res.status} ${tabSafeReason(res)}`.trim());
      },
      (err: Error) => {
        // The details (a host, an address, a certificate) are the operator's: the tab hears only this.
        this.opts.log.warn({ err: err.message }, 'transfer: REFER could not be sent');
        this.fail(undefined, 'REFER could not be sent: the trunk could not be reached');
      },
    );
    return this.outcome;
  }

  /**
   * Whether a NOTIFY of the refer package naming `id` (null: none) is this transfer's: after a
   * 2xx to the REFER exactly its CSeq; while the REFER is unanswered any id its CSeq could have
   * (a digest retry raises it; RFC 6665 §4.1.2.4 lets the NOTIFY come first); a REFER refused or
   * unanswered made no subscription (RFC 3515 §2.4.1), so none. One naming no id is the
   * caller's to route (the latest transfer of the dialog, RFC 3515 §2.4.6).
   */
  matches(id: number | null): boolean {
    if (id === null) return true;
    if (this.referSeq) return id === this.referSeq;
    return this.state === 'referring' && id >= this.minSeq;
  }

  /**
   * A NOTIFY of this transfer's subscription: drives the state, returns the status to answer it
   * with. Always 200, also for a body we cannot read (not message/sipfrag, no status line):
   * the sipfrag only reports (RFC 3515 §2.4.5), and an error answer would make the notifier end
   * the subscription (RFC 6665 §4.2.2), losing the final report we wait for. Its
   * Subscription-State still counts. One after the outcome is answered 200 and ignored (the
   * subscription is known; the notifier may still be ending it).
   */
  onNotify(req: SipRequest): number {
    if (this.done) return 200;
    const frag = isSipfrag(req) ? parseSipfragStatus(req.body) : null;
    if (!frag) this.opts.log.warn({ contentType: req.header('content-type'), body: req.body.slice(0, 80) }, 'transfer: NOTIFY without a readable sipfrag status line');
    const sub = readSubscriptionState(req);
    if (frag && frag.status >= 200 && frag.status < 300) {
      this.settle('succeeded', { kind: 'succeeded', sipStatus: frag.status, reason: frag.reason });
      return 200;
    }
    if (frag && frag.status >= 300) {
      this.fail(frag.status, `the transfer target answered ${frag.status} ${frag.reason}`.trim());
      return 200;
    }
    if (sub.state === 'terminated') {
      // No sipStatus: a provisional one (this NOTIFY's 1xx) is not what ended the transfer, and
      // the tab reads error.sipStatus as that (docs/protocol.md).
      this.fail(undefined, `the transfer's subscription ended without a final status${sub.reason ? ` (${sub.reason})` : ''}`);
      return 200;
    }
    if (frag) this.opts.onProgress(frag.status);
    return 200;
  }

  /**
   * The far end hung up. Once it accepted the REFER, that is the transfer going ahead (many
   * trunks end the call as soon as they take the REFER, before any NOTIFY): true, succeeded.
   */
  peerHungUp(): boolean {
    if (this.state !== 'accepted') return false;
    this.settle('succeeded', { kind: 'succeeded' });
    return true;
  }

  /** The call ended for another reason: nothing more to wait for. */
  abandon(): void {
    if (this.done) return;
    this.settle('abandoned', { kind: 'abandoned' });
  }

  private fail(sipStatus: number | undefined, message: string): void {
    if (this.done) return;
    this.opts.log.info({ sipStatus, message }, 'transfer failed');
    this.settle('failed', { kind: 'failed', sipStatus, message });
  }

  private settle(state: 'succeeded' | 'failed' | 'abandoned', outcome: TransferOutcome): void {
    this.state = state;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.settleOutcome(outcome);
  }
}
