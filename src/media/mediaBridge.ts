import { EventEmitter } from 'node:events';
import { randomInt } from 'node:crypto';
import type { Logger } from 'pino';
import { G711ToOpus, OpusToG711, opusFecStatus, opusPacketSamples, pcmaDecode, pcmaEncode, pcmaToPcmu, pcmuDecode, pcmuEncode, type G711Law } from './codecs';
import { DtmfToneDetector } from './dtmfDetector';
import type { RtpPacketView } from './rtp';
import { sipFrameSamplesFor, type SipRtpLeg } from './sipRtpLeg';
import { estimateMos, ReceiveStats, type LegStats } from './stats';
import { DigitSequence, DtmfReceiver, LiveTelephoneEvent, digitToEvent } from './dtmf';
import { ReorderBuffer } from './reorder';

/** The browser side as the media engine sees it: implemented by src/webrtc's BrowserLeg. */
export interface BrowserMediaPort {
  readonly opusPayloadType: number | null;
  readonly pcmuPayloadType: number | null;
  /** The telephone-event format we send digits to the browser in (beside its send codec, where offered). */
  readonly telephoneEventPayloadType: number | null;
  /** That format's RTP clock (48000 or 8000); the audio's when absent. */
  readonly telephoneEventClockRate?: number;
  /**
   * Every telephone-event format negotiated with the browser: it may send its digits in any of
   * them (Chrome 1xx sends telephone-event/8000 beside Opus), each on its own clock.
   */
  readonly telephoneEvents?: ReadonlyArray<{ payloadType: number; clockRate: number }>;
  readonly sendCodec: 'opus' | 'pcmu' | 'pcma';
  onRtp(listener: (pkt: RtpPacketView) => void): () => void;
  sendRtp(pkt: RtpPacketView): void;
  /**
   * Gives the leg the bridge's receive statistics of the browser's audio, for the RTCP
   * reception reports it sends (the browser's Opus encoder adds in-band FEC only when those
   * report loss). The leg calls `source` once per report it sends; returns the unsubscribe.
   * Optional: a leg whose RTP stack reports by itself has no use for it.
   */
  receptionReports?(source: () => ReceptionReport | null): () => void;
}

/**
 * One RTCP reception report block (RFC 3550 §6.4.1) about the browser's stream, without LSR and
 * DLSR: those come from the browser's sender reports, which reach the leg, not the bridge.
 */
export interface ReceptionReport {
  ssrc: number;
  /** Fraction lost since the previous report, 0-255 (/256). */
  fractionLost: number;
  /** Cumulative packets lost (negative with duplicates). */
  cumulativeLost: number;
  extendedHighestSeq: number;
  /** Interarrival jitter, timestamp units. */
  jitter: number;
  /** Packets expected so far (cumulative): with cumulativeLost, what a reporter elsewhere needs to work out its own fractionLost. */
  expected: number;
}

/**
 * The browser leg's statistics: those of any leg, plus how the bridge filled the gaps in the
 * browser's audio when transcoding (frames lost, malformed, or taken by DTMF events, whose
 * packets replace audio in the stream; packetsLost counts only the lost).
 */
export type BrowserLegStats = LegStats & {
  /** Frames concealed with PLC. */
  concealed: number;
  /** Frames rebuilt from the Opus in-band FEC of the packet that followed. */
  fecRecovered: number;
};

export interface BridgeEvents {
  dtmf: [ev: { digit: string; from: 'browser' | 'sip' }];
}

/**
 * passthrough: the same codec both sides (PCMU, or Opus). transcode: Opus from the browser,
 * G.711 to the trunk. lawConvert: PCMU from the browser (webrtc.preferPcmu), PCMA to the trunk,
 * sample by sample. transcodeOpusTrunk: PCMU from the browser, Opus to the trunk (an inbound
 * call whose trunk took Opus before a PCMU tab answered, or a trunk that offers only Opus).
 * unsupported: an Opus coder could not be made (memory): audio is dropped and counted, and an
 * error logged, rather than sent as noise.
 */
export type BridgeMode = 'transcode' | 'transcodeOpusTrunk' | 'passthrough' | 'lawConvert' | 'unsupported';

/** A DTX pause is filled once the browser's next packet is this late (its 20 ms plus jitter). */
const DTX_GRACE_MS = 40;
/** Frames we are willing to synthesise for a gap in the browser's stream. */
const MAX_CONCEAL = 5;
/**
 * A longer gap in the browser's numbering is lost audio too, but its time is left out toward
 * the trunk (numbers and timestamps skipped, nothing synthesised), so the trunk's timeline keeps
 * up with the clock after an outage. Up to 3 s of 20 ms frames the numbering is trusted; a
 * longer gap counts as an outage only when the browser's timestamps moved on as much (up to
 * 30 s), else it is a jump in the numbering and the timeline does not move.
 */
const MAX_GAP_FRAMES = 150;
const MAX_OUTAGE_FRAMES = 1500;
/** transcodeOpusTrunk: 20 ms of 8 kHz PCM per Opus frame toward the trunk. */
const OPUS_TRUNK_FRAME = 160;
/** A process without FEC decoding says so once, not once per call. */
let fecWarned = false;

/**
 * Moves audio between the browser leg and the SIP RTP leg: Opus <-> G.711 through libopus
 * (decoding straight to 8 kHz, encoding from 8 kHz), PCMU <-> PCMA sample by sample, or
 * passthrough when both sides use the same codec; it follows the trunk's codec when it
 * changes. Each direction has its own SSRC, sequence numbers and timestamps, so the streams
 * stay continuous across hold/resume and far-end SSRC changes.
 */
