import type { SipRequest, SipResponse } from './message';
import type { Dialog } from './dialog';
import type { Clock } from './transactions';
import type { SessionTimerSettings } from './sessionTimer';

/** What a Dialog needs from the user agent core (kept narrow so dialog.ts stays testable). */
export interface UaCore {
  sendInDialog(dialog: Dialog, req: SipRequest): Promise<SipResponse>;
  forgetDialog(dialog: Dialog): void;
  readonly clock: Clock;
  readonly sessionTimerSettings: SessionTimerSettings;
}
