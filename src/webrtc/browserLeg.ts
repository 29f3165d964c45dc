import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { IcePortPool } from './icePortPool';
import {
  MediaStreamTrack,
  RTCPeerConnection,
  RTCRtpCodecParameters,
  RtpHeader,
  RtpPacket,
  useOPUS,
  usePCMU,
  type RTCRtpTransceiver,
} from 'werift';
import type { BrowserMediaPort, RtpPacketView } from '../media';
import type { ReceptionReport } from '../media/mediaBridge';
import { DirectSrtpPath } from './directSrtpPath';
import { usableEventClock } from '../media/dtmf';
import { dtlsTransportOf, restrictSrtpProfile, setAnswerDtlsRole } from './weriftInternals';
import { installNativeDtlsCrypto } from './dtlsCrypto';
import { guardIceReceive, guardSockets, newGuardState } from './iceSocketGuard';

/**
 * ICE settings for the gateway side of every browser peer connection.
 *
 * The gateway runs ICE-lite (RFC 8445 §2.5): it only offers host candidates for the configured
 * addresses and never gathers server-reflexive ones. That is the decision the product makes
 * about werift's silent fallback: werift queries stun.l.google.com:19302 whenever it gathers
 * without ICE-lite and without a STUN server (a DNS lookup and UDP to Google per call). A
 * gateway is a server with a known (or configured, NATed 1:1) address, exactly the case ICE-lite
 * was made for; the browser does the full ICE and nominates. Browsers behind NAT still reach us
 * because their checks arrive from their public mapping and we answer to where they came from.
 */
export interface BrowserIceConfig {
  /** Address the ICE sockets bind to (e.g. '127.0.0.1' or '0.0.0.0'). */
  bindAddress: string;
  /** Addresses announced as host candidates (the public address when behind 1:1 NAT). */
  announcedAddresses: string[];
  portRange: [number, number];
  /** When given, each connection gets one port from it (see IcePortPool for why). */
  portPool?: IcePortPool;
  /** Give up when ICE/DTLS has not connected after this long (default 15 s). */
  connectTimeoutMs?: number;
  /**
   * Audio RTP through our SRTP instead of werift's (default true; see DirectSrtpPath). false is
   * for measuring the difference (npm run bench) and for ruling it out when debugging.
   */
  directSrtp?: boolean;
}

export type BrowserLegState = 'new' | 'connecting' | 'connected' | 'failed' | 'closed';

/** werift refused the browser's offer (the browser's fault, unlike anything else answer() throws). */
export class OfferRefusedError extends Error {}

/** What answer() and acceptAnswer() reject with when the leg is closed meanwhile. */
export class LegClosedError extends Error {
  constructor() { super('browser leg closed'); }
}

interface BrowserLegEvents {
  connected: [];
  failed: [reason: string];
  closed: [];
}

const TELEPHONE_EVENT_48K = 126;
const TELEPHONE_EVENT_8K = 101;
/** What a narrowband browser stream may spend: enough for SILK's in-band FEC. */
const NARROWBAND_OPUS_BITRATE = 20000;
/** Trickled browser candidates handed to werift, at most (see addIceCandidate). */
const MAX_REMOTE_CANDIDATES = 16;

/** The connection address of a candidate attribute (with or without its `a=`), or null. */
const CANDIDATE_ADDRESS = /^(?:a=)?candidate:\S+ \d+ \S+ \d+ (\S+) /i;

/**
 * Whether werift may have a browser candidate: only one whose address is an IP literal. For a
 * host name werift resolves it itself — for any name that merely contains ".local" (mDNS,
 * as browsers hide their addresses, but also "x.localdomain" or "a.local.example.com") it opens
 * a multicast-DNS socket on 0.0.0.0:5353 and queries the gateway's LAN, and that library's
 * socket error (5353 held by another program) is thrown as an uncaught exception. As ICE-lite
 * we never check toward a candidate anyway: the browser's checks tell us its address.
 */
