import type { BrowserMediaPort, ReceptionReport } from '../media/mediaBridge';
import type { RtpPacketView } from '../media';
import type { BrowserLeg } from '../webrtc/browserLeg';

/** The payload types a bridge was made with (the first leg's), as the media plane read them. */
interface PortView {
  opusPayloadType: number | null;
  pcmuPayloadType: number | null;
  telephoneEventPayloadType: number | null;
  telephoneEventClockRate: number | undefined;
  telephoneEvents: ReadonlyArray<{ payloadType: number; clockRate: number }>;
  sendCodec: 'opus' | 'pcmu' | 'pcma';
}

/**
 * The browser side of a call's bridge, as one port whose leg can be replaced: a browser whose
 * network changed connects again with a new peer connection (a media restart), and the bridge —
 * its timeline, codecs and statistics, in this thread or a media worker — goes on unaware.
 *
 * The bridge keeps the payload types it was made with (the media plane read them once). A new
 * leg may number the same codecs otherwise — on an incoming call the first numbers were ours
 * (our offer), the new ones are the browser's (its offer) — so packets are renumbered on the way
 * through when they differ. A leg without a codec the bridge uses, or sending another codec,
 * cannot take over. The bridge already treats the new leg's SSRC and sequence numbers as a new
 * source.
 */
export class BrowserLegSwitch implements BrowserMediaPort {
  private readonly view: PortView;
  /** The bridge's listeners, each with its subscription on the current leg. */
  private readonly rtpListeners = new Map<(pkt: RtpPacketView) => void, () => void>();
  private reportSource: (() => ReceptionReport | null) | null = null;
  private reportsOff: (() => void) | null = null;
  /** Current leg's payload type → the bridge's, and back; null while they are the same. */
  private fromLeg: Map<number, number> | null = null;
  private toLeg: Map<number, number> | null = null;

  constructor(private leg: BrowserLeg) {
    this.view = {
      opusPayloadType: leg.opusPayloadType, pcmuPayloadType: leg.pcmuPayloadType,
      telephoneEventPayloadType: leg.telephoneEventPayloadType, telephoneEventClockRate: leg.telephoneEventClockRate,
      telephoneEvents: [...leg.telephoneEvents], sendCodec: leg.sendCodec,
    };
  }

  get current(): BrowserLeg { return this.leg; }
  get opusPayloadType(): number | null { return this.view.opusPayloadType; }
  get pcmuPayloadType(): number | null { return this.view.pcmuPayloadType; }
  get telephoneEventPayloadType(): number | null { return this.view.telephoneEventPayloadType; }
  get telephoneEventClockRate(): number | undefined { return this.view.telephoneEventClockRate; }
  get telephoneEvents(): ReadonlyArray<{ payloadType: number; clockRate: number }> { return this.view.telephoneEvents; }
  get sendCodec(): 'opus' | 'pcmu' | 'pcma' { return this.view.sendCodec; }

  onRtp(listener: (pkt: RtpPacketView) => void): () => void {
    this.rtpListeners.set(listener, this.subscribe(this.leg, listener));
    return () => {
      this.rtpListeners.get(listener)?.();
      this.rtpListeners.delete(listener);
    };
  }

  sendRtp(pkt: RtpPacketView): void {
    const pt = this.toLeg?.get(pkt.payloadType);
    // A copy, not the bridge's packet: it may keep using it.
    this.leg.sendRtp(pt === undefined ? pkt : { ...pkt, payloadType: pt });
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

  /** Why `next` cannot carry this bridge's audio, or null. */
  incompatibility(next: BrowserLeg): string | null {
    const v = this.view;
    if (next.sendCodec !== v.sendCodec) return `the browser would send ${next.sendCodec}, not ${v.sendCodec}`;
    // The bridge sends and takes the send codec (PCMA has its static number, 8).
    if (v.sendCodec === 'opus' && next.opusPayloadType === null) return 'no Opus';
    if (v.sendCodec === 'pcmu' && next.pcmuPayloadType === null) return 'no PCMU';
    if (v.telephoneEventClockRate !== undefined && !next.telephoneEvents.some((e) => e.clockRate === v.telephoneEventClockRate)) return `no telephone-event at ${v.telephoneEventClockRate} Hz`;
    return null;
  }

  /** `next` carries the audio from now on; returns the leg it replaced (its owner closes it). */
  switchTo(next: BrowserLeg): BrowserLeg {
    const old = this.leg;
    this.leg = next;
    this.mapPayloadTypes(next);
    for (const [listener, off] of this.rtpListeners) {
      off();
      this.rtpListeners.set(listener, this.subscribe(next, listener));
    }
    if (this.reportSource) {
      this.reportsOff?.();
      this.reportsOff = next.receptionReports(this.reportSource);
    }
    return old;
  }

  /** The leg's packets to `listener`, renumbered to the bridge's payload types where they differ. */
  private subscribe(leg: BrowserLeg, listener: (pkt: RtpPacketView) => void): () => void {
    return leg.onRtp((pkt) => {
      const pt = this.fromLeg?.get(pkt.payloadType);
      listener(pt === undefined ? pkt : { ...pkt, payloadType: pt });
    });
  }

  /** Pairs each codec's payload type on `leg` with the bridge's (telephone-events by clock rate). */
  private mapPayloadTypes(leg: BrowserLeg): void {
    const pairs: Array<[legPt: number, bridgePt: number]> = [];
    const v = this.view;
    if (v.opusPayloadType !== null && leg.opusPayloadType !== null) pairs.push([leg.opusPayloadType, v.opusPayloadType]);
    if (v.pcmuPayloadType !== null && leg.pcmuPayloadType !== null) pairs.push([leg.pcmuPayloadType, v.pcmuPayloadType]);
    for (const e of leg.telephoneEvents) {
      const ours = v.telephoneEvents.find((x) => x.clockRate === e.clockRate);
      if (ours) pairs.push([e.payloadType, ours.payloadType]);
    }
    const differ = pairs.filter(([a, b]) => a !== b);
    this.fromLeg = differ.length > 0 ? new Map(differ) : null;
    this.toLeg = differ.length > 0 ? new Map(differ.map(([a, b]) => [b, a])) : null;
  }
}