export class MediaBridge extends EventEmitter<BridgeEvents> {
  private mode: BridgeMode = 'passthrough';
  /** The browser sends PCMU (webrtc.preferPcmu), else Opus: fixed for the call. */
  private readonly browserPcmu: boolean;
  private toSip: OpusToG711 | null = null;
  private toBrowser: G711ToOpus | null = null;
  /**
   * transcodeOpusTrunk: the trunk's Opus decoded to 8 kHz (PLC and FEC for its losses) for the
   * browser's PCMU, and the browser's PCMU encoded to Opus for the trunk.
   */
  private trunkOpus: { decoder: OpusToG711; encoder: G711ToOpus } | null = null;
  /**
   * Counts of Opus coders freed by a codec change mid-call (stats() adds them); trunkOpusUsed:
   * the trunk sent Opus at some point, so the SIP leg's stats carry its concealment counts.
   */
  private readonly pastCoders = { malformed: 0, concealed: 0, fecRecovered: 0, trunkMalformed: 0, trunkConcealed: 0, trunkFecRecovered: 0, trunkOpusUsed: false };
  private readonly unsubscribe: () => void;
  private readonly unsubscribeReports: () => void;
  private readonly browserDtmf: DtmfReceiver;
  /** The browser's digit being pressed went to the trunk live (SipRtpLeg.beginLiveDtmf). */
  private browserDigitLive = false;
  // Digits toward the browser: RFC 4733 events on its stream (a trunk's digit relayed, or injected),
  // one after another; while one plays its audio is held back.
  private readonly toBrowserDigits = new DigitSequence((digit, durationMs) => this.playDigitToBrowser(digit, durationMs));
  private toBrowserDigit: LiveTelephoneEvent | null = null;
  /** The trunk's digit being pressed, gone to the browser live (this event; not whichever plays later). */
  private sipDigitEvent: LiveTelephoneEvent | null = null;
  // browser-bound stream state
  private readonly outSsrc = randomInt(1, 0xffffffff);
  private outSeq = randomInt(0, 0xffff);
  private outTs = randomInt(0, 0x7fffffff);
  private readonly browserPt: number;
  private readonly browserClock: number;
  // browser → SIP
  private lastBrowserSeq = -1;
  /** The browser's last audio packet: its timestamp and what it carried (to tell an outage from a jump). */
  private lastBrowserTs = 0;
  private lastBrowserSamples = 960;
  private browserSsrc: number | null = null;
  private sipFrame: Int16Array | null = null;
  private sipFrameFill = 0;
  private sipFrameSamples: number;
  /** lawConvert: G.711 bytes of the trunk's frame, and the browser's (reused). */
  private lawOut: Buffer | null = null;
  private readonly lawPcm = new Int16Array(960);
  // SIP → browser re-framing (trunk ptime may differ from our 20 ms)
  private readonly pcm20 = new Int16Array(160);
  private pcm20Fill = 0;
  private toneTimer: NodeJS.Timeout | null = null;
  /** Tones in a G.711 trunk's audio that has no telephone-event (watchInbandDtmf), and its PCM scratch. */
  private inbandDtmf: DtmfToneDetector | null = null;
  private inbandPcm = new Int16Array(160);
  /** The browser is in an Opus DTX pause (startDtxPause): its last DTX frame and our fill. */
  private dtx: { ts: number; samples: number; filled: number; timer: NodeJS.Timeout } | null = null;
  private toneEncoder: G711ToOpus | null = null;
  private readonly browserRx: ReceiveStats;
  private tonePhase = 0;
  private toneMs = 0;
  private holdLocal = false;
  /** When the browser put the call on hold (the time its timeline moves on by at resume). */
  private browserHeldAt: number | null = null;
  private markNextToBrowser = false;
  private holdRemote = false;
  /** Time spent transcoding (performance.now() differences: no BigInt per frame as with hrtime.bigint). */
  private transcodeMs = 0;
  /** Browser packets the bridge dropped (the SIP leg counts its own; sipDropped is the trunk's the bridge dropped). */
  private dropped = 0;
  /** Packets whose handling threw (a bug): counted as dropped on their side, the first logged. */
  private failedPackets = 0;
  private sipDropped = 0;
  private sent = { packets: 0, bytes: 0 };
  private received = { packets: 0, bytes: 0 };
  private closed = false;
  /** Trunk packets put back in order (no delay when they already are) before they reach the browser. */
  private readonly sipReorder = new ReorderBuffer((pkt, lostBefore) => this.fromSip(pkt, lostBefore));

