import type { BrowserMediaPort, ReceptionReport } from '../media/mediaBridge';
import type { RtpPacketView } from '../media';
import type { BrowserLeg } from '../webrtc/browserLeg';

/**
 * The browser side of a call's bridge, as one port whose leg can be replaced: a browser whose
 * network changed connects again with a new peer connection (a media restart), and the bridge —
 * its timeline, codecs and statistics, in this thread or a media worker — goes on unaware.
 * Only a leg that negotiated the same payload types and send codec can take over (the media
 * plane read them when the bridge was made); the bridge already treats the new leg's SSRC and
 * sequence numbers as a new source.
 */
export class BrowserLegSwitch implements BrowserMediaPort {
  /** The bridge's listeners, each with its subscription on the current leg. */
  private readonly rtpListeners = new Map<(pkt: RtpPacketView) => void, () => void>();
  private reportSource: (() => ReceptionReport | null) | null = null;
  private reportsOff: (() => void) | null = null;

  constructor(private leg: BrowserLeg) {}

  get current(): BrowserLeg { return this.leg; }
  get opusPayloadType(): number | null { return this.leg.opusPayloadType; }
  get pcmuPayloadType(): number | null { return this.leg.pcmuPayloadType; }
  get telephoneEventPayloadType(): number | null { return this.leg.telephoneEventPayloadType; }
  get telephoneEventClockRate(): number | undefined { return this.leg.telephoneEventClockRate; }
  get telephoneEvents(): ReadonlyArray<{ payloadType: number; clockRate: number }> { return this.leg.telephoneEvents; }
  get sendCodec(): 'opus' | 'pcmu' | 'pcma' { return this.leg.sendCodec; }

  onRtp(listener: (pkt: RtpPacketView) => void): () => void {
    this.rtpListeners.set(listener, this.leg.onRtp(listener));
    return () => {
      this.rtpListeners.get(listener)?.();
      this.rtpListeners.delete(listener);
    };
  }

  sendRtp(pkt: RtpPacketView): void {
    this.leg.sendRtp(pkt);
  }

  receptionReports(source: () => ReceptionReport | null): () => void {
    this.reportsOff?.();
    this.reportSource = source;
    this.reportsOff = this.leg.receptionReports(source);
    return () => {
      if (this.reportSource !== source) return;
      this.reportsOff?.();
      this.reportSource = null;
      this.reportsOff = null;
    };
  }

  /** Why `next` cannot carry this bridge's audio (what the bridge was made with differs), or null. */
  incompatibility(next: BrowserLeg): string | null {
    const now = this.leg;
    if (next.sendCodec !== now.sendCodec) return `the browser would send ${next.sendCodec}, not ${now.sendCodec}`;
    if (next.opusPayloadType !== now.opusPayloadType || next.pcmuPayloadType !== now.pcmuPayloadType) return 'other audio payload types';
    if (next.telephoneEventPayloadType !== now.telephoneEventPayloadType || next.telephoneEventClockRate !== now.telephoneEventClockRate
      || JSON.stringify(next.telephoneEvents) !== JSON.stringify(now.telephoneEvents)) return 'other telephone-event formats';
    return null;
  }

  /** `next` carries the audio from now on; returns the leg it replaced (its owner closes it). */
  switchTo(next: BrowserLeg): BrowserLeg {
    const old = this.leg;
    this.leg = next;
    for (const [listener, off] of this.rtpListeners) {
      off();
      this.rtpListeners.set(listener, next.onRtp(listener));
    }
    if (this.reportSource) {
      this.reportsOff?.();
      this.reportsOff = next.receptionReports(this.reportSource);
    }
    return old;
  }
}