function weriftMayHave(candidate: string): boolean {
  const address = CANDIDATE_ADDRESS.exec(candidate)?.[1];
  return !!address && isIP(address) !== 0;
}

/**
 * The SDP with only the candidates werift may have (weriftMayHave), at most `max` of them;
 * returns how many it kept, so that trickled ones count on from there.
 */
function withUsableCandidates(sdp: string, max: number): { sdp: string; kept: number } {
  let kept = 0;
  const lines = sdp.split(/\r?\n/).filter((line) => {
    if (!/^a=candidate:/i.test(line)) return true;
    if (!weriftMayHave(line) || kept >= max) return false;
    kept++;
    return true;
  });
  return { sdp: lines.join('\r\n'), kept };
}

/**
 * Our Opus receive preferences (RFC 7587 §6.1), in our offers and answers alike. useinbandfec=1
 * asks the browser to add in-band FEC (without it Chrome encodes none); the bridge recovers
 * lost frames from it. minptime=10 is what browsers state themselves.
 *
 * maxplaybackrate, when the call's audio can only go on as narrowband G.711: anything above
 * 4 kHz would be decoded and thrown away. Chrome caps its encoder's bandwidth at it: a
 * narrowband SILK packet decodes in a fraction of the time of the hybrid fullband one it sends
 * otherwise (bench "per operation"), the largest single cost of a transcoded call. Left to
 * itself Chrome then encodes ~8 kb/s, below the rate at which SILK adds in-band FEC, so
 * maxaveragebitrate gives it 20 kb/s to spend (Chrome takes it as its target): measured with
 * Chromium, FEC then appears in the voiced packets about a second after our receiver reports
 * show loss, as it does at fullband. sprop-maxcapturerate says our own audio is narrowband too.
 */
function opusFmtp(maxPlaybackRate: number | undefined): string {
  const base = 'minptime=10;useinbandfec=1';
  return maxPlaybackRate ? `${base};maxplaybackrate=${maxPlaybackRate};sprop-maxcapturerate=${maxPlaybackRate};maxaveragebitrate=${NARROWBAND_OPUS_BITRATE}` : base;
}

/**
 * The browser's side of a call: one werift RTCPeerConnection, audio only, that the media
 * bridge sees as a {@link BrowserMediaPort}. It owns the peer connection and its sockets;
 * `close()` releases all of it.
 */
export class BrowserLeg extends EventEmitter<BrowserLegEvents> implements BrowserMediaPort {
  state: BrowserLegState = 'new';
  opusPayloadType: number | null = null;
  pcmuPayloadType: number | null = null;
  telephoneEventPayloadType: number | null = null;
  telephoneEventClockRate: number | undefined = undefined;
  /** What the direct path had dropped when it closed (mediaDropped). */
  private droppedBeforeClose = 0;
  telephoneEvents: Array<{ payloadType: number; clockRate: number }> = [];
  sendCodec: 'opus' | 'pcmu' | 'pcma' = 'opus';

  private readonly pc: RTCPeerConnection;
  private readonly outTrack = new MediaStreamTrack({ kind: 'audio' });
  private transceiver: RTCRtpTransceiver | null = null;
  private readonly rtpListeners = new Set<(pkt: RtpPacketView) => void>();
  private receptionSource: (() => ReceptionReport | null) | null = null;
  private readonly subscriptions: Array<{ unSubscribe(): void }> = [];
  private connectTimer: NodeJS.Timeout | null = null;
  private readonly icePort: number | null;
  /** Set once connected when the direct path could take over (else werift's path carries audio). */
  private direct: DirectSrtpPath | null = null;