  constructor(private readonly browser: BrowserMediaPort, private readonly sip: SipRtpLeg, private readonly opts: { callId: string; logger: Logger; opusComplexity?: number }) {
    super();
    const remote = sip.remote;
    this.browserPcmu = browser.sendCodec === 'pcmu';
    this.browserPt = this.browserPcmu ? browser.pcmuPayloadType ?? 0 : browser.opusPayloadType ?? 111;
    this.browserClock = this.browserPcmu ? 8000 : 48000;
    this.browserRx = new ReceiveStats(this.browserClock);
    this.sipFrameSamples = sipFrameSamplesFor(remote?.ptime);
    // Until the trunk's SDP is known (a bridge started on a 180 without SDP, for our ringback)
    // PCMU is assumed; its answer then sets the real mode (followSipRemote).
    this.mode = this.setUpForOrDrop(remote?.codec ?? 'PCMU');
    this.watchInbandDtmf();
    // A browser's digit goes to the trunk as it is pressed (events updated while it lasts, or
    // its tones) or, when that cannot start (digits of sendDtmf playing, an Opus trunk without
    // events), in full once its length is known.
    this.browserDtmf = new DtmfReceiver((digit) => {
      this.emit('dtmf', { digit, from: 'browser' });
      this.browserDigitLive = this.sip.beginLiveDtmf(digit);
    }, 8000, (digit, durationMs) => {
      if (this.closed) return;
      if (this.browserDigitLive) this.sip.endLiveDtmf(durationMs);
      else {
        // Its events took no place on the trunk's timeline while the key was down (fromBrowser
        // closes their gap): that time passes now, then the digit plays.
        if (this.sip.canSendDtmf && this.sip.sendingAllowed) this.sip.advanceTimeline(durationMs);
        this.sendDtmfToSip(digit, durationMs);
      }
      this.browserDigitLive = false;
    });
    // A packet this bridge fails on (a bug) is dropped and counted, not thrown into the socket
    // handler that delivered it: there it is an uncaught exception, and the gateway exits with
    // every call on it.
    this.unsubscribe = browser.onRtp((pkt) => { try { this.fromBrowser(pkt); } catch (err) { this.packetFailed(err, 'browser'); } });
    this.unsubscribeReports = browser.receptionReports?.(() => this.receptionReport()) ?? (() => {});
    sip.on('audio', (pkt) => { try { this.sipReorder.push(pkt); } catch (err) { this.packetFailed(err, 'sip'); } });
    // Comfort noise and DTMF events take sequence numbers too: without them the audio after
    // each would wait in the reorder stage for a "missing" packet.
    sip.on('nonAudio', (pkt) => { try { this.sipReorder.push(pkt, false); } catch (err) { this.packetFailed(err, 'sip'); } });
    // The trunk's digits go to the browser the same way, as events on its stream (Chrome plays
    // them as tones), besides the 'dtmf' event for the signaling.
    sip.on('dtmf', (ev) => {
      this.emit('dtmf', { digit: ev.digit, from: 'sip' });
      this.sipDigitEvent = this.beginDigitToBrowser(ev.digit) ? this.toBrowserDigit : null;
    });
    sip.on('dtmfEnd', (ev) => {
      if (this.sipDigitEvent) this.sipDigitEvent.end(ev.durationMs);
      else this.sendDtmfToBrowser(ev.digit, ev.durationMs);
      this.sipDigitEvent = null;
    });
    sip.on('remote', () => this.followSipRemote());
    opts.logger.debug({ mode: this.mode, sipCodec: remote?.codec, browserCodec: browser.sendCodec }, 'media bridge up');
  }

  /**
   * The trunk's SDP changed (its answer after a bridge started early, or a re-INVITE): packets
   * toward it take its ptime, and the bridge takes the mode its codec needs — coders made or
   * freed, the G.711 law switched.
   */
  private followSipRemote(): void {
    const remote = this.sip.remote;
    if (this.closed || !remote) return;
    this.watchInbandDtmf();
    const frame = sipFrameSamplesFor(remote.ptime);
    if (frame !== this.sipFrameSamples) {
      this.sipFrameSamples = frame;
      this.sipFrame = null; // a part-filled frame of the old size is dropped (at most one ptime)
      this.sipFrameFill = 0;
    }
    const before = this.mode;
    const law = this.toSip?.law;
    // The ringback (on a 180 without SDP) encodes with the coder the new mode may free: it
    // starts again on the new set-up.
    const ringing = this.toneTimer !== null;
    if (ringing) this.setBrowserTone('none');
    this.mode = this.setUpForOrDrop(remote.codec);
    if (ringing) this.setBrowserTone('ringback');
    if (this.mode !== before || this.toSip?.law !== law) this.opts.logger.info({ sipCodec: remote.codec, mode: this.mode, was: before }, 'media bridge follows the trunk\'s codec');
  }

  /**
   * setUpFor, or — when a coder cannot be made (memory) — no audio rather than an exception out
   * of the bridge's creation or the leg's setRemote into the call's SIP handling.
   */
  private setUpForOrDrop(sipCodec: 'PCMU' | 'PCMA' | 'opus'): BridgeMode {
    try {
      return this.setUpFor(sipCodec);
    } catch (err) {
      this.freeCoders();
      this.opts.logger.error({ err, sipCodec }, 'media bridge cannot set up for the trunk\'s codec: audio dropped');
      return 'unsupported';
    }
  }

  /**
   * Sets up what `sipCodec` needs with this browser: Opus coders in the trunk's G.711 law for
   * transcoding (made once, law switched in place: their state carries on), none otherwise.
   */
  private setUpFor(sipCodec: 'PCMU' | 'PCMA' | 'opus'): BridgeMode {
    const mode = modeFor(this.browserPcmu, sipCodec);
    if (mode !== 'transcodeOpusTrunk' && this.trunkOpus) {
      this.freeCoders();
      this.sipFrameFill = 0;
      this.pcm20Fill = 0;
    }
    if (mode === 'transcodeOpusTrunk' && !this.trunkOpus) {
      const decoder = new OpusToG711('pcmu');
      let encoder: G711ToOpus;
      try {
        encoder = new G711ToOpus('pcmu', { complexity: this.opts.opusComplexity });
      } catch (err) {
        decoder.close();
        throw err;
      }
      this.trunkOpus = { decoder, encoder };
      // Part-filled frames of the mode before are dropped (at most 20 ms each way).
      this.sipFrameFill = 0;
      this.pcm20Fill = 0;
    }
    if (mode === 'transcode') {
      const law: G711Law = sipCodec === 'PCMA' ? 'pcma' : 'pcmu';
      if (!this.toSip || !this.toBrowser) {
        this.toSip = new OpusToG711(law);
        this.toBrowser = new G711ToOpus(law, { complexity: this.opts.opusComplexity });
        const fec = opusFecStatus();
        if (!fec.available && !fecWarned) {
          fecWarned = true;
          this.opts.logger.warn({ reason: fec.reason }, 'Opus in-band FEC decoding unavailable: lost browser audio is concealed (PLC) only');
        }
      }
      this.toSip.law = law;
      this.toBrowser.law = law;
      this.silenceFrame = null;
    } else if (this.toSip || this.toBrowser) {
      this.freeCoders();
      this.pcm20Fill = 0;
    }
    return mode;
  }

