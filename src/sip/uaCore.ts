import type { SipRequest, SipResponse } from './message';
import type { Dialog } from './dialog';

/** What a Dialog needs from the user agent core (kept narrow so dialog.ts stays testable). */
export interface UaCore {
  sendInDialog(dialog: Dialog, req: SipRequest): Promise<SipResponse>;
  forgetDialog(dialog: Dialog): void;
}