  constructor(
    private readonly opts: {
      callId: string;
      logger: Logger;
      ice: BrowserIceConfig;
      /** Give up when ICE/DTLS has not connected after this long. */
      connectTimeoutMs?: number;
      preferPcmu?: boolean;
      /** The highest Opus audio rate worth receiving (8000 when the SIP side is G.711 only); unset: no limit. */
      opusMaxPlaybackRate?: number;
    },
  ) {
    super();
    installNativeDtlsCrypto(); // once per process: OpenSSL's ECDHE and signing instead of werift's JS
    this.icePort = opts.ice.portPool ? opts.ice.portPool.take() : null;
    const audioCodecs = [
      useOPUS({ parameters: opusFmtp(opts.opusMaxPlaybackRate) }),
      usePCMU(),
      new RTCRtpCodecParameters({ mimeType: 'audio/telephone-event', clockRate: 48000, payloadType: TELEPHONE_EVENT_48K, channels: 1 }),
      new RTCRtpCodecParameters({ mimeType: 'audio/telephone-event', clockRate: 8000, payloadType: TELEPHONE_EVENT_8K, channels: 1 }),
    ];
    if (opts.preferPcmu) audioCodecs.unshift(audioCodecs.splice(1, 1)[0]);
    try {
      this.pc = new RTCPeerConnection({
        iceLite: true,
        iceServers: [],
        iceUseIpv4: false,
        iceUseIpv6: false,
        iceAdditionalHostAddresses: opts.ice.announcedAddresses,
        iceInterfaceAddresses: { udp4: opts.ice.bindAddress },
        icePortRange: this.icePort !== null ? IcePortPool.rangeFor(this.icePort) : opts.ice.portRange,
        codecs: { audio: audioCodecs },
      });
    } catch (err) {
      // No leg exists to close() if construction fails: the port goes back here.
      if (this.icePort !== null) opts.ice.portPool?.release(this.icePort);
      throw err;
    }
    this.subscriptions.push(
      this.pc.connectionStateChange.subscribe((s) => this.onConnectionState(s)),
      this.pc.onTrack.subscribe((track) => {
        this.subscriptions.push(track.onReceiveRtp.subscribe((rtp) => { this.weriftReceived++; this.onBrowserRtp(rtp); }));
      }),
    );
  }

  /**
   * RTP and RTCP from the browser that werift's own path delivered (see mediaReceived). RTCP
   * arrives at the receiver (the browser's sender reports) or at the sender (its reports on our
   * audio), depending on whose SSRC it names.
   */
  private weriftReceived = 0;

  private addAudioTransceiver(): RTCRtpTransceiver {
    const t = this.pc.addTransceiver(this.outTrack, { direction: 'sendrecv' });
    const count = () => { this.weriftReceived++; };
    this.subscriptions.push(t.receiver.onRtcp.subscribe(count), t.sender.onRtcp.subscribe(count));
    return t;
  }

  /** The ICE socket guard is in place (guardIceSockets). */
  private iceGuarded = false;

  /** Trickled browser candidates handed to werift so far (see addIceCandidate). */
  private remoteCandidates = 0;

  /** Outbound call: the browser offered; answer at once so ICE/DTLS run while the far end rings. */
  async answer(offerSdp: string): Promise<string> {
    this.transceiver = this.addAudioTransceiver();
    try {
      const offer = withUsableCandidates(offerSdp, MAX_REMOTE_CANDIDATES);
      this.remoteCandidates = offer.kept;
      await this.duringSetup(this.pc.setRemoteDescription({ type: 'offer', sdp: offer.sdp }));
    } catch (err) {
      if (err instanceof LegClosedError) throw err;
      throw new OfferRefusedError((err as Error).message);
    }
    this.guardIceSockets(false); // before gathering binds the sockets
    this.answerOpusFmtp();
    this.answerPcmuFirst();
    this.offerDirectSrtpProfile();
    // DTLS server unless the browser insists on being it: the browser, which nominates, then
    // starts the handshake the moment its ICE check succeeds, while werift as client waits
    // 100 ms after ICE before its ClientHello. (An 'active' offer needs us passive anyway.)
    const offeredSetup = /^a=setup:(\w+)/m.exec(offerSdp)?.[1];
    if (!setAnswerDtlsRole(this.transceiver, offeredSetup === 'passive' ? 'client' : 'server')) {
      this.opts.logger.warn('werift DTLS transport not reachable: DTLS role left to werift');
    }
    const answer = await this.duringSetup(this.pc.createAnswer());
    await this.duringSetup(this.pc.setLocalDescription(answer));
    if (this.state === 'closed') throw new LegClosedError(); // no answer for a leg that is gone
    this.startConnecting();
    const sdp = await this.completeLocalSdp();
    this.guardIceSockets(true);
    return sdp;
  }