  /** Closes the Opus coders, keeping their counts for stats(). */
  private freeCoders(): void {
    if (this.toSip) {
      this.pastCoders.malformed += this.toSip.malformed;
      this.pastCoders.concealed += this.toSip.concealed;
      this.pastCoders.fecRecovered += this.toSip.fecRecovered;
    }
    if (this.trunkOpus) {
      this.pastCoders.trunkMalformed += this.trunkOpus.decoder.malformed;
      this.pastCoders.trunkConcealed += this.trunkOpus.decoder.concealed;
      this.pastCoders.trunkFecRecovered += this.trunkOpus.decoder.fecRecovered;
      this.pastCoders.trunkOpusUsed = true;
    }
    this.toSip?.close();
    this.toBrowser?.close();
    this.trunkOpus?.decoder.close();
    this.trunkOpus?.encoder.close();
    this.toSip = null;
    this.toBrowser = null;
    this.trunkOpus = null;
  }

  get isTranscoding(): boolean {
    return this.mode === 'transcode' || this.mode === 'transcodeOpusTrunk';
  }

  private packetFailed(err: unknown, from: 'browser' | 'sip'): void {
    if (from === 'browser') this.dropped++;
    else this.sipDropped++;
    if (this.failedPackets++ === 0) this.opts.logger.error({ err }, 'a packet could not be handled: dropped (later ones are only counted)');
  }

  // ------------------------------------------------------------ browser → SIP

  private fromBrowser(pkt: RtpPacketView): void {
    if (this.closed) return;
    this.received.packets++;
    this.received.bytes += pkt.payload.length;
    if (pkt.ssrc !== this.browserSsrc) { // a new source numbers (and times) its packets afresh
      if (this.browserSsrc !== null) this.browserRx.resetSource();
      this.stopDtxFill();
      this.browserSsrc = pkt.ssrc;
      this.lastBrowserSeq = -1;
    }
    // Reception statistics cover every packet of the source, DTMF events included (they take
    // sequence numbers in the same stream): reported as lost, they would make the browser's
    // encoder spend bits on FEC after every key press. Their timing is not jitter (ReceiveStats).
    const eventClock = pkt.payloadType === this.browserPt ? 0 : this.browserEventClock(pkt.payloadType);
    const isEvent = eventClock > 0;
    this.browserRx.onPacket(pkt.sequenceNumber, pkt.timestamp, pkt.payload.length, performance.now(), !isEvent);
    if (isEvent) {
      this.browserDtmf.clockRate = eventClock;
      if (!this.browserDtmf.onPacket(pkt.timestamp, pkt.payload)) this.dropped++;
      // A digit's sequence numbers are no lost audio: the digit goes to the trunk as our own
      // events, or as tones in the audio, which take their stretch of the timeline. Left as a
      // gap, they would be concealed (or skipped) on top of it. When nothing goes to the trunk
      // (an event that is no digit, or no way to send one), the gap is left and filled.
      const relayed = pkt.payload.length >= 4 && pkt.payload[0] < 16 && this.sip.canSendDtmf && this.sip.sendingAllowed;
      if (relayed && (this.lastBrowserSeq < 0 || ((pkt.sequenceNumber - this.lastBrowserSeq) & 0xffff) < 0x8000)) this.lastBrowserSeq = pkt.sequenceNumber;
      return;
    }
    if (this.holdLocal || this.holdRemote) {
      // Held: nothing goes on, but a payload type the SDP did not give is a drop as at any time.
      if (pkt.payloadType !== this.browserPt && pkt.payloadType !== this.browser.opusPayloadType) { this.dropped++; return; }
      this.lastBrowserSeq = pkt.sequenceNumber;
      this.noteBrowserAudio(pkt);
      return;
    }
    if (this.mode === 'unsupported') { this.dropped++; return; }
    if (this.mode === 'passthrough' || this.mode === 'lawConvert' || this.mode === 'transcodeOpusTrunk') {
      if (pkt.payloadType !== this.browserPt) { this.dropped++; return; }
      // Duplicates and late packets are dropped; a gap (packets lost on the way) is left in our
      // numbering toward the trunk too, so its jitter buffer conceals it (PLC, Opus FEC).
      let lost = 0;
      if (this.lastBrowserSeq >= 0) {
        const d = (pkt.sequenceNumber - this.lastBrowserSeq) & 0xffff;
        if (d === 0 || d > 0x8000) { this.dropped++; return; }
        lost = this.lostBefore(d, pkt.timestamp);
      }
      this.lastBrowserSeq = pkt.sequenceNumber;
      this.noteBrowserAudio(pkt);
      if (this.mode === 'transcodeOpusTrunk') {
        this.pcmuToOpusTrunk(pkt.payload, lost);
        return;
      }
      // Opus packets step the timestamp by what they carry (10-60 ms; 20 ms when unreadable).
      const samples = this.lastBrowserSamples; // what noteBrowserAudio read from this packet
      if (lost > 0) this.sip.skipFrames(lost, samples);
      // Toward a G.711 trunk packets take its a=ptime: PCMU passes through as it is when the
      // sizes agree, else it is re-framed like lawConvert's (mu-law to PCM and back is exact).
      // An Opus trunk takes the browser's packets whatever their size.
      const reframe = this.mode === 'lawConvert' || (this.browserClock === 8000 && (pkt.payload.length !== this.sipFrameSamples || this.sipFrameFill > 0));
      if (!reframe) this.sip.sendAudio(pkt.payload, samples, pkt.marker);
      else this.pushToSip(pcmuDecode(pkt.payload, this.lawScratch(pkt.payload.length)));
      return;
    }
    if (pkt.payloadType !== this.browser.opusPayloadType) { this.dropped++; return; }
    // Sequence gap = browser packets lost on the way. The packet that ends it may carry the
    // last lost frame again (Opus in-band FEC, RFC 6716 §2.1.7): that frame is rebuilt from it,
    // any before it concealed with PLC, then the packet itself decoded. No delay is added:
    // the FEC data arrives with the packet we decode anyway.
    let gap = 0;
    if (this.lastBrowserSeq >= 0) {
      const d = (pkt.sequenceNumber - this.lastBrowserSeq) & 0xffff;
      if (d === 0 || d > 0x8000) { this.dropped++; return; } // duplicate or late
      gap = this.lostBefore(d, pkt.timestamp);
    }
    this.lastBrowserSeq = pkt.sequenceNumber;
    this.noteBrowserAudio(pkt);
    const t0 = performance.now();
    if (this.dtx) this.endDtxPause(pkt.timestamp, gap);
    // The start of a long outage is skipped on the trunk's timeline; its last frames are
    // concealed (the very last from the packet's FEC, when it carries some).
    const concealed = Math.min(gap, MAX_CONCEAL);
    if (gap > concealed) this.sip.skipFrames(Math.round(((gap - concealed) * 160) / this.sipFrameSamples), this.sipFrameSamples);
    for (let i = 1; i < concealed; i++) this.pushToSip(this.toSip!.decode(null));
    if (concealed > 0) this.pushToSip(this.toSip!.recover(pkt.payload));
    this.pushToSip(this.toSip!.decode(pkt.payload));
    this.transcodeMs += performance.now() - t0;
    // A DTX frame (RFC 6716 §2.1.9: one or two bytes): the browser may now send nothing for up
    // to 400 ms. The trunk's G.711 stream goes on meanwhile with the decoder's comfort noise.
    if (pkt.payload.length <= 2) this.startDtxPause(pkt.timestamp, opusPacketSamples(pkt.payload) || 960);
  }

  /**
   * Opus DTX from the browser, toward a G.711 trunk: after a DTX frame, one frame of comfort
   * noise (libopus's concealment continues the DTX frame's noise) every 20 ms once the next
   * packet is overdue, so the trunk's stream has no hole; a G.711 trunk expects a packet every
   * ptime, and some take a silent stretch for a dead call. When the browser's next packet
   * comes, its timestamp says how long the pause really was: frames still missing are added
   * then, so the trunk's timeline matches the browser's. (A packet more than the grace late
   * finds the fill ahead of it: the trunk's stream then runs that much ahead for good, which
   * its jitter buffer absorbs; nothing is dropped to catch up.) Our answer does not ask
   * browsers for DTX (no usedtx=1): this is for those that use it anyway.
   */
  private startDtxPause(ts: number, samples: number): void {
    if (this.dtx) return;
    const since = performance.now();
    this.dtx = { ts, samples, filled: 0, timer: setInterval(() => {
      const d = this.dtx;
      if (!d || this.closed || !this.toSip) { this.stopDtxFill(); return; } // the mode changed: no decoder
      const overdue = performance.now() - since - DTX_GRACE_MS;
      // Stops after 2 s: a browser in DTX sends a frame every 400 ms at least.
      if (overdue > 2000) { this.stopDtxFill(); return; }
      const t0 = performance.now();
      // Each concealed frame is as long as the DTX frame (libopus conceals in its frame size).
      for (const frameMs = d.samples / 48; overdue >= d.filled * frameMs; d.filled++) this.pushToSip(this.toSip.comfortNoise()); // a late tick catches up
      this.transcodeMs += performance.now() - t0;
    }, 20) };
  }

  /** The packet after a DTX pause: frames of the pause not yet sent go now (its timestamp says how many). */
  private endDtxPause(ts: number, lostBefore: number): void {
    const d = this.dtx!;
    this.stopDtxFill();
    const pauseFrames = Math.round(((ts - d.ts) >>> 0) / d.samples) - 1 - lostBefore;
    for (let i = d.filled; i < Math.min(pauseFrames, 100); i++) this.pushToSip(this.toSip!.comfortNoise());
  }

  private stopDtxFill(): void {
    if (this.dtx) clearInterval(this.dtx.timer);
    this.dtx = null;
  }

  private noteBrowserAudio(pkt: RtpPacketView): void {
    this.lastBrowserTs = pkt.timestamp;
    this.lastBrowserSamples = (this.browserClock === 8000 ? pkt.payload.length : opusPacketSamples(pkt.payload)) || (this.browserClock === 8000 ? 160 : 960);
  }

  /** Frames lost before a browser packet `d` numbers after the last one (see MAX_GAP_FRAMES). */
  private lostBefore(d: number, ts: number): number {
    if (d - 1 <= MAX_GAP_FRAMES) return d - 1;
    const frames = Math.round(((ts - this.lastBrowserTs) >>> 0) / this.lastBrowserSamples);
    return Math.abs(frames - d) <= 2 && d - 1 <= MAX_OUTAGE_FRAMES ? d - 1 : 0;
  }

  /**
   * A G.711 trunk without telephone-event sends its digits as tones in the audio: they reach
   * the browser as they are, and are detected there for the 'dtmf' event (the signaling's
   * message). Not for trunks with events (their digits come as events; no cost for them).
   */
  private watchInbandDtmf(): void {
    const r = this.sip.remote;
    const wanted = r !== null && r.codec !== 'opus' && r.telephoneEventPayloadType === undefined;
    if (!wanted) this.inbandDtmf = null;
    else this.inbandDtmf ??= new DtmfToneDetector((digit) => { if (!this.closed) this.emit('dtmf', { digit, from: 'sip' }); });
  }

  /** The clock of the browser's telephone-event format with this PT; 0 when it is not one. */
  private browserEventClock(pt: number): number {
    const b = this.browser;
    if (pt === b.telephoneEventPayloadType) return b.telephoneEventClockRate ?? this.browserClock;
    for (const e of b.telephoneEvents ?? []) if (e.payloadType === pt) return e.clockRate;
    return 0;
  }