  /** Inbound call: the gateway offers to the browser. */
  async createOffer(): Promise<string> {
    this.transceiver = this.addAudioTransceiver();
    const offer = await this.pc.createOffer();
    this.guardIceSockets(false); // before gathering binds the sockets
    await this.pc.setLocalDescription(offer);
    this.offerDirectSrtpProfile();
    const sdp = await this.completeLocalSdp();
    this.guardIceSockets(true);
    return sdp;
  }

  /**
   * From the moment our ICE credentials are out, what werift would take from anyone who learns
   * the port is dropped before it sees it (iceSocketGuard.ts): STUN other than connectivity
   * checks signed with our ICE password (as ICE-lite it takes the first USE-CANDIDATE from
   * anywhere as the call's path), DTLS from an address no signed check came from or carrying an
   * alert (either closed werift's DTLS transport), RTP whose header werift would choke on. The
   * direct SRTP path, once it takes the sockets over, passes STUN and DTLS on to this guard.
   */
  private guardIceSockets(last: boolean): void {
    if (this.iceGuarded) return;
    const connection = this.transceiver ? dtlsTransportOf(this.transceiver)?.iceTransport.connection : undefined;
    const ufrag = connection?.localUsername;
    const password = connection?.localPassword;
    if (!connection || !ufrag || !password) {
      // Installed as soon as werift has the connection — before gathering binds its sockets:
      // checks that arrive while it gathers are kept by werift and taken once it connects.
      if (last) this.opts.logger.warn('werift ICE credentials not reachable: connectivity checks and DTLS sources not checked');
      return;
    }
    this.iceGuarded = true;
    const state = newGuardState();
    // Read at each check: werift would change them on an ICE restart.
    const credentials = () => (connection.localUsername && connection.localPassword ? { ufrag: connection.localUsername, password: connection.localPassword } : null);
    guardSockets(connection.protocols, (onData) => guardIceReceive(onData, credentials, state), () => {
      this.opts.logger.warn('werift added an ICE socket the guard cannot wrap (not plain UDP): its traffic is not checked');
    });
  }