  /**
   * transcodeOpusTrunk, toward the trunk: the browser's PCMU as 20 ms Opus frames (the trunk's
   * a=ptime is not followed for Opus: every Opus receiver takes any frame size). Lost browser
   * packets leave their gap in the numbering when they were whole 20 ms frames (the trunk's
   * decoder conceals them with its own PLC), and are filled with silence otherwise, so the
   * timeline stays exact.
   */
  private pcmuToOpusTrunk(payload: Buffer, lost: number): void {
    const t0 = performance.now();
    if (lost > 0) {
      if (this.sipFrameFill === 0 && payload.length === OPUS_TRUNK_FRAME) this.sip.skipFrames(lost, 960);
      else {
        const filled = Math.min(lost, MAX_CONCEAL);
        if (lost > filled) this.sip.skipFrames(Math.round(((lost - filled) * payload.length) / OPUS_TRUNK_FRAME), 960);
        for (let i = 0; i < filled; i++) this.pushToSip(this.silentPcm(payload.length));
      }
    }
    this.pushToSip(pcmuDecode(payload, this.lawScratch(payload.length)));
    this.transcodeMs += performance.now() - t0;
  }

  private silentPcmFrame = new Int16Array(0);
  private silentPcm(samples: number): Int16Array {
    if (this.silentPcmFrame.length < samples) this.silentPcmFrame = new Int16Array(samples);
    return this.silentPcmFrame.subarray(0, samples);
  }

  /** Accumulates 8 kHz PCM into frames of the trunk's ptime (20 ms for Opus) and sends them. */
  private pushToSip(pcm: Int16Array): void {
    if (pcm.length === 0) return;
    const frameSamples = this.trunkOpus ? OPUS_TRUNK_FRAME : this.sipFrameSamples;
    if (frameSamples === pcm.length && this.sipFrameFill === 0) {
      this.sendFrameToSip(pcm);
      return;
    }
    if (this.sipFrame?.length !== frameSamples) this.sipFrame = new Int16Array(frameSamples);
    let off = 0;
    while (off < pcm.length) {
      const n = Math.min(pcm.length - off, frameSamples - this.sipFrameFill);
      this.sipFrame.set(pcm.subarray(off, off + n), this.sipFrameFill);
      this.sipFrameFill += n;
      off += n;
      if (this.sipFrameFill === frameSamples) {
        this.sendFrameToSip(this.sipFrame);
        this.sipFrameFill = 0;
      }
    }
  }

  private sendFrameToSip(pcm: Int16Array): void {
    if (this.trunkOpus) this.sip.sendAudio(this.trunkOpus.encoder.encode(pcm), 960);
    else this.sip.sendAudio(this.encodeForSip(pcm), pcm.length);
  }

  /** One frame of PCM in the trunk's G.711 law (a reused buffer: the leg copies it into its packet). */
  private encodeForSip(pcm: Int16Array): Buffer {
    if (this.toSip) return this.toSip.encodeG711(pcm);
    if (!this.lawOut || this.lawOut.length !== pcm.length) this.lawOut = Buffer.alloc(pcm.length);
    return this.sip.remote?.codec === 'PCMA' ? pcmaEncode(pcm, this.lawOut) : pcmuEncode(pcm, this.lawOut);
  }

  /** lawConvert: PCM scratch for one G.711 frame (frames past 120 ms are cut there). */
  private lawScratch(samples: number): Int16Array {
    return this.lawPcm.subarray(0, Math.min(samples, this.lawPcm.length));
  }

  // ------------------------------------------------------------ SIP → browser

  private fromSip(pkt: RtpPacketView, lostBefore = 0): void {
    if (this.closed) return;
    // Held in the reorder stage across a codec change: the old codec's bytes are not the new one's.
    const pt = this.sip.remote?.payloadType;
    if (pt !== undefined && pkt.payloadType !== pt) { this.sipDropped++; return; }
    if (this.inbandDtmf) {
      // Sized to the trunk's packets once (a view per packet otherwise).
      if (this.inbandPcm.length !== pkt.payload.length) this.inbandPcm = new Int16Array(pkt.payload.length);
      const pcm = this.inbandPcm;
      this.inbandDtmf.push(this.sip.remote?.codec === 'PCMA' ? pcmaDecode(pkt.payload, pcm) : pcmuDecode(pkt.payload, pcm));
    }
    if (this.toneTimer) this.setBrowserTone('none'); // real early media replaces our ringback
    if (this.holdLocal) return;
    const lost = Math.min(lostBefore, 10);
    if (this.mode === 'unsupported') { this.sipDropped++; return; }
    if (this.mode === 'passthrough' || this.mode === 'lawConvert') {
      const step = this.browserClock === 8000 ? pkt.payload.length : opusPacketSamples(pkt.payload) || 960;
      // Leave the gap in our numbering too, so the browser's jitter buffer conceals it (not
      // inside a digit's events, whose stretch of the timeline they own).
      if (!this.toBrowserDigits.playing) {
        this.outSeq = (this.outSeq + lost) & 0xffff;
        this.outTs = (this.outTs + lost * step) >>> 0;
      }
      if (this.mode === 'passthrough') this.sendToBrowser(pkt.payload, step, pkt.marker);
      else {
        // The trunk's PCMA as the browser's PCMU (a fresh buffer: the browser leg may keep it).
        this.sendToBrowser(pcmaToPcmu(pkt.payload), pkt.payload.length, pkt.marker);
      }
      return;
    }
    if (this.mode === 'transcodeOpusTrunk') {
      this.opusTrunkToBrowser(pkt.payload, lost);
      return;
    }
    // Transcoding: fill lost trunk packets with silence so the timeline stays exact.
    for (let i = 0; i < lost; i++) this.transcodeToBrowser(this.silence(pkt.payload.length));
    this.transcodeToBrowser(pkt.payload);
  }