  /** Inbound call: the browser answered our offer. */
  async acceptAnswer(answerSdp: string): Promise<void> {
    const answer = withUsableCandidates(answerSdp, MAX_REMOTE_CANDIDATES);
    this.remoteCandidates = answer.kept;
    await this.duringSetup(this.pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp }));
    this.startConnecting();
  }

  /**
   * A trickled candidate from the browser (null = end of candidates). As ICE-lite we never check toward them (the browser's
   * checks tell us its address), so werift gets only a few, and only by IP address (see
   * weriftMayHave). Past the cap, counted with the SDP's own, they are dropped (each one
   * werift keeps is paired and sorted anew).
   */
  async addIceCandidate(candidate: string | null, sdpMid?: string, sdpMLineIndex?: number): Promise<void> {
    if (this.state === 'closed') return;
    if (!candidate) return; // ICE-lite: nothing to do at end-of-candidates
    if (!weriftMayHave(candidate)) return;
    if (++this.remoteCandidates > MAX_REMOTE_CANDIDATES) return;
    await this.pc.addIceCandidate({ candidate, sdpMid, sdpMLineIndex });
  }

  /** Which code carries audio RTP: ours (DirectSrtpPath) or werift's; null before connected. */
  get mediaPath(): 'direct' | 'werift' | null {
    return this.state !== 'connected' ? null : this.direct ? 'direct' : 'werift';
  }

  /** Packets through the direct path (null on werift's). */
  get directCounts(): { received: number; sent: number; notSent: number; rtcpReceived: number; rtcpSent: number } | null {
    return this.direct?.counts ?? null;
  }

  /** SRTP drops on the direct path (forged, replayed or malformed packets from the network). */
  get srtpDrops(): { authFailures: number; replays: number; malformed: number } | null {
    return this.direct?.srtpStats ?? null;
  }

  /**
   * Packets from the network the direct path dropped before the bridge saw them (SRTP refusals,
   * malformed RTP or RTCP), kept after close for the call's record. On werift's path: 0 (its
   * own drops are not counted anywhere we can read).
   */
  get mediaDropped(): number {
    return this.direct?.dropped ?? this.droppedBeforeClose;
  }

  onRtp(listener: (pkt: RtpPacketView) => void): () => void {
    this.rtpListeners.add(listener);
    return () => this.rtpListeners.delete(listener);
  }

  /** On the direct path our receiver reports carry these blocks; on werift's, werift reports what it receives. */
  receptionReports(source: () => ReceptionReport | null): () => void {
    this.receptionSource = source;
    return () => { if (this.receptionSource === source) this.receptionSource = null; };
  }

  /**
   * Send one packet to the browser. Audio goes through werift's sender (it stamps SSRC and the
   * negotiated PT and keeps RTCP SR counts); the bridge owns sequence numbers and timestamps.
   */
  sendRtp(pkt: RtpPacketView): void {
    if (this.state !== 'connected' || !this.transceiver) return;
    if (this.direct) { this.direct.send(pkt); return; }
    const header = new RtpHeader({
      payloadType: pkt.payloadType,
      sequenceNumber: pkt.sequenceNumber,
      timestamp: pkt.timestamp,
      marker: pkt.marker,
      ssrc: pkt.ssrc,
    });
    this.transceiver.sender.sendRtp(new RtpPacket(header, pkt.payload)).catch(() => {
      /* transport closing: the connection-state handler reports it */
    });
  }

  async stats(): Promise<{ packetsReceived: number; packetsSent: number; jitter?: number; packetsLost?: number }> {
    const out = { packetsReceived: 0, packetsSent: 0 } as { packetsReceived: number; packetsSent: number; jitter?: number; packetsLost?: number };
    try {
      const report = await this.pc.getStats();
      report.forEach((r: any) => {
        if (r.type === 'inbound-rtp') { out.packetsReceived = r.packetsReceived ?? 0; out.jitter = r.jitter; out.packetsLost = r.packetsLost; }
        if (r.type === 'outbound-rtp') out.packetsSent = r.packetsSent ?? 0;
      });
    } catch { /* closed */ }
    return out;
  }

  /**
   * Closes the leg; a second call gets the first one's promise (resolved once werift's socket
   * is closed and the ICE port is back in the pool, not before).
   */
  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private closing: Promise<void> | null = null;
  /** Rejects the werift steps answer() and friends wait on, once the leg is closed (duringSetup). */
  private readonly closedWhileWaiting = new Set<(err: Error) => void>();

  /**
   * `step` (a werift set-up step), or LegClosedError as soon as the leg is closed: werift leaves
   * setRemoteDescription pending for ever when its peer connection closes under it, and a
   * caller awaiting it (a tab's accept, a shutdown during set-up) would hang.
   */
  private duringSetup<T>(step: Promise<T>): Promise<T> {
    if (this.state === 'closed') { step.catch(() => undefined); return Promise.reject(new LegClosedError()); }
    return new Promise<T>((resolve, reject) => {
      this.closedWhileWaiting.add(reject);
      step.then(resolve, reject).finally(() => this.closedWhileWaiting.delete(reject));
    });
  }

  private async closeOnce(): Promise<void> {
    if (this.state === 'closed') return;
    for (const reject of this.closedWhileWaiting) reject(new LegClosedError());
    this.closedWhileWaiting.clear();
    const wasFailed = this.state === 'failed';
    this.state = 'closed';
    // Released only once werift has closed its socket, so the next connection can bind it.
    const release = () => { if (this.icePort !== null) this.opts.ice.portPool?.release(this.icePort); };
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this.rtpListeners.clear();
    this.receptionSource = null;
    this.droppedBeforeClose = this.direct?.dropped ?? this.droppedBeforeClose;
    this.direct?.close();
    this.direct = null;
    for (const s of this.subscriptions) s.unSubscribe();
    this.subscriptions.length = 0;
    try {
      // werift closes only the sockets whose bind has finished: one still binding (the leg closed
      // while gathering, e.g. a CANCEL crossing the offer) would stay open, holding its port after
      // the pool took it back. Gathering (host candidates only) ends within milliseconds.
      if (this.pc.iceGatheringState === 'gathering') await this.gatheringDone(1000);
      await this.pc.close();
    } catch (err) {
      this.opts.logger.warn({ err, wasFailed }, 'browser peer connection close failed');
    } finally {
      release();
    }
    this.emit('closed');
  }

  /** Resolves when ICE gathering is complete, or after `ms`. */
  private gatheringDone(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const t = setTimeout(() => { sub.unSubscribe(); resolve(); }, ms);
      const sub = this.pc.iceGatheringStateChange.subscribe((st) => {
        if (st === 'complete') { clearTimeout(t); sub.unSubscribe(); resolve(); }
      });
    });
  }

  private startConnecting(): void {
    // Closed while werift was still answering (call cancelled, another tab won): no timer.
    if (this.state === 'closed') return;
    this.readNegotiatedCodecs();
    if (this.state === 'new') this.state = 'connecting';
    const ms = this.opts.connectTimeoutMs ?? this.opts.ice.connectTimeoutMs ?? 15000;
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null;
      if (this.state === 'connecting') this.fail(`ICE/DTLS did not connect within ${ms} ms`);
    }, ms);
  }

  private onConnectionState(s: string): void {
    if (this.state === 'closed') return;
    if (s === 'connected' && this.state !== 'connected') {
      if (this.connectTimer) clearTimeout(this.connectTimer);
      this.connectTimer = null;
      this.state = 'connected';
      this.takeDirectPath();
      this.emit('connected');
    } else if (s === 'failed' || s === 'closed' || s === 'disconnected') {
      this.fail(`peer connection ${s}`);
    }
  }

  private fail(reason: string): void {
    if (this.state === 'failed' || this.state === 'closed') return;
    this.state = 'failed';
    this.opts.logger.info({ reason }, 'browser leg failed');
    this.emit('failed', reason);
  }

  /**
   * werift answers with the offer's own codec entries, fmtp included: what the browser wants to
   * receive, not what we do. Our answer states ours (opusFmtp) on the offer's payload type.
   */
  private answerOpusFmtp(): void {
    const codecs = this.transceiver?.codecs ?? [];
    const i = codecs.findIndex((c) => /^audio\/opus$/i.test(c.mimeType));
    if (i < 0) return;
    const c = codecs[i];
    codecs[i] = new RTCRtpCodecParameters({ mimeType: c.mimeType, clockRate: c.clockRate, channels: c.channels, payloadType: c.payloadType, rtcpFeedback: c.rtcpFeedback, parameters: opusFmtp(this.opts.opusMaxPlaybackRate) });
  }

  /**
   * webrtc.preferPcmu: PCMU first in our answer, so the browser sends it (a browser sends the
   * first codec of the answer). werift keeps the offer's order, where Chrome puts Opus first.
   */
  private answerPcmuFirst(): void {
    const codecs = this.transceiver?.codecs;
    if (!this.opts.preferPcmu || !codecs) return;
    const i = codecs.findIndex((c) => /^audio\/pcmu$/i.test(c.mimeType));
    if (i > 0) codecs.unshift(...codecs.splice(i, 1));
  }

  /** Before DTLS starts: offer only the SRTP profile the direct path implements. */
  private offerDirectSrtpProfile(): void {
    if (this.opts.ice.directSrtp === false || !this.transceiver) return;
    if (!restrictSrtpProfile(this.transceiver)) this.opts.logger.warn('werift DTLS transport not reachable: browser audio stays on werift\'s RTP path');
  }

  private takeDirectPath(): void {
    if (this.opts.ice.directSrtp === false || !this.transceiver) return;
    const r = DirectSrtpPath.attach(this.transceiver, (pkt) => { for (const l of this.rtpListeners) l(pkt); }, this.opts.logger, () => this.receptionSource?.() ?? null);
    if (r instanceof DirectSrtpPath) this.direct = r;
    else this.opts.logger.warn({ reason: r.reason }, 'browser audio stays on werift\'s RTP path');
  }

  /**
   * RTP and RTCP packets received from the browser so far, for the call's liveness check (RTP
   * alone stops when a browser mutes by removing its track; its RTCP goes on): counted by our
   * direct path, or by werift's where the audio stayed there. null until the connection is up
   * (no packet is due before).
   */
  get mediaReceived(): number | null {
    const d = this.direct?.counts;
    if (d) return d.received + d.rtcpReceived;
    return this.pc.connectionState === 'connected' ? this.weriftReceived : null;
  }

  private onBrowserRtp(rtp: RtpPacket): void {
    if (this.rtpListeners.size === 0) return;
    const h = rtp.header;
    const view: RtpPacketView = {
      payloadType: h.payloadType,
      sequenceNumber: h.sequenceNumber,
      timestamp: h.timestamp,
      marker: h.marker,
      ssrc: h.ssrc,
      payload: rtp.payload,
    };
    for (const l of this.rtpListeners) l(view);
  }

  /** What the SDP exchange settled on, for the bridge. */
  private readNegotiatedCodecs(): void {
    const codecs = this.transceiver?.codecs ?? [];
    this.opusPayloadType = codecs.find((c) => /opus/i.test(c.mimeType))?.payloadType ?? null;
    this.pcmuPayloadType = codecs.find((c) => /pcmu/i.test(c.mimeType))?.payloadType ?? null;
    const first = codecs.find((c) => !/telephone-event|red|cn/i.test(c.mimeType));
    this.sendCodec = first && /pcmu/i.test(first.mimeType) ? 'pcmu' : first && /pcma/i.test(first.mimeType) ? 'pcma' : 'opus';
    // Digits toward the browser go in the telephone-event on its send codec's clock (RFC 4733
    // §2.1: 8 kHz beside PCMU, 48 kHz beside Opus); it may send its own in any it negotiated —
    // Chrome sends telephone-event/8000 beside Opus — so all of them are read.
    const te = codecs.filter((c) => /telephone-event/i.test(c.mimeType) && usableEventClock(c.clockRate));
    this.telephoneEvents = te.map((c) => ({ payloadType: c.payloadType, clockRate: c.clockRate }));
    const clock = this.sendCodec === 'opus' ? 48000 : 8000;
    const chosen = te.find((c) => c.clockRate === clock) ?? te[0];
    this.telephoneEventPayloadType = chosen?.payloadType ?? null;
    this.telephoneEventClockRate = chosen?.clockRate;
  }

  /** ICE-lite gathers only host candidates, so this is quick; bounded anyway. */
  private async completeLocalSdp(): Promise<string> {
    if (this.pc.iceGatheringState !== 'complete') await this.gatheringDone(2000);
    const sdp = this.pc.localDescription?.sdp;
    if (!sdp) throw new Error('werift produced no local description');
    return sdp;
  }
}