  /**
   * transcodeOpusTrunk, toward the browser: the trunk's Opus decoded to 8 kHz (whatever its
   * frame size), lost packets concealed — the last one from this packet's in-band FEC when it
   * carries some — and sent as 20 ms PCMU.
   */
  private opusTrunkToBrowser(payload: Buffer, lost: number): void {
    const t0 = performance.now();
    const decoder = this.trunkOpus!.decoder;
    for (let i = 1; i < lost; i++) this.pcmToBrowser(decoder.decode(null));
    if (lost > 0) this.pcmToBrowser(decoder.recover(payload));
    this.pcmToBrowser(decoder.decode(payload));
    this.transcodeMs += performance.now() - t0;
  }

  private silenceFrame: Buffer | null = null;
  private silence(bytes: number): Buffer {
    if (!this.silenceFrame || this.silenceFrame.length !== bytes) this.silenceFrame = Buffer.alloc(bytes, this.toBrowser!.law === 'pcma' ? 0xd5 : 0xff);
    return this.silenceFrame;
  }

  private transcodeToBrowser(g711: Buffer): void {
    const t0 = performance.now();
    this.pcmToBrowser(this.toBrowser!.decodeG711(g711));
    this.transcodeMs += performance.now() - t0;
  }

  /**
   * 8 kHz PCM re-framed to 20 ms for the browser, which gets 20 ms frames whatever the trunk's
   * packets carry: Opus (transcode), or PCMU in a fresh buffer the browser leg may keep
   * (transcodeOpusTrunk).
   */
  private pcmToBrowser(pcm: Int16Array): void {
    let off = 0;
    while (off < pcm.length) {
      const n = Math.min(pcm.length - off, 160 - this.pcm20Fill);
      this.pcm20.set(pcm.subarray(off, off + n), this.pcm20Fill);
      this.pcm20Fill += n;
      off += n;
      if (this.pcm20Fill === 160) {
        this.pcm20Fill = 0;
        if (this.toBrowser) this.sendToBrowser(this.toBrowser.encode(this.pcm20), 960, false);
        else this.sendToBrowser(pcmuEncode(this.pcm20, Buffer.allocUnsafe(160)), 160, false);
      }
    }
  }

  private sendToBrowser(payload: Buffer, tsStep: number, marker: boolean): void {
    // A digit's events replace the audio while they play (RFC 4733 §2.5.1.2), and their
    // stretch of the timeline is set when the digit ends: the frame takes no number, no time.
    if (this.toBrowserDigits.playing) return;
    this.browser.sendRtp({ payloadType: this.browserPt, sequenceNumber: this.outSeq, timestamp: this.outTs, marker: marker || this.markNextToBrowser, ssrc: this.outSsrc, payload });
    this.markNextToBrowser = false;
    this.outSeq = (this.outSeq + 1) & 0xffff;
    this.outTs = (this.outTs + tsStep) >>> 0;
    this.sent.packets++;
    this.sent.bytes += payload.length;
  }

  /**
   * Local ringback toward the browser while the far end rings without early media
   * (440 + 480 Hz, 2 s on / 4 s off, the North American cadence).
   */
  setBrowserTone(kind: 'ringback' | 'none'): void {
    if (kind === 'none') {
      if (this.toneTimer) clearInterval(this.toneTimer);
      this.toneTimer = null;
      return;
    }
    if (this.toneTimer || this.closed) return;
    this.toneMs = 0;
    // Passthrough Opus has no encoder of its own: the ringback gets one for as long as it plays
    // (none when it cannot be made: no ringback, rather than an exception into SIP handling).
    if (!this.toBrowser && this.browserClock === 48000 && !this.toneEncoder) {
      try {
        this.toneEncoder = new G711ToOpus('pcmu', { complexity: this.opts.opusComplexity });
      } catch (err) {
        this.opts.logger.error({ err }, 'no Opus encoder for the ringback: the browser hears silence');
        return;
      }
    }
    const encoder = this.toBrowser ?? this.toneEncoder;
    const frame = new Int16Array(160);
    this.toneTimer = setInterval(() => {
      const on = this.toneMs % 6000 < 2000;
      for (let i = 0; i < 160; i++) {
        const t = this.tonePhase + i / 8000;
        frame[i] = on ? Math.round(3000 * (Math.sin(2 * Math.PI * 440 * t) + Math.sin(2 * Math.PI * 480 * t))) : 0;
      }
      this.tonePhase += 160 / 8000;
      this.toneMs += 20;
      if (encoder) this.sendToBrowser(encoder.encode(frame), 960, false);
      else this.sendToBrowser(pcmuEncode(frame), 160, false);
    }, 20);
  }

  setHold(holdByBrowser: boolean, holdBySip: boolean): void {
    // Nothing goes to a browser that holds the call; on resume its timeline moves on by the
    // time held and the first packet has the marker, as toward the trunk (SipRtpLeg.paused).
    if (holdByBrowser || holdBySip) this.stopDtxFill(); // no audio toward the trunk while held: no pause to fill
    if (holdByBrowser && !this.holdLocal) this.browserHeldAt = performance.now();
    else if (!holdByBrowser && this.holdLocal && this.browserHeldAt !== null) {
      this.outTs = (this.outTs + Math.round(((performance.now() - this.browserHeldAt) * this.browserClock) / 1000)) >>> 0;
      this.browserHeldAt = null;
      this.markNextToBrowser = true;
    }
    this.holdLocal = holdByBrowser;
    this.holdRemote = holdBySip;
    this.sip.paused = holdByBrowser || holdBySip;
  }

  /**
   * A digit toward the browser: RFC 4733 events on its stream, in its telephone-event format
   * (Chrome plays them as the digit's tones), for `durationMs`; one asked for while another
   * plays waits for it. False when the browser did not negotiate telephone-event, holds the call
   * (digits still waiting when it puts the call on hold are dropped when their turn comes; one
   * already playing plays out), or the queue is full. Throws for a character that is not a digit.
   */
  sendDtmfToBrowser(digit: string, durationMs = 100): boolean {
    digitToEvent(digit);
    if (this.closed || this.browser.telephoneEventPayloadType === null || this.holdLocal) return false;
    return this.toBrowserDigits.push(digit, durationMs);
  }

  /** A digit of known length toward the browser, now (DigitSequence's start). */
  private playDigitToBrowser(digit: string, durationMs: number): boolean {
    if (!this.startDigitToBrowser(digit)) return false;
    const digitEvent = this.toBrowserDigit!; // this one: it may end by itself (its 16-bit limit) before the timer
    this.toBrowserDigits.later(durationMs, () => digitEvent.end(durationMs));
    return true;
  }

  /** The trunk's digit toward the browser as it is pressed; false when another digit is playing or waiting. */
  private beginDigitToBrowser(digit: string): boolean {
    return this.toBrowserDigits.idle && this.startDigitToBrowser(digit);
  }

  /** Starts a digit's events toward the browser, ended by toBrowserDigit.end() (not while the browser holds the call). */
  private startDigitToBrowser(digit: string): boolean {
    const pt = this.browser.telephoneEventPayloadType;
    if (this.closed || pt === null || this.holdLocal) return false;
    const clock = this.browser.telephoneEventClockRate ?? this.browserClock;
    const digits = this.toBrowserDigits;
    this.toBrowserDigit = new LiveTelephoneEvent(digit, clock, {
      nextTimestamp: () => this.outTs,
      sendEvent: (payload, marker, eventTs) => {
        if (this.closed) return;
        this.browser.sendRtp({ payloadType: pt, sequenceNumber: this.outSeq, timestamp: eventTs, marker, ssrc: this.outSsrc, payload });
        this.outSeq = (this.outSeq + 1) & 0xffff;
        this.sent.packets++;
        this.sent.bytes += payload.length;
      },
      eventEnded: (eventTs, ms) => {
        // Audio was held back without taking time: the timeline goes on where the event ends,
        // plus the 40 ms its end packets still take (audio waits for them).
        this.outTs = (eventTs + (Math.ceil(ms / 20) * 20 + 40) * (this.browserClock / 1000)) >>> 0;
      },
    }, () => { this.toBrowserDigit = null; digits.busyUntil = 0; digits.next(); });
    digits.busyUntil = Infinity; // audio held back until its last end packet has left (done above)
    return true;
  }

  sendDtmfToSip(digit: string, durationMs = 100): void {
    if (!this.sip.sendDtmf(digit, durationMs)) this.opts.logger.info({ digit }, 'DTMF not sent: no telephone-event toward the SIP side, and its Opus cannot carry tones');
  }

  /** The report block about the browser's audio, when the leg sends one (it resets the fraction-lost interval). */
  private receptionReport(): ReceptionReport | null {
    if (this.closed || this.browserSsrc === null) return null;
    const rx = this.browserRx;
    return { ssrc: this.browserSsrc, fractionLost: rx.fractionLostSinceLast(), cumulativeLost: rx.lost, extendedHighestSeq: rx.extendedHighestSeq, jitter: Math.round(rx.jitterTs), expected: rx.expected };
  }

  stats(): { browser: BrowserLegStats; sip: LegStats; transcodeCpuMs: number; mode: BridgeMode } {
    const r = this.sipReorder;
    const sip = this.sip.stats();
    const p = this.pastCoders;
    // An Opus trunk's losses are concealed (PLC, or its in-band FEC) like the browser's.
    const trunkOpus = this.trunkOpus || p.trunkOpusUsed
      ? { concealed: p.trunkConcealed + (this.trunkOpus?.decoder.concealed ?? 0), fecRecovered: p.trunkFecRecovered + (this.trunkOpus?.decoder.fecRecovered ?? 0) }
      : {};
    return {
      browser: {
        packetsSent: this.sent.packets, bytesSent: this.sent.bytes, packetsReceived: this.received.packets, bytesReceived: this.received.bytes,
        packetsLost: this.browserRx.missing, jitterMs: Math.round(this.browserRx.jitterMs * 10) / 10, rttMs: null,
        mos: estimateMos({ lossPercent: this.browserRx.expected ? (this.browserRx.missing / this.browserRx.expected) * 100 : 0, oneWayDelayMs: 40, jitterMs: this.browserRx.jitterMs, ie: 0, bpl: 20 }),
        dropped: this.dropped + this.pastCoders.malformed + (this.toSip?.malformed ?? 0),
        duplicates: this.browserRx.duplicates, late: this.browserRx.late,
        concealed: this.pastCoders.concealed + (this.toSip?.concealed ?? 0),
        fecRecovered: this.pastCoders.fecRecovered + (this.toSip?.fecRecovered ?? 0),
      },
      // The reorder stage sits between the trunk socket and the browser, so its counters go with the SIP leg's.
      sip: { ...sip, dropped: sip.dropped + this.sipDropped + p.trunkMalformed + (this.trunkOpus?.decoder.malformed ?? 0), ...trunkOpus, reorder: { reordered: r.reordered, duplicateOrLate: r.dropped, givenUp: r.lost } },
      transcodeCpuMs: Math.round(this.transcodeMs * 1000) / 1000,
      mode: this.mode,
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.setBrowserTone('none');
    this.stopDtxFill();
    this.browserDtmf.close();
    this.toBrowserDigit?.cancel();
    this.toBrowserDigits.close();
    this.sipReorder.close();
    this.unsubscribe();
    this.unsubscribeReports();
    this.freeCoders();
    this.toneEncoder?.close();
    this.toneEncoder = null;
    this.removeAllListeners();
  }
}

/** How the bridge carries audio between a browser that sends PCMU (else Opus) and the trunk's codec. */
export function modeFor(browserPcmu: boolean, sipCodec: 'PCMU' | 'PCMA' | 'opus'): BridgeMode {
  if (browserPcmu) return sipCodec === 'PCMU' ? 'passthrough' : sipCodec === 'PCMA' ? 'lawConvert' : 'transcodeOpusTrunk';
  return sipCodec === 'opus' ? 'passthrough' : 'transcode';
}
